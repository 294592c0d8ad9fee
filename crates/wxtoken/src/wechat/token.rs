//! The credential endpoints over HTTPS (rustls): official /cgi-bin/token (classic),
//! /cgi-bin/stable_token and /cgi-bin/ticket/getticket; WeCom /cgi-bin/gettoken,
//! /cgi-bin/get_jsapi_ticket and /cgi-bin/ticket/get.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::errcode::{self, ErrorClass};
use super::{
    Authorization, ComponentAnswer, ComponentCall, FetchRequest, Fetched, ListedAuthorizer,
    PreAuthCode, QuotaFigures, TokenApi, UpstreamError,
};
use crate::config::{TokenMode, UpstreamSettings};
use crate::credential::TicketType;

/// The longest token body we accept. WeChat says to reserve 512 characters; a body
/// much larger than that is not a token response.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The longest component answer: a page of `api_get_authorizer_list` holds 500
/// authorizers with their refresh tokens (about 100 KB).
const MAX_COMPONENT_BODY_BYTES: usize = 4 * 1024 * 1024;

/// No credential lives longer than a day (WeChat's are two hours); a larger
/// `expires_in` is a broken answer, not a value to plan a day around.
pub const MAX_EXPIRES_IN: u64 = 86_400;

/// The real WeChat client.
#[derive(Debug, Clone)]
pub struct WechatClient {
    pub(super) http: reqwest::Client,
    pub(super) api_base: String,
    wecom_base: String,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: Option<String>,
    component_access_token: Option<String>,
    authorizer_access_token: Option<String>,
    authorizer_refresh_token: Option<String>,
    ticket: Option<String>,
    expires_in: Option<u64>,
    errcode: Option<i64>,
    errmsg: Option<String>,
}

impl WechatClient {
    pub fn new(settings: &UpstreamSettings) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("wxtoken/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            api_base: settings.api_base.clone(),
            wecom_base: settings.wecom_base.clone(),
        })
    }

    async fn fetch(&self, request: FetchRequest<'_>) -> Result<Fetched, UpstreamError> {
        let (api, wecom) = (&self.api_base, &self.wecom_base);
        let (call, classify): (_, fn(i64) -> ErrorClass) = match request {
            FetchRequest::OfficialToken {
                appid,
                secret,
                mode: TokenMode::Classic,
                ..
            } => (
                self.http.get(format!("{api}/cgi-bin/token")).query(&[
                    ("grant_type", "client_credential"),
                    ("appid", appid),
                    ("secret", secret.expose_secret()),
                ]),
                errcode::classify_token_endpoint,
            ),
            FetchRequest::OfficialToken {
                appid,
                secret,
                mode: TokenMode::Stable,
                force_refresh,
            } => (
                self.http
                    .post(format!("{api}/cgi-bin/stable_token"))
                    .json(&serde_json::json!({
                        "grant_type": "client_credential",
                        "appid": appid,
                        "secret": secret.expose_secret(),
                        "force_refresh": force_refresh,
                    })),
                errcode::classify_token_endpoint,
            ),
            FetchRequest::WecomToken { corpid, secret } => (
                self.http
                    .get(format!("{wecom}/cgi-bin/gettoken"))
                    .query(&[("corpid", corpid), ("corpsecret", secret.expose_secret())]),
                errcode::classify_wecom_token_endpoint,
            ),
            FetchRequest::ComponentToken {
                component_appid,
                secret,
                verify_ticket,
            } => (
                self.http
                    .post(format!("{api}/cgi-bin/component/api_component_token"))
                    .json(&serde_json::json!({
                        "component_appid": component_appid,
                        "component_appsecret": secret.expose_secret(),
                        "component_verify_ticket": verify_ticket,
                    })),
                errcode::classify_token_endpoint,
            ),
            FetchRequest::AuthorizerToken {
                component_token,
                component_appid,
                authorizer_appid,
                refresh_token,
            } => (
                self.http
                    .post(format!("{api}/cgi-bin/component/api_authorizer_token"))
                    .query(&[("component_access_token", component_token)])
                    .json(&serde_json::json!({
                        "component_appid": component_appid,
                        "authorizer_appid": authorizer_appid,
                        "authorizer_refresh_token": refresh_token,
                    })),
                errcode::classify_api,
            ),
            FetchRequest::Ticket {
                access_token,
                ticket,
                wecom: false,
            } => (
                self.http
                    .get(format!("{api}/cgi-bin/ticket/getticket"))
                    .query(&[("access_token", access_token), ("type", ticket.as_str())]),
                errcode::classify_api,
            ),
            FetchRequest::Ticket {
                access_token,
                ticket: TicketType::Jsapi,
                wecom: true,
            } => (
                self.http
                    .get(format!("{wecom}/cgi-bin/get_jsapi_ticket"))
                    .query(&[("access_token", access_token)]),
                errcode::classify_api,
            ),
            FetchRequest::Ticket {
                access_token,
                ticket,
                wecom: true,
            } => (
                self.http
                    .get(format!("{wecom}/cgi-bin/ticket/get"))
                    .query(&[("access_token", access_token), ("type", ticket.as_str())]),
                errcode::classify_api,
            ),
        };
        let body = send(call, MAX_BODY_BYTES).await?;
        parse_body(&body, classify)
    }
}

