//! Runtime administration: apps and client keys added, changed and removed while the
//! server runs, kept in the store's registry (so every instance of a fleet sees them),
//! and the audit log.
//!
//! The registry is the truth: an admin request writes it first, then applies the change
//! here; every instance also polls the registry's version (every 250 ms) and applies
//! what changed, so a change made on one instance reaches the others within a second.
//! Apps and clients from the config file are read-only here: they change with the file
//! (SIGHUP).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::config::{
    AppSettings, ClientSettings, ConfigError, Scope, app_from_json, key_digest, runtime_client,
};
use crate::credential::unix_now_ms;
use crate::keeper::Keeper;
use crate::secrets::{Sealer, app_aad};
use crate::store::{AuditEntry, AuditFilter, Registry, Store, StoreError};

/// How often the registry's version is polled for changes made elsewhere.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// The fields of an app entry that are secrets: sealed in the store, never answered.
const SECRET_FIELDS: [&str; 3] = ["secret", "token", "encoding_aes_key"];

/// Why an admin change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error(
        "{0} is defined in the config file and is read-only here; change the file and reload (SIGHUP)"
    )]
    ReadOnly(String),
    #[error("no app `{0}` is configured")]
    UnknownApp(String),
    #[error("no client `{0}`")]
    UnknownClient(String),
    #[error("a client named `{0}` exists already")]
    ClientExists(String),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
}

/// A runtime client as stored: never the key, only its sha256.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredClient {
    key_sha256: String,
    apps: Vec<String>,
    scopes: Vec<String>,
    created_at_ms: u64,
}

/// Where a client comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Config,
    Runtime,
}

/// A client as listed (never its key).
#[derive(Debug, Clone, Serialize)]
pub struct ClientView {
    pub name: String,
    pub apps: Vec<String>,
    pub scopes: Vec<&'static str>,
    pub origin: Origin,
}

/// What the config file gives (replaced on SIGHUP).
#[derive(Debug, Default)]
struct FromConfig {
    apps: HashSet<String>,
    clients: Vec<Arc<ClientSettings>>,
}

/// Runtime apps and clients, and the client list every request authenticates against.
pub struct Admin {
    keeper: Keeper,
    store: Arc<dyn Store>,
    sealer: Sealer,
    config: ArcSwap<FromConfig>,
    /// Config clients, then runtime ones: what auth reads, lock-free.
    clients: ArcSwap<Vec<Arc<ClientSettings>>>,
    /// The runtime entries applied here, as stored (to see what changed).
    applied: tokio::sync::Mutex<Applied>,
    /// The registry version last applied.
    version: Mutex<Option<u64>>,
    /// Writes the audit log, keeping what the store refuses until it takes it.
    audit_log: Arc<AuditLog>,
}

#[derive(Debug, Default)]
struct Applied {
    apps: HashMap<String, String>,
    clients: HashMap<String, String>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("clients", &self.clients.load().len())
            .finish_non_exhaustive()
    }
}

/// A runtime app entry as stored: the request's fields, secrets sealed.
fn seal_spec(sealer: &Sealer, id: &str, body: &Value) -> String {
    let mut spec = body.as_object().cloned().unwrap_or_default();
    spec.remove("id");
    for field in SECRET_FIELDS {
        if let Some(Value::String(plain)) = spec.get(field) {
            let sealed = sealer.seal(&app_aad(id, field), plain);
            spec.insert(field.to_owned(), Value::String(sealed));
        }
    }
    Value::Object(spec).to_string()
}

/// The app a stored entry describes (its secrets opened).
fn open_spec(sealer: &Sealer, id: &str, stored: &str) -> Result<AppSettings, String> {
    let mut spec: Map<String, Value> =
        serde_json::from_str(stored).map_err(|e| format!("not JSON: {e}"))?;
    for field in SECRET_FIELDS {
        if let Some(Value::String(sealed)) = spec.get(field) {
            let plain = sealer
                .open(&app_aad(id, field), sealed)
                .map_err(|e| e.to_string())?;
            spec.insert(field.to_owned(), Value::String(plain));
        }
    }
    app_from_json(id, &Value::Object(spec)).map_err(|e| e.to_string())
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => "read",
        Scope::Invalidate => "invalidate",
        Scope::Admin => "admin",
    }
}

