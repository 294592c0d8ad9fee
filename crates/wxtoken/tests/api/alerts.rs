//! Webhook alerts, received by a hook listening on loopback: one message per incident
//! and one on its resolution, the WeCom robot's shape, retries, the rate limit, and
//! `GET /v1/alerts`.
//!
//! The test config's app `other` has an appid WeChat does not know, so every server
//! here opens one configuration-error incident at start.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use wechat_emulator::{Config as EmulatorConfig, FailKind};

use crate::fleet::spawn_fleet_with;
use crate::helpers::{KEY, OTHER_KEY, Options, READ_ONLY_KEY, TestApp, code, spawn_app_with};
use crate::redis_server::RedisServer;

const ADMIN_KEY: &str = "wxt_test_alerts_admin_key";
/// An appid the emulator is told about in the tests that add it at runtime.
const APPID3: &str = "wx3333333333333333";
const SECRET3: &str = "third-app-secret";

/// A webhook on loopback: keeps every body and answers from a script, then
/// 200 `{"errcode":0,"errmsg":"ok"}` (a WeCom robot's success).
#[derive(Clone, Default)]
struct Hook {
    received: Arc<Mutex<Vec<Value>>>,
    answers: Arc<Mutex<VecDeque<(u16, Value)>>>,
}

impl Hook {
    async fn start(answers: Vec<(u16, Value)>) -> (Self, String) {
        let hook = Hook {
            received: Arc::default(),
            answers: Arc::new(Mutex::new(answers.into())),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(hook.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (hook, format!("http://{addr}/hook?key=robot-key"))
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().expect("received").clone()
    }

    /// The bodies about `app`'s incidents (json format).
    fn about(&self, app: &str) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|b| b["app"] == app)
            .collect()
    }

