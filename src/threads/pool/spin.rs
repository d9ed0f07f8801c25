//! Spin-then-park for pool threads: a round trip whose next job arrives
//! within a few microseconds pays no futex sleep and wake.
//!
//! A worker that goes idle would wait on the work condvar at once, and the
//! next submission would then pay a `FUTEX_WAKE` on the submitter and a
//! wakeup on the worker (2-15 µs on a VM). For `defer_to_thread` in a
//! sequence, and for a submitter that a worker keeps catching up with, that
//! next submission is usually a microsecond or two away. So an idle thread
//! first spins for at most [`SPIN_LIMIT`] on the [`SpinHint`], then waits.
//!
//! # Protocol
//!
//! - Under the lock the thread is counted in `State::spinning`
//!   ([`State::begin_spin`](super::state::State::begin_spin)); it is still
//!   idle, so a submission claims it exactly as before, but answers
//!   [`Wake::Spinner`](super::state::Wake::Spinner): the submitter bumps the
//!   hint (one atomic add, no syscall) instead of notifying the condvar.
//! - The spinner reads only the hint (no lock, no `sched_yield`), so it
//!   never fights a submitter for the lock or, on a shared CPU, for the
//!   core beyond the bound (crossbeam #821). When the hint moves or the
//!   bound passes it takes the lock, leaves `spinning`, and runs its
//!   ordinary step: a claim made while it was counted as spinning is seen
//!   there at the latest, so no claim waits for a notify that never comes.
//! - A thread spins once per idle spell, then parks: an idle pool uses no
//!   CPU. At most one thread spins at a time, so a pool of many threads on
//!   few cores burns at most one core for [`SPIN_LIMIT`] per idle spell.
//! - Spinning adapts (`State::end_spin`): a spin that ends with no claim
//!   pauses spinning for a number of idle spells that doubles with each
//!   miss, up to `MAX_SPIN_PAUSE`. Where the submitter shares the spinner's
//!   only core, it cannot run while the spinner spins, so the spin only
//!   delays it (measured: a sequential `defer_to_thread` with loop and
//!   worker pinned to one core went from 5 to 19 µs with an unconditional
//!   spin); there the misses soon make spins rare. Where the submitter runs
//!   on another core the spins hit and every idle spell spins.
//!
//! - A thread starts cold ([`ColdStart`]): it does not spin until one of its
//!   idle waits was short (parked, then claimed within [`WARM_WAIT`]),
//!   because nothing yet says that work comes within a spin's bound. A
//!   thread started for a lone job (a single `defer_to_thread`, then
//!   nothing) thus parks at once, with no spin for the idle process to
//!   pay (the `idle_cpu` row); a thread fed in quick succession pays one
//!   futex wake, then spins as above. Cold lets no spin through, just as
//!   a pause does, so the hand-off protocol is the same in both. Under
//!   loom threads start warm, so the models explore the spin.
//!
//! The hint is a counter, not a flag: a spinner compares it with the value
//! it read when it began, so a stale bump (one meant for an earlier
//! spinner) costs at most one early look at the lock, never a lost claim.

use std::time::Duration;

use crate::loom::atomic::{AtomicUsize, Ordering};

/// The longest spin before an idle pool thread parks. A few times the cost
/// of an uncontended futex wake, so a failed spin costs about what the
/// sleep and wake it tries to save would have; long enough to cover a
/// `defer_to_thread` round trip through a spinning loop.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const SPIN_LIMIT: Duration = Duration::from_micros(8);

/// The longest idle wait, from parking to a claim, that warms a cold
/// thread ([`ColdStart`]): a submitter whose next job follows within it
/// (the futex wake included) is one a spin can serve. The loop's inbox uses
/// the same bound (`MISS_AFTER_SLEEP`).
pub(crate) const WARM_WAIT: Duration = Duration::from_micros(50);

/// A pool thread's cold start (module docs): no spin until one of its idle
/// waits was short. The thread reads the clock only while cold, once when
/// it first parks in an idle spell and once when that spell ends with work.
///
/// Only waits after the thread's first job count: a new thread may park
/// before the job it was started for is queued (a pool with no thread
/// starts one, then queues), and that wait says nothing about the rhythm
/// of the work.
#[derive(Debug)]
pub(super) struct ColdStart {
    cold: bool,
    /// Whether the thread ran a job yet.
    worked: bool,
    /// When the thread first parked in the current idle spell (pool clock).
    parked: Option<Duration>,
}

