//! One job handed from the loop to a pool or worker: a single shared record.
//!
//! `Arc<Job<T, F>>` holds the closure until it starts, then its result until
//! the loop takes it. On a `ThreadPool` that same `Arc` is the pool's queue
//! item (contract C1, `SharedTask`), and it rides back through the reactor's
//! inbox as the completion message: one allocation per job besides the
//! `Deferred`'s own cell. Other `Worker`s get it boxed (`Worker::do_shared`'s default). Whether the
//! job is still wanted is decided in one place, the record's `slot`, under
//! its mutex:
//!
//! ```text
//! Queued(f) --worker takes f--> Running --result--> Done(r) --loop--> Finished
//!     |                            |
//!     +--cancel / discard----------+--cancel--> Finished (f or r dropped)
//! ```
//!
//! Invariants:
//! - the closure runs at most once, and only if the slot held `Queued` when
//!   the worker looked;
//! - a cancelled job's closure and captures are dropped by the cancel itself,
//!   not when (or if) a worker reaches the job;
//! - a job the pool or worker will never run (refused, dropped unrun) is
//!   reported `Cancelled` exactly once, except a job refused at submission,
//!   which the submitter resolves `Stopped` itself and which then posts
//!   nothing;
//! - the worker posts a completion only if the slot was still `Running`, so a
//!   cancelled job's late result costs no trip to the loop.

use std::panic::{AssertUnwindSafe, Location, catch_unwind, resume_unwind};
use std::sync::Arc;

use super::table::Threads;
use crate::deferred::{CancelJob, span};
use crate::error::{ThreadError, panic_message};
use crate::loom::Mutex;
use crate::reactor::{Deliver, Remote};
use crate::threads::pool::{PanicCounter, SharedTask};

enum Slot<T, F> {
    Queued(F),
    Running,
    Done(Result<T, ThreadError>),
    Finished,
}

pub(super) struct Job<T, F> {
    slot: Mutex<Slot<T, F>>,
    /// The key of the job's `Resolver` in the loop's table.
    key: u64,
    remote: Remote,
    /// Where the job was submitted (the public entry point's caller).
    location: &'static Location<'static>,
    /// The submitter's `tracing` span (`None` when nothing listens): the
    /// closure runs in it, and so do the `Deferred`'s callbacks on delivery.
    span: Option<tracing::Span>,
}

impl<T, F> Job<T, F>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    pub(super) fn new(
        f: F,
        key: u64,
        remote: Remote,
        location: &'static Location<'static>,
    ) -> Arc<Self> {
        Arc::new(Job {
            slot: Mutex::new(Slot::Queued(f)),
            key,
            remote,
            location,
            span: span::current(),
        })
    }

    /// On a worker thread: takes the closure out (`Queued → Running`), or
    /// `None` if the job was cancelled first.
    pub(super) fn start(&self) -> Option<F> {
        let mut slot = self.slot.lock();
        if !matches!(*slot, Slot::Queued(_)) {
            return None;
        }
        match std::mem::replace(&mut *slot, Slot::Running) {
            Slot::Queued(f) => Some(f),
            _ => unreachable!("checked under the same lock"),
        }
    }

    /// Runs a started closure in the submitter's `tracing` span.
    pub(super) fn call(&self, f: F) -> T {
        span::in_span(self.span.as_ref(), f)
    }

    /// The job will never run (dropped by a stopped worker, a discarded
    /// backlog): report `Cancelled`, dropping the closure now.
    pub(super) fn discard(self: Arc<Self>) {
        let f = {
            let mut slot = self.slot.lock();
            if !matches!(*slot, Slot::Queued(_)) {
                return;
            }
            std::mem::replace(&mut *slot, Slot::Done(Err(ThreadError::Cancelled)))
        };
        drop(f); // the captures go outside the lock
        let remote = self.remote.clone();
        let _ = remote.deliver(self);
    }

    /// Stores the outcome and queues the record on the loop, if the job is
    /// still wanted.
    pub(super) fn post(self: Arc<Self>, outcome: Result<T, ThreadError>) {
        {
            let mut slot = self.slot.lock();
            if !matches!(*slot, Slot::Running) {
                return; // cancelled while running: the result is dropped here
            }
            *slot = Slot::Done(outcome);
        }
        let remote = self.remote.clone();
        // A loop that has ended drops the record; its table is gone with it.
        let _ = remote.deliver(self);
    }

    /// On the loop: the job is no longer wanted. Drops the closure (or a
    /// result not yet delivered) now; returns whether it had not started.
    pub(super) fn cancel(&self) -> bool {
        let old = std::mem::replace(&mut *self.slot.lock(), Slot::Finished);
        matches!(old, Slot::Queued(_))
    }

    pub(super) fn key(&self) -> u64 {
        self.key
    }

    /// The submitter got its job back refused: nothing will be posted.
    pub(super) fn refuse(&self) {
        let old = std::mem::replace(&mut *self.slot.lock(), Slot::Finished);
        drop(old);
    }
}

impl<T, F> Deliver for Job<T, F>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    fn deliver(self: Arc<Self>) {
        let result = match std::mem::replace(&mut *self.slot.lock(), Slot::Finished) {
            Slot::Done(result) => result,
            _ => return,
        };
        let Some(threads) = Threads::of_remote(&self.remote) else {
            return;
        };
        let Some(resolver) = threads.take::<T>(self.key) else {
            return;
        };
        // The resolver runs the Deferred's callbacks; a panic there is logged
        // with where the job was submitted, then left to the reactor's policy.
        let resolve = || span::in_span(self.span.as_ref(), || resolver.resolve(result));
        if let Err(payload) = catch_unwind(AssertUnwindSafe(resolve)) {
            tracing::error!(
                kind = "thread job completion",
                location = %self.location,
                panic = %panic_message(&*payload),
                "weft: panic in the callback of a thread job"
            );
            resume_unwind(payload);
        }
    }
}

/// A cancel of the job's `Deferred` empties the record (see `cancel`).
impl<T, F> CancelJob for Job<T, F>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    fn cancel_job(&self) -> bool {
        self.cancel()
    }
}

/// On a `ThreadPool` the record itself is the queue item (contract C1): one
/// allocation per job, and the pool can withdraw it when it is cancelled.
impl<T, F> SharedTask for Job<T, F>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    fn run(self: Arc<Self>, panics: &PanicCounter<'_>) {
        let Some(f) = self.start() else { return };
        // A panic is counted by the pool before the loop can see it.
        let outcome = catch_unwind(AssertUnwindSafe(|| self.call(f))).map_err(|payload| {
            panics.count(&*payload);
            ThreadError::from_panic_payload(payload)
        });
        self.post(outcome);
    }

    fn discard(self: Arc<Self>) {
        Job::discard(self);
    }
}
