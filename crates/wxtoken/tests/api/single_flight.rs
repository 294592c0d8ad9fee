use std::collections::HashSet;
use std::time::Duration;

use futures::future::join_all;

use crate::helpers::*;

async fn thousand_cold_requests(mode: &'static str) {
    // Latency keeps the one upstream call in flight while all 1000 arrive.
    let app = spawn_app_with(Options {
        mode,
        latency: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let requests = (0..1000).map(|_| app.get("/v1/apps/shop/access_token", Some(KEY)));
    let answers = join_all(requests).await;

    let mut tokens = HashSet::new();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        tokens.insert(body["access_token"].as_str().expect("token").to_owned());
    }
    assert_eq!(tokens.len(), 1, "every caller gets the one fetched token");
    assert_eq!(app.upstream_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_cold_requests_make_exactly_one_stable_token_call() {
    thousand_cold_requests("stable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_cold_requests_make_exactly_one_classic_token_call() {
    thousand_cold_requests("classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cold_requests_all_get_the_error_of_the_one_failed_call() {
    let app = spawn_app_with(Options {
        secret: "wrong-secret",
        latency: Duration::from_millis(200),
        ..Options::default()
    })
    .await;
    let answers =
        join_all((0..200).map(|_| app.get("/v1/apps/shop/access_token", Some(KEY)))).await;
    for (status, body) in &answers {
        assert_eq!(*status, 502, "{body}");
        assert_eq!(code(body), "upstream_error");
        assert_eq!(body["error"]["wechat_errcode"], 40125);
    }
    assert_eq!(app.upstream_calls(), 1);
}

#[tokio::test]
async fn a_warm_token_is_served_from_memory() {
    let app = spawn_app().await;
    let first = app.token().await;
    for _ in 0..50 {
        assert_eq!(app.token().await, first);
    }
    assert_eq!(app.upstream_calls(), 1);
    let response = app
        .http
        .get(format!("{}/v1/apps/shop/access_token", app.base))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: serde_json::Value = response.json().await.expect("json");
    let expires_in = body["expires_in"].as_u64().expect("expires_in");
    assert!((7190..=7200).contains(&expires_in), "{expires_in}");
    let expires_at = body["expires_at"].as_u64().expect("expires_at");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(expires_at.abs_diff(now + expires_in) <= 2);
}