    /// Waits (at most 20 s) until `f` holds of what was received.
    async fn until(&self, what: &str, f: impl Fn(&[Value]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let received = self.received();
            if f(&received) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; received {received:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(State(hook): State<Hook>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    hook.received.lock().expect("received").push(body);
    let (status, answer) = hook
        .answers
        .lock()
        .expect("answers")
        .pop_front()
        .unwrap_or((200, json!({"errcode": 0, "errmsg": "ok"})));
    (StatusCode::from_u16(status).expect("status"), Json(answer))
}

/// `[keeper]` extras, one `[[alerts]]` hook and an admin client (TOML leaked for the
/// test's lifetime: the options take a static string).
fn options(hook_url: &str, hook_extra: &str, keeper: &str) -> Options {
    let toml = format!(
        r#"{keeper}
[[alerts]]
url = "{hook_url}"
{hook_extra}
[[clients]]
name = "ops"
key = "{ADMIN_KEY}"
apps = ["*"]
scopes = ["read", "admin"]
"#
    );
    Options {
        keeper: Box::leak(toml.into_boxed_str()),
        ..Options::default()
    }
}

/// Adds (or changes) a runtime app `id` for APPID3 with `secret`.
async fn put_app(app: &TestApp, id: &str, secret: &str) {
    let response = app
        .http
        .put(format!("{}/v1/apps/{id}", app.base))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"kind": "official", "appid": APPID3, "secret": secret}))
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    assert!(status == 200 || status == 201, "PUT {id}: {status}");
}

fn app3_calls(app: &TestApp) -> u64 {
    app.emulator
        .emulator
        .stats()
        .app(APPID3)
        .upstream_token_calls()
}

async fn wait_calls(app: &TestApp, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app3_calls(app) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream calls {} < {n}",
            app3_calls(app)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_configuration_error_is_alerted_once_while_it_lasts_and_resolved_once() {
    let (hook, url) = Hook::start(vec![]).await;
    let app = spawn_app_with(options(&url, "", "")).await;
    app.emulator.emulator.add_app(APPID3, SECRET3);

    // A wrong secret: WeChat answers 40125.
    put_app(&app, "third", "a-wrong-secret").await;
    hook.until("the alert", |_| !hook.about("third").is_empty())
        .await;
    // Still wrong after a change (a new driver, a new failing call): nothing new is sent.
    put_app(&app, "third", "another-wrong-secret").await;
    wait_calls(&app, 2).await;
    // The right secret: the token is fetched and the incident resolved.
    put_app(&app, "third", SECRET3).await;
    hook.until("the resolution", |_| hook.about("third").len() >= 2)
        .await;
    assert_eq!(
        app3_calls(&app),
        3,
        "one failing call per secret, one success"
    );

    let third = hook.about("third");
    assert_eq!(third.len(), 2, "{third:#?}");
    let incident = "third/access_token#configuration_error";
    assert_eq!(third[0]["event"], "raised");
    assert_eq!(third[0]["incident"], incident);
    assert_eq!(third[0]["kind"], "configuration_error");
    let summary = third[0]["summary"].as_str().expect("summary");
    assert!(summary.contains("errcode 40125"), "{summary}");
    assert!(
        !summary.contains("wrong-secret"),
        "never the secret: {summary}"
    );
    let mut fields: Vec<&String> = third[0].as_object().expect("object").keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        ["app", "at", "event", "incident", "kind", "summary"]
    );
    assert_eq!(third[1]["event"], "resolved");
    assert_eq!(third[1]["incident"], incident);

    // GET /v1/alerts: `other` (unknown appid) is still open, `third` is not; the recent
    // events are newest first.
    let (status, body) = app.get("/v1/alerts", Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    let open: Vec<&str> = body["open"]
        .as_array()
        .expect("open")
        .iter()
        .map(|o| o["incident"].as_str().expect("incident"))
        .collect();
    assert_eq!(open, ["other/access_token#configuration_error"]);
    let mut fields: Vec<&String> = body["open"][0].as_object().expect("o").keys().collect();
    fields.sort();
    assert_eq!(fields, ["app", "incident", "kind", "since", "summary"]);
    let recent = body["recent"].as_array().expect("recent");
    let third_events: Vec<&str> = recent
        .iter()
        .filter(|e| e["app"] == "third")
        .map(|e| e["event"].as_str().expect("event"))
        .collect();
    assert_eq!(third_events, ["resolved", "raised"]);
    let mut fields: Vec<&String> = recent[0].as_object().expect("e").keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        ["app", "at", "event", "incident", "kind", "summary"]
    );

    // A key sees only its apps' incidents; no key, no answer.
    let (status, body) = app.get("/v1/alerts", Some(READ_ONLY_KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(body["open"], json!([]), "{body}");
    let (_, body) = app.get("/v1/alerts", Some(OTHER_KEY)).await;
    assert_eq!(body["open"].as_array().expect("open").len(), 1, "{body}");
    let (status, body) = app.get("/v1/alerts", None).await;
    assert_eq!((status, code(&body)), (401, "unauthenticated"));

    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    for series in [
        r#"wxtoken_alerts_total{kind="configuration_error",event="raised"}"#,
        r#"wxtoken_alerts_total{kind="configuration_error",event="resolved"}"#,
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
}

#[tokio::test]
async fn a_credential_about_to_lapse_after_failed_refreshes_is_alerted_and_resolved() {
    let (hook, url) = Hook::start(vec![]).await;
    // Ten-second tokens refreshed 6 s ahead; under 8 s left counts as expiring.
    let mut options = options(&url, "", "refresh_ahead_secs = 6\nexpiry_alert_secs = 8");
    options.mode = "classic";
    options.expires_in = 10;
    options.fail_kinds = vec![FailKind::SystemBusy];
    let app = spawn_app_with(options).await;
    app.token().await;
    let calls_before = app.upstream_calls();
    app.emulator.emulator.set_fail_rate(1.0);
    hook.until("the expiring alert", |_| {
        hook.about("shop").iter().any(|b| b["kind"] == "expiring")
    })
    .await;
    assert!(app.upstream_calls() > calls_before, "a refresh was tried");
    app.emulator.emulator.set_fail_rate(0.0);
    hook.until("the resolution", |_| hook.about("shop").len() >= 2)
        .await;
    let shop = hook.about("shop");
    let events: Vec<(&str, &str)> = shop
        .iter()
        .map(|b| {
            (
                b["kind"].as_str().expect("present"),
                b["event"].as_str().expect("present"),
            )
        })
        .collect();
    assert_eq!(events, [("expiring", "raised"), ("expiring", "resolved")]);
    assert_eq!(shop[0]["incident"], "shop/access_token#expiring");
    // Transient failures are not configuration errors.
    assert!(!shop.iter().any(|b| b["kind"] == "configuration_error"));
}

#[tokio::test]
async fn a_wecom_robot_gets_its_markdown_message_and_a_refusal_is_retried() {
    // The robot refuses the first message (errcode 45009: too many), then accepts.
    let refusal = (
        200,
        json!({"errcode": 45009, "errmsg": "api freq out of limit"}),
    );
    let (hook, url) = Hook::start(vec![refusal]).await;
    let app = spawn_app_with(options(&url, "format = \"wecom\"", "")).await;
    hook.until("two deliveries", |r| r.len() >= 2).await;
    let received = hook.received();
    assert_eq!(received[0], received[1], "the same message again");
    let body = &received[0];
    assert_eq!(body.as_object().expect("object").len(), 2, "{body}");
    assert_eq!(body["msgtype"], "markdown");
    assert_eq!(body["markdown"].as_object().expect("markdown").len(), 1);
    let content = body["markdown"]["content"].as_str().expect("content");
    let (_, alerts) = app.get("/v1/alerts", Some(KEY)).await;
    let open = &alerts["open"][0];
    let since = time::OffsetDateTime::from_unix_timestamp(open["since"].as_i64().expect("present"))
        .expect("present")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("present");
    let expected = format!(
        "**wxtoken alert: <font color=\"warning\">configuration_error</font>**\n\
         > app: other\n\
         > incident: other/access_token#configuration_error\n\
         > {}\n\
         > time: {since}",
        open["summary"].as_str().expect("present")
    );
    assert_eq!(content, expected);
}

#[tokio::test]
async fn a_hook_that_fails_then_answers_gets_the_message_once() {
    let (hook, url) = Hook::start(vec![(500, json!({}))]).await;
    let app = spawn_app_with(options(&url, "", "")).await;
    app.emulator.emulator.add_app(APPID3, SECRET3);
    hook.until("the retried message", |r| r.len() >= 2).await;
    // A second incident, delivered after the first in order: once it arrives, no retry
    // of the first can follow.
    put_app(&app, "third", "a-wrong-secret").await;
    hook.until("the second incident", |_| !hook.about("third").is_empty())
        .await;
    let received = hook.received();
    let incidents: Vec<&str> = received
        .iter()
        .map(|b| b["incident"].as_str().expect("present"))
        .collect();
    assert_eq!(
        incidents,
        [
            "other/access_token#configuration_error",
            "other/access_token#configuration_error",
            "third/access_token#configuration_error"
        ]
    );
}

#[tokio::test]
async fn more_incidents_than_the_rate_limit_are_not_all_sent_in_the_same_minute() {
    let (hook, url) = Hook::start(vec![]).await;
    let app = spawn_app_with(options(&url, "max_per_minute = 2", "")).await;
    app.emulator.emulator.add_app(APPID3, SECRET3);
    for id in ["third", "fourth", "fifth"] {
        put_app(&app, id, "a-wrong-secret").await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = app.get("/v1/alerts", Some(KEY)).await;
        if body["open"].as_array().expect("open").len() == 4 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hook.until("two messages", |r| r.len() >= 2).await;
    // Four incidents are open; for the next three seconds the hook still has two.
    let watch_until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < watch_until {
        assert_eq!(
            hook.received().len(),
            2,
            "the limit holds within the minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_down_is_alerted_and_resolved_when_it_answers_again() {
    let (hook, url) = Hook::start(vec![]).await;
    let mut redis = RedisServer::start().await;
    // Four-second tokens renewed in their last second: refreshes keep coming.
    let emulator = EmulatorConfig {
        expires_in: 4,
        overlap: Duration::from_secs(1),
        ..EmulatorConfig::default()
    };
    let extra = format!("[keeper]\nstable_window_secs = 1\n[[alerts]]\nurl = \"{url}\"\n");
    let fleet = spawn_fleet_with(1, "stable", &redis, emulator, "", &extra).await;
    fleet.token(0).await;
    redis.kill().await;
    // (The token also runs short meanwhile: `expiring` incidents are not looked at.)
    let about_store = || -> Vec<Value> {
        hook.received()
            .into_iter()
            .filter(|b| b["kind"] == "store_unreachable")
            .collect()
    };
    hook.until("the store alert", |_| !about_store().is_empty())
        .await;
    let received = about_store();
    assert_eq!(received[0]["incident"], "store#unreachable");
    assert_eq!(received[0]["kind"], "store_unreachable");
    assert_eq!(received[0]["app"], Value::Null);
    assert_eq!(received[0]["event"], "raised");
    redis.restart().await;
    hook.until("the resolution", |_| about_store().len() >= 2)
        .await;
    let received = about_store();
    assert_eq!(received.len(), 2, "{received:#?}");
    assert_eq!(received[1]["incident"], "store#unreachable");
    assert_eq!(received[1]["event"], "resolved");
}

/// Sends SIGHUP to a `wxtoken serve` process.
fn hangup(process: &crate::helpers::Process) {
    let pid = process.child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// The open incidents of a served process.
async fn open_incidents(base: &str) -> Vec<String> {
    let body: Value = reqwest::Client::new()
        .get(format!("{base}/v1/alerts"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    body["open"]
        .as_array()
        .expect("open")
        .iter()
        .filter_map(|o| o["incident"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_alert_hooks() {
    let (hook, url) = Hook::start(vec![]).await;
    let (_emulator, _dir, config) = crate::helpers::emulator_and_config(&Options::default()).await;
    let original = std::fs::read_to_string(&config).expect("config");
    let process = crate::helpers::serve(&config).await;
    // An app whose secret WeChat refuses: a configuration error as soon as it starts.
    let broken = |id: &str| {
        format!(
            "\n[[apps]]\nid = \"{id}\"\nappid = \"{}\"\nsecret = \"a-wrong-secret\"\n",
            crate::helpers::APPID
        )
    };

    // No hook at start; the reload adds one and an app that fails: its alert is sent.
    let with_hook = format!(
        "{original}{}\n[[alerts]]\nurl = \"{url}\"\n",
        broken("broken")
    );
    std::fs::write(&config, &with_hook).expect("write");
    hangup(&process);
    hook.until("the reloaded hook's alert", |_| {
        !hook.about("broken").is_empty()
    })
    .await;
    let sent = hook.about("broken");
    assert_eq!(
        sent[0]["incident"],
        "broken/access_token#configuration_error"
    );
    assert_eq!(sent[0]["event"], "raised");
    // `other` failed before there was a hook: its incident is open, not sent again.
    assert!(hook.about("other").is_empty(), "{:#?}", hook.received());

    // The hook removed: a new app's incident opens, and nothing is sent.
    let without = format!("{original}{}{}", broken("broken"), broken("broken2"));
    std::fs::write(&config, &without).expect("write");
    hangup(&process);
    let incident = "broken2/access_token#configuration_error".to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !open_incidents(&process.base).await.contains(&incident) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{incident} never opened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give a (wrongly) kept hook the time a delivery takes on loopback.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hook.about("broken2").is_empty(), "{:#?}", hook.received());
}
