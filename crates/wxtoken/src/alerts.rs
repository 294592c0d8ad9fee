//! Webhook alerts: incidents (a configuration error, a credential about to lapse, the
//! store unreachable, ...) opened once, resolved once, and delivered to every
//! `[[alerts]]` hook by a task of its own, so that raising one never waits on a webhook.
//!
//! - De-duplicated per incident key: raising an open incident sends nothing; resolving
//!   one that is not open sends nothing.
//! - Each hook has a bounded queue (a full one drops the message, counted and logged),
//!   a rate limit (`max_per_minute`; more wait in the queue) and retries with
//!   exponential backoff on connection errors, HTTP 5xx/429 and a WeCom `errcode` other
//!   than 0.
//! - The open incidents and the last [`RECENT`] events are kept in memory for
//!   `GET /v1/alerts`, with or without hooks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{AlertSettings, HookFormat, HookSettings};
use crate::credential::unix_now_ms;

/// The one incident of the shared store being unreachable.
pub const STORE_INCIDENT: &str = "store#unreachable";
/// How many past events `GET /v1/alerts` shows.
pub const RECENT: usize = 200;
/// Messages waiting for one hook beyond this are dropped: a hook that is down for long
/// must not hold the process's memory.
pub const QUEUE: usize = 256;
/// A webhook that has not answered in this long is taken for down (and retried).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per message, the first retry waiting [`FIRST_BACKOFF`], each next twice as
/// long: 1 + 2 + 4 + 8 s covers a robot restarting.
pub const ATTEMPTS: u32 = 5;
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The window `max_per_minute` counts in.
const MINUTE: Duration = Duration::from_secs(60);
/// WeCom refuses markdown content over 4096 bytes; a summary is cut well before.
const MAX_SUMMARY_CHARS: usize = 1000;

/// What went wrong; the `kind` of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// WeChat refuses the app's configuration (appid, secret, IP whitelist, ...).
    ConfigurationError,
    /// A credential is about to lapse and its last refresh failed.
    Expiring,
    /// An app's upstream calls passed a share of its budget.
    Quota,
    /// The shared store has not answered for long enough to be taken for down.
    StoreUnreachable,
    /// The store refuses writes (a read-only SQLite file, a full disk): what it refused
    /// is held in memory until it takes it.
    StoreWrites,
    /// An authorizer's refresh token was refused: the merchant must authorize again.
    NeedsReauthorization,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::ConfigurationError => "configuration_error",
            AlertKind::Expiring => "expiring",
            AlertKind::Quota => "quota",
            AlertKind::StoreUnreachable => "store_unreachable",
            AlertKind::StoreWrites => "store_writes",
            AlertKind::NeedsReauthorization => "needs_reauthorization",
        }
    }
}

/// Whether an incident began or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    Raised,
    Resolved,
}

impl AlertEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEvent::Raised => "raised",
            AlertEvent::Resolved => "resolved",
        }
    }
}

/// One message: an incident raised or resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub incident: String,
    pub kind: AlertKind,
    pub app: Option<String>,
    pub summary: String,
    pub event: AlertEvent,
    /// Unix seconds.
    pub at: u64,
}

/// An incident still open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenIncident {
    pub incident: String,
    pub kind: AlertKind,
    pub app: Option<String>,
    pub summary: String,
    /// Unix seconds when it was raised.
    pub since: u64,
}

/// What `GET /v1/alerts` shows, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct AlertsView {
    pub open: Vec<OpenIncident>,
    pub recent: Vec<Event>,
}

/// The incident key of a failure of one credential: `{credential}#{what}`, so that
/// [`Alerts::resolve_credential`] finds every incident of that credential.
pub fn credential_incident(credential: &str, what: &str) -> String {
    format!("{credential}#{what}")
}

/// A cheap-to-clone handle: raise and resolve incidents from anywhere without waiting.
#[derive(Clone, Default)]
pub struct Alerts {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Held only for map and queue updates, never across an await.
    state: Mutex<State>,
    /// One queue per hook, drained by its delivery task; replaced whole by a reload
    /// ([`Alerts::set_hooks`]). A replaced queue's task sends what it holds, then ends.
    hooks: ArcSwap<Hooks>,
    /// Posts to every hook (its connection pool is shared).
    client: reqwest::Client,
}

/// The hooks in use, as configured and as queues.
#[derive(Default)]
struct Hooks {
    settings: Vec<HookSettings>,
    queues: Vec<(String, mpsc::Sender<Arc<Event>>)>,
}

