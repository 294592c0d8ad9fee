//! The quota guard driven by a fake upstream: WeChat's figures, the budget, clears.

use std::sync::Mutex as StdMutex;

use futures::future::BoxFuture;
use secrecy::SecretString;

use super::*;
use crate::config::{AppQuota, DailyBudget, KeeperSettings};
use crate::store::{SqliteStore, Store};
use crate::wechat::{FetchRequest, Fetched, TokenApi};

/// An official account's token, quota and clear APIs: a new token per call while
/// `exhausted` is false (45009 while it is), figures from its own count.
#[derive(Default)]
struct FakeApi {
    state: StdMutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    exhausted: bool,
    fetches: u64,
    quota_gets: u64,
    clears: u64,
}

impl FakeApi {
    fn counts(&self) -> (u64, u64, u64) {
        let s = self.state.lock().expect("fake");
        (s.fetches, s.quota_gets, s.clears)
    }
}

impl TokenApi for FakeApi {
    fn fetch<'a>(
        &'a self,
        request: FetchRequest<'a>,
    ) -> BoxFuture<'a, Result<Fetched, UpstreamError>> {
        assert!(matches!(request, FetchRequest::OfficialToken { .. }));
        let mut s = self.state.lock().expect("fake");
        s.fetches += 1;
        let answer = if s.exhausted {
            Err(UpstreamError {
                class: crate::wechat::ErrorClass::QuotaExhausted,
                errcode: Some(45009),
                message: "reach max api daily quota limit".into(),
                rid: None,
            })
        } else {
            Ok(Fetched {
                value: format!("TOKEN{}", s.fetches),
                expires_in: 7200,
                refresh_token: None,
            })
        };
        Box::pin(async move { answer })
    }

    fn quota_get<'a>(
        &'a self,
        _access_token: &'a str,
        cgi_path: &'a str,
    ) -> BoxFuture<'a, Result<QuotaFigures, UpstreamError>> {
        assert_eq!(cgi_path, "/cgi-bin/stable_token");
        let mut s = self.state.lock().expect("fake");
        s.quota_gets += 1;
        let used = s.fetches;
        Box::pin(async move {
            Ok(QuotaFigures {
                daily_limit: 1000,
                used,
                remain: 1000 - used,
            })
        })
    }

    fn clear_quota<'a>(
        &'a self,
        _appid: &'a str,
        _secret: &'a SecretString,
    ) -> BoxFuture<'a, Result<(), UpstreamError>> {
        let mut s = self.state.lock().expect("fake");
        s.clears += 1;
        s.exhausted = false;
        Box::pin(async { Ok(()) })
    }
}

fn app(quota: AppQuota) -> AppSettings {
    AppSettings {
        id: "shop".into(),
        kind: AppKind::Official {
            mode: TokenMode::Stable,
        },
        appid: "wx1".into(),
        secret: SecretString::from("s"),
        message: None,
        quota,
    }
}

async fn keeper(
    api: Arc<FakeApi>,
    quota: AppQuota,
    settings: KeeperSettings,
) -> (tempfile::TempDir, Arc<SqliteStore>, Keeper) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(&dir.path().join("t.db")).expect("store"));
    let keeper = Keeper::start(&[app(quota)], settings, api, store.clone())
        .await
        .expect("keeper starts");
    (dir, store, keeper)
}

