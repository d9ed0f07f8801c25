//! The date of a lane's oldest waiting call (one stamp per lane, `inbox.rs`;
//! "the queue" below is that lane), read from the clock outside the
//! push lock.
//!
//! A batch is what the queue holds between two drains; the push that finds
//! the queue empty starts one and dates it. Reading the clock costs 40-90 ns
//! on the VMs measured (vDSO `CLOCK_MONOTONIC`), so the push does not read
//! it under the queue's lock, where it would lengthen every other
//! producer's wait (and the loop's drain). Instead one word, `word`, holds
//! either the batch's date or a claim on it:
//!
//! 1. Under the lock, the push that found the queue empty swaps in
//!    `PENDING | seq` (`seq`: its push sequence number, unique).
//! 2. After the lock it reads the clock and replaces exactly that claim
//!    with the date (a compare-exchange). If its batch was drained and
//!    another push has started the next one meanwhile, the claim is gone
//!    and the date is dropped: a late date can never land on a later batch.
//!    (If its batch was drained and none started, the date lands on an
//!    empty queue, where no one reads it, and the next batch's claim
//!    replaces it.)
//! 3. A sampler holding the lock sees jobs queued: the word is the first
//!    job's claim or its date. The claim was stored under the lock before
//!    the sampler's; the only later writes before the next drain (which the
//!    sampler's lock excludes) are the same push's date; every other
//!    push's compare-exchange expects its own claim and fails. A claim
//!    still in place reads as "just queued" (age zero): its push is between
//!    its lock and its clock read, a few nanoseconds unless that thread is
//!    descheduled.
//!
//! So the age is measured from just after the first job became visible, not
//! from before its push took the lock: it can only be shorter than the
//! true wait by the push's own delay between the two, never longer, and
//! never another batch's. (On the coarse clock, `AgeClock::Coarse`, both
//! readings are the time of the kernel's last tick, so the age is also
//! off by up to one tick either way.) The date is released by the compare-exchange and
//! acquired by the sampler's load, so a sampler that reads a date and then
//! the (monotonic) clock never computes a negative age.
//!
//! Invariants:
//! - `word` is written under the queue lock only by the push that found the
//!   queue empty (the claim), and outside it only by a compare-exchange from
//!   that push's own claim. Both are read-modify-writes, so each reads the
//!   latest value (a plain store for the claim fails the loom model).
//! - Except on the coarse clock (`AgeClock::Coarse`), cheap enough to read
//!   under the lock: there the push that found the queue empty stores the
//!   date itself under the lock ([`Stamp::set`]), nothing is written
//!   outside it, and no claim is ever made.
//! - Dates are nanoseconds below `PENDING` (292 years; a later time is
//!   clamped).
//!
//! The loom model `loom_inbox_stamp_dates_the_batch_of_its_push` checks
//! points 2 and 3 with two producers and the loop sampling before each
//! drain.

use std::time::Duration;

use crate::loom::atomic::{AtomicU64, Ordering};

/// Marks a claim: the rest of the word is the claiming push's sequence
/// number.
const PENDING: u64 = 1 << 63;

/// The oldest waiting call's date, or the claim of the push dating it, on
/// cache lines of its own (see `Lane` in `inbox.rs`): with one producer,
/// only that producer writes them.
#[repr(align(128))]
pub(super) struct Stamp {
    word: AtomicU64,
}

impl Stamp {
    pub(super) fn new() -> Stamp {
        Stamp {
            word: AtomicU64::new(0),
        }
    }

    /// Under the queue lock, by push `seq` that found the queue empty.
    #[inline]
    pub(super) fn claim(&self, seq: u64) {
        // A read-modify-write, like every write of the word: each then reads
        // the latest value, so a late date's compare-exchange can never be
        // ordered after this claim unseen (loom keeps only a partial order
        // for plain stores, and with a plain store here it finds a date
        // from the previous batch landing on this one; see `wake.rs`).
        self.word
            .swap(PENDING | (seq & !PENDING), Ordering::Relaxed);
    }

    /// Under the queue lock, by the push that found the queue empty, on an
    /// inbox dated on the coarse clock: the date itself, no claim. Such an
    /// inbox writes its stamp only here, so the lock orders every write
    /// and a plain store does (no late date from outside the lock exists
    /// to be kept off a later batch).
    #[inline]
    pub(super) fn set(&self, nanos: u64) {
        self.word.store(nanos.min(PENDING - 1), Ordering::Release);
    }

    /// After the lock, by the push that made claim `seq`: dates its batch,
    /// unless a later batch has claimed the word.
    #[inline]
    pub(super) fn date(&self, seq: u64, now: Duration) {
        let nanos = u64::try_from(now.as_nanos()).map_or(PENDING - 1, |n| n.min(PENDING - 1));
        let _ = self.word.compare_exchange(
            PENDING | (seq & !PENDING),
            nanos,
            Ordering::Release,
            Ordering::Relaxed,
        );
    }

    /// Under the queue lock, with jobs queued: the first job's date, or
    /// `None` while its push is still reading the clock.
    pub(super) fn read(&self) -> Option<Duration> {
        let word = self.word.load(Ordering::Acquire);
        ((word & PENDING) == 0).then(|| Duration::from_nanos(word))
    }
}
