//! The shared store for several instances: Redis (or a Redis Cluster).
//!
//! Cluster-safe by design: every key of an app carries the hash tag `{app}`
//! (`wxtoken:{shop}:access_token`, `...:access_token:lease`, `...:usage:2026-11-25`), so a
//! credential's value and its lease live in one slot, and no command or script touches
//! keys of two apps. Writes are compare-and-set on generation in one Lua script that also
//! announces the new generation on the `wxtoken:updates` channel; instances keep local
//! copies and learn of new values from that channel (and from a periodic comparison the
//! keeper runs as a safety net). Every operation has a short timeout, so a Redis outage
//! never stalls a refresh for long, and serving never touches Redis at all.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Cmd, Pipeline, RedisFuture, Script, Value};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{
    AuditEntry, AuditFilter, AuthorizerRecord, AuthorizerState, Coordination, Registry, Saved,
    Store, StoreError, Update, UsageRow, VerifyTicket,
};
use crate::credential::{CredentialKey, CredentialKind, Token};

/// The pub/sub channel new generations are announced on (not a key: no slot).
pub const UPDATES_CHANNEL: &str = "wxtoken:updates";
/// Per-day usage counters are kept this long, for status and for a look back.
const USAGE_TTL_SECS: i64 = super::USAGE_KEEP_DAYS as i64 * 86_400;
/// A stored value is dropped this long after it expires (removed apps clean themselves).
const VALUE_GRACE_MS: u64 = 86_400_000;
/// The subscriber retries a lost connection after this, doubling up to `RESUBSCRIBE_MAX`.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);

/// Writes unless a newer value is stored (higher generation, or the same generation with
/// another value), sets the value's expiry, and announces it. Fenced: with a lease key
/// (KEYS[2]) and owner (ARGV[9]), writes only while that owner holds the lease (-1).
const SAVE_LUA: &str = r#"
if KEYS[2] and redis.call('GET', KEYS[2]) ~= ARGV[9] then
  return -1
end
local gen = tonumber(ARGV[5])
local cur = redis.call('HMGET', KEYS[1], 'generation', 'value')
if cur[1] then
  local stored = tonumber(cur[1])
  if stored > gen or (stored == gen and cur[2] ~= ARGV[1]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'expires_at_ms', ARGV[2],
  'fetched_at_ms', ARGV[3], 'lifetime_secs', ARGV[4], 'generation', ARGV[5])
redis.call('PEXPIREAT', KEYS[1], ARGV[6])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return 1
"#;

/// Extends a lease only for its owner.
const RENEW_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Deletes a lease only for its owner.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// A sliding-window budget on one sorted set: drops uses older than the window, refuses
/// if `limit` remain, else records this use (a unique member at time `now`).
const BUDGET_LUA: &str = r#"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
return 1
"#;

/// Adds to one usage counter and keeps it `USAGE_TTL_SECS` (one key: one slot).
const USAGE_LUA: &str = r#"
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// Keeps the newer verify ticket (by WeChat's CreateTime) and announces it, so that an
/// instance waiting for one fetches its component token at once.
const TICKET_LUA: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'created_at')
if cur and tonumber(cur) > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'created_at', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"#;

/// Writes an authorizer's record (`version|json` in the component's hash) unless one of
/// the same or a higher version is stored, indexes its appid for paging, and announces
/// it.
const AUTHORIZER_LUA: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local v = tonumber(string.match(cur, '^(%d+)|'))
  if v and v >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"#;

/// Writes one registry entry and, for apps and clients, bumps the registry version
/// (both keys share the `{registry}` hash tag).
const REGISTRY_PUT_LUA: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('INCR', KEYS[2])
end
return 1
"#;

/// Removes one registry entry, bumping the version if it was there.
const REGISTRY_REMOVE_LUA: &str = r#"
local n = redis.call('HDEL', KEYS[1], ARGV[1])
if n > 0 and ARGV[2] == '1' then
  redis.call('INCR', KEYS[2])