impl ColdStart {
    /// A new thread: cold (warm under loom, see the module docs).
    pub(super) fn new() -> ColdStart {
        ColdStart {
            cold: !cfg!(loom),
            worked: false,
            parked: None,
        }
    }

    /// The thread runs jobs: its next idle spell follows work.
    #[inline]
    pub(super) fn works(&mut self) {
        self.worked = true;
    }

    /// Whether the thread may try to spin.
    #[inline]
    pub(super) fn warm(&self) -> bool {
        !self.cold
    }

    /// The thread parks (waits without a spin); `now` reads the pool clock.
    #[inline]
    pub(super) fn parks(&mut self, now: impl FnOnce() -> Duration) {
        if self.cold && self.worked && self.parked.is_none() {
            self.parked = Some(now());
        }
    }

    /// The idle spell ended with work: a short wait warms the thread.
    #[inline]
    pub(super) fn took_work(&mut self, now: impl FnOnce() -> Duration) {
        if let Some(parked) = self.parked.take() {
            if now().saturating_sub(parked) <= WARM_WAIT {
                self.cold = false;
            }
        }
    }
}

/// The counter a spinning thread watches, alone in its cache line (the
/// pool's lock word changes on every job; a spinner reading a line beside
/// it would slow every lock).
#[derive(Debug)]
#[repr(align(64))]
pub(super) struct SpinHint(AtomicUsize);

impl SpinHint {
    pub(super) fn new() -> SpinHint {
        SpinHint(AtomicUsize::new(0))
    }

    /// The submitter claimed a spinner: tell it.
    #[inline]
    pub(super) fn raise(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    /// The current value, read under the lock before the spin begins.
    #[inline]
    pub(super) fn current(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Spins until the hint moves from `seen` or the bound passes. Returns
    /// whether it moved (the caller takes the lock either way).
    pub(super) fn spin(&self, seen: usize) -> bool {
        let mut spin = crate::loom::Spin::new(SPIN_LIMIT);
        loop {
            if self.0.load(Ordering::Acquire) != seen {
                return true;
            }
            if !spin.again() {
                return false;
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{ColdStart, WARM_WAIT};
    use std::time::Duration;

    const T0: Duration = Duration::from_secs(7);

    #[test]
    fn a_thread_stays_cold_while_its_waits_are_long() {
        let mut cold = ColdStart::new();
        assert!(!cold.warm(), "a new thread does not spin");
        cold.works();
        for i in 1..100 {
            cold.parks(|| T0 * i);
            cold.took_work(|| T0 * i + WARM_WAIT + Duration::from_nanos(1));
            assert!(!cold.warm());
        }
    }

    #[test]
    fn a_short_wait_from_the_first_park_warms_the_thread() {
        let mut cold = ColdStart::new();
        cold.works();
        cold.parks(|| T0);
        // Re-parks in the same spell (a spurious wake, a clock waker) keep
        // the first park's time.
        cold.parks(|| T0 + WARM_WAIT);
        cold.took_work(|| T0 + WARM_WAIT + Duration::from_nanos(1));
        assert!(!cold.warm(), "the wait counts from the first park");
        cold.parks(|| T0 * 2);
        cold.took_work(|| T0 * 2 + WARM_WAIT);
        assert!(cold.warm());
        // Warm for good, and no clock read from then on.
        cold.parks(|| unreachable!("a warm thread reads no clock"));
        cold.took_work(|| unreachable!("a warm thread reads no clock"));
        assert!(cold.warm());
    }

    #[test]
    fn work_taken_without_a_park_says_nothing() {
        let mut cold = ColdStart::new();
        cold.works();
        // Work found at once (a claim already waiting): no wait was timed.
        cold.took_work(|| unreachable!("no park, no clock read"));
        assert!(!cold.warm());
    }

    #[test]
    fn a_wait_before_the_first_job_says_nothing() {
        let mut cold = ColdStart::new();
        cold.parks(|| unreachable!("a thread that ran nothing is not timed"));
        cold.took_work(|| unreachable!("nothing was timed"));
        cold.works();
        assert!(!cold.warm());
    }
}
