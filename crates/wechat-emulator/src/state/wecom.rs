//! WeCom (企业微信) apps and `GET /cgi-bin/gettoken?corpid=C&corpsecret=S`.
//!
//! A corp has several apps, each with its own secret; the secret alone picks the app.
//! Following the current WeCom doc, a repeat fetch while the app's token is valid
//! returns the same token with the whole seconds it has left; only a dead token is
//! replaced. WeCom tokens are registered with the official ones, so the ordinary
//! APIs accept them too.

use std::collections::VecDeque;

use tokio::time::Instant;

use super::{Admission, Answer, Call, Daily, Family, Grant, Spread, State, inject};
use crate::failure::WxError;
use crate::stats::{AppStats, wecom_key};
use crate::{Config, TokenCheck};

/// The fields of a `gettoken` request, as received (either may be missing).
#[derive(Debug, Default)]
pub(crate) struct WecomTokenRequest<'a> {
    pub corpid: Option<&'a str>,
    pub corpsecret: Option<&'a str>,
}

/// One WeCom app: its secret, current token, latest agent ticket and counters.
#[derive(Debug)]
pub(super) struct WecomApp {
    pub corpid: String,
    pub secret: String,
    /// The token `gettoken` hands out while it is valid.
    pub token: Option<String>,
    /// Latest `ticket/get?type=agent_config` ticket.
    pub agent_ticket: Option<String>,
    /// When this hour's agent tickets were issued (for the hourly limit).
    pub agent_tickets: VecDeque<Instant>,
    pub daily: Daily,
    pub stats: AppStats,
    pub spread: Spread,
}

/// What the apps of one corp share: the corp `jsapi` ticket and its hourly limit.
#[derive(Debug, Default)]
pub(super) struct Corp {
    /// Latest `get_jsapi_ticket` ticket, whichever app's token fetched it.
    pub jsapi_ticket: Option<String>,
    /// When this hour's corp tickets were issued (for the hourly limit).
    pub tickets: VecDeque<Instant>,
}

impl State {
    /// Accepts a new WeCom app, or changes the secret of a known one (its token
    /// survives, as for official apps).
    pub fn add_wecom_app(&mut self, corpid: &str, agentid: u64, secret: &str) {
        self.wecom
            .entry(wecom_key(corpid, agentid))
            .and_modify(|app| app.secret = secret.to_owned())
            .or_insert_with(|| WecomApp {
                corpid: corpid.to_owned(),
                secret: secret.to_owned(),
                token: None,
                agent_ticket: None,
                agent_tickets: VecDeque::new(),
                daily: Daily::default(),
                stats: AppStats::default(),
                spread: Spread::default(),
            });
        self.corps.entry(corpid.to_owned()).or_default();
    }

    /// One whole `gettoken` call, processed at once like the official ones.
    pub fn wecom_token_call(
        &mut self,
        config: &Config,
        req: &WecomTokenRequest<'_>,
        now: Instant,
        today: u64,
    ) -> Call {
        let key = self.find_wecom_app(req);
        let admission = self.admit_wecom(config, req, key.as_deref(), today);
        if let Some(refused) = Call::refused(&admission) {
            return refused;
        }
        let hang = matches!(admission, Admission::Proceed { hang: true });
        let Some(key) = key else {
            // Admission only proceeds once the secret named an app; kept total.
            return Call::immediate(Answer::Error(WxError::WECOM_INVALID_CREDENTIAL));
        };
        Call {
            answer: Answer::Grant(self.wecom_grant(config, &key, now)),
            hang,
        }
    }

    /// The key of the app of `req.corpid` whose secret is `req.corpsecret`.
    fn find_wecom_app(&self, req: &WecomTokenRequest<'_>) -> Option<String> {
        let (corpid, secret) = (req.corpid?, req.corpsecret?);
        self.wecom
            .iter()
            .find(|(_, app)| app.corpid == corpid && app.secret == secret)
            .map(|(key, _)| key.clone())
    }

    /// Counts a `gettoken` call (under the app its secret names, else unknown),
    /// validates it in WeCom's order, charges the daily quota, rolls for failure.
    fn admit_wecom(
        &mut self,
        config: &Config,
        req: &WecomTokenRequest<'_>,
        key: Option<&str>,
        today: u64,
    ) -> Admission {
        self.stats_mut(key.map(|k| (Family::Wecom, k)))
            .gettoken_calls += 1;
        let Some(corpid) = req.corpid.filter(|s| !s.is_empty()) else {
            return Admission::Reject(WxError::CORPID_MISSING);
        };
        let Some(secret) = req.corpsecret.filter(|s| !s.is_empty()) else {
            return Admission::Reject(WxError::CORPSECRET_MISSING);
        };
        if !self.corps.contains_key(corpid) {
            return Admission::Reject(WxError::INVALID_CORPID);
        }
        let Some(app) = key.and_then(|k| self.wecom.get_mut(k)) else {
            // Not this corp's secret: WeCom tells a secret of another corp apart.
            let elsewhere = self.wecom.values().any(|app| app.secret == secret);
            return Admission::Reject(if elsewhere {
                WxError::SECRET_OF_OTHER_CORP
            } else {
                WxError::WECOM_INVALID_CREDENTIAL
            });
        };
        let daily = app.daily.today(today);
        daily.gettoken += 1;
        if daily.gettoken > config.quota {
            return Admission::Reject(WxError::FREQ_LIMIT);
        }
        inject(
            &self.knobs,
            &mut app.spread,
            &config.fail_kinds,
            &mut app.stats.injected_failures,
        )
    }

    /// The app's token while it is valid (with the whole seconds left), else a new
    /// one with the full lifetime.
    fn wecom_grant(&mut self, config: &Config, key: &str, now: Instant) -> Grant {
        if let Some(current) = self.wecom.get(key).and_then(|app| app.token.as_deref())
            && let Some(entry) = self.tokens.get(current)
            && entry.check(now) == TokenCheck::Valid
        {
            return Grant {
                access_token: current.to_owned(),
                expires_in: entry.death().saturating_duration_since(now).as_secs(),
            };
        }
        let grant = self.mint_token(config, Family::Wecom, key, now);
        if let Some(app) = self.wecom.get_mut(key) {
            app.token = Some(grant.access_token.clone());
        }
        grant
    }
}
