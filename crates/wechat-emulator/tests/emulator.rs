//! End-to-end tests: a real emulator on a local port, driven over HTTP with reqwest,
//! as wxtoken will drive it. Durations are short real ones (well under a second each).

use std::time::Duration;

use serde_json::{Value, json};
use wechat_emulator::{Config, FailKind, RunningEmulator, TokenCheck, spawn};

const APP: &str = "wx0123456789abcdef";
const SECRET: &str = "the-secret";

fn config() -> Config {
    Config {
        expires_in: 2,
        overlap: Duration::from_millis(300),
        ..Config::default()
    }
    .with_app(APP, SECRET)
}

async fn start(config: Config) -> RunningEmulator {
    spawn(config).await.expect("emulator starts")
}

async fn classic(emu: &RunningEmulator, appid: &str, secret: &str) -> Value {
    reqwest::get(format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid={appid}&secret={secret}",
        emu.base_url()
    ))
    .await
    .expect("request")
    .json()
    .await
    .expect("json body")
}

async fn stable(emu: &RunningEmulator, secret: &str, force: bool) -> Value {
    reqwest::Client::new()
        .post(format!("{}/cgi-bin/stable_token", emu.base_url()))
        .json(&json!({
            "grant_type": "client_credential",
            "appid": APP,
            "secret": secret,
            "force_refresh": force,
        }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json body")
}

async fn domain_ip(emu: &RunningEmulator, token: &str) -> Value {
    reqwest::get(format!(
        "{}/cgi-bin/get_api_domain_ip?access_token={token}",
        emu.base_url()
    ))
    .await
    .expect("request")
    .json()
    .await
    .expect("json body")
}

fn token(v: &Value) -> String {
    v["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {v}"))
        .to_owned()
}

fn errcode(v: &Value) -> i64 {
    v["errcode"].as_i64().unwrap_or(0)
}

/// Asserts a WeChat error: the code, and a `rid: xxxxxxxx-xxxxxxxx-xxxxxxxx` suffix.
fn assert_wx_error(v: &Value, code: i64) {
    assert_eq!(errcode(v), code, "{v}");
    let msg = v["errmsg"].as_str().expect("errmsg");
    let (_, rid) = msg
        .rsplit_once(" rid: ")
        .unwrap_or_else(|| panic!("no rid: {msg}"));
    let groups: Vec<&str> = rid.split('-').collect();
    assert_eq!(groups.len(), 3, "{msg}");
    assert!(
        groups
            .iter()
            .all(|g| g.len() == 8 && g.chars().all(|c| c.is_ascii_hexdigit())),
        "{msg}"
    );
}

#[tokio::test]
async fn classic_rotation_kills_previous_after_overlap() {
    let emu = start(config()).await;
    let first = classic(&emu, APP, SECRET).await;
    assert_eq!(first["expires_in"], 2);
    let a = token(&first);
    assert!(a.len() >= 80, "{a}");
    let b = token(&classic(&emu, APP, SECRET).await);
    assert_ne!(a, b);
    // Both valid during the overlap...
    assert_eq!(domain_ip(&emu, &a).await["dns"][0], "101.226.90.149");
    assert_eq!(emu.emulator.check_token(&b), TokenCheck::Valid);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // ...then only the newest.
    assert_wx_error(&domain_ip(&emu, &a).await, 40001);
    assert_eq!(emu.emulator.check_token(&b), TokenCheck::Valid);
    let stats = emu.emulator.stats().app(APP);
    assert_eq!(stats.token_calls, 2);
    assert_eq!(stats.tokens_issued, 2);
    assert_eq!(stats.api_calls, 1);
    assert_eq!(stats.stale_rejections, 1);
}

#[tokio::test]
async fn stable_normal_mode_reuses_then_renews_within_last_overlap() {
    let emu = start(Config {
        overlap: Duration::from_millis(1700),
        ..config()
    })
    .await;
    let first = stable(&emu, SECRET, false).await;
    let a = token(&first);
    assert_eq!(first["expires_in"], 2);
    let again = stable(&emu, SECRET, false).await;
    assert_eq!(token(&again), a);
    assert_eq!(again["expires_in"], 1, "whole seconds left, floored");
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Under 1.7 s left: a new token, and the old one stays valid.
    let b = token(&stable(&emu, SECRET, false).await);
    assert_ne!(a, b);
    assert_eq!(emu.emulator.check_token(&a), TokenCheck::Valid);
    let stats = emu.emulator.stats().app(APP);
    assert_eq!(stats.stable_token_calls, 3);
    assert_eq!(stats.tokens_issued, 2);
}

#[tokio::test]
async fn stable_force_refresh_kills_old_token_and_respects_interval() {
    let emu = start(config()).await;
    let a = token(&stable(&emu, SECRET, false).await);
    let b = token(&stable(&emu, SECRET, true).await);
    assert_ne!(a, b);
    assert_wx_error(&domain_ip(&emu, &a).await, 40001);
    // Less than 30 s after the last force refresh: no refresh.
    assert_eq!(token(&stable(&emu, SECRET, true).await), b);
    assert_eq!(emu.emulator.check_token(&b), TokenCheck::Valid);
    let stats = emu.emulator.stats().app(APP);
    assert_eq!(stats.force_refresh_calls, 2);
    assert_eq!(stats.tokens_issued, 2);
}

#[tokio::test]
async fn stable_force_refresh_daily_limit() {
    let emu = start(Config {
        force_refresh_interval: Duration::ZERO,
        force_refresh_daily: 1,
        ..config()
    })
    .await;
    token(&stable(&emu, SECRET, true).await);
    assert_wx_error(&stable(&emu, SECRET, true).await, 45009);
}

#[tokio::test]
async fn credential_errors() {
    let emu = start(config()).await;
    assert_wx_error(&classic(&emu, "wxnobody", SECRET).await, 40013);
    assert_wx_error(&classic(&emu, APP, "wrong").await, 40001);
    assert_wx_error(&stable(&emu, "wrong", false).await, 40125);
    let missing: Value = reqwest::get(format!("{}/cgi-bin/token?appid={APP}", emu.base_url()))
        .await
        .expect("request")
        .json()
        .await
        .expect("json body");
    assert_wx_error(&missing, 40002);
    let garbage: Value = reqwest::Client::new()
        .post(format!("{}/cgi-bin/stable_token", emu.base_url()))
        .body("not json")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json body");
    assert_wx_error(&garbage, 47001);
}

#[tokio::test]
async fn daily_quota_gives_45009() {
    let emu = start(Config {
        quota: 2,
        ..config()
    })
    .await;
    token(&classic(&emu, APP, SECRET).await);
    token(&classic(&emu, APP, SECRET).await);
    assert_wx_error(&classic(&emu, APP, SECRET).await, 45009);
    let reset = reqwest::Client::new()
        .post(format!("{}/_emulator/reset_quota", emu.base_url()))
        .send()
        .await
        .expect("request");
    assert!(reset.status().is_success());
    token(&classic(&emu, APP, SECRET).await);
}

#[tokio::test]
async fn injected_system_busy_and_http500() {
    let emu = start(Config {
        fail_rate: 1.0,
        fail_kinds: vec![FailKind::SystemBusy],
        ..config()
    })
    .await;
    assert_wx_error(&classic(&emu, APP, SECRET).await, -1);
    assert_wx_error(&stable(&emu, SECRET, false).await, -1);
    let stats = emu.emulator.stats().app(APP);
    assert_eq!(stats.injected_failures, 2);
    assert_eq!(stats.tokens_issued, 0);
    assert_eq!(stats.upstream_token_calls(), 2);

    let emu = start(Config {
        fail_rate: 1.0,
        fail_kinds: vec![FailKind::Http500],
        ..config()
    })
    .await;
    let resp = reqwest::get(format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={SECRET}",
        emu.base_url()
    ))
    .await
    .expect("request");
    assert_eq!(resp.status(), 500);
    // Knobs can be turned at run time.
    emu.emulator.set_fail_rate(0.0);
    token(&classic(&emu, APP, SECRET).await);
}

