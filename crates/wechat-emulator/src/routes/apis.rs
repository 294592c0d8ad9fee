//! A few more ordinary APIs with their real shapes, each checking its token like
//! `ordinary`: `GET /cgi-bin/user/info` (official), `POST /wxa/getwxacodeunlimit`
//! (answers image bytes, not JSON, on success), `POST /datacube/getusersummary`, and
//! WeCom's `GET /cgi-bin/user/get`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::ordinary::authorize;
use crate::Emulator;
use crate::failure::WxError;

/// A tiny JPEG (the start and end markers around a few bytes): what a QR code answer
/// looks like to a client that only passes it on.
const FAKE_JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0xFF, 0xD9,
];

/// `GET /cgi-bin/user/info?access_token&openid&lang`
pub(crate) async fn user_info(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Err(err) = authorize(&emulator, &params).await {
        return err.into_response();
    }
    match params.get("openid").filter(|o| !o.is_empty()) {
        Some(openid) => Json(serde_json::json!({
            "subscribe": 1,
            "openid": openid,
            "language": params.get("lang").map_or("zh_CN", String::as_str),
            "subscribe_time": 1_700_000_000,
            "remark": "",
            "groupid": 0,
            "tagid_list": [],
            "subscribe_scene": "ADD_SCENE_QR_CODE",
        }))
        .into_response(),
        None => WxError::OPENID_INVALID.into_response(),
    }
}

/// `POST /wxa/getwxacodeunlimit?access_token` `{"scene", "page"?, "width"?}`: the image.
pub(crate) async fn wxacode_unlimit(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Err(err) = authorize(&emulator, &params).await {
        return err.into_response();
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let Some(parsed) = parsed.filter(serde_json::Value::is_object) else {
        return WxError::DATA_FORMAT.into_response();
    };
    if parsed
        .get("scene")
        .and_then(serde_json::Value::as_str)
        .is_none()
    {
        return WxError::INVALID_ARGS.into_response();
    }
    ([(CONTENT_TYPE, "image/jpeg")], FAKE_JPEG).into_response()
}

/// `POST /datacube/getusersummary?access_token` `{"begin_date","end_date"}`
pub(crate) async fn user_summary(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Err(err) = authorize(&emulator, &params).await {
        return err.into_response();
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let date = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    match (date("begin_date"), date("end_date")) {
        (Some(begin), Some(_)) => Json(serde_json::json!({
            "list": [{"ref_date": begin, "user_source": 0, "new_user": 0, "cancel_user": 0}]
        }))
        .into_response(),
        _ => WxError::DATA_FORMAT.into_response(),
    }
}

/// WeCom `GET /cgi-bin/user/get?access_token&userid`
pub(crate) async fn wecom_user(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Err(err) = authorize(&emulator, &params).await {
        return err.into_response();
    }
    match params.get("userid").filter(|u| !u.is_empty()) {
        Some(userid) => Json(serde_json::json!({
            "errcode": 0,
            "errmsg": "ok",
            "userid": userid,
            "name": userid,
            "department": [1],
            "status": 1,
        }))
        .into_response(),
        None => WxError::INVALID_ARGS.into_response(),
    }
}
