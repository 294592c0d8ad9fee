//! The access log and the request metrics: one `wxtoken::access` line and two series per
//! request, whatever route answered it.
//!
//! The layer wraps every route (and the fallback) after routing, so it sees axum's
//! `MatchedPath`: labels are route templates, never raw paths. Requests the fallback
//! answers are `gateway` (WeChat's API prefixes) or `unmatched`. The metric handles of
//! a route are resolved on its first request and kept, so a request pays two atomic
//! updates, not a registry lookup. The client's name comes from auth through a task-local
//! slot, filled only while the access log is enabled. Nothing here sees the query string
//! (a gateway call carries `access_token` there) or any body.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use metrics::{Counter, Histogram};
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};

use crate::config::ClientSettings;
use crate::logging::AccessLine;

/// The tracing target of the access log: filter it with `RUST_LOG=wxtoken::access=off`.
pub const TARGET: &str = "wxtoken::access";

/// Requests answered, by route template and status code.
pub const REQUESTS_TOTAL: &str = "wxtoken_http_requests_total";
/// Seconds from a request's arrival at the router to its response head, by route.
pub const REQUEST_DURATION: &str = "wxtoken_http_request_duration_seconds";

/// Histogram buckets for [`REQUEST_DURATION`]: a served token takes tens of microseconds,
/// a `min_ttl` wait or a gateway call up to seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The route label of a request the fallback answered at one of WeChat's API paths.
pub const GATEWAY_ROUTE: &str = "gateway";
/// The route label of a request no route and no WeChat API path matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// What auth tells the access log about a request: the client, if one authenticated.
struct Slot {
    /// False when the access log is off: then auth leaves `client` alone and clones
    /// nothing.
    wanted: bool,
    client: Cell<Option<Arc<ClientSettings>>>,
}

tokio::task_local! {
    static SLOT: Slot;
}

/// Tells the access log which client a key named. A no-op outside a request or with the
/// access log off.
pub fn note_client(client: &Arc<ClientSettings>) {
    let _ = SLOT.try_with(|slot| {
        if slot.wanted {
            slot.client.set(Some(client.clone()));
        }
    });
}

/// The metric handles of one route label, resolved once and kept for the process (the
/// recorder is process-wide too, and labels are bounded).
#[derive(Debug)]
pub(super) struct RouteMetrics {
    route: &'static str,
    /// `status="200"`, the answer nearly every request gets; other codes are looked up.
    ok: Counter,
    duration: Histogram,
}

impl RouteMetrics {
    /// The handles of `route`, interned: at most one leaked entry per distinct label.
    pub(super) fn of(route: &str) -> &'static RouteMetrics {
        static INTERNED: OnceLock<Mutex<HashMap<String, &'static RouteMetrics>>> = OnceLock::new();
        let mut interned = INTERNED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = interned.get(route) {
            return found;
        }
        let label: &'static str = Box::leak(route.to_owned().into_boxed_str());
        let found: &'static RouteMetrics = Box::leak(Box::new(RouteMetrics {
            route: label,
            ok: metrics::counter!(REQUESTS_TOTAL, "route" => label, "status" => "200"),
            duration: metrics::histogram!(REQUEST_DURATION, "route" => label),
        }));
        interned.insert(route.to_owned(), found);
        found
    }

    fn record(&self, status: StatusCode, seconds: f64) {
        if status == StatusCode::OK {
            self.ok.increment(1);
        } else {
            metrics::counter!(
                REQUESTS_TOTAL,
                "route" => self.route,
                "status" => status.as_str().to_owned()
            )
            .increment(1);
        }
        self.duration.record(seconds);
    }

    /// Counts a request that arrived at `start` and was answered `status` just now, and
    /// writes its access line when `seen` (the request's method, URI and client) is
    /// given, which it is only while the access log is on ([`log_enabled`]).
    pub(super) fn finish(
        &self,
        start: Instant,
        status: StatusCode,
        seen: Option<(&Method, &Uri, Option<&str>)>,
    ) {
        let end = Instant::now();
        let elapsed = end.saturating_duration_since(start);
        self.record(status, elapsed.as_secs_f64());
        if let Some((method, uri, client)) = seen {
            crate::logging::log_access(&AccessLine {
                method: method.as_str(),
                route: self.route,
                app: app_of(self.route, uri),
                client,
                status: status.as_u16(),
                latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                at: end,
            });
        }
    }
}

/// Whether access lines are written (`RUST_LOG` may turn `wxtoken::access` off).
pub(super) fn log_enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// The route label of a request: its route template, or for the fallback `gateway` or
/// `unmatched`.
fn route_label(request: &Request) -> &str {
    match request.extensions().get::<MatchedPath>() {
        Some(matched) => matched.as_str(),
        None if super::gateway::is_gateway_path(request.uri().path()) => GATEWAY_ROUTE,
        None => UNMATCHED_ROUTE,
    }
}

