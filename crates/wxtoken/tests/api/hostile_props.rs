//! Property tests of hostile input: generated requests (odd ids and percent-encoding,
//! path traversal, oversized and malformed bodies, parameters given twice, injected
//! headers) against the real router in process, and raw requests (absolute targets,
//! `Host` games, CR/LF) against a served instance. WeChat is the emulator behind a
//! recording proxy, so what the gateway sent on is checked too.
//!
//! Properties: no panic; a documented status; the documented error shape (WeChat's on
//! its routes); never a secret, a client key, or a token the caller did not send in an
//! error; and nothing forwarded with the caller's headers, a second `access_token`, a
//! token WeChat did not issue, or a client key for a secret.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use axum::response::IntoResponse;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tower::ServiceExt;
use wechat_emulator::RunningEmulator;
use wxtoken::{Server, Settings};

use crate::helpers::*;

/// Every secret and key of the test config: never in an answer.
const NEVER_ANSWERED: &[&str] = &[
    SECRET,
    WECOM_SECRET,
    "unknown-to-the-emulator",
    KEY,
    READ_ONLY_KEY,
    OTHER_KEY,
];

/// Headers a caller may try to slip through the gateway.
const INJECTED: &[&str] = &[
    "authorization",
    "cookie",
    "x-evil",
    "x-forwarded-for",
    "x-forwarded-host",
    "forwarded",
    "proxy-authorization",
];

/// What the recording proxy saw of one request on its way to the emulator.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: String,
    headers: HeaderMap,
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    /// Every access_token the emulator handed out through the proxy.
    issued: Mutex<HashSet<String>>,
}

/// A proxy in front of the emulator that records every request and the tokens issued.
async fn recording_proxy(emulator: &RunningEmulator) -> (String, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let upstream = emulator.base_url();
    let http = reqwest::Client::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = {
        let recorder = recorder.clone();
        axum::Router::new().fallback(move |request: Request<Body>| {
            let (recorder, upstream, http) = (recorder.clone(), upstream.clone(), http.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 64 << 20)
                    .await
                    .unwrap_or_default();
                recorder.seen.lock().expect("seen").push(Seen {
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    headers: parts.headers.clone(),
                });
                let url = format!(
                    "{upstream}{}",
                    parts.uri.path_and_query().map_or("/", |p| p.as_str())
                );
                let mut out = http.request(parts.method, url).body(body);
                if let Some(kind) = parts.headers.get("content-type") {
                    out = out.header("content-type", kind);
                }
                let Ok(answer) = out.send().await else {
                    return axum::http::StatusCode::BAD_GATEWAY.into_response();
                };
                let status = answer.status();
                let kind = answer.headers().get("content-type").cloned();
                let bytes = answer.bytes().await.unwrap_or_default();
                if let Ok(json) = serde_json::from_slice::<Value>(&bytes) {
                    if let Some(token) = json["access_token"].as_str() {
                        recorder
                            .issued
                            .lock()
                            .expect("issued")
                            .insert(token.to_owned());
                    }
                }
                let mut response = axum::response::Response::new(Body::from(bytes));
                *response.status_mut() = status;
                if let Some(kind) = kind {
                    response.headers_mut().insert("content-type", kind);
                }
                response
            }
        })
    };
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, recorder)
}

