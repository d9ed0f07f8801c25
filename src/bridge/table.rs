//! The loop's side of the thread bridge: the reactor pool, the count of
//! jobs in flight, and the shutdown sequence that accounts for them.
//!
//! Invariants:
//! - touched only on the loop thread (a reactor extension);
//! - no borrow of a `RefCell` here is held while a waiter is resolved (it
//!   may run user callbacks that submit more jobs);
//! - at shutdown, results already posted to the inbox are delivered before
//!   what is left is given up: that happens after the reactor's final
//!   drain, when nothing can arrive any more.
//!
//! # One hand-over per turn
//!
//! A `defer_to_thread` made inside a loop turn while the loop already has
//! jobs in flight is not queued in the reactor pool at once: it is
//! registered (its `Deferred` returned, counted in flight) and kept in
//! `pending`, in order, until the turn's end (`Handle::at_turn_end`), or
//! until `HAND_OVER_CHUNK` jobs are kept. The hand-over queues them in one
//! hold of the pool's lock, with at most one wake per idle thread
//! (`ThreadPool::submit_shared_batch_at`), instead of a lock hold, a clock
//! read and possibly a wake per job. A lone job (a round trip: nothing in
//! flight) and a job submitted outside a turn (before `run`, between two
//! `run_until_complete`s) are queued at once.
//!
//! - Handed over by the turn's end, always: the turn-end hook runs after
//!   the turn's task pass, also in the turn that ends a
//!   `run_until_complete`, so nothing is kept while the loop is not
//!   turning.
//! - FIFO: anything submitted to a pool directly from this loop
//!   (`call_in_thread`, `thread_pool()`, a private pool) hands the kept
//!   jobs over first, so it queues behind them.
//! - Withdrawal: a kept job that is cancelled drops its closure at once
//!   (the record's stage), and the hand-over skips it; it is never counted
//!   by the pool.
//! - Statistics: the pool counts a kept job once it is handed over;
//!   `Handle::thread_pool()` hands over first, so statistics read through
//!   it are exact. A pool `Arc` held from earlier sees the turn's jobs at
//!   the hand-over.
//! - Shutdown: the `Before` and `During` steps hand over first, so the
//!   turn's jobs meet the queued-work policy and the pool's stop as jobs
//!   queued before them do; a job the pool refuses resolves `Stopped`.
//!
//! No table of jobs: each job's record is its `Deferred`'s state (see
//! `job.rs`), awaiters park their wakers in it and callbacks wait in local
//! tasks. The loop keeps only a count of jobs in flight, for the shutdown
//! drain ([`InFlight`]: each record holds it, so a delivery leaves the count
//! without looking this state up). A submitter finds this state through a
//! per-thread cache keyed by the reactor (`of_handle`), not the reactor's
//! extension list. Jobs still running when the loop ends (past the shutdown
//! deadline) can no longer be delivered; the tasks waiting on them are
//! stopped at the end of shutdown, and a stopped callback task hands its
//! callback `Cancelled` (`OnResult`'s drop), so nothing waits forever.

use std::cell::{Cell, RefCell};
use std::panic::Location;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::deferred::{Deferred, Resolver};
use crate::error::Cancelled;
use crate::pool::ThreadPool;
use crate::reactor::{self, Handle, Phase, QueuedWork, Remote, SystemEvent};
use crate::threads::{SharedTask, TaskKey};

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
    /// Reactor-pool jobs of this turn not yet handed over to the pool, in
    /// submission order (see [`defer`](Threads::defer)).
    pending: RefCell<Vec<(Arc<dyn Pending>, &'static Location<'static>)>>,
    /// Jobs submitted and neither delivered nor given up (each job's record
    /// holds it, so a delivery needs no lookup of this state).
    in_flight: Arc<InFlight>,
    /// Waiters for "no job left" (the shutdown drain).
    drained: RefCell<Vec<Resolver<(), Cancelled>>>,
    triggers_registered: Cell<bool>,
    /// Hands the kept jobs over (`hand_over`): registered for the turn's
    /// end when the first job of a turn is kept.
    turn_end: RefCell<Option<Rc<dyn Fn()>>>,
    /// The `During` shutdown step has stopped the pool: no more jobs.
    closed: Cell<bool>,
}

