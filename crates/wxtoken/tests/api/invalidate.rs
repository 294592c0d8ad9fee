use futures::future::join_all;
use wechat_emulator::TokenCheck;

use crate::helpers::*;

fn classic() -> Options {
    Options {
        mode: "classic",
        ..Options::default()
    }
}

#[tokio::test]
async fn invalidate_with_an_old_token_returns_the_current_one_without_fetching() {
    let app = spawn_app_with(classic()).await;
    let old = app.token().await;
    let (status, body) = app.invalidate(&old).await;
    assert_eq!(status, 200, "{body}");
    let current = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(app.upstream_calls(), 2);

    let (status, body) = app.invalidate(&old).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"], current.as_str());
    assert_eq!(body["refreshed"], false);
    let (_, body) = app.invalidate("a-token-we-never-issued").await;
    assert_eq!(body["access_token"], current.as_str());
    assert_eq!(body["refreshed"], false);
    assert_eq!(app.upstream_calls(), 2, "old tokens fetch nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalidate_with_the_current_token_fetches_once_however_many_report_it() {
    let app = spawn_app_with(Options {
        latency: std::time::Duration::from_millis(100),
        ..classic()
    })
    .await;
    let dead = app.token().await;
    let answers = join_all((0..100).map(|_| app.invalidate(&dead))).await;
    let mut refreshed = 0;
    let fresh = answers[0].1["access_token"].clone();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(
            body["access_token"], fresh,
            "everyone gets the one new token"
        );
        assert!(body["expires_in"].as_u64().expect("expires_in") > 7000);
        refreshed += usize::from(body["refreshed"] == true);
    }
    assert_ne!(fresh, dead.as_str());
    // Reporters that arrived while the token was still current see `refreshed: true`;
    // any that arrived after it was replaced see `false` (their report was already moot).
    assert!(refreshed >= 1);
    assert_eq!(app.upstream_calls(), 2, "one cold fetch, one refresh");
}

#[tokio::test]
async fn stable_mode_uses_force_refresh_only_when_wechat_returns_the_dead_token() {
    // The emulator would ignore our force refresh right after the outside one.
    let app = spawn_app_with(Options {
        force_refresh_interval: std::time::Duration::ZERO,
        ..Options::default()
    })
    .await;
    let first = app.token().await;

    // Someone else force-refreshed: WeChat has a new token; ours is dead. A normal call
    // picks up the new one, no force_refresh from us.
    let outside = app
        .http
        .post(format!("{}/cgi-bin/stable_token", app.emulator.base_url()))
        .json(&serde_json::json!({
            "grant_type": "client_credential", "appid": APPID, "secret": SECRET, "force_refresh": true
        }))
        .send()
        .await
        .expect("sent")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    let theirs = outside["access_token"].as_str().expect("token").to_owned();
    assert_eq!(
        app.emulator.emulator.check_token(&first),
        TokenCheck::Invalid
    );
    let (status, body) = app.invalidate(&first).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"], theirs.as_str());
    assert_eq!(body["refreshed"], true);
    assert_eq!(app.stats().force_refresh_calls, 1, "only the outside one");

    // Now a client reports the (valid) current token dead: WeChat hands it back on a
    // normal call, so one force_refresh replaces it...
    let (status, body) = app.invalidate(&theirs).await;
    assert_eq!(status, 200, "{body}");
    let forced = body["access_token"].as_str().expect("token").to_owned();
    assert_ne!(forced, theirs);
    assert_eq!(app.stats().force_refresh_calls, 2);
    assert_eq!(
        app.emulator.emulator.check_token(&forced),
        TokenCheck::Valid
    );

    // ...but not a second one within 30 s.
    let (status, body) = app.invalidate(&forced).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(code(&body), "token_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("force_refresh")
    );
    assert_eq!(app.stats().force_refresh_calls, 2);
    let (_, status_body) = app.get("/v1/apps/shop", Some(KEY)).await;
    assert_eq!(status_body["force_refresh_used_today"], 1);
    assert_eq!(status_body["last_error"]["class"], "force_refused");
}

#[tokio::test]
async fn the_force_refresh_budget_is_respected() {
    let app = spawn_app_with(Options {
        keeper: "force_refresh_daily_budget = 0",
        ..Options::default()
    })
    .await;
    let token = app.token().await;
    let (status, body) = app.invalidate(&token).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("budget (0)")
    );
    assert_eq!(app.stats().force_refresh_calls, 0);
    // The token keeps being served: it may well be valid.
    assert_eq!(app.token().await, token);
}
