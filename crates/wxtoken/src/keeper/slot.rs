//! One credential's state: the current value (read lock-free), the demand callers leave
//! for the driver, the outcome the driver publishes back, and health for status. Also
//! the caller's side of single flight: [`Slot::obtain`] and [`Slot::invalidate`].
//!
//! Single flight comes from the shape, not from a flag: only the credential's driver task
//! ever calls WeChat. Callers bump a sequence number in [`Demand`], wake the driver, and
//! wait on a watch channel until the driver says it has served their number. Because a
//! caller subscribes before it bumps, and a watch channel keeps the latest value, no
//! wake-up can be lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::schedule::{Policy, serveable_until};
use super::shared::is_newer;
use super::{Failure, KeeperError};
use crate::config::{AppSettings, KeeperSettings, TokenMode};
use crate::credential::{
    CredentialKey, CredentialKind, Generation, Token, unix_now_ms, wechat_day,
};
use crate::wechat::ErrorClass;

/// The longest a caller waits for its credential's driver: past the upstream request
/// timeout (10 s) and a lease holder's failover (a few lease lifetimes), so it only ends
/// waits on a driver that is stuck or gone.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(30);

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
    /// The driver has stopped for good (shutdown): every demand, now and later, is
    /// answered at once with no value.
    pub closed: bool,
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
    /// Whether anyone ever asked for this credential: lazy ones (tickets) are fetched
    /// only once somebody has.
    pub wanted: bool,
    /// The WeChat day `calls` counts.
    pub day: String,
    /// Upstream calls today by API name; force refreshes count against the budget.
    pub calls: BTreeMap<&'static str, u64>,
    /// When the held value stops being servable by the monotonic clock, noted when it
    /// was installed or adopted, with its generation and wall-clock expiry: a wall clock
    /// set back since must not keep a dead value served (see `driver::end_if_over`).
    pub real_end: Option<RealEnd>,
}

/// See [`Health::real_end`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct RealEnd {
    pub at: Instant,
    pub generation: u64,
    pub expires_at_ms: u64,
    /// What the wall clock should say is left at `at`: the serve margin.
    pub margin_ms: u64,
}

impl RealEnd {
    /// The end of `token`'s servable life, from what is left of it at `now_ms`.
    pub fn of(token: &Token, now_ms: u64, to_death: bool) -> Self {
        let margin = if to_death {
            Duration::ZERO
        } else {
            super::schedule::serve_margin(token)
        };
        let left = Duration::from_millis(token.remaining_ms(now_ms)).saturating_sub(margin);
        Self {
            at: Instant::now() + left,
            generation: token.generation,
            expires_at_ms: token.expires_at_ms,
            margin_ms: margin.as_millis() as u64,
        }
    }
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

    /// The class of the backoff in force at `now`, if any.
    pub fn backing_off(&self, now: Instant) -> Option<ErrorClass> {
        self.backoff_until
            .filter(|until| *until > now)
            .and(self.backoff_class)
    }
}

