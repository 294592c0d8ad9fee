//! The quota guard: how many calls of its token API an app may make per WeChat day,
//! WeChat's own figures (`openapi/quota/get`, asked at most hourly and only when a
//! status is asked for), and clears (`clear_quota/v2`) within a monthly budget.
//!
//! The budget is `[[apps]] daily_budget`, else `[upstream] daily_budget` (default 80%),
//! of WeChat's daily limit of the API the app's token comes from. Once an app has made
//! that many calls today (counted in its slot's `Health::calls`, Beijing days), the
//! driver makes no further fetch while the token it holds is outside its *last
//! stretch*: the second half of the refresh-ahead window (stable mode: of the stable
//! window), which is still inside WeChat's renewal window. A guarded refresh is moved to
//! the start of the last stretch, so each value costs one call, made just before it
//! would lapse. With no serveable value at all, a fetch is always made. The day's counts
//! are read from the store before each refresh: with a shared store they are the
//! fleet's, and a clear's base (calls before it no longer count) is kept there too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tracing::{info, warn};

use super::schedule;
use super::slot::Slot;
use super::{Ctx, Keeper, driver};
use crate::config::{AppKind, AppSettings, TokenMode};
use crate::credential::{CredentialKey, Token, unix_now_ms, wechat_day};
use crate::wechat::{CLEAR_QUOTA, QUOTA_GET, QuotaFigures, UpstreamError};

/// WeChat's figures are asked for at most this often per app.
pub const WECHAT_FIGURES_EVERY: Duration = Duration::from_secs(3600);

/// A status waits at most this long for WeChat's figures; a slower answer is shown by
/// the next status.
const STATUS_WAIT: Duration = Duration::from_millis(500);

/// The store's usage counter (on the first day of each month) of this month's clears.
const CLEARS_COUNTER: &str = "clear_quota_month";

/// The store's usage counter (per day) of the token API's calls counted when the day's
/// last clear was made: calls up to it no longer count against the budget.
const CLEARED_AT_COUNTER: &str = "quota_cleared_at_calls";

/// WeChat's documented daily limit of a token API: `/cgi-bin/token` 2000 a day per
/// account, `/cgi-bin/stable_token` 500,000 (WECHAT.md). WeCom's `gettoken` and the
/// component APIs publish none we rely on: no percent budget applies to them.
pub fn documented_limit(api: &str) -> Option<u64> {
    match api {
        "token" => Some(2000),
        "stable_token" => Some(500_000),
        _ => None,
    }
}

/// The WeChat path of an official app's token API, as `quota/get` names it.
fn cgi_path(mode: TokenMode) -> &'static str {
    match mode {
        TokenMode::Classic => "/cgi-bin/token",
        TokenMode::Stable => "/cgi-bin/stable_token",
    }
}

/// The API an app's access token is fetched with (a normal call).
pub fn token_api(app: &AppSettings) -> &'static str {
    match app.kind {
        AppKind::Official {
            mode: TokenMode::Classic,
        } => "token",
        AppKind::Official {
            mode: TokenMode::Stable,
        } => "stable_token",
        AppKind::Wecom { .. } => "gettoken",
        AppKind::Component => "api_component_token",
    }
}

/// WeChat's figures as last fetched.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WechatFigures {
    pub daily_limit: u64,
    pub used: u64,
    pub remain: u64,
    /// Unix seconds.
    pub fetched_at: u64,
}

/// The quota part of an app's status.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaStatus {
    /// The API counted (`token`, `stable_token`, `gettoken`, `api_component_token`).
    pub api: &'static str,
    /// Calls a day wxtoken allows itself; `null` when WeChat's limit is unknown and the
    /// budget is a percent.
    pub budget: Option<u64>,
    /// Calls counted against the budget today (since the last clear, if one was today).
    pub used: u64,
    /// Whether the budget is reached: only a token about to lapse is fetched.
    pub guarded: bool,
    /// WeChat's own figures (`openapi/quota/get`), official apps only; `null` until
    /// first fetched.
    pub wechat: Option<WechatFigures>,
    /// Clears made this month (automatic and manual).
    pub clears_this_month: u64,
    /// Clears allowed a month (`upstream.clear_quota_monthly_budget`).
    pub clear_budget: u32,
    pub auto_clear_quota: bool,
}

