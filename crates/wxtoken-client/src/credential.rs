//! What the server hands out: [`Token`], [`Ticket`] (of a [`TicketType`]), and the
//! signed [`JssdkConfig`] / [`AgentConfig`] a web page passes to the JS-SDK.
//!
//! Tokens and tickets carry their own freshness rule: a local monotonic deadline taken
//! from the server's `expires_in`, so the near cache never depends on this machine's
//! wall clock agreeing with the server's.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// How many characters of a token or ticket `Debug` shows: enough to tell two apart in
/// a log, far too few to use.
const SHOWN_CHARS: usize = 6;

/// A value with an expiry, as the server answered it. Shared by [`Token`] and
/// [`Ticket`], and what the near cache stores.
#[derive(Clone)]
pub(crate) struct Credential {
    /// The token or ticket itself; `Arc` so cache hits do not copy it.
    pub(crate) value: Arc<str>,
    /// The server's `expires_at`, for display and for callers who want wall-clock time.
    pub(crate) expires_at: SystemTime,
    /// The server's `expires_in` counted from when the request was sent: never later
    /// than the real expiry, whatever this machine's wall clock says.
    pub(crate) valid_until: Instant,
}

impl Credential {
    /// Time left by the local monotonic clock; zero once past.
    pub(crate) fn remaining(&self) -> Duration {
        self.valid_until.saturating_duration_since(Instant::now())
    }

    /// Whether it can be handed out to a caller who needs `min_ttl` of life left.
    pub(crate) fn has_more_than(&self, min_ttl: Duration) -> bool {
        self.remaining() > min_ttl
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("value", &Redacted(&self.value))
            .field("expires_at", &self.expires_at)
            .field("expires_in", &self.remaining())
            .finish()
    }
}

/// Shows the first few characters of a secret value and an ellipsis.
struct Redacted<'a>(&'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.0.chars().take(SHOWN_CHARS).collect();
        write!(f, "\"{shown}…\"")
    }
}

/// An access_token for one app, as served by wxtoken.
///
/// `Debug` shows only its first 6 characters, so a token can be logged safely with
/// `{:?}`; there is deliberately no `Display`. Cloning is cheap.
#[derive(Clone)]
pub struct Token(pub(crate) Credential);

impl Token {
    /// The token to put in `?access_token=` of a WeChat API call.
    pub fn value(&self) -> &str {
        &self.0.value
    }

    /// When the token expires, as the server said (unix seconds, whole).
    pub fn expires_at(&self) -> SystemTime {
        self.0.expires_at
    }

    /// Time left before it expires, measured on this machine's monotonic clock from the
    /// server's `expires_in`; zero once past.
    pub fn expires_in(&self) -> Duration {
        self.0.remaining()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &Redacted(&self.0.value))
            .field("expires_at", &self.0.expires_at)
            .field("expires_in", &self.0.remaining())
            .finish()
    }
}

/// A kind of JS-SDK ticket: [`JSAPI`](TicketType::JSAPI), [`WX_CARD`](TicketType::WX_CARD)
/// (official accounts) or [`AGENT_CONFIG`](TicketType::AGENT_CONFIG) (WeCom apps). Any
/// other name is passed to the server as is (which answers
/// [`Error::BadRequest`](crate::Error::BadRequest) listing the allowed ones).
///
/// ```
/// use wxtoken_client::TicketType;
/// assert_eq!(TicketType::from("jsapi"), TicketType::JSAPI);
/// assert_eq!(TicketType::AGENT_CONFIG.as_str(), "agent_config");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TicketType(Cow<'static, str>);

impl TicketType {
    /// `jsapi`: signs `wx.config` (official accounts) or WeCom's corp-level `wx.config`.
    pub const JSAPI: TicketType = TicketType(Cow::Borrowed("jsapi"));
    /// `wx_card`: signs `wx.addCard` (official accounts).
    pub const WX_CARD: TicketType = TicketType(Cow::Borrowed("wx_card"));
    /// `agent_config`: signs WeCom's `wx.agentConfig`.
    pub const AGENT_CONFIG: TicketType = TicketType(Cow::Borrowed("agent_config"));

