//! Builds the application from settings (store, upstream client, keeper, routes) and
//! runs it on a bound listener until a shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tracing::info;

use crate::admin::{self, Admin};
use crate::config::{MAX_HEADER_BYTES, Settings, StoreSettings};
use crate::gateway::Gateway;
use crate::http::{self, AppState, access};
use crate::keeper::Keeper;
use crate::secrets::{self, MasterKey, SealedStore, Sealer};
use crate::store::{RedisOptions, RedisStore, Registry, SqliteStore, Store, StoreError};
use crate::wechat::{TokenApi, WechatClient};

/// After a shutdown signal, open requests get this long to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Drivers mid-call to WeChat get this long to finish and persist.
const KEEPER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A path that starts with several slashes (`//cgi-bin/token`, from an SDK whose host
/// was configured with a trailing `/`) is routed as if it had one.
fn collapse_leading_slashes(mut request: axum::extract::Request) -> axum::extract::Request {
    let uri = request.uri();
    if !uri.path().starts_with("//") {
        return request;
    }
    let path = format!("/{}", uri.path().trim_start_matches('/'));
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    if let Ok(fixed) = path_and_query.parse::<axum::http::Uri>() {
        *request.uri_mut() = fixed;
    }
    request
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    #[error("cannot read store.tls_ca_file {path}")]
    TlsCa {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build the HTTPS client")]
    Http(#[from] reqwest::Error),
    #[error("cannot serve")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Secrets(#[from] crate::secrets::SecretsError),
}

/// Opens (and migrates) the configured store.
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, StartError> {
    let store: Arc<dyn Store> = match &settings.store {
        StoreSettings::Sqlite { path } => Arc::new(SqliteStore::open(path)?),
        StoreSettings::Redis {
            url,
            cluster,
            seeds,
            op_timeout,
            tls_ca_file,
        } => {
            let tls_ca_pem = match tls_ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|source| StartError::TlsCa {
                    path: path.clone(),
                    source,
                })?),
                None => None,
            };
            Arc::new(
                RedisStore::connect(RedisOptions {
                    url: url.clone(),
                    cluster: *cluster,
                    seeds: seeds.clone(),
                    op_timeout: *op_timeout,
                    tls_ca_pem,
                })
                .await?,
            )
        }
    };
    Ok(store)
}

/// `wxtoken rotate-master-key`: re-seals every secret the store holds (runtime apps'
/// secrets, authorizer refresh tokens) under `new_key`, then the check value. Values
/// already under the new key (an interrupted run) are taken as they are, so a second
/// run finishes the job. Run it with every instance stopped.
pub async fn rotate_master_key(
    settings: &Settings,
    new_key: MasterKey,
) -> Result<String, StartError> {
    let store = open_store(settings).await?;
    let old_key = MasterKey::from_env_or_file(settings.server.master_key_file.as_deref())?;
    let check = store
        .registry_list(Registry::Meta)
        .await?
        .into_iter()
        .find(|(id, _)| id == secrets::CHECK_ID)
        .map(|(_, v)| v);
    // Already rotated (the check value opens with the new key): nothing to do but say so.
    if check
        .as_deref()
        .is_some_and(|c| secrets::opens_check(&new_key, c))
    {
        return Ok("the store is already under the new master key".to_owned());
    }
    secrets::verify_master_key(store.as_ref(), old_key.as_ref()).await?;
    let reseal = |aad: &str, stored: &str| -> Result<String, StartError> {
        let plain = match (&old_key, secrets::is_sealed(stored)) {
            (_, false) => stored.to_owned(),
            (Some(old), true) => match old.open(aad, stored) {
                Ok(plain) => plain,
                Err(_) => new_key.open(aad, stored)?,
            },
            (None, true) => new_key.open(aad, stored)?,
        };
        Ok(new_key.seal(aad, &plain))
    };
    let mut apps = 0;
    let mut components: Vec<String> = settings
        .apps
        .iter()
        .filter(|a| a.kind == crate::config::AppKind::Component)
        .map(|a| a.id.clone())
        .collect();
    for (id, stored) in store.registry_list(Registry::Apps).await? {
        let mut spec: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&stored)
            .map_err(|e| StoreError::Corrupt(format!("runtime app {id}: {e}")))?;
        if spec.get("kind").and_then(|k| k.as_str()) == Some("component") {
            components.push(id.clone());
        }
        for field in ["secret", "token", "encoding_aes_key"] {
            if let Some(serde_json::Value::String(value)) = spec.get(field) {
                let resealed = reseal(&secrets::app_aad(&id, field), value)?;
                spec.insert(field.to_owned(), serde_json::Value::String(resealed));
            }
        }
        store
            .registry_put(
                Registry::Apps,
                id,
                serde_json::Value::Object(spec).to_string(),
            )
            .await?;
        apps += 1;
    }
    let mut authorizers = 0;
    for component in components {
        let mut after = None;
        loop {
            let page = store
                .list_authorizers(component.clone(), after.clone(), 500)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.appid.clone());
            for mut record in page {
                let aad = secrets::authorizer_aad(&component, &record.appid);
                record.refresh_token = reseal(&aad, &record.refresh_token)?;
                record.version += 1;
                store.save_authorizer(component.clone(), record).await?;
                authorizers += 1;
            }
        }
    }
    store
        .registry_put(
            Registry::Meta,
            secrets::CHECK_ID.to_owned(),
            secrets::check_value(&new_key),
        )
        .await?;
    Ok(format!(
        "re-encrypted under the new master key: {apps} runtime apps, {authorizers} authorizer refresh tokens; start every instance with the new key"
    ))
}