/// The runtime apps stored in `store`, to start with the configured ones.
#[derive(Debug, Default)]
pub struct StoredApps {
    /// Their settings (secrets opened).
    pub apps: Vec<AppSettings>,
    /// The entries as stored, for [`Admin::new`].
    raw: HashMap<String, String>,
}

/// Reads the runtime apps from `store`, skipping ids `config_apps` has and entries that
/// cannot be read (logged). A sealed secret that does not open is an error: the master
/// key was checked, so the entry is damaged.
pub async fn stored_apps(
    store: &dyn Store,
    sealer: &Sealer,
    config_apps: &[AppSettings],
) -> Result<StoredApps, StoreError> {
    let mut found = StoredApps::default();
    for (id, stored) in store.registry_list(Registry::Apps).await? {
        if config_apps.iter().any(|a| a.id == id) {
            warn!(app = %id, "a runtime app has the id of a configured app; the config file's wins");
            continue;
        }
        match open_spec(sealer, &id, &stored) {
            Ok(app) => found.apps.push(app),
            Err(e) => warn!(app = %id, "a runtime app cannot be read, skipped: {e}"),
        }
        found.raw.insert(id, stored);
    }
    Ok(found)
}

impl Admin {
    /// Starts from the config's apps and clients; runtime ones are read by
    /// [`Admin::sync`].
    pub fn new(
        keeper: Keeper,
        store: Arc<dyn Store>,
        sealer: Sealer,
        config_apps: &[AppSettings],
        config_clients: Vec<ClientSettings>,
        started: StoredApps,
    ) -> Self {
        let clients: Vec<Arc<ClientSettings>> = config_clients.into_iter().map(Arc::new).collect();
        let store_for_audit = store.clone();
        Self {
            keeper,
            store,
            sealer,
            config: ArcSwap::from_pointee(FromConfig {
                apps: config_apps.iter().map(|a| a.id.clone()).collect(),
                clients: clients.clone(),
            }),
            clients: ArcSwap::from_pointee(clients),
            applied: tokio::sync::Mutex::new(Applied {
                apps: started.raw,
                clients: HashMap::new(),
            }),
            version: Mutex::new(None),
            audit_log: Arc::new(AuditLog {
                store: store_for_audit,
                backlog: Mutex::default(),
            }),
        }
    }

    /// Every client key, config ones first.
    pub fn clients(&self) -> arc_swap::Guard<Arc<Vec<Arc<ClientSettings>>>> {
        self.clients.load()
    }

    /// Whether `app` comes from the config file.
    pub fn is_config_app(&self, app: &str) -> bool {
        self.config.load().apps.contains(app)
    }

    /// Applies what changed in the registry since the last look, if its version moved.
    /// Returns whether the set of apps changed.
    pub async fn poll(&self) -> Result<bool, StoreError> {
        let version = self.store.registry_version().await?;
        let last = *self.version.lock().unwrap_or_else(|p| p.into_inner());
        if last == Some(version) {
            return Ok(false);
        }
        let changed = self.sync(false).await?;
        *self.version.lock().unwrap_or_else(|p| p.into_inner()) = Some(version);
        Ok(changed)
    }

