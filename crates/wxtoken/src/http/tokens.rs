//! `/v1/apps/{app}/access_token` and its `invalidate`.
//!
//! The GET is the hot path of the whole server, so it reads the raw request (no `Path`
//! or `Query` allocations) and serves a body rendered at most once per second per token,
//! shared as `Bytes`. The benchmark in bench/ holds it to 0.9 of a handler that returns
//! fixed bytes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::auth::{Caller, authenticate, permit};
use super::error::ApiError;
use super::{AppState, Path, parse_json};
use crate::config::{ClientSettings, Scope};
use crate::credential::{Token, unix_now_ms};
use crate::keeper::{Keeper, TokenReader};

/// The longest `min_ttl` that can make sense: WeChat tokens live at most 7200 s.
const MAX_MIN_TTL_SECS: u64 = 7200;

#[derive(Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    expires_in: u64,
    expires_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refreshed: Option<bool>,
}

/// WeChat's own token answer (the facade): `{"access_token","expires_in"}`, and for
/// WeCom with `errcode` 0 and `errmsg` "ok" first, as WeCom writes it.
#[derive(Serialize)]
struct WechatTokenBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    errcode: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errmsg: Option<&'static str>,
    access_token: &'a str,
    expires_in: u64,
}

/// Which JSON a token is rendered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `/v1/...`: `{"access_token","expires_in","expires_at"}`.
    V1,
    /// `/cgi-bin/token`, `/cgi-bin/stable_token`: `{"access_token","expires_in"}`.
    Wechat,
    /// WeCom `/cgi-bin/gettoken`: `{"errcode":0,"errmsg":"ok","access_token","expires_in"}`.
    Wecom,
}

/// Seconds left of `token` as said during wall-clock second `second`: counted from the
/// end of that second, so never more than what is really left.
fn seconds_left(token: &Token, second: u64) -> u64 {
    token.expires_at_ms.saturating_sub((second + 1) * 1000) / 1000
}

