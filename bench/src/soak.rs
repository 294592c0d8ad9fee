//! `soak`: the long mixed-load run of bench/soak.sh. Two `wxtoken serve` processes
//! share one Redis (append-only, fsync always) and one WeChat emulator, all started by
//! the script from the files `soak setup` writes; `soak run` then drives them for
//! `--duration`:
//!
//! - request loops (`--rate` a second in all) on a random instance: token reads (apps,
//!   a WeCom app, a third-party platform and three of its authorizers), ticket reads,
//!   the WeChat-shaped facade (`/cgi-bin/token`, `/cgi-bin/stable_token`,
//!   `/cgi-bin/gettoken` with a client key as the secret), gateway calls
//!   (`/cgi-bin/get_api_domain_ip` with the current token, or the previous one), the
//!   proxy route, reports of stale tokens, app status;
//! - every 40 s a report of the current token (a real refresh), every 30 s a
//!   component_verify_ticket (pushed by the emulator to instance 1, or encrypted and
//!   signed here and posted to instance 2), every 8 s an admin change (a runtime app put
//!   or deleted, a client added or revoked) checked on the other instance 1.5 s later;
//! - faults: the emulator fails 30% of token and ticket calls (busy, HTTP 500,
//!   timeouts, and broken answers: a reset connection, HTML, JSON cut off, 1 MiB of
//!   JSON) from 20% to 30% and from 60% to 70% of the run; at 45% Redis is killed
//!   (SIGKILL), left down 5 s, and started again from its append-only file;
//! - every 30 s the RSS of each instance (`VmRSS` in /proc/PID/status).
//!
//! At the end it prints requests and failures by kind (failures by what they were and
//! the phase they fell in), upstream calls against the ideal, the RSS series with a
//! trend check, and the durable-data checks. Exit 0 if every check passed, 1 if one
//! failed, 2 if the run could not be made.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures::future::join_all;
use serde_json::json;
use tokio::time::Instant;

#[path = "soak/checks.rs"]
mod checks;
#[path = "soak/load.rs"]
mod load;
#[path = "soak/record.rs"]
mod record;
#[path = "soak/report.rs"]
mod report;
#[path = "soak/setup.rs"]
mod setup;

use load::{AUTH_LABELS, Ctx, token_path};
use record::{Phase, Recorder};

pub const APPID_SHOP: &str = "wx50a4000000000001";
pub const SECRET_SHOP: &str = "soak-shop-secret";
pub const APPID_NEWS: &str = "wx50a4000000000002";
pub const SECRET_NEWS: &str = "soak-news-secret";
pub const CORPID: &str = "ww50a4000000000001";
pub const HR_AGENTID: u64 = 1_000_002;
pub const HR_SECRET: &str = "soak-hr-secret";
pub const COMPONENT_APPID: &str = "wx50a40000000c0001";
pub const COMPONENT_SECRET: &str = "soak-component-secret";
pub const PUSH_TOKEN: &str = "soakpushtoken";
pub const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
/// Runtime apps the admin task puts and deletes: (id, appid, secret).
pub const RUNTIME: [(&str, &str, &str); 3] = [
    ("rt-1", "wx50a4000000000011", "soak-runtime-secret-1"),
    ("rt-2", "wx50a4000000000012", "soak-runtime-secret-2"),
    ("rt-3", "wx50a4000000000013", "soak-runtime-secret-3"),
];
/// read + invalidate on every app.
pub const LOADER_KEY: &str = "wxt_soak_loader_read_invalidate";
/// read only: the secret the facade calls carry.
pub const FACADE_KEY: &str = "wxt_soak_facade_read_only_key";
pub const ADMIN_KEY: &str = "wxt_soak_admin_key_read_admin";
/// Lifetime of every token and ticket the emulator issues, in seconds: short, so that a
/// 10-minute run sees about ten refreshes of each.
pub const EXPIRES_IN: u64 = 60;
/// wxtoken's refresh_ahead_secs and stable_window_secs, and the emulator's overlap.
pub const WINDOW: u64 = 10;

