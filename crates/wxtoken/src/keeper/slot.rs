//! One credential's state: the current value (read lock-free), the demand callers leave
//! for the driver, the outcome the driver publishes back, and health for status.
//!
//! Single flight comes from the shape, not from a flag: only the credential's driver task
//! ever calls WeChat. Callers bump a sequence number in [`Demand`], wake the driver, and
//! wait on a watch channel until the driver says it has served their number. Because a
//! caller subscribes before it bumps, and a watch channel keeps the latest value, no
//! wake-up can be lost.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwapOption;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::Failure;
use crate::config::AppSettings;
use crate::credential::{CredentialKey, Generation, Token, wechat_day};
use crate::wechat::ErrorClass;

/// What callers have asked of the driver since it last looked. The driver takes the
/// fields (leaving defaults) together with the sequence number it then serves.
#[derive(Debug, Default, Clone)]
pub(crate) struct Demand {
    /// Bumped by every caller; the driver serves all numbers up to the one it took.
    pub seq: u64,
    /// A client reported this generation dead (40001/40014/42001).
    pub invalidate: Option<Generation>,
    /// The largest `min_ttl` a waiting caller needs, in milliseconds.
    pub min_left_ms: u64,
}

/// What the driver publishes after serving demands or installing a value.
#[derive(Debug, Default, Clone)]
pub(crate) struct Outcome {
    /// Every demand numbered up to this has been acted on.
    pub served_seq: u64,
    /// Why the last served round did not produce a value, if it failed.
    pub failure: Option<Arc<Failure>>,
    /// Bumped whenever a value is installed, so `min_ttl` waiters can watch for one.
    pub installs: u64,
}

/// The most recent upstream error, for status.
#[derive(Debug, Clone)]
pub(crate) struct ErrorRecord {
    pub failure: Arc<Failure>,
    pub at_ms: u64,
}

/// Scheduling and bookkeeping, guarded by one std mutex that is never held across an
/// await.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// When the next proactive refresh is due (jittered once per value).
    pub refresh_at: Option<Instant>,
    /// No upstream call before this, after a failure.
    pub backoff_until: Option<Instant>,
    /// The class of the failure that set `backoff_until`.
    pub backoff_class: Option<ErrorClass>,
    pub consecutive_failures: u32,
    pub last_error: Option<ErrorRecord>,
    /// Unix ms of the last refresh a client's report caused (classic-mode cooldown).
    pub last_report_refresh_ms: Option<u64>,
    /// Unix ms of the last force_refresh sent, to keep them 30 s apart.
    pub last_force_ms: Option<u64>,
    /// The WeChat day `calls` counts.
    pub day: String,
    /// Upstream calls today by API name; force refreshes count against the budget.
    pub calls: BTreeMap<&'static str, u64>,
}

impl Health {
    /// Counts one call of `api` on the day of `now_ms`, starting a new day if needed.
    pub fn count_call(&mut self, api: &'static str, now_ms: u64) -> String {
        let day = wechat_day(now_ms);
        if day != self.day {
            self.day = day.clone();
            self.calls.clear();
        }
        *self.calls.entry(api).or_default() += 1;
        day
    }

    /// Calls of `api` today.
    pub fn calls_today(&self, api: &str, now_ms: u64) -> u64 {
        if self.day != wechat_day(now_ms) {
            return 0;
        }
        self.calls.get(api).copied().unwrap_or(0)
    }
}

/// One credential.
#[derive(Debug)]
pub(crate) struct Slot {
    pub key: CredentialKey,
    pub app: AppSettings,
    /// The value served; swapped whole, read without a lock.
    pub current: ArcSwapOption<Token>,
    demand: Mutex<Demand>,
    /// Wakes the driver; holds a permit if the driver is busy, so a demand is never missed.
    pub wake: Notify,
    pub outcome: watch::Sender<Outcome>,
    pub health: Mutex<Health>,
}

impl Slot {
    pub fn new(app: AppSettings, stored: Option<Token>, health: Health) -> Self {
        Self {
            key: CredentialKey::access_token(app.id.clone()),
            app,
            current: ArcSwapOption::new(stored.map(Arc::new)),
            demand: Mutex::new(Demand::default()),
            wake: Notify::new(),
            outcome: watch::Sender::new(Outcome::default()),
            health: Mutex::new(health),
        }
    }

    pub fn health(&self) -> MutexGuard<'_, Health> {
        // A panic while holding this lock leaves plain counters behind; they stay usable.
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn demand(&self) -> MutexGuard<'_, Demand> {
        self.demand.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leaves a demand for the driver and waits until it has been served. Returns the
    /// outcome of the round that served it, or `None` if the driver has stopped.
    pub async fn request(&self, fill: impl FnOnce(&mut Demand)) -> Option<Outcome> {
        let mut rx = self.outcome.subscribe();
        let seq = {
            let mut demand = self.demand();
            demand.seq += 1;
            fill(&mut demand);
            demand.seq
        };
        self.wake.notify_one();
        let outcome = rx.wait_for(|o| o.served_seq >= seq).await.ok()?;
        Some(outcome.clone())
    }

    /// Takes the pending demand if any caller is waiting beyond `served`.
    pub fn take_demand(&self, served: u64) -> Option<Demand> {
        let mut demand = self.demand();
        (demand.seq > served).then(|| {
            let taken = demand.clone();
            demand.invalidate = None;
            demand.min_left_ms = 0;
            taken
        })
    }
}
