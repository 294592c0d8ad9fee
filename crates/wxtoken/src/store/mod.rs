//! Durable state behind one trait: the current value of every credential and the
//! per-day upstream call counters; for a store several instances share (Redis), also the
//! [`Coordination`] that elects one refresher per credential and spreads new values.
//! The keeper is the only caller; the store knows nothing of the keeper or of HTTP.

mod redis;
mod sqlite;

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::broadcast;

use crate::credential::{CredentialKey, Generation, Token};
pub use redis::{RedisOptions, RedisStore};
pub use sqlite::SqliteStore;

/// A store failure. The keeper logs it and keeps serving from memory. The cause is part
/// of the message (not a chained source), so that a one-line log says everything.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    #[error("redis: {0}")]
    Redis(::redis::RedisError),
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the store's worker thread failed: {0}")]
    Worker(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

impl From<::redis::RedisError> for StoreError {
    fn from(e: ::redis::RedisError) -> Self {
        StoreError::Redis(e)
    }
}

/// Per-day upstream call counters are kept this many days (SQLite prunes older rows at
/// start and daily; Redis lets them expire), enough for a quarter's look back.
pub const USAGE_KEEP_DAYS: u64 = 90;

/// A stored value whose app is no longer configured, or that expired this long ago, is
/// deleted when the store is pruned.
pub const DEAD_VALUE_GRACE_MS: u64 = 86_400_000;

/// What one prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub usage_rows: u64,
    pub credentials: u64,
}

/// One per-day counter row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub app: String,
    pub api: String,
    pub calls: u64,
}

/// A component_verify_ticket as WeChat pushed it (every ten minutes, valid 12 hours).
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyTicket {
    pub value: String,
    /// WeChat's `CreateTime` (unix seconds): the newest ticket wins, whatever order the
    /// pushes arrive in.
    pub created_at: u64,
}

impl std::fmt::Debug for VerifyTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyTicket")
            .field("value", &crate::credential::Redacted(&self.value))
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Where an authorizer stands with its component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthorizerState {
    /// Authorized, and its refresh token works.
    Ok,
    /// WeChat refused its refresh token (61023): the merchant must authorize again.
    NeedsReauthorization,
    /// The merchant withdrew the authorization (the `unauthorized` event).
    Unauthorized,
}

impl AuthorizerState {
    pub const ALL: [AuthorizerState; 3] = [
        AuthorizerState::Ok,
        AuthorizerState::NeedsReauthorization,
        AuthorizerState::Unauthorized,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthorizerState::Ok => "ok",
            AuthorizerState::NeedsReauthorization => "needs_reauthorization",
            AuthorizerState::Unauthorized => "unauthorized",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// What a component keeps of one authorizer, durably: above all its refresh token,
/// whose loss means the merchant must authorize again by hand.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorizerRecord {
    /// The authorizer's appid.
    pub appid: String,
    /// The latest authorizer_refresh_token WeChat returned.
    pub refresh_token: String,
    pub state: AuthorizerState,
    /// The permission sets granted (`func_info[].funcscope_category.id`).
    pub func_info: Vec<u64>,
    /// Unix ms of the (latest) authorization.
    pub authorized_at_ms: u64,
    /// Bumped by every change: a write never replaces a record of a higher version.
    pub version: u64,
}

impl std::fmt::Debug for AuthorizerRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizerRecord")
            .field("appid", &self.appid)
            .field(
                "refresh_token",
                &crate::credential::Redacted(&self.refresh_token),
            )
            .field("state", &self.state)
            .field("func_info", &self.func_info)
            .field("authorized_at_ms", &self.authorized_at_ms)
            .field("version", &self.version)
            .finish()
    }
}

/// A runtime-managed collection of JSON documents by id (`PUT /v1/apps/{app}`,
/// `POST /v1/clients`): every instance of a fleet reads the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Registry {
    /// Apps added at runtime (their secrets sealed when a master key is set).
    Apps,
    /// Client keys added at runtime (only their sha256 is kept).
    Clients,
    /// The store's own facts, such as the master key's check value. Changes here do not
    /// bump [`Store::registry_version`].
    Meta,
}

impl Registry {
    pub fn as_str(self) -> &'static str {
        match self {
            Registry::Apps => "apps",
            Registry::Clients => "clients",
            Registry::Meta => "meta",
        }
    }
}

/// One line of the audit log: who did what to which app, and how it went. Never a
/// secret or a whole token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// Unix ms.
    pub at_ms: u64,
    /// The client's name (or `config` for a reload, `cli` for an offline command).
    pub client: String,
    /// What was done: `app.put`, `app.delete`, `client.add`, `client.revoke`,
    /// `token.invalidate`, `ticket.invalidate`, `facade.force_refresh`, `config.reload`...
    pub action: String,
    pub app: Option<String>,
    /// `ok`, or what went wrong.
    pub result: String,
}

/// Which audit entries a reader is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditFilter {
    /// Every entry (an admin key for every app).
    All,
    /// An admin key limited to some apps: the entries about those apps and the
    /// entries of its own actions.
    Limited { apps: Vec<String>, client: String },
}

impl AuditFilter {
    pub fn shows(&self, entry: &AuditEntry) -> bool {
        match self {
            AuditFilter::All => true,
            AuditFilter::Limited { apps, client } => {
                entry.client == *client || entry.app.as_ref().is_some_and(|app| apps.contains(app))
            }
        }
    }
}

/// Audit entries are kept this many days.
pub const AUDIT_KEEP_DAYS: u64 = 90;