end
return n
"#;

/// The registry's hash and the version key, in one slot.
fn registry_keys(registry: Registry) -> (String, String) {
    (
        format!("wxtoken:{{registry}}:{}", registry.as_str()),
        "wxtoken:{registry}:version".to_owned(),
    )
}

/// The audit log: a stream whose ids are the entries' times.
const AUDIT_KEY: &str = "wxtoken:{audit}:log";

/// An authorizer's record as stored (its appid is the hash field, its version the
/// prefix).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAuthorizer {
    refresh_token: String,
    state: String,
    func_info: Vec<u64>,
    authorized_at_ms: u64,
}

fn encode_authorizer(record: &AuthorizerRecord) -> Result<String, StoreError> {
    serde_json::to_string(&StoredAuthorizer {
        refresh_token: record.refresh_token.clone(),
        state: record.state.as_str().to_owned(),
        func_info: record.func_info.clone(),
        authorized_at_ms: record.authorized_at_ms,
    })
    .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode_authorizer(appid: String, stored: &str) -> Result<AuthorizerRecord, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("the stored record of authorizer {appid}"));
    let (version, json) = stored.split_once('|').ok_or_else(corrupt)?;
    let version = version.parse().map_err(|_| corrupt())?;
    let record: StoredAuthorizer = serde_json::from_str(json).map_err(|_| corrupt())?;
    Ok(AuthorizerRecord {
        refresh_token: record.refresh_token,
        state: AuthorizerState::parse(&record.state).ok_or_else(corrupt)?,
        func_info: record.func_info,
        authorized_at_ms: record.authorized_at_ms,
        version,
        appid,
    })
}

/// How many loads `load_many` keeps in flight on the multiplexed connection.
const LOAD_CONCURRENCY: usize = 128;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://` or `rediss://` (TLS, rustls with the webpki roots).
    pub url: String,
    /// A Redis Cluster: `url` is one seed node, `seeds` any others.
    pub cluster: bool,
    /// More seed nodes of a cluster (from a comma-separated `store.url`).
    pub seeds: Vec<String>,
    /// Every operation gives up after this; the keeper then serves from memory.
    pub op_timeout: Duration,
    /// A private CA (PEM) to trust for `rediss://`, besides the public roots.
    pub tls_ca_pem: Option<Vec<u8>>,
}

/// One connection to a single Redis, or to a whole Redis Cluster (commands routed by
/// their key's slot, following failovers).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A Redis-backed store shared by several instances.
pub struct RedisStore {
    conn: Conn,
    op_timeout: Duration,
    updates: broadcast::Sender<Update>,
    warnings: Vec<String>,
    save: Script,
    renew: Script,
    release: Script,
    budget: Script,
    usage: Script,
    ticket: Script,
    authorizer: Script,
    /// The pub/sub task; stopped when the store is dropped.
    subscriber: JoinHandle<()>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

fn value_key(key: &CredentialKey) -> String {
    format!("wxtoken:{{{}}}:{}", key.scope(), key.kind.as_str())
}

fn verify_ticket_key(component: &str) -> String {
    format!("wxtoken:{{{component}}}:verify_ticket")
}

/// A component's authorizer records: one hash, its appids indexed in a sorted set for
/// paging, both under the component's hash tag.
fn authorizer_keys(component: &str) -> (String, String) {
    (
        format!("wxtoken:{{{component}}}:authorizers"),
        format!("wxtoken:{{{component}}}:authorizer_ids"),
    )
}

/// A fleet-wide budget of `scope` (an app id, or `corp:ID`): its own hash tag.
fn budget_key(scope: &str, name: &str) -> String {
    format!("wxtoken:{{{scope}}}:budget:{name}")
}

fn lease_key(key: &CredentialKey) -> String {
    format!("{}:lease", value_key(key))
}

fn usage_key(app: &str, day: &str) -> String {
    format!("wxtoken:{{{app}}}:usage:{day}")
}

impl RedisStore {
    /// Connects (Redis must answer at start), checks its persistence settings and starts
    /// listening for announcements.
    pub async fn connect(options: RedisOptions) -> Result<Self, StoreError> {
        if options.cluster {
            return Self::connect_cluster(options).await;
        }
        let client = match options.tls_ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                options.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )?,
            None => redis::Client::open(options.url.as_str())?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(options.op_timeout)
            .set_response_timeout(options.op_timeout)
            .set_number_of_retries(1);
        let manager = within(
            options.op_timeout * 3,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await;
        let conn = match manager {
            Ok(conn) => conn,
            // The manager retries quietly; one plain attempt says why (refused, TLS...).
            Err(StoreError::Timeout(limit)) => {
                within(limit, client.get_multiplexed_async_connection()).await?;
                return Err(StoreError::Timeout(limit));
            }
            Err(e) => return Err(e),
        };
        Self::finish(Conn::Single(conn), vec![client], options.op_timeout).await
    }

