//! The quota APIs over HTTP: `openapi/quota/get` reports the emulator's own daily
//! counters, `clear_quota` (token) and `clear_quota/v2` (secret) reset them within one
//! monthly budget shared by both, and every call shows in the stats.

mod common;

use common::*;
use serde_json::Value;
use wechat_emulator::Config;

async fn quota_of(emulator: &wechat_emulator::RunningEmulator, token: &str, path: &str) -> Value {
    post(
        emulator,
        &format!("/cgi-bin/openapi/quota/get?access_token={token}"),
        &format!(r#"{{"cgi_path":"{path}"}}"#),
    )
    .await
}

#[tokio::test]
async fn quota_get_reports_the_apps_own_daily_counters() {
    let emulator = emulator().await;
    let token = official_token(&emulator).await;
    official_token(&emulator).await;
    let stable =
        format!(r#"{{"grant_type":"client_credential","appid":"{APPID}","secret":"{SECRET}"}}"#);
    post(&emulator, "/cgi-bin/stable_token", &stable).await;

    let classic = quota_of(&emulator, &token, "/cgi-bin/token").await;
    assert_eq!(classic["errcode"], 0, "{classic}");
    assert_eq!(classic["errmsg"], "ok");
    assert_eq!(
        classic["quota"],
        serde_json::json!({"daily_limit": 2000, "used": 2, "remain": 1998})
    );
    let stable = quota_of(&emulator, &token, "/cgi-bin/stable_token").await;
    assert_eq!(
        stable["quota"],
        serde_json::json!({"daily_limit": 500_000, "used": 1, "remain": 499_999})
    );

    let unknown = quota_of(&emulator, &token, "/cgi-bin/nothing/here").await;
    assert_eq!(unknown["errcode"], 76021, "{unknown}");
    let dead = quota_of(&emulator, "dead", "/cgi-bin/token").await;
    assert_eq!(dead["errcode"], 40001, "{dead}");
    let missing = post(
        &emulator,
        "/cgi-bin/openapi/quota/get",
        r#"{"cgi_path":"/cgi-bin/token"}"#,
    )
    .await;
    assert_eq!(missing["errcode"], 41001, "{missing}");
    let wecom = quota_of(&emulator, &wecom_token(&emulator).await, "/cgi-bin/token").await;
    assert_eq!(
        wecom["errcode"], 40001,
        "a WeCom token is no official token: {wecom}"
    );

    let stats = emulator.emulator.stats();
    assert_eq!(stats.app(APPID).quota_get_calls, 3);
    let unknown = stats.app(wechat_emulator::UNKNOWN_APP);
    assert_eq!(
        unknown.quota_get_calls, 3,
        "the dead, missing and WeCom tokens"
    );
}

#[tokio::test]
async fn clear_quota_v2_resets_the_counters_with_the_secret_in_query_or_body() {
    let emulator = emulator().await;
    let token = official_token(&emulator).await;
    official_token(&emulator).await;

    let by_query = post(
        &emulator,
        &format!("/cgi-bin/clear_quota/v2?appid={APPID}&appsecret={SECRET}"),
        "",
    )
    .await;
    assert_eq!(by_query["errcode"], 0, "{by_query}");
    let after = quota_of(&emulator, &token, "/cgi-bin/token").await;
    assert_eq!(after["quota"]["used"], 0, "{after}");

    official_token(&emulator).await;
    let by_body = post(
        &emulator,
        "/cgi-bin/clear_quota/v2",
        &format!(r#"{{"appid":"{APPID}","appsecret":"{SECRET}"}}"#),
    )
    .await;
    assert_eq!(by_body["errcode"], 0, "{by_body}");
    let after = quota_of(&emulator, &token, "/cgi-bin/token").await;
    assert_eq!(after["quota"]["used"], 0, "{after}");

    for (query, errcode) in [
        (format!("appid={APPID}&appsecret=wrong"), 40125),
        (format!("appid={APPID}"), 41004),
        ("appsecret=x".to_owned(), 41002),
        ("appid=wxnobody&appsecret=x".to_owned(), 40013),
    ] {
        let answer = post(&emulator, &format!("/cgi-bin/clear_quota/v2?{query}"), "").await;
        assert_eq!(answer["errcode"], errcode, "{query}: {answer}");
    }
    let stats = emulator.emulator.stats().app(APPID);
    assert_eq!((stats.clear_quota_calls, stats.quota_clears), (4, 2));
}

#[tokio::test]
async fn both_clears_share_ten_a_month_then_answer_48006() {
    let emulator = emulator().await;
    let token = official_token(&emulator).await;
    let v1 = format!("/cgi-bin/clear_quota?access_token={token}");
    let v2 = format!("/cgi-bin/clear_quota/v2?appid={APPID}&appsecret={SECRET}");
    for i in 0..10 {
        let answer = if i % 2 == 0 {
            post(&emulator, &v1, &format!(r#"{{"appid":"{APPID}"}}"#)).await
        } else {
            post(&emulator, &v2, "").await
        };
        assert_eq!(answer["errcode"], 0, "clear {i}: {answer}");
    }
    official_token(&emulator).await;
    for answer in [
        post(&emulator, &v1, &format!(r#"{{"appid":"{APPID}"}}"#)).await,
        post(&emulator, &v2, "").await,
    ] {
        assert_eq!(answer["errcode"], 48006, "{answer}");
    }
    let still = quota_of(&emulator, &token, "/cgi-bin/token").await;
    assert_eq!(still["quota"]["used"], 1, "a refused clear clears nothing");
    let stats = emulator.emulator.stats().app(APPID);
    assert_eq!((stats.clear_quota_calls, stats.quota_clears), (12, 10));
}

#[tokio::test]
async fn clear_quota_with_a_token_wants_the_tokens_own_appid() {
    let emulator = wechat_emulator::spawn(
        Config::default()
            .with_app(APPID, SECRET)
            .with_app("wx1111111111111111", "other"),
    )
    .await
    .expect("emulator");
    let token = official_token(&emulator).await;
    let path = format!("/cgi-bin/clear_quota?access_token={token}");
    let other = post(&emulator, &path, r#"{"appid":"wx1111111111111111"}"#).await;
    assert_eq!(other["errcode"], 40013, "{other}");
    let dead = post(
        &emulator,
        "/cgi-bin/clear_quota?access_token=dead",
        &format!(r#"{{"appid":"{APPID}"}}"#),
    )
    .await;
    assert_eq!(dead["errcode"], 40001, "{dead}");
    let no_appid = post(&emulator, &path, "{}").await;
    assert_eq!(no_appid["errcode"], 41002, "{no_appid}");
    let ok = post(&emulator, &path, &format!(r#"{{"appid":"{APPID}"}}"#)).await;
    assert_eq!(ok["errcode"], 0, "{ok}");
    let stats = emulator.emulator.stats();
    let app = stats.app(APPID);
    assert_eq!((app.clear_quota_calls, app.quota_clears), (3, 1));
    let unknown = stats.app(wechat_emulator::UNKNOWN_APP);
    assert_eq!(unknown.clear_quota_calls, 1, "the dead token");
}