/// A built server, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    router: http::hot::HotLane<axum::Router>,
    keeper: Keeper,
    state: AppState,
    /// The config file SIGHUP reloads, if any.
    config_path: Option<std::path::PathBuf>,
    limits: ConnectionLimits,
}

/// What one connection may take (`[server]`).
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    header_read_timeout: Duration,
    max_connections: usize,
}

/// The process-wide Prometheus recorder: the `metrics` facade allows one, and tests run
/// several servers in one process.
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(access::REQUEST_DURATION.to_owned()),
                    access::DURATION_BUCKETS,
                )
                .expect("the request duration buckets are a non-empty constant")
                .build_recorder();
            let handle = recorder.handle();
            spawn_upkeep(handle.clone());
            // Another recorder may already be installed by an embedding program; then
            // our /metrics is empty rather than the process failing.
            if metrics::set_global_recorder(recorder).is_ok() {
                describe_metrics();
            }
            handle
        })
        .clone()
}

/// Histogram samples wait in the recorder until a scrape or an upkeep folds them into
/// the buckets; this bounds their memory when nobody scrapes.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Folds histogram samples into their buckets every few seconds, on a thread of its own
/// (the recorder outlives any one runtime).
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("wxtoken-metrics".into())
        .spawn(move || {
            loop {
                std::thread::sleep(METRICS_UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no metrics upkeep thread: histograms fold in at each scrape only");
    }
}

fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        access::REQUESTS_TOTAL,
        "HTTP requests answered, by route template (gateway, unmatched for the rest) and status"
    );
    describe_histogram!(
        access::REQUEST_DURATION,
        Unit::Seconds,
        "Time from routing to the response head, by route template"
    );
    describe_counter!(
        crate::logging::DROPPED_TOTAL,
        "Log lines dropped because stdout could not keep up"
    );
    describe_counter!(
        crate::admin::AUDIT_DROPPED_TOTAL,
        "Audit entries dropped because the store refused them while more than 10,000 waited"
    );
    describe_counter!(
        "wxtoken_upstream_calls_total",
        "Calls to WeChat's credential endpoints (tokens and tickets), by app and API"
    );
    describe_counter!(
        "wxtoken_upstream_failures_total",
        "Failed token fetches, by app and error class"
    );
    describe_counter!(
        "wxtoken_token_renewals_total",
        "New token or ticket values installed, by app and kind"
    );
    describe_counter!(
        "wxtoken_driver_restarts_total",
        "Credential drivers restarted after a panic, by app and kind"
    );
    describe_counter!(
        "wxtoken_gateway_requests_total",
        "Requests through the gateway, by app and outcome (forwarded, retried, token_rejected, refused)"
    );
    describe_gauge!(
        "wxtoken_token_expires_at_seconds",
        Unit::Seconds,
        "Unix time at which an app's current token or ticket expires, by kind"
    );
}

