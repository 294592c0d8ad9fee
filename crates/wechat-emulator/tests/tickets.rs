//! End-to-end tests of WeCom tokens and of the JS-SDK ticket endpoints (official
//! `ticket/getticket`, WeCom `get_jsapi_ticket` and `ticket/get`), over HTTP as
//! wxtoken drives them. The only sleep is one short expiry (about a second).

use std::time::Duration;

use serde_json::Value;
use wechat_emulator::{
    AppStats, Config, FailKind, RunningEmulator, Stats, TokenCheck, UNKNOWN_APP, spawn, wecom_key,
};

const APP: &str = "wx0123456789abcdef";
const SECRET: &str = "the-secret";
const CORP: &str = "ww0123456789abcdef";
const AGENT: u64 = 1_000_002;
const AGENT_SECRET: &str = "agent-secret";
const OTHER_AGENT: u64 = 1_000_003;
const OTHER_SECRET: &str = "other-agent-secret";
const FOREIGN_CORP: &str = "wwforeign";
const FOREIGN_SECRET: &str = "foreign-secret";

fn config() -> Config {
    Config::default()
        .with_app(APP, SECRET)
        .with_wecom_app(CORP, AGENT, AGENT_SECRET)
        .with_wecom_app(CORP, OTHER_AGENT, OTHER_SECRET)
        .with_wecom_app(FOREIGN_CORP, 1, FOREIGN_SECRET)
}

async fn start(config: Config) -> RunningEmulator {
    spawn(config).await.expect("emulator starts")
}

async fn get(emu: &RunningEmulator, path_and_query: &str) -> Value {
    reqwest::get(format!("{}{path_and_query}", emu.base_url()))
        .await
        .expect("request")
        .json()
        .await
        .expect("json body")
}

async fn official_token(emu: &RunningEmulator) -> String {
    let v = get(
        emu,
        &format!("/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={SECRET}"),
    )
    .await;
    field(&v, "access_token")
}

async fn gettoken(emu: &RunningEmulator, corpid: &str, secret: &str) -> Value {
    get(
        emu,
        &format!("/cgi-bin/gettoken?corpid={corpid}&corpsecret={secret}"),
    )
    .await
}

async fn getticket(emu: &RunningEmulator, token: &str, kind: &str) -> Value {
    get(
        emu,
        &format!("/cgi-bin/ticket/getticket?access_token={token}&type={kind}"),
    )
    .await
}

async fn corp_ticket(emu: &RunningEmulator, token: &str) -> Value {
    get(
        emu,
        &format!("/cgi-bin/get_jsapi_ticket?access_token={token}"),
    )
    .await
}

async fn agent_ticket(emu: &RunningEmulator, token: &str, kind: &str) -> Value {
    get(
        emu,
        &format!("/cgi-bin/ticket/get?access_token={token}&type={kind}"),
    )
    .await
}

async fn domain_ip(emu: &RunningEmulator, token: &str) -> Value {
    get(
        emu,
        &format!("/cgi-bin/get_api_domain_ip?access_token={token}"),
    )
    .await
}

fn field(v: &Value, name: &str) -> String {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
        .to_owned()
}

/// Asserts a success of a WeCom token or any ticket endpoint: errcode 0, "ok",
/// `expires_in`, and a WeChat-shaped random `name`, which it returns.
fn assert_ok(v: &Value, name: &str, expires_in: u64) -> String {
    assert_eq!(v["errcode"], 0, "{v}");
    assert_eq!(v["errmsg"], "ok", "{v}");
    assert_eq!(v["expires_in"], expires_in, "{v}");
    let value = field(v, name);
    assert!(value.len() >= 86, "{value}");
    assert!(
        value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "{value}"
    );
    value
}

/// Asserts a WeChat error: the code, and a `rid: ` suffix on the message.
fn assert_wx_error(v: &Value, code: i64) {
    assert_eq!(v["errcode"].as_i64(), Some(code), "{v}");
    let msg = v["errmsg"].as_str().expect("errmsg");
    assert!(msg.contains(" rid: "), "{msg}");
}

fn app_stats(emu: &RunningEmulator, key: &str) -> AppStats {
    emu.emulator.stats().app(key)
}

