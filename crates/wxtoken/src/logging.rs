//! The binary's log output: tracing's text format on stdout, written by one thread.
//!
//! A request formats its access-log line and hands it to a bounded channel; the writer
//! thread wakes for the first line, lets others gather for 50 ms, and writes them all in
//! 64 KiB writes. So a request never waits on stdout, a busy second costs a few large
//! writes instead of one per request, and senders do not wake the writer per line. A full channel (stdout stuck)
//! drops lines rather than slowing requests, and counts them in
//! `wxtoken_log_lines_dropped_total`.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use tracing_subscriber::fmt::MakeWriter;

/// Lines that may wait for the writer thread: a few seconds of a busy server.
const QUEUE_LINES: usize = 64 * 1024;
/// Bytes gathered before a write even if more lines wait.
const WRITE_CHUNK: usize = 64 * 1024;
/// How long the writer lets lines gather after the first: the most a line waits.
const GATHER: std::time::Duration = std::time::Duration::from_millis(50);

/// Lines dropped because the writer could not keep up.
pub const DROPPED_TOTAL: &str = "wxtoken_log_lines_dropped_total";

/// Hands lines to the writer thread; give it to `tracing_subscriber::fmt().with_writer`.
#[derive(Debug, Clone)]
pub struct NonBlocking {
    lines: SyncSender<Vec<u8>>,
}

/// Flushes what is queued and stops the writer thread when dropped: keep it alive in
/// `main` until the end.
#[derive(Debug)]
pub struct FlushGuard {
    lines: SyncSender<Vec<u8>>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread on stdout.
pub fn stdout() -> io::Result<(NonBlocking, FlushGuard)> {
    let (lines, queue) = sync_channel(QUEUE_LINES);
    let thread = std::thread::Builder::new()
        .name("wxtoken-log".into())
        .spawn(move || write_lines(&queue, &mut io::stdout()))?;
    Ok((
        NonBlocking {
            lines: lines.clone(),
        },
        FlushGuard {
            lines,
            thread: Some(thread),
        },
    ))
}

/// The writer thread: waits for a line, lets more gather for [`GATHER`], then writes all
/// that wait in chunks, until an empty line (the guard's stop signal) or every sender is
/// gone. Sleeping rather than waiting on the channel while lines gather is what keeps
/// senders from waking this thread, a futex call and a context switch, once per line.
fn write_lines(queue: &Receiver<Vec<u8>>, out: &mut impl Write) {
    let mut chunk = Vec::with_capacity(WRITE_CHUNK);
    while let Ok(first) = queue.recv() {
        let mut stop = first.is_empty();
        chunk.extend_from_slice(&first);
        if !stop {
            std::thread::sleep(GATHER);
        }
        loop {
            let line = if stop { None } else { queue.try_recv().ok() };
            if let Some(line) = &line {
                stop = line.is_empty();
                chunk.extend_from_slice(line);
            }
            if line.is_none() || chunk.len() >= WRITE_CHUNK {
                // Nowhere to report a failed write to stdout; the next lines try again.
                let _ = out.write_all(&chunk).and_then(|()| out.flush());
                chunk.clear();
            }
            if line.is_none() {
                break;
            }
        }
        if stop {
            return;
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        // An empty line is never a log line: it tells the thread to write out and stop.
        if self.lines.send(Vec::new()).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// One log line on its way to the writer thread.
#[derive(Debug)]
pub struct Line<'a> {
    lines: &'a SyncSender<Vec<u8>>,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.lines.try_send(buf.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => metrics::counter!(DROPPED_TOTAL).increment(1),
            // The writer stopped (shutting down): nowhere to write.
            Err(TrySendError::Disconnected(_)) => {}
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for NonBlocking {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line { lines: &self.lines }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_lines_are_written_in_order_and_the_stop_signal_ends_the_thread() {
        let (lines, queue) = sync_channel(16);
        let writer = NonBlocking { lines };
        for n in 0..5 {
            // The fmt layer writes each line with one `write_all`.
            let line = format!("line {n}\n");
            writer
                .make_writer()
                .write_all(line.as_bytes())
                .expect("queued");
        }
        writer.lines.send(Vec::new()).expect("stop queued");
        let mut out = Vec::new();
        write_lines(&queue, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "line 0\nline 1\nline 2\nline 3\nline 4\n"
        );
    }

    #[test]
    fn a_full_queue_drops_the_line_instead_of_blocking() {
        let (lines, queue) = sync_channel(1);
        let writer = NonBlocking { lines };
        writer.make_writer().write_all(b"kept\n").expect("queued");
        let dropped = writer.make_writer().write_all(b"dropped\n");
        assert!(
            dropped.is_ok(),
            "a full queue never blocks or fails the caller"
        );
        drop(writer);
        let mut out = Vec::new();
        write_lines(&queue, &mut out);
        assert_eq!(out, b"kept\n");
    }
}
