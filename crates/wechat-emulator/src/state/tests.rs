//! Unit tests of the token logic, driven with explicit instants so no test sleeps.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::AppCredentials;

const APP: &str = "wxapp";
const SECRET: &str = "s3cret";
const DAY: u64 = 20_000;

fn config() -> Config {
    Config {
        apps: vec![AppCredentials::new(APP, SECRET)],
        expires_in: 100,
        overlap: Duration::from_secs(10),
        quota: 3,
        stable_quota: 5,
        force_refresh_daily: 2,
        ..Config::default()
    }
}

fn req(endpoint: Endpoint, secret: &str) -> TokenRequest<'_> {
    TokenRequest {
        grant_type: Some("client_credential"),
        appid: Some(APP),
        secret: Some(secret),
        force_refresh: endpoint == Endpoint::Stable && secret == "force",
        ..TokenRequest::default()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn classic_rotation_kills_previous_after_overlap() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let a = st.issue_classic(&cfg, APP, t0);
    assert_eq!(a.expires_in, 100);
    assert!(a.access_token.len() >= 80);
    let b = st.issue_classic(&cfg, APP, t0 + secs(5));
    assert_ne!(a.access_token, b.access_token);
    assert_eq!(st.check(&a.access_token, t0 + secs(14)), TokenCheck::Valid);
    assert_eq!(
        st.check(&a.access_token, t0 + secs(15)),
        TokenCheck::Invalid
    );
    assert_eq!(st.check(&b.access_token, t0 + secs(15)), TokenCheck::Valid);
    assert_eq!(
        st.check(&b.access_token, t0 + secs(105)),
        TokenCheck::Expired
    );
    assert_eq!(st.stats().app(APP).tokens_issued, 2);
}

#[test]
fn classic_kill_never_extends_past_expiry() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let a = st.issue_classic(&cfg, APP, t0);
    // Replaced 5 s before its expiry: it simply expires, it is not kept alive longer.
    st.issue_classic(&cfg, APP, t0 + secs(95));
    assert_eq!(st.check(&a.access_token, t0 + secs(99)), TokenCheck::Valid);
    assert_eq!(
        st.check(&a.access_token, t0 + secs(100)),
        TokenCheck::Expired
    );
}

#[test]
fn stable_normal_mode_reuses_then_renews_in_last_overlap() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let a = st.stable(&cfg, APP, false, t0, DAY).expect("first stable");
    assert_eq!(a.expires_in, 100);
    let again = st
        .stable(&cfg, APP, false, t0 + secs(30), DAY)
        .expect("reuse");
    assert_eq!(again.access_token, a.access_token);
    assert_eq!(again.expires_in, 70);
    // 10 s left is not more than the overlap: a new token, the old one lives on.
    let b = st
        .stable(&cfg, APP, false, t0 + secs(90), DAY)
        .expect("renew");
    assert_ne!(b.access_token, a.access_token);
    assert_eq!(b.expires_in, 100);
    assert_eq!(st.check(&a.access_token, t0 + secs(99)), TokenCheck::Valid);
    assert_eq!(
        st.check(&a.access_token, t0 + secs(100)),
        TokenCheck::Expired
    );
    assert_eq!(st.stats().app(APP).tokens_issued, 2);
}

#[test]
fn stable_force_refresh_kills_at_once_and_respects_interval_and_daily_limit() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let a = st.stable(&cfg, APP, false, t0, DAY).expect("first");
    let b = st
        .stable(&cfg, APP, true, t0 + secs(1), DAY)
        .expect("force");
    assert_ne!(a.access_token, b.access_token);
    assert_eq!(st.check(&a.access_token, t0 + secs(1)), TokenCheck::Invalid);
    // Within the interval: no refresh, the current token with its seconds left.
    let c = st
        .stable(&cfg, APP, true, t0 + secs(11), DAY)
        .expect("too soon");
    assert_eq!(c.access_token, b.access_token);
    assert_eq!(c.expires_in, 90);
    let d = st
        .stable(&cfg, APP, true, t0 + secs(31), DAY)
        .expect("second force");
    assert_ne!(d.access_token, b.access_token);
    // Daily limit of 2 reached.
    assert_eq!(
        st.stable(&cfg, APP, true, t0 + secs(62), DAY),
        Err(WxError::DAILY_QUOTA)
    );
    // A new WeChat day allows force refreshes again.
    assert!(st.stable(&cfg, APP, true, t0 + secs(62), DAY + 1).is_ok());
}

#[test]
fn classic_and_stable_chains_are_separate() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let s = st.stable(&cfg, APP, false, t0, DAY).expect("stable");
    let c = st.issue_classic(&cfg, APP, t0);
    st.issue_classic(&cfg, APP, t0);
    st.stable(&cfg, APP, true, t0, DAY).expect("force");
    assert_ne!(s.access_token, c.access_token);
    assert_eq!(st.check(&c.access_token, t0 + secs(5)), TokenCheck::Valid);
    assert_eq!(st.check(&s.access_token, t0), TokenCheck::Invalid);
}

