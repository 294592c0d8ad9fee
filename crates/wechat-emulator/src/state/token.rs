//! Official accounts' token endpoints: classic `/cgi-bin/token` (every call a new
//! token, the previous one dies `overlap` later) and `/cgi-bin/stable_token` (the
//! current token while it has time left; force refresh kills it at once).
//!
//! Also owns the call/answer types every endpoint of the emulator shares.

use tokio::time::Instant;

use super::{Grant, State, inject};
use crate::failure::WxError;
use crate::{Config, FailKind, TokenCheck};

/// Which official token endpoint a call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Classic,
    Stable,
}

/// The credential fields of a token request, as received (any may be missing).
#[derive(Debug, Default)]
pub(crate) struct TokenRequest<'a> {
    /// The body could not be read as a JSON object (stable_token only): 47001.
    pub malformed: bool,
    pub grant_type: Option<&'a str>,
    pub appid: Option<&'a str>,
    pub secret: Option<&'a str>,
    pub force_refresh: bool,
}

/// What to do with a call once it has been validated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Issue (or return) a token or ticket; if `hang`, answer only after the hang.
    Proceed { hang: bool },
    /// Answer with this WeChat error.
    Reject(WxError),
    /// Answer with this injected failure, issuing nothing.
    Fail(FailKind),
}

/// How a call is answered; `T` is what a success carries (a token by default).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer<T = Grant> {
    Grant(T),
    Error(WxError),
    /// An injected busy or HTTP 500 failure.
    Injected(FailKind),
}

/// A call's answer, and whether an injected timeout delays it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Call<T = Grant> {
    pub answer: Answer<T>,
    pub hang: bool,
}

impl<T> Call<T> {
    /// An answer not delayed by an injected hang.
    pub(super) fn immediate(answer: Answer<T>) -> Self {
        Self {
            answer,
            hang: false,
        }
    }

    /// The answer for a call that was not admitted; `None` if it was.
    pub(super) fn refused(admission: &Admission) -> Option<Self> {
        match admission {
            Admission::Proceed { .. } => None,
            Admission::Reject(err) => Some(Self::immediate(Answer::Error(*err))),
            Admission::Fail(kind) => Some(Self::immediate(Answer::Injected(*kind))),
        }
    }
}

impl State {
    /// One whole token-endpoint call, done at once when it arrives: like WeChat, the
    /// token is issued (and the previous one doomed) even if the answer is then
    /// delayed past the client's patience or the client hangs up.
    pub fn token_call(
        &mut self,
        config: &Config,
        endpoint: Endpoint,
        req: &TokenRequest<'_>,
        now: Instant,
        today: u64,
    ) -> Call {
        let (hang, appid) = match (self.admit(config, endpoint, req, today), req.appid) {
            (Admission::Proceed { hang }, Some(appid)) => (hang, appid),
            (Admission::Reject(err), _) => return Call::immediate(Answer::Error(err)),
            (Admission::Fail(kind), _) => return Call::immediate(Answer::Injected(kind)),
            // Admission only proceeds once the appid is known; kept total for safety.
            (Admission::Proceed { .. }, None) => {
                return Call::immediate(Answer::Error(WxError::APPID_MISSING));
            }
        };
        let answer = match endpoint {
            Endpoint::Classic => Answer::Grant(self.issue_classic(config, appid, now)),
            Endpoint::Stable => match self.stable(config, appid, req.force_refresh, now, today) {
                Ok(grant) => Answer::Grant(grant),
                Err(err) => Answer::Error(err),
            },
        };
        Call { answer, hang }
    }

