//! One job handed from the loop to a pool or worker: a single shared record,
//! which is also the job's `Deferred`.
//!
//! `Arc<Job<T, E, F, C>>` holds the closure until it starts, then its outcome
//! until the `Deferred` takes it. On a `ThreadPool` that same `Arc` is the
//! pool's queue item (contract C1, `SharedTask`); it rides back through the
//! reactor's inbox as the completion message; and the `Deferred` returned to
//! the submitter holds it as its state (`deferred::JobCell`): one
//! allocation per job at most, and none once the loop thread has spent
//! records of the same type to reuse (`recycle.rs`: the poll that takes
//! the outcome from a record its `Deferred` owns alone empties the record
//! and keeps it, in the same uniqueness check; otherwise a `Deferred` that
//! lets go of the last reference does). Other
//! `Worker`s get it boxed (`Worker::do_shared`'s default).
//!
//! The record is generic over what runs (`F: Call<T, E>`: a plain closure,
//! or one that returns its own `Result` for `defer_to_worker_with`), the
//! outcome's error `E` (the bridge's own failures become `E` through the
//! record's `error` function) and an optional loop-side canceller `C`, run
//! by a cancel and dropped by any other resolution. So a caller that maps
//! the outcome or hooks the cancel (weft-db) needs no second `Deferred`.
//!
//! Whether the job is still wanted is decided in one place, the record's
//! `slot` (`job/slot.rs`), a state word that moves the closure to the
//! worker and the outcome back without a lock, so the loop never waits for
//! a worker that holds one (a worker preempted while holding the record's
//! lock kept the loop waiting for milliseconds, session 14):
//!
//! ```text
//! Queued(f) --worker start--> Running --worker post--> Done(r) --loop take--> Closed
//!     |                          |                        |
//!     +--- cancel / resolve on the loop (first wins) -----+--> Closed
//!          (the loop's own outcome is kept loop-side)
//!     +--discard (never run)--> Done(Cancelled)
//! ```
//!
//! Whether the loop may see the outcome is not part of the slot: a `Done`
//! posted by a worker stays invisible until the loop delivers the record.
//! An outcome the loop sets itself (a cancel, a resolve, `Stopped`) is
//! kept in `local`, the record's loop-side part with the awaiter's waker
//! and the submitter's canceller: a mutex only the loop thread takes (so
//! never contended; a mutex only because the record must be `Sync`).
//! That, and the rest of the loop's bookkeeping, is in `flags` (and the
//! backlog key in `task`), a word only
//! the loop thread touches (an atomic only because the record must be
//! `Sync`; it orders nothing, so plain relaxed loads and stores):
//! - `READY`: the outcome is visible (delivered, or settled on the loop);
//! - `COUNTED`: the job is still in the loop's count of jobs in flight;
//! - `PARKED`: an awaiter's waker is parked in `local`;
//! - `SETTLED`: the loop's own outcome waits in `local` (not in the slot).
//!
//! So the delivery takes no lock unless a waker is parked: it sets `READY`,
//! leaves the count and wakes the awaiter. Per job the common path takes
//! no lock on either side: the worker's start and post are one
//! compare-and-swap each, the consumer's take one load and one store (was
//! three lock and unlock pairs, one of them the loop's). The loop's note
//! of the backlog slot (`task`) is a loop-only word like `flags`.
//!
//! The record carries only `Send` data: the awaiter's `Waker` is parked in
//! it, and callbacks run in a local task that awaits it (`OnResult`), so the
//! loop needs no table of resolvers. The loop only counts the jobs in flight
//! (for the shutdown drain).
//!
//! Invariants:
//! - the closure runs at most once, and only if the stage held `Queued` when
//!   the worker looked;
//! - a cancelled job's closure and captures are dropped by the cancel itself,
//!   not when (or if) a worker reaches the job;
//! - an outcome becomes visible (`READY`) only on the loop, by delivery or by
//!   a cancel or resolution there: never synchronously from a worker;
//! - `READY` implies the stage is `Done` or `Consumed`; a `Done` without
//!   `READY` is a posted outcome not yet delivered;
//! - a job the pool or worker will never run (dropped unrun) is reported
//!   `Cancelled` exactly once; so is a job whose loop has ended before a
//!   worker reaches it (it is not run: its outcome could not be delivered);
//! - a record is reused only when nothing else can reach it, after its
//!   contents were dropped (when its `Deferred` let go, as a plain drop
//!   would); reuse keeps its `Remote` and in-flight count only for the same
//!   reactor (the count is per reactor); a job refused at submission is resolved
//!   `Stopped` by the submitter and posts nothing;
//! - the worker posts a completion only if the stage was still `Running`, so
//!   a cancelled job's late result costs no trip to the loop;
//! - the job leaves the loop's in-flight count exactly once (`COUNTED`), at
//!   delivery or when the loop gives it up, whichever comes first;
//! - `flags` is read and written only on the loop thread (every method that
//!   touches it is a loop-side one: delivery, the `Deferred`'s methods, the
//!   submitter's `refuse`); the worker-side `start`, `post` and `discard`
//!   never touch it.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use super::recycle;
use super::table::{InFlight, Threads};
use crate::deferred::{JobCell, span};
use crate::error::ThreadError;
use crate::loom::Mutex;
use crate::reactor::{self, Deliver, Handle, Remote};
use crate::threads::TaskKey;
use slot::{Slot, Was};

