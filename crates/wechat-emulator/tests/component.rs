//! End-to-end tests of the third-party platform: the component APIs over HTTP, the
//! `/_emulator/*` hooks, and the pushes, received by a tiny callback server that
//! checks and decrypts them with the emulator's own `MsgCrypt` and answers `success`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use wechat_emulator::crypto::{MsgCrypt, xml_field};
use wechat_emulator::{
    ComponentCredentials, Config, FailKind, RunningEmulator, TokenCheck, UNKNOWN_APP, spawn,
};

const COMPONENT: &str = "wxcomponent0000001";
const SECRET: &str = "component-secret";
const PUSH_TOKEN: &str = "push-token";
const KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";

fn config() -> Config {
    Config::default().with_component(COMPONENT, SECRET, PUSH_TOKEN, KEY)
}

async fn post(emu: &RunningEmulator, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", emu.base_url()))
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

/// A WeChat API call: HTTP 200 whatever the outcome.
async fn wx(emu: &RunningEmulator, path: &str, body: Value) -> Value {
    let (status, body) = post(emu, path, body).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

async fn get(emu: &RunningEmulator, path: &str) -> Value {
    reqwest::get(format!("{}{path}", emu.base_url()))
        .await
        .expect("sent")
        .json()
        .await
        .expect("json")
}

fn errcode(v: &Value) -> i64 {
    v["errcode"].as_i64().unwrap_or(0)
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

async fn component_token(emu: &RunningEmulator, ticket: &str) -> Value {
    wx(
        emu,
        "/cgi-bin/component/api_component_token",
        json!({
            "component_appid": COMPONENT,
            "component_appsecret": SECRET,
            "component_verify_ticket": ticket,
        }),
    )
    .await
}

async fn component_call(emu: &RunningEmulator, api: &str, token: &str, body: Value) -> Value {
    wx(
        emu,
        &format!("/cgi-bin/component/{api}?component_access_token={token}"),
        body,
    )
    .await
}

async fn authorize(emu: &RunningEmulator, authorizer: &str) -> String {
    let (status, body) = post(
        emu,
        "/_emulator/authorize",
        json!({"component_appid": COMPONENT, "authorizer_appid": authorizer}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 3600);
    text(&body, "authorization_code").to_owned()
}

#[tokio::test]
async fn onboarding_refreshing_and_revoking_an_authorizer() {
    let emu = spawn(config()).await.expect("emulator");
    let ticket = emu
        .emulator
        .verify_ticket(COMPONENT)
        .expect("known component");
    let answer = component_token(&emu, &ticket).await;
    assert_eq!(answer["expires_in"], 7200, "{answer}");
    let ct = text(&answer, "component_access_token").to_owned();

    let pre = component_call(
        &emu,
        "api_create_preauthcode",
        &ct,
        json!({"component_appid": COMPONENT}),
    )
    .await;
    assert_eq!(pre["expires_in"], 1800, "{pre}");
    assert!(text(&pre, "pre_auth_code").starts_with("preauthcode@@@"));

    let code = authorize(&emu, "wxauthorizer00001").await;
    let query = json!({"component_appid": COMPONENT, "authorization_code": code});
    let auth = component_call(&emu, "api_query_auth", &ct, query.clone()).await;
    let info = &auth["authorization_info"];
    assert_eq!(info["authorizer_appid"], "wxauthorizer00001", "{auth}");
    assert_eq!(info["expires_in"], 7200);
    assert_eq!(
        info["func_info"][0],
        json!({"funcscope_category": {"id": 1}})
    );
    let access = text(info, "authorizer_access_token").to_owned();
    let refresh = text(info, "authorizer_refresh_token").to_owned();
    assert_eq!(
        emu.emulator
            .refresh_token_of(COMPONENT, "wxauthorizer00001")
            .as_deref(),
        Some(refresh.as_str())
    );
    // The code works once.
    let again = component_call(&emu, "api_query_auth", &ct, query).await;
    assert_eq!(errcode(&again), 61010, "{again}");

    // The authorizer's token is an official token: ordinary APIs and tickets take it.
    let user = get(
        &emu,
        &format!("/cgi-bin/user/info?access_token={access}&openid=o1"),
    )
    .await;
    assert_eq!(user["openid"], "o1", "{user}");
    let ticket = get(
        &emu,
        &format!("/cgi-bin/ticket/getticket?access_token={access}&type=jsapi"),
    )
    .await;
    assert_eq!(errcode(&ticket), 0, "{ticket}");
    assert_eq!(
        emu.emulator.current_ticket("wxauthorizer00001", "jsapi"),
        ticket["ticket"].as_str().map(str::to_owned)
    );

    // Refreshing rotates the refresh token; the old one is refused.
    let refresh_body = |refresh: &str| {
        json!({
            "component_appid": COMPONENT,
            "authorizer_appid": "wxauthorizer00001",
            "authorizer_refresh_token": refresh,
        })
    };
    let next = component_call(&emu, "api_authorizer_token", &ct, refresh_body(&refresh)).await;
    let next_refresh = text(&next, "authorizer_refresh_token").to_owned();
    assert_ne!(next_refresh, refresh);
    assert_ne!(text(&next, "authorizer_access_token"), access);
    assert_eq!(next["expires_in"], 7200);
    let stale = component_call(&emu, "api_authorizer_token", &ct, refresh_body(&refresh)).await;
    assert_eq!(errcode(&stale), 61023, "{stale}");
    assert!(text(&stale, "errmsg").starts_with("refresh_token is invalid rid: "));

    // The list recovers the current refresh token.
    let page = component_call(
        &emu,
        "api_get_authorizer_list",
        &ct,
        json!({"component_appid": COMPONENT, "offset": 0, "count": 500}),
    )
    .await;
    assert_eq!(page["total_count"], 1, "{page}");
    assert_eq!(page["list"][0]["authorizer_appid"], "wxauthorizer00001");
    assert_eq!(page["list"][0]["refresh_token"], next_refresh.as_str());
    assert!(
        page["list"][0]["auth_time"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000)
    );

    // Revoked: the tokens are dead, the refresh token says "not authorized".
    let (status, _) = post(
        &emu,
        "/_emulator/unauthorize",
        json!({"component_appid": COMPONENT, "authorizer_appid": "wxauthorizer00001"}),
    )
    .await;
    assert_eq!(status, 200);
    let user = get(
        &emu,
        &format!("/cgi-bin/user/info?access_token={access}&openid=o1"),
    )
    .await;
    assert_eq!(errcode(&user), 40001, "{user}");
    assert_eq!(emu.emulator.check_token(&access), TokenCheck::Invalid);
    let gone = component_call(
        &emu,
        "api_authorizer_token",
        &ct,
        refresh_body(&next_refresh),
    )
    .await;
    assert_eq!(errcode(&gone), 61003, "{gone}");
    let (status, _) = post(
        &emu,
        "/_emulator/unauthorize",
        json!({"component_appid": COMPONENT, "authorizer_appid": "wxauthorizer00001"}),
    )
    .await;
    assert_eq!(status, 404, "no longer authorized");

    let stats = get(&emu, "/_emulator/stats").await;
    let c = &stats["components"][COMPONENT];
    assert_eq!(c["component_token_calls"], 1, "{stats}");
    assert_eq!(c["preauthcode_calls"], 1);
    assert_eq!(c["query_auth_calls"], 2);
    assert_eq!(c["authorizer_token_calls"], 3);
    assert_eq!(c["authorizer_list_calls"], 1);
    assert_eq!(c["authorized"], 0);
    assert_eq!(c["authorizers"]["tokens_issued"], 2);
    assert_eq!(c["authorizers"]["api_calls"], 1);
    assert_eq!(c["authorizers"]["ticket_calls"], 1);
    assert_eq!(c["authorizers"]["stale_rejections"], 1);
}

#[tokio::test]
async fn component_errors_have_wechats_codes() {
    let emu = spawn(config()).await.expect("emulator");
    let answer = component_token(&emu, "ticket@@@never-issued").await;
    assert_eq!(errcode(&answer), 61006, "{answer}");
    let old = emu.emulator.verify_ticket(COMPONENT).expect("ticket");
    let latest = emu.emulator.verify_ticket(COMPONENT).expect("ticket");
    assert_eq!(errcode(&component_token(&emu, &old).await), 61005);
    let ct = text(
        &component_token(&emu, &latest).await,
        "component_access_token",
    )
    .to_owned();
    let wrong = wx(
        &emu,
        "/cgi-bin/component/api_component_token",
        json!({
            "component_appid": COMPONENT,
            "component_appsecret": "wrong",
            "component_verify_ticket": latest,
        }),
    )
    .await;
    assert_eq!(errcode(&wrong), 40125);
    let unknown = wx(
        &emu,
        "/cgi-bin/component/api_component_token",
        json!({
            "component_appid": "wxnobody",
            "component_appsecret": SECRET,
            "component_verify_ticket": latest,
        }),
    )
    .await;
    assert_eq!(errcode(&unknown), 61011);
    let response = reqwest::Client::new()
        .post(format!(
            "{}/cgi-bin/component/api_component_token",
            emu.base_url()
        ))
        .body("not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(errcode(&body), 47001);

    let body = json!({"component_appid": COMPONENT});
    let dead = component_call(&emu, "api_create_preauthcode", "nope", body.clone()).await;
    assert_eq!(errcode(&dead), 40001);
    // The newer docs' `access_token` parameter works too.
    let newer = wx(
        &emu,
        &format!("/cgi-bin/component/api_create_preauthcode?access_token={ct}"),
        body,
    )
    .await;
    assert!(newer["pre_auth_code"].is_string(), "{newer}");
    let unknown_code = component_call(
        &emu,
        "api_query_auth",
        &ct,
        json!({"component_appid": COMPONENT, "authorization_code": "queryauthcode@@@x"}),
    )
    .await;
    assert_eq!(errcode(&unknown_code), 61009);
    let too_many = component_call(
        &emu,
        "api_get_authorizer_list",
        &ct,
        json!({"component_appid": COMPONENT, "offset": 0, "count": 501}),
    )
    .await;
    assert_eq!(errcode(&too_many), 40170);
    // A component token is no token for an ordinary API.
    let misuse = get(
        &emu,
        &format!("/cgi-bin/get_api_domain_ip?access_token={ct}"),
    )
    .await;
    assert_eq!(errcode(&misuse), 40001);

    let (status, _) = post(
        &emu,
        "/_emulator/authorize",
        json!({"component_appid": "wxnobody", "authorizer_appid": "wxa"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &emu,
        "/_emulator/authorize",
        json!({"component_appid": COMPONENT}),
    )
    .await;
    assert_eq!(status, 400);
    let stats = emu.emulator.stats();
    // "wxnobody" and the body that was no JSON.
    assert_eq!(stats.component(UNKNOWN_APP).component_token_calls, 2);
    assert_eq!(stats.component(UNKNOWN_APP).preauthcode_calls, 1);
}

#[tokio::test]
async fn the_list_pages_through_many_authorizers() {
    let emu = spawn(config()).await.expect("emulator");
    let ticket = emu.emulator.verify_ticket(COMPONENT).expect("ticket");
    let ct = text(
        &component_token(&emu, &ticket).await,
        "component_access_token",
    )
    .to_owned();
    for i in 0..1_203 {
        assert!(
            emu.emulator
                .authorize(COMPONENT, &format!("wx{i:05}"))
                .is_some()
        );
    }
    let mut seen = Vec::new();
    loop {
        let page = component_call(
            &emu,
            "api_get_authorizer_list",
            &ct,
            json!({"component_appid": COMPONENT, "offset": seen.len(), "count": 500}),
        )
        .await;
        assert_eq!(page["total_count"], 1_203);
        let list = page["list"].as_array().expect("list");
        if list.is_empty() {
            break;
        }
        seen.extend(list.iter().map(|e| text(e, "authorizer_appid").to_owned()));
    }
    let expected: Vec<String> = (0..1_203).map(|i| format!("wx{i:05}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn injected_failures_reach_the_component_token_endpoint() {
    let emu = spawn(Config {
        fail_rate: 1.0,
        fail_kinds: vec![FailKind::Http500],
        ..config()
    })
    .await
    .expect("emulator");
    let ticket = emu.emulator.verify_ticket(COMPONENT).expect("ticket");
    let response = reqwest::Client::new()
        .post(format!(
            "{}/cgi-bin/component/api_component_token",
            emu.base_url()
        ))
        .json(&json!({
            "component_appid": COMPONENT,
            "component_appsecret": SECRET,
            "component_verify_ticket": ticket,
        }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 500);
    assert_eq!(
        emu.emulator.stats().component(COMPONENT).injected_failures,
        1
    );
}

/// What the callback server saw: each push's decrypted message and its query.
#[derive(Clone)]
struct Receiver {
    crypt: MsgCrypt,
    /// The answer to give: status and body.
    answer: Arc<Mutex<(StatusCode, &'static str)>>,
    pushes: mpsc::UnboundedSender<(String, HashMap<String, String>)>,
}

async fn receive(
    State(receiver): State<Receiver>,
    Query(query): Query<HashMap<String, String>>,
    body: String,
) -> (StatusCode, &'static str) {
    let param = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    assert_eq!(param("encrypt_type"), "aes");
    assert_eq!(
        param("signature"),
        receiver.crypt.signature(param("timestamp"), param("nonce"))
    );
    assert_eq!(xml_field(&body, "AppId"), Some(COMPONENT));
    let message = receiver
        .crypt
        .open(
            param("timestamp"),
            param("nonce"),
            param("msg_signature"),
            &body,
        )
        .expect("a push signed and encrypted like WeChat's");
    let _ = receiver.pushes.send((message, query.clone()));
    *receiver.answer.lock().expect("answer")
}

/// A callback server on a loopback port: its URL (with a query of its own, which the
/// push must keep), the answer knob, and the pushes it decrypted.
async fn callback_server() -> (
    String,
    Arc<Mutex<(StatusCode, &'static str)>>,
    mpsc::UnboundedReceiver<(String, HashMap<String, String>)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let answer = Arc::new(Mutex::new((StatusCode::OK, "success")));
    let receiver = Receiver {
        crypt: MsgCrypt::new(PUSH_TOKEN, KEY, COMPONENT).expect("key"),
        answer: answer.clone(),
        pushes: tx,
    };
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/cb", routing::post(receive))
        .with_state(receiver);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/cb?platform=p1"), answer, rx)
}

async fn next_push(
    rx: &mut mpsc::UnboundedReceiver<(String, HashMap<String, String>)>,
) -> (String, HashMap<String, String>) {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a push within 5 s")
        .expect("the receiver runs")
}

#[tokio::test]
async fn pushes_arrive_encrypted_and_the_pushed_ticket_works() {
    let (url, answer, mut pushes) = callback_server().await;
    let emu = spawn(Config {
        components: vec![
            ComponentCredentials::new(COMPONENT, SECRET, PUSH_TOKEN, KEY).with_callback(url),
        ],
        // The first push comes at once; the next not within this test.
        verify_ticket_interval: Some(Duration::from_secs(3600)),
        ..Config::default()
    })
    .await
    .expect("emulator");

    let (message, query) = next_push(&mut pushes).await;
    assert_eq!(query.get("platform").map(String::as_str), Some("p1"));
    assert_eq!(xml_field(&message, "AppId"), Some(COMPONENT));
    assert_eq!(
        xml_field(&message, "InfoType"),
        Some("component_verify_ticket")
    );
    let ticket = xml_field(&message, "ComponentVerifyTicket")
        .expect("a ticket")
        .to_owned();
    assert!(ticket.starts_with("ticket@@@"), "{ticket}");
    let answer_json = component_token(&emu, &ticket).await;
    let ct = text(&answer_json, "component_access_token").to_owned();

    // Authorizing pushes the code, which query_auth accepts.
    let code = emu
        .emulator
        .authorize(COMPONENT, "wxauthorizer00002")
        .expect("authorized");
    let (event, _) = next_push(&mut pushes).await;
    assert_eq!(xml_field(&event, "InfoType"), Some("authorized"));
    assert_eq!(
        xml_field(&event, "AuthorizerAppid"),
        Some("wxauthorizer00002")
    );
    assert_eq!(xml_field(&event, "AuthorizationCode"), Some(code.as_str()));
    let created: u64 = xml_field(&event, "CreateTime")
        .and_then(|t| t.parse().ok())
        .expect("CreateTime");
    let expires: u64 = xml_field(&event, "AuthorizationCodeExpiredTime")
        .and_then(|t| t.parse().ok())
        .expect("AuthorizationCodeExpiredTime");
    assert_eq!(expires, created + 3600);
    assert!(xml_field(&event, "PreAuthCode").is_some());
    let auth = component_call(
        &emu,
        "api_query_auth",
        &ct,
        json!({"component_appid": COMPONENT, "authorization_code": code}),
    )
    .await;
    assert_eq!(
        auth["authorization_info"]["authorizer_appid"], "wxauthorizer00002",
        "{auth}"
    );
    emu.emulator.authorize(COMPONENT, "wxauthorizer00002");
    let (event, _) = next_push(&mut pushes).await;
    assert_eq!(xml_field(&event, "InfoType"), Some("updateauthorized"));
    assert!(emu.emulator.unauthorize(COMPONENT, "wxauthorizer00002"));
    let (event, _) = next_push(&mut pushes).await;
    assert_eq!(xml_field(&event, "InfoType"), Some("unauthorized"));
    assert_eq!(
        xml_field(&event, "AuthorizerAppid"),
        Some("wxauthorizer00002")
    );

    // An explicit push over HTTP; the new ticket replaces the old.
    let (status, body) = post(
        &emu,
        "/_emulator/push_verify_ticket",
        json!({"component_appid": COMPONENT}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (message, _) = next_push(&mut pushes).await;
    let pushed = xml_field(&message, "ComponentVerifyTicket").expect("ticket");
    assert_eq!(body["component_verify_ticket"], pushed);
    assert_eq!(errcode(&component_token(&emu, &ticket).await), 61005);
    assert!(component_token(&emu, pushed).await["component_access_token"].is_string());

    // A callback that does not answer `success` fails the push.
    *answer.lock().expect("answer") = (StatusCode::OK, "fail");
    let err = emu
        .emulator
        .push_verify_ticket(COMPONENT)
        .await
        .expect_err("not success");
    assert!(err.contains("not \"success\""), "{err}");
    next_push(&mut pushes).await;
    *answer.lock().expect("answer") = (StatusCode::INTERNAL_SERVER_ERROR, "success");
    let (status, body) = post(
        &emu,
        "/_emulator/push_verify_ticket",
        json!({"component_appid": COMPONENT}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(text(&body, "errmsg").contains("500"), "{body}");
    next_push(&mut pushes).await;

    // Event pushes are counted once their answer is read, just after the callback
    // saw them: give the last one a moment.
    for _ in 0..100 {
        if emu.emulator.stats().component(COMPONENT).pushes_sent == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = emu.emulator.stats().component(COMPONENT);
    assert_eq!(stats.pushes_sent, 5, "{stats:?}");
    assert_eq!(stats.pushes_failed, 2, "{stats:?}");
    assert_eq!(stats.verify_tickets_issued, 4);
}

#[tokio::test]
async fn pushes_to_nowhere_are_reported() {
    // A port nobody listens on: bind one, then free it.
    let free = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let url = format!("http://{}/cb", free.local_addr().expect("addr"));
    drop(free);
    let emu = spawn(
        Config::default()
            .with_component_credentials(
                ComponentCredentials::new(COMPONENT, SECRET, PUSH_TOKEN, KEY).with_callback(url),
            )
            .with_component("wxsilent", SECRET, PUSH_TOKEN, KEY),
    )
    .await
    .expect("emulator");
    let err = emu
        .emulator
        .push_verify_ticket(COMPONENT)
        .await
        .expect_err("nobody listens");
    assert!(err.contains("POST"), "{err}");
    // The ticket was minted all the same, as on WeChat.
    let ticket = emu
        .emulator
        .current_verify_ticket(COMPONENT)
        .expect("minted");
    assert!(component_token(&emu, &ticket).await["component_access_token"].is_string());
    let (status, _) = post(
        &emu,
        "/_emulator/push_verify_ticket",
        json!({"component_appid": "wxsilent"}),
    )
    .await;
    assert_eq!(status, 400, "no callback URL");
    let (status, _) = post(
        &emu,
        "/_emulator/push_verify_ticket",
        json!({"component_appid": "wxnobody"}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(emu.emulator.stats().component(COMPONENT).pushes_failed, 1);
}

#[tokio::test]
async fn a_lost_refresh_leaves_the_new_refresh_token_only_in_the_list() {
    let emu = spawn(config()).await.expect("emulator");
    let ticket = emu.emulator.verify_ticket(COMPONENT).expect("known");
    let ct = text(
        &component_token(&emu, &ticket).await,
        "component_access_token",
    )
    .to_owned();
    let code = authorize(&emu, "wxauthorizer00001").await;
    let query = json!({"component_appid": COMPONENT, "authorization_code": code});
    let auth = component_call(&emu, "api_query_auth", &ct, query).await;
    let held = text(&auth["authorization_info"], "authorizer_refresh_token").to_owned();

    let lose = json!({"component_appid": COMPONENT, "authorizer_appid": "wxauthorizer00001"});
    let (status, body) = post(&emu, "/_emulator/lose_authorizer_token", lose).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("authorizer_refresh_token").is_none(), "{body}");
    let current = emu
        .emulator
        .refresh_token_of(COMPONENT, "wxauthorizer00001")
        .expect("authorized");
    assert_ne!(current, held);
    assert_eq!(
        emu.emulator
            .stats()
            .component(COMPONENT)
            .authorizer_token_calls,
        1
    );

    let refresh = json!({
        "component_appid": COMPONENT,
        "authorizer_appid": "wxauthorizer00001",
        "authorizer_refresh_token": held,
    });
    let refused = component_call(&emu, "api_authorizer_token", &ct, refresh).await;
    assert_eq!(errcode(&refused), 61023, "{refused}");
    let page = component_call(
        &emu,
        "api_get_authorizer_list",
        &ct,
        json!({"component_appid": COMPONENT, "offset": 0, "count": 500}),
    )
    .await;
    assert_eq!(page["list"][0]["refresh_token"], current.as_str(), "{page}");

    let stranger = json!({"component_appid": COMPONENT, "authorizer_appid": "wxnobody000001"});
    let (status, body) = post(&emu, "/_emulator/lose_authorizer_token", stranger).await;
    assert_eq!((status, errcode(&body)), (404, 61003), "{body}");
}
