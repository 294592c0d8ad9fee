//! Black-box tests: a real server on a loopback port, a real SQLite file, and the WeChat
//! emulator standing in for WeChat. Assertions count upstream calls at the emulator.

mod access_log;
mod access_matrix;
mod admin;
mod alerts;
mod bad_input;
mod cli;
mod cluster;
mod demo;
mod facade;
mod faults;
mod fencing;
mod fleet;
mod fleet_limits;
mod gateway;
mod helpers;
mod hostile;
mod hostile_props;
mod hygiene;
mod invalidate;
mod platform;
mod platform_flow;
mod platform_input;
mod platform_store;
mod quota;
mod redis_cluster;
mod redis_server;
mod refresh;
mod resilience;
mod single_flight;
mod supervision;
mod tickets;
mod timeline;
mod ui;
mod upload;
mod wecom;
