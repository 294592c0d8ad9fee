//! wxtoken: the central credential server (中控服务器) for WeChat. One process holds the
//! app secrets, keeps every access token fresh (single flight, proactive refresh,
//! compare-and-invalidate) and hands tokens to business services over an authenticated
//! HTTP API. See README.md and DESIGN.md.
//!
//! Data flows one way: HTTP request -> auth -> keeper (memory read) -> response. Only the
//! keeper talks to [`wechat`] and [`store`].

pub mod admin;
pub mod alerts;
pub mod config;
pub mod credential;
pub mod demo;
pub mod gateway;
pub mod header_timer;
pub mod http;
pub mod jssdk;
pub mod keeper;
pub mod logging;
pub mod secrets;
pub mod server;
pub mod store;
pub mod wechat;

pub use config::Settings;
pub use server::{Server, StartError};