async fn control(emu: &RunningEmulator, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/_emulator/{path}", emu.base_url()))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json body"))
}

#[tokio::test]
async fn the_fail_rate_is_switched_over_http_and_checks_count_nothing() {
    let emu = start(Config {
        fail_kinds: vec![FailKind::SystemBusy],
        ..config()
    })
    .await;
    let first = token(&classic(&emu, APP, SECRET).await);
    assert_eq!(
        control(&emu, "fail_rate", json!({"fail_rate": 1.0}))
            .await
            .0,
        200
    );
    assert_wx_error(&classic(&emu, APP, SECRET).await, -1);
    assert_eq!(
        control(&emu, "fail_rate", json!({"fail_rate": 0})).await.0,
        200
    );
    let second = token(&classic(&emu, APP, SECRET).await);
    assert_eq!(control(&emu, "fail_rate", json!({"rate": 1})).await.0, 400);
    token(&classic(&emu, APP, SECRET).await);

    let before = emu.emulator.stats().app(APP);
    assert_eq!(
        control(&emu, "check", json!({"access_token": second})).await,
        (200, json!({"state": "valid"}))
    );
    assert_eq!(
        control(&emu, "check", json!({"access_token": "never-issued"})).await,
        (200, json!({"state": "invalid"}))
    );
    assert_eq!(
        control(&emu, "check", json!({"ticket": "never-issued"})).await,
        (200, json!({"state": "invalid"}))
    );
    assert_eq!(control(&emu, "check", json!({})).await.0, 400);
    // The first token died with the overlap (300 ms) after the second was issued.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        control(&emu, "check", json!({"access_token": first})).await,
        (200, json!({"state": "invalid"}))
    );
    assert_eq!(emu.emulator.stats().app(APP), before);
}

