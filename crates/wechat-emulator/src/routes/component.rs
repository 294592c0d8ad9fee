//! The third-party platform ("component") APIs, all `POST` with a JSON body:
//! `/cgi-bin/component/api_component_token`, and, with the component token in the query
//! string (`component_access_token`, or `access_token` as the newer docs write it),
//! `api_create_preauthcode`, `api_query_auth`, `api_authorizer_token` and
//! `api_get_authorizer_list`. All go through `deliver` (token-endpoint latency);
//! `api_component_token` and `api_authorizer_token` also meet injected failures.
//!
//! Also owns the hooks that stand in for the merchant and for WeChat's pushes:
//! `POST /_emulator/authorize`, `/_emulator/unauthorize`, `/_emulator/verify_ticket`,
//! `/_emulator/push_verify_ticket`, and `/_emulator/lose_authorizer_token` for a
//! refresh that WeChat completed but whose answer was lost.
//!
//! Like WeChat, a body that is not a JSON object answers 47001 whatever the
//! Content-Type; successes carry no errcode, as in the official examples.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::apis::json_object;
use super::deliver;
use crate::Emulator;
use crate::state::{ComponentAuth, ComponentTokenRequest};

/// A request body: a JSON object, or `None` if it is not one.
type Body = Option<Map<String, Value>>;

/// `POST /cgi-bin/component/api_component_token`
/// `{"component_appid","component_appsecret","component_verify_ticket"}` ->
/// `{"component_access_token","expires_in"}`.
pub(crate) async fn component_token(State(emulator): State<Emulator>, body: Bytes) -> Response {
    let body = json_object(&body);
    let req = ComponentTokenRequest {
        malformed: body.is_none(),
        component_appid: text(&body, "component_appid"),
        component_appsecret: text(&body, "component_appsecret"),
        component_verify_ticket: text(&body, "component_verify_ticket"),
    };
    let config = emulator.config();
    deliver(
        &emulator,
        |state| state.component_token_call(config, &req, Instant::now()),
        |grant| {
            Json(json!({
                "component_access_token": grant.access_token,
                "expires_in": grant.expires_in,
            }))
            .into_response()
        },
    )
    .await
}

/// `POST /cgi-bin/component/api_create_preauthcode?component_access_token=T`
/// `{"component_appid"}` -> `{"pre_auth_code","expires_in"}`.
pub(crate) async fn create_preauthcode(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let body = json_object(&body);
    let auth = auth(&params, &body);
    deliver(
        &emulator,
        |state| state.preauthcode_call(&auth, Instant::now()),
        |code| {
            Json(json!({
                "pre_auth_code": code.pre_auth_code,
                "expires_in": code.expires_in,
            }))
            .into_response()
        },
    )
    .await
}

/// `POST /cgi-bin/component/api_query_auth?component_access_token=T`
/// `{"component_appid","authorization_code"}` -> `{"authorization_info":{...}}`.
pub(crate) async fn query_auth(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let body = json_object(&body);
    let auth = auth(&params, &body);
    let code = text(&body, "authorization_code");
    let config = emulator.config();
    deliver(
        &emulator,
        |state| state.query_auth_call(config, &auth, code, Instant::now()),
        |info| {
            let func_info: Vec<Value> = info
                .func_info
                .iter()
                .map(|id| json!({"funcscope_category": {"id": id}}))
                .collect();
            Json(json!({
                "authorization_info": {
                    "authorizer_appid": info.authorizer_appid,
                    "authorizer_access_token": info.grant.access_token,
                    "expires_in": info.grant.expires_in,
                    "authorizer_refresh_token": info.refresh_token,
                    "func_info": func_info,
                }
            }))
            .into_response()
        },
    )
    .await
}

/// `POST /cgi-bin/component/api_authorizer_token?component_access_token=T`
/// `{"component_appid","authorizer_appid","authorizer_refresh_token"}` ->
/// `{"authorizer_access_token","expires_in","authorizer_refresh_token"}`.
pub(crate) async fn authorizer_token(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let body = json_object(&body);
    let auth = auth(&params, &body);
    let (authorizer, refresh) = (
        text(&body, "authorizer_appid"),
        text(&body, "authorizer_refresh_token"),
    );
    let config = emulator.config();
    deliver(
        &emulator,
        |state| state.authorizer_token_call(config, &auth, authorizer, refresh, Instant::now()),
        |grant| {
            Json(json!({
                "authorizer_access_token": grant.grant.access_token,
                "expires_in": grant.grant.expires_in,
                "authorizer_refresh_token": grant.refresh_token,
            }))
            .into_response()
        },
    )
    .await
}

