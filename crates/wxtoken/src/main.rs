//! The `wxtoken` binary: parses arguments, loads config, starts tracing, calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use wxtoken::demo::{self, DemoOptions};
use wxtoken::{Server, Settings, logging};

#[derive(Parser)]
#[command(
    name = "wxtoken",
    version,
    about = "A central credential server for WeChat"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// The TOML config file.
        #[arg(long, env = "WXTOKEN_CONFIG", default_value = "wxtoken.toml")]
        config: PathBuf,
    },
    /// Run an embedded WeChat emulator and a server with a demo app, and print curl lines.
    Demo {
        #[arg(long, default_value = "127.0.0.1:7200")]
        listen: SocketAddr,
        /// SQLite file (default: a fresh file in the temp directory).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Token lifetime the emulator hands out, in seconds.
        #[arg(long, default_value_t = 7200, value_parser = clap::value_parser!(u64).range(4..=7200))]
        expires_in: u64,
    },
    /// Print a new client key and its sha256 for `[[clients]] key_sha256`.
    Keygen {
        /// The client's name.
        #[arg(long)]
        name: String,
    },
    /// Print an access token from a running server.
    Token {
        /// The app id (the `{app}` in URLs).
        app: String,
        #[arg(long, env = "WXTOKEN_SERVER", default_value = "http://127.0.0.1:7200")]
        server: String,
        /// The client key.
        #[arg(long, env = "WXTOKEN_KEY", hide_env_values = true)]
        key: String,
        /// Ask for a token with at least this many seconds left.
        #[arg(long)]
        min_ttl: Option<u64>,
    },
    /// Manage runtime apps on a running server (needs an admin key).
    Apps {
        #[command(subcommand)]
        command: AppsCommand,
        #[command(flatten)]
        server: Remote,
    },
    /// Manage client keys on a running server (needs an admin key).
    Clients {
        #[command(subcommand)]
        command: ClientsCommand,
        #[command(flatten)]
        server: Remote,
    },
    /// Re-encrypt the store's secrets under a new master key, in place. Stop every
    /// instance first; start them again with the new key.
    RotateMasterKey {
        /// The TOML config file (for the store and the current key).
        #[arg(long, env = "WXTOKEN_CONFIG", default_value = "wxtoken.toml")]
        config: PathBuf,
        /// A file with the new key (64 hex characters); or env WXTOKEN_NEW_MASTER_KEY.
        #[arg(long)]
        new_key_file: Option<PathBuf>,
    },
    /// Manage a third-party platform's authorizers on a running server.
    Authorizers {
        #[command(subcommand)]
        command: AuthorizersCommand,
    },
    /// An app's daily WeChat quota, on a running server.
    Quota {
        #[command(subcommand)]
        command: QuotaCommand,
    },
}

#[derive(Subcommand)]
enum QuotaCommand {
    /// Clear the app's daily quota at WeChat (clear_quota/v2; within
    /// upstream.clear_quota_monthly_budget, WeChat allows 10 a month). Needs an admin key.
    Clear {
        /// The app id (the `{app}` in URLs).
        app: String,
        #[arg(long, env = "WXTOKEN_SERVER", default_value = "http://127.0.0.1:7200")]
        server: String,
        /// A client key with the admin scope.
        #[arg(long, env = "WXTOKEN_KEY", hide_env_values = true)]
        key: String,
    },
}

/// Where a running server is, and the key to talk to it.
#[derive(clap::Args)]
struct Remote {
    #[arg(
        long,
        global = true,
        env = "WXTOKEN_SERVER",
        default_value = "http://127.0.0.1:7200"
    )]
    server: String,
    /// A client key with the admin scope.
    #[arg(long, global = true, env = "WXTOKEN_KEY", hide_env_values = true)]
    key: Option<String>,
}

#[derive(Subcommand)]
enum AppsCommand {
    /// Every app with its state.
    List,
    /// Add an app (fails if it exists).
    Add(AppArgs),
    /// Change an app (or add it).
    Set(AppArgs),
    /// Remove an app added at runtime.
    Remove {
        /// The app id.
        id: String,
    },
}

