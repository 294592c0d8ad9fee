//! Per-app call counters: what the emulator saw, for tests and benchmarks to assert on.
//!
//! Owns [`Stats`] / [`AppStats`] / [`ComponentStats`], the JSON served at
//! `GET /_emulator/stats`, and [`wecom_key`], the key under which a WeCom app's counters
//! appear. Third-party platforms are counted per platform, never per authorizer: a
//! platform with 100,000 authorizers adds one entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Key under which rejections of never-issued tokens are counted.
pub const UNKNOWN_APP: &str = "_unknown";

/// Snapshot of every app's counters, keyed by appid.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Counters per appid, per [`wecom_key`] for WeCom apps, plus [`UNKNOWN_APP`] for
    /// calls that name no known app or carry a never-issued token.
    pub apps: BTreeMap<String, AppStats>,
    /// Counters per third-party platform (component appid), plus [`UNKNOWN_APP`] for
    /// component calls that name no known platform or carry a token that is not a
    /// component token.
    // Default keeps stats JSON from before the third-party platform parsable.
    #[serde(default)]
    pub components: BTreeMap<String, ComponentStats>,
}

/// Counters of one third-party platform (component) since the emulator started.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
// Counters added later default to zero when older JSON is read.
#[serde(default)]
pub struct ComponentStats {
    /// `api_component_token` calls received, failed ones included.
    pub component_token_calls: u64,
    /// New `component_access_token` values issued.
    pub component_tokens_issued: u64,
    /// `api_create_preauthcode` calls received, failed ones included.
    pub preauthcode_calls: u64,
    /// `api_query_auth` calls received, failed ones included.
    pub query_auth_calls: u64,
    /// `api_authorizer_token` calls received (all authorizers together), failed ones
    /// included.
    pub authorizer_token_calls: u64,
    /// `api_get_authorizer_list` calls received, failed ones included.
    pub authorizer_list_calls: u64,
    /// Component calls answered 40001 or 42001 because the component token was dead.
    pub stale_rejections: u64,
    /// `api_component_token` and `api_authorizer_token` calls answered with an
    /// injected failure (busy, HTTP 500 or timeout).
    pub injected_failures: u64,
    /// Verify tickets minted (pushed or not).
    pub verify_tickets_issued: u64,
    /// Pushes to the callback URL answered with HTTP 2xx and the body `success`.
    pub pushes_sent: u64,
    /// Pushes that failed: no answer, another status, or another body.
    pub pushes_failed: u64,
    /// Accounts authorized to the platform right now (a gauge, not a counter).
    pub authorized: u64,
    /// What the authorizers' tokens did, summed over all authorizers:
    /// `tokens_issued` (authorizer access tokens, from `api_query_auth` and
    /// `api_authorizer_token`), `api_calls`, `stale_rejections`, `ticket_calls`,
    /// `tickets_issued`, `injected_failures` (on ticket calls), uploads.
    pub authorizers: AppStats,
}

/// The key of a WeCom app in [`Stats::apps`]: `"{corpid}:{agentid}"`. A corp has
/// several apps, each with its own secret, token and counters.
pub fn wecom_key(corpid: &str, agentid: u64) -> String {
    format!("{corpid}:{agentid}")
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
    /// Ordinary API calls (uploads included) made with a valid token.
    pub api_calls: u64,
    /// Ordinary API and ticket calls answered 40001, 40014 or 42001 because the
    /// token was dead (or, on a ticket endpoint, not accepted there at all).
    pub stale_rejections: u64,
    /// WeCom `GET /cgi-bin/gettoken` calls received, failed ones included.
    // Defaults keep stats JSON from before the WeCom and ticket endpoints parsable.
    #[serde(default)]
    pub gettoken_calls: u64,
    /// Calls to any ticket endpoint (official getticket, WeCom corp and agent
    /// tickets), failed ones included.
    #[serde(default)]
    pub ticket_calls: u64,
    /// New ticket values created by any ticket endpoint.
    #[serde(default)]
    pub tickets_issued: u64,
    /// `/sns/jscode2session` and `/sns/oauth2/access_token` calls naming this app,
    /// failed ones included.
    #[serde(default)]
    pub sns_calls: u64,
    /// Media uploads accepted (`/cgi-bin/media/upload`).
    #[serde(default)]
    pub media_uploads: u64,
    /// Bytes of the files in accepted uploads (the `media` parts only, not the
    /// multipart framing): what a test compares with what it sent.
    #[serde(default)]
    pub media_bytes: u64,
    /// `POST /cgi-bin/openapi/quota/get` calls made with this app's valid token.
    #[serde(default)]
    pub quota_get_calls: u64,
    /// `clear_quota` and `clear_quota/v2` calls naming this app (v1: made with its
    /// valid token), failed ones included.
    #[serde(default)]
    pub clear_quota_calls: u64,
    /// Of those, the clears that took effect (and used one of the month's clears).
    #[serde(default)]
    pub quota_clears: u64,
}

impl AppStats {
    /// Every call that reached a token endpoint, whichever one (WeCom included).
    pub fn upstream_token_calls(&self) -> u64 {
        self.token_calls + self.stable_token_calls + self.gettoken_calls
    }
}

impl Stats {
    /// Counters of `appid`, or all zeros if the emulator never saw it.
    pub fn app(&self, appid: &str) -> AppStats {
        self.apps.get(appid).cloned().unwrap_or_default()
    }

    /// Counters of the platform `component_appid`, or all zeros if it is unknown.
    pub fn component(&self, component_appid: &str) -> ComponentStats {
        self.components
            .get(component_appid)
            .cloned()
            .unwrap_or_default()
    }
}
