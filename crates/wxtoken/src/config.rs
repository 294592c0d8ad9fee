//! Typed settings: one tree loaded from TOML (plus `${VAR}` from the environment),
//! validated at load so that a bad value fails at start with the key's name.
//!
//! The keys are a contract (see DESIGN.md): add keys, never rename them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::credential::TicketType;
use serde::Deserialize;
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

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
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
    pub apps: Vec<AppSettings>,
    pub clients: Vec<ClientSettings>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
}

/// Where durable state lives.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    /// The embedded default: one SQLite file.
    Sqlite { path: PathBuf },
    /// Several instances sharing one Redis.
    Redis {
        url: String,
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

/// The keeper's timing rules; every value has a default that suits real WeChat.
#[derive(Debug, Clone)]
pub struct KeeperSettings {
    /// Classic mode (and later WeCom, tickets): refresh this long before expiry.
    pub refresh_ahead: Duration,
    /// Stable mode: refresh inside the last this-long of validity, where WeChat renews.
    pub stable_window: Duration,
    /// How long a GET with `min_ttl` may wait for a fresh enough token.
    pub min_ttl_wait: Duration,
    /// How many automatic force_refresh calls a stable-mode app may make per WeChat day.
    /// WeChat allows 20; keeping half leaves room for a human in an emergency.
    pub force_refresh_daily_budget: u32,
    /// WeChat ignores force refreshes less than 30 s apart, so we never send them closer.
    pub force_refresh_min_interval: Duration,
    /// Coordination with other instances (from `[store]`).
    pub shared: SharedSettings,
}

impl Default for KeeperSettings {
    fn default() -> Self {
        Self {
            refresh_ahead: Duration::from_secs(600),
            stable_window: Duration::from_secs(300),
            min_ttl_wait: Duration::from_secs(10),
            force_refresh_daily_budget: 10,
            force_refresh_min_interval: Duration::from_secs(30),
            shared: SharedSettings::default(),
        }
    }
}

/// What sort of WeChat account an app is, with what only that sort has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    /// Official accounts and mini programs: same token API.
    Official { mode: TokenMode },
    /// A WeCom (企业微信) app: one token per (corp, app secret).
    Wecom { agentid: u64 },
}

impl AppKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AppKind::Official { .. } => "official",
            AppKind::Wecom { .. } => "wecom",
        }
    }

    /// The tickets this kind of app has.
    pub fn tickets(self) -> &'static [TicketType] {
        match self {
            AppKind::Official { .. } => &[TicketType::Jsapi, TicketType::WxCard],
            AppKind::Wecom { .. } => &[TicketType::Jsapi, TicketType::AgentConfig],
        }
    }
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
}

impl AppSettings {
    /// The token endpoint of an official account; `None` for WeCom.
    pub fn mode(&self) -> Option<TokenMode> {
        match self.kind {
            AppKind::Official { mode } => Some(mode),
            AppKind::Wecom { .. } => None,
        }
    }

    /// The WeCom agentid, if this is a WeCom app.
    pub fn agentid(&self) -> Option<u64> {
        match self.kind {
            AppKind::Wecom { agentid } => Some(agentid),
            AppKind::Official { .. } => None,
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

// ---- raw TOML shape -------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    keeper: RawKeeper,
    #[serde(default)]
    apps: Vec<RawApp>,
    #[serde(default)]
    clients: Vec<RawClient>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    kind: Option<String>,
    path: Option<String>,
    url: Option<String>,
    op_timeout_ms: Option<u64>,
    lease_ttl_ms: Option<u64>,
    reconcile_secs: Option<u64>,
    classic_refresh_when_down: Option<bool>,
    tls_ca_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    api_base: Option<String>,
    wecom_base: Option<String>,
    connect_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeeper {
    refresh_ahead_secs: Option<u64>,
    stable_window_secs: Option<u64>,
    min_ttl_wait_secs: Option<u64>,
    force_refresh_daily_budget: Option<u32>,
    force_refresh_min_interval_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    id: Option<String>,
    kind: Option<String>,
    appid: Option<String>,
    corpid: Option<String>,
    agentid: Option<i64>,
    secret: Option<String>,
    mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: Option<String>,
    key: Option<String>,
    key_sha256: Option<String>,
    apps: Option<Vec<String>>,
    scopes: Option<Vec<String>>,
}

impl Settings {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Validates TOML text; `${VAR}` in string values is read from the environment.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_with_env(text, &|name| std::env::var(name).ok())
    }

    /// As [`Settings::from_toml`], with the environment given (tests).
    pub fn from_toml_with_env(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawSettings =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let expand = |key: &str, value: &str| expand_env(key, value, env);

        let listen = raw.server.listen.as_deref().unwrap_or("127.0.0.1:7200");
        let listen = listen.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!("`{listen}` is not an address like 127.0.0.1:7200"),
            )
        })?;

