//! The login calls (`/sns/jscode2session`, `/sns/oauth2/access_token`) and media
//! uploads, over HTTP.

mod common;

use common::*;
use serde_json::Value;
use wechat_emulator::wecom_key;

const MB: usize = 1024 * 1024;

/// The query of a login call with every parameter right but `code`'s value.
fn login_query(path: &str, code: &str) -> String {
    let name = if path.ends_with("session") {
        "js_code"
    } else {
        "code"
    };
    format!("{path}?appid={APPID}&secret={SECRET}&{name}={code}&grant_type=authorization_code")
}

#[tokio::test]
async fn login_calls_check_their_secret_and_take_each_code_once() {
    let emulator = emulator().await;
    for path in ["/sns/jscode2session", "/sns/oauth2/access_token"] {
        let code = if path.ends_with("session") {
            "js_code"
        } else {
            "code"
        };
        let q = |rest: &str| format!("{path}?{rest}");
        let ok = login_query(path, "c1");
        let body = get(&emulator, &ok).await;
        assert!(
            body["openid"].as_str().is_some_and(|o| o.starts_with('o')),
            "{body}"
        );
        assert!(body.get("errcode").is_none(), "{body}");
        let cases = [
            (ok.clone(), 40163),
            (
                q(&format!(
                    "secret={SECRET}&{code}=c2&grant_type=authorization_code"
                )),
                41002,
            ),
            (
                q(&format!(
                    "appid={APPID}&{code}=c2&grant_type=authorization_code"
                )),
                41004,
            ),
            (
                q(&format!(
                    "appid={APPID}&secret={SECRET}&grant_type=authorization_code"
                )),
                41008,
            ),
            (
                q(&format!(
                    "appid={APPID}&secret={SECRET}&{code}=&grant_type=authorization_code"
                )),
                41008,
            ),
            (
                q(&format!(
                    "appid={APPID}&secret={SECRET}&{code}=c2&grant_type=x"
                )),
                40002,
            ),
            (
                q(&format!("appid={APPID}&secret={SECRET}&{code}=c2")),
                40002,
            ),
            (
                q(&format!(
                    "appid=wxnope&secret={SECRET}&{code}=c2&grant_type=authorization_code"
                )),
                40013,
            ),
            (
                q(&format!(
                    "appid={APPID}&secret=wrong&{code}=c2&grant_type=authorization_code"
                )),
                40125,
            ),
            (login_query(path, "invalid-x"), 40029),
        ];
        for (path, errcode) in cases {
            let body = get(&emulator, &path).await;
            assert_eq!(body["errcode"], errcode, "{path}: {body}");
            let errmsg = body["errmsg"].as_str().expect("errmsg");
            assert!(errmsg.contains(" rid: "), "{errmsg}");
        }
        // A code refused for a wrong secret was not spent.
        let body = get(&emulator, &login_query(path, "c2")).await;
        assert!(body["openid"].is_string(), "{path}: {body}");
    }
    // Ten calls per path name the app (the other two name none, or another).
    assert_eq!(emulator.emulator.stats().app(APPID).sns_calls, 20);
}

#[tokio::test]
async fn a_mini_program_login_answers_a_base64_session_key_and_a_predictable_openid() {
    let emulator = emulator().await;
    let first = get(&emulator, &login_query("/sns/jscode2session", "same")).await;
    let key = first["session_key"].as_str().expect("session_key");
    assert_eq!(key.len(), 24, "16 bytes in base64: {key}");
    assert!(key.ends_with("=="), "{key}");
    assert!(
        key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'),
        "{key}"
    );
    // The openid follows from the app and the code, whichever call exchanged it.
    let web = get(&emulator, &login_query("/sns/oauth2/access_token", "same")).await;
    assert_eq!(first["openid"], web["openid"]);
    assert_eq!(first["openid"].as_str().map(str::len), Some(28));
    let other = get(&emulator, &login_query("/sns/jscode2session", "other")).await;
    assert_ne!(first["openid"], other["openid"]);
    let again = get(&emulator, &login_query("/sns/jscode2session", "again")).await;
    assert_ne!(
        first["session_key"], again["session_key"],
        "keys are random"
    );
}

