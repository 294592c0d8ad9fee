//! The credential lifecycle: every token's current value in memory, one driver task per
//! credential that alone talks to WeChat (single flight by construction), proactive
//! jittered refresh, compare-and-invalidate, backoff by error class, and persistence.
//!
//! Routes call [`Keeper`]; only the keeper calls `wechat/` and `store/`.

mod driver;
pub mod schedule;
mod slot;
mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::info;

use crate::config::{AppSettings, KeeperSettings};
use crate::credential::{CredentialKey, Token, unix_now_ms, wechat_day};
use crate::store::{Store, StoreError};
use crate::wechat::{TokenApi, UpstreamError};
use schedule::serveable;
use slot::{Health, Slot};
pub use status::{AppStatus, ErrorStatus, TokenStatus};

/// Why a round produced no value.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// WeChat (or the way to it) failed.
    #[error("{0}")]
    Upstream(UpstreamError),
    /// A client reported the token dead, WeChat keeps returning it, and a force_refresh
    /// is not allowed now.
    #[error("WeChat returns the reported token again and force_refresh is held back: {0}")]
    ForceRefused(String),
    /// No value and no upstream error to show (e.g. still backing off from startup).
    #[error("{0}")]
    Unavailable(String),
}

/// What a caller of the keeper may get instead of a token.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error("no app `{0}` is configured")]
    UnknownApp(String),
    /// The last upstream attempt failed and no valid token remains.
    #[error("{failure}")]
    Upstream {
        failure: Arc<Failure>,
        /// When the keeper will try again, if it is backing off.
        retry_in: Option<Duration>,
    },
    /// No token can be given for another reason (min_ttl not met in time, shutting down).
    #[error("{0}")]
    Unavailable(String),
}

/// What the drivers share.
pub(crate) struct Ctx {
    pub api: Arc<dyn TokenApi>,
    pub store: Arc<dyn Store>,
    pub settings: KeeperSettings,
}

/// A cheap-to-clone handle on every credential.
#[derive(Clone)]
pub struct Keeper {
    inner: Arc<Inner>,
}

