//! The timer behind `server.header_read_timeout_ms`: cheap to arm, coarse to fire.
//!
//! hyper arms its header-read timer for every request head a connection waits for and
//! drops it once the head is in, so on a keep-alive connection a served token costs one
//! timer armed and cancelled. With tokio's timer (`hyper_util::rt::TokioTimer`: a boxed
//! `Sleep` registered in the runtime's timer wheel on its first poll and removed from it
//! on drop) that was 1,750 instructions per request under callgrind, 7% of a served
//! token and the difference between meeting and missing the serving target.
//!
//! Here a sleep is a deadline and a slot in one shared list; polling it while the
//! deadline is ahead puts its waker in the slot, dropping it frees the slot, and a
//! ticker task wakes the sleeps whose deadline passed. A sleep may therefore fire up to
//! one tick late: the tick is an eighth of the timeout (between 10 ms and 250 ms), which
//! is nothing against a timeout of seconds. hyper counts a deadline from the timer's
//! `now`, which here is the ticker's last reading: arming reads no clock either.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A `hyper::rt::Timer` for one purpose, the header-read timeout: see the module docs.
/// Must be created inside a tokio runtime (it spawns its ticker there); the ticker ends
/// when the timer and its last sleep are gone.
#[derive(Debug, Clone)]
pub struct HeaderTimer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    slots: Mutex<Slots>,
    /// What [`hyper::rt::Timer::now`] answers: `epoch` plus `ticked_nanos`, set by the
    /// ticker, so arming a timeout reads no clock. A deadline counted from it is at most
    /// a tick early, as a firing is at most a tick late.
    epoch: Instant,
    ticked_nanos: AtomicU64,
}

/// The sleeps that have been polled and not dropped: a slab with a free list.
#[derive(Debug, Default)]
struct Slots {
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
}

#[derive(Debug)]
struct Entry {
    deadline: Instant,
    /// Taken when the ticker wakes it; put back by the next poll.
    waker: Option<Waker>,
}

impl Shared {
    fn now(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.ticked_nanos.load(Ordering::Relaxed))
    }

    fn tick(&self) -> Instant {
        let now = Instant::now();
        let nanos = u64::try_from(now.duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        self.ticked_nanos.store(nanos, Ordering::Relaxed);
        now
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        // Nothing in here can be left half-changed by a panic.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl HeaderTimer {
    /// A timer for sleeps of about `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let shared = Arc::new(Shared {
            slots: Mutex::default(),
            epoch: Instant::now(),
            ticked_nanos: AtomicU64::new(0),
        });
        let tick = (timeout / 8).clamp(Duration::from_millis(10), Duration::from_millis(250));
        tokio::spawn(tick_until_dropped(Arc::downgrade(&shared), tick));
        Self { shared }
    }

    /// Sleeps waiting to be woken (for tests and the debugger).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.shared.slots().entries.iter().flatten().count()
    }
}

/// Every `tick`, wakes the sleeps whose deadline has passed.
async fn tick_until_dropped(shared: Weak<Shared>, tick: Duration) {
    let mut due = Vec::new();
    loop {
        tokio::time::sleep(tick).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = shared.tick();
        {
            let mut slots = shared.slots();
            for entry in slots.entries.iter_mut().flatten() {
                if entry.deadline <= now {
                    due.extend(entry.waker.take());
                }
            }
        }
        // Wake outside the lock: a woken task may poll (and lock) at once.
        for waker in due.drain(..) {
            waker.wake();
        }
    }
}

impl hyper::rt::Timer for HeaderTimer {
    fn now(&self) -> Instant {
        self.shared.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeaderSleep {
            shared: self.shared.clone(),
            deadline,
            slot: None,
        })
    }
}

/// One armed header-read timeout.
#[derive(Debug)]
struct HeaderSleep {
    shared: Arc<Shared>,
    deadline: Instant,
    /// Its place in the shared list, once polled.
    slot: Option<usize>,
}

impl HeaderSleep {
    fn release(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut slots = self.shared.slots();
            if let Some(entry) = slots.entries.get_mut(slot) {
                *entry = None;
                slots.free.push(slot);
            }
        }
    }
}

impl Future for HeaderSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // hyper polls a new sleep right after arming it for a timeout of seconds, so the
        // first poll only registers (a shorter sleep is then at most a tick late) and
        // spares a clock read per request.
        if this.slot.is_some() && Instant::now() >= this.deadline {
            this.release();
            return Poll::Ready(());
        }
        let mut slots = this.shared.slots();
        match this.slot {
            Some(slot) => {
                if let Some(entry) = slots.entries.get_mut(slot).and_then(Option::as_mut) {
                    match &mut entry.waker {
                        Some(waker) => waker.clone_from(cx.waker()),
                        none => *none = Some(cx.waker().clone()),
                    }
                }
            }
            None => {
                let entry = Some(Entry {
                    deadline: this.deadline,
                    waker: Some(cx.waker().clone()),
                });
                let slot = match slots.free.pop() {
                    Some(slot) => {
                        slots.entries[slot] = entry;
                        slot
                    }
                    None => {
                        slots.entries.push(entry);
                        slots.entries.len() - 1
                    }
                };
                this.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for HeaderSleep {}

impl Drop for HeaderSleep {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use hyper::rt::Timer;

    use super::*;

    #[tokio::test]
    async fn a_sleep_fires_after_its_deadline_and_within_a_tick() {
        let timer = HeaderTimer::new(Duration::from_millis(80));
        let started = Instant::now();
        timer.sleep(Duration::from_millis(80)).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(80), "fired early: {took:?}");
        // One tick is 10 ms here; allow a loaded machine far more.
        assert!(took < Duration::from_secs(2), "fired late: {took:?}");
        assert_eq!(timer.waiting(), 0, "a fired sleep leaves its slot");
    }

    #[tokio::test]
    async fn now_follows_the_clock_within_a_tick() {
        let timer = HeaderTimer::new(Duration::from_millis(80));
        let before = Instant::now();
        timer.sleep(Duration::from_millis(50)).await;
        let now = timer.now();
        assert!(
            now >= before,
            "the ticker's reading is from after the start"
        );
        assert!(
            Instant::now().duration_since(now) < Duration::from_secs(2),
            "the reading lags the clock by more than a loaded machine's tick"
        );
    }

    #[tokio::test]
    async fn a_dropped_sleep_leaves_no_slot_behind_and_slots_are_reused() {
        let timer = HeaderTimer::new(Duration::from_secs(10));
        for _ in 0..100 {
            let mut sleep = timer.sleep(Duration::from_secs(10));
            let pending = futures::poll!(sleep.as_mut());
            assert!(pending.is_pending());
            assert_eq!(timer.waiting(), 1);
            drop(sleep);
            assert_eq!(timer.waiting(), 0);
        }
        assert_eq!(
            timer.shared.slots().entries.len(),
            1,
            "one slot served every sleep in turn"
        );
    }

    #[tokio::test]
    async fn many_sleeps_fire_in_deadline_order_and_a_later_one_waits() {
        let timer = HeaderTimer::new(Duration::from_millis(80));
        let short = timer.sleep(Duration::from_millis(20));
        let mut long = timer.sleep(Duration::from_secs(60));
        assert!(futures::poll!(long.as_mut()).is_pending());
        short.await;
        assert!(
            futures::poll!(long.as_mut()).is_pending(),
            "a sleep fired before its deadline"
        );
        assert_eq!(timer.waiting(), 1);
    }
}
