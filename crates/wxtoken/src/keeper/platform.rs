//! Third-party platforms (开放平台 第三方平台): a component's token, the verify tickets
//! WeChat pushes to it, and the accounts that authorized it, created at runtime and
//! kept by the thousand.
//!
//! - A component's token is an ordinary slot with its own driver; it is fetched with
//!   the newest verify ticket, which the callback stores (see [`Keeper::receive_push`]).
//! - Every authorizer is a slot too (so single flight, refresh ahead,
//!   compare-and-invalidate, backoff and the shared-store lease all apply), linked to
//!   its [`AuthorizerRecord`]: the refresh token, persisted before each new token is
//!   served, and the state (`ok`, `needs_reauthorization`, `unauthorized`).
//! - Background refreshes of a component's authorizers are paced ([`Pacer`]): at most
//!   `keeper.authorizer_refresh_per_sec`. A caller waiting on a token and an
//!   authorization being completed never wait for that pace.
//! - Status and metrics count authorizers by state; nothing is per authorizer.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};

use super::recovery::Recovery;
use super::slot::{Health, Slot};
use super::{Ctx, Failure, Issued, Keeper, KeeperError, driver, schedule};
use crate::config::{AUTHORIZER_TICKETS, AppSettings};
use crate::credential::{
    CredentialKey, CredentialKind, TicketType, Token, unix_now_ms, wechat_day,
};
use crate::store::{AuthorizerRecord, AuthorizerState, StoreError, VerifyTicket};
use crate::wechat::crypto::{self, CryptoError, MsgCrypt};
use crate::wechat::{Authorization, ComponentAnswer, ComponentCall, ErrorClass, ListedAuthorizer};

/// `api_get_authorizer_list` gives at most this many a page.
const LIST_PAGE: u64 = 500;

/// Records are read from the store this many at a time at start.
const LOAD_PAGE: usize = 2000;

/// A write of an authorizer's record is tried this many times before giving up.
const PERSIST_TRIES: u32 = 3;

/// The authorization page a merchant is sent to.
const AUTH_PAGE: &str = "https://mp.weixin.qq.com/cgi-bin/componentloginpage";

/// Paces a component's background refreshes: permits are added every tick (10 ms, or
/// 1/rate s below 100 a second) and never pile up beyond one tick's worth; one tick a
/// second adds none, so that the tick's worth that may be waiting plus every tick of any
/// one-second window stays within the rate (a cap of 1000 releases 990 a second; a cap
/// of 1, one). Waiters queue fairly (a semaphore), so 100,000 drivers due at once are
/// released in order, not in a thundering herd.
#[derive(Debug)]
pub(crate) struct Pacer {
    permits: Semaphore,
}

impl Pacer {
    /// A pacer releasing `per_sec` permits a second until `shutdown`.
    pub fn start(per_sec: u32, mut shutdown: watch::Receiver<bool>) -> Arc<Self> {
        let pacer = Arc::new(Self {
            permits: Semaphore::new(0),
        });
        let per_sec = per_sec.max(1);
        // Ticks of at least 10 ms; each adds its share of the rate.
        let ticks_per_sec = per_sec.min(100);
        let per_tick = (per_sec / ticks_per_sec) as usize;
        let extra = per_sec % ticks_per_sec;
        let weak = Arc::downgrade(&pacer);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / ticks_per_sec);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u32 = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                let Some(pacer) = weak.upgrade() else { return };
                n = (n + 1) % ticks_per_sec;
                if n == 0 && ticks_per_sec > 1 {
                    continue;
                }
                let share = per_tick + usize::from(n < extra);
                let idle = pacer.permits.available_permits();
                if idle < share {
                    pacer.permits.add_permits(share - idle);
                }
            }
        });
        pacer
    }

    /// Waits for one permit (cancel-safe: a waiter that gives up loses its place only).
    pub async fn acquire(&self) {
        if let Ok(permit) = self.permits.acquire().await {
            permit.forget();
        }
    }
}

/// Where the drivers of a component's authorizers wait between refreshes. A driver
/// with nothing to do for a while parks (its task ends) and is started again when its
/// refresh is due, or at once when a caller needs it (see [`Slot::ensure_running`]): a
/// platform with 100,000 authorizers keeps 100,000 queue entries rather than 100,000
/// sleeping tasks. Background refreshes are released at the component's pace here, in
/// order of due time.
pub(crate) struct Parking {
    pub pacer: Arc<Pacer>,
    queue: Mutex<BTreeMap<(tokio::time::Instant, u64), std::sync::Weak<Slot>>>,
    seq: AtomicU64,
    changed: tokio::sync::Notify,
    ctx: Arc<Ctx>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Parking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parked = self.queue.lock().unwrap_or_else(|p| p.into_inner()).len();
        f.debug_struct("Parking").field("parked", &parked).finish()
    }
}

/// A driver parks when its next refresh is at least this far off.
pub(crate) const PARK_AFTER: Duration = Duration::from_secs(5);

impl Parking {
    /// A parking for one component, paced at `per_sec`, stopping at `shutdown`.
    pub fn start(per_sec: u32, ctx: Arc<Ctx>, shutdown: watch::Receiver<bool>) -> Arc<Self> {
        let parking = Arc::new(Self {
            pacer: Pacer::start(per_sec, shutdown.clone()),
            queue: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
            ctx,
            shutdown: shutdown.clone(),
        });
        tokio::spawn(Self::release(Arc::downgrade(&parking), shutdown));
        parking
    }

    /// Parks `slot` until `due`.
    pub fn park(&self, slot: &Arc<Slot>, due: tokio::time::Instant) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        slot.parked.store(n, Ordering::SeqCst);
        slot.paced.store(false, Ordering::Relaxed);
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let earliest = queue.first_key_value().is_none_or(|((at, _), _)| due < *at);
        queue.insert((due, n), Arc::downgrade(slot));
        drop(queue);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// Starts a driver for `slot` (the caller won the slot's `running` flag).
    pub fn spawn(&self, slot: Arc<Slot>) {
        tokio::spawn(driver::supervise(
            slot,
            self.ctx.clone(),
            self.shutdown.clone(),
        ));
    }

    /// Starts the drivers of parked slots as they fall due, one pacer permit each.
    async fn release(parking: std::sync::Weak<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let Some(this) = parking.upgrade() else {
                return;
            };
            // Entries a slot has since replaced (it parked again), or of slots gone,
            // are dropped without using the pace.
            let next = {
                let mut queue = this.queue.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    match queue.first_key_value() {
                        Some(((at, n), slot)) => {
                            let live = slot
                                .upgrade()
                                .is_some_and(|s| s.parked.load(Ordering::SeqCst) == *n);
                            if live {
                                break Some(*at);
                            }
                            queue.pop_first();
                        }
                        None => break None,
                    }
                }
            };
            let now = tokio::time::Instant::now();
            match next {
                Some(at) if at <= now => {
                    tokio::select! {
                        () = this.pacer.acquire() => {}
                        _ = shutdown.changed() => return,
                    }
                    let popped = {
                        let mut queue = this.queue.lock().unwrap_or_else(|p| p.into_inner());
                        queue.pop_first()
                    };
                    let Some(((_, n), slot)) = popped else {
                        continue;
                    };
                    if let Some(slot) = slot.upgrade() {
                        if slot.parked.load(Ordering::SeqCst) == n {
                            slot.paced.store(true, Ordering::Relaxed);
                            slot.ensure_running();
                        }
                    }
                }
                next => {
                    let until = next.unwrap_or(now + Duration::from_secs(3600));
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = this.changed.notified() => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }
}

/// A platform's authorizer tokens by value (keyed by a hash of it, with a seed of this
/// process's), so that the gateway finds the authorizer a token was issued to without
/// a scan. A hit is checked against the authorizer's slot, so a stale entry is harmless.
#[derive(Debug, Default)]
pub(crate) struct TokenIndex {
    seed: std::hash::RandomState,
    map: RwLock<HashMap<u64, Vec<Arc<str>>>>,
}

impl TokenIndex {
    fn key(&self, value: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.seed, value)
    }

    fn insert(&self, value: &str, appid: &Arc<str>) {
        let key = self.key(value);
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let appids = map.entry(key).or_default();
        if !appids.iter().any(|a| a == appid) {
            appids.push(appid.clone());
        }
    }

    fn remove(&self, value: &str, appid: &str) {
        let key = self.key(value);
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if let Some(appids) = map.get_mut(&key) {
            appids.retain(|a| &**a != appid);
            if appids.is_empty() {
                map.remove(&key);
            }
        }
    }

    fn candidates(&self, value: &str) -> Vec<Arc<str>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(&self.key(value)).cloned().unwrap_or_default()
    }
}

/// What an authorizer's token slot knows of its authorizer.
#[derive(Debug)]
pub(crate) struct AuthorizerLink {
    appid: Arc<str>,
    record: Mutex<AuthorizerRecord>,
    /// The record in memory is newer than the stored one (a write failed): the next
    /// refresh stores it even if WeChat's refresh token did not change.
    unsaved: std::sync::atomic::AtomicBool,
    pub parking: Arc<Parking>,
    index: Arc<TokenIndex>,
    /// The component's recovery of refused refresh tokens from WeChat's list, shared
    /// by all its authorizers.
    pub recovery: Arc<Recovery>,
}

impl AuthorizerLink {
    /// Makes `value` findable as this authorizer's token.
    pub fn index_token(&self, value: &str) {
        self.index.insert(value, &self.appid);
    }

    /// `value` is no longer this authorizer's token (nor its previous one).
    pub fn unindex_token(&self, value: &str) {
        self.index.remove(value, &self.appid);
    }

