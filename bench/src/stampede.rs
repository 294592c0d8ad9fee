//! `stampede`: the cold-start stampede figure. N callers (default 10,000), each on its own
//! TCP connection, ask one wxtoken server for a token that does not exist yet. What it
//! tests: WeChat sees exactly one token call, and every caller gets that one token.
//!
//! This process runs a WeChat emulator that answers token calls after 200 ms and a
//! wxtoken server on a SQLite file in a temp dir, on one multi-thread tokio runtime. The
//! callers run in a child process (this binary again, in a hidden `--callers-for` mode).
//! Each connection has a client end and a server end, so one process would need 2 N open
//! files, and containers often cap that below 20,000 with no way to raise it.
//!
//! The stampede has to be truly cold, which needs a gate. The keeper starts fetching as
//! soon as `Server::build` returns, and opening 10,000 connections takes longer than one
//! 200 ms fetch. So the emulator sits behind a gate that holds every request until the
//! gate opens. The steps:
//! 1. Start the gated emulator and the server. Wait until the keeper's first token call
//!    is held at the gate, so no token exists anywhere yet.
//! 2. The child opens its N connections. This part isn't timed.
//! 3. The child releases all callers together (a watch channel). Each caller writes its
//!    request and waits for the answer.
//! 4. Once every request is written, the gate opens. The one upstream call goes through,
//!    gets its answer 200 ms later, and the waiting callers get that token.
//!
//! A request's latency runs from its caller's release to the last byte of its answer.
//! So it includes the time all N callers took to send, plus the 200 ms upstream.
//!
//! Output: requests, successes, distinct tokens, upstream token calls seen by the
//! emulator, p50/p99/max latency and wall time. It exits non-zero unless there was
//! exactly one upstream call, every request succeeded, and all got the same token.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::process::ChildStdout;
use tokio::sync::{mpsc, oneshot, watch};
use tracing_subscriber::EnvFilter;
use wechat_emulator::{AppCredentials, Config as EmulatorConfig, Emulator};
use wxtoken::{Server, Settings};

const APP: &str = "shop";
const APPID: &str = "wxb3e4c5d6e7f8a9b0";
const SECRET: &str = "stampede-bench-secret";
/// A plaintext read key; this server lives only as long as the benchmark.
const KEY: &str = "wxt_bench_stampede_read_key";
/// How long the server's upstream client waits for WeChat. The first call is held at the
/// gate while the connections open, so this is far above the usual few seconds.
const UPSTREAM_TIMEOUT_MS: u64 = 120_000;
/// Upper bound for any one phase, so a bug shows as an error, not a hang.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);
/// Listen backlog for the server socket (the kernel caps it at net.core.somaxconn).
const BACKLOG: u32 = 8192;
/// Open files a process needs beyond its sockets (runtime, store, stdio, emulator).
const FILES_SLACK: usize = 100;

/// Fires N concurrent token requests at a cold wxtoken and counts the upstream calls.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Concurrent requests, each on its own connection.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Latency of the emulated WeChat token endpoint, in milliseconds.
    #[arg(long, default_value_t = 200)]
    latency_ms: u64,
    /// Connections opened at a time before the stampede (not measured).
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Internal: run as the callers process against this wxtoken address, driven over
    /// stdin/stdout by the parent.
    #[arg(long, hide = true)]
    callers_for: Option<SocketAddr>,
}

// ---------------------------------------------------------------------------------------
// Parent: the gated emulator, the server, and the report.
// ---------------------------------------------------------------------------------------

/// Holds emulator requests until the gate opens; counts those it holds.
#[derive(Clone)]
struct Gate {
    open: watch::Receiver<bool>,
    held: Arc<AtomicUsize>,
}

async fn hold_until_open(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let mut open = gate.open.clone();
    if !*open.borrow() {
        gate.held.fetch_add(1, Ordering::SeqCst);
        // An error means the sender is gone (the benchmark is ending): let it through.
        let _ = open.wait_for(|is_open| *is_open).await;
    }
    next.run(request).await
}

/// The emulator behind the gate, served on a free local port.
struct GatedEmulator {
    emulator: Emulator,
    base_url: String,
    open: watch::Sender<bool>,
    held: Arc<AtomicUsize>,
}

