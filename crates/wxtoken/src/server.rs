//! Builds the application from settings (store, upstream client, keeper, routes) and
//! runs it on a bound listener until a shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tracing::info;

use crate::config::{Settings, StoreSettings};
use crate::gateway::Gateway;
use crate::http::{self, AppState, access};
use crate::keeper::Keeper;
use crate::store::{RedisOptions, RedisStore, SqliteStore, Store, StoreError};
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
}

/// A built server, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    router: axum::Router,
    keeper: Keeper,
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
                    Some(path) => {
                        Some(std::fs::read(path).map_err(|source| StartError::TlsCa {
                            path: path.clone(),
                            source,
                        })?)
                    }
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
        let keeper =
            Keeper::start(&settings.apps, settings.keeper.clone(), api, store.clone()).await?;
        let gateway = Gateway::new(keeper.clone(), &settings.upstream, &settings.gateway)?;
        let state = AppState::new(
            keeper.clone(),
            settings.clients.iter().cloned().map(Arc::new).collect(),
            store,
            metrics,
            gateway,
            settings.gateway.clone(),
        );
        Ok(Self {
            listener,
            router: http::router(state),
            keeper,
        })
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
        let (signalled_tx, mut signalled_rx) = tokio::sync::watch::channel(false);
        let graceful = async move {
            shutdown.await;
            info!("shutting down: draining requests");
            let _ = signalled_tx.send(true);
        };
        // `//cgi-bin/token` (an SDK configured with a trailing slash on the host) is
        // served as `/cgi-bin/token`: routing happens after this.
        let app = tower::ServiceBuilder::new()
            .map_request(collapse_leading_slashes)
            .service(self.router);
        let serve = axum::serve(
            self.listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service(app),
        )
        .with_graceful_shutdown(graceful);
        let drain_deadline = async move {
            let _ = signalled_rx.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        };
        tokio::select! {
            result = serve => result?,
            () = drain_deadline => tracing::warn!("requests still open after {DRAIN_TIMEOUT:?}; closing"),
        }
        self.keeper.shutdown(KEEPER_STOP_TIMEOUT).await;
        info!("stopped");
        Ok(())
    }
}
