//! `GET /v1/alerts`: open incidents and the last events, newest first. A caller sees
//! the incidents of the apps it may use, and those of no app (the store).

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::alerts::AlertsView;
use crate::config::Scope;

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<AlertsView>, ApiError> {
    caller.require(Scope::Read)?;
    let mut view = state.keeper.alerts().view();
    let visible = |app: &Option<String>| app.as_deref().is_none_or(|a| caller.0.apps.allows(a));
    view.open.retain(|o| visible(&o.app));
    view.recent.retain(|e| visible(&e.app));
    Ok(Json(view))
}
