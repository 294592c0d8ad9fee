//! Durable state behind one trait: the current value of every credential and the
//! per-day upstream call counters. The keeper is the only caller; the store knows
//! nothing of the keeper or of HTTP.

mod sqlite;

use futures::future::BoxFuture;

use crate::credential::{CredentialKey, Token};
pub use sqlite::SqliteStore;

/// A store failure. The keeper logs it and keeps serving from memory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store's worker thread failed: {0}")]
    Worker(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
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
    /// Every stored credential, for warming the keeper at start.
    fn load_all(&self) -> BoxFuture<'_, Result<Vec<(CredentialKey, Token)>, StoreError>>;

    /// Writes a credential unless a newer generation is already stored. Returns whether
    /// it was written.
    fn save(&self, key: CredentialKey, token: Token) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Adds `n` upstream calls of `api` by `app` on WeChat day `day` (YYYY-MM-DD).
    fn add_usage(
        &self,
        day: String,
        app: String,
        api: &'static str,
        n: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The counters of one WeChat day.
    fn usage(&self, day: String) -> BoxFuture<'_, Result<Vec<UsageRow>, StoreError>>;

    /// Whether the store answers (readiness).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
