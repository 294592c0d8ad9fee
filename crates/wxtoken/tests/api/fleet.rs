//! Several instances on one real Redis (a `redis-server` each test starts on a free
//! port), against the emulator.

use std::collections::HashSet;
use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;
use wechat_emulator::{AppCredentials, Config as EmulatorConfig, RunningEmulator, TokenCheck};
use wxtoken::credential::{CredentialKey, Token};
use wxtoken::store::{Store, Update};
use wxtoken::{Server, Settings};

use crate::helpers::{APPID, KEY, SECRET, serve};
use crate::redis_server::RedisServer;

/// The config of one fleet instance: the `shop` app only, so readiness speaks of it alone.
pub fn fleet_config(
    mode: &str,
    api_base: &str,
    redis_url: &str,
    lease_ttl_ms: u64,
    store_extra: &str,
) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
kind = "redis"
url = "{redis_url}"
lease_ttl_ms = {lease_ttl_ms}
reconcile_secs = 1
op_timeout_ms = 300
{store_extra}
[upstream]
api_base = "{api_base}"
request_timeout_ms = 5000
[[apps]]
id = "shop"
appid = "{APPID}"
secret = "{SECRET}"
mode = "{mode}"
[[clients]]
name = "order-service"
key = "{KEY}"
apps = ["*"]
scopes = ["read", "invalidate"]
"#
    )
}

pub struct Instance {
    pub base: String,
    _shutdown: oneshot::Sender<()>,
}

pub struct Fleet {
    pub emulator: RunningEmulator,
    pub instances: Vec<Instance>,
    pub http: reqwest::Client,
}

async fn spawn_fleet(n: usize, mode: &str, redis: &RedisServer, latency: Duration) -> Fleet {
    let emulator = EmulatorConfig {
        latency,
        ..EmulatorConfig::default()
    };
    spawn_fleet_with(n, mode, redis, emulator, "", "").await
}

/// `store_extra` goes into `[store]`; `extra` is appended (e.g. a `[keeper]` table).
pub async fn spawn_fleet_with(
    n: usize,
    mode: &str,
    redis: &RedisServer,
    emulator: EmulatorConfig,
    store_extra: &str,
    extra: &str,
) -> Fleet {
    spawn_fleet_on(n, mode, &redis.url(), emulator, store_extra, extra).await
}

/// As [`spawn_fleet_with`], on the Redis (or Redis Cluster) at `redis_url`.
pub async fn spawn_fleet_on(
    n: usize,
    mode: &str,
    redis_url: &str,
    emulator: EmulatorConfig,
    store_extra: &str,
    extra: &str,
) -> Fleet {
    let emulator = wechat_emulator::spawn(EmulatorConfig {
        apps: vec![AppCredentials::new(APPID, SECRET)],
        ..emulator
    })
    .await
    .expect("emulator");
    let toml = fleet_config(mode, &emulator.base_url(), redis_url, 2000, store_extra) + extra;
    let settings = Settings::from_toml(&toml).expect("valid");
    // Built together, so that every instance starts cold at the same moment.
    let servers = join_all((0..n).map(|_| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Server::build(&settings, listener)
            .await
            .expect("server builds")
    }))
    .await;
    let instances = servers
        .into_iter()
        .map(|server| {
            let base = format!("http://{}", server.local_addr().expect("addr"));
            let (tx, rx) = oneshot::channel();
            tokio::spawn(server.run(async {
                let _ = rx.await;
            }));
            Instance {
                base,
                _shutdown: tx,
            }
        })
        .collect();
    Fleet {
        emulator,
        instances,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(2048)
            .build()
            .expect("client"),
    }
}

impl Fleet {
    pub fn calls(&self) -> u64 {
        self.emulator
            .emulator
            .stats()
            .app(APPID)
            .upstream_token_calls()
    }

