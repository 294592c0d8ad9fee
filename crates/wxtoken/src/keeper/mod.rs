//! The credential lifecycle: every token's and ticket's current value in memory, one
//! driver task per credential that alone talks to WeChat (single flight by
//! construction), proactive jittered refresh, compare-and-invalidate, backoff by error
//! class, local budgets, and persistence.
//!
//! Routes call [`Keeper`]; only the keeper calls `wechat/` and `store/`.

mod budget;
mod driver;
pub mod history;
mod platform;
pub mod schedule;
mod shared;
mod slot;
mod status;

use std::collections::HashMap;
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
pub use platform::{
    AuthorizerCounts, AuthorizerPage, AuthorizerView, ComponentStatus, ImportReport, PushError,
    Pushed, valid_appid,
};
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

async fn prune_daily(
    store: Arc<dyn Store>,
    apps: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(86_400)) => prune(store.as_ref(), &apps).await,
            _ = shutdown.changed() => return,
        }
    }
}

/// What the drivers share.
pub(crate) struct Ctx {
    pub api: Arc<dyn TokenApi>,
    pub store: Arc<dyn Store>,
    pub settings: KeeperSettings,
    /// This instance's name in leases: random per start, so a restarted instance never
    /// mistakes a lease of its previous life for its own.
    pub owner: String,
    /// WeCom's hourly ticket limits, counted locally so we never hit them.
    pub ticket_budget: TicketBudget,
    /// Whether the shared store has been failing long enough to be taken for down.
    pub store_health: shared::StoreHealth,
    /// Each app's recent refreshes and failures, for the dashboard's timeline.
    pub history: history::History,
}

/// One app's credentials.
struct AppSlots {
    token: Arc<Slot>,
    tickets: Vec<(TicketType, Arc<Slot>)>,
}

/// A cheap-to-clone handle on every credential.
#[derive(Clone)]
pub struct Keeper {
    inner: Arc<Inner>,
}