    /// Reads the registry and applies every difference (`origin`: this instance made
    /// the change). Returns whether the set of apps changed.
    pub async fn sync(&self, origin: bool) -> Result<bool, StoreError> {
        let mut applied = self.applied.lock().await;
        let config = self.config.load_full();
        let stored_apps: HashMap<String, String> = self
            .store
            .registry_list(Registry::Apps)
            .await?
            .into_iter()
            .filter(|(id, _)| !config.apps.contains(id))
            .collect();
        let stored_clients: HashMap<String, String> = self
            .store
            .registry_list(Registry::Clients)
            .await?
            .into_iter()
            .collect();
        let mut apps_changed = false;
        for (id, stored) in &stored_apps {
            if applied.apps.get(id) == Some(stored) {
                continue;
            }
            match open_spec(&self.sealer, id, stored) {
                Ok(app) => {
                    self.keeper.put_app(app, origin).await?;
                    apps_changed = true;
                }
                Err(e) => warn!(app = %id, "a runtime app cannot be read, skipped: {e}"),
            }
            applied.apps.insert(id.clone(), stored.clone());
        }
        let gone: Vec<String> = applied
            .apps
            .keys()
            .filter(|id| !stored_apps.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            applied.apps.remove(&id);
            if !config.apps.contains(&id) {
                self.keeper.remove_app(&id, origin).await;
                apps_changed = true;
            }
        }
        if applied.clients != stored_clients {
            applied.clients = stored_clients;
            self.rebuild_clients(&config, &applied.clients);
        }
        Ok(apps_changed)
    }

