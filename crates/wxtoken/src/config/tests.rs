//! Configuration tests: defaults, the environment, and errors that name their key.

use secrecy::ExposeSecret;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

const MINIMAL: &str = r#"
    [[apps]]
    id = "shop"
    appid = "wx0123456789abcdef"
    secret = "s3cret"
    [[clients]]
    name = "svc"
    key = "wxt_dev_only_plaintext"
    apps = ["shop"]
    scopes = ["read", "invalidate"]
"#;

fn err(text: &str) -> String {
    Settings::from_toml_with_env(text, &no_env)
        .expect_err("config should be rejected")
        .to_string()
}

#[test]
fn defaults_fill_what_is_left_out() {
    let s = Settings::from_toml_with_env(MINIMAL, &no_env).expect("valid");
    assert_eq!(s.server.listen.to_string(), "127.0.0.1:7200");
    assert_eq!(s.apps[0].mode(), Some(TokenMode::Stable));
    assert_eq!(s.keeper.refresh_ahead, Duration::from_secs(600));
    assert_eq!(s.keeper.force_refresh_daily_budget, 10);
    assert_eq!(s.upstream.api_base, "https://api.weixin.qq.com");
    assert!(matches!(s.store, StoreSettings::Sqlite { .. }));
    assert_eq!(
        s.clients[0].key_sha256,
        key_digest("wxt_dev_only_plaintext")
    );
}

#[test]
fn secrets_come_from_the_environment() {
    let text = MINIMAL.replace("\"s3cret\"", "\"${SHOP_SECRET}\"");
    let env = |n: &str| (n == "SHOP_SECRET").then(|| "from-env".to_owned());
    let s = Settings::from_toml_with_env(&text, &env).expect("valid");
    assert_eq!(s.apps[0].secret.expose_secret(), "from-env");
    assert!(err(&text).contains("apps[0].secret"));
    assert!(err(&text).contains("SHOP_SECRET is not set"));
}

#[test]
fn wecom_apps_need_corpid_and_agentid() {
    let wecom = r#"
        [[apps]]
        id = "hr"
        kind = "wecom"
        corpid = "ww0123456789abcdef"
        agentid = 1000002
        secret = "s"
    "#;
    let s = Settings::from_toml_with_env(wecom, &no_env).expect("valid");
    assert_eq!(s.apps[0].kind, AppKind::Wecom { agentid: 1000002 });
    assert_eq!(s.apps[0].appid, "ww0123456789abcdef");
    assert!(err(&wecom.replace("agentid = 1000002", "")).contains("apps[0].agentid"));
    assert!(err(&wecom.replace("agentid = 1000002", "agentid = -3")).contains("apps[0].agentid"));
    assert!(err(&wecom.replace("corpid = \"ww0123456789abcdef\"", "")).contains("apps[0].corpid"));
    assert!(
        err(&wecom.replace("kind = \"wecom\"", "kind = \"wecom\"\nmode = \"classic\""))
            .contains("apps[0].mode")
    );
    assert!(
        err(&format!("{wecom}\n{}", wecom.replace("\"hr\"", "\"hr2\"")))
            .contains("apps[1].agentid")
    );
}

#[test]
fn bad_values_name_their_key() {
    assert!(err(&format!("{MINIMAL}\n[keeper]\nrefresh_ahead = 3")).contains("refresh_ahead"));
    assert!(err(&MINIMAL.replace("secret = \"s3cret\"", "")).contains("apps[0].secret"));
    assert!(err(&MINIMAL.replace("\"shop\"]", "\"nope\"]")).contains("clients[0].apps"));
    assert!(err(&MINIMAL.replace("\"invalidate\"", "\"write\"")).contains("clients[0].scopes"));
    assert!(err(&format!("{MINIMAL}\nmode2 = 1")).contains("mode2"));
    assert!(
        err(&MINIMAL.replace("id = \"shop\"", "id = \"shop\"\nmode = \"fast\""))
            .contains("apps[0].mode")
    );
    assert!(err(&format!("[server]\nlisten = \"nowhere\"\n{MINIMAL}")).contains("server.listen"));
    assert!(
        err(&format!("[upstream]\napi_base = \"ftp://x\"\n{MINIMAL}"))
            .contains("upstream.api_base")
    );
    assert!(err(&format!("[store]\nkind = \"mysql\"\n{MINIMAL}")).contains("store.kind"));
    assert!(err(&MINIMAL.replace("wxt_dev_only_plaintext", "short")).contains("clients[0].key"));
}