/// The most of an `{app}` segment the log line keeps: app ids are short, and a request
/// for a 10,000-character one should not write 10,000 characters per line.
const MAX_LOGGED_APP: usize = 64;

/// The `{app}` of a `/v1/apps/{app}/...` request, as sent (app ids are plain ASCII), cut
/// to its first [`MAX_LOGGED_APP`] bytes.
fn app_of<'u>(route: &str, uri: &'u Uri) -> Option<&'u str> {
    if !route.starts_with("/v1/apps/{app}") {
        return None;
    }
    let rest = uri.path().strip_prefix("/v1/apps/")?;
    let app = rest.find('/').map_or(rest, |end| &rest[..end]);
    let mut end = app.len().min(MAX_LOGGED_APP);
    while !app.is_char_boundary(end) {
        end -= 1;
    }
    Some(&app[..end])
}

/// Adds the access log and request metrics to every route it wraps. Apply with
/// `Router::layer` after all routes and the fallback are added.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLayer;

impl<S> Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Access<S> {
        Access {
            inner,
            route: Arc::default(),
        }
    }
}

/// One route's service with the access log and metrics around it.
#[derive(Debug, Clone)]
pub struct Access<S> {
    inner: S,
    /// This route's handles, found on its first request. `Router::layer` wraps each
    /// route on its own, so one template goes through here; a request with another label
    /// (the fallback's two) still gets its own, through the interned table.
    route: Arc<OnceLock<&'static RouteMetrics>>,
}

impl<S> Access<S> {
    fn metrics_for(&self, label: &str) -> &'static RouteMetrics {
        let cached = *self.route.get_or_init(|| RouteMetrics::of(label));
        if cached.route == label {
            cached
        } else {
            RouteMetrics::of(label)
        }
    }
}

/// What the log line needs from the request, kept only while the access log is on.
struct Seen {
    method: Method,
    /// For the `{app}` segment; the query in it is never read.
    uri: Uri,
}

impl<S> Service<Request> for Access<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = AccessFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let start = Instant::now();
        let metrics = self.metrics_for(route_label(&request));
        let wanted = log_enabled();
        let seen = wanted.then(|| Seen {
            method: request.method().clone(),
            uri: request.uri().clone(),
        });
        let slot = Slot {
            wanted,
            client: Cell::new(None),
        };
        AccessFuture {
            inner: SLOT.scope(slot, self.inner.call(request)),
            start,
            metrics,
            seen,
        }
    }
}

pin_project! {
    /// The route's future, then one log line and the metrics when it answers.
    pub struct AccessFuture<F> {
        #[pin]
        inner: TaskLocalFuture<Slot, F>,
        start: Instant,
        metrics: &'static RouteMetrics,
        seen: Option<Seen>,
    }
}

impl<F, E> Future for AccessFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = std::task::ready!(this.inner.as_mut().poll(cx));
        // Errors are `Infallible` in axum; a response is what there is to count.
        if let Ok(response) = &result {
            let seen = this.seen.take();
            let client = match seen {
                Some(_) => this
                    .inner
                    .as_mut()
                    .take_value()
                    .and_then(|slot| slot.client.into_inner()),
                None => None,
            };
            this.metrics.finish(
                *this.start,
                response.status(),
                seen.as_ref().map(|seen| {
                    (
                        &seen.method,
                        &seen.uri,
                        client.as_ref().map(|c| c.name.as_str()),
                    )
                }),
            );
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_is_the_segment_after_v1_apps_and_only_on_app_routes() {
        let uri: Uri = "/v1/apps/shop/access_token?min_ttl=5"
            .parse()
            .expect("a uri");
        assert_eq!(app_of("/v1/apps/{app}/access_token", &uri), Some("shop"));
        let uri: Uri = "/v1/apps/shop".parse().expect("a uri");
        assert_eq!(app_of("/v1/apps/{app}", &uri), Some("shop"));
        let uri: Uri = "/cgi-bin/token?secret=k".parse().expect("a uri");
        assert_eq!(app_of("/cgi-bin/token", &uri), None);
        assert_eq!(app_of(GATEWAY_ROUTE, &uri), None);
        let long = format!("/v1/apps/{}/access_token", "a".repeat(10_000));
        let uri: Uri = long.parse().expect("a uri");
        assert_eq!(
            app_of("/v1/apps/{app}/access_token", &uri).map(str::len),
            Some(MAX_LOGGED_APP)
        );
    }
}
