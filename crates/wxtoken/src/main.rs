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
    /// Manage a third-party platform's authorizers on a running server.
    Authorizers {
        #[command(subcommand)]
        command: AuthorizersCommand,
    },
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
    let server = Server::build(&settings, listener).await?;
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
    let url = format!(
        "{}/v1/apps/{app}/authorizers/import",
        server.trim_end_matches('/')
    );
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(key)
        .send()
        .await
        .with_context(|| format!("Failed to reach {server}"))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("{server} did not answer JSON (HTTP {status})"))?;
    if !status.is_success() {
        return Err(error_line(status, &body));
    }
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

async fn token(app: &str, server: &str, key: &str, min_ttl: Option<u64>) -> anyhow::Result<()> {
    let mut url = format!(
        "{}/v1/apps/{app}/access_token",
        server.trim_end_matches('/')
    );
    if let Some(min_ttl) = min_ttl {
        url.push_str(&format!("?min_ttl={min_ttl}"));
    }
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(key)
        .send()
        .await
        .with_context(|| format!("Failed to reach {server}"))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("{server} did not answer JSON (HTTP {status})"))?;
    match body.get("access_token").and_then(|t| t.as_str()) {
        Some(token) if status.is_success() => {
            println!("{token}");
            Ok(())
        }
        _ => Err(error_line(status, &body)),
    }
}
