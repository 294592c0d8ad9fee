//! `fleet`: the several-instances figure. N wxtoken instances share one Redis and one
//! classic-mode app whose tokens live 20 s; 256 clients hammer them for 120 s. What it
//! tests: the fleet makes one upstream token call per refresh period however many
//! instances there are, and no client ever holds a token another instance has killed.
//!
//! Everything runs in this process on one multi-thread tokio runtime, except Redis: a
//! `redis-server` of its own per fleet, on a free loopback port, with no persistence,
//! killed when the fleet ends. Per fleet:
//! 1. A fresh WeChat emulator (`expires_in` 20 s, a replaced classic token dies 2 s
//!    later), so each fleet's upstream count starts at zero.
//! 2. N wxtoken servers built together (cold), in classic mode, where a fetch by one
//!    instance kills the token the others hold: the mode in which only the lease keeps
//!    the fleet consistent. `[keeper] refresh_ahead_secs = 5`, so a token is refreshed
//!    4-5 s before it expires (the jitter picks 80-100% of the window), i.e. every
//!    15-16 s. The ideal count over `T` seconds is `1 + floor(T / 15)`.
//! 3. `--clients` tasks loop until the deadline: GET a token from a random instance
//!    (timed: this is the latency reported), POST an ordinary API
//!    (`/cgi-bin/message/custom/send`) to the emulator with it, and on 40001/42001
//!    report the token to the same instance (`.../access_token/invalidate`) and retry the
//!    API once with the token it returns. A client call fails if the retry is refused
//!    too, if any request errors, or if any answer is not HTTP 200.
//!
//! The same run measures a baseline fleet (`--baseline`, default N = 4 and 8): the same
//! instances, but each on its own SQLite file, so each caches alone. That is what a
//! static token field per process amounts to; its counts show what the lease prevents.
//!
//! Output: one table row per fleet: client calls, failures, invalidations, stale-token
//! rejections seen by WeChat, upstream token calls against the ideal, token GET p50/p99,
//! and the WARN/ERROR events wxtoken logged while the clients ran. The Redis fleets are
//! judged: PASS if upstream calls <= ideal + 1 and no client call failed. Exit status 0
//! if every Redis fleet passed, 1 if one failed, 2 if the benchmark could not run.
//! `RUST_LOG=wxtoken=info` shows the servers' own account (leases, adoptions, fetches).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use futures::future::join_all;
use rand::Rng;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, filter::LevelFilter};
use wechat_emulator::{AppCredentials, Config as EmulatorConfig, RunningEmulator};
use wxtoken::{Server, Settings};

#[path = "fleet/faults.rs"]
mod faults;
use faults::{Cluster, Fault};

const APP: &str = "shop";
const APPID: &str = "wxf1ee7b3e4c5d6a7b";
const SECRET: &str = "fleet-bench-secret";
/// A plaintext key with read and invalidate scopes; the servers live only as long as
/// the benchmark.
const KEY: &str = "wxt_bench_fleet_read_invalidate_key";
/// Upper bound for any one HTTP request of a client, so a stuck server shows as a
/// failure, not a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A token GET that takes this long goes to another instance instead, as a load
/// balancer would do with an instance that stopped answering (a paused one).
const TOKEN_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound for starting things (redis-server, the servers, their first token) and
/// for stopping them.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the emulator's counters are sampled to timestamp the upstream calls.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// At most this many distinct failure reasons are kept per fleet (they are printed).
const MAX_REASONS: usize = 20;

