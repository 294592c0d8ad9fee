//! The status view of an app and its credentials: what operators and `GET /v1/apps` see.
//! Never a secret, never a token or ticket value.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::Failure;
use super::schedule::serveable;
use super::slot::Slot;
use crate::config::KeeperSettings;
use crate::credential::{CredentialKind, unix_now_ms, wechat_day};
use crate::wechat::ErrorClass;

#[derive(Debug, Clone, Serialize)]
pub struct AppStatus {
    pub id: String,
    pub kind: &'static str,
    /// WeChat's appid, or a WeCom app's corpid.
    pub appid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agentid: Option<u64>,
    /// `stable` or `classic` for official accounts; absent for WeCom.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// The access token's state: `ok`, `no_token`, `backoff` (transient), `rate_limited`,
    /// `quota_exhausted`, `configuration_error`, or (a component)
    /// `waiting_for_verify_ticket`.
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
    /// The app's tickets by type; `state` is `not_requested` until one is first asked for.
    pub tickets: BTreeMap<&'static str, TicketStatus>,
    /// A third-party platform's authorizers (counts by state) and verify ticket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<super::ComponentStatus>,
    /// The quota guard: budget, use, WeChat's figures, clears (see `keeper::quota`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<super::QuotaStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TicketStatus {
    pub state: &'static str,
    pub ticket: Option<TokenStatus>,
    pub next_refresh_in: Option<u64>,
    pub consecutive_failures: u32,
    pub last_error: Option<ErrorStatus>,
}

/// When a value expires and which one it is (never the value itself).
#[derive(Debug, Clone, Serialize)]
pub struct TokenStatus {
    pub expires_in: u64,
    pub expires_at: u64,
    pub fetched_at: u64,
    pub generation: u64,
    /// Whether the value is written to the store (false while the store refuses
    /// writes: it is held in memory and written once the store takes writes).
    pub persisted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorStatus {
    /// `refresh`, `transient`, `rate_limited`, `quota_exhausted`, `configuration`,
    /// `force_refused` or `unavailable`.
    pub class: &'static str,
    pub wechat_errcode: Option<i64>,
    pub rid: Option<String>,
    pub message: String,
    /// Unix seconds.
    pub at: u64,
}

/// One credential's part of the status.
struct Part {
    state: &'static str,
    value: Option<TokenStatus>,
    next_refresh_in: Option<u64>,
    consecutive_failures: u32,
    last_error: Option<ErrorStatus>,
}

fn part(slot: &Slot, none: &'static str) -> Part {
    let now = Instant::now();
    let now_ms = unix_now_ms();
    let value = slot.current.load_full();
    let health = slot.health();
    let has_value = value
        .as_deref()
        .is_some_and(|t| serveable(t, now_ms, Duration::ZERO));
    let waiting = health
        .last_error
        .as_ref()
        .is_some_and(|e| matches!(*e.failure, Failure::WaitingForVerifyTicket(_)));
    let state = match (health.backing_off(now), has_value) {
        (Some(_), _) if waiting => "waiting_for_verify_ticket",
        (Some(ErrorClass::Configuration), _) => "configuration_error",
        (Some(ErrorClass::QuotaExhausted), _) => "quota_exhausted",
        (Some(ErrorClass::RateLimited), _) => "rate_limited",
        (Some(_), _) => "backoff",
        (None, false) if slot.lazy() && !health.wanted => "not_requested",
        (None, false) => none,
        (None, true) => "ok",
    };
    let next = health
        .backoff_until
        .filter(|until| *until > now)
        .or(health.refresh_at.filter(|_| has_value));
    Part {
        state,
        value: value.as_deref().map(|t| TokenStatus {
            expires_in: t.expires_in_secs(now_ms),
            expires_at: t.expires_at_ms / 1000,
            fetched_at: t.fetched_at_ms / 1000,
            generation: t.generation,
            persisted: !slot.unsaved.load(std::sync::atomic::Ordering::SeqCst),
        }),
        next_refresh_in: next.map(|at| at.saturating_duration_since(now).as_secs()),
        consecutive_failures: health.consecutive_failures,
        last_error: health.last_error.as_ref().map(|e| {
            let (class, errcode, rid) = match e.failure.as_ref() {
                Failure::Upstream(u) => (u.class.as_str(), u.errcode, u.rid.clone()),
                Failure::ForceRefused(_) => ("force_refused", None, None),
                Failure::Unavailable(_) => ("unavailable", None, None),
                Failure::WaitingForVerifyTicket(_) => ("waiting_for_verify_ticket", None, None),
                Failure::Unauthorized(_) => ("unauthorized", None, None),
                Failure::NeedsReauthorization(_) => ("needs_reauthorization", None, None),
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

pub(super) fn of(token: &Slot, tickets: &[&Slot], settings: &KeeperSettings) -> AppStatus {
    let today = wechat_day(unix_now_ms());
    let mut calls: BTreeMap<&'static str, u64> = BTreeMap::new();
    for slot in std::iter::once(token).chain(tickets.iter().copied()) {
        let health = slot.health();
        if health.day == today {
            for (api, n) in &health.calls {
                *calls.entry(api).or_default() += n;
            }
        }
    }
    let main = part(token, "no_token");
    let tickets = tickets
        .iter()
        .filter_map(|slot| match slot.key.kind {
            CredentialKind::Ticket(t) => {
                let p = part(slot, "no_ticket");
                Some((
                    t.as_str(),
                    TicketStatus {
                        state: p.state,
                        ticket: p.value,
                        next_refresh_in: p.next_refresh_in,
                        consecutive_failures: p.consecutive_failures,
                        last_error: p.last_error,
                    },
                ))
            }
            CredentialKind::AccessToken => None,
        })
        .collect();
    AppStatus {
        id: token.app.id.clone(),
        kind: token.app.kind.as_str(),
        appid: token.app.appid.clone(),
        agentid: token.app.agentid(),
        mode: token.app.mode().map(|m| m.as_str()),
        state: main.state,
        token: main.value,
        next_refresh_in: main.next_refresh_in,
        upstream_calls_today: calls.values().sum(),
        force_refresh_used_today: calls.get("stable_token_force").copied().unwrap_or(0),
        upstream_calls_by_api: calls,
        force_refresh_budget: settings.force_refresh_daily_budget,
        consecutive_failures: main.consecutive_failures,
        last_error: main.last_error,
        tickets,
        component: None,
        quota: None,
    }
}
