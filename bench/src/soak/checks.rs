//! The end of the run: upstream calls against the ideal, and whether every durable thing
//! survived (runtime apps and clients in Redis and on both instances, the same valid
//! tokens on both, the authorizers, the audit log).

use std::collections::BTreeSet;
use std::time::Duration;

use redis::AsyncCommands;
use serde_json::{Value, json};
use wechat_emulator::{Stats, wecom_key};

use super::load::{AUTH_LABELS, Ctx, token_path};
use super::{ADMIN_KEY, APPID_NEWS, APPID_SHOP, COMPONENT_APPID, CORPID, EXPIRES_IN, HR_AGENTID};
use super::{LOADER_KEY, RUNTIME, WINDOW};

/// One judged line of the final report.
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

fn check(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok,
        detail: detail.into(),
    }
}

pub async fn emulator_stats(ctx: &Ctx) -> anyhow::Result<Stats> {
    let stats = ctx
        .http
        .get(format!("{}/_emulator/stats", ctx.emulator))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(stats)
}

/// One credential family's upstream figures over the run.
pub struct Upstream {
    pub name: &'static str,
    /// How many credentials the row sums (the authorizers: 3).
    pub count: u64,
    /// Reports answered `refreshed`.
    pub reports: u64,
    pub calls: u64,
    pub issued: u64,
    pub injected: u64,
    pub ideal_low: u64,
    pub ideal_high: u64,
}

impl Upstream {
    /// At most the ideal, plus one per credential (the run's start and end cut refresh
    /// periods), plus the injected failures (a timed-out call may have made a value the
    /// server never saw, as WeChat does).
    pub fn ok(&self) -> bool {
        self.issued <= self.ideal_high + self.count + self.injected
    }
}

/// New values WeChat should have issued in `secs` for one credential refreshed
/// `window` before expiry (jittered to 80-100% of it), with `reports` forced refreshes:
/// one every `lifetime - window` at the most, `lifetime - 0.8 window` at the least.
/// WeCom hands its token back until it dies, so there the period is the lifetime.
fn ideal(secs: f64, wecom: bool, reports: u64, count: u64) -> (u64, u64) {
    let lifetime = EXPIRES_IN as f64;
    let window = (WINDOW as f64).min(lifetime / 2.0);
    let (short, long) = if wecom {
        (lifetime, lifetime)
    } else {
        (lifetime - window, lifetime - 0.8 * window)
    };
    let low = (secs / long).floor() as u64 * count;
    let high = (secs / short).ceil() as u64 * count + reports;
    (low, high)
}

