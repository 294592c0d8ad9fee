//! The driver: one task per credential, and the only code that calls WeChat for it.
//! It sleeps until a refresh is due, a backoff ends, or a caller leaves a demand; then
//! decides what (if anything) to fetch, fetches, installs and publishes the outcome.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::platform::AuthorizerLink;
use super::schedule::{self, Policy};
use super::slot::{Demand, ErrorRecord, RealEnd, Slot};
use super::{Ctx, Failure, KeeperError, quota, recovery, shared};
use crate::config::{AppKind, TokenMode};
use crate::credential::{
    CredentialKind, TicketType, Token, next_wechat_midnight_ms, unix_now_ms, wechat_day,
};
use crate::store::{AuthorizerState, Saved};
use crate::wechat::{ErrorClass, FetchRequest, Fetched, UpstreamError};

/// In classic mode every fetch costs daily quota (2000) and kills the previous token, so
/// a client that keeps reporting each new token dead (a bug, or a token used with the
/// wrong appid) must not turn into a fetch loop: after a refresh caused by a report, the
/// next report-driven refresh waits this long. Short-lived tokens use a tenth of their
/// lifetime instead. Stable mode needs no such guard: a normal call returns the same
/// token, and force_refresh has its own interval and budget.
const INVALIDATE_COOLDOWN: Duration = Duration::from_secs(10);

/// A lazy credential nobody asked for yet sleeps this long between looks (a demand wakes
/// it at once anyway).
const DORMANT: Duration = Duration::from_secs(3600);

/// A value WeChat will not renew early is fetched again this long after its death: our
/// expiry counts from when the first request left, so WeChat's is a round trip later.
const AFTER_DEATH: Duration = Duration::from_millis(100);

/// After an answer with `expires_in: 0`, ask again this soon...
const DYING_RETRY: Duration = Duration::from_millis(100);
/// ...at most this many times in one round (a value dies within the second).
const DYING_RETRIES: u32 = 12;

/// What the driver will do in one round.
enum Plan {
    /// Nothing to fetch: the current value already satisfies everyone waiting.
    Idle,
    /// Do not call WeChat (backing off); waiting callers get this failure.
    Answer(Arc<Failure>),
    /// Call WeChat. `invalidating` is the value a client reported dead, if that is why.
    Fetch { invalidating: Option<String> },
}

