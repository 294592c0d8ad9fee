//! Third-party platforms (开放平台 第三方平台, "components"): verify tickets,
//! `component_access_token`, pre-auth codes, authorizations and the authorizers'
//! tokens.
//!
//! - A verify ticket is minted by the emulator (and pushed, see `crate::push`); only
//!   the latest one, younger than [`crate::Config::verify_ticket_lifetime`], buys a
//!   component token: an older one answers 61005, one never minted 61006.
//! - `api_component_token` issues a new token every call; the previous one dies
//!   `overlap` later, like the classic `/cgi-bin/token`.
//! - Authorizing (a test hook standing in for the merchant's click) records the
//!   authorizer with a fresh refresh token (killing the previous one, as WeChat does on
//!   re-authorization) and mints a single-use authorization code valid an hour.
//! - `api_query_auth` exchanges the code for an access token and the current refresh
//!   token; `api_authorizer_token` exchanges the refresh token for a new access token
//!   and (with [`crate::Config::rotate_refresh_tokens`]) a new refresh token, the old
//!   one answering 61023 from then on. A new access token dooms the previous ones
//!   `overlap` later.
//! - Unauthorizing forgets the authorizer: its refresh token answers 61003, its
//!   access tokens 40001.
//!
//! Authorizer access tokens live in the shared registry (family `Authorizer`), so the
//! ordinary APIs, the ticket endpoint, `check_token` and `revoke_token` treat them as
//! any official token. Everything is a map look-up except `api_get_authorizer_list`,
//! which copies one page out of a vector kept in authorization order.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::tickets::{TicketKind, TicketSlot};
use super::{Answer, Call, Daily, Family, Grant, Spread, State, inject, random_string};
use crate::failure::WxError;
use crate::stats::{AppStats, ComponentStats};
use crate::{Config, TokenCheck};

/// Lifetime of an authorization code in seconds (WeChat: an hour).
pub(crate) const AUTH_CODE_EXPIRES_IN: u64 = 3600;
/// Lifetime of a pre-auth code in seconds (WeChat's docs say 600 or 1800).
pub(crate) const PRE_AUTH_CODE_EXPIRES_IN: u64 = 1800;
/// The most `api_get_authorizer_list` returns in one page; more is 40170.
const MAX_LIST_COUNT: u64 = 500;
/// What an authorizer grants when a test does not say: message management (1),
/// user management (2), account services (3), web pages (4), stores (5), multi-customer
/// service (6), mass sending (7), material management (11), menus (15).
pub(crate) const DEFAULT_FUNC_INFO: [u32; 9] = [1, 2, 3, 4, 5, 6, 7, 11, 15];
/// Random characters after a code's `xxx@@@` prefix (384 bits: unguessable).
const CODE_RANDOM_LEN: usize = 64;
/// How many verify tickets a platform remembers, so that an old one still answers
/// 61005 rather than 61006. At WeChat's pace (one per 10 minutes) that is 42 hours,
/// well past a ticket's 12.
const TICKET_HISTORY: usize = 256;

/// The fields of an `api_component_token` request, as received (any may be missing).
#[derive(Debug, Default)]
pub(crate) struct ComponentTokenRequest<'a> {
    /// The body could not be read as a JSON object: 47001.
    pub malformed: bool,
    pub component_appid: Option<&'a str>,
    pub component_appsecret: Option<&'a str>,
    pub component_verify_ticket: Option<&'a str>,
}

/// What every component call that carries a component token sends: the token (query
/// string) and the `component_appid` (body).
#[derive(Debug, Default)]
pub(crate) struct ComponentAuth<'a> {
    /// `component_access_token` (or, as the newer docs write it, `access_token`).
    pub token: Option<&'a str>,
    /// The body could not be read as a JSON object: 47001.
    pub malformed: bool,
    pub component_appid: Option<&'a str>,
}

