//! Runtime administration: apps and clients added and removed over the API, persisted
//! (secrets sealed under the master key), followed by a second instance within a
//! second, audited; wrong master keys refused; SIGHUP reloads.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wechat_emulator::{AppCredentials, Config as EmulatorConfig, RunningEmulator};
use wxtoken::{Server, Settings};

use crate::helpers::{APPID, KEY, SECRET, code};
use crate::redis_server::RedisServer;

const ADMIN_KEY: &str = "wxt_test_admin_key_0123456789";
const APPID2: &str = "wx2222222222222222";
const SECRET2: &str = "second-app-secret-value";
const KEY_A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const KEY_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn config(api_base: &str, store: &str, key_file: Option<&Path>) -> String {
    let key_line = key_file
        .map(|p| format!("master_key_file = \"{}\"", p.display()))
        .unwrap_or_default();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{key_line}
[store]
{store}
[upstream]
api_base = "{api_base}"
[[apps]]
id = "shop"
appid = "{APPID}"
secret = "{SECRET}"
[[clients]]
name = "order-service"
key = "{KEY}"
apps = ["*"]
scopes = ["read", "invalidate"]
[[clients]]
name = "admin"
key = "{ADMIN_KEY}"
apps = ["*"]
scopes = ["read", "admin"]
"#
    )
}