    /// A Redis Cluster: commands go to the node that owns their key's slot (every key of
    /// an app shares one), and announcements are heard on any one node, since a
    /// cluster passes every PUBLISH to all its nodes.
    async fn connect_cluster(options: RedisOptions) -> Result<Self, StoreError> {
        let mut seeds: Vec<String> = std::iter::once(options.url.clone())
            .chain(options.seeds.iter().cloned())
            .collect();
        let build = |seeds: &[String]| {
            ClusterClient::builder(seeds.to_vec())
                .connection_timeout(options.op_timeout)
                .response_timeout(options.op_timeout)
                .retries(2)
                .build()
        };
        let mut conn = within(
            options.op_timeout * 3,
            build(&seeds)?.get_async_connection(),
        )
        .await?;
        // The client reconnects from its seed nodes when it has lost them all (as in a
        // failover): seed it with every node the cluster has, not just the one given.
        let scheme = if options.url.starts_with("rediss://") {
            "rediss"
        } else {
            "redis"
        };
        if let Ok(listing) = within(
            options.op_timeout,
            redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async::<String>(&mut conn),
        )
        .await
        {
            for addr in parse_cluster_nodes(&listing) {
                let url = format!("{scheme}://{addr}");
                if !seeds.contains(&url) {
                    seeds.push(url);
                }
            }
            conn = within(
                options.op_timeout * 3,
                build(&seeds)?.get_async_connection(),
            )
            .await?;
        }
        info!(nodes = seeds.len(), "connected to the Redis Cluster");
        let listeners = seeds
            .iter()
            .map(|url| redis::Client::open(url.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::finish(Conn::Cluster(conn), listeners, options.op_timeout).await
    }

    /// Checks that Redis answers, reads its persistence settings and starts listening
    /// for announcements on the first of `listeners` that answers.
    async fn finish(
        conn: Conn,
        listeners: Vec<redis::Client>,
        op_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let (updates, _) = broadcast::channel(1024);
        let mut store = Self {
            conn: conn.clone(),
            op_timeout,
            updates: updates.clone(),
            warnings: Vec::new(),
            save: Script::new(SAVE_LUA),
            renew: Script::new(RENEW_LUA),
            release: Script::new(RELEASE_LUA),
            budget: Script::new(BUDGET_LUA),
            usage: Script::new(USAGE_LUA),
            ticket: Script::new(TICKET_LUA),
            authorizer: Script::new(AUTHORIZER_LUA),
            subscriber: tokio::spawn(subscribe(
                listeners,
                matches!(conn, Conn::Cluster(_)).then(|| conn.clone()),
                updates,
            )),
        };
        store.ping_now().await?;
        store.warnings = store.persistence_warnings().await;
        for warning in &store.warnings {
            warn!("{warning}");
        }
        Ok(store)
    }

    async fn ping_now(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        within(self.op_timeout, async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .map(|_| ())
    }

    /// A Redis that keeps nothing on disk loses every stored token on its own restart.
    async fn persistence_warnings(&self) -> Vec<String> {
        let mut conn = self.conn.clone();
        let config = within(self.op_timeout, async move {
            let aof: HashMap<String, String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("appendonly")
                .query_async(&mut conn)
                .await?;
            let save: HashMap<String, String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("save")
                .query_async(&mut conn)
                .await?;
            Ok((aof, save))
        })
        .await;
        match config {
            Ok((aof, save)) => {
                let aof_off = aof.get("appendonly").is_some_and(|v| v == "no");
                let no_saves = save.get("save").is_some_and(|v| v.trim().is_empty());
                if aof_off && no_saves {
                    vec![
                        "Redis keeps nothing on disk (appendonly no and no save points): \
                         a Redis restart loses the stored tokens, tickets and counters, and \
                         every instance then repopulates it from memory"
                            .to_owned(),
                    ]
                } else {
                    Vec::new()
                }
            }
            // Managed Redis often disables CONFIG; then we cannot tell.
            Err(e) => {
                debug!(error = %e, "could not read Redis persistence settings");
                Vec::new()
            }
        }
    }
}

/// Runs `fut` with a timeout, turning both failures into a [`StoreError`].
async fn within<T>(
    limit: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::Timeout(limit)),
    }
}

/// Listens on the updates channel, reconnecting with backoff; after every (re)subscribe
/// it asks the keeper to compare everything, since announcements may have been missed.
async fn subscribe(
    mut listeners: Vec<redis::Client>,
    cluster: Option<Conn>,
    updates: broadcast::Sender<Update>,
) {
    let mut delay = RESUBSCRIBE_MIN;
    let mut next = 0;
    loop {
        let client = &listeners[next % listeners.len()];
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(UPDATES_CHANNEL).await {
                Ok(()) => {
                    delay = RESUBSCRIBE_MIN;
                    debug!("subscribed to {UPDATES_CHANNEL}");
                    let _ = updates.send(Update::Resync);
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        match message
                            .get_payload::<String>()
                            .ok()
                            .and_then(|p| parse_update(&p))
                        {
                            Some(update) => {
                                let _ = updates.send(update);
                            }
                            None => debug!("ignoring a malformed update announcement"),
                        }
                    }
                    warn!("lost the Redis updates subscription; reconnecting");
                }
                Err(e) => debug!(error = %e, "could not subscribe to {UPDATES_CHANNEL}"),
            },
            Err(e) => debug!(error = %e, "could not connect to Redis for updates"),
        }
        // A cluster node that died may not come back: listen on another one, learning
        // the cluster's current nodes once the known ones have all been tried.
        next += 1;
        if let (Some(conn), true) = (&cluster, next % listeners.len() == 0) {
            if let Some(found) = cluster_nodes(conn.clone()).await {
                listeners = found;
                next = 0;
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RESUBSCRIBE_MAX);
    }
}

/// The nodes a cluster says are alive (`CLUSTER NODES`), as clients.
async fn cluster_nodes(mut conn: Conn) -> Option<Vec<redis::Client>> {
    let listing: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .ok()?;
    let nodes: Vec<redis::Client> = parse_cluster_nodes(&listing)
        .into_iter()
        .filter_map(|addr| redis::Client::open(format!("redis://{addr}")).ok())
        .collect();
    (!nodes.is_empty()).then_some(nodes)
}

/// `ip:port` of every node `CLUSTER NODES` lists as neither failed nor without an
/// address.
fn parse_cluster_nodes(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let addr = fields.nth(1)?;
            let flags = fields.next()?;
            let addr = addr.split('@').next()?;
            let failed = flags.split(',').any(|f| f == "fail" || f == "noaddr");
            (!failed && !addr.starts_with(':')).then(|| addr.to_owned())
        })
        .collect()
}

