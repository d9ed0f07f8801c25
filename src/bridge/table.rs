//! The loop's side of the thread bridge: the reactor pool, the `Resolver`s
//! of jobs in flight, and the shutdown sequence that accounts for them.
//!
//! Invariants:
//! - touched only on the loop thread (a reactor extension);
//! - no borrow of a `RefCell` here is held while a `Resolver` is resolved or
//!   dropped (either may run user callbacks that submit more jobs);
//! - at shutdown, results already posted to the inbox are delivered before
//!   what is left is resolved `Cancelled`: the "fail the rest" step is itself
//!   queued on the inbox after the pool has stopped, so FIFO order puts it
//!   behind every completion the pool's threads posted, whichever way the
//!   reactor orders its own inbox drain and its shutdown triggers.
//!
//! Why a table at all, when the job record (`job.rs`) already carries the
//! result to the loop: the `Resolver` is `!Send` (an `Rc` cell, so that
//! `Deferred` callbacks can be plain `FnOnce` closures), and the record
//! must be `Send + Sync` to reach a pool thread. Holding the `Resolver` in
//! the record would need a thread-checked wrapper (unsafe code, or one that
//! panics if a pool thread drops the last `Arc`, which happens when a loop
//! has ended). A `Deferred` that polled the record directly would still
//! have to be found by the shutdown (`fail_all` resolves what will never be
//! delivered), i.e. by a table. So the table stays, made cheap: an index
//! (no hashing), a generation against stale keys, and one type check when
//! the typed resolver is taken back (`AnyResolver::unerase`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use super::slab::{Entry, JobSlab};
use crate::deferred::{AnyResolver, Deferred, JobTable, Resolver};
use crate::error::{Cancelled, ThreadError};
use crate::pool::ThreadPool;
use crate::reactor::{self, Handle, Phase, QueuedWork, Remote, SystemEvent};
use crate::threads::TaskKey;

/// A reactor's identity (see [`Remote::downgrade`]) and its bridge state.
type LastTable = (
    std::sync::Weak<dyn std::any::Any + Send + Sync>,
    std::rc::Weak<Threads>,
);

thread_local! {
    /// The bridge state the last completion on this thread went to.
    static LAST: RefCell<Option<LastTable>> = const { RefCell::new(None) };
}

/// Loop-local bridge state, kept as a reactor extension.
pub(super) struct Threads {
    pub(super) pool: RefCell<Option<Arc<ThreadPool>>>,
    /// Job key → its `Resolver<T>` (type-erased), until delivered.
    jobs: RefCell<JobSlab>,
    /// Waiters for "no job left" (the shutdown drain).
    drained: RefCell<Vec<Resolver<(), Cancelled>>>,
    triggers_registered: Cell<bool>,
    /// The `During` shutdown step has stopped the pool: no more jobs.
    closed: Cell<bool>,
}

impl Threads {
    fn new() -> Threads {
        Threads {
            pool: RefCell::new(None),
            jobs: RefCell::new(JobSlab::default()),
            drained: RefCell::new(Vec::new()),
            triggers_registered: Cell::new(false),
            closed: Cell::new(false),
        }
    }

    /// The bridge state of `handle`'s reactor, created on first use together
    /// with the shutdown triggers that drain every job registered here (from
    /// the reactor pool, a private pool or any worker).
    pub(super) fn of(handle: &Handle) -> Rc<Threads> {
        let threads = handle.extension(Threads::new);
        if !threads.triggers_registered.replace(true) {
            Threads::register_shutdown(handle, &threads);
        }
        threads
    }

    /// On the loop thread of `remote`'s reactor: its bridge state, if it
    /// has one. Completions come in batches from one reactor, so the last
    /// answer is cached per thread, keyed by the reactor's identity (a weak
    /// reference, so the key cannot be reused by another reactor while
    /// cached): most completions skip `reactor::current()` and the
    /// extension lookup.
    pub(super) fn of_remote(remote: &Remote) -> Option<Rc<Threads>> {
        let cached = LAST.with(|last| match &*last.borrow() {
            Some((id, threads)) if remote.is(id) => threads.upgrade(),
            _ => None,
        });
        if cached.is_some() {
            return cached;
        }
        let handle = reactor::current()?;
        if !handle.remote().is(&remote.downgrade()) {
            return None; // not this reactor's loop thread
        }
        let threads = Threads::of(&handle);
        let entry = (remote.downgrade(), Rc::downgrade(&threads));
        LAST.with(|last| *last.borrow_mut() = Some(entry));
        Some(threads)
    }

