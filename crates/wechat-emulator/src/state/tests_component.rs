//! Unit tests of the third-party platform: verify tickets, component tokens,
//! authorizations and the authorizers' tokens, driven with explicit instants so that
//! no test sleeps.

use std::time::Duration;

use tokio::time::Instant;

use super::component::{Authorization, AuthorizerGrant, AuthorizerPage};
use super::*;
use crate::{AppCredentials, ComponentCredentials};

const APP: &str = "wxapp";
const APP_SECRET: &str = "app-secret";
const COMPONENT: &str = "wxcomponent";
const SECRET: &str = "component-secret";
const OTHER: &str = "wxother";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const UNIX: u64 = 1_700_000_000;
const DAY: u64 = 20_000;

fn config() -> Config {
    Config {
        apps: vec![AppCredentials::new(APP, APP_SECRET)],
        components: vec![
            ComponentCredentials::new(COMPONENT, SECRET, "tok", KEY),
            ComponentCredentials::new(OTHER, "other-secret", "tok", KEY),
        ],
        component_expires_in: 100,
        authorizer_expires_in: 50,
        overlap: Duration::from_secs(10),
        ..Config::default()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn granted<T: std::fmt::Debug>(call: Call<T>) -> T {
    match call.answer {
        Answer::Grant(value) => value,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn error<T: std::fmt::Debug>(call: Call<T>) -> i64 {
    match call.answer {
        Answer::Error(err) => err.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn token_call(
    st: &mut State,
    cfg: &Config,
    secret: &str,
    ticket: Option<&str>,
    now: Instant,
) -> Call {
    let req = ComponentTokenRequest {
        malformed: false,
        component_appid: Some(COMPONENT),
        component_appsecret: Some(secret),
        component_verify_ticket: ticket,
    };
    st.component_token_call(cfg, &req, now)
}

/// A fresh ticket and the component token it buys.
fn component_token(st: &mut State, cfg: &Config, now: Instant) -> String {
    let ticket = st
        .mint_verify_ticket(COMPONENT, now)
        .expect("known component");
    granted(token_call(st, cfg, SECRET, Some(&ticket), now)).access_token
}

fn auth(token: &str) -> ComponentAuth<'_> {
    ComponentAuth {
        token: Some(token),
        malformed: false,
        component_appid: Some(COMPONENT),
    }
}

fn query_auth(
    st: &mut State,
    cfg: &Config,
    token: &str,
    code: &str,
    now: Instant,
) -> Call<Authorization> {
    st.query_auth_call(cfg, &auth(token), Some(code), now)
}

fn refresh(
    st: &mut State,
    cfg: &Config,
    token: &str,
    authorizer: &str,
    refresh_token: &str,
    now: Instant,
) -> Call<AuthorizerGrant> {
    st.authorizer_token_call(
        cfg,
        &auth(token),
        Some(authorizer),
        Some(refresh_token),
        now,
    )
}

fn list(
    st: &mut State,
    token: &str,
    offset: u64,
    count: u64,
    now: Instant,
) -> Call<AuthorizerPage> {
    st.authorizer_list_call(&auth(token), Some(offset), Some(count), now)
}

fn authorize(st: &mut State, authorizer: &str, now: Instant) -> AuthorizeOutcome {
    st.authorize(COMPONENT, authorizer, None, now, UNIX)
        .expect("known component")
}

#[test]
fn only_the_latest_young_ticket_buys_a_token() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    assert_eq!(error(token_call(&mut st, &cfg, SECRET, None, t0)), 61006);
    assert_eq!(
        error(token_call(&mut st, &cfg, SECRET, Some(""), t0)),
        61006
    );
    let first = st.mint_verify_ticket(COMPONENT, t0).expect("ticket");
    assert!(first.starts_with("ticket@@@"), "{first}");
    let second = st
        .mint_verify_ticket(COMPONENT, t0 + secs(1))
        .expect("ticket");
    assert_eq!(st.current_verify_ticket(COMPONENT), Some(second.clone()));
    // Issued, but no longer the latest: expired. Never issued (or another
    // platform's): invalid.
    assert_eq!(
        error(token_call(&mut st, &cfg, SECRET, Some(&first), t0)),
        61005
    );
    let foreign = st.mint_verify_ticket(OTHER, t0).expect("ticket");
    assert_eq!(
        error(token_call(&mut st, &cfg, SECRET, Some(&foreign), t0)),
        61006
    );
    assert_eq!(
        error(token_call(
            &mut st,
            &cfg,
            SECRET,
            Some("ticket@@@never"),
            t0
        )),
        61006
    );
    let grant = granted(token_call(
        &mut st,
        &cfg,
        SECRET,
        Some(&second),
        t0 + secs(2),
    ));
    assert_eq!(grant.expires_in, 100);
    assert!(grant.access_token.len() >= 80);
    // The same ticket keeps working until it is 12 hours old.
    let almost = t0 + secs(1) + secs(12 * 3600 - 1);
    granted(token_call(&mut st, &cfg, SECRET, Some(&second), almost));
    assert_eq!(
        error(token_call(
            &mut st,
            &cfg,
            SECRET,
            Some(&second),
            almost + secs(1)
        )),
        61005
    );
    let stats = st.stats().component(COMPONENT);
    assert_eq!(stats.component_token_calls, 8);
    assert_eq!(stats.component_tokens_issued, 2);
    assert_eq!(stats.verify_tickets_issued, 2);
}

#[test]
fn component_token_requests_are_validated_like_wechat() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let ticket = st.mint_verify_ticket(COMPONENT, t0).expect("ticket");
    let call = |st: &mut State, req: ComponentTokenRequest<'_>| {
        error(st.component_token_call(&cfg, &req, t0))
    };
    let good = || ComponentTokenRequest {
        malformed: false,
        component_appid: Some(COMPONENT),
        component_appsecret: Some(SECRET),
        component_verify_ticket: Some(&ticket),
    };
    let malformed = ComponentTokenRequest {
        malformed: true,
        ..good()
    };
    assert_eq!(call(&mut st, malformed), 47001);
    let no_appid = ComponentTokenRequest {
        component_appid: None,
        ..good()
    };
    assert_eq!(call(&mut st, no_appid), 41002);
    let no_secret = ComponentTokenRequest {
        component_appsecret: Some(""),
        ..good()
    };
    assert_eq!(call(&mut st, no_secret), 41004);
    let unknown = ComponentTokenRequest {
        component_appid: Some("wxnobody"),
        ..good()
    };
    assert_eq!(call(&mut st, unknown), 61011);
    let wrong_secret = ComponentTokenRequest {
        component_appsecret: Some("wrong"),
        ..good()
    };
    assert_eq!(call(&mut st, wrong_secret), 40125);
    // An app's appid is no platform's.
    let app = ComponentTokenRequest {
        component_appid: Some(APP),
        component_appsecret: Some(APP_SECRET),
        ..good()
    };
    assert_eq!(call(&mut st, app), 61011);
    let stats = st.stats();
    assert_eq!(stats.component(COMPONENT).component_token_calls, 3);
    assert_eq!(stats.component(UNKNOWN_APP).component_token_calls, 3);
}

#[test]
fn a_new_component_token_dooms_the_previous_after_the_overlap() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let a = component_token(&mut st, &cfg, t0);
    let b = component_token(&mut st, &cfg, t0 + secs(5));
    assert_ne!(a, b);
    assert_eq!(st.check(&a, t0 + secs(14)), TokenCheck::Valid);
    assert_eq!(st.check(&a, t0 + secs(15)), TokenCheck::Invalid);
    granted(st.preauthcode_call(&auth(&a), t0 + secs(14)));
    assert_eq!(error(st.preauthcode_call(&auth(&a), t0 + secs(15))), 40001);
    assert_eq!(st.check(&b, t0 + secs(105)), TokenCheck::Expired);
    assert_eq!(error(st.preauthcode_call(&auth(&b), t0 + secs(105))), 42001);
    assert_eq!(st.stats().component(COMPONENT).stale_rejections, 2);
}

#[test]
fn component_calls_check_token_body_and_platform() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let token = component_token(&mut st, &cfg, t0);
    let code = granted(st.preauthcode_call(&auth(&token), t0));
    assert!(code.pre_auth_code.starts_with("preauthcode@@@"));
    assert_eq!(code.expires_in, 1800);
    fn with<'a>(
        token: Option<&'a str>,
        malformed: bool,
        appid: Option<&'a str>,
    ) -> ComponentAuth<'a> {
        ComponentAuth {
            token,
            malformed,
            component_appid: appid,
        }
    }
    let mut call = |a: ComponentAuth<'_>| error(st.preauthcode_call(&a, t0));
    assert_eq!(call(with(None, false, Some(COMPONENT))), 41001);
    assert_eq!(call(with(Some("nope"), false, Some(COMPONENT))), 40001);
    assert_eq!(call(with(Some(&token), true, Some(COMPONENT))), 47001);
    assert_eq!(call(with(Some(&token), false, None)), 41002);
    assert_eq!(call(with(Some(&token), false, Some(OTHER))), 61011);
    // An app's token is no component token.
    let app_token = st.issue_classic(&cfg, APP, t0).access_token;
    assert_eq!(
        error(st.preauthcode_call(&with(Some(&app_token), false, Some(COMPONENT)), t0)),
        40001
    );
    // ... and a component token is no token for the ordinary APIs.
    assert_eq!(st.use_token(&token, t0), Err(WxError::INVALID_CREDENTIAL));
    let stats = st.stats();
    assert_eq!(stats.component(COMPONENT).preauthcode_calls, 4);
    assert_eq!(stats.component(UNKNOWN_APP).preauthcode_calls, 3);
}