/// Runs the credential's driver, restarting it after a panic (logged, counted in
/// `wxtoken_driver_restarts_total`, with a backoff); callers waiting on the round that
/// panicked get an error rather than waiting on. Returns at shutdown, after which every
/// caller is answered at once.
pub(super) async fn supervise(slot: Arc<Slot>, ctx: Arc<Ctx>, shutdown: watch::Receiver<bool>) {
    let mut restarts: u32 = 0;
    loop {
        // The panic is caught in this task (no second task per credential: a platform
        // may hold 100,000 of them).
        let run = std::panic::AssertUnwindSafe(run(slot.clone(), ctx.clone(), shutdown.clone()));
        match futures::FutureExt::catch_unwind(run).await {
            Ok(Exit::Stopped) => break,
            Ok(Exit::Parked) => {
                // Clear the flag, then look for what arrived meanwhile; a caller sets
                // the poke, then looks at the flag (Slot::ensure_running). Whichever
                // comes second sees the other's write and keeps a driver running.
                slot.running.store(false, Ordering::SeqCst);
                let asked = slot.poke.swap(false, Ordering::SeqCst) || slot.has_demand();
                if asked
                    && slot
                        .running
                        .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                {
                    continue;
                }
                // Parked: the slot stays open for callers; its parking starts it again.
                return;
            }
            Err(_) => {
                restarts = restarts.saturating_add(1);
                let wait = schedule::restart_delay(restarts);
                tracing::error!(
                    app = %slot.key.app,
                    kind = slot.key.kind.as_str(),
                    restarts,
                    restart_in_ms = wait.as_millis() as u64,
                    "the credential's driver panicked; restarting it"
                );
                metrics::counter!(
                    "wxtoken_driver_restarts_total",
                    "app" => slot.key.app.clone(),
                    "kind" => slot.key.kind.as_str()
                )
                .increment(1);
                slot.fail_pending(Arc::new(Failure::Unavailable(
                    "the refresher failed and is restarting".into(),
                )));
                let mut stop = shutdown.clone();
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        }
    }
    slot.close();
}

/// Why a driver's loop ended.
enum Exit {
    /// Shutdown: the slot is closed.
    Stopped,
    /// An authorizer's driver with nothing to do for a while: its parking starts it
    /// again when it is due or needed.
    Parked,
}

async fn run(slot: Arc<Slot>, ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) -> Exit {
    // A restarted driver goes on from what its predecessor published.
    let mut served = slot.outcome.borrow().served_seq;
    loop {
        if *shutdown.borrow() {
            return Exit::Stopped;
        }
        end_if_over(&slot);
        let demand = slot.take_demand(served);
        if demand.is_none() {
            let due = next_due(&slot, &ctx);
            let now = Instant::now();
            if due > now {
                if let Some(link) = &slot.authorizer {
                    if due >= now + super::platform::PARK_AFTER {
                        if let Some(me) = slot.me() {
                            link.parking.park(&me, due);
                            return Exit::Parked;
                        }
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = slot.wake.notified() => {}
                    _ = shutdown.changed() => return Exit::Stopped,
                }
                continue;
            }
        }
        // What we hold as we decide: a value adopted from another instance after this
        // point makes the fetch unnecessary (see shared::refresh).
        let seen = slot.current.load_full();
        let planned = plan(&slot, &ctx, demand.as_ref());
        if let (Plan::Fetch { .. }, None, Some(link)) = (&planned, &demand, &slot.authorizer) {
            // A background refresh of an authorizer waits for its component's pace
            // (unless its parking released it at that pace); a caller arriving
            // meanwhile is served at once (the loop takes its demand).
            if !slot.paced.swap(false, Ordering::Relaxed) {
                tokio::select! {
                    () = link.parking.pacer.acquire() => {}
                    () = slot.wake.notified() => continue,
                    _ = shutdown.changed() => return Exit::Stopped,
                }
            }
        }
        let result = match planned {
            Plan::Idle => Ok(()),
            Plan::Answer(failure) => Err(failure),
            // Boxed: the refresh's state machine is large and exists only while one
            // runs, so the sleeping driver of each of many authorizers stays small.
            Plan::Fetch { invalidating } => {
                Box::pin(refresh(&slot, &ctx, invalidating, seen)).await
            }
        };
        if let Some(demand) = demand {
            served = demand.seq;
            slot.outcome.send_modify(|o| {
                o.served_seq = served;
                o.failure = result.err();
            });
        }
    }
}

/// The wall and monotonic clocks may drift apart this much over a value's life before a
/// value is taken for over by the monotonic clock alone.
const CLOCK_TOLERANCE_MS: u64 = 2_000;

/// A value whose servable life is over by the monotonic clock is no longer served, even
/// if the wall clock (set back since it was installed) says it still lives: it is
/// re-dated, in memory only, to end now. Expiry is judged on the wall clock (absolute, so
/// that it survives restarts and means the same on every instance); this bounds what a
/// wall clock set back can do to the time until the driver next looks.
fn end_if_over(slot: &Slot) {
    let noted = {
        let mut health = slot.health();
        match health.real_end {
            Some(end) if end.at <= Instant::now() => health.real_end.take(),
            _ => None,
        }
    };
    let Some(end) = noted else {
        return;
    };
    let now_ms = unix_now_ms();
    let ended = slot.swap_in(|held| {
        let held = held?;
        let same = held.generation == end.generation && held.expires_at_ms == end.expires_at_ms;
        // Without a clock step, the wall clock says the same (the margin is left).
        let stepped_back = held.remaining_ms(now_ms) > end.margin_ms + CLOCK_TOLERANCE_MS;
        (same && stepped_back).then(|| Token {
            expires_at_ms: now_ms,
            ..held.clone()
        })
    });
    if let Some(token) = ended {
        warn!(
            app = %slot.key.app,
            kind = slot.key.kind.as_str(),
            generation = token.generation,
            "the value's life is over but the wall clock says it lives (was the clock set back?); no longer serving it"
        );
    }
}

/// When the driver must next act without being asked.
fn next_due(slot: &Slot, ctx: &Ctx) -> Instant {
    let due = next_due_unbounded(slot, ctx);
    // Wake when the held value's life is over, whatever the wall clock says.
    match slot.health().real_end {
        Some(end) => due.min(end.at),
        None => due,
    }
}

fn next_due_unbounded(slot: &Slot, ctx: &Ctx) -> Instant {
    let now = Instant::now();
    let health = slot.health();
    if let Some(until) = health.backoff_until.filter(|until| *until > now) {
        return until;
    }
    let now_ms = unix_now_ms();
    if !slot.active(now_ms, ctx.settings().ticket_idle) {
        return now + DORMANT;
    }
    // An authorizer that withdrew (or must renew) its authorization is not refreshed
    // until it authorizes again (which wakes the driver).
    if slot
        .authorizer
        .as_ref()
        .is_some_and(|link| link.state() != AuthorizerState::Ok)
    {
        return now + DORMANT;
    }
    match slot.current.load().as_deref() {
        Some(token) if slot.can_serve(token, now_ms, Duration::ZERO) => {
            health.refresh_at.unwrap_or(now)
        }
        _ => now,
    }
}

fn plan(slot: &Slot, ctx: &Ctx, demand: Option<&Demand>) -> Plan {
    let now = Instant::now();
    let now_ms = unix_now_ms();
    let current = slot.current.load_full();
    let health = slot.health();
    // A component waiting for a verify ticket looks again when a caller asks: the
    // ticket may have reached another instance (a store read, no upstream call).
    let waiting_for_ticket = demand.is_some()
        && health
            .last_error
            .as_ref()
            .is_some_and(|e| matches!(*e.failure, Failure::WaitingForVerifyTicket(_)));
    let backing_off = !waiting_for_ticket && health.backoff_until.is_some_and(|until| until > now);
    let held_back = || {
        let failure = health
            .last_error
            .as_ref()
            .map(|e| e.failure.clone())
            .unwrap_or_else(|| Arc::new(Failure::Unavailable("backing off after an error".into())));
        Plan::Answer(failure)
    };
    let usable = current
        .as_deref()
        .filter(|t| slot.can_serve(t, now_ms, Duration::ZERO));

    if let Some(demand) = demand {
        if let (Some(dead), Some(token)) = (demand.invalidate, usable) {
            if token.generation == dead {
                if backing_off {
                    return held_back();
                }
                if slot.app.mode() == Some(TokenMode::Classic)
                    && cooling_down(health.last_report_refresh_ms, token, now_ms)
                {
                    return Plan::Idle;
                }
                return Plan::Fetch {
                    invalidating: Some(token.value.clone()),
                };
            }
        }
        match usable {
            None if backing_off => return held_back(),
            None => return Plan::Fetch { invalidating: None },
            Some(token) if demand.min_left_ms > 0 => {
                let min_left = Duration::from_millis(demand.min_left_ms);
                if !slot.can_serve(token, now_ms, min_left) {
                    if backing_off {
                        return held_back();
                    }
                    let fresh_would_do = demand.min_left_ms < token.lifetime_secs * 1000;
                    // Stable mode renews only inside WeChat's window; a call earlier
                    // would just return the same token.
                    let wechat_would_renew = slot.policy() == Policy::RefreshAhead
                        || Duration::from_millis(token.remaining_ms(now_ms))
                            <= schedule::refresh_ahead(token, slot.policy(), &ctx.settings());
                    if fresh_would_do && wechat_would_renew {
                        return Plan::Fetch { invalidating: None };
                    }
                }
            }
            Some(_) => {}
        }
    }

    if backing_off {
        return Plan::Idle;
    }
    if !slot.active(now_ms, ctx.settings().ticket_idle) {
        // Nobody asked for it lately: let it expire; the next request fetches it.
        return Plan::Idle;
    }
    match usable {
        None => Plan::Fetch { invalidating: None },
        Some(_) if health.refresh_at.is_none_or(|at| at <= now) => {
            Plan::Fetch { invalidating: None }
        }
        Some(_) => Plan::Idle,
    }
}

fn cooling_down(last_report_refresh_ms: Option<u64>, token: &Token, now_ms: u64) -> bool {
    let cooldown = INVALIDATE_COOLDOWN.min(Duration::from_secs(token.lifetime_secs) / 10);
    last_report_refresh_ms
        .is_some_and(|last| now_ms.saturating_sub(last) < cooldown.as_millis() as u64)
}

/// One refresh (coordinated with other instances when the store is shared), installed
/// on success and recorded (with its backoff) on failure.
async fn refresh(
    slot: &Slot,
    ctx: &Ctx,
    invalidating: Option<String>,
    seen: Option<Arc<Token>>,
) -> Result<(), Arc<Failure>> {
    // Past the app's daily budget (see `keeper::quota`), a fetch is made only for a
    // token in its last stretch or none at all; a skipped refresh is moved to the last
    // stretch, not retried at once.
    if quota::guards(slot, ctx).await {
        return Ok(());
    }
    let result = match ctx.store.coordination() {
        Some(coordination) => shared::refresh(slot, ctx, coordination, invalidating, seen).await,
        None => fetch(slot, ctx, invalidating, true).await,
    };
    result.map_err(|failure| {
        if !slot.of_authorizer() && !matches!(*failure, Failure::ForceRefused(_)) {
            let held = slot.current.load().as_deref().map(|t| t.generation);
            ctx.history
                .failed(&slot.key.app, slot.key.kind, held, &failure);
        }
        let failure = record_failure(slot, failure);
        alert_configuration(slot, ctx, &failure);
        failure
    })
}

/// WeChat refused the credential's configuration (a wrong appid or secret, an IP not
/// whitelisted, a frozen secret): retrying will not help, a person must.
fn alert_configuration(slot: &Slot, ctx: &Ctx, failure: &Failure) {
    let Failure::Upstream(e) = failure else {
        return;
    };
    let Some(errcode) = e.errcode.filter(|_| e.class == ErrorClass::Configuration) else {
        return;
    };
    let credential = slot.key.to_string();
    ctx.alerts.raise(
        crate::alerts::credential_incident(&credential, "configuration_error"),
        crate::alerts::AlertKind::ConfigurationError,
        Some(&slot.key.app),
        format!("{credential}: WeChat refuses the configuration (errcode {errcode}): {failure}"),
    );
}

/// Fetches from WeChat and installs. `may_force`: whether a stable-mode force_refresh
/// is allowed at all (not while the shared store is unreachable: it would kill the token
/// the other instances hold).
pub(super) async fn fetch(
    slot: &Slot,
    ctx: &Ctx,
    invalidating: Option<String>,
    may_force: bool,
) -> Result<(), Arc<Failure>> {
    match (slot.key.kind, slot.app.kind, &slot.authorizer) {
        (CredentialKind::AccessToken, AppKind::Component, None) => {
            refresh_component(slot, ctx).await
        }
        (CredentialKind::AccessToken, AppKind::Component, Some(link)) => {
            refresh_authorizer(slot, ctx, link).await
        }
        (CredentialKind::AccessToken, _, _) => {
            refresh_token(slot, ctx, invalidating, may_force).await
        }
        (CredentialKind::Ticket(ticket), _, _) => refresh_ticket(slot, ctx, ticket).await,
    }
}

/// An access token: a normal call, and in stable mode a force_refresh if WeChat hands
/// back the very token a client reported dead.
async fn refresh_token(
    slot: &Slot,
    ctx: &Ctx,
    invalidating: Option<String>,
    may_force: bool,
) -> Result<(), Arc<Failure>> {
    if invalidating.is_some() {
        slot.health().last_report_refresh_ms = Some(unix_now_ms());
    }
    let request = |force_refresh| match slot.app.kind {
        AppKind::Official { mode } => FetchRequest::OfficialToken {
            appid: &slot.app.appid,
            secret: &slot.app.secret,
            mode,
            force_refresh,
        },
        AppKind::Wecom { .. } | AppKind::Component => FetchRequest::WecomToken {
            corpid: &slot.app.appid,
            secret: &slot.app.secret,
        },
    };
    let fetched = match call(slot, ctx, request(false)).await {
        // 45009 with auto_clear_quota: one clear per incident, then one retry.
        Err(failure) if quota_exhausted(&failure) && quota::auto_clear(slot, ctx).await => {
            call(slot, ctx, request(false)).await?
        }
        other => other?,
    };
    quota::fetched(slot, ctx);
    let token = install(slot, ctx, fetched).await;
    let Some(dead) = invalidating else {
        return Ok(());
    };
    if slot.app.mode() != Some(TokenMode::Stable) || token.value != dead {
        return Ok(());
    }
    let allowed = if may_force {
        force_allowed(slot, ctx).await
    } else {
        Err(
            "the shared store is unreachable, and a force_refresh alone would kill the token \
             the other instances hold"
                .to_owned(),
        )
    };
    if let Err(why) = allowed {
        warn!(app = %slot.key.app, "token reported dead but WeChat returns it again; {why}");
        return Err(Arc::new(Failure::ForceRefused(why)));
    }
    slot.health().last_force_ms = Some(unix_now_ms());
    install(slot, ctx, call(slot, ctx, request(true)).await?).await;
    Ok(())
}

/// Whether WeChat said the daily quota is gone (45009).
fn quota_exhausted(failure: &Failure) -> bool {
    matches!(failure, Failure::Upstream(e) if e.errcode == Some(45009))
}

/// A component's token, which needs the newest verify ticket WeChat pushed (read from
/// the store, where whichever instance received the push put it). Without one, or with
/// one WeChat refuses, the component waits for the next push rather than retrying.
async fn refresh_component(slot: &Slot, ctx: &Ctx) -> Result<(), Arc<Failure>> {
    let ticket = ctx
        .store
        .load_verify_ticket(slot.app.id.clone())
        .await
        .map_err(|e| {
            Arc::new(Failure::Unavailable(format!(
                "could not read the component_verify_ticket from the store: {e}"
            )))
        })?;
    let Some(ticket) = ticket else {
        return Err(Arc::new(Failure::WaitingForVerifyTicket(
            "no component_verify_ticket has arrived yet: WeChat pushes one to \
             POST /v1/apps/{component}/callback every ten minutes once the platform's \
             event URL points there"
                .replace("{component}", &slot.app.id),
        )));
    };
    let request = FetchRequest::ComponentToken {
        component_appid: &slot.app.appid,
        secret: &slot.app.secret,
        verify_ticket: &ticket.value,
    };
    match call(slot, ctx, request).await {
        Ok(fetched) => {
            install(slot, ctx, fetched).await;
            Ok(())
        }
        Err(failure) => match failure.as_ref() {
            Failure::Upstream(e) if matches!(e.errcode, Some(61005 | 61006)) => {
                Err(Arc::new(Failure::WaitingForVerifyTicket(format!(
                    "WeChat refused the component_verify_ticket ({}: {}); waiting for the next push",
                    e.errcode.unwrap_or_default(),
                    e.message
                ))))
            }
            _ => Err(failure),
        },
    }
}

/// An authorizer's token, from its refresh token and the component's token. The
/// refresh token WeChat returns with it is persisted before the token is installed:
/// losing it would mean the merchant authorizes again by hand.
async fn refresh_authorizer(
    slot: &Slot,
    ctx: &Ctx,
    link: &AuthorizerLink,
) -> Result<(), Arc<Failure>> {
    let appid = slot.key.authorizer.as_deref().unwrap_or_default();
    link.check_state(appid)?;
    let parent = slot
        .parent
        .as_ref()
        .expect("every authorizer slot is built with its component's token slot");
    if ctx.store.coordination().is_some() {
        // Another instance may have refreshed (and rotated the refresh token) last.
        link.sync(ctx, &slot.key.app, appid).await;
        link.check_state(appid)?;
    }
    let mut component_token = parent
        .obtain(None, &ctx.settings())
        .await
        .map_err(from_parent)?;
    let mut retried_token = false;
    let mut retried_record = false;
    let mut retried_list = false;
    let fetched = loop {
        let refresh_token = link.record().refresh_token.clone();
        let request = FetchRequest::AuthorizerToken {
            component_token: &component_token.value,
            component_appid: &slot.app.appid,
            authorizer_appid: appid,
            refresh_token: &refresh_token,
        };
        match call(slot, ctx, request).await {
            Ok(fetched) => break fetched,
            Err(failure) => {
                let errcode = match failure.as_ref() {
                    Failure::Upstream(e) => e.errcode,
                    _ => None,
                };
                if failure.class() == ErrorClass::Refresh && !retried_token {
                    retried_token = true;
                    info!(credential = %slot.key, "WeChat says the component token is dead; refreshing it and retrying once");
                    component_token = parent
                        .invalidate(&component_token.value, &ctx.settings())
                        .await
                        .map_err(from_parent)?
                        .0;
                    continue;
                }
                if errcode == Some(61023)
                    && !retried_record
                    && link.sync(ctx, &slot.key.app, appid).await
                {
                    // Another instance rotated the refresh token meanwhile: use its.
                    retried_record = true;
                    continue;
                }
                if errcode == Some(61023) && !retried_list {
                    // WeChat may have rotated it in a call whose answer was lost: its
                    // authorizer list holds the current one.
                    retried_list = true;
                    match recovery::recover(slot, ctx, link, &refresh_token).await {
                        recovery::Recovered::Yes => continue,
                        // A failed round (61023 is a configuration-class error: its
                        // backoff starts at a minute), not a lost authorization.
                        recovery::Recovered::Later => return Err(failure),
                        recovery::Recovered::No => {}
                    }
                }
                let state = match errcode {
                    Some(61023) => AuthorizerState::NeedsReauthorization,
                    Some(61003) => AuthorizerState::Unauthorized,
                    _ => return Err(failure),
                };
                warn!(credential = %slot.key, errcode, state = state.as_str(), "WeChat refused the authorizer's refresh token");
                link.set_state(ctx, &slot.key.app, state).await;
                return Err(link.check_state(appid).err().unwrap_or(failure));
            }
        }
    };
    if let Some(rotated) = fetched.0.refresh_token.as_deref() {
        link.persist_refresh_token(ctx, &slot.key.app, rotated)
            .await
            .map_err(|e| {
                Arc::new(Failure::Unavailable(format!(
                    "could not store the authorizer's new refresh token ({e}); its token is \
                     not served until it is stored"
                )))
            })?;
    }
    install(slot, ctx, fetched).await;
    Ok(())
}

/// A ticket, fetched with the app's current token. If WeChat says that token is dead,
/// it is reported to the token's slot (compare-and-invalidate) and the fetch retried once.
async fn refresh_ticket(slot: &Slot, ctx: &Ctx, ticket: TicketType) -> Result<(), Arc<Failure>> {
    let parent = slot
        .parent
        .as_ref()
        .expect("every ticket slot is built with its token slot");
    let wecom = matches!(slot.app.kind, AppKind::Wecom { .. });
    let token = parent
        .obtain(None, &ctx.settings())
        .await
        .map_err(from_parent)?;
    let request = |access_token| FetchRequest::Ticket {
        access_token,
        ticket,
        wecom,
    };
    if wecom {
        ctx.ticket_budget.take(ctx, &slot.app).await?;
    }
    let fetched = match call(slot, ctx, request(&token.value)).await {
        Err(failure) if failure.class() == ErrorClass::Refresh => {
            info!(
                app = %slot.key.app,
                token = %token.redacted(),
                "WeChat says the token is dead while fetching a ticket; refreshing it and retrying once"
            );
            let (token, _) = parent
                .invalidate(&token.value, &ctx.settings())
                .await
                .map_err(from_parent)?;
            if wecom {
                ctx.ticket_budget.take(ctx, &slot.app).await?;
            }
            call(slot, ctx, request(&token.value)).await?
        }
        other => other?,
    };
    install(slot, ctx, fetched).await;
    Ok(())
}

/// A ticket cannot be fetched without a token: pass on why there is none.
fn from_parent(error: KeeperError) -> Arc<Failure> {
    match error {
        KeeperError::Upstream { failure, .. } => failure,
        other => Arc::new(Failure::Unavailable(format!("no access token: {other}"))),
    }
}

/// Whether a force_refresh may be sent now: WeChat ignores them less than
/// `force_refresh_min_interval` apart, and we keep to `force_refresh_daily_budget` a
/// day. With a shared store both are fleet-wide, counted atomically in the store (so
/// two instances cannot both pass), besides this instance's own count.
async fn force_allowed(slot: &Slot, ctx: &Ctx) -> Result<(), String> {
    let now_ms = unix_now_ms();
    let interval = ctx.settings().force_refresh_min_interval;
    let budget = ctx.settings().force_refresh_daily_budget;
    let spaced_out = |since: Duration| {
        format!(
            "the last force_refresh was {}s ago; WeChat ignores them less than {}s apart",
            since.as_secs(),
            interval.as_secs()
        )
    };
    let used_up = || format!("the daily force_refresh budget ({budget}) is used up");
    {
        let health = slot.health();
        if let Some(last) = health.last_force_ms {
            let since = Duration::from_millis(now_ms.saturating_sub(last));
            if since < interval {
                return Err(spaced_out(since));
            }
        }
        if health.calls_today("stable_token_force", now_ms) >= u64::from(budget) {
            return Err(used_up());
        }
    }
    let Some(coordination) = ctx.store.coordination() else {
        return Ok(());
    };
    let app = &slot.key.app;
    let refused = |e: crate::store::StoreError| {
        format!("the fleet's force_refresh budget could not be checked ({e})")
    };
    if !interval.is_zero()
        && !coordination
            .take_budget(app, "force_spacing", 1, interval)
            .await
            .map_err(refused)?
    {
        return Err(format!(
            "another instance sent a force_refresh less than {}s ago",
            interval.as_secs()
        ));
    }
    let day = format!("force:{}", wechat_day(now_ms));
    // The key is per WeChat day; the window only has to outlast the day.
    let day_window = Duration::from_secs(2 * 86_400);
    if !coordination
        .take_budget(app, &day, u64::from(budget), day_window)
        .await
        .map_err(refused)?
    {
        return Err(used_up());
    }
    Ok(())
}

/// One value from WeChat. An answer with `expires_in: 0` is a value in its last second
/// (WeCom hands its token back until it dies): ask again shortly, a few times, since the
/// next answer after its death is a new value. A dying value comes back the same until
/// it dies; a different value with `expires_in: 0` again is a broken answer (each such
/// call may cost quota and kill the value before), and ends the round at once.
async fn call(
    slot: &Slot,
    ctx: &Ctx,
    request: FetchRequest<'_>,
) -> Result<(Fetched, u64), Arc<Failure>> {
    let mut tries = 0;
    let mut dying: Option<String> = None;
    loop {
        let (fetched, started_ms) = call_once(slot, ctx, request).await?;
        if fetched.expires_in > 0 {
            return Ok((fetched, started_ms));
        }
        tries += 1;
        let broken = dying.as_deref().is_some_and(|d| d != fetched.value);
        if tries >= DYING_RETRIES || broken {
            let message = if broken {
                format!("WeChat answered {tries} different values with expires_in 0")
            } else {
                format!("WeChat answered {tries} times with a value that has expired")
            };
            return Err(Arc::new(Failure::Upstream(UpstreamError {
                class: ErrorClass::Transient,
                errcode: None,
                message,
                rid: None,
            })));
        }
        dying = Some(fetched.value);
        info!(app = %slot.key.app, kind = slot.key.kind.as_str(), "WeChat answered with a value in its last second; asking again");
        tokio::time::sleep(DYING_RETRY).await;
    }
}

/// One upstream call, counted (in memory, in the store and in metrics).
async fn call_once(
    slot: &Slot,
    ctx: &Ctx,
    request: FetchRequest<'_>,
) -> Result<(Fetched, u64), Arc<Failure>> {
    // Under a lease, make sure it is still ours (and extend it) right before the call:
    // a refresher paused past its lease must not fetch a token that kills the one the
    // lease's new holder fetched.
    if let (Some(coordination), true) = (
        ctx.store.coordination(),
        slot.leased.load(std::sync::atomic::Ordering::Relaxed),
    ) {
        let ttl = ctx.settings().shared.lease_ttl;
        if let Ok(false) = coordination.renew_lease(&slot.key, &ctx.owner, ttl).await {
            warn!(app = %slot.key.app, kind = slot.key.kind.as_str(), "lost the refresh lease before calling WeChat; leaving the refresh to its new holder");
            return Err(Arc::new(Failure::Unavailable(
                "another instance took over the refresh".into(),
            )));
        }
    }
    let started_ms = unix_now_ms();
    let api = request.api_name();
    // Counted per slot for an app's status; an authorizer's calls are counted under
    // its component (the store and metrics), not in 100,000 per-slot tables.
    let day = if slot.of_authorizer() {
        wechat_day(started_ms)
    } else {
        slot.health().count_call(api, started_ms)
    };
    count_upstream(ctx, &slot.key.app, api, day);
    match ctx.api.fetch(request).await {
        Ok(fetched) => Ok((fetched, started_ms)),
        Err(error) => {
            warn!(
                app = %slot.key.app,
                api,
                class = error.class.as_str(),
                errcode = error.errcode,
                rid = error.rid.as_deref().unwrap_or("-"),
                "upstream call failed: {}",
                error.message
            );
            Err(Arc::new(Failure::Upstream(error)))
        }
    }
}

/// Counts one upstream call of `api` for `app` on WeChat day `day`: in metrics, and in
/// the store (durable, but never delaying the call).
pub(super) fn count_upstream(ctx: &Ctx, app: &str, api: &'static str, day: String) {
    metrics::counter!("wxtoken_upstream_calls_total", "app" => app.to_owned(), "api" => api)
        .increment(1);
    let store = ctx.store.clone();
    let pending = ctx.persist.clone();
    let app = app.to_owned();
    tokio::spawn(async move {
        if let Err(e) = store.add_usage(day.clone(), app.clone(), api, 1).await {
            warn!(app = %app, error = %e, "could not persist the upstream call counter; keeping it to write later");
            pending.refused(&e);
            pending.add_usage(day, app, api, 1);
        }
    });
}

pub(super) async fn install(
    slot: &Slot,
    ctx: &Ctx,
    (fetched, started_ms): (Fetched, u64),
) -> Arc<Token> {
    let mut renewed = true;
    let mut repeat_until_death = false;
    // Built against the value held at the moment of the swap (a value adopted from
    // another instance meanwhile is numbered past, not overwritten unseen).
    let token = slot
        .swap_in(|previous| {
            // With a shared store, `previous` is at least as new as the stored value: a
            // refresh adopts the stored value before fetching.
            let (generation, fetched_at_ms);
            (generation, fetched_at_ms, renewed) = match previous {
                Some(p) if p.value == fetched.value => (p.generation, p.fetched_at_ms, false),
                Some(p) => (p.generation + 1, started_ms, true),
                None => (1, started_ms, true),
            };
            // Expiry counts from when the request left, so it is never later than WeChat's.
            let mut expires_at_ms = started_ms + fetched.expires_in * 1000;
            let mut lifetime_secs = fetched.expires_in;
            // WeChat handed back the value it had already given (WeCom does until its
            // token dies): no renewal is to be had before the value dies. Keep the expiry
            // known from the first answer (a repeat's whole seconds round down), plan from
            // the whole lifetime rather than what was left, serve it to its end, and
            // fetch at its death.
            repeat_until_death = !renewed && slot.policy() == Policy::RefreshAhead;
            if let (true, Some(p)) = (repeat_until_death, previous) {
                expires_at_ms = expires_at_ms.max(p.expires_at_ms);
                lifetime_secs = p.lifetime_secs.max(lifetime_secs);
            }
            Some(Token {
                value: fetched.value.clone(),
                expires_at_ms,
                fetched_at_ms,
                lifetime_secs,
                generation,
            })
        })
        .expect("install always builds a value");
    let generation = token.generation;
    let expires_at_ms = token.expires_at_ms;
    let delay = if repeat_until_death {
        slot.to_death
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Duration::from_millis(expires_at_ms.saturating_sub(unix_now_ms())) + AFTER_DEATH
    } else {
        schedule::refresh_delay(&token, slot.policy(), &ctx.settings(), unix_now_ms())
    };
    {
        let mut health = slot.health();
        health.consecutive_failures = 0;
        health.backoff_until = None;
        health.backoff_class = None;
        health.refresh_at = Some(Instant::now() + delay);
        health.real_end = Some(RealEnd::of(&token, unix_now_ms(), repeat_until_death));
    }
    slot.outcome.send_modify(|o| o.installs += 1);
    ctx.alerts.resolve_credential(&slot.key.to_string());
    let kind = slot.key.kind.as_str();
    // One series per app, never per authorizer (a platform may have 100,000).
    if !slot.of_authorizer() {
        metrics::gauge!("wxtoken_token_expires_at_seconds", "app" => slot.key.app.clone(), "kind" => kind)
            .set((token.expires_at_ms / 1000) as f64);
    }
    info!(
        app = %slot.key.app,
        kind,
        value = %token.redacted(),
        generation,
        expires_in = fetched.expires_in,
        renewed,
        next_refresh_in_ms = delay.as_millis() as u64,
        "credential installed"
    );
    if renewed && !slot.of_authorizer() {
        let at = token.fetched_at_ms;
        ctx.history
            .refreshed(&slot.key.app, slot.key.kind, generation, at);
    }
    if renewed {
        metrics::counter!("wxtoken_token_renewals_total", "app" => slot.key.app.clone(), "kind" => kind)
            .increment(1);
    }
    let saved = match ctx.store.coordination() {
        // Under a lease, the write is fenced by it: a refresher paused past its lease
        // (another instance may have fetched since) must not store.
        Some(coordination) if slot.leased.load(std::sync::atomic::Ordering::Relaxed) => {
            coordination
                .save_fenced(slot.key.clone(), (*token).clone(), &ctx.owner)
                .await
        }
        _ => ctx
            .store
            .save(slot.key.clone(), (*token).clone())
            .await
            .map(|written| {
                if written {
                    Saved::Written
                } else {
                    Saved::Newer
                }
            }),
    };
    let fenced = ctx.store.coordination().is_some();
    match &saved {
        Ok(_) => slot
            .unsaved
            .store(false, std::sync::atomic::Ordering::SeqCst),
        Err(e) if !fenced => {
            slot.unsaved
                .store(true, std::sync::atomic::Ordering::SeqCst);
            ctx.persist.refused(e);
        }
        Err(_) => {}
    }
    match saved {
        Ok(Saved::Written) => {}
        // Another instance stored a newer value: the stored generation wins everywhere,
        // here too.
        Ok(Saved::Newer) => {
            warn!(app = %slot.key.app, kind, generation, "the store holds a newer value; adopting it");
            if let Ok(Some(stored)) = ctx.store.load(slot.key.clone()).await {
                adopt(slot, ctx, stored);
            }
        }
        // We lost the lease while fetching: what the lease's new holder stored is the
        // fleet's value, even if ours numbers higher (we may have adopted its value
        // meanwhile and numbered ours past it).
        Ok(Saved::LeaseLost) => {
            warn!(app = %slot.key.app, kind, generation, "lost the refresh lease while fetching; adopting the stored value instead of storing");
            if let Ok(Some(stored)) = ctx.store.load(slot.key.clone()).await {
                take_stored(slot, ctx, stored, true);
            }
        }
        Err(e) => {
            warn!(app = %slot.key.app, kind, error = %e, "could not persist; serving from memory and writing it once the store takes writes")
        }
    }
    token
}

/// Takes a value another instance stored, if it is newer than ours. Returns whether it
/// was taken.
pub(super) fn adopt(slot: &Slot, ctx: &Ctx, stored: Token) -> bool {
    take_stored(slot, ctx, stored, false)
}

/// Installs a value read from the store: only if it is newer than ours, or (`over`) in
/// any case, since a fenced write found that the store's value is the fleet's.
fn take_stored(slot: &Slot, ctx: &Ctx, stored: Token, over: bool) -> bool {
    let now_ms = unix_now_ms();
    let delay = schedule::refresh_delay(&stored, slot.policy(), &ctx.settings(), now_ms);
    let kind = slot.key.kind.as_str();
    let (value, generation, expires_at_ms, fetched_at_ms) = (
        stored.redacted().to_string(),
        stored.generation,
        stored.expires_at_ms,
        stored.fetched_at_ms,
    );
    let taken = if over {
        slot.swap_in(|_| Some(stored.clone())).is_some()
    } else {
        slot.adopt_if_newer(stored)
    };
    if !taken {
        return false;
    }
    info!(
        app = %slot.key.app,
        kind,
        value = %value,
        generation,
        expires_in = expires_at_ms.saturating_sub(now_ms) / 1000,
        "adopted the value another instance stored"
    );
    if !slot.of_authorizer() {
        metrics::gauge!("wxtoken_token_expires_at_seconds", "app" => slot.key.app.clone(), "kind" => kind)
            .set((expires_at_ms / 1000) as f64);
    }
    {
        let mut health = slot.health();
        health.refresh_at = Some(Instant::now() + delay);
        health.real_end = slot
            .current
            .load()
            .as_deref()
            .map(|held| RealEnd::of(held, now_ms, false));
        // Someone got a value: our own backoff no longer guards anything.
        health.backoff_until = None;
        health.backoff_class = None;
        health.consecutive_failures = 0;
    }
    slot.outcome.send_modify(|o| o.installs += 1);
    if !slot.of_authorizer() {
        let (app, kind) = (&slot.key.app, slot.key.kind);
        ctx.history.refreshed(app, kind, generation, fetched_at_ms);
    }
    true
}

/// Records a failed round and sets the backoff its class calls for.
fn record_failure(slot: &Slot, failure: Arc<Failure>) -> Arc<Failure> {
    let now_ms = unix_now_ms();
    // Retries must land while the current value can still be served, not merely before
    // it expires: the last `serve_margin` of its life is already off limits.
    let token_left = slot.current.load().as_deref().map(|t| {
        Duration::from_millis(t.remaining_ms(now_ms)).saturating_sub(schedule::serve_margin(t))
    });
    let until_reset = Duration::from_millis(next_wechat_midnight_ms(now_ms) - now_ms);
    let mut health = slot.health();
    health.last_error = Some(ErrorRecord {
        failure: failure.clone(),
        at_ms: now_ms,
    });
    // A held-back force refresh is a judgement, not a failure to back off from.
    if matches!(*failure, Failure::ForceRefused(_)) {
        return failure;
    }
    let class = failure.class();
    health.consecutive_failures += 1;
    let wait = schedule::backoff(class, health.consecutive_failures, token_left, until_reset);
    health.backoff_until = Some(Instant::now() + wait);
    health.backoff_class = Some(class);
    warn!(
        app = %slot.key.app,
        kind = slot.key.kind.as_str(),
        class = class.as_str(),
        failures = health.consecutive_failures,
        retry_in_ms = wait.as_millis() as u64,
        "refresh failed: {failure}"
    );
    metrics::counter!(
        "wxtoken_upstream_failures_total",
        "app" => slot.key.app.clone(),
        "class" => class.as_str()
    )
    .increment(1);
    failure
}
