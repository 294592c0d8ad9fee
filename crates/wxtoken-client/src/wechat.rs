//! How a WeChat API call made with a token says the token was rejected, for
//! [`Client::with_token`](crate::Client::with_token): the [`TokenRejection`] trait,
//! WeChat's own error shape [`WechatError`], and [`CallError`], a ready-made error type
//! for closures that call WeChat with reqwest.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// WeChat's errcodes that mean "this access_token is dead, get another": 40001 (invalid
/// credential, or not the latest), 40014 (invalid access_token, WeCom's 40001) and 42001
/// (expired).
pub const TOKEN_REJECTED_ERRCODES: [i64; 3] = [40001, 40014, 42001];

/// An error that can say whether WeChat rejected the access_token it was made with.
///
/// [`Client::with_token`](crate::Client::with_token) reports the token and calls again
/// once when the closure's error says `true`. Implement it for your own error type by
/// delegating to the [`WechatError`] inside it.
pub trait TokenRejection {
    /// Whether WeChat answered that the token is dead (40001, 40014 or 42001).
    fn is_token_rejected(&self) -> bool;
}

/// WeChat's error answer, `{"errcode": N, "errmsg": "..."}`, with a non-zero errcode.
///
/// ```
/// use serde_json::json;
/// use wxtoken_client::{TokenRejection, WechatError};
///
/// let answer = json!({"errcode": 40001, "errmsg": "invalid credential rid: 6a1b-2c3d"});
/// let err = WechatError::check(answer).unwrap_err();
/// assert!(err.is_token_rejected());
/// assert_eq!(err.rid(), Some("6a1b-2c3d"));
///
/// let ok = json!({"errcode": 0, "errmsg": "ok", "dns": ["101.226.90.149"]});
/// assert!(WechatError::check(ok).is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("WeChat answered errcode {errcode}: {errmsg}")]
pub struct WechatError {
    /// WeChat's errcode, never 0.
    pub errcode: i64,
    /// WeChat's errmsg; it usually ends with ` rid: ...`.
    #[serde(default)]
    pub errmsg: String,
}

impl WechatError {
    /// The error in a WeChat answer, or `None` when it has no errcode or errcode 0
    /// (WeChat's success).
    pub fn from_json(answer: &Value) -> Option<WechatError> {
        let errcode = answer.get("errcode")?.as_i64()?;
        if errcode == 0 {
            return None;
        }
        let errmsg = answer
            .get("errmsg")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Some(WechatError { errcode, errmsg })
    }

    /// `answer` itself when it is a success, its error otherwise: the one line after
    /// decoding a WeChat answer.
    pub fn check(answer: Value) -> Result<Value, WechatError> {
        match WechatError::from_json(&answer) {
            Some(error) => Err(error),
            None => Ok(answer),
        }
    }

    /// The request id WeChat put at the end of errmsg (`... rid: 6a1b-2c3d`), to quote
    /// to WeChat support.
    pub fn rid(&self) -> Option<&str> {
        let (_, rid) = self.errmsg.rsplit_once("rid:")?;
        let rid = rid.trim();
        (!rid.is_empty()).then_some(rid)
    }
}

impl TokenRejection for WechatError {
    fn is_token_rejected(&self) -> bool {
        TOKEN_REJECTED_ERRCODES.contains(&self.errcode)
    }
}

/// A ready-made error for [`Client::with_token`](crate::Client::with_token) closures that
/// call WeChat with reqwest: `?` converts all three sources, and only a
/// [`Wechat`](CallError::Wechat) error with a token errcode counts as a rejection.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Getting or reporting the token failed.
    #[error(transparent)]
    Client(#[from] Error),
    /// WeChat answered with an errcode.
    #[error(transparent)]
    Wechat(#[from] WechatError),
    /// The call to WeChat itself failed (connection, timeout, a body that is not JSON).
    #[error("the call to WeChat failed: {0}")]
    Http(#[from] reqwest::Error),
}

impl TokenRejection for CallError {
    fn is_token_rejected(&self) -> bool {
        match self {
            CallError::Wechat(e) => e.is_token_rejected(),
            CallError::Client(_) | CallError::Http(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_token_errcodes_are_rejections() {
        for code in [40001, 40014, 42001] {
            let e = WechatError::from_json(&json!({"errcode": code})).expect("an error");
            assert!(e.is_token_rejected(), "{code}");
        }
        let e = WechatError::from_json(&json!({"errcode": 45009, "errmsg": "quota"}));
        assert!(!e.expect("an error").is_token_rejected());
        assert_eq!(WechatError::from_json(&json!({"errcode": 0})), None);
        assert_eq!(WechatError::from_json(&json!({"dns": []})), None);
    }

    #[test]
    fn rid_is_read_from_errmsg() {
        let e = WechatError {
            errcode: -1,
            errmsg: "system error".into(),
        };
        assert_eq!(e.rid(), None);
    }
}
