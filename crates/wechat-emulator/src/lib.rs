//! A faithful stand-in for WeChat's credential APIs (`/cgi-bin/token`,
//! `/cgi-bin/stable_token`, WeCom's `/cgi-bin/gettoken`, and the JS-SDK tickets of
//! both), the secret-bearing login calls (`/sns/jscode2session`,
//! `/sns/oauth2/access_token`), media uploads, a few ordinary APIs that check the
//! tokens, and the open platform's third-party platform ("component") APIs, for the
//! tests, benchmarks and demo of the wxtoken server.
//!
//! # Third-party platforms
//!
//! [`Config::components`] lists the platforms. WeChat's side of the flow is emulated
//! end to end:
//!
//! - verify tickets: [`Emulator::verify_ticket`] mints one without pushing it;
//!   [`Emulator::push_verify_ticket`] (or `POST /_emulator/push_verify_ticket`) mints
//!   one and pushes it, encrypted and signed like WeChat's, to the platform's
//!   `callback_url`; with [`Config::verify_ticket_interval`], [`spawn`] pushes one at
//!   once and then periodically. Only the latest ticket, younger than
//!   [`Config::verify_ticket_lifetime`], buys a token.
//! - `POST /cgi-bin/component/api_component_token`, `api_create_preauthcode`,
//!   `api_query_auth`, `api_authorizer_token`, `api_get_authorizer_list`, with
//!   WeChat's shapes and error codes.
//! - the merchant's side: [`Emulator::authorize`] (or `POST /_emulator/authorize`)
//!   authorizes an account and returns the authorization code, pushing an
//!   `authorized` (or `updateauthorized`) event; [`Emulator::unauthorize`] revokes it,
//!   pushing `unauthorized`; [`Emulator::lose_authorizer_token`] completes an
//!   `api_authorizer_token` whose answer the client never sees (its refresh token
//!   rotated behind its back).
//! - authorizer access tokens work on the ordinary APIs and the ticket endpoint like
//!   any official token, and die like one (40001 / 42001).
//!
//! This module owns the public surface: [`Config`], the cloneable [`Emulator`] handle
//! (shared state behind an `Arc`), and [`spawn`]/[`spawn_on`] that serve it over HTTP.
//! Token bookkeeping lives in `state`, HTTP handlers in `routes`, error bodies and
//! failure injection in `failure`, counters in `stats`, the push crypto in [`crypto`]
//! and the pushes themselves in `push`.

pub mod crypto;
mod failure;
mod push;
mod routes;
mod state;
mod stats;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};

pub use stats::{AppStats, ComponentStats, Stats, UNKNOWN_APP, wecom_key};

/// One app (公众号 / 小程序) the emulator knows: its appid and AppSecret.
#[derive(Clone, PartialEq, Eq)]
pub struct AppCredentials {
    /// The appid, e.g. `wx1234567890abcdef`.
    pub appid: String,
    /// The AppSecret that must accompany the appid.
    pub secret: String,
}

impl AppCredentials {
    /// Credentials from an appid and its secret.
    pub fn new(appid: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            appid: appid.into(),
            secret: secret.into(),
        }
    }
}

