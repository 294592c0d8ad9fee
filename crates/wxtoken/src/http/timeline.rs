//! `GET /v1/apps/{app}/timeline?since=UNIX`: the app's recent refreshes and failures
//! (access token and tickets), for the dashboard. Never a value.

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::Serialize;

use super::auth::Caller;
use super::error::ApiError;
use super::{AppState, Path};
use crate::config::Scope;
use crate::keeper::history::Event;

#[derive(Serialize)]
pub struct Timeline {
    events: Vec<Event>,
}

/// `since` (unix seconds) from a raw query string, in unix milliseconds; absent means
/// the whole day kept.
pub fn since_ms(query: Option<&str>) -> Result<u64, ApiError> {
    let Some(raw) = super::query_param(query, "since")? else {
        return Ok(0);
    };
    raw.parse::<u64>()
        .ok()
        .and_then(|secs| secs.checked_mul(1000))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "since must be a unix time in whole seconds, got `{}`",
                super::error::echo(&raw)
            ))
        })
}

pub async fn timeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Timeline>, ApiError> {
    caller.authorize(&state, &app, Scope::Read)?;
    let since = since_ms(query.as_deref())?;
    let events = state
        .keeper
        .timeline(&app, since)
        .ok_or(ApiError::AppNotFound(app))?;
    Ok(Json(Timeline { events }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_whole_unix_seconds() {
        assert_eq!(since_ms(None).ok(), Some(0));
        assert_eq!(since_ms(Some("x=1")).ok(), Some(0));
        assert_eq!(
            since_ms(Some("x=1&since=1700000000")).ok(),
            Some(1_700_000_000_000)
        );
        for bad in [
            "since=",
            "since=-1",
            "since=1.5",
            "since=abc",
            "since=99999999999999999999",
            "since=1&since=2",
        ] {
            assert!(since_ms(Some(bad)).is_err(), "{bad}");
        }
    }
}
