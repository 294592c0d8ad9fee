//! The dashboard in a real browser: headless Chromium driven by chromedriver over
//! WebDriver. Needs the Debian packages `chromium` and `chromium-driver` (scripts/test
//! installs them); without them the test fails rather than pass unseen.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::helpers::{APPID, KEY, Options, SECRET, spawn_app_with};

/// How long the page may take to show something: it refreshes every 5 s.
const PATIENCE: Duration = Duration::from_secs(30);

/// The first of `names` found on PATH (or as an absolute path).
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        if Path::new(name).is_absolute() {
            return Path::new(name).is_file().then(|| PathBuf::from(name));
        }
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn required(names: &[&str], package: &str) -> PathBuf {
    find_program(names).unwrap_or_else(|| {
        panic!(
            "the dashboard test needs {} (Debian package `{package}`); run scripts/test, \
             which installs it, or `apt-get install -y chromium chromium-driver`",
            names[0]
        )
    })
}

/// A chromedriver on a free loopback port, killed when dropped.
struct Driver {
    _child: Child,
    url: String,
}

async fn start_chromedriver(program: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(program)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ready = http
            .get(format!("{url}/status"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success());
        if let Some(response) = ready {
            let status: Value = response.json().await.unwrap_or_default();
            if status["value"]["ready"] == true {
                break;
            }
        }
        assert!(Instant::now() < deadline, "chromedriver did not get ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Driver { _child: child, url }
}

async fn open_browser(driver: &Driver, chromium: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,1000"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

/// Evaluates `script` (a function body that returns a value) in the page until
/// `done` holds for its result; returns that result.
async fn until(browser: &Client, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = browser.execute(script, vec![]).await.expect("script runs");
        if done(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: the page shows {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn eval(browser: &Client, script: &str) -> Value {
    browser.execute(script, vec![]).await.expect("script runs")
}

#[tokio::test]
async fn the_dashboard_shows_an_app_its_new_refreshes_and_no_admin_actions_to_a_read_key() {
    let chromium = required(
        &["chromium", "chromium-browser", "google-chrome"],
        "chromium",
    );
    let chromedriver = required(&["chromedriver"], "chromium-driver");

    // Classic mode: an invalidation fetches a new token at once.
    let app = spawn_app_with(Options {
        mode: "classic",
        ..Options::default()
    })
    .await;
    let first = app.token().await;
    let driver = start_chromedriver(&chromedriver).await;
    let browser = open_browser(&driver, &chromium).await;
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(drive(
        &app, &browser, &first,
    )))
    .await;
    // Closed whatever happened, so no browser outlives the test.
    let closed = browser.close().await;
    let screenshot = outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    closed.expect("the session closes");

    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, &screenshot).expect("write the screenshot");
    println!("dashboard screenshot: {}", path.display());
    assert!(screenshot.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    // The page only reads status and timelines: the token at start and the one the
    // invalidation fetched are all that reached WeChat.
    assert_eq!(app.upstream_calls(), 2);
}

/// Opens `base`'s dashboard and signs in with `key`.
async fn sign_in(browser: &Client, base: &str, key: &str) {
    browser
        .goto(&format!("{base}/ui"))
        .await
        .expect("the page opens");
    let field = browser
        .find(Locator::Css("#key"))
        .await
        .expect("a key field");
    field.send_keys(key).await.expect("type the key");
    click(browser, "#sign-in-form button[type=submit]").await;
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("could not click {css}: {e}"));
}

/// Accepts the confirm() dialog a click opened (it may take a moment to open).
async fn accept_dialog(browser: &Client) {
    let deadline = Instant::now() + PATIENCE;
    while let Err(e) = browser.accept_alert().await {
        assert!(Instant::now() < deadline, "no dialog opened: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Signs in, watches the page, triggers a refresh; returns a screenshot.
async fn drive(app: &crate::helpers::TestApp, browser: &Client, first: &str) -> Vec<u8> {
    sign_in(browser, &app.base, KEY).await;

    let state = r#"const n = document.querySelector('[data-app="shop"] .state');
                   return n ? n.textContent : null;"#;
    until(browser, "shop's state", state, |v| v == "ok").await;
    let marks = r#"return [...document.querySelectorAll('[data-app="shop"] .mark.refreshed')]
                   .map(m => m.getAttribute('data-generation'));"#;
    let before = until(browser, "shop's first refresh", marks, |v| {
        v == &json!(["1"])
    })
    .await;
    assert_eq!(before, json!(["1"]));

    // The key lacks `admin`: no admin section, no remove or revoke button.
    let admin = r#"return {
        hidden: document.getElementById('admin').hidden,
        remove: document.querySelectorAll('.remove-app').length,
        revoke: document.querySelectorAll('.revoke-client').length,
        signIn: document.getElementById('sign-in').hidden };"#;
    assert_eq!(
        eval(browser, admin).await,
        json!({"hidden": true, "remove": 0, "revoke": 0, "signIn": true})
    );
    // `other`'s wrong appid is an open incident.
    let alerts = r#"const n = document.querySelector('#alerts .alert.open');
                    return n ? n.textContent : null;"#;
    until(browser, "the open incident", alerts, |v| {
        v.as_str().is_some_and(|t| {
            t.starts_with("configuration_error other")
                && t.contains("WeChat refuses the configuration (errcode 40013)")
        })
    })
    .await;
    // An app that fails shows red marks and its last error.
    let failed = r#"return document.querySelectorAll('[data-app="other"] .mark.failed').length;"#;
    until(browser, "other's failures", failed, |v| {
        v.as_u64() >= Some(1)
    })
    .await;
    let error = r#"return document.querySelector('[data-app="other"] .last-error').textContent;"#;
    let error = eval(browser, error).await;
    assert!(
        error
            .as_str()
            .is_some_and(|e| e.contains("errcode 40013): invalid appid")),
        "{error}"
    );
    let facts = r#"const row = document.querySelector('[data-app="shop"]');
        return [row.querySelector('.kind').textContent, row.querySelector('.quota dd').textContent,
                row.querySelector('.tickets').textContent];"#;
    assert_eq!(
        eval(browser, facts).await,
        json!([
            "official (classic)",
            "1 / 1600",
            "tickets: jsapi not_requested; wx_card not_requested"
        ])
    );

    let (status, body) = app.invalidate(first).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["refreshed"], true);
    until(
        browser,
        "shop's refresh after the invalidation",
        marks,
        |v| v == &json!(["1", "2"]),
    )
    .await;

    // The time left ticks down from the status, and no token is on the page.
    let left =
        r#"return document.querySelector('[data-app="shop"] [data-left-until]').textContent;"#;
    until(browser, "shop's time left", left, |v| {
        v.as_str()
            .is_some_and(|s| s.starts_with("1h 5") || s.starts_with("2h 00m"))
    })
    .await;
    // The token's age ticks between refreshes.
    let age = r#"return document.querySelector('[data-app="shop"] [data-age-from]').textContent;"#;
    let seen = eval(browser, age).await;
    until(browser, "shop's token age ticking", age, |v| v != &seen).await;
    let summary =
        r#"return document.querySelector('[data-app="shop"] .timeline-summary').textContent;"#;
    assert_eq!(
        eval(browser, summary).await,
        "2 refreshes, 0 failures in 24 h"
    );
    let current = app.token().await;
    let text = eval(browser, "return document.documentElement.outerHTML;").await;
    let text = text.as_str().expect("the page's HTML");
    assert!(!text.contains(first) && !text.contains(&current));
    assert!(!text.contains(KEY), "the key is not shown");

    let screenshot = browser.screenshot().await.expect("a screenshot");
    renders_what_this_server_cannot_send_yet(browser).await;
    screenshot
}

/// The page's renderers fed what the admin, alerts and quota routes answer (built
/// elsewhere): values with markup in them stay text.
async fn renders_what_this_server_cannot_send_yet(browser: &Client) {
    let script = r#"
        renderAdmin([{name: "<img id=evil1 src=x>", apps: ["*"], scopes: ["read", "admin"]}]);
        renderAlerts({open: [{incident: "i1", kind: "configuration_error", app: "shop",
                              summary: "<img id=evil2 src=x>", since: 1795608692}],
                      recent: []});
        return {
            admin: !document.getElementById('admin').hidden,
            client: document.querySelector('#clients tbody td').textContent,
            revoke: document.querySelectorAll('.revoke-client').length,
            alert: document.querySelector('#alerts .alert.open').textContent.includes('<img id=evil2 src=x>'),
            markup: document.querySelectorAll('#evil1, #evil2').length,
            quota: quotaText({upstream_calls_today: 3, quota: {budget: 1600, used: 3, guarded: false}}),
            guarded: quotaText({upstream_calls_today: 9, quota: {budget: 8, used: 9, guarded: true}}),
            wechat: wechatQuota({quota: {wechat: {daily_limit: 2000, used: 9, remain: 1991}}}),
            other: wechatQuota({quota: {wechat: {calls: 9}}}),
        };"#;
    assert_eq!(
        eval(browser, script).await,
        json!({
            "admin": true, "client": "<img id=evil1 src=x>", "revoke": 1, "alert": true,
            "markup": 0, "quota": "3 / 1600", "guarded": "9 / 8 (guarded)",
            "wechat": "9 / 2000 (1991 left)", "other": "calls 9",
        })
    );
}

const ADMIN_KEY: &str = "wxt_test_dashboard_admin_key";
const APPID2: &str = "wx2222222222222222";
const SECRET2: &str = "second-app-secret-value";

#[tokio::test]
async fn an_admin_adds_and_revokes_a_client_and_removes_an_app_from_the_dashboard() {
    let chromium = required(
        &["chromium", "chromium-browser", "google-chrome"],
        "chromium",
    );
    let chromedriver = required(&["chromedriver"], "chromium-driver");

    let emulator = wechat_emulator::spawn(wechat_emulator::Config {
        apps: vec![
            wechat_emulator::AppCredentials::new(APPID, SECRET),
            wechat_emulator::AppCredentials::new(APPID2, SECRET2),
        ],
        ..wechat_emulator::Config::default()
    })
    .await
    .expect("emulator starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
path = "{db}"
[upstream]
api_base = "{api_base}"
[[apps]]
id = "shop"
appid = "{APPID}"
secret = "{SECRET}"
[[clients]]
name = "admin"
key = "{ADMIN_KEY}"
apps = ["*"]
scopes = ["read", "admin"]
"#,
        db = dir.path().join("wxtoken.db").display(),
        api_base = emulator.base_url(),
    );
    let settings = wxtoken::Settings::from_toml(&toml).expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = wxtoken::Server::build(&settings, listener)
        .await
        .expect("server builds");
    let base = format!("http://{}", server.local_addr().expect("addr"));
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    // An app added at runtime (those from the config file cannot be removed).
    let http = reqwest::Client::new();
    let added = http
        .put(format!("{base}/v1/apps/shop2"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"kind": "official", "appid": APPID2, "secret": SECRET2}))
        .send()
        .await
        .expect("sent");
    assert_eq!(added.status(), 201);

    let driver = start_chromedriver(&chromedriver).await;
    let browser = open_browser(&driver, &chromium).await;
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(administer(
        &browser, &base, &http,
    )))
    .await;
    let closed = browser.close().await;
    let screenshot = outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    closed.expect("the session closes");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-admin.png");
    std::fs::write(&path, &screenshot).expect("write the screenshot");
    println!("admin dashboard screenshot: {}", path.display());
    // shop's token at start and shop2's when added: the page fetched nothing.
    let stats = emulator.emulator.stats();
    assert_eq!(stats.app(APPID).upstream_token_calls(), 1);
    assert_eq!(stats.app(APPID2).upstream_token_calls(), 1);
}

async fn administer(browser: &Client, base: &str, http: &reqwest::Client) -> Vec<u8> {
    sign_in(browser, base, ADMIN_KEY).await;
    let clients = r#"if (document.getElementById('admin').hidden) return null;
        return [...document.querySelectorAll('#clients tbody tr')].map(r => r.dataset.client);"#;
    until(browser, "the clients of an admin", clients, |v| {
        v == &json!(["admin"])
    })
    .await;
    let apps = r#"return [...document.querySelectorAll('.app')]
        .filter(a => a.querySelector('.state').textContent === 'ok'
                     && a.querySelector('.remove-app'))
        .map(a => a.dataset.app);"#;
    until(browser, "both apps, removable", apps, |v| {
        v == &json!(["shop", "shop2"])
    })
    .await;
    let alerts = r#"return document.getElementById('alerts').textContent;"#;
    assert_eq!(eval(browser, alerts).await, "no alerts");

    // Add a client: its key is shown once, and works.
    let name = browser
        .find(Locator::Css("#client-name"))
        .await
        .expect("name field");
    name.send_keys("made-on-the-page").await.expect("type");
    let apps_field = browser
        .find(Locator::Css("#client-apps"))
        .await
        .expect("apps field");
    apps_field.send_keys("shop").await.expect("type");
    click(browser, "#add-client button[type=submit]").await;
    let shown = r#"return document.getElementById('new-key').hidden
        ? null : document.getElementById('new-key-value').textContent;"#;
    let key = until(browser, "the new key", shown, |v| {
        v.as_str().is_some_and(|k| !k.is_empty())
    })
    .await;
    let key = key.as_str().expect("a key").to_owned();
    let status = |key: String| {
        let request = http
            .get(format!("{base}/v1/apps/shop"))
            .bearer_auth(key)
            .send();
        async move { request.await.expect("sent").status().as_u16() }
    };
    assert_eq!(status(key.clone()).await, 200);
    until(browser, "the new client listed", clients, |v| {
        v == &json!(["admin", "made-on-the-page"])
    })
    .await;
    let screenshot = browser.screenshot().await.expect("a screenshot");
    click(browser, "#new-key-done").await;
    let gone = r#"return document.getElementById('new-key-value').textContent;"#;
    assert_eq!(eval(browser, gone).await, "", "the key is shown once");

    // Revoke it: the key stops working.
    click(
        browser,
        r#"tr[data-client="made-on-the-page"] .revoke-client"#,
    )
    .await;
    accept_dialog(browser).await;
    until(browser, "the client gone", clients, |v| {
        v == &json!(["admin"])
    })
    .await;
    assert_eq!(status(key).await, 401);

    // Remove the runtime app: its routes answer 404.
    click(browser, r#"[data-app="shop2"] .remove-app"#).await;
    accept_dialog(browser).await;
    let listed = r#"return [...document.querySelectorAll('.app')].map(a => a.dataset.app);"#;
    until(browser, "shop2 gone", listed, |v| v == &json!(["shop"])).await;
    let removed = http
        .get(format!("{base}/v1/apps/shop2"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("sent");
    assert_eq!(removed.status(), 404);
    let timeline = http
        .get(format!("{base}/v1/apps/shop2/timeline"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("sent");
    assert_eq!(timeline.status(), 404);

    // An app from the config file cannot be removed: the page says why.
    click(browser, r#"[data-app="shop"] .remove-app"#).await;
    accept_dialog(browser).await;
    let error = r#"return document.getElementById('admin-error').textContent;"#;
    until(browser, "the refusal", error, |v| {
        v.as_str().is_some_and(|e| e.contains("config"))
    })
    .await;
    assert_eq!(eval(browser, listed).await, json!(["shop"]));
    screenshot
}