    /// The name used in URLs (`/ticket/{type}`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for TicketType {
    fn from(name: &str) -> Self {
        TicketType(Cow::Owned(name.to_owned()))
    }
}

impl From<String> for TicketType {
    fn from(name: String) -> Self {
        TicketType(Cow::Owned(name))
    }
}

impl From<&TicketType> for TicketType {
    fn from(kind: &TicketType) -> Self {
        kind.clone()
    }
}

impl fmt::Display for TicketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A JS-SDK ticket of one app, as served by wxtoken. `Debug` shows only its first 6
/// characters.
#[derive(Clone)]
pub struct Ticket {
    pub(crate) kind: TicketType,
    pub(crate) credential: Credential,
}

impl Ticket {
    /// Which ticket this is.
    pub fn kind(&self) -> &TicketType {
        &self.kind
    }

    /// The ticket itself, to sign with.
    pub fn value(&self) -> &str {
        &self.credential.value
    }

    /// When the ticket expires, as the server said.
    pub fn expires_at(&self) -> SystemTime {
        self.credential.expires_at
    }

    /// Time left before it expires, on this machine's monotonic clock; zero once past.
    pub fn expires_in(&self) -> Duration {
        self.credential.remaining()
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("kind", &self.kind.as_str())
            .field("value", &Redacted(&self.credential.value))
            .field("expires_at", &self.credential.expires_at)
            .field("expires_in", &self.credential.remaining())
            .finish()
    }
}

/// What a page passes to `wx.config`, signed by the server with the app's jsapi ticket.
/// Serializes with the JS-SDK's field names (`appId`, `nonceStr`...), so it can be sent
/// to the page as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct JssdkConfig {
    /// The app's appid (a WeCom app: its corpid).
    pub app_id: String,
    /// Unix seconds the signature was made at.
    pub timestamp: u64,
    /// The random nonce that was signed.
    pub nonce_str: String,
    /// sha1 over the ticket, nonce, timestamp and URL.
    pub signature: String,
    /// The URL that was signed (the page's, without its `#fragment`).
    pub url: String,
}

/// What a WeCom page passes to `wx.agentConfig`, signed with the app's agent_config
/// ticket. Serializes with the JS-SDK's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The corp's id.
    pub corpid: String,
    /// The app's AgentId.
    pub agentid: u64,
    /// Unix seconds the signature was made at.
    pub timestamp: u64,
    /// The random nonce that was signed.
    #[serde(rename = "nonceStr")]
    pub nonce_str: String,
    /// sha1 over the ticket, nonce, timestamp and URL.
    pub signature: String,
    /// The URL that was signed (the page's, without its `#fragment`).
    pub url: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(value: &str) -> Token {
        Token(Credential {
            value: value.into(),
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            valid_until: Instant::now() + Duration::from_secs(7000),
        })
    }

    #[test]
    fn debug_shows_only_the_first_six_characters() {
        let t = token("80_AbCdEfGhIjKlMnOp");
        let shown = format!("{t:?}");
        assert!(shown.contains("\"80_AbC…\""), "{shown}");
        assert!(!shown.contains("80_AbCd"), "{shown}");
        // Multi-byte characters are cut on a character boundary, not a byte.
        assert!(format!("{:?}", token("令牌令牌令牌令牌")).contains("令牌令牌令牌…"));
    }

    #[test]
    fn jssdk_config_uses_the_js_sdk_field_names() {
        let config = JssdkConfig {
            app_id: "wx1".into(),
            timestamp: 1,
            nonce_str: "n".into(),
            signature: "s".into(),
            url: "https://a.example/".into(),
        };
        let json = serde_json::to_value(&config).expect("serializes");
        assert_eq!(json["appId"], "wx1");
        assert_eq!(json["nonceStr"], "n");
    }
}
