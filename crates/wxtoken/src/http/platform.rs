//! Third-party platforms: `POST /v1/apps/{component}/callback` (WeChat's pushes, signed
//! by WeChat rather than a client key) and `/v1/apps/{component}/authorizers/...`.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::Caller;
use super::error::ApiError;
use super::jssdk::{ConfigBody, check_config, page_config};
use super::tokens::{json_no_store, min_ttl, render};
use super::{AppState, Path, parse_json};
use crate::config::Scope;
use crate::credential::unix_now_ms;
use crate::keeper::{Failure, KeeperError, PushError, valid_appid};
use crate::wechat::ErrorClass;
use crate::wechat::crypto::MAX_MESSAGE_BYTES;

/// A page of authorizers holds this many unless `limit` says otherwise...
const DEFAULT_PAGE: usize = 100;
/// ...and never more than this.
const MAX_PAGE: usize = 1000;

/// The longest `redirect_uri` accepted (WeChat's own URL must still fit in a browser).
const MAX_REDIRECT_URI: usize = 1024;

/// The body limit of the callback route: one byte over what a push may be, so that a
/// larger one is seen (and refused as oversized) rather than cut.
pub const CALLBACK_BODY_LIMIT: usize = MAX_MESSAGE_BYTES + 1;

/// One query parameter, percent-decoded; given twice, it is refused.
fn param(query: &str, name: &str) -> Result<Option<String>, ApiError> {
    Ok(super::query_param(Some(query), name)?.map(|v| v.into_owned()))
}

