//! The HTTP API (v1): routes mirror the URL tree, one file per resource. Routes talk only
//! to the keeper; auth runs first as an extractor.

pub mod access;
mod admin;
mod alerts;
mod apps;
pub mod auth;
pub mod deadline;
pub mod error;
pub mod facade;
mod gateway;
mod health;
pub mod hot;
mod jssdk;
mod platform;
mod tickets;
mod timeline;
mod tokens;
mod ui;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::routing::{any, get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::DeserializeOwned;

use crate::config::GatewaySettings;
use crate::gateway::Gateway;
use crate::keeper::Keeper;
use crate::store::Store;
use error::ApiError;

/// Request bodies above this are refused with 413: every body we accept is tiny.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The one state handle: a single `Arc`, so cloning it per request costs one increment.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

/// What every route may use.
pub struct Shared {
    pub keeper: Keeper,
    /// Runtime apps and clients (and every client key, looked up by digest).
    pub admin: crate::admin::Admin,
    /// For readiness only; routes never read or write it.
    pub store: Arc<dyn Store>,
    /// Renders /metrics.
    pub metrics: PrometheusHandle,
    /// Token bodies already rendered this second, per app.
    pub rendered: tokens::RenderCache,
    /// Forwards WeChat API calls for the apps' tokens.
    pub gateway: Gateway,
    pub gateway_settings: GatewaySettings,
    /// WeChat-shaped token endpoints: apps by appid/corpid, force_refresh spacing.
    pub facade: facade::Facade,
    /// How long a route that reads a body waits for all of it
    /// (`server.body_read_timeout_ms`).
    pub body_read_timeout: std::time::Duration,
}

impl AppState {
    /// Follows a change of the set of apps in the caches routes read.
    pub fn apps_changed(&self) {
        self.rendered.sync(&self.keeper);
        self.facade.sync(&self.keeper);
    }