    fn rebuild_clients(&self, config: &FromConfig, runtime: &HashMap<String, String>) {
        let mut all = config.clients.clone();
        let taken: HashSet<String> = all.iter().map(|c| c.name.clone()).collect();
        let mut names: Vec<&String> = runtime.keys().collect();
        names.sort();
        for name in names.into_iter().filter(|n| !taken.contains(*n)) {
            let built = serde_json::from_str::<StoredClient>(&runtime[name])
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    runtime_client(name, &c.key_sha256, c.apps, c.scopes).map_err(|e| e.to_string())
                });
            match built {
                Ok(client) => all.push(Arc::new(client)),
                Err(e) => warn!(client = %name, "a runtime client cannot be read, skipped: {e}"),
            }
        }
        self.clients.store(Arc::new(all));
    }

    /// `PUT /v1/apps/{app}`: validates, stores (secrets sealed) and starts the app.
    /// Returns whether it was created.
    pub async fn put_app(&self, id: &str, body: &Value) -> Result<bool, AdminError> {
        if self.is_config_app(id) {
            return Err(AdminError::ReadOnly(format!("app `{id}`")));
        }
        if !body.is_object() {
            return Err(AdminError::Invalid(ConfigError::Invalid {
                key: "body".into(),
                message: "must be a JSON object with the fields of an [[apps]] entry".into(),
            }));
        }
        app_from_json(id, body)?;
        let existed = self.keeper.has_app(id);
        self.store
            .registry_put(
                Registry::Apps,
                id.to_owned(),
                seal_spec(&self.sealer, id, body),
            )
            .await?;
        self.sync(true).await?;
        Ok(!existed)
    }

    /// `DELETE /v1/apps/{app}`.
    pub async fn remove_app(&self, id: &str) -> Result<(), AdminError> {
        if self.is_config_app(id) {
            return Err(AdminError::ReadOnly(format!("app `{id}`")));
        }
        if !self
            .store
            .registry_remove(Registry::Apps, id.to_owned())
            .await?
        {
            return Err(AdminError::UnknownApp(id.to_owned()));
        }
        self.sync(true).await?;
        Ok(())
    }

    /// `POST /v1/clients`: a new client with a new random key, returned once.
    pub async fn add_client(
        &self,
        name: &str,
        apps: Vec<String>,
        scopes: Vec<String>,
    ) -> Result<String, AdminError> {
        let key = new_client_key();
        let digest = hex::encode(key_digest(&key));
        runtime_client(name, &digest, apps.clone(), scopes.clone())?;
        let exists = self.clients.load().iter().any(|c| c.name == name)
            || self
                .store
                .registry_list(Registry::Clients)
                .await?
                .iter()
                .any(|(n, _)| n == name);
        if exists {
            return Err(AdminError::ClientExists(name.to_owned()));
        }
        let stored = StoredClient {
            key_sha256: digest,
            apps,
            scopes,
            created_at_ms: unix_now_ms(),
        };
        let stored =
            serde_json::to_string(&stored).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.store
            .registry_put(Registry::Clients, name.to_owned(), stored)
            .await?;
        self.sync(true).await?;
        Ok(key)
    }

    /// `DELETE /v1/clients/{name}`: the key stops working on every instance.
    pub async fn revoke_client(&self, name: &str) -> Result<(), AdminError> {
        if self.config.load().clients.iter().any(|c| c.name == name) {
            return Err(AdminError::ReadOnly(format!("client `{name}`")));
        }
        if !self
            .store
            .registry_remove(Registry::Clients, name.to_owned())
            .await?
        {
            return Err(AdminError::UnknownClient(name.to_owned()));
        }
        self.sync(true).await?;
        Ok(())
    }

    /// Every client, never a key.
    pub fn list_clients(&self) -> Vec<ClientView> {
        let config = self.config.load();
        self.clients
            .load()
            .iter()
            .map(|c| ClientView {
                name: c.name.clone(),
                apps: match &c.apps {
                    crate::config::AppGrant::All => vec!["*".to_owned()],
                    crate::config::AppGrant::Only(apps) => apps.clone(),
                },
                scopes: c.scopes.iter().map(|s| scope_name(*s)).collect(),
                origin: if config.clients.iter().any(|k| k.name == c.name) {
                    Origin::Config
                } else {
                    Origin::Runtime
                },
            })
            .collect()
    }

    /// Applies a reloaded config file's apps and clients: apps it no longer has stop,
    /// new or changed ones start, the client list is rebuilt. Returns a summary.
    pub async fn reload(
        &self,
        apps: &[AppSettings],
        clients: Vec<ClientSettings>,
    ) -> Result<String, StoreError> {
        let mut applied = self.applied.lock().await;
        let old = self.config.load_full();
        let new_ids: HashSet<String> = apps.iter().map(|a| a.id.clone()).collect();
        let (mut added, mut changed, mut removed) = (0, 0, 0);
        for id in old.apps.difference(&new_ids) {
            self.keeper.remove_app(id, true).await;
            removed += 1;
        }
        for app in apps {
            let same = self
                .keeper
                .app(&app.id)
                .is_some_and(|current| same_app(&current, app));
            if same && old.apps.contains(&app.id) {
                continue;
            }
            if old.apps.contains(&app.id) {
                changed += 1;
            } else {
                added += 1;
            }
            self.keeper.put_app(app.clone(), true).await?;
        }
        let config = FromConfig {
            apps: new_ids,
            clients: clients.into_iter().map(Arc::new).collect(),
        };
        self.rebuild_clients(&config, &applied.clients);
        // A runtime app the file now shadows was replaced above; one the file no longer
        // shadows is picked up by the next sync.
        applied.apps.retain(|id, _| !config.apps.contains(id));
        self.config.store(Arc::new(config));
        drop(applied);
        *self.version.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let summary = format!("apps: {added} added, {changed} changed, {removed} removed");
        info!("config reloaded: {summary}");
        Ok(summary)
    }

    /// Appends to the audit log; a store failure is logged, never the caller's.
    pub async fn audit(&self, client: &str, action: &str, app: Option<&str>, result: &str) {
        self.audit_log
            .write(audit_entry(client, action, app, result))
            .await;
    }

    /// As [`Admin::audit`], in the background (for routes on the serving path).
    pub fn audit_later(&self, client: &str, action: &str, app: Option<&str>, result: &str) {
        let log = self.audit_log.clone();
        let entry = audit_entry(client, action, app, result);
        tokio::spawn(async move { log.write(entry).await });
    }

    /// Audit entries the store refused and that wait to be written again.
    pub fn audit_backlog(&self) -> usize {
        self.audit_log.backlog().entries.len()
    }

    /// Audits an invalidation's outcome (in the background): `refreshed`, `current`
    /// (the reported value was not the current one) or the error.
    pub fn audit_invalidation<T, E: std::fmt::Display>(
        &self,
        client: &str,
        action: &str,
        app: &str,
        outcome: &Result<(T, bool), E>,
    ) {
        let result = match outcome {
            Ok((_, true)) => "refreshed".to_owned(),
            Ok((_, false)) => "current".to_owned(),
            Err(e) => e.to_string(),
        };
        self.audit_later(client, action, Some(app), &result);
    }

    /// The audit log from `since_ms` that `filter` shows, oldest first.
    pub async fn audit_since(
        &self,
        since_ms: u64,
        limit: usize,
        filter: AuditFilter,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.store.audit_since(since_ms, limit, filter).await
    }
}

