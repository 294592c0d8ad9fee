//! Hostile input over real HTTP: ids too long to echo, oversized request heads, JSON
//! that is not an object, parameters given twice, paths that do not decode; and slow
//! clients: heads and bodies that trickle in, more connections than allowed.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::helpers::*;

const ADMIN: &str = "wxt_hostile_admin_key_0123";

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

/// The default test config plus `server` lines in `[server]` and an admin client.
async fn spawn_with_server(server: &'static str) -> TestApp {
    let options = Options::default();
    spawn_app_from(emulator_config(&options), move |api_base, db| {
        config_toml(&options, api_base, db).replacen(
            "[server]\n",
            &format!("[server]\n{server}\n"),
            1,
        ) + &format!(
            "[[clients]]\nname = \"admin\"\nkey = \"{ADMIN}\"\napps = [\"*\"]\nscopes = [\"read\", \"admin\"]\n"
        )
    })
    .await
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Sends `request` on a fresh connection and reads until the server closes it (or
/// `wait` passes); the bytes read, or the error that ended the reading.
async fn raw(app: &TestApp, request: &[u8], wait: Duration) -> Result<String, std::io::Error> {
    let mut stream = TcpStream::connect(addr(app)).await?;
    stream.write_all(request).await?;
    read_answer(&mut stream, wait).await
}

async fn read_answer(stream: &mut TcpStream, wait: Duration) -> Result<String, std::io::Error> {
    let mut out = Vec::new();
    let _ = timeout(wait, stream.read_to_end(&mut out)).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Reads one answer (head and a Content-Length body) from a kept-alive connection.
async fn one_answer(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before an answer: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + length {
                return text.into_owned();
            }
        }
    }
}

#[tokio::test]
async fn an_unknown_app_id_of_ten_thousand_characters_is_not_echoed_whole() {
    let app = spawn_app().await;
    let long = "a".repeat(10_000);
    for path in [
        format!("/v1/apps/{long}/access_token"),
        format!("/v1/apps/{long}/ticket/jsapi"),
        format!("/v1/apps/{long}"),
        format!("/v1/apps/{long}/timeline"),
        format!("/v1/apps/{long}/proxy/cgi-bin/x"),
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.base))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 404, "{}", &path[..40]);
        let text = response.text().await.expect("body");
        assert!(text.len() < 600, "{} bytes answered", text.len());
        let body: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(code(&body), "app_not_found");
        assert!(
            message(&body).contains(&format!("`{}…`", "a".repeat(64))),
            "{body}"
        );
        assert!(message(&body).contains("1-64 characters"), "{body}");
    }
    // A well-formed id is still named whole.
    let (status, body) = app.get("/v1/apps/nope/access_token", Some(KEY)).await;
    assert_eq!(
        (status, message(&body)),
        (404, "no app `nope` is configured")
    );
}

#[tokio::test]
async fn a_request_head_over_16_kib_gets_431_and_one_under_it_is_served() {
    let app = spawn_app().await;
    app.token().await;
    let head = |filler: usize| {
        format!(
            "GET /v1/apps/shop/access_token HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\nx-filler: {}\r\nconnection: close\r\n\r\n",
            "f".repeat(filler)
        )
    };
    let answer = raw(&app, head(12 * 1024).as_bytes(), Duration::from_secs(5))
        .await
        .expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    for size in [17 * 1024, 100 * 1024] {
        // The server stops reading at the limit: it answers 431 and closes, and the
        // close may reset the connection before the client reads the answer.
        match raw(&app, head(size).as_bytes(), Duration::from_secs(5)).await {
            Ok(answer) => assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
                "{size}: {answer}"
            ),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ),
                "{size}: {e}"
            ),
        }
    }
    assert_eq!(app.upstream_calls(), 1, "only the warm-up fetch");
}