/// One credential.
#[derive(Debug)]
pub(crate) struct Slot {
    pub key: CredentialKey,
    /// Shared by an app's credentials (and by all of a component's authorizers).
    pub app: Arc<AppSettings>,
    /// A ticket's access-token slot: tickets are fetched with its token.
    pub parent: Option<Arc<Slot>>,
    /// The value served; swapped whole, read without a lock.
    pub current: ArcSwapOption<Token>,
    /// WeChat answered a refresh with the very value held (WeCom does until the token
    /// dies): nothing better can be had before it dies, so it is served to its end and
    /// the next fetch waits for its death. Cleared when a new value is installed.
    pub to_death: AtomicBool,
    /// Unix ms of the last time a caller asked for this credential (0: not since
    /// start): a lazy one nobody asked for in `keeper.ticket_idle` is not refreshed.
    pub last_asked_ms: AtomicU64,
    /// This instance holds the credential's lease in the shared store and is
    /// refreshing under it: its writes are fenced by the lease.
    pub leased: AtomicBool,
    /// The store refused to write `current` (and no lease fences it): written again
    /// by `persist` once the store takes writes.
    pub unsaved: AtomicBool,
    /// The value `current` replaced, kept while WeChat may still accept it (the
    /// overlap after a renewal), so the gateway recognises a token an SDK still holds.
    pub previous: ArcSwapOption<Token>,
    demand: Mutex<Demand>,
    /// Wakes the driver; holds a permit if the driver is busy, so a demand is never missed.
    pub wake: Notify,
    pub outcome: watch::Sender<Outcome>,
    pub health: Mutex<Health>,
    /// An authorizer's token: its record (refresh token, state) and its component's
    /// parking (pace of background refreshes, parked drivers).
    pub authorizer: Option<Arc<super::platform::AuthorizerLink>>,
    /// This slot itself, for starting a parked driver from `&self`.
    me: std::sync::Weak<Slot>,
    /// A driver task runs for this slot (authorizers' drivers park when idle).
    pub running: AtomicBool,
    /// Something was asked of a parked driver since it last looked.
    pub poke: AtomicBool,
    /// The parking released this background refresh at the component's pace already.
    pub paced: AtomicBool,
    /// The number of this slot's latest entry in its parking (older entries are stale).
    pub parked: AtomicU64,
}

impl Slot {
    pub fn new(
        key: CredentialKey,
        app: Arc<AppSettings>,
        parent: Option<Arc<Slot>>,
        stored: Option<Token>,
        health: Health,
    ) -> Self {
        Self {
            key,
            app,
            parent,
            current: ArcSwapOption::new(stored.map(Arc::new)),
            previous: ArcSwapOption::empty(),
            to_death: AtomicBool::new(false),
            last_asked_ms: AtomicU64::new(0),
            leased: AtomicBool::new(false),
            unsaved: AtomicBool::new(false),
            demand: Mutex::new(Demand::default()),
            wake: Notify::new(),
            outcome: watch::Sender::new(Outcome::default()),
            health: Mutex::new(health),
            authorizer: None,
            me: std::sync::Weak::new(),
            running: AtomicBool::new(false),
            poke: AtomicBool::new(false),
            paced: AtomicBool::new(false),
            parked: AtomicU64::new(0),
        }
    }

    /// This slot as an authorizer's token, linked to its record; its driver parks when
    /// idle.
    pub fn linked(
        mut self,
        link: Arc<super::platform::AuthorizerLink>,
        me: std::sync::Weak<Slot>,
    ) -> Self {
        self.authorizer = Some(link);
        self.me = me;
        self
    }