/// Sends one call and reads its answer (bounded), turning HTTP-level failures into
/// classified errors.
pub(super) async fn send(
    call: reqwest::RequestBuilder,
    limit: usize,
) -> Result<Vec<u8>, UpstreamError> {
    // URLs carry secrets and tokens: strip them from every error.
    let mut response = call.send().await.map_err(network_error)?;
    let status = response.status();
    // Read no more than such an answer can be: a huge or endless body stops here.
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(network_error)? {
        if body.len() + chunk.len() > limit {
            return Err(UpstreamError::transient(format!(
                "WeChat's answer was over {limit} bytes: not a credential answer"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    if status.is_server_error() {
        return Err(UpstreamError::transient(format!(
            "WeChat answered HTTP {status}"
        )));
    }
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(UpstreamError {
            class: ErrorClass::RateLimited,
            errcode: None,
            message: format!("WeChat answered HTTP {status}"),
            rid: None,
        });
    }
    if !status.is_success() {
        return Err(UpstreamError {
            class: ErrorClass::Configuration,
            errcode: None,
            message: format!("WeChat answered HTTP {status}; is upstream.api_base right?"),
            rid: None,
        });
    }
    Ok(body)
}

fn network_error(err: reqwest::Error) -> UpstreamError {
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    UpstreamError::transient(format!("calling WeChat {what}: {}", err.without_url()))
}

fn parse_body(body: &[u8], classify: fn(i64) -> ErrorClass) -> Result<Fetched, UpstreamError> {
    let parsed: TokenBody = serde_json::from_slice(body).map_err(|e| {
        // JSON with a field of the wrong type (`"expires_in": -5` or `"7200"`) is not
        // the same trouble as an HTML page or a cut-off answer: say which it is.
        let what = if e.is_data() {
            "was JSON with a field of the wrong type"
        } else {
            "was not JSON"
        };
        UpstreamError::transient(format!("WeChat's answer {what}: {e}"))
    })?;
    match parsed {
        TokenBody {
            errcode: Some(code),
            errmsg,
            ..
        } if code != 0 => {
            let (message, rid) = errcode::split_rid(errmsg.as_deref().unwrap_or(""));
            Err(UpstreamError {
                class: classify(code),
                errcode: Some(code),
                message,
                rid,
            })
        }
        TokenBody {
            expires_in: Some(expires_in),
            ..
        } if expires_in > MAX_EXPIRES_IN => Err(UpstreamError::transient(format!(
            "WeChat's answer had expires_in {expires_in}, beyond the {MAX_EXPIRES_IN} s any credential lives"
        ))),
        // 0 is a value that is dying (WeCom hands its token back until the second it
        // dies): the keeper asks again in a moment rather than calling it malformed.
        TokenBody {
            access_token,
            component_access_token,
            authorizer_access_token,
            authorizer_refresh_token,
            ticket,
            expires_in: Some(expires_in),
            ..
        } => match access_token
            .or(component_access_token)
            .or(authorizer_access_token)
            .or(ticket)
        {
            Some(value) if !value.is_empty() => Ok(Fetched {
                value,
                expires_in,
                refresh_token: authorizer_refresh_token.filter(|r| !r.is_empty()),
            }),
            _ => Err(UpstreamError::transient(
                "WeChat's answer had expires_in but no token or ticket",
            )),
        },
        _ => Err(UpstreamError::transient(
            "WeChat's answer had neither a value with expires_in nor an errcode",
        )),
    }
}

impl WechatClient {
    /// A third-party platform's call with its component_access_token.
    async fn component(&self, call: ComponentCall<'_>) -> Result<ComponentAnswer, UpstreamError> {
        let (path, token, body) = match call {
            ComponentCall::PreAuthCode {
                component_token,
                component_appid,
            } => (
                "api_create_preauthcode",
                component_token,
                serde_json::json!({ "component_appid": component_appid }),
            ),
            ComponentCall::QueryAuth {
                component_token,
                component_appid,
                authorization_code,
            } => (
                "api_query_auth",
                component_token,
                serde_json::json!({
                    "component_appid": component_appid,
                    "authorization_code": authorization_code,
                }),
            ),
            ComponentCall::AuthorizerList {
                component_token,
                component_appid,
                offset,
                count,
            } => (
                "api_get_authorizer_list",
                component_token,
                serde_json::json!({
                    "component_appid": component_appid,
                    "offset": offset,
                    "count": count,
                }),
            ),
        };
        let request = self
            .http
            .post(format!("{}/cgi-bin/component/{path}", self.api_base))
            .query(&[("component_access_token", token)])
            .json(&body);
        let body = send(request, MAX_COMPONENT_BODY_BYTES).await?;
        parse_component(call, &body)
    }
}

/// Reads a component call's answer: WeChat's error, or the fields the call returns.
fn parse_component(call: ComponentCall<'_>, body: &[u8]) -> Result<ComponentAnswer, UpstreamError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| UpstreamError::transient(format!("WeChat's answer was not JSON: {e}")))?;
    if let Some(code) = value
        .get("errcode")
        .and_then(|c| c.as_i64())
        .filter(|c| *c != 0)
    {
        let errmsg = value.get("errmsg").and_then(|m| m.as_str()).unwrap_or("");
        let (message, rid) = errcode::split_rid(errmsg);
        return Err(UpstreamError {
            class: errcode::classify_api(code),
            errcode: Some(code),
            message,
            rid,
        });
    }
    let missing = |what: &str| {
        UpstreamError::transient(format!("WeChat's {} answer had no {what}", call.api_name()))
    };
    let text = |v: &serde_json::Value, field: &str| {
        v.get(field)
            .and_then(|f| f.as_str())
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| missing(field))
    };
    let number = |v: &serde_json::Value, field: &str| {
        v.get(field)
            .and_then(|f| f.as_u64())
            .ok_or_else(|| missing(field))
    };
    match call {
        ComponentCall::PreAuthCode { .. } => Ok(ComponentAnswer::PreAuthCode(PreAuthCode {
            code: text(&value, "pre_auth_code")?,
            expires_in: number(&value, "expires_in")?,
        })),
        ComponentCall::QueryAuth { .. } => {
            let info = value
                .get("authorization_info")
                .ok_or_else(|| missing("authorization_info"))?;
            let expires_in = number(info, "expires_in")?;
            if expires_in == 0 || expires_in > MAX_EXPIRES_IN {
                return Err(UpstreamError::transient(format!(
                    "WeChat's api_query_auth answer had expires_in {expires_in}"
                )));
            }
            let refresh_token = text(info, "authorizer_refresh_token")?;
            let func_info = info
                .get("func_info")
                .and_then(|f| f.as_array())
                .map(|list| {
                    list.iter()
                        .filter_map(|f| f.pointer("/funcscope_category/id")?.as_u64())
                        .collect()
                })
                .unwrap_or_default();
            Ok(ComponentAnswer::Authorization(Authorization {
                authorizer_appid: text(info, "authorizer_appid")?,
                access_token: Fetched {
                    value: text(info, "authorizer_access_token")?,
                    expires_in,
                    refresh_token: Some(refresh_token.clone()),
                },
                refresh_token,
                func_info,
            }))
        }
        ComponentCall::AuthorizerList { .. } => {
            let list = value
                .get("list")
                .and_then(|l| l.as_array())
                .map(|list| {
                    list.iter()
                        .map(|item| {
                            Ok(ListedAuthorizer {
                                appid: text(item, "authorizer_appid")?,
                                refresh_token: text(item, "refresh_token")?,
                                auth_time: item
                                    .get("auth_time")
                                    .and_then(|t| t.as_u64())
                                    .unwrap_or(0),
                            })
                        })
                        .collect::<Result<Vec<_>, UpstreamError>>()
                })
                .transpose()?
                .unwrap_or_default();
            Ok(ComponentAnswer::AuthorizerList {
                total_count: number(&value, "total_count")?,
                list,
            })
        }
    }
}

impl TokenApi for WechatClient {
    fn fetch<'a>(
        &'a self,
        request: FetchRequest<'a>,
    ) -> BoxFuture<'a, Result<Fetched, UpstreamError>> {
        WechatClient::fetch(self, request).boxed()
    }

    fn component<'a>(
        &'a self,
        call: ComponentCall<'a>,
    ) -> BoxFuture<'a, Result<ComponentAnswer, UpstreamError>> {
        WechatClient::component(self, call).boxed()
    }

    fn quota_get<'a>(
        &'a self,
        access_token: &'a str,
        cgi_path: &'a str,
    ) -> BoxFuture<'a, Result<QuotaFigures, UpstreamError>> {
        WechatClient::quota_get(self, access_token, cgi_path).boxed()
    }

    fn clear_quota<'a>(
        &'a self,
        appid: &'a str,
        secret: &'a SecretString,
    ) -> BoxFuture<'a, Result<(), UpstreamError>> {
        WechatClient::clear_quota(self, appid, secret).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens_and_errors() {
        let token = errcode::classify_token_endpoint;
        let ok = parse_body(br#"{"access_token":"AT","expires_in":7000}"#, token).expect("token");
        assert_eq!((ok.value.as_str(), ok.expires_in), ("AT", 7000));
        let ticket = parse_body(
            br#"{"errcode":0,"errmsg":"ok","ticket":"TK","expires_in":7200}"#,
            errcode::classify_api,
        )
        .expect("ticket");
        assert_eq!(ticket.value, "TK");
        let dead = parse_body(
            br#"{"errcode":40001,"errmsg":"invalid credential"}"#,
            errcode::classify_api,
        )
        .expect_err("dead token");
        assert_eq!(dead.class, ErrorClass::Refresh);
        let err = parse_body(
            br#"{"errcode":40013,"errmsg":"invalid appid rid: 1-2-3"}"#,
            token,
        )
        .expect_err("error");
        assert_eq!(err.errcode, Some(40013));
        assert_eq!(err.class, ErrorClass::Configuration);
        assert_eq!(err.rid.as_deref(), Some("1-2-3"));
        let busy =
            parse_body(br#"{"errcode":-1,"errmsg":"system error"}"#, token).expect_err("busy");
        assert_eq!(busy.class, ErrorClass::Transient);
        let junk = parse_body(b"<html>", token).expect_err("junk");
        assert_eq!(junk.class, ErrorClass::Transient);
    }

    #[test]
    fn expires_in_zero_is_a_dying_value_and_more_than_a_day_is_broken() {
        let token = errcode::classify_token_endpoint;
        let dying = parse_body(br#"{"access_token":"AT","expires_in":0}"#, token).expect("dying");
        assert_eq!(dying.expires_in, 0);
        let day = parse_body(br#"{"access_token":"AT","expires_in":86400}"#, token).expect("day");
        assert_eq!(day.expires_in, 86_400);
        for broken in [
            &br#"{"access_token":"AT","expires_in":86401}"#[..],
            br#"{"access_token":"AT","expires_in":18446744073709551615}"#,
            br#"{"access_token":"AT","expires_in":-5}"#,
            br#"{"access_token":"AT","expires_in":"7200"}"#,
            br#"{"access_token":"AT","expires_in":7200.5}"#,
            br#"{"access_token":"AT","expires_in":null}"#,
            br#"{"access_token":"AT"}"#,
            br#"{"access_token":"","expires_in":7200}"#,
        ] {
            let err = parse_body(broken, token).expect_err("out of range");
            assert_eq!(err.class, ErrorClass::Transient);
        }
    }
}

#[cfg(test)]
mod body_limit_tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;

    /// An endless answer is cut off at the limit, not read to the end.
    #[tokio::test]
    async fn an_answer_past_the_limit_is_refused_while_reading() {
        let endless = futures::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(axum::body::Bytes::from_static(&[b' '; 8192]))
        });
        let app = axum::Router::new().route(
            "/cgi-bin/token",
            axum::routing::get(move || async move { axum::body::Body::from_stream(endless) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = WechatClient::new(&UpstreamSettings {
            api_base: base.clone(),
            wecom_base: base,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        })
        .expect("client");
        let secret = SecretString::from("s");
        let answer = client
            .fetch(FetchRequest::OfficialToken {
                appid: "wx1",
                secret: &secret,
                mode: TokenMode::Classic,
                force_refresh: false,
            })
            .await;
        let err = answer.expect_err("too large");
        assert!(err.message.contains("over 65536 bytes"), "{}", err.message);
    }
}
