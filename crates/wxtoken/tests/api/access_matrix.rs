//! Who may call what: every route of the router (and the fallback's WeChat paths, the
//! probes and the dashboard) against every kind of caller: no key, a malformed
//! Authorization header, a wrong key, a key revoked at runtime, a key for another app,
//! a key without the scope the route needs, a key with only that scope, and an admin key
//! with every scope. Only the allowed cells succeed; the others answer exactly 401
//! `unauthenticated` (with `WWW-Authenticate: Bearer`) or 403 `forbidden`, or, on the
//! WeChat-shaped routes, WeChat's own errcode. The router's source is read at build
//! time, so a route added without a row here fails the test.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use wechat_emulator::Config as EmulatorConfig;

use crate::helpers::*;
use crate::platform::{
    AES_KEY, COMPONENT_APPID, COMPONENT_SECRET, PUSH_TOKEN, push_of, ticket_xml,
};

/// The router, as written.
const ROUTER_SOURCE: &str = include_str!("../../src/http/mod.rs");

const APPID2: &str = "wx2222222222222222";
const MERCHANT: &str = "wxmerchant0000001";

/// Every scope, every app.
const ADMIN: &str = "wxt_matrix_admin_every_scope";
/// Every scope, only the app `other`.
const OTHER_APP: &str = "wxt_matrix_other_app_only";
const ONLY_READ: &str = "wxt_matrix_only_read";
const ONLY_INVALIDATE: &str = "wxt_matrix_only_invalidate";
const ONLY_ADMIN: &str = "wxt_matrix_only_admin";
const NO_READ: &str = "wxt_matrix_invalidate_admin";
const NO_INVALIDATE: &str = "wxt_matrix_read_admin";
const NO_ADMIN: &str = "wxt_matrix_read_invalidate";

/// The callers, one per column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    NoKey,
    /// `Basic <admin key>`: a good key in the wrong scheme.
    Malformed,
    WrongKey,
    /// A runtime client's key, revoked with `DELETE /v1/clients/{name}`.
    Revoked,
    /// Every scope, but only on the app `other`.
    OtherApp,
    /// Every app, every scope but the one the route needs.
    NoScope,
    /// Every app, only the scope the route needs.
    Scoped,
    Admin,
}

const COLUMNS: [Col; 8] = [
    Col::NoKey,
    Col::Malformed,
    Col::WrongKey,
    Col::Revoked,
    Col::OtherApp,
    Col::NoScope,
    Col::Scoped,
    Col::Admin,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Read,
    Invalidate,
    Admin,
}

/// How a route decides who may call it.
#[derive(Clone, Copy, Debug)]
enum Guard {
    /// A Bearer key with this scope on the app in the path.
    App(Need),
    /// A Bearer key with this scope; whether a key limited to another app succeeds.
    Global(Need, bool),
    /// Nobody is asked for anything.
    Open,
    /// WeChat-shaped: the key is a query or body field (`{key}`); WeChat's errcode for
    /// a missing one and for one that is refused.
    KeyField { missing: i64, refused: i64 },
    /// WeChat-shaped, for an appid or corpid no app has: the errcode of a missing key,
    /// else 40013 for every key.
    UnknownApp { missing: i64 },
    /// The same answer whoever calls (the Authorization header plays no part).
    Fixed(Want),
}

/// What a cell must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// The row's success.
    Ok,
    Unauthenticated,
    Forbidden,
    /// An error status and code of the v1 shape.
    Error(u16, &'static str),
    /// HTTP 200 with WeChat's `errcode`.
    Wx(i64),
}

/// What has to exist before a cell's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prep {
    Nothing,
    /// A runtime app `{u}`.
    RuntimeApp,
    /// A runtime client `{u}` of the app `shop`.
    RuntimeClient,
    /// A fresh authorization code in `{code}`.
    AuthCode,
    /// A push signed by WeChat (path and body made here).
    SignedPush,
}

