//! A faithful stand-in for WeChat's credential APIs (`/cgi-bin/token`,
//! `/cgi-bin/stable_token`, WeCom's `/cgi-bin/gettoken`, and the JS-SDK tickets of
//! both), the secret-bearing login calls (`/sns/jscode2session`,
//! `/sns/oauth2/access_token`), media uploads, and a few ordinary APIs that check the
//! tokens, for the tests, benchmarks and demo of the wxtoken server.
//!
//! This module owns the public surface: [`Config`], the cloneable [`Emulator`] handle
//! (shared state behind an `Arc`), and [`spawn`]/[`spawn_on`] that serve it over HTTP.
//! Token bookkeeping lives in `state`, HTTP handlers in `routes`, error bodies and
//! failure injection in `failure`, counters in `stats`.

mod failure;
mod routes;
mod state;
mod stats;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use stats::{AppStats, Stats, UNKNOWN_APP, wecom_key};

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
}

impl FailKind {
    /// All kinds, the default set to inject.
    pub const ALL: [FailKind; 3] = [FailKind::SystemBusy, FailKind::Http500, FailKind::Timeout];
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
    /// API quotas.
    pub ticket_daily: u64,
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
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// An emulator knowing `config.apps` and `config.wecom_apps`, with no tokens
    /// issued yet.
    pub fn new(config: Config) -> Self {
        let state = state::State::new(&config);
        Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(state),
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

/// Serves a new emulator on `listener` (e.g. to restart on a known port).
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
    Ok(RunningEmulator {
        addr,
        emulator,
        _shutdown: tx,
    })
}
