//! Typed settings: one tree loaded from TOML (plus `${VAR}` from the environment),
//! validated at load so that a bad value fails at start with the key's name.
//!
//! The keys are a contract (see DESIGN.md): add keys, never rename them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::credential::TicketType;
use sha2::{Digest, Sha256};

/// How long to wait for a TCP connection to WeChat before calling it a transient error.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a whole upstream request may take. WeChat answers token calls in well under
/// a second; ten seconds covers a bad network day without pinning a refresh for long.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A configuration problem, always naming the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid config: `{key}`: {message}")]
    Invalid { key: String, message: String },
}

pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub upstream: UpstreamSettings,
    pub keeper: KeeperSettings,
    pub gateway: GatewaySettings,
    pub apps: Vec<AppSettings>,
    pub clients: Vec<ClientSettings>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Where the master key (64 hex characters) is read from, unless
    /// `WXTOKEN_MASTER_KEY` is set.
    pub master_key_file: Option<PathBuf>,
    /// A connection that has not sent a whole request head this long after it opened
    /// (or after its last answer, kept alive) is closed.
    pub header_read_timeout: Duration,
    /// A request body must have arrived this long after its route starts reading it,
    /// or the request gets 408 (gateway bodies follow `gateway.request_timeout_ms`).
    pub body_read_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog until one
    /// closes.
    pub max_connections: usize,
}

/// Real clients send a request head in one packet; ten seconds is a very slow network.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Every body the v1 routes read is at most 64 KiB.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Far more than a fleet of services with pooled connections needs, far fewer than the
/// file descriptors a default `ulimit -n` of 65536 allows.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Request heads (request line and headers) above this get 431; real SDKs send under
/// 2 KiB.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Where durable state lives.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    /// The embedded default: one SQLite file.
    Sqlite { path: PathBuf },
    /// Several instances sharing one Redis.
    Redis {
        /// The (first) node's URL.
        url: String,
        /// A Redis Cluster (`store.cluster = true`, or several nodes in `store.url`).
        cluster: bool,
        /// Further seed nodes of a cluster.
        seeds: Vec<String>,
        /// Every Redis operation gives up after this (the keeper serves from memory).
        op_timeout: Duration,
        /// PEM file of the CA that signed a `rediss://` server's certificate, when it is
        /// not one of the public roots.
        tls_ca_file: Option<PathBuf>,
    },
}

/// How instances sharing a store coordinate (from `[store]`; used with Redis only).
#[derive(Debug, Clone)]
pub struct SharedSettings {
    /// How long a refresher's lease lasts unless renewed; another instance takes over
    /// this long after the holder dies.
    pub lease_ttl: Duration,
    /// How often every credential is compared with the store, in case an announcement
    /// was missed.
    pub reconcile_every: Duration,
    /// Classic mode with the store unreachable: refresh alone anyway? A classic fetch
    /// kills the token the other instances hold, so the default is no.
    pub classic_refresh_when_down: bool,
}

impl Default for SharedSettings {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(5),
            reconcile_every: Duration::from_secs(10),
            classic_refresh_when_down: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Base URL of the official-account API, without a trailing slash.
    pub api_base: String,
    /// Base URL of the WeCom API, without a trailing slash.
    pub wecom_base: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// The gateway to WeChat's ordinary APIs (`[gateway]`).
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Larger request bodies are refused with 413. WeChat's largest upload (a WeCom
    /// file) is 20 MB, so the default lets every documented upload through.
    pub max_body_bytes: u64,
    /// Bodies up to this size are held in memory so that a request WeChat rejected for
    /// its token can be sent again with the current one; larger bodies (media uploads)
    /// are streamed through and not retried.
    pub retry_body_bytes: u64,
    /// How long one forwarded request may take; uploads need longer than token calls.
    pub request_timeout: Duration,
}

/// Every documented WeChat upload fits: a WeCom file may be 20 MB.
pub const DEFAULT_GATEWAY_MAX_BODY: u64 = 20 * 1024 * 1024;
/// JSON bodies of ordinary APIs are small; a megabyte covers all but media.
pub const DEFAULT_GATEWAY_RETRY_BODY: u64 = 1024 * 1024;
/// A 20 MB upload over a slow link still finishes; a stuck call does not pin a
/// connection for long.
pub const DEFAULT_GATEWAY_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_GATEWAY_MAX_BODY,
            retry_body_bytes: DEFAULT_GATEWAY_RETRY_BODY,
            request_timeout: DEFAULT_GATEWAY_TIMEOUT,
        }
    }
}