/// A server (served, and its router in process) against the emulator behind the proxy.
struct Fixture {
    /// Per status, how many generated requests got it; and how many were forwarded.
    coverage: Mutex<(std::collections::BTreeMap<u16, usize>, usize)>,
    router: axum::Router,
    state: wxtoken::http::AppState,
    addr: String,
    proxy_host: String,
    recorder: Arc<Recorder>,
    _emulator: RunningEmulator,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl Fixture {
    async fn start() -> Self {
        let options = Options {
            request_timeout_ms: 3000,
            ..Options::default()
        };
        let emulator = wechat_emulator::spawn(emulator_config(&options))
            .await
            .expect("emulator");
        let (proxy, recorder) = recording_proxy(&emulator).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("wxtoken.db");
        let toml = config_toml(&options, &proxy, &db.display().to_string()).replacen(
            "[server]\n",
            "[server]\nbody_read_timeout_ms = 2000\nheader_read_timeout_ms = 2000\n",
            1,
        ) + "[gateway]\nrequest_timeout_ms = 3000\n";
        let settings = Settings::from_toml(&toml).expect("valid config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = Server::build(&settings, listener).await.expect("server");
        let addr = server.local_addr().expect("addr").to_string();
        let state = server.state().clone();
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let fixture = Self {
            coverage: Mutex::default(),
            router: wxtoken::http::router(state.clone()),
            state,
            addr,
            proxy_host: proxy.trim_start_matches("http://").to_owned(),
            recorder,
            _emulator: emulator,
            _dir: dir,
            _stop: stop,
        };
        fixture.token().await;
        fixture
    }

    async fn token(&self) -> String {
        self.state
            .keeper
            .access_token("shop", None)
            .await
            .expect("shop has a token")
            .value
            .clone()
    }

    fn seen_len(&self) -> usize {
        self.recorder.seen.lock().expect("seen").len()
    }

    /// What reached the emulator since `from` obeys the gateway's rules; how many of
    /// those requests were not the server's own credential calls.
    fn check_forwarded(&self, from: usize) -> Result<usize, TestCaseError> {
        let seen: Vec<Seen> = self.recorder.seen.lock().expect("seen")[from..].to_vec();
        let issued = self.recorder.issued.lock().expect("issued").clone();
        for request in &seen {
            for name in INJECTED {
                prop_assert!(
                    !request.headers.contains_key(*name),
                    "{name} reached WeChat: {request:?}"
                );
            }
            prop_assert_eq!(
                request.headers.get("host").and_then(|h| h.to_str().ok()),
                Some(self.proxy_host.as_str())
            );
            let params: Vec<(String, String)> = form_urlencoded::parse(request.query.as_bytes())
                .into_owned()
                .collect();
            let tokens: Vec<&String> = params
                .iter()
                .filter(|(k, _)| k == "access_token")
                .map(|(_, v)| v)
                .collect();
            prop_assert!(tokens.len() <= 1, "two access_token: {request:?}");
            if let Some(token) = tokens.first() {
                prop_assert!(
                    issued.contains(*token),
                    "a token WeChat never issued was sent on: {request:?}"
                );
            }
            // The login calls swap the client's key for the app's secret.
            for (name, value) in params.iter().filter(|_| request.path.starts_with("/sns/")) {
                if name == "secret" {
                    prop_assert!(
                        [SECRET, WECOM_SECRET, "unknown-to-the-emulator"].contains(&value.as_str()),
                        "a client's secret parameter reached WeChat: {request:?}"
                    );
                }
            }
            let decoded = percent_decode(&request.path);
            prop_assert!(
                !decoded.split(['/', '\\']).any(|s| s == ".." || s == "."),
                "a dot segment reached WeChat: {request:?}"
            );
        }
        let own = [
            "/cgi-bin/token",
            "/cgi-bin/stable_token",
            "/cgi-bin/gettoken",
            "/cgi-bin/ticket/getticket",
            "/cgi-bin/get_jsapi_ticket",
            "/cgi-bin/ticket/get",
        ];
        Ok(seen
            .iter()
            .filter(|s| {
                !own.contains(&s.path.as_str()) && !s.path.starts_with("/cgi-bin/component/")
            })
            .count())
    }
}

/// A generated request, before `@TOKEN@` and `@KEY@` are filled in.
#[derive(Debug, Clone)]
struct Hostile {
    method: &'static str,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// `path` percent-decoded (as a server further on might).
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes every byte outside the unreserved set.
fn encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(b) {
            out.push(*b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["shop", "shop", "hr", "other", "nope", "platform"]).prop_map(str::to_owned),
        2 => prop::sample::select(vec![
            "..", ".", "%2e%2e", "%2E%2e", "%2F", "..%2F..", "%2e%2e%2f%2e%2e", "%00", "%0D%0AX-Evil:%201",
            "%FF%FE", "%C0%AF", "%E2%80%AE", "a%20b", "shop%2Faccess_token", "%25", "jsapi", "wx_card",
            "agent_config", "token", "getticket", "wx1111111111111111",
        ])
        .prop_map(str::to_owned),
        2 => "[a-zA-Z0-9_-]{65,600}",
        2 => prop::collection::vec(any::<u8>(), 1..40).prop_map(|b| encode(&b)),
        1 => any::<String>().prop_map(|s| encode(s.as_bytes())),
    ]
}

/// A path with the method its route takes.
fn path() -> impl Strategy<Value = (&'static str, String)> {
    let templates = vec![
        ("GET", "/v1/apps/{a}"),
        ("PUT", "/v1/apps/{a}"),
        ("GET", "/v1/apps/{a}/access_token"),
        ("POST", "/v1/apps/{a}/access_token/invalidate"),
        ("GET", "/v1/apps/{a}/ticket/{b}"),
        ("POST", "/v1/apps/{a}/ticket/{b}/invalidate"),
        ("POST", "/v1/apps/{a}/jssdk/config"),
        ("POST", "/v1/apps/{a}/jssdk/card_sign"),
        ("GET", "/v1/apps/{a}/timeline"),
        ("POST", "/v1/apps/{a}/quota/clear"),
        ("GET", "/v1/apps/{a}/authorizers"),
        ("GET", "/v1/apps/{a}/authorizers/{b}/access_token"),
        (
            "POST",
            "/v1/apps/{a}/authorizers/{b}/access_token/invalidate",
        ),
        ("POST", "/v1/apps/{a}/callback"),
        ("GET", "/v1/apps/{a}/proxy/cgi-bin/{b}"),
        ("POST", "/v1/apps/{a}/proxy/{b}/{b}"),
        ("DELETE", "/v1/clients/{a}"),
        ("POST", "/v1/clients"),
        ("GET", "/v1/audit"),
        ("GET", "/v1/alerts"),
        ("GET", "/cgi-bin/token"),
        ("POST", "/cgi-bin/stable_token"),
        ("GET", "/cgi-bin/gettoken"),
        ("GET", "/cgi-bin/{b}"),
        ("POST", "/cgi-bin/{a}/{b}"),
        ("GET", "/cgi-bin/ticket/getticket"),
        ("GET", "/cgi-bin/get_api_domain_ip"),
        ("POST", "/cgi-bin/message/custom/send"),
        ("GET", "/wxa/{b}"),
        ("GET", "/sns/jscode2session"),
        ("GET", "/{a}"),
        ("GET", "/{a}/{b}"),
        ("GET", "/ui/{a}"),
        ("GET", "/metrics"),
    ];
    let method = prop_oneof![
        6 => Just(None),
        1 => prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]).prop_map(Some),
    ];
    (
        prop::sample::select(templates),
        method,
        segment(),
        segment(),
    )
        .prop_map(|((usual, t), method, a, b)| {
            (
                method.unwrap_or(usual),
                t.replace("{a}", &a).replace("{b}", &b),
            )
        })
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just("@TOKEN@".to_owned()),
        1 => Just("@KEY@".to_owned()),
        2 => prop::sample::select(vec![
            "1", "0", "-1", "abc", "7201", "99999999999999999999", "", "jsapi", "client_credential",
            "wx0123456789abcdef", "ww0123456789abcdef", "1000002", "%0D%0AX-Evil:%201", "a%26b%3Dc",
            "%FF", "1.5", "+", "%2B",
        ])
        .prop_map(str::to_owned),
        1 => prop::collection::vec(any::<u8>(), 0..30).prop_map(|b| encode(&b)),
        1 => "[a-z0-9]{100,2000}",
    ]
}