/// Which token-carrying component API a call came to, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ComponentApi {
    PreAuthCode,
    QueryAuth,
    AuthorizerToken,
    AuthorizerList,
}

impl ComponentApi {
    fn count(self, stats: &mut ComponentStats) {
        match self {
            Self::PreAuthCode => stats.preauthcode_calls += 1,
            Self::QueryAuth => stats.query_auth_calls += 1,
            Self::AuthorizerToken => stats.authorizer_token_calls += 1,
            Self::AuthorizerList => stats.authorizer_list_calls += 1,
        }
    }
}

/// `api_create_preauthcode`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreAuthCode {
    pub pre_auth_code: String,
    pub expires_in: u64,
}

/// `api_query_auth`'s answer: the `authorization_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization {
    pub authorizer_appid: String,
    pub grant: Grant,
    pub refresh_token: String,
    pub func_info: Arc<[u32]>,
}

/// `api_authorizer_token`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthorizerGrant {
    pub grant: Grant,
    pub refresh_token: String,
}

/// One page of `api_get_authorizer_list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthorizerPage {
    /// All currently authorized accounts, not just this page's.
    pub total_count: u64,
    pub list: Vec<ListedAuthorizer>,
}

/// One entry of [`AuthorizerPage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedAuthorizer {
    pub authorizer_appid: String,
    pub refresh_token: String,
    /// Unix seconds of the latest authorization.
    pub auth_time: u64,
}

/// What authorizing an account produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthorizeOutcome {
    /// The code to exchange with `api_query_auth`.
    pub authorization_code: String,
    pub expires_in: u64,
    /// The account was already authorized: the event is `updateauthorized`.
    pub updated: bool,
}

/// An authorization code, single-use.
struct AuthCode {
    authorizer: Arc<str>,
    expires_at: Instant,
    used: bool,
}

/// One currently authorized account (an unauthorized one is forgotten).
struct Authorizer {
    /// Its place in [`ComponentState::order`].
    seq: u64,
    /// Unix seconds of the latest authorization.
    auth_time: u64,
    func_info: Arc<[u32]>,
    /// The one refresh token that works.
    refresh_token: String,
    /// Access tokens issued that may still be alive, oldest first: a new one dooms
    /// them, unauthorizing kills them.
    access_tokens: Vec<String>,
    /// Latest JS-SDK ticket of each type.
    tickets: HashMap<TicketKind, String>,
    daily: Daily,
    spread: Spread,
}

/// One third-party platform: its secret, tickets, token, codes and authorizers.
pub(super) struct ComponentState {
    secret: String,
    /// Verify tickets minted, with when; the oldest are forgotten past
    /// [`TICKET_HISTORY`].
    tickets: HashMap<String, Instant>,
    ticket_order: VecDeque<String>,
    latest_ticket: Option<String>,
    /// Latest `component_access_token`.
    token: Option<String>,
    codes: HashMap<String, AuthCode>,
    authorizers: HashMap<Arc<str>, Authorizer>,
    /// Authorized accounts by sequence number, ascending: authorization order, the
    /// order `api_get_authorizer_list` pages through.
    order: Vec<(u64, Arc<str>)>,
    next_seq: u64,
    stats: ComponentStats,
    /// The platform's place in the even failure schedule (its own token calls).
    spread: Spread,
}

// Secrets, tickets and 100,000 authorizers have no place in a Debug line: counts only.
impl fmt::Debug for ComponentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentState")
            .field("tickets", &self.tickets.len())
            .field("codes", &self.codes.len())
            .field("authorizers", &self.authorizers.len())
            .finish_non_exhaustive()
    }
}

impl ComponentState {
    fn new(secret: &str) -> Self {
        Self {
            secret: secret.to_owned(),
            tickets: HashMap::new(),
            ticket_order: VecDeque::new(),
            latest_ticket: None,
            token: None,
            codes: HashMap::new(),
            authorizers: HashMap::new(),
            order: Vec::new(),
            next_seq: 0,
            stats: ComponentStats::default(),
            spread: Spread::default(),
        }
    }

