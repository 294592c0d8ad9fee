//! Secrets hygiene: the real binary at `RUST_LOG=trace`, driven through every kind of
//! request (tokens, tickets, invalidation, JS-SDK, the WeChat-shaped facade, the
//! gateway, a third-party platform's pushes and authorizers, runtime administration,
//! wrong keys and bad bodies, a master key rotation). No secret, key or whole token may
//! then appear in its logs, an error body, `/metrics`, the status, audit, alerts or
//! timeline JSON, or the dashboard's assets; and what the master key seals may not be
//! readable in the store (SQLite's file, or every Redis value). Every secret is a
//! distinctive string, so that a substring search means something.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use wechat_emulator::Config as EmulatorConfig;
use wxtoken::wechat::crypto::MsgCrypt;

use crate::helpers::BIN;
use crate::redis_server::RedisServer;

const APPID: &str = "wx0123456789abcdef";
const APPID2: &str = "wx2222222222222222";
const CORPID: &str = "ww0123456789abcdef";
const AGENTID: u64 = 1000002;
const COMPONENT_APPID: &str = "wxcomponent000001";
const MERCHANT: &str = "wxmerchant0000001";

const SHOP_SECRET: &str = "HYGshopSecretQ7zX91vv";
const WECOM_SECRET: &str = "HYGwecomSecretP2kL83";
const COMPONENT_SECRET: &str = "HYGcomponentSecretW3rT55";
const PUSH_TOKEN: &str = "HYGpushTokenM4kD";
/// 43 base64 characters, as WeChat's EncodingAESKey.
const AES_KEY: &str = "HYGaesKeyZq8Wm3Np5Rt7Vx9Bd2Fh4Jk6Lm8Pq0SsUA";
/// The runtime app's secret, and the one it is rotated to.
const RUNTIME_SECRET: &str = "HYGruntimeSecretX2bV77";
const ROTATED_SECRET: &str = "HYGrotatedSecretN5cY64";
/// A secret sent in a body the server refuses.
const REFUSED_SECRET: &str = "HYGrefusedSecretK9dR12";
const READ_KEY: &str = "wxt_HYGreadKeyP8lM22";
const ADMIN_KEY: &str = "wxt_HYGadminKeyV6nC41";
const MASTER_KEY: &str = "5e1f00d5a1c0ffee7ab1e5a11ad5eed5f00dfaceb00c0ffee5ca1ab1efeedbee";
const NEW_MASTER_KEY: &str = "0ddba115deadbea7c0debabe5eaf00d5ca75a1ad0b5e55ed70ff1ce5ca1ab1ed";

/// A `wxtoken` process and everything it wrote on stdout and stderr.
struct Running {
    child: Child,
    base: String,
    output: Arc<Mutex<String>>,
}

/// Appends every line of `stream` to `sink`, until the stream ends.
fn drain(stream: impl AsyncRead + Unpin + Send + 'static, sink: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut sink = sink.lock().expect("output");
            sink.push_str(&line);
            sink.push('\n');
        }
    });
}

