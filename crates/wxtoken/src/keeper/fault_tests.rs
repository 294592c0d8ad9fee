//! The keeper under faults that last (tokio's paused clock stands in for minutes and
//! hours) and under wall clock steps (a fake wall clock that follows tokio's and can be
//! stepped, see `credential::fake_wall`).
//!
//! What these show about time: refreshes and retries are scheduled on tokio's monotonic
//! clock (`refresh_at`, `backoff_until`), computed when a value is installed; whether a
//! value may still be served is judged on the wall clock (`expires_at_ms`, absolute so
//! that it survives restarts and means the same on every instance).

use std::sync::Mutex as StdMutex;

use futures::future::BoxFuture;
use secrecy::SecretString;

use super::*;
use crate::config::{AppKind, TokenMode};
use crate::credential::fake_wall;
use crate::store::SqliteStore;
use crate::wechat::{FetchRequest, Fetched, TokenApi};

/// Classic `/cgi-bin/token`: a new 7200 s token per call, or WeChat's -1 while
/// `failing`.
#[derive(Default)]
struct FakeApi {
    state: StdMutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    calls: u64,
    failing: bool,
}

impl FakeApi {
    fn calls(&self) -> u64 {
        self.state.lock().expect("fake").calls
    }

    fn fail(&self, failing: bool) {
        self.state.lock().expect("fake").failing = failing;
    }
}

impl TokenApi for FakeApi {
    fn fetch<'a>(
        &'a self,
        request: FetchRequest<'a>,
    ) -> BoxFuture<'a, Result<Fetched, UpstreamError>> {
        assert!(matches!(request, FetchRequest::OfficialToken { .. }));
        let mut s = self.state.lock().expect("fake");
        s.calls += 1;
        let answer = if s.failing {
            Err(UpstreamError {
                class: ErrorClass::Transient,
                errcode: Some(-1),
                message: "system error".into(),
                rid: None,
            })
        } else {
            Ok(Fetched {
                value: format!("T{}", s.calls),
                expires_in: 7200,
                refresh_token: None,
            })
        };
        Box::pin(async move { answer })
    }
}

fn app() -> AppSettings {
    AppSettings {
        id: "shop".into(),
        kind: AppKind::Official {
            mode: TokenMode::Classic,
        },
        appid: "wx1".into(),
        secret: SecretString::from("s"),
        message: None,
        quota: Default::default(),
    }
}

/// A keeper on a SQLite file, with tokio's clock paused and the wall clock following it.
async fn keeper(api: Arc<FakeApi>) -> (tempfile::TempDir, Arc<SqliteStore>, Keeper) {
    tokio::time::pause();
    fake_wall::follow_tokio();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(&dir.path().join("t.db")).expect("store"));
    let keeper = Keeper::start(&[app()], KeeperSettings::default(), api, store.clone())
        .await
        .expect("keeper starts");
    (dir, store, keeper)
}

fn served(keeper: &Keeper) -> Option<String> {
    keeper
        .current("shop", Duration::ZERO)
        .map(|t| t.value.clone())
}

fn expires_in(keeper: &Keeper) -> u64 {
    keeper
        .status("shop")
        .and_then(|s| s.token)
        .expect("a token")
        .expires_in
}

