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
//! Queued(f) --worker takes f--> Running --outcome--> Posted(r) --loop delivers--> Ready(r) --taken--> Consumed
//!     |                            |                    |
//!     +--cancel / resolve on the loop (first wins)------+----------------------> Ready(Cancelled or given)
//!     +--discard (never run)--> Posted(Cancelled)
//! ```
//!
//! The record carries only `Send` data: the awaiter's `Waker` is parked in
//! it, and callbacks run in a local task that awaits it (`OnResult`), so the
//! loop needs no table of resolvers. The loop only counts the jobs in flight
//! (for the shutdown drain); `counted` says whether this job is still among
//! them.
//!
//! Invariants:
//! - the closure runs at most once, and only if the stage held `Queued` when
//!   the worker looked;
//! - a cancelled job's closure and captures are dropped by the cancel itself,
//!   not when (or if) a worker reaches the job;
//! - an outcome becomes visible (`Ready`) only on the loop, by delivery or by
//!   a cancel or resolution there: never synchronously from a worker;
//! - a job the pool or worker will never run (dropped unrun) is reported
//!   `Cancelled` exactly once; a job refused at submission is resolved
//!   `Stopped` by the submitter and posts nothing;
//! - the worker posts a completion only if the stage was still `Running`, so
//!   a cancelled job's late result costs no trip to the loop;
//! - the job leaves the loop's in-flight count exactly once (`counted`), at
//!   delivery or when the loop gives it up, whichever comes first.

use std::future::Future;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::table::Threads;
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
    /// On the inbox, not yet delivered.
    Posted(Outcome<T>),
    /// Delivered (or resolved on the loop), waiting for its consumer.
    Ready(Outcome<T>),
    Consumed,
}

struct State<T, F> {
    stage: Stage<T, F>,
    /// The awaiter's waker (loop-side only: set by a poll, taken on delivery).
    waker: Option<Waker>,
    /// Still in the loop's count of jobs in flight.
    counted: bool,
    /// Where it waits in the reactor pool's backlog, to withdraw it.
    task: Option<TaskKey>,
}

pub(super) struct Job<T, F> {
    state: Mutex<State<T, F>>,
    remote: Remote,
    /// Where the job was submitted (the public entry point's caller).
    location: &'static Location<'static>,
    /// The submitter's `tracing` span (`None` when nothing listens): the
    /// closure runs in it, and so do the `Deferred`'s callbacks.
    span: Option<tracing::Span>,
}

impl<T, F> Job<T, F>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    pub(super) fn new(f: F, remote: Remote, location: &'static Location<'static>) -> Arc<Self> {
        Arc::new(Job {
            state: Mutex::new(State {
                stage: Stage::Queued(f),
                waker: None,
                counted: true,
                task: None,
            }),
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

    /// The job will never run (dropped by a stopped worker, a discarded
    /// backlog): report `Cancelled`, dropping the closure now.
    fn discard(self: Arc<Self>) {
        let f = {
            let mut st = self.state.lock();
            if !matches!(st.stage, Stage::Queued(_)) {
                return;
            }
            std::mem::replace(&mut st.stage, Stage::Posted(Err(ThreadError::Cancelled)))
        };
        drop(f); // the captures go outside the lock
        let remote = self.remote.clone();
        let _ = remote.deliver(self);
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
            st.stage = Stage::Posted(outcome);
        }
        let remote = self.remote.clone();
        // A loop that has ended drops the record.
        let _ = remote.deliver(self);
    }

    /// The submitter got its job back refused: nothing will be posted.
    pub(super) fn refuse(&self) {
        let old = std::mem::replace(&mut self.state.lock().stage, Stage::Consumed);
        drop(old);
    }

    /// On the loop: makes `outcome` the job's result unless it has one; the
    /// work is given up (unstarted work leaves the reactor pool's backlog;
    /// running work finishes detached). Hands `outcome` back if too late.
    fn settle(&self, outcome: Outcome<T>) -> Result<(), Outcome<T>> {
        let (old, waker, counted, task) = {
            let mut st = self.state.lock();
            if matches!(st.stage, Stage::Ready(_) | Stage::Consumed) {
                return Err(outcome);
            }
            let old = std::mem::replace(&mut st.stage, Stage::Ready(outcome));
            (
                old,
                st.waker.take(),
                std::mem::replace(&mut st.counted, false),
                st.task.take(),
            )
        };
        let unstarted = matches!(old, Stage::Queued(_));
        drop(old); // the closure or a posted outcome, outside the lock
        if counted || (unstarted && task.is_some()) {
            if let Some(threads) = Threads::of_remote(&self.remote) {
                if let (true, Some(task)) = (unstarted, task) {
                    threads.withdraw(task);
                }
                if counted {
                    threads.job_done();
                }
            }
        }
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// The outcome if it is ready (taking it), else `None`.
    fn take_ready(&self) -> Option<Outcome<T>> {
        let mut st = self.state.lock();
        if !matches!(st.stage, Stage::Ready(_)) {
            return None;
        }
        match std::mem::replace(&mut st.stage, Stage::Consumed) {
            Stage::Ready(outcome) => Some(outcome),
            _ => unreachable!("checked under the same lock"),
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
        span::in_span(self.span.as_ref(), || f(outcome));
    }
}

impl<T, F> Deliver for Job<T, F>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    fn deliver(self: Arc<Self>) {
        let (waker, counted) = {
            let mut st = self.state.lock();
            if matches!(st.stage, Stage::Posted(_)) {
                let Stage::Posted(outcome) = std::mem::replace(&mut st.stage, Stage::Consumed)
                else {
                    unreachable!("checked under the same lock")
                };
                st.stage = Stage::Ready(outcome);
            }
            (st.waker.take(), std::mem::replace(&mut st.counted, false))
        };
        if counted {
            if let Some(threads) = Threads::of_remote(&self.remote) {
                threads.job_done();
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
        let mut st = self.state.lock();
        match std::mem::replace(&mut st.stage, Stage::Consumed) {
            Stage::Ready(outcome) => Poll::Ready(outcome),
            Stage::Consumed => {
                drop(st);
                panic!("Deferred polled after it returned its result");
            }
            // The loop has ended and will never deliver: give the outcome
            // that arrived after the end, else `Cancelled`, so a `Deferred`
            // polled late (outside any task) never stays pending forever.
            Stage::Posted(outcome) if self.remote.has_ended() => Poll::Ready(outcome),
            other if self.remote.has_ended() => {
                st.stage = other;
                drop(st);
                let _ = self.settle(Err(ThreadError::Cancelled));
                match self.take_ready() {
                    Some(outcome) => Poll::Ready(outcome),
                    None => unreachable!("settled, and only this poll takes"),
                }
            }
            other => {
                st.stage = other;
                match &mut st.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    fn is_resolved(&self) -> bool {
        matches!(self.state.lock().stage, Stage::Ready(_) | Stage::Consumed)
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
        let old = std::mem::replace(&mut self.state.lock().stage, Stage::Consumed);
        let outcome = match old {
            Stage::Ready(outcome) => outcome,
            other => {
                drop(other); // a closure or posted outcome, outside the lock
                Err(ThreadError::Cancelled)
            }
        };
        span::in_span(self.span.as_ref(), || f(outcome));
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
        let outcome = catch_unwind(AssertUnwindSafe(|| span::in_span(self.span.as_ref(), f)))
            .map_err(|payload| {
                panics.count(&*payload);
                ThreadError::from_panic_payload(payload)
            });
        self.post(outcome);
    }

    fn discard(self: Arc<Self>) {
        Job::discard(self);
    }
}
