//! The expiry watcher: a light task that looks over every app's credentials (never the
//! authorizers': a platform may have 100,000) and raises an `expiring` incident for one
//! that has less than `keeper.expiry_alert_secs` left (or no value, unless WeChat
//! refused its configuration) while its last refresh failed. A successful refresh resolves it (see `driver::install`); so does a
//! value adopted from another instance, on the next look.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;

use super::slot::Slot;
use super::{Inner, Keeper};
use crate::alerts::{AlertKind, Alerts, credential_incident};
use crate::credential::unix_now_ms;
use crate::wechat::ErrorClass;

/// How often the watcher looks: a few seconds is nothing next to a 15-minute warning,
/// and a look costs one lock per credential.
pub(super) const WATCH_EVERY: Duration = Duration::from_secs(2);

pub(super) async fn watch(keeper: Weak<Inner>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(WATCH_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let Some(inner) = keeper.upgrade() else {
            return;
        };
        let keeper = Keeper { inner };
        let alert_below = keeper.inner.ctx.settings().alerts.expiry_alert;
        for slot in keeper.app_slots() {
            look(&slot, &keeper.inner.ctx.alerts, alert_below, unix_now_ms());
        }
    }
}

/// Raises or resolves one credential's `expiring` incident.
fn look(slot: &Slot, alerts: &Alerts, alert_below: Duration, now_ms: u64) {
    let (failures, class) = {
        let health = slot.health();
        (health.consecutive_failures, health.backoff_class)
    };
    let left_ms = slot
        .current
        .load()
        .as_deref()
        .map(|t| t.remaining_ms(now_ms));
    let credential = slot.key.to_string();
    let incident = credential_incident(&credential, "expiring");
    if failures == 0 {
        alerts.resolve(&incident);
        return;
    }
    let summary = match left_ms {
        Some(ms) if ms >= alert_below.as_millis() as u64 => return,
        // Never had a value because WeChat refuses the configuration: that incident
        // (configuration_error) says it already.
        Some(0) | None if class == Some(ErrorClass::Configuration) => return,
        Some(0) | None => {
            format!("{credential} has no valid value and its last {failures} refresh(es) failed")
        }
        Some(ms) => format!(
            "{credential} expires in {}s and its last {failures} refresh(es) failed",
            ms / 1000
        ),
    };
    alerts.raise(incident, AlertKind::Expiring, Some(&slot.key.app), summary);
}
