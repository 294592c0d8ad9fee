//! Ordinary WeChat APIs that take an `access_token`: the way tests and benchmarks
//! find out whether a token handed out by wxtoken is still accepted. They accept
//! official and WeCom tokens alike; a dead one is refused in its family's words
//! (40001, WeCom 40014; 42001 for both when it expired).
//!
//! Owns `GET /cgi-bin/get_api_domain_ip` and `POST /cgi-bin/message/custom/send`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::api_delay;
use crate::Emulator;
use crate::failure::WxError;

/// `GET /cgi-bin/get_api_domain_ip?access_token=T` -> WeChat's API server IPs.
pub(crate) async fn get_api_domain_ip(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    match authorize(&emulator, &params).await {
        Ok(()) => {
            Json(serde_json::json!({"dns": ["101.226.90.149", "101.89.47.18"]})).into_response()
        }
        Err(err) => err.into_response(),
    }
}

/// `POST /cgi-bin/message/custom/send?access_token=T`; the body is not inspected.
pub(crate) async fn custom_send(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    match authorize(&emulator, &params).await {
        Ok(()) => Json(serde_json::json!({"errcode": 0, "errmsg": "ok"})).into_response(),
        Err(err) => err.into_response(),
    }
}

/// Checks the `access_token` query parameter and counts the call, after the configured
/// API latency (WeChat's round trip).
pub(super) async fn authorize(
    emulator: &Emulator,
    params: &HashMap<String, String>,
) -> Result<(), WxError> {
    api_delay(emulator).await;
    let token = params
        .get("access_token")
        .filter(|t| !t.is_empty())
        .ok_or(WxError::TOKEN_MISSING)?;
    emulator.lock().use_token(token, Instant::now())
}
