//! The near cache and single flight.
//!
//! Each (app, token or ticket type) has a slot holding the newest value seen and the
//! requests on their way. A caller whose value is missing or too close to expiry joins a
//! request already on its way if one fits, and only otherwise starts one; so however
//! many tasks ask at once, one request per slot goes out, and all of them get its
//! answer or its error. Reports of a dead value are coalesced the same way.
//!
//! Requests run in tasks of their own: a caller that gives up (a timeout, a dropped
//! future) does not cancel the request the others wait on, and the answer still lands
//! in the cache.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::Error;
use crate::credential::Credential;
use crate::transport::Kind;

/// How many reported-dead values a slot remembers. A report of one of them is answered
/// from the cache; older values only come from callers holding a token several
/// refreshes old, and the server answers those correctly anyway.
const RETIRED_KEPT: usize = 4;

/// One request's outcome, shared by every caller waiting on it.
pub(crate) type Flight = Shared<BoxFuture<'static, Result<Credential, Error>>>;

/// The work a flight does: one HTTP request.
pub(crate) type Work = BoxFuture<'static, Result<Credential, Error>>;

/// Which slot: an app's token, or one of its tickets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) app: String,
    pub(crate) kind: Kind,
}

/// What a lookup found.
pub(crate) enum Step {
    /// A value that fits, from the cache.
    Ready(Credential),
    /// A request on its way (joined or just started); await it.
    Wait(Flight),
}

/// The near cache of one client: every slot behind one lock, since each operation is a
/// few look-ups and never awaits while holding it.
#[derive(Default)]
pub(crate) struct Cache {
    slots: Mutex<HashMap<Key, Slot>>,
    /// Tells flights apart, so a finished one removes itself and not a newer one.
    next_id: AtomicU64,
    /// Lookups answered from the cache, without a request.
    pub(crate) hits: AtomicU64,
    /// Lookups that joined a request another caller started.
    pub(crate) coalesced: AtomicU64,
}

#[derive(Default)]
struct Slot {
    /// The newest value seen; handed out while it has more than the caller's min_ttl.
    current: Option<Credential>,
    /// GETs on their way, each with the `min_ttl` it asked the server for.
    fetches: Vec<Pending>,
    /// Invalidations on their way, each for one reported value.
    invalidations: Vec<Pending>,
    /// Values reported dead and replaced; never installed again.
    retired: VecDeque<Arc<str>>,
}

struct Pending {
    id: u64,
    /// GET: the server-side min_ttl asked for (None: none). Invalidate: unused.
    min_ttl: Option<u64>,
    /// Invalidate: the value reported dead.
    dead: Option<Arc<str>>,
    flight: Flight,
}

impl Slot {
    /// Holds nothing worth keeping.
    fn is_idle(&self) -> bool {
        self.current.is_none()
            && self.fetches.is_empty()
            && self.invalidations.is_empty()
            && self.retired.is_empty()
    }

    fn is_retired(&self, value: &str) -> bool {
        self.retired.iter().any(|v| &**v == value)
    }

    /// Installs `new` unless the current value is newer (answers can arrive out of
    /// order) or `new` was already reported dead.
    fn offer(&mut self, new: &Credential) {
        if self.is_retired(&new.value) {
            return;
        }
        let keep = self.current.as_ref().is_some_and(|current| {
            current.expires_at > new.expires_at && !self.is_retired(&current.value)
        });
        if !keep {
            self.current = Some(new.clone());
        }
    }
}