/// The keeper's timing rules; every value has a default that suits real WeChat.
#[derive(Debug, Clone)]
pub struct KeeperSettings {
    /// Classic mode (and later WeCom, tickets): refresh this long before expiry.
    pub refresh_ahead: Duration,
    /// Stable mode: refresh inside the last this-long of validity, where WeChat renews.
    pub stable_window: Duration,
    /// How long a GET with `min_ttl` may wait for a fresh enough token.
    pub min_ttl_wait: Duration,
    /// A ticket nobody asked for in this long is no longer refreshed: it is left to
    /// expire and fetched again on the next request (ticket calls are scarce).
    pub ticket_idle: Duration,
    /// How many automatic force_refresh calls a stable-mode app may make per WeChat day.
    /// WeChat allows 20; keeping half leaves room for a human in an emergency.
    pub force_refresh_daily_budget: u32,
    /// WeChat ignores force refreshes less than 30 s apart, so we never send them closer.
    pub force_refresh_min_interval: Duration,
    /// A component's background refreshes of authorizer tokens are paced to at most
    /// this many upstream calls per second (per instance); a caller waiting on a token,
    /// or an authorization being completed, never waits for this pace.
    pub authorizer_refresh_per_sec: u32,
    /// Coordination with other instances (from `[store]`).
    pub shared: SharedSettings,
    /// The quota guard's defaults (from `[upstream]`).
    pub quota: QuotaSettings,
    /// Where incidents are sent (`[[alerts]]`) and when a credential counts as expiring
    /// (`keeper.expiry_alert_secs`).
    pub alerts: AlertSettings,
}

impl Default for KeeperSettings {
    fn default() -> Self {
        Self {
            refresh_ahead: Duration::from_secs(600),
            stable_window: Duration::from_secs(300),
            min_ttl_wait: Duration::from_secs(10),
            ticket_idle: Duration::from_secs(6 * 3600),
            force_refresh_daily_budget: 10,
            force_refresh_min_interval: Duration::from_secs(30),
            authorizer_refresh_per_sec: 50,
            shared: SharedSettings::default(),
            quota: QuotaSettings::default(),
            alerts: AlertSettings::default(),
        }
    }
}

/// How much of WeChat's daily limit of an API wxtoken may use per app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DailyBudget {
    /// A share of WeChat's limit, 1-100 percent; applies only where the limit is known.
    Percent(u8),
    /// A number of calls a day, whatever WeChat's limit.
    Calls(u64),
}

impl DailyBudget {
    /// The number of calls a day, given WeChat's limit (`None`: unknown, no budget).
    pub fn calls(self, wechat_limit: Option<u64>) -> Option<u64> {
        match self {
            DailyBudget::Percent(p) => wechat_limit.map(|limit| limit * u64::from(p) / 100),
            DailyBudget::Calls(n) => Some(n),
        }
    }
}

/// The quota guard's settings shared by every app (`[upstream] daily_budget`,
/// `clear_quota_monthly_budget`).
#[derive(Debug, Clone)]
pub struct QuotaSettings {
    /// Default `daily_budget` of apps that set none: 80% leaves a fifth of the day's
    /// limit to a human in an emergency.
    pub daily_budget: DailyBudget,
    /// Clears (`clear_quota/v2`) per app per month, automatic and manual together;
    /// WeChat allows 10 a month, shared with its console.
    pub clear_quota_monthly_budget: u32,
}

/// WeChat allows 10 clears a month per account.
pub const WECHAT_CLEARS_PER_MONTH: u32 = 10;

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            daily_budget: DailyBudget::Percent(80),
            clear_quota_monthly_budget: WECHAT_CLEARS_PER_MONTH,
        }
    }
}

/// Webhook alerts: the hooks, and the rule that raises an `expiring` incident.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Every `[[alerts]]` entry, in file order; none means nothing is sent.
    pub hooks: Vec<HookSettings>,
    /// A credential with less than this left, whose last refresh failed, raises an
    /// `expiring` incident. Fifteen minutes leaves an operator time to act before a
    /// two-hour token lapses.
    pub expiry_alert: Duration,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            hooks: Vec::new(),
            expiry_alert: Duration::from_secs(900),
        }
    }
}

/// One app's quota settings (`[[apps]] daily_budget`, `auto_clear_quota`).
#[derive(Debug, Clone, Default)]
pub struct AppQuota {
    /// Overrides `[upstream] daily_budget` for this app.
    pub daily_budget: Option<DailyBudget>,
    /// On 45009, call `clear_quota/v2` once (within the monthly budget) and retry.
    pub auto_clear_quota: bool,
}

/// One `[[alerts]]` webhook.
#[derive(Clone, PartialEq, Eq)]
pub struct HookSettings {
    /// Where incidents are POSTed. A WeCom robot's URL carries its key: never logged
    /// whole (see [`HookSettings::redacted_url`]).
    pub url: String,
    pub format: HookFormat,
    /// At most this many messages a minute; more wait in the hook's queue. WeCom's
    /// group robot accepts 20 a minute.
    pub max_per_minute: u32,
}

