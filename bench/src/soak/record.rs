//! What the run saw: requests served and failed by kind, failures by what they were and
//! in which phase of the run they happened, latencies, and the tokens most recently
//! handed out (which the load reuses as "current" and "previous" tokens).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

/// What the run was doing to the fleet when a request was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Nothing injected: every failure here is a finding.
    Normal = 0,
    /// The emulator fails a share of token and ticket calls (and a few seconds after).
    Failures = 1,
    /// Redis is down, or came back less than a few seconds ago.
    Redis = 2,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Phase::Failures,
            2 => Phase::Redis,
            _ => Phase::Normal,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Phase::Normal => "normal",
            Phase::Failures => "upstream failures",
            Phase::Redis => "redis restart",
        }
    }
}

/// A failed request: its kind, what went wrong (`503 token_unavailable`, `errcode
/// 40014`, `transport: ...`) and the phase.
type ErrorKey = (&'static str, String, Phase);

#[derive(Default)]
struct Tallies {
    served: BTreeMap<&'static str, u64>,
    /// Microseconds per request, per kind (successes and failures alike).
    latencies: BTreeMap<&'static str, Vec<u32>>,
    errors: BTreeMap<ErrorKey, u64>,
}

/// Shared by every task of the run.
pub struct Recorder {
    /// When the load began (the clock of the report's times).
    started: Mutex<Instant>,
    phase: AtomicU8,
    tallies: Mutex<Tallies>,
    /// The last two distinct values handed out per credential, newest first, with
    /// their expiry (unix seconds).
    seen: Mutex<HashMap<&'static str, Vec<(String, u64)>>>,
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            started: Mutex::new(Instant::now()),
            phase: AtomicU8::new(Phase::Normal as u8),
            tallies: Mutex::new(Tallies::default()),
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    pub fn elapsed(&self) -> Duration {
        self.started.lock().expect("clock lock").elapsed()
    }

    /// Restarts the clock (the load begins).
    pub fn start_clock(&self, at: Instant) {
        *self.started.lock().expect("clock lock") = at;
    }

    /// Counts one request of `kind` that began at `began` in phase `at_start`; a failure
    /// is put down to the graver of the phases it began and ended in.
    pub fn record(
        &self,
        kind: &'static str,
        began: Instant,
        at_start: Phase,
        outcome: Result<(), String>,
    ) {
        let micros = u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX);
        let mut t = self.tallies.lock().expect("tallies lock");
        t.latencies.entry(kind).or_default().push(micros);
        match outcome {
            Ok(()) => *t.served.entry(kind).or_default() += 1,
            Err(what) => {
                let phase = at_start.max(self.phase());
                *t.errors.entry((kind, what, phase)).or_default() += 1;
            }
        }
    }

    /// Notes a value handed out for `credential`, expiring at `expires_at` (unix s).
    pub fn saw(&self, credential: &'static str, value: &str, expires_at: u64) {
        let mut seen = self.seen.lock().expect("seen lock");
        let list = seen.entry(credential).or_default();
        if list.first().map(|(v, _)| v.as_str()) != Some(value) {
            list.retain(|(v, _)| v != value);
            list.insert(0, (value.to_owned(), expires_at));
            list.truncate(2);
        }
    }

    /// The newest value seen for `credential` (`previous`: the one before it), with its
    /// expiry.
    pub fn seen(&self, credential: &str, previous: bool) -> Option<(String, u64)> {
        let seen = self.seen.lock().expect("seen lock");
        seen.get(credential)?.get(usize::from(previous)).cloned()
    }

    /// Served and failed counts per kind, with latency p50/p99/max in ms.
    pub fn kinds(&self) -> Vec<KindRow> {
        let t = self.tallies.lock().expect("tallies lock");
        t.latencies
            .iter()
            .map(|(kind, lat)| {
                let mut lat = lat.clone();
                lat.sort_unstable();
                let pick = |q: f64| {
                    let i = ((lat.len() as f64 - 1.0) * q).round() as usize;
                    f64::from(lat.get(i).copied().unwrap_or(0)) / 1000.0
                };
                let failed = t
                    .errors
                    .iter()
                    .filter(|((k, _, _), _)| k == kind)
                    .map(|(_, n)| n)
                    .sum();
                KindRow {
                    kind,
                    served: t.served.get(kind).copied().unwrap_or(0),
                    failed,
                    p50: pick(0.5),
                    p99: pick(0.99),
                    max: pick(1.0),
                }
            })
            .collect()
    }

    /// Every distinct failure, with its count.
    pub fn errors(&self) -> Vec<(ErrorKey, u64)> {
        let t = self.tallies.lock().expect("tallies lock");
        t.errors.iter().map(|(k, n)| (k.clone(), *n)).collect()
    }
}

pub struct KindRow {
    pub kind: &'static str,
    pub served: u64,
    pub failed: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// A v1 answer: Ok if the status is `want`, else `"{status} {error.code}"`.
pub fn v1(status: u16, body: &Value, want: u16) -> Result<(), String> {
    if status == want {
        Ok(())
    } else {
        let code = body["error"]["code"].as_str().unwrap_or("-");
        Err(format!("{status} {code}"))
    }
}

/// A WeChat-shaped answer (facade, gateway): HTTP 200 with no errcode or errcode 0.
pub fn wx(status: u16, body: &Value) -> Result<(), String> {
    if status != 200 {
        return Err(format!("http {status}"));
    }
    match body["errcode"].as_i64().unwrap_or(0) {
        0 => Ok(()),
        code => Err(format!("errcode {code}")),
    }
}
