//! JS-SDK tickets: official `GET /cgi-bin/ticket/getticket?type=jsapi|wx_card`,
//! WeCom's corp ticket `GET /cgi-bin/get_jsapi_ticket` (wx.config) and app ticket
//! `GET /cgi-bin/ticket/get?type=agent_config` (wx.agentConfig).
//!
//! Every successful call issues a new ticket; earlier ones stay valid until their
//! own expiry (tickets are never killed). Limits: official tickets per app per WeChat
//! day, WeCom tickets per corp or per app per rolling hour, counting only calls that
//! got past the token and type checks, so a client hammering a limit is not locked
//! out forever and the windows never hold more than the limit.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Admission, Answer, Call, Daily, Family, Spread, State, inject, random_string};
use crate::failure::WxError;
use crate::{Config, TokenCheck};

/// The official example ticket has 86 characters; 86 random ones (516 bits) are
/// as unguessable as a token.
const TICKET_LEN: usize = 86;
/// The WeCom ticket limits count calls per rolling hour.
const HOUR: Duration = Duration::from_secs(3600);

/// A ticket type, as named by [`crate::Emulator::current_ticket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TicketKind {
    /// Official `type=jsapi`, or WeCom's corp ticket.
    Jsapi,
    /// Official `type=wx_card` (card coupons).
    WxCard,
    /// WeCom `type=agent_config`, the app ticket.
    AgentConfig,
}

impl TicketKind {
    /// The kind a `type` parameter (or `current_ticket` kind) names.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "jsapi" => Some(Self::Jsapi),
            "wx_card" => Some(Self::WxCard),
            "agent_config" => Some(Self::AgentConfig),
            _ => None,
        }
    }
}

/// Which WeCom ticket endpoint a call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WecomTicket {
    /// `get_jsapi_ticket`: the corp ticket, limited per corp.
    Corp,
    /// `ticket/get?type=agent_config`: the app ticket, limited per app.
    Agent,
}

/// A ticket as handed to a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub ticket: String,
    pub expires_in: u64,
}

/// One issued ticket's life.
#[derive(Debug)]
pub(super) struct TicketEntry {
    pub expires_at: Instant,
}

/// Who a ticket call's token belongs to.
#[derive(Debug)]
struct TicketCaller {
    /// The appid (an authorizer's for an authorizer token) or WeCom key.
    owner: Arc<str>,
    /// For an authorizer token, the component it was issued through.
    component: Option<Arc<str>>,
}

/// Where an official ticket call is limited, counted and remembered: an app's
/// records, or an authorizer's (whose failures count with its component's).
#[derive(Debug)]
pub(super) struct TicketSlot<'a> {
    pub daily: &'a mut Daily,
    pub spread: &'a mut Spread,
    pub injected: &'a mut u64,
    pub tickets: &'a mut HashMap<TicketKind, String>,
}

impl State {
    /// One whole `ticket/getticket` call. `token` and `kind` as received.
    pub fn official_ticket(
        &mut self,
        config: &Config,
        token: Option<&str>,
        kind: Option<&str>,
        now: Instant,
        today: u64,
    ) -> Call<Ticket> {
        let caller = match self.ticket_caller(token, Family::Official, now) {
            Ok(caller) => caller,
            Err(err) => return Call::immediate(Answer::Error(err)),
        };
        let Some(kind) = kind
            .and_then(TicketKind::parse)
            .filter(|k| *k != TicketKind::AgentConfig)
        else {
            return Call::immediate(Answer::Error(WxError::INVALID_ARGS));
        };
        let knobs = self.knobs;
        let Some(slot) = self.official_ticket_slot(&caller) else {
            // A live token's app exists: apps are never removed, and an authorizer's
            // tokens die with its authorization. Kept total.
            return Call::immediate(Answer::Error(WxError::INVALID_CREDENTIAL));
        };
        let daily = slot.daily.today(today);
        daily.tickets += 1;
        if daily.tickets > config.ticket_daily {
            return Call::immediate(Answer::Error(WxError::DAILY_QUOTA));
        }
        let admission = inject(&knobs, slot.spread, &config.fail_kinds, slot.injected);
        if let Some(refused) = Call::refused(&admission) {
            return refused;
        }
        let ticket = match &caller.component {
            None => self.mint_ticket(config, Family::Official, &caller.owner, now),
            Some(component) => self.mint_ticket(config, Family::Authorizer, component, now),
        };
        if let Some(slot) = self.official_ticket_slot(&caller) {
            slot.tickets.insert(kind, ticket.ticket.clone());
        }
        Call {
            answer: Answer::Grant(ticket),
            hang: matches!(admission, Admission::Proceed { hang: true }),
        }
    }