        let store = match raw.store.kind.as_deref().unwrap_or("sqlite") {
            "sqlite" => {
                let path = raw.store.path.as_deref().unwrap_or("wxtoken.db");
                let path = expand("store.path", path)?;
                if path.is_empty() {
                    return Err(invalid("store.path", "must not be empty"));
                }
                StoreSettings::Sqlite { path: path.into() }
            }
            "redis" => {
                let url = raw
                    .store
                    .url
                    .as_deref()
                    .ok_or_else(|| invalid("store.url", "is required when kind = \"redis\""))?;
                let url = expand("store.url", url)?;
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    return Err(invalid(
                        "store.url",
                        "must start with redis:// or rediss://",
                    ));
                }
                let tls_ca_file = match raw.store.tls_ca_file.as_deref() {
                    Some(_) if !url.starts_with("rediss://") => {
                        return Err(invalid(
                            "store.tls_ca_file",
                            "applies only to a rediss:// url",
                        ));
                    }
                    Some(path) => Some(PathBuf::from(expand("store.tls_ca_file", path)?)),
                    None => None,
                };
                StoreSettings::Redis {
                    url,
                    tls_ca_file,
                    op_timeout: positive_ms(
                        "store.op_timeout_ms",
                        raw.store.op_timeout_ms,
                        Duration::from_secs(1),
                    )?,
                }
            }
            other => {
                return Err(invalid(
                    "store.kind",
                    format!("`{other}` is not one of \"sqlite\", \"redis\""),
                ));
            }
        };

        let upstream = UpstreamSettings {
            api_base: base_url(
                "upstream.api_base",
                raw.upstream
                    .api_base
                    .as_deref()
                    .unwrap_or("https://api.weixin.qq.com"),
                &expand,
            )?,
            wecom_base: base_url(
                "upstream.wecom_base",
                raw.upstream
                    .wecom_base
                    .as_deref()
                    .unwrap_or("https://qyapi.weixin.qq.com"),
                &expand,
            )?,
            connect_timeout: positive_ms(
                "upstream.connect_timeout_ms",
                raw.upstream.connect_timeout_ms,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            request_timeout: positive_ms(
                "upstream.request_timeout_ms",
                raw.upstream.request_timeout_ms,
                DEFAULT_REQUEST_TIMEOUT,
            )?,
        };

        let defaults = KeeperSettings::default();
        let keeper = KeeperSettings {
            refresh_ahead: positive_secs(
                "keeper.refresh_ahead_secs",
                raw.keeper.refresh_ahead_secs,
                defaults.refresh_ahead,
            )?,
            stable_window: positive_secs(
                "keeper.stable_window_secs",
                raw.keeper.stable_window_secs,
                defaults.stable_window,
            )?,
            min_ttl_wait: raw
                .keeper
                .min_ttl_wait_secs
                .map(Duration::from_secs)
                .unwrap_or(defaults.min_ttl_wait),
            force_refresh_daily_budget: match raw.keeper.force_refresh_daily_budget {
                Some(n) if n > 20 => {
                    return Err(invalid(
                        "keeper.force_refresh_daily_budget",
                        "WeChat allows at most 20 force refreshes a day",
                    ));
                }
                Some(n) => n,
                None => defaults.force_refresh_daily_budget,
            },
            force_refresh_min_interval: raw
                .keeper
                .force_refresh_min_interval_secs
                .map(Duration::from_secs)
                .unwrap_or(defaults.force_refresh_min_interval),
            shared: SharedSettings {
                lease_ttl: positive_ms(
                    "store.lease_ttl_ms",
                    raw.store.lease_ttl_ms,
                    defaults.shared.lease_ttl,
                )?,
                reconcile_every: positive_secs(
                    "store.reconcile_secs",
                    raw.store.reconcile_secs,
                    defaults.shared.reconcile_every,
                )?,
                classic_refresh_when_down: raw
                    .store
                    .classic_refresh_when_down
                    .unwrap_or(defaults.shared.classic_refresh_when_down),
            },
        };

        let mut apps = Vec::with_capacity(raw.apps.len());
        let mut seen = HashSet::new();
        let mut wecom_agents = HashSet::new();
        for (i, app) in raw.apps.into_iter().enumerate() {
            let app = validate_app(i, app, &expand)?;
            if let Some(agentid) = app.agentid() {
                if !wecom_agents.insert((app.appid.clone(), agentid)) {
                    return Err(invalid(
                        format!("apps[{i}].agentid"),
                        format!("corp {} app {agentid} is configured twice", app.appid),
                    ));
                }
            }
            if !seen.insert(app.id.clone()) {
                return Err(invalid(
                    format!("apps[{i}].id"),
                    format!("`{}` is configured twice", app.id),
                ));
            }
            apps.push(app);
        }

        let mut clients = Vec::with_capacity(raw.clients.len());
        let mut names = HashSet::new();
        let mut digests = HashSet::new();
        for (i, client) in raw.clients.into_iter().enumerate() {
            let client = validate_client(i, client, &seen, &expand)?;
            if !names.insert(client.name.clone()) {
                return Err(invalid(
                    format!("clients[{i}].name"),
                    format!("`{}` is configured twice", client.name),
                ));
            }
            if !digests.insert(client.key_sha256) {
                return Err(invalid(
                    format!("clients[{i}].key"),
                    "the same key is given to another client",
                ));
            }
            clients.push(client);
        }

        Ok(Settings {
            server: ServerSettings { listen },
            store,
            upstream,
            keeper,
            apps,
            clients,
        })
    }
}