struct Inner {
    /// Fixed at start; runtime app management will make this swappable.
    apps: HashMap<String, AppSlots>,
    /// The component apps' platforms (their authorizers are added at runtime).
    platforms: HashMap<String, Arc<platform::Platform>>,
    /// App ids in configuration order, for listings.
    order: Vec<String>,
    ctx: Arc<Ctx>,
    shutdown: watch::Sender<bool>,
    drivers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper")
            .field("apps", &self.inner.order)
            .finish()
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
        let now_ms = unix_now_ms();
        let day = wechat_day(now_ms);
        let mut stored: HashMap<CredentialKey, Token> = HashMap::new();
        let mut usage = Vec::new();
        for app in apps {
            let kinds = std::iter::once(CredentialKind::AccessToken).chain(
                app.kind
                    .tickets()
                    .iter()
                    .map(|t| CredentialKind::Ticket(*t)),
            );
            for kind in kinds {
                let key = CredentialKey::new(app.id.clone(), kind);
                if let Some(token) = store.load(key.clone()).await? {
                    stored.insert(key, token);
                }
            }
            usage.extend(store.usage(day.clone(), app.id.clone()).await?);
        }
        let mut owner = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut owner);
        let ctx = Arc::new(Ctx {
            api,
            store,
            settings,
            owner: hex::encode(owner),
            ticket_budget: TicketBudget::default(),
            store_health: shared::StoreHealth::default(),
            history: history::History::default(),
        });

        let mut built = HashMap::new();
        let mut order = Vec::new();
        let mut all = Vec::new();
        for app in apps {
            let settings = Arc::new(app.clone());
            let mut make = |kind: CredentialKind, parent: Option<Arc<Slot>>| {
                let key = CredentialKey::new(app.id.clone(), kind);
                let token = stored.remove(&key);
                let mut health = Health {
                    day: day.clone(),
                    wanted: token.is_some(),
                    ..Health::default()
                };
                for row in usage.iter().filter(|r| r.app == app.id) {
                    let name = API_NAMES.iter().find(|n| **n == row.api);
                    if let Some(name) = name.filter(|n| crate::wechat::api_kind(n) == Some(kind)) {
                        health.calls.insert(name, row.calls);
                    }
                }
                let slot = Arc::new(Slot::new(key, settings.clone(), parent, None, health));
                if let Some(token) = token {
                    let delay =
                        schedule::refresh_delay(&token, slot.policy(), &ctx.settings, now_ms);
                    slot.health().refresh_at = Some(Instant::now() + delay);
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
                slot
            };
            let token = make(CredentialKind::AccessToken, None);
            let tickets = app
                .kind
                .tickets()
                .iter()
                .map(|t| (*t, make(CredentialKind::Ticket(*t), Some(token.clone()))))
                .collect();
            built.insert(app.id.clone(), AppSlots { token, tickets });
            order.push(app.id.clone());
        }

        let (shutdown, _) = watch::channel(false);
        let mut platforms = HashMap::new();
        for app in apps.iter().filter(|a| a.kind == AppKind::Component) {
            let Some(slots) = built.get(&app.id) else {
                continue;
            };
            let parking = platform::Parking::start(
                ctx.settings.authorizer_refresh_per_sec,
                ctx.clone(),
                shutdown.subscribe(),
            );
            let platform = platform::Platform::new(slots.token.clone(), parking)
                .map_err(|e| StoreError::Corrupt(format!("app {}: {e}", app.id)))?;
            platform::load(&platform, &ctx).await?;
            platforms.insert(app.id.clone(), Arc::new(platform));
        }
        let apps_now: Vec<String> = apps.iter().map(|a| a.id.clone()).collect();
        prune(ctx.store.as_ref(), &apps_now).await;
        let mut drivers: Vec<JoinHandle<()>> = all
            .iter()
            .map(|slot| {
                tokio::spawn(driver::supervise(
                    slot.clone(),
                    ctx.clone(),
                    shutdown.subscribe(),
                ))
            })
            .collect();
        drivers.push(tokio::spawn(prune_daily(
            ctx.store.clone(),
            apps_now,
            shutdown.subscribe(),
        )));
        let keeper = Self {
            inner: Arc::new(Inner {
                apps: built,
                platforms,
                order,
                ctx: ctx.clone(),
                shutdown,
                drivers: Mutex::new(drivers),
            }),
        };
        if let Some(coordination) = ctx.store.coordination() {
            let updates = coordination.updates();
            info!(owner = %ctx.owner, "sharing the store with other instances");
            let follower = tokio::spawn(shared::follow(
                all,
                Arc::downgrade(&keeper.inner),
                ctx.clone(),
                updates,
                keeper.inner.shutdown.subscribe(),
            ));
            keeper
                .inner
                .drivers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(follower);
        }
        Ok(keeper)
    }

    /// The slot of `key`, wherever it lives (an app's, or an authorizer's).
    pub(crate) fn slot_of(&self, key: &CredentialKey) -> Option<Arc<Slot>> {
        match &key.authorizer {
            None => {
                let app = self.inner.apps.get(&key.app)?;
                match key.kind {
                    CredentialKind::AccessToken => Some(app.token.clone()),
                    CredentialKind::Ticket(t) => app
                        .tickets
                        .iter()
                        .find(|(kind, _)| *kind == t)
                        .map(|(_, slot)| slot.clone()),
                }
            }
            Some(appid) => self.inner.platforms.get(&key.app)?.slot_of(appid, key.kind),
        }
    }

    /// The keeper's timing rules and budgets.
    pub fn settings(&self) -> &KeeperSettings {
        &self.inner.ctx.settings
    }

    /// Whether `app` is configured.
    pub fn has_app(&self, app: &str) -> bool {
        self.inner.apps.contains_key(app)
    }

    /// App ids in configuration order.
    pub fn app_ids(&self) -> &[String] {
        &self.inner.order
    }

    /// The settings of `app` (secrets included: never send them anywhere).
    pub fn app(&self, app: &str) -> Option<&AppSettings> {
        self.inner.apps.get(app).map(|a| &*a.token.app)
    }

    fn slots(&self, app: &str) -> Result<&AppSlots, KeeperError> {
        self.inner
            .apps
            .get(app)
            .ok_or_else(|| KeeperError::UnknownApp(app.to_owned()))
    }

    fn ticket_slot(&self, app: &str, ticket: &str) -> Result<&Arc<Slot>, KeeperError> {
        let slots = self.slots(app)?;
        let found = TicketType::parse(ticket)
            .and_then(|t| slots.tickets.iter().find(|(kind, _)| *kind == t));
        found
            .map(|(_, slot)| slot)
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
            .values()
            .all(|a| a.token.serveable(Duration::ZERO).is_some())
    }

    /// The hot path: the current access token if it has more than `min_left` to live. A
    /// memory read; no lock, no I/O.
    pub fn current(&self, app: &str, min_left: Duration) -> Option<Arc<Token>> {
        self.inner.apps.get(app)?.token.serveable(min_left)
    }

    /// Which app issued the access token `value`, if this server did (its current
    /// token or the one before). A memory read per app; no lock.
    pub fn issuer_of(&self, value: &str) -> Option<(&AppSettings, Issued)> {
        if value.is_empty() {
            return None;
        }
        let now_ms = unix_now_ms();
        self.inner.order.iter().find_map(|id| {
            let slot = &self.inner.apps.get(id)?.token;
            if slot
                .current
                .load()
                .as_deref()
                .is_some_and(|t| t.value == value)
            {
                return Some((&*slot.app, Issued::Current));
            }
            let previous = slot.previous.load();
            let previous = previous.as_deref().filter(|t| t.value == value)?;
            Some((
                &*slot.app,
                Issued::Previous {
                    expired: previous.expires_at_ms <= now_ms,
                },
            ))
        })
    }

    /// Every configured app, in configuration order.
    pub fn apps(&self) -> impl Iterator<Item = &AppSettings> {
        self.inner
            .order
            .iter()
            .filter_map(|id| self.inner.apps.get(id).map(|a| &*a.token.app))
    }

    /// A handle on one app's current access token, for a caller that reads it on every
    /// request and should not look the app up each time.
    pub fn reader(&self, app: &str) -> Option<TokenReader> {
        self.inner
            .apps
            .get(app)
            .map(|a| TokenReader(a.token.clone()))
    }

    /// An access token with at least `min_ttl` left (or just a valid one), waiting for
    /// the single upstream call in flight if there is none.
    pub async fn access_token(
        &self,
        app: &str,
        min_ttl: Option<Duration>,
    ) -> Result<Arc<Token>, KeeperError> {
        let slot = &self.slots(app)?.token;
        slot.obtain(min_ttl, &self.inner.ctx.settings).await
    }

    /// Compare-and-invalidate an access token a client saw rejected; see
    /// [`Slot::invalidate`]. Returns the token and whether it replaced the one reported.
    pub async fn invalidate(
        &self,
        app: &str,
        dead: &str,
    ) -> Result<(Arc<Token>, bool), KeeperError> {
        let slot = &self.slots(app)?.token;
        slot.invalidate(dead, &self.inner.ctx.settings).await
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
        slot.obtain(min_ttl, &self.inner.ctx.settings).await
    }

    /// Compare-and-invalidate a ticket WeChat rejected.
    pub async fn invalidate_ticket(
        &self,
        app: &str,
        ticket: &str,
        dead: &str,
    ) -> Result<(Arc<Token>, bool), KeeperError> {
        let slot = self.ticket_slot(app, ticket)?;
        slot.invalidate(dead, &self.inner.ctx.settings).await
    }

    /// Status of one app, without secrets or values.
    pub fn status(&self, app: &str) -> Option<AppStatus> {
        let slots = self.inner.apps.get(app)?;
        let tickets: Vec<&Slot> = slots.tickets.iter().map(|(_, s)| s.as_ref()).collect();
        let mut status = status::of(&slots.token, &tickets, &self.inner.ctx.settings);
        status.component = self.component_status(app);
        Some(status)
    }

    /// `app`'s refreshes and failures at or after `since_ms` (unix ms), within the last
    /// day, oldest first; `None` for an unknown app.
    pub fn timeline(&self, app: &str, since_ms: u64) -> Option<Vec<history::Event>> {
        self.has_app(app)
            .then(|| self.inner.ctx.history.since(app, since_ms, unix_now_ms()))
    }

    /// Stops every driver (in-flight upstream calls are awaited up to `grace`).
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.inner.shutdown.send(true);
        let drivers =
            std::mem::take(&mut *self.inner.drivers.lock().unwrap_or_else(|p| p.into_inner()));
        for driver in drivers {
            if tokio::time::timeout(grace, driver).await.is_err() {
                tracing::warn!("a credential driver did not stop within {grace:?}");
            }
        }
    }
}
