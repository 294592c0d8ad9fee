//! Each app's recent credential events (refreshes and failures of its access token and
//! tickets), for the dashboard's timeline. In memory only, bounded per app by age and
//! count; written by the drivers when they install a value or record a failure, never
//! read on the serving path. An authorizer's credentials are not recorded (a platform
//! may hold 100,000 of them).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use super::Failure;
use crate::credential::{CredentialKind, unix_now_ms};
use crate::wechat::UpstreamError;

/// How long an event is kept: the dashboard shows one day.
pub const KEEP_MS: u64 = 24 * 3_600_000;

/// At most this many events per app: a token refreshed every few seconds (a test, a
/// misbehaving upstream) must not grow memory without bound. 2000 is WeChat's daily
/// token quota, so a day of any sane app fits.
pub const CAP_PER_APP: usize = 2000;

/// What happened to a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new value was installed (fetched here or adopted from another instance).
    Refreshed,
    /// A refresh failed.
    Failed,
}

/// One event, as `GET /v1/apps/{app}/timeline` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Unix milliseconds.
    pub at: u64,
    /// `access_token`, or `ticket/<type>` (`ticket/jsapi`...).
    pub credential: String,
    pub event: EventKind,
    /// The installed value's generation; on a failure, the generation still held, if any.
    pub generation: Option<u64>,
    /// The failure's message (never a value); null for a refresh.
    pub error: Option<String>,
}

/// The name of a credential in the timeline.
pub fn credential_name(kind: CredentialKind) -> String {
    match kind {
        CredentialKind::AccessToken => "access_token".to_owned(),
        CredentialKind::Ticket(t) => format!("ticket/{}", t.as_str()),
    }
}

/// A failure as the timeline shows it: its message, and WeChat's errcode if it gave one.
pub fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Upstream(UpstreamError {
            errcode: Some(code),
            ..
        }) => format!("{failure} (errcode {code})"),
        _ => failure.to_string(),
    }
}

/// Every app's ring of events.
#[derive(Debug, Default)]
pub struct History {
    /// std Mutex: held for a push or a copy, never across an await.
    apps: Mutex<HashMap<String, VecDeque<Event>>>,
}

impl History {
    /// Records that `kind` of `app` got a new value of `generation`, fetched at `at_ms`
    /// (unix ms; by this instance or, for a value adopted or loaded, by whichever fetched
    /// it, so every instance of a fleet shows the same time).
    pub fn refreshed(&self, app: &str, kind: CredentialKind, generation: u64, at_ms: u64) {
        self.push(
            app,
            Event {
                at: at_ms,
                credential: credential_name(kind),
                event: EventKind::Refreshed,
                generation: Some(generation),
                error: None,
            },
            unix_now_ms(),
        );
    }

    /// Records that a refresh of `kind` of `app` failed with `error`.
    pub fn failed(&self, app: &str, kind: CredentialKind, held: Option<u64>, error: &Failure) {
        self.push(
            app,
            Event {
                at: unix_now_ms(),
                credential: credential_name(kind),
                event: EventKind::Failed,
                generation: held,
                error: Some(describe(error)),
            },
            unix_now_ms(),
        );
    }

    /// Adds `event` in time order and drops what is older than [`KEEP_MS`] or beyond
    /// [`CAP_PER_APP`].
    pub fn push(&self, app: &str, event: Event, now_ms: u64) {
        let oldest = now_ms.max(event.at).saturating_sub(KEEP_MS);
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let ring = match apps.get_mut(app) {
            Some(ring) => ring,
            None => apps.entry(app.to_owned()).or_default(),
        };
        while ring.front().is_some_and(|e| e.at < oldest) || ring.len() >= CAP_PER_APP {
            ring.pop_front();
        }
        if event.at < oldest {
            return;
        }
        // Nearly always at the end; a value loaded or adopted may be older than the last.
        let at = ring
            .iter()
            .rposition(|e| e.at <= event.at)
            .map_or(0, |i| i + 1);
        ring.insert(at, event);
    }

