//! WeChat-shaped errors and failure injection.
//!
//! Owns the error codes the emulator answers with (official accounts' and WeCom's,
//! which differ for the same situation), the `rid` WeChat appends to every errmsg,
//! and the dice roll that decides whether a token or ticket call fails.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use rand::seq::IndexedRandom;

use crate::FailKind;

/// A WeChat error: errcode plus the errmsg text before the rid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WxError {
    pub code: i64,
    pub text: &'static str,
}

impl WxError {
    const fn new(code: i64, text: &'static str) -> Self {
        Self { code, text }
    }

    pub const SYSTEM_ERROR: Self = Self::new(-1, "system error");
    pub const INVALID_CREDENTIAL: Self = Self::new(
        40001,
        "invalid credential, access_token is invalid or not latest",
    );
    pub const INVALID_GRANT_TYPE: Self = Self::new(40002, "invalid grant_type");
    pub const INVALID_APPID: Self = Self::new(40013, "invalid appid");
    pub const INVALID_APPSECRET: Self = Self::new(40125, "invalid appsecret");
    pub const TOKEN_MISSING: Self = Self::new(41001, "access_token missing");
    pub const APPID_MISSING: Self = Self::new(41002, "appid missing");
    pub const SECRET_MISSING: Self = Self::new(41004, "appsecret missing");
    pub const TOKEN_EXPIRED: Self = Self::new(42001, "access_token expired");
    pub const DAILY_QUOTA: Self = Self::new(45009, "reach max api daily quota limit");
    /// `clear_quota`: this month's clears are used up.
    pub const CLEAR_QUOTA_LIMIT: Self =
        Self::new(48006, "forbid to clear quota because of reaching the limit");
    /// `openapi/quota/get` for a path it has no figures for.
    pub const CGI_PATH_NOT_FOUND: Self = Self::new(76021, "cgi_path not found, please check");
    pub const DATA_FORMAT: Self = Self::new(47001, "data format error");
    pub const CODE_MISSING: Self = Self::new(41008, "missing code");
    pub const INVALID_CODE: Self = Self::new(40029, "invalid code");
    pub const CODE_USED: Self = Self::new(40163, "code been used");
    pub const INVALID_MEDIA_TYPE: Self = Self::new(40004, "invalid media type");
    /// An official upload outside its type's limits; the misspelling is WeChat's own
    /// (seen answering an oversized image on `media/upload`).
    pub const INVALID_MEDIA_SIZE: Self = Self::new(40006, "invalid meida size");
    pub const MEDIA_MISSING: Self = Self::new(41005, "media data missing");
    /// A file part with no bytes at all.
    pub const EMPTY_MEDIA: Self = Self::new(44001, "empty media data");
    pub const OPENID_INVALID: Self = Self::new(40003, "invalid openid");
    pub const OPENID_MISSING: Self = Self::new(41009, "missing openid");
    /// `getwxacodeunlimit`'s scene is longer than 32 characters.
    pub const INVALID_SCENE: Self = Self::new(40129, "invalid scene");
    /// datacube: a date that is not `yyyy-MM-dd`.
    pub const DATE_FORMAT: Self = Self::new(61500, "date format error");
    /// datacube: end before begin, or a span longer than the API allows.
    pub const DATE_RANGE: Self = Self::new(61501, "date range error");
    /// A ticket `type` the endpoint does not know (or none).
    pub const INVALID_ARGS: Self = Self::new(40097, "invalid args");

    // Third-party platforms (component APIs). Codes and texts from the official
    // api_component_token, api_get_authorizer_list and api_query_auth pages and the
    // open platform's global code list (as in WxJava's WxOpenErrorMsgEnum).
    /// `component_appid` names no platform, or not the one the token belongs to.
    pub const INVALID_COMPONENT: Self = Self::new(61011, "invalid component");
    /// The verify ticket was issued but is no longer the latest, or is over 12 hours
    /// old.
    pub const TICKET_EXPIRED: Self = Self::new(61005, "component ticket is expired");
    /// The verify ticket is missing or was never issued to this platform.
    pub const TICKET_INVALID: Self = Self::new(61006, "component ticket is invalid");
    /// The account is not (or no longer) authorized to this platform.
    pub const NOT_AUTHORIZED: Self =
        Self::new(61003, "component is not authorized by this account");
    /// An authorization code never issued.
    pub const AUTH_CODE_INVALID: Self = Self::new(61009, "code is invalid");
    /// An authorization code already exchanged, or older than an hour.
    pub const AUTH_CODE_EXPIRED: Self = Self::new(61010, "code is expired");
    /// An authorizer refresh token that is not the current one.
    pub const REFRESH_TOKEN_INVALID: Self = Self::new(61023, "refresh_token is invalid");
    /// `api_get_authorizer_list` with `count` over 500.
    pub const COUNT_LIMIT: Self = Self::new(40170, "args count exceed count limit");

