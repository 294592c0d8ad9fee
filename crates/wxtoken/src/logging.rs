//! The binary's log output: tracing's text format on stdout, written by one thread.
//!
//! A request appends its formatted access-log line to a shared buffer (a copy under an
//! uncontended lock: no allocation, no system call). The writer thread takes the whole
//! buffer every 50 ms, or as soon as 64 KiB have gathered, and writes it with one
//! `write(2)`; with nothing to write it parks until the next line. So a request never
//! waits on stdout, a busy second costs a few hundred writes instead of one per request,
//! and a line wakes the writer only after a quiet spell. The 64 KiB bound keeps the
//! buffer in the CPU's cache and each write short: gathering 50 ms of a busy server
//! (about a megabyte) made every line's copy a cache miss and every write a pause of
//! the server's threads long enough to show in its tail latency. If stdout stops taking lines, the buffer stops at 8 MiB and further lines are
//! dropped and counted in `wxtoken_log_lines_dropped_total`.
//!
//! [`Text`] formats every event as tracing's default text format does, except the access
//! log's lines, which it writes by hand (same timestamp and level columns, then logfmt
//! fields): the default format costs about half a microsecond a line, most of it in
//! `core::fmt` and colour handling, and the access log runs once per request.
//!
//! With plain (uncoloured) output, [`NonBlocking::take_access_log`] goes further: the
//! access layer writes its line straight into the writer's buffer ([`log_access`]),
//! the same bytes [`Text`] would write, without building a tracing event. Dispatching an
//! event with seven fields through the subscriber cost more than formatting the line
//! (2,600 of the 3,150 instructions the access log added to a request, under callgrind).
//! `RUST_LOG` still decides whether the line is written: the layer asks tracing once per
//! request whether `wxtoken::access` is enabled.

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime};

use time::OffsetDateTime;
use time::macros::format_description;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::http::access;

/// How often the writer takes what has gathered: the most a line waits under load.
const GATHER: Duration = Duration::from_millis(50);
/// Bytes after which the writer is woken rather than left to its gathering time.
const WRITE_AT: usize = 64 * 1024;
/// Bytes that may wait for the writer; more are dropped rather than slowing requests.
const MAX_PENDING: usize = 8 * 1024 * 1024;

/// Lines dropped because the writer could not keep up.
pub const DROPPED_TOTAL: &str = "wxtoken_log_lines_dropped_total";