/// The body of `token` in `shape` as of wall-clock second `second`.
pub fn render_as(token: &Token, second: u64, shape: Shape) -> Bytes {
    let body = match shape {
        Shape::V1 => return render(token, second, None),
        Shape::Wechat => WechatTokenBody {
            errcode: None,
            errmsg: None,
            access_token: &token.value,
            expires_in: seconds_left(token, second),
        },
        Shape::Wecom => WechatTokenBody {
            errcode: Some(0),
            errmsg: Some("ok"),
            access_token: &token.value,
            expires_in: seconds_left(token, second),
        },
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The JSON body for `token` as of wall-clock second `second`. `expires_in` counts from
/// the end of that second, so it is never more than what is really left.
pub(super) fn render(token: &Token, second: u64, refreshed: Option<bool>) -> Bytes {
    let body = TokenBody {
        access_token: &token.value,
        expires_in: seconds_left(token, second),
        expires_at: token.expires_at_ms / 1000,
        refreshed,
    };
    // Serializing plain strings and numbers cannot fail.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// A token-bearing JSON response: never cached by anyone in between.
pub fn json_no_store(body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A body rendered for one token in one second.
struct Rendered {
    shape: Shape,
    generation: u64,
    expires_at_ms: u64,
    second: u64,
    body: Bytes,
}

/// Per app, a handle on its token and the last rendered body: requests in the same
/// second for the same token share the body instead of serializing again.
pub struct RenderCache {
    /// Rebuilt when apps are added or removed ([`RenderCache::sync`]).
    by_app: ArcSwap<HashMap<String, Arc<Entry>>>,
}

pub struct Entry {
    pub reader: TokenReader,
    /// One slot per [`Shape`], so clients of both route families do not evict each
    /// other's body.
    rendered: [ArcSwapOption<Rendered>; 3],
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RenderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderCache")
            .field("apps", &self.by_app.load().len())
            .finish()
    }
}

impl RenderCache {
    pub fn new(keeper: &Keeper) -> Self {
        let cache = Self {
            by_app: ArcSwap::default(),
        };
        cache.sync(keeper);
        cache
    }

    /// Follows the keeper's apps: entries of removed apps go (their routes answer 404
    /// at once), new apps get one, and an app replaced by a new one of the same id gets
    /// a fresh entry.
    pub fn sync(&self, keeper: &Keeper) {
        let current = self.by_app.load();
        let by_app = keeper
            .app_ids()
            .into_iter()
            .filter_map(|app| {
                let reader = keeper.reader(&app)?;
                if let Some(entry) = current.get(&app).filter(|e| e.reader.same_slot(&reader)) {
                    return Some((app, entry.clone()));
                }
                let entry = Entry {
                    reader,
                    rendered: Default::default(),
                };
                Some((app, Arc::new(entry)))
            })
            .collect();
        self.by_app.store(Arc::new(by_app));
    }

    /// The entry of `app`, if it exists.
    pub fn get(&self, app: &str) -> Option<Arc<Entry>> {
        self.by_app.load().get(app).cloned()
    }
}

impl Entry {
    /// The cached body of `token` in `shape` for wall-clock second `second`.
    pub fn body(&self, token: &Token, second: u64, shape: Shape) -> Bytes {
        body_of(&self.rendered[shape as usize], token, second, shape)
    }
}

/// The cached body of `token` for wall-clock second `second`, rendering it if stale.
fn body_of(slot: &ArcSwapOption<Rendered>, token: &Token, second: u64, shape: Shape) -> Bytes {
    if let Some(cached) = slot.load().as_deref() {
        if cached.shape == shape
            && cached.generation == token.generation
            && cached.expires_at_ms == token.expires_at_ms
            && cached.second == second
        {
            return cached.body.clone();
        }
    }
    let body = render_as(token, second, shape);
    slot.store(Some(Arc::new(Rendered {
        shape,
        generation: token.generation,
        expires_at_ms: token.expires_at_ms,
        second,
        body: body.clone(),
    })));
    body
}

/// The `{app}` of `/v1/apps/{app}/access_token`. The router matched the path already;
/// app ids are plain ASCII, so no percent-decoding is needed (an encoded one simply
/// matches no app).
fn app_of(path: &str) -> &str {
    path.strip_prefix("/v1/apps/")
        .and_then(|rest| rest.strip_suffix("/access_token"))
        .unwrap_or("")
}

/// `min_ttl` from a raw query string (whole seconds, at most 7200); other parameters are
/// ignored, and `min_ttl` given twice is refused.
pub fn min_ttl(query: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let Some(raw) = super::query_param(query, "min_ttl")? else {
        return Ok(None);
    };
    let secs: u64 = raw.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "min_ttl must be a whole number of seconds, got `{}`",
            super::error::echo(&raw)
        ))
    })?;
    if secs > MAX_MIN_TTL_SECS {
        return Err(ApiError::BadRequest(format!(
            "min_ttl must be at most {MAX_MIN_TTL_SECS} seconds, got {secs}"
        )));
    }
    Ok(Some(Duration::from_secs(secs)))
}

/// The answer to `GET /v1/apps/{app}/access_token`: ready at once (nearly always), or
/// the wait for a refresh.
pub(super) enum Answer {
    Now(Response),
    Wait(Pin<Box<dyn Future<Output = Response> + Send>>),
}

/// `GET /v1/apps/{app}/access_token[?min_ttl=S]` as a route.
pub async fn access_token(State(state): State<AppState>, request: Request) -> Response {
    match answer(&state, request.headers(), request.uri()).1 {
        Answer::Now(response) => response,
        Answer::Wait(wait) => wait.await,
    }
}

/// `GET /v1/apps/{app}/access_token[?min_ttl=S]`, for the route and for the lane that
/// serves it before the router ([`super::hot`]): the client the key named, if any, and
/// the answer.
pub(super) fn answer(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
) -> (Option<Arc<ClientSettings>>, Answer) {
    match authenticate(headers, state) {
        Ok(client) => {
            let answer = match answer_client(state, &client, uri) {
                Ok(answer) => answer,
                Err(e) => Answer::Now(e.into_response()),
            };
            (Some(client), answer)
        }
        Err(e) => (None, Answer::Now(e.into_response())),
    }
}