    /// Makes sure a driver runs for a slot whose driver may be parked (a no-op for
    /// the others, whose driver always runs). The flag and the poke are read in the
    /// opposite order by a parking driver (see `driver::supervise`), so one of the two
    /// always sees the other: no demand is left with nobody to serve it.
    pub fn ensure_running(&self) {
        let Some(link) = &self.authorizer else {
            return;
        };
        self.poke.store(true, Ordering::SeqCst);
        if self
            .running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            match self.me.upgrade() {
                Some(me) => link.parking.spawn(me),
                None => self.running.store(false, Ordering::SeqCst),
            }
        }
    }

    /// This slot as an `Arc`, if it was built linked (an authorizer's).
    pub fn me(&self) -> Option<Arc<Slot>> {
        self.me.upgrade()
    }

    /// Whether a caller's demand is waiting to be served.
    pub fn has_demand(&self) -> bool {
        self.demand().seq > self.outcome.borrow().served_seq
    }

    /// Whether this is one of a platform's authorizers' credentials (counted and
    /// measured per component, never per authorizer).
    pub fn of_authorizer(&self) -> bool {
        self.key.authorizer.is_some()
    }

    /// Drops any backoff and wakes the driver: what it was waiting for (a verify
    /// ticket, a new authorization) has arrived.
    pub fn retry_now(&self) {
        {
            let mut health = self.health();
            health.backoff_until = None;
            health.backoff_class = None;
        }
        self.wake.notify_one();
        self.ensure_running();
    }

    /// The refresh rule this credential follows.
    pub fn policy(&self) -> Policy {
        match (self.key.kind, self.app.mode()) {
            (CredentialKind::AccessToken, Some(TokenMode::Stable)) => Policy::StableWindow,
            _ => Policy::RefreshAhead,
        }
    }

    /// Whether only a demand (not the clock) may start the first fetch: tickets are
    /// scarce, so they are fetched once somebody needs one and kept fresh from then on.
    pub fn lazy(&self) -> bool {
        matches!(self.key.kind, CredentialKind::Ticket(_))
    }

    /// Whether the driver keeps this credential fresh: always for tokens; for a lazy
    /// one, while somebody asked for it within `idle`.
    pub fn active(&self, now_ms: u64, idle: Duration) -> bool {
        if !self.lazy() {
            return true;
        }
        let asked = self.last_asked_ms.load(Ordering::Relaxed);
        asked != 0 && now_ms.saturating_sub(asked) < idle.as_millis() as u64
    }

    pub fn health(&self) -> MutexGuard<'_, Health> {
        // A panic while holding this lock leaves plain counters behind; they stay usable.
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn demand(&self) -> MutexGuard<'_, Demand> {
        self.demand.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the value `make` builds from the one held current, compare-and-swap: if
    /// another task (the follower adopting a value from another instance) swapped a
    /// value in meanwhile, `make` runs again on that one, so neither overwrites the
    /// other unseen. `make` returns `None` to leave the held value alone. Returns the
    /// value installed, if any.
    pub fn swap_in(
        &self,
        mut make: impl FnMut(Option<&Token>) -> Option<Token>,
    ) -> Option<Arc<Token>> {
        let mut held = self.current.load_full();
        loop {
            let token = Arc::new(make(held.as_deref())?);
            let replaced = held.clone().filter(|old| old.value != token.value);
            // An authorizer's token is findable by value (the gateway) before it is
            // served.
            if let Some(link) = &self.authorizer {
                link.index_token(&token.value);
            }
            // `previous` first: a reader looking for the held value between the two
            // stores finds it as current, and after them as previous, never as neither
            // (the gateway would refuse a token it issued a moment ago).
            let evicted = match &replaced {
                Some(old) => self.previous.swap(Some(old.clone())),
                None => None,
            };
            let before = self.current.compare_and_swap(&held, Some(token.clone()));
            let swapped = match (before.as_ref(), held.as_ref()) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if swapped {
                if replaced.is_some() {
                    self.to_death.store(false, Ordering::Relaxed);
                }
                if let (Some(link), Some(evicted)) = (&self.authorizer, evicted) {
                    let still_held = replaced.as_ref().is_some_and(|r| r.value == evicted.value);
                    if evicted.value != token.value && !still_held {
                        link.unindex_token(&evicted.value);
                    }
                }
                return Some(token);
            }
            // Lost the race: `previous` holds a value that was current a moment ago,
            // which is still one this server issued; the next round sets it right.
            held = arc_swap::Guard::into_inner(before);
        }
    }

    /// Makes `candidate` current if it is newer than the value held at that moment (see
    /// [`is_newer`]); never replaces a newer value installed meanwhile. Returns whether
    /// it was taken.
    pub fn adopt_if_newer(&self, candidate: Token) -> bool {
        self.swap_in(|held| is_newer(&candidate, held).then(|| candidate.clone()))
            .is_some()
    }

    /// Whether `token` (this slot's) may be served at `now_ms` to a caller who needs
    /// `min_left`.
    pub fn can_serve(&self, token: &Token, now_ms: u64, min_left: Duration) -> bool {
        serveable_until(
            token,
            now_ms,
            min_left,
            self.to_death.load(Ordering::Relaxed),
        )
    }

    /// The current value if it has more than `min_left` to live: a memory read.
    pub fn serveable(&self, min_left: Duration) -> Option<Arc<Token>> {
        let token = self.current.load_full()?;
        self.can_serve(&token, unix_now_ms(), min_left)
            .then_some(token)
    }

    /// Leaves a demand for the driver and waits until it has been served, at most
    /// [`MAX_WAIT`]. Returns the outcome of the round that served it, or `None` if the
    /// driver has stopped for good.
    pub async fn request(&self, fill: impl FnOnce(&mut Demand)) -> Option<Outcome> {
        let mut rx = self.outcome.subscribe();
        let seq = {
            let mut demand = self.demand();
            demand.seq += 1;
            fill(&mut demand);
            demand.seq
        };
        self.health().wanted = true;
        self.wake.notify_one();
        self.ensure_running();
        let served =
            tokio::time::timeout(MAX_WAIT, rx.wait_for(|o| o.closed || o.served_seq >= seq));
        match served.await {
            Ok(Ok(outcome)) if outcome.closed => None,
            Ok(Ok(outcome)) => Some(outcome.clone()),
            Ok(Err(_)) => None,
            Err(_) => Some(Outcome {
                served_seq: seq,
                failure: Some(Arc::new(Failure::Unavailable(format!(
                    "the {} refresher did not answer within {}s",
                    self.noun(),
                    MAX_WAIT.as_secs()
                )))),
                ..Outcome::default()
            }),
        }
    }

    /// Answers every demand left so far with `failure` (the driver died before it could).
    pub fn fail_pending(&self, failure: Arc<Failure>) {
        let served = self.outcome.borrow().served_seq;
        if let Some(demand) = self.take_demand(served) {
            self.outcome.send_modify(|o| {
                o.served_seq = o.served_seq.max(demand.seq);
                o.failure = Some(failure);
            });
        }
    }

    /// The driver has stopped for good: answer everyone, now and later, with no value.
    pub fn close(&self) {
        self.outcome.send_modify(|o| o.closed = true);
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

    /// A value with at least `min_ttl` left (or just a valid one). Served from memory
    /// when possible; otherwise waits for the single upstream call in flight, and with
    /// `min_ttl` for up to `min_ttl_wait`.
    pub async fn obtain(
        &self,
        min_ttl: Option<Duration>,
        settings: &KeeperSettings,
    ) -> Result<Arc<Token>, KeeperError> {
        let min_left = min_ttl.unwrap_or(Duration::ZERO);
        if self.lazy() {
            self.last_asked_ms.store(unix_now_ms(), Ordering::Relaxed);
        }
        if let Some(token) = self.serveable(min_left) {
            return Ok(token);
        }
        if let Some(token) = self.current.load_full() {
            let lifetime = Duration::from_secs(token.lifetime_secs);
            if min_left >= lifetime {
                return Err(KeeperError::Unavailable(format!(
                    "min_ttl {}s is not less than the {}'s lifetime ({}s)",
                    min_left.as_secs(),
                    self.noun(),
                    lifetime.as_secs()
                )));
            }
        }
        let mut rx = self.outcome.subscribe();
        let outcome = self
            .request(|d| d.min_left_ms = d.min_left_ms.max(min_left.as_millis() as u64))
            .await
            .ok_or_else(shutting_down)?;
        if let Some(token) = self.serveable(min_left) {
            return Ok(token);
        }
        if min_ttl.is_some() {
            // WeChat may renew later (stable mode renews only near expiry): watch installs.
            let deadline = Instant::now() + settings.min_ttl_wait;
            loop {
                match tokio::time::timeout_at(deadline, rx.changed()).await {
                    Ok(Ok(())) => {
                        if let Some(token) = self.serveable(min_left) {
                            return Ok(token);
                        }
                    }
                    Ok(Err(_)) => return Err(shutting_down()),
                    Err(_) => break,
                }
            }
            if outcome.failure.is_none() {
                return Err(KeeperError::Unavailable(format!(
                    "no {} with at least {}s left within {}s",
                    self.noun(),
                    min_left.as_secs(),
                    settings.min_ttl_wait.as_secs()
                )));
            }
        }
        Err(self.failure_error(outcome.failure))
    }

    /// Compare-and-invalidate: `dead` is the value a client saw rejected. If it is not
    /// the current one, the current one is returned and nothing is fetched; if it is, one
    /// refresh happens (however many report it). Returns the value and whether it
    /// replaced the one reported.
    pub async fn invalidate(
        &self,
        dead: &str,
        settings: &KeeperSettings,
    ) -> Result<(Arc<Token>, bool), KeeperError> {
        let reported = match self.current.load_full() {
            Some(token) if token.value == dead => token,
            _ => return Ok((self.obtain(None, settings).await?, false)),
        };
        let outcome = self
            .request(|d| d.invalidate = d.invalidate.max(Some(reported.generation)))
            .await
            .ok_or_else(shutting_down)?;
        match self.current.load_full() {
            Some(token) if token.generation > reported.generation => Ok((token, true)),
            _ => match outcome.failure {
                Some(failure) => Err(self.failure_error(Some(failure))),
                None => match self.serveable(Duration::ZERO) {
                    Some(token) => Ok((token, false)),
                    None => Err(self.failure_error(None)),
                },
            },
        }
    }

    /// The error for a caller who got no value: the round's failure, else the last one.
    pub fn failure_error(&self, failure: Option<Arc<Failure>>) -> KeeperError {
        let health = self.health();
        let failure = failure.or_else(|| health.last_error.as_ref().map(|e| e.failure.clone()));
        let retry_in = health
            .backoff_until
            .and_then(|until| until.checked_duration_since(Instant::now()));
        match failure {
            Some(failure) => KeeperError::Upstream { failure, retry_in },
            None => KeeperError::Unavailable(format!("no valid {} is available yet", self.noun())),
        }
    }

    fn noun(&self) -> &'static str {
        match self.key.kind {
            CredentialKind::AccessToken => "token",
            CredentialKind::Ticket(_) => "ticket",
        }
    }
}