#[tokio::test]
async fn official_tickets_jsapi_and_wx_card() {
    let emu = start(Config {
        ticket_expires_in: 3600,
        ..config()
    })
    .await;
    let token = official_token(&emu).await;
    let jsapi = assert_ok(&getticket(&emu, &token, "jsapi").await, "ticket", 3600);
    let card = assert_ok(&getticket(&emu, &token, "wx_card").await, "ticket", 3600);
    // Every call issues a new ticket; the previous one stays valid.
    let jsapi2 = assert_ok(&getticket(&emu, &token, "jsapi").await, "ticket", 3600);
    assert!(jsapi != card && jsapi != jsapi2, "tickets repeat");
    let emulator = &emu.emulator;
    assert_eq!(emulator.check_ticket(&jsapi), TokenCheck::Valid);
    assert_eq!(emulator.check_ticket("never-issued"), TokenCheck::Invalid);
    assert_eq!(emulator.current_ticket(APP, "jsapi"), Some(jsapi2));
    assert_eq!(emulator.current_ticket(APP, "wx_card"), Some(card));
    assert_eq!(emulator.current_ticket(APP, "agent_config"), None);

    assert_wx_error(&getticket(&emu, &token, "bogus").await, 40097);
    let untyped = get(
        &emu,
        &format!("/cgi-bin/ticket/getticket?access_token={token}"),
    )
    .await;
    assert_wx_error(&untyped, 40097);
    assert_wx_error(
        &get(&emu, "/cgi-bin/ticket/getticket?type=jsapi").await,
        41001,
    );
    assert_wx_error(&getticket(&emu, "never-issued", "jsapi").await, 40001);

    let stats = app_stats(&emu, APP);
    assert_eq!(stats.ticket_calls, 5);
    assert_eq!(stats.tickets_issued, 3);
    let unknown = app_stats(&emu, UNKNOWN_APP);
    assert_eq!((unknown.ticket_calls, unknown.stale_rejections), (2, 1));
}

#[tokio::test]
async fn official_ticket_daily_limit_and_injected_failures() {
    let emu = start(Config {
        ticket_daily: 2,
        fail_kinds: vec![FailKind::SystemBusy],
        ..config()
    })
    .await;
    let token = official_token(&emu).await;
    emu.emulator.set_fail_rate(1.0);
    assert_wx_error(&getticket(&emu, &token, "jsapi").await, -1);
    emu.emulator.set_fail_rate(0.0);
    assert_ok(&getticket(&emu, &token, "jsapi").await, "ticket", 7200);
    assert_wx_error(&getticket(&emu, &token, "wx_card").await, 45009);
    let stats = app_stats(&emu, APP);
    assert_eq!(stats.injected_failures, 1);
    assert_eq!((stats.ticket_calls, stats.tickets_issued), (3, 1));
}

#[tokio::test]
async fn wecom_gettoken_reuses_the_valid_token() {
    let emu = start(config()).await;
    let first = gettoken(&emu, CORP, AGENT_SECRET).await;
    let token = assert_ok(&first, "access_token", 7200);
    let again = gettoken(&emu, CORP, AGENT_SECRET).await;
    assert_eq!(field(&again, "access_token"), token);
    assert_eq!(again["expires_in"], 7199, "whole seconds left, floored");
    // Each app of the corp has its own token.
    let other = assert_ok(
        &gettoken(&emu, CORP, OTHER_SECRET).await,
        "access_token",
        7200,
    );
    assert_ne!(other, token);
    // WeCom tokens work on the ordinary APIs too.
    assert_eq!(domain_ip(&emu, &token).await["dns"][0], "101.226.90.149");

    // Revoked: 40014 on WeCom and ordinary endpoints, and gettoken replaces it.
    emu.emulator.revoke_token(&token);
    assert_eq!(emu.emulator.check_token(&token), TokenCheck::Invalid);
    assert_wx_error(&corp_ticket(&emu, &token).await, 40014);
    assert_wx_error(&domain_ip(&emu, &token).await, 40014);
    let fresh = gettoken(&emu, CORP, AGENT_SECRET).await;
    assert_ne!(assert_ok(&fresh, "access_token", 7200), token);

    let stats = app_stats(&emu, &wecom_key(CORP, AGENT));
    assert_eq!(stats.gettoken_calls, 3);
    assert_eq!(stats.upstream_token_calls(), 3);
    assert_eq!(stats.tokens_issued, 2);
    assert_eq!((stats.api_calls, stats.stale_rejections), (1, 2));
}

#[tokio::test]
async fn wecom_gettoken_errors() {
    let emu = start(Config {
        quota: 1,
        ..config()
    })
    .await;
    let cases = [
        ("/cgi-bin/gettoken", 41002),
        ("/cgi-bin/gettoken?corpsecret=x", 41002),
        ("/cgi-bin/gettoken?corpid=wwnobody", 41004),
        ("/cgi-bin/gettoken?corpid=wwnobody&corpsecret=x", 40013),
    ];
    for (path, code) in cases {
        assert_wx_error(&get(&emu, path).await, code);
    }
    assert_wx_error(&gettoken(&emu, CORP, FOREIGN_SECRET).await, 40091);
    assert_wx_error(&gettoken(&emu, CORP, "wrong").await, 40001);
    assert_ok(
        &gettoken(&emu, CORP, AGENT_SECRET).await,
        "access_token",
        7200,
    );
    assert_wx_error(&gettoken(&emu, CORP, AGENT_SECRET).await, 45009);
    assert_eq!(app_stats(&emu, UNKNOWN_APP).gettoken_calls, 6);
}