#[tokio::test]
async fn an_oauth_user_token_is_not_an_app_token() {
    let emulator = emulator().await;
    let body = get(&emulator, &login_query("/sns/oauth2/access_token", "u1")).await;
    assert_eq!(body["expires_in"], 7200);
    assert_eq!(body["scope"], "snsapi_base");
    assert!(body["refresh_token"].is_string());
    let user_token = body["access_token"].as_str().expect("token");
    let body = get(
        &emulator,
        &format!("/cgi-bin/get_api_domain_ip?access_token={user_token}"),
    )
    .await;
    assert_eq!(body["errcode"], 40001, "{body}");
}

#[tokio::test]
async fn a_20_mb_wecom_file_streams_in_whole() {
    let emulator = emulator().await;
    let wecom = wecom_token(&emulator).await;
    let body = upload(&emulator, &wecom, "file", streamed_file(20_000_000)).await;
    assert_eq!(
        (body["errcode"].as_i64(), body["errmsg"].as_str()),
        (Some(0), Some("ok"))
    );
    assert_eq!(body["type"], "file");
    assert!(
        body["created_at"]
            .as_str()
            .is_some_and(|s| s.parse::<u64>().is_ok()),
        "WeCom writes it as a string: {body}"
    );
    assert!(body["media_id"].is_string());
    let stats = emulator.emulator.stats().app(&wecom_key(CORPID, AGENTID));
    assert_eq!((stats.media_uploads, stats.media_bytes), (1, 20_000_000));
    assert_eq!(stats.api_calls, 1, "an upload is an API call");
}

#[tokio::test]
async fn wecom_uploads_outside_the_limits_get_wecoms_codes() {
    let emulator = emulator().await;
    let wecom = wecom_token(&emulator).await;
    let cases = [
        ("file", 20 * MB + 1, 40006),
        ("file", 20 * MB, 0),
        ("image", 10 * MB + 1, 40009),
        ("video", 10 * MB + 1, 40011),
        ("voice", 2 * MB + 1, 40006),
        ("image", 5, 40006),
        ("image", 6, 0),
        ("file", 0, 44001),
        ("thumb", 1000, 40004),
        ("", 1000, 40004),
    ];
    for (kind, bytes, errcode) in cases {
        let body = upload(&emulator, &wecom, kind, streamed_file(bytes)).await;
        assert_eq!(body["errcode"], errcode, "{kind} of {bytes}: {body}");
    }
    let stats = emulator.emulator.stats().app(&wecom_key(CORPID, AGENTID));
    assert_eq!(stats.media_uploads, 2, "refused uploads are not counted");
    assert_eq!(stats.media_bytes, 20 * MB as u64 + 6);
}

#[tokio::test]
async fn official_uploads_check_type_size_token_and_part() {
    let emulator = emulator().await;
    let official = official_token(&emulator).await;
    let body = upload(&emulator, &official, "image", streamed_file(1000)).await;
    assert!(body.get("errcode").is_none(), "{body}");
    assert_eq!(body["type"], "image");
    assert!(
        body["created_at"].is_u64(),
        "a number on official accounts: {body}"
    );
    let cases = [
        ("file", 1000, 40004),
        ("thumb", 64 * 1024, 0),
        ("thumb", 64 * 1024 + 1, 40006),
        ("voice", 2 * MB + 1, 40006),
        // Far over the limit: refused, and read to the end so the answer gets through.
        ("image", 20 * MB, 40006),
        ("image", 0, 44001),
    ];
    for (kind, bytes, errcode) in cases {
        let body = upload(&emulator, &official, kind, streamed_file(bytes)).await;
        let got = body["errcode"].as_i64().unwrap_or(0);
        assert_eq!(got, errcode, "{kind} of {bytes}: {body}");
    }
    for (token, errcode) in [("dead-token", 40001), ("", 41001)] {
        let body = upload(&emulator, token, "image", streamed_file(10)).await;
        assert_eq!(body["errcode"], errcode, "{token:?}: {body}");
    }

    let url = format!(
        "{}/cgi-bin/media/upload?access_token={official}&type=image",
        emulator.base_url()
    );
    let http = reqwest::Client::new();
    let form = reqwest::multipart::Form::new().text("other", "x");
    let body: Value = http
        .post(&url)
        .multipart(form)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(body["errcode"], 41005, "no media part: {body}");
    let body: Value = http
        .post(&url)
        .body("not multipart")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(body["errcode"], 41005, "not multipart at all: {body}");
    let stats = emulator.emulator.stats().app(APPID);
    assert_eq!(
        (stats.media_uploads, stats.media_bytes),
        (2, 1000 + 64 * 1024)
    );
}
