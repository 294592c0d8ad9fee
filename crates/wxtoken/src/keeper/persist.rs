//! Writes the store refused (a read-only SQLite file, a full disk, Redis down): the
//! values and call counters are kept in memory, shown as waiting (`/readyz` degraded,
//! `persisted: false` in an app's status, a `store#writes` incident), and written again
//! every few seconds until the store takes them, so that nothing is lost once it clears.
//!
//! A value under a shared store's lease is not re-written here: the follower re-seeds
//! the store from memory after it comes back (see `shared`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::{Inner, Keeper};
use crate::alerts::AlertKind;
use crate::credential::unix_now_ms;
use crate::store::StoreError;

/// How often refused writes are tried again.
pub(super) const RETRY_EVERY: Duration = Duration::from_secs(2);

/// The incident open while the store refuses writes.
pub const STORE_WRITES_INCIDENT: &str = "store#writes";

/// What the store refused and has not taken since.
#[derive(Default)]
pub(crate) struct Pending {
    inner: Mutex<PendingInner>,
}

#[derive(Default)]
struct PendingInner {
    /// The last refusal's message, and since when (unix ms) writes fail.
    failing: Option<(String, u64)>,
    /// Upstream calls counted while the store refused them: (day, app, api) -> calls.
    usage: HashMap<(String, String, &'static str), u64>,
}

/// The store refusing writes, as `/readyz` tells it.
#[derive(Debug, Clone)]
pub struct WriteFailure {
    pub message: String,
    pub since_ms: u64,
    /// Credential values held in memory only.
    pub values: usize,
    /// Upstream call counters held in memory only.
    pub counters: usize,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A write failed with `error`.
    pub fn refused(&self, error: &StoreError) {
        let mut inner = self.lock();
        let since = inner.failing.as_ref().map_or_else(unix_now_ms, |f| f.1);
        inner.failing = Some((error.to_string(), since));
    }

    /// An upstream call counter the store refused, to be added later.
    pub fn add_usage(&self, day: String, app: String, api: &'static str, calls: u64) {
        *self.lock().usage.entry((day, app, api)).or_default() += calls;
    }

    fn failing(&self) -> bool {
        self.lock().failing.is_some()
    }
}

impl Keeper {
    /// Whether (and since when, and what) the store refuses writes.
    pub fn store_write_failure(&self) -> Option<WriteFailure> {
        let pending = &self.inner.ctx.persist;
        let (message, since_ms, counters) = {
            let inner = pending.lock();
            let (message, since) = inner.failing.clone()?;
            (message, since, inner.usage.len())
        };
        let values = self
            .app_slots()
            .iter()
            .filter(|s| s.unsaved.load(Ordering::SeqCst))
            .count();
        Some(WriteFailure {
            message,
            since_ms,
            values,
            counters,
        })
    }
}

pub(super) async fn retry(keeper: Weak<Inner>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(RETRY_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let Some(inner) = keeper.upgrade() else {
            return;
        };
        let keeper = Keeper { inner };
        if keeper.inner.ctx.persist.failing() {
            flush(&keeper).await;
        }
    }
}

/// Writes what is waiting; clears the failure once everything is written.
async fn flush(keeper: &Keeper) {
    let ctx = &keeper.inner.ctx;
    let mut error = None;
    let mut values = 0;
    for slot in keeper.app_slots() {
        // Cleared first: a refused install meanwhile sets it again, so no newer value is
        // taken for written.
        if !slot.unsaved.swap(false, Ordering::SeqCst) {
            continue;
        }
        let Some(token) = slot.current.load_full() else {
            continue;
        };
        match ctx.store.save(slot.key.clone(), (*token).clone()).await {
            Ok(_) => values += 1,
            Err(e) => {
                slot.unsaved.store(true, Ordering::SeqCst);
                error = Some(e);
                break;
            }
        }
    }
    let usage = std::mem::take(&mut ctx.persist.lock().usage);
    let mut counters = 0;
    for ((day, app, api), calls) in usage {
        if error.is_some() {
            ctx.persist.add_usage(day, app, api, calls);
            continue;
        }
        match ctx
            .store
            .add_usage(day.clone(), app.clone(), api, calls)
            .await
        {
            Ok(()) => counters += 1,
            Err(e) => {
                ctx.persist.add_usage(day, app, api, calls);
                error = Some(e);
            }
        }
    }
    match error {
        Some(e) => {
            ctx.persist.refused(&e);
            let since = ctx.persist.lock().failing.as_ref().map_or(0, |f| f.1);
            // A shared store that does not answer has its own incident
            // (`store#unreachable`, raised by the refreshes).
            if ctx.store.coordination().is_none() {
                ctx.alerts.raise(
                    STORE_WRITES_INCIDENT.to_owned(),
                    AlertKind::StoreWrites,
                    None,
                    format!(
                        "the store refuses writes for {}s ({e}); serving from memory",
                        unix_now_ms().saturating_sub(since) / 1000
                    ),
                );
            }
            warn!(error = %e, "the store still refuses writes; serving from memory and trying again");
        }
        None => {
            // A write refused while this flush ran is still waiting.
            let still = keeper
                .app_slots()
                .iter()
                .any(|s| s.unsaved.load(Ordering::SeqCst))
                || !ctx.persist.lock().usage.is_empty();
            if !still {
                ctx.persist.lock().failing = None;
                ctx.alerts.resolve(STORE_WRITES_INCIDENT);
                info!(
                    values,
                    counters,
                    "the store accepts writes again: everything held in memory is written"
                );
            }
        }
    }
}