/// The raw answer to a classic token call: status and body bytes, or the transport
/// error as text.
async fn classic_raw(emu: &RunningEmulator) -> Result<(u16, Vec<u8>), String> {
    let response = reqwest::get(format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={SECRET}",
        emu.base_url()
    ))
    .await
    .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, body.to_vec()))
}

#[tokio::test]
async fn injected_broken_answers_issue_nothing() {
    use wechat_emulator::HUGE_BODY_BYTES;
    for kind in FailKind::BROKEN {
        let emu = start(Config {
            fail_rate: 1.0,
            fail_kinds: vec![kind],
            ..config()
        })
        .await;
        let answer = classic_raw(&emu).await;
        match kind {
            FailKind::Reset => assert!(answer.is_err(), "{kind:?}: {answer:?}"),
            FailKind::Garbage => {
                let (status, body) = answer.expect("an answer");
                assert_eq!(status, 200);
                assert!(body.starts_with(b"<html>"), "{kind:?}");
            }
            FailKind::Truncated => {
                let (status, body) = answer.expect("an answer");
                assert_eq!(status, 200);
                let parsed = serde_json::from_slice::<Value>(&body);
                assert!(parsed.expect_err("cut off").is_eof(), "{kind:?}");
            }
            FailKind::Huge => {
                let (status, body) = answer.expect("an answer");
                assert_eq!((status, body.len()), (200, HUGE_BODY_BYTES));
                let parsed: Value = serde_json::from_slice(&body).expect("valid JSON");
                assert!(parsed.get("access_token").is_none());
            }
            other => unreachable!("{other:?} is not a broken answer"),
        }
        let stats = emu.emulator.stats().app(APP);
        assert_eq!(
            (
                stats.token_calls,
                stats.injected_failures,
                stats.tokens_issued
            ),
            (1, 1, 0),
            "{kind:?}"
        );
        emu.emulator.set_fail_rate(0.0);
        token(&classic(&emu, APP, SECRET).await);
    }
}

#[tokio::test]
async fn a_nonsense_expires_in_comes_with_a_real_token() {
    use wechat_emulator::BadExpiresIn;
    let emu = start(config()).await;
    for bad in BadExpiresIn::ALL {
        emu.emulator.set_bad_expires_in(Some(bad));
        for answer in [
            classic(&emu, APP, SECRET).await,
            stable(&emu, SECRET, false).await,
        ] {
            assert_eq!(answer["expires_in"], bad.json(), "{answer}");
            let value = answer["access_token"].as_str().expect("a token");
            assert_eq!(emu.emulator.check_token(value), TokenCheck::Valid);
        }
    }
    assert_eq!(
        BadExpiresIn::ALL.map(|b| b.json().to_string()),
        ["0", "-7200", "315360000000", "\"7200\""]
    );
    emu.emulator.set_bad_expires_in(None);
    let answer = classic(&emu, APP, SECRET).await;
    assert_eq!(answer["expires_in"], 2, "the truth again");
}