    /// The platform's counters, with the authorized gauge filled in.
    pub fn stats(&self) -> ComponentStats {
        ComponentStats {
            authorized: u64::try_from(self.order.len()).unwrap_or(u64::MAX),
            ..self.stats.clone()
        }
    }

    /// Where the authorizers' token use is counted.
    pub fn authorizer_stats(&mut self) -> &mut AppStats {
        &mut self.stats.authorizers
    }

    /// Clears the authorizers' daily ticket counters.
    pub fn reset_quota(&mut self) {
        for authorizer in self.authorizers.values_mut() {
            authorizer.daily = Daily::default();
        }
    }

    /// Forgets authorization codes dead longer than `retention`.
    pub fn prune(&mut self, now: Instant, retention: Duration) {
        self.codes
            .retain(|_, code| code.expires_at + retention > now);
    }

    /// The records a ticket call with `authorizer`'s token is limited and kept in.
    pub fn ticket_slot(&mut self, authorizer: &str) -> Option<TicketSlot<'_>> {
        let record = self.authorizers.get_mut(authorizer)?;
        Some(TicketSlot {
            daily: &mut record.daily,
            spread: &mut record.spread,
            injected: &mut self.stats.authorizers.injected_failures,
            tickets: &mut record.tickets,
        })
    }

    /// The latest ticket of `kind` issued to `authorizer` through this platform.
    pub fn authorizer_ticket(&self, authorizer: &str, kind: TicketKind) -> Option<String> {
        self.authorizers
            .get(authorizer)?
            .tickets
            .get(&kind)
            .cloned()
    }

    /// Mints a verify ticket, which becomes the latest.
    fn mint_verify_ticket(&mut self, now: Instant) -> String {
        let ticket = format!("ticket@@@{}", random_string(CODE_RANDOM_LEN));
        self.tickets.insert(ticket.clone(), now);
        self.ticket_order.push_back(ticket.clone());
        while self.ticket_order.len() > TICKET_HISTORY {
            if let Some(oldest) = self.ticket_order.pop_front() {
                self.tickets.remove(&oldest);
            }
        }
        self.latest_ticket = Some(ticket.clone());
        self.stats.verify_tickets_issued += 1;
        ticket
    }

    /// Whether `ticket` buys a component token now: the latest, and younger than
    /// `lifetime`.
    fn check_ticket(
        &self,
        ticket: Option<&str>,
        now: Instant,
        lifetime: Duration,
    ) -> Result<(), WxError> {
        let Some(ticket) = ticket.filter(|t| !t.is_empty()) else {
            return Err(WxError::TICKET_INVALID);
        };
        let Some(issued) = self.tickets.get(ticket) else {
            return Err(WxError::TICKET_INVALID);
        };
        if self.latest_ticket.as_deref() != Some(ticket)
            || now.saturating_duration_since(*issued) >= lifetime
        {
            return Err(WxError::TICKET_EXPIRED);
        }
        Ok(())
    }
}

/// A fresh authorizer refresh token, shaped like WeChat's.
fn new_refresh_token() -> String {
    format!("refreshtoken@@@{}", random_string(CODE_RANDOM_LEN))
}

impl State {
    /// Accepts a new platform, or changes the secret of a known one.
    pub fn add_component(&mut self, appid: &str, secret: &str) {
        self.components
            .entry(appid.to_owned())
            .and_modify(|c| c.secret = secret.to_owned())
            .or_insert_with(|| ComponentState::new(secret));
    }

    /// Mints a verify ticket for `component` (the latest from now on); `None` if the
    /// platform is unknown.
    pub fn mint_verify_ticket(&mut self, component: &str, now: Instant) -> Option<String> {
        Some(self.components.get_mut(component)?.mint_verify_ticket(now))
    }