    /// One whole WeCom ticket call. `kind` is the `type` parameter, which only the
    /// agent endpoint reads.
    pub fn wecom_ticket(
        &mut self,
        config: &Config,
        endpoint: WecomTicket,
        token: Option<&str>,
        kind: Option<&str>,
        now: Instant,
    ) -> Call<Ticket> {
        let key = match self.ticket_caller(token, Family::Wecom, now) {
            Ok(caller) => caller.owner,
            Err(err) => return Call::immediate(Answer::Error(err)),
        };
        if endpoint == WecomTicket::Agent && kind != Some("agent_config") {
            return Call::immediate(Answer::Error(WxError::INVALID_ARGS));
        }
        let Some(app) = self.wecom.get_mut(&*key) else {
            // A live token's app exists: apps are never removed. Kept total.
            return Call::immediate(Answer::Error(WxError::WECOM_INVALID_TOKEN));
        };
        let corpid = app.corpid.clone();
        let (window, limit) = match endpoint {
            WecomTicket::Corp => (
                // Adding an app registers its corp; `or_default` keeps this total.
                &mut self.corps.entry(corpid.clone()).or_default().tickets,
                config.corp_ticket_hourly,
            ),
            WecomTicket::Agent => (&mut app.agent_tickets, config.agent_ticket_hourly),
        };
        if !admit_hourly(window, limit, now) {
            return Call::immediate(Answer::Error(WxError::FREQ_LIMIT));
        }
        let admission = inject(
            &self.knobs,
            &mut app.spread,
            &config.fail_kinds,
            &mut app.stats.injected_failures,
        );
        if let Some(refused) = Call::refused(&admission) {
            return refused;
        }
        let ticket = self.mint_ticket(config, Family::Wecom, &key, now);
        let latest = Some(ticket.ticket.clone());
        match endpoint {
            WecomTicket::Corp => {
                if let Some(corp) = self.corps.get_mut(&corpid) {
                    corp.jsapi_ticket = latest;
                }
            }
            WecomTicket::Agent => {
                if let Some(app) = self.wecom.get_mut(&*key) {
                    app.agent_ticket = latest;
                }
            }
        }
        Call {
            answer: Answer::Grant(ticket),
            hang: matches!(admission, Admission::Proceed { hang: true }),
        }
    }

    /// What a JS-SDK page would find of `ticket`: valid, expired, or never issued.
    pub fn check_ticket(&self, ticket: &str, now: Instant) -> TokenCheck {
        match self.tickets.get(ticket) {
            None => TokenCheck::Invalid,
            Some(entry) if now >= entry.expires_at => TokenCheck::Expired,
            Some(_) => TokenCheck::Valid,
        }
    }