    pub fn new(
        keeper: Keeper,
        admin: crate::admin::Admin,
        store: Arc<dyn Store>,
        metrics: PrometheusHandle,
        gateway: Gateway,
        gateway_settings: GatewaySettings,
        body_read_timeout: std::time::Duration,
    ) -> Self {
        let rendered = tokens::RenderCache::new(&keeper);
        let facade = facade::Facade::new(&keeper);
        Self(Arc::new(Shared {
            keeper,
            admin,
            store,
            metrics,
            rendered,
            gateway,
            gateway_settings,
            facade,
            body_read_timeout,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("keeper", &self.keeper)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

/// What the server serves: the router with the served token's lane in front of it.
pub fn service(state: AppState) -> hot::HotLane<Router> {
    hot::HotLane::new(state.clone(), router(state))
}

/// All routes with their state.
pub fn router(state: AppState) -> Router {
    // Only routes that read a body carry the limit and the body deadline; the hot GET
    // pays nothing for them.
    let deadline = deadline::BodyDeadlineLayer {
        timeout: state.body_read_timeout,
    };
    let limited = || (DefaultBodyLimit::max(MAX_BODY_BYTES), deadline);
    Router::new()
        .route("/v1/apps", get(apps::list))
        .route(
            "/v1/apps/{app}",
            get(apps::show)
                .put(admin::put_app)
                .delete(admin::delete_app)
                .layer(limited()),
        )
        .route(
            "/v1/clients",
            get(admin::list_clients)
                .post(admin::add_client)
                .layer(limited()),
        )
        .route(
            "/v1/clients/{name}",
            axum::routing::delete(admin::revoke_client),
        )
        .route("/v1/audit", get(admin::audit))
        .route("/v1/apps/{app}/quota/clear", post(apps::clear_quota))
        .route("/v1/alerts", get(alerts::list))
        .route("/v1/apps/{app}/access_token", get(tokens::access_token))
        .route(
            "/v1/apps/{app}/access_token/invalidate",
            post(tokens::invalidate).layer(limited()),
        )
        .route("/v1/apps/{app}/ticket/{ticket}", get(tickets::ticket))
        .route(
            "/v1/apps/{app}/ticket/{ticket}/invalidate",
            post(tickets::invalidate).layer(limited()),
        )
        .route(
            "/v1/apps/{app}/jssdk/config",
            post(jssdk::config).layer(limited()),
        )
        .route(
            "/v1/apps/{app}/jssdk/card_sign",
            post(jssdk::card_sign).layer(limited()),
        )
        .route("/v1/apps/{app}/proxy/{*path}", any(gateway::proxy))
        // Third-party platforms.
        .route(
            "/v1/apps/{app}/callback",
            post(platform::callback).layer((
                DefaultBodyLimit::max(platform::CALLBACK_BODY_LIMIT),
                deadline,
            )),
        )
        .route(
            "/v1/apps/{app}/authorizers",
            get(platform::list)
                .post(platform::authorize)
                .layer(limited()),
        )
        .route(
            "/v1/apps/{app}/authorizers/auth_url",
            post(platform::auth_url).layer(limited()),
        )
        .route("/v1/apps/{app}/authorizers/import", post(platform::import))
        .route(
            "/v1/apps/{app}/authorizers/{appid}/access_token",
            get(platform::access_token),
        )
        .route(
            "/v1/apps/{app}/authorizers/{appid}/access_token/invalidate",
            post(platform::invalidate).layer(limited()),
        )
        .route(
            "/v1/apps/{app}/authorizers/{appid}/ticket/{ticket}",
            get(platform::ticket),
        )
        .route(
            "/v1/apps/{app}/authorizers/{appid}/ticket/{ticket}/invalidate",
            post(platform::invalidate_ticket).layer(limited()),
        )
        .route(
            "/v1/apps/{app}/authorizers/{appid}/jssdk/config",
            post(platform::jssdk_config).layer(limited()),
        )
        // WeChat's own shapes, for SDKs that only change their host.
        .route("/cgi-bin/token", get(facade::token))
        .route(
            "/cgi-bin/stable_token",
            post(facade::stable_token).layer(limited()),
        )
        .route("/cgi-bin/gettoken", get(facade::gettoken))
        .route("/v1/apps/{app}/timeline", get(timeline::timeline))
        // The dashboard (its page calls the routes above with the signed-in key).
        .route("/ui", get(ui::index))
        .route("/ui/", get(ui::index))
        .route("/ui/app.js", get(ui::script))
        .route("/ui/style.css", get(ui::style))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        // WeChat's API prefixes go to the gateway; anything else is 404 there.
        .fallback(gateway::fallback)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Last, so that it wraps every route above and the fallback. A layer added here
        // is skipped by the token lane (`service`, hot.rs) for `GET
        // /v1/apps/{app}/access_token`: give the lane the same behaviour, or send that
        // route back through the router.
        .layer(access::AccessLayer)
        .with_state(state)
}

/// Parses a JSON body, naming the offending field on error. Content-Type is not
/// required (curl's `-d` sends a form type); the body must be a JSON object all the same
/// (serde would otherwise take `["x"]` for a struct of one field).
pub fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        body_rejection(rejection, || {
            ApiError::PayloadTooLarge(format!("the body must be at most {MAX_BODY_BYTES} bytes"))
        })
    })?;
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::BadRequest(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::BadRequest(format!(
                "invalid JSON body: field `{}`: {inner}",
                error::echo(&path)
            ))
        }
    })
}

/// Why a body could not be read: too large (`too_large`), too slow (408), or broken.
pub fn body_rejection(rejection: BytesRejection, too_large: impl FnOnce() -> ApiError) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large();
    }
    if deadline::timed_out(&rejection) {
        return deadline::error();
    }
    ApiError::BadRequest(format!("could not read the body: {rejection}"))
}

/// `Path` with its rejection in the JSON error shape (axum's own answers plain text,
/// e.g. for a `%FF` that does not decode to UTF-8).
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                use axum::extract::path::ErrorKind;
                Err(ApiError::BadRequest(match e.kind() {
                    ErrorKind::InvalidUtf8InPathParam { key } => format!(
                        "path segment `{{{}}}` is not valid UTF-8 once percent-decoded",
                        error::echo(key)
                    ),
                    _ => "a path segment could not be read".to_owned(),
                }))
            }
            Err(_) => Err(ApiError::NotFound),
        }
    }
}

/// The value of query parameter `name` (percent-decoded) in a raw query string; a
/// parameter given twice is refused rather than one of them silently chosen.
pub fn query_param<'q>(
    query: Option<&'q str>,
    name: &str,
) -> Result<Option<std::borrow::Cow<'q, str>>, ApiError> {
    let Some(query) = query else {
        return Ok(None);
    };
    let mut found = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == name {
            if found.is_some() {
                return Err(duplicate_param(name));
            }
            found = Some(value);
        }
    }
    Ok(found)
}

/// 400 for a query parameter given more than once.
pub fn duplicate_param(name: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "query parameter `{}` is given more than once",
        error::echo(name)
    ))
}
