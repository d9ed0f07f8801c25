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
    fn queue_as(&self, task: TaskKey) -> bool {
        if self.flags() & READY != 0 {
            return false;
        }
        self.set_task(task);
        true
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