// Secrets never end up in logs, even an emulator's: tests copy patterns from here.
impl fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCredentials")
            .field("appid", &self.appid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// One WeCom (企业微信) app the emulator knows: its corp, agentid and secret. The
/// secret alone picks the app within the corp, as on WeCom.
#[derive(Clone, PartialEq, Eq)]
pub struct WecomCredentials {
    /// The corp's id, e.g. `ww1234567890abcdef`.
    pub corpid: String,
    /// The app's AgentId within the corp; with `corpid` it keys the app's stats
    /// (see [`wecom_key`]).
    pub agentid: u64,
    /// The app's secret (`corpsecret` on `gettoken`).
    pub secret: String,
}

impl WecomCredentials {
    /// Credentials from a corpid, an agentid and the app's secret.
    pub fn new(corpid: impl Into<String>, agentid: u64, secret: impl Into<String>) -> Self {
        Self {
            corpid: corpid.into(),
            agentid,
            secret: secret.into(),
        }
    }
}

// As for AppCredentials: the secret never reaches a log.
impl fmt::Debug for WecomCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WecomCredentials")
            .field("corpid", &self.corpid)
            .field("agentid", &self.agentid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// One third-party platform (开放平台 第三方平台) the emulator knows: its appid and
/// secret, the push token and EncodingAESKey its pushes are signed and encrypted
/// with, and where they go.
#[derive(Clone, PartialEq, Eq)]
pub struct ComponentCredentials {
    /// The platform's appid (`component_appid`).
    pub appid: String,
    /// Its AppSecret (`component_appsecret`).
    pub secret: String,
    /// The message token pushes are signed with.
    pub token: String,
    /// The 43-character EncodingAESKey pushes are encrypted with.
    pub encoding_aes_key: String,
    /// The "authorization event URL" (授权事件接收URL) verify tickets and
    /// authorization events are POSTed to; `None` pushes nothing.
    pub callback_url: Option<String>,
}

impl ComponentCredentials {
    /// A platform that pushes nowhere (add [`ComponentCredentials::with_callback`]).
    pub fn new(
        appid: impl Into<String>,
        secret: impl Into<String>,
        token: impl Into<String>,
        encoding_aes_key: impl Into<String>,
    ) -> Self {
        Self {
            appid: appid.into(),
            secret: secret.into(),
            token: token.into(),
            encoding_aes_key: encoding_aes_key.into(),
            callback_url: None,
        }
    }

    /// These credentials pushing to `url`.
    pub fn with_callback(mut self, url: impl Into<String>) -> Self {
        self.callback_url = Some(url.into());
        self
    }
}

// The secret, the push token and the AES key never reach a log.
impl fmt::Debug for ComponentCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentCredentials")
            .field("appid", &self.appid)
            .field("secret", &"<redacted>")
            .field("token", &"<redacted>")
            .field("encoding_aes_key", &"<redacted>")
            .field("callback_url", &self.callback_url)
            .finish()
    }
}

/// A failure the emulator can inject on the token and ticket endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailKind {
    /// HTTP 200 `{"errcode":-1,"errmsg":"system error rid: ..."}` (WeChat's "system busy").
    SystemBusy,
    /// HTTP 500 with a short text body, as from WeChat's front proxies.
    Http500,
    /// Sleeps [`Config::hang`], then answers normally (issuing the token the client
    /// has probably given up on).
    Timeout,
    /// The connection drops before the answer is complete (the body stream fails, so
    /// the server closes it): what a client sees of a reset by a middlebox.
    Reset,
    /// HTTP 200 with an HTML page instead of JSON, as from a captive portal or a
    /// misconfigured proxy.
    Garbage,
    /// HTTP 200 with JSON cut off in the middle of the token.
    Truncated,
    /// HTTP 200 with a JSON object of [`HUGE_BODY_BYTES`], far past any credential
    /// answer.
    Huge,
}

/// The size of a [`FailKind::Huge`] answer: 1 MiB.
pub const HUGE_BODY_BYTES: usize = 1 << 20;

impl FailKind {
    /// The kinds WeChat itself is seen to answer with, the default set to inject.
    pub const ALL: [FailKind; 3] = [FailKind::SystemBusy, FailKind::Http500, FailKind::Timeout];
    /// Broken answers on the way (never issuing anything): for fault tests, not
    /// injected unless asked for.
    pub const BROKEN: [FailKind; 4] = [
        FailKind::Reset,
        FailKind::Garbage,
        FailKind::Truncated,
        FailKind::Huge,
    ];
}

/// A nonsense `expires_in` in an otherwise valid token answer (the token is issued and
/// lives [`Config::expires_in`] as usual): see [`Emulator::set_bad_expires_in`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadExpiresIn {
    /// `"expires_in": 0`.
    Zero,
    /// `"expires_in": -7200`.
    Negative,
    /// `"expires_in": 315360000000` (ten thousand years).
    Huge,
    /// `"expires_in": "7200"`, a string.
    Text,
}