#[test]
fn validation_order_and_codes() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let mut admit = |endpoint, r: TokenRequest<'_>| st.admit(&cfg, endpoint, &r, DAY);
    let reject = Admission::Reject;
    let base = req(Endpoint::Classic, SECRET);
    assert_eq!(
        admit(
            Endpoint::Classic,
            TokenRequest {
                grant_type: Some("x"),
                ..base
            }
        ),
        reject(WxError::INVALID_GRANT_TYPE)
    );
    let base = req(Endpoint::Classic, SECRET);
    assert_eq!(
        admit(
            Endpoint::Classic,
            TokenRequest {
                appid: None,
                secret: None,
                ..base
            }
        ),
        reject(WxError::APPID_MISSING)
    );
    let base = req(Endpoint::Classic, SECRET);
    assert_eq!(
        admit(
            Endpoint::Classic,
            TokenRequest {
                appid: Some("nope"),
                secret: None,
                ..base
            }
        ),
        reject(WxError::SECRET_MISSING)
    );
    let base = req(Endpoint::Classic, SECRET);
    assert_eq!(
        admit(
            Endpoint::Classic,
            TokenRequest {
                appid: Some("nope"),
                ..base
            }
        ),
        reject(WxError::INVALID_APPID)
    );
    assert_eq!(
        admit(Endpoint::Classic, req(Endpoint::Classic, "wrong")),
        reject(WxError::INVALID_CREDENTIAL)
    );
    assert_eq!(
        admit(Endpoint::Stable, req(Endpoint::Stable, "wrong")),
        reject(WxError::INVALID_APPSECRET)
    );
    let malformed = TokenRequest {
        malformed: true,
        ..TokenRequest::default()
    };
    assert_eq!(
        admit(Endpoint::Stable, malformed),
        reject(WxError::DATA_FORMAT)
    );
    // Calls naming a known app count under it whatever their outcome.
    let stats = st.stats();
    assert_eq!(stats.app(APP).token_calls, 2);
    assert_eq!(stats.app(APP).stable_token_calls, 1);
    assert_eq!(stats.app(UNKNOWN_APP).token_calls, 3);
    assert_eq!(stats.app(UNKNOWN_APP).stable_token_calls, 1);
}

#[test]
fn quota_counts_validated_calls_per_day() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let ok = Admission::Proceed { hang: false };
    let classic = req(Endpoint::Classic, SECRET);
    for _ in 0..3 {
        assert_eq!(st.admit(&cfg, Endpoint::Classic, &classic, DAY), ok);
    }
    // Wrong secrets do not use quota.
    let wrong = req(Endpoint::Classic, "wrong");
    st.admit(&cfg, Endpoint::Classic, &wrong, DAY);
    assert_eq!(
        st.admit(&cfg, Endpoint::Classic, &classic, DAY),
        Admission::Reject(WxError::DAILY_QUOTA)
    );
    // The stable endpoint has its own quota.
    let stable = req(Endpoint::Stable, SECRET);
    assert_eq!(st.admit(&cfg, Endpoint::Stable, &stable, DAY), ok);
    // Tomorrow, or after a reset, the quota is back.
    assert_eq!(st.admit(&cfg, Endpoint::Classic, &classic, DAY + 1), ok);
    st.reset_quota();
    assert_eq!(st.admit(&cfg, Endpoint::Classic, &classic, DAY + 1), ok);
}

#[test]
fn injected_failures_are_counted_and_charged() {
    let cfg = Config {
        fail_rate: 1.0,
        fail_kinds: vec![FailKind::SystemBusy],
        ..config()
    };
    let mut st = State::new(&cfg);
    let classic = req(Endpoint::Classic, SECRET);
    for _ in 0..3 {
        assert_eq!(
            st.admit(&cfg, Endpoint::Classic, &classic, DAY),
            Admission::Fail(FailKind::SystemBusy)
        );
    }
    assert_eq!(
        st.admit(&cfg, Endpoint::Classic, &classic, DAY),
        Admission::Reject(WxError::DAILY_QUOTA)
    );
    let timeouts = Config {
        fail_rate: 1.0,
        fail_kinds: vec![FailKind::Timeout],
        ..config()
    };
    let mut st2 = State::new(&timeouts);
    assert_eq!(
        st2.admit(&timeouts, Endpoint::Classic, &classic, DAY),
        Admission::Proceed { hang: true }
    );
    assert_eq!(st.stats().app(APP).injected_failures, 3);
    assert_eq!(st2.stats().app(APP).injected_failures, 1);
}

#[test]
fn ordinary_use_counts_calls_and_stale_rejections() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let a = st.issue_classic(&cfg, APP, t0);
    assert_eq!(st.use_token(&a.access_token, t0), Ok(()));
    assert_eq!(
        st.use_token(&a.access_token, t0 + secs(100)),
        Err(WxError::TOKEN_EXPIRED)
    );
    assert_eq!(st.use_token("bogus", t0), Err(WxError::INVALID_CREDENTIAL));
    let stats = st.stats();
    assert_eq!(stats.app(APP).api_calls, 1);
    assert_eq!(stats.app(APP).stale_rejections, 1);
    assert_eq!(stats.app(UNKNOWN_APP).stale_rejections, 1);
}

#[test]
fn long_dead_tokens_are_pruned() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let a = st.issue_classic(&cfg, APP, t0);
    let late = t0 + secs(100) + RETENTION + PRUNE_EVERY;
    assert_eq!(st.check(&a.access_token, late), TokenCheck::Expired);
    let b = st.issue_classic(&cfg, APP, late);
    assert_eq!(st.check(&a.access_token, late), TokenCheck::Invalid);
    assert_eq!(st.check(&b.access_token, late), TokenCheck::Valid);
    assert_eq!(st.tokens.len(), 1);
}

#[test]
fn wechat_day_starts_at_beijing_midnight() {
    let at = |secs| wechat_day(UNIX_EPOCH + Duration::from_secs(secs));
    // 1970-01-01 15:59:59 UTC is 23:59:59 in Beijing; a second later is day 1.
    assert_eq!(at(16 * 3600 - 1), 0);
    assert_eq!(at(16 * 3600), 1);
}
