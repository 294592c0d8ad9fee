//! The fault scenarios of the fleet benchmark: an instance paused (SIGSTOP) past its
//! refresh lease and resumed, and a Redis Cluster whose master for the app's slot is
//! killed (its replica promoted) mid-run.
//!
//! For the pause, the instances are `wxtoken serve` processes (a signal stops a whole
//! process); for the cluster, six `redis-server --cluster-enabled yes` processes joined
//! by `redis-cli --cluster create --cluster-replicas 1`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Which fault a fleet meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// None: the steady figure.
    None,
    /// Instance 0 is stopped with SIGSTOP for `--pause-ms`, then resumed.
    Sigstop,
    /// The store is a six-node Redis Cluster; the master of the app's slot is killed.
    ClusterFailover,
}

/// How long a cluster takes a silent master for failed.
const NODE_TIMEOUT_MS: u64 = 1000;

/// Sends `signal` (e.g. `-STOP`) to `pid`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .context("Failed to run kill")?;
    if !status.success() {
        bail!("kill {signal} {pid} failed");
    }
    Ok(())
}

/// A `wxtoken serve` process: where it listens, its owner id in leases, the child.
pub struct Process {
    pub base: String,
    pub owner: String,
    pub child: Child,
}

/// Starts `wxtoken serve` on `config` and returns it once it listens.
pub async fn spawn_process(bin: &Path, config: &Path) -> anyhow::Result<Process> {
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn,wxtoken=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("Failed to start {}", bin.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let field = |line: &str, name: &str| {
        line.split(name)
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .map(str::to_owned)
    };
    let mut owner = None;
    let base = loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .context("wxtoken did not say where it listens in time")??
            .context("wxtoken exited before listening")?;
        owner = owner.or_else(|| field(&line, "owner="));
        if let Some(addr) = field(&line, "addr=") {
            break format!("http://{addr}");
        }
    };
    let owner = owner.context("wxtoken did not log its owner id")?;
    // Keep draining the log so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Process { base, owner, child })
}

/// Waits (up to 60 s) until somebody holds the lease of the app's access token, and
/// says who (their owner id).
pub async fn lease_holder(redis_url: &str) -> anyhow::Result<String> {
    let client = redis::Client::open(redis_url).context("Bad Redis URL")?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("Failed to connect to Redis")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owner: Option<String> = redis::cmd("GET")
            .arg("wxtoken:{shop}:access_token:lease")
            .query_async(&mut conn)
            .await
            .context("Failed to read the lease")?;
        if let Some(owner) = owner {
            return Ok(owner);
        }
        if Instant::now() > deadline {
            bail!("nobody took the refresh lease within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A six-node Redis Cluster on free loopback ports; killed on drop.
pub struct Cluster {
    nodes: Vec<(u16, Option<Child>)>,
    _dir: tempfile::TempDir,
}

async fn free_port_pair() -> anyhow::Result<u16> {
    // A cluster node also listens on port + 10000 (the cluster bus).
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        if port < 55_000
            && TcpListener::bind(("127.0.0.1", port + 10_000))
                .await
                .is_ok()
        {
            return Ok(port);
        }
    }
    bail!("no free port pair for a cluster node")
}

impl Cluster {
    pub async fn start(program: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("Failed to create a dir for the cluster")?;
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_port_pair().await?;
            let node_dir: PathBuf = dir.path().join(port.to_string());
            std::fs::create_dir(&node_dir)?;
            let child = Command::new(program)
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                .args(["--cluster-replica-validity-factor", "0"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("Failed to start `{program}`"))?;
            nodes.push((port, Some(child)));
        }
        let cluster = Self { nodes, _dir: dir };
        for (port, _) in &cluster.nodes {
            let port = *port;
            wait_until(|| async move { query::<String>(port, &["PING"]).await.is_some() }).await?;
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .context("Failed to run redis-cli (Debian redis-tools)")?;
        if !created.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stderr)
            );
        }
        cluster.wait_ok().await?;
        Ok(cluster)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[0].0)
    }

    /// Until every live node says `cluster_state:ok` and every replica is in sync.
    pub async fn wait_ok(&self) -> anyhow::Result<()> {
        for (port, child) in &self.nodes {
            if child.is_none() {
                continue;
            }
            let port = *port;
            wait_until(|| async move {
                let ok = query::<String>(port, &["CLUSTER", "INFO"])
                    .await
                    .is_some_and(|i| i.contains("cluster_state:ok"));
                let synced = query::<String>(port, &["INFO", "replication"])
                    .await
                    .is_some_and(|i| {
                        i.contains("role:master") || i.contains("master_link_status:up")
                    });
                ok && synced
            })
            .await?;
        }
        Ok(())
    }

    /// SIGKILLs the master serving `key`; returns its port.
    pub async fn kill_master_of(&mut self, key: &str) -> anyhow::Result<u16> {
        let live = self
            .nodes
            .iter()
            .find(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
            .context("no live node")?;
        let slot: i64 = query(live, &["CLUSTER", "KEYSLOT", key])
            .await
            .context("CLUSTER KEYSLOT")?;
        let slots: redis::Value = query(live, &["CLUSTER", "SLOTS"])
            .await
            .context("CLUSTER SLOTS")?;
        let master = master_of(&slots, slot).context("no master serves the slot")?;
        let node = self
            .nodes
            .iter_mut()
            .find(|(p, _)| *p == master)
            .context("the master is not one of ours")?;
        if let Some(mut child) = node.1.take() {
            child.kill().await.context("Failed to kill the master")?;
        }
        Ok(master)
    }
}

fn master_of(slots: &redis::Value, slot: i64) -> Option<u16> {
    let redis::Value::Array(ranges) = slots else {
        return None;
    };
    ranges.iter().find_map(|range| {
        let redis::Value::Array(f) = range else {
            return None;
        };
        let (redis::Value::Int(start), redis::Value::Int(end)) = (f.first()?, f.get(1)?) else {
            return None;
        };
        let redis::Value::Array(master) = f.get(2)? else {
            return None;
        };
        let redis::Value::Int(port) = master.get(1)? else {
            return None;
        };
        (*start <= slot && slot <= *end).then_some(*port as u16)
    })
}

async fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let limit = Duration::from_secs(1);
    let mut conn = tokio::time::timeout(limit, client.get_multiplexed_async_connection())
        .await
        .ok()?
        .ok()?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    tokio::time::timeout(limit, cmd.query_async(&mut conn))
        .await
        .ok()?
        .ok()
}

async fn wait_until<F, Fut>(mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        if Instant::now() > deadline {
            bail!("the Redis Cluster did not settle in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