/// What the request threads and the writer thread share.
#[derive(Debug, Default)]
struct Shared {
    /// Lines not yet taken by the writer.
    pending: Mutex<Vec<u8>>,
    /// Set by the writer before it parks; the next line unparks it.
    idle: AtomicBool,
    /// Set by the guard: write what is left and stop.
    stop: AtomicBool,
    writer: OnceLock<Thread>,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic mid-append leaves at worst a partial line: keep going.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake_writer(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    /// Swaps the pending lines into `spare` and writes them; false if there were none.
    fn write_pending(&self, spare: &mut Vec<u8>, out: &mut impl Write) -> bool {
        std::mem::swap(&mut *self.pending(), spare);
        if spare.is_empty() {
            return false;
        }
        // Nowhere to report a failed write to stdout; the next lines try again.
        let _ = out.write_all(spare).and_then(|()| out.flush());
        spare.clear();
        true
    }
}

/// Hands lines to the writer thread; give it to `tracing_subscriber::fmt().with_writer`.
#[derive(Debug, Clone)]
pub struct NonBlocking {
    shared: Arc<Shared>,
}

/// Writes what is left and stops the writer thread when dropped: keep it alive in `main`
/// until the end.
#[derive(Debug)]
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread on stdout.
pub fn stdout() -> io::Result<(NonBlocking, FlushGuard)> {
    let shared = Arc::new(Shared::default());
    let theirs = shared.clone();
    let thread = std::thread::Builder::new()
        .name("wxtoken-log".into())
        .spawn(move || write_until_stopped(&theirs, &mut io::stdout(), GATHER))?;
    let _ = shared.writer.set(thread.thread().clone());
    Ok((
        NonBlocking {
            shared: shared.clone(),
        },
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

/// The writer thread's loop; `gather` is how long it lets lines gather after a write.
fn write_until_stopped(shared: &Shared, out: &mut impl Write, gather: Duration) {
    let mut spare = Vec::new();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            shared.write_pending(&mut spare, out);
            return;
        }
        if shared.write_pending(&mut spare, out) {
            // Woken early by a line that filled WRITE_AT (or spuriously: harmless).
            std::thread::park_timeout(gather);
            continue;
        }
        // Nothing came in a whole gathering time: park until a line arrives. A line
        // appended after `idle` is set either is seen by the check below or unparks us.
        shared.idle.store(true, Ordering::SeqCst);
        if shared.pending().is_empty() && !shared.stop.load(Ordering::SeqCst) {
            std::thread::park();
        }
        shared.idle.store(false, Ordering::SeqCst);
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake_writer();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One log line on its way to the writer thread.
#[derive(Debug)]
pub struct Line<'a> {
    shared: &'a Shared,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (appended, filled) = {
            let mut pending = self.shared.pending();
            let before = pending.len();
            let fits = before + buf.len() <= MAX_PENDING;
            if fits {
                pending.extend_from_slice(buf);
            }
            (fits, before < WRITE_AT && WRITE_AT <= pending.len())
        };
        if !appended {
            metrics::counter!(DROPPED_TOTAL).increment(1);
        } else if filled
            || (self.shared.idle.load(Ordering::SeqCst)
                && self.shared.idle.swap(false, Ordering::SeqCst))
        {
            self.shared.wake_writer();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where access lines go when they skip tracing: set once, by the binary's log set-up.
static ACCESS_SINK: OnceLock<Arc<Shared>> = OnceLock::new();

impl NonBlocking {
    /// Sends the access log's lines straight to this writer from now on (for the process),
    /// rather than as tracing events. Only for plain text output: a coloured terminal
    /// keeps tracing's own look for every line.
    pub fn take_access_log(&self) {
        let _ = ACCESS_SINK.set(self.shared.clone());
    }
}

/// One access-log line's fields.
#[derive(Debug)]
pub struct AccessLine<'a> {
    pub method: &'a str,
    pub route: &'a str,
    pub app: Option<&'a str>,
    pub client: Option<&'a str>,
    pub status: u16,
    pub latency_us: u64,
    /// When the response was ready (the line's timestamp).
    pub at: Instant,
}

/// Logs `line`: straight to the writer thread's buffer when the binary's writer took the
/// access log, formatted as [`Text`] formats the access log's event (`<timestamp>  INFO
/// access method=.. route=.. [app=..] [client=..] status=.. latency_us=..`); otherwise
/// (a library user, a test) as that tracing event.
pub fn log_access(line: &AccessLine<'_>) {
    if !write_access(line) {
        trace_access(line);
    }
}

/// The access line as a tracing event.
fn trace_access(line: &AccessLine<'_>) {
    tracing::info!(
        target: access::TARGET,
        method = line.method,
        route = line.route,
        app = line.app,
        client = line.client,
        status = line.status,
        latency_us = line.latency_us,
        "access"
    );
}

/// Writes `line` to the writer thread's buffer; false, writing nothing, when no writer
/// took the access log.
fn write_access(line: &AccessLine<'_>) -> bool {
    let Some(shared) = ACCESS_SINK.get() else {
        return false;
    };
    thread_local! {
        static LINE: RefCell<String> = const { RefCell::new(String::new()) };
    }
    LINE.with_borrow_mut(|out| {
        out.clear();
        format_access(out, line);
        // Appending to the buffer cannot fail; a full buffer drops and counts the line.
        let _ = Line { shared }.write(out.as_bytes());
    });
    true
}

fn format_access(out: &mut String, line: &AccessLine<'_>) {
    write_time(out, wall_time_of(line.at));
    out.push_str("  INFO access method=");
    push_value(out, line.method);
    out.push_str(" route=");
    push_value(out, line.route);
    if let Some(app) = line.app {
        out.push_str(" app=");
        push_value(out, app);
    }
    if let Some(client) = line.client {
        out.push_str(" client=");
        push_value(out, client);
    }
    out.push_str(" status=");
    out.push_str(itoa::Buffer::new().format(line.status));
    out.push_str(" latency_us=");
    out.push_str(itoa::Buffer::new().format(line.latency_us));
    out.push('\n');
}

/// A logfmt value: bare when it is made of URL-safe characters, quoted otherwise.
fn push_value(out: &mut String, value: &str) {
    /// The bytes a bare value may hold.
    const PLAIN: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            table[b] = c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    b'-' | b'_' | b'.' | b':' | b'/' | b'{' | b'}' | b'*' | b'@'
                );
            b += 1;
        }
        table
    };
    if !value.is_empty() && value.bytes().all(|b| PLAIN[usize::from(b)]) {
        out.push_str(value);
    } else {
        // Writing to a String cannot fail.
        let _ = write!(out, "{value:?}");
    }
}

