//! The two token endpoints: classic `GET /cgi-bin/token` and
//! `POST /cgi-bin/stable_token`.
//!
//! Owns request parsing and the timing of an answer: the call is processed at once
//! (under the lock, see `State::token_call`), then the answer waits out the
//! configured latency and any injected hang.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::Emulator;
use crate::failure::failure_response;
use crate::state::{Answer, Endpoint, TokenRequest, wechat_day};

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

/// Processes the call, then delays the answer by the latency (plus the hang time
/// for an injected timeout).
async fn answer(emulator: &Emulator, endpoint: Endpoint, req: &TokenRequest<'_>) -> Response {
    let config = emulator.config();
    let today = wechat_day(SystemTime::now());
    // The guard must be gone before any await: the block scopes it.
    let (call, latency) = {
        let mut state = emulator.lock();
        let call = state.token_call(config, endpoint, req, Instant::now(), today);
        (call, state.knobs.latency)
    };
    let delay = if call.hang {
        latency + config.hang
    } else {
        latency
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match call.answer {
        Answer::Grant(grant) => Json(serde_json::json!({
            "access_token": grant.access_token,
            "expires_in": grant.expires_in,
        }))
        .into_response(),
        Answer::Error(err) => err.into_response(),
        Answer::Injected(kind) => failure_response(kind),
    }
}
