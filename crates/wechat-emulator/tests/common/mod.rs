//! What the login, upload and API tests share: one emulator with an official app and
//! a WeCom app, and small HTTP helpers that insist on WeChat's HTTP 200.

// Each test binary uses its own subset of these.
#![allow(dead_code)]

use futures::stream;
use serde_json::Value;
use wechat_emulator::{Config, RunningEmulator};

pub const APPID: &str = "wx0123456789abcdef";
pub const SECRET: &str = "app-secret";
pub const CORPID: &str = "ww0123456789abcdef";
pub const AGENTID: u64 = 1_000_002;
pub const WECOM_SECRET: &str = "wecom-secret";

pub async fn emulator() -> RunningEmulator {
    wechat_emulator::spawn(Config::default().with_app(APPID, SECRET).with_wecom_app(
        CORPID,
        AGENTID,
        WECOM_SECRET,
    ))
    .await
    .expect("emulator")
}

/// `GET path`, answered with HTTP 200 and JSON.
pub async fn get(emulator: &RunningEmulator, path: &str) -> Value {
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

/// `POST path` with `body` as is, answered with HTTP 200 and JSON.
pub async fn post(emulator: &RunningEmulator, path: &str, body: &str) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", emulator.base_url()))
        .body(body.to_owned())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

pub async fn official_token(emulator: &RunningEmulator) -> String {
    let body = get(
        emulator,
        &format!("/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={SECRET}"),
    )
    .await;
    body["access_token"].as_str().expect("token").to_owned()
}

pub async fn wecom_token(emulator: &RunningEmulator) -> String {
    let body = get(
        emulator,
        &format!("/cgi-bin/gettoken?corpid={CORPID}&corpsecret={WECOM_SECRET}"),
    )
    .await;
    body["access_token"].as_str().expect("token").to_owned()
}

/// A file part of `bytes` bytes, generated 64 KB at a time as it is sent: the test
/// never holds the file.
pub fn streamed_file(bytes: usize) -> reqwest::multipart::Part {
    const CHUNK: usize = 64 * 1024;
    let chunks = stream::iter((0..bytes.div_ceil(CHUNK)).map(move |i| {
        let len = CHUNK.min(bytes - i * CHUNK);
        Ok::<_, std::io::Error>(vec![b'x'; len])
    }));
    reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(chunks), bytes as u64)
        .file_name("f.bin")
}

/// Uploads `part` as the `media` field; `kind` is the `type` parameter.
pub async fn upload(
    emulator: &RunningEmulator,
    token: &str,
    kind: &str,
    part: reqwest::multipart::Part,
) -> Value {
    let form = reqwest::multipart::Form::new().part("media", part);
    let response = reqwest::Client::new()
        .post(format!(
            "{}/cgi-bin/media/upload?access_token={token}&type={kind}",
            emulator.base_url()
        ))
        .multipart(form)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}
