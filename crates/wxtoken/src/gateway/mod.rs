//! The gateway: forwards a WeChat API request carrying a token this server issued to
//! the upstream base of that token's app, and hides a token WeChat has just killed.
//!
//! - The request goes out with the app's current token (a client still holding the
//!   previous one gets it replaced rather than refused later).
//! - If WeChat answers 40001, 40014 or 42001, the token is reported to the keeper
//!   (compare-and-invalidate: at most one refresh however many requests see it) and a
//!   request whose body was held is sent once more with the token that comes back.
//!   WeChat did not execute a request it rejected for its token, so this is safe for
//!   POSTs too. A streamed body (an upload past `gateway.retry_body_bytes`) cannot be
//!   sent twice: its answer is passed on, and the report still spares the client's
//!   next call.
//! - Only `upstream.api_base` and `upstream.wecom_base` are ever contacted; the path is
//!   the client's, under WeChat's API prefixes ([`is_wechat_api_path`]).
//!
//! The HTTP edge (`http::gateway`) decides what a request is; this module only sends.

mod body;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use tracing::{debug, info, warn};

pub use body::{BodyError, RequestBody, read_request};
use body::{Peeked, peek};

use crate::config::{AppKind, AppSettings, GatewaySettings, UpstreamSettings};
use crate::keeper::Keeper;

/// The path prefixes of WeChat's server APIs (official accounts, mini programs,
/// WeCom) that the gateway forwards. Anything else is not WeChat's and gets 404.
pub const API_PREFIXES: &[&str] = &[
    "/cgi-bin/",
    "/wxa/",
    "/wxaapi/",
    "/datacube/",
    "/card/",
    "/customservice/",
    "/merchant/",
    "/shop/",
    "/product/",
    "/semantic/",
    "/tcb/",
    "/channels/",
    "/wxopen/",
];

/// Whether `path` is under one of WeChat's API prefixes, with no dot segment and no
/// percent-encoded dot, slash or backslash (`..%2F..` decodes to two dot segments) that
/// a server further on might resolve to somewhere else. WeChat's paths have none.
pub fn is_wechat_api_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let dotted = path.split(['/', '\\']).any(|s| s == "." || s == "..")
        || path.contains('\\')
        || ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e));
    API_PREFIXES.iter().any(|p| path.starts_with(p)) && !dotted
}

/// The errcodes that say the token was dead: report it and retry with a fresh one.
pub fn is_token_errcode(errcode: i64) -> bool {
    matches!(errcode, 40001 | 40014 | 42001)
}

/// Request headers passed on to WeChat. Everything else stays here: above all the
/// client's `Authorization` (its wxtoken key), and `Accept-Encoding`, so answers come
/// back plain and their errcode can be read.
const FORWARDED_REQUEST_HEADERS: &[HeaderName] = &[
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::ACCEPT_LANGUAGE,
    header::USER_AGENT,
];

/// Answer headers that belong to one hop and are not passed back.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What the client asked to send, minus the token.
#[derive(Debug)]
pub struct Outgoing {
    pub method: Method,
    /// The path, e.g. `/cgi-bin/message/custom/send`; checked by [`is_wechat_api_path`].
    pub path: String,
    /// The raw query string; its `access_token` is replaced on the way out.
    pub query: String,
    pub headers: HeaderMap,
    pub body: RequestBody,
}

/// Why the gateway sent nothing, or got nothing back.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The app has no valid token to send (the keeper says why).
    #[error("no valid access token for app `{app}`: {reason}")]
    NoToken { app: String, reason: String },
    /// WeChat could not be reached or the request failed on the way.
    #[error("the request to WeChat failed: {0}")]
    Upstream(String),
    /// The client's body broke the size limit while streaming.
    #[error(transparent)]
    Body(#[from] BodyError),
}

/// Sends WeChat API requests for the apps of one keeper.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    keeper: Keeper,
    /// Pooled connections to both upstream bases; longer timeout than token calls,
    /// since uploads pass through here.
    http: reqwest::Client,
    api_base: String,
    wecom_base: String,
}

