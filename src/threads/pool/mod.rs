//! `ThreadPool`: Twisted's thread pool, with a shared-queue fast path.
//!
//! Twisted's pool is a `Team` with a `LockWorker` coordinator and one
//! `ThreadWorker` per thread; [`threads::pool`](crate::threads::pool) keeps
//! that faithful port. `ThreadPool` keeps the same rules (sizes, backlog,
//! shrink debt, quit) on cheaper machinery: the Team protocol costs four
//! allocations, several `Arc` clones, a contended coordinator lock and a
//! futex wake per task. There is one `ThreadPool`, and it is itself a
//! [`Worker`], so everything written against workers takes it.
//!
//! # Layout
//!
//! - `state.rs`: every decision as a plain function on the state behind the
//!   pool's one mutex; unit-tested with a manual clock and no threads.
//! - `sizes.rs`: the size rules (`start`, `adjust_pool_size`, `stop`) as
//!   transitions of the same state.
//! - `queue.rs`: the FIFO with sequence numbers, so unstarted work can be
//!   withdrawn in O(1).
//! - `inbox.rs`: where `call_in_thread` queues without the lock while the
//!   pool is busy and the submission needs no decision.
//! - `thread.rs`: starting threads (outside the lock), their loop, and the
//!   exit guard that never lets a dying thread swallow work.
//! - `config.rs`: builder, statistics, stop report.
//! - `stop.rs`: `stop` and its variants, discarding the backlog.
//! - `spin.rs`: the bounded spin of an idle thread before it parks.
//!
//! # Design
//!
//! A submission boxes the closure once (the box is the queue item) or queues
//! the caller's own `Arc` ([`SharedTask`]); it pushes it and, if a thread is
//! idle and no claim is in flight, moves one idle thread to busy with a claim
//! and wakes one sleeper. The woken thread, on taking its item, wakes the
//! next idle thread if work still waits (one wake in flight, like tokio's
//! `num_notify`). Otherwise the item waits in the backlog, which a busy
//! thread drains itself when its task ends: under load nobody sleeps and
//! nobody is woken.
//!
//! While a thread runs a task and a submission would change no count (no
//! thread to wake or start, the spare armed), the state opens the inbox's
//! gate, and `call_in_thread` of a closure that fits the slot claims an
//! inbox slot with one compare-exchange instead of taking the lock the
//! threads take: a busy burst's submitter then shares no lock with them.
//! Every other hold of the lock closes the gate first and queues what the
//! inbox holds (`inbox.rs` has the rule).
//!
//! # Growth
//!
//! Twisted adds a thread whenever no thread is idle, so a burst of short
//! tasks grows the pool to `max` although the threads it has would drain it
//! at once. Here a task that finds every thread busy starts a new thread at
//! once while fewer than `available_parallelism()` threads are busy, and is
//! otherwise left to the *spare*: one thread that watches the tasks taken
//! from the queue and, if the backlog sees no progress for 1 ms of the pool's
//! clock (every thread blocked), becomes a worker and leaves a new spare.
//! [`start`](ThreadPool::start) and
//! [`adjust_pool_size`](ThreadPool::adjust_pool_size) grow exactly as Twisted
//! does: to `min`, then one thread per backlogged task, capped at `max`.
//!
//! # Invariants and deliberate differences from Twisted
//!
//! - No user code runs under the pool's lock: the thread factory is called
//!   after the new thread is counted and the lock released; a failure, a
//!   panic or a body dropped unrun is undone. Closures and their captures are
//!   dropped outside the lock too (the pool's clock is the one exception,
//!   read under the lock).
//! - A pool thread that dies for any reason hands its claim back and gets the
//!   backlog another thread, or reports it (see `thread.rs`).
//! - Before [`start`](ThreadPool::start) the limit is 0: work is backlogged
//!   and no thread exists.
//! - [`stop`](ThreadPool::stop) is idempotent (Twisted raises `AlreadyQuit`
//!   the second time); from then on submissions get `Err(AlreadyQuit(f))`
//!   with the closure (Twisted drops the work silently). On a reactor's loop
//!   thread it does not wait (pool work may be waiting for that loop): the
//!   threads finish detached and the [`StopReport`] says so.
//! - [`adjust_pool_size`](ThreadPool::adjust_pool_size) counts only threads
//!   not yet marked to quit, so it reaches exactly the target even while
//!   threads are busy (Twisted over-shrinks, down to zero threads).
//! - Idle threads above `min` exit after the keep-alive (default
//!   [`DEFAULT_KEEP_ALIVE`], on the pool's [`Clock`](crate::Clock)); Twisted
//!   never reaps. Every duration may be up to [`Duration::MAX`](std::time::Duration::MAX) ("forever").
//! - Unstarted work can be withdrawn
//!   ([`call_in_thread_cancellable`](ThreadPool::call_in_thread_cancellable)):
//!   it leaves the queue and the statistics at once, and its closure is
//!   dropped.
//! - A thread that cannot be started is logged and the task stays in the
//!   backlog. Only when the pool has no thread at all, and cannot start one,
//!   is the submission refused (`Err(AlreadyQuit(f))`). Twisted loses the
//!   task.
//! - Thread names are `{name}-{n}` with `n` counting up from 0 and never
//!   reused (Twisted's names repeat after a shrink).
//! - A panicking task is caught; the thread is reused. Fire-and-forget
//!   panics are logged once (`tracing::error!`); with a callback, the callback
//!   gets `Err(ThreadError::Panicked { .. })`.
//! - Work left when the pool stops with no thread to run it is discarded with
//!   a log line: closures are dropped (their destructors run) and shared
//!   records are told ([`SharedTask::discard`]); nothing waits forever.