impl<'a> MakeWriter<'a> for NonBlocking {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            shared: &self.shared,
        }
    }
}

/// tracing's text format, with the access log's lines written without `core::fmt`
/// where it can be avoided. Wraps the format used for every other event.
#[derive(Debug)]
pub struct Text<F> {
    pub inner: F,
}

impl<S, N, F> FormatEvent<S, N> for Text<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // With colours (a person at a terminal) every line keeps the default look.
        if meta.target() != access::TARGET || writer.has_ansi_escapes() {
            return self.inner.format_event(ctx, writer, event);
        }
        // The line is put together in a reused buffer and handed over in one write: the
        // writer is a `dyn fmt::Write`, and a call per piece costs more than the copy.
        thread_local! {
            static LINE: RefCell<String> = const { RefCell::new(String::new()) };
        }
        LINE.with_borrow_mut(|line| {
            line.clear();
            write_timestamp(line);
            line.push_str(match *meta.level() {
                Level::ERROR => " ERROR ",
                Level::WARN => "  WARN ",
                Level::INFO => "  INFO ",
                Level::DEBUG => " DEBUG ",
                Level::TRACE => " TRACE ",
            });
            event.record(&mut Logfmt { out: line });
            line.push('\n');
            writer.write_str(line)
        })
    }
}

/// The wall-clock time of `at`: read from the system clock at most once a second per
/// thread and counted from there on the monotonic clock, so an access line, whose
/// request already read the monotonic clock for its latency, reads no clock of its own.
fn wall_time_of(at: Instant) -> Duration {
    thread_local! {
        static BASE: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
    }
    BASE.with(|base| {
        if let Some((instant, wall)) = base.get() {
            if let Some(since) = at.checked_duration_since(instant) {
                if since < Duration::from_secs(1) {
                    return wall + since;
                }
            }
        }
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        base.set(Some((at, wall)));
        wall
    })
}

/// `2026-11-28T15:21:27.123456Z` for now, as tracing's default timer writes it.
fn write_timestamp(out: &mut String) {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    write_time(out, since_epoch);
}

/// `since_epoch` as `2026-11-28T15:21:27.123456Z`; the part up to the second is
/// formatted once a second per thread.
fn write_time(out: &mut String, since_epoch: Duration) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let secs = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(second, prefix)| {
        if *second != secs || prefix.is_empty() {
            prefix.clear();
            let at = i64::try_from(secs)
                .ok()
                .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
            prefix.push_str(&at.format(format).unwrap_or_default());
            *second = secs;
        }
        out.push_str(prefix);
    });
    // 1_000_000 + micros has seven digits; the last six are the zero-padded fraction.
    let fraction = 1_000_000 + since_epoch.subsec_micros();
    out.push('.');
    out.push_str(&itoa::Buffer::new().format(fraction)[1..]);
    out.push('Z');
}

