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

use super::{
    AuditEntry, AuditFilter, AuthorizerRecord, AuthorizerState, Pruned, Registry, Store,
    StoreError, UsageRow, VerifyTicket,
};
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
    // 2: third-party platforms: the newest verify ticket of each component, and every
    // authorizer's record (its refresh token above all). Authorizer tokens live in
    // `credentials` with app = 'component/appid'.
    "CREATE TABLE verify_tickets (
        component   TEXT    NOT NULL PRIMARY KEY,
        value       TEXT    NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE authorizers (
        component         TEXT    NOT NULL,
        appid             TEXT    NOT NULL,
        refresh_token     TEXT    NOT NULL,
        state             TEXT    NOT NULL,
        func_info         TEXT    NOT NULL,
        authorized_at_ms  INTEGER NOT NULL,
        version           INTEGER NOT NULL,
        PRIMARY KEY (component, appid)
    ) WITHOUT ROWID;",
    // 3: runtime-managed apps and clients (JSON documents; secrets sealed when a master
    // key is set), a version bumped by every change to them, and the audit log.
    "CREATE TABLE registry (
        registry  TEXT NOT NULL,
        id        TEXT NOT NULL,
        value     TEXT NOT NULL,
        PRIMARY KEY (registry, id)
    ) WITHOUT ROWID;
    CREATE TABLE registry_version (
        one      INTEGER NOT NULL PRIMARY KEY CHECK (one = 1),
        version  INTEGER NOT NULL
    );
    INSERT INTO registry_version (one, version) VALUES (1, 0);
    CREATE TABLE audit (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms   INTEGER NOT NULL,
        client  TEXT    NOT NULL,
        action  TEXT    NOT NULL,
        app     TEXT,
        result  TEXT    NOT NULL
    );
    CREATE INDEX audit_at ON audit (at_ms);",
];

/// Reads one `authorizers` row (columns in the order of [`AUTHORIZER_COLUMNS`]).
fn authorizer_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuthorizerRecord> {
    let state: String = row.get(2)?;
    let func_info: String = row.get(3)?;
    Ok(AuthorizerRecord {
        appid: row.get(0)?,
        refresh_token: row.get(1)?,
        state: AuthorizerState::parse(&state).unwrap_or(AuthorizerState::Ok),
        func_info: serde_json::from_str(&func_info).unwrap_or_default(),
        authorized_at_ms: row.get::<_, i64>(4)? as u64,
        version: row.get::<_, i64>(5)? as u64,
    })
}

const AUTHORIZER_COLUMNS: &str =
    "appid, refresh_token, state, func_info, authorized_at_ms, version";

fn token_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Token> {
    Ok(Token {
        value: row.get(0)?,
        expires_at_ms: row.get::<_, i64>(1)? as u64,
        fetched_at_ms: row.get::<_, i64>(2)? as u64,
        lifetime_secs: row.get::<_, i64>(3)? as u64,
        generation: row.get::<_, i64>(4)? as u64,
    })
}