mod batch;
mod cancel;
mod config;
mod inbox;
mod jobs;
mod queue;
mod shared;
mod sizes;
mod spin;
mod state;
mod stop;
mod thread;

#[cfg(all(test, not(loom)))]
mod tests;

use std::fmt;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};

pub use cancel::CancelHandle;
pub use config::{
    DEFAULT_HISTOGRAMS, DEFAULT_KEEP_ALIVE, DEFAULT_MAX_THREADS, DEFAULT_MIN_THREADS, JobInfo,
    PoolStatistics, StopReport, ThreadPoolBuilder,
};
pub(crate) use queue::TaskKey;
pub(crate) use shared::{PanicCounter, SharedTask};

use self::cancel::withdraw;
use self::config::check_size;
use self::queue::{Call, Item, Meta, Queued, message_and_drop};
use self::state::{Role, Wake};
use self::thread::Core;
use super::{SharedJob, Task, Worker};
use crate::error::{AlreadyQuit, PoolConfigError, ThreadError};
use crate::inline_fn;
use crate::loom::{Arc, MutexGuard};

/// `call_in_thread_with_callback`'s item.
struct WithCallback<F, C>(F, C);

impl<T, F, C> Call for WithCallback<F, C>
where
    F: FnOnce() -> T + Send,
    C: FnOnce(Result<T, ThreadError>) + Send,
{
    fn call(self: Box<Self>, panics: &PanicCounter<'_>) -> Option<String> {
        let WithCallback(f, on_result) = *self;
        // The callback gets the original payload (it may `resume_unwind` it);
        // the panic is counted before the callback can report it.
        let result = catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
            panics.count_silently();
            ThreadError::from_panic_payload(payload)
        });
        match catch_unwind(AssertUnwindSafe(move || on_result(result))) {
            Ok(()) => None,
            Err(payload) => Some(message_and_drop(payload)),
        }
    }
}

