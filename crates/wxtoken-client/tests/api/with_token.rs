//! `with_token`: a WeChat call that survives one dead token.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use wxtoken_client::{CallError, WechatError};

use crate::helpers::*;

/// `GET /cgi-bin/get_api_domain_ip` at the emulator: an ordinary WeChat API that answers
/// 40001 to a dead token.
async fn domain_ips(http: &reqwest::Client, wechat: &str, token: &str) -> Result<Value, CallError> {
    let answer: Value = http
        .get(format!("{wechat}/cgi-bin/get_api_domain_ip"))
        .query(&[("access_token", token)])
        .send()
        .await?
        .json()
        .await?;
    Ok(WechatError::check(answer)?)
}

#[tokio::test]
async fn a_call_rejected_for_a_revoked_token_is_retried_once_with_a_fresh_one() {
    let server = spawn().await;
    let client = server.client();
    let dead = client.token("shop").await.expect("token");
    server.wechat().revoke_token(dead.value());
    let (http, wechat) = (reqwest::Client::new(), server.emulator.base_url());
    let calls = AtomicUsize::new(0);

    let ips = client
        .with_token("shop", |token| {
            calls.fetch_add(1, Ordering::SeqCst);
            let (http, wechat) = (&http, &wechat);
            async move { domain_ips(http, wechat, token.value()).await }
        })
        .await
        .expect("the second call succeeds");

    assert!(ips["dns"].is_array(), "{ips}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let stats = client.stats();
    assert_eq!((stats.requests, stats.retries), (2, 1), "{stats:?}");
    let wechat_stats = server.wechat().stats().app(APPID);
    assert_eq!(wechat_stats.stale_rejections, 1);
    assert_eq!(wechat_stats.api_calls, 1);
}

#[tokio::test]
async fn a_call_that_succeeds_is_made_once() {
    let server = spawn().await;
    let client = server.client();
    let (http, wechat) = (reqwest::Client::new(), server.emulator.base_url());
    let (http, wechat) = (&http, &wechat);
    let ips = client
        .with_token("shop", |token| async move {
            domain_ips(http, wechat, token.value()).await
        })
        .await
        .expect("valid token");
    assert!(ips["dns"].is_array());
    assert_eq!(client.stats().retries, 0);
    assert_eq!(client.stats().requests, 1);
}

#[tokio::test]
async fn a_second_rejection_is_returned_not_retried_again() {
    let server = spawn().await;
    let client = server.client();
    let dead = client.token("shop").await.expect("token");
    server.wechat().revoke_token(dead.value());
    let calls = AtomicUsize::new(0);

    let answer: Result<(), CallError> = client
        .with_token("shop", |_token| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err(WechatError {
                    errcode: 40001,
                    errmsg: "invalid credential".into(),
                }
                .into())
            }
        })
        .await;

    assert!(
        matches!(&answer, Err(CallError::Wechat(e)) if e.errcode == 40001),
        "{answer:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(client.stats().requests, 2, "one GET, one POST");
}

#[tokio::test]
async fn other_errors_are_returned_without_reporting_the_token() {
    let server = spawn().await;
    let client = server.client();
    let calls = AtomicUsize::new(0);

    let answer: Result<(), CallError> = client
        .with_token("shop", |_token| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err(WechatError {
                    errcode: 45009,
                    errmsg: "reach max api daily quota limit".into(),
                }
                .into())
            }
        })
        .await;

    assert!(
        matches!(&answer, Err(CallError::Wechat(e)) if e.errcode == 45009),
        "{answer:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(client.stats().requests, 1, "no report");
}

#[tokio::test]
async fn a_token_that_cannot_be_had_is_the_closures_error_type() {
    let server = spawn().await;
    let client = server.client();
    let answer: Result<(), CallError> = client.with_token("nope", |_token| async { Ok(()) }).await;
    assert!(
        matches!(
            answer,
            Err(CallError::Client(wxtoken_client::Error::AppNotFound { .. }))
        ),
        "{answer:?}"
    );
}