/// What the guard keeps per app (std mutex, never held across an await).
#[derive(Debug, Default)]
struct AppQuotaState {
    wechat: Option<WechatFigures>,
    /// When WeChat's figures were last asked for.
    asked_at: Option<Instant>,
    /// This month's clears: `(first day of the month, count)`, once loaded.
    clears: Option<(String, u64)>,
    /// After a clear: `(day, calls of the token API that day at the clear)`; calls
    /// before it no longer count against the budget.
    cleared_at: Option<(String, u64)>,
    /// An automatic clear was made since the last successful fetch: one per incident.
    auto_cleared: bool,
    /// With a shared store: `(day, calls)` of the token API by the whole fleet, as last
    /// read from the store before a refresh.
    fleet_calls: Option<(String, u64)>,
}

/// Every app's quota state.
#[derive(Debug, Default)]
pub(crate) struct QuotaBook {
    apps: Mutex<HashMap<String, AppQuotaState>>,
}

impl QuotaBook {
    fn with<R>(&self, app: &str, f: impl FnOnce(&mut AppQuotaState) -> R) -> R {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        f(apps.entry(app.to_owned()).or_default())
    }
}

/// Why a clear was not made.
#[derive(Debug, thiserror::Error)]
pub enum ClearError {
    #[error("no app `{0}` is configured")]
    UnknownApp(String),
    #[error(
        "app `{0}` is not an official account or mini program: clear_quota/v2 takes an account's appid and AppSecret"
    )]
    Unsupported(String),
    #[error(
        "this month's clear budget ({budget}) is used up (upstream.clear_quota_monthly_budget)"
    )]
    BudgetUsedUp { budget: u32 },
    #[error("the month's clears could not be read from the store: {0}")]
    Store(String),
    #[error("WeChat refused the clear: {0}")]
    Upstream(UpstreamError),
}

/// The first day of the month of `day` (`YYYY-MM-DD`).
fn month_of(day: &str) -> String {
    format!("{}-01", &day[..day.len().min(7)])
}

/// `(used, budget)` of the slot's token API today, if a budget applies.
fn usage(slot: &Slot, ctx: &Ctx, now_ms: u64) -> (u64, Option<u64>) {
    let api = token_api(&slot.app);
    let wechat_limit = ctx
        .quota
        .with(&slot.app.id, |s| s.wechat.map(|w| w.daily_limit));
    let limit = wechat_limit.or_else(|| documented_limit(api));
    let budget = slot
        .app
        .quota
        .daily_budget
        .unwrap_or(ctx.settings().quota.daily_budget)
        .calls(limit);
    let own = slot.health().calls_today(api, now_ms);
    let today = wechat_day(now_ms);
    let (base, fleet) = ctx.quota.with(&slot.app.id, |s| {
        let today_only = |v: &Option<(String, u64)>| match v {
            Some((day, n)) if *day == today => *n,
            _ => 0,
        };
        (today_only(&s.cleared_at), today_only(&s.fleet_calls))
    });
    (own.max(fleet).saturating_sub(base), budget)
}

/// How long before expiry the last stretch starts: half the refresh-ahead window.
pub fn last_stretch(token: &Token, slot: &Slot, ctx: &Ctx) -> Duration {
    schedule::refresh_ahead(token, slot.policy(), &ctx.settings()) / 2
}

/// Whether a planned fetch of an app's access token must be skipped, by the counts
/// known now: the budget is reached and the value held is serveable outside its last
/// stretch. Then the next refresh is moved to the start of the last stretch.
fn guards_now(slot: &Slot, ctx: &Ctx) -> bool {
    if slot.of_authorizer() || slot.key.kind != crate::credential::CredentialKind::AccessToken {
        return false;
    }
    let now_ms = unix_now_ms();
    let Some(token) = slot
        .current
        .load_full()
        .filter(|t| slot.can_serve(t, now_ms, Duration::ZERO))
    else {
        return false;
    };
    let (used, Some(budget)) = usage(slot, ctx, now_ms) else {
        return false;
    };
    if used < budget {
        // A new WeChat day, or a clear: the incident (if any) is over.
        ctx.alerts.quota_ok(&slot.app.id);
        return false;
    }
    // De-duplicated per incident by the alerts.
    ctx.alerts.quota(&slot.app.id, used, budget);
    let stretch = last_stretch(&token, slot, ctx);
    let left = Duration::from_millis(token.remaining_ms(now_ms));
    if left <= stretch {
        return false;
    }
    let wait = left - stretch;
    slot.health().refresh_at = Some(Instant::now() + wait);
    info!(
        app = %slot.key.app,
        used,
        budget,
        refresh_in_ms = wait.as_millis() as u64,
        "daily budget reached: refresh moved to the token's last stretch"
    );
    metrics::counter!("wxtoken_quota_guarded_total", "app" => slot.key.app.clone()).increment(1);
    true
}

