//! `wxtoken demo` as a new user runs it: the addresses it prints serve what its curl
//! lines promise, the WeChat-shaped routes included.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::BIN;

const KEY: &str = wxtoken::demo::DEMO_KEY;

/// The first `http://...` after `label` in the guide.
fn url_after(guide: &str, label: &str) -> String {
    guide
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
        .unwrap_or_else(|| panic!("no {label} URL in:\n{guide}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_what_its_guide_prints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("demo.db"))
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("wxtoken demo starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut guide = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read") {
            guide.push_str(&line);
            guide.push('\n');
            if line.contains("Ctrl-C stops the demo") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the guide within 30 s");
    let server = url_after(&guide, "server");
    let appid = guide
        .split("appid ")
        .nth(1)
        .and_then(|rest| rest.split([',', ')']).next())
        .expect("appid in the guide")
        .to_owned();
    assert!(guide.contains(&format!(
        "{server}/cgi-bin/token?grant_type=client_credential"
    )));

    let http = reqwest::Client::new();
    let get = |url: String, key: bool| {
        let http = http.clone();
        async move {
            let mut request = http.get(url);
            if key {
                request = request.bearer_auth(KEY);
            }
            let response = request.send().await.expect("sent");
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("json")
        }
    };
    let v1 = get(format!("{server}/v1/apps/demo/access_token"), true).await;
    let token = v1["access_token"].as_str().expect("token").to_owned();
    let facade = get(
        format!("{server}/cgi-bin/token?grant_type=client_credential&appid={appid}&secret={KEY}"),
        false,
    )
    .await;
    assert_eq!(facade["access_token"], token.as_str(), "{facade}");
    let through = get(
        format!("{server}/cgi-bin/get_api_domain_ip?access_token={token}"),
        false,
    )
    .await;
    assert!(through["dns"].is_array(), "{through}");
    let proxied = get(
        format!("{server}/v1/apps/demo/proxy/cgi-bin/get_api_domain_ip"),
        true,
    )
    .await;
    assert!(proxied["dns"].is_array(), "{proxied}");
    let config = http
        .post(format!("{server}/v1/apps/demo/jssdk/config"))
        .bearer_auth(KEY)
        .body(r#"{"url":"https://shop.example/page?id=1#top"}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(config.status(), 200);
    child.kill().await.expect("stop the demo");
}