#[derive(clap::Args)]
struct AppArgs {
    /// The app id (the `{app}` in URLs).
    id: String,
    /// official | wecom | component
    #[arg(long, default_value = "official")]
    kind: String,
    #[arg(long)]
    appid: Option<String>,
    #[arg(long)]
    corpid: Option<String>,
    #[arg(long)]
    agentid: Option<i64>,
    /// stable | classic (official apps)
    #[arg(long)]
    mode: Option<String>,
    /// The app secret; read from env WXTOKEN_APP_SECRET when not given.
    #[arg(long, env = "WXTOKEN_APP_SECRET", hide_env_values = true)]
    secret: String,
    /// A component's message token.
    #[arg(long)]
    token: Option<String>,
    /// A component's EncodingAESKey.
    #[arg(long)]
    encoding_aes_key: Option<String>,
}

#[derive(Subcommand)]
enum ClientsCommand {
    /// Every client (never a key).
    List,
    /// Add a client; prints its key once.
    Add {
        name: String,
        /// App ids it may use (repeat), or `*`.
        #[arg(long = "app", required = true)]
        apps: Vec<String>,
        /// read | invalidate | admin (repeat); default read.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// Revoke a client's key on every instance.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum AuthorizersCommand {
    /// Re-import every authorizer's refresh token from WeChat's api_get_authorizer_list
    /// (disaster recovery), paging through all of them. Needs an admin key.
    Import {
        /// The component app's id (the `{app}` in URLs).
        #[arg(long)]
        app: String,
        #[arg(long, env = "WXTOKEN_SERVER", default_value = "http://127.0.0.1:7200")]
        server: String,
        /// A client key with the admin scope.
        #[arg(long, env = "WXTOKEN_KEY", hide_env_values = true)]
        key: String,
    },
}

/// Starts logging to stdout through the writer thread; keep the guard until the end, so
/// that the last lines are written.
fn init_tracing(default: &str) -> anyhow::Result<logging::FlushGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a person at a terminal; files and log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    let (writer, guard) = logging::stdout().context("Failed to start the log writer thread")?;
    if !ansi {
        writer.take_access_log();
    }
    let format = logging::Text {
        inner: tracing_subscriber::fmt::format().with_target(false),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .event_format(format)
        .with_writer(writer)
        .init();
    Ok(guard)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Demo {
            listen,
            db,
            expires_in,
        } => {
            let _logs = match init_tracing("info") {
                Ok(guard) => guard,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            demo::run(
                DemoOptions {
                    listen,
                    db,
                    expires_in,
                },
                shutdown_signal(),
            )
            .await
        }
        Command::Keygen { name } => keygen(&name),
        Command::Token {
            app,
            server,
            key,
            min_ttl,
        } => token(&app, &server, &key, min_ttl).await,
        Command::Authorizers {
            command: AuthorizersCommand::Import { app, server, key },
        } => import_authorizers(&app, &server, &key).await,
        Command::Quota {
            command: QuotaCommand::Clear { app, server, key },
        } => clear_quota(&app, &server, &key).await,
        Command::Apps { command, server } => apps_command(command, &server).await,
        Command::Clients { command, server } => clients_command(command, &server).await,
        Command::RotateMasterKey {
            config,
            new_key_file,
        } => match init_tracing("warn") {
            // Held until the command ends, so its warnings are written out.
            Ok(_flush) => rotate_master_key(&config, new_key_file.as_deref()).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: PathBuf) -> anyhow::Result<()> {
    let _logs = init_tracing("info")?;
    let settings = Settings::load(&config)?;
    let listener = TcpListener::bind(settings.server.listen)
        .await
        .with_context(|| {
            format!(
                "Failed to listen on {} (server.listen)",
                settings.server.listen
            )
        })?;
    let server = Server::build(&settings, listener)
        .await?
        .reload_on_sighup(config);
    server.run(shutdown_signal()).await?;
    Ok(())
}

fn keygen(name: &str) -> anyhow::Result<()> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("wxt_{}", hex::encode(bytes));
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    println!("# give this key to {name} (shown once; wxtoken keeps only its sha256)");
    println!("key = {key}");
    println!();
    println!("# and add this to the server's config:");
    println!("[[clients]]");
    println!("name = {name:?}");
    println!("key_sha256 = \"{digest}\"");
    println!("apps = [\"*\"]");
    println!("scopes = [\"read\", \"invalidate\"]");
    Ok(())
}

/// An error answer of the server as one line: `HTTP 404 app_not_found: ...`.
fn error_line(status: reqwest::StatusCode, body: &serde_json::Value) -> anyhow::Error {
    let message = body
        .pointer("/error/message")
        .and_then(|m| m.as_str())
        .unwrap_or("no error message in the answer");
    let code = body
        .pointer("/error/code")
        .and_then(|c| c.as_str())
        .unwrap_or("?");
    anyhow::anyhow!("HTTP {status} {code}: {message}")
}

async fn import_authorizers(app: &str, server: &str, key: &str) -> anyhow::Result<()> {
    let path = format!("/v1/apps/{app}/authorizers/import");
    let body = call_server(server, key, reqwest::Method::POST, &path, None).await?;
    let n = |field: &str| body.get(field).and_then(|v| v.as_u64()).unwrap_or(0);
    println!(
        "imported {} authorizers of {app} from WeChat in {} pages: {} added, {} updated, {} unchanged",
        n("listed"),
        n("pages"),
        n("added"),
        n("updated"),
        n("unchanged")
    );
    Ok(())
}

async fn clear_quota(app: &str, server: &str, key: &str) -> anyhow::Result<()> {
    let path = format!("/v1/apps/{app}/quota/clear");
    let body = call_server(server, key, reqwest::Method::POST, &path, None).await?;
    let n = |field: &str| body.pointer(field).and_then(|v| v.as_u64()).unwrap_or(0);
    println!(
        "cleared the daily quota of {app}: {} of {} clears used this month",
        n("/quota/clears_this_month"),
        n("/quota/clear_budget")
    );
    Ok(())
}

async fn token(app: &str, server: &str, key: &str, min_ttl: Option<u64>) -> anyhow::Result<()> {
    let mut path = format!("/v1/apps/{app}/access_token");
    if let Some(min_ttl) = min_ttl {
        path.push_str(&format!("?min_ttl={min_ttl}"));
    }
    let body = call_server(server, key, reqwest::Method::GET, &path, None).await?;
    let token = body
        .get("access_token")
        .and_then(|t| t.as_str())
        .context("the answer has no access_token")?;
    println!("{token}");
    Ok(())
}

/// One call to a running server: the answer's JSON (or `null` for 204), or the
/// server's error as one line.
async fn call_server(
    server: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let mut request = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("Failed to reach {server}"))?;
    let status = response.status();
    if status == reqwest::StatusCode::NO_CONTENT {
        return Ok(serde_json::Value::Null);
    }
    let body: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("{server} did not answer JSON (HTTP {status})"))?;
    if !status.is_success() {
        return Err(error_line(status, &body));
    }
    Ok(body)
}