impl Drop for Threads {
    /// The reactor is going away: records this thread keeps for reuse hold
    /// its shared state (`recycle.rs`), so they go too.
    fn drop(&mut self) {
        super::recycle::clear();
    }
}

impl Threads {
    fn new() -> Threads {
        Threads {
            pool: RefCell::new(None),
            pending: RefCell::new(Vec::new()),
            in_flight: Arc::new(InFlight {
                jobs: AtomicUsize::new(0),
                watched: AtomicBool::new(false),
            }),
            drained: RefCell::new(Vec::new()),
            triggers_registered: Cell::new(false),
            turn_end: RefCell::new(None),
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
            let weak = Rc::downgrade(&threads);
            *threads.turn_end.borrow_mut() = Some(Rc::new(move || {
                if let Some(threads) = weak.upgrade() {
                    threads.hand_over();
                }
            }));
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
        if let Some(threads) = Threads::cached(remote) {
            return Some(threads);
        }
        let handle = reactor::current()?;
        if !handle.is_remote(remote) {
            return None; // not this reactor's loop thread
        }
        Some(Threads::of_uncached(&handle, remote))
    }

    /// [`of`](Threads::of) for a submitter on the loop thread: the cached
    /// answer when this thread's last lookup was for the same reactor (a
    /// pointer comparison against the handle, no `Remote` cloned, and a
    /// reference count), else `of`, cached.
    #[inline]
    pub(super) fn of_handle(handle: &Handle) -> Rc<Threads> {
        let cached = LAST.with(|last| match &*last.borrow() {
            Some((id, threads)) if handle.is(id) => threads.upgrade(),
            _ => None,
        });
        cached.unwrap_or_else(|| Threads::of_uncached(handle, &handle.remote()))
    }

    fn cached(remote: &Remote) -> Option<Rc<Threads>> {
        LAST.with(|last| match &*last.borrow() {
            Some((id, threads)) if remote.is(id) => threads.upgrade(),
            _ => None,
        })
    }

    /// `of`, remembered as this thread's last answer (`remote` is
    /// `handle`'s).
    fn of_uncached(handle: &Handle, remote: &Remote) -> Rc<Threads> {
        let threads = Threads::of(handle);
        let entry = (remote.downgrade(), Rc::downgrade(&threads));
        LAST.with(|last| *last.borrow_mut() = Some(entry));
        threads
    }

    /// Whether jobs can still be accepted: until the `During` shutdown step
    /// (so `Before` shutdown triggers may flush work through the pool, as
    /// Twisted allows), and never once the loop has ended.
    #[inline]
    pub(super) fn accepts(&self, handle: &Handle) -> bool {
        !self.closed.get() && !handle.has_ended()
    }

    fn register_shutdown(handle: &Handle, threads: &Rc<Threads>) {
        let weak = Rc::downgrade(threads);
        let policy = handle.queued_work_at_shutdown();
        handle.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
            let threads = weak.upgrade()?;
            // The turn's jobs join the backlog before the policy applies.
            threads.hand_over();
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
            // Jobs of this turn are handed over before the pool stops, so
            // they run as jobs submitted before them do.
            threads.hand_over();
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

    /// After the final drain: the jobs still in flight can no longer be
    /// delivered. Their waiting callbacks get `Cancelled` when the reactor
    /// stops its tasks; here they are reported and the count released.
    pub(super) fn fail_all(&self) {
        // None can be left (the `During` step handed them over and no job
        // is accepted since); if one were, the stopped pool refuses it.
        self.hand_over();
        let left = self.in_flight.jobs.load(Ordering::Relaxed);
        self.in_flight.jobs.store(0, Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(
                jobs = left,
                "weft: thread jobs still running at shutdown resolved as cancelled"
            );
        }
        self.check_drained();
    }

    /// The count a submitted job's record holds (see [`InFlight`]).
    pub(super) fn in_flight(&self) -> &Arc<InFlight> {
        &self.in_flight
    }

    /// A job was submitted: it is in flight until delivered or given up.
    #[inline]
    pub(super) fn register(&self) {
        self.in_flight.enter();
    }

    /// Whether a reactor-pool job submitted now should wait for the
    /// turn's hand-over ([`defer`](Threads::defer)): the loop is inside a
    /// turn (whose end hands it over) and has jobs in flight already, so
    /// more are likely in this turn. A lone job (a round trip) is handed
    /// over at once, with no wait.
    #[inline]
    pub(super) fn defers(&self, handle: &Handle) -> bool {
        self.in_flight.jobs.load(Ordering::Relaxed) > 0 && handle.in_turn()
    }

    /// Keeps a reactor-pool job (registered in flight, its `Deferred`
    /// returned) until the hand-over: when [`HAND_OVER_CHUNK`] jobs are
    /// waiting, or at the end of `handle`'s turn (registered with the first
    /// job kept: a turn that keeps none runs no hook).
    #[inline(always)]
    pub(super) fn defer(
        &self,
        handle: &Handle,
        job: Arc<dyn Pending>,
        location: &'static Location<'static>,
    ) {
        let waiting = {
            let mut pending = self.pending.borrow_mut();
            pending.push((job, location));
            pending.len()
        };
        if waiting == 1 {
            self.hand_over_at_turn_end(handle);
        }
        if waiting >= HAND_OVER_CHUNK {
            self.hand_over();
        }
    }

    #[inline(never)]
    fn hand_over_at_turn_end(&self, handle: &Handle) {
        if let Some(hook) = self.turn_end.borrow().clone() {
            handle.at_turn_end(hook);
        }
    }

    /// Hands the pending jobs over to the reactor pool, in order, in one
    /// hold of its lock; a job cancelled meanwhile is skipped (its closure
    /// went with the cancel). If the pool refuses work (stopped), each
    /// still-wanted job is resolved with [`ThreadError::Stopped`], as a
    /// refused submission is. Call with no borrow of this state held.
    ///
    /// [`ThreadError::Stopped`]: crate::ThreadError::Stopped
    #[inline]
    pub(super) fn hand_over(&self) {
        if !self.pending.borrow().is_empty() {
            self.hand_over_now();
        }
    }

    #[inline(never)]
    fn hand_over_now(&self) {
        let mut jobs = std::mem::take(&mut *self.pending.borrow_mut());
        if jobs.is_empty() {
            return;
        }
        let pool = self.pool.borrow().clone();
        let mut rest = jobs.drain(..);
        // A job cancelled while kept is skipped in the same pass that
        // queues the others (one dynamic call per job, no second pass
        // over the list); its record is let go after the pool's lock.
        let mut skipped = Vec::new();
        let queued = pool.is_some_and(|pool| {
            pool.submit_shared_batch_at(|task| {
                loop {
                    let (job, location) = rest.next()?;
                    if job.queue_as(task) {
                        return Some((job as Arc<dyn SharedTask>, location));
                    }
                    skipped.push(job);
                }
            })
        });
        if !queued {
            // Refused (stopped): each still-wanted job resolves `Stopped`
            // (one settled on the loop already keeps its outcome).
            for (job, _) in rest.by_ref() {
                job.stopped();
            }
        }
        drop(rest);
        drop(skipped);
        // Keep the list's room for the next turn.
        let mut pending = self.pending.borrow_mut();
        if pending.is_empty() {
            *pending = jobs;
        }
    }

    /// Withdraws a cancelled job from the reactor pool's backlog.
    pub(super) fn withdraw(&self, task: TaskKey) {
        let pool = self.pool.borrow().clone();
        if let Some(pool) = pool {
            pool.withdraw(task);
        }
    }

    /// Resolves the drain's waiters once no job is left.
    pub(super) fn check_drained(&self) {
        if self.in_flight.jobs.load(Ordering::Relaxed) == 0 {
            self.in_flight.watched.store(false, Ordering::Relaxed);
            let waiters = std::mem::take(&mut *self.drained.borrow_mut());
            for w in waiters {
                let _ = w.callback(());
            }
        }
    }

    /// A `Deferred` that fires once no registered job is left.
    fn when_drained(&self) -> Deferred<(), Cancelled> {
        let d = Deferred::new();
        if self.in_flight.jobs.load(Ordering::Relaxed) == 0 {
            let _ = d.callback(());
        } else {
            self.drained.borrow_mut().push(d.resolver());
            self.in_flight.watched.store(true, Ordering::Relaxed);
        }
        d
    }
}

/// The loop's count of jobs in flight, shared by `Arc` with every job's
/// record, so the delivery of a job leaves the count without looking up the
/// loop's bridge state (a thread-local cache and a reference count, about
/// 100 instructions per job); only the job that empties the count while
/// the shutdown drain waits looks it up.
///
/// Loop thread only: the fields are atomics only because the records that
/// hold this are `Send`; every access is a relaxed load or store made on the
/// loop thread (submission, delivery, the `Deferred`'s methods), never a
/// read-modify-write, and nothing is ordered by them.
pub(super) struct InFlight {
    jobs: AtomicUsize,
    /// The shutdown drain waits for the count to reach zero.
    watched: AtomicBool,
}

impl InFlight {
    #[inline]
    fn enter(&self) {
        let n = self.jobs.load(Ordering::Relaxed);
        self.jobs.store(n + 1, Ordering::Relaxed);
    }

    /// A job left the count (delivered, or given up on the loop). True if
    /// that emptied it while the drain waits: the caller then resolves the
    /// drain ([`Threads::check_drained`]).
    #[inline]
    pub(super) fn leave(&self) -> bool {
        let n = self.jobs.load(Ordering::Relaxed).saturating_sub(1);
        self.jobs.store(n, Ordering::Relaxed);
        n == 0 && self.watched.load(Ordering::Relaxed)
    }
}

/// The most reactor-pool jobs kept on the loop before they are handed over
/// within the turn, so the pool's threads start on a long turn's jobs
/// while the loop still submits (and the kept list stays bounded).
///
/// Why this many: with 1000 jobs per turn (`defer_1000_in_flight`) on an
/// otherwise idle 2-core machine, paired against std's pool in the same
/// rounds, a chunk of 64 ran at 1.06-1.07 of std's time, 16 at 1.11, 256
/// at 1.91 and a hand-over only at the turn's end (or every 1024) at
/// 1.58-1.68 (21-41 alternating rounds each): the threads run a chunk
/// while the loop builds the next, and that overlap is worth more than the
/// futex wakes it costs. On a saturated machine (every core busy with
/// other work) the order flips: the turn-end hand-over then took 0.77-0.80
/// of the CPU, as the threads could not overlap with the loop anyway.
pub(super) const HAND_OVER_CHUNK: usize = 64;

/// A reactor-pool job kept on the loop until the turn's hand-over
/// ([`Threads::defer`]); loop thread only.
pub(super) trait Pending: SharedTask {
    /// About to be queued with this key: if it is still wanted (not
    /// resolved on the loop: a cancel resolves it), notes the key, so a
    /// cancel withdraws it from now on, and says yes; else says no (it is
    /// not queued).
    fn queue_as(&self, task: TaskKey) -> bool;
    /// The pool refused it: resolve it with `Stopped`.
    fn stopped(&self);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::rc::Rc;

    use super::Threads;
    use crate::Reactor;

    /// The per-thread cache is keyed by the handle itself (no `Remote`
    /// cloned): alternating reactors on one thread each get their own
    /// bridge state, the one their extension holds, and a handle never
    /// matches another reactor's key.
    #[test]
    fn the_cached_bridge_state_is_always_the_handles_own() {
        let a = Reactor::new().unwrap();
        let b = Reactor::new().unwrap();
        let (ha, hb) = (a.handle(), b.handle());
        let (ra, rb) = (ha.remote(), hb.remote());
        assert!(ha.is_remote(&ra) && !ha.is_remote(&rb));
        assert!(ha.is(&ra.downgrade()) && !ha.is(&rb.downgrade()));
        for _ in 0..3 {
            let ta = Threads::of_handle(&ha);
            let tb = Threads::of_handle(&hb);
            assert!(!Rc::ptr_eq(&ta, &tb));
            assert!(Rc::ptr_eq(&ta, &Threads::of(&ha)));
            assert!(Rc::ptr_eq(&tb, &Threads::of(&hb)));
            assert!(Rc::ptr_eq(&Threads::of_handle(&hb), &tb));
        }
    }
}
