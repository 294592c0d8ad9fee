//! A refresher paused past its lease (SIGSTOP) must not store what it fetched: the
//! lease's new holder fetched later, and its value is the one WeChat keeps.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use wechat_emulator::{AppCredentials, Config as EmulatorConfig, TokenCheck};

use crate::fleet::fleet_config;
use crate::helpers::{APPID, KEY, SECRET, serve};
use crate::redis_server::RedisServer;

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {pid}");
}

async fn token(http: &reqwest::Client, base: &str) -> String {
    let body: Value = http
        .get(format!("{base}/v1/apps/shop/access_token"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresher_paused_past_its_lease_adopts_instead_of_storing() {
    let redis = RedisServer::start().await;
    let emulator = wechat_emulator::spawn(EmulatorConfig {
        apps: vec![AppCredentials::new(APPID, SECRET)],
        overlap: Duration::from_secs(1),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("wxtoken.toml");
    let toml = fleet_config("classic", &emulator.base_url(), &redis.url(), 500, "");
    std::fs::write(&config, toml).expect("write config");
    let a = serve(&config).await;
    let b = serve(&config).await;
    let http = reqwest::Client::new();
    let first = token(&http, &a.base).await;
    assert_eq!(token(&http, &b.base).await, first);
    let calls = || emulator.emulator.stats().app(APPID).token_calls;
    assert_eq!(calls(), 1);

    // A refreshes (a client reports the token) and WeChat takes 3 s to answer.
    emulator.emulator.set_latency(Duration::from_secs(3));
    let report = |base: String| {
        let http = http.clone();
        let first = first.clone();
        async move {
            http.post(format!("{base}/v1/apps/shop/access_token/invalidate"))
                .bearer_auth(KEY)
                .json(&serde_json::json!({ "access_token": first }))
                .send()
                .await
                .expect("sent")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let a_report = tokio::spawn(report(a.base.clone()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while calls() < 2 {
        assert!(Instant::now() < deadline, "A never called WeChat");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // WeChat has issued A's token (the second); A is paused while it waits for it.
    let a_pid = a.child.id().expect("pid");
    signal(a_pid, "-STOP");
    emulator.emulator.set_latency(Duration::ZERO);
    // Past A's 500 ms lease (the scenario itself, not a synchronisation).
    tokio::time::sleep(Duration::from_millis(700)).await;
    let answer = report(b.base.clone()).await;
    let third = answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"))
        .to_owned();
    assert_eq!(calls(), 3, "B took the lease over and fetched");

    // A wakes up, hears of B's value, then gets its own (older) answer from WeChat.
    signal(a_pid, "-CONT");
    let answered = a_report.await.expect("A's report");
    assert!(answered["access_token"].is_string(), "{answered}");
    // Past the overlap, only the newest token is alive at WeChat.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for (name, base) in [("A", &a.base), ("B", &b.base)] {
        let served = token(&http, base).await;
        assert_eq!(
            served, third,
            "{name} serves the value of the lease's holder"
        );
        assert_eq!(
            emulator.emulator.check_token(&served),
            TokenCheck::Valid,
            "{name} serves a token WeChat accepts"
        );
    }
    let mut conn = redis.connection().await;
    let stored: Option<String> = redis::cmd("HGET")
        .arg("wxtoken:{shop}:access_token")
        .arg("value")
        .query_async(&mut conn)
        .await
        .expect("hget");
    assert_eq!(
        stored.as_deref(),
        Some(third.as_str()),
        "A's late write was fenced off: the store keeps B's newer token"
    );
    assert_eq!(calls(), 3, "A, having lost the lease, fetched nothing more");
    let logs = a.logs.lock().expect("logs").join("\n");
    assert!(
        logs.contains("lost the refresh lease while fetching"),
        "A noticed: {logs}"
    );
}
