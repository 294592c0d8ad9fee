//! The credential lifecycle: every token's and ticket's current value in memory, one
//! driver task per credential that alone talks to WeChat (single flight by
//! construction), proactive jittered refresh, compare-and-invalidate, backoff by error
//! class, local budgets, and persistence.
//!
//! Routes call [`Keeper`]; only the keeper calls `wechat/` and `store/`.

mod budget;
mod driver;
mod expiry;
#[cfg(test)]
mod fault_tests;
pub mod history;
mod persist;
mod platform;
mod quota;
mod recovery;
pub mod schedule;
mod shared;
mod slot;
mod status;

use std::collections::HashMap;

use arc_swap::ArcSwap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::info;

use crate::config::{AppKind, AppSettings, KeeperSettings};
use crate::credential::{
    CredentialKey, CredentialKind, TicketType, Token, unix_now_ms, wechat_day,
};
use crate::store::{DEAD_VALUE_GRACE_MS, Pruned, Store, StoreError, USAGE_KEEP_DAYS};
use crate::wechat::{API_NAMES, ErrorClass, TokenApi, UpstreamError};
use budget::TicketBudget;
pub use persist::{STORE_WRITES_INCIDENT, WriteFailure};
pub use platform::{
    AuthorizerCounts, AuthorizerPage, AuthorizerView, ComponentStatus, ImportReport, PushError,
    Pushed, valid_appid,
};
pub use quota::{ClearError, QuotaStatus, WechatFigures};
use slot::{Health, Slot};
pub use status::{AppStatus, ErrorStatus, TicketStatus, TokenStatus};

/// Why a round produced no value.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// WeChat (or the way to it) failed, or a local budget said no.
    #[error("{0}")]
    Upstream(UpstreamError),
    /// A client reported the token dead, WeChat keeps returning it, and a force_refresh
    /// is not allowed now.
    #[error("WeChat returns the reported token again and force_refresh is held back: {0}")]
    ForceRefused(String),
    /// No value and no upstream error to show (e.g. a ticket whose token is missing).
    #[error("{0}")]
    Unavailable(String),
    /// A component cannot fetch its token before WeChat pushes a verify ticket (or
    /// WeChat refused the one held: 61005, 61006); a new push wakes it.
    #[error("{0}")]
    WaitingForVerifyTicket(String),
    /// The authorizer withdrew its authorization: nothing is fetched for it any more.
    #[error("authorizer {0} has withdrawn its authorization")]
    Unauthorized(String),
    /// WeChat refused the authorizer's refresh token (61023): the merchant must
    /// authorize again.
    #[error("authorizer {0} must authorize again: WeChat refused its refresh token")]
    NeedsReauthorization(String),
}

impl Failure {
    /// What the keeper does next about it.
    pub fn class(&self) -> ErrorClass {
        match self {
            Failure::Upstream(e) => e.class,
            Failure::ForceRefused(_)
            | Failure::WaitingForVerifyTicket(_)
            | Failure::Unauthorized(_)
            | Failure::NeedsReauthorization(_) => ErrorClass::Configuration,
            Failure::Unavailable(_) => ErrorClass::Transient,
        }
    }
}

/// What a caller of the keeper may get instead of a value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeeperError {
    #[error("no app `{0}` is configured")]
    UnknownApp(String),
    #[error("app `{0}` is not a third-party platform (kind = \"component\")")]
    NotAComponent(String),
    #[error("component `{component}` has no authorizer `{appid}`")]
    UnknownAuthorizer { component: String, appid: String },
    /// The app's kind has no such ticket.
    #[error("ticket type `{ticket}` is not available for a {kind} app; allowed: {allowed}")]
    NoSuchTicket {
        ticket: String,
        kind: &'static str,
        allowed: String,
    },
    /// The last upstream attempt failed and no valid value remains.
    #[error("{failure}")]
    Upstream {
        failure: Arc<Failure>,
        /// When the keeper will try again, if it is backing off.
        retry_in: Option<Duration>,
    },
    /// No value can be given for another reason (min_ttl not met in time, shutting down).
    #[error("{0}")]
    Unavailable(String),
}