#[derive(Default)]
struct State {
    /// Ordered by key, so that a credential's incidents are one range.
    open: BTreeMap<String, OpenIncident>,
    /// Oldest first; at most [`RECENT`].
    recent: VecDeque<Event>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("hooks", &self.inner.hooks.load().queues.len())
            .finish_non_exhaustive()
    }
}

impl Alerts {
    /// Starts one delivery task per hook (none without hooks: incidents are then only
    /// kept for `GET /v1/alerts`). Needs a tokio runtime.
    pub fn start(settings: &AlertSettings) -> Self {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        let alerts = Self {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                hooks: ArcSwap::default(),
                client,
            }),
        };
        alerts.set_hooks(&settings.hooks);
        alerts
    }

    /// Sends from now on to `hooks` (a reloaded `[[alerts]]`); returns whether they
    /// differ from the hooks in use. Open incidents stay open; messages already queued
    /// for a hook that is gone are still sent to it.
    pub fn set_hooks(&self, hooks: &[HookSettings]) -> bool {
        if self.inner.hooks.load().settings == hooks {
            return false;
        }
        let mut queues = Vec::with_capacity(hooks.len());
        for hook in hooks {
            let (tx, rx) = mpsc::channel(QUEUE);
            let post = post_with(self.inner.client.clone(), hook.clone());
            tokio::spawn(deliver(hook.max_per_minute, rx, post));
            queues.push((hook.redacted_url(), tx));
        }
        self.inner.hooks.store(Arc::new(Hooks {
            settings: hooks.to_vec(),
            queues,
        }));
        true
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain maps: a panic while holding the lock leaves them usable.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens `incident` and sends it, unless it is already open (then nothing is sent).
    pub fn raise(&self, incident: String, kind: AlertKind, app: Option<&str>, summary: String) {
        let summary = cut(summary);
        let event = {
            let mut state = self.state();
            if state.open.contains_key(&incident) {
                return;
            }
            let at = unix_now_ms() / 1000;
            state.open.insert(
                incident.clone(),
                OpenIncident {
                    incident: incident.clone(),
                    kind,
                    app: app.map(str::to_owned),
                    summary: summary.clone(),
                    since: at,
                },
            );
            Event {
                incident,
                kind,
                app: app.map(str::to_owned),
                summary,
                event: AlertEvent::Raised,
                at,
            }
        };
        warn!(incident = %event.incident, kind = kind.as_str(), "alert raised: {}", event.summary);
        self.publish(event);
    }

    /// Closes `incident` and sends `resolved`, if it is open.
    pub fn resolve(&self, incident: &str) {
        let closed = self.state().open.remove(incident);
        if let Some(closed) = closed {
            self.resolved(closed);
        }
    }

    /// Closes every open incident whose key starts with `prefix`, one `resolved` each.
    pub fn resolve_prefix(&self, prefix: &str) {
        let closed: Vec<OpenIncident> = {
            let mut state = self.state();
            let keys: Vec<String> = state
                .open
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| state.open.remove(k)).collect()
        };
        for incident in closed {
            self.resolved(incident);
        }
    }

    /// Closes every incident of one credential (see [`credential_incident`]): it has
    /// a fresh value again.
    pub fn resolve_credential(&self, credential: &str) {
        self.resolve_prefix(&format!("{credential}#"));
    }

    /// For a quota guard: `app` has used `used` of its `budget` upstream calls today.
    pub fn quota(&self, app: &str, used: u64, budget: u64) {
        self.raise(
            quota_incident(app),
            AlertKind::Quota,
            Some(app),
            format!("{app} has made {used} of its {budget} budgeted upstream calls today"),
        );
    }

    /// For a quota guard: `app` is back under its threshold (a new WeChat day, a
    /// cleared quota).
    pub fn quota_ok(&self, app: &str) {
        self.resolve(&quota_incident(app));
    }

    /// Whether `incident` is open.
    pub fn is_open(&self, incident: &str) -> bool {
        self.state().open.contains_key(incident)
    }

    /// Open incidents and recent events, newest first.
    pub fn view(&self) -> AlertsView {
        let state = self.state();
        let mut open: Vec<OpenIncident> = state.open.values().cloned().collect();
        open.sort_by(|a, b| {
            b.since
                .cmp(&a.since)
                .then_with(|| a.incident.cmp(&b.incident))
        });
        AlertsView {
            open,
            recent: state.recent.iter().rev().cloned().collect(),
        }
    }

    fn resolved(&self, closed: OpenIncident) {
        info!(incident = %closed.incident, kind = closed.kind.as_str(), "alert resolved");
        self.publish(Event {
            incident: closed.incident,
            kind: closed.kind,
            app: closed.app,
            summary: closed.summary,
            event: AlertEvent::Resolved,
            at: unix_now_ms() / 1000,
        });
    }

    /// Keeps the event and queues it for every hook, never waiting.
    fn publish(&self, event: Event) {
        metrics::counter!(
            "wxtoken_alerts_total",
            "kind" => event.kind.as_str(),
            "event" => event.event.as_str()
        )
        .increment(1);
        {
            let mut state = self.state();
            if state.recent.len() == RECENT {
                state.recent.pop_front();
            }
            state.recent.push_back(event.clone());
        }
        let event = Arc::new(event);
        for (url, queue) in &self.inner.hooks.load().queues {
            if queue.try_send(event.clone()).is_err() {
                metrics::counter!("wxtoken_alert_delivery_failures_total", "reason" => "queue_full")
                    .increment(1);
                warn!(hook = %url, incident = %event.incident, "the alert hook's queue is full; message dropped");
            }
        }
    }
}