struct Inner {
    /// Fixed at start; runtime app management will make this swappable.
    slots: HashMap<String, Arc<Slot>>,
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

/// Upstream API names as counted, so counters loaded from the store keep static names.
const API_NAMES: &[&str] = &["token", "stable_token", "stable_token_force"];

impl Keeper {
    /// Loads stored values and today's counters, then starts one driver per app. A
    /// stored token that is still valid is served at once, with no upstream call.
    pub async fn start(
        apps: &[AppSettings],
        settings: KeeperSettings,
        api: Arc<dyn TokenApi>,
        store: Arc<dyn Store>,
    ) -> Result<Self, StoreError> {
        let mut stored: HashMap<CredentialKey, Token> =
            store.load_all().await?.into_iter().collect();
        let now_ms = unix_now_ms();
        let day = wechat_day(now_ms);
        let usage = store.usage(day.clone()).await?;
        let ctx = Arc::new(Ctx {
            api,
            store,
            settings,
        });

        let mut slots = HashMap::new();
        let mut order = Vec::new();
        for app in apps {
            let key = CredentialKey::access_token(app.id.clone());
            let token = stored.remove(&key);
            let mut health = Health {
                day: day.clone(),
                ..Health::default()
            };
            for row in usage.iter().filter(|r| r.app == app.id) {
                if let Some(name) = API_NAMES.iter().find(|n| **n == row.api) {
                    health.calls.insert(name, row.calls);
                }
            }
            if let Some(token) = &token {
                let delay = schedule::refresh_delay(token, app.mode, &ctx.settings, now_ms);
                health.refresh_at = Some(Instant::now() + delay);
                info!(
                    app = %app.id,
                    token = %token.redacted(),
                    generation = token.generation,
                    expires_in = token.expires_in_secs(now_ms),
                    "loaded stored token"
                );
            }
            slots.insert(
                app.id.clone(),
                Arc::new(Slot::new(app.clone(), token, health)),
            );
            order.push(app.id.clone());
        }

        let (shutdown, _) = watch::channel(false);
        let drivers = slots
            .values()
            .map(|slot| tokio::spawn(driver::run(slot.clone(), ctx.clone(), shutdown.subscribe())))
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                slots,
                order,
                ctx,
                shutdown,
                drivers: Mutex::new(drivers),
            }),
        })
    }

    /// Whether `app` is configured.
    pub fn has_app(&self, app: &str) -> bool {
        self.inner.slots.contains_key(app)
    }

    /// App ids in configuration order.
    pub fn app_ids(&self) -> &[String] {
        &self.inner.order
    }

    fn slot(&self, app: &str) -> Result<&Arc<Slot>, KeeperError> {
        self.inner
            .slots
            .get(app)
            .ok_or_else(|| KeeperError::UnknownApp(app.to_owned()))
    }

    /// The hot path: the current token if it has more than `min_left` to live. A memory
    /// read; no lock, no I/O.
    pub fn current(&self, app: &str, min_left: Duration) -> Option<Arc<Token>> {
        let slot = self.inner.slots.get(app)?;
        let token = slot.current.load_full()?;
        serveable(&token, unix_now_ms(), min_left).then_some(token)
    }

    /// A token with at least `min_ttl` left (or just a valid one). Served from memory when
    /// possible; otherwise waits for the single upstream call in flight, and with `min_ttl`
    /// for up to `keeper.min_ttl_wait`.
    pub async fn access_token(
        &self,
        app: &str,
        min_ttl: Option<Duration>,
    ) -> Result<Arc<Token>, KeeperError> {
        let slot = self.slot(app)?;
        let min_left = min_ttl.unwrap_or(Duration::ZERO);
        if let Some(token) = self.current(app, min_left) {
            return Ok(token);
        }
        if let Some(token) = slot.current.load_full() {
            let lifetime = Duration::from_secs(token.lifetime_secs);
            if min_left >= lifetime {
                return Err(KeeperError::Unavailable(format!(
                    "min_ttl {}s is not less than the token's lifetime ({}s)",
                    min_left.as_secs(),
                    lifetime.as_secs()
                )));
            }
        }
        let mut rx = slot.outcome.subscribe();
        let outcome = slot
            .request(|d| d.min_left_ms = d.min_left_ms.max(min_left.as_millis() as u64))
            .await
            .ok_or_else(shutting_down)?;
        if let Some(token) = self.current(app, min_left) {
            return Ok(token);
        }
        if min_ttl.is_some() {
            // WeChat may renew later (stable mode renews only near expiry): watch installs.
            let deadline = Instant::now() + self.inner.ctx.settings.min_ttl_wait;
            loop {
                match tokio::time::timeout_at(deadline, rx.changed()).await {
                    Ok(Ok(())) => {
                        if let Some(token) = self.current(app, min_left) {
                            return Ok(token);
                        }
                    }
                    Ok(Err(_)) => return Err(shutting_down()),
                    Err(_) => break,
                }
            }
            if outcome.failure.is_none() {
                return Err(KeeperError::Unavailable(format!(
                    "no token with at least {}s left within {}s",
                    min_left.as_secs(),
                    self.inner.ctx.settings.min_ttl_wait.as_secs()
                )));
            }
        }
        Err(self.failure_error(slot, outcome.failure))
    }

    /// Compare-and-invalidate: `dead` is the token a client saw rejected. If it is not
    /// the current token, the current one is returned and nothing is fetched; if it is,
    /// one refresh happens (however many clients report it). Returns the token and
    /// whether it is newer than the one reported.
    pub async fn invalidate(
        &self,
        app: &str,
        dead: &str,
    ) -> Result<(Arc<Token>, bool), KeeperError> {
        let slot = self.slot(app)?;
        let current = slot.current.load_full();
        let reported = match current {
            Some(token) if token.value == dead => token,
            _ => {
                // Not the current token (or none yet): hand out the current one.
                let token = self.access_token(app, None).await?;
                return Ok((token, false));
            }
        };
        let outcome = slot
            .request(|d| d.invalidate = d.invalidate.max(Some(reported.generation)))
            .await
            .ok_or_else(shutting_down)?;
        let now = slot.current.load_full();
        match now {
            Some(token) if token.generation > reported.generation => Ok((token, true)),
            _ => match outcome.failure {
                Some(failure) => Err(self.failure_error(slot, Some(failure))),
                None => match self.current(app, Duration::ZERO) {
                    Some(token) => Ok((token, false)),
                    None => Err(self.failure_error(slot, None)),
                },
            },
        }
    }

    fn failure_error(&self, slot: &Slot, failure: Option<Arc<Failure>>) -> KeeperError {
        let health = slot.health();
        let failure = failure.or_else(|| health.last_error.as_ref().map(|e| e.failure.clone()));
        let retry_in = health
            .backoff_until
            .and_then(|until| until.checked_duration_since(Instant::now()));
        match failure {
            Some(failure) => KeeperError::Upstream { failure, retry_in },
            None => KeeperError::Unavailable("no valid token is available yet".into()),
        }
    }

    /// Status of one app, without secrets or token values.
    pub fn status(&self, app: &str) -> Option<AppStatus> {
        let slot = self.inner.slots.get(app)?;
        Some(status::of(slot, &self.inner.ctx.settings))
    }

    /// Stops every driver (in-flight upstream calls are awaited up to `grace`).
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.inner.shutdown.send(true);
        let drivers =
            std::mem::take(&mut *self.inner.drivers.lock().unwrap_or_else(|p| p.into_inner()));
        for driver in drivers {
            if tokio::time::timeout(grace, driver).await.is_err() {
                tracing::warn!("a token driver did not stop within {grace:?}");
            }
        }
    }
}

fn shutting_down() -> KeeperError {
    KeeperError::Unavailable("the server is shutting down".into())
}
