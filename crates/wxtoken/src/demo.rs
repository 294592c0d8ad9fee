//! `wxtoken demo`: an embedded WeChat emulator, a server on a SQLite file with a demo app
//! and key, and curl lines that work as printed. The only place the server uses the
//! emulator.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tokio::net::TcpListener;
use wechat_emulator::{AppCredentials, Config as EmulatorConfig};

use crate::{Server, Settings};

/// The demo's client key: printed, so never use it anywhere else.
pub const DEMO_KEY: &str = "wxt_demo_key_for_this_machine_only";
const DEMO_APPID: &str = "wxd1e2m3o4a5p6p7i8";
const DEMO_SECRET: &str = "demo-secret-held-only-by-wxtoken";

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: SocketAddr,
    /// The SQLite file; a fresh one per run by default, since the emulator starts fresh.
    pub db: Option<PathBuf>,
    /// Token lifetime the emulator hands out; short values show refreshes happening.
    pub expires_in: u64,
}

/// Runs the demo until `shutdown` resolves.
pub async fn run(
    options: DemoOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let overlap = std::time::Duration::from_secs((options.expires_in / 24).clamp(1, 300));
    let emulator = wechat_emulator::spawn(EmulatorConfig {
        apps: vec![AppCredentials::new(DEMO_APPID, DEMO_SECRET)],
        expires_in: options.expires_in,
        overlap,
        ..EmulatorConfig::default()
    })
    .await
    .context("Failed to start the embedded WeChat emulator")?;

    let db = match options.db {
        Some(db) => db,
        None => {
            let db = std::env::temp_dir().join(format!("wxtoken-demo-{}.db", std::process::id()));
            let _ = std::fs::remove_file(&db);
            db
        }
    };
    let config = format!(
        r#"
[server]
listen = "{listen}"
[store]
kind = "sqlite"
path = {db:?}
[upstream]
api_base = "{api}"
[keeper]
stable_window_secs = {window}
[[apps]]
id = "demo"
kind = "official"
appid = "{DEMO_APPID}"
secret = "{DEMO_SECRET}"
mode = "stable"
[[clients]]
name = "demo"
key = "{DEMO_KEY}"
apps = ["*"]
scopes = ["read", "invalidate", "admin"]
"#,
        listen = options.listen,
        db = db.display().to_string(),
        api = emulator.base_url(),
        window = overlap.as_secs(),
    );
    let settings = Settings::from_toml(&config).context("Failed to build the demo settings")?;
    let listener = TcpListener::bind(options.listen).await.with_context(|| {
        format!(
            "Failed to listen on {} (try --listen 127.0.0.1:0)",
            options.listen
        )
    })?;
    let server = Server::build(&settings, listener)
        .await
        .context("Failed to start the server")?;
    let addr = server.local_addr()?;
    print_guide(addr, &emulator.base_url(), &db.display().to_string());
    server.run(shutdown).await?;
    drop(emulator);
    Ok(())
}

fn print_guide(addr: SocketAddr, emulator: &str, db: &str) {
    let s = format!("http://{addr}");
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "wxtoken".into());
    let auth = format!("-H 'Authorization: Bearer {DEMO_KEY}'");
    println!(
        r#"
wxtoken demo is running.
  server    {s}   (SQLite store: {db})
  emulator  {emulator}   (stands in for api.weixin.qq.com)
  app       demo (appid {DEMO_APPID}, stable mode)
  client key {DEMO_KEY}

Try, in another terminal:

  # a token, served from memory (the first call made the one upstream fetch)
  curl -s {auth} {s}/v1/apps/demo/access_token

  # status: expiry, generation, upstream calls today, last error
  curl -s {auth} {s}/v1/apps/demo

  # use the token against the emulator's ordinary API
  TOKEN=$(curl -s {auth} {s}/v1/apps/demo/access_token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  curl -s "{emulator}/cgi-bin/get_api_domain_ip?access_token=$TOKEN"

  # report it dead (compare-and-invalidate): refreshes only if it is the current token
  curl -s -X POST {auth} -d "{{\"access_token\":\"$TOKEN\"}}" {s}/v1/apps/demo/access_token/invalidate

  # a JS-SDK ticket, and a signed wx.config for a page (fetched on first use)
  curl -s {auth} {s}/v1/apps/demo/ticket/jsapi
  curl -s -X POST {auth} -d '{{"url":"https://shop.example/page?id=1#top"}}' {s}/v1/apps/demo/jssdk/config

  # the same, with the CLI
  {exe} token demo --server {s} --key {DEMO_KEY}

  # as an unmodified SDK sees it: WeChat's own token endpoint, the client key as secret
  curl -s "{s}/cgi-bin/token?grant_type=client_credential&appid={DEMO_APPID}&secret={DEMO_KEY}"

  # any WeChat API through wxtoken's gateway (a dead token is refreshed and retried once)
  curl -s "{s}/cgi-bin/get_api_domain_ip?access_token=$TOKEN"
  curl -s {auth} {s}/v1/apps/demo/proxy/cgi-bin/get_api_domain_ip

  # how many times WeChat (the emulator) was called, and the server's metrics
  curl -s {emulator}/_emulator/stats
  curl -s {s}/metrics

Ctrl-C stops the demo.
"#
    );
}