fn quota_incident(app: &str) -> String {
    format!("{app}#quota")
}

fn cut(summary: String) -> String {
    if summary.chars().count() <= MAX_SUMMARY_CHARS {
        return summary;
    }
    let mut cut: String = summary.chars().take(MAX_SUMMARY_CHARS).collect();
    cut.push('…');
    cut
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Worth another try (connection error, timeout, 5xx, 429, WeCom errcode != 0).
    Retry(String),
    /// Trying again will not help (another 4xx).
    GiveUp(String),
}

/// Sends one event to one hook.
type Post = Arc<dyn Fn(Arc<Event>) -> futures::future::BoxFuture<'static, Attempt> + Send + Sync>;

fn post_with(client: reqwest::Client, hook: HookSettings) -> Post {
    let hook = Arc::new(hook);
    Arc::new(move |event: Arc<Event>| {
        let client = client.clone();
        let hook = hook.clone();
        Box::pin(async move { post(&client, &hook, &event).await })
    })
}

async fn post(client: &reqwest::Client, hook: &HookSettings, event: &Event) -> Attempt {
    let body = render(hook.format, event);
    let answer = match client.post(&hook.url).json(&body).send().await {
        Ok(answer) => answer,
        // reqwest's error names the URL, which may hold the robot's key: not shown.
        Err(e) if e.is_timeout() => return Attempt::Retry("timed out".into()),
        Err(_) => return Attempt::Retry("could not connect".into()),
    };
    let status = answer.status();
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Attempt::Retry(format!("HTTP {}", status.as_u16()));
    }
    if !status.is_success() {
        return Attempt::GiveUp(format!("HTTP {}", status.as_u16()));
    }
    if hook.format == HookFormat::Wecom {
        // The robot answers 200 with {"errcode":45009,...} when it refuses.
        let errcode = answer
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.get("errcode").and_then(serde_json::Value::as_i64));
        match errcode {
            Some(0) => {}
            Some(code) => return Attempt::Retry(format!("WeCom errcode {code}")),
            None => return Attempt::Retry("WeCom answered without an errcode".into()),
        }
    }
    Attempt::Delivered
}

/// The body a hook of `format` receives for `event`.
pub fn render(format: HookFormat, event: &Event) -> serde_json::Value {
    match format {
        HookFormat::Json => serde_json::json!({
            "event": event.event,
            "incident": event.incident,
            "kind": event.kind,
            "app": event.app,
            "summary": event.summary,
            "at": event.at,
        }),
        HookFormat::Wecom => serde_json::json!({
            "msgtype": "markdown",
            "markdown": { "content": wecom_markdown(event) },
        }),
    }
}

/// A WeCom robot's markdown: the headline says raised or resolved.
pub fn wecom_markdown(event: &Event) -> String {
    let headline = match event.event {
        AlertEvent::Raised => format!(
            "**wxtoken alert: <font color=\"warning\">{}</font>**",
            event.kind.as_str()
        ),
        AlertEvent::Resolved => format!(
            "**wxtoken resolved: <font color=\"info\">{}</font>**",
            event.kind.as_str()
        ),
    };
    let at = time::OffsetDateTime::from_unix_timestamp(event.at as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| event.at.to_string());
    format!(
        "{headline}\n> app: {}\n> incident: {}\n> {}\n> time: {at}",
        event.app.as_deref().unwrap_or("-"),
        event.incident,
        event.summary,
    )
}