/// Runs wxtoken fleets on a shared Redis (and baselines that cache alone) under load
/// and counts WeChat's token calls.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Fleet sizes to run on the shared Redis store, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    instances: Vec<usize>,
    /// Fleet sizes for the baseline, where each instance caches alone (its own SQLite).
    #[arg(long, value_delimiter = ',', default_value = "4,8")]
    baseline: Vec<usize>,
    /// Skip the baseline fleets.
    #[arg(long)]
    no_baseline: bool,
    /// Seconds of client load per fleet.
    #[arg(long, default_value_t = 120)]
    duration: u64,
    /// Concurrent client loops.
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// Lifetime of the emulator's tokens, in seconds.
    #[arg(long, default_value_t = 20)]
    expires_in: u64,
    /// How long a replaced classic token stays valid at the emulator, in seconds.
    #[arg(long, default_value_t = 2)]
    overlap: u64,
    /// wxtoken's `[keeper] refresh_ahead_secs`.
    #[arg(long, default_value_t = 5)]
    refresh_ahead: u64,
    /// The `redis-server` program to run.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// A fault the Redis fleets meet mid-run (the baseline meets none).
    #[arg(long, value_enum, default_value_t = Fault::None)]
    fault: Fault,
    /// Seconds into the load when the fault strikes (default: a third of --duration).
    #[arg(long)]
    fault_at: Option<u64>,
    /// --fault sigstop: how long instance 0 stays stopped, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pause_ms: u64,
    /// Milliseconds the emulator takes to answer a token call (a refresh in flight
    /// that long is what --fault sigstop interrupts).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// `[store] lease_ttl_ms` of the Redis fleets (wxtoken's default: 5000).
    #[arg(long)]
    lease_ttl_ms: Option<u64>,
    /// --fault sigstop: the `wxtoken` binary, run as one process per instance.
    #[arg(long)]
    wxtoken_bin: Option<std::path::PathBuf>,
}

impl Cli {
    /// The shortest time between two proactive refreshes: a token is refreshed at the
    /// earliest `refresh_ahead` before it expires.
    fn period(&self) -> Duration {
        Duration::from_secs(self.expires_in.saturating_sub(self.refresh_ahead))
    }
}

// ---------------------------------------------------------------------------------------
// Counting wxtoken's warnings and errors (they are also printed when RUST_LOG says so).
// ---------------------------------------------------------------------------------------

/// Counts WARN and ERROR events from wxtoken's own modules.
#[derive(Debug, Clone, Default)]
struct LogCounts {
    warn: Arc<AtomicU64>,
    error: Arc<AtomicU64>,
}

impl LogCounts {
    fn snapshot(&self) -> (u64, u64) {
        (
            self.warn.load(Ordering::Relaxed),
            self.error.load(Ordering::Relaxed),
        )
    }
}

impl<S: Subscriber> Layer<S> for LogCounts {
    fn on_event(&self, event: &Event<'_>, _ctx: LayerContext<'_, S>) {
        let meta = event.metadata();
        if !meta.target().starts_with("wxtoken") {
            return;
        }
        match *meta.level() {
            Level::ERROR => self.error.fetch_add(1, Ordering::Relaxed),
            Level::WARN => self.warn.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

// ---------------------------------------------------------------------------------------
// Redis: a redis-server of our own.
// ---------------------------------------------------------------------------------------

/// A `redis-server` on a free loopback port with no persistence; killed on drop.
struct RedisServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

async fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("Failed to find a free port")?;
    Ok(listener
        .local_addr()
        .context("Failed to read a port")?
        .port())
}

impl RedisServer {
    /// Starts one and waits until it answers PING.
    async fn start(program: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("Failed to create a dir for redis-server")?;
        let port = free_port().await?;
        let child = Command::new(program)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("Failed to start `{program}` (is Redis installed?)"))?;
        let url = format!("redis://127.0.0.1:{port}");
        let server = Self {
            child,
            url,
            _dir: dir,
        };
        let client = redis::Client::open(server.url.as_str()).context("Bad Redis URL")?;
        let deadline = Instant::now() + PHASE_TIMEOUT;
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                bail!("redis-server on port {port} did not answer PING in time");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills it and reaps the process.
    async fn stop(mut self) {
        if let Err(e) = self.child.kill().await {
            tracing::warn!(%e, "could not kill redis-server");
        }
    }
}

// ---------------------------------------------------------------------------------------
// A fleet.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One shared Redis: the fleet coordinates.
    Redis,
    /// One SQLite file per instance: each caches alone.
    Alone,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Alone => "alone",
        }
    }
}

/// The config of one instance; `store` is the whole `[store]` table.
fn server_toml(api_base: &str, store: &str, refresh_ahead: u64) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{store}
[upstream]
api_base = "{api_base}"
[keeper]
refresh_ahead_secs = {refresh_ahead}
[[apps]]
id = "{APP}"
kind = "official"
appid = "{APPID}"
secret = "{SECRET}"
mode = "classic"
[[clients]]
name = "fleet-bench"
key = "{KEY}"
apps = ["{APP}"]
scopes = ["read", "invalidate"]
"#
    )
}

