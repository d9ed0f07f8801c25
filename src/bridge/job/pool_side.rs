//! What the pool and the turn's hand-over see of a job record: the record
//! is the pool's queue item (`SharedTask`) and, while the loop keeps it for
//! the hand-over, a `Pending` job (`table.rs`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use super::{Call, Job, READY};
use crate::bridge::table::Pending;
use crate::deferred::span;
use crate::error::ThreadError;
use crate::threads::TaskKey;
use crate::threads::pool::{PanicCounter, SharedTask};

/// Kept on the loop until the turn's hand-over (`table.rs`).
impl<T, E, F, C> Pending for Job<T, E, F, C>
where
    F: Call<T, E>,
    T: Send + 'static,
    E: Send + 'static,
    C: FnOnce() + Send + 'static,
{
    fn wanted(&self) -> bool {
        self.flags() & READY == 0
    }
    fn queued_as(&self, task: TaskKey) {
        self.set_task(task);
    }
    fn stopped(&self) {
        let _ = self.settle(Err((self.error)(ThreadError::Stopped)));
    }
}

/// On a `ThreadPool` the record itself is the queue item (contract C1): one
/// allocation per job, and the pool can withdraw it when it is cancelled.
impl<T, E, F, C> SharedTask for Job<T, E, F, C>
where
    F: Call<T, E>,
    T: Send + 'static,
    E: Send + 'static,
    C: FnOnce() + Send + 'static,
{
    fn run(self: Arc<Self>, panics: &PanicCounter<'_>) {
        let Some(f) = self.start() else { return };
        // A panic is counted by the pool before the loop can see it.
        let outcome = catch_unwind(AssertUnwindSafe(|| span::in_span(self.span(), || f.call())))
            .unwrap_or_else(|payload| {
                panics.count(&*payload);
                Err((self.error)(ThreadError::from_panic_payload(payload)))
            });
        self.post(outcome);
    }

    fn discard(self: Arc<Self>) {
        Job::discard(self);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::super::{Job, NoCanceller, Plain, State};
    use crate::error::ThreadError;

    type Record = Job<u64, ThreadError, Plain<fn() -> u64>, NoCanceller>;

    /// `Arc`'s header: the strong and weak counts before the record.
    const COUNTS: usize = 2 * size_of::<usize>();

    /// The loop's `flags` and the record's lock word follow the reference
    /// counts within the first 64 bytes of the allocation, and the stage
    /// follows the lock (the layout `Job`'s docs describe).
    #[test]
    fn the_words_both_sides_touch_follow_the_reference_counts() {
        assert_eq!(offset_of!(Record, flags), 0);
        let lock = offset_of!(Record, state);
        assert!(
            COUNTS + lock + size_of::<u64>() <= 64,
            "the lock word is at byte {} of the allocation",
            COUNTS + lock
        );
        assert_eq!(
            offset_of!(State<u64, ThreadError, Plain<fn() -> u64>, NoCanceller>, stage),
            0
        );
    }
}
