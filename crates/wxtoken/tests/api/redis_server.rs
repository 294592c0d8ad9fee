//! A `redis-server` of each test's own on a free port (plain or TLS with a private CA),
//! started and killed by the test: no mock, no shared instance.

use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// A `redis-server` of the test's own, with no persistence (or an AOF), killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// With TLS: the CA (PEM) that signed its certificate.
    tls_ca: Option<String>,
    /// Keeps an append-only file (fsync on every write) in its directory, which a
    /// restart loads.
    aof: bool,
}

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM: (ca, cert, key).
fn private_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&key, &ca, &ca_key)
        .expect("server cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

impl RedisServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Self {
            child: None,
            port: free_port().await,
            dir,
            tls_ca: None,
            aof: false,
        };
        server.restart().await;
        server
    }

    /// A server that writes every change to an append-only file (fsync always), so
    /// that a restart after a SIGKILL comes back with everything it had.
    pub async fn start_with_aof() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Self {
            child: None,
            port: free_port().await,
            dir,
            tls_ca: None,
            aof: true,
        };
        server.restart().await;
        server
    }

    /// A server that speaks only TLS, with a certificate from a private CA.
    pub async fn start_tls() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, cert, key) = private_ca();
        for (name, pem) in [("ca.pem", &ca), ("server.pem", &cert), ("server.key", &key)] {
            std::fs::write(dir.path().join(name), pem).expect("write pem");
        }
        let mut server = Self {
            child: None,
            port: free_port().await,
            dir,
            tls_ca: Some(ca),
            aof: false,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A store on this server, as the tests build one (1 s operation timeout).
    pub async fn store(&self) -> wxtoken::store::RedisStore {
        wxtoken::store::RedisStore::connect(wxtoken::store::RedisOptions {
            url: self.url(),
            op_timeout: Duration::from_secs(1),
            tls_ca_pem: None,
            cluster: false,
            seeds: Vec::new(),
        })
        .await
        .expect("connect")
    }

    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn client(&self) -> redis::Client {
        match &self.tls_ca {
            Some(ca) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone().into_bytes()),
                },
            )
            .expect("tls client"),
            None => redis::Client::open(self.url()).expect("url"),
        }
    }

    /// Starts (again) on the same port and waits until it answers PING.
    pub async fn restart(&mut self) {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1"]);
        if self.tls_ca.is_some() {
            let file = |name: &str| self.dir.path().join(name).display().to_string();
            command
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .args([
                    "--tls-cert-file",
                    &file("server.pem"),
                    "--tls-key-file",
                    &file("server.key"),
                ])
                .args(["--tls-ca-cert-file", &file("ca.pem")]);
        } else {
            command.args(["--port", &port]);
        }
        if self.aof {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child = command
            .args(["--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (./scripts/test installs it)");
        self.child = Some(child);
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }
}
