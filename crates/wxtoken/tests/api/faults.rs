//! The fault matrix (see TESTING.md): WeChat slow, failing, answering garbage, or a
//! valid token with a nonsense `expires_in`; the SQLite file refusing writes; Redis
//! restarted from its AOF. Each case asserts what clients see and how many calls
//! reached the emulator. Long-running faults ("for minutes") and wall clock steps are
//! proved with a paused clock in the keeper's unit tests (`keeper::fault_tests`).

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;
use wechat_emulator::{BadExpiresIn, FailKind, TokenCheck};

use tokio::net::TcpListener;
use wxtoken::credential::{CredentialKey, unix_now_ms, wechat_day};
use wxtoken::store::{SqliteStore, Store};
use wxtoken::wechat::WechatClient;
use wxtoken::{Server, Settings};

use crate::fleet::fleet_config;
use crate::helpers::*;
use crate::redis_server::RedisServer;

/// One upstream fault of the matrix.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Every token call fails this way (`fail_rate` 1.0).
    Kind(FailKind),
    /// Every token answer carries a real token with this `expires_in`.
    Expires(BadExpiresIn),
}

const FAULTS: [Fault; 11] = [
    Fault::Kind(FailKind::SystemBusy),
    Fault::Kind(FailKind::Http500),
    Fault::Kind(FailKind::Timeout),
    Fault::Kind(FailKind::Reset),
    Fault::Kind(FailKind::Garbage),
    Fault::Kind(FailKind::Truncated),
    Fault::Kind(FailKind::Huge),
    Fault::Expires(BadExpiresIn::Zero),
    Fault::Expires(BadExpiresIn::Negative),
    Fault::Expires(BadExpiresIn::Huge),
    Fault::Expires(BadExpiresIn::Text),
];

impl Fault {
    /// Upstream calls one failed refresh makes: one, except a value with
    /// `expires_in: 0`, which is asked for again once (a dying value would come back
    /// the same; a new one proves the answer broken).
    fn calls_per_round(self) -> u64 {
        match self {
            Fault::Expires(BadExpiresIn::Zero) => 2,
            _ => 1,
        }
    }

    /// What the error message says, so an operator knows what went wrong.
    fn says(self) -> &'static str {
        match self {
            Fault::Kind(FailKind::SystemBusy) => "system error",
            Fault::Kind(FailKind::Http500) => "HTTP 500",
            Fault::Kind(FailKind::Timeout) => "timed out",
            Fault::Kind(FailKind::Reset) => "calling WeChat",
            Fault::Kind(FailKind::Garbage) | Fault::Kind(FailKind::Truncated) => "not JSON",
            Fault::Kind(FailKind::Huge) => "over 65536 bytes",
            Fault::Expires(BadExpiresIn::Zero) => "expires_in 0",
            Fault::Expires(BadExpiresIn::Negative) | Fault::Expires(BadExpiresIn::Text) => {
                "field of the wrong type"
            }
            Fault::Expires(BadExpiresIn::Huge) => "beyond the 86400 s",
        }
    }

    /// WeChat's errcode, when the fault is an errcode.
    fn errcode(self) -> Option<i64> {
        matches!(self, Fault::Kind(FailKind::SystemBusy)).then_some(-1)
    }

    fn options(self, expires_in: u64) -> Options {
        Options {
            mode: "classic",
            expires_in,
            overlap: Duration::from_secs(2),
            fail_kinds: match self {
                Fault::Kind(kind) => vec![kind],
                Fault::Expires(_) => vec![],
            },
            // An injected timeout hangs past the request timeout.
            hang: Duration::from_secs(1),
            request_timeout_ms: 300,
            ..Options::default()
        }
    }

    /// An app on an emulator with this fault on from the start (or off, to be turned
    /// on with [`Fault::set`]).
    async fn app(self, expires_in: u64, on: bool) -> TestApp {
        let options = self.options(expires_in);
        let mut emulator = emulator_config(&options);
        match self {
            Fault::Kind(_) => emulator.fail_rate = if on { 1.0 } else { 0.0 },
            Fault::Expires(bad) => emulator.bad_expires_in = on.then_some(bad),
        }
        spawn_app_from(emulator, |api, db| config_toml(&options, api, db)).await
    }

    fn set(self, app: &TestApp, on: bool) {
        let emulator = &app.emulator.emulator;
        match self {
            Fault::Kind(_) => emulator.set_fail_rate(if on { 1.0 } else { 0.0 }),
            Fault::Expires(bad) => emulator.set_bad_expires_in(on.then_some(bad)),
        }
    }
}

