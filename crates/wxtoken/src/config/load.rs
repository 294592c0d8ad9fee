//! Reading TOML (and `${VAR}` from the environment) into [`Settings`], validating every
//! value and naming the key of the first bad one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{
    AlertSettings, AppGrant, AppKind, AppQuota, AppSettings, ClientSettings, ConfigError,
    DEFAULT_ALERTS_PER_MINUTE, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_REQUEST_TIMEOUT, DailyBudget,
    GatewaySettings, HookFormat, HookSettings, KeeperSettings, MessageKeys, QuotaSettings, Scope,
    ServerSettings, Settings, SharedSettings, StoreSettings, TokenMode, UpstreamSettings,
    WECHAT_CLEARS_PER_MONTH, invalid, key_digest,
};

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
    gateway: RawGateway,
    #[serde(default)]
    apps: Vec<RawApp>,
    #[serde(default)]
    clients: Vec<RawClient>,
    #[serde(default)]
    alerts: Vec<RawAlert>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlert {
    url: Option<String>,
    format: Option<String>,
    max_per_minute: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    master_key_file: Option<String>,
    header_read_timeout_ms: Option<u64>,
    body_read_timeout_ms: Option<u64>,
    max_connections: Option<u64>,
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
    cluster: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    api_base: Option<String>,
    wecom_base: Option<String>,
    connect_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    daily_budget: Option<RawBudget>,
    clear_quota_monthly_budget: Option<i64>,
}

/// `daily_budget`: a percent string ("80%") or a number of calls.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawBudget {
    Calls(i64),
    Text(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeeper {
    refresh_ahead_secs: Option<u64>,
    stable_window_secs: Option<u64>,
    min_ttl_wait_secs: Option<u64>,
    ticket_idle_secs: Option<u64>,
    force_refresh_daily_budget: Option<u32>,
    force_refresh_min_interval_secs: Option<u64>,
    authorizer_refresh_per_sec: Option<u32>,
    expiry_alert_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    max_body_bytes: Option<u64>,
    retry_body_bytes: Option<u64>,
    request_timeout_ms: Option<u64>,
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
    token: Option<String>,
    encoding_aes_key: Option<String>,
    daily_budget: Option<RawBudget>,
    auto_clear_quota: Option<bool>,
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

/// An app entry from the admin API (`PUT /v1/apps/{app}`): the fields of an `[[apps]]`
/// entry as a JSON object, without `id` (it is the URL's) and with no `${VAR}`
/// expansion. Errors name the JSON field.
pub fn app_from_json(id: &str, body: &serde_json::Value) -> Result<AppSettings, ConfigError> {
    let mut raw: RawApp = serde_json::from_value(body.clone()).map_err(|e| {
        let message = e.to_string();
        // serde names the field in its message (`unknown field `x`, expected ...`).
        ConfigError::Invalid {
            key: "body".to_owned(),
            message,
        }
    })?;
    match raw.id.as_deref() {
        Some(given) if given != id => {
            return Err(invalid(
                "id",
                format!("`{given}` differs from the URL's `{id}`"),
            ));
        }
        _ => raw.id = Some(id.to_owned()),
    }
    validate_app("", raw, &|_, value| Ok(value.to_owned()))
}

/// A client added at runtime (`POST /v1/clients`), from its stored digest. Apps it
/// names need not exist (an app may be added later, or removed since).
pub fn runtime_client(
    name: &str,
    key_sha256: &str,
    apps: Vec<String>,
    scopes: Vec<String>,
) -> Result<ClientSettings, ConfigError> {
    let raw = RawClient {
        name: Some(name.to_owned()),
        key: None,
        key_sha256: Some(key_sha256.to_owned()),
        apps: Some(apps),
        scopes: Some(scopes),
    };
    validate_client("", raw, None, &|_, value| Ok(value.to_owned()))
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

        let store = store_settings(&raw.store, &expand)?;

        let upstream = upstream_settings(&raw.upstream, &expand)?;

        let mut keeper = keeper_settings(&raw.keeper, &raw.store, &raw.upstream)?;
        keeper.alerts.hooks = raw
            .alerts
            .into_iter()
            .enumerate()
            .map(|(i, hook)| validate_hook(&format!("alerts[{i}]."), hook, &expand))
            .collect::<Result<_, _>>()?;

        let gateway = gateway_settings(&raw.gateway)?;

        let mut apps = Vec::with_capacity(raw.apps.len());
        let mut seen = HashSet::new();
        let mut wecom_agents = HashSet::new();
        for (i, app) in raw.apps.into_iter().enumerate() {
            let app = validate_app(&format!("apps[{i}]."), app, &expand)?;
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
            let client = validate_client(&format!("clients[{i}]."), client, Some(&seen), &expand)?;
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
            server: ServerSettings {
                listen,
                master_key_file: raw
                    .server
                    .master_key_file
                    .as_deref()
                    .map(|p| expand_env("server.master_key_file", p, env))
                    .transpose()?
                    .map(PathBuf::from),
                header_read_timeout: positive_ms(
                    "server.header_read_timeout_ms",
                    raw.server.header_read_timeout_ms,
                    DEFAULT_HEADER_READ_TIMEOUT,
                )?,
                body_read_timeout: positive_ms(
                    "server.body_read_timeout_ms",
                    raw.server.body_read_timeout_ms,
                    DEFAULT_BODY_READ_TIMEOUT,
                )?,
                max_connections: max_connections(raw.server.max_connections)?,
            },
            store,
            upstream,
            keeper,
            gateway,
            apps,
            clients,
        })
    }
}

