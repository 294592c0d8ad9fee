//! Limits the whole fleet shares, counted in Redis: the daily force_refresh budget, the
//! 30 s force_refresh spacing, WeCom's hourly ticket budgets, and the primitive beneath.

use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;
use wechat_emulator::Config as EmulatorConfig;
use wxtoken::store::Store;
use wxtoken::{Server, Settings};

use crate::fleet::spawn_fleet_with;
use crate::helpers::{APPID, KEY};
use crate::redis_server::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_one_daily_force_refresh_budget() {
    let redis = RedisServer::start().await;
    let emulator = EmulatorConfig {
        force_refresh_interval: Duration::ZERO,
        ..EmulatorConfig::default()
    };
    let keeper = "[keeper]\nforce_refresh_daily_budget = 1\nforce_refresh_min_interval_secs = 0\n";
    let fleet = spawn_fleet_with(2, "stable", &redis, emulator, "", keeper).await;
    // A reports its (valid) token dead: WeChat hands it back, so A spends the budget.
    let first = fleet.token(0).await;
    let (status, body) = fleet.invalidate(0, &first).await;
    assert_eq!(status, 200, "{body}");
    let second = body["access_token"].as_str().expect("token").to_owned();
    assert_ne!(second, first);
    // B, which has forced nothing itself, must not force again today.
    let deadline = Instant::now() + Duration::from_secs(2);
    while fleet.token(1).await != second {
        assert!(Instant::now() < deadline, "B never adopted A's token");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = fleet.invalidate(1, &second).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("budget (1)"),
        "{body}"
    );
    assert_eq!(
        fleet
            .emulator
            .emulator
            .stats()
            .app(APPID)
            .force_refresh_calls,
        1
    );
}

/// The fleet's budgets are counted atomically in Redis: two instances together get no
/// more than one alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_budget_counted_from_two_instances_holds() {
    let redis = RedisServer::start().await;
    let connect = || async { redis.store().await };
    let (a, b) = (connect().await, connect().await);
    let window = Duration::from_secs(60);
    let takes = (0..10).map(|i| {
        let store = if i % 2 == 0 { &a } else { &b };
        async move {
            store
                .coordination()
                .expect("redis")
                .take_budget("corp:ww1", "tickets", 4, window)
                .await
                .expect("budget")
        }
    });
    let granted = join_all(takes).await.into_iter().filter(|t| *t).count();
    assert_eq!(granted, 4, "4 uses in the window, whoever asks");
    // Another scope has its own budget.
    assert!(
        a.coordination()
            .expect("redis")
            .take_budget("shop", "tickets", 4, window)
            .await
            .expect("budget")
    );
    // A window passes: uses older than it no longer count.
    let short = Duration::from_millis(200);
    let coordination = a.coordination().expect("redis");
    assert!(
        coordination
            .take_budget("x", "spacing", 1, short)
            .await
            .expect("b")
    );
    assert!(
        !coordination
            .take_budget("x", "spacing", 1, short)
            .await
            .expect("b")
    );
    tokio::time::sleep(short + Duration::from_millis(50)).await;
    assert!(
        coordination
            .take_budget("x", "spacing", 1, short)
            .await
            .expect("b")
    );
}

/// WeChat ignores force refreshes less than 30 s apart, fleet-wide: after one
/// instance forced a refresh, another does not force again within the interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_refreshes_are_spaced_across_the_fleet() {
    let redis = RedisServer::start().await;
    let emulator = EmulatorConfig {
        force_refresh_interval: Duration::ZERO,
        ..EmulatorConfig::default()
    };
    let fleet = spawn_fleet_with(2, "stable", &redis, emulator, "", "").await;
    let first = fleet.token(0).await;
    let (status, body) = fleet.invalidate(0, &first).await;
    assert_eq!(status, 200, "{body}");
    let second = body["access_token"].as_str().expect("token").to_owned();
    assert_ne!(second, first, "A forced a refresh");
    let deadline = Instant::now() + Duration::from_secs(2);
    while fleet.token(1).await != second {
        assert!(Instant::now() < deadline, "B never adopted A's token");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = fleet.invalidate(1, &second).await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("less than 30s ago"), "{body}");
    assert_eq!(
        fleet
            .emulator
            .emulator
            .stats()
            .app(APPID)
            .force_refresh_calls,
        1,
        "one force_refresh in 30 s, fleet-wide"
    );
}

/// WeCom's 100 ticket fetches an hour per app are the fleet's, not each instance's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_ticket_budgets_are_counted_for_the_whole_fleet() {
    let redis = RedisServer::start().await;
    let emulator = wechat_emulator::spawn(EmulatorConfig {
        wecom_apps: vec![wechat_emulator::WecomCredentials::new(
            crate::helpers::CORPID,
            crate::helpers::AGENTID,
            crate::helpers::WECOM_SECRET,
        )],
        // WeChat's own limit out of the way: only wxtoken's budget may refuse.
        agent_ticket_hourly: 10_000,
        corp_ticket_hourly: 10_000,
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
kind = "redis"
url = "{url}"
[upstream]
api_base = "{api}"
wecom_base = "{api}"
[[apps]]
id = "hr"
kind = "wecom"
corpid = "{corpid}"
agentid = {agentid}
secret = "{secret}"
[[clients]]
name = "svc"
key = "{KEY}"
apps = ["*"]
scopes = ["read", "invalidate"]
"#,
        url = redis.url(),
        api = emulator.base_url(),
        corpid = crate::helpers::CORPID,
        agentid = crate::helpers::AGENTID,
        secret = crate::helpers::WECOM_SECRET,
    );
    let settings = Settings::from_toml(&toml).expect("config");
    let mut bases = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = Server::build(&settings, listener).await.expect("server");
        bases.push(format!("http://{}", server.local_addr().expect("addr")));
        let (tx, rx) = oneshot::channel::<()>();
        stops.push(tx);
        tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
    }
    let http = reqwest::Client::new();
    // Fetch the agent ticket, then report each value dead so that it is fetched again.
    let refresh = |base: &str| {
        let http = http.clone();
        let base = base.to_owned();
        async move {
            let body: Value = http
                .get(format!("{base}/v1/apps/hr/ticket/agent_config"))
                .bearer_auth(KEY)
                .send()
                .await
                .expect("sent")
                .json()
                .await
                .expect("json");
            let Some(ticket) = body["ticket"].as_str() else {
                return (0, body);
            };
            let response = http
                .post(format!("{base}/v1/apps/hr/ticket/agent_config/invalidate"))
                .bearer_auth(KEY)
                .json(&serde_json::json!({ "ticket": ticket }))
                .send()
                .await
                .expect("sent");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let calls = || {
        emulator
            .emulator
            .stats()
            .app(&wechat_emulator::wecom_key(
                crate::helpers::CORPID,
                crate::helpers::AGENTID,
            ))
            .ticket_calls
    };
    // Instance A spends 60 of the hour's 100.
    while calls() < 60 {
        let (status, body) = refresh(&bases[0]).await;
        assert_eq!(status, 200, "{body}");
    }
    // Instance B, which has fetched nothing itself, gets only the other 40.
    let mut refused = None;
    for _ in 0..60 {
        let (status, body) = refresh(&bases[1]).await;
        if status != 200 {
            refused = Some(body);
            break;
        }
    }
    let refused = refused.expect("B was refused within the fleet's budget");
    assert!(
        refused
            .to_string()
            .contains("100 ticket fetches an hour per app"),
        "{refused}"
    );
    assert_eq!(calls(), 100, "not one fetch past the fleet's budget");
    drop(stops);
}
