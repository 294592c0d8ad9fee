//! /cgi-bin/token (classic) and /cgi-bin/stable_token over HTTPS (rustls).

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::errcode::{self, ErrorClass};
use super::{Fetched, TokenApi, TokenRequest, UpstreamError};
use crate::config::{TokenMode, UpstreamSettings};

/// The longest token body we accept. WeChat says to reserve 512 characters; a body
/// much larger than that is not a token response.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The real WeChat client.
#[derive(Debug, Clone)]
pub struct WechatClient {
    http: reqwest::Client,
    api_base: String,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: Option<String>,
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
        })
    }

    async fn fetch(&self, request: TokenRequest<'_>) -> Result<Fetched, UpstreamError> {
        let secret = request.secret.expose_secret();
        let call = match request.mode {
            TokenMode::Classic => self
                .http
                .get(format!("{}/cgi-bin/token", self.api_base))
                .query(&[
                    ("grant_type", "client_credential"),
                    ("appid", request.appid),
                    ("secret", secret),
                ]),
            TokenMode::Stable => self
                .http
                .post(format!("{}/cgi-bin/stable_token", self.api_base))
                .json(&serde_json::json!({
                    "grant_type": "client_credential",
                    "appid": request.appid,
                    "secret": secret,
                    "force_refresh": request.force_refresh,
                })),
        };
        // The URL of a classic call carries the secret: strip it from every error.
        let response = call.send().await.map_err(network_error)?;
        let status = response.status();
        let body = response.bytes().await.map_err(network_error)?;
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
        if body.len() > MAX_BODY_BYTES {
            return Err(UpstreamError::transient(
                "WeChat's answer was too large to be a token",
            ));
        }
        parse_token_body(&body)
    }
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

fn parse_token_body(body: &[u8]) -> Result<Fetched, UpstreamError> {
    let parsed: TokenBody = serde_json::from_slice(body)
        .map_err(|e| UpstreamError::transient(format!("WeChat's answer was not JSON: {e}")))?;
    match parsed {
        TokenBody {
            errcode: Some(code),
            errmsg,
            ..
        } if code != 0 => {
            let (message, rid) = errcode::split_rid(errmsg.as_deref().unwrap_or(""));
            Err(UpstreamError {
                class: errcode::classify_token_endpoint(code),
                errcode: Some(code),
                message,
                rid,
            })
        }
        TokenBody {
            access_token: Some(access_token),
            expires_in: Some(expires_in),
            ..
        } if !access_token.is_empty() && expires_in > 0 => Ok(Fetched {
            access_token,
            expires_in,
        }),
        _ => Err(UpstreamError::transient(
            "WeChat's answer had neither a token with expires_in nor an errcode",
        )),
    }
}

impl TokenApi for WechatClient {
    fn fetch_access_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<Fetched, UpstreamError>> {
        self.fetch(request).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens_and_errors() {
        let ok = parse_token_body(br#"{"access_token":"AT","expires_in":7000}"#).expect("token");
        assert_eq!((ok.access_token.as_str(), ok.expires_in), ("AT", 7000));
        let err = parse_token_body(br#"{"errcode":40013,"errmsg":"invalid appid rid: 1-2-3"}"#)
            .expect_err("error");
        assert_eq!(err.errcode, Some(40013));
        assert_eq!(err.class, ErrorClass::Configuration);
        assert_eq!(err.rid.as_deref(), Some("1-2-3"));
        let busy =
            parse_token_body(br#"{"errcode":-1,"errmsg":"system error"}"#).expect_err("busy");
        assert_eq!(busy.class, ErrorClass::Transient);
        let junk = parse_token_body(b"<html>").expect_err("junk");
        assert_eq!(junk.class, ErrorClass::Transient);
    }
}
