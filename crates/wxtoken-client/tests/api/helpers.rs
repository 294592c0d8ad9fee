//! `spawn()`: a wechat-emulator and a wxtoken server wired together in-process, and
//! clients for it.

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wechat_emulator::{Config as EmulatorConfig, Emulator, RunningEmulator};
use wxtoken::{Server, Settings};
use wxtoken_client::Client;

pub const APPID: &str = "wx0123456789abcdef";
pub const SECRET: &str = "the-real-secret";
pub const CORPID: &str = "ww0123456789abcdef";
pub const AGENTID: u64 = 1000002;
pub const WECOM_SECRET: &str = "the-wecom-app-secret";
/// `read` and `invalidate` on every app.
pub const KEY: &str = "wxt_client_test_key_all_apps";
/// `read` only, on `shop` only.
pub const READ_ONLY_KEY: &str = "wxt_client_test_key_read_only";

/// An emulator and a server; dropping it stops both.
pub struct TestServer {
    pub base: String,
    pub emulator: RunningEmulator,
    /// Kept so the SQLite file lives as long as the server.
    _dir: tempfile::TempDir,
    /// Dropped with the server, which resolves its shutdown future.
    _shutdown: oneshot::Sender<()>,
}

impl TestServer {
    /// A client with [`KEY`] and the default settings.
    pub fn client(&self) -> Client {
        Client::new(&self.base, KEY).expect("client builds")
    }

    pub fn client_with_key(&self, key: &str) -> Client {
        Client::new(&self.base, key).expect("client builds")
    }

    pub fn wechat(&self) -> &Emulator {
        &self.emulator.emulator
    }

    /// Calls WeChat's token endpoints received for `shop`.
    pub fn upstream_calls(&self) -> u64 {
        self.wechat().stats().app(APPID).upstream_token_calls()
    }
}

/// The emulator as WeChat documents it, knowing `shop` and the WeCom app `hr`.
pub fn wechat() -> EmulatorConfig {
    EmulatorConfig::default()
        .with_app(APPID, SECRET)
        .with_wecom_app(CORPID, AGENTID, WECOM_SECRET)
}

pub async fn spawn() -> TestServer {
    spawn_with(wechat()).await
}

pub async fn spawn_with(config: EmulatorConfig) -> TestServer {
    let emulator = wechat_emulator::spawn(config)
        .await
        .expect("emulator starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("wxtoken.db");
    let toml = config_toml(&emulator.base_url(), &db.display().to_string());
    let settings = Settings::from_toml(&toml).expect("test config is valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = Server::build(&settings, listener)
        .await
        .expect("server builds");
    let addr = server.local_addr().expect("addr");
    let (shutdown, stop) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stop.await;
    }));
    TestServer {
        base: format!("http://{addr}"),
        emulator,
        _dir: dir,
        _shutdown: shutdown,
    }
}

/// `shop` (stable mode), `broken` (an appid WeChat does not know) and the WeCom app
/// `hr`; [`KEY`] and [`READ_ONLY_KEY`].
fn config_toml(api_base: &str, db: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
path = "{db}"
[upstream]
api_base = "{api_base}"
wecom_base = "{api_base}"
request_timeout_ms = 2000
connect_timeout_ms = 2000
[keeper]
min_ttl_wait_secs = 5
[[apps]]
id = "shop"
appid = "{APPID}"
secret = "{SECRET}"
[[apps]]
id = "broken"
appid = "wxfedcba9876543210"
secret = "unknown-to-wechat"
[[apps]]
id = "hr"
kind = "wecom"
corpid = "{CORPID}"
agentid = {AGENTID}
secret = "{WECOM_SECRET}"
[[clients]]
name = "order-service"
key = "{KEY}"
apps = ["*"]
scopes = ["read", "invalidate"]
[[clients]]
name = "reporting"
key = "{READ_ONLY_KEY}"
apps = ["shop"]
scopes = ["read"]
"#
    )
}

/// A base URL where nothing listens: a port just bound and released.
pub async fn dead_base() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}
