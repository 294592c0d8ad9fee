//! The quota guard against the emulator: no fetch past the daily budget unless the
//! token is in its last stretch, automatic clears once per incident and within the
//! monthly budget (kept across restarts), the manual clear route and CLI, and WeChat's
//! own figures in the status, asked for at most once an hour.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::oneshot;
use wechat_emulator::{AppCredentials, Config as EmulatorConfig};
use wxtoken::{Server, Settings};

use crate::fleet::fleet_config;
use crate::helpers::*;
use crate::redis_server::RedisServer;

/// Has `read` and `admin` on every app.
const ADMIN_KEY: &str = "wxt_test_key_admin_quota";
/// Has `read` only.
const READER_KEY: &str = "wxt_test_key_reader_quota";

/// How a test's server differs: appended to `[upstream]`, `[keeper]` and the app.
#[derive(Default)]
struct Setup {
    upstream: &'static str,
    keeper: &'static str,
    app: &'static str,
}

fn emulator(expires_in: u64, quota: u64) -> EmulatorConfig {
    EmulatorConfig {
        apps: vec![AppCredentials::new(APPID, SECRET)],
        expires_in,
        quota,
        ..EmulatorConfig::default()
    }
}

async fn spawn(emulator: EmulatorConfig, setup: Setup) -> TestApp {
    spawn_app_from(emulator, |api_base, db| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[store]
path = "{db}"
[upstream]
api_base = "{api_base}"
wecom_base = "{api_base}"
{upstream}
[keeper]
{keeper}
[[apps]]
id = "shop"
appid = "{APPID}"
secret = "{SECRET}"
mode = "classic"
{app}
[[clients]]
name = "order-service"
key = "{KEY}"
apps = ["*"]
scopes = ["read", "invalidate"]
[[clients]]
name = "ops"
key = "{ADMIN_KEY}"
apps = ["*"]
scopes = ["read", "admin"]
[[clients]]
name = "dashboard"
key = "{READER_KEY}"
apps = ["*"]
scopes = ["read"]
"#,
            upstream = setup.upstream,
            keeper = setup.keeper,
            app = setup.app,
        )
    })
    .await
}