fn query() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        6 => prop::sample::select(vec![
            "min_ttl", "since", "limit", "cursor", "access_token", "access%5Ftoken", "appid", "secret",
            "grant_type", "corpid", "corpsecret", "agentid", "type", "timestamp", "nonce", "msg_signature",
            "encrypt_type", "js_code",
        ])
        .prop_map(str::to_owned),
        1 => prop::collection::vec(any::<u8>(), 1..10).prop_map(|b| encode(&b)),
    ];
    prop::collection::vec((name, value()), 0..6)
}

fn json_body() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        Just(Value::String("@TOKEN@".into())),
        Just(Value::String("https://shop.example/p?a=1#x".into())),
    ];
    let tree = leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "access_token",
                    "ticket",
                    "url",
                    "card_id",
                    "code",
                    "openid",
                    "appid",
                    "secret",
                    "grant_type",
                    "force_refresh",
                    "authorization_code",
                    "name",
                    "apps",
                    "scopes",
                    "kind",
                    "mode",
                    "x",
                ])
                .prop_map(str::to_owned),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    tree.prop_map(|v| v.to_string().into_bytes())
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        4 => json_body(),
        1 => (1usize..12_000).prop_map(|n| {
            let mut b = "[".repeat(n).into_bytes();
            b.extend("]".repeat(n).into_bytes());
            b
        }),
        1 => (1usize..12_000).prop_map(|n| format!("{{\"access_token\":{}{}}}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => (60_000usize..70_000).prop_map(|n| {
            let mut b = br#"{"access_token":""#.to_vec();
            b.extend(std::iter::repeat_n(b'x', n));
            b.extend(br#""}"#);
            b
        }),
        1 => Just(b"<xml><Encrypt><![CDATA[x]]></Encrypt></xml>".to_vec()),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    let auth = prop_oneof![
        1 => Just(None),
        4 => Just(Some("Bearer @KEY@".to_owned())),
        1 => Just(Some(format!("Bearer {READ_ONLY_KEY}"))),
        1 => Just(Some("Bearer wxt_nobody".to_owned())),
        1 => Just(Some("Basic @KEY@".to_owned())),
    ];
    let extra = prop::collection::vec(
        (
            prop::sample::select(vec![
                "cookie",
                "x-evil",
                "x-forwarded-for",
                "x-forwarded-host",
                "forwarded",
                "proxy-authorization",
                "host",
                "content-type",
                "user-agent",
            ]),
            prop::sample::select(vec![
                "evil.example",
                "a=b",
                "application/json",
                "text/xml",
                "@KEY@",
                "1.2.3.4",
            ])
            .prop_map(str::to_owned),
        ),
        0..4,
    );
    (auth, extra).prop_map(|(auth, mut extra)| {
        if let Some(auth) = auth {
            extra.push(("authorization", auth));
        }
        extra
    })
}

