use crate::helpers::*;

const TOKEN: &str = "/v1/apps/shop/access_token";
const INVALIDATE: &str = "/v1/apps/shop/access_token/invalidate";

fn message(body: &serde_json::Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn requests_without_a_valid_key_are_401() {
    let app = spawn_app().await;
    app.token().await;
    let (status, body) = app.get(TOKEN, None).await;
    assert_eq!((status, code(&body)), (401, "unauthenticated"));
    assert!(message(&body).contains("Authorization"));
    let (status, body) = app.get(TOKEN, Some("wxt_no_such_key_anywhere")).await;
    assert_eq!((status, code(&body)), (401, "unauthenticated"));
    let response = app
        .http
        .get(format!("{}{TOKEN}", app.base))
        .header("authorization", format!("Basic {KEY}"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 401);
    assert_eq!(app.upstream_calls(), 1, "only the warm-up fetch");
}

#[tokio::test]
async fn keys_without_the_app_or_scope_are_403_and_unknown_apps_404() {
    let app = spawn_app().await;
    let (status, body) = app.get(TOKEN, Some(OTHER_KEY)).await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    assert!(message(&body).contains("shop"));
    let (status, body) = app
        .post(INVALIDATE, Some(READ_ONLY_KEY), r#"{"access_token":"x"}"#)
        .await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    assert!(message(&body).contains("invalidate"));
    let (status, body) = app.get("/v1/apps/nope/access_token", Some(KEY)).await;
    assert_eq!((status, code(&body)), (404, "app_not_found"));
    assert!(message(&body).contains("nope"));
    let (status, _) = app.get(TOKEN, Some(READ_ONLY_KEY)).await;
    assert_eq!(status, 200, "read-only keys may read");
    // The listing shows only the apps a key may use.
    let (_, body) = app.get("/v1/apps", Some(OTHER_KEY)).await;
    let ids: Vec<_> = body["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .map(|a| a["id"].clone())
        .collect();
    assert_eq!(ids, vec![serde_json::json!("other")]);
}

#[tokio::test]
async fn malformed_or_mistyped_json_is_400_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        ("{not json", "invalid JSON"),
        ("", "JSON object"),
        (r#"{"access_token": 5}"#, "access_token"),
        (r#"{}"#, "access_token"),
        (r#"{"access_token": "x", "extra": 1}"#, "extra"),
        (r#"{"access_token": "  "}"#, "access_token"),
    ];
    for (body, needle) in cases {
        let (status, answer) = app.post(INVALIDATE, Some(KEY), body).await;
        assert_eq!((status, code(&answer)), (400, "bad_request"), "{body}");
        assert!(message(&answer).contains(needle), "{body}: {answer}");
    }
    for (query, needle) in [
        ("?min_ttl=abc", "min_ttl"),
        ("?min_ttl=-1", "min_ttl"),
        ("?min_ttl=99999", "7200"),
    ] {
        let (status, answer) = app.get(&format!("{TOKEN}{query}"), Some(KEY)).await;
        assert_eq!((status, code(&answer)), (400, "bad_request"), "{query}");
        assert!(message(&answer).contains(needle), "{query}: {answer}");
    }
}

#[tokio::test]
async fn bodies_over_64_kib_are_413() {
    let app = spawn_app().await;
    app.token().await;
    let big = format!(r#"{{"access_token": "{}"}}"#, "a".repeat(64 * 1024));
    let (status, body) = app.post(INVALIDATE, Some(KEY), big).await;
    assert_eq!((status, code(&body)), (413, "payload_too_large"));
    assert_eq!(app.upstream_calls(), 1, "only the warm-up fetch");
}

#[tokio::test]
async fn wrong_methods_are_405_and_unknown_paths_404_in_the_error_shape() {
    let app = spawn_app().await;
    let (status, body) = app.post(TOKEN, Some(KEY), "{}").await;
    assert_eq!((status, code(&body)), (405, "method_not_allowed"));
    let (status, body) = app.get(INVALIDATE, Some(KEY)).await;
    assert_eq!((status, code(&body)), (405, "method_not_allowed"));
    let (status, body) = app.get("/v2/whatever", Some(KEY)).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
}

#[tokio::test]
async fn health_and_readiness_need_no_key() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz", None).await.0, 200);
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    app.token().await;
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("wxtoken_upstream_calls_total"),
        "{metrics}"
    );
}