    /// The latest ticket of `kind` issued to an official app (by appid), an
    /// authorizer (by its appid, through whichever component) or a WeCom app (by key;
    /// `jsapi` is then its corp's ticket, whichever app fetched it).
    pub fn current_ticket(&self, owner: &str, kind: &str) -> Option<String> {
        let kind = TicketKind::parse(kind)?;
        if let Some(app) = self.apps.get(owner) {
            return app.tickets.get(&kind).cloned();
        }
        if let Some(ticket) = self
            .components
            .values()
            .find_map(|component| component.authorizer_ticket(owner, kind))
        {
            return Some(ticket);
        }
        let app = self.wecom.get(owner)?;
        match kind {
            TicketKind::Jsapi => self.corps.get(&app.corpid)?.jsapi_ticket.clone(),
            TicketKind::AgentConfig => app.agent_ticket.clone(),
            TicketKind::WxCard => None,
        }
    }

    /// Checks the token of a ticket call against `family`'s rules and counts the
    /// call under the token's owner: its app on success, else what went wrong. A
    /// token of another family is no token here at all (never expired, just
    /// invalid), as each back end knows only its own; official endpoints accept
    /// authorizer tokens, which are official accounts' tokens too.
    fn ticket_caller(
        &mut self,
        token: Option<&str>,
        family: Family,
        now: Instant,
    ) -> Result<TicketCaller, WxError> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            self.unknown.ticket_calls += 1;
            return Err(WxError::TOKEN_MISSING);
        };
        let (found, verdict) = match self.tokens.get(token) {
            Some(entry) => {
                let verdict = if entry.family.accepted_by(family) {
                    entry.check(now)
                } else {
                    TokenCheck::Invalid
                };
                let caller = TicketCaller {
                    owner: entry.owner.clone(),
                    component: entry.component.clone(),
                };
                (Some((entry.stats_key(), caller)), verdict)
            }
            None => (None, TokenCheck::Invalid),
        };
        let stats = self.stats_mut(found.as_ref().map(|((f, o), _)| (*f, &**o)));
        stats.ticket_calls += 1;
        let err = match (verdict, found) {
            (TokenCheck::Valid, Some((_, caller))) => return Ok(caller),
            (TokenCheck::Expired, _) => WxError::TOKEN_EXPIRED,
            _ => family.invalid_token(),
        };
        stats.stale_rejections += 1;
        Err(err)
    }

    /// The records an official ticket call by `caller` is limited and remembered in.
    fn official_ticket_slot(&mut self, caller: &TicketCaller) -> Option<TicketSlot<'_>> {
        match &caller.component {
            None => self.apps.get_mut(&*caller.owner).map(|app| TicketSlot {
                daily: &mut app.daily,
                spread: &mut app.spread,
                injected: &mut app.stats.injected_failures,
                tickets: &mut app.tickets,
            }),
            Some(component) => self
                .components
                .get_mut(&**component)?
                .ticket_slot(&caller.owner),
        }
    }

    /// Creates and registers a fresh ticket for `owner` (an appid or WeCom key).
    fn mint_ticket(
        &mut self,
        config: &Config,
        family: Family,
        owner: &str,
        now: Instant,
    ) -> Ticket {
        self.maybe_prune(now);
        self.stats_mut(Some((family, owner))).tickets_issued += 1;
        let ticket = loop {
            let candidate = random_string(TICKET_LEN);
            // As for tokens: a clash is practically impossible, the check makes sure.
            if !self.tickets.contains_key(&candidate) {
                break candidate;
            }
        };
        self.tickets.insert(
            ticket.clone(),
            TicketEntry {
                expires_at: now + Duration::from_secs(config.ticket_expires_in),
            },
        );
        Ticket {
            ticket,
            expires_in: config.ticket_expires_in,
        }
    }
}

/// Lets one more call into a rolling hour holding at most `limit` calls, and
/// records it; `false` if the hour is full.
fn admit_hourly(window: &mut VecDeque<Instant>, limit: u64, now: Instant) -> bool {
    while window
        .front()
        .is_some_and(|&at| now.duration_since(at) >= HOUR)
    {
        window.pop_front();
    }
    if u64::try_from(window.len()).unwrap_or(u64::MAX) >= limit {
        return false;
    }
    window.push_back(now);
    true
}
