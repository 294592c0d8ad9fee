//! WeChat's own token endpoints, answered from the keeper so that an unmodified SDK
//! switches to wxtoken by changing its host and putting a client key where the app
//! secret was: `GET /cgi-bin/token`, `POST /cgi-bin/stable_token`, WeCom
//! `GET /cgi-bin/gettoken`, and the ticket endpoints (reached through the gateway's
//! dispatch, since they are recognised by the token they carry).
//!
//! Everything here answers as WeChat does: HTTP 200 and WeChat's JSON, errors as
//! `{"errcode","errmsg"}` with WeChat's codes, so an SDK's own error handling applies.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::response::Response;
use serde::Serialize;
use tracing::info;

use super::AppState;
use super::auth::{find_client, permit};
use super::tokens::{Shape, json_no_store, render_as};
use crate::config::{AppKind, AppSettings, Scope};
use crate::credential::{TicketType, Token, unix_now_ms, wechat_day};
use crate::gateway::query_param;
use crate::keeper::{Failure, Keeper, KeeperError};
use crate::wechat::ErrorClass;

/// A WeChat error answer: errcode and errmsg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WxError {
    pub code: i64,
    pub message: String,
}

impl WxError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// WeChat's answer to a token it does not know.
    pub fn invalid_token() -> Self {
        Self::new(40014, "invalid access_token")
    }

    pub fn token_missing() -> Self {
        Self::new(41001, "access_token missing")
    }

    /// `{"errcode","errmsg"}` with HTTP 200, as WeChat answers every error.
    pub fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            errcode: i64,
            errmsg: &'a str,
        }
        let body = serde_json::to_vec(&Body {
            errcode: self.code,
            errmsg: &self.message,
        })
        .unwrap_or_default();
        json_no_store(Bytes::from(body))
    }
}

/// The message of a wrong classic secret, as WeChat words it.
const INVALID_CREDENTIAL: &str = "invalid credential, access_token is invalid or not latest";
/// What an SDK's user needs to know when its "secret" (the client key) is refused.
const KEY_HINT: &str = "(wxtoken: the secret must be a client key that may read this app)";

/// Looks apps up by WeChat's ids, and spaces out force refreshes asked by SDKs.
#[derive(Debug, Default)]
pub struct Facade {
    /// Apps by WeChat id, rebuilt when apps change ([`Facade::sync`]).
    index: ArcSwap<Index>,
    /// Per app: the last `force_refresh` honoured and the day's count.
    forced: Mutex<HashMap<String, ForceGate>>,
}

#[derive(Debug, Default)]
struct ForceGate {
    last_ms: Option<u64>,
    day: String,
    used: u32,
}

/// App ids by WeChat id.
#[derive(Debug, Default)]
struct Index {
    /// Official accounts and mini programs by appid (app ids in order).
    official: HashMap<String, Vec<String>>,
    /// WeCom apps by corpid.
    wecom: HashMap<String, Vec<String>>,
}

impl Facade {
    pub fn new(keeper: &Keeper) -> Self {
        let facade = Self::default();
        facade.sync(keeper);
        facade
    }

    /// Follows the keeper's apps.
    pub fn sync(&self, keeper: &Keeper) {
        let mut facade = Index::default();
        for app in keeper.apps() {
            let index = match app.kind {
                AppKind::Official { .. } => &mut facade.official,
                AppKind::Wecom { .. } => &mut facade.wecom,
                // A component's token comes from api_component_token, which needs the
                // verify ticket: no SDK asks /cgi-bin/token for it.
                AppKind::Component => continue,
            };
            index
                .entry(app.appid.clone())
                .or_default()
                .push(app.id.clone());
        }
        self.index.store(Arc::new(facade));
    }