async fn status(app: &TestApp) -> Value {
    let (status, body) = app.get("/v1/apps/shop", Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls `done` every 20 ms until it holds, failing after `limit`.
async fn until(limit: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn past_the_daily_budget_nothing_is_fetched_until_the_token_is_in_its_last_stretch() {
    // 20 s tokens refreshed 8 s ahead (6.4-8 s before expiry); the last stretch is the
    // last 4 s. A budget of one call a day is used by the first fetch.
    let app = spawn(
        emulator(20, 2000),
        Setup {
            keeper: "refresh_ahead_secs = 8",
            app: "daily_budget = 1",
            ..Setup::default()
        },
    )
    .await;
    let (code, first) = app.get("/v1/apps/shop/access_token", Some(KEY)).await;
    assert_eq!(code, 200, "{first}");
    let token = first["access_token"].as_str().expect("token").to_owned();
    let expires_at = first["expires_at"].as_u64().expect("expires_at");
    assert_eq!(app.stats().token_calls, 1);
    let quota = &status(&app).await["quota"];
    assert_eq!(
        (
            &quota["api"],
            &quota["budget"],
            &quota["used"],
            &quota["guarded"]
        ),
        (
            &Value::from("token"),
            &Value::from(1),
            &Value::from(1),
            &Value::from(true)
        ),
        "{quota}"
    );

    // A client's report does not buy a fetch past the budget.
    let (code, body) = app.invalidate(&token).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["refreshed"], false, "{body}");
    assert_eq!(body["access_token"], token.as_str());
    assert_eq!(app.stats().token_calls, 1, "no fetch past the budget");

    // The proactive refresh waits for the last stretch, then happens: the token
    // never lapses.
    until(
        Duration::from_secs(25),
        "the last-stretch refresh",
        async || app.stats().token_calls == 2,
    )
    .await;
    let after = status(&app).await;
    let fetched_at = after["token"]["fetched_at"].as_u64().expect("fetched_at");
    let left = expires_at.saturating_sub(fetched_at);
    assert!(
        (2..=5).contains(&left),
        "refreshed with {left} s left; the last stretch is 4 s, an unguarded refresh 6.4-8 s: {after}"
    );
    assert_eq!(after["token"]["generation"], 2, "{after}");
    assert_eq!(after["quota"]["used"], 2);
    assert_ne!(app.token().await, token);
    assert_eq!(app.stats().token_calls, 2);
}

#[tokio::test]
async fn an_automatic_clear_happens_once_per_incident_and_a_manual_one_still_works() {
    // WeChat's quota is 0: every fetch answers 45009, even right after a clear.
    let app = spawn(
        emulator(7200, 0),
        Setup {
            app: "auto_clear_quota = true",
            ..Setup::default()
        },
    )
    .await;
    until(
        Duration::from_secs(5),
        "the first incident settles",
        async || status(&app).await["consecutive_failures"] == 1,
    )
    .await;
    let stats = app.stats();
    assert_eq!(
        (
            stats.token_calls,
            stats.clear_quota_calls,
            stats.quota_clears
        ),
        (2, 1, 1),
        "45009, one clear, one retry"
    );
    let body = status(&app).await;
    assert_eq!(body["state"], "quota_exhausted", "{body}");
    assert_eq!(body["last_error"]["wechat_errcode"], 45009);
    assert_eq!(body["quota"]["clears_this_month"], 1, "{body}");

    // Only an admin may clear by hand.
    let (code, denied) = app
        .post("/v1/apps/shop/quota/clear", Some(READER_KEY), "")
        .await;
    assert_eq!((code, self::code(&denied)), (403, "forbidden"), "{denied}");
    let (code, cleared) = app
        .post("/v1/apps/shop/quota/clear", Some(ADMIN_KEY), "")
        .await;
    assert_eq!(code, 200, "{cleared}");
    assert_eq!(cleared["id"], "shop");
    assert_eq!(cleared["quota"]["clears_this_month"], 2, "{cleared}");

    // The clear wakes the driver: it fetches at once, meets 45009 again, and makes no
    // second automatic clear in the same incident.
    until(
        Duration::from_secs(5),
        "the retry after the manual clear",
        async || status(&app).await["consecutive_failures"] == 2,
    )
    .await;
    let stats = app.stats();
    assert_eq!(
        (
            stats.token_calls,
            stats.clear_quota_calls,
            stats.quota_clears
        ),
        (3, 2, 2)
    );
}

#[tokio::test]
async fn automatic_clears_stop_at_the_monthly_budget_which_survives_a_restart() {
    // WeChat allows one token call a day; we allow ourselves one clear a month.
    // 20 s tokens: a report-driven refresh may follow another after 2 s.
    let mut app = spawn(
        emulator(20, 1),
        Setup {
            upstream: "clear_quota_monthly_budget = 1",
            app: "auto_clear_quota = true",
            ..Setup::default()
        },
    )
    .await;
    let first = app.token().await;
    assert_eq!(app.stats().token_calls, 1);

    // 45009, a clear, a retry that succeeds.
    let (code, body) = app.invalidate(&first).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["refreshed"], true, "{body}");
    let second = body["access_token"].as_str().expect("token").to_owned();
    let stats = app.stats();
    assert_eq!((stats.token_calls, stats.quota_clears), (3, 1));

    // The next 45009 is a new incident, but the month's budget is spent: no clear.
    until(
        Duration::from_secs(10),
        "a refresh after the cooldown",
        async || {
            app.invalidate(&second).await;
            app.stats().token_calls == 4
        },
    )
    .await;
    until(
        Duration::from_secs(5),
        "the failure is recorded",
        async || status(&app).await["last_error"]["wechat_errcode"] == 45009,
    )
    .await;
    assert_eq!(app.stats().clear_quota_calls, 1, "no clear past the budget");
    let (code, refused) = app
        .post("/v1/apps/shop/quota/clear", Some(ADMIN_KEY), "")
        .await;
    assert_eq!(
        (code, self::code(&refused)),
        (409, "clear_budget_used_up"),
        "{refused}"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("upstream.clear_quota_monthly_budget")),
        "{refused}"
    );

    app.restart().await;
    let (code, listing) = app.get("/v1/apps", Some(KEY)).await;
    assert_eq!(code, 200, "{listing}");
    assert_eq!(
        listing["apps"][0]["quota"]["clears_this_month"], 1,
        "{listing}"
    );
    assert_eq!(status(&app).await["quota"]["clears_this_month"], 1);
    let (code, refused) = app
        .post("/v1/apps/shop/quota/clear", Some(ADMIN_KEY), "")
        .await;
    assert_eq!(
        (code, self::code(&refused)),
        (409, "clear_budget_used_up"),
        "{refused}"
    );
    assert_eq!(app.stats().clear_quota_calls, 1);
}

