//! `GET /v1/apps` and `GET /v1/apps/{app}`: status without secrets or tokens; and
//! `POST /v1/apps/{app}/quota/clear`, which clears an app's daily quota at WeChat.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::auth::Caller;
use super::error::ApiError;
use super::{AppState, Path};
use crate::config::Scope;
use crate::keeper::{AppStatus, ClearError};

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
    let ids: Vec<String> = state
        .keeper
        .app_ids()
        .into_iter()
        .filter(|id| caller.0.apps.allows(id))
        .collect();
    for id in &ids {
        // The month's clears (a store read once a month); WeChat is not asked here.
        state.keeper.load_quota_counts(id).await;
    }
    let apps = ids
        .into_iter()
        .filter_map(|id| state.keeper.status(&id))
        .collect();
    Ok(Json(AppList { apps }))
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<AppStatus>, ApiError> {
    caller.authorize(&state, &app, Scope::Read)?;
    if !state.keeper.has_app(&app) {
        return Err(ApiError::AppNotFound(app));
    }
    // WeChat's own figures, if older than an hour (waits briefly at most).
    state.keeper.refresh_quota(&app).await;
    state
        .keeper
        .status(&app)
        .map(Json)
        .ok_or(ApiError::AppNotFound(app))
}

/// `POST /v1/apps/{app}/quota/clear` (admin): one `clear_quota/v2` call within the
/// monthly budget; answers the app's status.
pub async fn clear_quota(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<AppStatus>, ApiError> {
    caller.authorize(&state, &app, Scope::Admin)?;
    state.keeper.clear_quota(&app).await.map_err(|e| match e {
        ClearError::UnknownApp(app) => ApiError::AppNotFound(app),
        ClearError::Unsupported(_) => ApiError::Conflict {
            code: "quota_clear_unsupported",
            message: e.to_string(),
        },
        ClearError::BudgetUsedUp { .. } => ApiError::Conflict {
            code: "clear_budget_used_up",
            message: e.to_string(),
        },
        ClearError::Store(message) => ApiError::StoreUnavailable(message),
        ClearError::Upstream(upstream) => ApiError::Upstream {
            message: format!("WeChat refused the clear: {}", upstream.message),
            wechat_errcode: upstream.errcode,
            rid: upstream.rid,
            retry_in: None,
        },
    })?;
    state.keeper.refresh_quota(&app).await;
    state
        .keeper
        .status(&app)
        .map(Json)
        .ok_or(ApiError::AppNotFound(app))
}