fn shutting_down() -> KeeperError {
    KeeperError::Unavailable("the server is shutting down".into())
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::config::AppKind;

    fn slot() -> Slot {
        let app = AppSettings {
            id: "shop".into(),
            kind: AppKind::Official {
                mode: TokenMode::Classic,
            },
            appid: "wx1".into(),
            secret: SecretString::from("s"),
            message: None,
            quota: Default::default(),
        };
        Slot::new(
            CredentialKey::access_token("shop"),
            Arc::new(app),
            None,
            None,
            Health::default(),
        )
    }

    fn token(generation: u64) -> Token {
        Token {
            value: format!("T{generation}"),
            expires_at_ms: u64::MAX / 2,
            fetched_at_ms: 0,
            lifetime_secs: 7200,
            generation,
        }
    }

    #[test]
    fn a_value_adopted_while_another_is_built_is_numbered_past_not_overwritten() {
        // The driver builds generation 2 from generation 1 while the follower adopts
        // generation 5 from another instance: the build runs again on 5.
        let slot = slot();
        assert!(slot.adopt_if_newer(token(1)));
        let mut builds = Vec::new();
        let installed = slot
            .swap_in(|held| {
                let held = held.expect("a value").generation;
                builds.push(held);
                if builds.len() == 1 {
                    assert!(slot.adopt_if_newer(token(5)), "the follower adopts");
                }
                Some(Token {
                    value: "fetched".into(),
                    ..token(held + 1)
                })
            })
            .expect("installed");
        assert_eq!(builds, [1, 5]);
        assert_eq!(installed.generation, 6);
        assert_eq!(slot.current.load_full().expect("value").generation, 6);
        assert_eq!(slot.previous.load_full().expect("previous").generation, 5);
    }

    #[test]
    fn an_older_value_is_never_adopted_over_a_newer_one() {
        let slot = slot();
        assert!(slot.adopt_if_newer(token(3)));
        assert!(!slot.adopt_if_newer(token(2)));
        assert_eq!(slot.current.load_full().expect("value").generation, 3);
    }

    #[test]
    fn a_swap_keeps_the_replaced_value_as_previous() {
        let slot = slot();
        assert!(slot.adopt_if_newer(token(1)));
        assert!(!slot.adopt_if_newer(token(1)), "not newer");
        assert!(slot.adopt_if_newer(token(2)));
        let previous = slot.previous.load_full().expect("previous");
        assert_eq!(previous.generation, 1);
    }
}
