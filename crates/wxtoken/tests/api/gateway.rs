//! The gateway: WeChat API calls with a token this server issued are forwarded, a dead
//! token is hidden by one retry, anything else is refused without reaching WeChat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::helpers::*;

async fn wx(app: &TestApp, request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request is sent");
    let status = response.status().as_u16();
    let _ = app;
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_call_with_an_issued_token_is_forwarded_to_wechat() {
    let app = spawn_app().await;
    let token = app.token().await;
    let url = format!(
        "{}/cgi-bin/get_api_domain_ip?access_token={token}",
        app.base
    );
    let (status, body) = wx(&app, app.http.get(url)).await;
    assert_eq!(status, 200);
    assert!(body["dns"].is_array(), "{body}");

    let url = format!(
        "{}/cgi-bin/message/custom/send?access_token={token}",
        app.base
    );
    let send = json!({"touser": "o1", "msgtype": "text", "text": {"content": "hi"}});
    let (status, body) = wx(&app, app.http.post(url).json(&send)).await;
    assert_eq!((status, body["errcode"].as_i64()), (200, Some(0)), "{body}");
    assert_eq!(app.stats().api_calls, 2);
}

#[tokio::test]
async fn a_token_not_issued_here_is_refused_and_never_forwarded() {
    let app = spawn_app().await;
    app.token().await;
    let before = app.emulator.emulator.stats();
    for token in ["80_not_ours", "", "x"] {
        let url = format!(
            "{}/cgi-bin/get_api_domain_ip?access_token={token}",
            app.base
        );
        let (status, body) = wx(&app, app.http.get(url)).await;
        assert_eq!(status, 200);
        let expected = if token.is_empty() { 41001 } else { 40014 };
        assert_eq!(body["errcode"], expected, "{token}: {body}");
    }
    let (status, body) = wx(
        &app,
        app.http
            .post(format!("{}/wxa/getwxacodeunlimit", app.base))
            .body("{}"),
    )
    .await;
    assert_eq!((status, body["errcode"].as_i64()), (200, Some(41001)));
    // A real token on a path that is not WeChat's: 404, not forwarded either.
    let token = app.token().await;
    // (Dot segments are resolved by the client's URL parser already; the unit tests of
    // `is_wechat_api_path` cover them.)
    for path in ["/etc/passwd", "/v2/anything", "/sns/userinfo"] {
        let url = format!("{}{path}?access_token={token}", app.base);
        let (status, body) = wx(&app, app.http.get(url)).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let after = app.emulator.emulator.stats();
    assert_eq!(
        serde_json::to_value(&before.apps).expect("stats"),
        serde_json::to_value(&after.apps).expect("stats"),
        "the emulator saw no call"
    );
}

#[tokio::test]
async fn a_token_killed_at_wechat_is_hidden_by_one_retry() {
    for mode in ["classic", "stable"] {
        let app = spawn_app_with(Options {
            mode,
            ..Options::default()
        })
        .await;
        let token = app.token().await;
        app.emulator.emulator.revoke_token(&token);
        let url = format!(
            "{}/cgi-bin/message/custom/send?access_token={token}",
            app.base
        );
        let (status, body) = wx(&app, app.http.post(url).body(r#"{"touser":"o1"}"#)).await;
        assert_eq!(
            (status, body["errcode"].as_i64()),
            (200, Some(0)),
            "{mode}: {body}"
        );
        let stats = app.stats();
        assert_eq!(stats.stale_rejections, 1, "{mode}");
        assert_eq!(stats.api_calls, 1, "{mode}");
        let fresh = app.token().await;
        assert_ne!(
            fresh, token,
            "{mode}: the dead token was reported and replaced"
        );
        assert_eq!(app.upstream_calls(), 2, "{mode}: one refresh");
    }
}

#[tokio::test]
async fn the_proxy_route_injects_the_current_token() {
    let app = spawn_app().await;
    let url = |app_id: &str, path: &str| format!("{}/v1/apps/{app_id}/proxy{path}", app.base);
    let (status, body) = wx(
        &app,
        app.http
            .get(url("shop", "/cgi-bin/get_api_domain_ip"))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["dns"].is_array(), "{body}");
    // A token in the query is replaced, not trusted.
    let (status, body) = wx(
        &app,
        app.http
            .get(url(
                "shop",
                "/cgi-bin/get_api_domain_ip?access_token=forged",
            ))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["dns"].is_array(), "{body}");

    let cases = [
        (
            url("shop", "/cgi-bin/get_api_domain_ip"),
            None,
            401,
            "unauthenticated",
        ),
        (
            url("hr", "/cgi-bin/get_api_domain_ip"),
            Some(READ_ONLY_KEY),
            403,
            "forbidden",
        ),
        (
            url("nope", "/cgi-bin/get_api_domain_ip"),
            Some(KEY),
            404,
            "app_not_found",
        ),
        (url("shop", "/not-wechat"), Some(KEY), 400, "bad_request"),
    ];
    for (url, key, status, error) in cases {
        let mut request = app.http.get(&url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let (got, body) = wx(&app, request).await;
        assert_eq!((got, code(&body)), (status, error), "{url}: {body}");
    }
    assert_eq!(app.stats().api_calls, 2);
}

/// Behaves like the token code of a typical SDK: fetches through the facade, caches
/// the token until shortly before the `expires_in` it was told, and on 40001, 40014
/// or 42001 drops it, fetches again and retries once.
struct Sdk {
    base: String,
    http: reqwest::Client,
    stable: bool,
    cached: Mutex<Option<(String, Instant)>>,
    /// Business calls that failed even after the SDK's own retry.
    failed: AtomicU64,
    /// Token errcodes the SDK saw (the gateway should hide them).
    token_errors: AtomicU64,
    calls: AtomicU64,
}

impl Sdk {
    async fn token(&self) -> String {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return token.clone();
            }
        }
        let response = if self.stable {
            self.http
                .post(format!("{}/cgi-bin/stable_token", self.base))
                .json(&json!({"grant_type": "client_credential", "appid": APPID, "secret": KEY}))
                .send()
                .await
        } else {
            self.http
                .get(format!(
                    "{}/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={KEY}",
                    self.base
                ))
                .send()
                .await
        };
        let body: Value = response.expect("sent").json().await.expect("json");
        let token = body["access_token"].as_str().expect("token").to_owned();
        let expires_in = body["expires_in"].as_u64().expect("expires_in");
        // SDKs keep a margin (WxJava 200 s of 7200); scaled to short tokens.
        let until = Instant::now() + Duration::from_secs(expires_in.saturating_sub(1));
        *cached = Some((token.clone(), until));
        token
    }

    async fn business_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        for attempt in 0..2 {
            let token = self.token().await;
            let url = format!(
                "{}/cgi-bin/message/custom/send?access_token={token}",
                self.base
            );
            let body: Value = self
                .http
                .post(url)
                .body(r#"{"touser":"o1","msgtype":"text"}"#)
                .send()
                .await
                .expect("sent")
                .json()
                .await
                .expect("json");
            match body["errcode"].as_i64() {
                Some(0) => return,
                Some(40001 | 40014 | 42001) if attempt == 0 => {
                    self.token_errors.fetch_add(1, Ordering::Relaxed);
                    *self.cached.lock().await = None;
                }
                _ => break,
            }
        }
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Several SDK instances call business APIs for `run`; returns the SDKs.
async fn run_sdks(
    app: &TestApp,
    stable: bool,
    run: Duration,
    kill_at: Option<Duration>,
) -> Vec<Arc<Sdk>> {
    let sdks: Vec<Arc<Sdk>> = (0..4)
        .map(|_| {
            Arc::new(Sdk {
                base: app.base.clone(),
                http: reqwest::Client::new(),
                stable,
                cached: Mutex::new(None),
                failed: AtomicU64::new(0),
                token_errors: AtomicU64::new(0),
                calls: AtomicU64::new(0),
            })
        })
        .collect();
    let end = Instant::now() + run;
    let mut tasks = Vec::new();
    for sdk in &sdks {
        for _ in 0..4 {
            let sdk = sdk.clone();
            tasks.push(tokio::spawn(async move {
                while Instant::now() < end {
                    sdk.business_call().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
    }
    if let Some(at) = kill_at {
        tokio::time::sleep(at).await;
        let current = app.token().await;
        app.emulator.emulator.revoke_token(&current);
    }
    for task in tasks {
        task.await.expect("sdk task");
    }
    sdks
}

fn totals(sdks: &[Arc<Sdk>]) -> (u64, u64, u64) {
    let sum = |f: fn(&Sdk) -> &AtomicU64| sdks.iter().map(|s| f(s).load(Ordering::Relaxed)).sum();
    (
        sum(|s| &s.calls),
        sum(|s| &s.failed),
        sum(|s| &s.token_errors),
    )
}

/// 8 s tokens refresh every 4-5 s (the refresh window shrinks to half the lifetime):
/// a 9 s run needs the first fetch and two refreshes.
const SDK_RUN: Duration = Duration::from_secs(9);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sdks_switched_by_host_see_no_failures_and_one_fetch_per_refresh() {
    for mode in ["classic", "stable"] {
        let app = spawn_app_with(Options {
            mode,
            expires_in: 8,
            overlap: Duration::from_secs(2),
            ..Options::default()
        })
        .await;
        let sdks = run_sdks(&app, mode == "stable", SDK_RUN, None).await;
        let (calls, failed, token_errors) = totals(&sdks);
        let fetches = app.upstream_calls();
        println!(
            "{mode}: {calls} business calls, {failed} failed, {token_errors} token errors seen, {fetches} upstream token calls"
        );
        assert!(calls > 200, "{mode}: the SDKs ran ({calls})");
        assert_eq!(failed, 0, "{mode}: no business call failed");
        assert_eq!(token_errors, 0, "{mode}: the SDKs never saw a dead token");
        assert!(
            (2..=4).contains(&fetches),
            "{mode}: one upstream fetch per refresh period, got {fetches}"
        );
        assert_eq!(app.stats().stale_rejections, 0, "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_killed_mid_run_is_hidden_from_every_sdk() {
    for mode in ["classic", "stable"] {
        let app = spawn_app_with(Options {
            mode,
            expires_in: 60,
            ..Options::default()
        })
        .await;
        let sdks = run_sdks(
            &app,
            mode == "stable",
            Duration::from_secs(3),
            Some(Duration::from_millis(1500)),
        )
        .await;
        let (calls, failed, token_errors) = totals(&sdks);
        let stats = app.stats();
        println!(
            "{mode}: {calls} calls, {failed} failed, {token_errors} token errors seen, {} rejected at WeChat, {} upstream token calls",
            stats.stale_rejections,
            app.upstream_calls()
        );
        assert_eq!(failed, 0, "{mode}");
        assert_eq!(token_errors, 0, "{mode}: the gateway's retry hid the kill");
        assert!(stats.stale_rejections >= 1, "{mode}: the kill was met");
        assert_eq!(app.upstream_calls(), 2, "{mode}: one refresh for the kill");
    }
}

#[tokio::test]
async fn login_calls_go_out_with_the_real_secret_which_never_comes_back() {
    let app = spawn_app().await;
    let http = &app.http;
    for (path, code) in [
        ("/sns/jscode2session", "js_code"),
        ("/sns/oauth2/access_token", "code"),
    ] {
        let url = |key: &str, value: &str| {
            format!(
                "{}{path}?appid={APPID}&secret={key}&{code}={value}&grant_type=authorization_code",
                app.base
            )
        };
        let (status, body) = wx(&app, http.get(url(KEY, "c-1"))).await;
        assert_eq!(status, 200);
        assert!(body["openid"].is_string(), "{path}: {body}");
        assert!(
            !body.to_string().contains(SECRET),
            "the secret never comes back"
        );
        // WeChat's own errors pass through.
        let (_, body) = wx(&app, http.get(url(KEY, "c-1"))).await;
        assert_eq!(body["errcode"], 40163, "{path}: {body}");
        let calls = app.stats().sns_calls;
        for key in ["wxt_not_a_key_we_know", OTHER_KEY, SECRET] {
            let (status, body) = wx(&app, http.get(url(key, "c-2"))).await;
            assert_eq!(
                (status, body["errcode"].as_i64()),
                (200, Some(40125)),
                "{path}: {body}"
            );
        }
        let (_, body) = wx(
            &app,
            http.get(format!(
                "{}{path}?appid=wxnope&secret={KEY}&{code}=c&grant_type=authorization_code",
                app.base
            )),
        )
        .await;
        assert_eq!(body["errcode"], 40013);
        assert_eq!(
            app.stats().sns_calls,
            calls,
            "refused here, never forwarded"
        );
    }
}

#[tokio::test]
async fn binary_answers_pass_through_untouched() {
    let app = spawn_app().await;
    let token = app.token().await;
    let response = app
        .http
        .post(format!(
            "{}/wxa/getwxacodeunlimit?access_token={token}",
            app.base
        ))
        .body(r#"{"scene":"id=42"}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    let bytes = response.bytes().await.expect("bytes");
    assert_eq!(&bytes[..3], &[0xFF, 0xD8, 0xFF]);
}
