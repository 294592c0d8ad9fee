//! The access log and the request metrics, through the real binary: one line per request
//! on stdout, and `/metrics` parsed as Prometheus text.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// One sample of Prometheus text: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (version 0.0.4): `# TYPE` lines into `types`, every
/// sample line into a [`Sample`]. Panics on a line that is neither.
fn parse_prometheus(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in `{line}`")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let labels = body
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    (types, samples)
}

/// The value of the one sample named `name` whose labels include all of `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(
        found.len() <= 1,
        "several samples match {name} {labels:?}: {found:?}"
    );
    found.first().map(|s| s.value)
}

async fn scrape(http: &reqwest::Client, base: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    parse_prometheus(&text)
}

async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.expect("sent").status().as_u16()
}

/// The access-log lines logged so far.
fn access_lines(process: &Process) -> Vec<String> {
    process
        .logs
        .lock()
        .expect("logs")
        .iter()
        .filter(|line| line.contains(" access ") && line.contains("route="))
        .cloned()
        .collect()
}

/// Waits (up to 10 s) until at least `n` access lines were logged; the writer thread
/// writes them out once its queue is empty.
async fn wait_for_access_lines(process: &Process, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = access_lines(process);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} access lines, got {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const TOKEN_ROUTE: &str = "/v1/apps/{app}/access_token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_counted_by_route_template_and_logged_once_without_keys_or_tokens() {
    let (_emulator, _dir, config) = emulator_and_config(&Options::default()).await;
    let process = serve(&config).await;
    let http = reqwest::Client::new();
    let base = process.base.clone();

    // Five tokens served, one unknown key, one unknown path, one gateway call with a
    // token this server never issued (in the query string, which must stay out of logs).
    let mut token = String::new();
    for _ in 0..5 {
        let answer: serde_json::Value = http
            .get(format!("{base}/v1/apps/shop/access_token"))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        token = answer["access_token"].as_str().expect("a token").to_owned();
    }
    let unknown_key = "wxt_not_a_configured_key_123";
    assert_eq!(
        status_of(
            http.get(format!("{base}/v1/apps/shop/access_token?min_ttl=5"))
                .bearer_auth(unknown_key)
        )
        .await,
        401
    );
    assert_eq!(
        status_of(http.get(format!("{base}/no/such/path"))).await,
        404
    );
    let foreign = "FOREIGN_TOKEN_never_issued_here_0123456789";
    assert_eq!(
        status_of(http.get(format!(
            "{base}/cgi-bin/user/info?access_token={foreign}&openid=o1"
        )))
        .await,
        200,
        "WeChat-shaped errors are HTTP 200"
    );

    let (types, samples) = scrape(&http, &base).await;
    assert_eq!(types["wxtoken_http_requests_total"], "counter");
    assert_eq!(types["wxtoken_http_request_duration_seconds"], "histogram");
    let requests = |route: &str, status: &str| {
        value(
            &samples,
            "wxtoken_http_requests_total",
            &[("route", route), ("status", status)],
        )
    };
    assert_eq!(requests(TOKEN_ROUTE, "200"), Some(5.0));
    assert_eq!(requests(TOKEN_ROUTE, "401"), Some(1.0));
    assert_eq!(requests("unmatched", "404"), Some(1.0));
    assert_eq!(requests("gateway", "200"), Some(1.0));
    // Labels are templates: no raw path and no query ever becomes a label value.
    for sample in samples
        .iter()
        .filter(|s| s.name.starts_with("wxtoken_http_"))
    {
        let route = &sample.labels["route"];
        assert!(
            !route.contains("shop") && !route.contains('?') && !route.contains("/no/such"),
            "unbounded route label {route}"
        );
    }

    // The histogram: 6 requests on the token route, buckets cumulative up to +Inf.
    let duration = "wxtoken_http_request_duration_seconds";
    let count = value(
        &samples,
        &format!("{duration}_count"),
        &[("route", TOKEN_ROUTE)],
    );
    assert_eq!(count, Some(6.0));
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.name == format!("{duration}_bucket") && s.labels["route"] == TOKEN_ROUTE)
        .map(|s| {
            let le = match s.labels["le"].as_str() {
                "+Inf" => f64::INFINITY,
                le => le.parse().expect("le is a number"),
            };
            (le, s.value)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 5, "configured buckets render: {buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative: {buckets:?}"
    );
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, 6.0)));
    let sum = value(
        &samples,
        &format!("{duration}_sum"),
        &[("route", TOKEN_ROUTE)],
    )
    .expect("a _sum");
    assert!(
        sum > 0.0 && sum < 6.0,
        "six fast requests took {sum} s in all"
    );

    // The metrics move with requests: one more token, one more in both series.
    http.get(format!("{base}/v1/apps/shop/access_token"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("sent");
    let (_, after) = scrape(&http, &base).await;
    assert_eq!(
        value(
            &after,
            "wxtoken_http_requests_total",
            &[("route", TOKEN_ROUTE), ("status", "200")]
        ),
        Some(6.0)
    );
    assert_eq!(
        value(
            &after,
            &format!("{duration}_count"),
            &[("route", TOKEN_ROUTE)]
        ),
        Some(7.0)
    );
    // The first scrape is counted once it has answered.
    assert_eq!(
        value(
            &after,
            "wxtoken_http_requests_total",
            &[("route", "/metrics"), ("status", "200")]
        ),
        Some(1.0)
    );

    // The log: 5 + 1 + 1 + 1 + 1 (scrape) + 1 + ... lines; look at each kind.
    let lines = wait_for_access_lines(&process, 10).await;
    let token_lines: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&format!(" route={TOKEN_ROUTE} ")))
        .collect();
    assert_eq!(token_lines.len(), 7, "{lines:#?}");
    let served = token_lines
        .iter()
        .filter(|l| l.contains("status=200"))
        .collect::<Vec<_>>();
    assert_eq!(served.len(), 6, "{lines:#?}");
    for line in &served {
        assert!(line.contains(" INFO access method=GET route="), "{line}");
        assert!(line.contains(" app=shop "), "{line}");
        assert!(line.contains(" client=order-service "), "{line}");
        assert!(line.contains("latency_us="), "{line}");
    }
    let refused = token_lines
        .iter()
        .find(|l| l.contains("status=401"))
        .expect("the 401 is logged");
    assert!(refused.contains(" app=shop "), "{refused}");
    assert!(
        !refused.contains("client="),
        "no client authenticated: {refused}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" route=unmatched ") && l.contains("status=404")),
        "{lines:#?}"
    );
    let gateway = lines
        .iter()
        .find(|l| l.contains(" route=gateway "))
        .expect("the gateway call is logged");
    assert!(!gateway.contains("app="), "{gateway}");

    let all = process.logs.lock().expect("logs").join("\n");
    for secret in [
        KEY,
        unknown_key,
        foreign,
        token.as_str(),
        "min_ttl",
        "openid",
    ] {
        assert!(
            !all.contains(secret),
            "`{secret}` appears in the log:\n{all}"
        );
    }
}
