//! The second way a [`Deferred`] can hold its state: a shared job record
//! that a worker thread fills (the bridge's `defer_to_*`), instead of a
//! loop-local cell.
//!
//! Design: the record is one `Arc` that is at once the pool's queue item,
//! the completion message on the reactor's inbox and this `Deferred`'s
//! state, so a thread job costs one allocation (none when the loop reuses
//! a spent record: the poll that takes the outcome from a record this
//! `Deferred` owns alone gives it back at once ([`JobCell::poll_owned`]), and
//! otherwise letting go of a [`JobRef`] offers it back through
//! [`JobCell::recycle`]). It carries only `Send`
//! data (the closure, the outcome, a `Waker`); everything `!Send` stays on
//! the loop:
//! - an awaiter parks its `Waker` in the record, and the loop wakes it when
//!   it delivers the outcome;
//! - a callback ([`Deferred::add_both`] and the chains built on it) runs in
//!   a small local task that awaits the record, spawned by the record's
//!   owner ([`JobCell::on_result`]); the task is the loop-side registration,
//!   so no table of callbacks is needed;
//! - a [`Resolver`](super::Resolver) or a chain link of such a `Deferred`
//!   names the record itself.
//!
//! Invariants (kept by the implementor, `bridge/job.rs`): the outcome is
//! visible here only once the loop has delivered it (never synchronously),
//! the first of delivery, cancel and manual resolution wins, and every
//! method runs on the loop thread.

use std::rc::Weak;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::Cell;
use crate::error::Cancelled;

/// A `Deferred`'s state held in a job record shared with a worker thread.
pub(crate) trait JobCell<T, E> {
    /// The outcome, once delivered (taken out: the record is consumed);
    /// otherwise `cx`'s waker is parked in the record.
    ///
    /// # Panics
    ///
    /// If the outcome was taken before.
    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Result<T, E>>;

    /// Whether an outcome was delivered (or set on the loop), taken or not.
    fn is_resolved(&self) -> bool;

    /// [`poll_take`](JobCell::poll_take) through an owned reference, taken
    /// out of `slot`: when the outcome was delivered and `self` is the
    /// record's only reference (the worker and the inbox let go of it, as
    /// they usually have by then), the outcome is taken through
    /// `Arc::get_mut` (no lock: one atomic read-modify-write instead of the
    /// lock's two), the record is emptied (waker, canceller and span
    /// dropped, as a plain drop would) and kept for reuse, all in one call,
    /// and `slot` stays empty (spent). Otherwise `self` goes back into
    /// `slot` with `poll_take`'s answer.
    ///
    /// # Panics
    ///
    /// If the outcome was taken before.
    fn poll_owned(
        self: Arc<Self>,
        slot: &mut Option<Arc<dyn JobCell<T, E>>>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, E>>;

    /// Resolves on the loop (first result wins); the work is given up as by
    /// a cancel. Hands `result` back if already resolved.
    fn resolve(&self, result: Result<T, E>) -> Result<(), Result<T, E>>;

    /// The work is no longer wanted: unstarted work never runs, running work
    /// finishes detached; the outcome is `Cancelled` unless already resolved.
    fn cancel(&self);

    /// Calls `f` with the outcome on the loop, at once if it has arrived,
    /// else when it does (or with `Cancelled` if it never can).
    fn on_result(self: Arc<Self>, f: Box<dyn FnOnce(Result<T, E>)>);

    /// The `Deferred` or a `Resolver` lets go of the record: if that was the
    /// last reference, the record may be kept for reuse (else it is just
    /// dropped).
    fn recycle(self: Arc<Self>) {
        drop(self);
    }
}

/// A `Deferred`'s (or `Resolver`'s) reference to its job record: letting
/// go of it offers the record for reuse ([`JobCell::recycle`]).
///
/// `None` once spent: a poll that took the outcome while this was the
/// record's only reference gave the record back for reuse at once
/// ([`JobCell::poll_owned`]), in the same uniqueness check as the take (one
/// atomic read-modify-write, not a second one when the `Deferred` drops).
/// A spent reference behaves as a record whose outcome was taken: it is
/// resolved, resolving it hands the result back, a cancel does nothing, a
/// callback added to it never runs (as for a consumed local `Deferred`),
/// and polling it again panics.
pub(super) struct JobRef<T, E>(Option<Arc<dyn JobCell<T, E>>>);

impl<T, E> JobRef<T, E> {
    pub(super) fn new(job: Arc<dyn JobCell<T, E>>) -> Self {
        JobRef(Some(job))
    }

    /// Another reference to the same record (spent stays spent).
    pub(super) fn share(&self) -> Self {
        JobRef(self.0.clone())
    }

    /// A weak link to the record (`None` once spent: nothing to cancel).
    pub(super) fn downgrade(&self) -> Option<std::sync::Weak<dyn JobCell<T, E>>> {
        self.0.as_ref().map(Arc::downgrade)
    }

    /// [`JobCell::is_resolved`]; a spent record's outcome was taken.
    pub(super) fn is_resolved(&self) -> bool {
        self.0.as_ref().is_none_or(|job| job.is_resolved())
    }

    /// [`JobCell::resolve`]; a spent record hands `result` back.
    pub(super) fn resolve(&self, result: Result<T, E>) -> Result<(), Result<T, E>> {
        match &self.0 {
            Some(job) => job.resolve(result),
            None => Err(result),
        }
    }

    /// [`JobCell::cancel`]; nothing to do once spent.
    pub(super) fn cancel(&self) {
        if let Some(job) = &self.0 {
            job.cancel();
        }
    }

    /// [`JobCell::on_result`]; a spent record's outcome was taken, so `f`
    /// never runs (as for a consumed local `Deferred`).
    pub(super) fn on_result(mut self, f: Box<dyn FnOnce(Result<T, E>)>) {
        if let Some(job) = self.0.take() {
            job.on_result(f);
        }
    }

    /// [`JobCell::poll_owned`] with this reference: when the outcome was
    /// delivered and this is the record's only reference, the outcome is
    /// taken and the record given back for reuse at once (this reference
    /// is spent); else the reference is kept. One dynamic call either way.
    ///
    /// # Panics
    ///
    /// If the outcome was taken before.
    #[inline]
    pub(super) fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, E>> {
        let Some(job) = self.0.take() else {
            panic!("Deferred polled after it returned its result");
        };
        job.poll_owned(&mut self.0, cx)
    }
}

impl<T, E> Drop for JobRef<T, E> {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            job.recycle();
        }
    }
}

/// A weak link to a `Deferred`'s state, for chains that cancel their input
/// without keeping it alive.
pub(super) enum Link<T, E> {
    Local(Weak<Cell<T, E>>),
    /// `None`: the record was spent (its outcome taken), nothing to cancel.
    Job(Option<std::sync::Weak<dyn JobCell<T, E>>>),
}

impl<T, E: From<Cancelled>> Link<T, E> {
    /// Cancels the linked `Deferred`, if it is still there.
    pub(super) fn cancel(&self) {
        match self {
            Link::Local(cell) => {
                if let Some(cell) = cell.upgrade() {
                    cell.cancel();
                }
            }
            Link::Job(job) => {
                if let Some(job) = job.as_ref().and_then(std::sync::Weak::upgrade) {
                    job.cancel();
                }
            }
        }
    }
}