    // WeCom (qyapi) says some things differently from official accounts.
    /// WeCom's answer to a dead or foreign token, where official accounts say 40001.
    pub const WECOM_INVALID_TOKEN: Self = Self::new(40014, "invalid access_token");
    pub const WECOM_INVALID_CREDENTIAL: Self = Self::new(40001, "invalid credential");
    pub const CORPID_MISSING: Self = Self::new(41002, "corpid missing");
    pub const CORPSECRET_MISSING: Self = Self::new(41004, "corpsecret missing");
    pub const INVALID_CORPID: Self = Self::new(40013, "invalid corpid");
    /// The secret belongs to an app of another corp.
    pub const SECRET_OF_OTHER_CORP: Self = Self::new(40091, "secret is invalid");
    /// WeCom's 45009, for its daily token quota and hourly ticket limits alike.
    pub const FREQ_LIMIT: Self = Self::new(45009, "api freq out of limit");
    /// WeCom's size error for a file (or a voice) outside its limits, and for one of
    /// 5 bytes or fewer.
    pub const WECOM_INVALID_FILE_SIZE: Self = Self::new(40006, "invalid file size");
    /// WeCom's size error for an image over its limit.
    pub const WECOM_INVALID_IMAGE_SIZE: Self = Self::new(40009, "invalid image size");
    /// WeCom's size error for a video over its limit.
    pub const WECOM_INVALID_VIDEO_SIZE: Self = Self::new(40011, "invalid video size");
    pub const USERID_MISSING: Self = Self::new(41009, "missing userid");
    pub const USERID_NOT_FOUND: Self = Self::new(60111, "userid not found");
}

impl WxError {
    /// This error's body with `fields` added: some WeCom APIs keep their empty list
    /// fields in error answers too, and strict clients decode them.
    pub fn with_fields(self, fields: serde_json::Value) -> Response {
        let mut body = self.body();
        if let (Some(body), serde_json::Value::Object(fields)) = (body.as_object_mut(), fields) {
            body.extend(fields);
        }
        (StatusCode::OK, axum::Json(body)).into_response()
    }

    fn body(self) -> serde_json::Value {
        serde_json::json!({
            "errcode": self.code,
            "errmsg": format!("{} rid: {}", self.text, new_rid()),
        })
    }
}

impl IntoResponse for WxError {
    /// WeChat answers errcode errors with HTTP 200 and a fresh rid in errmsg.
    fn into_response(self) -> Response {
        (StatusCode::OK, axum::Json(self.body())).into_response()
    }
}

/// A request id shaped like WeChat's, e.g. `6746a1b2-3c4d5e6f-7a8b9c0d`: the first
/// group is the Unix time in hex (as on WeChat), the others random.
pub(crate) fn new_rid() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut rng = rand::rng();
    // Truncation to 32 bits is intended: WeChat's first group is 8 hex digits too.
    format!(
        "{:08x}-{:08x}-{:08x}",
        secs as u32,
        rng.random::<u32>(),
        rng.random::<u32>()
    )
}

/// Rolls the dice for one token or ticket call: `Some(kind)` if it should fail.
pub(crate) fn roll(fail_rate: f64, kinds: &[FailKind]) -> Option<FailKind> {
    if fail_rate <= 0.0 {
        return None;
    }
    let mut rng = rand::rng();
    // random::<f64>() is in [0, 1), so a rate of 1.0 always fails.
    if rng.random::<f64>() < fail_rate {
        kinds.choose(&mut rng).copied()
    } else {
        None
    }
}

/// The answer for an injected failure that does not proceed to issue a token or
/// ticket.
pub(crate) fn failure_response(kind: FailKind) -> Response {
    match kind {
        // Timeout proceeds (after hanging) and never gets here; busy is the safe answer.
        FailKind::SystemBusy | FailKind::Timeout => WxError::SYSTEM_ERROR.into_response(),
        FailKind::Http500 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error (injected by wechat-emulator)",
        )
            .into_response(),
        FailKind::Reset => {
            // The body fails before its first byte: the server closes the connection
            // without finishing the answer.
            let broken = futures::stream::once(async {
                Err::<axum::body::Bytes, _>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset (injected by wechat-emulator)",
                ))
            });
            (
                [(CONTENT_TYPE, "application/json")],
                axum::body::Body::from_stream(broken),
            )
                .into_response()
        }
        FailKind::Garbage => (
            [(CONTENT_TYPE, "text/html; charset=utf-8")],
            "<html><head><title>Gateway</title></head><body>Please log in to continue \
             (injected by wechat-emulator)</body></html>",
        )
            .into_response(),
        FailKind::Truncated => (
            [(CONTENT_TYPE, "application/json")],
            r#"{"access_token":"93_truncatedXyZ"#,
        )
            .into_response(),
        FailKind::Huge => {
            let frame = r#"{"errcode":0,"errmsg":"ok","padding":""}"#.len();
            let body = format!(
                r#"{{"errcode":0,"errmsg":"ok","padding":"{}"}}"#,
                "x".repeat(crate::HUGE_BODY_BYTES - frame)
            );
            ([(CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rid_has_three_hex_groups() {
        let rid = new_rid();
        let groups: Vec<&str> = rid.split('-').collect();
        assert_eq!(groups.len(), 3, "{rid}");
        for g in groups {
            assert_eq!(g.len(), 8, "{rid}");
            assert!(g.chars().all(|c| c.is_ascii_hexdigit()), "{rid}");
        }
    }

    #[test]
    fn roll_respects_extremes() {
        assert_eq!(roll(0.0, &FailKind::ALL), None);
        assert_eq!(roll(1.0, &[]), None);
        for _ in 0..100 {
            assert_eq!(roll(1.0, &[FailKind::Http500]), Some(FailKind::Http500));
        }
    }
}
