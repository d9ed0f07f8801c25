//! Counters: bumped with relaxed atomics where they happen, read as one
//! [`ReactorStatistics`] snapshot from any thread. The loop-local gauges
//! (timers, tasks) are published at the end of each turn. The
//! diagnostics' counters live in [`LoopWords`] (present only when
//! diagnostics are on; zero otherwise).

use std::sync::Arc;
use std::time::Duration;

use crate::diagnostics::LoopWords;
use crate::loom::atomic::{AtomicU64, Ordering};

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
    /// Callbacks that held the loop longer than the slow-callback threshold
    /// (0 unless [`Builder::slow_callback_threshold`](super::Builder::slow_callback_threshold) is set).
    pub slow_callbacks: u64,
    /// The longest single callback, timer, task poll or I/O handler run so
    /// far, on the reactor's clock (diagnostics on only).
    pub longest_callback: Duration,
    /// The most time the callbacks of one turn held the loop, on the
    /// reactor's clock (diagnostics on only; time blocked waiting for I/O
    /// is not counted).
    pub longest_turn: Duration,
    /// Stalls the watchdog caught while they happened (diagnostics on only).
    pub stalls_detected: u64,
}

#[derive(Default)]
pub(super) struct SharedStats {
    pub(super) turns: AtomicU64,
    pub(super) calls_run: AtomicU64,
    pub(super) timers_fired: AtomicU64,
    pub(super) tasks_polled: AtomicU64,
    pub(super) panics: AtomicU64,
    /// Loop-local gauges, published at the end of each turn.
    pub(super) timers_live: AtomicU64,
    pub(super) timer_heap_entries: AtomicU64,
    pub(super) tasks_alive: AtomicU64,
    /// The diagnostics' words and counters, when they are on.
    pub(super) diag: Option<Arc<LoopWords>>,
    /// `Builder::blocking_call_threshold`.
    pub(super) blocking_call_threshold: Option<Duration>,
}

impl SharedStats {
    pub(super) fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
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
        inbox_depth: shared.queued.load(Ordering::Relaxed) as u64,
        slow_callbacks: diag(|w| &w.slow_callbacks),
        longest_callback: Duration::from_nanos(diag(|w| &w.longest_callback_ns)),
        longest_turn: Duration::from_nanos(diag(|w| &w.longest_turn_ns)),
        stalls_detected: diag(|w| &w.stalls),
        calls_from_thread: shared.inbox.pushes(),
        calls_run: s.calls_run.load(Ordering::Relaxed),
        wake_syscalls: shared.inbox.wakes(),
        turns: s.turns.load(Ordering::Relaxed),
        timers_fired: s.timers_fired.load(Ordering::Relaxed),
        tasks_polled: s.tasks_polled.load(Ordering::Relaxed),
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
}