    /// Counts a token call, validates it like WeChat, charges the daily quota and
    /// rolls for an injected failure. Unknown or missing appids count under
    /// [`crate::UNKNOWN_APP`] so garbage requests cannot grow the stats map.
    pub fn admit(
        &mut self,
        config: &Config,
        endpoint: Endpoint,
        req: &TokenRequest<'_>,
        today: u64,
    ) -> Admission {
        let mut app = req.appid.and_then(|id| self.apps.get_mut(id));
        let stats = match app.as_deref_mut() {
            Some(app) => &mut app.stats,
            None => &mut self.unknown,
        };
        match endpoint {
            Endpoint::Classic => stats.token_calls += 1,
            Endpoint::Stable => {
                stats.stable_token_calls += 1;
                if req.force_refresh {
                    stats.force_refresh_calls += 1;
                }
            }
        }

        if req.malformed {
            return Admission::Reject(WxError::DATA_FORMAT);
        }
        if req.grant_type != Some("client_credential") {
            return Admission::Reject(WxError::INVALID_GRANT_TYPE);
        }
        let Some(_) = req.appid.filter(|s| !s.is_empty()) else {
            return Admission::Reject(WxError::APPID_MISSING);
        };
        let Some(secret) = req.secret.filter(|s| !s.is_empty()) else {
            return Admission::Reject(WxError::SECRET_MISSING);
        };
        let Some(app) = app else {
            return Admission::Reject(WxError::INVALID_APPID);
        };
        if app.secret != secret {
            // WeChat's classic endpoint says 40001 for a wrong secret; stable says 40125.
            return Admission::Reject(match endpoint {
                Endpoint::Classic => WxError::INVALID_CREDENTIAL,
                Endpoint::Stable => WxError::INVALID_APPSECRET,
            });
        }

        let daily = app.daily(today);
        let (used, limit) = match endpoint {
            Endpoint::Classic => (&mut daily.classic, config.quota),
            Endpoint::Stable => (&mut daily.stable, config.stable_quota),
        };
        *used += 1;
        if *used > limit {
            return Admission::Reject(WxError::DAILY_QUOTA);
        }

        inject(
            &self.knobs,
            &mut app.spread,
            &config.fail_kinds,
            &mut app.stats.injected_failures,
        )
    }

    /// `/cgi-bin/token`: always a new token; the previous one dies `overlap` later.
    pub fn issue_classic(&mut self, config: &Config, appid: &str, now: Instant) -> Grant {
        let grant = self.mint(config, appid, now);
        let Some(app) = self.apps.get_mut(appid) else {
            // Admission checked the app exists and apps are never removed.
            return grant;
        };
        if let Some(prev) = app.classic.replace(grant.access_token.clone())
            && let Some(entry) = self.tokens.get_mut(&prev)
        {
            let kill_at = now + config.overlap;
            // A token due to expire first just expires (42001), as on WeChat.
            if kill_at < entry.expires_at {
                entry.kill(kill_at);
            }
        }
        grant
    }

    /// `/cgi-bin/stable_token`, normal or force-refresh mode.
    pub fn stable(
        &mut self,
        config: &Config,
        appid: &str,
        force: bool,
        now: Instant,
        today: u64,
    ) -> Result<Grant, WxError> {
        let Some(app) = self.apps.get_mut(appid) else {
            return Err(WxError::INVALID_APPID);
        };
        // Force refreshes closer together than the interval silently do not refresh.
        let force_now = force
            && app
                .last_force
                .is_none_or(|last| now.duration_since(last) >= config.force_refresh_interval);
        if !force_now {
            // Normal mode: the current token while it has more than `overlap` left.
            if let Some(current) = app.stable.as_deref()
                && let Some(entry) = self.tokens.get(current)
                && entry.check(now) == TokenCheck::Valid
            {
                let left = entry.death().saturating_duration_since(now);
                if left > config.overlap {
                    return Ok(Grant {
                        access_token: current.to_owned(),
                        expires_in: left.as_secs(),
                    });
                }
            }
            // None, dead or in its last `overlap`: a new token, the old one lives on
            // until its own expiry.
            let grant = self.mint(config, appid, now);
            if let Some(app) = self.apps.get_mut(appid) {
                app.stable = Some(grant.access_token.clone());
            }
            return Ok(grant);
        }

        let daily = app.daily(today);
        if daily.force >= config.force_refresh_daily {
            return Err(WxError::DAILY_QUOTA);
        }
        daily.force += 1;
        app.last_force = Some(now);
        let prev = app.stable.take();
        let grant = self.mint(config, appid, now);
        if let Some(app) = self.apps.get_mut(appid) {
            app.stable = Some(grant.access_token.clone());
        }
        // Force refresh invalidates the previous token at once.
        if let Some(entry) = prev.and_then(|p| self.tokens.get_mut(&p)) {
            entry.kill(now);
        }
        Ok(grant)
    }
}
