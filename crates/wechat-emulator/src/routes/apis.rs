//! A few more ordinary APIs with their real shapes, each checking its token like
//! `ordinary` (and waiting out the API latency): `GET /cgi-bin/user/info` (official),
//! `POST /wxa/getwxacodeunlimit` (answers image bytes, not JSON, on success),
//! `POST /datacube/getusersummary`, and WeCom's `GET /cgi-bin/user/get`.
//!
//! As with login codes, an argument starting with `invalid` (an openid) or `unknown`
//! (a WeCom userid) is refused, so that tests can provoke those errors.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::datacube::{Date, USER_SUMMARY_MAX_DAYS};
use super::ordinary::authorize;
use crate::Emulator;
use crate::failure::WxError;

/// The longest `scene` getwxacodeunlimit takes.
const MAX_SCENE_CHARS: usize = 32;

/// What `getwxacodeunlimit` answers: a real, if tiny, JPEG, so that a client may
/// decode what it was passed.
static WXACODE_JPEG: LazyLock<Vec<u8>> = LazyLock::new(tiny_jpeg);

/// `GET /cgi-bin/user/info?access_token&openid&lang`: the fields WeChat still returns
/// since 2021 (no nickname or avatar).
pub(crate) async fn user_info(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Err(err) = authorize(&emulator, &params).await {
        return err.into_response();
    }
    match params.get("openid").filter(|o| !o.is_empty()) {
        None => WxError::OPENID_MISSING.into_response(),
        Some(openid) if openid.starts_with("invalid") => WxError::OPENID_INVALID.into_response(),
        Some(openid) => Json(serde_json::json!({
            "subscribe": 1,
            "openid": openid,
            "language": params.get("lang").map_or("zh_CN", String::as_str),
            "subscribe_time": 1_700_000_000,
            "remark": "",
            "groupid": 0,
            "tagid_list": [],
            "subscribe_scene": "ADD_SCENE_QR_CODE",
            "qr_scene": 0,
            "qr_scene_str": "",
        }))
        .into_response(),
    }
}

/// `POST /wxa/getwxacodeunlimit?access_token` `{"scene", "page"?, "width"?}`: the image
/// with `Content-Type: image/jpeg` (the SDKs tell an image from an error by it), or a
/// JSON error: 47001 for a body that is not a JSON object, 40097 without a string
/// `scene`, 40129 for a scene over 32 characters.
pub(crate) async fn wxacode_unlimit(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Err(err) = authorize(&emulator, &params).await {
        return err.into_response();
    }
    let Some(parsed) = json_object(&body) else {
        return WxError::DATA_FORMAT.into_response();
    };
    match parsed.get("scene").and_then(Value::as_str) {
        None => WxError::INVALID_ARGS.into_response(),
        Some(scene) if scene.chars().count() > MAX_SCENE_CHARS => {
            WxError::INVALID_SCENE.into_response()
        }
        Some(_) => ([(CONTENT_TYPE, "image/jpeg")], WXACODE_JPEG.as_slice()).into_response(),
    }
}

/// `POST /datacube/getusersummary?access_token` `{"begin_date","end_date"}`: one row of
/// zeros per day. 47001 for a body that is not a JSON object, 61500 for a missing or
/// malformed date, 61501 for an end before the begin or a span over 7 days.
pub(crate) async fn user_summary(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Err(err) = authorize(&emulator, &params).await {
        return err.into_response();
    }
    let Some(parsed) = json_object(&body) else {
        return WxError::DATA_FORMAT.into_response();
    };
    let date = |name: &str| {
        parsed
            .get(name)
            .and_then(Value::as_str)
            .and_then(Date::parse)
    };
    let (Some(begin), Some(end)) = (date("begin_date"), date("end_date")) else {
        return WxError::DATE_FORMAT.into_response();
    };
    match Date::span(begin, end, USER_SUMMARY_MAX_DAYS) {
        Some(days) => {
            let list: Vec<Value> = days
                .iter()
                .map(|day| {
                    serde_json::json!({
                        "ref_date": day.to_string(),
                        "user_source": 0,
                        "new_user": 0,
                        "cancel_user": 0,
                    })
                })
                .collect();
            Json(serde_json::json!({ "list": list })).into_response()
        }
        None => WxError::DATE_RANGE.into_response(),
    }
}