/// `POST /cgi-bin/component/api_get_authorizer_list?component_access_token=T`
/// `{"component_appid","offset","count"}` -> `{"total_count","list":[{"authorizer_appid",
/// "refresh_token","auth_time"}]}`, in authorization order.
pub(crate) async fn authorizer_list(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let body = json_object(&body);
    let auth = auth(&params, &body);
    let (offset, count) = (uint(&body, "offset"), uint(&body, "count"));
    deliver(
        &emulator,
        |state| state.authorizer_list_call(&auth, offset, count, Instant::now()),
        |page| {
            let list: Vec<Value> = page
                .list
                .into_iter()
                .map(|entry| {
                    json!({
                        "authorizer_appid": entry.authorizer_appid,
                        "refresh_token": entry.refresh_token,
                        "auth_time": entry.auth_time,
                    })
                })
                .collect();
            Json(json!({"total_count": page.total_count, "list": list})).into_response()
        },
    )
    .await
}

/// `POST /_emulator/authorize` `{"component_appid","authorizer_appid","func_info"?: [ids],
/// "pre_auth_code"?}` -> `{"errcode":0,"errmsg":"ok","authorization_code","expires_in"}`:
/// see [`Emulator::authorize`]. 404 for an unknown platform, 400 for a bad body.
pub(crate) async fn authorize(State(emulator): State<Emulator>, body: Bytes) -> Response {
    let body = json_object(&body);
    let (Some(component), Some(authorizer)) = (
        nonempty(&body, "component_appid"),
        nonempty(&body, "authorizer_appid"),
    ) else {
        return bad_request("a JSON object with component_appid and authorizer_appid");
    };
    let func_info = match body.as_ref().and_then(|b| b.get("func_info")) {
        None | Some(Value::Null) => None,
        Some(Value::Array(ids)) => {
            let parsed: Option<Vec<u32>> = ids
                .iter()
                .map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok()))
                .collect();
            match parsed {
                Some(ids) => Some(ids),
                None => return bad_request("func_info as an array of permission set ids"),
            }
        }
        Some(_) => return bad_request("func_info as an array of permission set ids"),
    };
    let pre_auth_code = nonempty(&body, "pre_auth_code");
    match emulator.authorize_account(component, authorizer, func_info.as_deref(), pre_auth_code) {
        Some(outcome) => Json(json!({
            "errcode": 0,
            "errmsg": "ok",
            "authorization_code": outcome.authorization_code,
            "expires_in": outcome.expires_in,
        }))
        .into_response(),
        None => unknown_component(component),
    }
}

/// `POST /_emulator/unauthorize` `{"component_appid","authorizer_appid"}`: see
/// [`Emulator::unauthorize`]. 404 if the platform is unknown or the account was not
/// authorized.
pub(crate) async fn unauthorize(State(emulator): State<Emulator>, body: Bytes) -> Response {
    let body = json_object(&body);
    let (Some(component), Some(authorizer)) = (
        nonempty(&body, "component_appid"),
        nonempty(&body, "authorizer_appid"),
    ) else {
        return bad_request("a JSON object with component_appid and authorizer_appid");
    };
    if emulator.config().component(component).is_none() {
        return unknown_component(component);
    }
    if emulator.unauthorize(component, authorizer) {
        ok(json!({}))
    } else {
        admin_error(
            StatusCode::NOT_FOUND,
            61003,
            format!("{authorizer} is not authorized to {component}"),
        )
    }
}

/// `POST /_emulator/lose_authorizer_token` `{"component_appid","authorizer_appid"}`:
/// see [`Emulator::lose_authorizer_token`]. 404 if the platform is unknown or the
/// account is not authorized. The new refresh token is not answered (it is the one a
/// client would have lost).
pub(crate) async fn lose_authorizer_token(
    State(emulator): State<Emulator>,
    body: Bytes,
) -> Response {
    let body = json_object(&body);
    let (Some(component), Some(authorizer)) = (
        nonempty(&body, "component_appid"),
        nonempty(&body, "authorizer_appid"),
    ) else {
        return bad_request("a JSON object with component_appid and authorizer_appid");
    };
    if emulator.config().component(component).is_none() {
        return unknown_component(component);
    }
    match emulator.lose_authorizer_token(component, authorizer) {
        Some(_) => ok(json!({})),
        None => admin_error(
            StatusCode::NOT_FOUND,
            61003,
            format!("{authorizer} is not authorized to {component}"),
        ),
    }
}