async fn start_emulator(latency: Duration) -> anyhow::Result<GatedEmulator> {
    let emulator = Emulator::new(EmulatorConfig {
        apps: vec![AppCredentials::new(APPID, SECRET)],
        latency,
        ..EmulatorConfig::default()
    });
    let (open, open_rx) = watch::channel(false);
    let held = Arc::new(AtomicUsize::new(0));
    let gate = Gate {
        open: open_rx,
        held: held.clone(),
    };
    let router = emulator
        .router()
        .layer(middleware::from_fn_with_state(gate, hold_until_open));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("Failed to bind the emulator's port")?;
    let addr = listener
        .local_addr()
        .context("Failed to read the emulator's address")?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!(%err, "the emulator stopped serving");
        }
    });
    Ok(GatedEmulator {
        emulator,
        base_url: format!("http://{addr}"),
        open,
        held,
    })
}

fn server_toml(api_base: &str, db: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
kind = "sqlite"
path = {db:?}
[upstream]
api_base = "{api_base}"
request_timeout_ms = {UPSTREAM_TIMEOUT_MS}
[[apps]]
id = "{APP}"
kind = "official"
appid = "{APPID}"
secret = "{SECRET}"
mode = "stable"
[[clients]]
name = "stampede"
key = "{KEY}"
apps = ["{APP}"]
scopes = ["read"]
"#
    )
}

/// A listener with a backlog deep enough for the connection phase.
fn bind_server_listener() -> anyhow::Result<TcpListener> {
    let socket = TcpSocket::new_v4().context("Failed to create the server socket")?;
    socket
        .set_reuseaddr(true)
        .context("Failed to set SO_REUSEADDR")?;
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    socket
        .bind(addr)
        .context("Failed to bind the server's port")?;
    socket
        .listen(BACKLOG)
        .context("Failed to listen on the server's port")
}

/// Fails early, with the fix, if this process cannot hold `sockets` connections.
fn check_open_files(sockets: usize, who: &str) -> anyhow::Result<()> {
    let needed = (sockets + FILES_SLACK) as u64;
    match open_files_limit() {
        Some(limit) if limit < needed => bail!(
            "the {who} needs about {needed} open files for {sockets} connections but the \
             limit is {limit}; raise it first (`ulimit -n {needed}`) or lower --requests"
        ),
        _ => Ok(()),
    }
}

/// The soft limit on open files, where Linux tells it.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The next line the callers process prints, which must start with `tag`; its rest.
async fn expect_line(
    lines: &mut Lines<BufReader<ChildStdout>>,
    tag: &str,
) -> anyhow::Result<String> {
    let line = tokio::time::timeout(PHASE_TIMEOUT, lines.next_line())
        .await
        .with_context(|| format!("The callers process sent no `{tag}` line in time"))?
        .context("Failed to read from the callers process")?
        .with_context(|| {
            format!("The callers process ended before `{tag}` (see its error above)")
        })?;
    line.strip_prefix(tag)
        .map(|rest| rest.trim().to_owned())
        .with_context(|| format!("The callers process said `{line}`, expected `{tag} ...`"))
}

fn ms(micros: u64) -> String {
    format!("{:.1} ms", micros as f64 / 1000.0)
}

