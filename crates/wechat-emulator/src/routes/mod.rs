//! HTTP surface: WeChat's paths plus the emulator's own `/_emulator/*` controls.
//!
//! Owns the router and the small admin/fallback handlers; the token endpoints live
//! in `token`, the ordinary APIs in `ordinary`.

mod ordinary;
mod token;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::{Emulator, Stats};

/// All routes with `emulator` attached as state.
pub(crate) fn router(emulator: Emulator) -> Router {
    Router::new()
        .route("/cgi-bin/token", get(token::classic))
        .route("/cgi-bin/stable_token", post(token::stable))
        .route(
            "/cgi-bin/get_api_domain_ip",
            get(ordinary::get_api_domain_ip),
        )
        .route("/cgi-bin/message/custom/send", post(ordinary::custom_send))
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/reset_quota", post(reset_quota))
        .fallback(not_found)
        .with_state(emulator)
}

async fn stats(State(emulator): State<Emulator>) -> Json<Stats> {
    Json(emulator.stats())
}

async fn reset_quota(State(emulator): State<Emulator>) -> impl IntoResponse {
    emulator.reset_quota();
    Json(serde_json::json!({"errcode": 0, "errmsg": "ok"}))
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"errcode": -1, "errmsg": "not found"})),
    )
}
