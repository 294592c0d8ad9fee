//! `POST /v1/apps/{app}/jssdk/config` (what `wx.config` / `wx.agentConfig` need) and
//! `POST /v1/apps/{app}/jssdk/card_sign` (the `cardExt` of `wx.addCard`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header::CACHE_CONTROL;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::ApiError;
use super::{AppState, Path, parse_json};
use crate::config::{AppKind, Scope};
use crate::credential::unix_now_ms;
use crate::jssdk;

fn default_ticket() -> String {
    "jsapi".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    /// The page's URL; the fragment is dropped.
    pub(super) url: String,
    /// `jsapi` (wx.config) or, for WeCom apps, `agent_config` (wx.agentConfig).
    #[serde(default = "default_ticket")]
    pub(super) ticket: String,
}

/// `POST /v1/apps/{app}/jssdk/config` `{"url": "...", "ticket": "jsapi"}`
pub async fn config(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    caller.authorize(&state, &app, Scope::Read)?;
    let ConfigBody { url, ticket } = parse_json(body)?;
    check_config(&url, &ticket)?;
    let value = state.keeper.ticket(&app, &ticket, None).await?;
    let settings = state
        .keeper
        .app(&app)
        .ok_or_else(|| ApiError::AppNotFound(app.clone()))?;
    let url = jssdk::strip_fragment(&url).to_owned();
    let nonce = jssdk::nonce();
    let timestamp = unix_now_ms() / 1000;
    let signature = jssdk::signature(&value.value, &nonce, timestamp, &url);
    let body = match (settings.kind, ticket.as_str()) {
        (AppKind::Wecom { agentid }, "agent_config") => json!({
            "corpid": settings.appid,
            "agentid": agentid,
            "timestamp": timestamp,
            "nonceStr": nonce,
            "signature": signature,
            "url": url,
        }),
        _ => page_config(&settings.appid, &value.value, &url),
    };
    Ok(([(CACHE_CONTROL, "no-store")], Json(body)))
}

/// What `wx.config` needs for a page of `appid`, signed with its jsapi ticket
/// (`url` without its fragment).
pub(super) fn page_config(appid: &str, ticket: &str, url: &str) -> Value {
    let nonce = jssdk::nonce();
    let timestamp = unix_now_ms() / 1000;
    json!({
        "appId": appid,
        "timestamp": timestamp,
        "nonceStr": nonce,
        "signature": jssdk::signature(ticket, &nonce, timestamp, url),
        "url": url,
    })
}

/// Checks a `/jssdk/config` body's URL and ticket type (only page tickets sign pages).
pub(super) fn check_config(url: &str, ticket: &str) -> Result<(), ApiError> {
    if !jssdk::is_page_url(url) {
        return Err(ApiError::BadRequest(format!(
            "field `url` must be the page's absolute http(s) URL, got `{url}`"
        )));
    }
    if ticket == "wx_card" {
        return Err(ApiError::BadRequest(
            "field `ticket`: wx_card tickets sign cards, not pages; use /jssdk/card_sign".into(),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardBody {
    card_id: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    openid: String,
}

/// `POST /v1/apps/{app}/jssdk/card_sign` `{"card_id": "...", "code"?: "...", "openid"?: "..."}`
pub async fn card_sign(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    caller.authorize(&state, &app, Scope::Read)?;
    let CardBody {
        card_id,
        code,
        openid,
    } = parse_json(body)?;
    if card_id.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "field `card_id` must not be empty".into(),
        ));
    }
    let value = state.keeper.ticket(&app, "wx_card", None).await?;
    let nonce = jssdk::nonce();
    let timestamp = (unix_now_ms() / 1000).to_string();
    let signature =
        jssdk::card_signature(&[&value.value, &timestamp, &card_id, &code, &openid, &nonce]);
    let card_ext: Value = json!({
        "code": code,
        "openid": openid,
        "timestamp": timestamp,
        "nonce_str": nonce,
        "signature": signature,
    });
    Ok((
        [(CACHE_CONTROL, "no-store")],
        Json(json!({
            "card_id": card_id,
            "timestamp": timestamp,
            "nonce_str": nonce,
            "signature": signature,
            "card_ext": card_ext.to_string(),
        })),
    ))
}
