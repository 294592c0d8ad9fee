//! `wechat-emulator` binary: serves the emulated WeChat API on a TCP port.
//!
//! Thin by design: parses flags into a [`Config`], serves [`Emulator::router`] (and
//! pushes verify tickets if asked) until ctrl-c. All behaviour lives in the library.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use wechat_emulator::crypto::MsgCrypt;
use wechat_emulator::{
    AppCredentials, ComponentCredentials, Config, Emulator, FailKind, WecomCredentials, wecom_key,
};

/// A stand-in for WeChat's credential APIs (/cgi-bin/token, /cgi-bin/stable_token,
/// WeCom's /cgi-bin/gettoken, and the JS-SDK tickets), its login calls (/sns/*), media
/// uploads, a few ordinary APIs, and third-party platforms (/cgi-bin/component/*).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7300")]
    listen: SocketAddr,
    /// An accepted app as APPID:SECRET; repeat for more apps. Required unless a
    /// --wecom-app or a --component is given.
    #[arg(long = "app", value_name = "APPID:SECRET", value_parser = parse_app,
          required_unless_present_any = ["wecom_apps", "components"])]
    apps: Vec<AppCredentials>,
    /// An accepted WeCom app as CORPID:AGENTID:SECRET; repeat for more apps.
    #[arg(long = "wecom-app", value_name = "CORPID:AGENTID:SECRET",
          value_parser = parse_wecom_app)]
    wecom_apps: Vec<WecomCredentials>,
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
    /// clear_quota clears allowed per app per month, both versions together.
    #[arg(long, default_value_t = 10)]
    clear_quota_monthly: u64,
    /// Milliseconds added to every token- and ticket-endpoint answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Milliseconds added to every ordinary API, login call and upload answer
    /// (WeChat's round trip).
    #[arg(long, default_value_t = 0)]
    api_latency_ms: u64,
    /// Share of token-endpoint calls that fail, 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    fail_rate: f64,
    /// Failures to inject, comma-separated: busy, http500, timeout (what WeChat does),
    /// reset, garbage, truncated, huge (broken answers on the way).
    #[arg(long, value_delimiter = ',', value_parser = parse_fail_kind,
          default_value = "busy,http500,timeout")]
    fail_kinds: Vec<FailKind>,
    /// Milliseconds an injected timeout hangs before answering.
    #[arg(long, default_value_t = 30_000)]
    hang_ms: u64,
    /// Fail exactly --fail-rate of the calls, evenly spread, instead of at random.
    #[arg(long)]
    fail_spread: bool,
    /// Force refreshes closer together than this many seconds do not refresh.
    #[arg(long, default_value_t = 30)]
    force_refresh_interval_secs: u64,
    /// Force refreshes allowed per app per day.
    #[arg(long, default_value_t = 20)]
    force_refresh_daily: u64,
    /// Ticket lifetime in seconds (official and WeCom tickets).
    #[arg(long, default_value_t = 7200)]
    ticket_expires_in: u64,
    /// Official /cgi-bin/ticket/getticket calls allowed per app per day.
    #[arg(long, default_value_t = 100_000)]
    ticket_daily: u64,
    /// WeCom /cgi-bin/get_jsapi_ticket calls allowed per corp per rolling hour.
    #[arg(long, default_value_t = 400)]
    corp_ticket_hourly: u64,
    /// WeCom agent_config ticket calls allowed per app per rolling hour.
    #[arg(long, default_value_t = 100)]
    agent_ticket_hourly: u64,
    /// A third-party platform as APPID:SECRET:TOKEN:ENCODING_AES_KEY, optionally
    /// followed by @CALLBACK_URL where verify tickets and authorization events are
    /// pushed; repeat for more platforms.
    #[arg(long = "component",
          value_name = "APPID:SECRET:TOKEN:ENCODING_AES_KEY[@CALLBACK_URL]",
          value_parser = parse_component)]
    components: Vec<ComponentCredentials>,
    /// component_access_token lifetime in seconds.
    #[arg(long, default_value_t = 7200)]
    component_expires_in: u64,
    /// Authorizer access token lifetime in seconds.
    #[arg(long, default_value_t = 7200)]
    authorizer_expires_in: u64,
    /// Push a fresh verify ticket to every platform with a callback URL at start and
    /// then every this many seconds (fractions allowed; WeChat: 600). Without it,
    /// tickets are pushed only on POST /_emulator/push_verify_ticket.
    #[arg(long, value_parser = parse_interval)]
    verify_ticket_interval_secs: Option<f64>,
    /// Seconds the latest verify ticket stays usable.
    #[arg(long, default_value_t = 43_200)]
    verify_ticket_lifetime_secs: u64,
    /// Keep an authorizer's refresh token across api_authorizer_token calls instead of
    /// issuing a new one each time.
    #[arg(long)]
    keep_refresh_tokens: bool,
}