/// `POST /_emulator/verify_ticket` `{"component_appid"}` ->
/// `{"errcode":0,"errmsg":"ok","component_verify_ticket"}`: mints the latest ticket
/// without pushing it ([`Emulator::verify_ticket`]).
pub(crate) async fn verify_ticket(State(emulator): State<Emulator>, body: Bytes) -> Response {
    let body = json_object(&body);
    let Some(component) = nonempty(&body, "component_appid") else {
        return bad_request("a JSON object with component_appid");
    };
    match emulator.verify_ticket(component) {
        Some(ticket) => ok(json!({"component_verify_ticket": ticket})),
        None => unknown_component(component),
    }
}

/// `POST /_emulator/push_verify_ticket` `{"component_appid"}`: mints a ticket and pushes
/// it ([`Emulator::push_verify_ticket`]). 200 with `component_verify_ticket` once the
/// callback answered `success`; 502 with the reason (and the ticket, which is the latest
/// all the same) if it did not; 404 for an unknown platform, 400 for one without a
/// callback URL.
pub(crate) async fn push_verify_ticket(State(emulator): State<Emulator>, body: Bytes) -> Response {
    let body = json_object(&body);
    let Some(component) = nonempty(&body, "component_appid") else {
        return bad_request("a JSON object with component_appid");
    };
    match emulator.config().component(component) {
        None => return unknown_component(component),
        Some(c) if c.callback_url.is_none() => {
            return admin_error(
                StatusCode::BAD_REQUEST,
                -1,
                format!("component {component} has no callback_url to push to"),
            );
        }
        Some(_) => {}
    }
    match emulator.push_verify_ticket(component).await {
        Ok(ticket) => ok(json!({"component_verify_ticket": ticket})),
        Err(reason) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({
                "errcode": -1,
                "errmsg": format!("the push failed: {reason}"),
                "component_verify_ticket": emulator.current_verify_ticket(component),
            })),
        )
            .into_response(),
    }
}

/// The token and platform of a token-carrying component call.
fn auth<'a>(params: &'a HashMap<String, String>, body: &'a Body) -> ComponentAuth<'a> {
    let token = ["component_access_token", "access_token"]
        .into_iter()
        .filter_map(|name| params.get(name))
        .find(|t| !t.is_empty())
        .map(String::as_str);
    ComponentAuth {
        token,
        malformed: body.is_none(),
        component_appid: text(body, "component_appid"),
    }
}

/// A string field of the body.
fn text<'a>(body: &'a Body, name: &str) -> Option<&'a str> {
    body.as_ref()?.get(name)?.as_str()
}

/// A non-empty string field of the body.
fn nonempty<'a>(body: &'a Body, name: &str) -> Option<&'a str> {
    text(body, name).filter(|s| !s.is_empty())
}

/// A non-negative integer field of the body, as a number or a string of digits.
fn uint(body: &Body, name: &str) -> Option<u64> {
    match body.as_ref()?.get(name)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A hook's success: `{"errcode":0,"errmsg":"ok"}` plus `fields`.
fn ok(fields: Value) -> Response {
    let mut body = json!({"errcode": 0, "errmsg": "ok"});
    if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.extend(fields);
    }
    Json(body).into_response()
}

/// A hook's refusal: an HTTP error status with a WeChat-shaped body.
fn admin_error(status: StatusCode, errcode: i64, errmsg: String) -> Response {
    (status, Json(json!({"errcode": errcode, "errmsg": errmsg}))).into_response()
}

fn bad_request(expected: &str) -> Response {
    admin_error(
        StatusCode::BAD_REQUEST,
        40097,
        format!("expected {expected}"),
    )
}

fn unknown_component(component: &str) -> Response {
    admin_error(
        StatusCode::NOT_FOUND,
        61011,
        format!("invalid component: {component} is not configured"),
    )
}