impl KeeperError {
    /// A failure that is not WeChat's answer to this request (a state, a wait).
    pub(crate) fn from_failure(failure: impl Into<Arc<Failure>>) -> Self {
        KeeperError::Upstream {
            failure: failure.into(),
            retry_in: None,
        }
    }
}

/// How a token value presented by a client relates to what this server issued.
#[derive(Debug, Clone)]
pub enum Issued {
    /// The app's current access token.
    Current,
    /// The one it replaced: WeChat may still accept it during the overlap, and the
    /// current one is always a valid substitute.
    Previous {
        /// Whether its own expiry has passed.
        expired: bool,
    },
}

/// Reads one app's current access token without a lookup or a reference count: the
/// hot path of serving.
#[derive(Clone)]
pub struct TokenReader(Arc<Slot>);

impl std::fmt::Debug for TokenReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TokenReader").field(&self.0.key).finish()
    }
}

impl TokenReader {
    /// Whether both read the same credential slot (not a replaced one of the same app).
    pub fn same_slot(&self, other: &TokenReader) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Runs `f` on the current token if it has more than `min_left` to live at `now_ms`
    /// (through an arc-swap guard, not a clone).
    pub fn read<R>(
        &self,
        min_left: Duration,
        now_ms: u64,
        f: impl FnOnce(&Token) -> R,
    ) -> Option<R> {
        let guard = self.0.current.load();
        let token = guard.as_deref()?;
        self.0.can_serve(token, now_ms, min_left).then(|| f(token))
    }
}

/// Drops usage counters older than [`USAGE_KEEP_DAYS`] and stored values of removed
/// apps or long expired; a failure is logged and left for the next day.
async fn prune(store: &dyn Store, apps: &[String]) {
    let now_ms = unix_now_ms();
    let oldest_day = wechat_day(now_ms.saturating_sub(USAGE_KEEP_DAYS * 86_400_000));
    let expired_before = now_ms.saturating_sub(DEAD_VALUE_GRACE_MS);
    match store.prune(oldest_day, apps.to_vec(), expired_before).await {
        Ok(pruned) if pruned != Pruned::default() => info!(
            usage_rows = pruned.usage_rows,
            credentials = pruned.credentials,
            "pruned the store"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not prune the store"),
    }
}

async fn prune_daily(keeper: std::sync::Weak<Inner>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(86_400)) => {}
            _ = shutdown.changed() => return,
        }
        let Some(inner) = keeper.upgrade() else {
            return;
        };
        let apps = inner.apps.load().order.clone();
        let store = inner.ctx.store.clone();
        drop(inner);
        prune(store.as_ref(), &apps).await;
    }
}

/// What the drivers share.
pub(crate) struct Ctx {
    pub api: Arc<dyn TokenApi>,
    pub store: Arc<dyn Store>,
    /// Swapped whole by a config reload; read it once per decision.
    settings: ArcSwap<KeeperSettings>,
    /// This instance's name in leases: random per start, so a restarted instance never
    /// mistakes a lease of its previous life for its own.
    pub owner: String,
    /// WeCom's hourly ticket limits, counted locally so we never hit them.
    pub ticket_budget: TicketBudget,
    /// Whether the shared store has been failing long enough to be taken for down.
    pub store_health: shared::StoreHealth,
    /// The quota guard's per-app state (WeChat's figures, clears).
    pub quota: quota::QuotaBook,
    /// Each app's recent refreshes and failures, for the dashboard's timeline.
    pub history: history::History,
    /// Incidents for the operators' webhooks; raising one never waits.
    pub alerts: crate::alerts::Alerts,
    /// Writes the store refused, to be written again once it takes them.
    pub persist: Arc<persist::Pending>,
}

impl Ctx {
    /// The current timing rules and budgets.
    pub fn settings(&self) -> Arc<KeeperSettings> {
        self.settings.load_full()
    }
}

/// One app's credentials.
struct AppSlots {
    token: Arc<Slot>,
    tickets: Vec<(TicketType, Arc<Slot>)>,
}