    pub async fn get(&self, i: usize, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.instances[i].base))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A token from instance `i` once it has one: with the store down, an instance
    /// refreshes alone only after the store has failed for a lease lifetime.
    pub async fn token_within(&self, i: usize, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let (status, body) = self.get(i, "/v1/apps/shop/access_token").await;
            if status == 200 {
                return body["access_token"].as_str().expect("token").to_owned();
            }
            assert!(Instant::now() < deadline, "instance {i}: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reports `token` dead to instance `i`: the status and the answer.
    pub async fn invalidate(&self, i: usize, token: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!(
                "{}/v1/apps/shop/access_token/invalidate",
                self.instances[i].base
            ))
            .bearer_auth(KEY)
            .json(&serde_json::json!({ "access_token": token }))
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn token(&self, i: usize) -> String {
        let (status, body) = self.get(i, "/v1/apps/shop/access_token").await;
        assert_eq!(status, 200, "instance {i}: {body}");
        body["access_token"].as_str().expect("token").to_owned()
    }
}

async fn cold_requests_make_one_call(n: usize) {
    let redis = RedisServer::start().await;
    let fleet = spawn_fleet(n, "classic", &redis, Duration::from_millis(300)).await;
    let answers = join_all((0..1000).map(|i| fleet.get(i % n, "/v1/apps/shop/access_token"))).await;
    let mut tokens = HashSet::new();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        tokens.insert(body["access_token"].as_str().expect("token").to_owned());
    }
    assert_eq!(tokens.len(), 1, "every instance serves the one token");
    assert_eq!(fleet.calls(), 1, "{n} instances, one upstream call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_cold_requests_over_two_instances_make_one_upstream_call() {
    cold_requests_make_one_call(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_cold_requests_over_four_instances_make_one_upstream_call() {
    cold_requests_make_one_call(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_sent_to_one_instance_is_seen_by_another() {
    let redis = RedisServer::start().await;
    let fleet = spawn_fleet(2, "classic", &redis, Duration::ZERO).await;
    let first = fleet.token(0).await;
    assert_eq!(fleet.token(1).await, first);

    let response: Value = fleet
        .http
        .post(format!(
            "{}/v1/apps/shop/access_token/invalidate",
            fleet.instances[0].base
        ))
        .bearer_auth(KEY)
        .json(&serde_json::json!({ "access_token": first }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let second = response["access_token"].as_str().expect("token").to_owned();
    assert_ne!(second, first);
    let sent = Instant::now();
    // Poll B: it must switch to the new token without being asked (pub/sub).
    loop {
        if fleet.token(1).await == second {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "instance B never saw the new token"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "instance B served the new token {:?} after A stored it",
        sent.elapsed()
    );
    assert!(sent.elapsed() < Duration::from_millis(500));
    // B reporting the old token fetches nothing: it is not current anywhere.
    assert_eq!(fleet.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_cannot_overwrite_a_newer_generation() {
    let redis = RedisServer::start().await;
    let store = redis.store().await;
    let coordination = store.coordination().expect("redis coordinates");
    let mut updates = coordination.updates();
    let key = CredentialKey::access_token("shop");
    let token = |value: &str, generation| Token {
        value: value.into(),
        expires_at_ms: 4_102_444_800_000,
        fetched_at_ms: 0,
        lifetime_secs: 7200,
        generation,
    };
    assert!(
        store
            .save(key.clone(), token("new", 2))
            .await
            .expect("save")
    );
    // A paused instance wakes up with an older fetch, or the same generation and another value.
    assert!(
        !store
            .save(key.clone(), token("old", 1))
            .await
            .expect("save")
    );
    assert!(
        !store
            .save(key.clone(), token("rival", 2))
            .await
            .expect("save")
    );
    assert_eq!(
        store.load(key.clone()).await.expect("load"),
        Some(token("new", 2))
    );

    // Every write is announced.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let update = tokio::time::timeout_at(deadline, updates.recv())
            .await
            .expect("an announcement arrives")
            .expect("channel open");
        if update == Update::Stored(key.clone(), 2) {
            break;
        }
    }

    // Leases: one owner at a time, released only by their owner.
    let ttl = Duration::from_secs(5);
    assert!(
        coordination
            .acquire_lease(&key, "a", ttl)
            .await
            .expect("acquire")
    );
    assert!(
        !coordination
            .acquire_lease(&key, "b", ttl)
            .await
            .expect("acquire")
    );
    assert!(
        !coordination
            .renew_lease(&key, "b", ttl)
            .await
            .expect("renew")
    );
    coordination
        .release_lease(&key, "b")
        .await
        .expect("release");
    assert!(
        !coordination
            .acquire_lease(&key, "b", ttl)
            .await
            .expect("still a's")
    );
    coordination
        .release_lease(&key, "a")
        .await
        .expect("release");
    assert!(
        coordination
            .acquire_lease(&key, "b", ttl)
            .await
            .expect("now b's")
    );

    // Keys are hash-tagged per app, so a Redis Cluster keeps an app in one slot.
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(!keys.is_empty());
    assert!(
        keys.iter().all(|k| k.starts_with("wxtoken:{shop}:")),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_killed_and_restarted_clients_see_no_error_and_nothing_is_refetched() {
    let mut redis = RedisServer::start().await;
    let fleet = spawn_fleet(2, "classic", &redis, Duration::ZERO).await;
    let token = fleet.token(0).await;
    assert_eq!(fleet.token(1).await, token);
    let (_, ready) = fleet.get(0, "/readyz").await;
    assert_eq!(ready["status"], "ready");
    assert!(
        ready["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("nothing on disk")),
        "a Redis without persistence is warned about: {ready}"
    );

    redis.kill().await;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for i in 0..2 {
            assert_eq!(
                fleet.token(i).await,
                token,
                "served from memory while Redis is down"
            );
        }
    }
    let (status, ready) = fleet.get(1, "/readyz").await;
    assert_eq!(
        (status, ready["status"].as_str()),
        (200, Some("degraded")),
        "{ready}"
    );

    redis.restart().await;
    // Both notice on their own (reconnect + reconcile), and re-seed the empty Redis.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = redis.connection().await;
    loop {
        let stored: Option<String> = redis::cmd("HGET")
            .arg("wxtoken:{shop}:access_token")
            .arg("value")
            .query_async(&mut conn)
            .await
            .expect("hget");
        let (_, a) = fleet.get(0, "/readyz").await;
        let (_, b) = fleet.get(1, "/readyz").await;
        if stored.as_deref() == Some(token.as_str())
            && a["status"] == "ready"
            && b["status"] == "ready"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fleet did not recover: {a} {b} {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..2 {
        assert_eq!(fleet.token(i).await, token);
    }
    assert_eq!(
        fleet.calls(),
        1,
        "no refresh storm: the token was valid throughout"
    );
}

/// Short tokens, Redis killed after warm-up, clients past the first token's expiry.
async fn outlive_the_first_token_without_redis(
    mode: &str,
    store_extra: &str,
    extra: &str,
) -> (Fleet, String) {
    let mut redis = RedisServer::start().await;
    let emulator = EmulatorConfig {
        expires_in: 4,
        overlap: Duration::from_secs(1),
        ..EmulatorConfig::default()
    };
    let fleet = spawn_fleet_with(1, mode, &redis, emulator, store_extra, extra).await;
    let first = fleet.token(0).await;
    redis.kill().await;
    // Past the first token's expiry (the scenario itself, not a synchronisation).
    tokio::time::sleep(Duration::from_millis(4500)).await;
    (fleet, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_stable_mode_instance_refreshes_alone() {
    let keeper = "[keeper]\nstable_window_secs = 1\n";
    let (fleet, first) = outlive_the_first_token_without_redis("stable", "", keeper).await;
    let now = fleet.token_within(0, Duration::from_secs(5)).await;
    assert_ne!(now, first, "the token was renewed while Redis was down");
    assert_eq!(fleet.emulator.emulator.check_token(&now), TokenCheck::Valid);
    // The first fetch and the renewal alone (one more if its next window came too).
    let calls = fleet.calls();
    assert!((2..=3).contains(&calls), "{calls} upstream calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_classic_mode_instance_does_not_refresh_alone() {
    let (fleet, _) = outlive_the_first_token_without_redis("classic", "", "").await;
    let (status, body) = fleet.get(0, "/v1/apps/shop/access_token").await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().expect("msg");
    assert!(message.contains("not refreshing alone"), "{body}");
    assert_eq!(
        fleet.calls(),
        1,
        "a classic fetch alone would kill the fleet's token"
    );
    let (status, _) = fleet.get(0, "/readyz").await;
    assert_eq!(
        status, 503,
        "nothing valid to serve and no store: not ready"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_classic_mode_refreshes_alone_when_configured_to() {
    let store = "classic_refresh_when_down = true";
    let (fleet, first) = outlive_the_first_token_without_redis("classic", store, "").await;
    let now = fleet.token_within(0, Duration::from_secs(5)).await;
    assert_ne!(now, first);
    assert_eq!(fleet.emulator.emulator.check_token(&now), TokenCheck::Valid);
    let calls = fleet.calls();
    assert!((2..=3).contains(&calls), "{calls} upstream calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_while_holding_the_lease_is_replaced_within_the_lease_ttl() {
    let redis = RedisServer::start().await;
    // A slow WeChat keeps the first instance's fetch (and lease) in flight.
    let emulator = wechat_emulator::spawn(EmulatorConfig {
        apps: vec![AppCredentials::new(APPID, SECRET)],
        latency: Duration::from_millis(1500),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let lease_ttl = Duration::from_millis(1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("wxtoken.toml");
    std::fs::write(
        &config,
        fleet_config(
            "classic",
            &emulator.base_url(),
            &redis.url(),
            lease_ttl.as_millis() as u64,
            "",
        ),
    )
    .expect("write config");

    let mut first = serve(&config).await.child;
    let mut conn = redis.connection().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let holder = loop {
        let owner: Option<String> = redis::cmd("GET")
            .arg("wxtoken:{shop}:access_token:lease")
            .query_async(&mut conn)
            .await
            .expect("get lease");
        if let Some(owner) = owner {
            break owner;
        }
        assert!(
            Instant::now() < deadline,
            "the first instance never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    first.kill().await.expect("SIGKILL");
    let killed = Instant::now();

    let second = serve(&config).await;
    let base = second.base.clone();
    let token: Value = reqwest::Client::new()
        .get(format!("{base}/v1/apps/shop/access_token"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let token = token["access_token"]
        .as_str()
        .expect("the second instance took over");
    let took = killed.elapsed();
    println!("token served {took:?} after the lease holder was killed");
    // The dead holder's lease expires within its TTL; then one fetch (1.5 s) follows.
    assert!(
        took < lease_ttl + Duration::from_millis(1500) + Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(emulator.emulator.check_token(token), TokenCheck::Valid);
    let owner: Option<String> = redis::cmd("GET")
        .arg("wxtoken:{shop}:access_token:lease")
        .query_async(&mut conn)
        .await
        .expect("get lease");
    assert_ne!(
        owner.as_deref(),
        Some(holder.as_str()),
        "the dead holder's lease is gone"
    );
    // The dead instance takes the lease before it calls WeChat, so its call may or may
    // not have left: one or two calls, never more.
    let calls = emulator.emulator.stats().app(APPID).upstream_token_calls();
    assert!((1..=2).contains(&calls), "{calls} upstream calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_serves_a_fleet() {
    let redis = RedisServer::start_tls().await;
    let ca = format!("tls_ca_file = {:?}", redis.ca_file().display().to_string());
    let fleet = spawn_fleet_with(2, "stable", &redis, EmulatorConfig::default(), &ca, "").await;
    let token = fleet.token(0).await;
    assert_eq!(fleet.token(1).await, token);
    assert_eq!(fleet.calls(), 1, "one fetch over TLS-coordinated instances");

    // Without the CA, the server's certificate is not trusted, and the start says why.
    let toml = fleet_config("stable", &fleet.emulator.base_url(), &redis.url(), 2000, "");
    let settings = Settings::from_toml(&toml).expect("valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let error = Server::build(&settings, listener)
        .await
        .expect_err("untrusted certificate");
    let chain = format!("{:#}", anyhow::Error::from(error)).to_lowercase();
    assert!(
        chain.contains("certificate") || chain.contains("issuer"),
        "{chain}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_refreshing_short_tokens_fetches_once_per_period_and_never_serves_a_dead_token() {
    let redis = RedisServer::start().await;
    short_tokens_run(&redis.url(), "").await;
}

/// Four classic-mode instances with 4 s tokens, eight clients for 8 s: one fetch per
/// refresh period, and never a token WeChat no longer accepts.
pub async fn short_tokens_run(redis_url: &str, store_extra: &str) -> Fleet {
    let emulator = EmulatorConfig {
        expires_in: 4,
        overlap: Duration::from_secs(1),
        ..EmulatorConfig::default()
    };
    // Classic: any extra fetch would kill the token the other instances serve.
    let fleet = std::sync::Arc::new(
        spawn_fleet_on(4, "classic", redis_url, emulator, store_extra, "").await,
    );
    fleet.token(0).await;
    let run = Duration::from_secs(8);
    let deadline = Instant::now() + run;
    let clients = (0..8).map(|c| {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            let mut i = c;
            while Instant::now() < deadline {
                let token = fleet.token(i % 4).await;
                assert_eq!(
                    fleet.emulator.emulator.check_token(&token),
                    TokenCheck::Valid,
                    "instance {} served a dead token",
                    i % 4
                );
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    });
    for client in join_all(clients).await {
        client.expect("client");
    }
    // A 4 s token is refreshed 1.6-2 s before expiry: one fetch every 2-2.4 s at most.
    let ideal = 1 + run.as_secs() / 2;
    let calls = fleet.calls();
    println!("{calls} upstream calls in {run:?} (ideal {ideal})");
    assert!(calls <= ideal + 1, "{calls} upstream calls, ideal {ideal}");
    std::sync::Arc::into_inner(fleet).expect("the clients are done")
}

/// A store that answers slowly is not a store that is down: while another instance may
/// hold the lease, no instance fetches alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_is_not_taken_for_down_and_nobody_fetches_alone() {
    let redis = RedisServer::start().await;
    let fleet = spawn_fleet(1, "stable", &redis, Duration::ZERO).await;
    let token = fleet.token(0).await;
    let before = fleet.calls();

    // Another instance holds the lease, and then Redis stalls for longer than an
    // operation may take (300 ms).
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("SET")
        .arg("wxtoken:{shop}:access_token:lease")
        .arg("another-instance")
        .arg("PX")
        .arg(30_000)
        .query_async(&mut conn)
        .await
        .expect("set lease");
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(800)
        .arg("ALL")
        .query_async(&mut conn)
        .await
        .expect("pause");

    let (status, body) = fleet.invalidate(0, &token).await;
    assert_eq!(status, 503, "no value without the lease: {body}");
    assert_eq!(
        fleet.calls(),
        before,
        "no fetch alone while the store is merely slow"
    );
}

/// A follower waiting for the lease holder must not take a re-store of the very token
/// a client reported dead (same generation, later expiry) for an answer to the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_is_not_answered_by_a_re_store_of_the_reported_token() {
    let redis = RedisServer::start().await;
    let emulator = EmulatorConfig {
        force_refresh_interval: Duration::ZERO,
        ..EmulatorConfig::default()
    };
    let fleet = spawn_fleet_with(1, "stable", &redis, emulator, "", "").await;
    let dead = fleet.token(0).await;
    let store = redis.store().await;
    let key = CredentialKey::access_token("shop");
    let stored = store
        .load(key.clone())
        .await
        .expect("load")
        .expect("stored");

    // Another instance holds the lease for 1.5 s.
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("SET")
        .arg("wxtoken:{shop}:access_token:lease")
        .arg("another-instance")
        .arg("PX")
        .arg(1500)
        .query_async(&mut conn)
        .await
        .expect("set lease");
    let report = {
        let http = fleet.http.clone();
        let url = format!(
            "{}/v1/apps/shop/access_token/invalidate",
            fleet.instances[0].base
        );
        let dead = dead.clone();
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(KEY)
                .json(&serde_json::json!({ "access_token": dead }))
                .send()
                .await
                .expect("sent")
                .json::<Value>()
                .await
                .expect("json")
        })
    };
    // While the instance waits for the holder, the holder stores the same token again
    // with a later expiry (a stable-mode repeat): newer, but no answer to the report.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restored = Token {
        expires_at_ms: stored.expires_at_ms + 1000,
        ..stored.clone()
    };
    assert!(store.save(key, restored).await.expect("save"));

    let answer = report.await.expect("report");
    let token = answer["access_token"].as_str().expect("token");
    assert_ne!(token, dead, "the reported token came back: {answer}");
    assert_eq!(answer["refreshed"], true, "{answer}");
    assert_eq!(
        fleet.emulator.emulator.check_token(token),
        TokenCheck::Valid
    );
}
