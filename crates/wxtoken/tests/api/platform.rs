//! Third-party platforms end to end: a server with a component app, and helpers to
//! build the pushes WeChat sends (with wxtoken's own crypto; the emulator's pushes use
//! the emulator's independent implementation).

use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wechat_emulator::{Config as EmulatorConfig, RunningEmulator};
use wxtoken::wechat::crypto::MsgCrypt;
use wxtoken::{Server, Settings};

use crate::helpers::*;

pub const COMPONENT_APPID: &str = "wxcomponent000001";
pub const COMPONENT_SECRET: &str = "the-component-secret";
pub const PUSH_TOKEN: &str = "pushtoken";
pub const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
/// Has every scope on every app.
pub const ADMIN_KEY: &str = "wxt_test_key_admin_everything";

pub fn crypt() -> MsgCrypt {
    MsgCrypt::new(PUSH_TOKEN, AES_KEY, COMPONENT_APPID).expect("crypt")
}

/// A push as WeChat sends it.
#[derive(Clone, Debug)]
pub struct Push {
    pub body: String,
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
}

pub fn envelope(encrypt: &str) -> String {
    format!(
        "<xml><AppId><![CDATA[{COMPONENT_APPID}]]></AppId><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    )
}

pub fn ticket_xml(ticket: &str, created_at: u64) -> String {
    format!(
        "<xml><AppId><![CDATA[{COMPONENT_APPID}]]></AppId><CreateTime>{created_at}</CreateTime>\
         <InfoType><![CDATA[component_verify_ticket]]></InfoType>\
         <ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket></xml>"
    )
}

/// `inner` encrypted and signed as WeChat would.
pub fn push_of(inner: &str) -> Push {
    let crypt = crypt();
    let encrypt = crypt.encrypt(inner, [9; 16]);
    let (timestamp, nonce) = ("1700000000".to_owned(), "abc123".to_owned());
    let signature = crypt.signature(&timestamp, &nonce, &encrypt);
    Push {
        body: envelope(&encrypt),
        timestamp,
        nonce,
        signature,
    }
}

pub fn ticket_push(ticket: &str, created_at: u64) -> Push {
    push_of(&ticket_xml(ticket, created_at))
}

#[derive(Clone)]
pub struct PlatformOptions {
    /// Extra TOML appended to `[keeper]`.
    pub keeper: &'static str,
    /// The emulator as the test wants it (components are added by the harness).
    pub emulator: EmulatorConfig,
    /// Whether the emulator pushes to the server's callback (verify tickets on demand,
    /// authorization events).
    pub callback: bool,
    /// A Redis URL for the store instead of a SQLite file.
    pub redis: Option<String>,
}

impl Default for PlatformOptions {
    fn default() -> Self {
        Self {
            keeper: "",
            emulator: EmulatorConfig::default().with_app(APPID, SECRET),
            callback: true,
            redis: None,
        }
    }
}

/// A server with the official app `shop` and the component `platform`, on its own
/// SQLite file, against an emulator.
pub struct PlatformApp {
    pub base: String,
    pub http: reqwest::Client,
    pub emulator: RunningEmulator,
    pub _dir: tempfile::TempDir,
    pub toml: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// The server's TOML; `store` is the `[store]` table's body.
pub fn platform_toml(keeper: &str, api_base: &str, store: &str, listen: &str) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
[store]
{store}
[upstream]
api_base = "{api_base}"
wecom_base = "{api_base}"
request_timeout_ms = 3000
[keeper]
{keeper}
[[apps]]
id = "shop"
appid = "{APPID}"
secret = "{SECRET}"
[[apps]]
id = "platform"
kind = "component"
appid = "{COMPONENT_APPID}"
secret = "{COMPONENT_SECRET}"
token = "{PUSH_TOKEN}"
encoding_aes_key = "{AES_KEY}"
[[clients]]
name = "services"
key = "{KEY}"
apps = ["*"]
scopes = ["read", "invalidate"]
[[clients]]
name = "operator"
key = "{ADMIN_KEY}"
apps = ["*"]
scopes = ["read", "invalidate", "admin"]
"#
    )
}

/// The `[store]` body of a SQLite file in `dir`, or of a Redis.
pub fn store_table(dir: &std::path::Path, redis: Option<&str>) -> String {
    match redis {
        Some(url) => format!("kind = \"redis\"\nurl = \"{url}\"\nlease_ttl_ms = 1000"),
        None => format!("path = \"{}\"", dir.join("wxtoken.db").display()),
    }
}

/// Binds the server's port first, so that the emulator can be told where to push.
pub async fn spawn_platform(options: PlatformOptions) -> PlatformApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let emulator_config = if options.callback {
        with_component(options.emulator, &format!("http://{addr}"))
    } else {
        options
            .emulator
            .with_component(COMPONENT_APPID, COMPONENT_SECRET, PUSH_TOKEN, AES_KEY)
    };
    let emulator = wechat_emulator::spawn(emulator_config)
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = platform_toml(
        options.keeper,
        &emulator.base_url(),
        &store_table(dir.path(), options.redis.as_deref()),
        "127.0.0.1:0",
    );
    let mut app = PlatformApp {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        emulator,
        _dir: dir,
        toml,
        shutdown: None,
        server: None,
    };
    app.start_on(listener).await;
    app
}

/// The emulator's config with the component `platform` pushing to `server`.
pub fn with_component(config: EmulatorConfig, server: &str) -> EmulatorConfig {
    let mut config = config.with_component(COMPONENT_APPID, COMPONENT_SECRET, PUSH_TOKEN, AES_KEY);
    if let Some(component) = config.components.last_mut() {
        component.callback_url = Some(format!("{server}/v1/apps/platform/callback"));
    }
    config
}

impl PlatformApp {
    pub async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, key: &str, body: String) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn start_on(&mut self, listener: TcpListener) {
        let settings = Settings::from_toml(&self.toml).expect("test config is valid");
        let server = Server::build(&settings, listener).await.expect("server");
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        self.shutdown = Some(tx);
        self.server = Some(handle);
    }

    /// Stops the server gracefully and starts it again on the same port and store.
    pub async fn restart(&mut self) {
        self.stop().await;
        let addr = self.base.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind(&addr).await.expect("rebind");
        self.start_on(listener).await;
    }

    /// Another server on the same config (the same store), on a port of its own.
    pub async fn sibling(&self) -> PlatformApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut app = PlatformApp {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            emulator: wechat_emulator::spawn(EmulatorConfig::default())
                .await
                .expect("an unused emulator"),
            _dir: tempfile::tempdir().expect("tempdir"),
            toml: self.toml.clone(),
            shutdown: None,
            server: None,
        };
        app.start_on(listener).await;
        app
    }

    /// The emulator's counters of the component.
    pub fn calls(&self) -> wechat_emulator::ComponentStats {
        self.emulator.emulator.stats().component(COMPONENT_APPID)
    }

    /// Delivers a push to the callback; returns the status and body.
    pub async fn deliver(&self, push: &Push) -> (u16, String) {
        let response = self
            .http
            .post(format!(
                "{}/v1/apps/platform/callback?timestamp={}&nonce={}&encrypt_type=aes&msg_signature={}",
                self.base, push.timestamp, push.nonce, push.signature
            ))
            .body(push.body.clone())
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// Stops the server gracefully.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
        }
    }
}