impl Server {
    /// Opens the store, loads stored tokens and starts the keeper. Upstream calls begin
    /// here for apps with no valid stored token.
    pub async fn build(settings: &Settings, listener: TcpListener) -> Result<Self, StartError> {
        let store = open_store(settings).await?;
        let api: Arc<dyn TokenApi> = Arc::new(WechatClient::new(&settings.upstream)?);
        Self::build_with(settings, listener, store, api).await
    }

    /// As [`Server::build`] with the store and upstream given (tests, other backends).
    pub async fn build_with(
        settings: &Settings,
        listener: TcpListener,
        store: Arc<dyn Store>,
        api: Arc<dyn TokenApi>,
    ) -> Result<Self, StartError> {
        // The recorder first, so that the keeper's first upstream calls are counted.
        let metrics = metrics_handle();
        // The master key is checked before anything reads or writes the store's data.
        let master_key = MasterKey::from_env_or_file(settings.server.master_key_file.as_deref())?;
        secrets::verify_master_key(store.as_ref(), master_key.as_ref()).await?;
        let sealer = Sealer::new(master_key);
        if !sealer.enabled() {
            tracing::warn!(
                "no master key (WXTOKEN_MASTER_KEY or server.master_key_file): secrets of \
                 runtime apps and authorizer refresh tokens are stored in plaintext"
            );
        }
        let store: Arc<dyn Store> = Arc::new(SealedStore::new(store, sealer.clone()));
        let runtime = admin::stored_apps(store.as_ref(), &sealer, &settings.apps).await?;
        let mut apps = settings.apps.clone();
        apps.extend(runtime.apps.iter().cloned());
        let keeper = Keeper::start(&apps, settings.keeper.clone(), api, store.clone()).await?;
        let admin = Admin::new(
            keeper.clone(),
            store.clone(),
            sealer,
            &settings.apps,
            settings.clients.clone(),
            runtime,
        );
        // Runtime clients.
        admin.sync(false).await?;
        let gateway = Gateway::new(keeper.clone(), &settings.upstream, &settings.gateway)?;
        let state = AppState::new(
            keeper.clone(),
            admin,
            store,
            metrics,
            gateway,
            settings.gateway.clone(),
            settings.server.body_read_timeout,
        );
        Ok(Self {
            listener,
            router: http::service(state.clone()),
            keeper,
            state,
            config_path: None,
            limits: ConnectionLimits {
                header_read_timeout: settings.server.header_read_timeout,
                max_connections: settings.server.max_connections,
            },
        })
    }

    /// Reloads `path` on SIGHUP (apps and clients; a bad file is refused and the
    /// running config kept).
    pub fn reload_on_sighup(mut self, path: std::path::PathBuf) -> Self {
        self.config_path = Some(path);
        self
    }

    /// The shared state of the routes (admin changes in tests).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn keeper(&self) -> &Keeper {
        &self.keeper
    }

    /// Serves until `shutdown` resolves, then stops accepting, drains open requests for
    /// up to 10 s and stops the refreshers.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = self.listener.local_addr()?;
        info!(%addr, "wxtoken listening");
        let follower = tokio::spawn(follow_registry(self.state.clone()));
        let reloader = self
            .config_path
            .clone()
            .map(|path| tokio::spawn(reload_on_sighup(self.state.clone(), path)));
        let (signalled_tx, mut signalled_rx) = tokio::sync::watch::channel(false);
        let graceful = async move {
            shutdown.await;
            info!("shutting down: draining requests");
            let _ = signalled_tx.send(true);
        };
        // `//cgi-bin/token` (an SDK configured with a trailing slash on the host) is
        // served as `/cgi-bin/token`: routing happens after this. The served token has
        // its own lane in front of the router (see http::hot).
        let app = tower::ServiceBuilder::new()
            .map_request(collapse_leading_slashes)
            .service(self.router);
        let serve = serve(self.listener, app, self.limits, graceful);
        let drain_deadline = async move {
            let _ = signalled_rx.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        };
        tokio::select! {
            result = serve => result?,
            () = drain_deadline => tracing::warn!("requests still open after {DRAIN_TIMEOUT:?}; closing"),
        }
        follower.abort();
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        self.keeper.shutdown(KEEPER_STOP_TIMEOUT).await;
        let unwritten = self.state.admin.audit_backlog();
        if unwritten > 0 {
            tracing::warn!(
                unwritten,
                "stopping with audit entries the store still refuses: they are lost"
            );
        }
        info!("stopped");
        Ok(())
    }
}

