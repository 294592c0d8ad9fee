//! The served token's own lane: `GET /v1/apps/{app}/access_token` is answered here,
//! before the router, by the same function as its route ([`tokens::answer`]), with the
//! same access line and metrics as the access layer writes for it.
//!
//! Nearly every request a busy wxtoken sees is this one, and what it costs is what the
//! serving benchmark holds to 0.9 of a bare axum server. Through the router it cost
//! 25,600 instructions, here 18,000 (`bench/instructions.sh`; BENCHMARKS.md): the router
//! looks the path up in a table of forty routes, puts the path parameters and the
//! matched path into the request's extensions (allocations the handler never reads),
//! clones two boxed services and boxes two futures (the route, and the route wrapped in
//! the access layer), and auth tells the access layer the client's name through a
//! task-local slot. Here the lane compares the path's two ends and builds the answer as
//! the request is read.
//!
//! Only a request the router would certainly give to that route takes the lane: `GET`
//! (axum also routes `HEAD` there; that goes to the router), a path of exactly
//! `/v1/apps/<segment>/access_token` with a non-empty segment. Everything else, and
//! every other route, goes to the router unchanged. `tests/api/hot_lane.rs` holds the
//! lane's answers (status, headers, body) to the router's for generated requests;
//! `tests/api/access_log.rs` checks its access lines and metrics through the binary.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::Service;

use super::AppState;
use super::access::{self, RouteMetrics};
use super::tokens::{self, Answer};

/// The route the lane serves, as the router (and so the access log and metrics) names it.
pub const ROUTE: &str = "/v1/apps/{app}/access_token";

/// Whether `path` is one the router would match to [`ROUTE`]: `/v1/apps/`, a non-empty
/// segment without `/`, `/access_token`.
pub fn is_token_path(path: &str) -> bool {
    path.strip_prefix("/v1/apps/")
        .and_then(|rest| rest.strip_suffix("/access_token"))
        .is_some_and(|app| !app.is_empty() && !app.contains('/'))
}

/// The router with the token lane in front of it.
#[derive(Debug, Clone)]
pub struct HotLane<R> {
    router: R,
    state: AppState,
}

impl<R> HotLane<R> {
    pub fn new(state: AppState, router: R) -> Self {
        Self { router, state }
    }
}

/// The metric handles of [`ROUTE`], shared with the access layer's (the recorder is
/// installed before any request, so resolving on the first one is soon enough).
fn route_metrics() -> &'static RouteMetrics {
    static METRICS: OnceLock<&'static RouteMetrics> = OnceLock::new();
    METRICS.get_or_init(|| RouteMetrics::of(ROUTE))
}

impl<R> Service<Request> for HotLane<R>
where
    R: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = LaneFuture<R::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.router.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.method() != Method::GET || !is_token_path(request.uri().path()) {
            return LaneFuture::Routed {
                future: self.router.call(request),
            };
        }
        let start = Instant::now();
        let metrics = route_metrics();
        let (client, answer) = tokens::answer(&self.state, request.headers(), request.uri());
        match answer {
            Answer::Now(response) => {
                let log = access::log_enabled();
                metrics.finish(
                    start,
                    response.status(),
                    log.then(|| {
                        let client = client.as_ref().map(|c| c.name.as_str());
                        (request.method(), request.uri(), client)
                    }),
                );
                LaneFuture::Ready {
                    response: Some(response),
                }
            }
            Answer::Wait(wait) => {
                let uri = request.uri().clone();
                LaneFuture::Waiting {
                    future: Box::pin(async move {
                        let response = wait.await;
                        let log = access::log_enabled();
                        let client = client.as_ref().map(|c| c.name.as_str());
                        metrics.finish(
                            start,
                            response.status(),
                            log.then_some((&Method::GET, &uri, client)),
                        );
                        response
                    }),
                }
            }
        }
    }
}

pin_project! {
    /// A lane answer, or the router's future.
    #[project = LaneProj]
    pub enum LaneFuture<F> {
        Ready { response: Option<Response> },
        Waiting { future: Pin<Box<dyn Future<Output = Response> + Send>> },
        Routed { #[pin] future: F },
    }
}

impl<F> Future for LaneFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            LaneProj::Ready { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("LaneFuture polled after it answered"),
            },
            LaneProj::Waiting { future } => future.as_mut().poll(cx).map(Ok),
            LaneProj::Routed { future } => future.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_the_router_gives_to_the_token_route_take_the_lane() {
        for path in [
            "/v1/apps/shop/access_token",
            "/v1/apps/a/access_token",
            "/v1/apps/sh%2Fop/access_token",
            "/v1/apps/%FF/access_token",
            "/v1/apps/access_token/access_token",
        ] {
            assert!(is_token_path(path), "{path}");
        }
        for path in [
            "/v1/apps//access_token",
            "/v1/apps/access_token",
            "/v1/apps/shop/access_token/",
            "/v1/apps/shop/access_token/invalidate",
            "/v1/apps/a/b/access_token",
            "/v1/apps/shop/access_tokens",
            "/v1/apps/shop",
            "//v1/apps/shop/access_token",
            "/V1/apps/shop/access_token",
            "/cgi-bin/token",
        ] {
            assert!(!is_token_path(path), "{path}");
        }
    }
}