impl Cache {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Slot>> {
        // A panic under the lock leaves at worst a stale flight or value, which the next
        // settle or offer corrects: keep serving rather than cascade the panic.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A value with more than `margin` left, or the request that will bring one: an
    /// invalidation on its way, a GET whose server-side `min_ttl` covers `min_ttl`, or
    /// else a new GET doing `fetch`.
    pub(crate) fn get(
        self: &Arc<Self>,
        key: &Key,
        margin: Duration,
        min_ttl: Option<u64>,
        fetch: impl FnOnce() -> Work,
    ) -> Step {
        let mut slots = self.lock();
        let slot = slots.entry(key.clone()).or_default();
        if let Some(current) = slot.current.as_ref().filter(|c| c.has_more_than(margin)) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Step::Ready(current.clone());
        }
        // An invalidation brings the newest value the server has: as good as a GET.
        let joinable = slot.invalidations.last().or_else(|| {
            slot.fetches
                .iter()
                .find(|p| p.min_ttl.unwrap_or(0) >= min_ttl.unwrap_or(0))
        });
        if let Some(pending) = joinable {
            self.coalesced.fetch_add(1, Ordering::Relaxed);
            return Step::Wait(pending.flight.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let flight = self.launch(key.clone(), id, None, fetch());
        slot.fetches.push(Pending {
            id,
            min_ttl,
            dead: None,
            flight: flight.clone(),
        });
        Step::Wait(flight)
    }

    /// The replacement for `dead`: the invalidation of `dead` on its way, the cached
    /// value when `dead` was already reported and replaced, or else a new invalidation
    /// doing `post`.
    pub(crate) fn invalidate(
        self: &Arc<Self>,
        key: &Key,
        dead: &str,
        margin: Duration,
        post: impl FnOnce() -> Work,
    ) -> Step {
        let mut slots = self.lock();
        let slot = slots.entry(key.clone()).or_default();
        if let Some(pending) = slot
            .invalidations
            .iter()
            .find(|p| p.dead.as_deref() == Some(dead))
        {
            self.coalesced.fetch_add(1, Ordering::Relaxed);
            return Step::Wait(pending.flight.clone());
        }
        if slot.is_retired(dead) {
            if let Some(current) = slot.current.as_ref().filter(|c| c.has_more_than(margin)) {
                // The server would answer this one too, without fetching anything.
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Step::Ready(current.clone());
            }
        }
        // Hand the dead value out no more: lookups now wait for its replacement.
        if slot.current.as_ref().is_some_and(|c| &*c.value == dead) {
            slot.current = None;
        }
        let dead: Arc<str> = dead.into();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let flight = self.launch(key.clone(), id, Some(dead.clone()), post());
        slot.invalidations.push(Pending {
            id,
            min_ttl: None,
            dead: Some(dead),
            flight: flight.clone(),
        });
        Step::Wait(flight)
    }

    /// Runs `work` in its own task, which settles the slot when it is done; returns the
    /// shared outcome.
    fn launch(self: &Arc<Self>, key: Key, id: u64, dead: Option<Arc<str>>, work: Work) -> Flight {
        let mut guard = Unregister {
            cache: Some(Arc::clone(self)),
            key,
            id,
        };
        let task = tokio::spawn(async move {
            let result = work.await;
            if let Some(cache) = guard.cache.take() {
                cache.settle(&guard.key, id, dead.as_deref(), &result);
            }
            result
        });
        async move {
            task.await.unwrap_or_else(|e| {
                Err(Error::Unavailable {
                    message: format!("the request task stopped before answering: {e}"),
                    retry_after: None,
                })
            })
        }
        .boxed()
        .shared()
    }

    /// Removes flight `id` and offers its value, in one step, so that no caller sees
    /// the flight gone and the value not yet there.
    fn settle(&self, key: &Key, id: u64, dead: Option<&str>, result: &Result<Credential, Error>) {
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(key) else {
            return;
        };
        slot.fetches.retain(|p| p.id != id);
        slot.invalidations.retain(|p| p.id != id);
        let Ok(new) = result else {
            // Asking for apps that do not exist must not grow the map forever.
            if slot.is_idle() {
                slots.remove(key);
            }
            return;
        };
        // The server keeps answering with the reported value when WeChat does: then it
        // is not dead as far as anyone can tell.
        if let Some(dead) = dead.filter(|d| *d != &*new.value) {
            if !slot.is_retired(dead) {
                if slot.retired.len() == RETIRED_KEPT {
                    slot.retired.pop_front();
                }
                slot.retired.push_back(dead.into());
            }
        }
        slot.offer(new);
    }

    fn unregister(&self, key: &Key, id: u64) {
        let mut slots = self.lock();
        if let Some(slot) = slots.get_mut(key) {
            slot.fetches.retain(|p| p.id != id);
            slot.invalidations.retain(|p| p.id != id);
            if slot.is_idle() {
                slots.remove(key);
            }
        }
    }
}

/// Removes a flight whose task ended without settling (it panicked, or the runtime shut
/// down), so later callers start a new request instead of joining a dead one.
struct Unregister {
    /// Taken by the task once it has settled the slot itself.
    cache: Option<Arc<Cache>>,
    key: Key,
    id: u64,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        if let Some(cache) = self.cache.take() {
            cache.unregister(&self.key, self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use tokio::time::Instant;

    use super::*;

    fn credential(value: &str, expires_at: u64, left: u64) -> Credential {
        Credential {
            value: value.into(),
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(expires_at),
            valid_until: Instant::now() + Duration::from_secs(left),
        }
    }

    #[test]
    fn an_older_answer_does_not_replace_a_newer_value() {
        let mut slot = Slot::default();
        slot.offer(&credential("new", 2000, 2000));
        slot.offer(&credential("old", 1000, 1000));
        assert_eq!(slot.current.as_ref().map(|c| &*c.value), Some("new"));
    }

    #[test]
    fn a_retired_value_is_never_installed_and_always_replaced() {
        let mut slot = Slot::default();
        slot.retired.push_back("dead".into());
        slot.offer(&credential("dead", 3000, 3000));
        assert!(slot.current.is_none());
        slot.current = Some(credential("dead", 3000, 3000));
        slot.offer(&credential("fresh", 2000, 2000));
        assert_eq!(slot.current.as_ref().map(|c| &*c.value), Some("fresh"));
    }

    #[tokio::test]
    async fn a_value_is_served_while_it_has_more_than_the_margin_left() {
        let cache = Arc::new(Cache::default());
        let key = Key {
            app: "shop".into(),
            kind: Kind::AccessToken,
        };
        let fetch = || async { Ok(credential("T1", 100, 100)) }.boxed();
        let Step::Wait(flight) = cache.get(&key, Duration::from_secs(60), None, fetch) else {
            panic!("a cold cache has nothing ready");
        };
        assert_eq!(&*flight.await.expect("fetched").value, "T1");
        let again = || async { Ok(credential("T2", 200, 200)) }.boxed();
        let step = cache.get(&key, Duration::from_secs(60), None, again);
        assert!(matches!(step, Step::Ready(c) if &*c.value == "T1"));
        // 100 s left is not more than a 120 s margin: a new request.
        let Step::Wait(flight) = cache.get(&key, Duration::from_secs(120), None, again) else {
            panic!("T1 has too little left");
        };
        assert_eq!(&*flight.await.expect("fetched").value, "T2");
        assert_eq!(cache.hits.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_failed_lookup_leaves_no_slot_behind() {
        let cache = Arc::new(Cache::default());
        let key = Key {
            app: "nope".into(),
            kind: Kind::AccessToken,
        };
        let fail = || async { Err(Error::InvalidConfig("no such app".into())) }.boxed();
        let Step::Wait(flight) = cache.get(&key, Duration::from_secs(60), None, fail) else {
            panic!("nothing cached");
        };
        assert!(flight.await.is_err());
        assert!(cache.lock().is_empty());
    }
}