#[tokio::test]
async fn the_status_shows_wechats_figures_asked_for_at_most_once_an_hour() {
    // A test account's limit: 100 calls a day. The default budget is 80% of it.
    let app = spawn(emulator(7200, 100), Setup::default()).await;
    app.token().await;
    let (code, _) = app.get("/v1/apps", Some(KEY)).await;
    assert_eq!(code, 200);
    assert_eq!(
        app.stats().quota_get_calls,
        0,
        "a listing asks WeChat nothing"
    );

    let first = status(&app).await;
    let wechat = &first["quota"]["wechat"];
    assert_eq!(
        (&wechat["daily_limit"], &wechat["used"], &wechat["remain"]),
        (&Value::from(100), &Value::from(1), &Value::from(99)),
        "{first}"
    );
    assert!(wechat["fetched_at"].as_u64().is_some(), "{first}");
    assert_eq!(
        first["quota"]["budget"], 80,
        "80% of WeChat's own limit: {first}"
    );
    assert_eq!(first["upstream_calls_by_api"]["quota_get"], 1, "{first}");

    let second = status(&app).await;
    assert_eq!(second["quota"]["wechat"], first["quota"]["wechat"]);
    assert_eq!(app.stats().quota_get_calls, 1, "asked once within the hour");
}

#[tokio::test]
async fn wxtoken_quota_clear_clears_through_a_running_server() {
    let app = spawn(emulator(7200, 2000), Setup::default()).await;
    app.token().await;
    let out = Command::new(BIN)
        .args([
            "quota", "clear", "shop", "--server", &app.base, "--key", ADMIN_KEY,
        ])
        .output()
        .await
        .expect("quota clear");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "cleared the daily quota of shop: 1 of 10 clears used this month"
    );
    assert_eq!(app.stats().quota_clears, 1);

    let out = Command::new(BIN)
        .args([
            "quota", "clear", "shop", "--server", &app.base, "--key", READER_KEY,
        ])
        .output()
        .await
        .expect("quota clear");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP 403 Forbidden forbidden"), "{stderr}");
    assert_eq!(app.stats().clear_quota_calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_redis_keep_to_one_budget_for_the_fleet() {
    let redis = RedisServer::start().await;
    let emulator = wechat_emulator::spawn(emulator(7200, 2000))
        .await
        .expect("emulator");
    let toml = fleet_config("classic", &emulator.base_url(), &redis.url(), 2000, "")
        .replace(
            "mode = \"classic\"\n",
            "mode = \"classic\"\ndaily_budget = 2\n",
        )
        .replace(
            "[upstream]\n",
            "[upstream]\nclear_quota_monthly_budget = 1\n",
        )
        + &format!(
            "[[clients]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\napps = [\"*\"]\nscopes = [\"read\", \"admin\"]\n"
        );
    let settings = Settings::from_toml(&toml).expect("valid");
    let http = reqwest::Client::new();
    let token_calls = || emulator.emulator.stats().app(APPID).token_calls;
    let get_token = async |base: &str| -> String {
        let body: Value = http
            .get(format!("{base}/v1/apps/shop/access_token"))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        body["access_token"].as_str().expect("token").to_owned()
    };
    let report = async |base: &str, token: &str| -> Value {
        http.post(format!("{base}/v1/apps/shop/access_token/invalidate"))
            .bearer_auth(KEY)
            .json(&serde_json::json!({ "access_token": token }))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    };
    let mut bases = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = Server::build(&settings, listener).await.expect("builds");
        let base = format!("http://{}", server.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        stops.push(tx);
        get_token(&base).await;
        bases.push(base);
    }
    let (a, b) = (&bases[0], &bases[1]);
    assert_eq!(token_calls(), 1, "one fetch for the fleet");

    // A report to A: the fleet's second call, the budget. A counts two calls; B, which
    // started after the first, has counted at most that one.
    let first = get_token(a).await;
    let body = report(a, &first).await;
    assert_eq!(body["refreshed"], true, "{body}");
    let second = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(token_calls(), 2);
    until(
        Duration::from_secs(5),
        "B follows A's new token",
        async || get_token(b).await == second,
    )
    .await;

    // B's own count is under the budget; the fleet's is not: B fetches nothing.
    let body = report(b, &second).await;
    assert_eq!(body["refreshed"], false, "{body}");
    assert_eq!(body["access_token"], second.as_str(), "{body}");
    assert_eq!(token_calls(), 2, "no fetch past the fleet's budget");

    // One clear a month for the fleet: B, which read the month's clears before A's
    // clear, is refused by the count in Redis.
    let clear = async |base: &str| -> (u16, Value) {
        let response = http
            .post(format!("{base}/v1/apps/shop/quota/clear"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json"))
    };
    let listing: Value = http
        .get(format!("{b}/v1/apps"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        listing["apps"][0]["quota"]["clears_this_month"], 0,
        "{listing}"
    );
    let (code, body) = clear(a).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = clear(b).await;
    assert_eq!(
        (code, self::code(&body)),
        (409, "clear_budget_used_up"),
        "{body}"
    );
    assert_eq!(emulator.emulator.stats().app(APPID).clear_quota_calls, 1);
}

#[tokio::test]
async fn a_clear_wechat_refuses_is_a_502_with_its_errcode_and_uses_no_clear() {
    // WeChat's own monthly clears are spent (say, in its console): 48006.
    let app = spawn(
        EmulatorConfig {
            clear_quota_monthly: 0,
            ..emulator(7200, 2000)
        },
        Setup::default(),
    )
    .await;
    app.token().await;
    let (code, body) = app
        .post("/v1/apps/shop/quota/clear", Some(ADMIN_KEY), "")
        .await;
    assert_eq!((code, self::code(&body)), (502, "upstream_error"), "{body}");
    assert_eq!(body["error"]["wechat_errcode"], 48006, "{body}");
    assert_eq!(status(&app).await["quota"]["clears_this_month"], 0);
    let stats = app.stats();
    assert_eq!((stats.clear_quota_calls, stats.quota_clears), (1, 0));
}

#[tokio::test]
async fn sighup_reloads_the_daily_budget() {
    let emulator = wechat_emulator::spawn(emulator(7200, 2000))
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("wxtoken.db");
    let path = dir.path().join("wxtoken.toml");
    let config = |budget: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n[upstream]\napi_base = \"{}\"\ndaily_budget = {budget}\n\
             [[apps]]\nid = \"shop\"\nappid = \"{APPID}\"\nsecret = \"{SECRET}\"\n\
             [[clients]]\nname = \"order-service\"\nkey = \"{KEY}\"\napps = [\"*\"]\nscopes = [\"read\"]\n",
            db.display(),
            emulator.base_url()
        )
    };
    std::fs::write(&path, config("\"80%\"")).expect("write");
    let server = serve(&path).await;
    let http = reqwest::Client::new();
    let budget = async || -> Value {
        let body: Value = http
            .get(format!("{}/v1/apps/shop", server.base))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        body["quota"]["budget"].clone()
    };
    assert_eq!(budget().await, 400_000, "80% of stable_token's 500,000");

    std::fs::write(&path, config("1000")).expect("write");
    let pid = server.child.id().expect("pid").to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill runs");
    assert!(hup.success());
    until(Duration::from_secs(5), "the new budget", async || {
        budget().await == 1000
    })
    .await;
}

#[tokio::test]
async fn calls_before_a_clear_stay_uncounted_after_a_restart() {
    let mut app = spawn(
        emulator(7200, 2000),
        Setup {
            app: "daily_budget = 2",
            ..Setup::default()
        },
    )
    .await;
    let first = app.token().await;
    let (code, body) = app
        .post("/v1/apps/shop/quota/clear", Some(ADMIN_KEY), "")
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["quota"]["used"], 0, "{body}");
    let (_, body) = app.invalidate(&first).await;
    assert_eq!(body["refreshed"], true, "{body}");
    let second = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(app.stats().token_calls, 2);

    // Two calls today, one of them after the clear: one of two budgeted.
    app.restart().await;
    let quota = &status(&app).await["quota"];
    assert_eq!(
        (&quota["used"], &quota["guarded"]),
        (&Value::from(1), &Value::from(false)),
        "{quota}"
    );
    let (_, body) = app.invalidate(&second).await;
    assert_eq!(body["refreshed"], true, "within the budget: {body}");
    assert_eq!(app.stats().token_calls, 3);
    let (_, body) = app
        .invalidate(body["access_token"].as_str().expect("token"))
        .await;
    assert_eq!(body["refreshed"], false, "the budget is reached: {body}");
    assert_eq!(app.stats().token_calls, 3);
}