    pub fn record(&self) -> MutexGuard<'_, AuthorizerRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> AuthorizerState {
        self.record().state
    }

    /// The failure an authorizer in a state other than `ok` answers with.
    pub fn check_state(&self, appid: &str) -> Result<(), Arc<Failure>> {
        match self.state() {
            AuthorizerState::Ok => Ok(()),
            AuthorizerState::Unauthorized => Err(Arc::new(Failure::Unauthorized(appid.into()))),
            AuthorizerState::NeedsReauthorization => {
                Err(Arc::new(Failure::NeedsReauthorization(appid.into())))
            }
        }
    }

    /// Takes the stored record if it is newer than ours (another instance refreshed
    /// or re-authorized). Returns whether it was.
    pub async fn sync(&self, ctx: &Ctx, component: &str, appid: &str) -> bool {
        match ctx
            .store
            .load_authorizer(component.to_owned(), appid.to_owned())
            .await
        {
            Ok(Some(stored)) => self.adopt(stored),
            Ok(None) => false,
            Err(e) => {
                warn!(component, appid, error = %e, "could not read the authorizer's stored record");
                false
            }
        }
    }

    /// Takes `stored` if its version is higher. Returns whether it was taken.
    fn adopt(&self, stored: AuthorizerRecord) -> bool {
        let mut record = self.record();
        if stored.version > record.version {
            *record = stored;
            true
        } else {
            false
        }
    }

    /// Records a new state (persisted; a failure to persist is logged, and the state
    /// holds in memory).
    pub async fn set_state(&self, ctx: &Ctx, component: &str, state: AuthorizerState) {
        let record = {
            let mut record = self.record();
            if record.state == state {
                return;
            }
            record.state = state;
            record.version += 1;
            record.clone()
        };
        let credential =
            CredentialKey::of_authorizer(component, &*self.appid, CredentialKind::AccessToken)
                .to_string();
        let incident = crate::alerts::credential_incident(&credential, "needs_reauthorization");
        if state == AuthorizerState::NeedsReauthorization {
            ctx.alerts.raise(
                incident,
                crate::alerts::AlertKind::NeedsReauthorization,
                Some(component),
                format!(
                    "authorizer {} of {component} must authorize again: WeChat refused its refresh token",
                    self.appid
                ),
            );
        } else {
            ctx.alerts.resolve(&incident);
        }
        if let Err(e) = persist(ctx, component, record).await {
            self.unsaved.store(true, Ordering::Relaxed);
            warn!(component, error = %e, "could not store an authorizer's new state");
        }
    }

    /// Takes the refresh token WeChat just returned, in memory at once (it may be the
    /// only valid one now) and then in the store.
    pub async fn persist_refresh_token(
        &self,
        ctx: &Ctx,
        component: &str,
        refresh_token: &str,
    ) -> Result<(), StoreError> {
        let record = {
            let mut record = self.record();
            if record.refresh_token == refresh_token && !self.unsaved.load(Ordering::Relaxed) {
                return Ok(());
            }
            record.refresh_token = refresh_token.to_owned();
            record.version += 1;
            record.clone()
        };
        self.unsaved.store(true, Ordering::Relaxed);
        let version = persist(ctx, component, record).await?;
        self.unsaved.store(false, Ordering::Relaxed);
        let mut record = self.record();
        record.version = record.version.max(version);
        Ok(())
    }
}

/// Writes a record, retrying a failed write; if the store holds a higher version (an
/// instance that lost its lease wrote meanwhile), ours is the latest WeChat gave this
/// instance and is written over it. Returns the version written.
async fn persist(
    ctx: &Ctx,
    component: &str,
    mut record: AuthorizerRecord,
) -> Result<u64, StoreError> {
    let mut last = None;
    for attempt in 0..PERSIST_TRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << (2 * attempt))).await;
        }
        match ctx
            .store
            .save_authorizer(component.to_owned(), record.clone())
            .await
        {
            Ok(true) => return Ok(record.version),
            Ok(false) => {
                let stored = ctx
                    .store
                    .load_authorizer(component.to_owned(), record.appid.clone())
                    .await?;
                let stored_version = stored.map_or(0, |s| s.version);
                warn!(component, appid = %record.appid, stored_version, "the store holds a newer record of the authorizer; writing this instance's latest over it");
                record.version = stored_version + 1;
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        StoreError::Worker("the authorizer's record kept changing under this write".into())
    }))
}

/// One authorizer: its token slot and, once asked for, its tickets.
#[derive(Debug)]
pub(crate) struct Authorizer {
    pub token: Arc<Slot>,
    tickets: std::sync::OnceLock<Vec<(TicketType, Arc<Slot>)>>,
}

impl Authorizer {
    pub(crate) fn link(&self) -> &AuthorizerLink {
        self.token
            .authorizer
            .as_deref()
            .expect("an authorizer's token slot is linked")
    }
}

/// A component's authorizers by appid.
pub(crate) type AuthorizerMap = RwLock<BTreeMap<String, Arc<Authorizer>>>;

/// One component app: its token, message crypto and authorizers.
pub(crate) struct Platform {
    pub token: Arc<Slot>,
    pub crypt: MsgCrypt,
    pub parking: Arc<Parking>,
    index: Arc<TokenIndex>,
    /// Shared (weakly) with `recovery`, which compares WeChat's list with it.
    authorizers: Arc<AuthorizerMap>,
    recovery: Arc<Recovery>,
    /// Authorization codes completed lately (by the callback or by a client), so that
    /// the other path does not spend the code again: code -> authorizer appid.
    recent_codes: Mutex<(HashMap<String, String>, HashMap<String, String>)>,
    /// Authorizations being completed, by code: a second caller with the same code
    /// waits for the first one's answer.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<AuthorizeResult>>>>,
    /// Unix seconds of the newest verify ticket received (0: none since start).
    ticket_created_at: AtomicU64,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("component", &self.token.key.app)
            .field("authorizers", &self.read().len())
            .finish_non_exhaustive()
    }
}

type AuthorizeResult = Result<(AuthorizerView, bool), KeeperError>;

/// Codes remembered per generation (the last 10,000 to 20,000 are known).
const RECENT_CODES: usize = 10_000;

impl Platform {
    pub fn new(token: Arc<Slot>, parking: Arc<Parking>) -> Result<Self, CryptoError> {
        let app = &token.app;
        let keys = app
            .message
            .as_ref()
            .expect("a component app has message keys (checked at load)");
        let crypt = MsgCrypt::new(
            keys.token.expose_secret(),
            keys.encoding_aes_key.expose_secret(),
            &app.appid,
        )?;
        let authorizers = Arc::new(RwLock::new(BTreeMap::new()));
        Ok(Self {
            token,
            crypt,
            parking,
            index: Arc::default(),
            recovery: Arc::new(Recovery::new(Arc::downgrade(&authorizers))),
            authorizers,
            recent_codes: Mutex::new((HashMap::new(), HashMap::new())),
            inflight: Mutex::new(HashMap::new()),
            ticket_created_at: AtomicU64::new(0),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Authorizer>>> {
        self.authorizers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, appid: &str) -> Option<Arc<Authorizer>> {
        self.read().get(appid).cloned()
    }

    fn remember_code(&self, code: &str, appid: &str) {
        let mut codes = self.recent_codes.lock().unwrap_or_else(|p| p.into_inner());
        // Two generations: the older is dropped only when the newer is full, so a code
        // just completed is always remembered (the other path may come a moment later).
        if codes.0.len() >= RECENT_CODES {
            codes.1 = std::mem::take(&mut codes.0);
        }
        codes.0.insert(code.to_owned(), appid.to_owned());
    }

    fn code_used_for(&self, code: &str) -> Option<String> {
        let codes = self.recent_codes.lock().unwrap_or_else(|p| p.into_inner());
        codes.0.get(code).or_else(|| codes.1.get(code)).cloned()
    }

    /// The slot of one of an authorizer's credentials, if it exists here.
    pub fn slot_of(&self, appid: &str, kind: CredentialKind) -> Option<Arc<Slot>> {
        let authorizer = self.get(appid)?;
        match kind {
            CredentialKind::AccessToken => Some(authorizer.token.clone()),
            CredentialKind::Ticket(t) => authorizer
                .tickets
                .get()?
                .iter()
                .find(|(kind, _)| *kind == t)
                .map(|(_, slot)| slot.clone()),
        }
    }

    /// Counts of authorizers by state, and how many hold a token that can be served.
    pub fn counts(&self) -> AuthorizerCounts {
        let now_ms = unix_now_ms();
        let mut counts = AuthorizerCounts::default();
        for authorizer in self.read().values() {
            counts.total += 1;
            match authorizer.link().state() {
                AuthorizerState::Ok => counts.ok += 1,
                AuthorizerState::NeedsReauthorization => counts.needs_reauthorization += 1,
                AuthorizerState::Unauthorized => counts.unauthorized += 1,
            }
            let serving = authorizer
                .token
                .current
                .load()
                .as_deref()
                .is_some_and(|t| authorizer.token.can_serve(t, now_ms, Duration::ZERO));
            if serving {
                counts.serving += 1;
            }
        }
        counts
    }

    /// The authorizer whose current (or previous) token is `value`, if any: an index
    /// look-up, checked against the authorizer's slot.
    fn issuer_of(&self, value: &str) -> Option<(Arc<Authorizer>, Issued)> {
        let now_ms = unix_now_ms();
        self.index.candidates(value).into_iter().find_map(|appid| {
            let authorizer = self.get(&appid)?;
            let slot = &authorizer.token;
            if slot
                .current
                .load()
                .as_deref()
                .is_some_and(|t| t.value == value)
            {
                return Some((authorizer, Issued::Current));
            }
            let previous = slot.previous.load();
            let previous = previous.as_deref().filter(|t| t.value == value)?;
            let expired = previous.expires_at_ms <= now_ms;
            Some((authorizer.clone(), Issued::Previous { expired }))
        })
    }
}

/// A component's authorizers by state, for status and metrics.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct AuthorizerCounts {
    pub total: u64,
    pub ok: u64,
    pub needs_reauthorization: u64,
    pub unauthorized: u64,
    /// Authorizers holding a token that can be served now.
    pub serving: u64,
}

/// What the status of a component adds to an app's.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentStatus {
    pub authorizers: AuthorizerCounts,
    /// WeChat's CreateTime (unix seconds) of the newest verify ticket received since
    /// start; absent before the first push.
    pub verify_ticket_created_at: Option<u64>,
}

/// One authorizer as listed or created.
#[derive(Debug, Clone, Serialize)]
pub struct AuthorizerView {
    pub authorizer_appid: String,
    pub state: &'static str,
    pub func_info: Vec<u64>,
    /// Unix seconds of the (latest) authorization.
    pub authorized_at: u64,
}

impl From<&AuthorizerRecord> for AuthorizerView {
    fn from(record: &AuthorizerRecord) -> Self {
        Self {
            authorizer_appid: record.appid.clone(),
            state: record.state.as_str(),
            func_info: record.func_info.clone(),
            authorized_at: record.authorized_at_ms / 1000,
        }
    }
}

/// A page of a component's authorizers.
#[derive(Debug, Clone, Serialize)]
pub struct AuthorizerPage {
    pub authorizers: Vec<AuthorizerView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// What re-importing refresh tokens from WeChat did.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ImportReport {
    /// Authorizers WeChat listed.
    pub listed: u64,
    /// Not known here before.
    pub added: u64,
    /// Known, with another refresh token (now WeChat's) or another state.
    pub updated: u64,
    /// Known, and already the same.
    pub unchanged: u64,
    pub pages: u64,
}

/// Why a push was refused: the sender is not WeChat, or the message is broken.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("no app `{0}` is configured")]
    UnknownApp(String),
    #[error("app `{0}` is not a third-party platform (kind = \"component\")")]
    NotAComponent(String),
    #[error("{0}")]
    Signature(CryptoError),
    #[error("{0}")]
    Malformed(CryptoError),
    #[error("the push is missing `{0}`")]
    Missing(&'static str),
    #[error("could not store the verify ticket: {0}")]
    Store(StoreError),
}

/// What a push was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    VerifyTicket,
    Authorized(String),
    Unauthorized(String),
    /// Logged and accepted.
    Other(String),
}