async fn run_parent(cli: Cli) -> anyhow::Result<bool> {
    let n = cli.requests;
    if n == 0 {
        bail!("--requests must be at least 1");
    }
    check_open_files(n, "server process")?;

    // 1. A gated emulator and a cold server whose first token call is held at the gate.
    let upstream = start_emulator(Duration::from_millis(cli.latency_ms)).await?;
    let dir = tempfile::tempdir().context("Failed to create a temp dir for the store")?;
    let db = dir.path().join("wxtoken.db");
    let settings = Settings::from_toml(&server_toml(&upstream.base_url, &db.display().to_string()))
        .context("The benchmark's server config is invalid")?;
    let server = Server::build(&settings, bind_server_listener()?)
        .await
        .context("Failed to start wxtoken")?;
    let addr = server
        .local_addr()
        .context("Failed to read wxtoken's address")?;
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    tokio::time::timeout(PHASE_TIMEOUT, async {
        while upstream.held.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .context("The keeper's first token call never reached the emulator")?;

    // 2. The callers process opens its connections.
    let exe = std::env::current_exe().context("Failed to find this program to re-run it")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("--callers-for")
        .arg(addr.to_string())
        .arg("--requests")
        .arg(n.to_string())
        .arg("--connect-concurrency")
        .arg(cli.connect_concurrency.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("Failed to start the callers process")?;
    let mut to_child = child.stdin.take().context("The callers' stdin is piped")?;
    let mut from_child = BufReader::new(
        child
            .stdout
            .take()
            .context("The callers' stdout is piped")?,
    )
    .lines();
    let connect_us: u64 = expect_line(&mut from_child, "connected").await?.parse()?;

    // 3. Release; 4. once every request is written, let the one upstream call go.
    to_child
        .write_all(b"go\n")
        .await
        .context("Failed to release the callers")?;
    let written = expect_line(&mut from_child, "written").await?;
    upstream.open.send_replace(true);
    let result: Value = serde_json::from_str(&expect_line(&mut from_child, "result").await?)
        .context("The callers' result is not JSON")?;
    let status = child
        .wait()
        .await
        .context("Failed to wait for the callers process")?;
    if !status.success() {
        bail!("the callers process failed: {status}");
    }
    let calls = upstream.emulator.stats().app(APPID).upstream_token_calls();
    let _ = stop.send(());
    match tokio::time::timeout(PHASE_TIMEOUT, serving).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(%e, "wxtoken stopped with an error"),
        Ok(Err(e)) => tracing::warn!(%e, "wxtoken's task failed"),
        Err(_) => tracing::warn!("wxtoken did not stop in time"),
    }

    // Report.
    let field = |name: &str| result[name].as_u64().unwrap_or(0);
    let (written_count, written_us) = written
        .split_once(' ')
        .and_then(|(c, t)| Some((c.parse::<u64>().ok()?, t.parse::<u64>().ok()?)))
        .context("The callers' `written` line is malformed")?;
    let successes = field("successes");
    let distinct = field("distinct_tokens");
    println!(
        "stampede: {n} concurrent GET /v1/apps/{APP}/access_token, one connection each, \
         cold server, upstream latency {} ms",
        cli.latency_ms
    );
    println!("  connections opened (not measured)  {}", ms(connect_us));
    println!("  requests                           {n}");
    println!("  successes                          {successes}");
    println!("  distinct tokens                    {distinct}");
    println!("  upstream token calls (emulator)    {calls}");
    println!(
        "  all requests written, gate opened  {} after release ({written_count} written)",
        ms(written_us)
    );
    println!(
        "  latency p50                        {}",
        ms(field("p50_us"))
    );
    println!(
        "  latency p99                        {}",
        ms(field("p99_us"))
    );
    println!(
        "  latency max                        {}",
        ms(field("max_us"))
    );
    println!(
        "  wall time (release to last answer) {}",
        ms(field("wall_us"))
    );
    if let Some(failures) = result["failures"].as_object() {
        for (why, count) in failures.iter().take(5) {
            println!("  failed x{count}: {why}");
        }
    }
    let ok = calls == 1 && successes == n as u64 && distinct == 1;
    println!(
        "  result                             {}",
        if ok { "PASS" } else { "FAIL" }
    );
    drop(dir);
    Ok(ok)
}

// ---------------------------------------------------------------------------------------
// Child: the callers. Protocol on stdout, one line each: `connected <us>`, then (after
// `go` on stdin) `written <count> <us since release>`, then `result <json>`.
// ---------------------------------------------------------------------------------------

/// What one caller saw.
struct Outcome {
    /// From this caller's release to the last byte of its answer.
    latency: Duration,
    /// From the common release to the last byte of this answer.
    finished: Duration,
    result: Result<String, String>,
}

/// The `access_token` of a complete HTTP/1.1 answer, or why there is none.
fn parse_answer(raw: &[u8]) -> Result<String, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("incomplete answer ({} bytes)", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if status != "200" {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(body)));
    }
    let json: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    json["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no access_token in {json}"))
}