async fn sleep_secs(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

/// WeChat answers -1 from the moment the refresh is due (6600-6720 s after the fetch)
/// for twenty minutes: the held token is served to its last second without an error,
/// retries come ever closer as it runs out but stay bounded; without a value, callers
/// get WeChat's error at once and retries come at most once every 30-60 s; when WeChat
/// answers again, the next retry installs a token, and the store holds it.
#[tokio::test]
async fn fault_wechat_busy_for_twenty_minutes_keeps_serving_then_recovers() {
    let api = Arc::new(FakeApi::default());
    let (_dir, store, keeper) = keeper(api.clone()).await;
    let first = keeper.access_token("shop", None).await.expect("token");
    assert_eq!(api.calls(), 1);
    api.fail(true);

    sleep_secs(6590).await;
    assert_eq!(api.calls(), 1, "nothing is due before the refresh window");
    // To 1 s before its end (the serve margin), every look finds the held token.
    let mut at_7190 = 0;
    for _ in 0..60 {
        sleep_secs(10).await;
        at_7190 = api.calls();
        assert_eq!(served(&keeper).as_deref(), Some(first.value.as_str()));
        assert_eq!(
            keeper
                .access_token("shop", None)
                .await
                .expect("served")
                .value,
            first.value
        );
    }
    sleep_secs(9).await; // 7199 s
    let while_held = api.calls() - 1;
    // Retries wait a quarter of what is left (down to 100 ms): most come in the last
    // minute, several in the last seconds.
    println!(
        "{while_held} calls while the token was held (~9 minutes), {} of them in its last 9 s",
        api.calls() - at_7190
    );
    assert!(
        (5..=50).contains(&while_held),
        "{while_held} calls while the token was held"
    );

    sleep_secs(2).await; // 7201 s: the token is over.
    assert_eq!(served(&keeper), None);
    let at_end = api.calls();
    let error = keeper.access_token("shop", None).await.expect_err("none");
    match error {
        KeeperError::Upstream { failure, .. } => {
            assert_eq!(failure.class(), ErrorClass::Transient);
            assert!(failure.to_string().contains("system error"), "{failure}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        api.calls() <= at_end + 1,
        "a caller causes at most one call"
    );
    let since = api.calls();
    sleep_secs(600).await;
    let without = api.calls() - since;
    println!("{without} calls in ten minutes without a token");
    assert!(
        (9..=21).contains(&without),
        "{without} calls in ten minutes"
    );
    let status = keeper.status("shop").expect("status");
    assert_eq!(status.state, "backoff");
    assert!(status.consecutive_failures as u64 >= while_held + without);

    api.fail(false);
    let before = api.calls();
    sleep_secs(61).await;
    assert_eq!(api.calls(), before + 1, "the next retry succeeds");
    let fresh = served(&keeper).expect("a token again");
    assert_eq!(fresh, format!("T{}", before + 1));
    let stored = store
        .load(CredentialKey::access_token("shop"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!((stored.value, stored.generation), (fresh, 2));
    keeper.shutdown(Duration::from_secs(1)).await;
}

/// The wall clock jumps an hour ahead: the held token looks an hour older. It is served
/// while the wall clock says it lives; once it looks expired, the next caller causes one
/// fetch (one round trip, no error) and the new token is dated by the new wall clock.
/// Nothing loops: one early call in all.
#[tokio::test]
async fn fault_wall_clock_stepped_forward_an_hour_costs_one_early_fetch() {
    let api = Arc::new(FakeApi::default());
    let (_dir, _store, keeper) = keeper(api.clone()).await;
    let first = keeper.access_token("shop", None).await.expect("token");
    fake_wall::step(3_600_000);
    assert!((3590..=3600).contains(&expires_in(&keeper)));
    sleep_secs(3590).await;
    assert_eq!(served(&keeper).as_deref(), Some(first.value.as_str()));
    sleep_secs(20).await;
    assert_eq!(served(&keeper), None, "it looks expired");
    assert_eq!(
        api.calls(),
        1,
        "the refresh is scheduled on the monotonic clock"
    );
    let second = keeper.access_token("shop", None).await.expect("token");
    assert_eq!(second.value, "T2");
    assert_eq!(api.calls(), 2);
    assert!((7190..=7200).contains(&expires_in(&keeper)));
    // The next refresh is planned from the new token: nothing more for 6000 s.
    sleep_secs(6000).await;
    assert_eq!(api.calls(), 2);
    assert_eq!(served(&keeper).as_deref(), Some("T2"));
    keeper.shutdown(Duration::from_secs(1)).await;
}

/// The wall clock jumps an hour back: the held token looks an hour younger (its
/// `expires_in` says an hour too much), but the refresh was scheduled on the monotonic
/// clock when it was installed, so it comes on time, before the token's real end; the
/// new token is dated by the new wall clock.
#[tokio::test]
async fn fault_wall_clock_stepped_back_an_hour_still_refreshes_on_time() {
    let api = Arc::new(FakeApi::default());
    let (_dir, _store, keeper) = keeper(api.clone()).await;
    let first = keeper.access_token("shop", None).await.expect("token");
    fake_wall::step(-3_600_000);
    assert!((10_790..=10_800).contains(&expires_in(&keeper)));
    sleep_secs(6590).await;
    assert_eq!(api.calls(), 1);
    assert_eq!(served(&keeper).as_deref(), Some(first.value.as_str()));
    sleep_secs(140).await; // 6730 s: past the refresh, 470 s before the real end.
    assert_eq!(api.calls(), 2, "refreshed on the monotonic schedule");
    assert_eq!(served(&keeper).as_deref(), Some("T2"));
    assert!((7050..=7200).contains(&expires_in(&keeper)));
    keeper.shutdown(Duration::from_secs(1)).await;
}

/// Stepped an hour back while WeChat fails through the refresh window: the wall clock
/// says the held token has an hour left, but its life is over by the monotonic clock
/// (noted when it was installed), so it stops being served at its real end (less the
/// 1 s margin) rather than an hour later; callers then get WeChat's error, and the first
/// retry that succeeds installs a new token.
#[tokio::test]
async fn fault_wall_clock_stepped_back_while_wechat_fails_stops_serving_at_the_real_end() {
    let api = Arc::new(FakeApi::default());
    let (_dir, _store, keeper) = keeper(api.clone()).await;
    let first = keeper.access_token("shop", None).await.expect("token");
    fake_wall::step(-3_600_000);
    api.fail(true);
    sleep_secs(7198).await;
    assert_eq!(served(&keeper).as_deref(), Some(first.value.as_str()));
    sleep_secs(2).await; // 7200 s: its real end.
    assert_eq!(served(&keeper), None, "not served past its real end");
    let error = keeper.access_token("shop", None).await.expect_err("none");
    assert!(error.to_string().contains("system error"), "{error}");
    let failed = api.calls() - 1;
    assert!(failed >= 5, "{failed} retries");
    api.fail(false);
    sleep_secs(61).await;
    let fresh = served(&keeper).expect("a token again");
    assert_eq!(fresh, format!("T{}", api.calls()));
    // Dated by the stepped wall clock, fetched within the last 61 s.
    assert!((7130..=7200).contains(&expires_in(&keeper)));
    keeper.shutdown(Duration::from_secs(1)).await;
}