#[test]
fn a_redis_cluster_is_named_or_implied_by_several_nodes() {
    let store = |body: &str| format!("[store]\nkind = \"redis\"\n{body}\n{MINIMAL}");
    let parsed = |body: &str| match Settings::from_toml_with_env(&store(body), &no_env)
        .expect("valid")
        .store
    {
        StoreSettings::Redis {
            url,
            cluster,
            seeds,
            ..
        } => (url, cluster, seeds),
        other => panic!("not redis: {other:?}"),
    };
    let (url, cluster, seeds) = parsed("url = \"redis://10.0.0.1:6379\"");
    assert_eq!(
        (url.as_str(), cluster, seeds.len()),
        ("redis://10.0.0.1:6379", false, 0)
    );
    let (_, cluster, _) = parsed("url = \"redis://10.0.0.1:6379\"\ncluster = true");
    assert!(cluster);
    let (url, cluster, seeds) = parsed("url = \"redis://a:1, redis://b:2\"");
    assert_eq!((url.as_str(), cluster), ("redis://a:1", true));
    assert_eq!(seeds, ["redis://b:2"]);
    assert!(
        err(&store("url = \"redis://a:1,redis://b:2\"\ncluster = false")).contains("store.url")
    );
    assert!(err(&store("url = \"redis://a:1,http://b:2\"")).contains("store.url"));
    assert!(err(&format!("[store]\ncluster = true\n{MINIMAL}")).contains("store.cluster"));
}

#[test]
fn gateway_limits_have_defaults_and_bounds() {
    let s = Settings::from_toml_with_env(MINIMAL, &no_env).expect("valid");
    assert_eq!(s.gateway.max_body_bytes, 20 * 1024 * 1024);
    assert_eq!(s.gateway.retry_body_bytes, 1024 * 1024);
    let gateway = |body: &str| format!("[gateway]\n{body}\n{MINIMAL}");
    assert!(err(&gateway("max_body_bytes = 0")).contains("gateway.max_body_bytes"));
    assert!(
        err(&gateway("max_body_bytes = 10\nretry_body_bytes = 11"))
            .contains("gateway.retry_body_bytes")
    );
    let small =
        Settings::from_toml_with_env(&gateway("max_body_bytes = 1000"), &no_env).expect("valid");
    assert_eq!(
        small.gateway.retry_body_bytes, 1000,
        "never above the maximum"
    );
}