/// Whether a planned fetch must be skipped for the app's daily budget (see the module
/// doc). The day's counts are read from the store first: with a shared store every
/// instance counts its calls there, so an instance that has made few calls itself still
/// keeps to the fleet's budget; and the base of the day's last clear is kept there, so
/// that neither a restart nor another instance forgets it. A store that does not answer
/// (or is failing) leaves the counts this instance knows.
pub(super) async fn guards(slot: &Slot, ctx: &Ctx) -> bool {
    if slot.of_authorizer() || slot.key.kind != crate::credential::CredentialKind::AccessToken {
        return false;
    }
    // No read where the guard cannot apply, nor while the store is failing (the
    // refresh must not wait for it).
    let now_ms = unix_now_ms();
    if slot.serveable(Duration::ZERO).is_none()
        || usage(slot, ctx, now_ms).1.is_none()
        || ctx.store_health.failing()
    {
        return guards_now(slot, ctx);
    }
    if let Err(e) = read_counts(slot, ctx, &wechat_day(now_ms)).await {
        warn!(app = %slot.app.id, error = %e, "could not read the day's calls from the store; the budget counts this instance's");
    }
    guards_now(slot, ctx)
}

/// Reads `day`'s calls of the app's token API (every instance's) and the base of the
/// day's last clear from the store. Returns the fleet's calls.
async fn read_counts(slot: &Slot, ctx: &Ctx, day: &str) -> Result<u64, crate::store::StoreError> {
    let api = token_api(&slot.app);
    let rows = ctx.store.usage(day.to_owned(), slot.app.id.clone()).await?;
    let sum = |name: &str| -> u64 { rows.iter().filter(|r| r.api == name).map(|r| r.calls).sum() };
    let (calls, base) = (sum(api), sum(CLEARED_AT_COUNTER));
    ctx.quota.with(&slot.app.id, |s| {
        s.fleet_calls = Some((day.to_owned(), calls));
        let known = match &s.cleared_at {
            Some((d, b)) if d == day => *b,
            _ => 0,
        };
        if base > known {
            s.cleared_at = Some((day.to_owned(), base));
        }
    });
    Ok(calls)
}

/// After a fetch failed with 45009: with `auto_clear_quota`, one clear per incident
/// (until a fetch succeeds again). Returns whether the quota was cleared, so that the
/// caller retries once.
pub(super) async fn auto_clear(slot: &Slot, ctx: &Ctx) -> bool {
    if !slot.app.quota.auto_clear_quota || slot.of_authorizer() {
        return false;
    }
    let first = ctx.quota.with(&slot.app.id, |s| {
        !std::mem::replace(&mut s.auto_cleared, true)
    });
    if !first {
        return false;
    }
    match clear(slot, ctx).await {
        Ok(()) => {
            info!(app = %slot.key.app, "WeChat said 45009: cleared the daily quota (auto_clear_quota); retrying once");
            true
        }
        Err(e) => {
            warn!(app = %slot.key.app, "WeChat said 45009 and the quota was not cleared: {e}");
            false
        }
    }
}

/// A fetch succeeded: the next 45009 is a new incident.
pub(super) fn fetched(slot: &Slot, ctx: &Ctx) {
    if slot.app.quota.auto_clear_quota && !slot.of_authorizer() {
        ctx.quota.with(&slot.app.id, |s| s.auto_cleared = false);
    }
}