fn store_settings(
    raw: &RawStore,
    expand: &dyn Fn(&str, &str) -> Result<String, ConfigError>,
) -> Result<StoreSettings, ConfigError> {
    let store = match raw.kind.as_deref().unwrap_or("sqlite") {
        "sqlite" if raw.cluster.is_some() => {
            return Err(invalid("store.cluster", "applies only to kind = \"redis\""));
        }
        "sqlite" => {
            let path = raw.path.as_deref().unwrap_or("wxtoken.db");
            let path = expand("store.path", path)?;
            if path.is_empty() {
                return Err(invalid("store.path", "must not be empty"));
            }
            StoreSettings::Sqlite { path: path.into() }
        }
        "redis" => {
            let url = raw
                .url
                .as_deref()
                .ok_or_else(|| invalid("store.url", "is required when kind = \"redis\""))?;
            let url = expand("store.url", url)?;
            // Several nodes, comma-separated, are seeds of a cluster.
            let mut nodes: Vec<String> = url.split(',').map(|u| u.trim().to_owned()).collect();
            for node in &nodes {
                if !(node.starts_with("redis://") || node.starts_with("rediss://")) {
                    return Err(invalid(
                        "store.url",
                        format!("`{node}` must start with redis:// or rediss://"),
                    ));
                }
            }
            let cluster = match raw.cluster {
                Some(false) if nodes.len() > 1 => {
                    return Err(invalid(
                        "store.url",
                        "lists several nodes, which only a cluster (store.cluster = true) has",
                    ));
                }
                Some(cluster) => cluster,
                None => nodes.len() > 1,
            };
            let url = nodes.remove(0);
            if cluster && raw.tls_ca_file.is_some() {
                return Err(invalid(
                    "store.tls_ca_file",
                    "is not supported with a Redis Cluster yet (rediss:// with public roots is)",
                ));
            }
            let tls_ca_file = match raw.tls_ca_file.as_deref() {
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
                cluster,
                seeds: nodes,
                tls_ca_file,
                op_timeout: positive_ms(
                    "store.op_timeout_ms",
                    raw.op_timeout_ms,
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
    Ok(store)
}

fn upstream_settings(
    raw: &RawUpstream,
    expand: &dyn Fn(&str, &str) -> Result<String, ConfigError>,
) -> Result<UpstreamSettings, ConfigError> {
    let upstream = UpstreamSettings {
        api_base: base_url(
            "upstream.api_base",
            raw.api_base
                .as_deref()
                .unwrap_or("https://api.weixin.qq.com"),
            &expand,
        )?,
        wecom_base: base_url(
            "upstream.wecom_base",
            raw.wecom_base
                .as_deref()
                .unwrap_or("https://qyapi.weixin.qq.com"),
            &expand,
        )?,
        connect_timeout: positive_ms(
            "upstream.connect_timeout_ms",
            raw.connect_timeout_ms,
            DEFAULT_CONNECT_TIMEOUT,
        )?,
        request_timeout: positive_ms(
            "upstream.request_timeout_ms",
            raw.request_timeout_ms,
            DEFAULT_REQUEST_TIMEOUT,
        )?,
    };
    Ok(upstream)
}

fn gateway_settings(raw: &RawGateway) -> Result<GatewaySettings, ConfigError> {
    let defaults = GatewaySettings::default();
    let max_body_bytes = match raw.max_body_bytes {
        Some(0) => return Err(invalid("gateway.max_body_bytes", "must be positive")),
        Some(n) => n,
        None => defaults.max_body_bytes,
    };
    let retry_body_bytes = raw
        .retry_body_bytes
        .unwrap_or(defaults.retry_body_bytes.min(max_body_bytes));
    if retry_body_bytes > max_body_bytes {
        return Err(invalid(
            "gateway.retry_body_bytes",
            format!("must not exceed gateway.max_body_bytes ({max_body_bytes})"),
        ));
    }
    Ok(GatewaySettings {
        max_body_bytes,
        retry_body_bytes,
        request_timeout: positive_ms(
            "gateway.request_timeout_ms",
            raw.request_timeout_ms,
            defaults.request_timeout,
        )?,
    })
}

/// A `daily_budget` value: "1%".."100%", or a positive number of calls.
fn daily_budget(key: &str, raw: &RawBudget) -> Result<DailyBudget, ConfigError> {
    let wrong = || {
        invalid(
            key,
            "must be a percent of WeChat's daily limit (\"1%\" to \"100%\") or a positive number of calls",
        )
    };
    match raw {
        RawBudget::Calls(n) => u64::try_from(*n)
            .ok()
            .filter(|n| *n > 0)
            .map(DailyBudget::Calls)
            .ok_or_else(wrong),
        RawBudget::Text(text) => text
            .trim()
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<u8>().ok())
            .filter(|p| (1..=100).contains(p))
            .map(DailyBudget::Percent)
            .ok_or_else(wrong),
    }
}

fn quota_settings(raw: &RawUpstream) -> Result<QuotaSettings, ConfigError> {
    let defaults = QuotaSettings::default();
    Ok(QuotaSettings {
        daily_budget: raw
            .daily_budget
            .as_ref()
            .map(|b| daily_budget("upstream.daily_budget", b))
            .transpose()?
            .unwrap_or(defaults.daily_budget),
        clear_quota_monthly_budget: match raw.clear_quota_monthly_budget {
            None => defaults.clear_quota_monthly_budget,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| *n <= WECHAT_CLEARS_PER_MONTH)
                .ok_or_else(|| {
                    invalid(
                        "upstream.clear_quota_monthly_budget",
                        format!("must be 0 to {WECHAT_CLEARS_PER_MONTH}: WeChat allows {WECHAT_CLEARS_PER_MONTH} clears a month"),
                    )
                })?,
        },
    })
}

fn keeper_settings(
    raw: &RawKeeper,
    store: &RawStore,
    upstream: &RawUpstream,
) -> Result<KeeperSettings, ConfigError> {
    let defaults = KeeperSettings::default();
    let keeper = KeeperSettings {
        refresh_ahead: positive_secs(
            "keeper.refresh_ahead_secs",
            raw.refresh_ahead_secs,
            defaults.refresh_ahead,
        )?,
        stable_window: positive_secs(
            "keeper.stable_window_secs",
            raw.stable_window_secs,
            defaults.stable_window,
        )?,
        min_ttl_wait: raw
            .min_ttl_wait_secs
            .map(Duration::from_secs)
            .unwrap_or(defaults.min_ttl_wait),
        ticket_idle: positive_secs(
            "keeper.ticket_idle_secs",
            raw.ticket_idle_secs,
            defaults.ticket_idle,
        )?,
        force_refresh_daily_budget: match raw.force_refresh_daily_budget {
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
            .force_refresh_min_interval_secs
            .map(Duration::from_secs)
            .unwrap_or(defaults.force_refresh_min_interval),
        authorizer_refresh_per_sec: match raw.authorizer_refresh_per_sec {
            Some(0) => {
                return Err(invalid(
                    "keeper.authorizer_refresh_per_sec",
                    "must be at least 1 (authorizer tokens must be refreshed)",
                ));
            }
            Some(n) => n,
            None => defaults.authorizer_refresh_per_sec,
        },
        shared: SharedSettings {
            lease_ttl: positive_ms(
                "store.lease_ttl_ms",
                store.lease_ttl_ms,
                defaults.shared.lease_ttl,
            )?,
            reconcile_every: positive_secs(
                "store.reconcile_secs",
                store.reconcile_secs,
                defaults.shared.reconcile_every,
            )?,
            classic_refresh_when_down: store
                .classic_refresh_when_down
                .unwrap_or(defaults.shared.classic_refresh_when_down),
        },
        quota: quota_settings(upstream)?,
        alerts: AlertSettings {
            hooks: Vec::new(),
            expiry_alert: positive_secs(
                "keeper.expiry_alert_secs",
                raw.expiry_alert_secs,
                defaults.alerts.expiry_alert,
            )?,
        },
    };
    Ok(keeper)
}

fn validate_hook(
    prefix: &str,
    raw: RawAlert,
    expand: &dyn Fn(&str, &str) -> Result<String, ConfigError>,
) -> Result<HookSettings, ConfigError> {
    let key = |field: &str| format!("{prefix}{field}");
    let url = raw.url.ok_or_else(|| invalid(key("url"), "is required"))?;
    let url = expand(&key("url"), &url)?;
    let ok = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
    if !ok {
        // The URL may carry a robot's key: the message does not repeat it.
        return Err(invalid(key("url"), "is not an http(s) URL"));
    }
    let format = match raw.format.as_deref().unwrap_or("json") {
        "json" => HookFormat::Json,
        "wecom" => HookFormat::Wecom,
        other => {
            return Err(invalid(
                key("format"),
                format!("`{other}` is not one of json, wecom"),
            ));
        }
    };
    let max_per_minute = match raw.max_per_minute {
        Some(0) => return Err(invalid(key("max_per_minute"), "must be greater than 0")),
        Some(n) => n,
        None => DEFAULT_ALERTS_PER_MINUTE,
    };
    Ok(HookSettings {
        url,
        format,
        max_per_minute,
    })
}

fn validate_app(
    prefix: &str,
    raw: RawApp,
    expand: &dyn Fn(&str, &str) -> Result<String, ConfigError>,
) -> Result<AppSettings, ConfigError> {
    let key = |field: &str| format!("{prefix}{field}");
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
    if raw.kind.as_deref() != Some("component") {
        not_for(
            "token",
            raw.token.is_some(),
            raw.kind.as_deref().unwrap_or("official"),
        )?;
        not_for(
            "encoding_aes_key",
            raw.encoding_aes_key.is_some(),
            raw.kind.as_deref().unwrap_or("official"),
        )?;
    }
    let mut message = None;
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
            not_for("corpid", raw.corpid.is_some(), "component")?;
            not_for("agentid", raw.agentid.is_some(), "component")?;
            not_for("mode", raw.mode.is_some(), "component")?;
            let appid = raw
                .appid
                .ok_or_else(|| invalid(key("appid"), "is required (the component_appid)"))?;
            let token = raw.token.ok_or_else(|| {
                invalid(
                    key("token"),
                    "is required for kind = \"component\" (the message token)",
                )
            })?;
            let token = expand(&key("token"), &token)?;
            if token.is_empty()
                || token.len() > 32
                || !token.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(invalid(key("token"), "must be 1-32 letters and digits"));
            }
            let aes = raw.encoding_aes_key.ok_or_else(|| {
                invalid(
                    key("encoding_aes_key"),
                    "is required for kind = \"component\" (43 characters)",
                )
            })?;
            let aes = expand(&key("encoding_aes_key"), &aes)?;
            crate::wechat::crypto::MsgCrypt::new(&token, &aes, "check").map_err(|_| {
                invalid(
                    key("encoding_aes_key"),
                    "must be 43 characters of letters and digits (WeChat's EncodingAESKey)",
                )
            })?;
            message = Some(Arc::new(MessageKeys {
                token: SecretString::from(token),
                encoding_aes_key: SecretString::from(aes),
            }));
            (
                AppKind::Component,
                alnum("appid", appid, "wx0123456789abcdef")?,
            )
        }
        other => {
            return Err(invalid(
                key("kind"),
                format!("`{other}` is not one of \"official\", \"wecom\", \"component\""),
            ));
        }
    };
    let daily_budget = raw
        .daily_budget
        .as_ref()
        .map(|b| daily_budget(&key("daily_budget"), b))
        .transpose()?;
    let auto_clear_quota = raw.auto_clear_quota.unwrap_or(false);
    if auto_clear_quota && !matches!(kind, AppKind::Official { .. }) {
        return Err(invalid(
            key("auto_clear_quota"),
            "applies to kind = \"official\" only (clear_quota/v2 takes an account's appid and AppSecret)",
        ));
    }
    Ok(AppSettings {
        id,
        kind,
        appid,
        secret: SecretString::from(secret),
        message,
        quota: AppQuota {
            daily_budget,
            auto_clear_quota,
        },
    })
}

fn validate_client(
    prefix: &str,
    raw: RawClient,
    app_ids: Option<&HashSet<String>>,
    expand: &dyn Fn(&str, &str) -> Result<String, ConfigError>,
) -> Result<ClientSettings, ConfigError> {
    let key = |field: &str| format!("{prefix}{field}");
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
        let unknown = apps
            .iter()
            .find(|app| app_ids.is_some_and(|ids| !ids.contains(*app)));
        if let Some(app) = unknown {
            return Err(invalid(
                key("apps"),
                format!("`{app}` is not a configured app id"),
            ));
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

/// The id grammar of apps and clients: 1-64 ASCII letters, digits, '-' or '_'.
pub fn is_identifier(s: &str) -> bool {
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

/// `server.max_connections`: 1 to 1,000,000 (a semaphore holds at most that many).
fn max_connections(value: Option<u64>) -> Result<usize, ConfigError> {
    const MAX: u64 = 1_000_000;
    match value {
        None => Ok(DEFAULT_MAX_CONNECTIONS),
        Some(n) if (1..=MAX).contains(&n) => Ok(n as usize),
        Some(n) => Err(invalid(
            "server.max_connections",
            format!("must be 1 to {MAX}, got {n}"),
        )),
    }
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
