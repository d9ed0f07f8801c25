//! Counters: bumped with relaxed atomics where they happen, read as one
//! [`ReactorStatistics`] snapshot from any thread. The loop-local gauges
//! (timers, tasks) are published at the end of each turn.

use crate::loom::atomic::{AtomicU64, Ordering};

use super::remote::Shared;

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
    ReactorStatistics {
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