    /// Whether a `force_refresh` for `app` may be honoured now (and counts it if so):
    /// at most one per `min_interval`, and `budget` per WeChat day.
    fn may_force(&self, app: &str, min_interval_ms: u64, budget: u32) -> bool {
        let now_ms = unix_now_ms();
        let day = wechat_day(now_ms);
        let mut forced = self.forced.lock().unwrap_or_else(|p| p.into_inner());
        let gate = forced.entry(app.to_owned()).or_default();
        if gate.day != day {
            gate.day = day;
            gate.used = 0;
        }
        let spaced = gate
            .last_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= min_interval_ms);
        if !spaced || gate.used >= budget {
            return false;
        }
        gate.last_ms = Some(now_ms);
        gate.used += 1;
        true
    }
}

/// The id of the first app of `ids` that `key` may read; `None` if the key is unknown
/// or may read none of them.
fn readable<'i>(state: &AppState, ids: &'i [String], key: &str) -> Option<&'i str> {
    let client = find_client(&state.admin.clients(), key)?;
    ids.iter()
        .find(|id| permit(&client, id, Scope::Read).is_ok())
        .map(String::as_str)
}

/// The non-empty value of each of `names` in a raw query string, read in one pass
/// (percent-decoded; borrowed unless decoding changed something). One of `names` given
/// twice is WeChat's 40097 `invalid args`: which one would WeChat have taken?
pub(crate) fn params<'q, const N: usize>(
    query: &'q str,
    names: [&str; N],
) -> Result<[Option<Cow<'q, str>>; N], WxError> {
    let mut found: [Option<Cow<'q, str>>; N] = std::array::from_fn(|_| None);
    let mut seen = [false; N];
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if let Some(i) = names.iter().position(|n| *n == name) {
            if std::mem::replace(&mut seen[i], true) {
                return Err(duplicate(names[i]));
            }
            if !value.is_empty() {
                found[i] = Some(value);
            }
        }
    }
    Ok(found)
}

/// WeChat's answer to a parameter given twice.
pub(crate) fn duplicate(name: &str) -> WxError {
    WxError::new(
        40097,
        format!("invalid args (wxtoken: `{name}` is given more than once)"),
    )
}

/// `GET /cgi-bin/token?grant_type=client_credential&appid=A&secret=<client key>`
///
/// Read from the raw request (no query copy): this is the hot path of every SDK.
pub async fn token(State(state): State<AppState>, request: Request) -> Response {
    let query = request.uri().query().unwrap_or_default();
    let [grant_type, appid, secret] = match params(query, ["grant_type", "appid", "secret"]) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let app = match official_app(
        &state,
        grant_type.as_deref(),
        appid.as_deref(),
        secret.as_deref(),
        || WxError::new(40001, format!("{INVALID_CREDENTIAL} {KEY_HINT}")),
    ) {
        Ok(app) => app,
        Err(e) => return e.into_response(),
    };
    serve_token(&state, &app, Shape::Wechat).await
}