/// The fail rate of the failure stretches.
const FAIL_RATE: f64 = 0.3;
/// How long Redis stays down.
const REDIS_DOWN: Duration = Duration::from_secs(5);
/// A fault's phase lasts this long after the fault ends (backoffs, reconnects).
const AFTERMATH: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(about = "wxtoken's soak test driver (see bench/soak.sh)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the configs, emulator arguments and redis.conf into --dir.
    Setup {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        emulator_port: u16,
        #[arg(long)]
        redis_port: u16,
        /// The instances' ports, comma-separated.
        #[arg(long, value_delimiter = ',')]
        ports: Vec<u16>,
    },
    /// Drive the running processes.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The directory `setup` wrote (redis.conf and redis.pid are read from it).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    emulator_port: u16,
    #[arg(long)]
    redis_port: u16,
    /// The instances' ports, comma-separated.
    #[arg(long, value_delimiter = ',')]
    ports: Vec<u16>,
    /// The instances' process ids, in the same order.
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
    /// How long to run: 600, 600s, 10m, 1h.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// Requests a second from the request loops, all together.
    #[arg(long, default_value_t = 400.0)]
    rate: f64,
    /// Request loops.
    #[arg(long, default_value_t = 16)]
    loops: usize,
    /// The redis-server program to restart Redis with.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 30)]
    rss_every: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("a duration like 600, 90s, 10m or 1h, got {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (s, m, h)")),
    };
    Ok(Duration::from_secs(secs))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Setup {
            dir,
            emulator_port,
            redis_port,
            ports,
        } => setup::write(
            &dir,
            &setup::Ports {
                emulator: emulator_port,
                redis: redis_port,
                instances: ports,
            },
        )
        .map(|()| true),
        Command::Run(args) => run(args).await,
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    if args.ports.len() != 2 || args.pids.len() != 2 {
        bail!("--ports and --pids take two instances each");
    }
    let ctx: &'static Ctx = Box::leak(Box::new(Ctx {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()
            .context("Failed to build the HTTP client")?,
        instances: args
            .ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect(),
        emulator: format!("http://127.0.0.1:{}", args.emulator_port),
        rec: Recorder::new(),
        admin: Mutex::default(),
        refreshed: Mutex::default(),
    }));
    let redis_url = format!("redis://127.0.0.1:{}", args.redis_port);
    let since_unix = unix_now().saturating_sub(1);

    println!("== warm-up: a verify ticket, three authorizers, every credential read once");
    warm_up(ctx).await?;
    let before = checks::emulator_stats(ctx).await?;
    let started = Instant::now();
    ctx.rec.start_clock(started);
    let until = started + args.duration;
    let secs = args.duration.as_secs();
    println!(
        "== load: {} s, {} loops, {} req/s target; failures {}-{} s and {}-{} s; Redis killed at {} s",
        secs,
        args.loops,
        args.rate,
        secs / 5,
        secs * 3 / 10,
        secs * 3 / 5,
        secs * 7 / 10,
        secs * 9 / 20
    );

    let rss: &'static Mutex<Vec<(u64, Vec<u64>)>> = Box::leak(Box::default());
    let per_loop = args.rate / args.loops as f64;
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = (0..args.loops)
        .map(|_| tokio::spawn(load::worker(ctx, per_loop, until)))
        .collect();
    tasks.push(tokio::spawn(load::report_current(
        ctx,
        Duration::from_secs(40),
        until,
    )));
    tasks.push(tokio::spawn(load::verify_tickets(
        ctx,
        Duration::from_secs(30),
        until,
    )));
    tasks.push(tokio::spawn(load::admin_changes(
        ctx,
        Duration::from_secs(8),
        until,
    )));
    let pids = args.pids.clone();
    let rss_every = Duration::from_secs(args.rss_every);
    tasks.push(tokio::spawn(async move {
        sample_rss(ctx, &pids, rss, rss_every, until).await;
    }));
    let faults = faults(ctx, &args, started);
    let (faults, _) = tokio::join!(faults, join_all(tasks));
    let redis_downtime = faults?;
    // Follow-ups still sleeping finish within 2 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let after = checks::emulator_stats(ctx).await?;

    let upstream = checks::upstream(ctx, &before, &after, elapsed);
    let runtime = checks::runtime_upstream(&before, &after);
    let durable = checks::durable(ctx, &redis_url, since_unix).await;
    let rss = rss.lock().expect("lock").clone();
    Ok(report::print(&report::Report {
        ctx,
        elapsed,
        redis_downtime,
        upstream: &upstream,
        runtime,
        durable: &durable,
        rss: &rss,
    }))
}

