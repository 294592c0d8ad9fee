//! The status view of a credential: what operators and `GET /v1/apps` see. Never a
//! secret, never a token value.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::time::Instant;

use super::Failure;
use super::slot::Slot;
use crate::config::KeeperSettings;
use crate::credential::unix_now_ms;
use crate::wechat::ErrorClass;

#[derive(Debug, Clone, Serialize)]
pub struct AppStatus {
    pub id: String,
    pub kind: &'static str,
    pub appid: String,
    pub mode: &'static str,
    /// `ok`, `no_token`, `backoff` (transient), `rate_limited`, `quota_exhausted`, or
    /// `configuration_error`.
    pub state: &'static str,
    pub token: Option<TokenStatus>,
    /// Seconds until the next proactive refresh, or until the next retry when backing off.
    pub next_refresh_in: Option<u64>,
    /// Upstream calls today (WeChat day, Beijing time), all APIs together and by API.
    pub upstream_calls_today: u64,
    pub upstream_calls_by_api: BTreeMap<&'static str, u64>,
    pub force_refresh_budget: u32,
    pub force_refresh_used_today: u64,
    pub consecutive_failures: u32,
    pub last_error: Option<ErrorStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenStatus {
    pub expires_in: u64,
    pub expires_at: u64,
    pub fetched_at: u64,
    pub generation: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorStatus {
    /// `transient`, `rate_limited`, `quota_exhausted`, `configuration` or `force_refused`.
    pub class: &'static str,
    pub wechat_errcode: Option<i64>,
    pub rid: Option<String>,
    pub message: String,
    /// Unix seconds.
    pub at: u64,
}

pub(super) fn of(slot: &Slot, settings: &KeeperSettings) -> AppStatus {
    let now = Instant::now();
    let now_ms = unix_now_ms();
    let token = slot.current.load_full();
    let health = slot.health();
    let backing_off = health.backoff_until.filter(|until| *until > now);
    let has_token = token
        .as_deref()
        .is_some_and(|t| super::schedule::serveable(t, now_ms, std::time::Duration::ZERO));
    let state = match (backing_off.and(health.backoff_class), has_token) {
        (Some(ErrorClass::Configuration), _) => "configuration_error",
        (Some(ErrorClass::QuotaExhausted), _) => "quota_exhausted",
        (Some(ErrorClass::RateLimited), _) => "rate_limited",
        (Some(_), _) => "backoff",
        (None, false) => "no_token",
        (None, true) => "ok",
    };
    let next = backing_off.or(health.refresh_at);
    let calls: BTreeMap<&'static str, u64> = if health.day == crate::credential::wechat_day(now_ms)
    {
        health.calls.clone()
    } else {
        BTreeMap::new()
    };
    AppStatus {
        id: slot.app.id.clone(),
        kind: slot.app.kind.as_str(),
        appid: slot.app.appid.clone(),
        mode: slot.app.mode.as_str(),
        state,
        token: token.as_deref().map(|t| TokenStatus {
            expires_in: t.expires_in_secs(now_ms),
            expires_at: t.expires_at_ms / 1000,
            fetched_at: t.fetched_at_ms / 1000,
            generation: t.generation,
        }),
        next_refresh_in: next.map(|at| at.saturating_duration_since(now).as_secs()),
        upstream_calls_today: calls.values().sum(),
        force_refresh_used_today: calls.get("stable_token_force").copied().unwrap_or(0),
        upstream_calls_by_api: calls,
        force_refresh_budget: settings.force_refresh_daily_budget,
        consecutive_failures: health.consecutive_failures,
        last_error: health.last_error.as_ref().map(|e| {
            let (class, errcode, rid) = match e.failure.as_ref() {
                Failure::Upstream(u) => (u.class.as_str(), u.errcode, u.rid.clone()),
                Failure::ForceRefused(_) => ("force_refused", None, None),
                Failure::Unavailable(_) => ("unavailable", None, None),
            };
            ErrorStatus {
                class,
                wechat_errcode: errcode,
                rid,
                message: e.failure.to_string(),
                at: e.at_ms / 1000,
            }
        }),
    }
}
