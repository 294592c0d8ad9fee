//! `soak setup`: the files bench/soak.sh starts its processes from, so that every name,
//! secret and key lives here once: two `wxtoken serve` configs (one Redis, one master
//! key, differing only in their port), the emulator's command-line arguments (one a
//! line) and redis.conf (append-only, every write fsynced, a pid file the run reads to
//! kill it).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::{
    ADMIN_KEY, AES_KEY, APPID_NEWS, APPID_SHOP, COMPONENT_APPID, COMPONENT_SECRET, CORPID,
    EXPIRES_IN, FACADE_KEY, HR_AGENTID, HR_SECRET, LOADER_KEY, PUSH_TOKEN, RUNTIME, SECRET_NEWS,
    SECRET_SHOP, WINDOW,
};

/// What `setup` needs to know: where things listen.
pub struct Ports {
    pub emulator: u16,
    pub redis: u16,
    pub instances: Vec<u16>,
}

/// Writes wxtoken-N.toml, master.key, emulator.args and redis.conf into `dir`.
pub fn write(dir: &Path, ports: &Ports) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("redis")).context("Failed to create the redis dir")?;
    // 32 random bytes as 64 hex digits.
    let master = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    std::fs::write(dir.join("master.key"), &master).context("Failed to write master.key")?;
    for (i, port) in ports.instances.iter().enumerate() {
        let path = dir.join(format!("wxtoken-{}.toml", i + 1));
        std::fs::write(&path, wxtoken_toml(dir, ports, *port))
            .with_context(|| format!("Failed to write {}", path.display()))?;
    }
    std::fs::write(
        dir.join("emulator.args"),
        emulator_args(ports).join("\n") + "\n",
    )
    .context("Failed to write emulator.args")?;
    std::fs::write(dir.join("redis.conf"), redis_conf(dir, ports.redis))
        .context("Failed to write redis.conf")?;
    Ok(())
}

fn redis_conf(dir: &Path, port: u16) -> String {
    format!(
        "bind 127.0.0.1\nport {port}\ndir {dir}\npidfile {pid}\ndaemonize no\n\
         appendonly yes\nappendfsync always\nsave \"\"\n",
        dir = dir.join("redis").display(),
        pid = dir.join("redis.pid").display(),
    )
}

fn emulator_args(ports: &Ports) -> Vec<String> {
    let callback = format!(
        "http://127.0.0.1:{}/v1/apps/platform/callback",
        ports.instances[0]
    );
    let mut args = vec![
        "--listen".to_owned(),
        format!("127.0.0.1:{}", ports.emulator),
        "--app".to_owned(),
        format!("{APPID_SHOP}:{SECRET_SHOP}"),
        "--app".to_owned(),
        format!("{APPID_NEWS}:{SECRET_NEWS}"),
        "--wecom-app".to_owned(),
        format!("{CORPID}:{HR_AGENTID}:{HR_SECRET}"),
        "--component".to_owned(),
        format!("{COMPONENT_APPID}:{COMPONENT_SECRET}:{PUSH_TOKEN}:{AES_KEY}@{callback}"),
    ];
    for (_, appid, secret) in RUNTIME {
        args.extend(["--app".to_owned(), format!("{appid}:{secret}")]);
    }
    for flag in [
        "--expires-in",
        "--ticket-expires-in",
        "--component-expires-in",
        "--authorizer-expires-in",
    ] {
        args.extend([flag.to_owned(), EXPIRES_IN.to_string()]);
    }
    args.extend(
        [
            // A replaced classic token lives on this long; the stable renewal window.
            ("--overlap", WINDOW.to_string()),
            ("--force-refresh-interval-secs", "30".to_owned()),
            ("--force-refresh-daily", "100".to_owned()),
            // WeChat's own failures and broken answers on the way.
            (
                "--fail-kinds",
                "busy,http500,timeout,reset,garbage,truncated,huge".to_owned(),
            ),
            // An injected timeout outlasts wxtoken's request timeout (2 s).
            ("--hang-ms", "3000".to_owned()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value]),
    );
    args
}

fn wxtoken_toml(dir: &Path, ports: &Ports, port: u16) -> String {
    let emulator = format!("http://127.0.0.1:{}", ports.emulator);
    let mut toml = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
master_key_file = "{master}"

[store]
kind = "redis"
url = "redis://127.0.0.1:{redis}"

[upstream]
api_base = "{emulator}"
wecom_base = "{emulator}"
request_timeout_ms = 2000
connect_timeout_ms = 1000

[keeper]
refresh_ahead_secs = {WINDOW}
stable_window_secs = {WINDOW}
force_refresh_daily_budget = 20

[[apps]]
id = "shop"
kind = "official"
appid = "{APPID_SHOP}"
secret = "{SECRET_SHOP}"
mode = "stable"

[[apps]]
id = "news"
kind = "official"
appid = "{APPID_NEWS}"
secret = "{SECRET_NEWS}"
mode = "classic"

[[apps]]
id = "hr"
kind = "wecom"
corpid = "{CORPID}"
agentid = {HR_AGENTID}
secret = "{HR_SECRET}"

[[apps]]
id = "platform"
kind = "component"
appid = "{COMPONENT_APPID}"
secret = "{COMPONENT_SECRET}"
token = "{PUSH_TOKEN}"
encoding_aes_key = "{AES_KEY}"
"#,
        master = dir.join("master.key").display(),
        redis = ports.redis,
    );
    for (name, key, scopes) in [
        ("loader", LOADER_KEY, r#"["read", "invalidate"]"#),
        ("facade", FACADE_KEY, r#"["read"]"#),
        ("soak-admin", ADMIN_KEY, r#"["read", "admin"]"#),
    ] {
        let _ = write!(
            toml,
            "\n[[clients]]\nname = \"{name}\"\nkey = \"{key}\"\napps = [\"*\"]\nscopes = {scopes}\n"
        );
    }
    toml
}