fn announcement(key: &CredentialKey, token: &Token) -> String {
    format!("{} {} {}", key.scope(), key.kind.as_str(), token.generation)
}

/// Announces a changed authorizer record (app ids never start with `+`).
fn authorizer_announcement(component: &str, appid: &str) -> String {
    format!("+authorizer {component} {appid}")
}

fn parse_update(payload: &str) -> Option<Update> {
    let mut parts = payload.split(' ');
    let scope = parts.next()?;
    if scope == "+ticket" {
        return Some(Update::VerifyTicket(parts.next()?.to_owned()));
    }
    if scope == "+authorizer" {
        let component = parts.next()?.to_owned();
        let appid = parts.next()?.to_owned();
        return Some(Update::Authorizer(component, appid));
    }
    let kind = CredentialKind::parse(parts.next()?)?;
    let generation = parts.next()?.parse().ok()?;
    Some(Update::Stored(
        CredentialKey::from_scope(scope, kind),
        generation,
    ))
}

fn parse_token(fields: HashMap<String, String>) -> Result<Option<Token>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let number = |name: &str| {
        fields
            .get(name)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                StoreError::Corrupt(format!("stored field `{name}` is missing or not a number"))
            })
    };
    Ok(Some(Token {
        value: fields
            .get("value")
            .cloned()
            .ok_or_else(|| StoreError::Corrupt("stored field `value` is missing".into()))?,
        expires_at_ms: number("expires_at_ms")?,
        fetched_at_ms: number("fetched_at_ms")?,
        lifetime_secs: number("lifetime_secs")?,
        generation: number("generation")?,
    }))
}