/// One hook's delivery task: in order, at most `max_per_minute` attempts in any minute,
/// each message retried with backoff. Ends when every [`Alerts`] handle is gone.
async fn deliver(max_per_minute: u32, mut queue: mpsc::Receiver<Arc<Event>>, post: Post) {
    let mut limit = RateLimit::new(max_per_minute);
    while let Some(event) = queue.recv().await {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            limit.acquire().await;
            let why = match post(event.clone()).await {
                Attempt::Delivered => break,
                Attempt::GiveUp(why) => {
                    fail(&event, attempt, &why);
                    break;
                }
                Attempt::Retry(why) => why,
            };
            if attempt == ATTEMPTS {
                fail(&event, attempt, &why);
                break;
            }
            warn!(incident = %event.incident, attempt, retry_in_ms = backoff.as_millis() as u64, "alert delivery failed ({why}); retrying");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
}

fn fail(event: &Event, attempts: u32, why: &str) {
    metrics::counter!("wxtoken_alert_delivery_failures_total", "reason" => "gave_up").increment(1);
    warn!(incident = %event.incident, attempts, "alert not delivered: {why}");
}

/// At most `max` starts in any sliding minute.
struct RateLimit {
    max: usize,
    /// When the last `max` attempts started, oldest first.
    starts: VecDeque<Instant>,
}

impl RateLimit {
    fn new(max: u32) -> Self {
        Self {
            max: max.max(1) as usize,
            starts: VecDeque::new(),
        }
    }

    /// Waits until one more attempt fits in the minute, and counts it.
    async fn acquire(&mut self) {
        if self.starts.len() >= self.max {
            let oldest = self.starts.pop_front().expect("max is at least 1");
            tokio::time::sleep_until(oldest + MINUTE).await;
        }
        self.starts.push_back(Instant::now());
    }
}

/// Starts a delivery task over a given sender (tests: a fake hook).
#[cfg(test)]
fn start_with(max_per_minute: u32, post: Post) -> Alerts {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(deliver(max_per_minute, rx, post));
    Alerts {
        inner: Arc::new(Inner {
            state: Mutex::default(),
            hooks: ArcSwap::from_pointee(Hooks {
                settings: Vec::new(),
                queues: vec![("fake".into(), tx)],
            }),
            client: reqwest::Client::new(),
        }),
    }
}

/// Waits for `f` to hold, looking every 100 ms of (paused) time (tests).
#[cfg(test)]
async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not met");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// What a fake hook received, and when.
    type Seen = Arc<Mutex<Vec<(Instant, Arc<Event>)>>>;

    /// A hook that records what arrives when, answering from `answers` then Delivered.
    fn fake(answers: Vec<Attempt>) -> (Post, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
        let calls = seen.clone();
        let post: Post = Arc::new(move |event| {
            calls.lock().expect("lock").push((Instant::now(), event));
            let answer = answers
                .lock()
                .expect("present")
                .pop_front()
                .unwrap_or(Attempt::Delivered);
            Box::pin(async move { answer })
        });
        (post, seen)
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_incident_is_sent_once_and_resolved_once() {
        let (post, seen) = fake(vec![]);
        let alerts = start_with(20, post);
        for _ in 0..3 {
            alerts.raise("a#x".into(), AlertKind::Expiring, Some("a"), "s".into());
        }
        alerts.resolve("a#x");
        alerts.resolve("a#x");
        alerts.resolve("never#open");
        until(|| seen.lock().expect("lock").len() == 2).await;
        tokio::time::sleep(Duration::from_secs(120)).await;
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].1.event, AlertEvent::Raised);
        assert_eq!(seen[1].1.event, AlertEvent::Resolved);
        let view = alerts.view();
        assert!(view.open.is_empty());
        assert_eq!(view.recent.len(), 2);
        assert_eq!(view.recent[0].event, AlertEvent::Resolved);
    }

    #[tokio::test(start_paused = true)]
    async fn resolving_a_credential_closes_only_its_incidents() {
        let (post, seen) = fake(vec![]);
        let alerts = start_with(20, post);
        let raise = |k: &str| alerts.raise(k.into(), AlertKind::Expiring, None, "s".into());
        raise("shop/access_token#expiring");
        raise("shop/access_token#configuration_error");
        raise("shop/access_token2#expiring");
        raise("shop#quota");
        alerts.resolve_credential("shop/access_token");
        until(|| seen.lock().expect("lock").len() == 6).await;
        let open: Vec<String> = alerts.view().open.into_iter().map(|o| o.incident).collect();
        assert_eq!(open.len(), 2);
        assert!(open.contains(&"shop/access_token2#expiring".to_owned()));
        assert!(open.contains(&"shop#quota".to_owned()));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_exponentially_and_stop_when_delivered() {
        let retry = || Attempt::Retry("HTTP 500".into());
        let (post, seen) = fake(vec![retry(), retry(), retry()]);
        let alerts = start_with(20, post);
        let began = Instant::now();
        alerts.raise("i".into(), AlertKind::Quota, None, "s".into());
        until(|| seen.lock().expect("lock").len() == 4).await;
        tokio::time::sleep(Duration::from_secs(120)).await;
        let seen = seen.lock().expect("lock");
        assert_eq!(
            seen.len(),
            4,
            "delivered on the fourth attempt, then no more"
        );
        let gaps: Vec<u64> = seen
            .windows(2)
            .map(|w| (w[1].0 - w[0].0).as_millis() as u64)
            .collect();
        assert_eq!(gaps, vec![1000, 2000, 4000]);
        assert!(seen[0].0 - began < Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_is_given_up_after_the_last_attempt_or_a_client_error() {
        let retry = || Attempt::Retry("could not connect".into());
        let mut answers: Vec<Attempt> = (0..ATTEMPTS).map(|_| retry()).collect();
        answers.push(Attempt::GiveUp("HTTP 404".into()));
        let (post, seen) = fake(answers);
        let alerts = start_with(100, post);
        alerts.raise("one".into(), AlertKind::Quota, None, "s".into());
        alerts.raise("two".into(), AlertKind::Quota, None, "s".into());
        alerts.raise("three".into(), AlertKind::Quota, None, "s".into());
        until(|| seen.lock().expect("lock").len() == ATTEMPTS as usize + 2).await;
        tokio::time::sleep(Duration::from_secs(120)).await;
        let seen = seen.lock().expect("lock");
        let order: Vec<&str> = seen.iter().map(|(_, e)| e.incident.as_str()).collect();
        let mut expected = vec!["one"; ATTEMPTS as usize];
        expected.extend(["two", "three"]);
        assert_eq!(order, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_holds_the_excess_for_the_next_minute() {
        let (post, seen) = fake(vec![]);
        let alerts = start_with(3, post);
        let began = Instant::now();
        for i in 0..7 {
            alerts.raise(format!("i{i}"), AlertKind::Quota, None, "s".into());
        }
        until(|| seen.lock().expect("lock").len() == 7).await;
        let seen = seen.lock().expect("lock");
        let minute = |i: usize| ((seen[i].0 - began).as_secs()) / 60;
        let minutes: Vec<u64> = (0..7).map(minute).collect();
        assert_eq!(minutes, vec![0, 0, 0, 1, 1, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn raising_never_waits_on_a_stuck_hook() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let post: Post = Arc::new(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(futures::future::pending())
        });
        let alerts = start_with(20, post);
        // The first message is stuck in its hook; the queue fills, then overflows.
        for i in 0..(QUEUE + 10) {
            alerts.raise(format!("i{i}"), AlertKind::Quota, None, "s".into());
        }
        until(|| calls.load(Ordering::SeqCst) == 1).await;
        assert_eq!(alerts.view().open.len(), QUEUE + 10);
        assert_eq!(alerts.view().recent.len(), RECENT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quota_incident_is_one_per_app_and_survives_a_refresh() {
        let (post, seen) = fake(vec![]);
        let alerts = start_with(20, post);
        alerts.quota("shop", 1600, 2000);
        alerts.quota("shop", 1700, 2000);
        alerts.resolve_credential("shop/access_token");
        assert!(alerts.is_open("shop#quota"));
        alerts.quota_ok("shop");
        until(|| seen.lock().expect("lock").len() == 2).await;
        let seen = seen.lock().expect("lock");
        assert_eq!(seen[0].1.kind, AlertKind::Quota);
        assert_eq!(seen[0].1.app.as_deref(), Some("shop"));
        assert!(seen[0].1.summary.contains("1600 of its 2000"));
        assert_eq!(seen[1].1.event, AlertEvent::Resolved);
    }

    #[test]
    fn the_wecom_body_is_a_robot_markdown_message() {
        let event = Event {
            incident: "shop/access_token#configuration_error".into(),
            kind: AlertKind::ConfigurationError,
            app: Some("shop".into()),
            summary: "WeChat says 40164".into(),
            event: AlertEvent::Resolved,
            at: 0,
        };
        let body = render(HookFormat::Wecom, &event);
        assert_eq!(body["msgtype"], "markdown");
        let content = body["markdown"]["content"].as_str().expect("present");
        assert!(content.starts_with("**wxtoken resolved: "), "{content}");
        assert!(content.contains("> app: shop\n"));
        assert!(content.contains("1970-01-01T00:00:00Z"));
        assert_eq!(body.as_object().expect("present").len(), 2);
    }
}