#[tokio::test]
async fn wechats_figures_are_asked_for_at_most_once_an_hour() {
    let api = Arc::new(FakeApi::default());
    let (_dir, _store, keeper) =
        keeper(api.clone(), AppQuota::default(), KeeperSettings::default()).await;
    keeper.access_token("shop", None).await.expect("token");
    tokio::time::pause();
    keeper.refresh_quota("shop").await;
    let quota = keeper.status("shop").expect("status").quota.expect("quota");
    let wechat = quota.wechat.expect("figures");
    assert_eq!((wechat.daily_limit, wechat.used), (1000, 1));
    // 80% of WeChat's own limit, not of the documented 500,000.
    assert_eq!(quota.budget, Some(800));

    keeper.refresh_quota("shop").await;
    tokio::time::advance(Duration::from_secs(59 * 60)).await;
    keeper.refresh_quota("shop").await;
    assert_eq!(api.counts().1, 1, "once within the hour");
    tokio::time::advance(Duration::from_secs(60)).await;
    keeper.refresh_quota("shop").await;
    assert_eq!(api.counts().1, 2, "again after an hour");
    keeper.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn past_the_budget_a_report_fetches_nothing_and_the_refresh_waits_for_the_last_stretch() {
    let api = Arc::new(FakeApi::default());
    let quota = AppQuota {
        daily_budget: Some(DailyBudget::Calls(2)),
        auto_clear_quota: false,
    };
    let (_dir, _store, keeper) = keeper(api.clone(), quota, KeeperSettings::default()).await;
    let first = keeper.access_token("shop", None).await.expect("token");
    let (second, refreshed) = keeper.invalidate("shop", &first.value).await.expect("ok");
    assert!(refreshed, "within the budget a report refreshes");
    assert_eq!(api.counts().0, 2);

    let (same, refreshed) = keeper.invalidate("shop", &second.value).await.expect("ok");
    assert!(!refreshed);
    assert_eq!(same.value, second.value);
    assert_eq!(api.counts().0, 2, "no fetch past the budget");
    let status = keeper.status("shop").expect("status");
    let quota = status.quota.expect("quota");
    assert_eq!(
        (quota.used, quota.budget, quota.guarded),
        (2, Some(2), true)
    );
    assert!(
        keeper.alerts().is_open("shop#quota"),
        "the operators are told"
    );
    // Stable window 300 s: the last stretch is its last 150 s of 7200.
    let next = status.next_refresh_in.expect("scheduled");
    assert!((7040..=7050).contains(&next), "next refresh in {next} s");

    // A clear starts the count again: calls before it no longer count.
    keeper.clear_quota("shop").await.expect("cleared");
    let quota = keeper.status("shop").expect("status").quota.expect("quota");
    assert_eq!(
        (quota.used, quota.guarded, quota.clears_this_month),
        (0, false, 1)
    );
    assert!(
        !keeper.alerts().is_open("shop#quota"),
        "resolved by the clear"
    );
    let (_, refreshed) = keeper.invalidate("shop", &second.value).await.expect("ok");
    assert!(refreshed, "within the budget again");
    assert_eq!(api.counts(), (3, 0, 1));
    keeper.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn with_no_serveable_token_a_fetch_is_made_whatever_the_budget() {
    let api = Arc::new(FakeApi::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(&dir.path().join("t.db")).expect("store"));
    // Today's calls, counted before a restart, are past the budget already.
    store
        .add_usage(wechat_day(unix_now_ms()), "shop".into(), "stable_token", 5)
        .await
        .expect("usage");
    let quota = AppQuota {
        daily_budget: Some(DailyBudget::Calls(1)),
        auto_clear_quota: false,
    };
    let keeper = Keeper::start(&[app(quota)], KeeperSettings::default(), api.clone(), store)
        .await
        .expect("keeper starts");
    let token = keeper.access_token("shop", None).await.expect("a token");
    assert_eq!(token.value, "TOKEN1");
    let quota = keeper.status("shop").expect("status").quota.expect("quota");
    assert_eq!(
        (quota.used, quota.budget, quota.guarded),
        (6, Some(1), true)
    );
    keeper.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_45009_clears_once_per_incident_within_the_monthly_budget_kept_in_the_store() {
    let api = Arc::new(FakeApi::default());
    api.state.lock().expect("fake").exhausted = true;
    let quota = AppQuota {
        daily_budget: None,
        auto_clear_quota: true,
    };
    let mut settings = KeeperSettings::default();
    settings.quota.clear_quota_monthly_budget = 2;
    let (_dir, store, keeper) = keeper(api.clone(), quota, settings).await;
    let first = keeper.access_token("shop", None).await.expect("token");
    assert_eq!(api.counts(), (2, 0, 1), "45009, a clear, a retry");

    // A new incident after a success: one more clear.
    api.state.lock().expect("fake").exhausted = true;
    let (second, refreshed) = keeper.invalidate("shop", &first.value).await.expect("ok");
    assert!(refreshed);
    assert_eq!(api.counts(), (4, 0, 2));

    // The third incident finds the month's budget spent.
    api.state.lock().expect("fake").exhausted = true;
    let _ = keeper.invalidate("shop", &second.value).await;
    assert_eq!(api.counts(), (5, 0, 2), "no clear past the budget");
    assert!(matches!(
        keeper.clear_quota("shop").await,
        Err(ClearError::BudgetUsedUp { budget: 2 })
    ));
    let month = month_of(&wechat_day(unix_now_ms()));
    let rows = store.usage(month, "shop".into()).await.expect("usage");
    let kept = rows
        .iter()
        .find(|r| r.api == CLEARS_COUNTER)
        .map(|r| r.calls);
    assert_eq!(kept, Some(2), "{rows:?}");
    keeper.shutdown(Duration::from_secs(1)).await;
}