/// `POST /cgi-bin/stable_token` `{"grant_type","appid","secret","force_refresh"?}`
pub async fn stable_token(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Like WeChat: whatever the Content-Type, a body that is not a JSON object is 47001.
    let parsed = body
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(serde_json::Value::is_object);
    let Some(parsed) = parsed else {
        return WxError::new(47001, "data format error").into_response();
    };
    let field = |name: &str| {
        parsed
            .get(name)
            .and_then(serde_json::Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let app = match official_app(
        &state,
        field("grant_type"),
        field("appid"),
        field("secret"),
        || WxError::new(40125, format!("invalid appsecret {KEY_HINT}")),
    ) {
        Ok(app) => app,
        Err(e) => return e.into_response(),
    };
    let force = parsed
        .get("force_refresh")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    if force {
        let client = field("secret")
            .and_then(|key| find_client(&state.admin.clients(), key))
            .map(|c| c.name.clone())
            .unwrap_or_default();
        return force_refresh(&state, &app, &client).await;
    }
    serve_token(&state, &app, Shape::Wechat).await
}

/// Checks a token request's fields in WeChat's order and finds the app.
fn official_app(
    state: &AppState,
    grant_type: Option<&str>,
    appid: Option<&str>,
    key: Option<&str>,
    refused: impl FnOnce() -> WxError,
) -> Result<String, WxError> {
    if grant_type != Some("client_credential") {
        return Err(WxError::new(40002, "invalid grant_type"));
    }
    let appid = appid.ok_or_else(|| WxError::new(41002, "appid missing"))?;
    let key = key.ok_or_else(|| WxError::new(41004, "appsecret missing"))?;
    let index = state.facade.index.load();
    let ids = index
        .official
        .get(appid)
        .ok_or_else(|| WxError::new(40013, "invalid appid"))?;
    readable(state, ids, key)
        .map(str::to_owned)
        .ok_or_else(refused)
}

/// `force_refresh: true`: the SDK says its token is dead. Treated as a report of the
/// current token (compare-and-invalidate), at most once per
/// `keeper.force_refresh_min_interval_secs` per app and within
/// `keeper.force_refresh_daily_budget`; otherwise the current token comes back, as
/// WeChat answers a force refresh it will not honour.
async fn force_refresh(state: &AppState, app: &str, client: &str) -> Response {
    let settings = state.keeper.settings();
    let allowed = state.facade.may_force(
        app,
        settings.force_refresh_min_interval.as_millis() as u64,
        settings.force_refresh_daily_budget,
    );
    let current = state.keeper.current(app, std::time::Duration::ZERO);
    let (true, Some(current)) = (allowed, current) else {
        state
            .admin
            .audit_later(client, "facade.force_refresh", Some(app), "held back");
        return serve_token(state, app, Shape::Wechat).await;
    };
    info!(app, token = %current.redacted(), "an SDK asked for force_refresh; reporting the current token");
    match state.keeper.invalidate(app, &current.value).await {
        Ok((token, refreshed)) => {
            let result = if refreshed { "refreshed" } else { "current" };
            state
                .admin
                .audit_later(client, "facade.force_refresh", Some(app), result);
            json_no_store(render_as(&token, unix_now_ms() / 1000, Shape::Wechat))
        }
        Err(e) => {
            state
                .admin
                .audit_later(client, "facade.force_refresh", Some(app), &e.to_string());
            wx_keeper_error(e).into_response()
        }
    }
}

/// `GET /cgi-bin/gettoken?corpid=C&corpsecret=<client key>[&agentid=N]` (WeCom).
///
/// WeCom tells apps of a corp apart by their secret alone, and SDKs send no agentid.
/// So the key decides: if it may read exactly one WeCom app of the corp, that app's
/// token comes back. A key that may read several must be told which one by an
/// `agentid` parameter (an extension; WeCom ignores it), else the answer is 40001
/// naming the apps: give each WeCom app's services their own key.
pub async fn gettoken(State(state): State<AppState>, request: Request) -> Response {
    let query = request.uri().query().unwrap_or_default();
    let [key, corpid, agentid] = match params(query, ["corpsecret", "corpid", "agentid"]) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    // WeCom checks the secret before the corp.
    let Some(key) = key else {
        return WxError::new(41004, "corpsecret missing").into_response();
    };
    let Some(corpid) = corpid else {
        return WxError::new(41002, "corpid missing").into_response();
    };
    let index = state.facade.index.load();
    let Some(ids) = index.wecom.get(corpid.as_ref()) else {
        return WxError::new(40013, "invalid corpid").into_response();
    };
    let refused = || WxError::new(40001, format!("invalid credential {KEY_HINT}"));
    let Some(client) = find_client(&state.admin.clients(), &key) else {
        return refused().into_response();
    };
    let apps: Vec<Arc<AppSettings>> = ids
        .iter()
        .filter(|id| permit(&client, id, Scope::Read).is_ok())
        .filter_map(|id| state.keeper.app(id))
        .filter(|app| {
            agentid
                .as_deref()
                .is_none_or(|want| app.agentid().is_some_and(|a| a.to_string() == want))
        })
        .collect();
    match apps.as_slice() {
        [] => refused().into_response(),
        [app] => serve_token(&state, &app.id, Shape::Wecom).await,
        several => {
            let names: Vec<String> = several
                .iter()
                .map(|a| format!("{} (agentid {})", a.id, a.agentid().unwrap_or_default()))
                .collect();
            WxError::new(
                40001,
                format!(
                    "invalid credential (wxtoken: client `{}` may read several apps of corp \
                     {corpid}: {}; add agentid=N or use a key for one app)",
                    client.name,
                    names.join(", ")
                ),
            )
            .into_response()
        }
    }
}

/// The app's current token in `shape`: a memory read while one is valid.
async fn serve_token(state: &AppState, app: &str, shape: Shape) -> Response {
    let Some(entry) = state.rendered.get(app) else {
        return WxError::new(40013, "invalid appid").into_response();
    };
    let now_ms = unix_now_ms();
    let served = entry
        .reader
        .read(std::time::Duration::ZERO, now_ms, |token| {
            entry.body(token, now_ms / 1000, shape)
        });
    if let Some(body) = served {
        return json_no_store(body);
    }
    match state.keeper.access_token(app, None).await {
        Ok(token) => json_no_store(entry.body(&token, unix_now_ms() / 1000, shape)),
        Err(e) => wx_keeper_error(e).into_response(),
    }
}

/// The ticket endpoints, for a token already recognised as `app`'s:
/// `/cgi-bin/ticket/getticket?type=jsapi|wx_card`, WeCom `/cgi-bin/get_jsapi_ticket` and
/// `/cgi-bin/ticket/get?type=agent_config`. `None` if `path` is not one of them for
/// this kind of app (the gateway forwards it then).
pub async fn ticket(
    state: &AppState,
    app: &AppSettings,
    authorizer: Option<&str>,
    path: &str,
    query: &str,
) -> Option<Response> {
    let wecom = matches!(app.kind, AppKind::Wecom { .. });
    let ticket = match (path, wecom) {
        ("/cgi-bin/ticket/getticket", false) => {
            match query_param(query, "type").ok().flatten().as_deref() {
                Some("jsapi") => TicketType::Jsapi,
                Some("wx_card") => TicketType::WxCard,
                _ => return Some(WxError::new(40097, "invalid args").into_response()),
            }
        }
        ("/cgi-bin/get_jsapi_ticket", true) => TicketType::Jsapi,
        ("/cgi-bin/ticket/get", true) => match query_param(query, "type").ok().flatten().as_deref()
        {
            Some("agent_config") => TicketType::AgentConfig,
            _ => return Some(WxError::new(40097, "invalid args").into_response()),
        },
        _ => return None,
    };
    let value = match authorizer {
        None => state.keeper.ticket(&app.id, ticket.as_str(), None).await,
        Some(appid) => {
            state
                .keeper
                .authorizer_ticket(&app.id, appid, ticket.as_str(), None)
                .await
        }
    };
    Some(match value {
        Ok(value) => ticket_body(&value),
        Err(e) => wx_keeper_error(e).into_response(),
    })
}

fn ticket_body(ticket: &Token) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        errcode: i64,
        errmsg: &'static str,
        ticket: &'a str,
        expires_in: u64,
    }
    let body = serde_json::to_vec(&Body {
        errcode: 0,
        errmsg: "ok",
        ticket: &ticket.value,
        expires_in: ticket.expires_in_secs(unix_now_ms()),
    })
    .unwrap_or_default();
    json_no_store(Bytes::from(body))
}

/// What an SDK is told when the keeper has nothing to give: WeChat's own rate and
/// quota codes pass through (the SDK's handling of them is right), anything else is
/// -1, "system busy", which every SDK retries later.
pub fn wx_keeper_error(error: KeeperError) -> WxError {
    if let KeeperError::Upstream { failure, .. } = &error {
        if let Failure::Upstream(u) = failure.as_ref() {
            if let (ErrorClass::RateLimited | ErrorClass::QuotaExhausted, Some(code)) =
                (u.class, u.errcode)
            {
                return WxError::new(code, format!("{} (wxtoken: from WeChat)", u.message));
            }
        }
    }
    WxError::new(-1, format!("system error (wxtoken: {error})"))
}
