//! The emulated WeChat back end: apps, the token registry, daily quotas.
//!
//! Everything here is synchronous and runs under the emulator's one mutex; handlers
//! do their sleeping (latency, hangs) outside it. Validity uses `tokio::time::Instant`
//! so tests can pause tokio's clock; quota days use wall-clock Beijing time.
//!
//! This module owns the shared registry (who owns which token, whether it still
//! lives) and the per-app records; the endpoints' logic is split by family:
//! `token` (official `/cgi-bin/token` and `stable_token`), `wecom` (WeCom
//! `gettoken`), `tickets` (official and WeCom JS-SDK tickets), `login` (the
//! secret-bearing login calls, and media uploads' limits and counters), `component`
//! (third-party platforms: verify tickets, component tokens, authorizations and the
//! authorizers' tokens, which live in the shared registry like every other token).

mod component;
mod login;
mod quota;
mod tickets;
mod token;
mod wecom;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use tokio::time::Instant;

use crate::failure::{self, WxError};
use crate::stats::{AppStats, ComponentStats, Stats, UNKNOWN_APP};
use crate::{Config, FailKind, TokenCheck, clamp_rate};

pub(crate) use component::{
    AUTH_CODE_EXPIRES_IN, AuthorizeOutcome, ComponentAuth, ComponentTokenRequest,
};
pub(crate) use login::{LoginKind, LoginRequest, MediaLimits};
pub(crate) use quota::ClearAuth;
pub(crate) use tickets::{Ticket, TicketKind, WecomTicket};
pub(crate) use token::{Admission, Answer, Call, Endpoint, TokenRequest};
pub(crate) use wecom::WecomTokenRequest;

/// Characters a token or ticket is made of (URL-safe, as WeChat's).
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
    /// Added to every ordinary API answer (WeChat's round trip, for gateway benches).
    pub api_latency: Duration,
    /// Spread failures evenly (exactly `fail_rate` of each app's calls, kinds in turn)
    /// instead of rolling dice, so that a short test is sure to meet some.
    pub fail_spread: bool,
    /// A nonsense `expires_in` answered with official tokens (see
    /// [`crate::Emulator::set_bad_expires_in`]).
    pub bad_expires_in: Option<crate::BadExpiresIn>,
}

/// One app's place in the even failure schedule of `fail_spread`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Spread {
    /// Calls that could have failed.
    calls: u64,
    /// Failures injected so far.
    failures: u64,
}

/// A token as handed to a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub access_token: String,
    pub expires_in: u64,
}

/// Which back end issued a token: each accepts only its own on its own endpoints,
/// and says "dead token" with its own errcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// Official accounts and mini programs (`api.weixin.qq.com`).
    Official,
    /// WeCom (`qyapi.weixin.qq.com`).
    Wecom,
    /// A third-party platform's `component_access_token`: accepted by the component
    /// APIs only.
    Component,
    /// An authorizer access token, issued through a third-party platform for an
    /// official account or mini program: accepted wherever an official token is.
    Authorizer,
}

impl Family {
    /// The error for a token this family does not accept (never issued, killed, or
    /// the other family's).
    fn invalid_token(self) -> WxError {
        match self {
            Family::Official | Family::Component | Family::Authorizer => {
                WxError::INVALID_CREDENTIAL
            }
            Family::Wecom => WxError::WECOM_INVALID_TOKEN,
        }
    }

    /// Whether an endpoint of family `endpoint` accepts this family's tokens: each its
    /// own, and official endpoints authorizer tokens too.
    fn accepted_by(self, endpoint: Family) -> bool {
        self == endpoint || (self == Family::Authorizer && endpoint == Family::Official)
    }
}

/// One issued token's life.
#[derive(Debug)]
struct TokenEntry {
    family: Family,
    /// The appid, or for WeCom the [`crate::wecom_key`]; for a component token the
    /// component appid, for an authorizer token the authorizer appid.
    owner: Arc<str>,
    /// For an authorizer token, the component it was issued through.
    component: Option<Arc<str>>,
    expires_at: Instant,
    /// Set when a newer token replaces this one, or it is revoked; from then on it
    /// answers 40001 (WeCom: 40014).
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