/// Runs `wxtoken serve` at trace level with `master_key`; waits until it listens.
async fn serve(config: &Path, master_key: &str) -> Running {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .env("WXTOKEN_MASTER_KEY", master_key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("wxtoken starts");
    let output = Arc::new(Mutex::new(String::new()));
    drain(child.stderr.take().expect("stderr"), output.clone());
    drain(child.stdout.take().expect("stdout"), output.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    let base = loop {
        let addr = {
            let text = output.lock().expect("output");
            text.lines()
                .find(|l| l.contains("wxtoken listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned)
        };
        if let Some(addr) = addr {
            break format!("http://{addr}");
        }
        assert!(
            Instant::now() < deadline,
            "the server never listened: {}",
            output.lock().expect("output")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Running {
        child,
        base,
        output,
    }
}

impl Running {
    /// SIGTERM, then waits for the exit, so that the log writer flushes.
    async fn stop(mut self) -> String {
        let pid = self.child.id().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("kill");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the server stops on SIGTERM")
            .expect("wait");
        // The drains read until the pipes close.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.output.lock().expect("output").clone()
    }
}

/// Every answer the server gave, and every credential it handed out.
#[derive(Default)]
struct Seen {
    /// (what was asked, status, body) of answers that must carry no secret.
    answers: Vec<(String, u16, String)>,
    /// Whole tokens and tickets handed out (and refresh tokens WeChat issued).
    credentials: BTreeSet<String>,
}

struct Client {
    http: reqwest::Client,
    base: String,
    seen: Arc<Mutex<Seen>>,
}

impl Client {
    /// Sends a request; an answer that carries credentials by design (a token, a ticket)
    /// has them noted, every other answer is kept to be searched.
    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<String>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.header("authorization", key);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let mut seen = self.seen.lock().expect("seen");
        let carried: Vec<String> = ["access_token", "ticket", "component_access_token"]
            .iter()
            .filter_map(|field| value.get(field).and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        let succeeded = status == 200 && value.get("errcode").is_none_or(|c| c == 0);
        if succeeded && !carried.is_empty() {
            seen.credentials.extend(carried);
        } else {
            seen.answers
                .push((format!("{method} {path}"), status, text));
        }
        (status, value)
    }

    async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        self.call("GET", path, Some(&bearer(key)), None).await
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(&bearer(key)), Some(body.to_string()))
            .await
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// `store` is the body of the `[store]` table.
fn config(api_base: &str, store: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
{store}
[upstream]
api_base = "{api_base}"
wecom_base = "{api_base}"
request_timeout_ms = 3000
[[apps]]
id = "shop"
appid = "{APPID}"
secret = "{SHOP_SECRET}"
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
[[clients]]
name = "services"
key = "{READ_KEY}"
apps = ["*"]
scopes = ["read", "invalidate"]
[[clients]]
name = "operator"
key = "{ADMIN_KEY}"
apps = ["*"]
scopes = ["read", "invalidate", "admin"]
"#
    )
}

/// A component push as WeChat sends it: `(query, body)`.
fn push(token: &str, inner: &str) -> (String, String) {
    let crypt = MsgCrypt::new(token, AES_KEY, COMPONENT_APPID).expect("crypt");
    let encrypt = crypt.encrypt(inner, [7; 16]);
    let (timestamp, nonce) = ("1700000000", "hyg123");
    let signature = crypt.signature(timestamp, nonce, &encrypt);
    let body = format!(
        "<xml><AppId><![CDATA[{COMPONENT_APPID}]]></AppId><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    );
    (
        format!("timestamp={timestamp}&nonce={nonce}&encrypt_type=aes&msg_signature={signature}"),
        body,
    )
}

fn verify_ticket_push(ticket: &str) -> String {
    format!(
        "<xml><AppId><![CDATA[{COMPONENT_APPID}]]></AppId><CreateTime>1700000000</CreateTime>\
         <InfoType><![CDATA[component_verify_ticket]]></InfoType>\
         <ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket></xml>"
    )
}

/// Tokens, tickets, the facade, the gateway and a platform, as a service uses them.
async fn exercise_credentials(c: &Client, emulator: &wechat_emulator::Emulator) {
    // Tokens and their invalidation.
    let (status, body) = c.get("/v1/apps/shop/access_token", READ_KEY).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().expect("token").to_owned();
    let (status, body) = c
        .post(
            "/v1/apps/shop/access_token/invalidate",
            READ_KEY,
            json!({ "access_token": token }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = c
        .post(
            "/v1/apps/shop/access_token/invalidate",
            READ_KEY,
            json!({ "access_token": "not-a-token-of-ours" }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = c
        .get("/v1/apps/shop/access_token?min_ttl=60", READ_KEY)
        .await;
    assert_eq!(status, 200, "{body}");

    // Tickets and the JS-SDK.
    let (status, body) = c.get("/v1/apps/shop/ticket/jsapi", READ_KEY).await;
    assert_eq!(status, 200, "{body}");
    let ticket = body["ticket"].as_str().expect("ticket").to_owned();
    let (status, body) = c
        .post(
            "/v1/apps/shop/ticket/jsapi/invalidate",
            READ_KEY,
            json!({ "ticket": ticket }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = c.get("/v1/apps/shop/ticket/wx_card", READ_KEY).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = c
        .post(
            "/v1/apps/shop/jssdk/config",
            READ_KEY,
            json!({"url": "https://shop.example/p?a=1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = c.get("/v1/apps/hr/access_token", READ_KEY).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = c.get("/v1/apps/hr/ticket/agent_config", READ_KEY).await;
    assert_eq!(status, 200, "{body}");

    // The WeChat-shaped facade, with a client key, a wrong one and the real secret.
    for secret in [READ_KEY, "wxt_HYGwrongKey", SHOP_SECRET] {
        let path =
            format!("/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={secret}");
        let (status, body) = c.call("GET", &path, None, None).await;
        assert_eq!(status, 200, "{body}");
        let body = json!({"grant_type": "client_credential", "appid": APPID, "secret": secret});
        let (status, _) = c
            .call(
                "POST",
                "/cgi-bin/stable_token",
                None,
                Some(body.to_string()),
            )
            .await;
        assert_eq!(status, 200);
    }
    let body = json!({"grant_type": "client_credential", "appid": APPID,
        "secret": READ_KEY, "force_refresh": true});
    // Honoured or held back (the invalidation above was a forced refresh at WeChat).
    let (status, _) = c
        .call(
            "POST",
            "/cgi-bin/stable_token",
            None,
            Some(body.to_string()),
        )
        .await;
    assert_eq!(status, 200);
    for secret in [READ_KEY, WECOM_SECRET] {
        let path = format!("/cgi-bin/gettoken?corpid={CORPID}&corpsecret={secret}");
        c.call("GET", &path, None, None).await;
    }

    // The gateway: forwarded, answered from the ticket slot, refused, proxied, logins.
    let (_, body) = c.get("/v1/apps/shop/access_token", READ_KEY).await;
    let token = body["access_token"].as_str().expect("token").to_owned();
    for path in [
        format!("/cgi-bin/get_api_domain_ip?access_token={token}"),
        format!("/cgi-bin/ticket/getticket?access_token={token}&type=jsapi"),
        "/cgi-bin/get_api_domain_ip?access_token=HYGforgedToken".to_owned(),
        "/cgi-bin/get_api_domain_ip".to_owned(),
    ] {
        c.call("GET", &path, None, None).await;
    }
    c.call(
        "POST",
        &format!("/cgi-bin/message/custom/send?access_token={token}"),
        None,
        Some(json!({"touser": "o1", "msgtype": "text"}).to_string()),
    )
    .await;
    let (status, body) = c
        .get("/v1/apps/shop/proxy/cgi-bin/get_api_domain_ip", READ_KEY)
        .await;
    assert_eq!(status, 200, "{body}");
    for secret in [READ_KEY, SHOP_SECRET] {
        let path = format!(
            "/sns/jscode2session?appid={APPID}&secret={secret}&js_code=c-{}&grant_type=authorization_code",
            secret.len()
        );
        let (status, body) = c.call("GET", &path, None, None).await;
        assert_eq!(status, 200, "{body}");
    }

    // A third-party platform: a verify ticket pushed (and a forged push), the
    // component token, an authorization, the authorizer's credentials.
    let ticket = emulator.verify_ticket(COMPONENT_APPID).expect("component");
    let (query, body) = push(PUSH_TOKEN, &verify_ticket_push(&ticket));
    let (status, _) = c
        .call(
            "POST",
            &format!("/v1/apps/platform/callback?{query}"),
            None,
            Some(body),
        )
        .await;
    assert_eq!(status, 200);
    let (query, body) = push("HYGnotThePushToken", &verify_ticket_push("forged"));
    let (status, _) = c
        .call(
            "POST",
            &format!("/v1/apps/platform/callback?{query}"),
            None,
            Some(body),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = c
        .call(
            "POST",
            &format!("/v1/apps/platform/callback?{query}"),
            None,
            Some("<xml>broken".to_owned()),
        )
        .await;
    assert_eq!(status, 400);
    let (status, body) = c.get("/v1/apps/platform/access_token", READ_KEY).await;
    assert_eq!(status, 200, "{body}");
    let code = emulator
        .authorize(COMPONENT_APPID, MERCHANT)
        .expect("component");
    let (status, body) = c
        .post(
            "/v1/apps/platform/authorizers",
            ADMIN_KEY,
            json!({ "authorization_code": code }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = c
        .post(
            "/v1/apps/platform/authorizers",
            ADMIN_KEY,
            json!({ "authorization_code": "HYGspentCode" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let base = format!("/v1/apps/platform/authorizers/{MERCHANT}");
    let (status, body) = c.get(&format!("{base}/access_token"), READ_KEY).await;
    assert_eq!(status, 200, "{body}");
    let authorizer_token = body["access_token"].as_str().expect("token").to_owned();
    let (status, body) = c
        .post(
            &format!("{base}/access_token/invalidate"),
            READ_KEY,
            json!({ "access_token": authorizer_token }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let authorizer_token = body["access_token"].as_str().expect("token").to_owned();
    let (status, body) = c.get(&format!("{base}/ticket/jsapi"), READ_KEY).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = c
        .post(
            &format!("{base}/jssdk/config"),
            READ_KEY,
            json!({"url": "https://merchant.example/"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    c.call(
        "GET",
        &format!("/cgi-bin/get_api_domain_ip?access_token={authorizer_token}"),
        None,
        None,
    )
    .await;
    let (status, body) = c.get("/v1/apps/platform/authorizers", READ_KEY).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = c
        .post(
            "/v1/apps/platform/authorizers/auth_url",
            ADMIN_KEY,
            json!({"redirect_uri": "https://shop.example/cb"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Runtime administration, wrong keys and bad bodies; returns the key of the client
/// added (and revoked).
async fn exercise_admin(c: &Client) -> String {
    let app = json!({"appid": APPID2, "secret": RUNTIME_SECRET});
    let (status, body) = c
        .call(
            "PUT",
            "/v1/apps/shop2",
            Some(&bearer(ADMIN_KEY)),
            Some(app.to_string()),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = c.get("/v1/apps/shop2/access_token", READ_KEY).await;
    assert_eq!(status, 200, "{body}");
    // Refused bodies that carry a secret.
    for bad in [
        json!({"appid": APPID2, "secret": REFUSED_SECRET, "kind": "nope"}).to_string(),
        json!({"appid": "not-an-appid", "secret": REFUSED_SECRET}).to_string(),
        json!({"appid": APPID2, "secret": REFUSED_SECRET, "surprise": 1}).to_string(),
        format!(r#"{{"appid": "{APPID2}", "secret": "{REFUSED_SECRET}"#),
        json!({"appid": APPID2, "secret": [REFUSED_SECRET]}).to_string(),
    ] {
        let (status, body) = c
            .call("PUT", "/v1/apps/shop3", Some(&bearer(ADMIN_KEY)), Some(bad))
            .await;
        assert_eq!(status, 400, "{body}");
    }
    let (status, _) = c
        .call(
            "PUT",
            "/v1/apps/shop",
            Some(&bearer(ADMIN_KEY)),
            Some(json!({"appid": APPID, "secret": REFUSED_SECRET}).to_string()),
        )
        .await;
    assert_eq!(status, 409, "a config-file app is read-only");
    // The secret rotated to one WeChat does not know: the refresh fails, and says so
    // in status, alerts and timeline (without the secret).
    let (status, body) = c
        .call(
            "PUT",
            "/v1/apps/shop2",
            Some(&bearer(ADMIN_KEY)),
            Some(json!({"appid": APPID2, "secret": ROTATED_SECRET}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = c.get("/v1/apps/shop2/access_token", READ_KEY).await;
    assert_eq!(
        status, 200,
        "the token fetched before is still good: {body}"
    );
    let (status, body) = c
        .post(
            "/v1/apps/shop2/access_token/invalidate",
            READ_KEY,
            json!({ "access_token": body["access_token"] }),
        )
        .await;
    assert_eq!(status, 502, "{body}");

    // A client added, used, revoked, used again.
    let (status, created) = c
        .post(
            "/v1/clients",
            ADMIN_KEY,
            json!({"name": "hyg-new", "apps": ["shop"], "scopes": ["read"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let new_key = created["key"].as_str().expect("key").to_owned();
    // The one answer that shows a key, by design: not searched.
    c.seen.lock().expect("seen").answers.pop();
    let (status, _) = c.get("/v1/apps/shop/access_token", &new_key).await;
    assert_eq!(status, 200);
    let (status, _) = c.get("/v1/apps/hr/access_token", &new_key).await;
    assert_eq!(status, 403);
    let (status, _) = c
        .post(
            "/v1/clients",
            ADMIN_KEY,
            json!({"name": "hyg-new", "apps": ["shop"]}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = c
        .call(
            "DELETE",
            "/v1/clients/hyg-new",
            Some(&bearer(ADMIN_KEY)),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = c.get("/v1/apps/shop/access_token", &new_key).await;
    assert_eq!(status, 401);

    // Wrong keys, malformed headers, bad bodies.
    for header in [
        format!("Bearer {SHOP_SECRET}"),
        format!("Basic {ADMIN_KEY}"),
        ADMIN_KEY.to_owned(),
        format!("Bearer {new_key}x"),
    ] {
        let (status, _) = c
            .call("GET", "/v1/apps/shop/access_token", Some(&header), None)
            .await;
        assert_eq!(status, 401);
    }
    let (status, _) = c
        .post("/v1/clients", READ_KEY, json!({"name": "x", "apps": ["*"]}))
        .await;
    assert_eq!(status, 403);
    for bad in ["{", "[]", r#"{"access_token": ""}"#, r#"{"token": "x"}"#] {
        let (status, _) = c
            .call(
                "POST",
                "/v1/apps/shop/access_token/invalidate",
                Some(&bearer(READ_KEY)),
                Some(bad.to_owned()),
            )
            .await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, _) = c
        .call(
            "POST",
            "/cgi-bin/stable_token",
            None,
            Some(format!("{{\"secret\": \"{READ_KEY}\"")),
        )
        .await;
    assert_eq!(status, 200);
    new_key
}

/// Everything a reader of the server can see without a key in hand, and with one:
/// (what, text).
async fn surfaces(c: &Client) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let paths = [
        ("/metrics", None),
        ("/healthz", None),
        ("/readyz", None),
        ("/ui", None),
        ("/ui/app.js", None),
        ("/ui/style.css", None),
        ("/v1/apps", Some(READ_KEY)),
        ("/v1/apps/shop", Some(READ_KEY)),
        ("/v1/apps/shop2", Some(READ_KEY)),
        ("/v1/apps/hr", Some(READ_KEY)),
        ("/v1/apps/platform", Some(READ_KEY)),
        ("/v1/apps/platform/authorizers", Some(READ_KEY)),
        ("/v1/apps/shop/timeline", Some(READ_KEY)),
        ("/v1/apps/shop2/timeline", Some(READ_KEY)),
        ("/v1/apps/hr/timeline", Some(READ_KEY)),
        ("/v1/apps/platform/timeline", Some(READ_KEY)),
        ("/v1/alerts", Some(READ_KEY)),
        ("/v1/audit?limit=1000", Some(ADMIN_KEY)),
        ("/v1/clients", Some(ADMIN_KEY)),
    ];
    for (path, key) in paths {
        let mut request = c.http.get(format!("{}{path}", c.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("sent");
        assert_eq!(response.status(), 200, "{path}");
        out.push((path.to_owned(), response.text().await.expect("text")));
    }
    out
}

/// Where each needle occurs in `haystacks`.
fn leaks(needles: &[(String, String)], haystacks: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (what, needle) in needles {
        for (place, text) in haystacks {
            if let Some(at) = text.find(needle.as_str()) {
                let start = text[..at]
                    .char_indices()
                    .rev()
                    .nth(80)
                    .map_or(0, |(i, _)| i);
                let end = (at + needle.len() + 40).min(text.len());
                let end = (end..=text.len())
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(text.len());
                // The report itself shows the value by its first characters only.
                let shown: String = needle.chars().take(6).collect();
                let excerpt = text[start..end].replace(needle.as_str(), &format!("{shown}[…]"));
                found.push(format!("{what} in {place}: …{excerpt}…"));
            }
        }
    }
    found
}

/// Every value the store holds, as text: the SQLite file (and its WAL) as bytes, or
/// every Redis key's value.
async fn at_rest(dir: &Path, redis: Option<&RedisServer>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(redis) = redis else {
        for name in ["wxtoken.db", "wxtoken.db-wal"] {
            if let Ok(bytes) = std::fs::read(dir.join(name)) {
                out.push((
                    name.to_owned(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
        return out;
    };
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("TYPE");
        let read = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).to_owned(),
            "hash" => redis::cmd("HGETALL").arg(&key).to_owned(),
            "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).to_owned(),
            "set" => redis::cmd("SMEMBERS").arg(&key).to_owned(),
            "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).to_owned(),
            "stream" => redis::cmd("XRANGE").arg(&key).arg("-").arg("+").to_owned(),
            other => panic!("a Redis key of type {other}: {key}"),
        };
        let value: redis::Value = read.query_async(&mut conn).await.expect("read");
        out.push((format!("Redis key {key}"), format!("{value:?}")));
    }
    assert!(out.len() > 5, "the store holds something: {out:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_key_or_whole_token_shows_in_logs_answers_status_or_assets() {
    hygiene(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_too_no_secret_shows_and_what_is_sealed_is_sealed() {
    let redis = RedisServer::start().await;
    hygiene(Some(&redis)).await;
}

/// The whole scenario on SQLite, or on `redis`.
async fn hygiene(redis: Option<&RedisServer>) {
    let emulator = wechat_emulator::spawn(
        EmulatorConfig::default()
            .with_app(APPID, SHOP_SECRET)
            .with_app(APPID2, RUNTIME_SECRET)
            .with_wecom_app(CORPID, AGENTID, WECOM_SECRET)
            .with_component(COMPONENT_APPID, COMPONENT_SECRET, PUSH_TOKEN, AES_KEY),
    )
    .await
    .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = match redis {
        Some(redis) => format!("kind = \"redis\"\nurl = \"{}\"", redis.url()),
        None => format!("path = \"{}\"", dir.path().join("wxtoken.db").display()),
    };
    let config_file = dir.path().join("wxtoken.toml");
    std::fs::write(&config_file, config(&emulator.base_url(), &store)).expect("config");

    let server = serve(&config_file, MASTER_KEY).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let client = Client {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        seen: seen.clone(),
    };
    exercise_credentials(&client, &emulator.emulator).await;
    let new_key = exercise_admin(&client).await;
    let refresh_token = emulator
        .emulator
        .refresh_token_of(COMPONENT_APPID, MERCHANT)
        .expect("authorized");
    let mut places = surfaces(&client).await;
    let first_logs = server.stop().await;

    // The store at rest: runtime secrets and refresh tokens are sealed.
    let at_rest = at_rest(dir.path(), redis).await;

    // The master key rotated offline, then a start under the new key.
    let key_file = dir.path().join("new.key");
    std::fs::write(&key_file, NEW_MASTER_KEY).expect("key file");
    let rotate = Command::new(BIN)
        .args(["rotate-master-key", "--config"])
        .arg(&config_file)
        .arg("--new-key-file")
        .arg(&key_file)
        .env("RUST_LOG", "trace")
        .env("WXTOKEN_MASTER_KEY", MASTER_KEY)
        .output()
        .await
        .expect("rotate-master-key runs");
    let rotate_output = format!(
        "{}{}",
        String::from_utf8_lossy(&rotate.stdout),
        String::from_utf8_lossy(&rotate.stderr)
    );
    assert!(rotate.status.success(), "{rotate_output}");
    let server = serve(&config_file, NEW_MASTER_KEY).await;
    let client = Client {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        seen: seen.clone(),
    };
    let (status, body) = client
        .get(
            &format!("/v1/apps/platform/authorizers/{MERCHANT}/access_token"),
            READ_KEY,
        )
        .await;
    assert_eq!(
        status, 200,
        "the refresh token opens under the new key: {body}"
    );
    places.extend(surfaces(&client).await);
    let second_logs = server.stop().await;

    let seen = seen.lock().expect("seen");
    // The search means something: trace lines were captured, and tokens are logged
    // by their first characters only.
    assert!(first_logs.contains("TRACE"), "{first_logs}");
    assert!(
        seen.credentials
            .iter()
            .any(|c| first_logs.contains(&c[..6])),
        "no token prefix in the logs"
    );
    places.push(("the first run's logs".to_owned(), first_logs));
    places.push(("rotate-master-key's output".to_owned(), rotate_output));
    places.push(("the second run's logs".to_owned(), second_logs));
    for (what, status, body) in &seen.answers {
        places.push((format!("the answer ({status}) to {what}"), body.clone()));
    }

    let mut needles: Vec<(String, String)> = [
        ("the app secret", SHOP_SECRET),
        ("the WeCom secret", WECOM_SECRET),
        ("the component secret", COMPONENT_SECRET),
        ("the message token", PUSH_TOKEN),
        ("the EncodingAESKey", AES_KEY),
        ("the runtime app's secret", RUNTIME_SECRET),
        ("the rotated secret", ROTATED_SECRET),
        ("a refused body's secret", REFUSED_SECRET),
        ("a client key", READ_KEY),
        ("the admin key", ADMIN_KEY),
        ("the master key", MASTER_KEY),
        ("the new master key", NEW_MASTER_KEY),
    ]
    .into_iter()
    .map(|(what, v)| (what.to_owned(), v.to_owned()))
    .collect();
    needles.push(("the added client's key".to_owned(), new_key));
    needles.push((
        "the authorizer refresh token".to_owned(),
        refresh_token.clone(),
    ));
    needles.push((
        "the component verify ticket".to_owned(),
        emulator
            .emulator
            .current_verify_ticket(COMPONENT_APPID)
            .expect("minted"),
    ));
    assert!(seen.credentials.len() >= 8, "{:?}", seen.credentials.len());
    for credential in &seen.credentials {
        needles.push(("a whole token or ticket".to_owned(), credential.clone()));
    }
    let found = leaks(&needles, &places);
    assert!(found.is_empty(), "leaks:\n{}", found.join("\n"));

    // At rest, what the master key seals is not readable.
    let sealed: Vec<(String, String)> = [
        ("the runtime app's secret", ROTATED_SECRET),
        ("the authorizer refresh token", refresh_token.as_str()),
    ]
    .into_iter()
    .map(|(what, v)| (what.to_owned(), v.to_owned()))
    .collect();
    // The search reads the values: the tokens themselves are stored as they are.
    assert!(
        seen.credentials
            .iter()
            .any(|c| at_rest.iter().any(|(_, text)| text.contains(c.as_str()))),
        "no stored token found by the search"
    );
    let found = leaks(&sealed, &at_rest);
    assert!(found.is_empty(), "unsealed at rest:\n{}", found.join("\n"));
}