/// Applies a reloaded, valid config file: the alert hooks first (so that what the
/// reloaded apps raise goes to them), then apps and clients, then the keeper's settings.
/// Returns the audit log's summary.
async fn apply_reload(state: &AppState, settings: Settings) -> String {
    let hooks_changed = state
        .keeper
        .alerts()
        .set_hooks(&settings.keeper.alerts.hooks);
    match state.admin.reload(&settings.apps, settings.clients).await {
        Ok(summary) => {
            state.apps_changed();
            let hooks = settings.keeper.alerts.hooks.len();
            state.keeper.set_settings(settings.keeper);
            info!(
                hooks,
                hooks_changed,
                "[keeper] timing and budgets (with upstream.daily_budget and \
                 upstream.clear_quota_monthly_budget) and [[alerts]] reloaded; [server], \
                 [store], the rest of [upstream], [gateway] and \
                 keeper.authorizer_refresh_per_sec take effect at the next start"
            );
            summary
        }
        Err(e) => {
            tracing::error!(error = %e, "config reload failed in the store");
            format!("failed: {e}")
        }
    }
}

/// The accept loop (axum::serve's, plus the limits): at most `max_connections` open at
/// once (the next accept waits for one to close), each with a header read timeout and a
/// bound on the request head. After `shutdown`, stops accepting and waits for the open
/// connections to finish their requests.
async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    // HTTP/1 only, as axum::serve without its http2 feature.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        // hyper arms this timer for every request head: tokio's own cost 7% of a served
        // token, this one a fraction of that (see header_timer).
        .timer(crate::header_timer::HeaderTimer::new(
            limits.header_read_timeout,
        ))
        .header_read_timeout(limits.header_read_timeout)
        // A request head that does not fit is answered 431.
        .max_buf_size(MAX_HEADER_BYTES);
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut warned_full: Option<tokio::time::Instant> = None;
    loop {
        if permits.available_permits() == 0
            && warned_full.is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
        {
            warned_full = Some(tokio::time::Instant::now());
            tracing::warn!(
                max_connections = limits.max_connections,
                "server.max_connections connections are open; new ones wait until one closes"
            );
        }
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service =
            service
                .clone()
                .map_request(|request: axum::http::Request<hyper::body::Incoming>| {
                    request.map(axum::body::Body::new)
                });
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// As axum::serve: a connection that failed before it was accepted is no reason to
/// stop; anything else (out of file descriptors) waits a second before trying again.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %error, "accept failed; trying again in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Applies runtime app and client changes made on any instance (polling the store's
/// registry version).
async fn follow_registry(state: AppState) {
    let mut tick = tokio::time::interval(admin::POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match state.admin.poll().await {
            Ok(true) => state.apps_changed(),
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "could not read the registry; trying again"),
        }
    }
}

/// Reloads the config file's apps and clients on every SIGHUP. A file that does not
/// load is refused with the key's name, and the running config is kept.
async fn reload_on_sighup(state: AppState, path: std::path::PathBuf) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; config reload is off");
            return;
        };
        while hangups.recv().await.is_some() {
            info!(path = %path.display(), "SIGHUP: reloading the config file");
            let result = match Settings::load(&path) {
                Ok(settings) => apply_reload(&state, settings).await,
                Err(e) => {
                    tracing::error!("config reload refused, the running config is kept: {e}");
                    format!("refused: {e}")
                }
            };
            state
                .admin
                .audit("sighup", "config.reload", None, &result)
                .await;
        }
    }
    #[cfg(not(unix))]
    let _ = (state, path);
}