/// This month's clears, read from the store once per month.
async fn load_clears(app: &str, ctx: &Ctx, month: &str) -> Result<u64, ClearError> {
    let known = ctx.quota.with(app, |s| match &s.clears {
        Some((m, n)) if m == month => Some(*n),
        _ => None,
    });
    if let Some(n) = known {
        return Ok(n);
    }
    let rows = ctx
        .store
        .usage(month.to_owned(), app.to_owned())
        .await
        .map_err(|e| ClearError::Store(e.to_string()))?;
    let stored = rows
        .iter()
        .find(|r| r.api == CLEARS_COUNTER)
        .map_or(0, |r| r.calls);
    Ok(ctx.quota.with(app, |s| match &s.clears {
        // A clear counted meanwhile is newer than what was read.
        Some((m, n)) if m == month => *n,
        _ => {
            s.clears = Some((month.to_owned(), stored));
            stored
        }
    }))
}

/// One clear of the app's daily quota, within the monthly budget (fleet-wide with a
/// shared store). A clear WeChat refuses does not use the budget (WeChat counts only
/// clears that took effect).
async fn clear(slot: &Slot, ctx: &Ctx) -> Result<(), ClearError> {
    let app = &slot.app;
    if !matches!(app.kind, AppKind::Official { .. }) {
        return Err(ClearError::Unsupported(app.id.clone()));
    }
    let budget = ctx.settings().quota.clear_quota_monthly_budget;
    let now_ms = unix_now_ms();
    let today = wechat_day(now_ms);
    let month = month_of(&today);
    load_clears(&app.id, ctx, &month).await?;
    // Reserve one clear under the lock, so that two clears at once cannot both pass.
    let reserved = ctx.quota.with(&app.id, |s| match &mut s.clears {
        Some((m, n)) if *m == month && *n < u64::from(budget) => {
            *n += 1;
            true
        }
        _ => false,
    });
    if !reserved {
        return Err(ClearError::BudgetUsedUp { budget });
    }
    let release = || {
        ctx.quota.with(&app.id, |s| {
            if let Some((m, n)) = &mut s.clears
                && *m == month
            {
                *n = n.saturating_sub(1);
            }
        })
    };
    if let Some(coordination) = ctx.store.coordination() {
        // The month's key outlives the month; the window only has to.
        let window = Duration::from_secs(32 * 86_400);
        let name = format!("clear:{month}");
        match coordination
            .take_budget(&app.id, &name, u64::from(budget), window)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                release();
                return Err(ClearError::BudgetUsedUp { budget });
            }
            Err(e) => {
                release();
                return Err(ClearError::Store(e.to_string()));
            }
        }
    }
    let day = slot.health().count_call(CLEAR_QUOTA, now_ms);
    driver::count_upstream(ctx, &app.id, CLEAR_QUOTA, day);
    if let Err(e) = ctx.api.clear_quota(&app.appid, &app.secret).await {
        release();
        warn!(app = %app.id, errcode = e.errcode, rid = e.rid.as_deref().unwrap_or("-"), "clear_quota failed: {}", e.message);
        return Err(ClearError::Upstream(e));
    }
    // Durable before it is reported: a restart must not forget a clear.
    if let Err(e) = ctx
        .store
        .add_usage(month, app.id.clone(), CLEARS_COUNTER, 1)
        .await
    {
        warn!(app = %app.id, error = %e, "could not persist the month's clear counter");
    }
    // Calls so far (the fleet's, as the store has them) stop counting: the base is kept
    // in the store, as the difference from the base stored before.
    let own = slot.health().calls_today(token_api(app), now_ms);
    let fleet = read_counts(slot, ctx, &today).await.unwrap_or(0);
    let (calls, stored_base) = ctx.quota.with(&app.id, |s| {
        let stored = match &s.cleared_at {
            Some((d, b)) if *d == today => *b,
            _ => 0,
        };
        (own.max(fleet), stored)
    });
    if calls > stored_base
        && let Err(e) = ctx
            .store
            .add_usage(
                today.clone(),
                app.id.clone(),
                CLEARED_AT_COUNTER,
                calls - stored_base,
            )
            .await
    {
        warn!(app = %app.id, error = %e, "could not persist the clear's base; it holds in memory");
    }
    ctx.quota.with(&app.id, |s| {
        s.cleared_at = Some((today, calls));
        // WeChat's figures changed: ask again when a status is next asked for.
        s.asked_at = None;
    });
    metrics::counter!("wxtoken_quota_clears_total", "app" => app.id.clone()).increment(1);
    ctx.alerts.quota_ok(&app.id);
    info!(app = %app.id, "cleared the daily quota");
    // A driver waiting out a 45009 tries again now.
    if slot.health().backoff_class == Some(crate::wechat::ErrorClass::QuotaExhausted) {
        slot.retry_now();
    }
    Ok(())
}