const LOAD_TOKEN: &str = "SELECT value, expires_at_ms, fetched_at_ms, lifetime_secs, generation
                          FROM credentials WHERE app = ?1 AND kind = ?2";

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

    /// Makes the connection refuse every write (`PRAGMA query_only`) with the error a
    /// read-only database file gives (SQLITE_READONLY), or (`false`) take writes again.
    /// For fault drills and tests: root ignores file permissions, so a chmod cannot make
    /// the file read-only there.
    pub async fn set_read_only(&self, on: bool) -> Result<(), StoreError> {
        self.run(move |conn| {
            conn.pragma_update(None, "query_only", on)?;
            Ok(())
        })
        .await
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
                    LOAD_TOKEN,
                    params![key.scope(), key.kind.as_str()],
                    token_row,
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
                    key.scope(),
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
            let audit_before = crate::credential::unix_now_ms()
                .saturating_sub(super::AUDIT_KEEP_DAYS * 86_400_000);
            tx.execute("DELETE FROM audit WHERE at_ms < ?1", [audit_before as i64])?;
            // The configured apps, as a JSON array (one bound parameter, any length).
            let apps =
                serde_json::to_string(&apps).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            // An authorizer's credentials ('component/appid') belong to their component.
            let credentials = tx.execute(
                "DELETE FROM credentials
                 WHERE (CASE WHEN instr(app, '/') > 0 THEN substr(app, 1, instr(app, '/') - 1)
                             ELSE app END) NOT IN (SELECT value FROM json_each(?1))
                    OR expires_at_ms < ?2",
                params![apps, expired_before_ms as i64],
            )?;
            tx.commit()?;
            Ok(Pruned {
                usage_rows: usage_rows as u64,
                credentials: credentials as u64,
            })
        })
    }

    fn load_many(
        &self,
        keys: Vec<CredentialKey>,
    ) -> BoxFuture<'_, Result<Vec<Option<Token>>, StoreError>> {
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(LOAD_TOKEN)?;
            let mut found = Vec::with_capacity(keys.len());
            for key in keys {
                found.push(
                    stmt.query_row(params![key.scope(), key.kind.as_str()], token_row)
                        .optional()?,
                );
            }
            Ok(found)
        })
    }

    fn save_verify_ticket(
        &self,
        component: String,
        ticket: VerifyTicket,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.run(move |conn| {
            let changed = conn.execute(
                "INSERT INTO verify_tickets (component, value, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (component) DO UPDATE SET
                    value = excluded.value, created_at = excluded.created_at
                 WHERE excluded.created_at >= verify_tickets.created_at",
                params![component, ticket.value, ticket.created_at as i64],
            )?;
            Ok(changed > 0)
        })
    }

    fn load_verify_ticket(
        &self,
        component: String,
    ) -> BoxFuture<'_, Result<Option<VerifyTicket>, StoreError>> {
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT value, created_at FROM verify_tickets WHERE component = ?1",
                    [component],
                    |row| {
                        Ok(VerifyTicket {
                            value: row.get(0)?,
                            created_at: row.get::<_, i64>(1)? as u64,
                        })
                    },
                )
                .optional()?)
        })
    }

    fn save_authorizer(
        &self,
        component: String,
        record: AuthorizerRecord,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.run(move |conn| {
            let func_info = serde_json::to_string(&record.func_info)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            // A refresh token is the one thing that cannot be fetched again: this write
            // reaches the disk (not just the OS) before it returns, power cut or not.
            conn.pragma_update(None, "synchronous", "FULL")?;
            let changed = conn.execute(
                "INSERT INTO authorizers
                    (component, appid, refresh_token, state, func_info, authorized_at_ms, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (component, appid) DO UPDATE SET
                    refresh_token = excluded.refresh_token,
                    state = excluded.state,
                    func_info = excluded.func_info,
                    authorized_at_ms = excluded.authorized_at_ms,
                    version = excluded.version
                 WHERE excluded.version > authorizers.version",
                params![
                    component,
                    record.appid,
                    record.refresh_token,
                    record.state.as_str(),
                    func_info,
                    record.authorized_at_ms as i64,
                    record.version as i64,
                ],
            );
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            Ok(changed? > 0)
        })
    }

    fn load_authorizer(
        &self,
        component: String,
        appid: String,
    ) -> BoxFuture<'_, Result<Option<AuthorizerRecord>, StoreError>> {
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT {AUTHORIZER_COLUMNS} FROM authorizers
                         WHERE component = ?1 AND appid = ?2"
                    ),
                    [component, appid],
                    authorizer_row,
                )
                .optional()?)
        })
    }

    fn list_authorizers(
        &self,
        component: String,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<AuthorizerRecord>, StoreError>> {
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {AUTHORIZER_COLUMNS} FROM authorizers
                 WHERE component = ?1 AND appid > ?2 ORDER BY appid LIMIT ?3"
            ))?;
            let rows = stmt.query_map(
                params![component, after.unwrap_or_default(), limit as i64],
                authorizer_row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn registry_put(
        &self,
        registry: Registry,
        id: String,
        value: String,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.run(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO registry (registry, id, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (registry, id) DO UPDATE SET value = excluded.value",
                params![registry.as_str(), id, value],
            )?;
            if registry != Registry::Meta {
                tx.execute("UPDATE registry_version SET version = version + 1", [])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn registry_remove(
        &self,
        registry: Registry,
        id: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let removed = tx.execute(
                "DELETE FROM registry WHERE registry = ?1 AND id = ?2",
                params![registry.as_str(), id],
            )? > 0;
            if removed && registry != Registry::Meta {
                tx.execute("UPDATE registry_version SET version = version + 1", [])?;
            }
            tx.commit()?;
            Ok(removed)
        })
    }

    fn registry_list(
        &self,
        registry: Registry,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, value FROM registry WHERE registry = ?1 ORDER BY id")?;
            let rows = stmt.query_map([registry.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn registry_version(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.run(|conn| {
            let version: i64 =
                conn.query_row("SELECT version FROM registry_version", [], |row| row.get(0))?;
            Ok(version as u64)
        })
    }

    fn audit_append(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), StoreError>> {
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO audit (at_ms, client, action, app, result) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    entry.at_ms as i64,
                    entry.client,
                    entry.action,
                    entry.app,
                    entry.result
                ],
            )?;
            Ok(())
        })
    }

    fn audit_since(
        &self,
        since_ms: u64,
        limit: usize,
        filter: AuditFilter,
    ) -> BoxFuture<'_, Result<Vec<AuditEntry>, StoreError>> {
        self.run(move |conn| {
            // Rows are read one by one until `limit` are shown: a filter that shows few
            // entries reads further, never the whole table at once.
            let mut stmt = conn.prepare_cached(
                "SELECT at_ms, client, action, app, result FROM audit
                 WHERE at_ms >= ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![since_ms as i64], |row| {
                Ok(AuditEntry {
                    at_ms: row.get::<_, i64>(0)? as u64,
                    client: row.get(1)?,
                    action: row.get(2)?,
                    app: row.get(3)?,
                    result: row.get(4)?,
                })
            })?;
            let mut shown = Vec::new();
            for row in rows {
                if shown.len() == limit {
                    break;
                }
                let entry = row?;
                if filter.shows(&entry) {
                    shown.push(entry);
                }
            }
            Ok(shown)
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
    async fn fault_read_only_refuses_writes_with_a_clear_error_and_loses_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("t.db")).expect("open");
        let key = CredentialKey::access_token("shop");
        store
            .save(key.clone(), token("first", 1))
            .await
            .expect("save");
        store.set_read_only(true).await.expect("read-only");
        let refused = store
            .save(key.clone(), token("second", 2))
            .await
            .expect_err("read-only");
        assert!(
            refused.to_string().contains("readonly database"),
            "{refused}"
        );
        let refused = store
            .add_usage("2026-01-01".into(), "shop".into(), "token", 1)
            .await
            .expect_err("read-only");
        assert!(refused.to_string().contains("readonly"), "{refused}");
        // Reads go on.
        let held = store.load(key.clone()).await.expect("load").expect("row");
        assert_eq!((held.value.as_str(), held.generation), ("first", 1));
        store.set_read_only(false).await.expect("writable");
        assert!(
            store
                .save(key.clone(), token("second", 2))
                .await
                .expect("save")
        );
        assert_eq!(
            store
                .load(key)
                .await
                .expect("load")
                .expect("row")
                .generation,
            2
        );
    }

    /// A full disk, as SQLite sees it (`SQLITE_FULL`): the database may not grow past
    /// `max_page_count`. A real ENOSPC needs a small filesystem, which a test cannot
    /// mount; SQLite answers both with the same error.
    #[tokio::test]
    async fn fault_disk_full_refuses_new_rows_with_a_clear_error_and_loses_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("t.db")).expect("open");
        let key = CredentialKey::access_token("shop");
        store
            .save(key.clone(), token("first", 1))
            .await
            .expect("save");
        let pages = store
            .run(|conn| {
                let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
                conn.pragma_update(None, "max_page_count", pages)?;
                Ok(pages)
            })
            .await
            .expect("limit");
        // Usage rows of many days fill the last page; the next one needs a page more.
        let mut full = None;
        for day in 0..10_000 {
            let day = format!("day-{day:05}");
            if let Err(e) = store.add_usage(day, "shop".into(), "token", 1).await {
                full = Some(e);
                break;
            }
        }
        let full = full.expect("the database filled up");
        assert!(
            full.to_string().contains("database or disk is full"),
            "{full}"
        );
        let held = store.load(key.clone()).await.expect("load").expect("row");
        assert_eq!(held.generation, 1, "what was written stays readable");
        // Room again (an operator freed space): writes go on, nothing was lost.
        store
            .run(move |conn| {
                conn.pragma_update(None, "max_page_count", pages * 100)?;
                Ok(())
            })
            .await
            .expect("room");
        store
            .add_usage("day-x".into(), "shop".into(), "token", 1)
            .await
            .expect("a new row fits again");
        assert!(
            store
                .save(key.clone(), token("second", 2))
                .await
                .expect("save")
        );
        assert_eq!(
            store
                .load(key)
                .await
                .expect("load")
                .expect("row")
                .generation,
            2
        );
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
