//! The mixed load: request loops on random instances (token, ticket, facade and gateway
//! reads, stale reports), and slower tasks for what happens now and then (reports of
//! the current token, verify ticket pushes, admin changes and their follow-ups on the
//! other instance).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};
use wechat_emulator::crypto::MsgCrypt;

use super::record::{Phase, Recorder, v1, wx};
use super::{
    ADMIN_KEY, AES_KEY, APPID_NEWS, APPID_SHOP, COMPONENT_APPID, CORPID, FACADE_KEY, LOADER_KEY,
    PUSH_TOKEN, RUNTIME,
};

/// How long a follow-up waits before checking a change on the other instance (they poll
/// the registry every 250 ms).
const FOLLOW_UP_AFTER: Duration = Duration::from_millis(1500);

/// Runtime apps and clients as they should be, and every change that was accepted.
#[derive(Default)]
pub struct AdminState {
    pub apps: BTreeMap<String, &'static str>,
    pub clients: BTreeMap<String, String>,
    pub revoked: Vec<(String, String)>,
    /// (action, app or client name) of every change answered 2xx.
    pub changes: Vec<(&'static str, String)>,
    next_client: u32,
}

/// Everything the tasks share.
pub struct Ctx {
    pub http: reqwest::Client,
    pub instances: Vec<String>,
    pub emulator: String,
    pub rec: Recorder,
    pub admin: Mutex<AdminState>,
    /// Reports answered `"refreshed": true`, per credential: each may cost one new value.
    pub refreshed: Mutex<BTreeMap<&'static str, u64>>,
}

/// A credential the load reads, by the label its values are remembered under.
pub fn token_path(label: &str) -> String {
    match label.strip_prefix("auth:") {
        Some(appid) => format!("/v1/apps/platform/authorizers/{appid}/access_token"),
        None => format!("/v1/apps/{label}/access_token"),
    }
}

/// Labels of the credentials whose tokens work on WeChat's ordinary APIs.
fn gateway_labels() -> Vec<&'static str> {
    let mut labels = vec!["shop", "news", "hr"];
    labels.extend(AUTH_LABELS);
    labels
}

pub const AUTH_LABELS: [&str; 3] = [
    "auth:wxsoakauthorizer01",
    "auth:wxsoakauthorizer02",
    "auth:wxsoakauthorizer03",
];

impl Ctx {
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
        let response = request.send().await.map_err(|e| transport(&e))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| transport(&e))?;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, body))
    }

    fn instance(&self) -> (usize, &str) {
        let i = rand::rng().random_range(0..self.instances.len());
        (i, &self.instances[i])
    }

    fn other(&self, i: usize) -> &str {
        &self.instances[(i + 1) % self.instances.len()]
    }

    /// Runs one request of `kind` and records its outcome.
    async fn op(&self, kind: &'static str, request: impl Future<Output = Result<(), String>>) {
        let began = Instant::now();
        let phase = self.rec.phase();
        let outcome = request.await;
        self.rec.record(kind, began, phase, outcome);
    }

    /// GET a token (or ticket) as `key`; remembers the value under `label`.
    async fn read(
        &self,
        base: &str,
        path: &str,
        label: Option<&'static str>,
    ) -> Result<(), String> {
        let (status, body) = self
            .send(
                self.http
                    .get(format!("{base}{path}"))
                    .bearer_auth(LOADER_KEY),
            )
            .await?;
        v1(status, &body, 200)?;
        let value = body["access_token"]
            .as_str()
            .or(body["ticket"].as_str())
            .ok_or("200 without a value")?;
        if let Some(label) = label {
            let expires_at = body["expires_at"]
                .as_u64()
                .ok_or("200 without expires_at")?;
            self.rec.saw(label, value, expires_at);
        }
        Ok(())
    }

    async fn report(&self, base: &str, label: &'static str, token: &str) -> Result<(), String> {
        let (status, body) = self
            .send(
                self.http
                    .post(format!("{base}{}/invalidate", token_path(label)))
                    .bearer_auth(LOADER_KEY)
                    .json(&json!({ "access_token": token })),
            )
            .await?;
        v1(status, &body, 200)?;
        let fresh = body["access_token"].as_str().ok_or("200 without a token")?;
        let expires_at = body["expires_at"]
            .as_u64()
            .ok_or("200 without expires_at")?;
        self.rec.saw(label, fresh, expires_at);
        if body["refreshed"].as_bool() == Some(true) {
            *self
                .refreshed
                .lock()
                .expect("lock")
                .entry(label)
                .or_default() += 1;
        }
        Ok(())
    }
}