/// Fetches WeChat's figures for the app's token API with its current token, counted
/// like any upstream call.
async fn fetch_figures(slot: Arc<Slot>, ctx: Arc<Ctx>, mode: TokenMode) {
    let Some(token) = slot.serveable(Duration::ZERO) else {
        return;
    };
    let now_ms = unix_now_ms();
    let day = slot.health().count_call(QUOTA_GET, now_ms);
    driver::count_upstream(&ctx, &slot.app.id, QUOTA_GET, day);
    match ctx.api.quota_get(&token.value, cgi_path(mode)).await {
        Ok(QuotaFigures {
            daily_limit,
            used,
            remain,
        }) => ctx.quota.with(&slot.app.id, |s| {
            s.wechat = Some(WechatFigures {
                daily_limit,
                used,
                remain,
                fetched_at: unix_now_ms() / 1000,
            });
        }),
        Err(e) => warn!(
            app = %slot.app.id,
            errcode = e.errcode,
            rid = e.rid.as_deref().unwrap_or("-"),
            "quota/get failed: {}",
            e.message
        ),
    }
}

/// The quota part of the status of the app whose token slot is `slot`.
pub(super) fn status(slot: &Slot, ctx: &Ctx) -> QuotaStatus {
    let now_ms = unix_now_ms();
    let (used, budget) = usage(slot, ctx, now_ms);
    let month = month_of(&wechat_day(now_ms));
    let (wechat, clears) = ctx.quota.with(&slot.app.id, |s| {
        let clears = match &s.clears {
            Some((m, n)) if *m == month => *n,
            _ => 0,
        };
        (s.wechat, clears)
    });
    QuotaStatus {
        api: token_api(&slot.app),
        budget,
        used,
        guarded: budget.is_some_and(|b| used >= b),
        wechat,
        clears_this_month: clears,
        clear_budget: ctx.settings().quota.clear_quota_monthly_budget,
        auto_clear_quota: slot.app.quota.auto_clear_quota,
    }
}

impl Keeper {
    /// Brings an app's quota figures up to date before its status is shown: this
    /// month's clears from the store, and WeChat's figures if older than an hour
    /// (waiting for them at most briefly; a slower answer shows next time).
    pub async fn refresh_quota(&self, app: &str) {
        let Some(slot) = self.slot_of(&CredentialKey::access_token(app)) else {
            return;
        };
        let ctx = self.inner.ctx.clone();
        self.load_quota_counts(app).await;
        let AppKind::Official { mode } = slot.app.kind else {
            return;
        };
        if slot.serveable(Duration::ZERO).is_none() {
            return;
        }
        let due = ctx.quota.with(app, |s| {
            let due = s
                .asked_at
                .is_none_or(|at| at.elapsed() >= WECHAT_FIGURES_EVERY);
            if due {
                s.asked_at = Some(Instant::now());
            }
            due
        });
        if !due {
            return;
        }
        let task = tokio::spawn(fetch_figures(slot, ctx, mode));
        let _ = tokio::time::timeout(STATUS_WAIT, task).await;
    }

    /// Reads `app`'s counts from the store (no WeChat call): this month's clears (once
    /// a month), and today's calls and clear base (every instance's, and from before a
    /// restart). What a status or listing shows them from.
    pub async fn load_quota_counts(&self, app: &str) {
        let ctx = &self.inner.ctx;
        let today = wechat_day(unix_now_ms());
        if let Err(e) = load_clears(app, ctx, &month_of(&today)).await {
            warn!(app, "{e}");
        }
        if let Some(slot) = self.slot_of(&CredentialKey::access_token(app))
            && let Err(e) = read_counts(&slot, ctx, &today).await
        {
            warn!(app, error = %e, "could not read the day's calls from the store");
        }
    }

    /// Clears an app's daily quota now (`clear_quota/v2`), within the monthly budget.
    pub async fn clear_quota(&self, app: &str) -> Result<(), ClearError> {
        let slot = self
            .slot_of(&CredentialKey::access_token(app))
            .ok_or_else(|| ClearError::UnknownApp(app.to_owned()))?;
        clear(&slot, &self.inner.ctx).await
    }
}

#[cfg(test)]
mod tests;