#[test]
fn an_authorization_code_works_once_within_the_hour() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let token = component_token(&mut st, &cfg, t0);
    let outcome = authorize(&mut st, "wxa", t0);
    assert!(!outcome.updated);
    assert_eq!(outcome.expires_in, 3600);
    assert!(outcome.authorization_code.starts_with("queryauthcode@@@"));
    let info = granted(query_auth(
        &mut st,
        &cfg,
        &token,
        &outcome.authorization_code,
        t0,
    ));
    assert_eq!(info.authorizer_appid, "wxa");
    assert_eq!(info.grant.expires_in, 50);
    assert_eq!(&*info.func_info, &component::DEFAULT_FUNC_INFO);
    assert!(info.refresh_token.starts_with("refreshtoken@@@"));
    assert_eq!(
        st.refresh_token_of(COMPONENT, "wxa"),
        Some(info.refresh_token)
    );
    assert_eq!(st.check(&info.grant.access_token, t0), TokenCheck::Valid);
    // Used: expired. Never issued: invalid.
    assert_eq!(
        error(query_auth(
            &mut st,
            &cfg,
            &token,
            &outcome.authorization_code,
            t0
        )),
        61010
    );
    assert_eq!(
        error(query_auth(&mut st, &cfg, &token, "queryauthcode@@@x", t0)),
        61009
    );
    assert_eq!(
        error(st.query_auth_call(&cfg, &auth(&token), None, t0)),
        61009
    );
    // An hour later an unused code has expired.
    let late = st
        .authorize(COMPONENT, "wxb", Some(&[1, 15]), t0, UNIX)
        .expect("authorized");
    let token = component_token(&mut st, &cfg, t0 + secs(3600));
    assert_eq!(
        error(query_auth(
            &mut st,
            &cfg,
            &token,
            &late.authorization_code,
            t0 + secs(3600)
        )),
        61010
    );
    let fresh = authorize(&mut st, "wxb", t0 + secs(3600));
    assert!(fresh.updated, "wxb was authorized already");
    let info = granted(query_auth(
        &mut st,
        &cfg,
        &token,
        &fresh.authorization_code,
        t0 + secs(3600),
    ));
    assert_eq!(
        &*info.func_info,
        &[1, 15],
        "a re-authorization keeps the set"
    );
    let stats = st.stats().component(COMPONENT);
    assert_eq!(stats.query_auth_calls, 6);
    assert_eq!(stats.authorizers.tokens_issued, 2);
    assert_eq!(stats.authorized, 2);
}

