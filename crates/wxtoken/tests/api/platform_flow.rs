//! A third-party platform end to end against the emulator: verify tickets pushed by the
//! emulator (its own crypto), authorization, authorizer tokens through the v1 routes and
//! the gateway, rotation persisted across a restart and a SIGKILL, unauthorized honoured,
//! disaster recovery from api_get_authorizer_list (by hand, and of a refresh token lost
//! to an answer that never arrived), and two instances on one Redis.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::helpers::*;
use crate::platform::*;
use crate::redis_server::RedisServer;

const MERCHANT: &str = "wxmerchant0000001";

/// Polls `check` every 20 ms until it holds, for at most 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn token_of(app: &PlatformApp, appid: &str) -> (u16, Value) {
    app.get(
        &format!("/v1/apps/platform/authorizers/{appid}/access_token"),
        KEY,
    )
    .await
}

/// Pushes a verify ticket (the emulator's push) and authorizes MERCHANT through POST
/// .../authorizers; returns the status of that POST.
async fn onboard(app: &PlatformApp, appid: &str) -> u16 {
    let code = app
        .emulator
        .emulator
        .authorize(COMPONENT_APPID, appid)
        .expect("known component");
    let (status, body) = app
        .post(
            "/v1/apps/platform/authorizers",
            ADMIN_KEY,
            json!({ "authorization_code": code }).to_string(),
        )
        .await;
    assert!(status == 201 || status == 200, "{body}");
    assert_eq!(body["authorizer_appid"], appid);
    assert_eq!(body["state"], "ok");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_serves_its_authorizers_end_to_end() {
    let mut app = spawn_platform(PlatformOptions::default()).await;
    let emulator = app.emulator.emulator.clone();

    // WeChat's push (the emulator's own crypto) brings the verify ticket.
    emulator
        .push_verify_ticket(COMPONENT_APPID)
        .await
        .expect("the server answers success");
    let (status, body) = app.get("/v1/apps/platform/access_token", KEY).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.calls().component_token_calls, 1);
    let component_token = body["access_token"].as_str().expect("token").to_owned();

    // WeChat moves on to a ticket that never reached us: a refresh is refused (61005),
    // the status says what the component waits for, and the next push cures it.
    emulator
        .verify_ticket(COMPONENT_APPID)
        .expect("a newer ticket");
    let invalidate = |token: String| {
        let app = &app;
        async move {
            app.post(
                "/v1/apps/platform/access_token/invalidate",
                KEY,
                json!({ "access_token": token }).to_string(),
            )
            .await
        }
    };
    let (status, body) = invalidate(component_token.clone()).await;
    assert_eq!(
        (status, code(&body)),
        (503, "waiting_for_verify_ticket"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("61005"),
        "{body}"
    );
    let (_, status_body) = app.get("/v1/apps/platform", KEY).await;
    assert_eq!(
        status_body["state"], "waiting_for_verify_ticket",
        "{status_body}"
    );
    emulator
        .push_verify_ticket(COMPONENT_APPID)
        .await
        .expect("pushed");
    let (status, body) = invalidate(component_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["refreshed"], true);
    assert_eq!(app.calls().component_token_calls, 3);

    // An authorization URL with a fresh pre_auth_code.
    let (status, body) = app
        .post(
            "/v1/apps/platform/authorizers/auth_url",
            ADMIN_KEY,
            json!({"redirect_uri": "https://shop.example/cb?x=1"}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let url = body["url"].as_str().expect("url");
    assert!(url.starts_with("https://mp.weixin.qq.com/cgi-bin/componentloginpage?component_appid=wxcomponent000001&pre_auth_code="), "{url}");
    assert!(
        url.contains("redirect_uri=https%3A%2F%2Fshop.example%2Fcb%3Fx%3D1&auth_type=3"),
        "{url}"
    );
    assert_eq!(app.calls().preauthcode_calls, 1);

    // The merchant authorizes: the push and the redirect carry the same code; it is
    // spent once.
    onboard(&app, MERCHANT).await;
    assert_eq!(app.calls().query_auth_calls, 1);
    let (status, body) = token_of(&app, MERCHANT).await;
    assert_eq!(status, 200, "{body}");
    let first = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(
        app.calls().authorizer_token_calls,
        0,
        "query_auth's token is served"
    );
    let (_, list) = app.get("/v1/apps/platform/authorizers", KEY).await;
    assert_eq!(
        list["authorizers"][0]["authorizer_appid"], MERCHANT,
        "{list}"
    );
    assert_eq!(list["authorizers"][0]["state"], "ok");
    assert_eq!(list["authorizers"][0]["func_info"][0], 1, "{list}");

    // Through the gateway, like any token; WeChat killing it costs one refresh, and
    // the SDK sees only the retried answer.
    let info = format!(
        "{}/cgi-bin/user/info?access_token={first}&openid=o1",
        app.base
    );
    let answer: Value = app
        .http
        .get(&info)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(
        answer.get("errcode").is_none() || answer["errcode"] == 0,
        "{answer}"
    );
    emulator.revoke_token(&first);
    let answer: Value = app
        .http
        .get(&info)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(
        answer.get("errcode").is_none() || answer["errcode"] == 0,
        "{answer}"
    );
    assert_eq!(app.calls().authorizer_token_calls, 1);
    let (_, body) = token_of(&app, MERCHANT).await;
    let second = body["access_token"].as_str().expect("token").to_owned();
    assert_ne!(second, first);

    // Tickets and wx.config under the authorizer.
    let (status, body) = app
        .get(
            &format!("/v1/apps/platform/authorizers/{MERCHANT}/ticket/jsapi"),
            KEY,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // An SDK asking WeChat's ticket route with the authorizer's token gets the same
    // ticket from the authorizer's ticket slot: no second ticket call.
    let sdk: Value = app
        .http
        .get(format!(
            "{}/cgi-bin/ticket/getticket?access_token={second}&type=jsapi",
            app.base
        ))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(sdk["errcode"], 0, "{sdk}");
    assert_eq!(sdk["ticket"], body["ticket"]);
    assert_eq!(app.calls().authorizers.ticket_calls, 1);
    let (status, body) = app
        .post(
            &format!("/v1/apps/platform/authorizers/{MERCHANT}/jssdk/config"),
            KEY,
            json!({"url": "https://m.example/p#x"}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["appId"], MERCHANT);
    assert_eq!(body["url"], "https://m.example/p");

    // A restart serves the stored token, and the rotated refresh token works.
    app.restart().await;
    let (_, body) = token_of(&app, MERCHANT).await;
    assert_eq!(body["access_token"], second.as_str());
    let (status, body) = app
        .post(
            &format!("/v1/apps/platform/authorizers/{MERCHANT}/access_token/invalidate"),
            KEY,
            json!({ "access_token": second }).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["refreshed"], true);
    assert_eq!(app.calls().authorizer_token_calls, 2);

    // The merchant withdraws: 410, and nothing more is fetched for it.
    assert!(emulator.unauthorize(COMPONENT_APPID, MERCHANT));
    eventually("the unauthorized push is honoured", || async {
        token_of(&app, MERCHANT).await.0 == 410
    })
    .await;
    let (status, body) = token_of(&app, MERCHANT).await;
    assert_eq!((status, code(&body)), (410, "unauthorized"));
    let (status, _) = app
        .post(
            &format!("/v1/apps/platform/authorizers/{MERCHANT}/access_token/invalidate"),
            KEY,
            json!({ "access_token": "anything" }).to_string(),
        )
        .await;
    assert_eq!(status, 410);
    assert_eq!(app.calls().authorizer_token_calls, 2);
    let (_, status_body) = app.get("/v1/apps/platform", KEY).await;
    assert_eq!(
        status_body["component"]["authorizers"],
        json!({"total": 1, "ok": 0, "needs_reauthorization": 0, "unauthorized": 1, "serving": 1}),
        "{status_body}"
    );
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"wxtoken_authorizers{app="platform",state="unauthorized"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains(MERCHANT), "no series per authorizer");

    // Authorizing again brings it back.
    onboard(&app, MERCHANT).await;
    let (status, _) = token_of(&app, MERCHANT).await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_survives_a_sigkill_right_after_it_answers() {
    let emulator = wechat_emulator::spawn(wechat_emulator::Config::default().with_component(
        COMPONENT_APPID,
        COMPONENT_SECRET,
        PUSH_TOKEN,
        AES_KEY,
    ))
    .await
    .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("wxtoken.toml");
    std::fs::write(
        &config,
        platform_toml(
            "",
            &emulator.base_url(),
            &store_table(dir.path(), None),
            "127.0.0.1:0",
        ),
    )
    .expect("config");
    let http = reqwest::Client::new();
    let calls = || emulator.emulator.stats().component(COMPONENT_APPID);

    let mut first = serve(&config).await;
    // The ticket WeChat minted, pushed as WeChat would.
    let ticket = emulator
        .emulator
        .verify_ticket(COMPONENT_APPID)
        .expect("ticket");
    let push = ticket_push(&ticket, 1_700_000_000);
    let answer = http
        .post(format!(
            "{}/v1/apps/platform/callback?timestamp={}&nonce={}&encrypt_type=aes&msg_signature={}",
            first.base, push.timestamp, push.nonce, push.signature
        ))
        .body(push.body.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(answer.text().await.expect("body"), "success");
    let code = emulator
        .emulator
        .authorize(COMPONENT_APPID, MERCHANT)
        .expect("code");
    let created = http
        .post(format!("{}/v1/apps/platform/authorizers", first.base))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "authorization_code": code }))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), 201);
    // Killed the moment it answered: no graceful shutdown, no later write.
    let pid = first.child.id().expect("pid");
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .await
        .expect("kill");
    first.child.wait().await.expect("killed");

    let second = serve(&config).await;
    let token: Value = http
        .get(format!(
            "{}/v1/apps/platform/authorizers/{MERCHANT}/access_token",
            second.base
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let value = token["access_token"]
        .as_str()
        .expect("served after the restart");
    assert_eq!(calls().query_auth_calls, 1, "no new authorization");
    assert_eq!(
        calls().authorizer_token_calls,
        0,
        "the stored token is served"
    );
    // And the stored refresh token is WeChat's current one: a refresh works.
    let refreshed: Value = http
        .post(format!(
            "{}/v1/apps/platform/authorizers/{MERCHANT}/access_token/invalidate",
            second.base
        ))
        .bearer_auth(KEY)
        .json(&json!({ "access_token": value }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(refreshed["refreshed"], true, "{refreshed}");
    assert_eq!(calls().authorizer_token_calls, 1);
    assert_eq!(
        emulator
            .emulator
            .refresh_token_of(COMPONENT_APPID, MERCHANT),
        {
            // What the server stored is what WeChat holds now.
            let store =
                wxtoken::store::SqliteStore::open(&dir.path().join("wxtoken.db")).expect("open");
            wxtoken::store::Store::load_authorizer(&store, "platform".into(), MERCHANT.into())
                .await
                .expect("load")
                .map(|r| r.refresh_token)
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_recovers_every_refresh_token_wechat_lists() {
    let app = spawn_platform(PlatformOptions {
        callback: false,
        ..PlatformOptions::default()
    })
    .await;
    let emulator = app.emulator.emulator.clone();
    let ticket = emulator.verify_ticket(COMPONENT_APPID).expect("ticket");
    let (status, _) = app.deliver(&ticket_push(&ticket, 1_700_000_000)).await;
    assert_eq!(status, 200);
    // One authorizer the server knows (201: no push here), then 600 it never heard of
    // (a lost store): two pages of api_get_authorizer_list.
    assert_eq!(onboard(&app, MERCHANT).await, 201);
    for i in 0..600 {
        emulator
            .authorize(COMPONENT_APPID, &format!("wxlost{i:012}"))
            .expect("code");
    }
    // The known one was re-authorized at WeChat too: its refresh token changed.
    let out = Command::new(BIN)
        .args([
            "authorizers",
            "import",
            "--app",
            "platform",
            "--server",
            &app.base,
            "--key",
            ADMIN_KEY,
        ])
        .output()
        .await
        .expect("import");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("imported 601 authorizers of platform from WeChat in 2 pages: 600 added, 0 updated, 1 unchanged"),
        "{stdout}"
    );
    assert_eq!(app.calls().authorizer_list_calls, 2);
    let (_, page) = app
        .get("/v1/apps/platform/authorizers?limit=1000", KEY)
        .await;
    assert_eq!(page["authorizers"].as_array().expect("list").len(), 601);
    assert_eq!(page["next_cursor"], Value::Null);
    // Pages of 250 with the cursor: every authorizer once, in appid order.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let (status, page) = app
            .get(
                &format!("/v1/apps/platform/authorizers?limit=250&cursor={cursor}"),
                KEY,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for a in page["authorizers"].as_array().expect("list") {
            seen.push(a["authorizer_appid"].as_str().expect("appid").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "in order, each once");
    assert_eq!(seen.len(), 601);
    // A recovered authorizer's token is fetched with its recovered refresh token.
    let (status, body) = token_of(&app, "wxlost000000000599").await;
    assert_eq!(status, 200, "{body}");

    // A key without admin may not import.
    let out = Command::new(BIN)
        .args([
            "authorizers",
            "import",
            "--app",
            "platform",
            "--server",
            &app.base,
            "--key",
            KEY,
        ])
        .output()
        .await
        .expect("import");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HTTP 403 Forbidden forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_rotated_in_a_lost_answer_is_recovered_from_the_list() {
    let app = spawn_platform(PlatformOptions::default()).await;
    let emulator = app.emulator.emulator.clone();
    emulator
        .push_verify_ticket(COMPONENT_APPID)
        .await
        .expect("pushed");
    onboard(&app, MERCHANT).await;
    onboard(&app, "wxmerchant0000002").await;
    let (status, body) = token_of(&app, MERCHANT).await;
    assert_eq!(status, 200, "{body}");
    let first = body["access_token"].as_str().expect("token").to_owned();

    // WeChat completes a refresh whose answer never reaches wxtoken (a timeout): the
    // refresh token wxtoken holds is dead, the new one only in WeChat's list.
    emulator
        .lose_authorizer_token(COMPONENT_APPID, MERCHANT)
        .expect("authorized");
    let before = app.calls();
    let path = format!("/v1/apps/platform/authorizers/{MERCHANT}/access_token/invalidate");
    let invalidate =
        |dead: String| app.post(&path, KEY, json!({ "access_token": dead }).to_string());
    let (status, body) = invalidate(first.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["refreshed"], true);
    let second = body["access_token"].as_str().expect("token").to_owned();
    assert_ne!(second, first);
    assert_eq!(
        emulator.check_token(&second),
        wechat_emulator::TokenCheck::Valid
    );
    let after = app.calls();
    assert_eq!(
        after.authorizer_list_calls - before.authorizer_list_calls,
        1,
        "one scan of the list"
    );
    assert_eq!(
        after.authorizer_token_calls - before.authorizer_token_calls,
        2,
        "the refused refresh, then the one with the listed refresh token"
    );
    let (_, listed) = app.get("/v1/apps/platform/authorizers", KEY).await;
    assert_eq!(listed["authorizers"][0]["authorizer_appid"], MERCHANT);
    assert_eq!(listed["authorizers"][0]["state"], "ok", "{listed}");
    let (status, body) = token_of(&app, MERCHANT).await;
    assert_eq!(
        (status, body["access_token"].as_str()),
        (200, Some(second.as_str()))
    );

    // What it holds now is WeChat's current refresh token: the next refresh needs no
    // list.
    let (status, body) = invalidate(second).await;
    assert_eq!(status, 200, "{body}");
    let last = app.calls();
    assert_eq!(last.authorizer_list_calls, after.authorizer_list_calls);
    assert_eq!(
        last.authorizer_token_calls,
        after.authorizer_token_calls + 1
    );

    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    let series = r#"wxtoken_authorizer_refresh_token_recovered_total{app="platform"}"#;
    assert!(metrics.contains(series), "{series} in {metrics}");

    // Another merchant's answer is lost within 10 minutes of that read, which began
    // before: a 502 with WeChat's 61023 and no new read, and the merchant is not asked
    // to authorize again (the next read, after the interval, recovers it).
    let other = "wxmerchant0000002";
    let (_, body) = token_of(&app, other).await;
    let held = body["access_token"].as_str().expect("token").to_owned();
    emulator
        .lose_authorizer_token(COMPONENT_APPID, other)
        .expect("authorized");
    let (status, body) = app
        .post(
            &format!("/v1/apps/platform/authorizers/{other}/access_token/invalidate"),
            KEY,
            json!({ "access_token": held }).to_string(),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["wechat_errcode"], 61023, "{body}");
    assert_eq!(
        app.calls().authorizer_list_calls,
        last.authorizer_list_calls
    );
    let (_, listed) = app.get("/v1/apps/platform/authorizers", KEY).await;
    let state = listed["authorizers"]
        .as_array()
        .expect("authorizers")
        .iter()
        .find(|a| a["authorizer_appid"] == other)
        .map(|a| a["state"].clone());
    assert_eq!(state, Some(json!("ok")), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_redis_share_authorizers_and_refresh_each_once() {
    let redis = RedisServer::start().await;
    let a = spawn_platform(PlatformOptions {
        callback: false,
        redis: Some(redis.url()),
        ..PlatformOptions::default()
    })
    .await;
    let b = a.sibling().await;
    let emulator = a.emulator.emulator.clone();
    let ticket = emulator.verify_ticket(COMPONENT_APPID).expect("ticket");
    // The push reaches B; A fetches the component token with it, from the store.
    let (status, _) = b.deliver(&ticket_push(&ticket, 1_700_000_000)).await;
    assert_eq!(status, 200);
    assert_eq!(onboard(&a, MERCHANT).await, 201);
    let (_, on_a) = token_of(&a, MERCHANT).await;
    let (status, on_b) = token_of(&b, MERCHANT).await;
    assert_eq!(status, 200, "{on_b}");
    assert_eq!(
        on_a["access_token"], on_b["access_token"],
        "one token for the fleet"
    );

    // Both instances hear the token is dead at once: one refresh.
    let dead = on_a["access_token"].as_str().expect("token").to_owned();
    let report = |app: &PlatformApp| {
        let body = json!({ "access_token": dead }).to_string();
        let path = format!("/v1/apps/platform/authorizers/{MERCHANT}/access_token/invalidate");
        let app_base = app.base.clone();
        let http = app.http.clone();
        async move {
            let response = http
                .post(format!("{app_base}{path}"))
                .bearer_auth(KEY)
                .body(body)
                .send()
                .await
                .expect("sent");
            let json: Value = response.json().await.expect("json");
            json["access_token"].as_str().expect("token").to_owned()
        }
    };
    let (from_a, from_b) = tokio::join!(report(&a), report(&b));
    assert_eq!(from_a, from_b);
    assert_eq!(
        a.calls().authorizer_token_calls,
        1,
        "one refresher for the fleet"
    );

    // The next refresh happens on the other instance, with the refresh token the first
    // one rotated (read from the store, not a stale copy): no 61023.
    eventually("B has the new token", || async {
        token_of(&b, MERCHANT).await.1["access_token"] == from_a.as_str()
    })
    .await;
    let refreshed = {
        let body = json!({ "access_token": from_a }).to_string();
        b.post(
            &format!("/v1/apps/platform/authorizers/{MERCHANT}/access_token/invalidate"),
            KEY,
            body,
        )
        .await
    };
    assert_eq!(refreshed.0, 200, "{}", refreshed.1);
    assert_eq!(refreshed.1["refreshed"], true);
    assert_eq!(a.calls().authorizer_token_calls, 2);
    let (_, state) = a.get("/v1/apps/platform/authorizers", KEY).await;
    assert_eq!(state["authorizers"][0]["state"], "ok", "{state}");

    // An unauthorized push on B stops the authorizer on A too.
    let withdraw = push_of(&format!(
        "<xml><AppId>{COMPONENT_APPID}</AppId><CreateTime>1700000100</CreateTime>\
         <InfoType>unauthorized</InfoType><AuthorizerAppid>{MERCHANT}</AuthorizerAppid></xml>"
    ));
    assert_eq!(b.deliver(&withdraw).await.0, 200);
    eventually("A honours B's unauthorized push", || async {
        token_of(&a, MERCHANT).await.0 == 410
    })
    .await;
}