/// `POST /v1/apps/{component}/callback?timestamp&nonce&encrypt_type=aes&msg_signature`
/// with WeChat's XML. Answers `success` once the push is verified and acted on; a bad
/// signature gets 401, a broken message 400, and neither stores anything.
pub async fn callback(
    State(state): State<AppState>,
    Path(app): Path<String>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let query = query.unwrap_or_default();
    let required = |name: &'static str| {
        param(&query, name)?
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::BadRequest(format!("query parameter `{name}` is required")))
    };
    let body = body.map_err(|rejection| {
        super::body_rejection(rejection, || {
            ApiError::BadRequest(format!(
                "the push is larger than {MAX_MESSAGE_BYTES} bytes; WeChat's never are"
            ))
        })
    })?;
    let msg_signature = required("msg_signature")?;
    let timestamp = required("timestamp")?;
    let nonce = required("nonce")?;
    match param(&query, "encrypt_type")?.as_deref() {
        Some("aes") => {}
        other => {
            return Err(ApiError::BadRequest(format!(
                "query parameter `encrypt_type` must be `aes` (a third-party platform's pushes \
                 are always encrypted), got {other:?}"
            )));
        }
    }
    match state
        .keeper
        .receive_push(&app, &timestamp, &nonce, &msg_signature, &body)
        .await
    {
        Ok(_) => Ok(([(CONTENT_TYPE, "text/plain")], "success").into_response()),
        Err(e @ (PushError::UnknownApp(_) | PushError::NotAComponent(_))) => {
            Err(ApiError::Missing {
                code: "not_a_component",
                message: e.to_string(),
            })
        }
        Err(PushError::Signature(_)) => Err(ApiError::BadSignature),
        Err(e @ (PushError::Malformed(_) | PushError::Missing(_))) => {
            Err(ApiError::BadRequest(format!("the push was refused: {e}")))
        }
        Err(e @ PushError::Store(_)) => Err(ApiError::NotReady(e.to_string())),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthUrlBody {
    redirect_uri: String,
    /// 1 official accounts, 2 mini programs, 3 both (WeChat's default)...
    auth_type: Option<u8>,
}

/// `POST /v1/apps/{component}/authorizers/auth_url` `{"redirect_uri", "auth_type"?}`
pub async fn auth_url(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.authorize(&state, &app, Scope::Admin)?;
    let AuthUrlBody {
        redirect_uri,
        auth_type,
    } = parse_json(body)?;
    let is_url = ["https://", "http://"].iter().any(|p| {
        redirect_uri
            .strip_prefix(p)
            .is_some_and(|rest| !rest.is_empty())
    }) && !redirect_uri.chars().any(char::is_whitespace)
        && redirect_uri.len() <= MAX_REDIRECT_URI;
    if !is_url {
        return Err(ApiError::BadRequest(format!(
            "field `redirect_uri` must be an http(s) URL of at most {MAX_REDIRECT_URI} characters"
        )));
    }
    let auth_type = auth_type.unwrap_or(3);
    if !(1..=6).contains(&auth_type) {
        return Err(ApiError::BadRequest(format!(
            "field `auth_type` must be 1 (official accounts), 2 (mini programs), 3 (both), \
             4, 5 or 6, got {auth_type}"
        )));
    }
    let (url, expires_in) = state
        .keeper
        .auth_url(&app, &redirect_uri, auth_type)
        .await?;
    Ok(Json(serde_json::json!({ "url": url, "expires_in": expires_in })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeBody {
    authorization_code: String,
}

/// `POST /v1/apps/{component}/authorizers` `{"authorization_code"}`: 201 with the new
/// authorizer (200 if it had authorized before), once its refresh token is stored.
pub async fn authorize(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.authorize(&state, &app, Scope::Admin)?;
    let AuthorizeBody { authorization_code } = parse_json(body)?;
    let code = authorization_code.trim();
    if code.is_empty() || code.len() > 512 {
        return Err(ApiError::BadRequest(
            "field `authorization_code` must be the code WeChat gave (1-512 characters)".into(),
        ));
    }
    match state.keeper.authorize(&app, code).await {
        Ok((view, created)) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(view)).into_response())
        }
        // WeChat refusing the code is the client's problem, not an outage.
        Err(KeeperError::Upstream { failure, .. }) if matches!(&*failure, Failure::Upstream(e) if e.class == ErrorClass::Configuration) =>
        {
            let Failure::Upstream(e) = &*failure else {
                unreachable!("matched above")
            };
            Err(ApiError::Refused {
                message: format!(
                    "WeChat refused the authorization code ({}): {}",
                    e.errcode.unwrap_or_default(),
                    e.message
                ),
                wechat_errcode: e.errcode,
                rid: e.rid.clone(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/apps/{component}/authorizers?cursor=&limit=`
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    caller.authorize(&state, &app, Scope::Read)?;
    let query = query.unwrap_or_default();
    let limit = match param(&query, "limit")? {
        None => DEFAULT_PAGE,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "limit must be a whole number from 1 to {MAX_PAGE}, got `{raw}`"
                )));
            }
        },
    };
    let cursor = match param(&query, "cursor")?.filter(|c| !c.is_empty()) {
        Some(c) if !valid_appid(&c) => {
            return Err(ApiError::BadRequest(
                "cursor must be the next_cursor of the previous page (an appid)".into(),
            ));
        }
        other => other,
    };
    let page = state.keeper.list_authorizers(&app, cursor, limit).await?;
    Ok(Json(page).into_response())
}

/// Checks the caller may use the component with `scope` and that `appid` looks like one.
fn authorizer_target(
    state: &AppState,
    caller: &Caller,
    app: &str,
    appid: &str,
    scope: Scope,
) -> Result<(), ApiError> {
    caller.authorize(state, app, scope)?;
    if !valid_appid(appid) {
        return Err(ApiError::Missing {
            code: "authorizer_not_found",
            message: format!("`{appid}` is not an appid"),
        });
    }
    Ok(())
}

fn token_response(token: &crate::credential::Token, refreshed: Option<bool>) -> Response {
    let second = unix_now_ms() / 1000;
    json_no_store(render(token, second, refreshed))
}

/// `GET /v1/apps/{component}/authorizers/{appid}/access_token[?min_ttl=S]`
pub async fn access_token(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, appid)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    authorizer_target(&state, &caller, &app, &appid, Scope::Read)?;
    let min_ttl: Option<Duration> = min_ttl(query.as_deref())?;
    let token = state.keeper.authorizer_token(&app, &appid, min_ttl).await?;
    Ok(token_response(&token, None))
}

/// `POST /v1/apps/{component}/authorizers/{appid}/access_token/invalidate`
pub async fn invalidate(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, appid)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorizer_target(&state, &caller, &app, &appid, Scope::Invalidate)?;
    let access_token = super::tokens::reported_token(body)?;
    let outcome = state
        .keeper
        .invalidate_authorizer(&app, &appid, &access_token)
        .await;
    let target = format!("{app}/{appid}");
    (state.admin).audit_invalidation(&caller.0.name, "token.invalidate", &target, &outcome);
    let (token, refreshed) = outcome?;
    Ok(token_response(&token, Some(refreshed)))
}

/// `GET /v1/apps/{component}/authorizers/{appid}/ticket/{type}[?min_ttl=S]`
pub async fn ticket(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, appid, ticket)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    authorizer_target(&state, &caller, &app, &appid, Scope::Read)?;
    let min_ttl = min_ttl(query.as_deref())?;
    let value = state
        .keeper
        .authorizer_ticket(&app, &appid, &ticket, min_ttl)
        .await?;
    Ok(super::tickets::ticket_response(&value, None).into_response())
}

/// `POST /v1/apps/{component}/authorizers/{appid}/ticket/{type}/invalidate`
pub async fn invalidate_ticket(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, appid, ticket)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorizer_target(&state, &caller, &app, &appid, Scope::Invalidate)?;
    let dead = super::tickets::reported_ticket(body)?;
    let outcome = state
        .keeper
        .invalidate_authorizer_ticket(&app, &appid, &ticket, &dead)
        .await;
    let target = format!("{app}/{appid}");
    (state.admin).audit_invalidation(&caller.0.name, "ticket.invalidate", &target, &outcome);
    let (value, refreshed) = outcome?;
    Ok(super::tickets::ticket_response(&value, Some(refreshed)).into_response())
}

/// `POST /v1/apps/{component}/authorizers/{appid}/jssdk/config` `{"url"}`: `wx.config`
/// for a page of the authorizer's.
pub async fn jssdk_config(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, appid)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorizer_target(&state, &caller, &app, &appid, Scope::Read)?;
    let ConfigBody { url, ticket } = parse_json(body)?;
    check_config(&url, &ticket)?;
    let value = state
        .keeper
        .authorizer_ticket(&app, &appid, &ticket, None)
        .await?;
    let url = crate::jssdk::strip_fragment(&url);
    let body = page_config(&appid, &value.value, url);
    Ok(json_no_store(Bytes::from(
        serde_json::to_vec(&body).unwrap_or_default(),
    )))
}

/// `POST /v1/apps/{component}/authorizers/import`: re-imports every refresh token
/// WeChat lists (`wxtoken authorizers import`).
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    caller.authorize(&state, &app, Scope::Admin)?;
    let report = state.keeper.import_authorizers(&app).await?;
    Ok(Json(report).into_response())
}
