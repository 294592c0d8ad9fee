//! `/v1/apps/{app}/access_token` and its `invalidate`.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::CACHE_CONTROL;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::ApiError;
use super::{AppState, parse_json};
use crate::config::Scope;
use crate::credential::{Token, unix_now_ms};

/// The longest `min_ttl` that can make sense: WeChat tokens live at most 7200 s.
const MAX_MIN_TTL_SECS: u64 = 7200;

#[derive(Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    expires_in: u64,
    expires_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refreshed: Option<bool>,
}

fn token_response(token: &Token, refreshed: Option<bool>) -> impl IntoResponse + use<> {
    let body = TokenBody {
        access_token: &token.value,
        expires_in: token.expires_in_secs(unix_now_ms()),
        expires_at: token.expires_at_ms / 1000,
        refreshed,
    };
    // Serialized here so the response owns its bytes and borrows nothing.
    let json = serde_json::to_vec(&body).unwrap_or_default();
    (
        [
            (CACHE_CONTROL, "no-store"),
            (axum::http::header::CONTENT_TYPE, "application/json"),
        ],
        json,
    )
}

/// `GET /v1/apps/{app}/access_token[?min_ttl=S]`
pub async fn access_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    caller.authorize(&state, &app, Scope::Read)?;
    let min_ttl = min_ttl(query)?;
    // The hot path: a memory read.
    if let Some(token) = state.keeper.current(&app, min_ttl.unwrap_or_default()) {
        return Ok(token_response(&token, None));
    }
    let token = state.keeper.access_token(&app, min_ttl).await?;
    Ok(token_response(&token, None))
}

/// Parses `?min_ttl=S` (whole seconds, at most 7200); other parameters are ignored.
pub fn min_ttl(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Option<Duration>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(format!("bad query string: {e}")))?;
    let Some(raw) = query.get("min_ttl") else {
        return Ok(None);
    };
    let secs: u64 = raw.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "min_ttl must be a whole number of seconds, got `{raw}`"
        ))
    })?;
    if secs > MAX_MIN_TTL_SECS {
        return Err(ApiError::BadRequest(format!(
            "min_ttl must be at most {MAX_MIN_TTL_SECS} seconds, got {secs}"
        )));
    }
    Ok(Some(Duration::from_secs(secs)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateBody {
    access_token: String,
}

/// `POST /v1/apps/{app}/access_token/invalidate` `{"access_token": "<the one that failed>"}`
pub async fn invalidate(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    caller.authorize(&state, &app, Scope::Invalidate)?;
    let InvalidateBody { access_token } = parse_json(body)?;
    if access_token.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "field `access_token` must be the token WeChat rejected, not empty".into(),
        ));
    }
    let (token, refreshed) = state.keeper.invalidate(&app, &access_token).await?;
    Ok(token_response(&token, Some(refreshed)))
}
