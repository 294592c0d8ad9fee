//! HTTP surface: WeChat's paths plus the emulator's own `/_emulator/*` controls.
//!
//! Owns the router, the small admin/fallback handlers, [`deliver`], which times every
//! token and ticket answer, and [`api_delay`], which times every other API's; the
//! token endpoints live in `token`, the ticket endpoints in `tickets`, the ordinary
//! APIs in `ordinary` and `apis`, the quota APIs in `quota`, the login calls in `login`, uploads in `media`, the
//! third-party platform APIs and their `/_emulator/*` hooks in `component`.

mod apis;
mod component;
mod datacube;
mod login;
mod media;
mod ordinary;
mod quota;
mod tickets;
mod token;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::failure::failure_response;
use crate::state::{Answer, Call};
use crate::{Emulator, Stats};

/// All routes with `emulator` attached as state. Official and WeCom paths share
/// one router: they do not overlap, so one emulator stands in for both hosts.
pub(crate) fn router(emulator: Emulator) -> Router {
    Router::new()
        .route("/cgi-bin/token", get(token::classic))
        .route("/cgi-bin/stable_token", post(token::stable))
        .route("/cgi-bin/gettoken", get(token::wecom))
        .route("/cgi-bin/ticket/getticket", get(tickets::official))
        .route("/cgi-bin/get_jsapi_ticket", get(tickets::corp))
        .route("/cgi-bin/ticket/get", get(tickets::agent))
        .route(
            "/cgi-bin/get_api_domain_ip",
            get(ordinary::get_api_domain_ip),
        )
        .route("/cgi-bin/message/custom/send", post(ordinary::custom_send))
        .route("/cgi-bin/user/info", get(apis::user_info))
        .route("/cgi-bin/user/get", get(apis::wecom_user))
        .route("/wxa/getwxacodeunlimit", post(apis::wxacode_unlimit))
        .route("/datacube/getusersummary", post(apis::user_summary))
        .route(
            "/cgi-bin/media/upload",
            post(media::upload).layer(DefaultBodyLimit::max(media::MAX_UPLOAD_BODY)),
        )
        .route("/cgi-bin/openapi/quota/get", post(quota::get))
        .route("/cgi-bin/clear_quota", post(quota::clear))
        .route("/cgi-bin/clear_quota/v2", post(quota::clear_v2))
        .route("/sns/jscode2session", get(login::jscode2session))
        .route("/sns/oauth2/access_token", get(login::oauth2_access_token))
        .route(
            "/cgi-bin/component/api_component_token",
            post(component::component_token),
        )
        .route(
            "/cgi-bin/component/api_create_preauthcode",
            post(component::create_preauthcode),
        )
        .route(
            "/cgi-bin/component/api_query_auth",
            post(component::query_auth),
        )
        .route(
            "/cgi-bin/component/api_authorizer_token",
            post(component::authorizer_token),
        )
        .route(
            "/cgi-bin/component/api_get_authorizer_list",
            post(component::authorizer_list),
        )
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/reset_quota", post(reset_quota))
        .route("/_emulator/fail_rate", post(fail_rate))
        .route("/_emulator/check", post(check))
        .route("/_emulator/authorize", post(component::authorize))
        .route("/_emulator/unauthorize", post(component::unauthorize))
        .route(
            "/_emulator/lose_authorizer_token",
            post(component::lose_authorizer_token),
        )
        .route("/_emulator/verify_ticket", post(component::verify_ticket))
        .route(
            "/_emulator/push_verify_ticket",
            post(component::push_verify_ticket),
        )
        .fallback(not_found)
        .with_state(emulator)
}

/// Runs one call under the lock, then waits out the configured latency (plus the
/// hang time for an injected timeout) and renders the answer; `grant` renders a
/// success. The call is processed before the wait, as WeChat processes a call
/// whose answer the client may never see.
async fn deliver<T>(
    emulator: &Emulator,
    process: impl FnOnce(&mut crate::state::State) -> Call<T>,
    grant: impl FnOnce(T) -> Response,
) -> Response {
    // The guard must be gone before any await: the block scopes it.
    let (call, latency) = {
        let mut state = emulator.lock();
        let call = process(&mut state);
        (call, state.knobs.latency)
    };
    let delay = if call.hang {
        latency + emulator.config().hang
    } else {
        latency
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match call.answer {
        Answer::Grant(value) => grant(value),
        Answer::Error(err) => err.into_response(),
        Answer::Injected(kind) => failure_response(kind),
    }
}

/// Waits out the configured API latency (WeChat's round trip as a gateway benchmark
/// sees it) before an ordinary API, login call or upload is answered; instant at zero.
async fn api_delay(emulator: &Emulator) {
    let latency = emulator.lock().knobs.api_latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

async fn stats(State(emulator): State<Emulator>) -> Json<Stats> {
    Json(emulator.stats())
}

async fn reset_quota(State(emulator): State<Emulator>) -> impl IntoResponse {
    emulator.reset_quota();
    Json(serde_json::json!({"errcode": 0, "errmsg": "ok"}))
}

/// `POST /_emulator/fail_rate` `{"fail_rate": 0.3}`: changes the share of token- and
/// ticket-endpoint calls that fail from now on (clamped to 0..=1), so that a long run
/// can switch failures on and off; 400 without a number.
async fn fail_rate(State(emulator): State<Emulator>, body: axum::body::Bytes) -> Response {
    let rate = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("fail_rate").and_then(serde_json::Value::as_f64));
    match rate {
        Some(rate) if rate.is_finite() => {
            emulator.set_fail_rate(rate);
            Json(serde_json::json!({"errcode": 0, "errmsg": "ok"})).into_response()
        }
        _ => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"errcode": 40097, "errmsg": "a JSON object with a numeric fail_rate"})),
        )
            .into_response(),
    }
}

/// `POST /_emulator/check` `{"access_token": T}` or `{"ticket": T}` ->
/// `{"state": "valid" | "expired" | "invalid"}`: what WeChat would say of a value right
/// now, counting nothing (unlike an ordinary API call, which counts as one); 400 without
/// either field.
async fn check(State(emulator): State<Emulator>, body: axum::body::Bytes) -> Response {
    let body = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
    let field = |name: &str| body.get(name).and_then(serde_json::Value::as_str);
    let state = match (field("access_token"), field("ticket")) {
        (Some(token), _) => emulator.check_token(token),
        (None, Some(ticket)) => emulator.check_ticket(ticket),
        (None, None) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"errcode": 40097, "errmsg": "a JSON object with access_token or ticket"})),
            )
                .into_response();
        }
    };
    let state = match state {
        crate::TokenCheck::Valid => "valid",
        crate::TokenCheck::Expired => "expired",
        crate::TokenCheck::Invalid => "invalid",
    };
    Json(serde_json::json!({"state": state})).into_response()
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"errcode": -1, "errmsg": "not found"})),
    )
}