fn hostile() -> impl Strategy<Value = Hostile> {
    (path(), any::<bool>(), query(), headers(), body()).prop_map(
        |((method, path), with_token, mut query, headers, body)| {
            // Half carry a token this server issued, so the gateway gets past its check.
            if with_token {
                query.insert(0, ("access_token".to_owned(), "@TOKEN@".to_owned()));
            }
            Hostile {
                method,
                path,
                query,
                headers,
                body,
            }
        },
    )
}

/// Statuses the API documents (README "Error codes"), plus 200/201.
const DOCUMENTED: &[u16] = &[
    200, 201, 400, 401, 403, 404, 405, 408, 409, 410, 413, 502, 503,
];

fn is_wechat_route(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    wxtoken::gateway::API_PREFIXES
        .iter()
        .any(|p| path.starts_with(p))
        || path.starts_with("/sns/")
        || path.contains("/proxy/")
}

/// Checks one answer: status, shape, nothing secret.
fn check_answer(
    path: &str,
    status: u16,
    body: &[u8],
    sent: &str,
    token: &str,
    forwarded: bool,
) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(body);
    for secret in NEVER_ANSWERED {
        // An error may quote what the caller sent (its own key as a `min_ttl`...);
        // the apps' secrets are never sent, so never answered.
        if sent.contains(secret) {
            continue;
        }
        prop_assert!(
            !text.contains(secret),
            "{path}: {status} answered a secret or key: {text}"
        );
    }
    if forwarded {
        // WeChat's own answer (whatever it is) passed on.
        return Ok(());
    }
    prop_assert!(
        DOCUMENTED.contains(&status),
        "{path}: status {status}: {text}"
    );
    let open = ["/ui", "/metrics", "/healthz", "/readyz"];
    if status < 300 && open.iter().any(|p| path.starts_with(p)) {
        return Ok(());
    }
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let api_error = json
        .as_ref()
        .is_some_and(|j| j["error"]["code"].is_string() && j["error"]["message"].is_string());
    let wechat_error = json
        .as_ref()
        .is_some_and(|j| j["errcode"].is_i64() && j["errmsg"].is_string());
    let is_error =
        status >= 400 || wechat_error && json.as_ref().is_some_and(|j| j["errcode"] != 0);
    if status >= 400 {
        if is_wechat_route(path) {
            prop_assert!(api_error || wechat_error, "{path}: {status}: {text}");
        } else {
            prop_assert!(api_error, "{path}: {status}: {text}");
        }
        if let Some(message) = json.as_ref().and_then(|j| j["error"]["message"].as_str()) {
            prop_assert!(message.chars().count() <= 513, "{path}: a long message");
        }
    }
    if is_error && !sent.contains(token) {
        prop_assert!(
            !text.contains(token),
            "{path}: an error carries the token: {text}"
        );
    }
    Ok(())
}

