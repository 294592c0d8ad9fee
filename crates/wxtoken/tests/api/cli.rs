//! The real binary: restart persistence across processes, config errors at start, keygen
//! and the `token` command.

use sha2::Digest;
use tokio::process::Command;

use crate::helpers::*;

async fn stop(mut process: Process) -> Vec<String> {
    let pid = process.child.id().expect("pid");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("kill");
    assert!(status.success());
    let exit = process.child.wait().await.expect("wait");
    assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
    process.logs.lock().expect("logs").clone()
}

async fn get_token(http: &reqwest::Client, base: &str) -> serde_json::Value {
    http.get(format!("{base}/v1/apps/shop/access_token"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_with_a_valid_stored_token_makes_no_upstream_call() {
    let (emulator, _dir, config) = emulator_and_config(&Options::default()).await;
    let http = reqwest::Client::new();
    let calls = || emulator.emulator.stats().app(APPID).upstream_token_calls();

    let first = serve(&config).await;
    let before = get_token(&http, &first.base).await;
    assert_eq!(calls(), 1);
    let token = before["access_token"].as_str().expect("token").to_owned();

    // The CLI prints the same token.
    let out = Command::new(BIN)
        .args(["token", "shop", "--server", &first.base, "--key", KEY])
        .output()
        .await
        .expect("token command");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), token);

    // The very first upstream call (made while the server was starting) is counted.
    let metrics = http
        .get(format!("{}/metrics", first.base))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"wxtoken_upstream_calls_total{app="shop",api="stable_token"} 1"#),
        "{metrics}"
    );

    let mut logs = stop(first).await;

    let second = serve(&config).await;
    let after = get_token(&http, &second.base).await;
    assert_eq!(after["access_token"], token.as_str());
    assert_eq!(after["expires_at"], before["expires_at"]);
    assert_eq!(
        calls(),
        1,
        "the stored token was still valid: no upstream call"
    );
    let status: serde_json::Value = http
        .get(format!("{}/v1/apps/shop", second.base))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(status["token"]["generation"], 1);
    assert_eq!(
        status["upstream_calls_by_api"]["stable_token"], 1,
        "the counter survived too"
    );
    // The status asked WeChat for its quota figures, an upstream call of its own.
    assert_eq!(status["upstream_calls_by_api"]["quota_get"], 1, "{status}");
    assert_eq!(status["upstream_calls_today"], 2);
    logs.extend(stop(second).await);

    let all = logs.join("\n");
    assert!(!all.contains(&token), "a whole token was logged");
    assert!(!all.contains(SECRET), "a secret was logged");
    assert!(
        all.contains(&token[..6]),
        "logs show a token's first characters"
    );
}

async fn start_error(config_text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, config_text).expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("WXTOKEN_TEST_UNSET", "")
        .output()
        .await
        .expect("runs");
    assert!(!out.status.success(), "a bad config must not start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn config_errors_at_start_name_the_key() {
    let good = config_toml(
        &Options::default(),
        "http://127.0.0.1:9",
        "/tmp/never-opened.db",
    );
    let cases = [
        (
            good.replace("[keeper]", "[keeper]\nrefresh_ahead = 5"),
            "refresh_ahead",
        ),
        (
            good.replace("secret = \"the-real-secret\"", ""),
            "apps[0].secret",
        ),
        (
            good.replace(
                "secret = \"the-real-secret\"",
                "secret = \"${WXTOKEN_TEST_NOT_SET_ANYWHERE}\"",
            ),
            "WXTOKEN_TEST_NOT_SET_ANYWHERE",
        ),
        (
            good.replace("mode = \"stable\"", "mode = \"turbo\""),
            "apps[0].mode",
        ),
        (
            good.replace("scopes = [\"read\"]", "scopes = [\"reed\"]"),
            "clients[1].scopes",
        ),
        (
            good.replace("listen = \"127.0.0.1:0\"", "listen = \"everywhere\""),
            "server.listen",
        ),
    ];
    for (text, key) in cases {
        let stderr = start_error(&text).await;
        assert!(stderr.contains(key), "expected `{key}` in: {stderr}");
    }
    let missing = Command::new(BIN)
        .args(["serve", "--config", "/definitely/not/here.toml"])
        .output()
        .await
        .expect("runs");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/definitely/not/here.toml"));
}

#[tokio::test]
async fn keygen_prints_a_key_and_its_sha256() {
    let out = Command::new(BIN)
        .args(["keygen", "--name", "billing"])
        .output()
        .await
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("key = "))
        .expect("key line");
    let digest = text
        .lines()
        .find_map(|l| l.strip_prefix("key_sha256 = \""))
        .expect("digest line")
        .trim_end_matches('"');
    assert!(key.starts_with("wxt_") && key.len() == 68);
    assert_eq!(hex::encode(sha2::Sha256::digest(key.as_bytes())), digest);
    assert!(text.contains("name = \"billing\""));
}
