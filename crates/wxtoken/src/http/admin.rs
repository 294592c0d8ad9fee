//! Runtime administration (scope `admin`): `PUT`/`DELETE /v1/apps/{app}`,
//! `GET`/`POST /v1/clients`, `DELETE /v1/clients/{name}`, `GET /v1/audit`. Every change
//! is written to the store first, then applied here; other instances follow within a
//! second (see [`crate::admin`]). Every change is audited, refused ones too.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::ApiError;
use super::{AppState, Path, parse_json};
use crate::admin::{AdminError, ClientView};
use crate::config::{AppGrant, ConfigError, Scope};
use crate::store::AuditFilter;

/// The most audit entries one request returns.
const MAX_AUDIT_LIMIT: usize = 1000;

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(ConfigError::Invalid { key, message }) => {
                ApiError::BadRequest(format!("field `{key}`: {message}"))
            }
            AdminError::Invalid(other) => ApiError::BadRequest(other.to_string()),
            AdminError::ReadOnly(_) => ApiError::Conflict {
                code: "read_only",
                message: e.to_string(),
            },
            AdminError::ClientExists(_) => ApiError::Conflict {
                code: "client_exists",
                message: e.to_string(),
            },
            AdminError::UnknownApp(app) => ApiError::AppNotFound(app),
            AdminError::UnknownClient(_) => ApiError::Missing {
                code: "client_not_found",
                message: e.to_string(),
            },
            AdminError::Store(store) => {
                tracing::warn!(error = %store, "an admin change failed in the store");
                ApiError::StoreUnavailable(format!(
                    "the store failed, nothing was changed: {store}"
                ))
            }
        }
    }
}

/// An admin key limited to some apps manages only those.
fn may_manage(caller: &Caller, app: &str) -> Result<(), ApiError> {
    if caller.0.apps.allows(app) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "client `{}` may not use app `{app}`",
            caller.0.name
        )))
    }
}

/// An admin key limited to some apps gives out and takes back only keys limited to
/// those apps: otherwise it could mint itself a key for every app.
fn may_grant(caller: &Caller, grant: &AppGrant) -> Result<(), ApiError> {
    match grant {
        AppGrant::Only(apps) => apps.iter().try_for_each(|app| may_manage(caller, app)),
        AppGrant::All if matches!(caller.0.apps, AppGrant::All) => Ok(()),
        AppGrant::All => Err(ApiError::Forbidden(format!(
            "client `{}` may not manage a client of every app (\"*\")",
            caller.0.name
        ))),
    }
}

fn result_of<T>(outcome: &Result<T, AdminError>) -> String {
    match outcome {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.to_string(),
    }
}

/// `PUT /v1/apps/{app}` body = an `[[apps]]` entry as JSON without `id`.
pub async fn put_app(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    may_manage(&caller, &app)?;
    let body: serde_json::Value = parse_json(body)?;
    let outcome = state.admin.put_app(&app, &body).await;
    state
        .admin
        .audit(&caller.0.name, "app.put", Some(&app), &result_of(&outcome))
        .await;
    let created = outcome?;
    state.apps_changed();
    let status = state
        .keeper
        .status(&app)
        .ok_or(ApiError::AppNotFound(app))?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(status)).into_response())
}

/// `DELETE /v1/apps/{app}`: the app's routes answer 404 at once.
pub async fn delete_app(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Admin)?;
    may_manage(&caller, &app)?;
    let outcome = state.admin.remove_app(&app).await;
    state
        .admin
        .audit(
            &caller.0.name,
            "app.delete",
            Some(&app),
            &result_of(&outcome),
        )
        .await;
    outcome?;
    state.apps_changed();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
pub struct ClientList {
    clients: Vec<ClientView>,
}

