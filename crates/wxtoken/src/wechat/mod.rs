//! The upstream client: talks to WeChat's credential APIs and nothing else. It knows
//! nothing of the keeper or of HTTP clients; it turns WeChat's answers into values or
//! classified errors (see [`errcode`]).

pub mod crypto;
pub mod errcode;
mod quota;
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
    /// The authorizer_refresh_token that came with an authorizer's token: the one to
    /// use next time (persisted before the token is served).
    pub refresh_token: Option<String>,
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetched")
            .field("value", &crate::credential::Redacted(&self.value))
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self
                    .refresh_token
                    .as_deref()
                    .map(crate::credential::Redacted),
            )
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
    /// A third-party platform's component_access_token
    /// (`/cgi-bin/component/api_component_token`), which needs the latest
    /// component_verify_ticket WeChat pushed.
    ComponentToken {
        component_appid: &'a str,
        secret: &'a SecretString,
        verify_ticket: &'a str,
    },
    /// An authorizer's access token (`/cgi-bin/component/api_authorizer_token`), from
    /// its refresh token; the answer carries the refresh token to use next.
    AuthorizerToken {
        component_token: &'a str,
        component_appid: &'a str,
        authorizer_appid: &'a str,
        refresh_token: &'a str,
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
            FetchRequest::ComponentToken { .. } => "api_component_token",
            FetchRequest::AuthorizerToken { .. } => "api_authorizer_token",
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

/// The API names of the quota calls ([`TokenApi::quota_get`], [`TokenApi::clear_quota`]),
/// counted with the app's access token.
pub const QUOTA_GET: &str = "quota_get";
pub const CLEAR_QUOTA: &str = "clear_quota";

/// Every API name [`FetchRequest::api_name`] can return (and the quota calls'), for
/// loading stored counters.
pub const API_NAMES: &[&str] = &[
    QUOTA_GET,
    CLEAR_QUOTA,
    "token",
    "stable_token",
    "stable_token_force",
    "gettoken",
    "api_component_token",
    "api_authorizer_token",
    "getticket_jsapi",
    "getticket_wx_card",
    "get_jsapi_ticket",
    "ticket_agent_config",
];

/// Which credential an API name fetches, so stored counters go back to their slot.
pub fn api_kind(api: &str) -> Option<CredentialKind> {
    match api {
        "token"
        | "stable_token"
        | "stable_token_force"
        | "gettoken"
        | "api_component_token"
        | "api_authorizer_token"
        | QUOTA_GET
        | CLEAR_QUOTA => Some(CredentialKind::AccessToken),
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
    pub(crate) fn transient(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Transient,
            errcode: None,
            message: message.into(),
            rid: None,
        }
    }
}

/// A third-party platform's calls that fetch no credential, all made with the
/// component_access_token.
#[derive(Debug, Clone, Copy)]
pub enum ComponentCall<'a> {
    /// `api_create_preauthcode`: a pre_auth_code for an authorization URL.
    PreAuthCode {
        component_token: &'a str,
        component_appid: &'a str,
    },
    /// `api_query_auth`: completes an authorization.
    QueryAuth {
        component_token: &'a str,
        component_appid: &'a str,
        authorization_code: &'a str,
    },
    /// `api_get_authorizer_list`: one page (at most 500) of authorizers with their
    /// refresh tokens.
    AuthorizerList {
        component_token: &'a str,
        component_appid: &'a str,
        offset: u64,
        count: u64,
    },
}

impl ComponentCall<'_> {
    /// The API name under which calls are counted.
    pub fn api_name(&self) -> &'static str {
        match self {
            ComponentCall::PreAuthCode { .. } => "api_create_preauthcode",
            ComponentCall::QueryAuth { .. } => "api_query_auth",
            ComponentCall::AuthorizerList { .. } => "api_get_authorizer_list",
        }
    }
}

/// A pre_auth_code for an authorization URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreAuthCode {
    pub code: String,
    pub expires_in: u64,
}

/// An authorization completed by `api_query_auth`.
#[derive(Clone)]
pub struct Authorization {
    pub authorizer_appid: String,
    pub access_token: Fetched,
    pub refresh_token: String,
    pub func_info: Vec<u64>,
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorization")
            .field("authorizer_appid", &self.authorizer_appid)
            .field("access_token", &self.access_token)
            .field(
                "refresh_token",
                &crate::credential::Redacted(&self.refresh_token),
            )
            .field("func_info", &self.func_info)
            .finish()
    }
}

/// One authorizer of `api_get_authorizer_list`.
#[derive(Clone)]
pub struct ListedAuthorizer {
    pub appid: String,
    pub refresh_token: String,
    /// Unix seconds of the authorization.
    pub auth_time: u64,
}

impl fmt::Debug for ListedAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListedAuthorizer")
            .field("appid", &self.appid)
            .field(
                "refresh_token",
                &crate::credential::Redacted(&self.refresh_token),
            )
            .field("auth_time", &self.auth_time)
            .finish()
    }
}

/// What a [`ComponentCall`] answered.
#[derive(Debug, Clone)]
pub enum ComponentAnswer {
    PreAuthCode(PreAuthCode),
    Authorization(Authorization),
    AuthorizerList {
        total_count: u64,
        list: Vec<ListedAuthorizer>,
    },
}

/// An account's figures for one API today, as `openapi/quota/get` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct QuotaFigures {
    pub daily_limit: u64,
    pub used: u64,
    pub remain: u64,
}

/// WeChat's credential APIs, behind a trait so that the keeper can be driven by a fake.
pub trait TokenApi: Send + Sync + 'static {
    /// Fetches one token or ticket.
    fn fetch<'a>(
        &'a self,
        request: FetchRequest<'a>,
    ) -> BoxFuture<'a, Result<Fetched, UpstreamError>>;

    /// A third-party platform's other calls. An upstream without them says so.
    fn component<'a>(
        &'a self,
        call: ComponentCall<'a>,
    ) -> BoxFuture<'a, Result<ComponentAnswer, UpstreamError>> {
        let api = call.api_name();
        Box::pin(async move {
            Err(UpstreamError {
                class: ErrorClass::Configuration,
                errcode: None,
                message: format!("this upstream does not offer {api}"),
                rid: None,
            })
        })
    }

    /// `openapi/quota/get`: WeChat's daily figures for `cgi_path`, asked with the
    /// account's own token. An upstream without it says so.
    fn quota_get<'a>(
        &'a self,
        access_token: &'a str,
        cgi_path: &'a str,
    ) -> BoxFuture<'a, Result<QuotaFigures, UpstreamError>> {
        let _ = (access_token, cgi_path);
        Box::pin(async { Err(not_offered(QUOTA_GET)) })
    }

    /// `clear_quota/v2`: resets the account's daily counters (WeChat allows 10 a
    /// month). An upstream without it says so.
    fn clear_quota<'a>(
        &'a self,
        appid: &'a str,
        secret: &'a SecretString,
    ) -> BoxFuture<'a, Result<(), UpstreamError>> {
        let _ = (appid, secret);
        Box::pin(async { Err(not_offered(CLEAR_QUOTA)) })
    }
}

/// The error of an upstream that lacks a call.
fn not_offered(api: &str) -> UpstreamError {
    UpstreamError {
        class: ErrorClass::Configuration,
        errcode: None,
        message: format!("this upstream does not offer {api}"),
        rid: None,
    }
}
