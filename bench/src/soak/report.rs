//! The printed account of a run, and its verdict.

use std::time::Duration;

use super::checks::{Check, Upstream};
use super::load::Ctx;
use super::record::Phase;
use super::{EXPIRES_IN, WINDOW};

/// RSS growth beyond this share, last third against first third, is flagged.
const MAX_RSS_GROWTH: f64 = 0.20;

pub struct Report<'a> {
    pub ctx: &'a Ctx,
    pub elapsed: f64,
    pub redis_downtime: Duration,
    pub upstream: &'a [Upstream],
    /// Runtime apps' (upstream token calls, values issued).
    pub runtime: (u64, u64),
    pub durable: &'a [Check],
    /// (seconds into the load, RSS in kB per instance).
    pub rss: &'a [(u64, Vec<u64>)],
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

/// Prints everything; answers whether every check passed.
pub fn print(r: &Report<'_>) -> bool {
    let mut all_ok = true;
    let kinds = r.ctx.rec.kinds();
    let served: u64 = kinds.iter().map(|k| k.served).sum();
    let failed: u64 = kinds.iter().map(|k| k.failed).sum();
    println!();
    println!(
        "soak: {:.0} s of load on 2 instances, {} requests served ({:.0}/s), {} failed",
        r.elapsed,
        served,
        served as f64 / r.elapsed,
        failed
    );
    println!();
    println!(
        "  {:<40} {:>9} {:>7} {:>8} {:>8} {:>9}",
        "requests by kind", "served", "failed", "p50 ms", "p99 ms", "max ms"
    );
    for k in &kinds {
        println!(
            "  {:<40} {:>9} {:>7} {:>8.2} {:>8.2} {:>9.1}",
            k.kind, k.served, k.failed, k.p50, k.p99, k.max
        );
    }

    println!();
    let errors = r.ctx.rec.errors();
    if errors.is_empty() {
        println!("  errors: none");
    } else {
        println!(
            "  {:<40} {:<26} {:<18} {:>6}",
            "errors by kind", "what", "phase", "count"
        );
        for ((kind, what, phase), n) in &errors {
            println!("  {kind:<40} {what:<26} {:<18} {n:>6}", phase.label());
        }
    }
    // Outside the faults nothing may fail; while Redis restarts only admin changes may
    // (the store refuses them, nothing is changed); upstream failures may cost reports
    // and reads of values that had to be fetched, and are shown, not judged.
    let unexpected: u64 = errors
        .iter()
        .filter(|((kind, _, phase), _)| match phase {
            Phase::Normal => true,
            Phase::Redis => !kind.starts_with("admin"),
            Phase::Failures => false,
        })
        .map(|(_, n)| n)
        .sum();
    let ok = unexpected == 0;
    all_ok &= ok;
    println!(
        "  failures outside the fault phases (and, during the Redis restart, other than \
         admin changes): {unexpected}  {}",
        verdict(ok)
    );
    println!(
        "  Redis was unreachable for {:.1} s",
        r.redis_downtime.as_secs_f64()
    );

    println!();
    println!(
        "  upstream, over {:.0} s: ideal = floor(T / P_long) .. ceil(T / P_short) + R per credential,",
        r.elapsed
    );
    println!(
        "  with P_short = {EXPIRES_IN} - {WINDOW} s and P_long = {EXPIRES_IN} - 0.8 x {WINDOW} s (refresh at a random point of the"
    );
    println!(
        "  last 80-100% of the {WINDOW} s window before expiry; WeCom hands its token back until it dies,"
    );
    println!(
        "  so there P = {EXPIRES_IN} s), R = reports answered refreshed. PASS: issued <= high + 1 per credential + injected."
    );
    println!(
        "  {:<34} {:>6} {:>6} {:>9} {:>6} {:>9}  ",
        "credential", "calls", "issued", "injected", "R", "ideal"
    );
    for u in r.upstream {
        let ok = u.ok();
        all_ok &= ok;
        println!(
            "  {:<34} {:>6} {:>6} {:>9} {:>6} {:>4}..{:<4}  {}",
            u.name,
            u.calls,
            u.issued,
            u.injected,
            u.reports,
            u.ideal_low,
            u.ideal_high,
            verdict(ok)
        );
    }
    println!(
        "  runtime apps (put and deleted along the way, not judged): {} calls, {} issued",
        r.runtime.0, r.runtime.1
    );

    println!();
    println!("  RSS (MB) every sample:");
    for (t, kb) in r.rss {
        println!(
            "  {t:>5} s  {}",
            kb.iter()
                .map(|k| format!("{:>7.1}", *k as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join("  ")
        );
    }
    let warm_up = (r.elapsed / 10.0).max(30.0);
    let after: Vec<&(u64, Vec<u64>)> = r.rss.iter().filter(|(t, _)| *t as f64 >= warm_up).collect();
    let third = after.len() / 3;
    for i in 0..r.rss.first().map_or(0, |s| s.1.len()) {
        if third == 0 {
            println!("  instance {}: too few samples for a trend", i + 1);
            continue;
        }
        let mean = |s: &[&(u64, Vec<u64>)]| {
            s.iter().map(|(_, kb)| kb[i] as f64).sum::<f64>() / s.len() as f64 / 1024.0
        };
        let first = mean(&after[..third]);
        let last = mean(&after[after.len() - third..]);
        let growth = last / first - 1.0;
        let ok = growth <= MAX_RSS_GROWTH;
        all_ok &= ok;
        println!(
            "  instance {}: first third {first:.1} MB, last third {last:.1} MB ({:+.1}%, after {warm_up:.0} s of warm-up; flag > {:.0}%)  {}",
            i + 1,
            growth * 100.0,
            MAX_RSS_GROWTH * 100.0,
            verdict(ok)
        );
    }

    println!();
    println!("  durable data:");
    for c in r.durable {
        all_ok &= c.ok;
        println!("  {:<4} {}  {}", verdict(c.ok), c.name, c.detail);
    }
    println!();
    println!(
        "soak: {}",
        if all_ok {
            "all checks passed"
        } else {
            "CHECKS FAILED"
        }
    );
    all_ok
}