#[test]
fn server_limits_have_defaults_and_bounds() {
    let s = Settings::from_toml_with_env(MINIMAL, &no_env).expect("valid");
    assert_eq!(s.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(s.server.body_read_timeout, Duration::from_secs(30));
    assert_eq!(s.server.max_connections, 10_000);
    let server = |body: &str| format!("[server]\n{body}\n{MINIMAL}");
    let set = Settings::from_toml_with_env(
        &server("header_read_timeout_ms = 250\nbody_read_timeout_ms = 500\nmax_connections = 3"),
        &no_env,
    )
    .expect("valid");
    assert_eq!(set.server.header_read_timeout, Duration::from_millis(250));
    assert_eq!(set.server.body_read_timeout, Duration::from_millis(500));
    assert_eq!(set.server.max_connections, 3);
    for (line, key) in [
        (
            "header_read_timeout_ms = 0",
            "server.header_read_timeout_ms",
        ),
        ("body_read_timeout_ms = 0", "server.body_read_timeout_ms"),
        ("max_connections = 0", "server.max_connections"),
        ("max_connections = 1000001", "server.max_connections"),
    ] {
        assert!(err(&server(line)).contains(key), "{line}");
    }
}

#[test]
fn quota_settings_take_a_percent_or_a_count_and_name_the_key_when_wrong() {
    let s = Settings::from_toml_with_env(MINIMAL, &no_env).expect("valid");
    assert_eq!(s.keeper.quota.daily_budget, DailyBudget::Percent(80));
    assert_eq!(s.keeper.quota.clear_quota_monthly_budget, 10);
    assert!(s.apps[0].quota.daily_budget.is_none());
    assert!(!s.apps[0].quota.auto_clear_quota, "clearing is opt-in");

    let upstream = |line: &str| format!("[upstream]\n{line}\n{MINIMAL}");
    let app = |line: &str| {
        MINIMAL.replace(
            "secret = \"s3cret\"",
            &format!("secret = \"s3cret\"\n{line}"),
        )
    };
    let s =
        Settings::from_toml_with_env(&upstream("daily_budget = \"50%\""), &no_env).expect("valid");
    assert_eq!(s.keeper.quota.daily_budget, DailyBudget::Percent(50));
    let s = Settings::from_toml_with_env(
        &app("daily_budget = 1500\nauto_clear_quota = true"),
        &no_env,
    )
    .expect("valid");
    assert_eq!(s.apps[0].quota.daily_budget, Some(DailyBudget::Calls(1500)));
    assert!(s.apps[0].quota.auto_clear_quota);

    let message = err(&upstream("daily_budget = 0.8"));
    assert!(message.contains("daily_budget"), "{message}");
    for bad in ["\"0%\"", "\"101%\"", "\"80\"", "\"lots\"", "0", "-5"] {
        let message = err(&upstream(&format!("daily_budget = {bad}")));
        assert!(
            message.contains("upstream.daily_budget"),
            "{bad}: {message}"
        );
        let message = err(&app(&format!("daily_budget = {bad}")));
        assert!(message.contains("apps[0].daily_budget"), "{bad}: {message}");
    }
    let message = err(&upstream("clear_quota_monthly_budget = 11"));
    assert!(
        message.contains("upstream.clear_quota_monthly_budget"),
        "{message}"
    );
    assert!(message.contains("WeChat allows 10"), "{message}");
    let wecom = r#"
        [[apps]]
        id = "hr"
        kind = "wecom"
        corpid = "ww0123456789abcdef"
        agentid = 1000002
        secret = "s"
        auto_clear_quota = true
    "#;
    assert!(err(wecom).contains("apps[0].auto_clear_quota"));
}

#[test]
fn a_percent_budget_needs_a_known_limit_and_a_count_does_not() {
    assert_eq!(DailyBudget::Percent(80).calls(Some(2000)), Some(1600));
    assert_eq!(DailyBudget::Percent(80).calls(None), None);
    assert_eq!(DailyBudget::Calls(5).calls(None), Some(5));
}

#[test]
fn alert_hooks_have_defaults_and_errors_name_their_key() {
    let s = Settings::from_toml_with_env(MINIMAL, &no_env).expect("valid");
    assert!(s.keeper.alerts.hooks.is_empty());
    assert_eq!(s.keeper.alerts.expiry_alert, Duration::from_secs(900));

    let text = format!(
        "{MINIMAL}\n[keeper]\nexpiry_alert_secs = 60\n[[alerts]]\nurl = \"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=${{ROBOT}}\"\nformat = \"wecom\"\n[[alerts]]\nurl = \"http://127.0.0.1:9000/hook\"\nmax_per_minute = 5\n"
    );
    let env = |n: &str| (n == "ROBOT").then(|| "robot-key-123".to_owned());
    let s = Settings::from_toml_with_env(&text, &env).expect("valid");
    let hooks = &s.keeper.alerts.hooks;
    assert_eq!(s.keeper.alerts.expiry_alert, Duration::from_secs(60));
    assert_eq!(hooks.len(), 2);
    assert!(hooks[0].url.ends_with("key=robot-key-123"));
    assert_eq!(hooks[0].format, HookFormat::Wecom);
    assert_eq!(hooks[0].max_per_minute, DEFAULT_ALERTS_PER_MINUTE);
    assert_eq!(hooks[1].format, HookFormat::Json);
    assert_eq!(hooks[1].max_per_minute, 5);
    // The robot's key never shows in a debug print of the settings.
    assert!(!format!("{s:?}").contains("robot-key-123"));

    let hook = |body: &str| err(&format!("{MINIMAL}\n[[alerts]]\n{body}\n"));
    assert!(hook("format = \"json\"").contains("`alerts[0].url`: is required"));
    let bad_url = hook("url = \"ftp://robot/secret-key\"");
    assert!(bad_url.contains("`alerts[0].url`"), "{bad_url}");
    assert!(!bad_url.contains("secret-key"), "{bad_url}");
    assert!(hook("url = \"http://h/\"\nformat = \"slack\"").contains("`alerts[0].format`"));
    assert!(hook("url = \"http://h/\"\nmax_per_minute = 0").contains("`alerts[0].max_per_minute`"));
    assert!(hook("url = \"http://h/\"\nchannel = \"x\"").contains("channel"));
    assert!(
        err(&format!("{MINIMAL}\n[keeper]\nexpiry_alert_secs = 0\n"))
            .contains("`keeper.expiry_alert_secs`")
    );
}