#[tokio::test]
async fn json_bodies_must_be_objects_not_arrays_or_scalars() {
    let app = spawn_app().await;
    let token = app.token().await;
    for path in [
        "/v1/apps/shop/access_token/invalidate",
        "/v1/apps/shop/ticket/jsapi/invalidate",
        "/v1/apps/shop/jssdk/config",
    ] {
        for body in [
            format!(r#"["{token}"]"#),
            r#"["https://shop.example/", "jsapi"]"#.to_owned(),
            r#""x""#.to_owned(),
            "1".to_owned(),
            "null".to_owned(),
        ] {
            let (status, answer) = app.post(path, Some(KEY), body.clone()).await;
            assert_eq!(
                (status, code(&answer)),
                (400, "bad_request"),
                "{path} {body}"
            );
            assert_eq!(
                message(&answer),
                "the body must be a JSON object",
                "{answer}"
            );
        }
    }
    // Deeply nested arrays are refused as well, and the server stays up.
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (status, _) = app
        .post("/v1/apps/shop/access_token/invalidate", Some(KEY), nested)
        .await;
    assert_eq!(status, 400);
    let deep = format!(
        r#"{{"access_token":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let (status, answer) = app
        .post("/v1/apps/shop/access_token/invalidate", Some(KEY), deep)
        .await;
    assert_eq!((status, code(&answer)), (400, "bad_request"), "{answer}");
    assert_eq!(app.token().await, token, "nothing was invalidated");
    assert_eq!(app.upstream_calls(), 1);
}

#[tokio::test]
async fn an_authorizer_invalidate_with_an_array_body_is_400() {
    use crate::platform::{ADMIN_KEY, PlatformOptions, spawn_platform};
    let app = spawn_platform(PlatformOptions::default()).await;
    for path in [
        "/v1/apps/platform/authorizers/wx1111111111111111/access_token/invalidate",
        "/v1/apps/platform/authorizers/wx1111111111111111/ticket/jsapi/invalidate",
    ] {
        let (status, body) = app.post(path, ADMIN_KEY, r#"["x"]"#.to_owned()).await;
        assert_eq!(
            (status, code(&body)),
            (400, "bad_request"),
            "{path}: {body}"
        );
        assert_eq!(message(&body), "the body must be a JSON object");
    }
}

#[tokio::test]
async fn a_query_parameter_given_twice_is_refused_naming_it() {
    let app = spawn_with_server("").await;
    app.token().await;
    for (path, key, name) in [
        (
            "/v1/apps/shop/access_token?min_ttl=1&min_ttl=abc",
            KEY,
            "min_ttl",
        ),
        (
            "/v1/apps/shop/access_token?min_ttl=1&min_ttl=1",
            KEY,
            "min_ttl",
        ),
        (
            "/v1/apps/shop/access_token?min_ttl=1&min%5Fttl=2",
            KEY,
            "min_ttl",
        ),
        (
            "/v1/apps/shop/ticket/jsapi?min_ttl=1&min_ttl=2",
            KEY,
            "min_ttl",
        ),
        ("/v1/apps/shop/timeline?since=1&since=2", KEY, "since"),
        ("/v1/audit?since=0&limit=5&limit=6", ADMIN, "limit"),
        ("/v1/audit?since=0&since=1", ADMIN, "since"),
    ] {
        let (status, body) = app.get(path, Some(key)).await;
        assert_eq!(
            (status, code(&body)),
            (400, "bad_request"),
            "{path}: {body}"
        );
        assert_eq!(
            message(&body),
            format!("query parameter `{name}` is given more than once"),
            "{path}"
        );
    }
    // The same parameters once are fine.
    let (status, _) = app
        .get(
            "/v1/apps/shop/access_token?min_ttl=1&other=1&other=2",
            Some(KEY),
        )
        .await;
    assert_eq!(status, 200, "parameters the route does not read may repeat");
    let (status, _) = app.get("/v1/audit?since=0&limit=5", Some(ADMIN)).await;
    assert_eq!(status, 200);

    // WeChat's shapes answer WeChat's way: errcode 40097 invalid args, HTTP 200.
    let token = app.token().await;
    for (path, name) in [
        (
            format!(
                "/cgi-bin/token?grant_type=client_credential&appid={APPID}&appid=wx1&secret={KEY}"
            ),
            "appid",
        ),
        (
            format!(
                "/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={KEY}&secret={KEY}"
            ),
            "secret",
        ),
        (
            format!("/cgi-bin/gettoken?corpid={CORPID}&corpsecret={KEY}&corpsecret=x"),
            "corpsecret",
        ),
        (
            format!("/sns/jscode2session?appid={APPID}&secret={KEY}&secret=x&js_code=c"),
            "secret",
        ),
        (
            format!("/cgi-bin/get_api_domain_ip?access_token={token}&access_token={token}"),
            "access_token",
        ),
        (
            format!("/cgi-bin/get_api_domain_ip?access_token={token}&access%5Ftoken=x"),
            "access_token",
        ),
    ] {
        let (status, body) = app.get(&path, None).await;
        assert_eq!(
            (status, body["errcode"].as_i64()),
            (200, Some(40097)),
            "{path}: {body}"
        );
        assert_eq!(
            body["errmsg"],
            format!("invalid args (wxtoken: `{name}` is given more than once)")
        );
    }
    assert_eq!(app.stats().api_calls, 0, "nothing was forwarded");
}

#[tokio::test]
async fn a_path_that_does_not_decode_to_utf8_gets_the_json_error_shape() {
    let app = spawn_app().await;
    for path in [
        "/v1/apps/%FF%FE/ticket/jsapi",
        "/v1/apps/shop/ticket/%FF",
        "/v1/apps/%C0%AF",
        "/v1/apps/%FF/timeline",
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.base))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{path}"
        );
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(code(&body), "bad_request", "{path}");
        assert!(message(&body).contains("not valid UTF-8"), "{body}");
    }
    // The hot path reads the raw path: an undecodable id is simply no app.
    let (status, body) = app.get("/v1/apps/%FF%FE/access_token", Some(KEY)).await;
    assert_eq!((status, code(&body)), (404, "app_not_found"));
}

