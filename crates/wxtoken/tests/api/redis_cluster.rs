//! A real Redis Cluster of the test's own: six `redis-server --cluster-enabled yes`
//! processes on free loopback ports, joined by `redis-cli --cluster create
//! --cluster-replicas 1` (three masters, three replicas). No persistence; killed on drop.

use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How soon a cluster takes a silent master for failed and promotes its replica.
const NODE_TIMEOUT_MS: u64 = 1000;

pub struct RedisCluster {
    nodes: Vec<(u16, Option<Child>)>,
    _dir: tempfile::TempDir,
}

async fn free_port() -> u16 {
    // Cluster nodes also listen on port + 10000 (the cluster bus): keep both free.
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        if port < 55_000
            && TcpListener::bind(("127.0.0.1", port + 10_000))
                .await
                .is_ok()
        {
            return port;
        }
    }
}

/// Starts one cluster node on a free port pair and waits until it answers PING. A port
/// found free can be taken by a parallel test before redis-server binds it (then the
/// server exits at once): such a node is started again on other ports.
async fn start_node(dir: &std::path::Path) -> (u16, Option<Child>) {
    for _ in 0..5 {
        let port = free_port().await;
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            // A replica whose master just died may always take over (the default
            // refuses one that lost its master "too long" ago at this short timeout).
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&node_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (./scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if query::<String>(port, &["PING"]).await.is_some() {
                return (port, Some(child));
            }
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                let _ = child.kill().await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("no cluster node would start in 5 tries");
}

impl RedisCluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            nodes.push(start_node(dir.path()).await);
        }
        let cluster = Self { nodes, _dir: dir };
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
            .expect("redis-cli is installed (Debian redis-tools)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        cluster.wait_ok().await;
        cluster
    }

    /// The seed URL for `store.url` (with `cluster = true`).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[0].0)
    }

    /// Waits until every live node says `cluster_state:ok`, and every replica is in
    /// sync with its master.
    pub async fn wait_ok(&self) {
        let live: Vec<u16> = self
            .nodes
            .iter()
            .filter(|(_, child)| child.is_some())
            .map(|(port, _)| *port)
            .collect();
        for port in live {
            wait_until(Duration::from_secs(30), || async move {
                let ok = query::<String>(port, &["CLUSTER", "INFO"])
                    .await
                    .is_some_and(|info| info.contains("cluster_state:ok"));
                let synced = query::<String>(port, &["INFO", "replication"])
                    .await
                    .is_some_and(|info| {
                        info.contains("role:master") || info.contains("master_link_status:up")
                    });
                ok && synced
            })
            .await;
        }
    }

    /// SIGKILLs the master that serves `key`'s slot; returns its port.
    pub async fn kill_master_of(&mut self, key: &str) -> u16 {
        let live = self
            .nodes
            .iter()
            .find(|(_, child)| child.is_some())
            .map(|(port, _)| *port)
            .expect("a live node");
        let slot: i64 = query(live, &["CLUSTER", "KEYSLOT", key])
            .await
            .expect("keyslot");
        let slots: redis::Value = query(live, &["CLUSTER", "SLOTS"]).await.expect("slots");
        let master = master_of(&slots, slot).expect("a master serves the slot");
        let node = self
            .nodes
            .iter_mut()
            .find(|(port, _)| *port == master)
            .expect("the master is one of ours");
        if let Some(mut child) = node.1.take() {
            child.kill().await.expect("kill");
        }
        master
    }
}

/// The port of the master that serves `slot`, from a `CLUSTER SLOTS` answer.
fn master_of(slots: &redis::Value, slot: i64) -> Option<u16> {
    let redis::Value::Array(ranges) = slots else {
        return None;
    };
    ranges.iter().find_map(|range| {
        let redis::Value::Array(fields) = range else {
            return None;
        };
        let (redis::Value::Int(start), redis::Value::Int(end)) = (&fields[0], &fields[1]) else {
            return None;
        };
        let redis::Value::Array(master) = &fields[2] else {
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
    let mut conn = tokio::time::timeout(
        Duration::from_secs(1),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    tokio::time::timeout(Duration::from_secs(1), cmd.query_async(&mut conn))
        .await
        .ok()?
        .ok()
}

async fn wait_until<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "the Redis Cluster did not settle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