#[test]
fn every_refresh_rotates_the_refresh_token() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let token = component_token(&mut st, &cfg, t0);
    let code = authorize(&mut st, "wxa", t0).authorization_code;
    let first = granted(query_auth(&mut st, &cfg, &token, &code, t0));
    let second = granted(refresh(
        &mut st,
        &cfg,
        &token,
        "wxa",
        &first.refresh_token,
        t0 + secs(1),
    ));
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.grant.access_token, first.grant.access_token);
    assert_eq!(second.grant.expires_in, 50);
    assert_eq!(
        st.refresh_token_of(COMPONENT, "wxa").as_deref(),
        Some(second.refresh_token.as_str())
    );
    // The old refresh token is dead; the old access token lives out the overlap.
    assert_eq!(
        error(refresh(
            &mut st,
            &cfg,
            &token,
            "wxa",
            &first.refresh_token,
            t0 + secs(2)
        )),
        61023
    );
    assert_eq!(
        error(refresh(&mut st, &cfg, &token, "wxa", "", t0 + secs(2))),
        61023
    );
    assert_eq!(
        st.check(&first.grant.access_token, t0 + secs(10)),
        TokenCheck::Valid
    );
    assert_eq!(
        st.check(&first.grant.access_token, t0 + secs(11)),
        TokenCheck::Invalid
    );
    let third = granted(refresh(
        &mut st,
        &cfg,
        &token,
        "wxa",
        &second.refresh_token,
        t0 + secs(3),
    ));
    assert_eq!(
        st.check(&second.grant.access_token, t0 + secs(13)),
        TokenCheck::Invalid
    );
    assert_eq!(
        st.check(&third.grant.access_token, t0 + secs(52)),
        TokenCheck::Valid
    );
    assert_eq!(
        st.check(&third.grant.access_token, t0 + secs(53)),
        TokenCheck::Expired
    );
    // Never authorized, or missing.
    assert_eq!(
        error(refresh(
            &mut st,
            &cfg,
            &token,
            "wxnobody",
            &third.refresh_token,
            t0
        )),
        61003
    );
    assert_eq!(
        error(st.authorizer_token_call(&cfg, &auth(&token), None, None, t0)),
        41002
    );
    let stats = st.stats().component(COMPONENT);
    assert_eq!(stats.authorizer_token_calls, 6);
    assert_eq!(stats.authorizers.tokens_issued, 3);
}