/// The figures of every credential family between two snapshots `secs` apart.
pub fn upstream(ctx: &Ctx, before: &Stats, after: &Stats, secs: f64) -> Vec<Upstream> {
    let reports = ctx.refreshed.lock().expect("lock").clone();
    let reported = |label: &str| reports.get(label).copied().unwrap_or(0);
    let hr = wecom_key(CORPID, HR_AGENTID);
    let app = |id: &str, s: &Stats| s.app(id);
    let mut rows = Vec::new();
    let mut row = |name, count, wecom, reports, calls: u64, issued: u64, injected: u64| {
        let (ideal_low, ideal_high) = ideal(secs, wecom, reports, count);
        rows.push(Upstream {
            name,
            count,
            reports,
            calls,
            issued,
            injected,
            ideal_low,
            ideal_high,
        });
    };
    let d = |f: &dyn Fn(&Stats) -> u64| f(after).saturating_sub(f(before));
    for (name, appid, wecom) in [
        ("shop access_token (stable)", APPID_SHOP, false),
        ("news access_token (classic)", APPID_NEWS, false),
        ("hr access_token (WeCom)", hr.as_str(), true),
    ] {
        let label = name.split(' ').next().unwrap_or_default();
        row(
            name,
            1,
            wecom,
            reported(label),
            d(&|s| app(appid, s).upstream_token_calls()),
            d(&|s| app(appid, s).tokens_issued),
            d(&|s| app(appid, s).injected_failures),
        );
    }
    for (name, appid) in [
        ("shop ticket jsapi", APPID_SHOP),
        ("news ticket wx_card", APPID_NEWS),
        ("hr ticket agent_config", hr.as_str()),
    ] {
        row(
            name,
            1,
            false,
            0,
            d(&|s| app(appid, s).ticket_calls),
            d(&|s| app(appid, s).tickets_issued),
            0,
        );
    }
    let comp = |s: &Stats| s.component(COMPONENT_APPID);
    row(
        "platform component_access_token",
        1,
        false,
        0,
        d(&|s| comp(s).component_token_calls),
        d(&|s| comp(s).component_tokens_issued),
        d(&|s| comp(s).injected_failures),
    );
    let auth_reports = AUTH_LABELS.iter().map(|l| reported(l)).sum();
    row(
        "3 authorizer access_tokens",
        AUTH_LABELS.len() as u64,
        false,
        auth_reports,
        d(&|s| comp(s).authorizer_token_calls),
        d(&|s| comp(s).authorizers.tokens_issued),
        0,
    );
    row(
        "3 authorizer tickets jsapi",
        AUTH_LABELS.len() as u64,
        false,
        0,
        d(&|s| comp(s).authorizers.ticket_calls),
        d(&|s| comp(s).authorizers.tickets_issued),
        d(&|s| comp(s).authorizers.injected_failures),
    );
    rows
}

/// Runtime apps' upstream calls and values over the run (they come and go: not judged).
pub fn runtime_upstream(before: &Stats, after: &Stats) -> (u64, u64) {
    RUNTIME
        .iter()
        .fold((0, 0), |(calls, issued), (_, appid, _)| {
            let (a, b) = (after.app(appid), before.app(appid));
            (
                calls + a.upstream_token_calls() - b.upstream_token_calls(),
                issued + a.tokens_issued - b.tokens_issued,
            )
        })
}

async fn get(ctx: &Ctx, url: String, key: &str) -> Result<(u16, Value), String> {
    ctx.send(ctx.http.get(url).bearer_auth(key)).await
}