/// `GET /v1/clients`: every client, never a key.
pub async fn list_clients(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ClientList>, ApiError> {
    caller.require(Scope::Admin)?;
    // An admin key limited to some apps sees the clients it could give out: those
    // limited to its apps (a client of "*" is seen by an admin key of "*" only).
    let clients = state
        .admin
        .list_clients()
        .into_iter()
        .filter(|client| {
            let grant = if client.apps.iter().any(|a| a == "*") {
                AppGrant::All
            } else {
                AppGrant::Only(client.apps.clone())
            };
            may_grant(&caller, &grant).is_ok()
        })
        .collect();
    Ok(Json(ClientList { clients }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    name: String,
    apps: Vec<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

#[derive(Serialize)]
struct CreatedClient {
    name: String,
    /// Shown this once; only its sha256 is kept.
    key: String,
}

/// `POST /v1/clients` `{"name","apps","scopes"}`: 201 `{"name","key"}`.
pub async fn add_client(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    let NewClient { name, apps, scopes } = parse_json(body)?;
    let grant = if apps.iter().any(|a| a == "*") {
        AppGrant::All
    } else {
        AppGrant::Only(apps.clone())
    };
    may_grant(&caller, &grant)?;
    let scopes = scopes.unwrap_or_else(|| vec!["read".to_owned()]);
    let outcome = state.admin.add_client(&name, apps, scopes).await;
    state
        .admin
        .audit(
            &caller.0.name,
            "client.add",
            None,
            &format!("{name}: {}", result_of(&outcome)),
        )
        .await;
    let key = outcome?;
    let body = Json(CreatedClient { name, key });
    let mut response = (StatusCode::CREATED, body).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// `DELETE /v1/clients/{name}`: the key stops working on every instance.
pub async fn revoke_client(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Admin)?;
    if let Some(client) = state.admin.clients().iter().find(|c| c.name == name) {
        may_grant(&caller, &client.apps)?;
    }
    let outcome = state.admin.revoke_client(&name).await;
    state
        .admin
        .audit(
            &caller.0.name,
            "client.revoke",
            None,
            &format!("{name}: {}", result_of(&outcome)),
        )
        .await;
    outcome?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct AuditView {
    /// Unix seconds.
    at: u64,
    /// Unix ms, for ordering within a second.
    at_ms: u64,
    client: String,
    action: String,
    app: Option<String>,
    result: String,
}

#[derive(Serialize)]
pub struct AuditPage {
    entries: Vec<AuditView>,
}

/// `GET /v1/audit?since=UNIX&limit=N` (oldest first; limit 100 by default, at most 1000).
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    request: axum::extract::Request,
) -> Result<Json<AuditPage>, ApiError> {
    caller.require(Scope::Admin)?;
    let query = request.uri().query().unwrap_or_default();
    let (mut since, mut limit) = (0u64, 100usize);
    let mut seen = [false; 2];
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let index = match name.as_ref() {
            "since" => 0,
            "limit" => 1,
            _ => continue,
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(super::duplicate_param(&name));
        }
        let value = super::error::echo(&value);
        match name.as_ref() {
            "since" => {
                since = value.parse().map_err(|_| {
                    ApiError::BadRequest(format!("since must be unix seconds, got `{value}`"))
                })?;
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_AUDIT_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "limit must be 1 to {MAX_AUDIT_LIMIT}, got `{value}`"
                        ))
                    })?;
            }
            _ => {}
        }
    }
    // An admin key limited to some apps reads the entries about its apps and its own.
    let filter = match &caller.0.apps {
        AppGrant::All => AuditFilter::All,
        AppGrant::Only(apps) => AuditFilter::Limited {
            apps: apps.clone(),
            client: caller.0.name.clone(),
        },
    };
    let entries = state
        .admin
        .audit_since(since.saturating_mul(1000), limit, filter)
        .await
        .map_err(|e| ApiError::StoreUnavailable(format!("cannot read the audit log: {e}")))?;
    Ok(Json(AuditPage {
        entries: entries
            .into_iter()
            .map(|e| AuditView {
                at: e.at_ms / 1000,
                at_ms: e.at_ms,
                client: e.client,
                action: e.action,
                app: e.app,
                result: e.result,
            })
            .collect(),
    }))
}
