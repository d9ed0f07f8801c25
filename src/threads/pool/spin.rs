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
//! The hint is a counter, not a flag: a spinner compares it with the value
//! it read when it began, so a stale bump (one meant for an earlier
//! spinner) costs at most one early look at the lock, never a lost claim.

use crate::loom::atomic::{AtomicUsize, Ordering};

/// The longest spin before an idle pool thread parks. A few times the cost
/// of an uncontended futex wake, so a failed spin costs about what the
/// sleep and wake it tries to save would have; long enough to cover a
/// `defer_to_thread` round trip through a spinning loop.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const SPIN_LIMIT: std::time::Duration = std::time::Duration::from_micros(8);

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
