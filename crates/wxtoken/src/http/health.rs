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

/// `ready`: the store answers and takes writes. `degraded` (still 200, so load
/// balancers keep sending traffic): the store does not answer or refuses writes (a
/// read-only file, a full disk), but every app's token is valid in memory and is being
/// served. Otherwise 503. Either way, what the store warned about at start.
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
    let problem = problem.or_else(|| {
        let refused = state.keeper.store_write_failure()?;
        Some(format!(
            "the store refuses writes since {}s ago ({}); {} value(s) and {} call counter(s) \
             are held in memory until it takes them",
            crate::credential::unix_now_ms().saturating_sub(refused.since_ms) / 1000,
            refused.message,
            refused.values,
            refused.counters
        ))
    });
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