/// Polls `f` every 200 ms for up to `limit`.
async fn within<F: AsyncFnMut() -> bool>(limit: Duration, mut f: F) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

async fn ok_on_both(ctx: &Ctx, path: &str) -> bool {
    for base in &ctx.instances {
        let request = ctx
            .http
            .get(format!("{base}{path}"))
            .bearer_auth(LOADER_KEY);
        if !matches!(ctx.send(request).await, Ok((200, _))) {
            return false;
        }
    }
    true
}

async fn warm_up(ctx: &Ctx) -> anyhow::Result<()> {
    load::push_ticket(ctx)
        .await
        .map_err(|e| anyhow::anyhow!("the first verify ticket push failed: {e}"))?;
    if !within(Duration::from_secs(20), async || {
        ok_on_both(ctx, "/v1/apps/platform/access_token").await
    })
    .await
    {
        bail!("no component token on both instances 20 s after the verify ticket");
    }
    for label in AUTH_LABELS {
        let appid = label.trim_start_matches("auth:");
        let (status, body) = ctx
            .send(
                ctx.http
                    .post(format!("{}/_emulator/authorize", ctx.emulator))
                    .json(&json!({"component_appid": COMPONENT_APPID, "authorizer_appid": appid})),
            )
            .await
            .map_err(anyhow::Error::msg)?;
        let code = body["authorization_code"]
            .as_str()
            .with_context(|| format!("no authorization code for {appid}: {status} {body}"))?;
        let (status, body) = ctx
            .send(
                ctx.http
                    .post(format!("{}/v1/apps/platform/authorizers", ctx.instances[0]))
                    .bearer_auth(ADMIN_KEY)
                    .json(&json!({ "authorization_code": code })),
            )
            .await
            .map_err(anyhow::Error::msg)?;
        if status != 201 && status != 200 {
            bail!("authorizing {appid}: {status} {body}");
        }
    }
    let mut paths: Vec<String> = ["shop", "news", "hr"]
        .into_iter()
        .chain(AUTH_LABELS)
        .map(token_path)
        .collect();
    paths.extend(
        [
            "/v1/apps/shop/ticket/jsapi",
            "/v1/apps/news/ticket/wx_card",
            "/v1/apps/hr/ticket/agent_config",
        ]
        .map(str::to_owned),
    );
    for label in AUTH_LABELS {
        paths.push(token_path(label).replace("/access_token", "/ticket/jsapi"));
    }
    for path in paths {
        if !within(Duration::from_secs(20), async || {
            ok_on_both(ctx, &path).await
        })
        .await
        {
            bail!("{path} did not answer 200 on both instances within 20 s");
        }
    }
    Ok(())
}

