//! The upstream client: talks to WeChat's credential APIs and nothing else. It knows
//! nothing of the keeper or of HTTP clients; it turns WeChat's answers into values or
//! classified errors (see [`errcode`]).

pub mod errcode;
mod token;

use std::fmt;

use futures::future::BoxFuture;
use secrecy::SecretString;

use crate::config::TokenMode;
pub use errcode::ErrorClass;
pub use token::WechatClient;

/// A value WeChat returned, before the keeper dates and numbers it.
#[derive(Clone)]
pub struct Fetched {
    pub access_token: String,
    /// Seconds the value is valid for, as WeChat said (never assumed to be 7200).
    pub expires_in: u64,
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetched")
            .field(
                "access_token",
                &crate::credential::Redacted(&self.access_token),
            )
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// What to ask for.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    pub appid: &'a str,
    pub secret: &'a SecretString,
    pub mode: TokenMode,
    /// Stable mode only: invalidate the current token and issue a new one.
    pub force_refresh: bool,
}

impl TokenRequest<'_> {
    /// The API name under which calls are counted (per app, per WeChat day).
    pub fn api_name(&self) -> &'static str {
        match (self.mode, self.force_refresh) {
            (TokenMode::Classic, _) => "token",
            (TokenMode::Stable, false) => "stable_token",
            (TokenMode::Stable, true) => "stable_token_force",
        }
    }
}

/// Why an upstream call failed, classified by what the caller should do next.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct UpstreamError {
    pub class: ErrorClass,
    /// WeChat's errcode, when WeChat answered with one.
    pub errcode: Option<i64>,
    /// WeChat's errmsg (without the rid), or what went wrong on the way.
    pub message: String,
    /// WeChat's request id, for its rid lookup tool.
    pub rid: Option<String>,
}

impl UpstreamError {
    fn transient(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Transient,
            errcode: None,
            message: message.into(),
            rid: None,
        }
    }
}

/// WeChat's token APIs, behind a trait so that the keeper can be tested with a fake and
/// so that other upstreams (WeCom, third-party platforms) can join later.
pub trait TokenApi: Send + Sync + 'static {
    /// Fetches an access token for an official account or mini program.
    fn fetch_access_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<Fetched, UpstreamError>>;
}