/// One app: its credentials, its platform if it is a component, and the switch that
/// stops its drivers (on removal, or at shutdown).
struct AppEntry {
    slots: AppSlots,
    platform: Option<Arc<platform::Platform>>,
    stop: watch::Sender<bool>,
}

/// The apps being kept: replaced whole (copy on write) when one is added or removed,
/// so that readers never lock.
#[derive(Default)]
struct Apps {
    map: HashMap<String, Arc<AppEntry>>,
    /// App ids in configuration order, then runtime apps in the order added.
    order: Vec<String>,
}

/// A cheap-to-clone handle on every credential.
#[derive(Clone)]
pub struct Keeper {
    inner: Arc<Inner>,
}

struct Inner {
    apps: ArcSwap<Apps>,
    /// Adds and removals one at a time.
    changing: tokio::sync::Mutex<()>,
    ctx: Arc<Ctx>,
    shutdown: watch::Sender<bool>,
    drivers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper")
            .field("apps", &self.inner.apps.load().order)
            .finish()
    }
}

/// An app's entry built from its settings and what the store holds, its drivers not yet
/// started.
async fn build_app(
    app: &AppSettings,
    ctx: &Arc<Ctx>,
    load_stored: bool,
) -> Result<(AppEntry, Vec<Arc<Slot>>), StoreError> {
    let now_ms = unix_now_ms();
    let day = wechat_day(now_ms);
    let usage = ctx.store.usage(day.clone(), app.id.clone()).await?;
    let settings = Arc::new(app.clone());
    let (stop, _) = watch::channel(false);
    let mut all = Vec::new();
    let mut make = async |kind: CredentialKind, parent: Option<Arc<Slot>>| {
        let key = CredentialKey::new(app.id.clone(), kind);
        let token = if load_stored {
            ctx.store.load(key.clone()).await?
        } else {
            None
        };
        let token = token.filter(|t| !t.value.is_empty());
        let mut health = Health {
            day: day.clone(),
            wanted: token.is_some(),
            ..Health::default()
        };
        for row in &usage {
            let name = API_NAMES.iter().find(|n| **n == row.api);
            if let Some(name) = name.filter(|n| crate::wechat::api_kind(n) == Some(kind)) {
                health.calls.insert(name, row.calls);
            }
        }
        let slot = Arc::new(Slot::new(key, settings.clone(), parent, None, health));
        if let Some(token) = token {
            let delay = schedule::refresh_delay(&token, slot.policy(), &ctx.settings(), now_ms);
            {
                let mut health = slot.health();
                health.refresh_at = Some(Instant::now() + delay);
                health.real_end = Some(slot::RealEnd::of(&token, now_ms, false));
            }
            info!(
                app = %app.id,
                kind = kind.as_str(),
                value = %token.redacted(),
                generation = token.generation,
                expires_in = token.expires_in_secs(now_ms),
                "loaded stored credential"
            );
            let at = token.fetched_at_ms;
            ctx.history.refreshed(&app.id, kind, token.generation, at);
            slot.current.store(Some(Arc::new(token)));
        }
        all.push(slot.clone());
        Ok::<_, StoreError>(slot)
    };
    let token = make(CredentialKind::AccessToken, None).await?;
    let mut tickets = Vec::new();
    for t in app.kind.tickets() {
        tickets.push((
            *t,
            make(CredentialKind::Ticket(*t), Some(token.clone())).await?,
        ));
    }
    let platform = if app.kind == AppKind::Component {
        let parking = platform::Parking::start(
            ctx.settings().authorizer_refresh_per_sec,
            ctx.clone(),
            stop.subscribe(),
        );
        let platform = platform::Platform::new(token.clone(), parking)
            .map_err(|e| StoreError::Corrupt(format!("app {}: {e}", app.id)))?;
        platform::load(&platform, ctx).await?;
        Some(Arc::new(platform))
    } else {
        None
    };
    Ok((
        AppEntry {
            slots: AppSlots { token, tickets },
            platform,
            stop,
        },
        all,
    ))
}

/// A stored value that no app may serve: written over the values of a removed app (or
/// one whose appid changed), so that nothing of its old credential is adopted again.
fn tombstone(generation: u64) -> Token {
    Token {
        value: String::new(),
        expires_at_ms: 0,
        fetched_at_ms: unix_now_ms(),
        lifetime_secs: 0,
        generation,
    }
}