/// Twisted's thread pool: between `min` and `max` threads running closures.
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use weft::ThreadPool;
///
/// let pool = ThreadPool::new(1, 4).unwrap();
/// pool.start();
/// let (tx, rx) = mpsc::channel();
/// pool.call_in_thread_with_callback(|| 6 * 7, move |result| tx.send(result).unwrap())
///     .unwrap_or_else(|_| unreachable!());
/// assert_eq!(rx.recv().unwrap(), Ok(42));
/// pool.stop();
/// assert!(pool.call_in_thread(|| ()).is_err());
/// ```
///
/// # Dropping
///
/// Dropping a pool that was not stopped quits it without waiting: running
/// and backlogged work still finishes, then the threads exit.
pub struct ThreadPool {
    core: Arc<Core>,
}

impl Default for ThreadPool {
    /// A pool of Twisted's default size (5..=20), not started.
    fn default() -> Self {
        ThreadPool::builder()
            .build()
            .expect("the default pool configuration is valid")
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("name", &self.core.name)
            .field("statistics", &self.statistics())
            .finish()
    }
}

impl ThreadPool {
    /// A pool of `min..=max` threads with the default name and keep-alive,
    /// not started.
    ///
    /// # Errors
    ///
    /// [`PoolConfigError`] when `max` is 0 or `min > max`.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::new(12, 22).unwrap();
    /// assert_eq!((pool.statistics().min, pool.statistics().max), (12, 22));
    /// ```
    pub fn new(min: usize, max: usize) -> Result<ThreadPool, PoolConfigError> {
        ThreadPool::builder().min(min).max(max).build()
    }