fn redis_store(url: &str, extra: &str) -> String {
    format!("[store]\nkind = \"redis\"\nurl = \"{url}\"\n{extra}")
}

fn sqlite_store(path: &std::path::Path) -> String {
    format!(
        "[store]\nkind = \"sqlite\"\npath = {:?}\n",
        path.display().to_string()
    )
}

/// One running server and how to stop it: in this process, or a `wxtoken serve` child.
struct Instance {
    base: String,
    /// A process's owner id in leases.
    owner: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<std::io::Result<()>>>,
    process: Option<Child>,
}

/// Builds one server per config, together (so they start cold at the same moment).
async fn start_instances(configs: &[String]) -> anyhow::Result<Vec<Instance>> {
    let settings = configs
        .iter()
        .map(|toml| Settings::from_toml(toml))
        .collect::<Result<Vec<_>, _>>()
        .context("The benchmark's server config is invalid")?;
    let built = tokio::time::timeout(
        PHASE_TIMEOUT,
        join_all(settings.iter().map(|s| async move {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .context("Failed to bind a server port")?;
            Server::build(s, listener)
                .await
                .context("Failed to start wxtoken")
        })),
    )
    .await
    .context("The servers did not start in time")?;
    let mut instances = Vec::with_capacity(built.len());
    for server in built {
        let server = server?;
        let base = format!(
            "http://{}",
            server
                .local_addr()
                .context("Failed to read a server's address")?
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        instances.push(Instance {
            base,
            owner: None,
            stop: Some(stop),
            serving: Some(serving),
            process: None,
        });
    }
    Ok(instances)
}

async fn stop_instances(instances: Vec<Instance>) {
    let mut tasks = Vec::with_capacity(instances.len());
    for mut instance in instances {
        if let Some(mut child) = instance.process.take() {
            let _ = child.kill().await;
        }
        // A send error means the server already stopped; its task says why.
        if let Some(stop) = instance.stop.take() {
            let _ = stop.send(());
        }
        tasks.extend(instance.serving.take());
    }
    for task in tasks {
        match tokio::time::timeout(PHASE_TIMEOUT, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(%e, "a wxtoken server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(%e, "a wxtoken server task failed"),
            Err(_) => tracing::warn!("a wxtoken server did not stop in time"),
        }
    }
}

/// Samples the emulator's token-call counter until stopped: when each call was seen,
/// in seconds since `origin`.
fn watch_upstream(
    emulator: wechat_emulator::Emulator,
    origin: Instant,
    mut stop: oneshot::Receiver<()>,
) -> JoinHandle<Vec<f64>> {
    tokio::spawn(async move {
        let mut seen = 0;
        let mut times = Vec::new();
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            let calls = emulator.stats().app(APPID).upstream_token_calls();
            let at = origin.elapsed().as_secs_f64();
            times.extend((seen..calls).map(|_| at));
            seen = seen.max(calls);
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => return times,
            }
        }
    })
}

// ---------------------------------------------------------------------------------------
// The clients.
// ---------------------------------------------------------------------------------------

/// What the clients share.
struct Load {
    http: reqwest::Client,
    instances: Vec<String>,
    api_url: String,
    deadline: Instant,
}

/// What one client loop (or, merged, all of them) saw.
#[derive(Debug, Default)]
struct Tally {
    calls: u64,
    failed: u64,
    invalidations: u64,
    /// First API attempts refused 40001 (token killed) and 42001 (expired).
    refused_40001: u64,
    refused_42001: u64,
    /// Calls whose retry, after an invalidation, was accepted.
    recovered: u64,
    /// Token GETs that an instance did not answer in time, sent to another instance.
    failovers: u64,
    /// Every token GET, in microseconds.
    token_us: Vec<u32>,
    failures: BTreeMap<String, u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.calls += other.calls;
        self.failed += other.failed;
        self.invalidations += other.invalidations;
        self.refused_40001 += other.refused_40001;
        self.refused_42001 += other.refused_42001;
        self.recovered += other.recovered;
        self.failovers += other.failovers;
        self.token_us.extend(other.token_us);
        for (why, n) in other.failures {
            self.note_failure(why, n);
        }
    }

    fn note_failure(&mut self, why: String, n: u64) {
        if self.failures.len() < MAX_REASONS || self.failures.contains_key(&why) {
            *self.failures.entry(why).or_default() += n;
        } else {
            *self
                .failures
                .entry("(other reasons)".to_owned())
                .or_default() += n;
        }
    }
}