/// One caller: waits for the release, sends its request, reports it sent, reads the answer.
async fn call(
    mut stream: TcpStream,
    request: Arc<[u8]>,
    mut release: watch::Receiver<Option<Instant>>,
    written: mpsc::UnboundedSender<()>,
) -> Outcome {
    let released_at = match release.wait_for(Option::is_some).await {
        Ok(at) => at.unwrap_or_else(Instant::now),
        Err(_) => Instant::now(),
    };
    let started = Instant::now();
    let result = async {
        stream
            .write_all(&request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        // The receiver outlives every caller; a failed send would change nothing.
        let _ = written.send(());
        let mut raw = Vec::with_capacity(512);
        tokio::time::timeout(PHASE_TIMEOUT, stream.read_to_end(&mut raw))
            .await
            .map_err(|_| "no answer within the phase timeout".to_owned())?
            .map_err(|e| format!("read: {e}"))?;
        parse_answer(&raw)
    }
    .await;
    Outcome {
        latency: started.elapsed(),
        finished: released_at.elapsed(),
        result,
    }
}

/// The nearest-rank percentile `p` (0..=100) of sorted `values`.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Writes one protocol line to the parent.
async fn say(out: &mut tokio::io::Stdout, line: String) -> anyhow::Result<()> {
    out.write_all(format!("{line}\n").as_bytes())
        .await
        .context("Failed to write to the parent")?;
    out.flush().await.context("Failed to write to the parent")
}

async fn run_callers(addr: SocketAddr, n: usize, concurrency: usize) -> anyhow::Result<()> {
    check_open_files(n, "callers process")?;
    let mut out = tokio::io::stdout();

    let connect_started = Instant::now();
    let streams: Vec<TcpStream> = stream::iter(0..n)
        .map(|_| async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
        .with_context(|| format!("Failed to open {n} connections to wxtoken at {addr}"))?;
    let request: Arc<[u8]> = format!(
        "GET /v1/apps/{APP}/access_token HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {KEY}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
    .into();
    let (release, release_rx) = watch::channel(None::<Instant>);
    let (written_tx, mut written_rx) = mpsc::unbounded_channel();
    let callers: Vec<_> = streams
        .into_iter()
        .map(|s| {
            tokio::spawn(call(
                s,
                request.clone(),
                release_rx.clone(),
                written_tx.clone(),
            ))
        })
        .collect();
    drop(written_tx);
    say(
        &mut out,
        format!("connected {}", micros(connect_started.elapsed())),
    )
    .await?;

    let mut go = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut go)
        .await
        .context("Failed to read `go` from the parent")?;
    if go.trim() != "go" {
        bail!("expected `go` from the parent, got {go:?}");
    }
    let released_at = Instant::now();
    release.send_replace(Some(released_at));

    let mut written = 0_usize;
    let all_written = tokio::time::timeout(PHASE_TIMEOUT, async {
        while written < n && written_rx.recv().await.is_some() {
            written += 1;
        }
    })
    .await;
    if all_written.is_err() {
        tracing::warn!(written, "not every request was written in time");
    }
    say(
        &mut out,
        format!("written {written} {}", micros(released_at.elapsed())),
    )
    .await?;

    let mut outcomes = Vec::with_capacity(n);
    for caller in callers {
        outcomes.push(caller.await.context("A caller task panicked")?);
    }
    let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    latencies.sort_unstable();
    let wall = outcomes
        .iter()
        .map(|o| o.finished)
        .max()
        .unwrap_or_default();
    let mut tokens = HashSet::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for outcome in &outcomes {
        match &outcome.result {
            Ok(token) => {
                tokens.insert(token.as_str());
            }
            Err(why) => *failures.entry(why.clone()).or_default() += 1,
        }
    }
    let result = json!({
        "successes": n - failures.values().sum::<usize>(),
        "distinct_tokens": tokens.len(),
        "p50_us": micros(percentile(&latencies, 50.0)),
        "p99_us": micros(percentile(&latencies, 99.0)),
        "max_us": micros(percentile(&latencies, 100.0)),
        "wall_us": micros(wall),
        "failures": failures,
    });
    say(&mut out, format!("result {result}")).await
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.callers_for {
        Some(addr) => run_callers(addr, cli.requests, cli.connect_concurrency)
            .await
            .map(|()| true),
        None => run_parent(cli).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
    }

    #[test]
    fn parses_a_token_answer_and_rejects_errors() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n\
                   {\"access_token\":\"abc\",\"expires_in\":7199,\"expires_at\":1}";
        assert_eq!(parse_answer(ok), Ok("abc".to_owned()));
        let denied = b"HTTP/1.1 401 Unauthorized\r\n\r\n{\"error\":{}}";
        assert!(parse_answer(denied).is_err_and(|e| e.starts_with("HTTP 401")));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn server_config_is_valid() {
        let settings = Settings::from_toml(&server_toml("http://127.0.0.1:9", "/tmp/x.db"));
        assert!(settings.is_ok(), "{:?}", settings.err());
    }
}