#[test]
fn without_rotation_the_refresh_token_stays() {
    let cfg = Config {
        rotate_refresh_tokens: false,
        ..config()
    };
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let token = component_token(&mut st, &cfg, t0);
    let code = authorize(&mut st, "wxa", t0).authorization_code;
    let first = granted(query_auth(&mut st, &cfg, &token, &code, t0));
    for _ in 0..3 {
        let next = granted(refresh(
            &mut st,
            &cfg,
            &token,
            "wxa",
            &first.refresh_token,
            t0,
        ));
        assert_eq!(next.refresh_token, first.refresh_token);
    }
}

#[test]
fn reauthorizing_replaces_the_refresh_token() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let token = component_token(&mut st, &cfg, t0);
    let code = authorize(&mut st, "wxa", t0).authorization_code;
    let first = granted(query_auth(&mut st, &cfg, &token, &code, t0));
    let again = authorize(&mut st, "wxa", t0 + secs(1));
    assert!(again.updated);
    let current = st.refresh_token_of(COMPONENT, "wxa").expect("authorized");
    assert_ne!(current, first.refresh_token);
    assert_eq!(
        error(refresh(
            &mut st,
            &cfg,
            &token,
            "wxa",
            &first.refresh_token,
            t0 + secs(2)
        )),
        61023
    );
    let info = granted(query_auth(
        &mut st,
        &cfg,
        &token,
        &again.authorization_code,
        t0 + secs(2),
    ));
    assert_eq!(info.refresh_token, current);
    // The access token from before is still good until its replacement's overlap ends.
    assert_eq!(
        st.check(&first.grant.access_token, t0 + secs(11)),
        TokenCheck::Valid
    );
}