    /// Kills the token at `at` unless it already dies earlier.
    fn kill(&mut self, at: Instant) {
        self.killed_at = Some(self.killed_at.map_or(at, |k| k.min(at)));
    }

    /// Kills a replaced token at `at`, unless it expires first: then it just expires
    /// (42001), as on WeChat.
    fn doom(&mut self, at: Instant) {
        if at < self.expires_at {
            self.kill(at);
        }
    }

    /// Whose counters the token's calls go to: its app, or for an authorizer token its
    /// component (authorizers are counted together, per component).
    fn stats_key(&self) -> (Family, Arc<str>) {
        match (self.family, &self.component) {
            (Family::Authorizer, Some(component)) => (Family::Authorizer, component.clone()),
            _ => (self.family, self.owner.clone()),
        }
    }
}

/// Per-day counters; reset when the WeChat day changes.
#[derive(Debug, Default)]
struct Daily {
    day: u64,
    classic: u64,
    stable: u64,
    force: u64,
    /// WeCom `gettoken` calls (WeCom apps only).
    gettoken: u64,
    /// Official `ticket/getticket` calls, all types together.
    tickets: u64,
}

impl Daily {
    /// Today's counters, zeroed first if the day rolled over since the last call.
    fn today(&mut self, today: u64) -> &mut Daily {
        if self.day != today {
            *self = Daily {
                day: today,
                ..Daily::default()
            };
        }
        self
    }
}

/// One official app's credentials, current tokens and tickets, counters.
#[derive(Debug)]
struct AppState {
    secret: String,
    /// Latest token from `/cgi-bin/token`.
    classic: Option<String>,
    /// Latest token from `/cgi-bin/stable_token`; a chain separate from `classic`.
    stable: Option<String>,
    last_force: Option<Instant>,
    /// Latest ticket of each type from `ticket/getticket`.
    tickets: HashMap<TicketKind, String>,
    daily: Daily,
    /// `clear_quota` uses this month (both versions share the budget).
    clears: quota::Clears,
    stats: AppStats,
    spread: Spread,
}

impl AppState {
    fn new(secret: &str) -> Self {
        Self {
            secret: secret.to_owned(),
            classic: None,
            stable: None,
            last_force: None,
            tickets: HashMap::new(),
            daily: Daily::default(),
            clears: quota::Clears::default(),
            stats: AppStats::default(),
            spread: Spread::default(),
        }
    }

    /// Today's counters, zeroed first if the day rolled over since the last call.
    fn daily(&mut self, today: u64) -> &mut Daily {
        self.daily.today(today)
    }
}

