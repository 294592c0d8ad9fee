//! `spawn_app()`: an emulator and a server wired together, plus small request helpers.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use wechat_emulator::{
    AppCredentials, Config as EmulatorConfig, FailKind, RunningEmulator, WecomCredentials,
};
use wxtoken::{Server, Settings};

pub const APPID: &str = "wx0123456789abcdef";
pub const SECRET: &str = "the-real-secret";
pub const CORPID: &str = "ww0123456789abcdef";
pub const AGENTID: u64 = 1000002;
pub const WECOM_SECRET: &str = "the-wecom-app-secret";
/// Has `read` and `invalidate` on every app.
pub const KEY: &str = "wxt_test_key_read_invalidate";
/// Has only `read`, only on `shop`.
pub const READ_ONLY_KEY: &str = "wxt_test_key_read_only_shop";
/// Has `read` on `other` only.
pub const OTHER_KEY: &str = "wxt_test_key_for_other_app";

/// The `wxtoken` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_wxtoken");

/// A `wxtoken serve` process, its base URL, and everything it logged.
pub struct Process {
    pub child: Child,
    pub base: String,
    pub logs: Arc<Mutex<Vec<String>>>,
}

pub async fn serve(config: &Path) -> Process {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("wxtoken starts");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // Read until the server says where it listens, then keep draining in the background.
    let base = loop {
        let line = lines
            .next_line()
            .await
            .expect("read")
            .expect("server exited before listening");
        logs.lock().expect("logs").push(line.clone());
        if line.contains("wxtoken listening") {
            let addr = line
                .split("addr=")
                .nth(1)
                .expect("addr field")
                .split_whitespace()
                .next()
                .expect("addr");
            break format!("http://{addr}");
        }
    };
    let sink = logs.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().expect("logs").push(line);
        }
    });
    Process { child, base, logs }
}

/// What a test wants different from the defaults.
#[derive(Clone)]
pub struct Options {
    pub mode: &'static str,
    pub expires_in: u64,
    pub overlap: Duration,
    /// The secret the server is configured with (the emulator knows SECRET).
    pub secret: &'static str,
    pub latency: Duration,
    pub fail_rate: f64,
    pub fail_kinds: Vec<FailKind>,
    /// Fail exactly `fail_rate` of the calls, evenly, rather than at random.
    pub fail_spread: bool,
    pub hang: Duration,
    pub quota: u64,
    /// Extra TOML appended to `[keeper]`.
    pub keeper: &'static str,
    pub request_timeout_ms: u64,
    /// The emulator's spacing of effective force refreshes (WeChat: 30 s).
    pub force_refresh_interval: Duration,
    pub ticket_expires_in: u64,
    /// The secret the server is configured with for the WeCom app `hr`.
    pub wecom_secret: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mode: "stable",
            expires_in: 7200,
            overlap: Duration::from_secs(300),
            secret: SECRET,
            latency: Duration::ZERO,
            fail_rate: 0.0,
            fail_kinds: FailKind::ALL.to_vec(),
            fail_spread: false,
            hang: Duration::from_secs(5),
            quota: 2000,
            keeper: "",
            request_timeout_ms: 2000,
            force_refresh_interval: Duration::from_secs(30),
            ticket_expires_in: 7200,
            wecom_secret: WECOM_SECRET,
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub emulator: RunningEmulator,
    /// Kept so the SQLite file lives as long as the app.
    _dir: tempfile::TempDir,
    settings: Settings,
    /// Dropping it shuts the server down.
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Builds and starts a server; returns its base URL, shutdown sender and task.
async fn start_server(
    settings: &Settings,
) -> (
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = Server::build(settings, listener)
        .await
        .expect("server builds");
    let addr = server.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    (format!("http://{addr}"), tx, handle)
}

/// An emulator and, in a fresh temp dir, the TOML of a server on it (SQLite beside it):
/// for tests that run `wxtoken serve` as a process with [`serve`].
pub async fn emulator_and_config(
    options: &Options,
) -> (RunningEmulator, tempfile::TempDir, std::path::PathBuf) {
    let emulator = wechat_emulator::spawn(emulator_config(options))
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("wxtoken.db");
    let config = dir.path().join("wxtoken.toml");
    std::fs::write(
        &config,
        config_toml(options, &emulator.base_url(), &db.display().to_string()),
    )
    .expect("write config");
    (emulator, dir, config)
}

pub fn emulator_config(options: &Options) -> EmulatorConfig {
    EmulatorConfig {
        apps: vec![AppCredentials::new(APPID, SECRET)],
        expires_in: options.expires_in,
        overlap: options.overlap,
        quota: options.quota,
        latency: options.latency,
        fail_rate: options.fail_rate,
        fail_kinds: options.fail_kinds.clone(),
        fail_spread: options.fail_spread,
        hang: options.hang,
        force_refresh_interval: options.force_refresh_interval,
        wecom_apps: vec![WecomCredentials::new(CORPID, AGENTID, WECOM_SECRET)],
        ticket_expires_in: options.ticket_expires_in,
        ..EmulatorConfig::default()
    }
}

/// The server's TOML for an emulator at `api_base` and a store at `db`.
pub fn config_toml(options: &Options, api_base: &str, db: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
path = "{db}"
[upstream]
api_base = "{api_base}"
wecom_base = "{api_base}"
request_timeout_ms = {timeout}
connect_timeout_ms = {timeout}
[keeper]
{keeper}
[[apps]]
id = "shop"
appid = "{APPID}"
secret = "{secret}"
mode = "{mode}"
[[apps]]
id = "other"
appid = "wxfedcba9876543210"
secret = "unknown-to-the-emulator"
[[apps]]
id = "hr"
kind = "wecom"
corpid = "{CORPID}"
agentid = {AGENTID}
secret = "{wecom_secret}"
[[clients]]
name = "order-service"
key = "{KEY}"
apps = ["*"]
scopes = ["read", "invalidate"]
[[clients]]
name = "reporting"
key_sha256 = "{read_only_digest}"
apps = ["shop"]
scopes = ["read"]
[[clients]]
name = "other-team"
key = "{OTHER_KEY}"
apps = ["other"]
scopes = ["read", "invalidate"]
"#,
        timeout = options.request_timeout_ms,
        keeper = options.keeper,
        secret = options.secret,
        mode = options.mode,
        wecom_secret = options.wecom_secret,
        read_only_digest = hex_sha256(READ_ONLY_KEY),
    )
}