fn answer_client(state: &AppState, client: &ClientSettings, uri: &Uri) -> Result<Answer, ApiError> {
    let app = app_of(uri.path());
    // The render cache has an entry for every app: one lookup says the app exists and
    // leads to its token.
    let apps = state.rendered.by_app.load();
    let Some(entry) = apps.get(app) else {
        return Err(ApiError::AppNotFound(app.to_owned()));
    };
    permit(client, app, Scope::Read)?;
    let min_ttl = min_ttl(uri.query())?;
    // The hot path: one clock read, a memory read with no reference counted, and a body
    // rendered once a second.
    let now_ms = unix_now_ms();
    let served = entry
        .reader
        .read(min_ttl.unwrap_or_default(), now_ms, |token| {
            entry.body(token, now_ms / 1000, Shape::V1)
        });
    if let Some(body) = served {
        return Ok(Answer::Now(json_no_store(body)));
    }
    // The slow path waits for a refresh, holding the entry rather than the map's guard;
    // its state is allocated only when it runs.
    let wait = wait_for_token(state.clone(), entry.clone(), app.to_owned(), min_ttl);
    Ok(Answer::Wait(Box::pin(async move {
        wait.await.unwrap_or_else(IntoResponse::into_response)
    })))
}

/// The access token of `app` once the keeper has one with `min_ttl` left.
async fn wait_for_token(
    state: AppState,
    entry: Arc<Entry>,
    app: String,
    min_ttl: Option<Duration>,
) -> Result<Response, ApiError> {
    let token = state.keeper.access_token(&app, min_ttl).await?;
    let second = unix_now_ms() / 1000;
    Ok(json_no_store(entry.body(&token, second, Shape::V1)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateBody {
    access_token: String,
}

/// The token an `invalidate` body reports dead (`{"access_token": "..."}`, not empty).
pub(super) fn reported_token(body: Result<Bytes, BytesRejection>) -> Result<String, ApiError> {
    let InvalidateBody { access_token } = parse_json(body)?;
    if access_token.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "field `access_token` must be the token WeChat rejected, not empty".into(),
        ));
    }
    Ok(access_token)
}

/// `POST /v1/apps/{app}/access_token/invalidate` `{"access_token": "<the one that failed>"}`
pub async fn invalidate(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.authorize(&state, &app, Scope::Invalidate)?;
    let access_token = reported_token(body)?;
    let outcome = state.keeper.invalidate(&app, &access_token).await;
    (state.admin).audit_invalidation(&caller.0.name, "token.invalidate", &app, &outcome);
    let (token, refreshed) = outcome?;
    let second = unix_now_ms() / 1000;
    Ok(json_no_store(render(&token, second, Some(refreshed))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_ttl_is_read_from_the_raw_query() {
        assert_eq!(min_ttl(None).ok(), Some(None));
        assert_eq!(min_ttl(Some("a=1")).ok(), Some(None));
        assert_eq!(
            min_ttl(Some("a=1&min_ttl=30")).ok(),
            Some(Some(Duration::from_secs(30)))
        );
        assert!(min_ttl(Some("min_ttl=abc")).is_err());
        assert!(min_ttl(Some("min_ttl=7201")).is_err());
        assert!(min_ttl(Some("min_ttl=1&min_ttl=abc")).is_err());
        assert!(min_ttl(Some("min_ttl=1&min_ttl=1")).is_err());
    }

    #[test]
    fn the_app_comes_from_the_matched_path() {
        assert_eq!(app_of("/v1/apps/shop/access_token"), "shop");
        assert_eq!(app_of("/elsewhere"), "");
    }

    #[test]
    fn expires_in_never_overstates_what_is_left() {
        let token = Token {
            value: "T".into(),
            expires_at_ms: 10_500,
            fetched_at_ms: 0,
            lifetime_secs: 10,
            generation: 1,
        };
        // At any moment of second 2 (2.000-2.999 s), 7.5-8.5 s are left: say 7.
        let body: serde_json::Value =
            serde_json::from_slice(&render(&token, 2, None)).expect("json");
        assert_eq!(body["expires_in"], 7);
        assert_eq!(body["expires_at"], 10);
    }
}