    /// `app`'s events at or after `since_ms` (unix ms) and within the last [`KEEP_MS`]
    /// before `now_ms`, oldest first.
    pub fn since(&self, app: &str, since_ms: u64, now_ms: u64) -> Vec<Event> {
        let from = since_ms.max(now_ms.saturating_sub(KEEP_MS));
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.get(app)
            .map(|ring| ring.iter().filter(|e| e.at >= from).cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets `app` (removed at runtime).
    pub fn forget(&self, app: &str) {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(app);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::TicketType;

    fn at(ms: u64, event: EventKind) -> Event {
        Event {
            at: ms,
            credential: "access_token".into(),
            event,
            generation: Some(1),
            error: None,
        }
    }

    #[test]
    fn events_are_listed_oldest_first_from_since() {
        let history = History::default();
        for ms in [1_000, 2_000, 3_000] {
            history.push("shop", at(ms, EventKind::Refreshed), ms);
        }
        history.push("other", at(2_500, EventKind::Failed), 2_500);
        let got: Vec<u64> = history
            .since("shop", 2_000, 4_000)
            .iter()
            .map(|e| e.at)
            .collect();
        assert_eq!(got, vec![2_000, 3_000]);
        assert!(history.since("nobody", 0, 4_000).is_empty());
    }

    #[test]
    fn events_older_than_a_day_are_dropped_and_not_listed() {
        let history = History::default();
        let day0 = 10 * KEEP_MS;
        history.push("shop", at(day0, EventKind::Refreshed), day0);
        history.push("shop", at(day0 + 1, EventKind::Failed), day0 + 1);
        // Not listed once a day has passed, even before anything new is pushed.
        assert_eq!(history.since("shop", 0, day0 + KEEP_MS + 1).len(), 1);
        history.push(
            "shop",
            at(day0 + KEEP_MS + 1, EventKind::Refreshed),
            day0 + KEEP_MS + 1,
        );
        let ring = history.apps.lock().expect("not poisoned");
        let kept: Vec<u64> = ring["shop"].iter().map(|e| e.at).collect();
        assert_eq!(kept, vec![day0 + 1, day0 + KEEP_MS + 1]);
    }

    #[test]
    fn an_older_event_is_put_in_time_order_and_one_older_than_a_day_is_not_kept() {
        let history = History::default();
        let now = 3 * KEEP_MS;
        history.push("shop", at(now, EventKind::Refreshed), now);
        // A value loaded from the store or adopted: fetched before the last event.
        history.push("shop", at(now - 5_000, EventKind::Refreshed), now);
        history.push("shop", at(now - KEEP_MS - 1, EventKind::Refreshed), now);
        let got: Vec<u64> = history.since("shop", 0, now).iter().map(|e| e.at).collect();
        assert_eq!(got, vec![now - 5_000, now]);
    }

    #[test]
    fn an_app_keeps_at_most_the_cap_newest_events() {
        let history = History::default();
        let base = 5 * KEEP_MS;
        for i in 0..(CAP_PER_APP as u64 + 10) {
            history.push("shop", at(base + i, EventKind::Refreshed), base + i);
        }
        let events = history.since("shop", 0, base + CAP_PER_APP as u64 + 10);
        assert_eq!(events.len(), CAP_PER_APP);
        assert_eq!(events[0].at, base + 10);
    }

    #[test]
    fn credentials_are_named_as_in_the_routes() {
        assert_eq!(credential_name(CredentialKind::AccessToken), "access_token");
        assert_eq!(
            credential_name(CredentialKind::Ticket(TicketType::Jsapi)),
            "ticket/jsapi"
        );
        let history = History::default();
        history.failed(
            "shop",
            CredentialKind::Ticket(TicketType::WxCard),
            None,
            &Failure::Upstream(UpstreamError {
                class: crate::wechat::ErrorClass::Configuration,
                errcode: Some(40164),
                message: "invalid ip".into(),
                rid: None,
            }),
        );
        let json =
            serde_json::to_value(&history.since("shop", 0, unix_now_ms())[0]).expect("serializes");
        assert_eq!(json["credential"], "ticket/wx_card");
        assert_eq!(json["event"], "failed");
        assert_eq!(json["error"], "invalid ip (errcode 40164)");
        assert!(json["generation"].is_null());
        history.forget("shop");
        assert!(history.since("shop", 0, unix_now_ms()).is_empty());
    }
}
