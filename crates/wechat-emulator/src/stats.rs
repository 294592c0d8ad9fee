//! Per-app call counters: what the emulator saw, for tests and benchmarks to assert on.
//!
//! Owns [`Stats`] / [`AppStats`], the JSON served at `GET /_emulator/stats`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Key under which rejections of never-issued tokens are counted.
pub const UNKNOWN_APP: &str = "_unknown";

/// Snapshot of every app's counters, keyed by appid.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Counters per appid (plus [`UNKNOWN_APP`] for tokens that were never issued).
    pub apps: BTreeMap<String, AppStats>,
}

/// Counters of one app since the emulator started.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppStats {
    /// `GET /cgi-bin/token` calls received, failed ones included.
    pub token_calls: u64,
    /// `POST /cgi-bin/stable_token` calls received (normal and force refresh).
    pub stable_token_calls: u64,
    /// Of `stable_token_calls`, those with `force_refresh=true`.
    pub force_refresh_calls: u64,
    /// New token values created by either endpoint.
    pub tokens_issued: u64,
    /// Calls answered with an injected failure (busy, HTTP 500 or timeout).
    pub injected_failures: u64,
    /// Ordinary API calls made with a valid token.
    pub api_calls: u64,
    /// Ordinary API calls answered 40001 or 42001 because the token was dead.
    pub stale_rejections: u64,
}

impl AppStats {
    /// Every call that reached a token endpoint, whichever one.
    pub fn upstream_token_calls(&self) -> u64 {
        self.token_calls + self.stable_token_calls
    }
}

impl Stats {
    /// Counters of `appid`, or all zeros if the emulator never saw it.
    pub fn app(&self, appid: &str) -> AppStats {
        self.apps.get(appid).cloned().unwrap_or_default()
    }
}
