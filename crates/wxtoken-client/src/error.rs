//! [`Error`]: everything that can go wrong between this client and the wxtoken server,
//! grouped by what the caller does next, and the mapping from the server's error JSON
//! (`{"error": {"code", "message", "wechat_errcode"?, "rid"?}}` plus `Retry-After`).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// Why a request to the wxtoken server failed.
///
/// The variants fall in two groups, by what the caller does next:
///
/// - **give up** (a person must change a key, the server's config or the code):
///   [`InvalidConfig`](Error::InvalidConfig), [`Unauthenticated`](Error::Unauthenticated),
///   [`Forbidden`](Error::Forbidden), [`AppNotFound`](Error::AppNotFound),
///   [`BadRequest`](Error::BadRequest), [`Protocol`](Error::Protocol);
/// - **retry later** (the same request may well succeed): [`Unavailable`](Error::Unavailable),
///   [`Upstream`](Error::Upstream), [`Transport`](Error::Transport).
///
/// [`Error::is_retryable`] and [`Error::retry_after`] say which, and when.
///
/// It is `Clone` because single flight hands one failed request's error to every caller
/// that waited on it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The base URL or the key given to the [`ClientBuilder`](crate::ClientBuilder) cannot
    /// work (not an http(s) URL, a key that is empty or not a valid header value).
    #[error("invalid client configuration: {0}")]
    InvalidConfig(String),
    /// 401: the server does not know the client key (missing, malformed or revoked).
    #[error("the wxtoken server rejected the client key: {message}")]
    Unauthenticated {
        /// The server's explanation.
        message: String,
    },
    /// 403: the key may not use this app, or lacks the scope (`invalidate` is a scope of
    /// its own).
    #[error("the client key is not allowed to do this: {message}")]
    Forbidden {
        /// The server's explanation.
        message: String,
    },
    /// 404 `app_not_found`: the server has no app by that id.
    #[error("the wxtoken server has no app `{app}`")]
    AppNotFound {
        /// The app id this client asked for.
        app: String,
    },
    /// 400 or 413: the server refused the request itself (an unknown ticket type for the
    /// app's kind, a page URL that is not absolute http(s), a `min_ttl` over 7200 s...).
    #[error("the wxtoken server refused the request: {message}")]
    BadRequest {
        /// The server's explanation, naming the field at fault.
        message: String,
    },
    /// An answer this client does not understand: an unknown path or method (a server
    /// older than this client, or a proxy in between), or a body that is not the
    /// documented JSON.
    #[error("unexpected answer from the wxtoken server (HTTP {status}): {message}")]
    Protocol {
        /// The HTTP status of the answer.
        status: u16,
        /// What was wrong with it.
        message: String,
    },
    /// 503 (and other 5xx or 429 without WeChat's word): no token meeting the request in
    /// time, a force refresh held back, the server shutting down.
    #[error("no credential available right now: {message}")]
    Unavailable {
        /// The server's explanation.
        message: String,
        /// When the server said to try again (`Retry-After`), if it knew.
        retry_after: Option<Duration>,
    },
    /// 502 `upstream_error`: the server has no valid token and WeChat refused or failed.
    #[error("WeChat refused or failed: {message}")]
    Upstream {
        /// The server's explanation, with WeChat's errmsg.
        message: String,
        /// WeChat's errcode (e.g. 40125 wrong secret, 45009 daily quota), if it gave one.
        wechat_errcode: Option<i64>,
        /// WeChat's request id, to quote to WeChat support.
        rid: Option<String>,
        /// When the server will try WeChat again (`Retry-After`), if it knew.
        retry_after: Option<Duration>,
    },
    /// The server could not be reached, or did not answer in time.
    #[error("could not reach the wxtoken server: {0}")]
    Transport(#[source] Arc<reqwest::Error>),
}

impl Error {
    /// Whether the same request may succeed later (the "retry later" group).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::Upstream { .. } | Error::Transport(_)
        )
    }

    /// How long the server asked to wait before trying again, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Unavailable { retry_after, .. } | Error::Upstream { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// WeChat's errcode when WeChat caused the failure.
    pub fn wechat_errcode(&self) -> Option<i64> {
        match self {
            Error::Upstream { wechat_errcode, .. } => *wechat_errcode,
            _ => None,
        }
    }

    /// The error for a non-2xx answer: `body` is the server's error JSON (or whatever a
    /// proxy put there), `app` the app the request was about.
    pub(crate) fn from_response(
        status: u16,
        body: &[u8],
        retry_after: Option<Duration>,
        app: &str,
    ) -> Error {
        let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) else {
            let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return by_status(status, snippet, retry_after);
        };
        let message = error.message;
        match error.code.as_str() {
            "unauthenticated" => Error::Unauthenticated { message },
            "forbidden" => Error::Forbidden { message },
            "app_not_found" => Error::AppNotFound {
                app: app.to_owned(),
            },
            "bad_request" | "payload_too_large" => Error::BadRequest { message },
            "upstream_error" => Error::Upstream {
                message,
                wechat_errcode: error.wechat_errcode,
                rid: error.rid,
                retry_after,
            },
            "token_unavailable" | "not_ready" => Error::Unavailable {
                message,
                retry_after,
            },
            // Codes this client does not know yet: the status still says which group.
            code => by_status(status, format!("{code}: {message}"), retry_after),
        }
    }
}

/// The variant for an answer whose code is unknown or whose body is not the error JSON:
/// server-side trouble (5xx) and rate limits (429) pass, anything else is a mismatch
/// between this client and what answered.
fn by_status(status: u16, message: String, retry_after: Option<Duration>) -> Error {
    if status >= 500 || status == 429 {
        Error::Unavailable {
            message: format!("HTTP {status}: {message}"),
            retry_after,
        }
    } else {
        Error::Protocol { status, message }
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        Error::Transport(Arc::new(e))
    }
}

/// The server's error JSON.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    wechat_errcode: Option<i64>,
    #[serde(default)]
    rid: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codes_map_to_variants() {
        let body = br#"{"error":{"code":"unauthenticated","message":"unknown key"}}"#;
        assert!(matches!(
            Error::from_response(401, body, None, "shop"),
            Error::Unauthenticated { .. }
        ));
        let body = br#"{"error":{"code":"app_not_found","message":"no app"}}"#;
        assert!(matches!(
            Error::from_response(404, body, None, "nope"),
            Error::AppNotFound { app } if app == "nope"
        ));
        let body = br#"{"error":{"code":"upstream_error","message":"m","wechat_errcode":45009,"rid":"r-1"}}"#;
        let e = Error::from_response(502, body, Some(Duration::from_secs(60)), "shop");
        assert!(e.is_retryable());
        assert_eq!(e.wechat_errcode(), Some(45009));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(60)));
        assert!(matches!(e, Error::Upstream { rid: Some(r), .. } if r == "r-1"));
    }

    #[test]
    fn unknown_answers_are_grouped_by_status() {
        let e = Error::from_response(502, b"<html>Bad Gateway</html>", None, "shop");
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        assert!(e.is_retryable());
        let body = br#"{"error":{"code":"not_found","message":"no such path"}}"#;
        let e = Error::from_response(404, body, None, "shop");
        assert!(matches!(e, Error::Protocol { status: 404, .. }), "{e:?}");
        assert!(!e.is_retryable());
    }
}
