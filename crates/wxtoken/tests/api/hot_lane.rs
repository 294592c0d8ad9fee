//! The served token's lane (`wxtoken::http::hot`) against the router it stands in front
//! of: generated requests for token-shaped paths, with every kind of key and query, get
//! the same status, headers and body from the lane as from the router, whether the lane
//! takes them or passes them on. The access lines and metrics of the lane are checked
//! through the binary in `access_log.rs`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::ServiceExt;
use wxtoken::http::hot::{HotLane, is_token_path};
use wxtoken::{Server, Settings};

use crate::helpers::*;

/// The router, counting the requests the lane passes on to it: the test sees which way
/// each request went, not only what came back.
#[derive(Clone)]
struct Counting {
    router: axum::Router,
    calls: Arc<AtomicUsize>,
}

impl tower::Service<Request<Body>> for Counting {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = <axum::Router as tower::Service<Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<Request<Body>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.router.call(request)
    }
}

struct Fixture {
    router: axum::Router,
    lane: HotLane<Counting>,
    /// Requests the lane passed on to the router.
    passed_on: Arc<AtomicUsize>,
    _emulator: wechat_emulator::RunningEmulator,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl Fixture {
    async fn start(options: &Options) -> Self {
        let emulator = wechat_emulator::spawn(emulator_config(options))
            .await
            .expect("emulator");
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("wxtoken.db");
        let toml = config_toml(options, &emulator.base_url(), &db.display().to_string());
        let settings = Settings::from_toml(&toml).expect("valid config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = Server::build(&settings, listener).await.expect("server");
        let state = server.state().clone();
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let router = wxtoken::http::router(state.clone());
        let passed_on = Arc::new(AtomicUsize::new(0));
        let counting = Counting {
            router: router.clone(),
            calls: passed_on.clone(),
        };
        Self {
            lane: HotLane::new(state, counting),
            router,
            passed_on,
            _emulator: emulator,
            _dir: dir,
            _stop: stop,
        }
    }
}

/// What a response is made of, headers in order.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: serde_json::Value,
}

/// The parts of `response` a client sees. `content-length` is left out: the router's
/// route sets it, the lane leaves it to hyper, which writes it from the body's exact
/// size on the wire (the black-box tests see it there). Where it is set on a body, it
/// must be that body's length (a `HEAD` answer has none to compare).
async fn answer_of(response: axum::response::Response) -> Answer {
    let status = response.status().as_u16();
    let mut headers = Vec::new();
    let mut length = None;
    for (name, value) in response.headers() {
        let value = value.to_str().expect("ASCII header").to_owned();
        if name == "content-length" {
            length = Some(value);
        } else {
            headers.push((name.as_str().to_owned(), value));
        }
    }
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    if let Some(length) = length.filter(|_| !bytes.is_empty()) {
        assert_eq!(length, bytes.len().to_string(), "content-length");
    }
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// `expires_in` counts down by the wall-clock second: two answers a moment apart may
/// differ by one there, and nowhere else.
fn same_but_for_the_second(lane: &Answer, router: &Answer) -> bool {
    let (mut lane_body, mut router_body) = (lane.body.clone(), router.body.clone());
    let (Some(a), Some(b)) = (
        lane_body["expires_in"].as_u64(),
        router_body["expires_in"].as_u64(),
    ) else {
        return false;
    };
    lane_body["expires_in"] = 0.into();
    router_body["expires_in"] = 0.into();
    a.abs_diff(b) <= 1
        && lane_body == router_body
        && lane.status == router.status
        && lane.headers == router.headers
}

/// A path segment where `{app}` goes: configured apps, unknown ones, encoded ones,
/// empty, long, and ones with characters the router treats specially. Not `other`,
/// whose WeChat refuses its secret: its answers say when the next attempt is, which
/// moves between two requests (the waiting test covers it).
fn app_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("shop".to_owned()),
        1 => Just("hr".to_owned()),
        1 => Just("nope".to_owned()),
        1 => Just(String::new()),
        1 => Just("sh%6Fp".to_owned()),
        1 => Just("%FF%FE".to_owned()),
        1 => Just("shop%2Fx".to_owned()),
        1 => Just("a/b".to_owned()),
        1 => Just("access_token".to_owned()),
        1 => prop::sample::select(vec![
            ".", "..", "%2e%2e", "{app}", "*", "SHOP", "%", "%zz", "%E5%BA%97",
            "authorizers", "proxy", "ticket", "quota", "callback", "timeline", "jssdk",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z]{4096,8192}",
        1 => "[a-zA-Z0-9._~%-]{1,80}",
    ]
}

/// A request target around the segment: the token route's shape and its near misses.
fn target() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        8 => Just("/v1/apps/"),
        1 => Just("/v1/apps//"),
        1 => Just("/v1/app/"),
        1 => Just("/V1/apps/"),
    ];
    let suffix = prop_oneof![
        8 => Just("/access_token"),
        1 => Just("/access_token/"),
        1 => Just("/access_tokens"),
        1 => Just("/access_token/invalidate"),
        1 => Just(""),
        1 => Just("/ticket/jsapi"),
        1 => Just("/access_token//"),
        1 => Just("/access_token/."),
        1 => Just("/access_token%2F"),
        1 => Just("/ACCESS_TOKEN"),
    ];
    let query = prop_oneof![
        4 => Just(String::new()),
        1 => (0u32..7000).prop_map(|s| format!("?min_ttl={s}")),
        1 => Just("?min_ttl=abc".to_owned()),
        1 => Just("?min_ttl=7201".to_owned()),
        1 => Just("?min_ttl=1&min_ttl=1".to_owned()),
        1 => Just("?min_ttl=%31%30".to_owned()),
        1 => Just("?x=y&min_ttl=".to_owned()),
        1 => Just("?".to_owned()),
    ];
    (prefix, app_segment(), suffix, query).prop_map(|(p, a, s, q)| format!("{p}{a}{s}{q}"))
}