/// Writes an event's fields as logfmt: the message first as it is, then ` name=value`,
/// with a string value bare when it is made of URL-safe characters and quoted otherwise.
struct Logfmt<'l> {
    out: &'l mut String,
}

impl Logfmt<'_> {
    fn name(&mut self, field: &Field) {
        self.out.push(' ');
        self.out.push_str(field.name());
        self.out.push('=');
    }
}

impl Visit for Logfmt<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            return self.out.push_str(value);
        }
        self.name(field);
        push_value(self.out, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.name(field);
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.name(field);
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() != "message" {
            self.name(field);
        }
        let _ = write!(self.out, "{value:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_written_in_order_and_whatever_is_pending_at_stop() {
        let writer = NonBlocking {
            shared: Arc::default(),
        };
        for n in 0..5 {
            // The fmt layer writes each line with one `write_all`.
            let line = format!("line {n}\n");
            writer
                .make_writer()
                .write_all(line.as_bytes())
                .expect("queued");
        }
        writer.shared.stop.store(true, Ordering::SeqCst);
        let mut out = Vec::new();
        write_until_stopped(&writer.shared, &mut out, GATHER);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "line 0\nline 1\nline 2\nline 3\nline 4\n"
        );
    }

    #[test]
    fn a_full_buffer_drops_the_line_instead_of_blocking() {
        let writer = NonBlocking {
            shared: Arc::default(),
        };
        let big = vec![b'x'; MAX_PENDING - 2];
        writer.make_writer().write_all(&big).expect("queued");
        let dropped = writer.make_writer().write_all(b"dropped\n");
        assert!(
            dropped.is_ok(),
            "a full buffer never blocks or fails the caller"
        );
        assert_eq!(writer.shared.pending().len(), MAX_PENDING - 2);
    }

    #[test]
    fn a_line_after_a_quiet_spell_wakes_the_parked_writer() {
        let (writer, guard) = {
            let shared = Arc::new(Shared::default());
            let out = Arc::new(Mutex::new(Vec::new()));
            let (theirs, sink) = (shared.clone(), out.clone());
            let thread = std::thread::spawn(move || {
                let mut buf = Vec::new();
                write_until_stopped(&theirs, &mut buf, GATHER);
                sink.lock().expect("sink").extend(buf);
            });
            let _ = shared.writer.set(thread.thread().clone());
            (NonBlocking { shared }, (thread, out))
        };
        // Wait (with a deadline) until the writer has parked.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !writer.shared.idle.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never idled"
            );
            std::thread::yield_now();
        }
        writer.make_writer().write_all(b"wake\n").expect("queued");
        // The writer takes the line without a stop signal.
        while !writer.shared.pending().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the parked writer slept on"
            );
            std::thread::yield_now();
        }
        writer.shared.stop.store(true, Ordering::SeqCst);
        writer.shared.wake_writer();
        let (thread, out) = guard;
        thread.join().expect("writer thread");
        assert_eq!(out.lock().expect("out").as_slice(), b"wake\n");
    }

    #[test]
    fn lines_past_write_at_are_written_without_waiting_out_the_gathering_time() {
        /// Written to by the writer thread, read by the test.
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().expect("sink").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let shared = Arc::new(Shared::default());
        let sink = Sink::default();
        let (theirs, mut out) = (shared.clone(), sink.clone());
        // A gathering time no test waits out: only the WRITE_AT wake-up can write the
        // second batch.
        let thread =
            std::thread::spawn(move || write_until_stopped(&theirs, &mut out, Duration::MAX));
        let _ = shared.writer.set(thread.thread().clone());
        let writer = NonBlocking { shared };
        let written = |len: usize| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while sink.0.lock().expect("sink").len() < len {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} of {len} bytes written",
                    sink.0.lock().expect("sink").len()
                );
                std::thread::yield_now();
            }
        };
        // The first line wakes the idle writer, which writes it and starts gathering.
        writer.make_writer().write_all(b"first\n").expect("queued");
        written(6);
        // Just enough lines to cross WRITE_AT: the write that crossing wakes takes all
        // of them, with no gathering time to wait out.
        let line = [b'x'; 99];
        for _ in 0..WRITE_AT.div_ceil(line.len()) {
            writer.make_writer().write_all(&line).expect("queued");
        }
        written(6 + WRITE_AT);
        writer.shared.stop.store(true, Ordering::SeqCst);
        writer.shared.wake_writer();
        thread.join().expect("writer thread");
    }

    #[test]
    fn an_access_line_time_is_the_wall_clock_counted_on_the_monotonic_one() {
        let first = Instant::now();
        let wall = wall_time_of(first);
        let system = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970");
        assert!(
            system.abs_diff(wall) < Duration::from_secs(1),
            "{wall:?} vs {system:?}"
        );
        // Within the second, later instants are counted from the first reading exactly.
        let later = first + Duration::from_millis(250);
        assert_eq!(wall_time_of(later), wall + Duration::from_millis(250));
        // Past it, or before the base, the system clock is read again.
        let much_later = first + Duration::from_secs(5);
        let reread = wall_time_of(much_later);
        assert!(
            reread.abs_diff(system) < Duration::from_secs(1),
            "{reread:?}"
        );
    }

    #[test]
    fn the_direct_access_line_is_the_line_the_tracing_event_makes() {
        let writer = NonBlocking {
            shared: Arc::default(),
        };
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .event_format(Text {
                    inner: tracing_subscriber::fmt::format().with_target(false),
                })
                .with_writer(writer.clone())
                .finish(),
        );
        let cases = [
            AccessLine {
                method: "GET",
                route: "/v1/apps/{app}/access_token",
                app: Some("shop"),
                client: Some("order-service"),
                status: 200,
                latency_us: 42,
                at: Instant::now(),
            },
            AccessLine {
                method: "POST",
                route: "gateway",
                app: None,
                client: None,
                status: 404,
                latency_us: 0,
                at: Instant::now(),
            },
            AccessLine {
                method: "GET",
                route: "/v1/apps/{app}",
                app: Some("a b\"c"),
                client: None,
                status: 401,
                latency_us: u64::MAX,
                at: Instant::now(),
            },
        ];
        for line in &cases {
            writer.shared.pending().clear();
            tracing::dispatcher::with_default(&dispatch, || trace_access(line));
            let traced = String::from_utf8(writer.shared.pending().clone()).expect("utf-8");
            let mut direct = String::new();
            format_access(&mut direct, line);
            // Everything after the timestamp is the same.
            assert_eq!(
                traced.split_once(' ').map(|(_, rest)| rest),
                direct.split_once(' ').map(|(_, rest)| rest),
                "{line:?}"
            );
        }
    }

    #[test]
    fn an_access_line_is_timestamp_level_message_and_logfmt_fields() {
        let writer = NonBlocking {
            shared: Arc::default(),
        };
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(Text {
                inner: tracing_subscriber::fmt::format().with_target(false),
            })
            .with_writer(writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: access::TARGET,
                method = %"GET",
                route = "/v1/apps/{app}/access_token",
                app = Some("shop"),
                client = None::<&str>,
                note = "two words",
                status = 200_u64,
                latency_us = 42_u64,
                "access"
            );
        });
        let line = String::from_utf8(writer.shared.pending().clone()).expect("utf-8");
        let (timestamp, rest) = line.split_once(' ').expect("a timestamp first");
        assert_eq!(
            timestamp.len(),
            "2026-11-28T15:21:27.123456Z".len(),
            "{line}"
        );
        assert!(
            timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
            "{line}"
        );
        assert_eq!(
            rest,
            " INFO access method=GET route=/v1/apps/{app}/access_token app=shop \
             note=\"two words\" status=200 latency_us=42\n"
        );
    }
}
