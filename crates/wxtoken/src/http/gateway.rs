//! The gateway's HTTP edge: every request under WeChat's API prefixes that no other
//! route matched, and `ANY /v1/apps/{app}/proxy/{*path}`.
//!
//! - With `access_token=T`: T must be a token this server issued (current, or the
//!   previous one while it is valid); the ticket endpoints are answered from the
//!   ticket slots, everything else is forwarded (see [`crate::gateway`]). A token not
//!   issued here gets WeChat's 40014 and is never forwarded.
//! - `/sns/jscode2session` and `/sns/oauth2/access_token` with `appid=A&secret=<client
//!   key>` go to WeChat with A's real secret, which never comes back to the client.
//! - The proxy route authenticates with a Bearer key and injects the current token.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use tracing::warn;

use super::AppState;
use super::auth::{authenticate, find_client, permit};
use super::error::ApiError;
use super::facade::{self, WxError};
use crate::config::{AppKind, AppSettings, Scope};
use crate::gateway::{
    BodyError, GatewayError, Outgoing, is_wechat_api_path, query_param, read_request,
};
use crate::keeper::Issued;

/// Login calls that carry the app secret instead of a token.
const SECRET_PATHS: &[&str] = &["/sns/jscode2session", "/sns/oauth2/access_token"];

/// A login answer is a few hundred bytes; anything this large is passed on unread.
const MAX_LOGIN_ANSWER: usize = 64 * 1024;

/// Whether the fallback answers `path` as WeChat's API (rather than 404).
pub(super) fn is_gateway_path(path: &str) -> bool {
    SECRET_PATHS.contains(&path) || is_wechat_api_path(path)
}

/// Every request no route matched: WeChat's APIs, or 404.
pub async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if SECRET_PATHS.contains(&path.as_str()) {
        return login_call(&state, request).await;
    }
    if !is_wechat_api_path(&path) {
        return ApiError::NotFound.into_response();
    }
    let query = request.uri().query().unwrap_or_default().to_owned();
    let token = match query_param(&query, "access_token") {
        Ok(token) => token.filter(|t| !t.is_empty()),
        Err(e) => return facade::duplicate(&e.0).into_response(),
    };
    let Some(token) = token else {
        return WxError::token_missing().into_response();
    };
    let issuer = state
        .keeper
        .issuer_of(&token)
        .map(|(app, issued)| (app.clone(), None, issued))
        .or_else(|| {
            state
                .keeper
                .authorizer_issuer_of(&token)
                .map(|(app, appid, issued)| (app.clone(), Some(appid), issued))
        });
    let (app, authorizer) = match issuer {
        None => {
            crate::gateway::count_refused();
            return WxError::invalid_token().into_response();
        }
        Some((_, _, Issued::Previous { expired: true })) => {
            return WxError::new(42001, "access_token expired").into_response();
        }
        Some((app, authorizer, _)) => (app, authorizer),
    };
    if let Some(answer) = facade::ticket(&state, &app, authorizer.as_deref(), &path, &query).await {
        return answer;
    }
    match outgoing(request, path, query, &state).await {
        Ok(out) => wechat_answer(
            state
                .gateway
                .forward(&app, authorizer.as_deref(), out)
                .await,
        ),
        Err(e) => body_error(e),
    }
}

/// `ANY /v1/apps/{app}/proxy/{*path}`: the gateway for a client that holds a key but
/// no token; the app's current token is put in the query.
pub async fn proxy(State(state): State<AppState>, request: Request) -> Response {
    let client = match authenticate(request.headers(), &state) {
        Ok(client) => client.clone(),
        Err(e) => return e.into_response(),
    };
    let rest = request
        .uri()
        .path()
        .strip_prefix("/v1/apps/")
        .unwrap_or_default();
    let Some((app_id, path)) = rest.split_once("/proxy") else {
        return ApiError::NotFound.into_response();
    };
    let Some(app) = state.keeper.app(app_id) else {
        return ApiError::AppNotFound(app_id.to_owned()).into_response();
    };
    if let Err(e) = permit(&client, &app.id, Scope::Read) {
        return e.into_response();
    }
    let path = path.to_owned();
    if !is_wechat_api_path(&path) {
        return ApiError::BadRequest(format!(
            "`{path}` is not under one of WeChat's API prefixes ({})",
            crate::gateway::API_PREFIXES.join(", ")
        ))
        .into_response();
    }
    let query = request.uri().query().unwrap_or_default().to_owned();
    match outgoing(request, path, query, &state).await {
        Ok(out) => match state.gateway.forward(&app, None, out).await {
            Ok(response) => response,
            Err(GatewayError::NoToken { reason, .. }) => ApiError::TokenUnavailable {
                message: reason,
                retry_in: None,
            }
            .into_response(),
            Err(GatewayError::Body(e)) => body_error(e),
            Err(GatewayError::Upstream(message)) => ApiError::Upstream {
                message,
                wechat_errcode: None,
                rid: None,
                retry_in: None,
            }
            .into_response(),
        },
        Err(e) => body_error(e),
    }
}

