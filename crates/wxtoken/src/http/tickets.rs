//! `/v1/apps/{app}/ticket/{type}` and its `invalidate`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::ApiError;
use super::tokens::min_ttl;
use super::{AppState, Path, parse_json};
use crate::config::Scope;
use crate::credential::{Token, unix_now_ms};

#[derive(Serialize)]
struct TicketBody<'a> {
    ticket: &'a str,
    expires_in: u64,
    expires_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refreshed: Option<bool>,
}

pub(super) fn ticket_response(
    ticket: &Token,
    refreshed: Option<bool>,
) -> impl IntoResponse + use<> {
    let body = TicketBody {
        ticket: &ticket.value,
        expires_in: ticket.expires_in_secs(unix_now_ms()),
        expires_at: ticket.expires_at_ms / 1000,
        refreshed,
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    (
        [
            (CACHE_CONTROL, "no-store"),
            (CONTENT_TYPE, "application/json"),
        ],
        json,
    )
}

/// `GET /v1/apps/{app}/ticket/{type}[?min_ttl=S]`
pub async fn ticket(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, ticket)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<impl IntoResponse, ApiError> {
    caller.authorize(&state, &app, Scope::Read)?;
    let min_ttl = min_ttl(query.as_deref())?;
    let value = state.keeper.ticket(&app, &ticket, min_ttl).await?;
    Ok(ticket_response(&value, None))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateBody {
    ticket: String,
}

/// The ticket an `invalidate` body reports dead (`{"ticket": "..."}`, not empty).
pub(super) fn reported_ticket(body: Result<Bytes, BytesRejection>) -> Result<String, ApiError> {
    let InvalidateBody { ticket } = parse_json(body)?;
    if ticket.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "field `ticket` must be the ticket that failed, not empty".into(),
        ));
    }
    Ok(ticket)
}

/// `POST /v1/apps/{app}/ticket/{type}/invalidate` `{"ticket": "<the one that failed>"}`
pub async fn invalidate(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, ticket)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    caller.authorize(&state, &app, Scope::Invalidate)?;
    let dead = reported_ticket(body)?;
    let outcome = state.keeper.invalidate_ticket(&app, &ticket, &dead).await;
    (state.admin).audit_invalidation(&caller.0.name, "ticket.invalidate", &app, &outcome);
    let (value, refreshed) = outcome?;
    Ok(ticket_response(&value, Some(refreshed)))
}
