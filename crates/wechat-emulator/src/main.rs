//! `wechat-emulator` binary: serves the emulated WeChat API on a TCP port.
//!
//! Thin by design: parses flags into a [`Config`], serves [`Emulator::router`] until
//! ctrl-c. All behaviour lives in the library.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use wechat_emulator::{AppCredentials, Config, Emulator, FailKind};

/// A stand-in for WeChat's credential APIs (/cgi-bin/token, /cgi-bin/stable_token).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7300")]
    listen: SocketAddr,
    /// An accepted app as APPID:SECRET; repeat for more apps.
    #[arg(long = "app", value_name = "APPID:SECRET", value_parser = parse_app, required = true)]
    apps: Vec<AppCredentials>,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 7200)]
    expires_in: u64,
    /// Seconds a replaced token stays valid, and stable_token's renewal window
    /// (fractions allowed, e.g. 0.5).
    #[arg(long, default_value_t = 300.0, value_parser = parse_secs)]
    overlap: f64,
    /// Daily /cgi-bin/token calls allowed per app.
    #[arg(long, default_value_t = 2000)]
    quota: u64,
    /// Daily /cgi-bin/stable_token calls allowed per app.
    #[arg(long, default_value_t = 500_000)]
    stable_quota: u64,
    /// Milliseconds added to every token-endpoint answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Share of token-endpoint calls that fail, 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    fail_rate: f64,
    /// Failures to inject, comma-separated: busy, http500, timeout.
    #[arg(long, value_delimiter = ',', value_parser = parse_fail_kind,
          default_value = "busy,http500,timeout")]
    fail_kinds: Vec<FailKind>,
    /// Milliseconds an injected timeout hangs before answering.
    #[arg(long, default_value_t = 30_000)]
    hang_ms: u64,
    /// Force refreshes closer together than this many seconds do not refresh.
    #[arg(long, default_value_t = 30)]
    force_refresh_interval_secs: u64,
    /// Force refreshes allowed per app per day.
    #[arg(long, default_value_t = 20)]
    force_refresh_daily: u64,
}

fn parse_app(s: &str) -> Result<AppCredentials, String> {
    match s.split_once(':') {
        Some((appid, secret)) if !appid.is_empty() && !secret.is_empty() => {
            Ok(AppCredentials::new(appid, secret))
        }
        _ => Err("--app must be APPID:SECRET with both sides non-empty".to_owned()),
    }
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err("--overlap must be a non-negative number of seconds".to_owned()),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err("--fail-rate must be a number from 0 to 1".to_owned()),
    }
}

fn parse_fail_kind(s: &str) -> Result<FailKind, String> {
    match s.trim() {
        "busy" => Ok(FailKind::SystemBusy),
        "http500" => Ok(FailKind::Http500),
        "timeout" => Ok(FailKind::Timeout),
        other => Err(format!(
            "unknown kind {other:?} (expected busy, http500, timeout)"
        )),
    }
}

impl Cli {
    fn into_config(self) -> Config {
        Config {
            apps: self.apps,
            expires_in: self.expires_in,
            overlap: Duration::from_secs_f64(self.overlap),
            quota: self.quota,
            stable_quota: self.stable_quota,
            latency: Duration::from_millis(self.latency_ms),
            fail_rate: self.fail_rate,
            fail_kinds: self.fail_kinds,
            hang: Duration::from_millis(self.hang_ms),
            force_refresh_interval: Duration::from_secs(self.force_refresh_interval_secs),
            force_refresh_daily: self.force_refresh_daily,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let listen = cli.listen;
    let config = cli.into_config();
    let appids: Vec<&str> = config.apps.iter().map(|a| a.appid.as_str()).collect();
    tracing::info!(?appids, "configured apps");

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding --listen {listen}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let emulator = Emulator::new(config);
    tracing::info!(%addr, "wechat emulator listening");
    axum::serve(listener, emulator.router())
        .with_graceful_shutdown(async {
            if let Err(err) = tokio::signal::ctrl_c().await {
                tracing::error!(%err, "cannot listen for ctrl-c; stopping");
            }
            tracing::info!("shutting down");
        })
        .await
        .context("serving")?;
    Ok(())
}
