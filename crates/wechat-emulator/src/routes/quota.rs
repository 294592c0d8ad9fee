//! WeChat's quota APIs: `POST /cgi-bin/openapi/quota/get?access_token=T`
//! `{"cgi_path"}`, `POST /cgi-bin/clear_quota?access_token=T` `{"appid"}` and
//! `POST /cgi-bin/clear_quota/v2` with `appid` and `appsecret`.
//!
//! Owns request parsing and the answers' shapes; the bookkeeping is in the state's
//! `quota` module. Like every other API they wait out the API latency first.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::time::Instant;

use super::api_delay;
use super::apis::json_object;
use crate::Emulator;
use crate::failure::WxError;
use crate::state::{ClearAuth, wechat_day};

/// `POST /cgi-bin/openapi/quota/get?access_token=T` `{"cgi_path":"/cgi-bin/token"}`
/// -> `{"errcode":0,"errmsg":"ok","quota":{"daily_limit","used","remain"}}`.
pub(crate) async fn get(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    api_delay(&emulator).await;
    let Some(parsed) = json_object(&body) else {
        return WxError::DATA_FORMAT.into_response();
    };
    let cgi_path = parsed.get("cgi_path").and_then(Value::as_str);
    let answer = emulator.lock().quota_get(
        emulator.config(),
        params.get("access_token").map(String::as_str),
        cgi_path,
        Instant::now(),
        wechat_day(SystemTime::now()),
    );
    match answer {
        Ok(quota) => Json(serde_json::json!({
            "errcode": 0,
            "errmsg": "ok",
            "quota": {
                "daily_limit": quota.daily_limit,
                "used": quota.used,
                "remain": quota.remain,
            },
        }))
        .into_response(),
        Err(err) => err.into_response(),
    }
}

/// `POST /cgi-bin/clear_quota?access_token=T` `{"appid"}`.
pub(crate) async fn clear(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    api_delay(&emulator).await;
    let Some(parsed) = json_object(&body) else {
        return WxError::DATA_FORMAT.into_response();
    };
    let auth = ClearAuth::Token {
        token: params.get("access_token").map(String::as_str),
        appid: parsed.get("appid").and_then(Value::as_str),
    };
    answer_clear(&emulator, &auth)
}

/// `POST /cgi-bin/clear_quota/v2?appid=A&appsecret=S`, or with `{"appid","appsecret"}`
/// as the body: the docs disagree, so both are taken (the query wins).
pub(crate) async fn clear_v2(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    api_delay(&emulator).await;
    let parsed = json_object(&body).unwrap_or_default();
    let field = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .or_else(|| parsed.get(name).and_then(Value::as_str))
    };
    let auth = ClearAuth::Secret {
        appid: field("appid"),
        secret: field("appsecret"),
    };
    answer_clear(&emulator, &auth)
}

fn answer_clear(emulator: &Emulator, auth: &ClearAuth<'_>) -> Response {
    let result = emulator.lock().clear_quota(
        emulator.config(),
        auth,
        Instant::now(),
        wechat_day(SystemTime::now()),
    );
    match result {
        Ok(()) => Json(serde_json::json!({"errcode": 0, "errmsg": "ok"})).into_response(),
        Err(err) => err.into_response(),
    }
}