fn transport(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "other"
    };
    format!("transport {what}")
}

/// One request loop: `rate` requests a second until `until`.
pub async fn worker(ctx: &Ctx, rate: f64, until: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while Instant::now() < until {
        tick.tick().await;
        one_request(ctx).await;
    }
}

async fn one_request(ctx: &Ctx) {
    let (i, base) = ctx.instance();
    let roll = rand::rng().random_range(0..100);
    let rng_label = |labels: &[&'static str]| *labels.choose(&mut rand::rng()).expect("labels");
    match roll {
        0..42 => {
            let mut labels = vec!["shop", "news", "hr", "platform"];
            labels.extend(AUTH_LABELS);
            let label = rng_label(&labels);
            ctx.op("token", ctx.read(base, &token_path(label), Some(label)))
                .await;
        }
        42..52 => {
            let auth = rng_label(&AUTH_LABELS);
            let path = [
                "/v1/apps/shop/ticket/jsapi".to_owned(),
                "/v1/apps/news/ticket/wx_card".to_owned(),
                "/v1/apps/hr/ticket/agent_config".to_owned(),
                token_path(auth).replace("/access_token", "/ticket/jsapi"),
            ]
            .choose(&mut rand::rng())
            .expect("paths")
            .clone();
            ctx.op("ticket", ctx.read(base, &path, None)).await;
        }
        52..57 => {
            let appid = *[APPID_SHOP, APPID_NEWS]
                .choose(&mut rand::rng())
                .expect("appids");
            let url = format!(
                "{base}/cgi-bin/token?grant_type=client_credential&appid={appid}&secret={FACADE_KEY}"
            );
            ctx.op("facade /cgi-bin/token", facade(ctx, ctx.http.get(url)))
                .await;
        }
        57..61 => {
            let appid = *[APPID_SHOP, APPID_NEWS]
                .choose(&mut rand::rng())
                .expect("appids");
            let request = ctx
                .http
                .post(format!("{base}/cgi-bin/stable_token"))
                .json(&json!({
                    "grant_type": "client_credential", "appid": appid, "secret": FACADE_KEY,
                }));
            ctx.op("facade /cgi-bin/stable_token", facade(ctx, request))
                .await;
        }
        61..64 => {
            let url = format!("{base}/cgi-bin/gettoken?corpid={CORPID}&corpsecret={FACADE_KEY}");
            ctx.op("facade /cgi-bin/gettoken", facade(ctx, ctx.http.get(url)))
                .await;
        }
        64..80 => {
            let label = rng_label(&gateway_labels());
            let previous = roll >= 74;
            let token = ctx
                .rec
                .seen(label, previous)
                .or_else(|| ctx.rec.seen(label, false));
            let Some((token, expires_at)) = token else {
                return;
            };
            // A token at its last second could go either way: skip it. An expired one
            // is refused by the gateway itself, as WeChat would: 42001 while it knows
            // it as the previous token, 40014 (not issued here) once it is older still.
            let now = super::unix_now();
            if expires_at.abs_diff(now) < 2 {
                return;
            }
            let (kind, dead) = match (previous, expires_at < now) {
                (_, true) => ("gateway (expired previous token)", true),
                (true, false) => ("gateway (previous token)", false),
                (false, false) => ("gateway (current token)", false),
            };
            let url = format!("{base}/cgi-bin/get_api_domain_ip?access_token={token}");
            ctx.op(kind, async {
                let (status, body) = ctx.send(ctx.http.get(url)).await?;
                if !dead {
                    return wx(status, &body);
                }
                match (status, body["errcode"].as_i64()) {
                    (200, Some(42001 | 40014)) => Ok(()),
                    _ => Err(format!("{status} errcode {}", body["errcode"])),
                }
            })
            .await;
        }
        80..86 => {
            let app = rng_label(&["shop", "news", "hr"]);
            let url = format!("{base}/v1/apps/{app}/proxy/cgi-bin/get_api_domain_ip");
            ctx.op("proxy", async {
                let (status, body) = ctx.send(ctx.http.get(url).bearer_auth(LOADER_KEY)).await?;
                wx(status, &body)
            })
            .await;
        }
        86..94 => {
            let label = rng_label(&gateway_labels());
            let Some((stale, _)) = ctx.rec.seen(label, true) else {
                return;
            };
            ctx.op("invalidate (stale token)", ctx.report(base, label, &stale))
                .await;
        }
        _ => {
            let app = rng_label(&["shop", "news", "hr", "platform"]);
            let url = format!("{}/v1/apps/{app}", ctx.other(i));
            ctx.op("app status", async {
                let (status, body) = ctx.send(ctx.http.get(url).bearer_auth(LOADER_KEY)).await?;
                v1(status, &body, 200)
            })
            .await;
        }
    }
}

async fn facade(ctx: &Ctx, request: reqwest::RequestBuilder) -> Result<(), String> {
    let (status, body) = ctx.send(request).await?;
    wx(status, &body)?;
    body["access_token"]
        .as_str()
        .map(|_| ())
        .ok_or_else(|| "no access_token".to_owned())
}

/// Every `every`, reads a credential's current token from one instance and reports it
/// dead to the other: a real refresh each time (stable mode: a force refresh).
pub async fn report_current(ctx: &Ctx, every: Duration, until: Instant) {
    let labels = ["news", "shop", AUTH_LABELS[0]];
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    let mut n = 0;
    while Instant::now() + every / 2 < until {
        tick.tick().await;
        let label = labels[n % labels.len()];
        n += 1;
        let (i, base) = ctx.instance();
        ctx.op("invalidate (current token)", async {
            let (status, body) = ctx
                .send(
                    ctx.http
                        .get(format!("{base}{}", token_path(label)))
                        .bearer_auth(LOADER_KEY),
                )
                .await?;
            v1(status, &body, 200)?;
            let token = body["access_token"].as_str().ok_or("no token")?.to_owned();
            ctx.report(ctx.other(i), label, &token).await
        })
        .await;
    }
}

/// Every `every`, a verify ticket reaches the fleet: alternately pushed by the emulator
/// to the first instance, and minted at the emulator then encrypted, signed and posted
/// here to the second. None while Redis is restarting (a ticket the fleet cannot store
/// would leave it holding one the emulator no longer takes).
pub async fn verify_tickets(ctx: &Ctx, every: Duration, until: Instant) {
    let crypt = MsgCrypt::new(PUSH_TOKEN, AES_KEY, COMPONENT_APPID).expect("the soak's AES key");
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    let mut n = 0u64;
    while Instant::now() + every / 2 < until {
        tick.tick().await;
        if ctx.rec.phase() == Phase::Redis {
            continue;
        }
        n += 1;
        if n % 2 == 1 {
            ctx.op("callback (pushed by the emulator)", push_ticket(ctx))
                .await;
        } else {
            ctx.op("callback (signed here)", post_ticket(ctx, &crypt))
                .await;
        }
    }
}

/// Mints and pushes a verify ticket from the emulator (to the first instance).
pub async fn push_ticket(ctx: &Ctx) -> Result<(), String> {
    let (status, body) = ctx
        .send(
            ctx.http
                .post(format!("{}/_emulator/push_verify_ticket", ctx.emulator))
                .json(&json!({ "component_appid": COMPONENT_APPID })),
        )
        .await?;
    wx(status, &body)
}

async fn post_ticket(ctx: &Ctx, crypt: &MsgCrypt) -> Result<(), String> {
    let (status, body) = ctx
        .send(
            ctx.http
                .post(format!("{}/_emulator/verify_ticket", ctx.emulator))
                .json(&json!({ "component_appid": COMPONENT_APPID })),
        )
        .await?;
    wx(status, &body)?;
    let ticket = body["component_verify_ticket"]
        .as_str()
        .ok_or("no ticket")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let message = format!(
        "<xml><AppId><![CDATA[{COMPONENT_APPID}]]></AppId><CreateTime>{now}</CreateTime>\
         <InfoType><![CDATA[component_verify_ticket]]></InfoType>\
         <ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket></xml>"
    );
    let nonce = rand::random::<u32>().to_string();
    let sealed = crypt.seal(&message, &now.to_string(), &nonce);
    let url = format!(
        "{}/v1/apps/platform/callback?signature={}&timestamp={}&nonce={}&encrypt_type=aes&msg_signature={}",
        ctx.instances[ctx.instances.len() - 1],
        sealed.signature,
        sealed.timestamp,
        sealed.nonce,
        sealed.msg_signature
    );
    let body = format!(
        "<xml><AppId><![CDATA[{COMPONENT_APPID}]]></AppId><Encrypt><![CDATA[{}]]></Encrypt></xml>",
        sealed.encrypt
    );
    let (status, answer) = ctx
        .send(
            ctx.http
                .post(url)
                .header("content-type", "text/xml")
                .body(body),
        )
        .await?;
    match (status, answer.as_str()) {
        (200, Some("success")) => Ok(()),
        _ => v1(status, &answer, 200).and(Err(format!("{status} {answer}"))),
    }
}

/// Every `every`, one admin change on a random instance, checked from the other one a
/// moment later: a runtime app put (created, or its mode switched) or deleted, a client
/// added or revoked.
pub async fn admin_changes(ctx: &'static Ctx, every: Duration, until: Instant) {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    while Instant::now() + FOLLOW_UP_AFTER * 2 < until {
        tick.tick().await;
        let (i, base) = ctx.instance();
        let other = ctx.other(i).to_owned();
        let (apps, clients) = {
            let admin = ctx.admin.lock().expect("lock");
            (admin.apps.clone(), admin.clients.len())
        };
        let roll = rand::rng().random_range(0..4);
        if roll < 2 {
            let (id, appid, secret) = *RUNTIME.choose(&mut rand::rng()).expect("runtime apps");
            if roll == 0 && apps.contains_key(id) {
                delete_app(ctx, base, &other, id).await;
            } else {
                let mode = match apps.get(id) {
                    Some(&"stable") => "classic",
                    _ => "stable",
                };
                put_app(ctx, base, &other, id, appid, secret, mode).await;
            }
        } else if clients >= 4 || (roll == 3 && clients > 0) {
            revoke_client(ctx, base, &other).await;
        } else {
            add_client(ctx, base, &other).await;
        }
    }
}

