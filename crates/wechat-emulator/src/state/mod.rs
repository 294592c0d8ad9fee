//! The emulated WeChat back end: apps, token chains, the token registry, daily quotas.
//!
//! Everything here is synchronous and runs under the emulator's one mutex; handlers
//! do their sleeping (latency, hangs) outside it. Validity uses `tokio::time::Instant`
//! so tests can pause tokio's clock; quota days use wall-clock Beijing time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use tokio::time::Instant;

use crate::failure::{self, WxError};
use crate::stats::{AppStats, Stats, UNKNOWN_APP};
use crate::{Config, FailKind, TokenCheck, clamp_rate};

/// Characters a token is made of (URL-safe, as WeChat's).
const TOKEN_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
/// Real tokens are around 140 characters; 136 random ones (816 bits) never collide
/// and cannot be guessed.
const TOKEN_LEN: usize = 136;
/// How long a dead token is remembered, so it still answers 42001 rather than 40001.
const RETENTION: Duration = Duration::from_secs(3600);
/// How often the registry is swept for tokens dead longer than [`RETENTION`].
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// WeChat days start at midnight Beijing time (UTC+8).
const BEIJING_OFFSET_SECS: u64 = 8 * 3600;

/// Settings that can change while the emulator runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Knobs {
    pub fail_rate: f64,
    pub latency: Duration,
}

/// Which token endpoint a call came to.
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

/// What to do with a token call once it has been validated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Issue (or return) a token; if `hang`, answer only after the hang time.
    Proceed { hang: bool },
    /// Answer with this WeChat error.
    Reject(WxError),
    /// Answer with this injected failure, issuing nothing.
    Fail(FailKind),
}

/// How a token-endpoint call is answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    Grant(Grant),
    Error(WxError),
    /// An injected busy or HTTP 500 failure.
    Injected(FailKind),
}

/// A token call's answer, and whether an injected timeout delays it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TokenCall {
    pub answer: Answer,
    pub hang: bool,
}

impl TokenCall {
    /// An answer not delayed by an injected hang.
    fn immediate(answer: Answer) -> Self {
        Self {
            answer,
            hang: false,
        }
    }
}

/// A token as handed to a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub access_token: String,
    pub expires_in: u64,
}

/// One issued token's life.
#[derive(Debug)]
struct TokenEntry {
    appid: Arc<str>,
    expires_at: Instant,
    /// Set when a newer token replaces this one; from then on it answers 40001.
    killed_at: Option<Instant>,
}

impl TokenEntry {
    fn check(&self, now: Instant) -> TokenCheck {
        if self.killed_at.is_some_and(|k| now >= k) {
            TokenCheck::Invalid
        } else if now >= self.expires_at {
            TokenCheck::Expired
        } else {
            TokenCheck::Valid
        }
    }

    /// When the token stopped (or will stop) being valid.
    fn death(&self) -> Instant {
        self.killed_at
            .map_or(self.expires_at, |k| k.min(self.expires_at))
    }
}

/// Per-day counters; reset when the WeChat day changes.
#[derive(Debug, Default)]
struct Daily {
    day: u64,
    classic: u64,
    stable: u64,
    force: u64,
}

/// One app's credentials, current tokens and counters.
#[derive(Debug)]
struct AppState {
    appid: Arc<str>,
    secret: String,
    /// Latest token from `/cgi-bin/token`.
    classic: Option<String>,
    /// Latest token from `/cgi-bin/stable_token`; a chain separate from `classic`.
    stable: Option<String>,
    last_force: Option<Instant>,
    daily: Daily,
    stats: AppStats,
}

impl AppState {
    fn new(appid: &str, secret: &str) -> Self {
        Self {
            appid: appid.into(),
            secret: secret.to_owned(),
            classic: None,
            stable: None,
            last_force: None,
            daily: Daily::default(),
            stats: AppStats::default(),
        }
    }

    /// Today's counters, zeroed first if the day rolled over since the last call.
    fn daily(&mut self, today: u64) -> &mut Daily {
        if self.daily.day != today {
            self.daily = Daily {
                day: today,
                ..Daily::default()
            };
        }
        &mut self.daily
    }
}

/// All mutable emulator state.
#[derive(Debug)]
pub(crate) struct State {
    pub knobs: Knobs,
    apps: HashMap<String, AppState>,
    tokens: HashMap<String, TokenEntry>,
    /// Counters for calls that name no known app or carry a never-issued token.
    unknown: AppStats,
    last_prune: Instant,
}

/// The current WeChat day number (days since the epoch, Beijing time).
pub(crate) fn wechat_day(now: SystemTime) -> u64 {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    (secs + BEIJING_OFFSET_SECS) / 86_400
}

impl State {
    pub fn new(config: &Config) -> Self {
        let mut state = Self {
            knobs: Knobs {
                fail_rate: clamp_rate(config.fail_rate),
                latency: config.latency,
            },
            apps: HashMap::new(),
            tokens: HashMap::new(),
            unknown: AppStats::default(),
            last_prune: Instant::now(),
        };
        for app in &config.apps {
            state.add_app(&app.appid, &app.secret);
        }
        state
    }