struct Row {
    /// `METHOD /template` as the router names it, or `fallback`.
    route: &'static str,
    method: &'static str,
    /// With `{u}` (unique per cell), `{key}`, `{token}`, `{code}`.
    path: &'static str,
    body: Option<&'static str>,
    guard: Guard,
    /// The success status; WeChat-shaped rows also need an errcode of 0 or none.
    ok: u16,
    wechat: bool,
    prep: Prep,
}

const fn row(
    route: &'static str,
    method: &'static str,
    path: &'static str,
    guard: Guard,
    ok: u16,
) -> Row {
    Row {
        route,
        method,
        path,
        body: None,
        guard,
        ok,
        wechat: false,
        prep: Prep::Nothing,
    }
}

impl Row {
    const fn body(mut self, body: &'static str) -> Self {
        self.body = Some(body);
        self
    }

    const fn prep(mut self, prep: Prep) -> Self {
        self.prep = prep;
        self
    }

    const fn wechat(mut self) -> Self {
        self.wechat = true;
        self
    }
}

use Guard::{App, Fixed, Global, KeyField, Open, UnknownApp};
use Need::{Admin, Invalidate, Read};

const AUTHORIZER: &str = "/v1/apps/platform/authorizers/wxmerchant0000001";

fn rows() -> Vec<Row> {
    vec![
        row("GET /v1/apps", "GET", "/v1/apps", Global(Read, true), 200),
        row("GET /v1/apps/{app}", "GET", "/v1/apps/shop", App(Read), 200),
        row("PUT /v1/apps/{app}", "PUT", "/v1/apps/{u}", App(Admin), 201)
            .body(r#"{"appid": "wx2222222222222222", "secret": "s2"}"#),
        row("DELETE /v1/apps/{app}", "DELETE", "/v1/apps/{u}", App(Admin), 204)
            .prep(Prep::RuntimeApp),
        row("GET /v1/clients", "GET", "/v1/clients", Global(Admin, true), 200),
        row("POST /v1/clients", "POST", "/v1/clients", Global(Admin, false), 201)
            .body(r#"{"name": "{u}", "apps": ["shop"], "scopes": ["read"]}"#),
        row(
            "DELETE /v1/clients/{name}",
            "DELETE",
            "/v1/clients/{u}",
            Global(Admin, false),
            204,
        )
        .prep(Prep::RuntimeClient),
        row("GET /v1/audit", "GET", "/v1/audit", Global(Admin, true), 200),
        row(
            "POST /v1/apps/{app}/quota/clear",
            "POST",
            "/v1/apps/shop/quota/clear",
            App(Admin),
            200,
        ),
        row("GET /v1/alerts", "GET", "/v1/alerts", Global(Read, true), 200),
        row(
            "GET /v1/apps/{app}/access_token",
            "GET",
            "/v1/apps/shop/access_token",
            App(Read),
            200,
        ),
        row(
            "POST /v1/apps/{app}/access_token/invalidate",
            "POST",
            "/v1/apps/shop/access_token/invalidate",
            App(Invalidate),
            200,
        )
        .body(r#"{"access_token": "not-the-current-one"}"#),
        row(
            "GET /v1/apps/{app}/ticket/{ticket}",
            "GET",
            "/v1/apps/shop/ticket/jsapi",
            App(Read),
            200,
        ),
        row(
            "POST /v1/apps/{app}/ticket/{ticket}/invalidate",
            "POST",
            "/v1/apps/shop/ticket/jsapi/invalidate",
            App(Invalidate),
            200,
        )
        .body(r#"{"ticket": "not-the-current-one"}"#),
        row(
            "POST /v1/apps/{app}/jssdk/config",
            "POST",
            "/v1/apps/shop/jssdk/config",
            App(Read),
            200,
        )
        .body(r#"{"url": "https://shop.example/p", "ticket": "jsapi"}"#),
        row(
            "POST /v1/apps/{app}/jssdk/card_sign",
            "POST",
            "/v1/apps/shop/jssdk/card_sign",
            App(Read),
            200,
        )
        .body(r#"{"card_id": "card-1"}"#),
        row(
            "ANY /v1/apps/{app}/proxy/{*path}",
            "GET",
            "/v1/apps/shop/proxy/cgi-bin/get_api_domain_ip",
            App(Read),
            200,
        ),
        row(
            "ANY /v1/apps/{app}/proxy/{*path}",
            "POST",
            "/v1/apps/shop/proxy/cgi-bin/message/custom/send",
            App(Read),
            200,
        )
        .body(r#"{"touser": "o1", "msgtype": "text"}"#),
        // The callback is WeChat's: its signature decides, never a key.
        row(
            "POST /v1/apps/{app}/callback",
            "POST",
            "",
            Fixed(Want::Ok),
            200,
        )
        .prep(Prep::SignedPush),
        row(
            "POST /v1/apps/{app}/callback",
            "POST",
            "/v1/apps/platform/callback?timestamp=1&nonce=n&encrypt_type=aes&msg_signature=forged",
            Fixed(Want::Error(401, "bad_signature")),
            200,
        )
        .body("<xml><AppId><![CDATA[wxcomponent000001]]></AppId><Encrypt><![CDATA[AAAA]]></Encrypt></xml>"),
        row(
            "POST /v1/apps/{app}/callback",
            "POST",
            "/v1/apps/platform/callback",
            Fixed(Want::Error(400, "bad_request")),
            200,
        )
        .body("<xml></xml>"),
        row(
            "GET /v1/apps/{app}/authorizers",
            "GET",
            "/v1/apps/platform/authorizers",
            App(Read),
            200,
        ),
        row(
            "POST /v1/apps/{app}/authorizers",
            "POST",
            "/v1/apps/platform/authorizers",
            App(Admin),
            201,
        )
        .body(r#"{"authorization_code": "{code}"}"#)
        .prep(Prep::AuthCode),
        row(
            "POST /v1/apps/{app}/authorizers/auth_url",
            "POST",
            "/v1/apps/platform/authorizers/auth_url",
            App(Admin),
            200,
        )
        .body(r#"{"redirect_uri": "https://shop.example/cb"}"#),
        row(
            "POST /v1/apps/{app}/authorizers/import",
            "POST",
            "/v1/apps/platform/authorizers/import",
            App(Admin),
            200,
        ),
        row(
            "GET /v1/apps/{app}/authorizers/{appid}/access_token",
            "GET",
            "{authorizer}/access_token",
            App(Read),
            200,
        ),
        row(
            "POST /v1/apps/{app}/authorizers/{appid}/access_token/invalidate",
            "POST",
            "{authorizer}/access_token/invalidate",
            App(Invalidate),
            200,
        )
        .body(r#"{"access_token": "not-the-current-one"}"#),
        row(
            "GET /v1/apps/{app}/authorizers/{appid}/ticket/{ticket}",
            "GET",
            "{authorizer}/ticket/jsapi",
            App(Read),
            200,
        ),
        row(
            "POST /v1/apps/{app}/authorizers/{appid}/ticket/{ticket}/invalidate",
            "POST",
            "{authorizer}/ticket/jsapi/invalidate",
            App(Invalidate),
            200,
        )
        .body(r#"{"ticket": "not-the-current-one"}"#),
        row(
            "POST /v1/apps/{app}/authorizers/{appid}/jssdk/config",
            "POST",
            "{authorizer}/jssdk/config",
            App(Read),
            200,
        )
        .body(r#"{"url": "https://merchant.example/"}"#),
        row(
            "GET /v1/apps/{app}/timeline",
            "GET",
            "/v1/apps/shop/timeline",
            App(Read),
            200,
        ),
        // WeChat's shapes: the client key stands where the app secret was.
        row(
            "GET /cgi-bin/token",
            "GET",
            "/cgi-bin/token?grant_type=client_credential&appid=wx0123456789abcdef&secret={key}",
            KeyField {
                missing: 41004,
                refused: 40001,
            },
            200,
        )
        .wechat(),
        row(
            "POST /cgi-bin/stable_token",
            "POST",
            "/cgi-bin/stable_token",
            KeyField {
                missing: 41004,
                refused: 40125,
            },
            200,
        )
        .body(r#"{"grant_type": "client_credential", "appid": "wx0123456789abcdef", "secret": "{key}"}"#)
        .wechat(),
        row(
            "GET /cgi-bin/gettoken",
            "GET",
            "/cgi-bin/gettoken?corpid=ww0123456789abcdef&corpsecret={key}",
            KeyField {
                missing: 41004,
                refused: 40001,
            },
            200,
        )
        .wechat(),
        // An app WeChat would not know: 40013 whatever the key (once there is one).
        row(
            "GET /cgi-bin/token",
            "GET",
            "/cgi-bin/token?grant_type=client_credential&appid=wxnosuchapp0000000&secret={key}",
            UnknownApp { missing: 41004 },
            200,
        ),
        row(
            "GET /cgi-bin/gettoken",
            "GET",
            "/cgi-bin/gettoken?corpid=wwnosuchcorp000000&corpsecret={key}",
            UnknownApp { missing: 41004 },
            200,
        ),
        // The gateway: the token decides, never a key.
        row(
            "fallback",
            "GET",
            "/cgi-bin/get_api_domain_ip?access_token={token}",
            Fixed(Want::Ok),
            200,
        )
        .wechat(),
        row(
            "fallback",
            "GET",
            "/cgi-bin/ticket/getticket?access_token={token}&type=jsapi",
            Fixed(Want::Ok),
            200,
        )
        .wechat(),
        row(
            "fallback",
            "GET",
            "/cgi-bin/get_api_domain_ip?access_token=forged",
            Fixed(Want::Wx(40014)),
            200,
        ),
        row(
            "fallback",
            "GET",
            "/cgi-bin/get_api_domain_ip",
            Fixed(Want::Wx(41001)),
            200,
        ),
        row(
            "fallback",
            "GET",
            "/sns/jscode2session?appid=wx0123456789abcdef&secret={key}&js_code={u}&grant_type=authorization_code",
            KeyField {
                missing: 41004,
                refused: 40125,
            },
            200,
        )
        .wechat(),
        row(
            "fallback",
            "GET",
            "/no/such/path",
            Fixed(Want::Error(404, "not_found")),
            200,
        ),
        row("GET /ui", "GET", "/ui", Open, 200),
        row("GET /ui/", "GET", "/ui/", Open, 200),
        row("GET /ui/app.js", "GET", "/ui/app.js", Open, 200),
        row("GET /ui/style.css", "GET", "/ui/style.css", Open, 200),
        row("GET /healthz", "GET", "/healthz", Open, 200),
        row("GET /readyz", "GET", "/readyz", Open, 200),
        row("GET /metrics", "GET", "/metrics", Open, 200),
    ]
}

/// `METHOD /template` of every route in the router's source.
fn router_routes() -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    let chunks: Vec<&str> = ROUTER_SOURCE.split(".route(").skip(1).collect();
    for chunk in chunks {
        let chunk = chunk.split(".fallback(").next().unwrap_or(chunk);
        let path = chunk
            .split('"')
            .nth(1)
            .expect("a route starts with its path");
        let handlers = &chunk[chunk.find(path).expect("path") + path.len()..];
        let mut found = 0;
        for (call, method) in [
            ("get(", "GET"),
            ("post(", "POST"),
            ("put(", "PUT"),
            ("delete(", "DELETE"),
            ("any(", "ANY"),
        ] {
            if handlers.contains(call) {
                routes.insert(format!("{method} {path}"));
                found += 1;
            }
        }
        assert!(found > 0, "no method found for the route {path}");
    }
    routes
}

fn expected(guard: Guard, col: Col) -> Want {
    let bearer = |other_app_ok: bool| match col {
        Col::NoKey | Col::Malformed | Col::WrongKey | Col::Revoked => Want::Unauthenticated,
        Col::OtherApp if other_app_ok => Want::Ok,
        Col::OtherApp | Col::NoScope => Want::Forbidden,
        Col::Scoped | Col::Admin => Want::Ok,
    };
    match guard {
        App(_) => bearer(false),
        Global(_, other_app_ok) => bearer(other_app_ok),
        Open => Want::Ok,
        KeyField { missing, refused } => match col {
            Col::NoKey => Want::Wx(missing),
            Col::Scoped | Col::Admin => Want::Ok,
            _ => Want::Wx(refused),
        },
        UnknownApp { missing } => match col {
            Col::NoKey => Want::Wx(missing),
            _ => Want::Wx(40013),
        },
        Fixed(want) => want,
    }
}

/// The key a column holds for a route that needs `need` (`None`: no key at all).
fn key_of(col: Col, need: Need, revoked: &str) -> Option<String> {
    let key = match col {
        Col::NoKey => return None,
        Col::Malformed => ADMIN,
        Col::WrongKey => "wxt_matrix_no_such_key",
        Col::Revoked => revoked,
        Col::OtherApp => OTHER_APP,
        Col::NoScope => match need {
            Need::Read => NO_READ,
            Need::Invalidate => NO_INVALIDATE,
            Need::Admin => NO_ADMIN,
        },
        Col::Scoped => match need {
            Need::Read => ONLY_READ,
            Need::Invalidate => ONLY_INVALIDATE,
            Need::Admin => ONLY_ADMIN,
        },
        Col::Admin => ADMIN,
    };
    Some(key.to_owned())
}

/// The Authorization header a column sends.
fn header_of(col: Col, key: Option<&str>) -> Option<String> {
    let key = key?;
    Some(match col {
        Col::Malformed => format!("Basic {key}"),
        _ => format!("Bearer {key}"),
    })
}

fn toml(api_base: &str, db: &str) -> String {
    let client = |name: &str, key: &str, apps: &str, scopes: &str| {
        format!(
            "[[clients]]\nname = \"{name}\"\nkey = \"{key}\"\napps = {apps}\nscopes = {scopes}\n"
        )
    };
    let clients = [
        client(
            "admin",
            ADMIN,
            r#"["*"]"#,
            r#"["read", "invalidate", "admin"]"#,
        ),
        client(
            "other-app",
            OTHER_APP,
            r#"["other"]"#,
            r#"["read", "invalidate", "admin"]"#,
        ),
        client("only-read", ONLY_READ, r#"["*"]"#, r#"["read"]"#),
        client(
            "only-invalidate",
            ONLY_INVALIDATE,
            r#"["*"]"#,
            r#"["invalidate"]"#,
        ),
        client("only-admin", ONLY_ADMIN, r#"["*"]"#, r#"["admin"]"#),
        client("no-read", NO_READ, r#"["*"]"#, r#"["invalidate", "admin"]"#),
        client(
            "no-invalidate",
            NO_INVALIDATE,
            r#"["*"]"#,
            r#"["read", "admin"]"#,
        ),
        client(
            "no-admin",
            NO_ADMIN,
            r#"["*"]"#,
            r#"["read", "invalidate"]"#,
        ),
    ]
    .concat();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
path = "{db}"
[upstream]
api_base = "{api_base}"
wecom_base = "{api_base}"
[[apps]]
id = "shop"
appid = "{APPID}"
secret = "{SECRET}"
[[apps]]
id = "other"
appid = "wxfedcba9876543210"
secret = "unknown-to-the-emulator"
[[apps]]
id = "hr"
kind = "wecom"
corpid = "{CORPID}"
agentid = {AGENTID}
secret = "{WECOM_SECRET}"
[[apps]]
id = "platform"
kind = "component"
appid = "{COMPONENT_APPID}"
secret = "{COMPONENT_SECRET}"
token = "{PUSH_TOKEN}"
encoding_aes_key = "{AES_KEY}"
{clients}"#
    )
}

/// Sends one request: status, body (JSON or text) and the WWW-Authenticate header.
async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    header: Option<&str>,
    body: Option<String>,
) -> (u16, Value, Option<String>) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = app.http.request(method, format!("{}{path}", app.base));
    if let Some(header) = header {
        request = request.header("authorization", header);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, challenge)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// What is wrong with an answer, if anything.
fn mismatch(
    row: &Row,
    want: Want,
    (status, body, challenge): &(u16, Value, Option<String>),
) -> Option<String> {
    let errcode = body["errcode"].as_i64();
    let good = match want {
        Want::Ok => *status == row.ok && (!row.wechat || errcode.is_none_or(|c| c == 0)),
        Want::Unauthenticated => {
            *status == 401
                && code(body) == "unauthenticated"
                && challenge.as_deref() == Some("Bearer")
        }
        Want::Forbidden => *status == 403 && code(body) == "forbidden",
        Want::Error(want_status, want_code) => *status == want_status && code(body) == want_code,
        Want::Wx(want_code) => *status == 200 && errcode == Some(want_code),
    };
    (!good).then(|| format!("wanted {want:?}, got {status} {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_admits_exactly_the_callers_it_should() {
    let emulator = EmulatorConfig::default()
        .with_app(APPID, SECRET)
        .with_app(APPID2, "s2")
        .with_wecom_app(CORPID, AGENTID, WECOM_SECRET)
        .with_component(COMPONENT_APPID, COMPONENT_SECRET, PUSH_TOKEN, AES_KEY);
    let app = spawn_app_from(emulator, toml).await;
    let wechat = app.emulator.emulator.clone();
    let admin = Some(format!("Bearer {ADMIN}"));
    let admin = admin.as_deref();

    // The platform has its verify ticket and one authorizer.
    let ticket = wechat.verify_ticket(COMPONENT_APPID).expect("component");
    let push = push_of(&ticket_xml(&ticket, unix_now()));
    let path = format!(
        "/v1/apps/platform/callback?timestamp={}&nonce={}&encrypt_type=aes&msg_signature={}",
        push.timestamp, push.nonce, push.signature
    );
    let answer = send(&app, "POST", &path, None, Some(push.body)).await;
    assert_eq!(answer.0, 200, "{answer:?}");
    let code_of = |appid: &str| wechat.authorize(COMPONENT_APPID, appid).expect("component");
    let body = json!({ "authorization_code": code_of(MERCHANT) }).to_string();
    let answer = send(
        &app,
        "POST",
        "/v1/apps/platform/authorizers",
        admin,
        Some(body),
    )
    .await;
    assert_eq!(answer.0, 201, "{answer:?}");

    // A key that worked, revoked at runtime.
    let body = json!({"name": "revoked", "apps": ["*"], "scopes": ["read", "invalidate", "admin"]});
    let (status, created, _) =
        send(&app, "POST", "/v1/clients", admin, Some(body.to_string())).await;
    assert_eq!(status, 201, "{created}");
    let revoked = created["key"].as_str().expect("key").to_owned();
    let answer = send(
        &app,
        "GET",
        "/v1/apps",
        Some(&format!("Bearer {revoked}")),
        None,
    )
    .await;
    assert_eq!(answer.0, 200, "the new key works: {answer:?}");
    let answer = send(&app, "DELETE", "/v1/clients/revoked", admin, None).await;
    assert_eq!(answer.0, 204, "{answer:?}");

    let (status, body, _) = send(&app, "GET", "/v1/apps/shop/access_token", admin, None).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().expect("token").to_owned();
    let rows = rows();
    let mut failures = Vec::new();
    let mut cells = 0;
    for (r, row) in rows.iter().enumerate() {
        let need = match row.guard {
            App(need) | Global(need, _) => need,
            _ => Need::Read,
        };
        for (c, col) in COLUMNS.into_iter().enumerate() {
            let u = format!("m{r}c{c}");
            let key = key_of(col, need, &revoked);
            let field = match col {
                Col::NoKey => String::new(),
                Col::Malformed => format!("Basic {ADMIN}"),
                _ => key.clone().unwrap_or_default(),
            };
            let field_in_query: String =
                form_urlencoded::byte_serialize(field.as_bytes()).collect();
            let mut path = row
                .path
                .replace("{authorizer}", AUTHORIZER)
                .replace("{key}", &field_in_query)
                .replace("{token}", &token)
                .replace("{u}", &u);
            let mut body = row
                .body
                .map(|b| b.replace("{key}", &field).replace("{u}", &u));
            match row.prep {
                Prep::Nothing => {}
                Prep::RuntimeApp => {
                    let spec = json!({"appid": APPID2, "secret": "s2"}).to_string();
                    let answer =
                        send(&app, "PUT", &format!("/v1/apps/{u}"), admin, Some(spec)).await;
                    assert_eq!(answer.0, 201, "{answer:?}");
                }
                Prep::RuntimeClient => {
                    let spec = json!({"name": u, "apps": ["shop"]}).to_string();
                    let answer = send(&app, "POST", "/v1/clients", admin, Some(spec)).await;
                    assert_eq!(answer.0, 201, "{answer:?}");
                }
                Prep::AuthCode => {
                    let merchant = format!("wxmatrix{r:04}{c:04}");
                    body = body.map(|b| b.replace("{code}", &code_of(&merchant)));
                }
                Prep::SignedPush => {
                    let ticket = wechat.verify_ticket(COMPONENT_APPID).expect("component");
                    let push = push_of(&ticket_xml(&ticket, unix_now()));
                    path = format!(
                        "/v1/apps/platform/callback?timestamp={}&nonce={}&encrypt_type=aes&msg_signature={}",
                        push.timestamp, push.nonce, push.signature
                    );
                    body = Some(push.body);
                }
            }
            let header = header_of(col, key.as_deref());
            let answer = send(&app, row.method, &path, header.as_deref(), body).await;
            let want = expected(row.guard, col);
            cells += 1;
            if let Some(wrong) = mismatch(row, want, &answer) {
                failures.push(format!("{} {path} as {col:?}: {wrong}", row.method));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells are wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // An admin key limited to an app gives out keys of that app only: never one of
    // every app, which would be every app for itself.
    let other_admin = format!("Bearer {OTHER_APP}");
    for (apps, status) in [
        (json!(["*"]), 403),
        (json!(["other", "shop"]), 403),
        (json!(["other"]), 201),
    ] {
        let body = json!({"name": "minted", "apps": apps, "scopes": ["read", "admin"]});
        let answer = send(
            &app,
            "POST",
            "/v1/clients",
            Some(&other_admin),
            Some(body.to_string()),
        )
        .await;
        assert_eq!(answer.0, status, "{apps}: {answer:?}");
    }
    // ...and takes back only those: not the key of every app it would like gone.
    let answer = send(
        &app,
        "DELETE",
        "/v1/clients/revoked",
        Some(&other_admin),
        None,
    )
    .await;
    assert_eq!(answer.0, 404, "already revoked: {answer:?}");
    let answer = send(
        &app,
        "DELETE",
        "/v1/clients/minted",
        Some(&other_admin),
        None,
    )
    .await;
    assert_eq!(answer.0, 204, "{answer:?}");

    // ...and lists only the clients it could give out, and reads only the audit
    // entries about its app or its own; an admin key of every app sees them all.
    let body = json!({"name": "other-reader", "apps": ["other"], "scopes": ["read"]});
    let answer = send(
        &app,
        "POST",
        "/v1/clients",
        Some(&other_admin),
        Some(body.to_string()),
    )
    .await;
    assert_eq!(answer.0, 201, "{answer:?}");
    let names = |answer: &(u16, Value, Option<String>)| -> BTreeSet<String> {
        answer.1["clients"]
            .as_array()
            .expect("clients")
            .iter()
            .map(|c| c["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let limited = send(&app, "GET", "/v1/clients", Some(&other_admin), None).await;
    assert_eq!(limited.0, 200, "{limited:?}");
    assert_eq!(
        names(&limited),
        BTreeSet::from(["other-app".to_owned(), "other-reader".to_owned()])
    );
    let admin = format!("Bearer {ADMIN}");
    let everyone = send(&app, "GET", "/v1/clients", Some(&admin), None).await;
    assert!(
        names(&everyone).is_superset(&names(&limited)) && names(&everyone).contains("admin"),
        "{everyone:?}"
    );
    let audit = |key: String| {
        let app = &app;
        async move {
            let answer = send(app, "GET", "/v1/audit?since=0&limit=1000", Some(&key), None).await;
            assert_eq!(answer.0, 200, "{answer:?}");
            answer.1["entries"].as_array().expect("entries").clone()
        }
    };
    let seen = audit(other_admin.clone()).await;
    assert!(!seen.is_empty());
    for entry in &seen {
        assert!(
            entry["client"] == "other-app" || entry["app"] == "other",
            "{entry}"
        );
    }
    let all = audit(admin).await;
    assert!(
        all.iter()
            .any(|e| e["client"] != "other-app" && e["app"] != "other"),
        "the matrix's own admin actions are in the log: {all:?}"
    );
    assert!(all.len() > seen.len());

    // Every route of the router has a row, and every row names a route.
    let in_router = router_routes();
    let in_table: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.route != "fallback")
        .map(|r| r.route.to_owned())
        .collect();
    let missing: Vec<&String> = in_router.difference(&in_table).collect();
    assert!(missing.is_empty(), "routes without a row: {missing:?}");
    let stale: Vec<&String> = in_table.difference(&in_router).collect();
    assert!(stale.is_empty(), "rows of no route: {stale:?}");
    let paths: BTreeSet<&str> = in_router
        .iter()
        .filter_map(|r| r.split_once(' ').map(|(_, path)| path))
        .collect();
    assert_eq!(
        paths.len(),
        ROUTER_SOURCE.matches(".route(").count(),
        "the parse missed a route: {in_router:?}"
    );
}

#[tokio::test]
async fn malformed_authorization_headers_are_401_with_a_bearer_challenge() {
    let app = spawn_app().await;
    for header in [
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer    ".to_owned(),
        format!("Token {KEY}"),
        format!("Bearer{KEY}"),
        KEY.to_owned(),
        format!("Basic {KEY}"),
        format!("Bearer {KEY}x"),
        format!("Bearer x{KEY}"),
    ] {
        let answer = send(
            &app,
            "GET",
            "/v1/apps/shop/access_token",
            Some(&header),
            None,
        )
        .await;
        assert_eq!(
            (answer.0, code(&answer.1), answer.2.as_deref()),
            (401, "unauthenticated", Some("Bearer")),
            "{header:?}: {answer:?}"
        );
    }
    // A header that is not text.
    let response = app
        .http
        .get(format!("{}/v1/apps/shop/access_token", app.base))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").expect("opaque bytes"),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 401);
    // Both spellings of the scheme that SDKs send.
    for scheme in ["Bearer", "bearer"] {
        let answer = send(
            &app,
            "GET",
            "/v1/apps/shop/access_token",
            Some(&format!("{scheme} {KEY}")),
            None,
        )
        .await;
        assert_eq!(answer.0, 200, "{scheme}: {answer:?}");
    }
}
