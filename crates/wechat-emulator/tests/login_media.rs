//! The login calls, media uploads and the extra ordinary APIs, over HTTP.

use futures::stream;
use serde_json::Value;
use wechat_emulator::{Config, RunningEmulator, wecom_key};

const APPID: &str = "wx0123456789abcdef";
const SECRET: &str = "app-secret";
const CORPID: &str = "ww0123456789abcdef";
const WECOM_SECRET: &str = "wecom-secret";

async fn emulator() -> RunningEmulator {
    wechat_emulator::spawn(Config::default().with_app(APPID, SECRET).with_wecom_app(
        CORPID,
        1000002,
        WECOM_SECRET,
    ))
    .await
    .expect("emulator")
}

async fn get(emulator: &RunningEmulator, path: &str) -> Value {
    let response = reqwest::get(format!("{}{path}", emulator.base_url()))
        .await
        .expect("sent");
    assert_eq!(
        response.status(),
        200,
        "WeChat answers errors with HTTP 200"
    );
    response.json().await.expect("json")
}

async fn official_token(emulator: &RunningEmulator) -> String {
    let body = get(
        emulator,
        &format!("/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={SECRET}"),
    )
    .await;
    body["access_token"].as_str().expect("token").to_owned()
}

async fn wecom_token(emulator: &RunningEmulator) -> String {
    let body = get(
        emulator,
        &format!("/cgi-bin/gettoken?corpid={CORPID}&corpsecret={WECOM_SECRET}"),
    )
    .await;
    body["access_token"].as_str().expect("token").to_owned()
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
        let ok = q(&format!(
            "appid={APPID}&secret={SECRET}&{code}=c1&grant_type=authorization_code"
        ));
        let body = get(&emulator, &ok).await;
        assert!(
            body["openid"].as_str().is_some_and(|o| o.starts_with('o')),
            "{body}"
        );
        assert!(body.get("errcode").is_none(), "{body}");
        if path.ends_with("session") {
            assert!(body["session_key"].is_string());
        } else {
            assert_eq!(body["expires_in"], 7200);
            assert!(body["refresh_token"].is_string());
            assert_eq!(body["scope"], "snsapi_base");
        }
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
                    "appid={APPID}&secret={SECRET}&{code}=c2&grant_type=x"
                )),
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
            (
                q(&format!(
                    "appid={APPID}&secret={SECRET}&{code}=invalid-x&grant_type=authorization_code"
                )),
                40029,
            ),
        ];
        for (path, errcode) in cases {
            let body = get(&emulator, &path).await;
            assert_eq!(body["errcode"], errcode, "{path}: {body}");
        }
    }
    // Seven calls per path name the app (the other two name none, or another).
    assert_eq!(emulator.emulator.stats().app(APPID).sns_calls, 14);
}

#[tokio::test]
async fn an_oauth_user_token_is_not_an_app_token() {
    let emulator = emulator().await;
    let body = get(
        &emulator,
        &format!("/sns/oauth2/access_token?appid={APPID}&secret={SECRET}&code=u1&grant_type=authorization_code"),
    )
    .await;
    let user_token = body["access_token"].as_str().expect("token");
    let body = get(
        &emulator,
        &format!("/cgi-bin/get_api_domain_ip?access_token={user_token}"),
    )
    .await;
    assert_eq!(body["errcode"], 40001, "{body}");
}

fn streamed_file(bytes: usize) -> reqwest::multipart::Part {
    const CHUNK: usize = 64 * 1024;
    let chunks = stream::iter((0..bytes.div_ceil(CHUNK)).map(move |i| {
        let len = CHUNK.min(bytes - i * CHUNK);
        Ok::<_, std::io::Error>(vec![b'x'; len])
    }));
    reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(chunks), bytes as u64)
        .file_name("f.bin")
}