fn validate_app(
    i: usize,
    raw: RawApp,
    expand: &dyn Fn(&str, &str) -> Result<String, ConfigError>,
) -> Result<AppSettings, ConfigError> {
    let key = |field: &str| format!("apps[{i}].{field}");
    let id = raw.id.ok_or_else(|| invalid(key("id"), "is required"))?;
    if !is_identifier(&id) {
        return Err(invalid(
            key("id"),
            format!("`{id}` must be 1-64 characters of letters, digits, '-' or '_'"),
        ));
    }
    let secret = raw
        .secret
        .ok_or_else(|| invalid(key("secret"), "is required"))?;
    let secret = expand(&key("secret"), &secret)?;
    if secret.trim().is_empty() {
        return Err(invalid(key("secret"), "must not be empty"));
    }
    let alnum = |field: &str, value: String, example: &str| {
        let value = expand(&key(field), &value)?;
        if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid(
                key(field),
                format!("must be letters and digits, like {example}"),
            ));
        }
        Ok(value)
    };
    let not_for = |field: &str, present: bool, kind: &str| {
        if present {
            Err(invalid(
                key(field),
                format!("does not apply to kind = \"{kind}\""),
            ))
        } else {
            Ok(())
        }
    };
    let (kind, appid) = match raw.kind.as_deref().unwrap_or("official") {
        "official" => {
            not_for("corpid", raw.corpid.is_some(), "official")?;
            not_for("agentid", raw.agentid.is_some(), "official")?;
            let appid = raw
                .appid
                .ok_or_else(|| invalid(key("appid"), "is required"))?;
            let mode = match raw.mode.as_deref().unwrap_or("stable") {
                "stable" => TokenMode::Stable,
                "classic" => TokenMode::Classic,
                other => {
                    return Err(invalid(
                        key("mode"),
                        format!("`{other}` is not one of \"stable\", \"classic\""),
                    ));
                }
            };
            (
                AppKind::Official { mode },
                alnum("appid", appid, "wx0123456789abcdef")?,
            )
        }
        "wecom" => {
            not_for("appid", raw.appid.is_some(), "wecom (use corpid)")?;
            not_for("mode", raw.mode.is_some(), "wecom")?;
            let corpid = raw
                .corpid
                .ok_or_else(|| invalid(key("corpid"), "is required for kind = \"wecom\""))?;
            let agentid = raw.agentid.ok_or_else(|| {
                invalid(
                    key("agentid"),
                    "is required for kind = \"wecom\" (an integer)",
                )
            })?;
            let agentid = u64::try_from(agentid)
                .map_err(|_| invalid(key("agentid"), "must be a positive integer"))?;
            (
                AppKind::Wecom { agentid },
                alnum("corpid", corpid, "ww0123456789abcdef")?,
            )
        }
        "component" => {
            return Err(invalid(
                key("kind"),
                "third-party platform apps (\"component\") are not supported by this build yet",
            ));
        }
        other => {
            return Err(invalid(
                key("kind"),
                format!("`{other}` is not one of \"official\", \"wecom\", \"component\""),
            ));
        }
    };
    Ok(AppSettings {
        id,
        kind,
        appid,
        secret: SecretString::from(secret),
    })
}