impl Fixture {
    async fn check(&self, request: Hostile) -> Result<(), TestCaseError> {
        let token = self.token().await;
        let fill = |s: &str| s.replace("@TOKEN@", &token).replace("@KEY@", KEY);
        let mut target = request.path.clone();
        if !request.query.is_empty() {
            let pairs: Vec<String> = request
                .query
                .iter()
                .map(|(k, v)| format!("{k}={}", fill(v)))
                .collect();
            target = format!("{target}?{}", pairs.join("&"));
        }
        let body = fill(&String::from_utf8_lossy(&request.body));
        // What the caller sent that an error may quote (not its Authorization).
        let mut sent = format!("{target} {body}");
        let mut builder = Request::builder().method(request.method).uri(&target);
        for (name, value) in &request.headers {
            if *name != "authorization" {
                sent.push_str(&fill(value));
            }
            builder = builder.header(*name, fill(value));
        }
        let Ok(built) = builder.body(Body::from(body)) else {
            // Not a request an HTTP parser would let through.
            return Ok(());
        };
        let before = self.seen_len();
        let response =
            tokio::time::timeout(Duration::from_secs(10), self.router.clone().oneshot(built))
                .await
                .map_err(|_| TestCaseError::fail(format!("{target}: no answer in 10 s")))?
                .expect("the router is infallible");
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .map_err(|e| TestCaseError::fail(format!("{target}: body: {e}")))?;
        let forwarded = self.check_forwarded(before)? > 0;
        {
            let mut coverage = self.coverage.lock().expect("coverage");
            *coverage.0.entry(status).or_default() += 1;
            coverage.1 += usize::from(forwarded);
        }
        check_answer(&request.path, status, &bytes, &sent, &token, forwarded)
    }
}