impl BadExpiresIn {
    /// Every kind, for tests that go through them all.
    pub const ALL: [BadExpiresIn; 4] = [
        BadExpiresIn::Zero,
        BadExpiresIn::Negative,
        BadExpiresIn::Huge,
        BadExpiresIn::Text,
    ];

    /// The value answered in place of the real lifetime.
    pub fn json(self) -> serde_json::Value {
        match self {
            BadExpiresIn::Zero => serde_json::json!(0),
            BadExpiresIn::Negative => serde_json::json!(-7200),
            BadExpiresIn::Huge => serde_json::json!(315_360_000_000u64),
            BadExpiresIn::Text => serde_json::json!("7200"),
        }
    }
}

/// How the emulator behaves; [`Config::default`] matches WeChat's documented numbers.
#[derive(Clone, Debug)]
pub struct Config {
    /// Apps whose credentials are accepted.
    pub apps: Vec<AppCredentials>,
    /// Lifetime of an issued token in seconds (WeChat: 7200).
    pub expires_in: u64,
    /// How long a replaced classic token stays valid; also the stable token's renewal
    /// window (WeChat: 5 minutes for both).
    pub overlap: Duration,
    /// Daily `/cgi-bin/token` calls allowed per app (WeChat: 2000).
    pub quota: u64,
    /// Daily `/cgi-bin/stable_token` calls allowed per app (WeChat: 500,000).
    pub stable_quota: u64,
    /// Added to every token- and ticket-endpoint answer.
    pub latency: Duration,
    /// Added to every other answer: ordinary APIs, login calls (`/sns/*`) and uploads
    /// (the gateway benchmark's stand-in for WeChat's round trip); zero by default.
    /// Kept apart from `latency` so that slow token fetches and slow API calls can be
    /// set up separately.
    pub api_latency: Duration,
    /// Share of token- and ticket-endpoint calls that fail, `0.0..=1.0`.
    pub fail_rate: f64,
    /// Which failures to inject, picked uniformly; empty means none.
    pub fail_kinds: Vec<FailKind>,
    /// Spread failures evenly instead of at random: exactly `fail_rate` of each app's
    /// calls fail (the 1st, 4th, 7th... at 0.3), taking `fail_kinds` in turn. For tests
    /// that must meet failures in a handful of calls.
    pub fail_spread: bool,
    /// How long a [`FailKind::Timeout`] hangs before answering.
    pub hang: Duration,
    /// Force refreshes closer together than this do not refresh (WeChat: 30 s).
    pub force_refresh_interval: Duration,
    /// Force refreshes allowed per app per day (WeChat: 20).
    pub force_refresh_daily: u64,
    /// WeCom apps whose credentials `/cgi-bin/gettoken` accepts. Their tokens live
    /// `expires_in` and use `quota` per app per day.
    pub wecom_apps: Vec<WecomCredentials>,
    /// Lifetime of an issued ticket in seconds, official or WeCom (WeChat: 7200).
    pub ticket_expires_in: u64,
    /// WeCom `get_jsapi_ticket` calls allowed per corp per rolling hour (400).
    pub corp_ticket_hourly: u64,
    /// WeCom `ticket/get?type=agent_config` calls allowed per app per rolling hour
    /// (100).
    pub agent_ticket_hourly: u64,
    /// Official `ticket/getticket` calls allowed per app per day, all types
    /// together. WeChat only says "very limited"; 100,000 matches its ordinary
    /// API quotas. Authorizers have their own count each.
    pub ticket_daily: u64,
    /// Third-party platforms whose component APIs are accepted.
    pub components: Vec<ComponentCredentials>,
    /// Lifetime of a `component_access_token` in seconds (WeChat: 7200).
    pub component_expires_in: u64,
    /// Lifetime of an authorizer access token in seconds (WeChat: 7200).
    pub authorizer_expires_in: u64,
    /// How long the latest verify ticket buys component tokens (WeChat: 12 hours);
    /// older, it answers 61005.
    pub verify_ticket_lifetime: Duration,
    /// With `Some(n)`, [`spawn`] pushes a fresh verify ticket to every platform with a
    /// callback URL at once and then every `n` (WeChat: 10 minutes); `None` pushes
    /// only when asked ([`Emulator::push_verify_ticket`]).
    pub verify_ticket_interval: Option<Duration>,
    /// Every `api_authorizer_token` answer carries a new refresh token and the old one
    /// stops working (61023), so that a client that fails to keep the returned one
    /// finds out. `false` keeps the refresh token until the next authorization.
    pub rotate_refresh_tokens: bool,
    /// `clear_quota` and `clear_quota/v2` clears allowed per app per month, both
    /// together (WeChat: 10, shared with the console); over it: 48006.
    pub clear_quota_monthly: u64,
    /// A nonsense `expires_in` answered with every official token from the start
    /// (WeChat: `None`, the truth); [`Emulator::set_bad_expires_in`] changes it.
    pub bad_expires_in: Option<BadExpiresIn>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            apps: Vec::new(),
            expires_in: 7200,
            overlap: Duration::from_secs(300),
            quota: 2000,
            stable_quota: 500_000,
            latency: Duration::ZERO,
            api_latency: Duration::ZERO,
            fail_rate: 0.0,
            fail_spread: false,
            fail_kinds: FailKind::ALL.to_vec(),
            hang: Duration::from_secs(30),
            force_refresh_interval: Duration::from_secs(30),
            force_refresh_daily: 20,
            wecom_apps: Vec::new(),
            ticket_expires_in: 7200,
            corp_ticket_hourly: 400,
            agent_ticket_hourly: 100,
            ticket_daily: 100_000,
            components: Vec::new(),
            component_expires_in: 7200,
            authorizer_expires_in: 7200,
            verify_ticket_lifetime: Duration::from_secs(12 * 3600),
            verify_ticket_interval: None,
            rotate_refresh_tokens: true,
            clear_quota_monthly: 10,
            bad_expires_in: None,
        }
    }
}