    /// A builder with Twisted's defaults (5..=20), named `weft-pool`.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::builder().name("io").max(2).min(1).build().unwrap();
    /// # drop(pool);
    /// ```
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::default()
    }

    /// Starts `min` threads, then one per backlogged task, capped at `max`.
    ///
    /// A second call does nothing, and so does a call after
    /// [`stop`](Self::stop) (a pool cannot be restarted).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::new(3, 10).unwrap();
    /// assert_eq!(pool.statistics().threads_alive, 0);
    /// pool.start();
    /// assert_eq!(pool.statistics().threads_alive, 3);
    /// pool.stop();
    /// ```
    pub fn start(&self) {
        let tickets = self.core.locked().start();
        self.start_threads(tickets);
        let st = self.core.locked();
        if st.started && st.threads() == 0 && st.backlog() > 0 {
            tracing::error!(
                pool = %self.core.name,
                backlog = st.backlog(),
                "pool started without any thread; its backlog waits for one"
            );
        }
    }

    fn start_threads(&self, tickets: Vec<state::Ticket>) {
        for ticket in tickets {
            Core::start_thread(&self.core, ticket);
        }
    }

    /// Runs `f` on a pool thread.
    ///
    /// Before [`start`](Self::start) the work waits in the backlog. A panic in
    /// `f` is caught and logged once; the thread is reused.
    ///
    /// # Errors
    ///
    /// `Err(AlreadyQuit(f))`, handing `f` back, once the pool is stopping or
    /// stopped, or when the pool is started but has no thread and cannot
    /// start one (that case is also logged).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::new(0, 2).unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// pool.call_in_thread(move || tx.send("ran").unwrap()).unwrap_or_else(|_| unreachable!());
    /// pool.start(); // work queued before start runs now
    /// assert_eq!(rx.recv().unwrap(), "ran");
    /// pool.stop();
    /// ```
    #[track_caller]
    pub fn call_in_thread<F>(&self, f: F) -> Result<(), AlreadyQuit<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        self.call_in_thread_at(f, Location::caller())
    }

    /// [`call_in_thread`](Self::call_in_thread) on behalf of the code at
    /// `location` (for callers that are themselves submitted from
    /// elsewhere, e.g. the bridge).
    #[inline]
    pub(crate) fn call_in_thread_at<F>(
        &self,
        f: F,
        location: &'static Location<'static>,
    ) -> Result<(), AlreadyQuit<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        // While the pool is busy and a submission needs no decision, the
        // inbox takes it without the lock (`inbox.rs`).
        let core = &self.core;
        let enqueued = core.job_stamp();
        if inline_fn::fits::<F>() {
            if let Some(claim) = core.inbox.claim() {
                // Nothing between the claim and the write can fail: a move
                // into the slot (the `Err` arm is dead, `fits` holding).
                let item = Item::inline(f).unwrap_or_else(|f| Item::task(Box::new(f)));
                claim.write(Queued {
                    item,
                    meta: Meta { location, enqueued },
                });
                return Ok(());
            }
        }
        self.submit_closure(f, location, enqueued)
            .map(drop)
            .map_err(AlreadyQuit)
    }

    /// Like [`call_in_thread`](Self::call_in_thread), and returns a handle
    /// that withdraws the call while no thread has taken it: it leaves the
    /// backlog and the statistics at once and `f` is dropped unrun.
    ///
    /// # Errors
    ///
    /// As [`call_in_thread`](Self::call_in_thread).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let pool = weft::ThreadPool::new(0, 1).unwrap(); // not started: work waits
    /// let captured = Arc::new(());
    /// let c = captured.clone();
    /// let handle = pool.call_in_thread_cancellable(move || drop(c)).unwrap_or_else(|_| unreachable!());
    /// assert!(handle.cancel());
    /// assert_eq!(Arc::strong_count(&captured), 1); // the closure is gone
    /// ```
    #[track_caller]
    pub fn call_in_thread_cancellable<F>(&self, f: F) -> Result<CancelHandle, AlreadyQuit<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        self.submit_closure(f, Location::caller(), self.core.job_stamp())
            .map(|key| CancelHandle {
                core: self.core.clone(),
                key,
            })
            .map_err(AlreadyQuit)
    }

    /// Runs `f` on a pool thread, then `on_result` with its outcome on the
    /// same thread: `Ok(value)`, or `Err(ThreadError::Panicked { .. })`.
    ///
    /// `f` is dropped as soon as it returns, and `on_result` (with the
    /// result) as soon as it returns; the pool keeps neither. A panic in
    /// `on_result` is logged once and the thread is reused.
    ///
    /// # Errors
    ///
    /// As [`call_in_thread`](Self::call_in_thread), handing back both closures.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::{ThreadError, ThreadPool};
    ///
    /// let pool = ThreadPool::new(1, 1).unwrap();
    /// pool.start();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// pool.call_in_thread_with_callback(|| -> u8 { panic!("boom") }, move |r| tx.send(r).unwrap())
    ///     .unwrap_or_else(|_| unreachable!());
    /// assert_eq!(rx.recv().unwrap(), Err(ThreadError::Panicked { message: "boom".into() }));
    /// pool.stop();
    /// ```
    #[track_caller]
    pub fn call_in_thread_with_callback<T, F, C>(
        &self,
        f: F,
        on_result: C,
    ) -> Result<(), AlreadyQuit<(F, C)>>
    where
        F: FnOnce() -> T + Send + 'static,
        C: FnOnce(Result<T, ThreadError>) + Send + 'static,
    {
        self.submit(
            Box::new(WithCallback(f, on_result)),
            |call| Item::call(call),
            Location::caller(),
        )
        .map(drop)
        .map_err(|call| AlreadyQuit((call.0, call.1)))
    }

    /// `submit_shared_at` at the caller's location (tests only; the loom
    /// models do not use it).
    #[cfg(all(test, not(loom)))]
    #[track_caller]
    pub(crate) fn submit_shared(
        &self,
        task: std::sync::Arc<dyn SharedTask>,
    ) -> Result<TaskKey, AlreadyQuit<std::sync::Arc<dyn SharedTask>>> {
        self.submit_shared_at(task, Location::caller())
    }

    /// Queues the caller's shared record (one allocation per job: the `Arc`
    /// is the queue item), submitted by the code at `location` (the bridge
    /// passes its own caller's), which diagnostics name for this job. The
    /// key withdraws it while unstarted.
    ///
    /// # Errors
    ///
    /// As [`call_in_thread`](Self::call_in_thread), handing the `Arc` back;
    /// neither `run` nor `discard` has been called.
    pub(crate) fn submit_shared_at(
        &self,
        task: std::sync::Arc<dyn SharedTask>,
        location: &'static Location<'static>,
    ) -> Result<TaskKey, AlreadyQuit<std::sync::Arc<dyn SharedTask>>> {
        self.submit(task, Item::shared, location)
            .map_err(AlreadyQuit)
    }

    /// Removes the item named by `key` if no thread has taken it: the
    /// statistics and the growth logic stop counting it at once and the
    /// pool's reference is dropped (neither `run` nor `discard` is called).
    /// O(1). Returns whether it was removed.
    pub(crate) fn withdraw(&self, key: TaskKey) -> bool {
        withdraw(&self.core, key)
    }

    /// Queues a closure: in the queue slot itself when it is small
    /// ([`inline_fn`](crate::inline_fn)), else boxed (the box made before the lock is taken).
    /// Hands `f` back as [`submit`](Self::submit) does.
    #[inline]
    fn submit_closure<F>(
        &self,
        f: F,
        location: &'static Location<'static>,
        enqueued: u64,
    ) -> Result<TaskKey, F>
    where
        F: FnOnce() + Send + 'static,
    {
        if inline_fn::fits::<F>() {
            // Under the lock: a move into the slot, no allocation (the
            // `Err` arm is dead, `fits` having been checked).
            let erase = |f: F| Item::inline(f).unwrap_or_else(|f| Item::task(Box::new(f)));
            self.submit_stamped(f, erase, location, enqueued)
        } else {
            self.submit_stamped(Box::new(f), |f| Item::task(f), location, enqueued)
                .map_err(|f| *f)
        }
    }

    /// Queues an item and wakes or starts a thread for it; hands the work
    /// back when the pool is stopped, or started with no thread and none
    /// can start. `erase` runs under the lock and must not allocate. The
    /// clock is read before the lock is taken.
    #[inline]
    fn submit<B>(
        &self,
        work: B,
        erase: impl FnOnce(B) -> Item,
        location: &'static Location<'static>,
    ) -> Result<TaskKey, B> {
        self.submit_stamped(work, erase, location, self.core.job_stamp())
    }

    /// [`submit`](Self::submit) with the enqueue stamp already read.
    #[inline]
    fn submit_stamped<B>(
        &self,
        work: B,
        erase: impl FnOnce(B) -> Item,
        location: &'static Location<'static>,
        enqueued: u64,
    ) -> Result<TaskKey, B> {
        let core = &self.core;
        let Some(mut st) = self.lock_to_submit() else {
            return Err(work);
        };
        let (key, wake) = st.submit(Queued {
            item: erase(work),
            meta: Meta { location, enqueued },
        });
        st.open_inbox_if_quiet(&core.inbox);
        drop(st);
        if !matches!(wake, Wake::Nothing) {
            Core::wake(core, wake);
        }
        Ok(key)
    }

    /// The state, locked for a submission; `None` when the pool refuses
    /// work now (stopped, or no thread can exist). A started pool with no
    /// thread starts one first ([`first_thread`](Self::first_thread)).
    #[inline]
    fn lock_to_submit(&self) -> Option<MutexGuard<'_, state::State>> {
        let mut st = self.core.state.lock();
        if !st.accepts_at_once() {
            if st.needs_first_thread() {
                st = self.first_thread(st)?;
            }
            if st.stopped || st.needs_first_thread() {
                return None;
            }
        }
        // What went through the inbox before this came first.
        st.drain_inbox_claimed(&self.core.inbox);
        Some(st)
    }

    /// A started pool with no thread starts one before accepting work, so
    /// work is refused only when no thread can exist (bounded retries: the
    /// new thread may exit again before we look). `None`: refuse.
    #[cold]
    fn first_thread<'a>(
        &'a self,
        mut st: MutexGuard<'a, state::State>,
    ) -> Option<MutexGuard<'a, state::State>> {
        for _ in 0..3 {
            if !st.needs_first_thread() {
                break;
            }
            let ticket = st.reserve(Role::Worker);
            drop(st);
            if !Core::start_thread(&self.core, ticket) {
                tracing::error!(pool = %self.core.name, "pool has no thread and cannot start one; work refused");
                return None;
            }
            st = self.core.locked();
        }
        Some(st)
    }

    /// Changes the size bounds. Once started, the pool reaches exactly the
    /// new bounds: extra idle threads exit now, extra busy ones when their
    /// task ends; missing threads start now (and take backlog).
    ///
    /// # Errors
    ///
    /// [`PoolConfigError`] when `max` is 0 or `min > max`; nothing changes.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::new(0, 4).unwrap();
    /// pool.start();
    /// pool.adjust_pool_size(2, 4).unwrap();
    /// assert_eq!(pool.statistics().idle, 2);
    /// assert!(pool.adjust_pool_size(5, 4).is_err());
    /// pool.stop();
    /// ```
    pub fn adjust_pool_size(&self, min: usize, max: usize) -> Result<(), PoolConfigError> {
        check_size(min, max)?;
        let tickets = self.core.locked().adjust(min, max);
        // Sleepers re-check their keep-alive and exit orders.
        self.core.work.notify_all();
        self.core.spare.notify_all();
        self.start_threads(tickets);
        Ok(())
    }

    /// Current counts and bounds.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::new(1, 2).unwrap();
    /// pool.start();
    /// assert_eq!(pool.statistics().idle, 1);
    /// pool.stop();
    /// ```
    pub fn statistics(&self) -> PoolStatistics {
        let now = self.core.job_stamp();
        PoolStatistics::of(&self.core.locked(), now)
    }

    /// The thread name prefix.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(weft::ThreadPool::default().name(), "weft-pool");
    /// ```
    pub fn name(&self) -> &str {
        &self.core.name
    }
}