/// An admin call with the `--key` of `remote`.
async fn admin_call(
    remote: &Remote,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let key = remote
        .key
        .as_deref()
        .context("an admin key is needed: --key or WXTOKEN_KEY")?;
    call_server(&remote.server, key, method, path, body).await
}

async fn apps_command(command: AppsCommand, remote: &Remote) -> anyhow::Result<()> {
    match command {
        AppsCommand::List => {
            let body = admin_call(remote, reqwest::Method::GET, "/v1/apps", None).await?;
            let apps = body["apps"].as_array().cloned().unwrap_or_default();
            println!(
                "{:<24} {:<10} {:<20} {:>10}  last error",
                "id", "kind", "appid", "expires_in"
            );
            for app in apps {
                println!(
                    "{:<24} {:<10} {:<20} {:>10}  {}",
                    app["id"].as_str().unwrap_or("?"),
                    app["kind"].as_str().unwrap_or("?"),
                    app["appid"].as_str().unwrap_or("-"),
                    app["token"]["expires_in"]
                        .as_u64()
                        .map_or("-".to_owned(), |n| n.to_string()),
                    app["last_error"]["message"].as_str().unwrap_or("-"),
                );
            }
        }
        AppsCommand::Add(args) => {
            let path = format!("/v1/apps/{}", args.id);
            let exists = admin_call(remote, reqwest::Method::GET, &path, None)
                .await
                .is_ok();
            anyhow::ensure!(
                !exists,
                "app `{}` exists already; use `wxtoken apps set`",
                args.id
            );
            put_app(remote, args).await?;
        }
        AppsCommand::Set(args) => put_app(remote, args).await?,
        AppsCommand::Remove { id } => {
            admin_call(
                remote,
                reqwest::Method::DELETE,
                &format!("/v1/apps/{id}"),
                None,
            )
            .await?;
            println!("removed app {id}");
        }
    }
    Ok(())
}

