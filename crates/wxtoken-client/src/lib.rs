//! An async client for wxtoken, the central WeChat credential
//! server (中控服务器): business services get their access_tokens, JS-SDK tickets and
//! signed `wx.config`s from it instead of fetching tokens from WeChat themselves.
//!
//! What it adds over plain HTTP calls:
//!
//! - **A near cache.** [`Client::token`] answers from memory while the token has more
//!   than [`DEFAULT_MIN_TTL`] left (by the server's `expires_in`, measured on this
//!   machine's monotonic clock, so a wrong wall clock cannot make it serve dead tokens);
//!   [`Client::token_with`] asks for more, and passes it on to the server as `min_ttl`.
//! - **Single flight.** However many tasks want a token the cache does not have, one
//!   request goes out per app; all of them get its answer or its error. Reports of a
//!   dead token ([`Client::invalidate`]) are coalesced the same way.
//! - **Retry once on a dead token.** [`Client::with_token`] runs your WeChat call with a
//!   token and, if WeChat answers 40001, 40014 or 42001, reports the token and runs it
//!   once more with the fresh one, as WeChat advises.
//! - Tickets ([`Client::ticket`]) and JS-SDK configs ([`Client::jssdk_config`],
//!   WeCom's [`Client::agent_config`]), and errors grouped by what to do next
//!   ([`Error::is_retryable`]).
//!
//! Tokens are logged (`{:?}`) as their first 6 characters; the client key never. Like
//! reqwest, the client needs a Tokio runtime.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use wxtoken_client::{CallError, Client, TicketType, WechatError};
//!
//! # async fn run() -> Result<(), CallError> {
//! // One client per process; clones share the cache and the connections.
//! let key = std::env::var("WXTOKEN_KEY").unwrap_or_default();
//! let client = Client::builder("http://127.0.0.1:7200", key)
//!     .min_ttl(Duration::from_secs(120))
//!     .build()?;
//!
//! // A token of the app `shop`: a memory read while it has over two minutes left.
//! let token = client.token("shop").await?;
//! println!("{token:?}"); // Token { value: "80_Ab3…", .. }
//!
//! // A WeChat call that survives a token killed behind our back.
//! let wechat = reqwest::Client::new();
//! let wechat = &wechat;
//! let ips = client
//!     .with_token("shop", |token| async move {
//!         let answer: serde_json::Value = wechat
//!             .get("https://api.weixin.qq.com/cgi-bin/get_api_domain_ip")
//!             .query(&[("access_token", token.value())])
//!             .send()
//!             .await?
//!             .json()
//!             .await?;
//!         Ok::<_, CallError>(WechatError::check(answer)?)
//!     })
//!     .await?;
//! println!("{}", ips["dns"]);
//!
//! // What a page needs for wx.config, signed by the server.
//! let config = client.jssdk_config("shop", "https://shop.example/cart?id=1").await?;
//! let ticket = client.ticket("shop", TicketType::JSAPI).await?;
//! # let _ = (config, ticket);
//! # Ok(()) }
//! ```
//!
//! # Modules
//!
//! `client` holds the public entry points, `cache` the near cache and single flight,
//! `transport` the HTTP requests, `credential` the values handed out, `wechat` the
//! token-rejection helpers, `error` the error type.

mod cache;
mod client;
mod credential;
mod error;
mod transport;
mod wechat;

pub use client::{
    Client, ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MIN_TTL, DEFAULT_TIMEOUT, Stats,
};
pub use credential::{AgentConfig, JssdkConfig, Ticket, TicketType, Token};
pub use error::Error;
pub use wechat::{CallError, TOKEN_REJECTED_ERRCODES, TokenRejection, WechatError};