fn audit_entry(client: &str, action: &str, app: Option<&str>, result: &str) -> AuditEntry {
    AuditEntry {
        at_ms: unix_now_ms(),
        client: client.to_owned(),
        action: action.to_owned(),
        app: app.map(str::to_owned),
        result: result.to_owned(),
    }
}

/// How often audit entries the store refused are tried again.
const AUDIT_RETRY_EVERY: Duration = Duration::from_secs(2);
/// The most refused audit entries kept in memory; beyond it the oldest are dropped.
pub const MAX_AUDIT_BACKLOG: usize = 10_000;
/// Audit entries dropped because the store refused them for too long.
pub const AUDIT_DROPPED_TOTAL: &str = "wxtoken_audit_entries_dropped_total";

/// The audit log's writer. An entry the store refuses (Redis down, a read-only or full
/// SQLite file) is kept and written again every [`AUDIT_RETRY_EVERY`] with its own time,
/// and entries made meanwhile queue behind it, so the log keeps its order and loses
/// nothing unless more than [`MAX_AUDIT_BACKLOG`] wait (or the process stops first).
struct AuditLog {
    store: Arc<dyn Store>,
    backlog: Mutex<AuditBacklog>,
}

#[derive(Default)]
struct AuditBacklog {
    /// Oldest first, each with its number (so the retry removes only what it wrote).
    entries: std::collections::VecDeque<(u64, AuditEntry)>,
    next: u64,
    /// Whether the retry task runs.
    retrying: bool,
}

impl AuditLog {
    fn backlog(&self) -> std::sync::MutexGuard<'_, AuditBacklog> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn write(self: &Arc<Self>, entry: AuditEntry) {
        if !self.backlog().entries.is_empty() {
            self.keep(entry);
            return;
        }
        if let Err(e) = self.store.audit_append(entry.clone()).await {
            warn!(action = %entry.action, error = %e, "could not write the audit log; keeping the entry and trying again every 2 s");
            self.keep(entry);
        }
    }

    /// Queues `entry` and starts the retry task if it is not running.
    fn keep(self: &Arc<Self>, entry: AuditEntry) {
        let mut backlog = self.backlog();
        if backlog.entries.len() >= MAX_AUDIT_BACKLOG {
            if let Some((_, dropped)) = backlog.entries.pop_front() {
                warn!(action = %dropped.action, at_ms = dropped.at_ms, "the store has refused the audit log for too long; dropping its oldest waiting entry");
                metrics::counter!(AUDIT_DROPPED_TOTAL).increment(1);
            }
        }
        let number = backlog.next;
        backlog.next += 1;
        backlog.entries.push_back((number, entry));
        if !backlog.retrying {
            backlog.retrying = true;
            tokio::spawn(self.clone().retry());
        }
    }

    /// Writes the waiting entries in order until none is left.
    async fn retry(self: Arc<Self>) {
        let mut written = 0usize;
        loop {
            tokio::time::sleep(AUDIT_RETRY_EVERY).await;
            loop {
                let front = self.backlog().entries.front().cloned();
                let Some((number, entry)) = front else {
                    let mut backlog = self.backlog();
                    if backlog.entries.is_empty() {
                        backlog.retrying = false;
                        info!(
                            written,
                            "the store takes the audit log again; wrote the entries it had refused"
                        );
                        return;
                    }
                    continue;
                };
                if self.store.audit_append(entry).await.is_err() {
                    break;
                }
                written += 1;
                let mut backlog = self.backlog();
                if backlog.entries.front().is_some_and(|(n, _)| *n == number) {
                    backlog.entries.pop_front();
                }
            }
        }
    }
}