impl Config {
    /// This config with one more accepted app; handy in tests:
    /// `Config::default().with_app("wx1", "secret")`.
    pub fn with_app(mut self, appid: &str, secret: &str) -> Self {
        self.apps.push(AppCredentials::new(appid, secret));
        self
    }

    /// This config with one more accepted WeCom app:
    /// `Config::default().with_wecom_app("ww1", 1000002, "secret")`.
    pub fn with_wecom_app(mut self, corpid: &str, agentid: u64, secret: &str) -> Self {
        self.wecom_apps
            .push(WecomCredentials::new(corpid, agentid, secret));
        self
    }

    /// This config with one more third-party platform, pushing nowhere (set its
    /// `callback_url`, or use [`Config::with_component_credentials`]):
    /// `Config::default().with_component("wxc", "secret", "token", "43 chars...")`.
    pub fn with_component(
        mut self,
        appid: &str,
        secret: &str,
        token: &str,
        encoding_aes_key: &str,
    ) -> Self {
        self.components.push(ComponentCredentials::new(
            appid,
            secret,
            token,
            encoding_aes_key,
        ));
        self
    }

    /// This config with one more third-party platform, as given.
    pub fn with_component_credentials(mut self, component: ComponentCredentials) -> Self {
        self.components.push(component);
        self
    }

    /// The credentials of the platform `appid`, if configured (the last entry wins if
    /// it is listed twice).
    pub fn component(&self, appid: &str) -> Option<&ComponentCredentials> {
        self.components.iter().rev().find(|c| c.appid == appid)
    }
}

/// What an ordinary WeChat API would say of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// Accepted.
    Valid,
    /// Past its expiry: errcode 42001.
    Expired,
    /// Never issued, or killed by a newer token or a revocation: errcode 40001
    /// (WeCom: 40014).
    Invalid,
}