/// Builds the slot of one authorizer's token, with a value loaded from the store.
fn authorizer_slot(
    platform: &Platform,
    record: AuthorizerRecord,
    stored: Option<Token>,
    ctx: &Ctx,
) -> Arc<Slot> {
    let component = &platform.token;
    let key = CredentialKey::of_authorizer(
        component.key.app.clone(),
        record.appid.clone(),
        CredentialKind::AccessToken,
    );
    let health = Health {
        wanted: true,
        ..Health::default()
    };
    let link = Arc::new(AuthorizerLink {
        appid: Arc::from(record.appid.as_str()),
        record: Mutex::new(record),
        unsaved: std::sync::atomic::AtomicBool::new(false),
        parking: platform.parking.clone(),
        index: platform.index.clone(),
        recovery: platform.recovery.clone(),
    });
    let slot = Arc::new_cyclic(|me| {
        Slot::new(
            key,
            component.app.clone(),
            Some(component.clone()),
            None,
            health,
        )
        .linked(link, me.clone())
    });
    if let Some(token) = stored {
        if let Some(link) = &slot.authorizer {
            link.index_token(&token.value);
        }
        let delay = schedule::refresh_delay(&token, slot.policy(), &ctx.settings(), unix_now_ms());
        slot.health().refresh_at = Some(tokio::time::Instant::now() + delay);
        slot.current.store(Some(Arc::new(token)));
    }
    slot
}

/// Parks a new authorizer's driver until its first refresh is due (now, without a
/// token).
fn park_new(platform: &Platform, slot: &Arc<Slot>) {
    let due = slot
        .health()
        .refresh_at
        .unwrap_or_else(tokio::time::Instant::now);
    platform.parking.park(slot, due);
}

/// Loads a component's authorizers and their tokens from the store (in pages), and
/// parks their drivers until each is due. Returns how many there are.
pub(super) async fn load(platform: &Platform, ctx: &Ctx) -> Result<usize, StoreError> {
    let component = &platform.token;
    let mut after = None;
    let mut slots = 0;
    loop {
        let records = ctx
            .store
            .list_authorizers(component.key.app.clone(), after.clone(), LOAD_PAGE)
            .await?;
        let Some(last) = records.last() else { break };
        after = Some(last.appid.clone());
        let keys = records
            .iter()
            .map(|r| {
                CredentialKey::of_authorizer(
                    component.key.app.clone(),
                    r.appid.clone(),
                    CredentialKind::AccessToken,
                )
            })
            .collect();
        let tokens = ctx.store.load_many(keys).await?;
        let mut map = platform
            .authorizers
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let full = records.len() == LOAD_PAGE;
        for (record, token) in records.into_iter().zip(tokens) {
            let appid = record.appid.clone();
            let slot = authorizer_slot(platform, record, token, ctx);
            park_new(platform, &slot);
            slots += 1;
            map.insert(
                appid,
                Arc::new(Authorizer {
                    token: slot,
                    tickets: std::sync::OnceLock::new(),
                }),
            );
        }
        if !full {
            break;
        }
    }
    if slots > 0 {
        info!(component = %component.key.app, authorizers = slots, "loaded authorizers");
    }
    Ok(slots)
}

impl Keeper {
    pub(super) fn platform(&self, app: &str) -> Result<Arc<Platform>, KeeperError> {
        match self.entry(app) {
            Some(entry) => entry
                .platform
                .clone()
                .ok_or_else(|| KeeperError::NotAComponent(app.to_owned())),
            None => Err(KeeperError::UnknownApp(app.to_owned())),
        }
    }

    /// Every component's platform, with its app id.
    fn platforms(&self) -> Vec<(String, Arc<Platform>)> {
        self.apps()
            .iter()
            .filter_map(|app| Some((app.id.clone(), self.entry(&app.id)?.platform.clone()?)))
            .collect()
    }

