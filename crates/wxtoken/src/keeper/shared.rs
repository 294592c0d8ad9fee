//! Working with other instances through a shared store (Redis).
//!
//! - A refresh runs under the credential's lease: one instance fetches, the others wait
//!   for the generation it stores. The lease is renewed while the fetch runs and released
//!   by compare-and-delete; if its holder dies, it expires and another instance takes over.
//! - Right after taking the lease, the store is read again: if another instance stored a
//!   newer value meanwhile, it is adopted and nothing is fetched (the classic
//!   "double refresh right after acquiring the lock").
//! - The follower task adopts values announced by other instances, and compares every
//!   credential with the store periodically and after a reconnect, re-seeding a store
//!   that lost its data (a Redis restart without persistence).
//! - With the store unreachable, instances keep serving what they hold; stable-mode
//!   tokens and tickets may be refreshed alone (WeChat hands every caller the same stable
//!   token), classic and WeCom tokens only if `store.classic_refresh_when_down` says so.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::driver::{adopt, fetch};
use super::schedule;
use super::slot::Slot;
use super::{Ctx, Failure};
use crate::config::TokenMode;
use crate::credential::{CredentialKind, Token, unix_now_ms};
use crate::store::{Coordination, StoreError, Update};

/// The store is taken for down (and credentials that may be refreshed alone are) only
/// once lease calls have failed without a break for a lease lifetime, and never sooner
/// than this: a slow store is not a down one, and any lease another instance held
/// before the failures began has expired by then.
const MIN_DOWN_WINDOW: Duration = Duration::from_secs(1);

/// Consecutive failures of the lease calls, to tell a slow store from a down one.
#[derive(Debug, Default)]
pub(crate) struct StoreHealth {
    /// When the current run of failures began; `None` after an answer.
    failing_since: std::sync::Mutex<Option<Instant>>,
}

impl StoreHealth {
    /// Records a failure; returns how long the store has been failing without a break.
    pub fn failed(&self, now: Instant) -> Duration {
        let mut since = self.failing_since.lock().unwrap_or_else(|p| p.into_inner());
        now.saturating_duration_since(*since.get_or_insert(now))
    }

