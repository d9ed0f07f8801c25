//! Counters: bumped with relaxed atomics where they happen, read as one
//! [`ReactorStatistics`] snapshot from any thread. The loop-local gauges
//! (timers, tasks) are published at the end of each turn. The
//! diagnostics' counters live in [`LoopWords`] (present only when
//! diagnostics are on; zero otherwise).
//!
//! Always on, because they cost per turn or per batch, not per callback:
//! - the turn histogram (the loop lag): at most two clock reads per turn
//!   with work and four per idle turn, fewer with the system clock, where a
//!   reading is reused when nothing ran since it (see `turn.rs`), plus one
//!   histogram record. A
//!   clock read costs 25-50 ns on the VMs we measured on, and a busy loop
//!   runs hundreds of calls per turn, so a burst pays well under 1 ns per
//!   call; a loop woken for each call pays about 0.1-0.2 µs per wake,
//!   beside the wake's own microseconds.
//! - the inbox's oldest-call stamp: one clock read, under the inbox's lock,
//!   by the push that finds the inbox empty (see `inbox.rs`), so one per
//!   batch the loop takes, not one per call.
//! - `calls_run`: one atomic add per batch of calls (also when a propagated
//!   panic unwinds out of the batch), not one per call.

use std::sync::Arc;
use std::time::Duration;

use crate::diagnostics::{Histogram, HistogramSnapshot, LoopWords};
use crate::loom::atomic::{AtomicU64, Ordering};

use super::core::Reactor;
use super::handle::Handle;
use super::remote::{Remote, Shared};

/// A snapshot of a reactor's counters.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// reactor.remote().call_from_thread(|| ()).unwrap();
/// reactor.iterate(Some(std::time::Duration::ZERO));
/// let stats = reactor.statistics();
/// assert_eq!(stats.calls_from_thread, 1);
/// assert_eq!(stats.calls_run, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ReactorStatistics {
    /// Closures accepted by `call_from_thread` (and other cross-thread paths).
    pub calls_from_thread: u64,
    /// Of those, how many have run on the loop.
    pub calls_run: u64,
    /// Writes to the loop's waker (eventfd) made to wake it.
    pub wake_syscalls: u64,
    /// Loop turns completed.
    pub turns: u64,
    /// Timed calls run.
    pub timers_fired: u64,
    /// Local task polls.
    pub tasks_polled: u64,
    /// Panics caught in callbacks, timers and tasks.
    pub panics: u64,
    /// Timed calls scheduled and not yet run or cancelled.
    pub timers_live: u64,
    /// Entries in the timer heap, including cancelled ones awaiting
    /// compaction (stays within a constant factor of `timers_live`).
    pub timer_heap_entries: u64,
    /// Local tasks alive.
    pub tasks_alive: u64,
    /// Calls queued from other threads and not yet taken by the loop.
    pub inbox_depth: u64,
    /// How long the oldest of those calls has been waiting, on the
    /// reactor's clock (zero when the inbox is empty). With the default
    /// [`SystemClock`](crate::SystemClock) on Linux it is measured on the
    /// kernel's coarse monotonic clock, to within one kernel tick (1-4 ms):
    /// the date is taken on every call that finds the inbox empty, where a
    /// precise reading would cost more than the rest of the push. Calls
    /// the loop has already taken for its current turn are not in the
    /// inbox, as for `inbox_depth`.
    pub inbox_oldest_age: Duration,
    /// Callbacks that held the loop longer than the slow-callback threshold
    /// (0 unless [`Builder::slow_callback_threshold`](super::Builder::slow_callback_threshold) is set).
    pub slow_callbacks: u64,
    /// The longest single callback, timer, task poll or I/O handler run so
    /// far, on the reactor's clock (diagnostics on only).
    pub longest_callback: Duration,
    /// The longest turn's work so far, on the reactor's clock, exactly:
    /// the [`largest`](crate::diagnostics::HistogramSnapshot::largest)
    /// sample of [`Handle::turn_histogram`] (always on; time the loop spent
    /// idle, spinning or blocked waiting for I/O, is not counted).
    pub longest_turn: Duration,
    /// Stalls the watchdog caught while they happened (diagnostics on only).
    pub stalls_detected: u64,
    /// Turns that skipped their I/O poll: a turn that has work never blocks
    /// for I/O, and right after a poll that reported no I/O (blocking or
    /// not) the next few such turns (at most 3 in a row, and none once
    /// 100 µs have passed since that poll looked, on the reactor's clock)
    /// do not poll at all; the readiness waits in the poller for the next
    /// poll. So a loop woken for a timer or a call runs that work without
    /// polling again first. A turn with nothing to do always polls.
    pub polls_skipped: u64,
}

/// The counters a turn writes and the gauges it publishes come first and
/// fill one cache line (`repr(C)`, aligned), so a turn after a long sleep
/// misses on one line for them rather than two or three (issue 8).
#[derive(Default)]
#[repr(C, align(64))]
pub(super) struct SharedStats {
    pub(super) turns: AtomicU64,
    pub(super) calls_run: AtomicU64,
    pub(super) timers_fired: AtomicU64,
    pub(super) tasks_polled: AtomicU64,
    pub(super) polls_skipped: AtomicU64,
    /// Loop-local gauges, published at the end of each turn.
    pub(super) timers_live: AtomicU64,
    pub(super) timer_heap_entries: AtomicU64,
    pub(super) tasks_alive: AtomicU64,
    // One line ends here (with std's atomics; loom's are larger).
    pub(super) panics: AtomicU64,
    /// The diagnostics' words and counters, when they are on.
    pub(super) diag: Option<Arc<LoopWords>>,
    /// `Builder::blocking_call_threshold`.
    pub(super) blocking_call_threshold: Option<Duration>,
    /// The work time of each turn (see `turn.rs`); recorded by the loop
    /// thread alone.
    pub(super) turn_histogram: Histogram,
}