/// All mutable emulator state.
#[derive(Debug)]
pub(crate) struct State {
    pub knobs: Knobs,
    apps: HashMap<String, AppState>,
    /// WeCom apps by [`crate::wecom_key`]; ordered so that secret look-ups that
    /// scan them are deterministic.
    wecom: BTreeMap<String, wecom::WecomApp>,
    /// WeCom corps by corpid: what apps of one corp share.
    corps: HashMap<String, wecom::Corp>,
    tokens: HashMap<String, TokenEntry>,
    tickets: HashMap<String, tickets::TicketEntry>,
    /// Third-party platforms by component appid.
    components: HashMap<String, component::ComponentState>,
    /// Counters for component calls that name no known platform or carry a token that
    /// is no component token.
    unknown_component: ComponentStats,
    /// Login codes (`js_code`, OAuth `code`) already exchanged, with when: each works
    /// once. Forgotten after [`RETENTION`], long after WeChat's 5-minute code life.
    used_codes: HashMap<String, Instant>,
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
                api_latency: config.api_latency,
                fail_spread: config.fail_spread,
                bad_expires_in: config.bad_expires_in,
            },
            apps: HashMap::new(),
            wecom: BTreeMap::new(),
            corps: HashMap::new(),
            tokens: HashMap::new(),
            tickets: HashMap::new(),
            components: HashMap::new(),
            unknown_component: ComponentStats::default(),
            used_codes: HashMap::new(),
            unknown: AppStats::default(),
            last_prune: Instant::now(),
        };
        for app in &config.apps {
            state.add_app(&app.appid, &app.secret);
        }
        for app in &config.wecom_apps {
            state.add_wecom_app(&app.corpid, app.agentid, &app.secret);
        }
        for component in &config.components {
            state.add_component(&component.appid, &component.secret);
        }
        state
    }

    pub fn add_app(&mut self, appid: &str, secret: &str) {
        self.apps
            .entry(appid.to_owned())
            .and_modify(|app| app.secret = secret.to_owned())
            .or_insert_with(|| AppState::new(secret));
    }

    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        for (appid, app) in &self.apps {
            stats.apps.insert(appid.clone(), app.stats.clone());
        }
        for (key, app) in &self.wecom {
            stats.apps.insert(key.clone(), app.stats.clone());
        }
        if self.unknown != AppStats::default() {
            stats
                .apps
                .insert(UNKNOWN_APP.to_owned(), self.unknown.clone());
        }
        for (appid, component) in &self.components {
            stats.components.insert(appid.clone(), component.stats());
        }
        if self.unknown_component != ComponentStats::default() {
            stats
                .components
                .insert(UNKNOWN_APP.to_owned(), self.unknown_component.clone());
        }
        stats
    }

    /// Clears every app's daily counters and the hourly ticket windows.
    pub fn reset_quota(&mut self) {
        for app in self.apps.values_mut() {
            app.daily = Daily::default();
        }
        for app in self.wecom.values_mut() {
            app.daily = Daily::default();
            app.agent_tickets.clear();
        }
        for corp in self.corps.values_mut() {
            corp.tickets.clear();
        }
        for component in self.components.values_mut() {
            component.reset_quota();
        }
    }

    /// What an ordinary API would say of `token`.
    pub fn check(&self, token: &str, now: Instant) -> TokenCheck {
        self.tokens
            .get(token)
            .map_or(TokenCheck::Invalid, |entry| entry.check(now))
    }

    /// Kills `token` at `now`, as resetting the app's secret in the console would.
    /// Unknown tokens are ignored: there is nothing to kill.
    pub fn revoke(&mut self, token: &str, now: Instant) {
        if let Some(entry) = self.tokens.get_mut(token) {
            entry.kill(now);
        }
    }

    /// Checks `token` for an ordinary API call and counts the outcome. Official,
    /// authorizer and WeCom tokens are accepted; a dead one answers in its family's
    /// words. A component token is no token here (40001), as on WeChat.
    pub fn use_token(&mut self, token: &str, now: Instant) -> Result<(), WxError> {
        let (verdict, owner) = match self.tokens.get(token) {
            Some(entry) if entry.family == Family::Component => {
                (TokenCheck::Invalid, Some(entry.stats_key()))
            }
            Some(entry) => (entry.check(now), Some(entry.stats_key())),
            None => (TokenCheck::Invalid, None),
        };
        let family = owner.as_ref().map(|(family, _)| *family);
        let stats = self.stats_mut(owner.as_ref().map(|(f, o)| (*f, &**o)));
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
                Err(family.map_or(WxError::INVALID_CREDENTIAL, Family::invalid_token))
            }
        }
    }

    /// The counters of a token's owner (see [`TokenEntry::stats_key`]), or the unknown
    /// bucket. A component token's misuse on an ordinary API counts as unknown: the
    /// platform's own counters are for its own APIs.
    fn stats_mut(&mut self, owner: Option<(Family, &str)>) -> &mut AppStats {
        let found = match owner {
            Some((Family::Official, appid)) => self.apps.get_mut(appid).map(|a| &mut a.stats),
            Some((Family::Wecom, key)) => self.wecom.get_mut(key).map(|a| &mut a.stats),
            Some((Family::Authorizer, component)) => self
                .components
                .get_mut(component)
                .map(|c| c.authorizer_stats()),
            Some((Family::Component, _)) | None => None,
        };
        match found {
            Some(stats) => stats,
            None => &mut self.unknown,
        }
    }

    /// Creates and registers a fresh official token for `appid`.
    fn mint(&mut self, config: &Config, appid: &str, now: Instant) -> Grant {
        self.mint_token(config, Family::Official, appid, now)
    }

    /// Creates and registers a fresh token for `owner` (an appid or WeCom key).
    fn mint_token(&mut self, config: &Config, family: Family, owner: &str, now: Instant) -> Grant {
        self.stats_mut(Some((family, owner))).tokens_issued += 1;
        self.register_token(family, owner, None, config.expires_in, now)
    }

    /// Creates and registers a fresh token living `expires_in` seconds, counting
    /// nothing: the one place every token is born.
    fn register_token(
        &mut self,
        family: Family,
        owner: &str,
        component: Option<&str>,
        expires_in: u64,
        now: Instant,
    ) -> Grant {
        self.maybe_prune(now);
        let token = loop {
            let candidate = random_string(TOKEN_LEN);
            // 816 random bits make a clash practically impossible; the check makes
            // "never collide" a guarantee rather than a probability.
            if !self.tokens.contains_key(&candidate) {
                break candidate;
            }
        };
        self.tokens.insert(
            token.clone(),
            TokenEntry {
                family,
                owner: owner.into(),
                component: component.map(Arc::from),
                expires_at: now + Duration::from_secs(expires_in),
                killed_at: None,
            },
        );
        Grant {
            access_token: token,
            expires_in,
        }
    }

    /// Forgets tokens and tickets dead, and login codes used, longer than [`RETENTION`]
    /// ago, so memory stays bounded under long benchmarks. Forgotten tokens and tickets
    /// answer like any unknown one; a forgotten code would work again.
    fn maybe_prune(&mut self, now: Instant) {
        if now.duration_since(self.last_prune) < PRUNE_EVERY {
            return;
        }
        self.last_prune = now;
        self.tokens
            .retain(|_, entry| entry.death() + RETENTION > now);
        self.tickets
            .retain(|_, entry| entry.expires_at + RETENTION > now);
        self.used_codes.retain(|_, used| *used + RETENTION > now);
        for component in self.components.values_mut() {
            component.prune(now, RETENTION);
        }
    }
}