    /// Starts the driver of a slot created after start; it stops with its component.
    fn spawn_driver(&self, slot: Arc<Slot>) {
        let stop = match &slot.authorizer {
            Some(link) => link.parking.shutdown.clone(),
            None => self.inner.shutdown.subscribe(),
        };
        let handle = tokio::spawn(driver::supervise(slot, self.inner.ctx.clone(), stop));
        self.inner
            .drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle);
    }

    /// Adds an authorizer with its first token (or takes a newer record of a known
    /// one), starting its driver if it is new. Returns it and whether it was added.
    fn upsert_authorizer(
        &self,
        platform: &Platform,
        record: AuthorizerRecord,
        token: Option<Token>,
    ) -> (Arc<Authorizer>, bool) {
        let appid = record.appid.clone();
        let known = || {
            let existing = platform.get(&appid)?;
            let was = existing.link().state();
            let state = record.state;
            existing.link().adopt(record.clone());
            if was != AuthorizerState::Ok && state == AuthorizerState::Ok {
                existing.token.retry_now();
            }
            Some(existing)
        };
        if let Some(existing) = known() {
            return (existing, false);
        }
        let mut map = platform
            .authorizers
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = map.get(&appid) {
            return (existing.clone(), false);
        }
        // The first token is in place before the driver starts, so it does not fetch
        // one of its own.
        let slot = authorizer_slot(platform, record, token, &self.inner.ctx);
        let authorizer = Arc::new(Authorizer {
            token: slot.clone(),
            tickets: std::sync::OnceLock::new(),
        });
        map.insert(appid, authorizer.clone());
        drop(map);
        park_new(platform, &slot);
        (authorizer, true)
    }

    /// Takes an authorizer another instance added (or changed), with its stored token.
    async fn take_stored_authorizer(
        &self,
        platform: &Platform,
        record: AuthorizerRecord,
    ) -> Arc<Authorizer> {
        let key = CredentialKey::of_authorizer(
            platform.token.key.app.clone(),
            record.appid.clone(),
            CredentialKind::AccessToken,
        );
        let token = match platform.get(&record.appid) {
            Some(_) => None,
            None => self.inner.ctx.store.load(key).await.ok().flatten(),
        };
        self.upsert_authorizer(platform, record, token).0
    }

    /// An authorizer known here, or (created by another instance) in the store.
    async fn authorizer(
        &self,
        app: &str,
        appid: &str,
    ) -> Result<(Arc<Platform>, Arc<Authorizer>), KeeperError> {
        let platform = self.platform(app)?;
        if let Some(found) = platform.get(appid) {
            return Ok((platform, found));
        }
        let unknown = || KeeperError::UnknownAuthorizer {
            component: app.to_owned(),
            appid: appid.to_owned(),
        };
        if !valid_appid(appid) {
            return Err(unknown());
        }
        let stored = self
            .inner
            .ctx
            .store
            .load_authorizer(app.to_owned(), appid.to_owned())
            .await
            .map_err(unreadable)?
            .ok_or_else(unknown)?;
        let authorizer = self.take_stored_authorizer(&platform, stored).await;
        Ok((platform, authorizer))
    }

    /// One component call, counted, retried once with a new component token if WeChat
    /// says the one used is dead.
    async fn component_call(
        &self,
        platform: &Platform,
        want: Want<'_>,
    ) -> Result<ComponentAnswer, KeeperError> {
        component_call(&self.inner.ctx, &platform.token, want).await
    }

    /// `POST .../authorizers/auth_url`: a fresh pre_auth_code and the authorization
    /// URL to send the merchant to.
    pub async fn auth_url(
        &self,
        app: &str,
        redirect_uri: &str,
        auth_type: u8,
    ) -> Result<(String, u64), KeeperError> {
        let platform = self.platform(app)?;
        let component_appid = platform.token.app.appid.clone();
        let answer = self.component_call(&platform, Want::PreAuthCode).await?;
        let ComponentAnswer::PreAuthCode(code) = answer else {
            return Err(unexpected("api_create_preauthcode"));
        };
        let url = format!(
            "{AUTH_PAGE}?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("component_appid", &component_appid)
                .append_pair("pre_auth_code", &code.code)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("auth_type", &auth_type.to_string())
                .finish()
        );
        Ok((url, code.expires_in))
    }

    /// `POST .../authorizers`: completes an authorization with the code WeChat gave
    /// the merchant's browser (or the `authorized` push), storing the refresh token
    /// durably before anything is answered. Returns the authorizer and whether it is
    /// new.
    pub async fn authorize(
        &self,
        app: &str,
        authorization_code: &str,
    ) -> Result<(AuthorizerView, bool), KeeperError> {
        let platform = self.platform(app)?;
        if let Some(appid) = platform.code_used_for(authorization_code) {
            // Already completed (the push and the redirect both carry the code).
            if let Some(found) = platform.get(&appid) {
                return Ok((AuthorizerView::from(&*found.link().record()), false));
            }
        }
        // The same code arriving twice at once (the push and the redirect) is completed
        // once: the second caller waits for the first's answer instead of spending the
        // code again (WeChat would refuse it).
        let cell = {
            let mut inflight = platform.inflight.lock().unwrap_or_else(|p| p.into_inner());
            inflight
                .entry(authorization_code.to_owned())
                .or_default()
                .clone()
        };
        let mut first = false;
        let answer = cell
            .get_or_init(|| {
                first = true;
                self.authorize_once(&platform, authorization_code)
            })
            .await
            .clone();
        platform
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(authorization_code);
        match answer {
            Ok((view, created)) => Ok((view, created && first)),
            Err(e) => Err(e),
        }
    }

    async fn authorize_once(
        &self,
        platform: &Platform,
        authorization_code: &str,
    ) -> Result<(AuthorizerView, bool), KeeperError> {
        // Looked at again here: a caller that found neither a completed code nor one in
        // flight may have raced one that completed (and left the in-flight table) since.
        if let Some(found) = platform
            .code_used_for(authorization_code)
            .and_then(|appid| platform.get(&appid))
        {
            return Ok((AuthorizerView::from(&*found.link().record()), false));
        }
        let started_ms = unix_now_ms();
        let answer = self
            .component_call(platform, Want::QueryAuth(authorization_code))
            .await?;
        let ComponentAnswer::Authorization(authorization) = answer else {
            return Err(unexpected("api_query_auth"));
        };
        let (view, created) = self.complete(platform, authorization, started_ms).await?;
        platform.remember_code(authorization_code, &view.authorizer_appid);
        Ok((view, created))
    }

    /// Stores a completed authorization, then installs its token (`started_ms`: when
    /// the call that returned it left, where its expiry counts from).
    async fn complete(
        &self,
        platform: &Platform,
        authorization: Authorization,
        started_ms: u64,
    ) -> Result<(AuthorizerView, bool), KeeperError> {
        let ctx = &self.inner.ctx;
        let component = &platform.token.key.app;
        let appid = authorization.authorizer_appid.clone();
        if !valid_appid(&appid) {
            return Err(KeeperError::Unavailable(format!(
                "WeChat answered with an authorizer appid that is not one: `{}`",
                appid.chars().take(64).collect::<String>()
            )));
        }
        let known = platform.get(&appid);
        let stored = ctx
            .store
            .load_authorizer(component.clone(), appid.clone())
            .await
            .map_err(unreadable)?;
        let version = known
            .as_ref()
            .map_or(0, |a| a.link().record().version)
            .max(stored.as_ref().map_or(0, |s| s.version))
            + 1;
        let record = AuthorizerRecord {
            appid: appid.clone(),
            refresh_token: authorization.refresh_token.clone(),
            state: AuthorizerState::Ok,
            func_info: authorization.func_info.clone(),
            authorized_at_ms: unix_now_ms(),
            version,
        };
        let key = CredentialKey::of_authorizer(
            component.clone(),
            appid.clone(),
            CredentialKind::AccessToken,
        );
        let fetched = authorization.access_token;
        let first = match known {
            Some(_) => None,
            None => {
                // Numbered past any value stored by an earlier authorization.
                let generation = match ctx.store.load(key.clone()).await {
                    Ok(Some(old)) => old.generation + 1,
                    _ => 1,
                };
                Some(Token {
                    value: fetched.value.clone(),
                    expires_at_ms: started_ms + fetched.expires_in * 1000,
                    fetched_at_ms: started_ms,
                    lifetime_secs: fetched.expires_in,
                    generation,
                })
            }
        };
        // In memory first, with its token (so its driver has nothing to fetch), and the
        // token in the store before the record, which announces the authorizer: another
        // instance that hears of it finds its token there.
        let (authorizer, added) = self.upsert_authorizer(platform, record.clone(), first.clone());
        match first.filter(|_| added) {
            Some(token) => {
                if let Err(e) = ctx.store.save(key, token).await {
                    warn!(component = %component, appid = %appid, error = %e, "could not store a new authorizer's token");
                }
            }
            None => {
                driver::install(&authorizer.token, ctx, (fetched, started_ms)).await;
                authorizer.token.retry_now();
            }
        }
        // Durable before the answer: the code is spent, and this refresh token is now the
        // only way to this authorizer's tokens. Held in memory (so the authorizer works)
        // even if the store fails; the error says it is not yet durable.
        let version = persist(ctx, component, record.clone()).await.map_err(|e| {
            authorizer.link().unsaved.store(true, Ordering::Relaxed);
            warn!(component = %component, appid = %appid, error = %e, "could not store a new authorizer's refresh token");
            KeeperError::Unavailable(format!(
                "the authorization succeeded but its refresh token could not be stored ({e}); \
                 it is held in memory and stored with the next refresh"
            ))
        })?;
        {
            let mut held = authorizer.link().record();
            held.version = held.version.max(version);
        }
        let created = known.is_none() && stored.is_none();
        info!(component = %component, appid = %appid, created, func_info = ?record.func_info, "authorization completed");
        Ok((AuthorizerView::from(&record), created))
    }

    /// `GET .../authorizers`: a page of the component's authorizers, from the store
    /// (the fleet's list, whichever instance completed each authorization).
    pub async fn list_authorizers(
        &self,
        app: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<AuthorizerPage, KeeperError> {
        self.platform(app)?;
        let records = self
            .inner
            .ctx
            .store
            .list_authorizers(app.to_owned(), cursor, limit + 1)
            .await
            .map_err(unreadable)?;
        let more = records.len() > limit;
        let authorizers: Vec<AuthorizerView> = records
            .iter()
            .take(limit)
            .map(AuthorizerView::from)
            .collect();
        let next_cursor = more
            .then(|| authorizers.last().map(|a| a.authorizer_appid.clone()))
            .flatten();
        Ok(AuthorizerPage {
            authorizers,
            next_cursor,
        })
    }

    /// An authorizer's access token, with the rules of app tokens. An authorizer that
    /// withdrew its authorization gets none; one that must authorize again keeps being
    /// served the token it holds while that lasts.
    pub async fn authorizer_token(
        &self,
        app: &str,
        appid: &str,
        min_ttl: Option<Duration>,
    ) -> Result<Arc<Token>, KeeperError> {
        let (_, authorizer) = self.authorizer(app, appid).await?;
        let slot = &authorizer.token;
        match authorizer.link().state() {
            AuthorizerState::Unauthorized => {
                return Err(KeeperError::from_failure(Failure::Unauthorized(
                    appid.into(),
                )));
            }
            AuthorizerState::NeedsReauthorization => {
                return slot.serveable(min_ttl.unwrap_or_default()).ok_or_else(|| {
                    KeeperError::from_failure(Failure::NeedsReauthorization(appid.into()))
                });
            }
            AuthorizerState::Ok => {}
        }
        slot.obtain(min_ttl, &self.inner.ctx.settings()).await
    }

    /// Compare-and-invalidate an authorizer's token.
    pub async fn invalidate_authorizer(
        &self,
        app: &str,
        appid: &str,
        dead: &str,
    ) -> Result<(Arc<Token>, bool), KeeperError> {
        let (_, authorizer) = self.authorizer(app, appid).await?;
        authorizer
            .link()
            .check_state(appid)
            .map_err(KeeperError::from_failure)?;
        authorizer
            .token
            .invalidate(dead, &self.inner.ctx.settings())
            .await
    }

    /// An authorizer's ticket slot, created (with its driver) when first asked for.
    async fn authorizer_ticket_slot(
        &self,
        app: &str,
        appid: &str,
        ticket: &str,
    ) -> Result<Arc<Slot>, KeeperError> {
        let (_, authorizer) = self.authorizer(app, appid).await?;
        authorizer
            .link()
            .check_state(appid)
            .map_err(KeeperError::from_failure)?;
        let wanted = TicketType::parse(ticket).filter(|t| AUTHORIZER_TICKETS.contains(t));
        let Some(wanted) = wanted else {
            return Err(KeeperError::NoSuchTicket {
                ticket: ticket.to_owned(),
                kind: "authorizer",
                allowed: AUTHORIZER_TICKETS
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let mut created = Vec::new();
        let tickets = authorizer.tickets.get_or_init(|| {
            AUTHORIZER_TICKETS
                .iter()
                .map(|t| {
                    let key = CredentialKey::of_authorizer(app, appid, CredentialKind::Ticket(*t));
                    let health = Health {
                        day: wechat_day(unix_now_ms()),
                        ..Health::default()
                    };
                    let slot = Arc::new(Slot::new(
                        key,
                        authorizer.token.app.clone(),
                        Some(authorizer.token.clone()),
                        None,
                        health,
                    ));
                    created.push(slot.clone());
                    (*t, slot)
                })
                .collect()
        });
        for slot in created {
            if let Ok(Some(stored)) = self.inner.ctx.store.load(slot.key.clone()).await {
                slot.adopt_if_newer(stored);
            }
            self.spawn_driver(slot);
        }
        Ok(tickets
            .iter()
            .find(|(t, _)| *t == wanted)
            .map(|(_, slot)| slot.clone())
            .expect("every authorizer ticket type has a slot"))
    }

    /// An authorizer's ticket (`jsapi`, `wx_card`).
    pub async fn authorizer_ticket(
        &self,
        app: &str,
        appid: &str,
        ticket: &str,
        min_ttl: Option<Duration>,
    ) -> Result<Arc<Token>, KeeperError> {
        let slot = self.authorizer_ticket_slot(app, appid, ticket).await?;
        slot.obtain(min_ttl, &self.inner.ctx.settings()).await
    }

    /// Compare-and-invalidate an authorizer's ticket.
    pub async fn invalidate_authorizer_ticket(
        &self,
        app: &str,
        appid: &str,
        ticket: &str,
        dead: &str,
    ) -> Result<(Arc<Token>, bool), KeeperError> {
        let slot = self.authorizer_ticket_slot(app, appid, ticket).await?;
        slot.invalidate(dead, &self.inner.ctx.settings()).await
    }

    /// The authorizer (component id, its settings, its appid) whose token is `value`.
    pub fn authorizer_issuer_of(&self, value: &str) -> Option<(Arc<AppSettings>, String, Issued)> {
        self.platforms().into_iter().find_map(|(_, platform)| {
            let (authorizer, issued) = platform.issuer_of(value)?;
            let appid = authorizer.token.key.authorizer.clone()?;
            Some((platform.token.app.clone(), appid, issued))
        })
    }

    /// A component's counts and verify ticket, for its status.
    pub fn component_status(&self, app: &str) -> Option<ComponentStatus> {
        let platform = self.entry(app)?.platform.clone()?;
        let created_at = platform.ticket_created_at.load(Ordering::Relaxed);
        Some(ComponentStatus {
            authorizers: platform.counts(),
            verify_ticket_created_at: (created_at > 0).then_some(created_at),
        })
    }

    /// Sets the `wxtoken_authorizers{app,state}` gauges (one series per component and
    /// state, never per authorizer).
    pub fn export_authorizer_gauges(&self) {
        for (id, platform) in self.platforms() {
            let counts = platform.counts();
            for (state, n) in [
                ("ok", counts.ok),
                ("needs_reauthorization", counts.needs_reauthorization),
                ("unauthorized", counts.unauthorized),
            ] {
                metrics::gauge!("wxtoken_authorizers", "app" => id.clone(), "state" => state)
                    .set(n as f64);
            }
            metrics::gauge!("wxtoken_authorizers_serving", "app" => id.clone())
                .set(counts.serving as f64);
        }
    }

    /// `POST /v1/apps/{component}/callback`: a push from WeChat, verified, decrypted
    /// and acted on. Nothing is stored unless every check passed.
    pub async fn receive_push(
        &self,
        app: &str,
        timestamp: &str,
        nonce: &str,
        msg_signature: &str,
        body: &[u8],
    ) -> Result<Pushed, PushError> {
        let platform = match self.platform(app) {
            Ok(platform) => platform,
            Err(KeeperError::NotAComponent(app)) => return Err(PushError::NotAComponent(app)),
            Err(_) => return Err(PushError::UnknownApp(app.to_owned())),
        };
        let fields =
            crypto::open(&platform.crypt, timestamp, nonce, msg_signature, body).map_err(|e| {
                match e {
                    CryptoError::Signature => PushError::Signature(e),
                    other => PushError::Malformed(other),
                }
            })?;
        let info_type = fields
            .get("InfoType")
            .ok_or(PushError::Missing("InfoType"))?;
        let component = &platform.token.key.app;
        match info_type.as_str() {
            "component_verify_ticket" => {
                let value = fields
                    .get("ComponentVerifyTicket")
                    .filter(|v| !v.is_empty())
                    .ok_or(PushError::Missing("ComponentVerifyTicket"))?
                    .clone();
                let created_at = fields
                    .get("CreateTime")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| unix_now_ms() / 1000);
                let written = self
                    .inner
                    .ctx
                    .store
                    .save_verify_ticket(component.clone(), VerifyTicket { value, created_at })
                    .await
                    .map_err(PushError::Store)?;
                platform
                    .ticket_created_at
                    .fetch_max(created_at, Ordering::Relaxed);
                info!(component = %component, created_at, written, "component_verify_ticket received");
                self.verify_ticket_arrived(component);
                Ok(Pushed::VerifyTicket)
            }
            "authorized" | "updateauthorized" => {
                let appid = fields
                    .get("AuthorizerAppid")
                    .ok_or(PushError::Missing("AuthorizerAppid"))?
                    .clone();
                let code = fields
                    .get("AuthorizationCode")
                    .ok_or(PushError::Missing("AuthorizationCode"))?
                    .clone();
                info!(component = %component, appid = %appid, event = %info_type, "authorization event; completing it");
                // Answered at once (WeChat waits five seconds); completed in the
                // background, where a failure is logged (a client may still complete
                // it with the same code).
                let keeper = self.clone();
                let app = app.to_owned();
                tokio::spawn(async move {
                    if let Err(e) = keeper.authorize(&app, &code).await {
                        warn!(component = %app, error = %e, "could not complete an authorization from its push");
                    }
                });
                Ok(Pushed::Authorized(appid))
            }
            "unauthorized" => {
                let appid = fields
                    .get("AuthorizerAppid")
                    .ok_or(PushError::Missing("AuthorizerAppid"))?
                    .clone();
                if let Ok((_, authorizer)) = self.authorizer(app, &appid).await {
                    authorizer
                        .link()
                        .set_state(&self.inner.ctx, component, AuthorizerState::Unauthorized)
                        .await;
                    authorizer.token.wake.notify_one();
                }
                info!(component = %component, appid = %appid, "authorizer withdrew its authorization");
                Ok(Pushed::Unauthorized(appid))
            }
            other => {
                info!(component = %component, info_type = %other, "push accepted and ignored");
                Ok(Pushed::Other(other.to_owned()))
            }
        }
    }

    /// A new verify ticket is in the store: a component waiting for one (or refused the
    /// last one) tries now.
    pub(super) fn verify_ticket_arrived(&self, component: &str) {
        if let Ok(platform) = self.platform(component) {
            let slot = &platform.token;
            let refused = slot
                .health()
                .last_error
                .as_ref()
                .is_some_and(|e| matches!(*e.failure, Failure::WaitingForVerifyTicket(_)));
            if refused || slot.serveable(Duration::ZERO).is_none() {
                slot.retry_now();
            }
        }
    }

    /// Takes a changed authorizer record another instance announced.
    pub(super) async fn authorizer_changed(&self, component: &str, appid: &str) {
        let Ok(platform) = self.platform(component) else {
            return;
        };
        match self
            .inner
            .ctx
            .store
            .load_authorizer(component.to_owned(), appid.to_owned())
            .await
        {
            Ok(Some(record)) => {
                self.take_stored_authorizer(&platform, record).await;
            }
            Ok(None) => {}
            Err(e) => warn!(component, appid, error = %e, "could not read an announced authorizer"),
        }
    }

    /// `wxtoken authorizers import`: pages through `api_get_authorizer_list` and takes
    /// every refresh token WeChat lists (disaster recovery: a lost store, or a record
    /// marked `needs_reauthorization` by mistake).
    pub async fn import_authorizers(&self, app: &str) -> Result<ImportReport, KeeperError> {
        let platform = self.platform(app)?;
        let ctx = &self.inner.ctx;
        let mut report = ImportReport::default();
        let mut pages = ListPages::default();
        while let Some(list) = pages.next(ctx, &platform.token).await? {
            report.pages = pages.pages;
            for listed in list {
                report.listed += 1;
                if !valid_appid(&listed.appid) {
                    continue;
                }
                let known = match platform.get(&listed.appid) {
                    Some(a) => Some(a.link().record().clone()),
                    None => ctx
                        .store
                        .load_authorizer(app.to_owned(), listed.appid.clone())
                        .await
                        .map_err(unreadable)?,
                };
                let record = match known {
                    Some(k)
                        if k.refresh_token == listed.refresh_token
                            && k.state == AuthorizerState::Ok =>
                    {
                        report.unchanged += 1;
                        continue;
                    }
                    Some(k) => {
                        report.updated += 1;
                        AuthorizerRecord {
                            refresh_token: listed.refresh_token,
                            state: AuthorizerState::Ok,
                            version: k.version + 1,
                            ..k
                        }
                    }
                    None => {
                        report.added += 1;
                        AuthorizerRecord {
                            appid: listed.appid,
                            refresh_token: listed.refresh_token,
                            state: AuthorizerState::Ok,
                            func_info: Vec::new(),
                            authorized_at_ms: listed.auth_time * 1000,
                            version: 1,
                        }
                    }
                };
                persist(ctx, app, record.clone()).await.map_err(|e| {
                    KeeperError::Unavailable(format!("could not store a refresh token: {e}"))
                })?;
                let (authorizer, _) = self.upsert_authorizer(&platform, record, None);
                authorizer.token.retry_now();
            }
        }
        info!(component = %app, listed = report.listed, added = report.added, updated = report.updated, "imported authorizers from WeChat");
        Ok(report)
    }
}

/// The error for a store that could not be read while answering a caller.
fn unreadable(e: StoreError) -> KeeperError {
    KeeperError::Unavailable(format!("could not read the store: {e}"))
}

/// One component call with the token of `component` (never paced), counted, retried
/// once with a new component token if WeChat says the one used is dead.
async fn component_call(
    ctx: &Ctx,
    component: &Slot,
    want: Want<'_>,
) -> Result<ComponentAnswer, KeeperError> {
    let component_appid = component.app.appid.as_str();
    let mut token = component.obtain(None, &ctx.settings()).await?;
    let mut retried = false;
    loop {
        let component_token = token.value.as_str();
        let call = match want {
            Want::PreAuthCode => ComponentCall::PreAuthCode {
                component_token,
                component_appid,
            },
            Want::QueryAuth(authorization_code) => ComponentCall::QueryAuth {
                component_token,
                component_appid,
                authorization_code,
            },
            Want::AuthorizerList { offset } => ComponentCall::AuthorizerList {
                component_token,
                component_appid,
                offset,
                count: LIST_PAGE,
            },
        };
        let api = call.api_name();
        driver::count_upstream(ctx, &component.key.app, api, wechat_day(unix_now_ms()));
        let result = ctx.api.component(call).await;
        match result {
            Ok(answer) => return Ok(answer),
            Err(e) if e.class == ErrorClass::Refresh && !retried => {
                retried = true;
                let dead = token.value.clone();
                token = component.invalidate(&dead, &ctx.settings()).await?.0;
            }
            Err(e) => {
                warn!(component = %component.key.app, api, errcode = e.errcode, "component call failed: {}", e.message);
                return Err(KeeperError::from_failure(Failure::Upstream(e)));
            }
        }
    }
}

/// Pages through a component's `api_get_authorizer_list`, [`LIST_PAGE`] at a time:
/// the manual import and the recovery of a refused refresh token both read it so.
#[derive(Debug, Default)]
pub(crate) struct ListPages {
    offset: u64,
    done: bool,
    /// Pages read so far.
    pub pages: u64,
}

impl ListPages {
    /// The next page, or `None` after the last.
    pub async fn next(
        &mut self,
        ctx: &Ctx,
        component: &Slot,
    ) -> Result<Option<Vec<ListedAuthorizer>>, KeeperError> {
        if self.done {
            return Ok(None);
        }
        let want = Want::AuthorizerList {
            offset: self.offset,
        };
        let answer = component_call(ctx, component, want).await?;
        let ComponentAnswer::AuthorizerList { total_count, list } = answer else {
            return Err(unexpected("api_get_authorizer_list"));
        };
        self.pages += 1;
        let got = list.len() as u64;
        self.offset += got;
        self.done = got == 0 || self.offset >= total_count;
        Ok(Some(list))
    }
}

/// Which component call to make (the token is filled in per attempt).
#[derive(Debug, Clone, Copy)]
enum Want<'a> {
    PreAuthCode,
    QueryAuth(&'a str),
    AuthorizerList { offset: u64 },
}

fn unexpected(api: &str) -> KeeperError {
    KeeperError::Unavailable(format!("{api} answered with something else"))
}

/// WeChat appids are short runs of letters and digits; anything else is refused before
/// it reaches a store key or a log.
pub fn valid_appid(appid: &str) -> bool {
    !appid.is_empty() && appid.len() <= 64 && appid.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex as StdMutex;

    use futures::future::BoxFuture;
    use secrecy::SecretString;

    use super::*;
    use crate::config::{AppKind, KeeperSettings, MessageKeys};
    use crate::store::{SqliteStore, Store};
    use crate::wechat::{FetchRequest, Fetched, TokenApi, UpstreamError};

    const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const COMPONENT_APPID: &str = "wxcomponent0000001";

    /// WeChat's component APIs as a fake: one verify ticket it accepts, refresh
    /// tokens that rotate on every use (the old one dies), and counters.
    #[derive(Default)]
    struct FakeApi {
        state: StdMutex<FakeState>,
    }

    /// Authorizer tokens live this long unless a test says otherwise.
    const LIFETIME: u64 = 7200;

    #[derive(Default)]
    struct FakeState {
        /// Lifetime of authorizer tokens (0: LIFETIME).
        expires_in: u64,
        ticket: Option<String>,
        /// authorizer appid -> its one valid refresh token.
        refresh: HashMap<String, String>,
        /// authorization code -> authorizer appid.
        codes: HashMap<String, String>,
        calls: HashMap<&'static str, u64>,
        serial: u64,
        /// `api_get_authorizer_list` answers after this long (paused clocks skip it).
        list_delay: Duration,
        /// `api_get_authorizer_list` answers -1 (system busy).
        list_busy: bool,
        /// `api_get_authorizer_list` lists these refresh tokens instead of the valid
        /// ones (a list older than the last rotation).
        listed: HashMap<String, String>,
    }

    fn lifetime(state: &FakeState) -> u64 {
        if state.expires_in == 0 {
            LIFETIME
        } else {
            state.expires_in
        }
    }

    fn refused(errcode: i64, message: &str) -> UpstreamError {
        UpstreamError {
            class: crate::wechat::errcode::classify_api(errcode),
            errcode: Some(errcode),
            message: message.into(),
            rid: None,
        }
    }

    impl FakeApi {
        fn calls(&self, api: &str) -> u64 {
            let state = self.state.lock().expect("fake");
            state.calls.get(api).copied().unwrap_or(0)
        }

        fn authorize(&self, appid: &str) -> String {
            let mut state = self.state.lock().expect("fake");
            state.serial += 1;
            let code = format!("code{}", state.serial);
            state.codes.insert(code.clone(), appid.to_owned());
            code
        }
    }

    impl TokenApi for FakeApi {
        fn fetch<'a>(
            &'a self,
            request: FetchRequest<'a>,
        ) -> BoxFuture<'a, Result<Fetched, UpstreamError>> {
            let mut state = self.state.lock().expect("fake");
            *state.calls.entry(request.api_name()).or_default() += 1;
            state.serial += 1;
            let serial = state.serial;
            let answer = match request {
                FetchRequest::ComponentToken { verify_ticket, .. } => {
                    if state.ticket.as_deref() == Some(verify_ticket) {
                        Ok(Fetched {
                            value: format!("COMPONENT{serial}"),
                            expires_in: 7200,
                            refresh_token: None,
                        })
                    } else {
                        Err(refused(61006, "component verify ticket is invalid"))
                    }
                }
                FetchRequest::AuthorizerToken {
                    authorizer_appid,
                    refresh_token,
                    ..
                } => match state.refresh.get(authorizer_appid) {
                    Some(valid) if valid == refresh_token => {
                        let rotated = format!("refresh{serial}");
                        state
                            .refresh
                            .insert(authorizer_appid.to_owned(), rotated.clone());
                        Ok(Fetched {
                            value: format!("AUTHORIZER{serial}"),
                            expires_in: lifetime(&state),
                            refresh_token: Some(rotated),
                        })
                    }
                    _ => Err(refused(61023, "refresh_token is invalid")),
                },
                other => panic!("unexpected fetch {other:?}"),
            };
            Box::pin(async move { answer })
        }

        fn component<'a>(
            &'a self,
            call: ComponentCall<'a>,
        ) -> BoxFuture<'a, Result<ComponentAnswer, UpstreamError>> {
            let mut state = self.state.lock().expect("fake");
            *state.calls.entry(call.api_name()).or_default() += 1;
            state.serial += 1;
            let serial = state.serial;
            let answer = match call {
                ComponentCall::QueryAuth {
                    authorization_code, ..
                } => match state.codes.remove(authorization_code) {
                    Some(appid) => {
                        let refresh = format!("refresh{serial}");
                        state.refresh.insert(appid.clone(), refresh.clone());
                        Ok(ComponentAnswer::Authorization(Authorization {
                            authorizer_appid: appid,
                            access_token: Fetched {
                                value: format!("AUTHORIZER{serial}"),
                                expires_in: lifetime(&state),
                                refresh_token: Some(refresh.clone()),
                            },
                            refresh_token: refresh,
                            func_info: vec![1, 15],
                        }))
                    }
                    None => Err(refused(61010, "code is expired")),
                },
                ComponentCall::AuthorizerList { offset, count, .. } => {
                    if state.list_busy {
                        Err(refused(-1, "system error"))
                    } else {
                        let mut all: Vec<_> = state.refresh.iter().collect();
                        all.sort();
                        let list = all
                            .iter()
                            .skip(offset as usize)
                            .take(count as usize)
                            .map(|(appid, token)| ListedAuthorizer {
                                appid: (*appid).clone(),
                                refresh_token: state.listed.get(*appid).unwrap_or(token).clone(),
                                auth_time: 1_700_000_000,
                            })
                            .collect();
                        Ok(ComponentAnswer::AuthorizerList {
                            total_count: all.len() as u64,
                            list,
                        })
                    }
                }
                other => panic!("unexpected call {other:?}"),
            };
            let delay = match call {
                ComponentCall::AuthorizerList { .. } => state.list_delay,
                _ => Duration::ZERO,
            };
            Box::pin(async move {
                if delay > Duration::ZERO {
                    tokio::time::sleep(delay).await;
                }
                answer
            })
        }
    }

    fn component_app() -> AppSettings {
        AppSettings {
            id: "platform".into(),
            kind: AppKind::Component,
            appid: COMPONENT_APPID.into(),
            secret: SecretString::from("component-secret"),
            message: Some(Arc::new(MessageKeys {
                token: SecretString::from("pushtoken"),
                encoding_aes_key: SecretString::from(AES_KEY),
            })),
            quota: Default::default(),
        }
    }

    async fn keeper(api: Arc<FakeApi>, store: Arc<SqliteStore>) -> Keeper {
        keeper_with(api, store, KeeperSettings::default()).await
    }

    async fn keeper_with(
        api: Arc<FakeApi>,
        store: Arc<SqliteStore>,
        settings: KeeperSettings,
    ) -> Keeper {
        Keeper::start(&[component_app()], settings, api, store)
            .await
            .expect("keeper starts")
    }

    /// A verify-ticket push as WeChat sends it: (timestamp, nonce, signature, body).
    fn push(inner: &str) -> (String, String, String, String) {
        let crypt = MsgCrypt::new("pushtoken", AES_KEY, COMPONENT_APPID).expect("crypt");
        let encrypt = crypt.encrypt(inner, [7; 16]);
        let (timestamp, nonce) = ("1700000000".to_owned(), "nonce1".to_owned());
        let signature = crypt.signature(&timestamp, &nonce, &encrypt);
        let body = format!(
            "<xml><AppId><![CDATA[{COMPONENT_APPID}]]></AppId><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        );
        (timestamp, nonce, signature, body)
    }

    fn ticket_push(ticket: &str, created_at: u64) -> (String, String, String, String) {
        push(&format!(
            "<xml><AppId><![CDATA[{COMPONENT_APPID}]]></AppId><CreateTime>{created_at}</CreateTime>\
             <InfoType><![CDATA[component_verify_ticket]]></InfoType>\
             <ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket></xml>"
        ))
    }

    async fn deliver(
        keeper: &Keeper,
        push: (String, String, String, String),
    ) -> Result<Pushed, PushError> {
        let (timestamp, nonce, signature, body) = push;
        keeper
            .receive_push("platform", &timestamp, &nonce, &signature, body.as_bytes())
            .await
    }

    fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("t.db")).expect("store");
        (dir, Arc::new(store))
    }

    #[tokio::test]
    async fn a_component_waits_for_a_verify_ticket_and_a_push_wakes_it() {
        let api = Arc::new(FakeApi::default());
        let (_dir, store) = store();
        let keeper = keeper(api.clone(), store.clone()).await;
        let err = keeper
            .access_token("platform", None)
            .await
            .expect_err("no ticket yet");
        assert!(
            matches!(&err, KeeperError::Upstream { failure, .. } if matches!(**failure, Failure::WaitingForVerifyTicket(_))),
            "{err}"
        );
        assert_eq!(api.calls("api_component_token"), 0, "nothing to fetch with");
        let status = keeper.status("platform").expect("status");
        assert_eq!(status.state, "waiting_for_verify_ticket");

        api.state.lock().expect("fake").ticket = Some("ticket@@@one".into());
        let pushed = deliver(&keeper, ticket_push("ticket@@@one", 1_700_000_000)).await;
        assert_eq!(pushed.expect("accepted"), Pushed::VerifyTicket);
        let stored = store
            .load_verify_ticket("platform".into())
            .await
            .expect("store")
            .expect("kept");
        assert_eq!(stored.value, "ticket@@@one");
        // An older push arriving late does not replace the newer ticket.
        deliver(&keeper, ticket_push("ticket@@@older", 1_600_000_000))
            .await
            .expect("accepted");
        let stored = store
            .load_verify_ticket("platform".into())
            .await
            .expect("store");
        assert_eq!(stored.expect("kept").value, "ticket@@@one");

        let token = keeper.access_token("platform", None).await.expect("token");
        assert!(token.value.starts_with("COMPONENT"));
        assert_eq!(api.calls("api_component_token"), 1);
        keeper.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn a_tampered_push_stores_nothing() {
        let api = Arc::new(FakeApi::default());
        let (_dir, store) = store();
        let keeper = keeper(api, store.clone()).await;
        let (timestamp, nonce, signature, body) = ticket_push("ticket@@@x", 1_700_000_000);
        let last = if signature.ends_with('0') { "1" } else { "0" };
        let forged = format!("{}{last}", &signature[..39]);
        let err = keeper
            .receive_push("platform", &timestamp, &nonce, &forged, body.as_bytes())
            .await
            .expect_err("forged");
        assert!(matches!(err, PushError::Signature(_)), "{err}");
        let doctype = push("<!DOCTYPE xml [<!ENTITY a \"b\">]><xml><InfoType>&a;</InfoType></xml>");
        assert!(matches!(
            deliver(&keeper, doctype).await,
            Err(PushError::Malformed(_))
        ));
        assert_eq!(
            store
                .load_verify_ticket("platform".into())
                .await
                .expect("store"),
            None
        );
        keeper.shutdown(Duration::from_secs(1)).await;
    }

    type Ready = (Arc<FakeApi>, tempfile::TempDir, Arc<SqliteStore>, Keeper);

    /// A keeper whose component has a verify ticket WeChat accepts.
    async fn ready_keeper() -> Ready {
        ready_keeper_with(0, KeeperSettings::default()).await
    }

    /// As [`ready_keeper`], with authorizer tokens of `expires_in` s (0: LIFETIME).
    async fn ready_keeper_with(expires_in: u64, settings: KeeperSettings) -> Ready {
        let api = Arc::new(FakeApi::default());
        {
            let mut state = api.state.lock().expect("fake");
            state.ticket = Some("ticket@@@one".into());
            state.expires_in = expires_in;
        }
        let (dir, store) = store();
        store
            .save_verify_ticket(
                "platform".into(),
                VerifyTicket {
                    value: "ticket@@@one".into(),
                    created_at: 1,
                },
            )
            .await
            .expect("ticket");
        let keeper = keeper_with(api.clone(), store.clone(), settings).await;
        (api, dir, store, keeper)
    }

    #[tokio::test]
    async fn an_authorization_is_stored_before_it_answers_and_each_rotation_before_serving() {
        let (api, _dir, store, keeper) = ready_keeper().await;
        let code = api.authorize("wxmerchant0001");
        let (view, created) = keeper
            .authorize("platform", &code)
            .await
            .expect("authorized");
        assert!(created);
        assert_eq!(view.authorizer_appid, "wxmerchant0001");
        assert_eq!(view.func_info, vec![1, 15]);
        let record = store
            .load_authorizer("platform".into(), "wxmerchant0001".into())
            .await
            .expect("store")
            .expect("stored when answered");
        let valid = api.state.lock().expect("fake").refresh["wxmerchant0001"].clone();
        assert_eq!(record.refresh_token, valid);

        // The token from api_query_auth is served: no refresh call.
        let token = keeper
            .authorizer_token("platform", "wxmerchant0001", None)
            .await
            .expect("token");
        assert_eq!(api.calls("api_authorizer_token"), 0);

        // A client reports it dead: one refresh, whose rotated refresh token is stored.
        let (fresh, refreshed) = keeper
            .invalidate_authorizer("platform", "wxmerchant0001", &token.value)
            .await
            .expect("refreshed");
        assert!(refreshed);
        assert_ne!(fresh.value, token.value);
        assert_eq!(api.calls("api_authorizer_token"), 1);
        let record = store
            .load_authorizer("platform".into(), "wxmerchant0001".into())
            .await
            .expect("store")
            .expect("stored");
        let valid = api.state.lock().expect("fake").refresh["wxmerchant0001"].clone();
        assert_eq!(
            record.refresh_token, valid,
            "the rotated refresh token is stored"
        );

        // The same code again (the push and the redirect both carry it): no second call.
        let (_, created) = keeper.authorize("platform", &code).await.expect("known");
        assert!(!created);
        assert_eq!(api.calls("api_query_auth"), 1);
        keeper.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_same_code_twice_at_once_is_completed_once() {
        let (api, _dir, _store, keeper) = ready_keeper().await;
        let code = api.authorize("wxmerchant0001");
        let (a, b) = tokio::join!(
            keeper.authorize("platform", &code),
            keeper.authorize("platform", &code)
        );
        let (a, b) = (a.expect("first"), b.expect("second"));
        assert_eq!(a.0.authorizer_appid, b.0.authorizer_appid);
        assert!(a.1 ^ b.1, "exactly one of them created it: {} {}", a.1, b.1);
        assert_eq!(api.calls("api_query_auth"), 1);
        keeper.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn a_refused_refresh_token_is_alerted_and_authorizing_again_resolves_it() {
        let (api, _dir, _store, keeper) = ready_keeper().await;
        let code = api.authorize("wxmerchant0001");
        keeper
            .authorize("platform", &code)
            .await
            .expect("authorized");
        // WeChat holds no refresh token for it (nor does its list).
        api.state
            .lock()
            .expect("fake")
            .refresh
            .remove("wxmerchant0001");
        let token = keeper
            .authorizer_token("platform", "wxmerchant0001", None)
            .await
            .expect("token");
        keeper
            .invalidate_authorizer("platform", "wxmerchant0001", &token.value)
            .await
            .expect_err("refused");
        // An operator is told, once; authorizing again resolves it.
        let incident = "platform/wxmerchant0001/access_token#needs_reauthorization";
        let view = keeper.alerts().view();
        assert_eq!(view.open.len(), 1, "{view:?}");
        assert_eq!(view.open[0].incident, incident);
        assert_eq!(
            view.open[0].kind,
            crate::alerts::AlertKind::NeedsReauthorization
        );
        assert_eq!(view.open[0].app.as_deref(), Some("platform"));
        let code = api.authorize("wxmerchant0001");
        keeper
            .authorize("platform", &code)
            .await
            .expect("authorized again");
        assert!(!keeper.alerts().is_open(incident));
        let events: Vec<_> = keeper
            .alerts()
            .view()
            .recent
            .iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(
            events,
            [
                crate::alerts::AlertEvent::Resolved,
                crate::alerts::AlertEvent::Raised
            ]
        );
        keeper.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn a_refused_refresh_token_marks_the_authorizer_and_unauthorized_stops_it() {
        let (api, _dir, store, keeper) = ready_keeper().await;
        for appid in ["wxmerchant0001", "wxmerchant0002"] {
            let code = api.authorize(appid);
            keeper
                .authorize("platform", &code)
                .await
                .expect("authorized");
        }
        // WeChat no longer knows the first one's refresh token (nor lists one).
        api.state
            .lock()
            .expect("fake")
            .refresh
            .remove("wxmerchant0001");
        let token = keeper
            .authorizer_token("platform", "wxmerchant0001", None)
            .await
            .expect("token");
        let err = keeper
            .invalidate_authorizer("platform", "wxmerchant0001", &token.value)
            .await
            .expect_err("refused");
        assert!(
            matches!(&err, KeeperError::Upstream { failure, .. } if matches!(**failure, Failure::NeedsReauthorization(_))),
            "{err}"
        );
        let record = store
            .load_authorizer("platform".into(), "wxmerchant0001".into())
            .await
            .expect("store")
            .expect("stored");
        assert_eq!(record.state, AuthorizerState::NeedsReauthorization);
        let unauthorized = push(
            "<xml><AppId>wxcomponent0000001</AppId><CreateTime>1700000000</CreateTime>\
             <InfoType>unauthorized</InfoType><AuthorizerAppid>wxmerchant0002</AuthorizerAppid></xml>",
        );
        assert_eq!(
            deliver(&keeper, unauthorized).await.expect("accepted"),
            Pushed::Unauthorized("wxmerchant0002".into())
        );
        let err = keeper
            .authorizer_token("platform", "wxmerchant0002", None)
            .await
            .expect_err("gone");
        assert!(
            matches!(&err, KeeperError::Upstream { failure, .. } if matches!(**failure, Failure::Unauthorized(_))),
            "{err}"
        );
        let counts = keeper
            .component_status("platform")
            .expect("status")
            .authorizers;
        assert_eq!(
            (
                counts.total,
                counts.ok,
                counts.needs_reauthorization,
                counts.unauthorized
            ),
            (2, 0, 1, 1)
        );
        keeper.shutdown(Duration::from_secs(1)).await;
    }

    /// Authorizes `appids` and returns each one's current token.
    async fn onboard(api: &FakeApi, keeper: &Keeper, appids: &[&str]) -> Vec<Arc<Token>> {
        let mut tokens = Vec::new();
        for appid in appids {
            let code = api.authorize(appid);
            keeper
                .authorize("platform", &code)
                .await
                .expect("authorized");
            let token = keeper
                .authorizer_token("platform", appid, None)
                .await
                .expect("token");
            tokens.push(token);
        }
        tokens
    }

    /// WeChat rotates `appid`'s refresh token in a call whose answer never arrived:
    /// the one held here is refused from now on. Returns the one WeChat now holds.
    fn lose_rotation(api: &FakeApi, appid: &str) -> String {
        let lost = format!("refresh-lost-{appid}");
        api.state
            .lock()
            .expect("fake")
            .refresh
            .insert(appid.into(), lost.clone());
        lost
    }

    async fn stored_record(store: &SqliteStore, appid: &str) -> AuthorizerRecord {
        store
            .load_authorizer("platform".into(), appid.into())
            .await
            .expect("store")
            .expect("stored")
    }

    fn needs_reauthorization(result: Result<(Arc<Token>, bool), KeeperError>) -> bool {
        matches!(&result, Err(KeeperError::Upstream { failure, .. }) if matches!(**failure, Failure::NeedsReauthorization(_)))
    }

    #[tokio::test]
    async fn a_refused_refresh_token_is_recovered_from_the_authorizer_list() {
        let (api, _dir, store, keeper) = ready_keeper().await;
        let tokens = onboard(&api, &keeper, &["wxmerchant0001"]).await;
        lose_rotation(&api, "wxmerchant0001");

        let (fresh, refreshed) = keeper
            .invalidate_authorizer("platform", "wxmerchant0001", &tokens[0].value)
            .await
            .expect("recovered and refreshed");
        assert!(refreshed);
        assert_ne!(fresh.value, tokens[0].value);
        assert_eq!(api.calls("api_get_authorizer_list"), 1);
        // The refused call, then the retry with the listed refresh token.
        assert_eq!(api.calls("api_authorizer_token"), 2);
        let record = stored_record(&store, "wxmerchant0001").await;
        assert_eq!(record.state, AuthorizerState::Ok);
        let valid = api.state.lock().expect("fake").refresh["wxmerchant0001"].clone();
        assert_eq!(
            record.refresh_token, valid,
            "the retry's rotation is stored"
        );
        // The refreshed token is served, without another call; nobody is alerted.
        let served = keeper
            .authorizer_token("platform", "wxmerchant0001", None)
            .await
            .expect("token");
        assert_eq!(served.value, fresh.value);
        assert_eq!(api.calls("api_authorizer_token"), 2);
        assert!(keeper.alerts().view().open.is_empty());
        let counts = keeper.component_status("platform").expect("status");
        assert_eq!(
            (
                counts.authorizers.ok,
                counts.authorizers.needs_reauthorization
            ),
            (1, 0)
        );
        keeper.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn an_authorizer_the_list_does_not_hold_needs_reauthorization() {
        let (api, _dir, store, keeper) = ready_keeper().await;
        let tokens = onboard(&api, &keeper, &["wxmerchant0001", "wxmerchant0002"]).await;
        api.state
            .lock()
            .expect("fake")
            .refresh
            .remove("wxmerchant0001");
        let refused = keeper
            .invalidate_authorizer("platform", "wxmerchant0001", &tokens[0].value)
            .await;
        assert!(needs_reauthorization(refused));
        assert_eq!(api.calls("api_get_authorizer_list"), 1);
        assert_eq!(api.calls("api_authorizer_token"), 1, "no retry");
        let record = stored_record(&store, "wxmerchant0001").await;
        assert_eq!(record.state, AuthorizerState::NeedsReauthorization);
        // The other authorizer, listed with the token it holds, is left alone.
        let other = stored_record(&store, "wxmerchant0002").await;
        assert_eq!(other.state, AuthorizerState::Ok);
        keeper.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn an_authorizer_listed_with_the_refused_token_needs_reauthorization() {
        let (api, _dir, store, keeper) = ready_keeper().await;
        let tokens = onboard(&api, &keeper, &["wxmerchant0001"]).await;
        let held = stored_record(&store, "wxmerchant0001").await.refresh_token;
        lose_rotation(&api, "wxmerchant0001");
        api.state
            .lock()
            .expect("fake")
            .listed
            .insert("wxmerchant0001".into(), held.clone());
        let refused = keeper
            .invalidate_authorizer("platform", "wxmerchant0001", &tokens[0].value)
            .await;
        assert!(needs_reauthorization(refused));
        assert_eq!(api.calls("api_get_authorizer_list"), 1);
        assert_eq!(api.calls("api_authorizer_token"), 1, "no retry");
        let record = stored_record(&store, "wxmerchant0001").await;
        assert_eq!(
            (record.state, record.refresh_token),
            (AuthorizerState::NeedsReauthorization, held)
        );
        keeper.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn authorizers_refused_together_share_one_list_scan() {
        let (api, _dir, store, keeper) = ready_keeper().await;
        let appids = ["wxmerchant0001", "wxmerchant0002"];
        let tokens = onboard(&api, &keeper, &appids).await;
        for appid in appids {
            lose_rotation(&api, appid);
        }
        // A scan long enough for the second refusal to arrive while it runs.
        api.state.lock().expect("fake").list_delay = Duration::from_millis(300);
        let (a, b) = tokio::join!(
            keeper.invalidate_authorizer("platform", appids[0], &tokens[0].value),
            keeper.invalidate_authorizer("platform", appids[1], &tokens[1].value),
        );
        a.expect("first recovered");
        b.expect("second recovered");
        assert_eq!(api.calls("api_get_authorizer_list"), 1, "one scan for both");
        for appid in appids {
            let record = stored_record(&store, appid).await;
            assert_eq!(record.state, AuthorizerState::Ok);
            let valid = api.state.lock().expect("fake").refresh[appid].clone();
            assert_eq!(record.refresh_token, valid);
        }
        keeper.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn the_list_is_read_at_most_once_an_interval_and_a_failed_read_falls_back() {
        let (api, _dir, store, keeper) = ready_keeper().await;
        let appids = ["wxmerchant0001", "wxmerchant0002", "wxmerchant0003"];
        let tokens = onboard(&api, &keeper, &appids).await;
        lose_rotation(&api, appids[0]);
        keeper
            .invalidate_authorizer("platform", appids[0], &tokens[0].value)
            .await
            .expect("recovered");
        assert_eq!(api.calls("api_get_authorizer_list"), 1);

        // A second refusal within the interval reads no list, and does not give up on
        // the authorizer either: the list was read before this refusal.
        lose_rotation(&api, appids[1]);
        let refused = keeper
            .invalidate_authorizer("platform", appids[1], &tokens[1].value)
            .await;
        assert!(
            matches!(&refused, Err(KeeperError::Upstream { failure, .. }) if matches!(&**failure, Failure::Upstream(e) if e.errcode == Some(61023))),
            "{refused:?}"
        );
        assert_eq!(api.calls("api_get_authorizer_list"), 1, "no second scan");
        let record = stored_record(&store, appids[1]).await;
        assert_eq!(record.state, AuthorizerState::Ok);

        // After the interval a refusal reads it again; WeChat failing it falls back.
        tokio::time::pause();
        tokio::time::advance(super::super::recovery::SCAN_INTERVAL).await;
        tokio::time::resume();
        api.state.lock().expect("fake").list_busy = true;
        lose_rotation(&api, appids[2]);
        let refused = keeper
            .invalidate_authorizer("platform", appids[2], &tokens[2].value)
            .await;
        assert!(needs_reauthorization(refused));
        keeper.shutdown(Duration::from_secs(1)).await;
        // One failed scan: the third refusal's, or the second authorizer's retry,
        // whichever came first; the other shared it or was answered by it.
        assert_eq!(api.calls("api_get_authorizer_list"), 2, "one failed scan");
    }

    #[tokio::test]
    async fn a_refusal_after_the_last_scan_is_retried_until_the_next_one_recovers_it() {
        let (api, _dir, store, keeper) = ready_keeper().await;
        let appids = ["wxmerchant0001", "wxmerchant0002"];
        let tokens = onboard(&api, &keeper, &appids).await;
        lose_rotation(&api, appids[0]);
        keeper
            .invalidate_authorizer("platform", appids[0], &tokens[0].value)
            .await
            .expect("recovered");
        let calls_before = api.calls("api_authorizer_token");

        // Refused after that scan: a failed round, retried with backoff, no scan yet.
        let listed = lose_rotation(&api, appids[1]);
        let refused = keeper
            .invalidate_authorizer("platform", appids[1], &tokens[1].value)
            .await;
        assert!(refused.is_err());
        assert!(!needs_reauthorization(refused));
        assert_eq!(api.calls("api_get_authorizer_list"), 1);
        let view = keeper.alerts().view();
        assert_eq!(view.open.len(), 1, "{view:?}");
        assert_eq!(
            view.open[0].kind,
            crate::alerts::AlertKind::ConfigurationError
        );

        // Until the interval is over, the token reported dead is held (WeChat may still
        // take it) and the next report is refused the same way, without a scan.
        let again = keeper
            .invalidate_authorizer("platform", appids[1], &tokens[1].value)
            .await;
        assert!(again.is_err() && !needs_reauthorization(again));
        assert_eq!(api.calls("api_get_authorizer_list"), 1);
        // Once it is over, the next report reads the list and recovers.
        tokio::time::pause();
        tokio::time::advance(super::super::recovery::SCAN_INTERVAL).await;
        tokio::time::resume();
        let (token, refreshed) = keeper
            .invalidate_authorizer("platform", appids[1], &tokens[1].value)
            .await
            .expect("recovered");
        assert!(refreshed);
        assert_ne!(token.value, tokens[1].value);
        assert_eq!(api.calls("api_get_authorizer_list"), 2, "one more scan");
        let record = stored_record(&store, appids[1]).await;
        assert_eq!(record.state, AuthorizerState::Ok);
        assert_ne!(
            record.refresh_token, listed,
            "the recovered token was rotated"
        );
        assert!(keeper.alerts().view().open.is_empty(), "resolved");
        // The refused call (the second report was held back by the backoff, or refused
        // again), the refused call after the interval, and the retry with the listed
        // refresh token.
        let calls = api.calls("api_authorizer_token") - calls_before;
        assert!((3..=4).contains(&calls), "{calls} calls");
        keeper.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn a_scan_that_began_after_a_refusal_answers_for_it_within_the_interval() {
        let (api, _dir, store, keeper) = ready_keeper().await;
        let appids = ["wxmerchant0001", "wxmerchant0002"];
        let tokens = onboard(&api, &keeper, &appids).await;
        lose_rotation(&api, appids[0]);
        keeper
            .invalidate_authorizer("platform", appids[0], &tokens[0].value)
            .await
            .expect("recovered");
        // The second is refused and deferred; after the interval the first is refused
        // again, and its scan also lists the second's token.
        lose_rotation(&api, appids[1]);
        let refused = keeper
            .invalidate_authorizer("platform", appids[1], &tokens[1].value)
            .await;
        assert!(!needs_reauthorization(refused));
        tokio::time::pause();
        tokio::time::advance(super::super::recovery::SCAN_INTERVAL).await;
        tokio::time::resume();
        let first = keeper
            .authorizer_token("platform", appids[0], None)
            .await
            .expect("token");
        lose_rotation(&api, appids[0]);
        keeper
            .invalidate_authorizer("platform", appids[0], &first.value)
            .await
            .expect("recovered again");
        // The second, reported again, is answered by that scan: no third scan.
        keeper
            .invalidate_authorizer("platform", appids[1], &tokens[1].value)
            .await
            .expect("recovered from the scan after its refusal");
        assert_eq!(api.calls("api_get_authorizer_list"), 2);
        assert_eq!(
            stored_record(&store, appids[1]).await.state,
            AuthorizerState::Ok
        );
        keeper.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn authorizers_and_their_tokens_survive_a_restart() {
        let (api, _dir, store, keeper) = ready_keeper().await;
        let code = api.authorize("wxmerchant0001");
        keeper
            .authorize("platform", &code)
            .await
            .expect("authorized");
        let before = keeper
            .authorizer_token("platform", "wxmerchant0001", None)
            .await
            .expect("token");
        keeper.shutdown(Duration::from_secs(1)).await;
        drop(keeper);
        let again = super::tests::keeper(api.clone(), store.clone()).await;
        let after = again
            .authorizer_token("platform", "wxmerchant0001", None)
            .await
            .expect("token");
        assert_eq!(after.value, before.value, "served from the store");
        assert_eq!(api.calls("api_authorizer_token"), 0);
        again.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn the_gateway_finds_an_authorizer_by_its_current_or_previous_token() {
        let (api, _dir, _store, keeper) = ready_keeper().await;
        let code = api.authorize("wxmerchant0001");
        keeper
            .authorize("platform", &code)
            .await
            .expect("authorized");
        let first = keeper
            .authorizer_token("platform", "wxmerchant0001", None)
            .await
            .expect("token");
        let (app, appid, issued) = keeper.authorizer_issuer_of(&first.value).expect("found");
        assert_eq!(
            (app.id.as_str(), appid.as_str()),
            ("platform", "wxmerchant0001")
        );
        assert!(matches!(issued, Issued::Current));
        let (second, _) = keeper
            .invalidate_authorizer("platform", "wxmerchant0001", &first.value)
            .await
            .expect("refreshed");
        assert!(matches!(
            keeper.authorizer_issuer_of(&first.value),
            Some((_, _, Issued::Previous { expired: false }))
        ));
        let (third, _) = keeper
            .invalidate_authorizer("platform", "wxmerchant0001", &second.value)
            .await
            .expect("refreshed");
        assert!(
            keeper.authorizer_issuer_of(&first.value).is_none(),
            "two renewals ago: no longer one of ours"
        );
        assert!(matches!(
            keeper.authorizer_issuer_of(&third.value),
            Some((_, _, Issued::Current))
        ));
        assert!(keeper.authorizer_issuer_of("forged").is_none());
        keeper.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn callers_and_authorizations_never_wait_behind_the_pace() {
        let settings = KeeperSettings {
            authorizer_refresh_per_sec: 1,
            ..KeeperSettings::default()
        };
        let (api, _dir, _store, keeper) = ready_keeper_with(4, settings).await;
        // Forty authorizations in a burst: none waits for the pace of one a second.
        let began = tokio::time::Instant::now();
        for i in 0..40 {
            let code = api.authorize(&format!("wxmerchant{i:04}"));
            keeper
                .authorize("platform", &code)
                .await
                .expect("authorized");
        }
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "authorizations took {:?}",
            began.elapsed()
        );
        // Their 4 s tokens fall due together; the pace refreshes one a second, so most
        // expire in the queue. A caller asking for one of those is served at once.
        tokio::time::sleep(Duration::from_millis(4500)).await;
        let queued_calls = api.calls("api_authorizer_token");
        assert!(
            queued_calls <= 8,
            "the pace held: {queued_calls} background calls"
        );
        let asked = tokio::time::Instant::now();
        let token = tokio::time::timeout(
            Duration::from_secs(3),
            keeper.authorizer_token("platform", "wxmerchant0039", Some(Duration::from_secs(2))),
        )
        .await
        .expect("not queued behind the pace")
        .expect("token");
        assert!(token.remaining_ms(unix_now_ms()) > 2000);
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "served in {:?}",
            asked.elapsed()
        );
        keeper.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_drivers_park_and_their_parking_refreshes_them_when_due() {
        let (api, _dir, _store, keeper) = ready_keeper_with(12, KeeperSettings::default()).await;
        let mut slots = Vec::new();
        for i in 0..3 {
            let appid = format!("wxmerchant{i:04}");
            let code = api.authorize(&appid);
            keeper
                .authorize("platform", &code)
                .await
                .expect("authorized");
            let platform = keeper.platform("platform").expect("platform");
            slots.push(platform.get(&appid).expect("known").token.clone());
        }
        // 12 s tokens are due 6-7.2 s from now: nothing to do before, so no task runs.
        let parked = |slots: &[Arc<Slot>]| {
            slots
                .iter()
                .all(|s| !s.running.load(std::sync::atomic::Ordering::SeqCst))
        };
        tokio::time::timeout(Duration::from_secs(2), async {
            while !parked(&slots) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("every idle driver parks");
        // A caller wakes one and is served from memory; it parks again.
        keeper
            .authorizer_token("platform", "wxmerchant0000", None)
            .await
            .expect("token");
        assert_eq!(api.calls("api_authorizer_token"), 0);
        // With no caller at all, each is refreshed when due, and parks again.
        tokio::time::timeout(Duration::from_secs(10), async {
            while api.calls("api_authorizer_token") < 3 || !parked(&slots) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("refreshed by their parking");
        assert_eq!(api.calls("api_authorizer_token"), 3);
        for slot in &slots {
            let token = slot
                .serveable(Duration::from_secs(8))
                .expect("a fresh token");
            assert!(token.generation >= 2);
        }
        keeper.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_never_releases_more_than_its_rate_in_a_second() {
        let (_tx, rx) = watch::channel(false);
        let pacer = Pacer::start(50, rx);
        let released = Arc::new(StdMutex::new(Vec::new()));
        let start = tokio::time::Instant::now();
        for _ in 0..400 {
            let (pacer, released) = (pacer.clone(), released.clone());
            tokio::spawn(async move {
                pacer.acquire().await;
                released.lock().expect("log").push(start.elapsed());
            });
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        let released = released.lock().expect("log").clone();
        assert_eq!(released.len(), 400, "all released within 9 s at 49/s");
        // No sliding one-second window holds more than the rate.
        for (i, at) in released.iter().enumerate() {
            let within = released[i..]
                .iter()
                .take_while(|t| **t < *at + Duration::from_secs(1))
                .count();
            assert!(within <= 50, "{within} releases in the second from {at:?}");
        }
    }
}