fn accepted(ctx: &Ctx, action: &'static str, target: &str) {
    ctx.admin
        .lock()
        .expect("lock")
        .changes
        .push((action, target.to_owned()));
}

/// Checks `path` on `other` as `key` after [`FOLLOW_UP_AFTER`]: it should answer `want`.
fn follow_up(ctx: &'static Ctx, other: String, path: String, key: String, want: u16) {
    tokio::spawn(async move {
        tokio::time::sleep(FOLLOW_UP_AFTER).await;
        ctx.op("admin follow-up on the other instance", async {
            let (status, body) = ctx
                .send(ctx.http.get(format!("{other}{path}")).bearer_auth(key))
                .await?;
            v1(status, &body, want)
        })
        .await;
    });
}

async fn put_app(
    ctx: &'static Ctx,
    base: &str,
    other: &str,
    id: &str,
    appid: &str,
    secret: &str,
    mode: &'static str,
) {
    let body = json!({"kind": "official", "appid": appid, "secret": secret, "mode": mode});
    let mut ok = false;
    ctx.op("admin PUT /v1/apps/{rt}", async {
        let (status, answer) = ctx
            .send(
                ctx.http
                    .put(format!("{base}/v1/apps/{id}"))
                    .bearer_auth(ADMIN_KEY)
                    .json(&body),
            )
            .await?;
        if status != 200 {
            v1(status, &answer, 201)?;
        }
        ok = true;
        Ok(())
    })
    .await;
    if ok {
        ctx.admin
            .lock()
            .expect("lock")
            .apps
            .insert(id.to_owned(), mode);
        accepted(ctx, "app.put", id);
        let path = format!("/v1/apps/{id}/access_token");
        follow_up(ctx, other.to_owned(), path, LOADER_KEY.to_owned(), 200);
    }
}

