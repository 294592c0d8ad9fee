use std::collections::HashSet;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use sha1::Digest;
use wechat_emulator::TokenCheck;

use crate::helpers::*;

/// The JS-SDK signature, computed here independently of the server's code.
pub fn expected_signature(ticket: &str, body: &Value) -> String {
    let plain = format!(
        "jsapi_ticket={ticket}&noncestr={}&timestamp={}&url={}",
        body["nonceStr"].as_str().expect("nonceStr"),
        body["timestamp"].as_u64().expect("timestamp"),
        body["url"].as_str().expect("url"),
    );
    hex::encode(sha1::Sha1::digest(plain.as_bytes()))
}

async fn ticket(app: &TestApp, path: &str) -> String {
    let (status, body) = app.get(path, Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    body["ticket"].as_str().expect("ticket").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_ticket_requests_make_one_ticket_call() {
    let app = spawn_app_with(Options {
        latency: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let answers =
        join_all((0..1000).map(|_| app.get("/v1/apps/shop/ticket/jsapi", Some(KEY)))).await;
    let mut tickets = HashSet::new();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        tickets.insert(body["ticket"].as_str().expect("ticket").to_owned());
        assert!(body["expires_in"].as_u64().expect("expires_in") > 7000);
    }
    assert_eq!(tickets.len(), 1);
    let only = tickets.into_iter().next().expect("one ticket");
    assert_eq!(app.emulator.emulator.check_ticket(&only), TokenCheck::Valid);
    assert_eq!(app.stats().ticket_calls, 1);
    assert_eq!(
        app.upstream_calls(),
        1,
        "one token fetch served the ticket fetch too"
    );
}

#[tokio::test]
async fn tickets_are_fetched_only_once_somebody_asks() {
    let app = spawn_app().await;
    app.token().await;
    let (_, status) = app.get("/v1/apps/shop", Some(KEY)).await;
    assert_eq!(status["tickets"]["jsapi"]["state"], "not_requested");
    assert_eq!(app.stats().ticket_calls, 0);
    ticket(&app, "/v1/apps/shop/ticket/jsapi").await;
    let (_, status) = app.get("/v1/apps/shop", Some(KEY)).await;
    assert_eq!(status["tickets"]["jsapi"]["state"], "ok");
    assert_eq!(status["tickets"]["jsapi"]["ticket"]["generation"], 1);
    assert_eq!(status["tickets"]["wx_card"]["state"], "not_requested");
    assert_eq!(status["upstream_calls_by_api"]["getticket_jsapi"], 1);
}

#[tokio::test]
async fn a_ticket_fetch_with_a_dead_token_refreshes_the_token_and_retries_once() {
    let app = spawn_app_with(Options {
        mode: "classic",
        ..Options::default()
    })
    .await;
    let first = ticket(&app, "/v1/apps/shop/ticket/jsapi").await;
    let token = app.token().await;
    // The token dies underneath (as a secret reset would kill it).
    app.emulator.emulator.revoke_token(&token);

    let (status, body) = app
        .post(
            "/v1/apps/shop/ticket/jsapi/invalidate",
            Some(KEY),
            json!({ "ticket": first }).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["refreshed"], true);
    let second = body["ticket"].as_str().expect("ticket");
    assert_ne!(second, first);
    assert_eq!(
        app.emulator.emulator.check_ticket(second),
        TokenCheck::Valid
    );

    let stats = app.stats();
    assert_eq!(
        stats.ticket_calls, 3,
        "first ticket, the call with the dead token, the retry"
    );
    assert_eq!(stats.token_calls, 2, "the dead token was replaced once");
    let fresh = app.token().await;
    assert_ne!(fresh, token);
    assert_eq!(app.emulator.emulator.check_token(&fresh), TokenCheck::Valid);
}

#[tokio::test]
async fn tickets_survive_a_restart_without_an_upstream_call() {
    let mut app = spawn_app().await;
    let before = ticket(&app, "/v1/apps/shop/ticket/wx_card").await;
    app.restart().await;
    let after = ticket(&app, "/v1/apps/shop/ticket/wx_card").await;
    assert_eq!(after, before);
    assert_eq!(app.stats().ticket_calls, 1);
    assert_eq!(app.upstream_calls(), 1);
}

#[tokio::test]
async fn jssdk_config_signs_the_page_url_without_its_fragment() {
    let app = spawn_app().await;
    let path = "/v1/apps/shop/jssdk/config";
    let (status, body) = app
        .post(
            path,
            Some(KEY),
            r#"{"url": "https://shop.example/p?a=1#/cart"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["appId"], APPID);
    assert_eq!(body["url"], "https://shop.example/p?a=1");
    assert_eq!(body["nonceStr"].as_str().expect("nonce").len(), 16);
    let jsapi = ticket(&app, "/v1/apps/shop/ticket/jsapi").await;
    assert_eq!(body["signature"], expected_signature(&jsapi, &body));
    let (_, again) = app
        .post(path, Some(KEY), r#"{"url": "https://shop.example/"}"#)
        .await;
    assert_ne!(
        again["nonceStr"], body["nonceStr"],
        "a fresh nonce every time"
    );
    assert_eq!(app.stats().ticket_calls, 1);
}

#[tokio::test]
async fn card_sign_signs_the_sorted_values() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/v1/apps/shop/jssdk/card_sign",
            Some(KEY),
            r#"{"card_id": "pXch-jnOlGtbuWwIO2NDftZeynRE", "openid": "o1"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let api_ticket = ticket(&app, "/v1/apps/shop/ticket/wx_card").await;
    let mut values = [
        api_ticket,
        body["timestamp"].as_str().expect("timestamp").to_owned(),
        "pXch-jnOlGtbuWwIO2NDftZeynRE".to_owned(),
        String::new(),
        "o1".to_owned(),
        body["nonce_str"].as_str().expect("nonce").to_owned(),
    ];
    values.sort();
    let expected = hex::encode(sha1::Sha1::digest(values.concat().as_bytes()));
    assert_eq!(body["signature"], expected.as_str());
    let ext: Value =
        serde_json::from_str(body["card_ext"].as_str().expect("card_ext")).expect("json");
    assert_eq!(ext["signature"], expected.as_str());
}

#[tokio::test]
async fn bad_ticket_requests_are_400_naming_what_is_allowed() {
    let app = spawn_app().await;
    let cases = [
        ("/v1/apps/shop/ticket/agent_config", "jsapi, wx_card"),
        ("/v1/apps/hr/ticket/wx_card", "jsapi, agent_config"),
        ("/v1/apps/shop/ticket/nope", "allowed"),
    ];
    for (path, needle) in cases {
        let (status, body) = app.get(path, Some(KEY)).await;
        assert_eq!((status, code(&body)), (400, "bad_request"), "{path}");
        assert!(
            body["error"]["message"]
                .as_str()
                .expect("msg")
                .contains(needle),
            "{body}"
        );
    }
    let config = "/v1/apps/shop/jssdk/config";
    for (payload, needle) in [
        (r#"{"url": ""}"#, "url"),
        (r#"{"url": "ftp://shop.example/"}"#, "url"),
        (r#"{"url": "/relative/page"}"#, "url"),
        (r#"{}"#, "url"),
        (r#"{"url": 7}"#, "url"),
        (
            r#"{"url": "https://shop.example/", "ticket": "wx_card"}"#,
            "card_sign",
        ),
        (
            r#"{"url": "https://shop.example/", "ticket": "agent_config"}"#,
            "jsapi, wx_card",
        ),
    ] {
        let (status, body) = app.post(config, Some(KEY), payload).await;
        assert_eq!((status, code(&body)), (400, "bad_request"), "{payload}");
        assert!(
            body["error"]["message"]
                .as_str()
                .expect("msg")
                .contains(needle),
            "{payload}: {body}"
        );
    }
    let (status, body) = app
        .post(
            "/v1/apps/hr/jssdk/card_sign",
            Some(KEY),
            r#"{"card_id": "c"}"#,
        )
        .await;
    assert_eq!((status, code(&body)), (400, "bad_request"), "{body}");
    assert_eq!(app.stats().ticket_calls, 0, "no bad request reached WeChat");
}

/// Ticket calls are scarce: a ticket nobody asks for is left to expire, after a restart
/// too, and fetched again on the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_nobody_asks_for_is_not_refreshed_even_after_a_restart() {
    let mut app = spawn_app_with(Options {
        ticket_expires_in: 3,
        keeper: "ticket_idle_secs = 1",
        ..Options::default()
    })
    .await;
    let (status, body) = app.get("/v1/apps/shop/ticket/jsapi", Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    app.restart().await;
    // The stored ticket comes back without a call; left alone past its refresh time
    // (1.5 s before its expiry) and its expiry, it is not fetched again.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    assert_eq!(
        app.stats().ticket_calls,
        1,
        "no refresh for a ticket nobody wants"
    );
    let (status, body) = app.get("/v1/apps/shop/ticket/jsapi", Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.stats().ticket_calls, 2, "fetched again when asked for");
}