mod pool_side;
mod slot;

type Outcome<T, E> = Result<T, E>;

/// What a record runs on the worker: a closure whose value is the outcome
/// ([`Plain`]), or one that returns its own `Result` ([`Fallible`]).
pub(super) trait Call<T, E>: Send + 'static {
    fn call(self) -> Outcome<T, E>;
}

/// A closure `FnOnce() -> T`: the only errors are the bridge's.
pub(super) struct Plain<F>(pub(super) F);

impl<T, F: FnOnce() -> T + Send + 'static> Call<T, ThreadError> for Plain<F> {
    fn call(self) -> Outcome<T, ThreadError> {
        Ok((self.0)())
    }
}

/// A closure `FnOnce() -> Result<T, E>`: its error is the outcome's.
pub(super) struct Fallible<F>(pub(super) F);

impl<T, E, F: FnOnce() -> Result<T, E> + Send + 'static> Call<T, E> for Fallible<F> {
    fn call(self) -> Outcome<T, E> {
        (self.0)()
    }
}

/// The canceller type of a job without one.
pub(super) type NoCanceller = fn();

/// The record's loop-side part: only the loop thread takes this lock.
struct Local<T, E, C> {
    /// The awaiter's waker (set by a poll, taken on delivery).
    waker: Option<Waker>,
    /// The submitter's extra canceller: run by a cancel, dropped by any
    /// other resolution.
    on_cancel: Option<C>,
    /// The outcome the loop settled the job with (`SETTLED`).
    settled: Option<Outcome<T, E>>,
}

/// `flags`: the outcome is visible on the loop.
const READY: u8 = 1;
/// `flags`: still in the loop's count of jobs in flight.
const COUNTED: u8 = 2;
/// `flags`: a waker is parked in `Local::waker`.
const PARKED: u8 = 4;
/// `flags`: the loop's own outcome is in `Local::settled`.
const SETTLED: u8 = 8;

pub(super) struct Job<T, E, F, C> {
    /// The closure to the worker, its outcome back (no lock: `slot.rs`).
    slot: Slot<F, Outcome<T, E>>,
    /// Loop-only: waker, canceller, the loop's own outcome.
    local: Mutex<Local<T, E, C>>,
    /// Loop-only bookkeeping (`READY`, `COUNTED`, `PARKED`); see the module
    /// docs.
    flags: AtomicU8,
    /// Where it waits in the reactor pool's backlog, to withdraw it
    /// ([`TaskKey::to_word`], 0 for none). Loop-only, like `flags`: set
    /// after submission without the record's lock, which a worker may be
    /// taking at that very moment to start the job.
    task: AtomicU64,
    /// The loop's count of jobs in flight (loop-only, like `flags`).
    in_flight: Arc<InFlight>,
    remote: Remote,
    /// The bridge's own failures (panic, cancel, stop) as the outcome's
    /// error type.
    error: fn(ThreadError) -> E,
    /// Where the job was submitted (the public entry point's caller).
    location: &'static Location<'static>,
    /// The submitter's `tracing` span (`None` when nothing listens): the
    /// closure runs in it, and so do the `Deferred`'s callbacks.
    span: Option<tracing::Span>,
}