/// Rolls for an injected failure on a validated call, counting it in `injected` (the
/// caller's `injected_failures`): a timeout still proceeds (the answer hangs), the
/// other kinds issue nothing.
fn inject(knobs: &Knobs, spread: &mut Spread, kinds: &[FailKind], injected: &mut u64) -> Admission {
    let failure = if knobs.fail_spread {
        spread.calls += 1;
        // ceil, so the schedule starts with a failure (the cold path meets one too); the
        // epsilon keeps 10 x 0.3 at 3, not 3.0000000000000004 rounded up.
        let due = (spread.calls as f64 * knobs.fail_rate - 1e-9).ceil() as u64;
        if due > spread.failures && !kinds.is_empty() {
            spread.failures += 1;
            Some(kinds[((spread.failures - 1) as usize) % kinds.len()])
        } else {
            None
        }
    } else {
        failure::roll(knobs.fail_rate, kinds)
    };
    match failure {
        None => Admission::Proceed { hang: false },
        Some(kind) => {
            *injected += 1;
            match kind {
                FailKind::Timeout => Admission::Proceed { hang: true },
                other => Admission::Fail(other),
            }
        }
    }
}

fn random_string(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::rng().fill(&mut bytes[..]);
    // 64 symbols divide 256, so masking keeps every character equally likely; one
    // bulk fill is far cheaper than a range draw per character.
    bytes
        .iter()
        .map(|b| char::from(TOKEN_ALPHABET[usize::from(b & 63)]))
        .collect()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_component;
#[cfg(test)]
mod tests_tickets;
