//! One job handed from the loop to a pool or worker: a single shared record,
//! which is also the job's `Deferred`.
//!
//! `Arc<Job<T, F>>` holds the closure until it starts, then its outcome
//! until the `Deferred` takes it. On a `ThreadPool` that same `Arc` is the
//! pool's queue item (contract C1, `SharedTask`); it rides back through the
//! reactor's inbox as the completion message; and the `Deferred` returned to
//! the submitter holds it as its state (`deferred::JobCell`): one
//! allocation per job. Other `Worker`s get it boxed (`Worker::do_shared`'s
//! default). Whether the job is still wanted is decided in one place, the
//! record's `stage`, under its mutex:
//!
//! ```text
//! Queued(f) --worker takes f--> Running --outcome--> Done(r) --taken--> Consumed
//!     |                            |
//!     +--cancel / resolve on the loop (first wins)--> Done(Cancelled or given)
//!     +--discard (never run)--> Done(Cancelled)
//! ```
//!
//! Whether the loop may see the outcome is not part of the stage: a `Done`
//! posted by a worker stays invisible until the loop delivers the record.
//! That, and the rest of the loop's bookkeeping, is in `flags`, a word only
//! the loop thread touches (an atomic only because the record must be
//! `Sync`; it orders nothing, so plain relaxed loads and stores):
//! - `READY`: the outcome is visible (delivered, or settled on the loop);
//! - `COUNTED`: the job is still in the loop's count of jobs in flight;
//! - `PARKED`: an awaiter's waker is parked in the state.
//!
//! So the delivery takes no lock unless a waker is parked: it sets `READY`,
//! leaves the count and wakes the awaiter. Per job the common path locks
//! the record four times (was five or six): the loop's note of the backlog
//! slot (which can meet a worker already starting the job), the worker's
//! start and post, and the consumer's take. Each lock moves data in or
//! out of the record, which safe Rust cannot do with an atomic alone.
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
//!   `Cancelled` exactly once; a job refused at submission is resolved
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
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Waker};

use super::table::{InFlight, Threads};
use crate::deferred::{JobCell, span};
use crate::error::ThreadError;
use crate::loom::Mutex;
use crate::reactor::{self, Deliver, Remote};
use crate::threads::TaskKey;
use crate::threads::pool::{PanicCounter, SharedTask};

type Outcome<T> = Result<T, ThreadError>;

enum Stage<T, F> {
    Queued(F),
    Running,
    /// The outcome: posted by a worker (visible once delivered), or set on
    /// the loop.
    Done(Outcome<T>),
    Consumed,
}

struct State<T, F> {
    stage: Stage<T, F>,
    /// The awaiter's waker (loop-side only: set by a poll, taken on delivery).
    waker: Option<Waker>,
    /// Where it waits in the reactor pool's backlog, to withdraw it.
    task: Option<TaskKey>,
}

/// `flags`: the outcome is visible on the loop.
const READY: u8 = 1;
/// `flags`: still in the loop's count of jobs in flight.
const COUNTED: u8 = 2;
/// `flags`: a waker is parked in `State::waker`.
const PARKED: u8 = 4;

pub(super) struct Job<T, F> {
    state: Mutex<State<T, F>>,
    /// Loop-only bookkeeping (`READY`, `COUNTED`, `PARKED`); see the module
    /// docs.
    flags: AtomicU8,
    /// The loop's count of jobs in flight (loop-only, like `flags`).
    in_flight: Arc<InFlight>,
    remote: Remote,
    /// Where the job was submitted (the public entry point's caller).
    location: &'static Location<'static>,
    /// The submitter's `tracing` span (`None` when nothing listens): the
    /// closure runs in it, and so do the `Deferred`'s callbacks.
    span: Option<tracing::Span>,
}

impl<T, F> Job<T, F> {
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
}