impl Gateway {
    pub fn new(
        keeper: Keeper,
        upstream: &UpstreamSettings,
        settings: &GatewaySettings,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(upstream.connect_timeout)
            .timeout(settings.request_timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            // Requests are small and answered at once: no Nagle delay on either hop.
            .tcp_nodelay(true)
            // Redirects would take a request somewhere other than the two bases.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                keeper,
                http,
                api_base: upstream.api_base.clone(),
                wecom_base: upstream.wecom_base.clone(),
            }),
        })
    }

    /// The upstream base that serves `app`'s APIs.
    pub fn base_of(&self, app: &AppSettings) -> &str {
        match app.kind {
            AppKind::Official { .. } | AppKind::Component => &self.inner.api_base,
            AppKind::Wecom { .. } => &self.inner.wecom_base,
        }
    }

    /// Sends `request` for `app` (or for `authorizer` of component `app`) with its
    /// current token; retries once with a fresh one if WeChat says the token was dead
    /// and the body can be sent again.
    pub async fn forward(
        &self,
        app: &AppSettings,
        authorizer: Option<&str>,
        request: Outgoing,
    ) -> Result<Response, GatewayError> {
        let keeper = &self.inner.keeper;
        let token = match authorizer {
            None => keeper.access_token(&app.id, None).await,
            Some(appid) => keeper.authorizer_token(&app.id, appid, None).await,
        }
        .map_err(|e| GatewayError::NoToken {
            app: app.id.clone(),
            reason: e.to_string(),
        })?;
        let Outgoing {
            method,
            path,
            query,
            headers,
            body,
        } = request;
        let url = |token: &str| {
            format!(
                "{}{path}?{}",
                self.base_of(app),
                with_access_token(&query, token)
            )
        };
        let held = match &body {
            RequestBody::Held(bytes) => Some(bytes.clone()),
            RequestBody::Streamed { .. } => None,
        };
        let first = self
            .send(method.clone(), &url(&token.value), &headers, body)
            .await?;
        let (status, answer_headers, peeked) = first;
        let Some(errcode) = peeked.errcode().filter(|c| is_token_errcode(*c)) else {
            count(app, "forwarded");
            return Ok(respond(status, &answer_headers, peeked));
        };
        info!(
            app = %app.id,
            path = %path,
            errcode,
            token = %token.redacted(),
            "WeChat says the token is dead; reporting it"
        );
        let invalidated = match authorizer {
            None => keeper.invalidate(&app.id, &token.value).await,
            Some(appid) => {
                keeper
                    .invalidate_authorizer(&app.id, appid, &token.value)
                    .await
            }
        };
        let fresh = match invalidated {
            Ok((fresh, _)) if fresh.value != token.value => fresh,
            Ok(_) | Err(_) => {
                count(app, "token_rejected");
                return Ok(respond(status, &answer_headers, peeked));
            }
        };
        let Some(held) = held else {
            // An upload cannot be replayed; the client's own retry will find the new
            // token.
            count(app, "token_rejected");
            return Ok(respond(status, &answer_headers, peeked));
        };
        count(app, "retried");
        let (status, answer_headers, peeked) = self
            .send(
                method,
                &url(&fresh.value),
                &headers,
                RequestBody::Held(held),
            )
            .await?;
        Ok(respond(status, &answer_headers, peeked))
    }

    /// Sends a request that carries no token (a secret-bearing login call) once.
    pub async fn send_once(
        &self,
        base: &str,
        path_and_query: &str,
        method: Method,
        headers: &HeaderMap,
    ) -> Result<(StatusCode, HeaderMap, Body), GatewayError> {
        let url = format!("{base}{path_and_query}");
        let (status, headers, peeked) = self
            .send(method, &url, headers, RequestBody::Held(Default::default()))
            .await?;
        Ok((status, headers, peeked.into_body()))
    }

    /// The upstream base of official accounts and mini programs.
    pub fn api_base(&self) -> &str {
        &self.inner.api_base
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &HeaderMap,
        body: RequestBody,
    ) -> Result<(StatusCode, HeaderMap, Peeked), GatewayError> {
        let mut request = self.inner.http.request(method, url);
        for name in FORWARDED_REQUEST_HEADERS {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value);
            }
        }
        request = match body {
            RequestBody::Held(bytes) if bytes.is_empty() => request,
            RequestBody::Held(bytes) => request.body(bytes),
            RequestBody::Streamed { body, length } => {
                let request = request.body(body);
                match length {
                    Some(n) => request.header(header::CONTENT_LENGTH, n),
                    None => request,
                }
            }
        };
        let response = request.send().await.map_err(upstream_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let peeked = peek(response).await.map_err(upstream_error)?;
        debug!(status = status.as_u16(), "gateway answer");
        Ok((status, headers, peeked))
    }
}

/// A transport error without its URL: the URL holds a token or a secret.
fn upstream_error(error: reqwest::Error) -> GatewayError {
    let body_too_large = std::error::Error::source(&error)
        .and_then(|s| s.downcast_ref::<BodyError>())
        .is_some();
    let error = error.without_url();
    if body_too_large {
        return GatewayError::Upstream("the request body grew past the limit".into());
    }
    warn!(error = %error, "gateway request failed");
    GatewayError::Upstream(error.to_string())
}

/// Counts a request refused for a token this server did not issue (no app to name).
pub fn count_refused() {
    metrics::counter!("wxtoken_gateway_requests_total", "app" => "", "outcome" => "refused")
        .increment(1);
}