#[tokio::test]
async fn wecom_corp_and_agent_tickets_with_hourly_limits() {
    let emu = start(Config {
        corp_ticket_hourly: 2,
        agent_ticket_hourly: 2,
        ..config()
    })
    .await;
    let a = field(&gettoken(&emu, CORP, AGENT_SECRET).await, "access_token");
    let b = field(&gettoken(&emu, CORP, OTHER_SECRET).await, "access_token");

    let corp1 = assert_ok(&corp_ticket(&emu, &a).await, "ticket", 7200);
    let corp2 = assert_ok(&corp_ticket(&emu, &b).await, "ticket", 7200);
    assert_ne!(corp1, corp2);
    // The corp limit counts every app of the corp.
    assert_wx_error(&corp_ticket(&emu, &a).await, 45009);
    let key_a = wecom_key(CORP, AGENT);
    assert_eq!(emu.emulator.current_ticket(&key_a, "jsapi"), Some(corp2));
    assert_eq!(emu.emulator.check_ticket(&corp1), TokenCheck::Valid);

    assert_wx_error(&agent_ticket(&emu, &a, "jsapi").await, 40097);
    let untyped = get(&emu, &format!("/cgi-bin/ticket/get?access_token={a}")).await;
    assert_wx_error(&untyped, 40097);
    assert_ok(
        &agent_ticket(&emu, &a, "agent_config").await,
        "ticket",
        7200,
    );
    let agent2 = assert_ok(
        &agent_ticket(&emu, &a, "agent_config").await,
        "ticket",
        7200,
    );
    assert_wx_error(&agent_ticket(&emu, &a, "agent_config").await, 45009);
    // The agent limit is per app.
    assert_ok(
        &agent_ticket(&emu, &b, "agent_config").await,
        "ticket",
        7200,
    );
    assert_eq!(
        emu.emulator.current_ticket(&key_a, "agent_config"),
        Some(agent2)
    );

    let stats = app_stats(&emu, &key_a);
    assert_eq!(stats.ticket_calls, 7);
    assert_eq!(stats.tickets_issued, 3);
}

#[tokio::test]
async fn token_families_do_not_mix_on_ticket_endpoints() {
    let emu = start(config()).await;
    let official = official_token(&emu).await;
    let wecom = field(&gettoken(&emu, CORP, AGENT_SECRET).await, "access_token");
    assert_wx_error(&corp_ticket(&emu, &official).await, 40014);
    assert_wx_error(&agent_ticket(&emu, &official, "agent_config").await, 40014);
    assert_wx_error(&corp_ticket(&emu, "never-issued").await, 40014);
    assert_wx_error(&get(&emu, "/cgi-bin/get_jsapi_ticket").await, 41001);
    assert_wx_error(&getticket(&emu, &wecom, "jsapi").await, 40001);
    let stats = app_stats(&emu, APP);
    assert_eq!((stats.ticket_calls, stats.stale_rejections), (2, 2));
}

#[tokio::test]
async fn dead_tokens_on_ticket_endpoints() {
    let emu = start(Config {
        expires_in: 1,
        ..config()
    })
    .await;
    let official = official_token(&emu).await;
    let wecom = field(&gettoken(&emu, CORP, AGENT_SECRET).await, "access_token");
    let revoked = official_token(&emu).await;
    emu.emulator.revoke_token(&revoked);
    assert_wx_error(&getticket(&emu, &revoked, "jsapi").await, 40001);
    assert_wx_error(&domain_ip(&emu, &revoked).await, 40001);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_wx_error(&getticket(&emu, &official, "jsapi").await, 42001);
    assert_wx_error(&corp_ticket(&emu, &wecom).await, 42001);
    assert_wx_error(&agent_ticket(&emu, &wecom, "agent_config").await, 42001);
    assert_eq!(app_stats(&emu, APP).stale_rejections, 3);
    assert_eq!(app_stats(&emu, &wecom_key(CORP, AGENT)).stale_rejections, 2);
}

#[tokio::test]
async fn stats_over_http_and_old_json() {
    let emu = start(config()).await;
    let wecom = field(&gettoken(&emu, CORP, AGENT_SECRET).await, "access_token");
    assert_ok(&corp_ticket(&emu, &wecom).await, "ticket", 7200);
    let stats: Stats = reqwest::get(format!("{}/_emulator/stats", emu.base_url()))
        .await
        .expect("request")
        .json()
        .await
        .expect("stats json");
    let app = stats.app(&wecom_key(CORP, AGENT));
    assert_eq!((app.gettoken_calls, app.ticket_calls), (1, 1));
    assert_eq!((app.tokens_issued, app.tickets_issued), (1, 1));
    assert!(stats.apps.contains_key(APP));
    assert!(stats.apps.contains_key(&wecom_key(FOREIGN_CORP, 1)));

    // Stats JSON from before the WeCom and ticket counters still parses.
    let old = r#"{"apps":{"wx1":{"token_calls":1,"stable_token_calls":0,
        "force_refresh_calls":0,"tokens_issued":1,"injected_failures":0,
        "api_calls":0,"stale_rejections":0}}}"#;
    let parsed: Stats = serde_json::from_str(old).expect("old stats json");
    assert_eq!(parsed.app("wx1").upstream_token_calls(), 1);
    assert_eq!(parsed.app("wx1").tickets_issued, 0);
}