async fn put_app(remote: &Remote, args: AppArgs) -> anyhow::Result<()> {
    let mut body = serde_json::json!({ "kind": args.kind, "secret": args.secret });
    for (field, value) in [
        ("appid", args.appid),
        ("corpid", args.corpid),
        ("mode", args.mode),
        ("token", args.token),
        ("encoding_aes_key", args.encoding_aes_key),
    ] {
        if let Some(value) = value {
            body[field] = serde_json::Value::String(value);
        }
    }
    if let Some(agentid) = args.agentid {
        body["agentid"] = agentid.into();
    }
    let path = format!("/v1/apps/{}", args.id);
    let status = admin_call(remote, reqwest::Method::PUT, &path, Some(body)).await?;
    println!(
        "app {} ({}) is kept; token expires_in: {}",
        args.id,
        status["kind"].as_str().unwrap_or("?"),
        status["token"]["expires_in"]
            .as_u64()
            .map_or("not yet fetched".to_owned(), |n| n.to_string())
    );
    Ok(())
}

async fn clients_command(command: ClientsCommand, remote: &Remote) -> anyhow::Result<()> {
    match command {
        ClientsCommand::List => {
            let body = admin_call(remote, reqwest::Method::GET, "/v1/clients", None).await?;
            println!("{:<24} {:<8} {:<28} apps", "name", "origin", "scopes");
            for client in body["clients"].as_array().cloned().unwrap_or_default() {
                let list = |field: &str| {
                    client[field]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default()
                };
                println!(
                    "{:<24} {:<8} {:<28} {}",
                    client["name"].as_str().unwrap_or("?"),
                    client["origin"].as_str().unwrap_or("?"),
                    list("scopes"),
                    list("apps"),
                );
            }
        }
        ClientsCommand::Add { name, apps, scopes } => {
            let scopes = if scopes.is_empty() {
                vec!["read".to_owned()]
            } else {
                scopes
            };
            let body = serde_json::json!({ "name": name, "apps": apps, "scopes": scopes });
            let created =
                admin_call(remote, reqwest::Method::POST, "/v1/clients", Some(body)).await?;
            println!("# the key of {name} (shown once; the server keeps only its sha256)");
            println!("{}", created["key"].as_str().unwrap_or("?"));
        }
        ClientsCommand::Revoke { name } => {
            admin_call(
                remote,
                reqwest::Method::DELETE,
                &format!("/v1/clients/{name}"),
                None,
            )
            .await?;
            println!("revoked client {name}");
        }
    }
    Ok(())
}

async fn rotate_master_key(
    config: &std::path::Path,
    new_key_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let settings = Settings::load(config)?;
    let new_key = match (new_key_file, std::env::var("WXTOKEN_NEW_MASTER_KEY")) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            wxtoken::secrets::MasterKey::from_hex(&text, "--new-key-file")?
        }
        (None, Ok(hex)) => wxtoken::secrets::MasterKey::from_hex(&hex, "WXTOKEN_NEW_MASTER_KEY")?,
        (None, Err(_)) => {
            anyhow::bail!("give the new key with --new-key-file or WXTOKEN_NEW_MASTER_KEY")
        }
    };
    let report = wxtoken::server::rotate_master_key(&settings, new_key).await?;
    println!("{report}");
    Ok(())
}