    /// The latest verify ticket minted for `component`, if any.
    pub fn current_verify_ticket(&self, component: &str) -> Option<String> {
        self.components.get(component)?.latest_ticket.clone()
    }

    /// The refresh token that works for `authorizer` under `component` right now.
    pub fn refresh_token_of(&self, component: &str, authorizer: &str) -> Option<String> {
        Some(
            self.components
                .get(component)?
                .authorizers
                .get(authorizer)?
                .refresh_token
                .clone(),
        )
    }

    /// An `api_authorizer_token` for `authorizer` that WeChat processed but whose
    /// answer never reached the client (it timed out, the connection dropped): counted,
    /// the refresh token rotated (if [`Config::rotate_refresh_tokens`]) and an access
    /// token issued, as for a call that succeeded. Returns the refresh token that now
    /// works, or `None` if the account is not authorized to `component`.
    pub fn lost_authorizer_token_call(
        &mut self,
        config: &Config,
        component: &str,
        authorizer: &str,
        now: Instant,
    ) -> Option<String> {
        let c = self.components.get_mut(component)?;
        let record = c.authorizers.get_mut(authorizer)?;
        if config.rotate_refresh_tokens {
            record.refresh_token = new_refresh_token();
        }
        let refresh_token = record.refresh_token.clone();
        ComponentApi::AuthorizerToken.count(&mut c.stats);
        self.issue_authorizer_token(config, component, authorizer, now);
        Some(refresh_token)
    }

    /// Counts a push to `component`'s callback URL.
    pub fn record_push(&mut self, component: &str, delivered: bool) {
        if let Some(c) = self.components.get_mut(component) {
            if delivered {
                c.stats.pushes_sent += 1;
            } else {
                c.stats.pushes_failed += 1;
            }
        }
    }

    /// Records that `authorizer` authorized `component` (again) granting `func_info`
    /// (kept, or the default set, if `None`): a new refresh token replaces the old one,
    /// and a new authorization code is minted. `None` if the platform is unknown.
    pub fn authorize(
        &mut self,
        component: &str,
        authorizer: &str,
        func_info: Option<&[u32]>,
        now: Instant,
        unix_now: u64,
    ) -> Option<AuthorizeOutcome> {
        let c = self.components.get_mut(component)?;
        let refresh_token = new_refresh_token();
        let known = c
            .authorizers
            .get_key_value(authorizer)
            .map(|(k, _)| k.clone());
        let (appid, updated) = match known.zip(c.authorizers.get_mut(authorizer)) {
            Some((appid, record)) => {
                record.auth_time = unix_now;
                if let Some(func_info) = func_info {
                    record.func_info = func_info.into();
                }
                record.refresh_token = refresh_token;
                (appid, true)
            }
            None => {
                let appid: Arc<str> = authorizer.into();
                let seq = c.next_seq;
                c.next_seq += 1;
                c.order.push((seq, appid.clone()));
                c.authorizers.insert(
                    appid.clone(),
                    Authorizer {
                        seq,
                        auth_time: unix_now,
                        func_info: func_info.unwrap_or(&DEFAULT_FUNC_INFO).into(),
                        refresh_token,
                        access_tokens: Vec::new(),
                        tickets: HashMap::new(),
                        daily: Daily::default(),
                        spread: Spread::default(),
                    },
                );
                (appid, false)
            }
        };
        let code = loop {
            let candidate = format!("queryauthcode@@@{}", random_string(CODE_RANDOM_LEN));
            if !c.codes.contains_key(&candidate) {
                break candidate;
            }
        };
        c.codes.insert(
            code.clone(),
            AuthCode {
                authorizer: appid,
                expires_at: now + Duration::from_secs(AUTH_CODE_EXPIRES_IN),
                used: false,
            },
        );
        Some(AuthorizeOutcome {
            authorization_code: code,
            expires_in: AUTH_CODE_EXPIRES_IN,
            updated,
        })
    }