/// Durable state. Methods take owned values so that implementations can move them onto
/// a worker thread or into a network call.
pub trait Store: Send + Sync + 'static {
    /// The stored value of one credential.
    fn load(&self, key: CredentialKey) -> BoxFuture<'_, Result<Option<Token>, StoreError>>;

    /// Writes a credential unless a newer one is stored: a higher generation, or the same
    /// generation with another value. Returns whether it was written.
    fn save(&self, key: CredentialKey, token: Token) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Adds `n` upstream calls of `api` by `app` on WeChat day `day` (YYYY-MM-DD).
    fn add_usage(
        &self,
        day: String,
        app: String,
        api: &'static str,
        n: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// One app's counters of one WeChat day.
    fn usage(&self, day: String, app: String) -> BoxFuture<'_, Result<Vec<UsageRow>, StoreError>>;

    /// Deletes usage counters of days before `oldest_day` (YYYY-MM-DD), and stored values
    /// of apps not in `apps` or expired before `expired_before_ms`. Stores whose data
    /// expires by itself (Redis) do nothing.
    fn prune(
        &self,
        oldest_day: String,
        apps: Vec<String>,
        expired_before_ms: u64,
    ) -> BoxFuture<'_, Result<Pruned, StoreError>> {
        let _ = (oldest_day, apps, expired_before_ms);
        Box::pin(async { Ok(Pruned::default()) })
    }

    /// Keeps `ticket` as `component`'s verify ticket unless a newer one (a later
    /// `created_at`) is stored. Returns whether it was written.
    fn save_verify_ticket(
        &self,
        component: String,
        ticket: VerifyTicket,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// `component`'s newest verify ticket.
    fn load_verify_ticket(
        &self,
        component: String,
    ) -> BoxFuture<'_, Result<Option<VerifyTicket>, StoreError>>;

    /// Writes an authorizer's record unless one of the same or a higher version is
    /// stored. Returns whether it was written. Durable when it returns.
    fn save_authorizer(
        &self,
        component: String,
        record: AuthorizerRecord,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// One authorizer's record.
    fn load_authorizer(
        &self,
        component: String,
        appid: String,
    ) -> BoxFuture<'_, Result<Option<AuthorizerRecord>, StoreError>>;

    /// Up to `limit` records of `component` with appids after `after`, in appid order
    /// (a page of a listing, or of the load at start).
    fn list_authorizers(
        &self,
        component: String,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<AuthorizerRecord>, StoreError>>;

    /// The stored values of many credentials at once (an authorizer's token each, at
    /// start), in the order asked.
    fn load_many(
        &self,
        keys: Vec<CredentialKey>,
    ) -> BoxFuture<'_, Result<Vec<Option<Token>>, StoreError>> {
        Box::pin(async move {
            let mut found = Vec::with_capacity(keys.len());
            for key in keys {
                found.push(self.load(key).await?);
            }
            Ok(found)
        })
    }

    /// Writes (creates or replaces) `id` in `registry`, bumping the registry version
    /// (except for [`Registry::Meta`]).
    fn registry_put(
        &self,
        registry: Registry,
        id: String,
        value: String,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Removes `id` from `registry`; whether it was there.
    fn registry_remove(
        &self,
        registry: Registry,
        id: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Every `(id, value)` of `registry`, in id order.
    fn registry_list(
        &self,
        registry: Registry,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>>;

    /// A number that changes whenever apps or clients change, on any instance: polled
    /// to pick runtime changes up.
    fn registry_version(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Appends one entry to the audit log.
    fn audit_append(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Up to `limit` entries at or after `since_ms` that `filter` shows, oldest first.
    fn audit_since(
        &self,
        since_ms: u64,
        limit: usize,
        filter: AuditFilter,
    ) -> BoxFuture<'_, Result<Vec<AuditEntry>, StoreError>>;

    /// Whether the store answers (readiness).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// What the store would lose on a restart of its own, said once at start.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Coordination between instances, for a store several of them share.
    fn coordination(&self) -> Option<&dyn Coordination> {
        None
    }
}

/// A change another instance (or this one) made, as announced by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// `key` now has this generation in the store.
    Stored(CredentialKey, Generation),
    /// Announcements may have been missed (the connection dropped): compare everything.
    Resync,
    /// An authorizer of component `.0` (appid `.1`) was added or changed its state.
    Authorizer(String, String),
    /// A new verify ticket of component `.0` was stored.
    VerifyTicket(String),
}

/// What a fenced write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    Written,
    /// A newer value is stored (a higher generation, or the same with another value).
    Newer,
    /// The writer no longer holds the credential's lease: nothing was written.
    LeaseLost,
}

/// Electing one refresher per credential across instances, and hearing about new values.
pub trait Coordination: Send + Sync {
    /// Takes the refresh lease of `key` for `owner` for `ttl`, if nobody holds it.
    fn acquire_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Extends the lease if `owner` still holds it; false if it was lost.
    fn renew_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Gives the lease up if `owner` still holds it (compare-and-delete).
    fn release_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Announcements of stored values, from every instance.
    fn updates(&self) -> broadcast::Receiver<Update>;

    /// [`Store::save`], but only while `owner` holds `key`'s lease, checked in the same
    /// atomic step: a refresher paused past its lease cannot write.
    fn save_fenced<'a>(
        &'a self,
        key: CredentialKey,
        token: Token,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<Saved, StoreError>>;

    /// Takes one use of a budget the whole fleet shares: at most `limit` uses in any
    /// `window` (sliding), counted atomically in the store. `scope` is the app (or
    /// `corp:ID`) the budget belongs to, `name` says which budget. Returns whether the
    /// use was within the budget (and so counted).
    fn take_budget<'a>(
        &'a self,
        scope: &'a str,
        name: &'a str,
        limit: u64,
        window: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
}
