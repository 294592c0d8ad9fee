//! The ordinary APIs beyond the token checks (`user/info`, `getwxacodeunlimit`,
//! `datacube/getusersummary`, WeCom `user/get`) and the API latency knob, over HTTP.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[tokio::test]
async fn getwxacodeunlimit_answers_jpeg_bytes_or_a_json_error() {
    let emulator = emulator().await;
    let token = official_token(&emulator).await;
    let url = format!(
        "{}/wxa/getwxacodeunlimit?access_token={token}",
        emulator.base_url()
    );
    let qr = reqwest::Client::new()
        .post(&url)
        .body(r#"{"scene":"a=1","page":"pages/index/index","width":430}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(qr.status(), 200);
    assert_eq!(qr.headers()["content-type"], "image/jpeg");
    let bytes = qr.bytes().await.expect("bytes");
    assert_eq!(&bytes[..3], &[0xFF, 0xD8, 0xFF]);
    assert_eq!(&bytes[bytes.len() - 2..], &[0xFF, 0xD9]);
    assert!(bytes.len() > 100, "{} bytes", bytes.len());

    let path = |token: &str| format!("/wxa/getwxacodeunlimit?access_token={token}");
    let long_scene = format!(r#"{{"scene":"{}"}}"#, "s".repeat(33));
    let cases = [
        (path("dead"), r#"{"scene":"a=1"}"#, 40001),
        (
            "/wxa/getwxacodeunlimit".to_owned(),
            r#"{"scene":"a=1"}"#,
            41001,
        ),
        (path(&token), "scene=a", 47001),
        (path(&token), "[]", 47001),
        (path(&token), r#"{"page":"p"}"#, 40097),
        (path(&token), r#"{"scene":7}"#, 40097),
        (path(&token), &long_scene, 40129),
    ];
    for (path, body, errcode) in cases {
        let answer = post(&emulator, &path, body).await;
        assert_eq!(answer["errcode"], errcode, "{path} {body}: {answer}");
    }
    let stats = emulator.emulator.stats().app(wechat_emulator::UNKNOWN_APP);
    assert_eq!(stats.stale_rejections, 1, "the dead token");
}

#[tokio::test]
async fn user_info_wants_an_openid() {
    let emulator = emulator().await;
    let token = official_token(&emulator).await;
    let user = get(
        &emulator,
        &format!("/cgi-bin/user/info?access_token={token}&openid=o1&lang=en"),
    )
    .await;
    assert_eq!(
        (user["subscribe"].as_i64(), user["openid"].as_str()),
        (Some(1), Some("o1"))
    );
    assert_eq!(user["language"], "en");
    assert!(user["tagid_list"].is_array());
    assert!(user.get("nickname").is_none(), "gone since 2021: {user}");
    for (query, errcode) in [
        ("openid=", 41009),
        ("lang=zh_CN", 41009),
        ("openid=invalid-1", 40003),
    ] {
        let body = get(
            &emulator,
            &format!("/cgi-bin/user/info?access_token={token}&{query}"),
        )
        .await;
        assert_eq!(body["errcode"], errcode, "{query}: {body}");
    }
    let body = get(&emulator, "/cgi-bin/user/info?openid=o1").await;
    assert_eq!(body["errcode"], 41001);
}

#[tokio::test]
async fn getusersummary_answers_a_row_a_day_for_up_to_seven_days() {
    let emulator = emulator().await;
    let token = official_token(&emulator).await;
    let path = format!("/datacube/getusersummary?access_token={token}");
    let summary = post(
        &emulator,
        &path,
        r#"{"begin_date":"2026-10-28","end_date":"2026-11-03"}"#,
    )
    .await;
    let list = summary["list"].as_array().expect("list");
    assert_eq!(list.len(), 7, "{summary}");
    assert_eq!(list[0]["ref_date"], "2026-10-28");
    assert_eq!(list[6]["ref_date"], "2026-11-03");
    for field in ["user_source", "new_user", "cancel_user"] {
        assert!(list[0][field].is_i64(), "{field}: {summary}");
    }
    let cases = [
        ("not json", 47001),
        (r#"{"begin_date":"2026-11-01"}"#, 61500),
        (
            r#"{"begin_date":"2026/11/01","end_date":"2026-11-02"}"#,
            61500,
        ),
        (
            r#"{"begin_date":"2026-11-01","end_date":"2026-11-08"}"#,
            61501,
        ),
        (
            r#"{"begin_date":"2026-11-02","end_date":"2026-11-01"}"#,
            61501,
        ),
    ];
    for (body, errcode) in cases {
        let answer = post(&emulator, &path, body).await;
        assert_eq!(answer["errcode"], errcode, "{body}: {answer}");
    }
}

#[tokio::test]
async fn wecom_user_get_keeps_its_empty_lists_in_errors() {
    let emulator = emulator().await;
    let wecom = wecom_token(&emulator).await;
    let user = get(
        &emulator,
        &format!("/cgi-bin/user/get?access_token={wecom}&userid=zhangsan"),
    )
    .await;
    assert_eq!(
        (
            user["errcode"].as_i64(),
            user["errmsg"].as_str(),
            user["userid"].as_str()
        ),
        (Some(0), Some("ok"), Some("zhangsan"))
    );
    assert!(user["department"].is_array());
    let cases = [
        (format!("access_token={wecom}"), 41009),
        (format!("access_token={wecom}&userid=unknown-1"), 60111),
        ("userid=zhangsan".to_owned(), 41001),
        ("access_token=dead&userid=zhangsan".to_owned(), 40001),
    ];
    for (query, errcode) in cases {
        let body = get(&emulator, &format!("/cgi-bin/user/get?{query}")).await;
        assert_eq!(body["errcode"], errcode, "{query}: {body}");
        assert_eq!(body["department"], Value::Array(vec![]), "{query}: {body}");
        assert!(body["direct_leader"].is_array(), "{query}: {body}");
    }
}

#[tokio::test]
async fn ordinary_apis_count_calls_and_rejections_for_the_tokens_app() {
    let emulator = emulator().await;
    let token = official_token(&emulator).await;
    get(
        &emulator,
        &format!("/cgi-bin/user/info?access_token={token}&openid=o1"),
    )
    .await;
    post(
        &emulator,
        &format!("/datacube/getusersummary?access_token={token}"),
        r#"{"begin_date":"2026-11-01","end_date":"2026-11-01"}"#,
    )
    .await;
    emulator.emulator.revoke_token(&token);
    let body = get(
        &emulator,
        &format!("/cgi-bin/user/info?access_token={token}&openid=o1"),
    )
    .await;
    assert_eq!(body["errcode"], 40001);
    let stats = emulator.emulator.stats().app(APPID);
    assert_eq!((stats.api_calls, stats.stale_rejections), (2, 1));

    let wecom = wecom_token(&emulator).await;
    emulator.emulator.revoke_token(&wecom);
    let body = get(
        &emulator,
        &format!("/cgi-bin/user/get?access_token={wecom}&userid=u"),
    )
    .await;
    assert_eq!(body["errcode"], 40014, "WeCom's word for a dead token");
}

#[tokio::test]
async fn api_latency_delays_every_api_but_the_token_endpoints() {
    const LATENCY: Duration = Duration::from_millis(200);
    let emulator = emulator().await;
    emulator.emulator.set_api_latency(LATENCY);
    let started = Instant::now();
    let token = official_token(&emulator).await;
    assert!(started.elapsed() < LATENCY, "token calls are not delayed");
    let timed = [
        format!("/cgi-bin/get_api_domain_ip?access_token={token}"),
        format!("/cgi-bin/user/info?access_token={token}&openid=o1"),
        format!(
            "/sns/jscode2session?appid={APPID}&secret={SECRET}&js_code=l1&grant_type=authorization_code"
        ),
    ];
    for path in &timed {
        let started = Instant::now();
        get(&emulator, path).await;
        assert!(started.elapsed() >= LATENCY, "{path}");
    }
    let started = Instant::now();
    upload(&emulator, &token, "image", streamed_file(10)).await;
    assert!(started.elapsed() >= LATENCY, "uploads are delayed too");

    emulator.emulator.set_api_latency(Duration::ZERO);
    let started = Instant::now();
    for _ in 0..5 {
        get(&emulator, &timed[0]).await;
    }
    assert!(started.elapsed() < LATENCY, "zero makes them instant again");
}