impl<T, E, F, C> Job<T, E, F, C> {
    /// The loop-side flags (loop thread only).
    fn flags(&self) -> u8 {
        self.flags.load(Ordering::Relaxed)
    }

    fn set_flags(&self, flags: u8) {
        self.flags.store(flags, Ordering::Relaxed);
    }

    fn span(&self) -> Option<&tracing::Span> {
        self.span.as_ref()
    }

    /// Drops what a spent record still holds besides its slot (waker,
    /// canceller, span), as a plain drop would: user code may run, so this
    /// comes before the record is given to the free list (never under its
    /// borrow).
    #[inline]
    fn empty(&mut self) {
        let st = self.local.get_mut();
        // Each dropped in place (no tuple moved out and dropped whole).
        st.waker = None;
        st.on_cancel = None;
        self.span = None;
    }

    /// On the loop: takes the outcome if the job has one (visible or not):
    /// the loop's own, else one a worker published; `None` if taken before
    /// or not there yet.
    fn take_done(&self) -> Option<Outcome<T, E>> {
        let flags = self.flags();
        if flags & SETTLED != 0 {
            self.set_flags(flags & !SETTLED);
            return self.local.lock().settled.take();
        }
        self.slot.take()
    }

    /// [`take_done`](Self::take_done) through a unique borrow (no lock, no
    /// atomic read-modify-write).
    fn take_done_mut(&mut self) -> Option<Outcome<T, E>> {
        let flags = self.flags();
        if flags & SETTLED != 0 {
            self.set_flags(flags & !SETTLED);
            return self.local.get_mut().settled.take();
        }
        self.slot.take_mut()
    }
}

