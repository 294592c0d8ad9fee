//! `authorizers`: one third-party platform with 100,000 authorizers (bench/authorizers.sh).
//!
//! Runs the release `wechat-emulator` (short authorizer tokens, a component that pushes
//! its verify ticket to the server) and the release `wxtoken serve` on a SQLite file, as
//! separate processes, and measures:
//!
//! 1. the baseline: the server's RSS and start-up time with the component and no
//!    authorizer;
//! 2. onboarding: N authorizations through `POST /v1/apps/platform/authorizers` (each an
//!    `api_query_auth` and a durable write), `--onboard-concurrency` at a time;
//! 3. the server's RSS with N authorizers, and its start-up time from the store (a
//!    restart: process start to listening, every authorizer and token loaded);
//! 4. a run of `--run-secs` while `--clients` loops read random authorizers' tokens:
//!    WeChat's `api_authorizer_token` calls per second (from the server's counter, each
//!    second), against the configured cap, and how many tokens were served with less
//!    than `--min-ttl` seconds left (target 0), and any failed read.
//!
//! The tokens live `--expires-in` seconds and are refreshed `--refresh-ahead` before
//! expiry, so the whole population's first refresh wave falls inside the run.
//! Exit: 0 if every target is met (RSS, start-up, cap, min_ttl, no failure), 1 if one is
//! missed, 2 if the benchmark could not run.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use rand::Rng;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const COMPONENT_APPID: &str = "wxbenchcomponent01";
const COMPONENT_SECRET: &str = "bench-component-secret";
const PUSH_TOKEN: &str = "benchpushtoken";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const KEY: &str = "wxt_bench_authorizers_admin_key";

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The release `wxtoken` binary.
    #[arg(long)]
    wxtoken: PathBuf,
    /// The release `wechat-emulator` binary.
    #[arg(long)]
    emulator: PathBuf,
    /// Where the config, database and logs go.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 100_000)]
    authorizers: usize,
    /// Lifetime of an authorizer token, in seconds.
    #[arg(long, default_value_t = 600)]
    expires_in: u64,
    /// keeper.refresh_ahead_secs.
    #[arg(long, default_value_t = 300)]
    refresh_ahead: u64,
    /// keeper.authorizer_refresh_per_sec.
    #[arg(long, default_value_t = 1000)]
    cap: u64,
    #[arg(long, default_value_t = 420)]
    run_secs: u64,
    #[arg(long, default_value_t = 32)]
    clients: usize,
    #[arg(long, default_value_t = 60)]
    min_ttl: u64,
    #[arg(long, default_value_t = 64)]
    onboard_concurrency: usize,
    /// Targets.
    #[arg(long, default_value_t = 300.0)]
    max_rss_mb: f64,
    #[arg(long, default_value_t = 3.0)]
    max_startup_secs: f64,
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `VmRSS` and `VmHWM` of a process, in MB.
fn rss_mb(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

struct Running {
    child: Child,
    /// How long from spawn to its "listening" line.
    startup: Duration,
}

/// Starts a process and waits for the line containing `ready` on stdout (the rest of
/// its output goes to `log`).
async fn start(mut command: Command, ready: &str, log: &Path) -> anyhow::Result<Running> {
    let began = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("spawn")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut file = tokio::fs::File::create(log).await?;
    loop {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .context("no ready line within 120 s")??
            .context("exited before it was ready")?;
        if line.contains(ready) {
            break;
        }
    }
    let startup = began.elapsed();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = file.write_all(line.as_bytes()).await;
            let _ = file.write_all(b"\n").await;
        }
    });
    Ok(Running { child, startup })
}

async fn stop(mut running: Running) -> anyhow::Result<()> {
    if let Some(pid) = running.child.id() {
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
    }
    tokio::time::timeout(Duration::from_secs(60), running.child.wait())
        .await
        .context("did not stop within 60 s")??;
    Ok(())
}

fn config(cli: &Cli, port: u16, emulator_port: u16, db: &Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[store]
path = "{db}"
[upstream]
api_base = "http://127.0.0.1:{emulator_port}"
request_timeout_ms = 5000
[keeper]
refresh_ahead_secs = {ahead}
authorizer_refresh_per_sec = {cap}
[[apps]]
id = "platform"
kind = "component"
appid = "{COMPONENT_APPID}"
secret = "{COMPONENT_SECRET}"
token = "{PUSH_TOKEN}"
encoding_aes_key = "{AES_KEY}"
[[clients]]
name = "bench"
key = "{KEY}"
apps = ["*"]
scopes = ["read", "invalidate", "admin"]
"#,
        db = db.display(),
        ahead = cli.refresh_ahead,
        cap = cli.cap,
    )
}