impl Keeper {
    /// Loads stored values and today's counters, then starts one driver per credential.
    /// A stored value that is still valid is served at once, with no upstream call.
    /// Access tokens are fetched at start; tickets when first asked for.
    pub async fn start(
        apps: &[AppSettings],
        settings: KeeperSettings,
        api: Arc<dyn TokenApi>,
        store: Arc<dyn Store>,
    ) -> Result<Self, StoreError> {
        let mut owner = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut owner);
        let ctx = Arc::new(Ctx {
            api,
            store,
            alerts: crate::alerts::Alerts::start(&settings.alerts),
            settings: ArcSwap::from_pointee(settings),
            owner: hex::encode(owner),
            ticket_budget: TicketBudget::default(),
            store_health: shared::StoreHealth::default(),
            quota: quota::QuotaBook::default(),
            history: history::History::default(),
            persist: Arc::default(),
        });

        let mut built = Apps::default();
        let mut started = Vec::new();
        for app in apps {
            let (entry, slots) = build_app(app, &ctx, true).await?;
            let entry = Arc::new(entry);
            built.map.insert(app.id.clone(), entry.clone());
            built.order.push(app.id.clone());
            started.push((entry, slots));
        }

        let (shutdown, _) = watch::channel(false);
        let apps_now: Vec<String> = apps.iter().map(|a| a.id.clone()).collect();
        prune(ctx.store.as_ref(), &apps_now).await;
        let keeper = Self {
            inner: Arc::new(Inner {
                apps: ArcSwap::from_pointee(built),
                changing: tokio::sync::Mutex::new(()),
                ctx: ctx.clone(),
                shutdown,
                drivers: Mutex::new(Vec::new()),
            }),
        };
        for (entry, slots) in started {
            keeper.spawn_app(&entry, slots);
        }
        keeper.spawn_task(prune_daily(
            Arc::downgrade(&keeper.inner),
            keeper.inner.shutdown.subscribe(),
        ));
        keeper.spawn_task(expiry::watch(
            Arc::downgrade(&keeper.inner),
            keeper.inner.shutdown.subscribe(),
        ));
        keeper.spawn_task(persist::retry(
            Arc::downgrade(&keeper.inner),
            keeper.inner.shutdown.subscribe(),
        ));
        if let Some(coordination) = ctx.store.coordination() {
            let updates = coordination.updates();
            info!(owner = %ctx.owner, "sharing the store with other instances");
            keeper.spawn_task(shared::follow(
                Arc::downgrade(&keeper.inner),
                ctx.clone(),
                updates,
                keeper.inner.shutdown.subscribe(),
            ));
        }
        Ok(keeper)
    }

    fn spawn_task(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        self.inner
            .drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle);
    }

    /// Starts the drivers of an app's slots.
    fn spawn_app(&self, entry: &AppEntry, slots: Vec<Arc<Slot>>) {
        for slot in slots {
            self.spawn_task(driver::supervise(
                slot,
                self.inner.ctx.clone(),
                entry.stop.subscribe(),
            ));
        }
    }

    /// Adds `app`, or replaces the app of the same id, and starts its drivers: its
    /// routes answer at once. Returns whether it was new.
    ///
    /// The instance where the change was asked (`origin`) first overwrites stored values
    /// with tombstones when the app's WeChat identity (kind and appid) is new or changed,
    /// so that no instance serves a token of another identity; the others (learning of
    /// the change from the store) only load what is stored.
    pub async fn put_app(&self, app: AppSettings, origin: bool) -> Result<bool, StoreError> {
        let _one_at_a_time = self.inner.changing.lock().await;
        let previous = self.entry(&app.id);
        let same_identity = previous.as_ref().is_some_and(|p| {
            p.slots.token.app.kind == app.kind && p.slots.token.app.appid == app.appid
        });
        if let Some(previous) = &previous {
            let _ = previous.stop.send(true);
        }
        if origin && !same_identity {
            self.bury(&app).await;
        }
        let (entry, slots) = build_app(&app, &self.inner.ctx, true).await?;
        let entry = Arc::new(entry);
        self.spawn_app(&entry, slots);
        self.inner.apps.rcu(|apps| {
            let mut next = Apps {
                map: apps.map.clone(),
                order: apps.order.clone(),
            };
            if next.map.insert(app.id.clone(), entry.clone()).is_none() {
                next.order.push(app.id.clone());
            }
            next
        });
        info!(app = %app.id, kind = app.kind.as_str(), new = previous.is_none(), "app put");
        Ok(previous.is_none())
    }

    /// Removes an app: its drivers stop and its routes answer 404 at once. At the
    /// `origin` of the change its stored values are overwritten with tombstones. Returns
    /// whether it existed.
    pub async fn remove_app(&self, app: &str, origin: bool) -> bool {
        let _one_at_a_time = self.inner.changing.lock().await;
        let Some(previous) = self.entry(app) else {
            return false;
        };
        self.inner.apps.rcu(|apps| Apps {
            map: apps
                .map
                .iter()
                .filter(|(id, _)| id.as_str() != app)
                .map(|(id, e)| (id.clone(), e.clone()))
                .collect(),
            order: apps.order.iter().filter(|id| *id != app).cloned().collect(),
        });
        let _ = previous.stop.send(true);
        self.inner.ctx.history.forget(app);
        // Nothing is kept for it any more: its incidents (its authorizers' too) are over.
        self.inner.ctx.alerts.resolve_prefix(&format!("{app}/"));
        self.inner.ctx.alerts.resolve_prefix(&format!("{app}#"));
        if origin {
            self.bury(&previous.slots.token.app).await;
        }
        info!(app, "app removed");
        true
    }

    /// Writes tombstones over what the store holds under `app`'s id (best effort: a
    /// store failure is logged, and stored values expire anyway).
    async fn bury(&self, app: &AppSettings) {
        let kinds = std::iter::once(CredentialKind::AccessToken).chain(
            app.kind
                .tickets()
                .iter()
                .map(|t| CredentialKind::Ticket(*t)),
        );
        for kind in kinds {
            let key = CredentialKey::new(app.id.clone(), kind);
            let stored = match self.inner.ctx.store.load(key.clone()).await {
                Ok(Some(stored)) if !stored.value.is_empty() => stored,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(credential = %key, error = %e, "could not read a stored value to clear it");
                    continue;
                }
            };
            let dead = tombstone(stored.generation + 1);
            if let Err(e) = self.inner.ctx.store.save(key.clone(), dead).await {
                tracing::warn!(credential = %key, error = %e, "could not clear a stored value");
            }
        }
    }

    /// Every app's slots (not authorizers'), for a comparison with the store.
    pub(crate) fn app_slots(&self) -> Vec<Arc<Slot>> {
        self.inner
            .apps
            .load()
            .map
            .values()
            .flat_map(|e| {
                std::iter::once(e.slots.token.clone())
                    .chain(e.slots.tickets.iter().map(|(_, s)| s.clone()))
            })
            .collect()
    }

    fn entry(&self, app: &str) -> Option<Arc<AppEntry>> {
        self.inner.apps.load().map.get(app).cloned()
    }

    /// The slot of `key`, wherever it lives (an app's, or an authorizer's).
    pub(crate) fn slot_of(&self, key: &CredentialKey) -> Option<Arc<Slot>> {
        let entry = self.entry(&key.app)?;
        match &key.authorizer {
            None => match key.kind {
                CredentialKind::AccessToken => Some(entry.slots.token.clone()),
                CredentialKind::Ticket(t) => entry
                    .slots
                    .tickets
                    .iter()
                    .find(|(kind, _)| *kind == t)
                    .map(|(_, slot)| slot.clone()),
            },
            Some(appid) => entry.platform.as_ref()?.slot_of(appid, key.kind),
        }
    }

    /// The incidents raised for the operators' webhooks (`GET /v1/alerts`; a quota
    /// guard raises and resolves its own through it).
    pub fn alerts(&self) -> &crate::alerts::Alerts {
        &self.inner.ctx.alerts
    }

    /// The keeper's timing rules and budgets (as of now: a reload may replace them).
    pub fn settings(&self) -> Arc<KeeperSettings> {
        self.inner.ctx.settings()
    }

    /// Replaces the timing rules and budgets (a config reload). Each credential follows
    /// them from its next decision; the store's lease and reconcile timing, the
    /// authorizer pace and the alert hooks stay as they were at start.
    pub fn set_settings(&self, mut settings: KeeperSettings) {
        let current = self.settings();
        settings.shared = current.shared.clone();
        settings.authorizer_refresh_per_sec = current.authorizer_refresh_per_sec;
        settings.alerts = current.alerts.clone();
        self.inner.ctx.settings.store(Arc::new(settings));
    }

    /// Whether `app` is kept.
    pub fn has_app(&self, app: &str) -> bool {
        self.inner.apps.load().map.contains_key(app)
    }

    /// App ids: configured ones in configuration order, then runtime ones.
    pub fn app_ids(&self) -> Vec<String> {
        self.inner.apps.load().order.clone()
    }

    /// The settings of `app` (secrets included: never send them anywhere).
    pub fn app(&self, app: &str) -> Option<Arc<AppSettings>> {
        self.entry(app).map(|e| e.slots.token.app.clone())
    }

    fn slots(&self, app: &str) -> Result<Arc<AppEntry>, KeeperError> {
        self.entry(app)
            .ok_or_else(|| KeeperError::UnknownApp(app.to_owned()))
    }

    fn ticket_slot(&self, app: &str, ticket: &str) -> Result<Arc<Slot>, KeeperError> {
        let entry = self.slots(app)?;
        let slots = &entry.slots;
        let found = TicketType::parse(ticket)
            .and_then(|t| slots.tickets.iter().find(|(kind, _)| *kind == t));
        found
            .map(|(_, slot)| slot.clone())
            .ok_or_else(|| KeeperError::NoSuchTicket {
                ticket: ticket.to_owned(),
                kind: slots.token.app.kind.as_str(),
                allowed: slots
                    .tickets
                    .iter()
                    .map(|(t, _)| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Whether every app has a valid access token in memory.
    pub fn all_serving(&self) -> bool {
        self.inner
            .apps
            .load()
            .map
            .values()
            .all(|a| a.slots.token.serveable(Duration::ZERO).is_some())
    }

    /// The hot path: the current access token if it has more than `min_left` to live. A
    /// memory read; no lock, no I/O.
    pub fn current(&self, app: &str, min_left: Duration) -> Option<Arc<Token>> {
        self.inner
            .apps
            .load()
            .map
            .get(app)?
            .slots
            .token
            .serveable(min_left)
    }

    /// Which app issued the access token `value`, if this server did (its current
    /// token or the one before). A memory read per app; no lock.
    pub fn issuer_of(&self, value: &str) -> Option<(Arc<AppSettings>, Issued)> {
        if value.is_empty() {
            return None;
        }
        let now_ms = unix_now_ms();
        let apps = self.inner.apps.load();
        apps.order.iter().find_map(|id| {
            let slot = &apps.map.get(id)?.slots.token;
            if slot
                .current
                .load()
                .as_deref()
                .is_some_and(|t| t.value == value)
            {
                return Some((slot.app.clone(), Issued::Current));
            }
            let previous = slot.previous.load();
            let previous = previous.as_deref().filter(|t| t.value == value)?;
            Some((
                slot.app.clone(),
                Issued::Previous {
                    expired: previous.expires_at_ms <= now_ms,
                },
            ))
        })
    }

    /// Every app, in order.
    pub fn apps(&self) -> Vec<Arc<AppSettings>> {
        let apps = self.inner.apps.load();
        apps.order
            .iter()
            .filter_map(|id| apps.map.get(id).map(|a| a.slots.token.app.clone()))
            .collect()
    }

    /// A handle on one app's current access token, for a caller that reads it on every
    /// request and should not look the app up each time.
    pub fn reader(&self, app: &str) -> Option<TokenReader> {
        self.entry(app).map(|a| TokenReader(a.slots.token.clone()))
    }

    /// An access token with at least `min_ttl` left (or just a valid one), waiting for
    /// the single upstream call in flight if there is none.
    pub async fn access_token(
        &self,
        app: &str,
        min_ttl: Option<Duration>,
    ) -> Result<Arc<Token>, KeeperError> {
        let entry = self.slots(app)?;
        entry
            .slots
            .token
            .obtain(min_ttl, &self.inner.ctx.settings())
            .await
    }

    /// Compare-and-invalidate an access token a client saw rejected; see
    /// [`Slot::invalidate`]. Returns the token and whether it replaced the one reported.
    pub async fn invalidate(
        &self,
        app: &str,
        dead: &str,
    ) -> Result<(Arc<Token>, bool), KeeperError> {
        let entry = self.slots(app)?;
        entry
            .slots
            .token
            .invalidate(dead, &self.inner.ctx.settings())
            .await
    }

    /// A ticket of type `ticket` (`jsapi`, `wx_card`, `agent_config`), with the same
    /// guarantees as tokens.
    pub async fn ticket(
        &self,
        app: &str,
        ticket: &str,
        min_ttl: Option<Duration>,
    ) -> Result<Arc<Token>, KeeperError> {
        let slot = self.ticket_slot(app, ticket)?;
        slot.obtain(min_ttl, &self.inner.ctx.settings()).await
    }

    /// Compare-and-invalidate a ticket WeChat rejected.
    pub async fn invalidate_ticket(
        &self,
        app: &str,
        ticket: &str,
        dead: &str,
    ) -> Result<(Arc<Token>, bool), KeeperError> {
        let slot = self.ticket_slot(app, ticket)?;
        slot.invalidate(dead, &self.inner.ctx.settings()).await
    }

    /// Status of one app, without secrets or values.
    pub fn status(&self, app: &str) -> Option<AppStatus> {
        let entry = self.entry(app)?;
        let slots = &entry.slots;
        let tickets: Vec<&Slot> = slots.tickets.iter().map(|(_, s)| s.as_ref()).collect();
        let mut status = status::of(&slots.token, &tickets, &self.inner.ctx.settings());
        status.component = self.component_status(app);
        status.quota = Some(quota::status(&slots.token, &self.inner.ctx));
        Some(status)
    }

    /// `app`'s refreshes and failures at or after `since_ms` (unix ms), within the last
    /// day, oldest first; `None` for an unknown app.
    pub fn timeline(&self, app: &str, since_ms: u64) -> Option<Vec<history::Event>> {
        self.has_app(app)
            .then(|| self.inner.ctx.history.since(app, since_ms, unix_now_ms()))
    }

    /// Stops every driver. In-flight upstream calls get `grace` in all (not per
    /// credential) to finish and persist; then leases still held are given up, so that
    /// another instance takes over those credentials at once instead of after the
    /// lease's lifetime.
    pub async fn shutdown(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let _ = self.inner.shutdown.send(true);
        for entry in self.inner.apps.load().map.values() {
            let _ = entry.stop.send(true);
        }
        let drivers =
            std::mem::take(&mut *self.inner.drivers.lock().unwrap_or_else(|p| p.into_inner()));
        let running = drivers.len();
        if tokio::time::timeout_at(deadline, futures::future::join_all(drivers))
            .await
            .is_err()
        {
            tracing::warn!(
                running,
                "credential drivers still busy after {grace:?}; stopping without them"
            );
        }
        let Some(coordination) = self.inner.ctx.store.coordination() else {
            return;
        };
        let held: Vec<Arc<Slot>> = self
            .app_slots()
            .into_iter()
            .filter(|s| s.leased.load(std::sync::atomic::Ordering::Relaxed))
            .collect();
        for slot in held {
            let release = coordination.release_lease(&slot.key, &self.inner.ctx.owner);
            match tokio::time::timeout(Duration::from_secs(1), release).await {
                Ok(Ok(())) => info!(credential = %slot.key, "released the refresh lease"),
                Ok(Err(e)) => {
                    tracing::warn!(credential = %slot.key, error = %e, "could not release a lease")
                }
                Err(_) => tracing::warn!(credential = %slot.key, "releasing a lease timed out"),
            }
        }
    }
}