/// Asserts a 502 `upstream_error` that says what the fault was.
fn assert_upstream_error(fault: Fault, status: u16, body: &serde_json::Value) {
    assert_eq!(status, 502, "{fault:?}: {body}");
    assert_eq!(code(body), "upstream_error", "{fault:?}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(fault.says()),
        "{fault:?}: {message:?} should say {:?}",
        fault.says()
    );
    assert_eq!(
        body["error"]["wechat_errcode"].as_i64(),
        fault.errcode(),
        "{fault:?}: {body}"
    );
}

/// Cold start under the fault: clients get a 502 that names it, the keeper makes one
/// round of calls and then backs off (requests during the backoff call nobody), and
/// once the fault clears it recovers on its own.
async fn cold_start_under(fault: Fault) {
    let app = fault.app(7200, true).await;
    let (status, body) = app.get("/v1/apps/shop/access_token", Some(KEY)).await;
    assert_upstream_error(fault, status, &body);
    let round = fault.calls_per_round();
    assert_eq!(app.upstream_calls(), round, "{fault:?}: one round");
    for _ in 0..5 {
        let (status, body) = app.get("/v1/apps/shop/access_token", Some(KEY)).await;
        assert_upstream_error(fault, status, &body);
    }
    assert_eq!(
        app.upstream_calls(),
        round,
        "{fault:?}: requests during the backoff call nobody"
    );
    let (_, status) = app.get("/v1/apps/shop", Some(KEY)).await;
    assert_eq!(status["last_error"]["class"], "transient", "{status}");
    assert!(status["token"].is_null(), "{status}");

    fault.set(&app, false);
    let deadline = Instant::now() + Duration::from_secs(5);
    let token = loop {
        let (status, body) = app.get("/v1/apps/shop/access_token", Some(KEY)).await;
        if status == 200 {
            break body["access_token"].as_str().expect("token").to_owned();
        }
        assert_upstream_error(fault, status, &body);
        assert!(Instant::now() < deadline, "{fault:?}: no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(app.emulator.emulator.check_token(&token), TokenCheck::Valid);
    let calls = app.upstream_calls();
    // The retry after the backoff that found the fault gone, and at most one more
    // failed round if a retry came before the fault was cleared.
    assert!(
        (round + 1..=2 * round + 1).contains(&calls),
        "{fault:?}: {calls} calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_upstream_at_a_cold_start_answers_502_naming_it_and_backs_off() {
    join_all(FAULTS.map(cold_start_under)).await;
}

/// The fault hits the proactive refresh of a held token (6 s tokens): clients keep
/// getting the held token, without an error, while the refresh fails; when the fault
/// clears, the next retry installs a new token.
async fn refresh_under(fault: Fault) {
    let app = fault.app(6, false).await;
    let first = app.token().await;
    assert_eq!(app.upstream_calls(), 1);
    fault.set(&app, true);
    let round = fault.calls_per_round();
    // The refresh is due 3-3.6 s after the fetch; the token is served until 1 s before
    // its end, 6 s after.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert_eq!(
            app.token().await,
            first,
            "{fault:?}: the held token is served"
        );
        let (_, status) = app.get("/v1/apps/shop", Some(KEY)).await;
        if status["consecutive_failures"].as_u64() >= Some(1) {
            assert_eq!(status["last_error"]["class"], "transient", "{status}");
            assert_eq!(status["token"]["generation"], 1, "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "{fault:?}: no refresh was tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(app.upstream_calls() > round, "{fault:?}: a failed round");

    fault.set(&app, false);
    let deadline = Instant::now() + Duration::from_secs(3);
    let second = loop {
        let served = app.token().await;
        if served != first {
            break served;
        }
        assert!(Instant::now() < deadline, "{fault:?}: no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        app.emulator.emulator.check_token(&second),
        TokenCheck::Valid
    );
    let calls = app.upstream_calls();
    // Retries come at most every quarter of what is left: a few failed rounds at most.
    assert!(
        (2 + round..=2 + 4 * round).contains(&calls),
        "{fault:?}: {calls} calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_upstream_during_a_refresh_keeps_serving_the_held_token_then_recovers() {
    join_all(FAULTS.map(refresh_under)).await;
}

/// WeChat answering in 2 s (within the 3 s request timeout): the cold requests share
/// one call and all get its token. Then answering in 4 s (past the timeout): a
/// report-driven refresh answers 502 after the timeout while the held token is served
/// at once meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_upstream_slow_within_and_past_the_request_timeout() {
    let app = spawn_app_with(Options {
        mode: "classic",
        latency: Duration::from_secs(2),
        request_timeout_ms: 3000,
        ..Options::default()
    })
    .await;
    let started = Instant::now();
    let answers = join_all((0..20).map(|_| app.get("/v1/apps/shop/access_token", Some(KEY)))).await;
    let first = answers[0].1["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["access_token"], first.as_str());
    }
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(app.upstream_calls(), 1, "one call for 20 cold requests");

    app.emulator.emulator.set_latency(Duration::from_secs(4));
    let reported = Instant::now();
    let report = app.invalidate(&first);
    let meanwhile = async {
        // While the refresh hangs, readers are served from memory without waiting.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let asked = Instant::now();
        let token = app.token().await;
        (token, asked.elapsed())
    };
    let ((status, body), (token, waited)) = tokio::join!(report, meanwhile);
    assert_eq!(token, first);
    assert!(waited < Duration::from_millis(500), "{waited:?}");
    assert_upstream_error(Fault::Kind(FailKind::Timeout), status, &body);
    let took = reported.elapsed();
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(4),
        "the report waited for the request timeout: {took:?}"
    );
    assert_eq!(app.upstream_calls(), 2);
    assert_eq!(app.token().await, first, "still served after the failure");
}

/// A server on `store` (a handle the test keeps) and the emulator: base URL and the
/// sender that stops it.
async fn serve_on(
    settings: &Settings,
    store: Arc<SqliteStore>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let api = Arc::new(WechatClient::new(&settings.upstream).expect("client"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = Server::build_with(settings, listener, store, api)
        .await
        .expect("server");
    let base = format!("http://{}", server.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    (base, stop)
}

async fn get(http: &reqwest::Client, url: String) -> (u16, serde_json::Value) {
    let response = http.get(url).bearer_auth(KEY).send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// The SQLite file refuses writes (SQLITE_READONLY, as a read-only file or mount gives):
/// clients are served from memory without an error, `/readyz` says `degraded` and why,
/// the app's status says the token is not persisted; once the file takes writes again,
/// the held token and the call counters are written within seconds, and a restart on
/// the file serves the token with no upstream call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sqlite_refusing_writes_serves_from_memory_and_writes_everything_once_it_clears() {
    let options = Options {
        mode: "classic",
        ..Options::default()
    };
    let emulator = wechat_emulator::spawn(emulator_config(&options))
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("wxtoken.db");
    // The shop app alone, so that readiness speaks of it alone.
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
path = "{db}"
[upstream]
api_base = "{api}"
[[apps]]
id = "shop"
appid = "{APPID}"
secret = "{SECRET}"
mode = "classic"
[[clients]]
name = "order-service"
key = "{KEY}"
apps = ["*"]
scopes = ["read", "invalidate"]
"#,
        db = db.display(),
        api = emulator.base_url(),
    );
    let settings = Settings::from_toml(&toml).expect("config");
    let store = Arc::new(SqliteStore::open(&db).expect("store"));
    let (base, stop) = serve_on(&settings, store.clone()).await;
    let http = reqwest::Client::new();
    let calls = || emulator.emulator.stats().app(APPID).upstream_token_calls();
    let key = CredentialKey::access_token("shop");
    let token_url = format!("{base}/v1/apps/shop/access_token");

    let (_, body) = get(&http, token_url.clone()).await;
    let first = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(calls(), 1);
    let stored = store
        .load(key.clone())
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(stored.value, first);

    store.set_read_only(true).await.expect("read-only");
    // A report makes the keeper fetch and install a new token it cannot write.
    let answer = http
        .post(format!("{base}/v1/apps/shop/access_token/invalidate"))
        .bearer_auth(KEY)
        .json(&serde_json::json!({ "access_token": first }))
        .send()
        .await
        .expect("sent");
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.expect("json");
    let second = body["access_token"].as_str().expect("token").to_owned();
    assert_ne!(second, first);
    assert_eq!(calls(), 2);
    for _ in 0..20 {
        let (status, body) = get(&http, token_url.clone()).await;
        assert_eq!(
            (status, body["access_token"].as_str()),
            (200, Some(second.as_str()))
        );
    }
    let (status, ready) = get(&http, format!("{base}/readyz")).await;
    assert_eq!(
        (status, ready["status"].as_str()),
        (200, Some("degraded")),
        "{ready}"
    );
    let reason = ready["reason"].as_str().expect("reason");
    assert!(
        reason.contains("refuses writes") && reason.contains("readonly"),
        "{reason}"
    );
    let (_, status) = get(&http, format!("{base}/v1/apps/shop")).await;
    assert_eq!(status["token"]["persisted"], false, "{status}");
    assert_eq!(status["token"]["generation"], 2, "{status}");
    let held = store
        .load(key.clone())
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(held.value, first, "the write was refused");

    // Still refused when tried again (every 2 s): the operators are told.
    let open_incidents = || async {
        let (_, alerts) = get(&http, format!("{base}/v1/alerts")).await;
        alerts["open"]
            .as_array()
            .map(|open| {
                open.iter()
                    .filter_map(|i| i["incident"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(6);
    while !open_incidents().await.contains(&"store#writes".to_owned()) {
        assert!(Instant::now() < deadline, "no store#writes incident");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    store.set_read_only(false).await.expect("writable");
    let cleared_at = unix_now_ms();
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let (_, ready) = get(&http, format!("{base}/readyz")).await;
        if ready["status"] == "ready" {
            break;
        }
        assert!(Instant::now() < deadline, "still not written: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = store
        .load(key.clone())
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(
        (stored.value.as_str(), stored.generation),
        (second.as_str(), 2)
    );
    let (_, status) = get(&http, format!("{base}/v1/apps/shop")).await;
    assert_eq!(status["token"]["persisted"], true, "{status}");
    assert!(open_incidents().await.is_empty(), "resolved");
    let usage = store
        .usage(wechat_day(unix_now_ms()), "shop".into())
        .await
        .expect("usage");
    let counted: u64 = usage
        .iter()
        .filter(|r| r.api == "token")
        .map(|r| r.calls)
        .sum();
    assert_eq!(
        counted, 2,
        "the call made while read-only is counted too: {usage:?}"
    );
    // So is the report's audit entry, with the time it was made, in the order made.
    let deadline = Instant::now() + Duration::from_secs(6);
    let audited = loop {
        let entries = store
            .audit_since(0, 100, wxtoken::store::AuditFilter::All)
            .await
            .expect("audit");
        if !entries.is_empty() {
            break entries;
        }
        assert!(Instant::now() < deadline, "the audit entry was lost");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(
        (audited[0].action.as_str(), audited[0].app.as_deref()),
        ("token.invalidate", Some("shop"))
    );
    assert!(
        audited[0].at_ms < cleared_at,
        "written with the time it was made"
    );

    // A restart on the file serves the written token without calling WeChat.
    drop(stop);
    let (base, _stop) =
        serve_on(&settings, Arc::new(SqliteStore::open(&db).expect("reopen"))).await;
    let (status, body) = get(&http, format!("{base}/v1/apps/shop/access_token")).await;
    assert_eq!(
        (status, body["access_token"].as_str()),
        (200, Some(second.as_str()))
    );
    assert_eq!(calls(), 2, "nothing was lost: no fetch after the restart");
}

/// Redis killed (SIGKILL) and restarted from its append-only file, which holds the
/// token of before the outage while the instance refreshed alone meanwhile: the
/// instance never goes back to the older stored token, it re-seeds Redis with its newer
/// one, and an instance started afterwards adopts that one without calling WeChat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_redis_restarted_from_its_aof_with_an_older_token_is_reseeded() {
    let mut redis = RedisServer::start_with_aof().await;
    let emulator = wechat_emulator::spawn(wechat_emulator::Config {
        apps: vec![wechat_emulator::AppCredentials::new(APPID, SECRET)],
        ..wechat_emulator::Config::default()
    })
    .await
    .expect("emulator");
    let toml = fleet_config(
        "classic",
        &emulator.base_url(),
        &redis.url(),
        1000,
        "classic_refresh_when_down = true",
    );
    let settings = Settings::from_toml(&toml).expect("config");
    let start = || async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = Server::build(&settings, listener).await.expect("server");
        let base = format!("http://{}", server.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        (base, stop)
    };
    let (base, _stop) = start().await;
    let http = reqwest::Client::new();
    let calls = || emulator.emulator.stats().app(APPID).upstream_token_calls();
    let stored_value = |mut conn: redis::aio::MultiplexedConnection| async move {
        redis::cmd("HGET")
            .arg("wxtoken:{shop}:access_token")
            .arg("value")
            .query_async::<Option<String>>(&mut conn)
            .await
            .expect("hget")
    };
    let (_, body) = get(&http, format!("{base}/v1/apps/shop/access_token")).await;
    let first = body["access_token"].as_str().expect("token").to_owned();
    // Written right after it is served.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stored_value(redis.connection().await).await.as_deref() != Some(first.as_str()) {
        assert!(Instant::now() < deadline, "never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    redis.kill().await;
    // Reported dead while Redis is down: refused until the store has failed for a lease
    // lifetime (another instance may hold the lease), then refreshed alone.
    let deadline = Instant::now() + Duration::from_secs(8);
    let second = loop {
        let answer = http
            .post(format!("{base}/v1/apps/shop/access_token/invalidate"))
            .bearer_auth(KEY)
            .json(&serde_json::json!({ "access_token": first }))
            .send()
            .await
            .expect("sent");
        let status = answer.status().as_u16();
        let body: serde_json::Value = answer.json().await.expect("json");
        if status == 200 && body["access_token"] != first.as_str() {
            break body["access_token"].as_str().expect("token").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "never refreshed alone: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(calls(), 2, "one fetch alone, no call while refused");

    redis.restart().await;
    assert_eq!(
        stored_value(redis.connection().await).await.as_deref(),
        Some(first.as_str()),
        "the AOF brought back the token of before the outage"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(&http, format!("{base}/v1/apps/shop/access_token")).await;
        assert_eq!(
            (status, body["access_token"].as_str()),
            (200, Some(second.as_str())),
            "never back to the older stored token"
        );
        if stored_value(redis.connection().await).await.as_deref() == Some(second.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "Redis was not re-seeded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (late, _late_stop) = start().await;
    let (status, body) = get(&http, format!("{late}/v1/apps/shop/access_token")).await;
    assert_eq!(
        (status, body["access_token"].as_str()),
        (200, Some(second.as_str()))
    );
    assert_eq!(calls(), 2, "the late instance adopted the re-seeded token");
    assert_eq!(emulator.emulator.check_token(&second), TokenCheck::Valid);
}

/// An instance SIGKILLed while its refresh call is at WeChat (the call arrived, its
/// answer not yet sent): a second instance waits out the dead holder's lease, then
/// fetches once; the token WeChat issued to the dead instance is never stored or served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_an_instance_sigkilled_mid_refresh_is_taken_over_after_the_lease_ttl() {
    let redis = RedisServer::start().await;
    let emulator = wechat_emulator::spawn(wechat_emulator::Config {
        apps: vec![wechat_emulator::AppCredentials::new(APPID, SECRET)],
        latency: Duration::from_millis(1500),
        ..wechat_emulator::Config::default()
    })
    .await
    .expect("emulator");
    let lease_ttl = Duration::from_millis(1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("wxtoken.toml");
    let toml = fleet_config(
        "classic",
        &emulator.base_url(),
        &redis.url(),
        lease_ttl.as_millis() as u64,
        "",
    );
    std::fs::write(&config, toml).expect("write config");
    let calls = || emulator.emulator.stats().app(APPID).upstream_token_calls();

    let mut first = serve(&config).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while calls() < 1 {
        assert!(Instant::now() < deadline, "the first instance never called");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.child.kill().await.expect("SIGKILL");
    let killed = Instant::now();
    emulator.emulator.set_latency(Duration::ZERO);

    let second = serve(&config).await;
    let http = reqwest::Client::new();
    let (status, body) = get(&http, format!("{}/v1/apps/shop/access_token", second.base)).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().expect("token");
    let took = killed.elapsed();
    assert!(took < lease_ttl + Duration::from_secs(2), "{took:?}");
    assert_eq!(calls(), 2, "the dead one's call and the taker's, no other");
    let mut conn = redis.connection().await;
    let stored: Option<String> = redis::cmd("HGET")
        .arg("wxtoken:{shop}:access_token")
        .arg("value")
        .query_async(&mut conn)
        .await
        .expect("hget");
    assert_eq!(stored.as_deref(), Some(token));
    // Classic: the taker's call replaced the dead one's token at WeChat.
    assert_eq!(emulator.emulator.check_token(token), TokenCheck::Valid);
}