impl RedisStore {
    /// One write by the save script, fenced by `owner`'s lease if given.
    async fn save_as(
        &self,
        key: CredentialKey,
        token: Token,
        owner: Option<&str>,
    ) -> Result<Saved, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.save.key(value_key(&key));
        if owner.is_some() {
            invocation.key(lease_key(&key));
        }
        invocation
            .arg(&token.value)
            .arg(token.expires_at_ms)
            .arg(token.fetched_at_ms)
            .arg(token.lifetime_secs)
            .arg(token.generation)
            .arg(token.expires_at_ms + VALUE_GRACE_MS)
            .arg(UPDATES_CHANNEL)
            .arg(announcement(&key, &token))
            .arg(owner.unwrap_or_default());
        let written: i64 = within(self.op_timeout, invocation.invoke_async(&mut conn)).await?;
        Ok(match written {
            1 => Saved::Written,
            -1 => Saved::LeaseLost,
            _ => Saved::Newer,
        })
    }
}

impl Store for RedisStore {
    fn load(&self, key: CredentialKey) -> BoxFuture<'_, Result<Option<Token>, StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            let fields: HashMap<String, String> =
                within(self.op_timeout, conn.hgetall(value_key(&key))).await?;
            parse_token(fields)
        }
        .boxed()
    }

    fn save(&self, key: CredentialKey, token: Token) -> BoxFuture<'_, Result<bool, StoreError>> {
        async move { Ok(self.save_as(key, token, None).await? == Saved::Written) }.boxed()
    }

    fn add_usage(
        &self,
        day: String,
        app: String,
        api: &'static str,
        n: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            // One script on one key: atomic, and routable on a cluster.
            let mut invocation = self.usage.key(usage_key(&app, &day));
            invocation.arg(api).arg(n).arg(USAGE_TTL_SECS);
            within(self.op_timeout, invocation.invoke_async::<i64>(&mut conn)).await?;
            Ok(())
        }
        .boxed()
    }

    fn usage(&self, day: String, app: String) -> BoxFuture<'_, Result<Vec<UsageRow>, StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            let fields: HashMap<String, u64> =
                within(self.op_timeout, conn.hgetall(usage_key(&app, &day))).await?;
            Ok(fields
                .into_iter()
                .map(|(api, calls)| UsageRow {
                    app: app.clone(),
                    api,
                    calls,
                })
                .collect())
        }
        .boxed()
    }

    fn load_many(
        &self,
        keys: Vec<CredentialKey>,
    ) -> BoxFuture<'_, Result<Vec<Option<Token>>, StoreError>> {
        async move {
            // Many loads in flight on the multiplexed connection (pipelined in effect),
            // each routed by its own key on a cluster.
            futures::stream::iter(keys)
                .map(|key| self.load(key))
                .buffered(LOAD_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect()
        }
        .boxed()
    }

    fn save_verify_ticket(
        &self,
        component: String,
        ticket: VerifyTicket,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            let mut invocation = self.ticket.key(verify_ticket_key(&component));
            invocation
                .arg(&ticket.value)
                .arg(ticket.created_at)
                .arg(UPDATES_CHANNEL)
                .arg(format!("+ticket {component}"));
            let written: i64 = within(self.op_timeout, invocation.invoke_async(&mut conn)).await?;
            Ok(written == 1)
        }
        .boxed()
    }

    fn load_verify_ticket(
        &self,
        component: String,
    ) -> BoxFuture<'_, Result<Option<VerifyTicket>, StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            let fields: HashMap<String, String> =
                within(self.op_timeout, conn.hgetall(verify_ticket_key(&component))).await?;
            let (Some(value), Some(created_at)) = (fields.get("value"), fields.get("created_at"))
            else {
                return Ok(None);
            };
            let created_at = created_at
                .parse()
                .map_err(|_| StoreError::Corrupt("the stored verify ticket's created_at".into()))?;
            Ok(Some(VerifyTicket {
                value: value.clone(),
                created_at,
            }))
        }
        .boxed()
    }

    fn save_authorizer(
        &self,
        component: String,
        record: AuthorizerRecord,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            let (records, ids) = authorizer_keys(&component);
            let mut invocation = self.authorizer.key(records);
            invocation
                .key(ids)
                .arg(&record.appid)
                .arg(record.version)
                .arg(encode_authorizer(&record)?)
                .arg(UPDATES_CHANNEL)
                .arg(authorizer_announcement(&component, &record.appid));
            let written: i64 = within(self.op_timeout, invocation.invoke_async(&mut conn)).await?;
            Ok(written == 1)
        }
        .boxed()
    }

    fn load_authorizer(
        &self,
        component: String,
        appid: String,
    ) -> BoxFuture<'_, Result<Option<AuthorizerRecord>, StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            let (records, _) = authorizer_keys(&component);
            let stored: Option<String> =
                within(self.op_timeout, conn.hget(records, &appid)).await?;
            stored.map(|s| decode_authorizer(appid, &s)).transpose()
        }
        .boxed()
    }

    fn list_authorizers(
        &self,
        component: String,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<AuthorizerRecord>, StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            let (records, ids) = authorizer_keys(&component);
            let min = match &after {
                Some(after) => format!("({after}"),
                None => "-".to_owned(),
            };
            let appids: Vec<String> = within(
                self.op_timeout,
                redis::cmd("ZRANGEBYLEX")
                    .arg(&ids)
                    .arg(min)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut conn),
            )
            .await?;
            if appids.is_empty() {
                return Ok(Vec::new());
            }
            let stored: Vec<Option<String>> = within(
                self.op_timeout,
                redis::cmd("HMGET")
                    .arg(records)
                    .arg(&appids)
                    .query_async(&mut conn),
            )
            .await?;
            appids
                .into_iter()
                .zip(stored)
                .filter_map(|(appid, s)| s.map(|s| decode_authorizer(appid, &s)))
                .collect()
        }
        .boxed()
    }

    fn registry_put(
        &self,
        registry: Registry,
        id: String,
        value: String,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            let (hash, version) = registry_keys(registry);
            let script = Script::new(REGISTRY_PUT_LUA);
            let mut invocation = script.key(hash);
            invocation
                .key(version)
                .arg(id)
                .arg(value)
                .arg(if registry == Registry::Meta { "0" } else { "1" });
            let _: i64 = within(self.op_timeout, invocation.invoke_async(&mut conn)).await?;
            Ok(())
        }
        .boxed()
    }

    fn registry_remove(
        &self,
        registry: Registry,
        id: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            let (hash, version) = registry_keys(registry);
            let script = Script::new(REGISTRY_REMOVE_LUA);
            let mut invocation = script.key(hash);
            invocation
                .key(version)
                .arg(id)
                .arg(if registry == Registry::Meta { "0" } else { "1" });
            let removed: i64 = within(self.op_timeout, invocation.invoke_async(&mut conn)).await?;
            Ok(removed > 0)
        }
        .boxed()
    }

    fn registry_list(
        &self,
        registry: Registry,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            let (hash, _) = registry_keys(registry);
            let all: HashMap<String, String> = within(self.op_timeout, conn.hgetall(hash)).await?;
            let mut all: Vec<(String, String)> = all.into_iter().collect();
            all.sort();
            Ok(all)
        }
        .boxed()
    }

    fn registry_version(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            let (_, version) = registry_keys(Registry::Apps);
            let version: Option<u64> = within(self.op_timeout, conn.get(version)).await?;
            Ok(version.unwrap_or(0))
        }
        .boxed()
    }

    fn audit_append(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            let json =
                serde_json::to_string(&entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let keep_from = entry
                .at_ms
                .saturating_sub(super::AUDIT_KEEP_DAYS * 86_400_000);
            let _: String = within(
                self.op_timeout,
                redis::cmd("XADD")
                    .arg(AUDIT_KEY)
                    .arg("MINID")
                    .arg("~")
                    .arg(keep_from)
                    .arg("*")
                    .arg("entry")
                    .arg(json)
                    .query_async(&mut conn),
            )
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn audit_since(
        &self,
        since_ms: u64,
        limit: usize,
        filter: AuditFilter,
    ) -> BoxFuture<'_, Result<Vec<AuditEntry>, StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            // Pages of the stream from `since_ms` on, each after the last id read, until
            // `limit` entries are shown or the stream ends.
            let mut start = since_ms.to_string();
            let mut shown = Vec::new();
            while shown.len() < limit {
                let rows: Vec<(String, HashMap<String, String>)> = within(
                    self.op_timeout,
                    redis::cmd("XRANGE")
                        .arg(AUDIT_KEY)
                        .arg(&start)
                        .arg("+")
                        .arg("COUNT")
                        .arg(limit.max(100))
                        .query_async(&mut conn),
                )
                .await?;
                let Some((last, _)) = rows.last() else {
                    break;
                };
                start = format!("({last}");
                for (_, fields) in &rows {
                    let Some(json) = fields.get("entry") else {
                        continue;
                    };
                    let entry: AuditEntry = serde_json::from_str(json)
                        .map_err(|e| StoreError::Corrupt(format!("an audit entry: {e}")))?;
                    if shown.len() < limit && filter.shows(&entry) {
                        shown.push(entry);
                    }
                }
            }
            Ok(shown)
        }
        .boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.ping_now().boxed()
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn coordination(&self) -> Option<&dyn Coordination> {
        Some(self)
    }
}