fn server(cli: &Cli, config: &Path) -> Command {
    let mut command = Command::new(&cli.wxtoken);
    command
        .args(["serve", "--config"])
        .arg(config)
        // Per-authorizer lines would be most of the work: warnings, and the start line.
        .env("RUST_LOG", "warn,wxtoken::server=info")
        .env("NO_COLOR", "1");
    command
}

fn appid(i: usize) -> String {
    format!("wxa{i:015}")
}

/// The server's `api_authorizer_token` counter.
async fn authorizer_calls(http: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("wxtoken_upstream_calls_total") && l.contains("api_authorizer_token")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&cli.dir)?;
    let (port, emulator_port) = (free_port()?, free_port()?);
    let base = format!("http://127.0.0.1:{port}");
    let emulator_base = format!("http://127.0.0.1:{emulator_port}");
    let db = cli.dir.join("wxtoken.db");
    let config_path = cli.dir.join("wxtoken.toml");
    std::fs::write(&config_path, config(&cli, port, emulator_port, &db))?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;

    let mut emulator = Command::new(&cli.emulator);
    emulator
        .args(["--listen", &format!("127.0.0.1:{emulator_port}")])
        .arg("--component")
        .arg(format!(
            "{COMPONENT_APPID}:{COMPONENT_SECRET}:{PUSH_TOKEN}:{AES_KEY}@{base}/v1/apps/platform/callback"
        ))
        .args(["--authorizer-expires-in", &cli.expires_in.to_string()])
        .env("RUST_LOG", "warn");
    let log = std::fs::File::create(cli.dir.join("emulator.log"))?;
    let emulator = emulator
        .stdout(log)
        .kill_on_drop(true)
        .spawn()
        .context("spawn the emulator")?;
    let mut up = false;
    for _ in 0..200 {
        if http
            .get(format!("{emulator_base}/_emulator/stats"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        bail!("the emulator did not answer within 10 s");
    }

    // 1. Baseline: no authorizer.
    let first = start(
        server(&cli, &config_path),
        "wxtoken listening",
        &cli.dir.join("server-1.log"),
    )
    .await?;
    let pid = first.child.id().context("pid")?;
    let (base_rss, _) = rss_mb(pid)?;
    let base_startup = first.startup;
    let pushed = http
        .post(format!("{emulator_base}/_emulator/push_verify_ticket"))
        .json(&json!({ "component_appid": COMPONENT_APPID }))
        .send()
        .await?;
    if !pushed.status().is_success() {
        bail!("the verify ticket push failed: {}", pushed.text().await?);
    }

    // 2. Onboarding.
    println!("onboarding {} authorizers...", cli.authorizers);
    let began = Instant::now();
    let failures = AtomicU64::new(0);
    futures::stream::iter(0..cli.authorizers)
        .for_each_concurrent(cli.onboard_concurrency, |i| {
            let (http, emulator_base, base, failures) = (&http, &emulator_base, &base, &failures);
            async move {
                let result: anyhow::Result<()> = async {
                    let code: Value = http
                        .post(format!("{emulator_base}/_emulator/authorize"))
                        .json(&json!({ "component_appid": COMPONENT_APPID, "authorizer_appid": appid(i) }))
                        .send()
                        .await?
                        .json()
                        .await?;
                    let code = code["authorization_code"].as_str().context("no code")?;
                    let answer = http
                        .post(format!("{base}/v1/apps/platform/authorizers"))
                        .bearer_auth(KEY)
                        .json(&json!({ "authorization_code": code }))
                        .send()
                        .await?;
                    // 200: the `authorized` push completed it first (the same code).
                    if !matches!(answer.status().as_u16(), 200 | 201) {
                        bail!("HTTP {}: {}", answer.status(), answer.text().await?);
                    }
                    Ok(())
                }
                .await;
                if let Err(e) = result {
                    if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("onboarding failed: {e:#}");
                    }
                }
            }
        })
        .await;
    let onboard = began.elapsed();
    let onboard_failures = failures.load(Ordering::Relaxed);
    let (rss_loaded, hwm_onboarding) = rss_mb(pid)?;
    let onboard_calls = authorizer_calls(&http, &base).await?;
    stop(first).await?;

    // 3. A restart: start-up from the store.
    let second = start(
        server(&cli, &config_path),
        "wxtoken listening",
        &cli.dir.join("server-2.log"),
    )
    .await?;
    let pid = second.child.id().context("pid")?;
    let startup = second.startup;
    let (rss_started, _) = rss_mb(pid)?;

    // 4. The run.
    println!("running {} s...", cli.run_secs);
    let deadline = Instant::now() + Duration::from_secs(cli.run_secs);
    let below = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..cli.clients {
        let (http, base) = (http.clone(), base.clone());
        let (below, reads, failed) = (below.clone(), reads.clone(), failed.clone());
        let (n, min_ttl) = (cli.authorizers, cli.min_ttl);
        clients.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let i = rand::rng().random_range(0..n);
                let url = format!(
                    "{base}/v1/apps/platform/authorizers/{}/access_token",
                    appid(i)
                );
                let answer = http.get(&url).bearer_auth(KEY).send().await;
                let body: Option<Value> = match answer {
                    Ok(a) if a.status().is_success() => a.json().await.ok(),
                    _ => None,
                };
                match body.and_then(|b| b["expires_in"].as_u64()) {
                    Some(left) => {
                        reads.fetch_add(1, Ordering::Relaxed);
                        if left < min_ttl {
                            below.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Calls per second, each sample divided by the time it really covered (a sample
    // taken a few milliseconds late must not read as a faster rate).
    let mut per_second = Vec::new();
    let mut last = authorizer_calls(&http, &base).await?;
    let run_start_calls = last;
    let mut last_at = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while Instant::now() < deadline {
        tick.tick().await;
        let now = authorizer_calls(&http, &base).await?;
        let at = Instant::now();
        let rate = (now - last) as f64 / at.duration_since(last_at).as_secs_f64();
        per_second.push(rate.round() as u64);
        (last, last_at) = (now, at);
    }
    for client in clients {
        let _ = client.await;
    }
    let (rss_end, hwm_end) = rss_mb(pid)?;
    let counts: Value = http
        .get(format!("{base}/v1/apps/platform"))
        .bearer_auth(KEY)
        .send()
        .await?
        .json()
        .await?;
    stop(second).await?;
    drop(emulator);

    let max_rate = per_second.iter().copied().max().unwrap_or(0);
    let refreshes = last - run_start_calls;
    let busy: Vec<u64> = per_second.iter().copied().filter(|n| *n > 0).collect();
    let mean_busy = if busy.is_empty() {
        0.0
    } else {
        busy.iter().sum::<u64>() as f64 / busy.len() as f64
    };
    let peak_rss = hwm_onboarding.max(hwm_end);
    // Per authorizer in the steady state: loaded from the store, before any traffic.
    let per_authorizer_kb = (rss_started - base_rss) * 1024.0 / cli.authorizers as f64;
    let startup_per_100k = (startup.as_secs_f64() - base_startup.as_secs_f64()).max(0.0)
        * 100_000.0
        / cli.authorizers as f64;
    let (below, reads, failed) = (
        below.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    std::fs::write(
        cli.dir.join("per-second.txt"),
        per_second
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )?;

    println!();
    println!("authorizers                     {}", cli.authorizers);
    println!(
        "onboarding                      {:.1} s, {:.0} authorizations/s, {} failed, {} refresh calls meanwhile",
        onboard.as_secs_f64(),
        cli.authorizers as f64 / onboard.as_secs_f64(),
        onboard_failures,
        onboard_calls
    );
    println!(
        "RSS                             baseline {base_rss:.1} MB; after onboarding {rss_loaded:.1} MB; \
         after restart {rss_started:.1} MB ({per_authorizer_kb:.2} KB per authorizer); end of run {rss_end:.1} MB; peak {peak_rss:.1} MB"
    );
    println!(
        "start-up                        baseline {:.2} s; from the store with {} authorizers {:.2} s",
        base_startup.as_secs_f64(),
        cli.authorizers,
        startup.as_secs_f64()
    );
    println!(
        "refresh calls during the run    {refreshes} in {} s; max {max_rate}/s (cap {}), mean {mean_busy:.0}/s over the {} busy seconds",
        per_second.len(),
        cli.cap,
        busy.len()
    );
    println!(
        "token reads                     {reads}, {failed} failed, {below} with less than {} s left",
        cli.min_ttl
    );
    println!(
        "authorizer states at the end    {}",
        counts["component"]["authorizers"]
    );
    println!(
        "1,000,000 authorizers (linear)  RSS ~{:.0} MB, start-up ~{:.1} s",
        base_rss + per_authorizer_kb * 1_000_000.0 / 1024.0,
        base_startup.as_secs_f64() + startup_per_100k * 10.0
    );

    let mut ok = true;
    let mut check = |what: &str, pass: bool| {
        println!("target {what}: {}", if pass { "met" } else { "MISSED" });
        ok &= pass;
    };
    check(
        &format!("peak RSS < {} MB", cli.max_rss_mb),
        peak_rss < cli.max_rss_mb,
    );
    check(
        &format!("start-up < {} s", cli.max_startup_secs),
        startup.as_secs_f64() < cli.max_startup_secs,
    );
    check(
        &format!("refresh rate <= cap {}", cli.cap),
        max_rate <= cli.cap,
    );
    check("no token served below min_ttl", below == 0);
    check(
        "no failed read or onboarding",
        failed == 0 && onboard_failures == 0,
    );
    check(
        "the refresh wave fell inside the run",
        refreshes as usize >= cli.authorizers,
    );
    Ok(ok)
}