    /// Records that `authorizer` revoked its authorization of `component`: its
    /// refresh token and access tokens die now. `false` if it was not authorized.
    pub fn unauthorize(&mut self, component: &str, authorizer: &str, now: Instant) -> bool {
        let Some(c) = self.components.get_mut(component) else {
            return false;
        };
        let Some(record) = c.authorizers.remove(authorizer) else {
            return false;
        };
        if let Ok(at) = c.order.binary_search_by_key(&record.seq, |(seq, _)| *seq) {
            c.order.remove(at);
        }
        for token in &record.access_tokens {
            if let Some(entry) = self.tokens.get_mut(token) {
                entry.kill(now);
            }
        }
        true
    }

    /// One whole `api_component_token` call.
    pub fn component_token_call(
        &mut self,
        config: &Config,
        req: &ComponentTokenRequest<'_>,
        now: Instant,
    ) -> Call {
        let appid = req.component_appid.filter(|a| !a.is_empty());
        let mut found = appid.and_then(|a| self.components.get_mut(a));
        match found.as_deref_mut() {
            Some(c) => c.stats.component_token_calls += 1,
            None => self.unknown_component.component_token_calls += 1,
        }
        let reject = |err| Call::immediate(Answer::Error(err));
        if req.malformed {
            return reject(WxError::DATA_FORMAT);
        }
        let Some(appid) = appid else {
            return reject(WxError::APPID_MISSING);
        };
        let Some(secret) = req.component_appsecret.filter(|s| !s.is_empty()) else {
            return reject(WxError::SECRET_MISSING);
        };
        let Some(c) = found else {
            return reject(WxError::INVALID_COMPONENT);
        };
        if c.secret != secret {
            return reject(WxError::INVALID_APPSECRET);
        }
        if let Err(err) = c.check_ticket(
            req.component_verify_ticket,
            now,
            config.verify_ticket_lifetime,
        ) {
            return reject(err);
        }
        let admission = inject(
            &self.knobs,
            &mut c.spread,
            &config.fail_kinds,
            &mut c.stats.injected_failures,
        );
        if let Some(refused) = Call::refused(&admission) {
            return refused;
        }
        let grant = self.issue_component_token(config, appid, now);
        Call {
            answer: Answer::Grant(grant),
            hang: matches!(admission, super::Admission::Proceed { hang: true }),
        }
    }

    /// One whole `api_create_preauthcode` call.
    pub fn preauthcode_call(
        &mut self,
        auth: &ComponentAuth<'_>,
        now: Instant,
    ) -> Call<PreAuthCode> {
        if let Err(err) = self.component_caller(auth, ComponentApi::PreAuthCode, now) {
            return Call::immediate(Answer::Error(err));
        }
        Call::immediate(Answer::Grant(PreAuthCode {
            pre_auth_code: format!("preauthcode@@@{}", random_string(CODE_RANDOM_LEN)),
            expires_in: PRE_AUTH_CODE_EXPIRES_IN,
        }))
    }

    /// One whole `api_query_auth` call: a code never minted answers 61009, one used
    /// or older than an hour 61010, one whose account revoked the authorization since
    /// 61003.
    pub fn query_auth_call(
        &mut self,
        config: &Config,
        auth: &ComponentAuth<'_>,
        code: Option<&str>,
        now: Instant,
    ) -> Call<Authorization> {
        let component = match self.component_caller(auth, ComponentApi::QueryAuth, now) {
            Ok(component) => component,
            Err(err) => return Call::immediate(Answer::Error(err)),
        };
        let reject = |err| Call::immediate(Answer::Error(err));
        let Some(c) = self.components.get_mut(&*component) else {
            return reject(WxError::INVALID_COMPONENT);
        };
        let Some(entry) = code
            .filter(|code| !code.is_empty())
            .and_then(|code| c.codes.get_mut(code))
        else {
            return reject(WxError::AUTH_CODE_INVALID);
        };
        if entry.used || now >= entry.expires_at {
            return reject(WxError::AUTH_CODE_EXPIRED);
        }
        let Some(record) = c.authorizers.get(&entry.authorizer) else {
            return reject(WxError::NOT_AUTHORIZED);
        };
        entry.used = true;
        let authorizer = entry.authorizer.clone();
        let (refresh_token, func_info) = (record.refresh_token.clone(), record.func_info.clone());
        let grant = self.issue_authorizer_token(config, &component, &authorizer, now);
        Call::immediate(Answer::Grant(Authorization {
            authorizer_appid: authorizer.to_string(),
            grant,
            refresh_token,
            func_info,
        }))
    }