/// A short, address-free description of a transport error.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_connect() {
        "connect error".to_owned()
    } else if e.is_decode() {
        "body is not JSON".to_owned()
    } else {
        "transport error".to_owned()
    }
}

/// Reads a wxtoken answer: the `access_token` of a 200, or why there is none.
async fn token_of(response: reqwest::Response) -> Result<String, String> {
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| describe(&e))?;
    if !status.is_success() {
        let code = body["error"]["code"].as_str().unwrap_or("?");
        return Err(format!("HTTP {} {code}", status.as_u16()));
    }
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "no access_token in the answer".to_owned())
}

async fn get_token_within(http: &reqwest::Client, base: &str) -> Result<String, String> {
    tokio::time::timeout(TOKEN_TIMEOUT, get_token(http, base))
        .await
        .unwrap_or_else(|_| Err("timeout".to_owned()))
}

async fn get_token(http: &reqwest::Client, base: &str) -> Result<String, String> {
    let response = http
        .get(format!("{base}/v1/apps/{APP}/access_token"))
        .bearer_auth(KEY)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    token_of(response).await
}

async fn invalidate(http: &reqwest::Client, base: &str, dead: &str) -> Result<String, String> {
    let response = http
        .post(format!("{base}/v1/apps/{APP}/access_token/invalidate"))
        .bearer_auth(KEY)
        .json(&json!({ "access_token": dead }))
        .send()
        .await
        .map_err(|e| describe(&e))?;
    token_of(response).await
}

/// One ordinary WeChat API call with `token`: its errcode (0 when accepted).
async fn call_api(load: &Load, token: &str) -> Result<i64, String> {
    let response = load
        .http
        .post(&load.api_url)
        .query(&[("access_token", token)])
        .json(&json!({
            "touser": "oBENCHxxxxxxxxxxxxxxxxxxxxxx",
            "msgtype": "text",
            "text": { "content": "hello from the fleet benchmark" },
        }))
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    let body: Value = response.json().await.map_err(|e| describe(&e))?;
    body["errcode"]
        .as_i64()
        .ok_or_else(|| "no errcode in the answer".to_owned())
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// One client call: token, API, and on a stale token one invalidation and one retry.
async fn client_call(load: &Load, tally: &mut Tally) -> Result<(), String> {
    let mut i = rand::rng().random_range(0..load.instances.len());
    let started = Instant::now();
    let mut token = get_token_within(&load.http, &load.instances[i]).await;
    if token.is_err() && load.instances.len() > 1 {
        // That instance did not answer: another one will, as behind a load balancer.
        tally.failovers += 1;
        i = (i + 1) % load.instances.len();
        token = get_token_within(&load.http, &load.instances[i]).await;
    }
    tally.token_us.push(micros(started.elapsed()));
    let base = &load.instances[i];
    let token = token.map_err(|e| format!("token GET: {e}"))?;
    let code = call_api(load, &token)
        .await
        .map_err(|e| format!("API: {e}"))?;
    match code {
        0 => return Ok(()),
        40001 => tally.refused_40001 += 1,
        42001 => tally.refused_42001 += 1,
        other => return Err(format!("API: errcode {other}")),
    }
    tally.invalidations += 1;
    let fresh = invalidate(&load.http, base, &token)
        .await
        .map_err(|e| format!("invalidate: {e}"))?;
    match call_api(load, &fresh)
        .await
        .map_err(|e| format!("retry API: {e}"))?
    {
        0 => {
            tally.recovered += 1;
            Ok(())
        }
        retry => {
            let same = if fresh == token {
                "the same token"
            } else {
                "a new token"
            };
            Err(format!(
                "retry API: errcode {retry} after {code} (invalidate returned {same})"
            ))
        }
    }
}

async fn client_loop(load: Arc<Load>) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < load.deadline {
        tally.calls += 1;
        if let Err(why) = client_call(&load, &mut tally).await {
            tally.failed += 1;
            tally.note_failure(why, 1);
        }
    }
    tally
}