/// WeCom `GET /cgi-bin/user/get?access_token&userid`: a member as an app created after
/// 2022-06-20 sees it (no mobile, email, gender or avatar). 41009 without a userid,
/// 60111 for one starting with `unknown`. Like WeCom, errors keep the empty lists.
pub(crate) async fn wecom_user(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let empty_lists = || {
        serde_json::json!({
            "department": [],
            "order": [],
            "is_leader_in_dept": [],
            "direct_leader": [],
        })
    };
    if let Err(err) = authorize(&emulator, &params).await {
        return err.with_fields(empty_lists());
    }
    match params.get("userid").filter(|u| !u.is_empty()) {
        None => WxError::USERID_MISSING.with_fields(empty_lists()),
        Some(userid) if userid.starts_with("unknown") => {
            WxError::USERID_NOT_FOUND.with_fields(empty_lists())
        }
        Some(userid) => Json(serde_json::json!({
            "errcode": 0,
            "errmsg": "ok",
            "userid": userid,
            "name": userid,
            "department": [1],
            "order": [0],
            "position": "",
            "is_leader_in_dept": [0],
            "direct_leader": [],
            "status": 1,
            "main_department": 1,
        }))
        .into_response(),
    }
}

/// The body as a JSON object, whatever the Content-Type (WeChat ignores it).
pub(super) fn json_object(body: &[u8]) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// A baseline JPEG of one grey pixel: one quantization table, one DC and one AC
/// Huffman table of a single code each, and one byte of scan data (DC difference 0,
/// then end of block, padded with ones).
fn tiny_jpeg() -> Vec<u8> {
    fn segment(out: &mut Vec<u8>, marker: u8, payload: &[u8]) {
        // The length counts itself; every payload here is far below 64 KB.
        let len = u16::try_from(payload.len() + 2).unwrap_or(u16::MAX);
        out.extend_from_slice(&[0xFF, marker]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
    }
    let mut jpeg = vec![0xFF, 0xD8]; // SOI
    segment(&mut jpeg, 0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    segment(
        &mut jpeg,
        0xFE,
        b"wechat-emulator: a stand-in for a wxacode image, 1x1 grey",
    );
    let mut quant = [1u8; 65];
    quant[0] = 0; // 8-bit precision, table 0
    segment(&mut jpeg, 0xDB, &quant);
    // 8 bits, 1 x 1 pixels, one component (id 1, no subsampling, table 0).
    segment(&mut jpeg, 0xC0, &[8, 0, 1, 0, 1, 1, 1, 0x11, 0]);
    for class in [0x00, 0x10] {
        // One code of length 1, for symbol 0 (DC: difference 0; AC: end of block).
        let mut huffman = [0u8; 18];
        huffman[0] = class;
        huffman[1] = 1;
        segment(&mut jpeg, 0xC4, &huffman);
    }
    segment(&mut jpeg, 0xDA, &[1, 1, 0x00, 0, 63, 0]);
    jpeg.push(0b0011_1111);
    jpeg.extend_from_slice(&[0xFF, 0xD9]); // EOI
    jpeg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wxacode_is_a_well_formed_jpeg() {
        let jpeg = tiny_jpeg();
        assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF]);
        assert_eq!(&jpeg[jpeg.len() - 2..], &[0xFF, 0xD9]);
        // Walk the segments: each length must land on the next marker, up to SOS.
        let mut at = 2;
        let mut markers = Vec::new();
        loop {
            assert_eq!(jpeg[at], 0xFF, "a marker at {at}");
            let marker = jpeg[at + 1];
            markers.push(marker);
            let len = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
            at += 2 + len;
            if marker == 0xDA {
                break;
            }
        }
        assert_eq!(markers, [0xE0, 0xFE, 0xDB, 0xC0, 0xC4, 0xC4, 0xDA]);
        assert_eq!(jpeg.len() - at, 3, "one byte of scan data, then EOI");
        assert!((150..1000).contains(&jpeg.len()), "{}", jpeg.len());
    }
}
