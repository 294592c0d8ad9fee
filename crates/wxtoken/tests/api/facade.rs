//! The WeChat-shaped facade: `/cgi-bin/token`, `/cgi-bin/stable_token`,
//! `/cgi-bin/gettoken` and the ticket endpoints, as an unmodified SDK calls them.

use serde_json::{Value, json};

use crate::helpers::*;

/// GET `path_and_query` with no Authorization header; WeChat answers HTTP 200 always.
async fn wx_get(app: &TestApp, path_and_query: &str) -> Value {
    let response = app
        .http
        .get(format!("{}{path_and_query}", app.base))
        .send()
        .await
        .expect("request is sent");
    assert_eq!(
        response.status(),
        200,
        "WeChat answers errors with HTTP 200"
    );
    response.json().await.expect("JSON")
}

async fn wx_post(app: &TestApp, path: &str, body: &str) -> Value {
    let response = app
        .http
        .post(format!("{}{path}", app.base))
        .body(body.to_owned())
        .send()
        .await
        .expect("request is sent");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

fn token_query(secret: &str) -> String {
    format!("/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={secret}")
}

#[tokio::test]
async fn the_token_endpoint_answers_like_wechat_whatever_the_apps_mode() {
    for mode in ["classic", "stable"] {
        let app = spawn_app_with(Options {
            mode,
            ..Options::default()
        })
        .await;
        let expected = app.token().await;

        let response = app
            .http
            .get(format!("{}{}", app.base, token_query(KEY)))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: Value = response.json().await.expect("json");
        let fields: Vec<&String> = body.as_object().expect("object").keys().collect();
        assert_eq!(fields, ["access_token", "expires_in"], "{mode}: {body}");
        assert_eq!(body["access_token"], expected.as_str(), "{mode}");
        assert!(body["expires_in"].as_u64().expect("expires_in") > 7000);

        let stable = json!({"grant_type": "client_credential", "appid": APPID, "secret": KEY});
        let body = wx_post(&app, "/cgi-bin/stable_token", &stable.to_string()).await;
        assert_eq!(body["access_token"], expected.as_str(), "{mode}: {body}");
        assert_eq!(app.upstream_calls(), 1, "{mode}: served from memory");
    }
}

#[tokio::test]
async fn every_facade_error_is_wechats_code_and_costs_no_upstream_call() {
    let app = spawn_app().await;
    app.token().await;
    let before = app.emulator.emulator.stats();
    let q = |rest: &str| format!("/cgi-bin/token?{rest}");
    let cases = [
        (q(&format!("appid={APPID}&secret={KEY}")), 40002),
        (
            q(&format!("grant_type=password&appid={APPID}&secret={KEY}")),
            40002,
        ),
        (
            q(&format!("grant_type=client_credential&secret={KEY}")),
            41002,
        ),
        (
            q(&format!("grant_type=client_credential&appid={APPID}")),
            41004,
        ),
        (
            q(&format!(
                "grant_type=client_credential&appid={APPID}&secret="
            )),
            41004,
        ),
        (
            q(&format!(
                "grant_type=client_credential&appid=wx_unknown&secret={KEY}"
            )),
            40013,
        ),
        (token_query("wxt_not_a_key_we_know_of"), 40001),
        // A real key that may not read this app is refused the same way.
        (token_query(OTHER_KEY), 40001),
        // The app's real secret is not a client key.
        (token_query(SECRET), 40001),
        ("/cgi-bin/gettoken?corpsecret=x".to_owned(), 41002),
        (format!("/cgi-bin/gettoken?corpid={CORPID}"), 41004),
        (
            format!("/cgi-bin/gettoken?corpid=ww_unknown&corpsecret={KEY}"),
            40013,
        ),
        (
            format!("/cgi-bin/gettoken?corpid={CORPID}&corpsecret=wxt_unknown_key_1234"),
            40001,
        ),
        (
            format!("/cgi-bin/gettoken?corpid={CORPID}&corpsecret={READ_ONLY_KEY}"),
            40001,
        ),
    ];
    for (path, code) in &cases {
        let body = wx_get(&app, path).await;
        assert_eq!(body["errcode"], *code, "{path}: {body}");
        assert!(body["errmsg"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(body.get("access_token").is_none());
    }

    let stable = |v: Value| v.to_string();
    let posts = [
        ("not json".to_owned(), 47001),
        ("[1,2]".to_owned(), 47001),
        (stable(json!({})), 40002),
        (
            stable(json!({"grant_type": "client_credential", "secret": KEY})),
            41002,
        ),
        (
            stable(json!({"grant_type": "client_credential", "appid": APPID})),
            41004,
        ),
        (
            stable(
                json!({"grant_type": "client_credential", "appid": "wx_unknown", "secret": KEY}),
            ),
            40013,
        ),
        (
            stable(
                json!({"grant_type": "client_credential", "appid": APPID, "secret": "nope-nope-nope-nope"}),
            ),
            40125,
        ),
        (
            stable(json!({"grant_type": "client_credential", "appid": APPID, "secret": OTHER_KEY})),
            40125,
        ),
    ];
    for (body, code) in &posts {
        let answer = wx_post(&app, "/cgi-bin/stable_token", body).await;
        assert_eq!(answer["errcode"], *code, "{body}: {answer}");
    }
    let after = app.emulator.emulator.stats();
    assert_eq!(
        serde_json::to_value(&before.apps).expect("stats"),
        serde_json::to_value(&after.apps).expect("stats"),
        "bad requests never reach WeChat"
    );
}

#[tokio::test]
async fn wecom_gettoken_serves_the_one_app_the_key_may_read() {
    let app = spawn_app().await;
    let body = wx_get(
        &app,
        &format!("/cgi-bin/gettoken?corpid={CORPID}&corpsecret={KEY}"),
    )
    .await;
    assert_eq!(body["errcode"], 0, "{body}");
    assert_eq!(body["errmsg"], "ok");
    let token = body["access_token"].as_str().expect("token");
    let (_, v1) = app.get("/v1/apps/hr/access_token", Some(KEY)).await;
    assert_eq!(v1["access_token"], token);
    assert!(body["expires_in"].as_u64().expect("expires_in") > 7000);
    assert_eq!(app.wecom_stats().gettoken_calls, 1);

    // agentid narrows the choice; one the key cannot read is refused.
    let body = wx_get(
        &app,
        &format!("/cgi-bin/gettoken?corpid={CORPID}&corpsecret={KEY}&agentid={AGENTID}"),
    )
    .await;
    assert_eq!(body["access_token"], token);
    let body = wx_get(
        &app,
        &format!("/cgi-bin/gettoken?corpid={CORPID}&corpsecret={KEY}&agentid=999"),
    )
    .await;
    assert_eq!(body["errcode"], 40001, "{body}");
}

#[tokio::test]
async fn force_refresh_reports_the_current_token_at_most_once_per_interval() {
    let app = spawn_app().await; // stable mode
    let first = app.token().await;
    let force = json!({"grant_type": "client_credential", "appid": APPID, "secret": KEY, "force_refresh": true}).to_string();

    let body = wx_post(&app, "/cgi-bin/stable_token", &force).await;
    let second = body["access_token"].as_str().expect("token").to_owned();
    assert_ne!(second, first, "a force_refresh replaces the token: {body}");
    assert_eq!(app.stats().force_refresh_calls, 1);
    assert_eq!(
        app.emulator.emulator.check_token(&second),
        wechat_emulator::TokenCheck::Valid
    );

    // Within 30 s, another force_refresh is answered with the current token.
    let calls = app.upstream_calls();
    let body = wx_post(&app, "/cgi-bin/stable_token", &force).await;
    assert_eq!(body["access_token"], second.as_str(), "{body}");
    assert_eq!(app.upstream_calls(), calls, "nothing fetched");
    assert_eq!(app.stats().force_refresh_calls, 1);
}

#[tokio::test]
async fn tickets_come_from_the_ticket_slot_without_upstream_calls_while_fresh() {
    let app = spawn_app().await;
    let token = app.token().await;
    let path = format!("/cgi-bin/ticket/getticket?access_token={token}&type=jsapi");
    let body = wx_get(&app, &path).await;
    assert_eq!(body["errcode"], 0, "{body}");
    assert_eq!(body["errmsg"], "ok");
    let ticket = body["ticket"].as_str().expect("ticket").to_owned();
    assert!(body["expires_in"].as_u64().expect("expires_in") > 7000);
    for _ in 0..20 {
        let body = wx_get(&app, &path).await;
        assert_eq!(body["ticket"], ticket.as_str());
    }
    let (_, v1) = app.get("/v1/apps/shop/ticket/jsapi", Some(KEY)).await;
    assert_eq!(v1["ticket"], ticket.as_str());
    assert_eq!(app.stats().ticket_calls, 1, "one upstream ticket call");

    let body = wx_get(
        &app,
        &format!("/cgi-bin/ticket/getticket?access_token={token}&type=wx_card"),
    )
    .await;
    assert_eq!(body["errcode"], 0, "{body}");
    for bad in ["type=agent_config", "type=", ""] {
        let body = wx_get(
            &app,
            &format!("/cgi-bin/ticket/getticket?access_token={token}&{bad}"),
        )
        .await;
        assert_eq!(body["errcode"], 40097, "{bad}: {body}");
    }
    let body = wx_get(&app, "/cgi-bin/ticket/getticket?type=jsapi").await;
    assert_eq!(body["errcode"], 41001, "{body}");
    let calls = app.stats().ticket_calls;
    let body = wx_get(
        &app,
        "/cgi-bin/ticket/getticket?access_token=80_never_issued_here&type=jsapi",
    )
    .await;
    assert_eq!(body["errcode"], 40014, "{body}");
    assert_eq!(app.stats().ticket_calls, calls);
}

#[tokio::test]
async fn wecom_tickets_come_from_the_wecom_apps_slots() {
    let app = spawn_app().await;
    let body = wx_get(
        &app,
        &format!("/cgi-bin/gettoken?corpid={CORPID}&corpsecret={KEY}"),
    )
    .await;
    let token = body["access_token"].as_str().expect("token").to_owned();
    let corp = wx_get(
        &app,
        &format!("/cgi-bin/get_jsapi_ticket?access_token={token}"),
    )
    .await;
    assert_eq!(corp["errcode"], 0, "{corp}");
    let agent = wx_get(
        &app,
        &format!("/cgi-bin/ticket/get?access_token={token}&type=agent_config"),
    )
    .await;
    assert_eq!(agent["errcode"], 0, "{agent}");
    assert_ne!(corp["ticket"], agent["ticket"]);
    let (_, v1) = app.get("/v1/apps/hr/ticket/agent_config", Some(KEY)).await;
    assert_eq!(v1["ticket"], agent["ticket"]);
    wx_get(
        &app,
        &format!("/cgi-bin/get_jsapi_ticket?access_token={token}"),
    )
    .await;
    assert_eq!(
        app.wecom_stats().ticket_calls,
        2,
        "one call per ticket type"
    );
}

#[tokio::test]
async fn the_previous_token_is_still_recognised_after_a_refresh() {
    let app = spawn_app_with(Options {
        mode: "classic",
        ..Options::default()
    })
    .await;
    let old = app.token().await;
    let (_, body) = app.invalidate(&old).await;
    let new = body["access_token"].as_str().expect("token").to_owned();
    assert_ne!(new, old);
    let body = wx_get(
        &app,
        &format!("/cgi-bin/ticket/getticket?access_token={old}&type=jsapi"),
    )
    .await;
    assert_eq!(body["errcode"], 0, "{body}");
    // The gateway sends the current token in its place.
    let body = wx_get(
        &app,
        &format!("/cgi-bin/get_api_domain_ip?access_token={old}"),
    )
    .await;
    assert!(body["dns"].is_array(), "{body}");
    assert_eq!(app.stats().stale_rejections, 0);
}

/// WxJava and Senparc append `/cgi-bin/...` to the host they are given: a host
/// configured with a trailing slash makes `//cgi-bin/...`, which is served all the same.
#[tokio::test]
async fn a_doubled_leading_slash_is_served_as_one() {
    let app = spawn_app().await;
    let token = app.token().await;
    let body = wx_get(&app, &format!("/{}", token_query(KEY))).await;
    assert_eq!(body["access_token"], token.as_str(), "{body}");
    let body = wx_get(
        &app,
        &format!("//cgi-bin/get_api_domain_ip?access_token={token}"),
    )
    .await;
    assert!(body["dns"].is_array(), "{body}");
}