/// An `Authorization` header, or none.
fn authorization() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        4 => Just(Some(format!("Bearer {KEY}").into_bytes())),
        1 => Just(Some(format!("Bearer {READ_ONLY_KEY}").into_bytes())),
        1 => Just(Some(format!("Bearer {OTHER_KEY}").into_bytes())),
        1 => Just(Some(format!("bearer  {KEY} ").into_bytes())),
        1 => Just(Some(format!("Basic {KEY}").into_bytes())),
        1 => Just(Some(b"Bearer wxt_not_a_key".to_vec())),
        1 => Just(Some(b"Bearer ".to_vec())),
        1 => Just(Some(b"Bearer \xff\xfe".to_vec())),
        1 => Just(None),
    ]
}

fn method() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        16 => Just("GET"),
        1 => Just("HEAD"),
        1 => Just("POST"),
        1 => prop::sample::select(vec!["OPTIONS", "PUT", "DELETE", "PATCH", "get"]),
    ]
}

impl Fixture {
    async fn check(
        &self,
        method: &str,
        target: &str,
        auth: Option<&[u8]>,
    ) -> Result<(bool, u16), TestCaseError> {
        let build = || {
            let mut builder = Request::builder().method(method).uri(target);
            if let Some(auth) = auth {
                builder = builder.header("authorization", auth);
            }
            builder.body(Body::empty())
        };
        let Ok(request) = build() else {
            // Not a request an HTTP parser would let through.
            return Ok((false, 0));
        };
        let laned = is_token_path(request.uri().path()) && method == "GET";
        let wait = Duration::from_secs(10);
        let before = self.passed_on.load(Ordering::SeqCst);
        let lane = tokio::time::timeout(wait, self.lane.clone().oneshot(request))
            .await
            .map_err(|_| TestCaseError::fail(format!("{target}: the lane did not answer")))?
            .expect("infallible");
        let passed_on = self.passed_on.load(Ordering::SeqCst) - before;
        if passed_on != usize::from(!laned) {
            return Err(TestCaseError::fail(format!(
                "{method} {target}: expected the lane {}, but {passed_on} request(s) reached \
                 the router",
                if laned { "to answer" } else { "to pass it on" }
            )));
        }
        let router = tokio::time::timeout(
            wait,
            self.router.clone().oneshot(build().expect("built once")),
        )
        .await
        .map_err(|_| TestCaseError::fail(format!("{target}: the router did not answer")))?
        .expect("infallible");
        let (lane, router) = (answer_of(lane).await, answer_of(router).await);
        if lane != router && !same_but_for_the_second(&lane, &router) {
            return Err(TestCaseError::fail(format!(
                "{method} {target}: the lane answered {lane:#?}\nthe router {router:#?}"
            )));
        }
        Ok((laned, lane.status))
    }
}

