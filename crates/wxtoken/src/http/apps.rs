//! `GET /v1/apps` and `GET /v1/apps/{app}`: status without secrets or tokens.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::config::Scope;
use crate::keeper::AppStatus;

#[derive(Serialize)]
pub struct AppList {
    apps: Vec<AppStatus>,
}

/// Every app the caller may read.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<AppList>, ApiError> {
    caller.require(Scope::Read)?;
    let apps = state
        .keeper
        .app_ids()
        .iter()
        .filter(|id| caller.0.apps.allows(id))
        .filter_map(|id| state.keeper.status(id))
        .collect();
    Ok(Json(AppList { apps }))
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<AppStatus>, ApiError> {
    caller.authorize(&state, &app, Scope::Read)?;
    state
        .keeper
        .status(&app)
        .map(Json)
        .ok_or(ApiError::AppNotFound(app))
}
