//! `GET /v1/apps/{app}/timeline` and the dashboard's assets at `/ui`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{KEY, OTHER_KEY, Options, READ_ONLY_KEY, code, spawn_app, spawn_app_with};

/// Polls `app`'s timeline until `done` holds for its events (10 s at most).
async fn timeline_until(
    app: &crate::helpers::TestApp,
    path: &str,
    key: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = app.get(path, Some(key)).await;
        assert_eq!(status, 200, "{body}");
        let events = body["events"].as_array().expect("events").clone();
        if done(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "timeline never got there: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_timeline_shows_each_new_token_with_its_generation_and_nothing_for_a_read() {
    let mut app = spawn_app_with(Options {
        mode: "classic",
        fail_kinds: vec![wechat_emulator::FailKind::SystemBusy],
        ..Options::default()
    })
    .await;
    let first = app.token().await;
    let events = timeline_until(&app, "/v1/apps/shop/timeline", READ_ONLY_KEY, |e| {
        !e.is_empty()
    })
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["credential"], "access_token");
    assert_eq!(events[0]["event"], "refreshed");
    assert_eq!(events[0]["generation"], 1);
    assert!(events[0]["error"].is_null());
    let at = events[0]["at"].as_u64().expect("at in unix ms");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    assert!(at <= now_ms && now_ms - at < 60_000, "at={at} now={now_ms}");

    let (status, body) = app.invalidate(&first).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["refreshed"], true);
    // Reads serve the held value: no event for them.
    for _ in 0..5 {
        app.token().await;
    }
    let (status, body) = app.get("/v1/apps/shop/timeline", Some(READ_ONLY_KEY)).await;
    assert_eq!(status, 200);
    let events = body["events"].as_array().expect("events");
    let generations: Vec<&Value> = events.iter().map(|e| &e["generation"]).collect();
    assert_eq!(generations, [1, 2], "{events:?}");
    assert_eq!(app.upstream_calls(), 2);
    // Nothing in it is a token.
    let second = app.token().await;
    let text = body.to_string();
    assert!(!text.contains(&first) && !text.contains(&second), "{text}");

    // `since` (unix seconds) cuts older events off.
    let since = at / 1000 + 3600;
    let (status, body) = app
        .get(&format!("/v1/apps/shop/timeline?since={since}"), Some(KEY))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["events"], serde_json::json!([]));

    // After a restart the value loaded from the store is on the timeline, at the time
    // it was fetched; nothing is fetched for it.
    let (_, before) = app.get("/v1/apps/shop/timeline", Some(KEY)).await;
    app.restart().await;
    let (status, after) = app.get("/v1/apps/shop/timeline", Some(KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(after["events"], serde_json::json!([before["events"][1]]));
    assert_eq!(app.upstream_calls(), 2);

    // A failed refresh names the generation still held and WeChat's error.
    app.emulator.emulator.set_fail_rate(1.0);
    let (status, body) = app.invalidate(&second).await;
    assert_ne!(status, 200, "{body}");
    let (_, body) = app.get("/v1/apps/shop/timeline", Some(KEY)).await;
    let last = &body["events"][1];
    assert_eq!(last["event"], "failed", "{body}");
    assert_eq!(last["credential"], "access_token");
    assert_eq!(last["generation"], 2);
    assert_eq!(last["error"], "system error (errcode -1)");
}

#[tokio::test]
async fn the_timeline_shows_failures_with_their_message_and_ticket_refreshes_by_name() {
    let app = spawn_app().await;
    // `other` has a secret WeChat does not know: its refreshes fail.
    let events = timeline_until(&app, "/v1/apps/other/timeline", OTHER_KEY, |e| {
        !e.is_empty()
    })
    .await;
    assert_eq!(events[0]["event"], "failed");
    assert_eq!(events[0]["credential"], "access_token");
    assert!(events[0]["generation"].is_null(), "no value is held");
    let error = events[0]["error"].as_str().expect("error message");
    assert_eq!(error, "invalid appid (errcode 40013)");

    let (status, body) = app.get("/v1/apps/shop/ticket/jsapi", Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    let events = timeline_until(&app, "/v1/apps/shop/timeline", KEY, |e| {
        e.iter().any(|e| e["credential"] == "ticket/jsapi")
    })
    .await;
    let ticket: Vec<&Value> = events
        .iter()
        .filter(|e| e["credential"] == "ticket/jsapi")
        .collect();
    assert_eq!(ticket.len(), 1, "{events:?}");
    assert_eq!(ticket[0]["event"], "refreshed");
    assert_eq!(ticket[0]["generation"], 1);
}

#[tokio::test]
async fn the_timeline_refuses_unknown_apps_bad_since_and_keys_without_the_app() {
    let app = spawn_app().await;
    let (status, body) = app.get("/v1/apps/nope/timeline", Some(KEY)).await;
    assert_eq!((status, code(&body)), (404, "app_not_found"));
    for bad in ["abc", "-5", "1.5", ""] {
        let (status, body) = app
            .get(&format!("/v1/apps/shop/timeline?since={bad}"), Some(KEY))
            .await;
        assert_eq!((status, code(&body)), (400, "bad_request"), "since={bad}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("since")),
            "{body}"
        );
    }
    let (status, body) = app.get("/v1/apps/shop/timeline", Some(OTHER_KEY)).await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    let (status, body) = app.get("/v1/apps/shop/timeline", None).await;
    assert_eq!((status, code(&body)), (401, "unauthenticated"));
}

#[tokio::test]
async fn the_dashboard_is_served_with_a_strict_content_security_policy() {
    let app = spawn_app().await;
    for (path, content_type) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(content_type), "{path}");
        assert_eq!(
            header("content-security-policy"),
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        let body = response.text().await.expect("body");
        if content_type == "text/html" {
            // The one script is loaded from a file: the policy allows no inline script.
            assert_eq!(body.matches("<script").count(), 1);
            assert!(body.contains(r#"<script src="/ui/app.js" defer></script>"#));
        }
        if path == "/ui/app.js" {
            assert!(
                !body.contains("innerHTML"),
                "values are rendered as text only"
            );
            for token_route in ["/access_token", "/ticket/", "/proxy/"] {
                assert!(
                    !body.contains(token_route),
                    "the page never asks for a value"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_shows_a_value_another_instance_fetched_on_its_timeline() {
    let redis = crate::redis_server::RedisServer::start().await;
    let fleet = crate::fleet::spawn_fleet_with(
        2,
        "classic",
        &redis,
        wechat_emulator::Config::default(),
        "",
        "",
    )
    .await;
    let first = fleet.token(0).await;
    assert_eq!(fleet.token(1).await, first);
    let (a, b) = (&fleet.instances[0].base, &fleet.instances[1].base);
    let response = fleet
        .http
        .post(format!("{a}/v1/apps/shop/access_token/invalidate"))
        .bearer_auth(KEY)
        .json(&serde_json::json!({ "access_token": first }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let timeline = |base: &str| {
        let request = fleet
            .http
            .get(format!("{base}/v1/apps/shop/timeline"))
            .bearer_auth(KEY);
        async move {
            let body: Value = request
                .send()
                .await
                .expect("sent")
                .json()
                .await
                .expect("json");
            body["events"].as_array().expect("events").clone()
        }
    };
    let generations = |events: &[Value]| {
        let refreshed = events.iter().all(|e| e["event"] == "refreshed");
        let generations: Vec<&Value> = events.iter().map(|e| &e["generation"]).collect();
        refreshed && generations == [1, 2]
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let on_b = loop {
        let events = timeline(b).await;
        if generations(&events) {
            break events;
        }
        assert!(Instant::now() < deadline, "instance B shows {events:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The same events at the same times (when the value was fetched), whichever
    // instance fetched it.
    assert_eq!(timeline(a).await, on_b);
    assert_eq!(
        fleet.calls(),
        2,
        "one fetch at start, one for the invalidation"
    );
}