impl Coordination for RedisStore {
    fn acquire_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            let set: Option<String> = within(
                self.op_timeout,
                redis::cmd("SET")
                    .arg(lease_key(key))
                    .arg(owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis() as u64)
                    .query_async(&mut conn),
            )
            .await?;
            Ok(set.is_some())
        }
        .boxed()
    }

    fn renew_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            let mut invocation = self.renew.key(lease_key(key));
            invocation.arg(owner).arg(ttl.as_millis() as u64);
            let renewed: i64 = within(self.op_timeout, invocation.invoke_async(&mut conn)).await?;
            Ok(renewed == 1)
        }
        .boxed()
    }

    fn release_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            let mut invocation = self.release.key(lease_key(key));
            invocation.arg(owner);
            let released: i64 = within(self.op_timeout, invocation.invoke_async(&mut conn)).await?;
            if released == 0 {
                info!(credential = %key, "the refresh lease had already passed to another instance");
            }
            Ok(())
        }
        .boxed()
    }

    fn updates(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    fn save_fenced<'a>(
        &'a self,
        key: CredentialKey,
        token: Token,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<Saved, StoreError>> {
        self.save_as(key, token, Some(owner)).boxed()
    }

    fn take_budget<'a>(
        &'a self,
        scope: &'a str,
        name: &'a str,
        limit: u64,
        window: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut conn = self.conn.clone();
        async move {
            let mut member = [0u8; 8];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut member);
            let mut invocation = self.budget.key(budget_key(scope, name));
            invocation
                .arg(crate::credential::unix_now_ms())
                .arg(window.as_millis() as u64)
                .arg(limit)
                .arg(hex::encode(member));
            let taken: i64 = within(self.op_timeout, invocation.invoke_async(&mut conn)).await?;
            Ok(taken == 1)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_an_app_shares_its_hash_tag() {
        let key = CredentialKey::access_token("shop");
        assert_eq!(value_key(&key), "wxtoken:{shop}:access_token");
        assert_eq!(lease_key(&key), "wxtoken:{shop}:access_token:lease");
        assert_eq!(
            budget_key("corp:ww1", "tickets"),
            "wxtoken:{corp:ww1}:budget:tickets"
        );
        assert_eq!(
            usage_key("shop", "2026-11-25"),
            "wxtoken:{shop}:usage:2026-11-25"
        );
    }

    #[test]
    fn cluster_nodes_are_read_from_cluster_nodes() {
        let listing = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master,fail - 0 1426238318243 3 connected 10923-16383
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
9c3a :0@0 master,noaddr - 0 0 0 disconnected
";
        assert_eq!(
            parse_cluster_nodes(listing),
            ["127.0.0.1:30004", "127.0.0.1:30002", "127.0.0.1:30001"]
        );
    }

    #[test]
    fn announcements_round_trip() {
        let key = CredentialKey::ticket("shop", crate::credential::TicketType::Jsapi);
        let token = Token {
            value: "v".into(),
            expires_at_ms: 1,
            fetched_at_ms: 0,
            lifetime_secs: 1,
            generation: 7,
        };
        assert_eq!(
            parse_update(&announcement(&key, &token)),
            Some(Update::Stored(key, 7))
        );
        assert_eq!(parse_update("shop nonsense 1"), None);
        let authorizer = CredentialKey::of_authorizer(
            "platform",
            "wxabc",
            crate::credential::CredentialKind::AccessToken,
        );
        assert_eq!(
            parse_update(&announcement(&authorizer, &token)),
            Some(Update::Stored(authorizer, 7))
        );
        assert_eq!(
            parse_update("+ticket platform"),
            Some(Update::VerifyTicket("platform".into()))
        );
        assert_eq!(
            parse_update(&authorizer_announcement("platform", "wxabc")),
            Some(Update::Authorizer("platform".into(), "wxabc".into()))
        );
    }

    #[test]
    fn authorizer_records_round_trip() {
        let record = AuthorizerRecord {
            appid: "wxabc".into(),
            refresh_token: "refresh|with|bars".into(),
            state: AuthorizerState::NeedsReauthorization,
            func_info: vec![1, 15],
            authorized_at_ms: 5,
            version: 12,
        };
        let stored = format!("12|{}", encode_authorizer(&record).expect("encode"));
        assert_eq!(
            decode_authorizer("wxabc".into(), &stored).expect("decode"),
            record
        );
        assert!(decode_authorizer("wxabc".into(), "junk").is_err());
    }
}