/// The pool as a [`Worker`]: `do_work` is
/// [`call_in_thread`](ThreadPool::call_in_thread); `quit` stops the pool
/// without waiting, and is [`AlreadyQuit`] the second time (where
/// [`stop`](ThreadPool::stop) is idempotent).
///
/// # Examples
///
/// ```
/// use weft::ThreadPool;
/// use weft::threads::Worker;
///
/// let pool = ThreadPool::new(1, 1).unwrap();
/// pool.start();
/// let (tx, rx) = std::sync::mpsc::channel();
/// pool.do_work(Box::new(move || tx.send(1).unwrap())).unwrap();
/// assert_eq!(rx.recv().unwrap(), 1);
/// pool.quit().unwrap();
/// assert!(pool.quit().is_err());
/// ```
impl Worker for ThreadPool {
    #[track_caller]
    fn do_work(&self, task: Task) -> Result<(), AlreadyQuit<Task>> {
        self.submit(task, Item::task, Location::caller())
            .map(drop)
            .map_err(AlreadyQuit)
    }

    /// The record itself is the queue item: no box around it.
    fn do_shared(
        &self,
        job: SharedJob,
        location: &'static Location<'static>,
    ) -> Result<(), AlreadyQuit<SharedJob>> {
        self.submit_shared_at(job.into_task(), location)
            .map(drop)
            .map_err(|AlreadyQuit(task)| AlreadyQuit(SharedJob::new(task)))
    }

    fn quit(&self) -> Result<(), AlreadyQuit> {
        if self.begin_stop() {
            Ok(())
        } else {
            Err(AlreadyQuit(()))
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.begin_stop();
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