/// The durable-data checks.
pub async fn durable(ctx: &Ctx, redis_url: &str, since_unix: u64) -> Vec<Check> {
    let mut checks = Vec::new();
    let (apps, clients, revoked, changes) = {
        let admin = ctx.admin.lock().expect("lock");
        (
            admin.apps.keys().cloned().collect::<BTreeSet<String>>(),
            admin.clients.clone(),
            admin.revoked.clone(),
            admin.changes.clone(),
        )
    };
    let want_clients: BTreeSet<String> = clients.keys().cloned().collect();

    // Redis's registry.
    match registry(redis_url).await {
        Ok((r_apps, r_clients, authorizers, ticket, audit_len)) => {
            checks.push(check(
                "runtime apps in Redis",
                r_apps == apps,
                format!("expected {apps:?}, Redis {r_apps:?}"),
            ));
            checks.push(check(
                "runtime clients in Redis",
                r_clients == want_clients,
                format!("expected {want_clients:?}, Redis {r_clients:?}"),
            ));
            checks.push(check(
                "authorizers in Redis",
                authorizers == AUTH_LABELS.len(),
                format!("{authorizers} of {}", AUTH_LABELS.len()),
            ));
            checks.push(check("verify ticket in Redis", ticket, ""));
            checks.push(check(
                "audit stream in Redis",
                audit_len >= changes.len(),
                format!("{audit_len} entries, {} accepted changes", changes.len()),
            ));
        }
        Err(e) => checks.push(check("Redis readable", false, e.to_string())),
    }

    for (n, base) in ctx.instances.iter().enumerate() {
        let n = n + 1;
        // Apps: the config's four plus the runtime ones.
        let listed = get(ctx, format!("{base}/v1/apps"), ADMIN_KEY).await;
        let mut want: BTreeSet<String> =
            ["shop", "news", "hr", "platform"].map(str::to_owned).into();
        want.extend(apps.iter().cloned());
        let got: BTreeSet<String> = match &listed {
            Ok((200, body)) => body["apps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["id"].as_str().map(str::to_owned))
                .collect(),
            _ => BTreeSet::new(),
        };
        checks.push(check(
            format!("instance {n}: GET /v1/apps"),
            got == want,
            format!("expected {want:?}, got {got:?}"),
        ));
        let listed = get(ctx, format!("{base}/v1/clients"), ADMIN_KEY).await;
        let got: BTreeSet<String> = match &listed {
            Ok((200, body)) => body["clients"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["origin"] == "runtime")
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect(),
            _ => BTreeSet::new(),
        };
        checks.push(check(
            format!("instance {n}: GET /v1/clients (runtime)"),
            got == want_clients,
            format!("expected {want_clients:?}, got {got:?}"),
        ));
        let mut bad = Vec::new();
        for (name, key) in &clients {
            let status = get(ctx, format!("{base}{}", token_path("shop")), key).await;
            if !matches!(status, Ok((200, _))) {
                bad.push(format!("{name} (live) -> {:?}", status.map(|s| s.0)));
            }
        }
        for (name, key) in &revoked {
            let status = get(ctx, format!("{base}{}", token_path("shop")), key).await;
            if !matches!(status, Ok((401, _))) {
                bad.push(format!("{name} (revoked) -> {:?}", status.map(|s| s.0)));
            }
        }
        checks.push(check(
            format!("instance {n}: runtime keys work, revoked ones do not"),
            bad.is_empty(),
            format!(
                "{} live, {} revoked {}",
                clients.len(),
                revoked.len(),
                bad.join("; ")
            ),
        ));
        let listed = get(
            ctx,
            format!("{base}/v1/apps/platform/authorizers"),
            LOADER_KEY,
        )
        .await;
        let ok_count = match &listed {
            Ok((200, body)) => body["authorizers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["state"] == "ok")
                .count(),
            _ => 0,
        };
        checks.push(check(
            format!("instance {n}: authorizers ok"),
            ok_count == AUTH_LABELS.len(),
            format!("{ok_count} of {}", AUTH_LABELS.len()),
        ));
        // The audit log holds every accepted change (reports are audited too: page).
        let audit = audit_entries(ctx, base, since_unix).await;
        let entries: Vec<(String, String)> = audit
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|e| {
                let result = e["result"].as_str().unwrap_or_default();
                result == "ok" || result.ends_with(": ok")
            })
            .map(|e| {
                let target = e["app"].as_str().map(str::to_owned).unwrap_or_else(|| {
                    let result = e["result"].as_str().unwrap_or_default();
                    result.trim_end_matches(": ok").to_owned()
                });
                (e["action"].as_str().unwrap_or_default().to_owned(), target)
            })
            .collect();
        let mut pool = entries.clone();
        let mut missing = Vec::new();
        for (action, target) in &changes {
            match pool.iter().position(|(a, t)| a == action && t == target) {
                Some(i) => {
                    pool.swap_remove(i);
                }
                None => missing.push(format!("{action} {target}")),
            }
        }
        checks.push(check(
            format!("instance {n}: audit log has every accepted change"),
            missing.is_empty(),
            format!(
                "{} accepted changes, {} entries in all{}; missing: {missing:?}",
                changes.len(),
                audit.as_ref().map_or(0, Vec::len),
                audit
                    .as_ref()
                    .err()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
        ));
    }

    // The same valid value on both instances, for every credential.
    let mut paths: Vec<(String, String, &str)> = Vec::new();
    for label in ["shop", "news", "hr", "platform"]
        .into_iter()
        .chain(AUTH_LABELS)
    {
        paths.push((label.to_owned(), token_path(label), "access_token"));
    }
    for id in &apps {
        paths.push((
            id.clone(),
            format!("/v1/apps/{id}/access_token"),
            "access_token",
        ));
    }
    for (label, path) in [
        ("shop jsapi", "/v1/apps/shop/ticket/jsapi".to_owned()),
        ("news wx_card", "/v1/apps/news/ticket/wx_card".to_owned()),
        (
            "hr agent_config",
            "/v1/apps/hr/ticket/agent_config".to_owned(),
        ),
        (
            "authorizer jsapi",
            token_path(AUTH_LABELS[0]).replace("/access_token", "/ticket/jsapi"),
        ),
    ] {
        paths.push((label.to_owned(), path, "ticket"));
    }
    for (label, path, field) in paths {
        let (ok, detail) = same_and_valid(ctx, &path, field).await;
        checks.push(check(
            format!("{label}: same {field} on both, valid at the emulator"),
            ok,
            detail,
        ));
    }
    checks
}

/// Every audit entry since `since` (unix s), page by page (a page ends within a
/// second that the next page starts with again: entries are told apart by their ms).
async fn audit_entries(ctx: &Ctx, base: &str, since: u64) -> Result<Vec<Value>, String> {
    let mut all: Vec<Value> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut since = since;
    loop {
        let url = format!("{base}/v1/audit?since={since}&limit=1000");
        let (status, body) = get(ctx, url, ADMIN_KEY).await?;
        if status != 200 {
            return Err(format!("GET /v1/audit: {status}"));
        }
        let page = body["entries"].as_array().cloned().unwrap_or_default();
        let full = page.len() == 1000;
        let last = page.last().and_then(|e| e["at"].as_u64());
        for entry in page {
            if seen.insert(entry.to_string()) {
                all.push(entry);
            }
        }
        match last {
            Some(at) if full && at > since => since = at,
            Some(_) if full => return Err("over 1000 entries in one second".to_owned()),
            _ => return Ok(all),
        }
    }
}

/// Reads `path` on every instance until they agree (a refresh may land between two
/// reads), then asks the emulator about the value.
async fn same_and_valid(ctx: &Ctx, path: &str, field: &str) -> (bool, String) {
    let mut last = String::new();
    for _ in 0..10 {
        let mut values = Vec::new();
        for base in &ctx.instances {
            match get(ctx, format!("{base}{path}"), LOADER_KEY).await {
                Ok((200, body)) => values.push(body[field].as_str().unwrap_or("").to_owned()),
                Ok((status, body)) => values.push(format!("<{status} {}>", body["error"]["code"])),
                Err(e) => values.push(format!("<{e}>")),
            }
        }
        let agree = values.windows(2).all(|w| w[0] == w[1]) && !values[0].starts_with('<');
        last = values
            .iter()
            .map(|v| v.chars().take(8).collect::<String>())
            .collect::<Vec<_>>()
            .join(" / ");
        if agree {
            let state = ctx
                .send(
                    ctx.http
                        .post(format!("{}/_emulator/check", ctx.emulator))
                        .json(&json!({ field: values[0] })),
                )
                .await
                .map(|(_, body)| body["state"].as_str().unwrap_or("?").to_owned())
                .unwrap_or_else(|e| e);
            return (state == "valid", format!("{last}: {state}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (false, format!("the instances disagree: {last}"))
}

type Registry = (BTreeSet<String>, BTreeSet<String>, usize, bool, usize);

async fn registry(url: &str) -> redis::RedisResult<Registry> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let apps: Vec<String> = con.hkeys("wxtoken:{registry}:apps").await?;
    let clients: Vec<String> = con.hkeys("wxtoken:{registry}:clients").await?;
    let authorizers: usize = con.hlen("wxtoken:{platform}:authorizers").await?;
    let ticket: bool = con.exists("wxtoken:{platform}:verify_ticket").await?;
    let audit: usize = redis::cmd("XLEN")
        .arg("wxtoken:{audit}:log")
        .query_async(&mut con)
        .await?;
    Ok((
        apps.into_iter().collect(),
        clients.into_iter().collect(),
        authorizers,
        ticket,
        audit,
    ))
}