async fn delete_app(ctx: &'static Ctx, base: &str, other: &str, id: &str) {
    let mut ok = false;
    ctx.op("admin DELETE /v1/apps/{rt}", async {
        let (status, answer) = ctx
            .send(
                ctx.http
                    .delete(format!("{base}/v1/apps/{id}"))
                    .bearer_auth(ADMIN_KEY),
            )
            .await?;
        v1(status, &answer, 204)?;
        ok = true;
        Ok(())
    })
    .await;
    if ok {
        ctx.admin.lock().expect("lock").apps.remove(id);
        accepted(ctx, "app.delete", id);
        let path = format!("/v1/apps/{id}/access_token");
        follow_up(ctx, other.to_owned(), path, LOADER_KEY.to_owned(), 404);
    }
}

async fn add_client(ctx: &'static Ctx, base: &str, other: &str) {
    let name = {
        let mut admin = ctx.admin.lock().expect("lock");
        admin.next_client += 1;
        format!("soak-client-{}", admin.next_client)
    };
    let mut key = None;
    ctx.op("admin POST /v1/clients", async {
        let (status, answer) = ctx
            .send(
                ctx.http
                    .post(format!("{base}/v1/clients"))
                    .bearer_auth(ADMIN_KEY)
                    .json(&json!({"name": name, "apps": ["shop"], "scopes": ["read"]})),
            )
            .await?;
        v1(status, &answer, 201)?;
        key = Some(
            answer["key"]
                .as_str()
                .ok_or("201 without a key")?
                .to_owned(),
        );
        Ok(())
    })
    .await;
    if let Some(key) = key {
        ctx.admin
            .lock()
            .expect("lock")
            .clients
            .insert(name.clone(), key.clone());
        accepted(ctx, "client.add", &name);
        follow_up(ctx, other.to_owned(), token_path("shop"), key, 200);
    }
}

async fn revoke_client(ctx: &'static Ctx, base: &str, other: &str) {
    let picked = {
        let admin = ctx.admin.lock().expect("lock");
        let names: Vec<_> = admin.clients.keys().cloned().collect();
        names.choose(&mut rand::rng()).cloned()
    };
    let Some(name) = picked else { return };
    let mut ok = false;
    ctx.op("admin DELETE /v1/clients/{name}", async {
        let (status, answer) = ctx
            .send(
                ctx.http
                    .delete(format!("{base}/v1/clients/{name}"))
                    .bearer_auth(ADMIN_KEY),
            )
            .await?;
        v1(status, &answer, 204)?;
        ok = true;
        Ok(())
    })
    .await;
    if ok {
        let key = {
            let mut admin = ctx.admin.lock().expect("lock");
            let key = admin.clients.remove(&name).unwrap_or_default();
            admin.revoked.push((name.clone(), key.clone()));
            key
        };
        accepted(ctx, "client.revoke", &name);
        follow_up(ctx, other.to_owned(), token_path("shop"), key, 401);
    }
}