fn parse_app(s: &str) -> Result<AppCredentials, String> {
    match s.split_once(':') {
        Some((appid, secret)) if !appid.is_empty() && !secret.is_empty() => {
            Ok(AppCredentials::new(appid, secret))
        }
        _ => Err("--app must be APPID:SECRET with both sides non-empty".to_owned()),
    }
}

fn parse_wecom_app(s: &str) -> Result<WecomCredentials, String> {
    // The secret comes last so that it may itself contain ':'.
    let mut parts = s.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(corpid), Some(agentid), Some(secret)) if !corpid.is_empty() && !secret.is_empty() => {
            match agentid.parse::<u64>() {
                Ok(agentid) => Ok(WecomCredentials::new(corpid, agentid, secret)),
                Err(_) => Err(format!(
                    "--wecom-app AGENTID must be a non-negative integer, got {agentid:?}"
                )),
            }
        }
        _ => Err(
            "--wecom-app must be CORPID:AGENTID:SECRET with all three parts non-empty".to_owned(),
        ),
    }
}

fn parse_component(s: &str) -> Result<ComponentCredentials, String> {
    const USAGE: &str = "--component must be APPID:SECRET:TOKEN:ENCODING_AES_KEY[@CALLBACK_URL] \
                         with the first four parts non-empty";
    // Secrets, tokens and keys are letters and digits: the first '@' starts the URL.
    let (credentials, callback) = match s.split_once('@') {
        Some((credentials, url)) if !url.is_empty() => (credentials, Some(url)),
        Some(_) => return Err(USAGE.to_owned()),
        None => (s, None),
    };
    let parts: Vec<&str> = credentials.split(':').collect();
    let [appid, secret, token, key] = parts[..] else {
        return Err(USAGE.to_owned());
    };
    if [appid, secret, token, key].iter().any(|p| p.is_empty()) {
        return Err(USAGE.to_owned());
    }
    MsgCrypt::new(token, key, appid).map_err(|e| format!("--component {appid}: {e}"))?;
    let component = ComponentCredentials::new(appid, secret, token, key);
    Ok(match callback {
        Some(url) => component.with_callback(url),
        None => component,
    })
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err("--verify-ticket-interval-secs must be a positive number of seconds".to_owned()),
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
        "reset" => Ok(FailKind::Reset),
        "garbage" => Ok(FailKind::Garbage),
        "truncated" => Ok(FailKind::Truncated),
        "huge" => Ok(FailKind::Huge),
        other => Err(format!(
            "unknown kind {other:?} (expected busy, http500, timeout, reset, garbage, truncated, huge)"
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
            api_latency: Duration::from_millis(self.api_latency_ms),
            fail_rate: self.fail_rate,
            fail_kinds: self.fail_kinds,
            fail_spread: self.fail_spread,
            hang: Duration::from_millis(self.hang_ms),
            force_refresh_interval: Duration::from_secs(self.force_refresh_interval_secs),
            force_refresh_daily: self.force_refresh_daily,
            wecom_apps: self.wecom_apps,
            ticket_expires_in: self.ticket_expires_in,
            corp_ticket_hourly: self.corp_ticket_hourly,
            agent_ticket_hourly: self.agent_ticket_hourly,
            ticket_daily: self.ticket_daily,
            components: self.components,
            component_expires_in: self.component_expires_in,
            authorizer_expires_in: self.authorizer_expires_in,
            verify_ticket_lifetime: Duration::from_secs(self.verify_ticket_lifetime_secs),
            verify_ticket_interval: self
                .verify_ticket_interval_secs
                .map(Duration::from_secs_f64),
            rotate_refresh_tokens: !self.keep_refresh_tokens,
            clear_quota_monthly: self.clear_quota_monthly,
            bad_expires_in: None,
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
    let wecom_apps: Vec<String> = config
        .wecom_apps
        .iter()
        .map(|a| wecom_key(&a.corpid, a.agentid))
        .collect();
    let components: Vec<&str> = config.components.iter().map(|c| c.appid.as_str()).collect();
    tracing::info!(?appids, ?wecom_apps, ?components, "configured apps");

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding --listen {listen}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let emulator = Emulator::new(config);
    tracing::info!(%addr, "wechat emulator listening");
    // Runs as long as the process; nothing to stop on shutdown.
    let _ticket_pushes = emulator.spawn_verify_ticket_pushes();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let argv = std::iter::once("wechat-emulator").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .map(Cli::into_config)
            .map_err(|err| err.to_string())
    }

    #[test]
    fn an_app_or_a_wecom_app_is_required() {
        assert!(parse(&[]).is_err());
        let config = parse(&["--wecom-app", "ww1:1000002:s:e:c"]).expect("wecom only");
        assert!(config.apps.is_empty());
        assert_eq!(
            config.wecom_apps,
            vec![WecomCredentials::new("ww1", 1_000_002, "s:e:c")]
        );
        let config = parse(&[
            "--app",
            "wx1:s",
            "--ticket-expires-in",
            "60",
            "--corp-ticket-hourly",
            "5",
            "--agent-ticket-hourly",
            "3",
            "--latency-ms",
            "7",
            "--api-latency-ms",
            "20",
        ])
        .expect("official only");
        assert_eq!(config.apps.len(), 1);
        assert_eq!(
            (config.latency, config.api_latency),
            (Duration::from_millis(7), Duration::from_millis(20))
        );
        assert_eq!(
            (
                config.ticket_expires_in,
                config.corp_ticket_hourly,
                config.agent_ticket_hourly
            ),
            (60, 5, 3)
        );
    }

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    #[test]
    fn components_parse_with_and_without_a_callback() {
        let config = parse(&[
            "--component",
            &format!("wxc1:sec:tok:{KEY}@http://127.0.0.1:9/cb?x=1"),
            "--component",
            &format!("wxc2:sec2:tok2:{KEY}"),
            "--authorizer-expires-in",
            "60",
            "--verify-ticket-interval-secs",
            "0.5",
        ])
        .expect("components only");
        assert!(config.apps.is_empty());
        assert_eq!(
            config.components,
            vec![
                ComponentCredentials::new("wxc1", "sec", "tok", KEY)
                    .with_callback("http://127.0.0.1:9/cb?x=1"),
                ComponentCredentials::new("wxc2", "sec2", "tok2", KEY),
            ]
        );
        assert_eq!(config.authorizer_expires_in, 60);
        assert_eq!(config.component_expires_in, 7200);
        assert_eq!(
            config.verify_ticket_interval,
            Some(Duration::from_millis(500))
        );
        assert!(config.rotate_refresh_tokens);
        let config = parse(&["--app", "wx1:s", "--keep-refresh-tokens"]).expect("app");
        assert_eq!(config.verify_ticket_interval, None);
        assert!(!config.rotate_refresh_tokens);
    }

    #[test]
    fn bad_components_are_refused_naming_the_flag() {
        for bad in [
            "wxc:sec:tok".to_owned(),
            format!("wxc:sec:tok:{KEY}:extra"),
            format!(":sec:tok:{KEY}"),
            "wxc:sec:tok:shortkey".to_owned(),
            format!("wxc:sec:tok:{KEY}@"),
        ] {
            let err = parse(&["--component", &bad]).expect_err(&bad);
            assert!(err.contains("--component"), "{bad}: {err}");
        }
        let err = parse(&["--app", "wx1:s", "--verify-ticket-interval-secs", "0"])
            .expect_err("zero interval");
        assert!(err.contains("--verify-ticket-interval-secs"), "{err}");
    }

    #[test]
    fn bad_wecom_apps_are_refused_naming_the_flag() {
        for bad in ["ww1:1", "ww1:x:s", ":1:s", "ww1:1:", "ww1:-1:s"] {
            let err = parse(&["--wecom-app", bad]).expect_err(bad);
            assert!(err.contains("--wecom-app"), "{bad}: {err}");
        }
    }
}
