//! `baseline`: the ceiling the serving benchmark measures wxtoken against.
//!
//! A minimal axum server with the one route a business service calls,
//! `GET /v1/apps/{app}/access_token`, answering with the same bytes and headers wxtoken
//! sends for a token (a 136-character `access_token`, `expires_in`, `expires_at`;
//! `content-type: application/json`, `cache-control: no-store`). The body is built once
//! at start and shared: no auth, no clock, no keeper, no serialisation per request. So
//! the gap between this and wxtoken under the same load is exactly what wxtoken's own
//! work costs (auth, routing extras, the keeper read, JSON). The runtime is the same as
//! wxtoken's (`#[tokio::main]`, multi-thread, default worker count).
//!
//! Run by `bench/run.sh`; by hand: `baseline --listen 127.0.0.1:7400`.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use clap::Parser;

/// Length of a WeChat access token as the emulator (and WeChat) issues it.
const TOKEN_LEN: usize = 136;
/// The characters WeChat tokens are made of.
const TOKEN_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// Serves a prebuilt access-token answer: the upper bound for wxtoken's serving path.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
}

/// The answer wxtoken gives for a token, byte for byte in shape and length.
fn token_body() -> Bytes {
    let token: String = TOKEN_ALPHABET
        .iter()
        .cycle()
        .take(TOKEN_LEN)
        .map(|&b| char::from(b))
        .collect();
    Bytes::from(format!(
        r#"{{"access_token":"{token}","expires_in":7199,"expires_at":1795615789}}"#
    ))
}

/// `GET /v1/apps/{app}/access_token`: the prebuilt body; cloning `Bytes` bumps a count.
async fn access_token(State(body): State<Bytes>) -> impl IntoResponse {
    (
        [
            (CACHE_CONTROL, "no-store"),
            (CONTENT_TYPE, "application/json"),
        ],
        body,
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let app = Router::new()
        .route("/v1/apps/{app}/access_token", get(access_token))
        .with_state(token_body());
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("Failed to listen on {} (--listen)", cli.listen))?;
    let addr = listener
        .local_addr()
        .context("Failed to read the bound address")?;
    println!("baseline listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            if tokio::signal::ctrl_c().await.is_err() {
                // No ctrl-c handler: serve until killed.
                std::future::pending::<()>().await;
            }
        })
        .await
        .context("Failed to serve")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_wxtokens_shape_and_length() {
        let body = token_body();
        let value: serde_json::Value =
            serde_json::from_slice(&body).expect("the baseline body is JSON");
        let token = value["access_token"].as_str().expect("an access_token");
        assert_eq!(token.len(), TOKEN_LEN);
        assert_eq!(value["expires_in"], 7199);
        assert_eq!(value["expires_at"], 1_795_615_789_u64);
        // {"access_token":"<136>","expires_in":7199,"expires_at":1795615789}
        assert_eq!(body.len(), TOKEN_LEN + 61);
    }
}