fn validate_client(
    i: usize,
    raw: RawClient,
    app_ids: &HashSet<String>,
    expand: &dyn Fn(&str, &str) -> Result<String, ConfigError>,
) -> Result<ClientSettings, ConfigError> {
    let key = |field: &str| format!("clients[{i}].{field}");
    let name = raw
        .name
        .ok_or_else(|| invalid(key("name"), "is required"))?;
    if !is_identifier(&name) {
        return Err(invalid(
            key("name"),
            format!("`{name}` must be 1-64 characters of letters, digits, '-' or '_'"),
        ));
    }
    let key_sha256 = match (raw.key, raw.key_sha256) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                key("key"),
                "give either key or key_sha256, not both",
            ));
        }
        (None, None) => return Err(invalid(key("key"), "key or key_sha256 is required")),
        (Some(plain), None) => {
            let plain = SecretString::from(expand(&key("key"), &plain)?);
            if plain.expose_secret().len() < 16 {
                return Err(invalid(key("key"), "must be at least 16 characters"));
            }
            key_digest(plain.expose_secret())
        }
        (None, Some(hexed)) => {
            let hexed = expand(&key("key_sha256"), &hexed)?;
            hex::decode(hexed.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    invalid(
                        key("key_sha256"),
                        "must be 64 hex digits (sha256 of the key)",
                    )
                })?
        }
    };
    let apps = raw
        .apps
        .ok_or_else(|| invalid(key("apps"), "is required (a list, or [\"*\"])"))?;
    let apps = if apps.iter().any(|a| a == "*") {
        AppGrant::All
    } else {
        for app in &apps {
            if !app_ids.contains(app) {
                return Err(invalid(
                    key("apps"),
                    format!("`{app}` is not a configured app id"),
                ));
            }
        }
        AppGrant::Only(apps)
    };
    let raw_scopes = raw.scopes.unwrap_or_else(|| vec!["read".to_owned()]);
    let mut scopes = Vec::new();
    for s in &raw_scopes {
        let scope = Scope::parse(s).ok_or_else(|| {
            invalid(
                key("scopes"),
                format!("`{s}` is not one of \"read\", \"invalidate\", \"admin\""),
            )
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    Ok(ClientSettings {
        name,
        key_sha256,
        apps,
        scopes,
    })
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn base_url(
    key: &str,
    value: &str,
    expand: &dyn Fn(&str, &str) -> Result<String, ConfigError>,
) -> Result<String, ConfigError> {
    let value = expand(key, value)?;
    let ok = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
    if !ok {
        return Err(invalid(key, format!("`{value}` is not an http(s) URL")));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn positive_ms(key: &str, value: Option<u64>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        Some(0) => Err(invalid(key, "must be greater than 0")),
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Ok(default),
    }
}

fn positive_secs(
    key: &str,
    value: Option<u64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        Some(0) => Err(invalid(key, "must be greater than 0")),
        Some(s) => Ok(Duration::from_secs(s)),
        None => Ok(default),
    }
}

/// Replaces every `${NAME}` in `value` with that environment variable.
fn expand_env(
    key: &str,
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| invalid(key, "has `${` without a closing `}`"))?;
        let name = &after[..end];
        let var = env(name)
            .ok_or_else(|| invalid(key, format!("environment variable {name} is not set")))?;
        out.push_str(&var);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const MINIMAL: &str = r#"
        [[apps]]
        id = "shop"
        appid = "wx0123456789abcdef"
        secret = "s3cret"
        [[clients]]
        name = "svc"
        key = "wxt_dev_only_plaintext"
        apps = ["shop"]
        scopes = ["read", "invalidate"]
    "#;

    fn err(text: &str) -> String {
        Settings::from_toml_with_env(text, &no_env)
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let s = Settings::from_toml_with_env(MINIMAL, &no_env).expect("valid");
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:7200");
        assert_eq!(s.apps[0].mode(), Some(TokenMode::Stable));
        assert_eq!(s.keeper.refresh_ahead, Duration::from_secs(600));
        assert_eq!(s.keeper.force_refresh_daily_budget, 10);
        assert_eq!(s.upstream.api_base, "https://api.weixin.qq.com");
        assert!(matches!(s.store, StoreSettings::Sqlite { .. }));
        assert_eq!(
            s.clients[0].key_sha256,
            key_digest("wxt_dev_only_plaintext")
        );
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let text = MINIMAL.replace("\"s3cret\"", "\"${SHOP_SECRET}\"");
        let env = |n: &str| (n == "SHOP_SECRET").then(|| "from-env".to_owned());
        let s = Settings::from_toml_with_env(&text, &env).expect("valid");
        assert_eq!(s.apps[0].secret.expose_secret(), "from-env");
        assert!(err(&text).contains("apps[0].secret"));
        assert!(err(&text).contains("SHOP_SECRET is not set"));
    }

    #[test]
    fn wecom_apps_need_corpid_and_agentid() {
        let wecom = r#"
            [[apps]]
            id = "hr"
            kind = "wecom"
            corpid = "ww0123456789abcdef"
            agentid = 1000002
            secret = "s"
        "#;
        let s = Settings::from_toml_with_env(wecom, &no_env).expect("valid");
        assert_eq!(s.apps[0].kind, AppKind::Wecom { agentid: 1000002 });
        assert_eq!(s.apps[0].appid, "ww0123456789abcdef");
        assert!(err(&wecom.replace("agentid = 1000002", "")).contains("apps[0].agentid"));
        assert!(
            err(&wecom.replace("agentid = 1000002", "agentid = -3")).contains("apps[0].agentid")
        );
        assert!(
            err(&wecom.replace("corpid = \"ww0123456789abcdef\"", "")).contains("apps[0].corpid")
        );
        assert!(
            err(&wecom.replace("kind = \"wecom\"", "kind = \"wecom\"\nmode = \"classic\""))
                .contains("apps[0].mode")
        );
        assert!(
            err(&format!("{wecom}\n{}", wecom.replace("\"hr\"", "\"hr2\"")))
                .contains("apps[1].agentid")
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(err(&format!("{MINIMAL}\n[keeper]\nrefresh_ahead = 3")).contains("refresh_ahead"));
        assert!(err(&MINIMAL.replace("secret = \"s3cret\"", "")).contains("apps[0].secret"));
        assert!(err(&MINIMAL.replace("\"shop\"]", "\"nope\"]")).contains("clients[0].apps"));
        assert!(err(&MINIMAL.replace("\"invalidate\"", "\"write\"")).contains("clients[0].scopes"));
        assert!(err(&format!("{MINIMAL}\nmode2 = 1")).contains("mode2"));
        assert!(
            err(&MINIMAL.replace("id = \"shop\"", "id = \"shop\"\nmode = \"fast\""))
                .contains("apps[0].mode")
        );
        assert!(
            err(&format!("[server]\nlisten = \"nowhere\"\n{MINIMAL}")).contains("server.listen")
        );
        assert!(
            err(&format!("[upstream]\napi_base = \"ftp://x\"\n{MINIMAL}"))
                .contains("upstream.api_base")
        );
        assert!(err(&format!("[store]\nkind = \"mysql\"\n{MINIMAL}")).contains("store.kind"));
        assert!(
            err(&MINIMAL.replace("wxt_dev_only_plaintext", "short")).contains("clients[0].key")
        );
    }
}
