//! Unit tests of WeCom tokens and of the ticket endpoints, driven with explicit
//! instants so that expiries and rolling hours need no sleeping.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::{AppCredentials, WecomCredentials, wecom_key};

const APP: &str = "wxapp";
const SECRET: &str = "s3cret";
const CORP: &str = "wwcorp";
const AGENT: u64 = 1_000_002;
const AGENT_SECRET: &str = "agent-secret";
const OTHER_AGENT: u64 = 1_000_003;
const OTHER_SECRET: &str = "other-secret";
const DAY: u64 = 20_000;

fn config() -> Config {
    Config {
        apps: vec![AppCredentials::new(APP, SECRET)],
        wecom_apps: vec![
            WecomCredentials::new(CORP, AGENT, AGENT_SECRET),
            WecomCredentials::new(CORP, OTHER_AGENT, OTHER_SECRET),
            WecomCredentials::new("wwelse", 7, "foreign-secret"),
        ],
        expires_in: 100,
        quota: 3,
        ticket_expires_in: 50,
        ticket_daily: 2,
        corp_ticket_hourly: 2,
        agent_ticket_hourly: 1,
        ..Config::default()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn gettoken(st: &mut State, cfg: &Config, corpid: &str, secret: &str, now: Instant) -> Call {
    let req = WecomTokenRequest {
        corpid: Some(corpid),
        corpsecret: Some(secret),
    };
    st.wecom_token_call(cfg, &req, now, DAY)
}

fn granted<T: std::fmt::Debug>(call: Call<T>) -> T {
    match call.answer {
        Answer::Grant(value) => value,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn error<T: std::fmt::Debug>(call: Call<T>) -> WxError {
    match call.answer {
        Answer::Error(err) => err,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn wecom_token_is_reused_while_valid_then_replaced() {
    let cfg = Config {
        quota: 10,
        ..config()
    };
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let a = granted(gettoken(&mut st, &cfg, CORP, AGENT_SECRET, t0));
    assert_eq!(a.expires_in, 100);
    let again = granted(gettoken(&mut st, &cfg, CORP, AGENT_SECRET, t0 + secs(30)));
    assert_eq!(
        again,
        Grant {
            expires_in: 70,
            ..a.clone()
        }
    );
    // Another app of the same corp has its own token.
    let other = granted(gettoken(&mut st, &cfg, CORP, OTHER_SECRET, t0));
    assert_ne!(other.access_token, a.access_token);
    let b = granted(gettoken(&mut st, &cfg, CORP, AGENT_SECRET, t0 + secs(100)));
    assert_ne!(b.access_token, a.access_token);
    assert_eq!(b.expires_in, 100);
    assert_eq!(
        st.check(&a.access_token, t0 + secs(100)),
        TokenCheck::Expired
    );
    // A revoked token is replaced on the next fetch.
    st.revoke(&b.access_token, t0 + secs(101));
    let c = granted(gettoken(&mut st, &cfg, CORP, AGENT_SECRET, t0 + secs(101)));
    assert_ne!(c.access_token, b.access_token);
    let stats = st.stats().app(&wecom_key(CORP, AGENT));
    assert_eq!(stats.gettoken_calls, 4);
    assert_eq!(stats.tokens_issued, 3);
}

#[test]
fn wecom_token_validation_order_and_quota() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let mut call = |corpid, corpsecret| {
        let req = WecomTokenRequest { corpid, corpsecret };
        st.wecom_token_call(&cfg, &req, t0, DAY)
    };
    assert_eq!(error(call(None, None)), WxError::CORPID_MISSING);
    assert_eq!(error(call(Some(""), Some("x"))), WxError::CORPID_MISSING);
    assert_eq!(error(call(Some("nope"), None)), WxError::CORPSECRET_MISSING);
    assert_eq!(
        error(call(Some("nope"), Some("x"))),
        WxError::INVALID_CORPID
    );
    assert_eq!(
        error(call(Some(CORP), Some("foreign-secret"))),
        WxError::SECRET_OF_OTHER_CORP
    );
    assert_eq!(
        error(call(Some(CORP), Some("wrong"))),
        WxError::WECOM_INVALID_CREDENTIAL
    );
    // The secret of the corp's other app is that app's, not an error.
    granted(call(Some(CORP), Some(OTHER_SECRET)));
    for _ in 0..3 {
        granted(call(Some(CORP), Some(AGENT_SECRET)));
    }
    assert_eq!(
        error(call(Some(CORP), Some(AGENT_SECRET))),
        WxError::FREQ_LIMIT
    );
    let stats = st.stats();
    assert_eq!(stats.app(UNKNOWN_APP).gettoken_calls, 6);
    assert_eq!(stats.app(&wecom_key(CORP, AGENT)).gettoken_calls, 4);
    assert_eq!(stats.app(&wecom_key(CORP, AGENT)).upstream_token_calls(), 4);
}

#[test]
fn official_tickets_are_new_each_time_and_limited_per_day() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let token = st.issue_classic(&cfg, APP, t0).access_token;
    let jsapi = granted(st.official_ticket(&cfg, Some(&token), Some("jsapi"), t0, DAY));
    assert_eq!(jsapi.expires_in, 50);
    assert_eq!(jsapi.ticket.len(), 86);
    let card = granted(st.official_ticket(&cfg, Some(&token), Some("wx_card"), t0, DAY));
    assert_ne!(jsapi.ticket, card.ticket);
    assert_eq!(st.current_ticket(APP, "jsapi"), Some(jsapi.ticket.clone()));
    assert_eq!(st.current_ticket(APP, "wx_card"), Some(card.ticket.clone()));
    // Bad types are refused before the quota is charged.
    let bad = st.official_ticket(&cfg, Some(&token), Some("agent_config"), t0, DAY);
    assert_eq!(error(bad), WxError::INVALID_ARGS);
    let over = st.official_ticket(&cfg, Some(&token), Some("jsapi"), t0, DAY);
    assert_eq!(error(over), WxError::DAILY_QUOTA);
    let next_day = st.official_ticket(&cfg, Some(&token), Some("jsapi"), t0, DAY + 1);
    let newer = granted(next_day);
    // The earlier ticket lives on until its own expiry.
    assert_eq!(
        st.check_ticket(&jsapi.ticket, t0 + secs(49)),
        TokenCheck::Valid
    );
    assert_eq!(
        st.check_ticket(&jsapi.ticket, t0 + secs(50)),
        TokenCheck::Expired
    );
    assert_eq!(st.check_ticket("never", t0), TokenCheck::Invalid);
    assert_eq!(st.current_ticket(APP, "jsapi"), Some(newer.ticket));
    let stats = st.stats().app(APP);
    assert_eq!(stats.ticket_calls, 5);
    assert_eq!(stats.tickets_issued, 3);
}

#[test]
fn ticket_endpoints_check_the_token_family() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let official = st.issue_classic(&cfg, APP, t0).access_token;
    let wecom = granted(gettoken(&mut st, &cfg, CORP, AGENT_SECRET, t0)).access_token;
    let corp = WecomTicket::Corp;
    assert_eq!(
        error(st.wecom_ticket(&cfg, corp, Some(&official), None, t0)),
        WxError::WECOM_INVALID_TOKEN
    );
    assert_eq!(
        error(st.official_ticket(&cfg, Some(&wecom), Some("jsapi"), t0, DAY)),
        WxError::INVALID_CREDENTIAL
    );
    assert_eq!(
        error(st.wecom_ticket(&cfg, corp, None, None, t0)),
        WxError::TOKEN_MISSING
    );
    assert_eq!(
        error(st.wecom_ticket(&cfg, corp, Some(&wecom), None, t0 + secs(100))),
        WxError::TOKEN_EXPIRED
    );
    assert_eq!(
        error(st.official_ticket(&cfg, Some(&official), Some("jsapi"), t0 + secs(100), DAY)),
        WxError::TOKEN_EXPIRED
    );
    // Ordinary APIs take both; a dead token is refused in its family's words.
    assert_eq!(st.use_token(&wecom, t0), Ok(()));
    st.revoke(&wecom, t0);
    st.revoke(&official, t0);
    assert_eq!(st.use_token(&wecom, t0), Err(WxError::WECOM_INVALID_TOKEN));
    assert_eq!(
        st.use_token(&official, t0),
        Err(WxError::INVALID_CREDENTIAL)
    );
    let stats = st.stats();
    let app = stats.app(APP);
    assert_eq!((app.ticket_calls, app.stale_rejections), (2, 3));
    let agent = stats.app(&wecom_key(CORP, AGENT));
    assert_eq!((agent.ticket_calls, agent.stale_rejections), (2, 3));
    assert_eq!(agent.api_calls, 1);
    assert_eq!(stats.app(UNKNOWN_APP).ticket_calls, 1);
}

#[test]
fn wecom_ticket_limits_roll_per_corp_and_per_app() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let a = granted(gettoken(&mut st, &cfg, CORP, AGENT_SECRET, t0)).access_token;
    let b = granted(gettoken(&mut st, &cfg, CORP, OTHER_SECRET, t0)).access_token;
    let (corp, agent) = (WecomTicket::Corp, WecomTicket::Agent);
    let kind = Some("agent_config");
    // Two corp tickets an hour for the whole corp, whichever app asks.
    let first = granted(st.wecom_ticket(&cfg, corp, Some(&a), None, t0));
    let second = granted(st.wecom_ticket(&cfg, corp, Some(&b), None, t0 + secs(10)));
    assert_ne!(first.ticket, second.ticket);
    assert_eq!(
        error(st.wecom_ticket(&cfg, corp, Some(&a), None, t0 + secs(20))),
        WxError::FREQ_LIMIT
    );
    // A WeCom app's "jsapi" ticket is its corp's, whoever fetched it.
    let key_a = wecom_key(CORP, AGENT);
    assert_eq!(st.current_ticket(&key_a, "jsapi"), Some(second.ticket));
    // One agent ticket an hour per app; a wrong type is refused first.
    assert_eq!(
        error(st.wecom_ticket(&cfg, agent, Some(&a), Some("jsapi"), t0)),
        WxError::INVALID_ARGS
    );
    let agent_a = granted(st.wecom_ticket(&cfg, agent, Some(&a), kind, t0));
    granted(st.wecom_ticket(&cfg, agent, Some(&b), kind, t0));
    assert_eq!(
        error(st.wecom_ticket(&cfg, agent, Some(&a), kind, t0 + secs(30))),
        WxError::FREQ_LIMIT
    );
    assert_eq!(
        st.current_ticket(&key_a, "agent_config"),
        Some(agent_a.ticket)
    );
    assert_eq!(st.current_ticket(&key_a, "wx_card"), None);
    // An hour after the first call, one corp ticket is free again; not two.
    let later = t0 + secs(3600);
    let a = granted(gettoken(&mut st, &cfg, CORP, AGENT_SECRET, later)).access_token;
    granted(st.wecom_ticket(&cfg, corp, Some(&a), None, later));
    assert_eq!(
        error(st.wecom_ticket(&cfg, corp, Some(&a), None, later)),
        WxError::FREQ_LIMIT
    );
    granted(st.wecom_ticket(&cfg, agent, Some(&a), kind, later));
    // reset_quota empties the windows.
    st.reset_quota();
    granted(st.wecom_ticket(&cfg, corp, Some(&a), None, later));
    let stats = st.stats().app(&key_a);
    assert_eq!(stats.ticket_calls, 9);
    assert_eq!(stats.tickets_issued, 5);
}

#[test]
fn injected_failures_apply_to_tickets() {
    let cfg = Config {
        fail_rate: 1.0,
        fail_kinds: vec![FailKind::SystemBusy],
        ..config()
    };
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let token = st.issue_classic(&cfg, APP, t0).access_token;
    let call = st.official_ticket(&cfg, Some(&token), Some("jsapi"), t0, DAY);
    assert_eq!(call.answer, Answer::Injected(FailKind::SystemBusy));
    let hang = Config {
        fail_kinds: vec![FailKind::Timeout],
        ..cfg.clone()
    };
    let call = st.official_ticket(&hang, Some(&token), Some("jsapi"), t0, DAY);
    assert!(call.hang);
    granted(call);
    let stats = st.stats().app(APP);
    assert_eq!((stats.injected_failures, stats.tickets_issued), (2, 1));
}

#[test]
fn long_expired_tickets_are_pruned() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let token = st.issue_classic(&cfg, APP, t0).access_token;
    let old = granted(st.official_ticket(&cfg, Some(&token), Some("jsapi"), t0, DAY));
    let late = t0 + secs(50) + RETENTION + PRUNE_EVERY;
    assert_eq!(st.check_ticket(&old.ticket, late), TokenCheck::Expired);
    st.issue_classic(&cfg, APP, late);
    assert_eq!(st.check_ticket(&old.ticket, late), TokenCheck::Invalid);
    assert!(st.tickets.is_empty());
}