/// Handle on one emulated WeChat; clones share the same state.
#[derive(Clone)]
pub struct Emulator {
    shared: Arc<Shared>,
}

/// Everything the handlers share. One mutex guards all mutable state: every
/// operation is a few map look-ups, never held across an await.
struct Shared {
    config: Config,
    state: Mutex<state::State>,
    /// The HTTP client and concurrency limit of pushes to callback URLs.
    pusher: push::Pusher,
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// An emulator knowing `config.apps`, `config.wecom_apps` and
    /// `config.components`, with no tokens issued yet.
    pub fn new(config: Config) -> Self {
        let state = state::State::new(&config);
        Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(state),
                pusher: push::Pusher::default(),
            }),
        }
    }

    /// All routes (WeChat's and `/_emulator/*`), with this emulator's state attached.
    pub fn router(&self) -> axum::Router {
        routes::router(self.clone())
    }

    /// Counters per app; the same data as `GET /_emulator/stats`.
    pub fn stats(&self) -> Stats {
        self.lock().stats()
    }

    /// Changes the share of token- and ticket-endpoint calls that fail (clamped to
    /// `0.0..=1.0`).
    pub fn set_fail_rate(&self, rate: f64) {
        self.lock().knobs.fail_rate = clamp_rate(rate);
    }

    /// Changes the latency added to every token- and ticket-endpoint answer.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().knobs.latency = latency;
    }

    /// With `Some`, every successful official token answer (`/cgi-bin/token`,
    /// `/cgi-bin/stable_token`) carries this nonsense `expires_in` instead of the real
    /// lifetime; the token itself is issued (and counted) as usual. `None` (the
    /// default) answers the truth.
    pub fn set_bad_expires_in(&self, bad: Option<BadExpiresIn>) {
        self.lock().knobs.bad_expires_in = bad;
    }

    /// Changes the latency added to every ordinary API, login call and upload answer
    /// ([`Config::api_latency`]); zero makes them instant.
    pub fn set_api_latency(&self, latency: Duration) {
        self.lock().knobs.api_latency = latency;
    }

    /// Accepts a new app, or changes the secret of a known one (its tokens survive,
    /// as on WeChat where resetting the secret does not revoke tokens).
    pub fn add_app(&self, appid: &str, secret: &str) {
        self.lock().add_app(appid, secret);
    }

    /// Accepts a new WeCom app, or changes the secret of a known one (its token
    /// survives).
    pub fn add_wecom_app(&self, corpid: &str, agentid: u64, secret: &str) {
        self.lock().add_wecom_app(corpid, agentid, secret);
    }

    /// What an ordinary API would say of `token` right now (counts nothing).
    pub fn check_token(&self, token: &str) -> TokenCheck {
        self.lock().check(token, tokio::time::Instant::now())
    }

    /// Kills `token` now, as resetting its app's secret in the console would: from
    /// then on it answers 40001 (a WeCom token: 40014), and the token endpoints hand
    /// out a new one. Unknown tokens are ignored.
    pub fn revoke_token(&self, token: &str) {
        self.lock().revoke(token, tokio::time::Instant::now());
    }

    /// Whether `ticket` is valid, expired, or was never issued (counts nothing).
    pub fn check_ticket(&self, ticket: &str) -> TokenCheck {
        self.lock()
            .check_ticket(ticket, tokio::time::Instant::now())
    }

    /// The latest ticket issued to an app, by appid or (WeCom) [`wecom_key`], of
    /// `kind` `"jsapi"`, `"wx_card"` or `"agent_config"`. A WeCom app's `"jsapi"`
    /// ticket is its corp's (`get_jsapi_ticket`), whichever app fetched it. `None`
    /// if none was issued or the kind does not apply; it may have expired since.
    pub fn current_ticket(&self, appid_or_wecom_key: &str, kind: &str) -> Option<String> {
        self.lock().current_ticket(appid_or_wecom_key, kind)
    }

    /// Clears every app's daily counters and the hourly WeCom ticket windows, as
    /// `POST /_emulator/reset_quota` does.
    pub fn reset_quota(&self) {
        self.lock().reset_quota();
    }

    /// Mints a verify ticket for the platform `component_appid` without pushing it
    /// (for tests that run no callback): from now on it is the one
    /// `api_component_token` accepts. `None` if the platform is unknown.
    pub fn verify_ticket(&self, component_appid: &str) -> Option<String> {
        self.lock()
            .mint_verify_ticket(component_appid, tokio::time::Instant::now())
    }

    /// The latest verify ticket minted for the platform, pushed or not.
    pub fn current_verify_ticket(&self, component_appid: &str) -> Option<String> {
        self.lock().current_verify_ticket(component_appid)
    }

    /// Mints a verify ticket (the latest from now on) and pushes it to the platform's
    /// callback URL, as WeChat does every 10 minutes. The ticket, or why it was not
    /// delivered: unknown platform, no callback URL, no answer, or an answer other
    /// than HTTP 2xx with the body `success`. As on WeChat, a ticket whose push
    /// failed is the latest all the same.
    pub async fn push_verify_ticket(&self, component_appid: &str) -> Result<String, String> {
        self.push_ticket(component_appid).await
    }

    /// Authorizes `authorizer_appid` to the platform `component_appid` (the
    /// merchant's click), granting the default permission set (func_info 1, 2, 3, 4,
    /// 5, 6, 7, 11, 15; a re-authorization keeps the previous set). Returns the
    /// authorization code for `api_query_auth` (single use, an hour); pushes an
    /// `authorized` event (`updateauthorized` if it was authorized already) to the
    /// callback URL in the background. A new refresh token replaces the previous
    /// one, as on WeChat. `None` if the platform is unknown.
    pub fn authorize(&self, component_appid: &str, authorizer_appid: &str) -> Option<String> {
        self.authorize_account(component_appid, authorizer_appid, None, None)
            .map(|outcome| outcome.authorization_code)
    }

    /// [`Emulator::authorize`] granting exactly `func_info` (permission set ids).
    pub fn authorize_with(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
        func_info: &[u32],
    ) -> Option<String> {
        self.authorize_account(component_appid, authorizer_appid, Some(func_info), None)
            .map(|outcome| outcome.authorization_code)
    }

    /// Revokes `authorizer_appid`'s authorization of the platform (the merchant
    /// cancels it in the console): its refresh token answers 61003 from now on and its
    /// access tokens 40001; an `unauthorized` event is pushed in the background.
    /// `false` if it was not authorized.
    pub fn unauthorize(&self, component_appid: &str, authorizer_appid: &str) -> bool {
        let revoked = self.lock().unauthorize(
            component_appid,
            authorizer_appid,
            tokio::time::Instant::now(),
        );
        if revoked {
            let message = push::unauthorized_message(component_appid, authorizer_appid, unix_now());
            self.push_in_background(component_appid, message);
        }
        revoked
    }

    /// The refresh token that works for `authorizer_appid` under the platform right
    /// now (`None` if it is not authorized): what a client should have kept.
    pub fn refresh_token_of(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
    ) -> Option<String> {
        self.lock()
            .refresh_token_of(component_appid, authorizer_appid)
    }

    /// Processes an `api_authorizer_token` for `authorizer_appid` whose answer is lost
    /// on the way (what a client's timeout does to a call WeChat completed): the
    /// refresh token the client holds stops working, and the new one is only in
    /// `api_get_authorizer_list`. Returns the new refresh token; `None` if the account
    /// is not authorized to the platform. `POST /_emulator/lose_authorizer_token`
    /// does the same.
    pub fn lose_authorizer_token(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
    ) -> Option<String> {
        self.lock().lost_authorizer_token_call(
            self.config(),
            component_appid,
            authorizer_appid,
            tokio::time::Instant::now(),
        )
    }

    /// Starts pushing verify tickets in the background as [`Config::verify_ticket_interval`]
    /// says: one to every platform with a callback URL at once, then one each interval;
    /// a failed push is logged and the next tick tries again. `None` (nothing started)
    /// without an interval, without such a platform, or outside a tokio runtime.
    /// [`spawn`] calls this; a server built on [`Emulator::router`] calls it itself.
    pub fn spawn_verify_ticket_pushes(&self) -> Option<JoinHandle<()>> {
        let every = self
            .config()
            .verify_ticket_interval?
            .max(Duration::from_millis(1));
        let mut components: Vec<String> = self
            .config()
            .components
            .iter()
            .filter(|c| c.callback_url.is_some())
            .map(|c| c.appid.clone())
            .collect();
        components.sort();
        components.dedup();
        if components.is_empty() {
            return None;
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let emulator = self.clone();
        Some(runtime.spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                for component in &components {
                    if let Err(err) = emulator.push_ticket(component).await {
                        tracing::warn!(
                            component = %component,
                            %err,
                            "verify ticket push failed; the next tick tries again"
                        );
                    }
                }
            }
        }))
    }

    /// Authorizes an account and pushes the event; what [`Emulator::authorize`] and
    /// `POST /_emulator/authorize` share.
    pub(crate) fn authorize_account(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
        func_info: Option<&[u32]>,
        pre_auth_code: Option<&str>,
    ) -> Option<state::AuthorizeOutcome> {
        let now = unix_now();
        let outcome = self.lock().authorize(
            component_appid,
            authorizer_appid,
            func_info,
            tokio::time::Instant::now(),
            now,
        )?;
        let message = push::authorized_message(
            component_appid,
            authorizer_appid,
            &outcome,
            pre_auth_code,
            now,
        );
        self.push_in_background(component_appid, message);
        Some(outcome)
    }

    pub(crate) fn config(&self) -> &Config {
        &self.shared.config
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, state::State> {
        // A panic while holding the lock leaves counters at worst half-updated, which
        // is harmless for an emulator: keep serving rather than cascade the panic.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Unix seconds now (0 if the clock is before 1970).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// NaN and out-of-range rates would make failure injection meaningless; clamp them.
fn clamp_rate(rate: f64) -> f64 {
    if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    }
}

/// An emulator serving HTTP in a background task. Dropping it stops the server.
#[derive(Debug)]
pub struct RunningEmulator {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Handle on its state (stats, knobs).
    pub emulator: Emulator,
    /// Dropped with the handle, which resolves the server's shutdown signal.
    _shutdown: oneshot::Sender<()>,
    /// The periodic verify ticket pushes, stopped with the handle.
    _ticket_pushes: Option<AbortOnDrop>,
}

/// Aborts a background task when dropped.
#[derive(Debug)]
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl RunningEmulator {
    /// `http://IP:PORT`, the base URL to give a WeChat client instead of
    /// `https://api.weixin.qq.com`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Serves a new emulator on `127.0.0.1` at a free port.
pub async fn spawn(config: Config) -> std::io::Result<RunningEmulator> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    spawn_on(listener, config).await
}

/// Serves a new emulator on `listener` (e.g. to restart on a known port), and starts
/// its periodic verify ticket pushes if [`Config::verify_ticket_interval`] asks for them.
pub async fn spawn_on(listener: TcpListener, config: Config) -> std::io::Result<RunningEmulator> {
    let addr = listener.local_addr()?;
    let emulator = Emulator::new(config);
    let (tx, rx) = oneshot::channel::<()>();
    let app = emulator.router();
    tokio::spawn(async move {
        // Either an explicit send or the sender being dropped ends the wait.
        let shutdown = async {
            let _ = rx.await;
        };
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(%err, "wechat emulator server stopped with an error");
        }
    });
    let ticket_pushes = emulator
        .spawn_verify_ticket_pushes()
        .map(|task| AbortOnDrop(task.abort_handle()));
    Ok(RunningEmulator {
        addr,
        emulator,
        _shutdown: tx,
        _ticket_pushes: ticket_pushes,
    })
}
