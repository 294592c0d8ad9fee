//! Liveness, readiness and Prometheus metrics: no auth, no secrets.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;

/// Readiness gives the store this long to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `ready`: the store answers. `degraded` (still 200, so load balancers keep sending
/// traffic): the store does not answer, but every app's token is valid in memory and is
/// being served. Otherwise 503. Either way, what the store warned about at start.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let warnings = state.store.warnings();
    let problem = match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("the store is not answering: {e}")),
        Err(_) => Some(format!(
            "the store did not answer within {}s",
            READY_TIMEOUT.as_secs()
        )),
    };
    match problem {
        None => Ok(Json(json!({"status": "ready", "warnings": warnings}))),
        Some(problem) if state.keeper.all_serving() => Ok(Json(json!({
            "status": "degraded",
            "reason": format!("{problem}; serving the tokens held in memory"),
            "warnings": warnings,
        }))),
        Some(problem) => Err(ApiError::NotReady(problem)),
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Counted at scrape time: one pass over each platform's authorizers.
    state.keeper.export_authorizer_gauges();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
