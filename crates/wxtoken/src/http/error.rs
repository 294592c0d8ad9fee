//! The one error type at the HTTP edge and its JSON shape:
//! `{"error": {"code": "snake_case", "message": "...", "wechat_errcode"?, "rid"?}}`.
//! Internal detail is logged where it happened, never sent.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::keeper::{Failure, KeeperError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Forbidden(String),
    /// A push whose msg_signature does not match: not from WeChat.
    #[error("msg_signature does not match the push: it is not from WeChat")]
    BadSignature,
    /// An unknown app; an id outside the id grammar is not echoed whole.
    #[error("{}", unknown_app(.0))]
    AppNotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("no such path")]
    NotFound,
    #[error("this path does not accept that method")]
    MethodNotAllowed,
    #[error("{0}")]
    NotReady(String),
    #[error("{message}")]
    TokenUnavailable {
        message: String,
        retry_in: Option<Duration>,
    },
    /// A resource under an app that does not exist (`code` names which).
    #[error("{message}")]
    Missing { code: &'static str, message: String },
    /// An authorizer whose tokens are gone until the merchant authorizes again.
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    /// A component without a verify ticket yet (or one WeChat refused).
    #[error("{0}")]
    WaitingForVerifyTicket(String),
    /// WeChat refused what the client asked (a bad authorization code...).
    #[error("{message}")]
    Refused {
        message: String,
        wechat_errcode: Option<i64>,
        rid: Option<String>,
    },
    /// The request conflicts with what exists (`read_only`, `client_exists`) or with a
    /// budget (`clear_budget_used_up`).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The store failed; nothing was changed.
    #[error("{0}")]
    StoreUnavailable(String),
    /// The request body did not arrive within `server.body_read_timeout_ms`.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{message}")]
    Upstream {
        message: String,
        wechat_errcode: Option<i64>,
        rid: Option<String>,
        retry_in: Option<Duration>,
    },
}

/// The most of a caller's input an error message repeats back.
pub const MAX_ECHO_CHARS: usize = 64;
/// No error message is longer than this (in characters): whatever a caller sent that a
/// message quotes, the answer stays small.
pub const MAX_MESSAGE_CHARS: usize = 512;

/// `text` as an error message may quote it: at most [`MAX_ECHO_CHARS`] characters, then
/// `…` if it was longer.
pub fn echo(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(MAX_ECHO_CHARS) {
        None => std::borrow::Cow::Borrowed(text),
        Some((end, _)) => std::borrow::Cow::Owned(format!("{}…", &text[..end])),
    }
}

fn unknown_app(id: &str) -> String {
    if crate::config::is_identifier(id) {
        format!("no app `{id}` is configured")
    } else {
        format!(
            "no app is configured under `{}`: app ids are 1-64 characters of letters, digits, '-' or '_'",
            echo(id)
        )
    }
}

/// `message` cut to [`MAX_MESSAGE_CHARS`] characters.
fn capped(mut message: String) -> String {
    if let Some((end, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(end);
        message.push('…');
    }
    message
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    wechat_errcode: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rid: Option<&'a str>,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::BadSignature => (StatusCode::UNAUTHORIZED, "bad_signature"),
            ApiError::AppNotFound(_) => (StatusCode::NOT_FOUND, "app_not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::TokenUnavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "token_unavailable")
            }
            ApiError::Missing { code, .. } => (StatusCode::NOT_FOUND, code),
            ApiError::Gone { code, .. } => (StatusCode::GONE, code),
            ApiError::WaitingForVerifyTicket(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "waiting_for_verify_ticket")
            }
            ApiError::Refused { .. } => (StatusCode::BAD_REQUEST, "wechat_refused"),
            ApiError::Upstream { .. } => (StatusCode::BAD_GATEWAY, "upstream_error"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::StoreUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let (wechat_errcode, rid, retry_in) = match &self {
            ApiError::Upstream {
                wechat_errcode,
                rid,
                retry_in,
                ..
            } => (*wechat_errcode, rid.as_deref(), *retry_in),
            ApiError::TokenUnavailable { retry_in, .. } => (None, None, *retry_in),
            ApiError::Refused {
                wechat_errcode,
                rid,
                ..
            } => (*wechat_errcode, rid.as_deref(), None),
            _ => (None, None, None),
        };
        let body = Body {
            error: Detail {
                code,
                message: capped(self.to_string()),
                wechat_errcode,
                rid,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(retry_in) = retry_in {
            let secs = retry_in.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if status == StatusCode::UNAUTHORIZED && code == "unauthenticated" {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<KeeperError> for ApiError {
    fn from(e: KeeperError) -> Self {
        match e {
            KeeperError::UnknownApp(app) => ApiError::AppNotFound(app),
            e @ KeeperError::NotAComponent(_) => ApiError::Missing {
                code: "not_a_component",
                message: e.to_string(),
            },
            e @ KeeperError::UnknownAuthorizer { .. } => ApiError::Missing {
                code: "authorizer_not_found",
                message: e.to_string(),
            },
            e @ KeeperError::NoSuchTicket { .. } => ApiError::BadRequest(e.to_string()),
            KeeperError::Unavailable(message) => ApiError::TokenUnavailable {
                message,
                retry_in: None,
            },
            KeeperError::Upstream { failure, retry_in } => match failure.as_ref() {
                Failure::Upstream(u) => {
                    let mut message = match u.errcode {
                        Some(code) => {
                            format!("WeChat refused the request ({code}): {}", u.message)
                        }
                        None => format!("the request to WeChat failed: {}", u.message),
                    };
                    if let Some(wait) = retry_in {
                        message.push_str(&format!(
                            "; next attempt in {}s",
                            wait.as_millis().div_ceil(1000)
                        ));
                    }
                    ApiError::Upstream {
                        message,
                        wechat_errcode: u.errcode,
                        rid: u.rid.clone(),
                        retry_in,
                    }
                }
                Failure::Unauthorized(_) => ApiError::Gone {
                    code: "unauthorized",
                    message: failure.to_string(),
                },
                Failure::NeedsReauthorization(_) => ApiError::Gone {
                    code: "needs_reauthorization",
                    message: failure.to_string(),
                },
                Failure::WaitingForVerifyTicket(message) => {
                    ApiError::WaitingForVerifyTicket(message.clone())
                }
                other => ApiError::TokenUnavailable {
                    message: other.to_string(),
                    retry_in,
                },
            },
        }
    }
}
