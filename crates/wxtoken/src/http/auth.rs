//! Client keys: `Authorization: Bearer <key>`, compared as sha256 digests in constant
//! time against every configured client, so timing says nothing about which is close.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::config::{ClientSettings, Scope, key_digest};

/// The authenticated client of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<ClientSettings>);

impl Caller {
    /// Checks that `app` exists (404) and that this client may use it with `scope` (403).
    pub fn authorize(&self, state: &AppState, app: &str, scope: Scope) -> Result<(), ApiError> {
        if !state.keeper.has_app(app) {
            return Err(ApiError::AppNotFound(app.to_owned()));
        }
        permit(&self.0, app, scope)
    }

    /// Checks a scope that is not about one app.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.0.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(lacks_scope(&self.0, scope))
        }
    }
}

/// Finds the client whose key hashes to the same digest, looking at every client, and
/// tells the access log its name.
pub fn find_client(clients: &[Arc<ClientSettings>], key: &str) -> Option<Arc<ClientSettings>> {
    let digest = key_digest(key);
    let mut found = None;
    for client in clients {
        if bool::from(client.key_sha256.ct_eq(&digest)) {
            found = Some(client);
        }
    }
    if let Some(client) = found {
        super::access::note_client(client);
    }
    found.cloned()
}

/// Whether `client` may use `app` (an existing app) with `scope`.
pub fn permit(client: &ClientSettings, app: &str, scope: Scope) -> Result<(), ApiError> {
    if !client.apps.allows(app) {
        return Err(ApiError::Forbidden(format!(
            "client `{}` may not use app `{app}`",
            client.name
        )));
    }
    if client.scopes.contains(&scope) {
        Ok(())
    } else {
        Err(lacks_scope(client, scope))
    }
}

fn lacks_scope(client: &ClientSettings, scope: Scope) -> ApiError {
    ApiError::Forbidden(format!(
        "client `{}` lacks the `{}` scope",
        client.name,
        match scope {
            Scope::Read => "read",
            Scope::Invalidate => "invalidate",
            Scope::Admin => "admin",
        }
    ))
}

/// The client named by `Authorization: Bearer <key>`, or why there is none.
pub fn authenticate(
    headers: &HeaderMap,
    state: &AppState,
) -> Result<Arc<ClientSettings>, ApiError> {
    let header = headers.get(AUTHORIZATION).ok_or(ApiError::Unauthenticated(
        "missing Authorization header; send `Authorization: Bearer <client key>`",
    ))?;
    let key = header
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(ApiError::Unauthenticated(
            "the Authorization header must be `Bearer <client key>`",
        ))?;
    find_client(&state.admin.clients(), key).ok_or(ApiError::Unauthenticated("unknown client key"))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(&parts.headers, state).map(Caller)
    }
}
