//! The bridges: the only place where the loop and the thread layers meet.
//!
//! - Loop → threads: [`Handle::call_in_thread`], [`Handle::defer_to_thread`],
//!   [`Handle::defer_to_thread_pool`], [`Handle::defer_to_worker`],
//!   [`Handle::call_multiple_in_thread`] (and the same on `Reactor`).
//! - Threads → loop: [`Remote::blocking_call`], [`Remote::blocking_await`],
//!   [`Remote::run_coroutine_threadsafe`].
//!
//! Files: `to_thread.rs` (loop → threads), `job.rs` (the shared job
//! record), `table.rs` (the loop's table and the shutdown sequence),
//! `from_thread.rs` and `coroutine.rs` (threads → loop), `oneshot.rs` (the
//! cross-thread reply cell), `timing.rs` (`Deferred::add_timeout`,
//! `LoopingCall`: loop-only helpers kept here because `deferred` may not
//! import the reactor).
//!
//! # How a `defer_to_thread` result travels
//!
//! The loop hands the pool one shared job record holding the closure (see
//! `job.rs`) and returns a `Deferred` whose state is that same record. The
//! worker takes the closure out, runs it under `catch_unwind`, stores the
//! result in the record and queues that same `Arc` on the reactor's
//! coalesced inbox (no allocation), so completions arrive in batches, in a
//! later turn, never synchronously, and in FIFO order with the worker's own
//! `call_from_thread`s. On the loop the delivery marks the outcome ready
//! and wakes the awaiter parked in the record; a callback
//! ([`Deferred::add_both`](crate::Deferred::add_both) and the chains)
//! waits in a small local task woken the same way, so its callback runs in
//! the task pass of the same turn. Per job: the record (`Arc`), nothing
//! else; a callback adds its task; a `Worker` other than a `ThreadPool`
//! also needs the boxed [`Task`](crate::threads::Task) its trait takes.
//!
//! # Tracing spans
//!
//! The submitter's `tracing` span (if a subscriber is interested in it) is
//! carried in the record: the closure runs in it on the worker, and the
//! `Deferred`'s callbacks run in it on delivery. Calls queued from threads
//! ([`Remote::call_from_thread`](crate::Remote::call_from_thread) and its
//! siblings) run in their caller's span too. With no span current nothing is
//! carried; the cost with one is in `deferred/span.rs`.
//!
//! Cancelling the `Deferred` empties the record (the closure and its
//! captures are dropped at once; a worker reaching the job finds nothing to
//! run; unstarted reactor-pool work leaves the backlog) and a running job's
//! late result is dropped on its worker. A job dropped unrun (a stopped worker, `QueuedWork::Cancel`
//! at shutdown) reports `Cancelled`; a job refused at submission resolves
//! `Stopped` once and posts nothing. Nothing is lost.
//!
//! # Shutdown
//!
//! The reactor pool registers a `Before` shutdown trigger that waits (bounded
//! by the reactor's shutdown timeout) until every registered job has been
//! delivered, so results of work in flight reach their `Deferred`s before the
//! loop exits; under `QueuedWork::Cancel` it first discards the pool's
//! backlog. A `During` trigger then stops the pool with what is left of the
//! deadline and reports what did not finish; callbacks still waiting get
//! `Cancelled` when the reactor stops its tasks. Nothing hangs.

mod coroutine;
mod from_thread;
mod job;
mod oneshot;
mod recycle;
mod table;
mod timing;
mod to_thread;

pub use coroutine::CrossThreadFuture;
pub use from_thread::{
    blocking_call_from_thread, blocking_call_from_thread_future,
    blocking_call_from_thread_future_timeout, blocking_call_from_thread_timeout,
};
pub use timing::{AlreadyRunning, LoopingCall};

use crate::reactor::{Builder, Handle};

/// What shutdown does with thread-pool work that was queued but not started.
///
/// A bridge setting (the bridge's `Before` shutdown trigger acts on it), set
/// on the reactor with
/// [`Builder::queued_work_at_shutdown`](crate::reactor::Builder::queued_work_at_shutdown)
/// and read with
/// [`Handle::queued_work_at_shutdown`](crate::reactor::Handle::queued_work_at_shutdown);
/// public as `weft::reactor::QueuedWork`. Pools built on the loop (such as
/// weft-db's) follow it by default.
///
/// # Examples
///
/// ```
/// use weft::reactor::QueuedWork;
///
/// let reactor = weft::Reactor::builder()
///     .queued_work_at_shutdown(QueuedWork::Cancel)
///     .build()
///     .unwrap();
/// # drop(reactor);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueuedWork {
    /// Run it, and deliver its results before the loop exits (default).
    #[default]
    Run,
    /// Drop it unrun; its `Deferred`s get `ThreadError::Cancelled`.
    Cancel,
}

/// The bridge's reactor settings: kept as typed extensions of the reactor
/// (seeded by the builder), so the reactor layer never names them.
impl Builder {
    /// Sets what shutdown does with pool work queued but not started
    /// (default: run it and deliver its results).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::reactor::QueuedWork;
    /// let r = weft::Reactor::builder().queued_work_at_shutdown(QueuedWork::Run).build().unwrap();
    /// # drop(r);
    /// ```
    pub fn queued_work_at_shutdown(self, policy: QueuedWork) -> Self {
        self.with_extension(policy)
    }
}

impl Handle {
    /// What shutdown does with pool work queued but not started, as set by
    /// [`Builder::queued_work_at_shutdown`]: for pools built on the loop
    /// that should follow the reactor's policy.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::reactor::QueuedWork;
    ///
    /// let reactor = weft::Reactor::builder()
    ///     .queued_work_at_shutdown(QueuedWork::Cancel)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(reactor.handle().queued_work_at_shutdown(), QueuedWork::Cancel);
    /// ```
    pub fn queued_work_at_shutdown(&self) -> QueuedWork {
        *self.extension(QueuedWork::default)
    }
}
