//! The token endpoints: official classic `GET /cgi-bin/token` and
//! `POST /cgi-bin/stable_token`, and WeCom's `GET /cgi-bin/gettoken`.
//!
//! Owns request parsing and the shape of a success; the call is processed at once
//! (under the lock, see `State::token_call`), then `deliver` makes the answer wait
//! out the configured latency and any injected hang.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::deliver;
use crate::Emulator;
use crate::state::{Endpoint, TokenRequest, WecomTokenRequest, wechat_day};

/// `GET /cgi-bin/token?grant_type=client_credential&appid=A&secret=S`.
pub(crate) async fn classic(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let req = TokenRequest {
        grant_type: params.get("grant_type").map(String::as_str),
        appid: params.get("appid").map(String::as_str),
        secret: params.get("secret").map(String::as_str),
        ..TokenRequest::default()
    };
    answer(&emulator, Endpoint::Classic, &req).await
}

/// `POST /cgi-bin/stable_token` with a JSON body
/// `{"grant_type","appid","secret","force_refresh"}`.
pub(crate) async fn stable(State(emulator): State<Emulator>, body: Bytes) -> Response {
    // Parsed by hand rather than with `Json<T>`: WeChat ignores the Content-Type and
    // answers 47001 (not an HTTP 4xx) for a body that is not a JSON object.
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body)
        .ok()
        .filter(serde_json::Value::is_object);
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(serde_json::Value::as_str)
    };
    let req = TokenRequest {
        malformed: parsed.is_none(),
        grant_type: field("grant_type"),
        appid: field("appid"),
        secret: field("secret"),
        force_refresh: parsed
            .as_ref()
            .and_then(|v| v.get("force_refresh"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
    };
    answer(&emulator, Endpoint::Stable, &req).await
}

/// `GET /cgi-bin/gettoken?corpid=C&corpsecret=S` (WeCom).
pub(crate) async fn wecom(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let req = WecomTokenRequest {
        corpid: params.get("corpid").map(String::as_str),
        corpsecret: params.get("corpsecret").map(String::as_str),
    };
    let config = emulator.config();
    let today = wechat_day(SystemTime::now());
    deliver(
        &emulator,
        |state| state.wecom_token_call(config, &req, Instant::now(), today),
        // WeCom answers successes with errcode 0 too.
        |grant| {
            Json(serde_json::json!({
                "errcode": 0,
                "errmsg": "ok",
                "access_token": grant.access_token,
                "expires_in": grant.expires_in,
            }))
            .into_response()
        },
    )
    .await
}

/// Processes an official token call and answers WeChat's success shape.
async fn answer(emulator: &Emulator, endpoint: Endpoint, req: &TokenRequest<'_>) -> Response {
    let config = emulator.config();
    let today = wechat_day(SystemTime::now());
    let bad_expires_in = emulator.lock().knobs.bad_expires_in;
    deliver(
        emulator,
        |state| state.token_call(config, endpoint, req, Instant::now(), today),
        |grant| {
            let expires_in = match bad_expires_in {
                Some(bad) => bad.json(),
                None => grant.expires_in.into(),
            };
            Json(serde_json::json!({
                "access_token": grant.access_token,
                "expires_in": expires_in,
            }))
            .into_response()
        },
    )
    .await
}
