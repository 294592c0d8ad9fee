//! The upstream client: talks to WeChat's credential APIs and nothing else. It knows
//! nothing of the keeper or of HTTP clients; it turns WeChat's answers into values or
//! classified errors (see [`errcode`]).

pub mod crypto;
pub mod errcode;
mod token;

use std::fmt;

use futures::future::BoxFuture;
use secrecy::SecretString;

use crate::config::TokenMode;
use crate::credential::{CredentialKind, TicketType};
pub use errcode::ErrorClass;
pub use token::WechatClient;

/// A value WeChat returned (a token or a ticket), before the keeper dates and numbers it.
#[derive(Clone)]
pub struct Fetched {
    pub value: String,
    /// Seconds the value is valid for, as WeChat said (never assumed to be 7200).
    pub expires_in: u64,
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetched")
            .field("value", &crate::credential::Redacted(&self.value))
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// What to ask WeChat for.
#[derive(Debug, Clone, Copy)]
pub enum FetchRequest<'a> {
    /// An official account's or mini program's access token.
    OfficialToken {
        appid: &'a str,
        secret: &'a SecretString,
        mode: TokenMode,
        /// Stable mode only: invalidate the current token and issue a new one.
        force_refresh: bool,
    },
    /// A WeCom app's access token (`/cgi-bin/gettoken` at `upstream.wecom_base`).
    WecomToken {
        corpid: &'a str,
        secret: &'a SecretString,
    },
    /// A ticket, fetched with a valid access token of the same app.
    Ticket {
        access_token: &'a str,
        ticket: TicketType,
        /// WeCom tickets live at other paths on `upstream.wecom_base`.
        wecom: bool,
    },
}

impl FetchRequest<'_> {
    /// The API name under which calls are counted (per app, per WeChat day).
    pub fn api_name(&self) -> &'static str {
        match self {
            FetchRequest::OfficialToken {
                mode: TokenMode::Classic,
                ..
            } => "token",
            FetchRequest::OfficialToken {
                force_refresh: false,
                ..
            } => "stable_token",
            FetchRequest::OfficialToken { .. } => "stable_token_force",
            FetchRequest::WecomToken { .. } => "gettoken",
            FetchRequest::Ticket {
                ticket: TicketType::Jsapi,
                wecom: false,
                ..
            } => "getticket_jsapi",
            FetchRequest::Ticket {
                ticket: TicketType::WxCard,
                ..
            } => "getticket_wx_card",
            FetchRequest::Ticket {
                ticket: TicketType::Jsapi,
                wecom: true,
                ..
            } => "get_jsapi_ticket",
            FetchRequest::Ticket {
                ticket: TicketType::AgentConfig,
                ..
            } => "ticket_agent_config",
        }
    }
}

/// Every API name [`FetchRequest::api_name`] can return, for loading stored counters.
pub const API_NAMES: &[&str] = &[
    "token",
    "stable_token",
    "stable_token_force",
    "gettoken",
    "getticket_jsapi",
    "getticket_wx_card",
    "get_jsapi_ticket",
    "ticket_agent_config",
];

/// Which credential an API name fetches, so stored counters go back to their slot.
pub fn api_kind(api: &str) -> Option<CredentialKind> {
    match api {
        "token" | "stable_token" | "stable_token_force" | "gettoken" => {
            Some(CredentialKind::AccessToken)
        }
        "getticket_jsapi" | "get_jsapi_ticket" => Some(CredentialKind::Ticket(TicketType::Jsapi)),
        "getticket_wx_card" => Some(CredentialKind::Ticket(TicketType::WxCard)),
        "ticket_agent_config" => Some(CredentialKind::Ticket(TicketType::AgentConfig)),
        _ => None,
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

/// WeChat's credential APIs, behind a trait so that other upstreams (third-party
/// platforms) can join and the keeper can be driven by a fake.
pub trait TokenApi: Send + Sync + 'static {
    /// Fetches one token or ticket.
    fn fetch<'a>(
        &'a self,
        request: FetchRequest<'a>,
    ) -> BoxFuture<'a, Result<Fetched, UpstreamError>>;
}