impl<T, E, F, C> Job<T, E, F, C>
where
    F: Call<T, E>,
    T: Send + 'static,
    E: Send + 'static,
    C: FnOnce() + Send + 'static,
{
    /// A record for `f`; `error` shapes the bridge's own failures and
    /// `on_cancel` runs if the `Deferred` is cancelled. Inlined into the
    /// submitter (one call fewer per job; `fresh` stays out of line).
    #[inline(always)]
    pub(super) fn new(
        f: F,
        error: fn(ThreadError) -> E,
        on_cancel: Option<C>,
        handle: &Handle,
        in_flight: &Arc<InFlight>,
        location: &'static Location<'static>,
    ) -> Arc<Self> {
        // A spent record of this type, if the loop kept one (`recycle.rs`):
        // no allocation, and its reactor's references are kept when the
        // reactor is the same (the in-flight count is per reactor). Its
        // state was emptied when it was given back (`waker` is `None`), so
        // it is refilled in place, without the lock (the record is unique).
        let mut job = match recycle::take::<Self>() {
            Some(job) => job,
            None => return Job::fresh(f, error, on_cancel, handle, in_flight, location),
        };
        let Some(record) = Arc::get_mut(&mut job) else {
            return Job::fresh(f, error, on_cancel, handle, in_flight, location);
        };
        record.slot.refill(f);
        record.local.get_mut().on_cancel = on_cancel;
        record.flags = AtomicU8::new(COUNTED);
        record.task = AtomicU64::new(0);
        if !Arc::ptr_eq(&record.in_flight, in_flight) {
            record.in_flight = in_flight.clone();
            record.remote = handle.remote();
        }
        record.error = error;
        record.location = location;
        record.span = span::current();
        job
    }

    #[cold]
    fn fresh(
        f: F,
        error: fn(ThreadError) -> E,
        on_cancel: Option<C>,
        handle: &Handle,
        in_flight: &Arc<InFlight>,
        location: &'static Location<'static>,
    ) -> Arc<Self> {
        Arc::new(Job {
            slot: Slot::new(f),
            local: Mutex::new(Local {
                waker: None,
                on_cancel,
                settled: None,
            }),
            flags: AtomicU8::new(COUNTED),
            task: AtomicU64::new(0),
            in_flight: in_flight.clone(),
            remote: handle.remote(),
            error,
            location,
            span: span::current(),
        })
    }

    /// On the loop, after submission: where the job waits in the reactor
    /// pool's backlog.
    pub(super) fn set_task(&self, task: TaskKey) {
        self.task.store(task.to_word(), Ordering::Relaxed);
    }

    /// On a worker thread: takes the closure out (`Queued → Running`), or
    /// `None` if the job was cancelled first. A job whose loop has ended
    /// before it starts is dropped unrun (its outcome could never be
    /// delivered; a late poll of its `Deferred` gets `Cancelled`).
    fn start(&self) -> Option<F> {
        let f = self.slot.start()?;
        if self.remote.has_ended() {
            drop(f);
            let _ = self.slot.post(Err((self.error)(ThreadError::Cancelled)));
            return None;
        }
        Some(f)
    }

    /// Queues the record on its loop; a loop that has ended drops it. The
    /// record's own count is bumped for the message (not the reactor's,
    /// which every worker and the loop share). Inlined with the inbox's
    /// push into the worker's `post`: one frame per completion, not three.
    #[inline(always)]
    fn send(self: Arc<Self>) {
        let message: Arc<dyn Deliver> = self.clone();
        let _ = self.remote.deliver(message);
    }

    /// The job will never run (dropped by a stopped worker, a discarded
    /// backlog): report `Cancelled`, dropping the closure now.
    fn discard(self: Arc<Self>) {
        let Some(f) = self.slot.start() else { return };
        drop(f);
        if self.slot.post(Err((self.error)(ThreadError::Cancelled))) {
            self.send();
        }
    }

    /// Stores the outcome and queues the record on the loop, if the job is
    /// still wanted (a cancelled job's late outcome is dropped here).
    fn post(self: Arc<Self>, outcome: Outcome<T, E>) {
        if self.slot.post(outcome) {
            self.send();
        }
    }

    /// The submitter got its job back refused: nothing will be posted.
    pub(super) fn refuse(&self) {
        self.set_flags(READY);
        drop(self.slot.close());
    }

    /// On the loop: makes `outcome` the job's result unless it has one; the
    /// work is given up (unstarted work leaves the reactor pool's backlog;
    /// running work finishes detached; a posted, undelivered outcome is
    /// replaced). Hands `outcome` back if too late.
    fn settle(&self, outcome: Outcome<T, E>) -> Result<(), Outcome<T, E>> {
        let flags = self.flags();
        if flags & READY != 0 {
            return Err(outcome);
        }
        self.set_flags(READY | SETTLED);
        // A worker that has the job keeps it; a posted outcome comes back.
        let old = self.slot.close();
        let (waker, on_cancel) = {
            let mut st = self.local.lock();
            st.settled = Some(outcome);
            (st.waker.take(), st.on_cancel.take())
        };
        // Loop-only: a plain load and store, no read-modify-write.
        let task = TaskKey::from_word(self.task.load(Ordering::Relaxed));
        self.task.store(0, Ordering::Relaxed);
        drop(on_cancel); // resolved: the canceller will never run
        let counted = flags & COUNTED != 0;
        // Only unstarted work is withdrawn from the backlog.
        let task = task.filter(|_| matches!(old, Was::Queued(_)));
        drop(old); // the closure or a posted outcome
        let drained = counted && self.in_flight.leave();
        if drained || task.is_some() {
            if let Some(threads) = Threads::of_remote(&self.remote) {
                if let Some(task) = task {
                    threads.withdraw(task);
                }
                if drained {
                    threads.check_drained();
                }
            }
        }
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// The outcome if it is visible (taking it), else `None`.
    fn take_ready(&self) -> Option<Outcome<T, E>> {
        if self.flags() & READY == 0 {
            return None;
        }
        self.take_done()
    }

    /// The outcome for a consumer that cannot wait any longer: the one that
    /// arrived, or `Cancelled` (the job is given up). `None` if taken before.
    fn take_or_cancel(&self) -> Option<Outcome<T, E>> {
        let _ = self.settle(Err((self.error)(ThreadError::Cancelled)));
        self.take_ready()
    }

    /// Runs a callback with the outcome in the submitter's span.
    fn call_back(&self, f: Callback<T, E>, outcome: Outcome<T, E>) {
        span::in_span(self.span(), || f(outcome));
    }
}

impl<T, E, F, C> Deliver for Job<T, E, F, C>
where
    F: Call<T, E>,
    T: Send + 'static,
    E: Send + 'static,
    C: FnOnce() + Send + 'static,
{
    /// On the loop: the posted outcome becomes visible (unless the loop
    /// settled the job first), the job leaves the count, the awaiter wakes.
    /// No lock unless a waker is parked.
    fn deliver(self: Arc<Self>) {
        let flags = self.flags();
        // A job the loop settled first keeps its own outcome.
        self.set_flags(READY | (flags & SETTLED));
        // The usual case: counted, no awaiter parked, not settled before.
        if flags == COUNTED {
            if self.in_flight.leave() {
                self.drained();
            }
            return;
        }
        self.deliver_rare(flags);
    }
}

impl<T, E, F, C> Job<T, E, F, C> {
    /// The loop's count of jobs in flight reached zero while the shutdown
    /// drain waits.
    #[cold]
    fn drained(&self) {
        if let Some(threads) = Threads::of_remote(&self.remote) {
            threads.check_drained();
        }
    }

    /// `deliver` with a waker parked, or of a job already settled.
    #[cold]
    fn deliver_rare(&self, flags: u8) {
        let waker = if flags & PARKED != 0 {
            self.local.lock().waker.take()
        } else {
            None
        };
        if flags & COUNTED != 0 && self.in_flight.leave() {
            self.drained();
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

type Callback<T, E> = Box<dyn FnOnce(Outcome<T, E>)>;

/// The job's side of its `Deferred` (see `deferred/job.rs`).
impl<T, E, F, C> JobCell<T, E> for Job<T, E, F, C>
where
    F: Call<T, E>,
    T: Send + 'static,
    E: Send + 'static,
    C: FnOnce() + Send + 'static,
{
    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Outcome<T, E>> {
        if self.flags() & READY != 0 {
            return match self.take_done() {
                Some(outcome) => Poll::Ready(outcome),
                None => panic!("Deferred polled after it returned its result"),
            };
        }
        if self.remote.has_ended() {
            // The loop has ended and will never deliver: give the outcome
            // that arrived after the end, else `Cancelled`, so a `Deferred`
            // polled late (outside any task) never stays pending forever.
            let late = self.take_done();
            if let Some(outcome) = late {
                self.set_flags(self.flags() | READY);
                return Poll::Ready(outcome);
            }
            let _ = self.settle(Err((self.error)(ThreadError::Cancelled)));
            return match self.take_ready() {
                Some(outcome) => Poll::Ready(outcome),
                None => unreachable!("settled, and only this poll takes"),
            };
        }
        {
            let mut st = self.local.lock();
            match &mut st.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
        }
        self.set_flags(self.flags() | PARKED);
        Poll::Pending
    }

    fn is_resolved(&self) -> bool {
        self.flags() & READY != 0
    }

    /// The usual ready path in one call: the outcome taken without the
    /// lock (nobody else can reach the record), the record emptied and
    /// kept unless its reactor has ended.
    fn poll_owned(
        mut self: Arc<Self>,
        slot: &mut Option<Arc<dyn JobCell<T, E>>>,
        cx: &mut Context<'_>,
    ) -> Poll<Outcome<T, E>> {
        if self.flags() & READY != 0 {
            if let Some(record) = Arc::get_mut(&mut self) {
                if let Some(outcome) = record.take_done_mut() {
                    record.empty();
                    // Unique since the check above: no second one.
                    if !self.remote.has_ended() {
                        recycle::give(self);
                    }
                    return Poll::Ready(outcome);
                }
            }
        }
        let poll = self.poll_take(cx);
        *slot = Some(self);
        poll
    }

    fn resolve(&self, outcome: Outcome<T, E>) -> Result<(), Outcome<T, E>> {
        self.settle(outcome)
    }

    /// Runs the submitter's canceller first (it may resolve the job
    /// itself, with a more precise error), as a cell's canceller does.
    fn cancel(&self) {
        if self.flags() & READY != 0 {
            return;
        }
        let on_cancel = self.local.lock().on_cancel.take();
        if let Some(on_cancel) = on_cancel {
            on_cancel();
        }
        let _ = self.settle(Err((self.error)(ThreadError::Cancelled)));
    }

    /// A spent record owned alone is emptied (the closure, outcome, waker
    /// and span dropped now, as a plain drop would) and kept for the next
    /// job of its type on this thread.
    fn recycle(mut self: Arc<Self>) {
        let Some(record) = Arc::get_mut(&mut self) else {
            return; // a worker, the inbox or a chain still holds it
        };
        if record.remote.has_ended() {
            return; // kept, it would keep its ended reactor alive
        }
        // May run user code: before the list is borrowed.
        record.slot.clear();
        record.local.get_mut().settled = None;
        record.empty();
        recycle::give(self);
    }

    /// An outcome taken before (the `Deferred` was awaited by reference)
    /// is not there to give: `f` never runs, as for a consumed local
    /// `Deferred` (no task that could only panic).
    fn on_result(self: Arc<Self>, f: Callback<T, E>) {
        if self.flags() & READY != 0 {
            if let Some(outcome) = self.take_done() {
                self.call_back(f, outcome);
            }
            return;
        }
        let handle = reactor::current().filter(|h| h.is_remote(&self.remote) && !h.has_ended());
        match handle {
            Some(handle) => {
                let location = self.location;
                let task = OnResult {
                    job: self,
                    f: Some(f),
                };
                handle.spawn_detached(task, location);
            }
            // Its loop is gone: nothing can be delivered any more.
            None => {
                if let Some(outcome) = self.take_or_cancel() {
                    self.call_back(f, outcome);
                }
            }
        }
    }
}

/// A callback waiting for its job: a local task woken by the delivery. If
/// it is dropped first (the reactor shuts down with the job unfinished), it
/// gives the callback the outcome that arrived, or `Cancelled`: every
/// callback runs once.
struct OnResult<T, E, F, C> {
    job: Arc<Job<T, E, F, C>>,
    f: Option<Callback<T, E>>,
}

impl<T, E, F, C> Future for OnResult<T, E, F, C>
where
    F: Call<T, E>,
    T: Send + 'static,
    E: Send + 'static,
    C: FnOnce() + Send + 'static,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let outcome = std::task::ready!(self.job.poll_take(cx));
        if let Some(f) = self.f.take() {
            self.job.call_back(f, outcome);
        }
        Poll::Ready(())
    }
}

impl<T, E, F, C> Drop for OnResult<T, E, F, C> {
    fn drop(&mut self) {
        if let Some(f) = self.f.take() {
            self.job.abandon(f);
        }
    }
}

impl<T, E, F, C> Job<T, E, F, C> {
    /// A waiting callback is dropped (its task was stopped at shutdown):
    /// it gets the outcome that arrived, or `Cancelled`, and the job is
    /// given up (a late outcome is dropped on its worker).
    fn abandon(&self, f: Callback<T, E>) {
        let flags = self.flags();
        self.set_flags(flags | READY);
        // The visible outcome if there is one; whatever else is given up (a
        // closure or an undelivered outcome, dropped here).
        let visible = if flags & READY != 0 {
            self.take_done()
        } else {
            None
        };
        drop(self.slot.close());
        let outcome = visible.unwrap_or_else(|| Err((self.error)(ThreadError::Cancelled)));
        span::in_span(self.span(), || f(outcome));
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