#[tokio::test]
async fn injected_timeout_hangs_then_answers() {
    let emu = start(Config {
        fail_rate: 1.0,
        fail_kinds: vec![FailKind::Timeout],
        hang: Duration::from_millis(500),
        ..config()
    })
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("client");
    let url = format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={SECRET}",
        emu.base_url()
    );
    let err = client.get(&url).send().await.expect_err("client times out");
    assert!(err.is_timeout(), "{err}");
    // As on WeChat, the call was processed although its answer never arrived.
    let stats = emu.emulator.stats().app(APP);
    assert_eq!(stats.injected_failures, 1);
    assert_eq!(stats.tokens_issued, 1);
    // A patient client gets a normal answer after the hang.
    let started = std::time::Instant::now();
    token(&classic(&emu, APP, SECRET).await);
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn latency_is_added_to_token_calls() {
    let emu = start(config()).await;
    emu.emulator.set_latency(Duration::from_millis(200));
    let started = std::time::Instant::now();
    token(&classic(&emu, APP, SECRET).await);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn ordinary_api_errors_and_stats() {
    let emu = start(Config {
        expires_in: 1,
        ..config()
    })
    .await;
    let a = token(&classic(&emu, APP, SECRET).await);
    let sent: Value = reqwest::Client::new()
        .post(format!(
            "{}/cgi-bin/message/custom/send?access_token={a}",
            emu.base_url()
        ))
        .json(&json!({"touser": "o1", "msgtype": "text", "text": {"content": "hi"}}))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json body");
    assert_eq!(sent, json!({"errcode": 0, "errmsg": "ok"}));
    let missing: Value = reqwest::get(format!("{}/cgi-bin/get_api_domain_ip", emu.base_url()))
        .await
        .expect("request")
        .json()
        .await
        .expect("json body");
    assert_wx_error(&missing, 41001);
    assert_wx_error(&domain_ip(&emu, "never-issued").await, 40001);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(emu.emulator.check_token(&a), TokenCheck::Expired);
    assert_wx_error(&domain_ip(&emu, &a).await, 42001);

    // The HTTP stats agree with the library call.
    let stats: wechat_emulator::Stats = reqwest::get(format!("{}/_emulator/stats", emu.base_url()))
        .await
        .expect("request")
        .json()
        .await
        .expect("stats json");
    let app = stats.app(APP);
    assert_eq!(app.api_calls, 1);
    assert_eq!(app.stale_rejections, 1);
    assert_eq!(stats.app(wechat_emulator::UNKNOWN_APP).stale_rejections, 1);
}

#[tokio::test]
async fn unknown_path_is_404_json() {
    let emu = start(config()).await;
    let resp = reqwest::get(format!("{}/cgi-bin/nope", emu.base_url()))
        .await
        .expect("request");
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.expect("json body");
    assert_eq!(body["errcode"], -1);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let emu = start(config()).await;
    let url = emu.base_url();
    drop(emu);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let result = reqwest::Client::new()
        .get(format!("{url}/_emulator/stats"))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(result.is_err(), "server still answering");
}

#[tokio::test]
async fn spread_failures_hit_exactly_the_given_share_in_turn() {
    let emu = start(Config {
        fail_rate: 0.3,
        fail_spread: true,
        fail_kinds: vec![FailKind::SystemBusy, FailKind::Http500],
        ..config()
    })
    .await;
    let mut failed = Vec::new();
    for call in 1..=10 {
        let response = reqwest::get(format!(
            "{}/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={SECRET}",
            emu.base_url()
        ))
        .await
        .expect("sent");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == 500 || body["errcode"] == -1 {
            failed.push((call, status));
        }
    }
    assert_eq!(failed, vec![(1, 200), (4, 500), (7, 200)]);
    assert_eq!(emu.emulator.stats().app(APP).injected_failures, 3);
}