#[test]
fn the_lane_answers_every_token_shaped_request_as_the_router_does() {
    let rt = runtime();
    let fixture = rt.block_on(Fixture::start(&Options::default()));
    // The token is in before the comparison starts.
    rt.block_on(async {
        let request = || {
            Request::get("/v1/apps/shop/access_token")
                .header("authorization", format!("Bearer {KEY}"))
                .body(Body::empty())
                .expect("request")
        };
        let response = fixture.lane.clone().oneshot(request()).await.expect("ok");
        assert_eq!(response.status(), 200);
    });
    let mut runner = TestRunner::new(Config {
        cases: 1000,
        failure_persistence: None,
        ..Config::default()
    });
    let laned = std::sync::atomic::AtomicUsize::new(0);
    let statuses = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let result = runner.run(
        &(method(), target(), authorization()),
        |(method, target, auth)| {
            let (took, status) = rt.block_on(fixture.check(method, &target, auth.as_deref()))?;
            if took {
                laned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                statuses.lock().expect("statuses").insert(status);
            }
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // Both ways were exercised: many requests took the lane, many were passed on, and
    // the lane gave every answer the route gives.
    let laned = laned.into_inner();
    assert!((200..900).contains(&laned), "{laned} of 1000 took the lane");
    let statuses = statuses.into_inner().expect("statuses");
    for status in [200, 400, 401, 403, 404] {
        assert!(
            statuses.contains(&status),
            "no {status} on the lane: {statuses:?}"
        );
    }
}

#[test]
fn a_request_that_waits_for_a_refresh_gets_the_same_answer_on_the_lane() {
    let rt = runtime();
    // WeChat answers after 300 ms, so the first requests find no token and wait for it;
    // `other` has a secret WeChat refuses, so its requests wait and then fail.
    let fixture = rt.block_on(Fixture::start(&Options {
        latency: Duration::from_millis(300),
        ..Options::default()
    }));
    rt.block_on(async {
        let get = |app: &str| {
            Request::get(format!("/v1/apps/{app}/access_token"))
                .header("authorization", format!("Bearer {KEY}"))
                .body(Body::empty())
                .expect("request")
        };
        let (lane, router) = tokio::join!(
            fixture.lane.clone().oneshot(get("shop")),
            fixture.router.clone().oneshot(get("shop")),
        );
        let (lane, router) = (
            answer_of(lane.expect("ok")).await,
            answer_of(router.expect("ok")).await,
        );
        assert_eq!(lane.status, 200, "{lane:?}");
        assert!(lane == router || same_but_for_the_second(&lane, &router));
        let (lane, router) = tokio::join!(
            fixture.lane.clone().oneshot(get("other")),
            fixture.router.clone().oneshot(get("other")),
        );
        let (lane, router) = (
            answer_of(lane.expect("ok")).await,
            answer_of(router.expect("ok")).await,
        );
        assert_eq!(lane.status, 502, "{lane:?}");
        assert_eq!(lane.status, router.status);
        for field in ["code", "wechat_errcode"] {
            assert_eq!(lane.body["error"][field], router.body["error"][field]);
        }
    });
}