#[tokio::test]
async fn a_request_head_that_trickles_in_is_cut_off_at_the_header_timeout() {
    let app = spawn_with_server("header_read_timeout_ms = 300").await;
    let mut stream = TcpStream::connect(addr(&app)).await.expect("connect");
    stream.write_all(b"GET /healthz HT").await.expect("write");
    let started = Instant::now();
    // One byte every 50 ms: never a whole head.
    let mut closed_after = None;
    for byte in b"TP/1.1\r\nx-slow: ".iter().chain([b'a'; 100].iter()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if stream.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(read) = timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
            // A close (0 bytes, or a reset) and no answer.
            assert!(!matches!(read, Ok(n) if n > 0), "answered: {:?}", &buf[..]);
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("the connection was closed");
    assert!(
        closed_after >= Duration::from_millis(250) && closed_after < Duration::from_secs(2),
        "{closed_after:?}"
    );
    // A head sent at once is served as always; the kept-alive connection is closed
    // once it has been idle for as long.
    let mut stream = TcpStream::connect(addr(&app)).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    assert!(one_answer(&mut stream).await.starts_with("HTTP/1.1 200"));
    let idle = Instant::now();
    let mut rest = Vec::new();
    timeout(Duration::from_secs(3), stream.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("a clean close");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        idle.elapsed() >= Duration::from_millis(250),
        "{:?}",
        idle.elapsed()
    );
}

#[tokio::test]
async fn past_max_connections_a_connection_waits_until_one_closes() {
    let app = spawn_with_server("max_connections = 2").await;
    let request = format!(
        "GET /v1/apps/shop/access_token HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n\r\n"
    );
    let mut first = TcpStream::connect(addr(&app)).await.expect("connect");
    first.write_all(request.as_bytes()).await.expect("write");
    assert!(one_answer(&mut first).await.starts_with("HTTP/1.1 200"));
    let mut second = TcpStream::connect(addr(&app)).await.expect("connect");
    second.write_all(request.as_bytes()).await.expect("write");
    assert!(one_answer(&mut second).await.starts_with("HTTP/1.1 200"));

    // The third is accepted by the kernel but not served while two are open.
    let mut third = TcpStream::connect(addr(&app)).await.expect("connect");
    third.write_all(request.as_bytes()).await.expect("write");
    let mut buf = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(500), third.read(&mut buf))
            .await
            .is_err(),
        "the third connection was served"
    );
    // The open ones keep working.
    first.write_all(request.as_bytes()).await.expect("write");
    assert!(one_answer(&mut first).await.starts_with("HTTP/1.1 200"));

    // One closes: the third is served.
    drop(second);
    let answer = one_answer(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Writes a POST whose body of `length` bytes arrives one byte every 50 ms, and reads
/// what the server answers (if it answers before the body is done).
async fn slow_post(app: &TestApp, path: &str, length: usize) -> (String, Duration) {
    let mut stream = TcpStream::connect(addr(app)).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let started = Instant::now();
    let mut out = Vec::new();
    for _ in 1..length {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut buf = [0u8; 1024];
        if let Ok(Ok(n)) = timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
            out.extend_from_slice(&buf[..n]);
            break;
        }
        if stream.write_all(b" ").await.is_err() {
            break;
        }
    }
    let elapsed = started.elapsed();
    let _ = timeout(Duration::from_secs(2), stream.read_to_end(&mut out)).await;
    (String::from_utf8_lossy(&out).into_owned(), elapsed)
}

#[tokio::test]
async fn a_body_that_trickles_in_is_cut_off_at_the_body_timeout() {
    let app = spawn_with_server("body_read_timeout_ms = 400").await;
    app.token().await;
    // 200 bytes at 20 a second would take 10 s; each byte comes well within any
    // per-read timeout, but the whole body does not come within 400 ms.
    let (answer, elapsed) = slow_post(&app, "/v1/apps/shop/access_token/invalidate", 200).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(app.upstream_calls(), 1, "nothing was invalidated");
}

#[tokio::test]
async fn a_gateway_body_that_trickles_in_is_cut_off_at_the_gateway_timeout() {
    let options = Options::default();
    let app = spawn_app_from(emulator_config(&options), move |api_base, db| {
        config_toml(&options, api_base, db) + "[gateway]\nrequest_timeout_ms = 400\n"
    })
    .await;
    let token = app.token().await;
    let (answer, elapsed) = slow_post(
        &app,
        &format!("/cgi-bin/message/custom/send?access_token={token}"),
        200,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(app.stats().api_calls, 0, "nothing was forwarded");
}