#[test]
fn unauthorizing_kills_refresh_token_tokens_and_codes() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let token = component_token(&mut st, &cfg, t0);
    let code = authorize(&mut st, "wxa", t0).authorization_code;
    let info = granted(query_auth(&mut st, &cfg, &token, &code, t0));
    let next = granted(refresh(
        &mut st,
        &cfg,
        &token,
        "wxa",
        &info.refresh_token,
        t0 + secs(1),
    ));
    let pending = authorize(&mut st, "wxa", t0 + secs(2)).authorization_code;
    assert!(st.unauthorize(COMPONENT, "wxa", t0 + secs(3)));
    assert!(!st.unauthorize(COMPONENT, "wxa", t0 + secs(3)), "only once");
    assert!(!st.unauthorize("wxnobody", "wxa", t0 + secs(3)));
    // Both live access tokens die at once, not after the overlap.
    for dead in [&info.grant.access_token, &next.grant.access_token] {
        assert_eq!(st.check(dead, t0 + secs(3)), TokenCheck::Invalid);
        assert_eq!(
            st.use_token(dead, t0 + secs(3)),
            Err(WxError::INVALID_CREDENTIAL)
        );
    }
    let current = st.refresh_token_of(COMPONENT, "wxa");
    assert_eq!(current, None);
    assert_eq!(
        error(refresh(
            &mut st,
            &cfg,
            &token,
            "wxa",
            &next.refresh_token,
            t0 + secs(4)
        )),
        61003
    );
    assert_eq!(
        error(query_auth(&mut st, &cfg, &token, &pending, t0 + secs(4))),
        61003
    );
    let page = granted(list(&mut st, &token, 0, 100, t0 + secs(4)));
    assert_eq!((page.total_count, page.list.len()), (0, 0));
    assert_eq!(st.stats().component(COMPONENT).authorized, 0);
    // Authorizing again starts afresh.
    let code = authorize(&mut st, "wxa", t0 + secs(5)).authorization_code;
    let info = granted(query_auth(&mut st, &cfg, &token, &code, t0 + secs(5)));
    assert_eq!(
        st.check(&info.grant.access_token, t0 + secs(5)),
        TokenCheck::Valid
    );
}

#[test]
fn the_authorizer_list_pages_in_authorization_order() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let token = component_token(&mut st, &cfg, t0);
    let appids: Vec<String> = (0..7).map(|i| format!("wx{}", 9 - i)).collect();
    for appid in &appids {
        authorize(&mut st, appid, t0);
    }
    assert!(st.unauthorize(COMPONENT, "wx7", t0));
    // Re-authorizing keeps the place.
    authorize(&mut st, "wx9", t0);
    let expected: Vec<&str> = ["wx9", "wx8", "wx6", "wx5", "wx4", "wx3"].to_vec();
    let mut seen = Vec::new();
    for offset in [0, 4] {
        let page = granted(list(&mut st, &token, offset, 4, t0));
        assert_eq!(page.total_count, 6);
        for entry in page.list {
            assert_eq!(
                Some(entry.refresh_token),
                st.refresh_token_of(COMPONENT, &entry.authorizer_appid)
            );
            assert_eq!(entry.auth_time, UNIX);
            seen.push(entry.authorizer_appid);
        }
    }
    assert_eq!(seen, expected);
    let past = granted(list(&mut st, &token, 10, 500, t0));
    assert_eq!((past.total_count, past.list.len()), (6, 0));
    assert_eq!(error(list(&mut st, &token, 0, 501, t0)), 40170);
    assert_eq!(
        error(st.authorizer_list_call(&auth(&token), Some(0), None, t0)),
        40097
    );
    assert_eq!(st.stats().component(COMPONENT).authorizer_list_calls, 5);
}