    /// Whether jobs can still be accepted: until the `During` shutdown step
    /// (so `Before` shutdown triggers may flush work through the pool, as
    /// Twisted allows), and never once the loop has ended.
    pub(super) fn accepts(&self, handle: &Handle) -> bool {
        !self.closed.get() && !handle.has_ended()
    }

    fn register_shutdown(handle: &Handle, threads: &Rc<Threads>) {
        let weak = Rc::downgrade(threads);
        let policy = handle.queued_work_at_shutdown();
        handle.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
            let threads = weak.upgrade()?;
            // A reactor that never ran never started its pool: the queued
            // work cannot run, so it is cancelled rather than waited for.
            let never_ran = reactor::current().is_none_or(|h| !h.has_started());
            if policy == QueuedWork::Cancel || never_ran {
                let pool = threads.pool.borrow().clone();
                if let Some(pool) = pool {
                    let n = pool.discard_backlog();
                    if n > 0 {
                        tracing::info!(
                            discarded = n,
                            "weft: queued pool work cancelled at shutdown"
                        );
                    }
                }
            }
            Some(threads.when_drained())
        });
        let weak = Rc::downgrade(threads);
        handle.add_system_event_trigger(Phase::During, SystemEvent::Shutdown, move || {
            let Some(threads) = weak.upgrade() else { return };
            threads.closed.set(true);
            // The join is budgeted on the reactor's clock, so a dropped
            // reactor (deadline now) does not wait here at all.
            let Some(handle) = reactor::current() else { return };
            let left = handle.shutdown_time_left();
            let pool = threads.pool.borrow().clone();
            if let Some(pool) = pool {
                // Joined while answering the loop's inbox: a pool thread in
                // `blocking_call_from_thread` gets its answer, not a deadlock.
                let report = pool.stop_serving(left, || {
                    handle.run_queued_calls();
                });
                if !report.is_complete() {
                    tracing::warn!(?report, "weft: reactor pool did not finish within the shutdown deadline; its threads are left detached");
                }
            }
        });
        // Completions the stopped pool posted reach the inbox before it
        // closes; the reactor's final drain delivers them, and only then is
        // what is left failed.
        let weak = Rc::downgrade(threads);
        handle.after_final_drain(move || {
            if let Some(threads) = weak.upgrade() {
                threads.fail_all();
            }
        });
    }

    /// Resolves every job still registered `Cancelled`: it can no longer be
    /// delivered.
    pub(super) fn fail_all(&self) {
        let left: Vec<AnyResolver> = self.jobs.borrow_mut().drain();
        if !left.is_empty() {
            tracing::warn!(
                jobs = left.len(),
                "weft: thread jobs still running at shutdown resolved as cancelled"
            );
        }
        for r in left {
            r.fail(ThreadError::Cancelled);
        }
        self.check_drained();
    }

    /// The key the next [`register`](Threads::register) will use; nothing
    /// may use the table in between.
    pub(super) fn next_key(&self) -> u64 {
        self.jobs.borrow().next_key()
    }

    pub(super) fn register<T: 'static>(
        &self,
        key: u64,
        resolver: Resolver<T>,
        task: Option<TaskKey>,
    ) {
        let entry = Entry {
            resolver: resolver.erase(),
            task,
        };
        self.jobs.borrow_mut().insert(key, entry);
    }

    pub(super) fn take<T: 'static>(&self, id: u64) -> Option<Resolver<T>> {
        let entry = self.jobs.borrow_mut().remove(id);
        self.check_drained();
        entry.and_then(|e| e.resolver.unerase())
    }

    fn check_drained(&self) {
        if self.jobs.borrow().is_empty() {
            let waiters = std::mem::take(&mut *self.drained.borrow_mut());
            for w in waiters {
                let _ = w.callback(());
            }
        }
    }

    /// A `Deferred` that fires once no registered job is left.
    fn when_drained(&self) -> Deferred<(), Cancelled> {
        let d = Deferred::new();
        if self.jobs.borrow().is_empty() {
            let _ = d.callback(());
        } else {
            self.drained.borrow_mut().push(d.resolver());
        }
        d
    }
}

/// A cancelled job's entry goes (its canceller resolves the `Deferred`); an
/// unstarted job of the reactor pool also leaves the pool's backlog at once.
impl JobTable for Threads {
    fn forget_job(&self, key: u64, unstarted: bool) {
        let entry = self.jobs.borrow_mut().remove(key);
        if let Some(Entry {
            task: Some(task), ..
        }) = &entry
        {
            let pool = self.pool.borrow().clone();
            if let (true, Some(pool)) = (unstarted, pool) {
                pool.withdraw(*task);
            }
        }
        drop(entry);
        self.check_drained();
    }
}