impl HookSettings {
    /// The URL without its path and query (which may hold the robot's key).
    pub fn redacted_url(&self) -> String {
        let rest = self.url.split_once("://").map_or("", |(_, r)| r);
        let scheme = self.url.split_once("://").map_or("", |(s, _)| s);
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        format!("{scheme}://{host}/...")
    }
}

impl std::fmt::Debug for HookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookSettings")
            .field("url", &self.redacted_url())
            .field("format", &self.format)
            .field("max_per_minute", &self.max_per_minute)
            .finish()
    }
}

/// The body a hook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookFormat {
    /// `{"event","incident","kind","app","summary","at"}`.
    Json,
    /// A WeCom group robot's `markdown` message.
    Wecom,
}

/// WeCom's group robot accepts 20 messages a minute.
pub const DEFAULT_ALERTS_PER_MINUTE: u32 = 20;

/// What sort of WeChat account an app is, with what only that sort has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    /// Official accounts and mini programs: same token API.
    Official { mode: TokenMode },
    /// A WeCom (企业微信) app: one token per (corp, app secret).
    Wecom { agentid: u64 },
    /// A third-party platform (开放平台 第三方平台): its component_access_token, and
    /// the tokens of the accounts that authorized it (created at runtime).
    Component,
}

impl AppKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AppKind::Official { .. } => "official",
            AppKind::Wecom { .. } => "wecom",
            AppKind::Component => "component",
        }
    }

    /// The tickets this kind of app has.
    pub fn tickets(self) -> &'static [TicketType] {
        match self {
            AppKind::Official { .. } => &[TicketType::Jsapi, TicketType::WxCard],
            AppKind::Wecom { .. } => &[TicketType::Jsapi, TicketType::AgentConfig],
            // A component has none itself; its authorizers have an official account's.
            AppKind::Component => &[],
        }
    }
}

/// The tickets an authorizer (an official account or mini program that authorized a
/// component) has.
pub const AUTHORIZER_TICKETS: &[TicketType] = &[TicketType::Jsapi, TicketType::WxCard];

/// A component's message keys: WeChat signs its pushes with `token` and encrypts them
/// with `encoding_aes_key` (43 characters).
#[derive(Debug)]
pub struct MessageKeys {
    pub token: SecretString,
    pub encoding_aes_key: SecretString,
}

/// Which token endpoint an official account uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// `/cgi-bin/stable_token`: repeat calls return the same token; renews in the last 5 min.
    Stable,
    /// `/cgi-bin/token`: every call issues a new token and kills the previous one.
    Classic,
}

impl TokenMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenMode::Stable => "stable",
            TokenMode::Classic => "classic",
        }
    }
}

/// One configured app.
#[derive(Debug, Clone)]
pub struct AppSettings {
    /// The `{app}` in URLs.
    pub id: String,
    pub kind: AppKind,
    /// WeChat's appid, or for a WeCom app its corpid.
    pub appid: String,
    pub secret: SecretString,
    /// A component's message keys (`kind = "component"` only).
    pub message: Option<Arc<MessageKeys>>,
    /// The quota guard's per-app settings.
    pub quota: AppQuota,
}

impl AppSettings {
    /// The token endpoint of an official account; `None` for WeCom and components.
    pub fn mode(&self) -> Option<TokenMode> {
        match self.kind {
            AppKind::Official { mode } => Some(mode),
            AppKind::Wecom { .. } | AppKind::Component => None,
        }
    }

    /// The WeCom agentid, if this is a WeCom app.
    pub fn agentid(&self) -> Option<u64> {
        match self.kind {
            AppKind::Wecom { agentid } => Some(agentid),
            AppKind::Official { .. } | AppKind::Component => None,
        }
    }
}

/// The scopes a client key may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Read,
    Invalidate,
    Admin,
}

impl Scope {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Scope::Read),
            "invalidate" => Some(Scope::Invalidate),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// Which apps a client key may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppGrant {
    All,
    Only(Vec<String>),
}

impl AppGrant {
    pub fn allows(&self, app: &str) -> bool {
        match self {
            AppGrant::All => true,
            AppGrant::Only(apps) => apps.iter().any(|a| a == app),
        }
    }
}

/// One client key. Only the sha256 of the key is kept in memory.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub name: String,
    pub key_sha256: [u8; 32],
    pub apps: AppGrant,
    pub scopes: Vec<Scope>,
}

/// sha256 of a client key, the form keys are compared in.
pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

mod load;
pub use load::{app_from_json, is_identifier, runtime_client};
#[cfg(test)]
mod tests;