    pub fn add_app(&mut self, appid: &str, secret: &str) {
        self.apps
            .entry(appid.to_owned())
            .and_modify(|app| app.secret = secret.to_owned())
            .or_insert_with(|| AppState::new(appid, secret));
    }

    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        for (appid, app) in &self.apps {
            stats.apps.insert(appid.clone(), app.stats.clone());
        }
        if self.unknown != AppStats::default() {
            stats
                .apps
                .insert(UNKNOWN_APP.to_owned(), self.unknown.clone());
        }
        stats
    }

    pub fn reset_quota(&mut self) {
        for app in self.apps.values_mut() {
            app.daily = Daily::default();
        }
    }

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
    ) -> TokenCall {
        let (hang, appid) = match (self.admit(config, endpoint, req, today), req.appid) {
            (Admission::Proceed { hang }, Some(appid)) => (hang, appid),
            (Admission::Reject(err), _) => return TokenCall::immediate(Answer::Error(err)),
            (Admission::Fail(kind), _) => return TokenCall::immediate(Answer::Injected(kind)),
            // Admission only proceeds once the appid is known; kept total for safety.
            (Admission::Proceed { .. }, None) => {
                return TokenCall::immediate(Answer::Error(WxError::APPID_MISSING));
            }
        };
        let answer = match endpoint {
            Endpoint::Classic => Answer::Grant(self.issue_classic(config, appid, now)),
            Endpoint::Stable => match self.stable(config, appid, req.force_refresh, now, today) {
                Ok(grant) => Answer::Grant(grant),
                Err(err) => Answer::Error(err),
            },
        };
        TokenCall { answer, hang }
    }

    /// Counts a token call, validates it like WeChat, charges the daily quota and
    /// rolls for an injected failure. Unknown or missing appids count under
    /// [`UNKNOWN_APP`] so garbage requests cannot grow the stats map.
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

        match failure::roll(self.knobs.fail_rate, &config.fail_kinds) {
            None => Admission::Proceed { hang: false },
            Some(kind) => {
                app.stats.injected_failures += 1;
                match kind {
                    FailKind::Timeout => Admission::Proceed { hang: true },
                    other => Admission::Fail(other),
                }
            }
        }
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
                entry.killed_at = Some(entry.killed_at.map_or(kill_at, |k| k.min(kill_at)));
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
            entry.killed_at = Some(entry.killed_at.map_or(now, |k| k.min(now)));
        }
        Ok(grant)
    }

    /// What an ordinary API would say of `token`.
    pub fn check(&self, token: &str, now: Instant) -> TokenCheck {
        self.tokens
            .get(token)
            .map_or(TokenCheck::Invalid, |entry| entry.check(now))
    }

    /// Checks `token` for an ordinary API call and counts the outcome.
    pub fn use_token(&mut self, token: &str, now: Instant) -> Result<(), WxError> {
        let (verdict, appid) = match self.tokens.get(token) {
            Some(entry) => (entry.check(now), Some(entry.appid.clone())),
            None => (TokenCheck::Invalid, None),
        };
        let stats = match appid.as_deref().and_then(|id| self.apps.get_mut(id)) {
            Some(app) => &mut app.stats,
            None => &mut self.unknown,
        };
        match verdict {
            TokenCheck::Valid => {
                stats.api_calls += 1;
                Ok(())
            }
            TokenCheck::Expired => {
                stats.stale_rejections += 1;
                Err(WxError::TOKEN_EXPIRED)
            }
            TokenCheck::Invalid => {
                stats.stale_rejections += 1;
                Err(WxError::INVALID_CREDENTIAL)
            }
        }
    }

    /// Creates and registers a fresh token for `appid`.
    fn mint(&mut self, config: &Config, appid: &str, now: Instant) -> Grant {
        self.maybe_prune(now);
        let appid: Arc<str> = match self.apps.get_mut(appid) {
            Some(app) => {
                app.stats.tokens_issued += 1;
                app.appid.clone()
            }
            None => appid.into(),
        };
        let token = loop {
            let candidate = random_token();
            // 816 random bits make a clash practically impossible; the check makes
            // "never collide" a guarantee rather than a probability.
            if !self.tokens.contains_key(&candidate) {
                break candidate;
            }
        };
        self.tokens.insert(
            token.clone(),
            TokenEntry {
                appid,
                expires_at: now + Duration::from_secs(config.expires_in),
                killed_at: None,
            },
        );
        Grant {
            access_token: token,
            expires_in: config.expires_in,
        }
    }

    /// Forgets tokens dead for longer than [`RETENTION`], so memory stays bounded
    /// under long benchmarks. Forgotten tokens answer 40001, like any unknown token.
    fn maybe_prune(&mut self, now: Instant) {
        if now.duration_since(self.last_prune) < PRUNE_EVERY {
            return;
        }
        self.last_prune = now;
        self.tokens
            .retain(|_, entry| entry.death() + RETENTION > now);
    }
}

fn random_token() -> String {
    let mut rng = rand::rng();
    (0..TOKEN_LEN)
        .map(|_| char::from(TOKEN_ALPHABET[rng.random_range(0..TOKEN_ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests;