#[test]
fn every_generated_hostile_request_gets_a_documented_answer_and_nothing_leaks() {
    let rt = runtime();
    let fixture = rt.block_on(Fixture::start());
    let mut runner = TestRunner::new(Config {
        cases: 1000,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&hostile(), |request| rt.block_on(fixture.check(request)));
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generator reaches past auth and parsing, and into the gateway.
    let (statuses, forwarded) = fixture.coverage.lock().expect("coverage").clone();
    eprintln!("statuses {statuses:?}, forwarded {forwarded}");
    for status in [200, 400, 401, 403, 404, 405] {
        assert!(
            statuses.get(&status).is_some_and(|n| *n > 0),
            "no {status}: {statuses:?}"
        );
    }
    assert!(forwarded >= 5, "{forwarded} forwarded");
    // The server is still serving.
    rt.block_on(async {
        let mut stream = TcpStream::connect(&fixture.addr).await.expect("connect");
        let answer = exchange(
            &mut stream,
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    });
}

/// Sends raw bytes and reads until the server closes or 5 s pass.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> String {
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status of a raw answer, if there was one.
fn status_of(answer: &str) -> Option<u16> {
    answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn raw_target() -> impl Strategy<Value = String> {
    let host = prop::sample::select(vec![
        "evil.example",
        "evil.example:80",
        "127.0.0.1",
        "[::1]",
        "user:pass@evil.example",
        "",
    ]);
    let path = prop::sample::select(vec![
        "/cgi-bin/get_api_domain_ip",
        "/cgi-bin/../v1/apps/shop/access_token",
        "/cgi-bin/%2e%2e/v1/apps",
        "/v1/apps/shop/access_token",
        "//cgi-bin/get_api_domain_ip",
        "/sns/jscode2session",
        "/wxa/x",
    ]);
    let extra = prop::sample::select(vec![
        "",
        "&x=%0D%0AX-Evil:%201",
        "&x=\r\nX-Evil: 1",
        "&x=a b",
        "&access_token=@TOKEN@",
        "&access%5Ftoken=evil",
        "&secret=@KEY@&appid=wx0123456789abcdef&js_code=c",
        "#frag",
        "&x=\u{7f}",
    ]);
    (
        prop::sample::select(vec!["absolute", "origin", "star", "authority"]),
        host,
        path,
        extra,
    )
        .prop_map(|(form, host, path, extra)| {
            let path_query = format!("{path}?access_token=@TOKEN@{extra}");
            match form {
                "absolute" => format!("http://{host}{path_query}"),
                "star" => "*".to_owned(),
                "authority" => format!("{host}:443"),
                _ => path_query,
            }
        })
}

fn raw_request() -> impl Strategy<Value = (String, Vec<String>)> {
    let header = prop::sample::select(vec![
        "Host: evil.example",
        "Host: evil.example\r\nHost: other.example",
        "Host: evil.example\r\nX-Evil: 1",
        "Host: a\rX-Evil: 1",
        "Host: a\nX-Evil: 1",
        "X-Forwarded-Host: evil.example",
        "Authorization: Bearer @KEY@",
        "Cookie: session=@KEY@",
        "Content-Length: -1",
        "Content-Length: 1\r\nContent-Length: 2",
        "X-Evil: a\u{0}b",
        " folded: header",
    ])
    .prop_map(str::to_owned);
    (raw_target(), prop::collection::vec(header, 0..3))
}

#[test]
fn raw_request_targets_and_host_games_never_reach_wechat_with_the_callers_headers() {
    let rt = runtime();
    let fixture = rt.block_on(Fixture::start());
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&raw_request(), |(target, headers)| {
        rt.block_on(async {
            let token = fixture.token().await;
            let fill = |s: &str| s.replace("@TOKEN@", &token).replace("@KEY@", KEY);
            let mut request = format!("GET {} HTTP/1.1\r\n", fill(&target));
            for header in &headers {
                request.push_str(&fill(header));
                request.push_str("\r\n");
            }
            request.push_str("Connection: close\r\n\r\n");
            let before = fixture.seen_len();
            let mut stream = TcpStream::connect(&fixture.addr).await.expect("connect");
            let answer = exchange(&mut stream, request.as_bytes()).await;
            let forwarded = fixture.check_forwarded(before)? > 0;
            {
                let mut coverage = fixture.coverage.lock().expect("coverage");
                *coverage
                    .0
                    .entry(status_of(&answer).unwrap_or(0))
                    .or_default() += 1;
                coverage.1 += usize::from(forwarded);
            }
            // hyper answers what it cannot parse itself (400, or nothing); the rest is ours.
            let Some(status) = status_of(&answer) else {
                prop_assert!(!forwarded, "forwarded, yet no answer: {request:?}");
                return Ok(());
            };
            let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            let path = target
                .strip_prefix("http://")
                .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
                .unwrap_or(&target);
            if status == 400 && body.is_empty() {
                // hyper's own refusal of a malformed head.
                prop_assert!(!forwarded);
                return Ok(());
            }
            let chunked = answer
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked");
            if chunked {
                return Ok(());
            }
            check_answer(path, status, body.as_bytes(), &request, &token, forwarded)
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Some requests were refused by hyper, some answered by routes, some forwarded.
    let (statuses, forwarded) = fixture.coverage.lock().expect("coverage").clone();
    eprintln!("raw statuses {statuses:?}, forwarded {forwarded}");
    assert!(statuses.get(&400).is_some_and(|n| *n > 0), "{statuses:?}");
    assert!(statuses.get(&200).is_some_and(|n| *n > 0), "{statuses:?}");
    assert!(forwarded >= 5, "{forwarded} forwarded");
}
