//! A driver that panics is restarted, and the callers it left waiting get an error at
//! once instead of waiting forever.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use wxtoken::store::SqliteStore;
use wxtoken::wechat::{FetchRequest, Fetched, TokenApi, UpstreamError, WechatClient};
use wxtoken::{Server, Settings};

use crate::helpers::*;

/// WeChat's client, except that token call number `panic_on` for APPID panics.
struct PanickyApi {
    inner: WechatClient,
    calls: AtomicU64,
    panic_on: u64,
}

impl TokenApi for PanickyApi {
    fn fetch<'a>(
        &'a self,
        request: FetchRequest<'a>,
    ) -> BoxFuture<'a, Result<Fetched, UpstreamError>> {
        if let FetchRequest::OfficialToken { appid: APPID, .. } = request {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n == self.panic_on {
                panic!("injected panic in token call {n}");
            }
        }
        self.inner.fetch(request).boxed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_panics_is_restarted_and_its_waiters_get_an_error_at_once() {
    // Stable mode: a classic app would rightly hold back a second report-driven
    // refresh for its cooldown.
    let options = Options::default();
    let emulator = wechat_emulator::spawn(emulator_config(&options))
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("wxtoken.db");
    let toml = config_toml(&options, &emulator.base_url(), &db.display().to_string());
    let settings = Settings::from_toml(&toml).expect("config");
    let store = Arc::new(SqliteStore::open(&db).expect("store"));
    let api = Arc::new(PanickyApi {
        inner: WechatClient::new(&settings.upstream).expect("client"),
        calls: AtomicU64::new(0),
        // Call 1 is the first fetch; call 2 the one a report causes.
        panic_on: 2,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = Server::build_with(&settings, listener, store, api.clone())
        .await
        .expect("server");
    let base = format!("http://{}", server.local_addr().expect("addr"));
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let token = |http: reqwest::Client| {
        let base = base.clone();
        async move {
            let r = http
                .get(format!("{base}/v1/apps/shop/access_token"))
                .bearer_auth(KEY)
                .send()
                .await
                .expect("answer, not a hang");
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.expect("json"))
        }
    };
    let (status, body) = token(http.clone()).await;
    assert_eq!(status, 200, "{body}");
    let first = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(api.calls.load(Ordering::SeqCst), 1);

    // The report makes the driver call WeChat, and that call panics.
    let invalidate = || {
        http.post(format!("{base}/v1/apps/shop/access_token/invalidate"))
            .bearer_auth(KEY)
            .json(&serde_json::json!({ "access_token": first }))
            .send()
    };
    let answer = invalidate().await.expect("an answer, not a hang");
    assert_eq!(answer.status(), 503);
    let body: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(code(&body), "token_unavailable", "{body}");
    // The valid token is still served meanwhile.
    let (status, body) = token(http.clone()).await;
    assert_eq!(
        (status, body["access_token"].as_str()),
        (200, Some(first.as_str()))
    );

    // Restarted (after its backoff), the driver serves the next report.
    let mut fresh = None;
    for _ in 0..100 {
        let answer = invalidate().await.expect("answer");
        if answer.status() == 200 {
            let body: serde_json::Value = answer.json().await.expect("json");
            fresh = body["access_token"].as_str().map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh = fresh.expect("the restarted driver refreshed the token");
    assert_ne!(fresh, first);
    // The normal call, then the force_refresh (WeChat handed back the reported token).
    assert_eq!(api.calls.load(Ordering::SeqCst), 4);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wxtoken_driver_restarts_total{") && l.contains("app=\"shop\"")),
        "{metrics}"
    );
}