/// The request as it will be sent, its body held or streamed per `[gateway]`.
async fn outgoing(
    request: Request,
    path: String,
    query: String,
    state: &AppState,
) -> Result<Outgoing, BodyError> {
    let (parts, body) = request.into_parts();
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limits = &state.gateway_settings;
    // What is held before forwarding must arrive within the gateway's own timeout (what
    // is streamed is under the upstream request's).
    let body = tokio::time::timeout(
        limits.request_timeout,
        read_request(body, length, limits.retry_body_bytes, limits.max_body_bytes),
    )
    .await
    .map_err(|_| BodyError::TimedOut)??;
    Ok(Outgoing {
        method: parts.method,
        path,
        query,
        headers: parts.headers,
        body,
    })
}

/// A forwarded answer, or WeChat's words for why there is none.
fn wechat_answer(result: Result<Response, GatewayError>) -> Response {
    match result {
        Ok(response) => response,
        Err(GatewayError::NoToken { reason, .. }) => {
            WxError::new(-1, format!("system error (wxtoken: {reason})")).into_response()
        }
        Err(GatewayError::Body(e)) => body_error(e),
        Err(GatewayError::Upstream(message)) => {
            let mut response =
                WxError::new(-1, format!("system error (wxtoken: {message})")).into_response();
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            response
        }
    }
}

fn body_error(error: BodyError) -> Response {
    match error {
        BodyError::TooLarge { limit } => ApiError::PayloadTooLarge(format!(
            "the body must be at most {limit} bytes (gateway.max_body_bytes)"
        ))
        .into_response(),
        BodyError::Read(message) => ApiError::BadRequest(message).into_response(),
        e @ BodyError::TimedOut => ApiError::RequestTimeout(e.to_string()).into_response(),
    }
}

/// `/sns/jscode2session` and `/sns/oauth2/access_token`: `secret` is a client key that
/// may read the app of `appid`; WeChat gets the real secret instead.
async fn login_call(state: &AppState, request: Request) -> Response {
    if request.method() != Method::GET {
        return ApiError::MethodNotAllowed.into_response();
    }
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let [appid, key] = match facade::params(&query, ["appid", "secret"]) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let Some(appid) = appid else {
        return WxError::new(41002, "appid missing").into_response();
    };
    let Some(key) = key else {
        return WxError::new(41004, "appsecret missing").into_response();
    };
    let app = state
        .keeper
        .apps()
        .into_iter()
        .find(|a| matches!(a.kind, AppKind::Official { .. }) && a.appid == appid);
    let Some(app) = app else {
        return WxError::new(40013, "invalid appid").into_response();
    };
    let allowed = find_client(&state.admin.clients(), &key)
        .is_some_and(|client| permit(&client, &app.id, Scope::Read).is_ok());
    if !allowed {
        return WxError::new(
            40125,
            "invalid appsecret (wxtoken: the secret must be a client key that may read this app)",
        )
        .into_response();
    }
    let app = app.clone();
    let path_and_query = format!("{path}?{}", with_real_secret(&query, &app));
    let sent = state
        .gateway
        .send_once(
            state.gateway.api_base(),
            &path_and_query,
            Method::GET,
            request.headers(),
        )
        .await;
    match sent {
        Ok((status, headers, body)) => scrubbed(status, &headers, body, &app).await,
        Err(e) => wechat_answer(Err(e)),
    }
}

/// `query` with `secret` set to the app's real secret.
fn with_real_secret(query: &str, app: &AppSettings) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name == "secret" {
            out.append_pair("secret", app.secret.expose_secret());
        } else {
            out.append_pair(&name, &value);
        }
    }
    out.finish()
}

/// A login answer with the real secret cut out, should WeChat ever echo it.
async fn scrubbed(
    status: StatusCode,
    headers: &HeaderMap,
    body: Body,
    app: &AppSettings,
) -> Response {
    let bytes = match axum::body::to_bytes(body, MAX_LOGIN_ANSWER).await {
        Ok(bytes) => bytes,
        Err(e) => {
            warn!(app = %app.id, error = %e, "could not read a login answer");
            return WxError::new(-1, "system error (wxtoken: unreadable answer)").into_response();
        }
    };
    let secret = app.secret.expose_secret().as_bytes();
    let bytes = if !secret.is_empty() && bytes.windows(secret.len()).any(|w| w == secret) {
        let text = String::from_utf8_lossy(&bytes).replace(app.secret.expose_secret(), "***");
        Bytes::from(text)
    } else {
        bytes
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, kind.clone());
    }
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}