/// Whether two settings of an app are the same (secrets compared too).
fn same_app(a: &AppSettings, b: &AppSettings) -> bool {
    use secrecy::ExposeSecret;
    a.kind == b.kind
        && a.appid == b.appid
        && a.secret.expose_secret() == b.secret.expose_secret()
        && match (&a.message, &b.message) {
            (None, None) => true,
            (Some(x), Some(y)) => {
                x.token.expose_secret() == y.token.expose_secret()
                    && x.encoding_aes_key.expose_secret() == y.encoding_aes_key.expose_secret()
            }
            _ => false,
        }
}

/// A new client key: `wxt_` and 64 hex characters.
pub fn new_client_key() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    format!("wxt_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn log_on(store: Arc<SqliteStore>) -> Arc<AuditLog> {
        Arc::new(AuditLog {
            store,
            backlog: Mutex::default(),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_audit_entries_are_written_later_in_order_with_their_own_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqliteStore::open(&dir.path().join("a.db")).expect("store"));
        let log = log_on(store.clone());
        store.set_read_only(true).await.expect("read-only");
        let made: Vec<AuditEntry> = ["first", "second", "third"]
            .iter()
            .map(|action| audit_entry("ops", action, Some("shop"), "ok"))
            .collect();
        for entry in &made {
            log.write(entry.clone()).await;
        }
        assert_eq!(log.backlog().entries.len(), 3);
        assert!(
            store
                .audit_since(0, 10, AuditFilter::All)
                .await
                .expect("read")
                .is_empty()
        );

        store.set_read_only(false).await.expect("writable");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !log.backlog().entries.is_empty() || log.backlog().retrying {
            assert!(std::time::Instant::now() < deadline, "never written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let written = store
            .audit_since(0, 10, AuditFilter::All)
            .await
            .expect("read");
        let seen: Vec<(&str, u64)> = written
            .iter()
            .map(|e| (e.action.as_str(), e.at_ms))
            .collect();
        let expected: Vec<(&str, u64)> =
            made.iter().map(|e| (e.action.as_str(), e.at_ms)).collect();
        assert_eq!(seen, expected);
        // The store takes entries again: the next one is written at once.
        log.write(audit_entry("ops", "fourth", None, "ok")).await;
        assert_eq!(
            store
                .audit_since(0, 10, AuditFilter::All)
                .await
                .expect("read")
                .len(),
            4
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_the_backlog_limit_waits_and_the_oldest_go_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqliteStore::open(&dir.path().join("a.db")).expect("store"));
        let log = log_on(store.clone());
        store.set_read_only(true).await.expect("read-only");
        for n in 0..=MAX_AUDIT_BACKLOG {
            log.write(audit_entry("ops", &format!("action-{n}"), None, "ok"))
                .await;
        }
        let backlog = log.backlog();
        assert_eq!(backlog.entries.len(), MAX_AUDIT_BACKLOG);
        assert_eq!(
            backlog.entries.front().map(|(_, e)| e.action.as_str()),
            Some("action-1"),
            "the oldest was dropped"
        );
        assert_eq!(
            backlog.entries.back().map(|(_, e)| e.action.clone()),
            Some(format!("action-{MAX_AUDIT_BACKLOG}"))
        );
    }
}