async fn upload(
    emulator: &RunningEmulator,
    token: &str,
    kind: &str,
    part: reqwest::multipart::Part,
) -> Value {
    let form = reqwest::multipart::Form::new().part("media", part);
    reqwest::Client::new()
        .post(format!(
            "{}/cgi-bin/media/upload?access_token={token}&type={kind}",
            emulator.base_url()
        ))
        .multipart(form)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn a_20_mb_wecom_file_arrives_whole_and_limits_are_wechats() {
    let emulator = emulator().await;
    let wecom = wecom_token(&emulator).await;
    let body = upload(&emulator, &wecom, "file", streamed_file(20_000_000)).await;
    assert_eq!(body["errcode"], 0, "{body}");
    assert!(
        body["created_at"].is_string(),
        "WeCom writes it as a string: {body}"
    );
    assert!(body["media_id"].is_string());
    let stats = emulator.emulator.stats().app(&wecom_key(CORPID, 1000002));
    assert_eq!((stats.media_uploads, stats.media_bytes), (1, 20_000_000));

    let body = upload(
        &emulator,
        &wecom,
        "file",
        streamed_file(20 * 1024 * 1024 + 1),
    )
    .await;
    assert_eq!(body["errcode"], 45001, "{body}");
    let body = upload(&emulator, &wecom, "file", streamed_file(5)).await;
    assert_eq!(body["errcode"], 40006, "{body}");

    let official = official_token(&emulator).await;
    let body = upload(&emulator, &official, "image", streamed_file(1000)).await;
    assert!(
        body["created_at"].is_u64(),
        "a number on official accounts: {body}"
    );
    assert_eq!(body["type"], "image");
    let body = upload(&emulator, &official, "file", streamed_file(1000)).await;
    assert_eq!(
        body["errcode"], 40004,
        "official accounts take no `file`: {body}"
    );
    let body = upload(&emulator, &official, "thumb", streamed_file(64 * 1024 + 1)).await;
    assert_eq!(body["errcode"], 45001, "{body}");
    let body = upload(&emulator, "dead-token", "image", streamed_file(10)).await;
    assert_eq!(body["errcode"], 40001, "{body}");
    let form = reqwest::multipart::Form::new().text("other", "x");
    let body: Value = reqwest::Client::new()
        .post(format!(
            "{}/cgi-bin/media/upload?access_token={official}&type=image",
            emulator.base_url()
        ))
        .multipart(form)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(body["errcode"], 41005, "{body}");
}

#[tokio::test]
async fn ordinary_apis_answer_in_their_own_shapes() {
    let emulator = emulator().await;
    let token = official_token(&emulator).await;
    let base = emulator.base_url();
    let http = reqwest::Client::new();
    let qr = http
        .post(format!("{base}/wxa/getwxacodeunlimit?access_token={token}"))
        .body(r#"{"scene":"a=1"}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(qr.headers()["content-type"], "image/jpeg");
    let bytes = qr.bytes().await.expect("bytes");
    assert_eq!(&bytes[..3], &[0xFF, 0xD8, 0xFF]);
    let err: Value = http
        .post(format!("{base}/wxa/getwxacodeunlimit?access_token=dead"))
        .body(r#"{"scene":"a=1"}"#)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("a dead token gets JSON, not an image");
    assert_eq!(err["errcode"], 40001);

    let user = get(
        &emulator,
        &format!("/cgi-bin/user/info?access_token={token}&openid=o1"),
    )
    .await;
    assert_eq!(user["openid"], "o1");
    let summary: Value = http
        .post(format!(
            "{base}/datacube/getusersummary?access_token={token}"
        ))
        .body(r#"{"begin_date":"2026-11-01","end_date":"2026-11-07"}"#)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(summary["list"].is_array(), "{summary}");
    let wecom = wecom_token(&emulator).await;
    let user = get(
        &emulator,
        &format!("/cgi-bin/user/get?access_token={wecom}&userid=zhangsan"),
    )
    .await;
    assert_eq!(
        (user["errcode"].as_i64(), user["userid"].as_str()),
        (Some(0), Some("zhangsan"))
    );
    let stats = emulator.emulator.stats().app(APPID);
    assert_eq!(stats.api_calls, 3);
}

#[tokio::test]
async fn api_latency_delays_ordinary_apis_only() {
    let emulator = emulator().await;
    emulator
        .emulator
        .set_api_latency(std::time::Duration::from_millis(200));
    let started = std::time::Instant::now();
    let token = official_token(&emulator).await;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(200),
        "token calls are not delayed"
    );
    let started = std::time::Instant::now();
    get(
        &emulator,
        &format!("/cgi-bin/get_api_domain_ip?access_token={token}"),
    )
    .await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
}