impl SharedStats {
    /// Adds `by` to a counter that only the loop thread writes (all of
    /// `SharedStats`'s counters): a plain load and store, no locked
    /// read-modify-write, and nothing at all for zero. Other threads read
    /// it relaxed, as before.
    pub(super) fn bump(counter: &AtomicU64, by: u64) {
        if by != 0 {
            counter.store(
                counter.load(Ordering::Relaxed).wrapping_add(by),
                Ordering::Relaxed,
            );
        }
    }

    pub(super) fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }
}

pub(super) fn statistics_of(shared: &Shared) -> ReactorStatistics {
    let s = &shared.stats;
    let diag = |f: fn(&LoopWords) -> &AtomicU64| {
        s.diag.as_ref().map_or(0, |w| f(w).load(Ordering::Relaxed))
    };
    ReactorStatistics {
        inbox_depth: shared.inbox.len() as u64,
        inbox_oldest_age: shared.inbox.oldest_age(),
        slow_callbacks: diag(|w| &w.slow_callbacks),
        longest_callback: Duration::from_nanos(diag(|w| &w.longest_callback_ns)),
        longest_turn: s.turn_histogram.largest(),
        stalls_detected: diag(|w| &w.stalls),
        calls_from_thread: shared.inbox.pushes(),
        calls_run: s.calls_run.load(Ordering::Relaxed),
        wake_syscalls: shared.inbox.wakes(),
        turns: s.turns.load(Ordering::Relaxed),
        timers_fired: s.timers_fired.load(Ordering::Relaxed),
        tasks_polled: s.tasks_polled.load(Ordering::Relaxed),
        polls_skipped: s.polls_skipped.load(Ordering::Relaxed),
        panics: s.panics.load(Ordering::Relaxed),
        timers_live: s.timers_live.load(Ordering::Relaxed),
        timer_heap_entries: s.timer_heap_entries.load(Ordering::Relaxed),
        tasks_alive: s.tasks_alive.load(Ordering::Relaxed),
    }
}

impl Remote {
    /// How long a `blocking_call` waits before it is logged
    /// (`Builder::blocking_call_threshold`).
    pub(crate) fn blocking_call_threshold(&self) -> Option<Duration> {
        self.shared.stats.blocking_call_threshold
    }

    /// [`Handle::turn_histogram`], readable from any thread.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// reactor.iterate(Some(std::time::Duration::ZERO));
    /// assert_eq!(remote.turn_histogram().count(), 1);
    /// ```
    pub fn turn_histogram(&self) -> HistogramSnapshot {
        self.shared.stats.turn_histogram.snapshot()
    }
}

impl Handle {
    /// The loop lag: a histogram of each turn's work time on the reactor's
    /// clock, from the moment the turn starts (or the loop comes back from
    /// waiting) to the moment it ends (or goes idle). The time the loop
    /// spends idle (its short spin before sleeping, and blocked waiting for
    /// I/O, timers or calls) is left out, so a sample is how long an event
    /// arriving during that work could wait before the loop looked. Its
    /// [`largest`](HistogramSnapshot::largest) is exact (and is
    /// `ReactorStatistics::longest_turn`).
    ///
    /// Always on: it costs at most two clock reads per turn that has work
    /// (four per idle turn; fewer with the system clock, which the loop
    /// reads once for several purposes) and one histogram record, so a busy
    /// loop running hundreds of calls per turn pays well under 1 ns per
    /// call.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft::testing::ManualClock;
    ///
    /// let clock = ManualClock::new();
    /// let reactor = weft::Reactor::builder().clock(clock.clone()).build().unwrap();
    /// let c = clock.clone();
    /// reactor.call_soon(move || c.advance(Duration::from_micros(700)));
    /// reactor.iterate(Some(Duration::ZERO));
    /// let lag = reactor.handle().turn_histogram();
    /// assert_eq!(lag.count(), 1);
    /// // The loop never held events back for more than 1 ms.
    /// assert!(lag.largest() <= Duration::from_millis(1));
    /// ```
    pub fn turn_histogram(&self) -> HistogramSnapshot {
        self.inner.shared.stats.turn_histogram.snapshot()
    }
}

impl Reactor {
    /// [`Handle::turn_histogram`] on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.iterate(Some(std::time::Duration::ZERO));
    /// assert_eq!(reactor.turn_histogram().count(), 1);
    /// ```
    pub fn turn_histogram(&self) -> HistogramSnapshot {
        self.handle.turn_histogram()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::mem::{align_of, offset_of, size_of};

    use super::SharedStats;
    use crate::loom::atomic::AtomicU64;

    #[test]
    fn the_counters_and_gauges_a_turn_writes_share_one_cache_line() {
        assert_eq!(align_of::<SharedStats>() % 64, 0);
        for end in [
            offset_of!(SharedStats, turns),
            offset_of!(SharedStats, calls_run),
            offset_of!(SharedStats, timers_fired),
            offset_of!(SharedStats, tasks_polled),
            offset_of!(SharedStats, polls_skipped),
            offset_of!(SharedStats, timers_live),
            offset_of!(SharedStats, timer_heap_entries),
            offset_of!(SharedStats, tasks_alive),
        ]
        .map(|o| o + size_of::<AtomicU64>())
        {
            assert!(end <= 64, "a per-turn counter ends at byte {end}");
        }
    }
}