#[test]
fn authorizer_tokens_work_as_official_tokens() {
    let cfg = Config {
        ticket_daily: 1,
        ..config()
    };
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let token = component_token(&mut st, &cfg, t0);
    let code = authorize(&mut st, "wxa", t0).authorization_code;
    let info = granted(query_auth(&mut st, &cfg, &token, &code, t0));
    let access = info.grant.access_token;
    assert_eq!(st.use_token(&access, t0), Ok(()));
    let ticket = granted(st.official_ticket(&cfg, Some(&access), Some("jsapi"), t0, DAY));
    assert_eq!(st.current_ticket("wxa", "jsapi"), Some(ticket.ticket));
    // Each authorizer has its own daily ticket count.
    assert_eq!(
        error(st.official_ticket(&cfg, Some(&access), Some("wx_card"), t0, DAY)),
        45009
    );
    // Not a WeCom token.
    assert_eq!(
        error(st.wecom_ticket(&cfg, WecomTicket::Corp, Some(&access), None, t0)),
        40014
    );
    st.revoke(&access, t0);
    assert_eq!(st.use_token(&access, t0), Err(WxError::INVALID_CREDENTIAL));
    assert_eq!(
        error(st.official_ticket(&cfg, Some(&access), Some("jsapi"), t0, DAY + 1)),
        40001
    );
    let stats = st.stats();
    let authorizers = &stats.component(COMPONENT).authorizers;
    assert_eq!(authorizers.api_calls, 1);
    assert_eq!(authorizers.ticket_calls, 4);
    assert_eq!(authorizers.tickets_issued, 1);
    assert_eq!(authorizers.stale_rejections, 3);
    // Nothing leaks into the apps' counters.
    assert_eq!(stats.app(APP), AppStats::default());
    assert!(!stats.apps.contains_key("wxa"));
}

#[test]
fn injected_failures_hit_both_token_calls() {
    let cfg = Config {
        fail_rate: 1.0,
        fail_kinds: vec![FailKind::Http500],
        ..config()
    };
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let ticket = st.mint_verify_ticket(COMPONENT, t0).expect("ticket");
    let call = token_call(&mut st, &cfg, SECRET, Some(&ticket), t0);
    assert_eq!(call.answer, Answer::Injected(FailKind::Http500));
    st.knobs.fail_rate = 0.0;
    let token = granted(token_call(&mut st, &cfg, SECRET, Some(&ticket), t0)).access_token;
    let code = authorize(&mut st, "wxa", t0).authorization_code;
    let info = granted(query_auth(&mut st, &cfg, &token, &code, t0));
    st.knobs.fail_rate = 1.0;
    let call = refresh(&mut st, &cfg, &token, "wxa", &info.refresh_token, t0);
    assert_eq!(call.answer, Answer::Injected(FailKind::Http500));
    // Nothing was issued: the refresh token still works.
    assert_eq!(
        st.refresh_token_of(COMPONENT, "wxa"),
        Some(info.refresh_token)
    );
    assert_eq!(st.stats().component(COMPONENT).injected_failures, 2);
}

#[test]
fn a_hundred_thousand_authorizers_keep_stats_small() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let token = component_token(&mut st, &cfg, t0);
    for i in 0..100_000 {
        authorize(&mut st, &format!("wx{i:016}"), t0);
    }
    let page = granted(list(&mut st, &token, 99_900, 500, t0));
    assert_eq!(page.total_count, 100_000);
    assert_eq!(page.list.len(), 100);
    assert_eq!(page.list[0].authorizer_appid, format!("wx{:016}", 99_900));
    let json = serde_json::to_string(&st.stats()).expect("serializes");
    assert!(json.len() < 4096, "{} bytes", json.len());
    assert_eq!(st.stats().component(COMPONENT).authorized, 100_000);
}

#[test]
fn debug_output_keeps_secrets_out() {
    let cfg = config();
    let mut st = State::new(&cfg);
    let t0 = Instant::now();
    let ticket = st.mint_verify_ticket(COMPONENT, t0).expect("ticket");
    authorize(&mut st, "wxa", t0);
    let refresh = st.refresh_token_of(COMPONENT, "wxa").expect("authorized");
    let debug = format!("{st:?} {:?}", cfg.components);
    for secret in [SECRET, KEY, ticket.as_str(), refresh.as_str()] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
}
