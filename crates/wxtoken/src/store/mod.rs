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