async fn emulator() -> RunningEmulator {
    wechat_emulator::spawn(EmulatorConfig {
        apps: vec![
            AppCredentials::new(APPID, SECRET),
            AppCredentials::new(APPID2, SECRET2),
        ],
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts")
}

struct Running {
    base: String,
    _stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(settings: &Settings) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = Server::build(settings, listener)
        .await
        .expect("server builds");
    let base = format!("http://{}", server.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running {
        base,
        _stop: tx,
        task,
    }
}

impl Running {
    async fn stop(self) {
        drop(self._stop);
        self.task.await.expect("task").expect("ran");
    }
}

async fn call(
    method: reqwest::Method,
    url: String,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(url: String, key: Option<&str>) -> (u16, Value) {
    call(reqwest::Method::GET, url, key, None).await
}

async fn delete(url: String, key: Option<&str>) -> (u16, Value) {
    call(reqwest::Method::DELETE, url, key, None).await
}

fn key_file(dir: &Path, name: &str, hex: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{hex}\n")).expect("key file");
    path
}

/// The registry rows of the SQLite file, as stored.
fn registry_rows(db: &Path) -> Vec<(String, String, String)> {
    let conn = rusqlite::Connection::open(db).expect("open");
    let mut stmt = conn
        .prepare("SELECT registry, id, value FROM registry ORDER BY registry, id")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[tokio::test]
async fn apps_and_clients_are_managed_at_runtime_sealed_audited_and_kept_across_a_restart() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("wxtoken.db");
    let keyfile = key_file(dir.path(), "master.key", KEY_A);
    let toml = config(
        &emulator.base_url(),
        &format!("path = \"{}\"", db.display()),
        Some(&keyfile),
    );
    let settings = Settings::from_toml(&toml).expect("valid");
    let server = start(&settings).await;
    let base = server.base.clone();
    let put = async |app: &str, key: &str, body: Value| {
        call(
            reqwest::Method::PUT,
            format!("{base}/v1/apps/{app}"),
            Some(key),
            Some(body),
        )
        .await
    };
    let app2 = json!({"kind": "official", "appid": APPID2, "secret": SECRET2, "mode": "classic"});

    // Only admin keys; bad bodies name the field; config apps are read-only.
    let (status, body) = put("shop2", KEY, app2.clone()).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = put("shop2", ADMIN_KEY, json!({"appid": APPID2})).await;
    assert_eq!((status, code(&body)), (400, "bad_request"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("secret"),
        "{body}"
    );
    let (status, body) = put(
        "shop2",
        ADMIN_KEY,
        json!({"appid": APPID2, "secret": "s", "colour": 1}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("colour"),
        "{body}"
    );
    let (status, body) = put("shop", ADMIN_KEY, app2.clone()).await;
    assert_eq!((status, code(&body)), (409, "read_only"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("config file"),
        "{body}"
    );

    // Added: 201 with its status (never the secret); served at once; changed: 200.
    let (status, body) = put("shop2", ADMIN_KEY, app2.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], "shop2");
    assert!(!body.to_string().contains(SECRET2), "{body}");
    let (status, token) = get(format!("{base}/v1/apps/shop2/access_token"), Some(KEY)).await;
    assert_eq!(status, 200, "{token}");
    let (status, _) = put("shop2", ADMIN_KEY, app2.clone()).await;
    assert_eq!(status, 200);
    let mut rotated = app2.clone();
    rotated["secret"] = json!("a-rotated-secret");
    let (status, _) = put("shop2", ADMIN_KEY, rotated).await;
    assert_eq!(status, 200);
    let (status, _) = put("shop2", ADMIN_KEY, app2.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        emulator.emulator.stats().app(APPID2).upstream_token_calls(),
        1,
        "an unchanged app, or one with a new secret, keeps its token"
    );

    // The secret is sealed in the file, bound to its app.
    let rows = registry_rows(&db);
    let (_, _, stored) = rows
        .iter()
        .find(|(r, id, _)| r == "apps" && id == "shop2")
        .expect("stored");
    assert!(!stored.contains(SECRET2), "{stored}");
    assert!(stored.contains("sealed:v1:"), "{stored}");

    // Clients: the key is shown once, works at once, is listed never, revoked at once.
    let (status, created) = call(
        reqwest::Method::POST,
        format!("{base}/v1/clients"),
        Some(ADMIN_KEY),
        Some(json!({"name": "billing", "apps": ["shop2"], "scopes": ["read"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let new_key = created["key"].as_str().expect("key").to_owned();
    let (status, _) = get(format!("{base}/v1/apps/shop2/access_token"), Some(&new_key)).await;
    assert_eq!(status, 200);
    let (status, body) = get(format!("{base}/v1/apps/shop/access_token"), Some(&new_key)).await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    let (status, again) = call(
        reqwest::Method::POST,
        format!("{base}/v1/clients"),
        Some(ADMIN_KEY),
        Some(json!({"name": "billing", "apps": ["*"]})),
    )
    .await;
    assert_eq!((status, code(&again)), (409, "client_exists"));
    let (status, list) = get(format!("{base}/v1/clients"), Some(ADMIN_KEY)).await;
    assert_eq!(status, 200);
    assert!(!list.to_string().contains(&new_key));
    let names: Vec<&str> = list["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["order-service", "admin", "billing"]);
    let (status, body) = delete(format!("{base}/v1/clients/admin"), Some(ADMIN_KEY)).await;
    assert_eq!((status, code(&body)), (409, "read_only"));

    // A restart keeps the runtime app (with its token: no new fetch) and the client.
    server.stop().await;
    let server = start(&settings).await;
    let base = server.base.clone();
    let (status, _) = get(format!("{base}/v1/apps/shop2/access_token"), Some(&new_key)).await;
    assert_eq!(status, 200);
    assert_eq!(
        emulator.emulator.stats().app(APPID2).upstream_token_calls(),
        1
    );

    let (status, _) = delete(format!("{base}/v1/clients/billing"), Some(ADMIN_KEY)).await;
    assert_eq!(status, 204);
    let (status, body) = get(format!("{base}/v1/apps/shop2/access_token"), Some(&new_key)).await;
    assert_eq!((status, code(&body)), (401, "unauthenticated"));

    // Removed: 404 at once; removing again is 404; config apps cannot be removed.
    let (status, _) = delete(format!("{base}/v1/apps/shop2"), Some(ADMIN_KEY)).await;
    assert_eq!(status, 204);
    let (status, body) = get(format!("{base}/v1/apps/shop2/access_token"), Some(KEY)).await;
    assert_eq!((status, code(&body)), (404, "app_not_found"));
    let (status, _) = delete(format!("{base}/v1/apps/shop2"), Some(ADMIN_KEY)).await;
    assert_eq!(status, 404);
    let (status, body) = delete(format!("{base}/v1/apps/shop"), Some(ADMIN_KEY)).await;
    assert_eq!((status, code(&body)), (409, "read_only"));

    // Every change is in the audit log, by client name, with no secret or key.
    let (status, audit) = get(
        format!("{base}/v1/audit?since=0&limit=100"),
        Some(ADMIN_KEY),
    )
    .await;
    assert_eq!(status, 200, "{audit}");
    let text = audit.to_string();
    assert!(
        !text.contains(SECRET2) && !text.contains(&new_key),
        "{text}"
    );
    let actions: Vec<(String, String)> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_owned(),
                e["result"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for wanted in ["app.put", "client.add", "client.revoke", "app.delete"] {
        assert!(
            actions
                .iter()
                .any(|(a, r)| a == wanted && (r == "ok" || r.ends_with(": ok"))),
            "{wanted} missing from {actions:?}"
        );
    }
    assert!(
        actions
            .iter()
            .any(|(a, r)| a == "app.put" && r.contains("read-only")),
        "refused changes are audited too: {actions:?}"
    );
    let (status, _) = get(format!("{base}/v1/audit"), Some(KEY)).await;
    assert_eq!(status, 403);
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_or_missing_master_key_is_refused_and_changes_nothing_and_rotation_re_encrypts() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("wxtoken.db");
    let store = format!("path = \"{}\"", db.display());
    let key_a = key_file(dir.path(), "a.key", KEY_A);
    let key_b = key_file(dir.path(), "b.key", KEY_B);
    let with_a =
        Settings::from_toml(&config(&emulator.base_url(), &store, Some(&key_a))).expect("valid");
    let server = start(&with_a).await;
    let (status, _) = call(
        reqwest::Method::PUT,
        format!("{}/v1/apps/shop2", server.base),
        Some(ADMIN_KEY),
        Some(json!({"appid": APPID2, "secret": SECRET2})),
    )
    .await;
    assert_eq!(status, 201);
    server.stop().await;
    let before = registry_rows(&db);

    let with_b =
        Settings::from_toml(&config(&emulator.base_url(), &store, Some(&key_b))).expect("valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let error = Server::build(&with_b, listener)
        .await
        .expect_err("a wrong key is refused");
    assert!(error.to_string().contains("does not match"), "{error}");
    let without = Settings::from_toml(&config(&emulator.base_url(), &store, None)).expect("valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let error = Server::build(&without, listener)
        .await
        .expect_err("no key is refused");
    assert!(error.to_string().contains("WXTOKEN_MASTER_KEY"), "{error}");
    assert_eq!(
        registry_rows(&db),
        before,
        "a refused start changes nothing"
    );

    // Rotation: A -> B, then B works, A is refused, and the secret still opens.
    let new_key = wxtoken::secrets::MasterKey::from_hex(KEY_B, "test").expect("key");
    let report = wxtoken::server::rotate_master_key(&with_a, new_key.clone())
        .await
        .expect("rotates");
    assert!(report.contains("1 runtime apps"), "{report}");
    let again = wxtoken::server::rotate_master_key(&with_a, new_key)
        .await
        .expect("a second run is harmless");
    assert!(again.contains("already"), "{again}");
    let after = registry_rows(&db);
    let sealed = |rows: &[(String, String, String)]| {
        rows.iter()
            .find(|(r, id, _)| r == "apps" && id == "shop2")
            .map(|(_, _, v)| v.clone())
            .expect("shop2")
    };
    assert_ne!(sealed(&before), sealed(&after), "re-encrypted in place");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    assert!(
        Server::build(&with_a, listener).await.is_err(),
        "the old key no longer opens"
    );
    let server = start(&with_b).await;
    let (status, body) = get(
        format!("{}/v1/apps/shop2/access_token?min_ttl=7000", server.base),
        Some(KEY),
    )
    .await;
    assert_eq!(status, 200, "the rotated secret still works: {body}");
    server.stop().await;
}

#[tokio::test]
async fn authorizer_refresh_tokens_are_sealed_in_the_store() {
    use wxtoken::store::{AuthorizerRecord, AuthorizerState, SqliteStore, Store};
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("wxtoken.db");
    let raw: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(SqliteStore::open(&db).expect("opens"));
    let key = wxtoken::secrets::MasterKey::from_hex(KEY_A, "test").expect("key");
    let sealed =
        wxtoken::secrets::SealedStore::new(raw.clone(), wxtoken::secrets::Sealer::new(Some(key)));
    let record = AuthorizerRecord {
        appid: "wxauthorizer00001".into(),
        refresh_token: "refreshtoken@@@the-valuable-one".into(),
        state: AuthorizerState::Ok,
        func_info: vec![1],
        authorized_at_ms: 1,
        version: 1,
    };
    assert!(
        sealed
            .save_authorizer("platform".into(), record.clone())
            .await
            .expect("saved")
    );
    let stored = raw
        .load_authorizer("platform".into(), record.appid.clone())
        .await
        .expect("read")
        .expect("there");
    assert!(stored.refresh_token.starts_with("sealed:v1:"));
    assert!(!stored.refresh_token.contains("valuable"));
    let opened = sealed
        .load_authorizer("platform".into(), record.appid.clone())
        .await
        .expect("read")
        .expect("there");
    assert_eq!(opened, record);
    // Bound to its authorizer: the same ciphertext under another appid does not open.
    let moved = AuthorizerRecord {
        appid: "wxauthorizer00002".into(),
        ..stored
    };
    raw.save_authorizer("platform".into(), moved)
        .await
        .expect("saved");
    assert!(
        sealed
            .load_authorizer("platform".into(), "wxauthorizer00002".into())
            .await
            .is_err()
    );
}

/// Polls `check` until it holds or `limit` passes; returns how long it took.
async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_change_on_one_instance_reaches_the_other_within_a_second() {
    let redis = RedisServer::start().await;
    let emulator = emulator().await;
    let toml = config(
        &emulator.base_url(),
        &format!("kind = \"redis\"\nurl = \"{}\"", redis.url()),
        None,
    );
    let settings = Settings::from_toml(&toml).expect("valid");
    let (a, b) = (start(&settings).await, start(&settings).await);
    let (status, _) = call(
        reqwest::Method::PUT,
        format!("{}/v1/apps/shop2", a.base),
        Some(ADMIN_KEY),
        Some(json!({"appid": APPID2, "secret": SECRET2})),
    )
    .await;
    assert_eq!(status, 201);
    let on_b = format!("{}/v1/apps/shop2/access_token", b.base);
    let took = within(Duration::from_secs(1), async || {
        get(on_b.clone(), Some(KEY)).await.0 == 200
    })
    .await;
    println!("a runtime app reached the second instance in {took:?}");

    let (status, created) = call(
        reqwest::Method::POST,
        format!("{}/v1/clients", a.base),
        Some(ADMIN_KEY),
        Some(json!({"name": "billing", "apps": ["*"]})),
    )
    .await;
    assert_eq!(status, 201);
    let new_key = created["key"].as_str().expect("key").to_owned();
    within(Duration::from_secs(1), async || {
        get(on_b.clone(), Some(&new_key)).await.0 == 200
    })
    .await;
    let (status, _) = delete(format!("{}/v1/clients/billing", a.base), Some(ADMIN_KEY)).await;
    assert_eq!(status, 204);
    within(Duration::from_secs(1), async || {
        get(on_b.clone(), Some(&new_key)).await.0 == 401
    })
    .await;

    let (status, _) = delete(format!("{}/v1/apps/shop2", a.base), Some(ADMIN_KEY)).await;
    assert_eq!(status, 204);
    let took = within(Duration::from_secs(1), async || {
        get(on_b.clone(), Some(KEY)).await.0 == 404
    })
    .await;
    println!("a removal reached the second instance in {took:?}");
    assert_eq!(
        emulator.emulator.stats().app(APPID2).upstream_token_calls(),
        1,
        "the fleet fetched the runtime app's token once"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn sighup_reloads_the_config_file_and_keeps_the_running_one_when_it_is_bad() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("wxtoken.db");
    let path = dir.path().join("wxtoken.toml");
    let good = config(
        &emulator.base_url(),
        &format!("path = \"{}\"", db.display()),
        None,
    );
    std::fs::write(&path, &good).expect("write");
    let mut server = crate::helpers::serve(&path).await;
    let pid = server.child.id().expect("pid").to_string();
    let hup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill runs")
    };
    let shop2 = format!("{}/v1/apps/shop2/access_token", server.base);

    // A bad file: refused with the key's name; the running config serves on.
    std::fs::write(
        &path,
        good.replace("appid = \"wx0123456789abcdef\"", "appid = \"not valid!\""),
    )
    .expect("write");
    assert!(hup().success());
    let logs = server.logs.clone();
    within(Duration::from_secs(5), async || {
        logs.lock()
            .expect("logs")
            .iter()
            .any(|l| l.contains("config reload refused"))
    })
    .await;
    let refused = logs
        .lock()
        .expect("logs")
        .iter()
        .find(|l| l.contains("config reload refused"))
        .cloned()
        .expect("logged");
    assert!(refused.contains("apps[0].appid"), "{refused}");
    let (status, _) = get(
        format!("{}/v1/apps/shop/access_token", server.base),
        Some(KEY),
    )
    .await;
    assert_eq!(status, 200);

    // A good file with one more app: served after the reload, without a restart.
    let more = format!(
        "{good}\n[keeper]\nforce_refresh_daily_budget = 3\n[[apps]]\nid = \"shop2\"\nappid = \"{APPID2}\"\nsecret = \"{SECRET2}\"\n"
    );
    std::fs::write(&path, more).expect("write");
    assert!(hup().success());
    within(Duration::from_secs(5), async || {
        call(reqwest::Method::GET, shop2.clone(), Some(KEY), None)
            .await
            .0
            == 200
    })
    .await;
    // [keeper] budgets follow the file too.
    let (_, status) = get(format!("{}/v1/apps/shop", server.base), Some(KEY)).await;
    assert_eq!(status["force_refresh_budget"], 3, "{status}");
    // And without it again: gone.
    std::fs::write(&path, &good).expect("write");
    assert!(hup().success());
    within(Duration::from_secs(5), async || {
        call(reqwest::Method::GET, shop2.clone(), Some(KEY), None)
            .await
            .0
            == 404
    })
    .await;
    server.child.kill().await.expect("killed");
}

/// Runs the `wxtoken` binary; returns its stdout, failing on a non-zero exit.
fn cli(args: &[&str]) -> String {
    let out = std::process::Command::new(crate::helpers::BIN)
        .args(args)
        .env_remove("WXTOKEN_KEY")
        .env_remove("WXTOKEN_SERVER")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "wxtoken {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_cli_manages_apps_and_clients_of_a_running_server() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("wxtoken.db");
    let toml = config(
        &emulator.base_url(),
        &format!("path = \"{}\"", db.display()),
        None,
    );
    let settings = Settings::from_toml(&toml).expect("valid");
    let server = start(&settings).await;
    let base = server.base.clone();
    let remote = ["--server", base.as_str(), "--key", ADMIN_KEY];
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&remote);
        let all: Vec<String> = all.into_iter().map(str::to_owned).collect();
        tokio::task::spawn_blocking(move || {
            cli(&all.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let added = run(&[
        "apps", "add", "shop2", "--appid", APPID2, "--secret", SECRET2,
    ])
    .await
    .expect("ran");
    assert!(added.contains("app shop2"), "{added}");
    let listed = run(&["apps", "list"]).await.expect("ran");
    assert!(
        listed.contains("shop2") && listed.contains("shop"),
        "{listed}"
    );
    assert!(!listed.contains(SECRET2));
    let created = run(&["clients", "add", "billing", "--app", "shop2"])
        .await
        .expect("ran");
    let key = created
        .lines()
        .find(|l| l.starts_with("wxt_"))
        .expect("a key line")
        .to_owned();
    let (status, _) = get(format!("{base}/v1/apps/shop2/access_token"), Some(&key)).await;
    assert_eq!(status, 200);
    let clients = run(&["clients", "list"]).await.expect("ran");
    assert!(
        clients.contains("billing") && !clients.contains(&key),
        "{clients}"
    );
    run(&["clients", "revoke", "billing"]).await.expect("ran");
    run(&["apps", "remove", "shop2"]).await.expect("ran");
    let (status, _) = get(format!("{base}/v1/apps/shop2/access_token"), Some(KEY)).await;
    assert_eq!(status, 404);
    // A refusal is the server's error, in one line.
    let args = [
        "apps", "remove", "shop", "--server", &base, "--key", ADMIN_KEY,
    ]
    .map(str::to_owned);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::helpers::BIN)
            .args(args)
            .output()
            .expect("runs")
    })
    .await
    .expect("ran");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("409") && stderr.contains("read_only"),
        "{stderr}"
    );
    server.stop().await;
}

/// The audit log as an admin key limited to `shop` reads it, on a store holding many
/// entries of which few are shown: every shown one and no other, in order, up to the
/// limit, through more than one page of the Redis stream.
async fn a_limited_reader_sees_its_entries_through_many_pages(store: &dyn wxtoken::store::Store) {
    use wxtoken::store::{AuditEntry, AuditFilter};
    for n in 0..450u64 {
        let (client, app) = match n % 50 {
            0 => ("shop-admin", None),
            1 => ("ops", Some("shop")),
            _ => ("ops", Some("other")),
        };
        store
            .audit_append(AuditEntry {
                at_ms: 1_000 + n,
                client: client.into(),
                action: format!("action-{n}"),
                app: app.map(str::to_owned),
                result: "ok".into(),
            })
            .await
            .expect("append");
    }
    let limited = AuditFilter::Limited {
        apps: vec!["shop".into()],
        client: "shop-admin".into(),
    };
    let shown = store
        .audit_since(0, 1000, limited.clone())
        .await
        .expect("read");
    let actions: Vec<String> = shown.iter().map(|e| e.action.clone()).collect();
    let expected: Vec<String> = (0..450u64)
        .filter(|n| n % 50 < 2)
        .map(|n| format!("action-{n}"))
        .collect();
    assert_eq!(actions, expected);
    // Redis reads at least 100 a page: the fifth shown entry is on the second page.
    let first = store.audit_since(0, 5, limited).await.expect("read");
    let actions: Vec<&str> = first.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "action-0",
            "action-1",
            "action-50",
            "action-51",
            "action-100"
        ]
    );
    let all = store
        .audit_since(0, 1000, AuditFilter::All)
        .await
        .expect("read");
    assert_eq!(all.len(), 450);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_admin_reads_only_its_audit_entries_on_sqlite_and_redis() {
    let dir = tempfile::tempdir().expect("dir");
    let sqlite = wxtoken::store::SqliteStore::open(&dir.path().join("audit.db")).expect("sqlite");
    a_limited_reader_sees_its_entries_through_many_pages(&sqlite).await;
    let redis = RedisServer::start().await;
    let store = redis.store().await;
    a_limited_reader_sees_its_entries_through_many_pages(&store).await;
}