impl<T, F> Job<T, F>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    pub(super) fn new(
        f: F,
        remote: Remote,
        in_flight: Arc<InFlight>,
        location: &'static Location<'static>,
    ) -> Arc<Self> {
        Arc::new(Job {
            state: Mutex::new(State {
                stage: Stage::Queued(f),
                waker: None,
                task: None,
            }),
            flags: AtomicU8::new(COUNTED),
            in_flight,
            remote,
            location,
            span: span::current(),
        })
    }

    /// On the loop, after submission: where the job waits in the reactor
    /// pool's backlog.
    pub(super) fn set_task(&self, task: TaskKey) {
        self.state.lock().task = Some(task);
    }

    /// On a worker thread: takes the closure out (`Queued → Running`), or
    /// `None` if the job was cancelled first.
    fn start(&self) -> Option<F> {
        let mut st = self.state.lock();
        if !matches!(st.stage, Stage::Queued(_)) {
            return None;
        }
        match std::mem::replace(&mut st.stage, Stage::Running) {
            Stage::Queued(f) => Some(f),
            _ => unreachable!("checked under the same lock"),
        }
    }

    /// Queues the record on its loop; a loop that has ended drops it. The
    /// record's own count is bumped for the message (not the reactor's,
    /// which every worker and the loop share).
    fn send(self: Arc<Self>) {
        let message: Arc<dyn Deliver> = self.clone();
        let _ = self.remote.deliver(message);
    }

    /// The job will never run (dropped by a stopped worker, a discarded
    /// backlog): report `Cancelled`, dropping the closure now.
    fn discard(self: Arc<Self>) {
        let f = {
            let mut st = self.state.lock();
            if !matches!(st.stage, Stage::Queued(_)) {
                return;
            }
            std::mem::replace(&mut st.stage, Stage::Done(Err(ThreadError::Cancelled)))
        };
        drop(f); // the captures go outside the lock
        self.send();
    }

    /// Stores the outcome and queues the record on the loop, if the job is
    /// still wanted.
    fn post(self: Arc<Self>, outcome: Outcome<T>) {
        {
            let mut st = self.state.lock();
            if !matches!(st.stage, Stage::Running) {
                drop(st);
                drop(outcome); // cancelled while running: dropped here
                return;
            }
            st.stage = Stage::Done(outcome);
        }
        self.send();
    }

    /// The submitter got its job back refused: nothing will be posted.
    pub(super) fn refuse(&self) {
        self.set_flags(READY);
        let old = std::mem::replace(&mut self.state.lock().stage, Stage::Consumed);
        drop(old);
    }

    /// On the loop: makes `outcome` the job's result unless it has one; the
    /// work is given up (unstarted work leaves the reactor pool's backlog;
    /// running work finishes detached; a posted, undelivered outcome is
    /// replaced). Hands `outcome` back if too late.
    fn settle(&self, outcome: Outcome<T>) -> Result<(), Outcome<T>> {
        let flags = self.flags();
        if flags & READY != 0 {
            return Err(outcome);
        }
        self.set_flags(READY);
        let (old, waker, task) = {
            let mut st = self.state.lock();
            let old = std::mem::replace(&mut st.stage, Stage::Done(outcome));
            (old, st.waker.take(), st.task.take())
        };
        let counted = flags & COUNTED != 0;
        // Only unstarted work is withdrawn from the backlog.
        let task = task.filter(|_| matches!(old, Stage::Queued(_)));
        drop(old); // the closure or a posted outcome, outside the lock
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
    fn take_ready(&self) -> Option<Outcome<T>> {
        if self.flags() & READY == 0 {
            return None;
        }
        self.take_done()
    }

    /// Takes the outcome if the stage holds one (visible or not), leaving
    /// `Consumed`; any other stage stays as it was.
    fn take_done(&self) -> Option<Outcome<T>> {
        let mut st = self.state.lock();
        match std::mem::replace(&mut st.stage, Stage::Consumed) {
            Stage::Done(outcome) => Some(outcome),
            other => {
                st.stage = other;
                None
            }
        }
    }

    /// The outcome for a consumer that cannot wait any longer: the one that
    /// arrived, or `Cancelled` (the job is given up). `None` if taken before.
    fn take_or_cancel(&self) -> Option<Outcome<T>> {
        let _ = self.settle(Err(ThreadError::Cancelled));
        self.take_ready()
    }

    /// Runs a callback with the outcome in the submitter's span.
    fn call_back(&self, f: Callback<T>, outcome: Outcome<T>) {
        span::in_span(self.span(), || f(outcome));
    }
}

impl<T, F> Deliver for Job<T, F>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    /// On the loop: the posted outcome becomes visible (unless the loop
    /// settled the job first), the job leaves the count, the awaiter wakes.
    /// No lock unless a waker is parked.
    fn deliver(self: Arc<Self>) {
        let flags = self.flags();
        self.set_flags(READY);
        let waker = if flags & PARKED != 0 {
            self.state.lock().waker.take()
        } else {
            None
        };
        if flags & COUNTED != 0 && self.in_flight.leave() {
            if let Some(threads) = Threads::of_remote(&self.remote) {
                threads.check_drained();
            }
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

type Callback<T> = Box<dyn FnOnce(Outcome<T>)>;

/// The job's side of its `Deferred` (see `deferred/job.rs`).
impl<T, F> JobCell<T, ThreadError> for Job<T, F>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        if self.flags() & READY != 0 {
            return match self.take_ready() {
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
            let _ = self.settle(Err(ThreadError::Cancelled));
            return match self.take_ready() {
                Some(outcome) => Poll::Ready(outcome),
                None => unreachable!("settled, and only this poll takes"),
            };
        }
        {
            let mut st = self.state.lock();
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

    fn resolve(&self, outcome: Outcome<T>) -> Result<(), Outcome<T>> {
        self.settle(outcome)
    }

    fn cancel(&self) {
        let _ = self.settle(Err(ThreadError::Cancelled));
    }

    fn on_result(self: Arc<Self>, f: Callback<T>) {
        if let Some(outcome) = self.take_ready() {
            return self.call_back(f, outcome);
        }
        let handle = reactor::current()
            .filter(|h| self.remote.is(&h.remote().downgrade()) && !h.has_ended());
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
struct OnResult<T, F> {
    job: Arc<Job<T, F>>,
    f: Option<Callback<T>>,
}

impl<T, F> Future for OnResult<T, F>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
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

impl<T, F> Drop for OnResult<T, F> {
    fn drop(&mut self) {
        if let Some(f) = self.f.take() {
            self.job.abandon(f);
        }
    }
}

impl<T, F> Job<T, F> {
    /// A waiting callback is dropped (its task was stopped at shutdown):
    /// it gets the outcome that arrived, or `Cancelled`, and the job is
    /// given up (a late outcome is dropped on its worker).
    fn abandon(&self, f: Callback<T>) {
        let flags = self.flags();
        self.set_flags(flags | READY);
        let old = std::mem::replace(&mut self.state.lock().stage, Stage::Consumed);
        let outcome = match old {
            Stage::Done(outcome) if flags & READY != 0 => outcome,
            other => {
                drop(other); // a closure or posted outcome, outside the lock
                Err(ThreadError::Cancelled)
            }
        };
        span::in_span(self.span(), || f(outcome));
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
        let outcome =
            catch_unwind(AssertUnwindSafe(|| span::in_span(self.span(), f))).map_err(|payload| {
                panics.count(&*payload);
                ThreadError::from_panic_payload(payload)
            });
        self.post(outcome);
    }

    fn discard(self: Arc<Self>) {
        Job::discard(self);
    }
}
