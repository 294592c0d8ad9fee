use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;
use wechat_emulator::{FailKind, TokenCheck};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_30_percent_upstream_failures_clients_keep_getting_valid_tokens() {
    let app = Arc::new(
        spawn_app_with(Options {
            mode: "classic",
            expires_in: 6,
            overlap: Duration::from_secs(2),
            fail_rate: 0.3,
            // Evenly spread (the 1st, 4th, 7th... call of the app), so the few calls of this
            // run surely meet failures: a timeout at the cold start, then -1, then HTTP 500.
            fail_spread: true,
            fail_kinds: vec![FailKind::Timeout, FailKind::SystemBusy, FailKind::Http500],
            hang: Duration::from_secs(2),
            request_timeout_ms: 300,
            ..Options::default()
        })
        .await,
    );
    // Warm up: the very first fetch may itself fail; the keeper retries on its own.
    let warm_deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = app.get("/v1/apps/shop/access_token", Some(KEY)).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < warm_deadline,
            "no token within 10 s at 30% failures"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let clients = (0..8).map(|_| {
        let app = app.clone();
        tokio::spawn(async move {
            let mut served = 0u32;
            while Instant::now() < deadline {
                let (status, body) = app.get("/v1/apps/shop/access_token", Some(KEY)).await;
                assert_eq!(status, 200, "{body}");
                let token = body["access_token"].as_str().expect("token");
                assert_eq!(app.emulator.emulator.check_token(token), TokenCheck::Valid);
                served += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            served
        })
    });
    let served: u32 = join_all(clients)
        .await
        .into_iter()
        .map(|r| r.expect("client"))
        .sum();
    assert!(served > 500);
    let stats = app.stats();
    assert!(
        stats.injected_failures >= 1,
        "failures were injected: {stats:?}"
    );
    assert!(
        stats.tokens_issued >= 3,
        "tokens were renewed: {}",
        stats.tokens_issued
    );
    // ~10 s of 6 s tokens: a renewal every 3-3.6 s, a third of the calls failing and
    // retried (6 calls in a typical run). A retry loop would show as hundreds.
    println!("{} upstream calls: {stats:?}", stats.upstream_token_calls());
    assert!(
        stats.upstream_token_calls() <= 12,
        "{} upstream calls",
        stats.upstream_token_calls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_shows_as_a_configuration_error_and_does_not_hammer_wechat() {
    let app = spawn_app_with(Options {
        secret: "wrong-secret",
        ..Options::default()
    })
    .await;
    for _ in 0..50 {
        let (status, body) = app.get("/v1/apps/shop/access_token", Some(KEY)).await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(code(&body), "upstream_error");
        assert_eq!(body["error"]["wechat_errcode"], 40125);
        assert!(body["error"]["rid"].as_str().is_some_and(|r| !r.is_empty()));
    }
    assert_eq!(
        app.upstream_calls(),
        1,
        "one call, then back off for minutes"
    );

    let (status, body) = app.get("/v1/apps/shop", Some(KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "configuration_error");
    assert_eq!(body["last_error"]["class"], "configuration");
    assert_eq!(body["last_error"]["wechat_errcode"], 40125);
    assert!(body["next_refresh_in"].as_u64().expect("retry") >= 25);
    assert_eq!(body["upstream_calls_today"], 1);
    assert!(body["token"].is_null());
    let text = body.to_string();
    assert!(
        !text.contains("wrong-secret"),
        "status never shows a secret"
    );
}

#[tokio::test]
async fn the_daily_quota_stops_fetching_and_shows_in_status() {
    let app = spawn_app_with(Options {
        mode: "classic",
        quota: 1,
        ..Options::default()
    })
    .await;
    let token = app.token().await;
    let (status, body) = app.invalidate(&token).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["wechat_errcode"], 45009);
    for _ in 0..10 {
        app.invalidate(&token).await;
    }
    assert_eq!(app.upstream_calls(), 2, "no fetching after 45009");
    let (_, body) = app.get("/v1/apps/shop", Some(KEY)).await;
    assert_eq!(body["state"], "quota_exhausted");
    // The still-valid token keeps being served.
    assert_eq!(app.token().await, token);
}