/// The fault schedule; answers how long Redis was unreachable.
async fn faults(ctx: &Ctx, args: &RunArgs, started: Instant) -> anyhow::Result<Duration> {
    let d = args.duration;
    let at = |num: u32, den: u32| started + d * num / den;
    let mut downtime = Duration::ZERO;
    for (from, to) in [(at(1, 5), at(3, 10)), (at(3, 5), at(7, 10))] {
        if from > at(9, 20) && downtime.is_zero() {
            tokio::time::sleep_until(at(9, 20)).await;
            ctx.rec.set_phase(Phase::Redis);
            println!("   {:>4} s  Redis killed", ctx.rec.elapsed().as_secs());
            let went = Instant::now();
            restart_redis(args).await?;
            downtime = went.elapsed();
            println!(
                "   {:>4} s  Redis back after {:.1} s down",
                ctx.rec.elapsed().as_secs(),
                downtime.as_secs_f64()
            );
            tokio::time::sleep(AFTERMATH).await;
            ctx.rec.set_phase(Phase::Normal);
        }
        tokio::time::sleep_until(from).await;
        set_fail_rate(ctx, FAIL_RATE).await?;
        ctx.rec.set_phase(Phase::Failures);
        println!(
            "   {:>4} s  upstream failures on ({FAIL_RATE})",
            ctx.rec.elapsed().as_secs()
        );
        tokio::time::sleep_until(to).await;
        set_fail_rate(ctx, 0.0).await?;
        println!(
            "   {:>4} s  upstream failures off",
            ctx.rec.elapsed().as_secs()
        );
        tokio::time::sleep(AFTERMATH).await;
        ctx.rec.set_phase(Phase::Normal);
    }
    Ok(downtime)
}

async fn set_fail_rate(ctx: &Ctx, rate: f64) -> anyhow::Result<()> {
    ctx.http
        .post(format!("{}/_emulator/fail_rate", ctx.emulator))
        .json(&json!({ "fail_rate": rate }))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("Failed to set the emulator's fail rate")?;
    Ok(())
}

/// Kills Redis (SIGKILL: no chance to write anything more), waits `REDIS_DOWN`, and
/// starts it again from the same redis.conf, so from the same append-only file.
async fn restart_redis(args: &RunArgs) -> anyhow::Result<()> {
    let pidfile = args.dir.join("redis.pid");
    let pid = std::fs::read_to_string(&pidfile)
        .with_context(|| format!("Failed to read {}", pidfile.display()))?;
    let pid = pid.trim().to_owned();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .context("Failed to run kill")?;
    if !status.success() {
        bail!("kill -KILL {pid} failed");
    }
    let addr = format!("127.0.0.1:{}", args.redis_port);
    // Until nothing listens any more.
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(REDIS_DOWN).await;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.dir.join("redis-restarted.log"))
        .context("Failed to open the restarted Redis's log")?;
    std::process::Command::new(&args.redis_server)
        .arg(args.dir.join("redis.conf"))
        .stdout(log.try_clone().context("log")?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("Failed to start {}", args.redis_server))?;
    let url = format!("redis://{addr}");
    let up = within(Duration::from_secs(30), async || {
        let Ok(client) = redis::Client::open(url.as_str()) else {
            return false;
        };
        let Ok(mut con) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        redis::cmd("PING")
            .query_async::<String>(&mut con)
            .await
            .is_ok()
    })
    .await;
    if !up {
        bail!("Redis did not come back within 30 s (see redis-restarted.log)");
    }
    Ok(())
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Samples each instance's RSS every `every` and at the end, with a progress line.
async fn sample_rss(
    ctx: &Ctx,
    pids: &[u32],
    into: &Mutex<Vec<(u64, Vec<u64>)>>,
    every: Duration,
    until: Instant,
) {
    let take = || {
        let t = ctx.rec.elapsed().as_secs();
        let sample: Vec<u64> = pids.iter().map(|p| rss_kb(*p).unwrap_or(0)).collect();
        let rows = ctx.rec.kinds();
        let served: u64 = rows.iter().map(|r| r.served).sum();
        let failed: u64 = rows.iter().map(|r| r.failed).sum();
        println!(
            "   {t:>4} s  RSS {} MB  served {served}  failed {failed}  [{}]",
            sample
                .iter()
                .map(|kb| format!("{:.1}", *kb as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(" / "),
            ctx.rec.phase().label()
        );
        into.lock().expect("lock").push((t, sample));
    };
    let mut tick = tokio::time::interval(every);
    let slack = Duration::from_secs(1);
    loop {
        tick.tick().await;
        take();
        if Instant::now() + every > until + slack {
            if Instant::now() + slack < until {
                tokio::time::sleep_until(until).await;
                take();
            }
            break;
        }
    }
}