fn hex_sha256(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// A two-worker runtime for tests that drive async code from a synchronous runner
/// (proptest).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    spawn_app_from(emulator_config(&options), |api_base, db| {
        config_toml(&options, api_base, db)
    })
    .await
}

/// An emulator with `emulator`'s settings and a server configured by `toml(api_base,
/// db)`: for tests whose config differs from [`config_toml`]'s.
pub async fn spawn_app_from(
    emulator: EmulatorConfig,
    toml: impl FnOnce(&str, &str) -> String,
) -> TestApp {
    let emulator = wechat_emulator::spawn(emulator)
        .await
        .expect("emulator starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("wxtoken.db");
    let toml = toml(&emulator.base_url(), &db.display().to_string());
    let settings = Settings::from_toml(&toml).expect("test config is valid");
    let (base, shutdown, server) = start_server(&settings).await;
    TestApp {
        base,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(2048)
            .build()
            .expect("client"),
        emulator,
        _dir: dir,
        settings,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

impl TestApp {
    /// Stops the server gracefully and starts a new one on the same SQLite file.
    pub async fn restart(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server ran");
        }
        let (base, shutdown, server) = start_server(&self.settings).await;
        self.base = base;
        self.shutdown = Some(shutdown);
        self.server = Some(server);
    }

    /// The emulator's counters for the WeCom app `hr`.
    pub fn wecom_stats(&self) -> wechat_emulator::AppStats {
        self.emulator
            .emulator
            .stats()
            .app(&wechat_emulator::wecom_key(CORPID, AGENTID))
    }

    pub fn upstream_calls(&self) -> u64 {
        self.emulator
            .emulator
            .stats()
            .app(APPID)
            .upstream_token_calls()
    }

    pub fn stats(&self) -> wechat_emulator::AppStats {
        self.emulator.emulator.stats().app(APPID)
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("request is sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("request is sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A token for `shop` (panics unless 200).
    pub async fn token(&self) -> String {
        let (status, body) = self.get("/v1/apps/shop/access_token", Some(KEY)).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    pub async fn invalidate(&self, token: &str) -> (u16, Value) {
        let body = serde_json::json!({ "access_token": token }).to_string();
        self.post("/v1/apps/shop/access_token/invalidate", Some(KEY), body)
            .await
    }
}

/// The error code of a JSON error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}