    /// One whole `api_authorizer_token` call: 61003 for an account not authorized (any
    /// more), 61023 for a refresh token that is not the current one.
    pub fn authorizer_token_call(
        &mut self,
        config: &Config,
        auth: &ComponentAuth<'_>,
        authorizer: Option<&str>,
        refresh_token: Option<&str>,
        now: Instant,
    ) -> Call<AuthorizerGrant> {
        let component = match self.component_caller(auth, ComponentApi::AuthorizerToken, now) {
            Ok(component) => component,
            Err(err) => return Call::immediate(Answer::Error(err)),
        };
        let reject = |err| Call::immediate(Answer::Error(err));
        let Some(c) = self.components.get_mut(&*component) else {
            return reject(WxError::INVALID_COMPONENT);
        };
        let Some(authorizer) = authorizer.filter(|a| !a.is_empty()) else {
            return reject(WxError::APPID_MISSING);
        };
        let Some(record) = c.authorizers.get_mut(authorizer) else {
            return reject(WxError::NOT_AUTHORIZED);
        };
        if refresh_token != Some(record.refresh_token.as_str()) {
            return reject(WxError::REFRESH_TOKEN_INVALID);
        }
        let admission = inject(
            &self.knobs,
            &mut record.spread,
            &config.fail_kinds,
            &mut c.stats.injected_failures,
        );
        if let Some(refused) = Call::refused(&admission) {
            return refused;
        }
        if config.rotate_refresh_tokens {
            record.refresh_token = new_refresh_token();
        }
        let refresh_token = record.refresh_token.clone();
        let grant = self.issue_authorizer_token(config, &component, authorizer, now);
        Call {
            answer: Answer::Grant(AuthorizerGrant {
                grant,
                refresh_token,
            }),
            hang: matches!(admission, super::Admission::Proceed { hang: true }),
        }
    }

    /// One whole `api_get_authorizer_list` call. `offset` and `count` are `None` when
    /// missing or not non-negative integers (40097); a count over 500 is 40170.
    pub fn authorizer_list_call(
        &mut self,
        auth: &ComponentAuth<'_>,
        offset: Option<u64>,
        count: Option<u64>,
        now: Instant,
    ) -> Call<AuthorizerPage> {
        let component = match self.component_caller(auth, ComponentApi::AuthorizerList, now) {
            Ok(component) => component,
            Err(err) => return Call::immediate(Answer::Error(err)),
        };
        let reject = |err| Call::immediate(Answer::Error(err));
        let (Some(offset), Some(count)) = (offset, count) else {
            return reject(WxError::INVALID_ARGS);
        };
        if count > MAX_LIST_COUNT {
            return reject(WxError::COUNT_LIMIT);
        }
        let Some(c) = self.components.get(&*component) else {
            return reject(WxError::INVALID_COMPONENT);
        };
        let total = c.order.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(total);
        // count <= 500, so the conversion cannot fail on any platform.
        let end = start
            .saturating_add(usize::try_from(count).unwrap_or(0))
            .min(total);
        let list = c.order[start..end]
            .iter()
            .filter_map(|(_, appid)| {
                let record = c.authorizers.get(appid)?;
                Some(ListedAuthorizer {
                    authorizer_appid: appid.to_string(),
                    refresh_token: record.refresh_token.clone(),
                    auth_time: record.auth_time,
                })
            })
            .collect();
        Call::immediate(Answer::Grant(AuthorizerPage {
            total_count: u64::try_from(total).unwrap_or(u64::MAX),
            list,
        }))
    }

