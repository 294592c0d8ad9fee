//! The embedded default store: one SQLite file in WAL mode, migrated at open.
//!
//! rusqlite is blocking, so every call runs on tokio's blocking pool. Writes are rare
//! (one per refresh, one per upstream call), and reads never reach here: the keeper
//! serves from memory.

use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Pruned, Store, StoreError, UsageRow};
use crate::credential::{CredentialKey, Token};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
/// Append new ones; never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: credentials and per-day usage counters.
    "CREATE TABLE credentials (
        app            TEXT    NOT NULL,
        kind           TEXT    NOT NULL,
        value          TEXT    NOT NULL,
        expires_at_ms  INTEGER NOT NULL,
        fetched_at_ms  INTEGER NOT NULL,
        lifetime_secs  INTEGER NOT NULL,
        generation     INTEGER NOT NULL,
        PRIMARY KEY (app, kind)
    );
    CREATE TABLE usage (
        day    TEXT    NOT NULL,
        app    TEXT    NOT NULL,
        api    TEXT    NOT NULL,
        calls  INTEGER NOT NULL,
        PRIMARY KEY (day, app, api)
    );",
];

/// A SQLite file shared by the handles cloned from it.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Held only inside blocking closures, never across an await.
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn run<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = conn
                    .lock()
                    .map_err(|_| StoreError::Worker("connection lock poisoned".into()))?;
                f(&mut guard)
            })
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
        }
        .boxed()
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let applied: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(0);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database was written by a newer wxtoken (schema {applied}, this build knows {})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn load(&self, key: CredentialKey) -> BoxFuture<'_, Result<Option<Token>, StoreError>> {
        self.run(move |conn| {
            let token = conn
                .query_row(
                    "SELECT value, expires_at_ms, fetched_at_ms, lifetime_secs, generation
                     FROM credentials WHERE app = ?1 AND kind = ?2",
                    params![key.app, key.kind.as_str()],
                    |row| {
                        Ok(Token {
                            value: row.get(0)?,
                            expires_at_ms: row.get::<_, i64>(1)? as u64,
                            fetched_at_ms: row.get::<_, i64>(2)? as u64,
                            lifetime_secs: row.get::<_, i64>(3)? as u64,
                            generation: row.get::<_, i64>(4)? as u64,
                        })
                    },
                )
                .optional()?;
            Ok(token)
        })
    }

    fn save(&self, key: CredentialKey, token: Token) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.run(move |conn| {
            // Compare-and-set on generation: an older value never replaces a newer one.
            let changed = conn.execute(
                "INSERT INTO credentials
                    (app, kind, value, expires_at_ms, fetched_at_ms, lifetime_secs, generation)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (app, kind) DO UPDATE SET
                    value = excluded.value,
                    expires_at_ms = excluded.expires_at_ms,
                    fetched_at_ms = excluded.fetched_at_ms,
                    lifetime_secs = excluded.lifetime_secs,
                    generation = excluded.generation
                 WHERE excluded.generation > credentials.generation
                    OR (excluded.generation = credentials.generation
                        AND excluded.value = credentials.value)",
                params![
                    key.app,
                    key.kind.as_str(),
                    token.value,
                    token.expires_at_ms as i64,
                    token.fetched_at_ms as i64,
                    token.lifetime_secs as i64,
                    token.generation as i64,
                ],
            )?;
            Ok(changed > 0)
        })
    }

    fn add_usage(
        &self,
        day: String,
        app: String,
        api: &'static str,
        n: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO usage (day, app, api, calls) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (day, app, api) DO UPDATE SET calls = calls + excluded.calls",
                params![day, app, api, n as i64],
            )?;
            Ok(())
        })
    }

    fn usage(&self, day: String, app: String) -> BoxFuture<'_, Result<Vec<UsageRow>, StoreError>> {
        self.run(move |conn| {
            let mut stmt =
                conn.prepare("SELECT app, api, calls FROM usage WHERE day = ?1 AND app = ?2")?;
            let rows = stmt.query_map([day, app], |row| {
                Ok(UsageRow {
                    app: row.get(0)?,
                    api: row.get(1)?,
                    calls: row.get::<_, i64>(2)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn prune(
        &self,
        oldest_day: String,
        apps: Vec<String>,
        expired_before_ms: u64,
    ) -> BoxFuture<'_, Result<Pruned, StoreError>> {
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let usage_rows = tx.execute("DELETE FROM usage WHERE day < ?1", [&oldest_day])?;
            // The configured apps, as a JSON array (one bound parameter, any length).
            let apps =
                serde_json::to_string(&apps).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let credentials = tx.execute(
                "DELETE FROM credentials
                 WHERE app NOT IN (SELECT value FROM json_each(?1)) OR expires_at_ms < ?2",
                params![apps, expired_before_ms as i64],
            )?;
            tx.commit()?;
            Ok(Pruned {
                usage_rows: usage_rows as u64,
                credentials: credentials as u64,
            })
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.run(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .optional()?
                .ok_or_else(|| StoreError::Corrupt("SELECT 1 returned nothing".into()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(value: &str, generation: u64) -> Token {
        Token {
            value: value.into(),
            expires_at_ms: 2_000_000,
            fetched_at_ms: 1_000_000,
            lifetime_secs: 7200,
            generation,
        }
    }

    #[tokio::test]
    async fn an_older_generation_never_overwrites_a_newer_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("t.db")).expect("open");
        let key = CredentialKey::access_token("shop");
        assert!(
            store
                .save(key.clone(), token("new", 2))
                .await
                .expect("save")
        );
        assert!(
            !store
                .save(key.clone(), token("old", 1))
                .await
                .expect("save")
        );
        let other = store
            .save(key.clone(), token("other", 2))
            .await
            .expect("save");
        assert!(!other, "the same generation with another value is refused");
        let renewed = store
            .save(key.clone(), token("new", 2))
            .await
            .expect("save");
        assert!(renewed, "the same value may be written again (a renewal)");
        assert_eq!(store.load(key).await.expect("load"), Some(token("new", 2)));
    }

    #[tokio::test]
    async fn prune_drops_old_usage_and_dead_credentials_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("t.db")).expect("open");
        for day in ["2026-08-29", "2026-08-30", "2026-11-28"] {
            store
                .add_usage(day.into(), "shop".into(), "token", 1)
                .await
                .expect("usage");
        }
        let live = |v: &str| Token {
            expires_at_ms: 10_000_000,
            ..token(v, 1)
        };
        let shop = CredentialKey::access_token("shop");
        let gone = CredentialKey::access_token("removed-app");
        let stale = CredentialKey::ticket("shop", crate::credential::TicketType::WxCard);
        store.save(shop.clone(), live("a")).await.expect("save");
        store.save(gone.clone(), live("b")).await.expect("save");
        store
            .save(stale.clone(), token("c", 1))
            .await
            .expect("save");

        let pruned = store
            .prune("2026-08-30".into(), vec!["shop".into()], 5_000_000)
            .await
            .expect("prune");
        assert_eq!(
            pruned,
            Pruned {
                usage_rows: 1,
                credentials: 2
            }
        );
        assert!(store.load(shop).await.expect("load").is_some());
        assert!(store.load(gone).await.expect("load").is_none());
        assert!(store.load(stale).await.expect("load").is_none());
        let kept = store
            .usage("2026-08-30".into(), "shop".into())
            .await
            .expect("usage");
        assert_eq!(kept.len(), 1);
        let dropped = store
            .usage("2026-08-29".into(), "shop".into())
            .await
            .expect("usage");
        assert!(dropped.is_empty());
    }

    #[tokio::test]
    async fn state_survives_reopening_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        {
            let store = SqliteStore::open(&path).expect("open");
            store
                .save(CredentialKey::access_token("a"), token("v", 1))
                .await
                .expect("save");
            store
                .add_usage("2024-01-01".into(), "a".into(), "token", 2)
                .await
                .expect("usage");
            store
                .add_usage("2024-01-01".into(), "a".into(), "token", 1)
                .await
                .expect("usage");
        }
        let store = SqliteStore::open(&path).expect("reopen");
        let loaded = store
            .load(CredentialKey::access_token("a"))
            .await
            .expect("load");
        assert_eq!(loaded, Some(token("v", 1)));
        let usage = store
            .usage("2024-01-01".into(), "a".into())
            .await
            .expect("usage");
        assert_eq!(
            usage,
            vec![UsageRow {
                app: "a".into(),
                api: "token".into(),
                calls: 3
            }]
        );
        store.ping().await.expect("ping");
    }
}