fn count(app: &AppSettings, outcome: &'static str) {
    metrics::counter!("wxtoken_gateway_requests_total", "app" => app.id.clone(), "outcome" => outcome)
        .increment(1);
}

/// The client's answer: WeChat's status, headers (less hop-by-hop ones) and body.
fn respond(status: StatusCode, headers: &HeaderMap, peeked: Peeked) -> Response {
    let mut response = Response::new(peeked.into_body());
    *response.status_mut() = status;
    let out = response.headers_mut();
    for (name, value) in headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `query` with its `access_token` set to `token` (kept in place if present, else
/// appended; a second one, however encoded, is dropped); every other parameter is
/// passed on byte for byte.
pub fn with_access_token(query: &str, token: &str) -> String {
    let mut out = String::with_capacity(query.len() + token.len() + 14);
    let mut replaced = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push('&');
        }
        if is_access_token_pair(pair) {
            if replaced {
                // A second access_token would be ambiguous upstream: drop it.
                out.pop();
                continue;
            }
            out.push_str("access_token=");
            out.push_str(token);
            replaced = true;
        } else {
            out.push_str(pair);
        }
    }
    if !replaced {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str("access_token=");
        out.push_str(token);
    }
    out
}

/// A query parameter given more than once (which one would a server further on take?).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter `{0}` is given more than once")]
pub struct DuplicateParam(pub String);

/// The value of `name` in a raw query string, percent-decoded (names too, so
/// `access%5Ftoken` is `access_token`); given twice, it is refused.
pub fn query_param<'q>(
    query: &'q str,
    name: &str,
) -> Result<Option<std::borrow::Cow<'q, str>>, DuplicateParam> {
    let mut found = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == name {
            if found.is_some() {
                return Err(DuplicateParam(name.to_owned()));
            }
            found = Some(value);
        }
    }
    Ok(found)
}

/// Whether a raw `name=value` pair is named `access_token`, percent-encoded or not.
fn is_access_token_pair(pair: &str) -> bool {
    let name = pair.split_once('=').map_or(pair, |(name, _)| name);
    name == "access_token"
        || (name.contains('%')
            && form_urlencoded::parse(name.as_bytes())
                .next()
                .is_some_and(|(key, _)| key == "access_token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_replaced_in_place_and_nothing_else_changes() {
        assert_eq!(
            with_access_token("access_token=OLD&type=image", "NEW"),
            "access_token=NEW&type=image"
        );
        assert_eq!(
            with_access_token("a=%20b&access_token=OLD", "NEW"),
            "a=%20b&access_token=NEW"
        );
        assert_eq!(with_access_token("", "NEW"), "access_token=NEW");
        assert_eq!(with_access_token("x=1", "NEW"), "x=1&access_token=NEW");
        assert_eq!(
            with_access_token("access_token=A&access_token=B&x=1", "NEW"),
            "access_token=NEW&x=1"
        );
        assert_eq!(
            with_access_token("access%5Ftoken=A&x=1&access_token=B", "NEW"),
            "access_token=NEW&x=1"
        );
        assert_eq!(
            with_access_token("x=1&%61ccess_token", "NEW"),
            "x=1&access_token=NEW"
        );
    }

    #[test]
    fn only_wechat_api_paths_are_forwarded() {
        assert!(is_wechat_api_path("/cgi-bin/message/custom/send"));
        assert!(is_wechat_api_path("/wxa/getwxacodeunlimit"));
        assert!(!is_wechat_api_path("/v1/apps"));
        assert!(!is_wechat_api_path("/cgi-bin/../v1/apps"));
        assert!(!is_wechat_api_path("/cgi-bin/%2E%2e/v1/apps"));
        assert!(!is_wechat_api_path("/cgi-bin/./token"));
        assert!(!is_wechat_api_path("/cgi-bin/..%2F..%2Fv1"));
        assert!(!is_wechat_api_path("/cgi-bin/a%2fb"));
        assert!(!is_wechat_api_path("/cgi-bin/..\\x"));
        assert!(!is_wechat_api_path("/cgi-bin/%5C..%5Cx"));
        assert!(is_wechat_api_path("/cgi-bin/a..b"));
        assert!(!is_wechat_api_path("/cgi-bin"));
        assert!(!is_wechat_api_path("/elsewhere/cgi-bin/x"));
    }

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(
            query_param("a=1&secret=k%2By", "secret"),
            Ok(Some("k+y".into()))
        );
        assert_eq!(query_param("a=1", "secret"), Ok(None));
        assert_eq!(
            query_param("access_token=A&access%5Ftoken=B", "access_token"),
            Err(DuplicateParam("access_token".into()))
        );
    }
}