    /// The store answered: the run of failures is over.
    pub fn answered(&self) {
        *self.failing_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The lease is renewed this many times per TTL while a fetch runs.
const RENEWALS_PER_TTL: u32 = 3;

/// Whether `candidate` is newer than what the slot holds: a higher generation, or the
/// same value with a later expiry (a stable-mode renewal of the same token).
pub(super) fn is_newer(candidate: &Token, local: Option<&Token>) -> bool {
    match local {
        None => true,
        Some(local) => {
            candidate.generation > local.generation
                || (candidate.generation == local.generation
                    && candidate.value == local.value
                    && candidate.expires_at_ms > local.expires_at_ms)
        }
    }
}

/// A follower waits for the lease holder at most this many lease lifetimes before
/// giving up (a holder that died frees the lease after one).
const MAX_WAITS: u32 = 3;

/// One refresh, coordinated with the other instances: take the lease and fetch, or wait
/// for the value the holder stores; if the holder dies, its lease expires and this
/// instance takes over, so waiting callers see a value rather than an error.
/// `before` is what the driver held when it decided to refresh: anything newer that
/// arrives meanwhile (adopted by the follower or found in the store) is used instead.
pub(super) async fn refresh(
    slot: &Slot,
    ctx: &Ctx,
    coordination: &dyn Coordination,
    invalidating: Option<String>,
    before: Option<Arc<Token>>,
) -> Result<(), Arc<Failure>> {
    let ttl = ctx.settings().shared.lease_ttl;
    for _ in 0..MAX_WAITS {
        match coordination.acquire_lease(&slot.key, &ctx.owner, ttl).await {
            Ok(true) => {
                ctx.store_health.answered();
                ctx.alerts.resolve(crate::alerts::STORE_INCIDENT);
                return refresh_leased(slot, ctx, coordination, before.as_deref(), invalidating)
                    .await;
            }
            Ok(false) => {
                ctx.store_health.answered();
                ctx.alerts.resolve(crate::alerts::STORE_INCIDENT);
                if wait_for_other(slot, ctx, before.as_deref(), invalidating.as_deref(), ttl).await
                {
                    return Ok(());
                }
            }
            Err(error) => {
                let since = ctx.store_health.failed(Instant::now());
                if since < ttl.max(MIN_DOWN_WINDOW) {
                    // Slow is not down: another instance may hold the lease (or our SET
                    // may even have landed). Try again after the backoff.
                    return Err(Arc::new(Failure::Unavailable(format!(
                        "the store did not answer ({error}); not refreshing alone before it \
                         has failed for {}s",
                        ttl.max(MIN_DOWN_WINDOW).as_secs_f32()
                    ))));
                }
                ctx.alerts.raise(
                    crate::alerts::STORE_INCIDENT.to_owned(),
                    crate::alerts::AlertKind::StoreUnreachable,
                    None,
                    format!(
                        "the shared store has not answered for {}s: {error}",
                        since.as_secs()
                    ),
                );
                return refresh_while_down(slot, ctx, invalidating, &error).await;
            }
        }
    }
    Err(Arc::new(Failure::Unavailable(format!(
        "another instance holds the refresh lease and stored nothing new within {}s",
        (ttl * MAX_WAITS).as_secs()
    ))))
}

/// Holding the lease: if another instance stored a newer value since this refresh began
/// (whether we adopt it now, or the follower already did), use it; otherwise fetch.
async fn refresh_leased(
    slot: &Slot,
    ctx: &Ctx,
    coordination: &dyn Coordination,
    before: Option<&Token>,
    invalidating: Option<String>,
) -> Result<(), Arc<Failure>> {
    let ttl = ctx.settings().shared.lease_ttl;
    let renewer = tokio::spawn(renew(
        ctx.store.clone(),
        slot.key.clone(),
        ctx.owner.clone(),
        ttl,
    ));
    adopt_stored(slot, ctx).await;
    let now = slot.current.load_full();
    slot.leased
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let result = match now.as_deref() {
        Some(token)
            if is_newer(token, before) && satisfies(slot, ctx, token, invalidating.as_deref()) =>
        {
            Ok(())
        }
        _ => fetch(slot, ctx, invalidating, true).await,
    };
    slot.leased
        .store(false, std::sync::atomic::Ordering::Relaxed);
    renewer.abort();
    if let Err(e) = coordination.release_lease(&slot.key, &ctx.owner).await {
        debug!(credential = %slot.key, error = %e, "could not release the lease; it expires on its own");
    }
    result
}

/// Keeps the lease alive while its holder works. Stops on its own if the lease is lost.
async fn renew(
    store: Arc<dyn crate::store::Store>,
    key: crate::credential::CredentialKey,
    owner: String,
    ttl: Duration,
) {
    let Some(coordination) = store.coordination() else {
        return;
    };
    loop {
        tokio::time::sleep(ttl / RENEWALS_PER_TTL).await;
        match coordination.renew_lease(&key, &owner, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                warn!(credential = %key, "lost the refresh lease while fetching; the stored generation decides");
                return;
            }
            Err(e) => debug!(credential = %key, error = %e, "could not renew the lease"),
        }
    }
}

/// Reads the stored value and adopts it if it is newer.
async fn adopt_stored(slot: &Slot, ctx: &Ctx) {
    match ctx.store.load(slot.key.clone()).await {
        Ok(Some(stored)) => {
            adopt(slot, ctx, stored);
        }
        Ok(None) => {}
        Err(e) => debug!(credential = %slot.key, error = %e, "could not read the stored value"),
    }
}

/// Whether an adopted value makes the refresh unnecessary: it is not the value a client
/// reported dead, and it is not yet due for refresh itself.
fn satisfies(slot: &Slot, ctx: &Ctx, token: &Token, invalidating: Option<&str>) -> bool {
    if let Some(dead) = invalidating {
        return token.value != dead;
    }
    let ahead = schedule::refresh_ahead(token, slot.policy(), &ctx.settings());
    Duration::from_millis(token.remaining_ms(unix_now_ms())) > ahead
}

/// A waiting follower also looks in the store this often: an announcement can be missed
/// (at start, before the subscription is live), and waiting out a whole lease for it
/// would cost seconds.
const FOLLOWER_POLL: Duration = Duration::from_millis(250);

/// Another instance holds the lease: wait up to `limit` for a value newer than `before`
/// (announced, or found in the store) that also answers this refresh: not the value a
/// client reported dead (a re-store of the same token with a later expiry is newer, but
/// no answer to that report). Returns whether one came.
async fn wait_for_other(
    slot: &Slot,
    ctx: &Ctx,
    before: Option<&Token>,
    invalidating: Option<&str>,
    limit: Duration,
) -> bool {
    let changed = || {
        let now = slot.current.load_full();
        now.as_deref()
            .is_some_and(|t| is_newer(t, before) && satisfies(slot, ctx, t, invalidating))
    };
    let deadline = Instant::now() + limit;
    let mut rx = slot.outcome.subscribe();
    while !changed() && Instant::now() < deadline {
        let poll = (Instant::now() + FOLLOWER_POLL).min(deadline);
        match tokio::time::timeout_at(poll, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return false,
            Err(_) => adopt_stored(slot, ctx).await,
        }
    }
    changed()
}

/// The store is unreachable: refresh alone only where that cannot hurt other instances.
async fn refresh_while_down(
    slot: &Slot,
    ctx: &Ctx,
    invalidating: Option<String>,
    error: &StoreError,
) -> Result<(), Arc<Failure>> {
    let safe_alone = match (slot.key.kind, slot.app.mode()) {
        // WeChat hands every caller the same stable token; only force_refresh (held back
        // below) would hurt the others.
        (CredentialKind::AccessToken, Some(TokenMode::Stable)) => true,
        // A new ticket does not invalidate the others' tickets.
        (CredentialKind::Ticket(_), _) => true,
        // A classic fetch kills the token other instances hold; WeCom's behaviour on a
        // repeat fetch is not documented consistently.
        (CredentialKind::AccessToken, _) => ctx.settings().shared.classic_refresh_when_down,
    };
    if !safe_alone {
        return Err(Arc::new(Failure::Unavailable(format!(
            "the store is unreachable ({error}); not refreshing alone, since a fetch would kill \
             the token other instances hold (store.classic_refresh_when_down allows it)"
        ))));
    }
    warn!(credential = %slot.key, error = %error, "the store is unreachable; refreshing alone");
    fetch(slot, ctx, invalidating, false).await
}

/// Adopts announced values, and compares everything with the store periodically and
/// after the announcement stream was interrupted. `slots` are the apps' credentials
/// (compared periodically); authorizers' credentials are looked up through `keeper` when
/// announced (and read from the store before each refresh), so 100,000 of them cost no
/// periodic comparison.
pub(super) async fn follow(
    keeper: Weak<super::Inner>,
    ctx: Arc<Ctx>,
    mut updates: broadcast::Receiver<Update>,
    mut shutdown: watch::Receiver<bool>,
) {
    let keeper = || keeper.upgrade().map(|inner| super::Keeper { inner });
    let slots = || keeper().map(|k| k.app_slots()).unwrap_or_default();
    let mut tick = tokio::time::interval(ctx.settings().shared.reconcile_every);
    tick.tick().await;
    loop {
        tokio::select! {
            update = updates.recv() => match update {
                Ok(Update::Stored(key, generation)) => {
                    let Some(slot) = keeper().and_then(|k| k.slot_of(&key)) else {
                        continue;
                    };
                    let local = slot.current.load().as_deref().map_or(0, |t| t.generation);
                    if generation >= local {
                        adopt_stored(&slot, &ctx).await;
                    }
                }
                Ok(Update::Authorizer(component, appid)) => {
                    if let Some(keeper) = keeper() {
                        keeper.authorizer_changed(&component, &appid).await;
                    }
                }
                Ok(Update::VerifyTicket(component)) => {
                    if let Some(keeper) = keeper() {
                        keeper.verify_ticket_arrived(&component);
                    }
                }
                Ok(Update::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    reconcile(&slots(), &ctx).await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => reconcile(&slots(), &ctx).await,
            _ = shutdown.changed() => return,
        }
    }
}

/// Compares every credential with the store: adopts newer stored values, and writes back
/// local values the store lacks (it restarted empty) or holds older.
async fn reconcile(slots: &[Arc<Slot>], ctx: &Ctx) {
    for slot in slots {
        let stored = match ctx.store.load(slot.key.clone()).await {
            Ok(stored) => stored,
            Err(e) => {
                debug!(error = %e, "reconcile: the store is unreachable");
                return;
            }
        };
        let local = slot.current.load_full();
        match (stored, local) {
            (Some(stored), local) if is_newer(&stored, local.as_deref()) => {
                adopt(slot, ctx, stored);
            }
            (stored, Some(local))
                if schedule::serveable(&local, unix_now_ms(), Duration::ZERO)
                    && stored.as_ref().is_none_or(|s| is_newer(&local, Some(s))) =>
            {
                match ctx.store.save(slot.key.clone(), (*local).clone()).await {
                    Ok(true) => {
                        info!(credential = %slot.key, generation = local.generation, "re-seeded the store from memory")
                    }
                    Ok(false) => {}
                    Err(e) => debug!(error = %e, "reconcile: could not re-seed"),
                }
            }
            _ => {}
        }
    }
}