    /// Checks the component token and `component_appid` of a component call and
    /// counts the call (under its platform once the token names one). Returns the
    /// platform's appid.
    fn component_caller(
        &mut self,
        auth: &ComponentAuth<'_>,
        api: ComponentApi,
        now: Instant,
    ) -> Result<Arc<str>, WxError> {
        let Some(token) = auth.token.filter(|t| !t.is_empty()) else {
            api.count(&mut self.unknown_component);
            return Err(WxError::TOKEN_MISSING);
        };
        // Only component tokens work here; an app's or authorizer's is no token at all.
        let found = self
            .tokens
            .get(token)
            .filter(|entry| entry.family == Family::Component)
            .map(|entry| (entry.owner.clone(), entry.check(now)));
        let Some((owner, verdict)) = found else {
            api.count(&mut self.unknown_component);
            self.unknown_component.stale_rejections += 1;
            return Err(WxError::INVALID_CREDENTIAL);
        };
        let Some(c) = self.components.get_mut(&*owner) else {
            // Platforms are never removed; kept total.
            api.count(&mut self.unknown_component);
            return Err(WxError::INVALID_CREDENTIAL);
        };
        api.count(&mut c.stats);
        match verdict {
            TokenCheck::Valid => {}
            TokenCheck::Expired => {
                c.stats.stale_rejections += 1;
                return Err(WxError::TOKEN_EXPIRED);
            }
            TokenCheck::Invalid => {
                c.stats.stale_rejections += 1;
                return Err(WxError::INVALID_CREDENTIAL);
            }
        }
        if auth.malformed {
            return Err(WxError::DATA_FORMAT);
        }
        match auth.component_appid.filter(|a| !a.is_empty()) {
            None => Err(WxError::APPID_MISSING),
            Some(appid) if appid != &*owner => Err(WxError::INVALID_COMPONENT),
            Some(_) => Ok(owner),
        }
    }

    /// A new component token for `component`; the previous one dies `overlap` later.
    fn issue_component_token(&mut self, config: &Config, component: &str, now: Instant) -> Grant {
        let grant = self.register_token(
            Family::Component,
            component,
            None,
            config.component_expires_in,
            now,
        );
        let Some(c) = self.components.get_mut(component) else {
            return grant;
        };
        c.stats.component_tokens_issued += 1;
        if let Some(previous) = c.token.replace(grant.access_token.clone())
            && let Some(entry) = self.tokens.get_mut(&previous)
        {
            entry.doom(now + config.overlap);
        }
        grant
    }

    /// A new access token for `authorizer` through `component`; the previous ones die
    /// `overlap` later.
    fn issue_authorizer_token(
        &mut self,
        config: &Config,
        component: &str,
        authorizer: &str,
        now: Instant,
    ) -> Grant {
        let grant = self.register_token(
            Family::Authorizer,
            authorizer,
            Some(component),
            config.authorizer_expires_in,
            now,
        );
        let Some(c) = self.components.get_mut(component) else {
            return grant;
        };
        c.stats.authorizers.tokens_issued += 1;
        let Some(record) = c.authorizers.get_mut(authorizer) else {
            return grant;
        };
        let doomed_at = now + config.overlap;
        let mut live = Vec::with_capacity(record.access_tokens.len() + 1);
        for token in record.access_tokens.drain(..) {
            if let Some(entry) = self.tokens.get_mut(&token) {
                entry.doom(doomed_at);
                if entry.death() > now {
                    live.push(token);
                }
            }
        }
        live.push(grant.access_token.clone());
        record.access_tokens = live;
        grant
    }
}