// ---------------------------------------------------------------------------------------
// One fleet, start to end.
// ---------------------------------------------------------------------------------------

/// The figures of one fleet.
#[derive(Debug)]
struct Outcome {
    kind: Kind,
    instances: usize,
    /// From the servers' start to the last client call: the time tokens were kept.
    kept: Duration,
    /// Of which under client load.
    loaded: Duration,
    tally: Tally,
    stale_rejections: u64,
    api_calls: u64,
    upstream: u64,
    ideal: u64,
    /// When the emulator saw each token call, in seconds since the servers' start.
    upstream_at: Vec<f64>,
    warnings: u64,
    errors: u64,
    /// What the fault did, if the fleet met one.
    fault_note: Option<String>,
}

impl Outcome {
    /// Only the Redis fleets are judged; the baseline is there to be compared with.
    fn verdict(&self) -> &'static str {
        match self.kind {
            Kind::Alone => "-",
            Kind::Redis if self.passed() => "PASS",
            Kind::Redis => "FAIL",
        }
    }

    fn passed(&self) -> bool {
        self.upstream <= self.ideal.saturating_add(1) && self.tally.failed == 0
    }
}

async fn run_fleet(cli: &Cli, kind: Kind, n: usize, logs: &LogCounts) -> anyhow::Result<Outcome> {
    if n == 0 {
        bail!("a fleet needs at least one instance");
    }
    let fault = if kind == Kind::Redis {
        cli.fault
    } else {
        Fault::None
    };
    let (redis, cluster) = match (kind, fault) {
        (Kind::Redis, Fault::ClusterFailover) => {
            (None, Some(Cluster::start(&cli.redis_server).await?))
        }
        (Kind::Redis, _) => (Some(RedisServer::start(&cli.redis_server).await?), None),
        (Kind::Alone, _) => (None, None),
    };
    let mut store_extra = String::new();
    if let Some(ms) = cli.lease_ttl_ms {
        store_extra.push_str(&format!("lease_ttl_ms = {ms}\n"));
    }
    if cluster.is_some() {
        store_extra.push_str("cluster = true\n");
    }
    let store_url = redis
        .as_ref()
        .map(|r| r.url.clone())
        .or_else(|| cluster.as_ref().map(Cluster::url));
    let dir = tempfile::tempdir().context("Failed to create a temp dir for the stores")?;
    let emulator: RunningEmulator = wechat_emulator::spawn(EmulatorConfig {
        apps: vec![AppCredentials::new(APPID, SECRET)],
        expires_in: cli.expires_in,
        overlap: Duration::from_secs(cli.overlap),
        latency: Duration::from_millis(cli.latency_ms),
        ..EmulatorConfig::default()
    })
    .await
    .context("Failed to start the emulator")?;
    let api_base = emulator.base_url();
    let configs: Vec<String> = (0..n)
        .map(|i| {
            let store = match &store_url {
                Some(url) => redis_store(url, &store_extra),
                None => sqlite_store(&dir.path().join(format!("wxtoken-{i}.db"))),
            };
            server_toml(&api_base, &store, cli.refresh_ahead)
        })
        .collect();

    let origin = Instant::now();
    let (stop_watch, watch_stopped) = oneshot::channel();
    let watcher = watch_upstream(emulator.emulator.clone(), origin, watch_stopped);
    let instances = match fault {
        Fault::Sigstop => start_processes(cli, &configs, dir.path()).await?,
        _ => start_instances(&configs).await?,
    };
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(cli.clients)
        .build()
        .context("Failed to build the HTTP client")?;

    // Every instance serves a token before the clients start.
    for instance in &instances {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        loop {
            match get_token(&http, &instance.base).await {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    bail!("{} served no token in time: {e}", instance.base)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    let (warn_before, error_before) = logs.snapshot();
    let load_started = Instant::now();
    let load = Arc::new(Load {
        http,
        instances: instances.iter().map(|i| i.base.clone()).collect(),
        api_url: format!("{api_base}/cgi-bin/message/custom/send"),
        deadline: load_started + Duration::from_secs(cli.duration),
    });
    let clients: Vec<_> = (0..cli.clients)
        .map(|_| tokio::spawn(client_loop(load.clone())))
        .collect();
    let fault_task = strike(cli, fault, &instances, store_url.clone(), cluster);
    let mut tally = Tally::default();
    let limit = load.deadline + REQUEST_TIMEOUT * 3 + PHASE_TIMEOUT;
    for client in clients {
        let one = tokio::time::timeout_at(limit, client)
            .await
            .context("A client loop did not end in time")?
            .context("A client loop panicked")?;
        tally.merge(one);
    }
    let loaded = load_started.elapsed();
    let kept = origin.elapsed();
    let (fault_note, cluster) = match fault_task {
        Some(task) => {
            let (note, cluster) = task
                .await
                .context("The fault task panicked")?
                .context("The fault could not be made")?;
            (Some(note), cluster)
        }
        None => (None, None),
    };
    let stats = emulator.emulator.stats().app(APPID);
    let (warn_after, error_after) = logs.snapshot();
    // The receiver lives in the watcher until it returns.
    let _ = stop_watch.send(());
    let mut upstream_at = tokio::time::timeout(PHASE_TIMEOUT, watcher)
        .await
        .context("The upstream watcher did not stop")?
        .context("The upstream watcher panicked")?;
    upstream_at.truncate(usize::try_from(stats.upstream_token_calls()).unwrap_or(usize::MAX));

    stop_instances(instances).await;
    if let Some(redis) = redis {
        redis.stop().await;
    }
    drop(cluster);
    drop(emulator);
    drop(dir);

    let period = cli.period().as_secs_f64();
    let ideal = if period > 0.0 {
        1 + (kept.as_secs_f64() / period).floor() as u64
    } else {
        u64::MAX
    };
    Ok(Outcome {
        kind,
        instances: n,
        kept,
        loaded,
        tally,
        stale_rejections: stats.stale_rejections,
        api_calls: stats.api_calls,
        upstream: stats.upstream_token_calls(),
        ideal,
        upstream_at,
        warnings: warn_after - warn_before,
        errors: error_after - error_before,
        fault_note,
    })
}

/// Starts `wxtoken serve` processes (a signal must stop a whole instance).
async fn start_processes(
    cli: &Cli,
    configs: &[String],
    dir: &std::path::Path,
) -> anyhow::Result<Vec<Instance>> {
    let bin = cli
        .wxtoken_bin
        .as_deref()
        .context("--fault sigstop needs --wxtoken-bin")?;
    let mut instances = Vec::with_capacity(configs.len());
    for (i, toml) in configs.iter().enumerate() {
        let path = dir.join(format!("wxtoken-{i}.toml"));
        std::fs::write(&path, toml).context("Failed to write an instance's config")?;
        let process = faults::spawn_process(bin, &path).await?;
        instances.push(Instance {
            base: process.base,
            owner: Some(process.owner),
            stop: None,
            serving: None,
            process: Some(process.child),
        });
    }
    Ok(instances)
}

/// A fault in progress: it answers with what it did, and hands back a cluster it used.
type FaultTask = JoinHandle<anyhow::Result<(String, Option<Cluster>)>>;

/// Makes the fleet's fault happen `--fault-at` seconds into the load; the task answers
/// with what it did.
fn strike(
    cli: &Cli,
    fault: Fault,
    instances: &[Instance],
    store_url: Option<String>,
    cluster: Option<Cluster>,
) -> Option<FaultTask> {
    let at = Duration::from_secs(cli.fault_at.unwrap_or(cli.duration / 3));
    let pause = Duration::from_millis(cli.pause_ms);
    match fault {
        Fault::None => None,
        Fault::Sigstop => {
            let owners: Vec<(Option<String>, Option<u32>)> = instances
                .iter()
                .map(|i| (i.owner.clone(), i.process.as_ref().and_then(Child::id)))
                .collect();
            Some(tokio::spawn(async move {
                let url = store_url.context("no Redis to watch")?;
                tokio::time::sleep(at).await;
                let watching = Instant::now();
                // Stop whichever instance takes the refresh lease next, mid-refresh.
                let holder = faults::lease_holder(&url).await?;
                let waited = watching.elapsed();
                let (index, pid) = owners
                    .iter()
                    .enumerate()
                    .find_map(|(i, (owner, pid))| {
                        (owner.as_deref() == Some(holder.as_str())).then_some((i, *pid))
                    })
                    .context("the lease holder is not one of the instances")?;
                let pid = pid.context("no process id")?;
                faults::signal(pid, "-STOP")?;
                tokio::time::sleep(pause).await;
                faults::signal(pid, "-CONT")?;
                let note = format!(
                    "instance {index} stopped (SIGSTOP) while holding the refresh lease, for {} ms \
                     (past its lease), then resumed; at {:.1} s",
                    pause.as_millis(),
                    (at + waited).as_secs_f64()
                );
                Ok((note, None))
            }))
        }
        Fault::ClusterFailover => {
            let mut cluster = cluster?;
            Some(tokio::spawn(async move {
                tokio::time::sleep(at).await;
                let killed = cluster.kill_master_of("{shop}").await?;
                let started = Instant::now();
                cluster.wait_ok().await?;
                let settled = started.elapsed();
                let note = format!(
                    "master :{killed} of {{shop}} killed at {:.0} s; cluster ok again {:.1} s later",
                    at.as_secs_f64(),
                    settled.as_secs_f64()
                );
                // Handed back: the cluster lives until the fleet is done with it.
                Ok((note, Some(cluster)))
            }))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Report.
// ---------------------------------------------------------------------------------------

/// The nearest-rank percentile `p` (0..=100) of sorted `values`, in milliseconds.
fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

fn print_detail(o: &mut Outcome) {
    let t = &mut o.tally;
    t.token_us.sort_unstable();
    println!(
        "-- {} x{}: {:.1} s kept, {:.1} s under load; {} client calls ({:.0}/s), {} token GETs \
         ({:.0}/s per instance)",
        o.kind.name(),
        o.instances,
        o.kept.as_secs_f64(),
        o.loaded.as_secs_f64(),
        t.calls,
        t.calls as f64 / o.loaded.as_secs_f64(),
        t.token_us.len(),
        t.token_us.len() as f64 / o.loaded.as_secs_f64() / o.instances as f64,
    );
    println!(
        "   first API attempt refused: {} x 40001, {} x 42001; {} invalidations, {} recovered \
         by the retry; emulator: {} accepted API calls, {} stale rejections",
        t.refused_40001,
        t.refused_42001,
        t.invalidations,
        t.recovered,
        o.api_calls,
        o.stale_rejections
    );
    println!(
        "   upstream token calls {} (ideal {}); token GET p50 {:.2} ms, p99 {:.2} ms, max {:.2} \
         ms; wxtoken logged {} WARN, {} ERROR under load",
        o.upstream,
        o.ideal,
        percentile_ms(&t.token_us, 50.0),
        percentile_ms(&t.token_us, 99.0),
        percentile_ms(&t.token_us, 100.0),
        o.warnings,
        o.errors
    );
    const SHOWN: usize = 40;
    let times: Vec<String> = o
        .upstream_at
        .iter()
        .take(SHOWN)
        .map(|s| format!("{s:.1}"))
        .collect();
    let more = o.upstream_at.len().saturating_sub(SHOWN);
    println!(
        "   upstream calls at (s): {}{}",
        times.join(" "),
        if more > 0 {
            format!(" ... (+{more})")
        } else {
            String::new()
        }
    );
    if let Some(note) = &o.fault_note {
        println!(
            "   fault: {note}; {} token GETs went to another instance after {} s without an answer",
            t.failovers,
            TOKEN_TIMEOUT.as_secs()
        );
    }
    for (why, n) in &t.failures {
        println!("   failed x{n}: {why}");
    }
}

fn print_table(cli: &Cli, outcomes: &[Outcome]) {
    println!();
    println!(
        "fleet benchmark: {} clients, {} s of load per fleet, classic mode, expires_in {} s, \
         overlap {} s, refresh_ahead {} s (ideal = 1 + floor(kept / {} s))",
        cli.clients,
        cli.duration,
        cli.expires_in,
        cli.overlap,
        cli.refresh_ahead,
        cli.period().as_secs()
    );
    println!(
        "| store | instances | kept (s) | client calls | failed | invalidations | stale rejections \
         | upstream token calls | ideal | result | token GET p50 (ms) | p99 (ms) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |");
    for o in outcomes {
        let store = match (o.kind, cli.fault) {
            (Kind::Redis, Fault::Sigstop) => "redis, an instance SIGSTOPped",
            (Kind::Redis, Fault::ClusterFailover) => "redis cluster, master killed",
            (kind, _) => kind.name(),
        };
        println!(
            "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |",
            store,
            o.instances,
            o.kept.as_secs_f64(),
            o.tally.calls,
            o.tally.failed,
            o.tally.invalidations,
            o.stale_rejections,
            o.upstream,
            o.ideal,
            o.verdict(),
            percentile_ms(&o.tally.token_us, 50.0),
            percentile_ms(&o.tally.token_us, 99.0),
        );
    }
    println!(
        "(redis: one shared Redis; alone: each instance on its own SQLite, i.e. a token cached \
         per process. Only redis fleets are judged: upstream <= ideal + 1 and 0 failed.)"
    );
}

async fn run(cli: Cli, logs: LogCounts) -> anyhow::Result<bool> {
    if cli.clients == 0 || cli.duration == 0 {
        bail!("--clients and --duration must be at least 1");
    }
    if cli.period().is_zero() {
        bail!("--refresh-ahead must be shorter than --expires-in");
    }
    let mut plan: Vec<(Kind, usize)> = cli.instances.iter().map(|n| (Kind::Redis, *n)).collect();
    if !cli.no_baseline {
        plan.extend(cli.baseline.iter().map(|n| (Kind::Alone, *n)));
    }
    let mut outcomes = Vec::with_capacity(plan.len());
    for (kind, n) in plan {
        println!(
            "== {} fleet of {n}: {} clients for {} s",
            kind.name(),
            cli.clients,
            cli.duration
        );
        let mut outcome = run_fleet(&cli, kind, n, &logs)
            .await
            .with_context(|| format!("The {} fleet of {n} failed to run", kind.name()))?;
        print_detail(&mut outcome);
        outcomes.push(outcome);
    }
    print_table(&cli, &outcomes);
    Ok(outcomes.iter().all(|o| o.kind == Kind::Alone || o.passed()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let logs = LogCounts::default();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(
                    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
                ),
        )
        .with(logs.clone().with_filter(LevelFilter::WARN))
        .init();
    let cli = Cli::parse();
    // Ctrl-C ends the run through the normal drop path, so redis-server is killed.
    let result = tokio::select! {
        result = run(cli, logs) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank_in_ms() {
        let v: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&v, 50.0), 50.0);
        assert_eq!(percentile_ms(&v, 99.0), 99.0);
        assert_eq!(percentile_ms(&[], 99.0), 0.0);
    }

    #[test]
    fn server_configs_are_valid() {
        for store in [
            redis_store("redis://127.0.0.1:6379", "cluster = true\n"),
            sqlite_store(std::path::Path::new("/tmp/x.db")),
        ] {
            let settings = Settings::from_toml(&server_toml("http://127.0.0.1:9", &store, 5));
            assert!(settings.is_ok(), "{:?}", settings.err());
        }
    }

    #[test]
    fn the_ideal_period_is_the_earliest_refresh() {
        let cli = Cli::parse_from(["fleet"]);
        assert_eq!(cli.period(), Duration::from_secs(15));
        assert_eq!(cli.instances, vec![1, 4, 8]);
        assert_eq!(cli.baseline, vec![4, 8]);
    }

    #[test]
    fn failure_reasons_are_bounded() {
        let mut t = Tally::default();
        for i in 0..(MAX_REASONS + 5) {
            t.note_failure(format!("reason {i}"), 1);
        }
        assert_eq!(t.failures.len(), MAX_REASONS + 1);
        assert_eq!(t.failures["(other reasons)"], 5);
    }
}
