//! WeChat's quota APIs: `POST /cgi-bin/openapi/quota/get` (an account's daily figures
//! for one API, with its token) and `POST /cgi-bin/clear_quota/v2` (resets the daily
//! counters with the appid and AppSecret, so it works when the token quota itself is
//! gone). The appid and secret go in the query string, as WxJava sends them.

use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde::Deserialize;

use super::errcode::{self, ErrorClass};
use super::token::{WechatClient, send};
use super::{QuotaFigures, UpstreamError};

/// Quota answers are a few dozen bytes.
const MAX_QUOTA_BODY_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
struct QuotaBody {
    errcode: Option<i64>,
    errmsg: Option<String>,
    quota: Option<QuotaFigures>,
}

impl WechatClient {
    /// `openapi/quota/get` for `cgi_path` (e.g. `/cgi-bin/token`).
    pub(super) async fn quota_get(
        &self,
        access_token: &str,
        cgi_path: &str,
    ) -> Result<QuotaFigures, UpstreamError> {
        let call = self
            .http
            .post(format!("{}/cgi-bin/openapi/quota/get", self.api_base))
            .query(&[("access_token", access_token)])
            .json(&serde_json::json!({ "cgi_path": cgi_path }));
        let body = parse(&send(call, MAX_QUOTA_BODY_BYTES).await?)?;
        body.quota
            .ok_or_else(|| UpstreamError::transient("WeChat's quota/get answer had no quota"))
    }

    /// `clear_quota/v2` for `appid`: resets its daily counters (10 a month on WeChat).
    pub(super) async fn clear_quota(
        &self,
        appid: &str,
        secret: &SecretString,
    ) -> Result<(), UpstreamError> {
        let call = self
            .http
            .post(format!("{}/cgi-bin/clear_quota/v2", self.api_base))
            .query(&[("appid", appid), ("appsecret", secret.expose_secret())]);
        parse(&send(call, MAX_QUOTA_BODY_BYTES).await?).map(|_| ())
    }
}

/// WeChat's error, or the body of a success.
fn parse(body: &[u8]) -> Result<QuotaBody, UpstreamError> {
    let parsed: QuotaBody = serde_json::from_slice(body)
        .map_err(|e| UpstreamError::transient(format!("WeChat's answer was not JSON: {e}")))?;
    match parsed.errcode {
        Some(code) if code != 0 => {
            let (message, rid) = errcode::split_rid(parsed.errmsg.as_deref().unwrap_or(""));
            Err(UpstreamError {
                class: classify(code),
                errcode: Some(code),
                message,
                rid,
            })
        }
        _ => Ok(parsed),
    }
}

/// 48006 (this month's clears are used up) waits for next month like a daily quota;
/// the rest as for any API called with a token.
fn classify(code: i64) -> ErrorClass {
    match code {
        48006 => ErrorClass::QuotaExhausted,
        other => errcode::classify_api(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_figures_and_errors() {
        let ok = parse(
            br#"{"errcode":0,"errmsg":"ok","quota":{"daily_limit":2000,"used":3,"remain":1997}}"#,
        )
        .expect("ok");
        assert_eq!(
            ok.quota,
            Some(QuotaFigures {
                daily_limit: 2000,
                used: 3,
                remain: 1997
            })
        );
        let over = parse(br#"{"errcode":48006,"errmsg":"forbid to clear quota because of reaching the limit rid: 1-2-3"}"#)
            .err()
            .expect("an error");
        assert_eq!(
            (over.errcode, over.class, over.rid.as_deref()),
            (Some(48006), ErrorClass::QuotaExhausted, Some("1-2-3"))
        );
        let path = parse(br#"{"errcode":76021,"errmsg":"cgi_path not found"}"#)
            .err()
            .expect("an error");
        assert_eq!(path.class, ErrorClass::Configuration);
    }
}
