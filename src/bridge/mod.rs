//! The bridges: the only place where the loop and the thread layers meet.
//!
//! - Loop → threads: [`Handle::call_in_thread`], [`Handle::defer_to_thread`],
//!   [`Handle::defer_to_thread_pool`], [`Handle::defer_to_worker`],
//!   [`Handle::call_multiple_in_thread`].
//! - Threads → loop: [`blocking_call_from_thread`],
//!   [`Remote::run_coroutine_threadsafe`].
//!
//! # How a `defer_to_thread` result travels
//!
//! The loop registers the `Deferred`'s resolver under a job id in a loop-local
//! table and hands the pool a job holding the id, a `Remote` and a shared
//! state word (`QUEUED → RUNNING`, or `QUEUED → CANCELLED`). The worker runs
//! the closure under `catch_unwind`, stores the result in the job's shared
//! state and queues that same `Arc` on the reactor's coalesced inbox (no
//! allocation), so completions arrive in batches, in a later turn, never
//! synchronously, and in FIFO order with the worker's own `call_from_thread`s.
//! On the loop the id is looked up and the resolver fires.
//!
//! Cancelling the `Deferred` flips `QUEUED → CANCELLED` (the job, when a worker
//! reaches it, returns without running the closure) and removes the table
//! entry (a running job's late result finds nothing and is dropped).
//! A job dropped unrun (a stopped worker, `QueuedWork::Cancel` at shutdown)
//! reports `Cancelled` from its destructor: nothing is lost.
//!
//! # Shutdown
//!
//! The reactor pool registers a `Before` shutdown trigger that waits (bounded
//! by the reactor's shutdown timeout) until every registered job has been
//! delivered, so results of work in flight reach their `Deferred`s before the
//! loop exits; under `QueuedWork::Cancel` it first discards the pool's
//! backlog. A `During` trigger then stops the pool with what is left of the
//! deadline and reports what did not finish; `Deferred`s still waiting are
//! resolved `Cancelled`. Nothing hangs.

mod oneshot;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::deferred::{Deferred, ErasedJob, Resolver};
use crate::error::{
    AlreadyQuit, CallError, Cancelled, PoolConfigError, ThreadError, panic_message,
};
use crate::loom::Mutex;
use crate::loom::atomic::{AtomicU8, Ordering};
use crate::pool::ThreadPool;
use crate::reactor::{self, Deliver, Handle, Phase, QueuedWork, Remote, SystemEvent};
use crate::threads::{Task, Worker};

/// The reactor pool's size when nothing is suggested: no thread until work
/// arrives, and up to 64 threads.
///
/// Twisted's reactor pool was 0..10 and shared with DNS and database work;
/// ten blocked jobs wedged whole programs, and a job waiting on the loop
/// (`blockingCallFromThread`) while the loop waited on the pool deadlocked
/// them (spec §4: twisted#5298, scrapy#1092, Synapse#10190). Blocking jobs
/// mostly wait rather than compute, so the cap is set by memory (64 threads,
/// 2 MiB of reserved stack each) rather than cores, and idle threads above
/// the minimum exit after the pool's keep-alive, so the headroom costs
/// nothing when unused. `suggest_thread_pool_size` changes the cap.
const REACTOR_POOL_MIN: usize = 0;
const REACTOR_POOL_MAX: usize = 64;
const REACTOR_POOL_NAME: &str = "weft-reactor";

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const CANCELLED: u8 = 2;

/// One call of a [`Handle::call_multiple_in_thread`] batch.
///
/// # Examples
///
/// ```
/// let call: weft::ThreadCall = Box::new(|| println!("on a pool thread"));
/// # drop(call);
/// ```
pub type ThreadCall = Box<dyn FnOnce() + Send>;

/// Hashes the job table's keys: sequential ids from one counter, so the id
/// itself, spread by a multiplication, is a good hash (no SipHash per job).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Loop-local bridge state, kept as a reactor extension.
struct Threads {
    pool: RefCell<Option<Arc<ThreadPool>>>,
    /// Job id → its `Resolver<T>` (type-erased), until delivered.
    jobs: RefCell<HashMap<u64, Rc<dyn ErasedJob>, BuildHasherDefault<IdHasher>>>,
    next_id: Cell<u64>,
    /// Waiters for "no job left" (the shutdown drain).
    drained: RefCell<Vec<Resolver<(), Cancelled>>>,
    /// When the shutdown drain began, to split the deadline.
    shutdown_started: Cell<Option<Instant>>,
    triggers_registered: Cell<bool>,
}

impl Threads {
    fn new() -> Threads {
        Threads {
            pool: RefCell::new(None),
            jobs: RefCell::new(HashMap::default()),
            next_id: Cell::new(0),
            drained: RefCell::new(Vec::new()),
            shutdown_started: Cell::new(None),
            triggers_registered: Cell::new(false),
        }
    }

    /// The bridge state of `handle`'s reactor, created on first use together
    /// with the shutdown triggers that drain every job registered here (from
    /// the reactor pool, a private pool or any worker).
    fn of(handle: &Handle) -> Rc<Threads> {
        let threads = handle.extension(Threads::new);
        if !threads.triggers_registered.replace(true) {
            Threads::register_shutdown(handle, &threads);
        }
        threads
    }

    fn register_shutdown(handle: &Handle, threads: &Rc<Threads>) {
        let weak = Rc::downgrade(threads);
        let policy = handle.queued_work_at_shutdown();
        handle.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
            let threads = weak.upgrade()?;
            threads.shutdown_started.set(Some(Instant::now()));
            // A reactor that never ran never started its pool: the queued
            // work cannot run, so it is cancelled rather than waited for.
            let never_ran = reactor::current().is_none_or(|h| !h.has_started());
            if policy == QueuedWork::Cancel || never_ran {
                if let Some(pool) = threads.pool.borrow().as_ref() {
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
        let budget = handle.shutdown_timeout();
        handle.add_system_event_trigger(Phase::During, SystemEvent::Shutdown, move || {
            let Some(threads) = weak.upgrade() else { return };
            let left = threads
                .shutdown_started
                .get()
                .map_or(budget, |t| budget.saturating_sub(t.elapsed()));
            if let Some(pool) = threads.pool.borrow().as_ref() {
                let report = pool.stop_timeout(left.max(Duration::from_millis(10)));
                if !report.is_complete() {
                    tracing::warn!(?report, "weft: reactor pool did not finish within the shutdown deadline; its threads are left detached");
                }
            }
            // Whatever is still registered can no longer be delivered.
            let left: Vec<u64> = threads.jobs.borrow().keys().copied().collect();
            if !left.is_empty() {
                tracing::warn!(jobs = left.len(), "weft: thread jobs still running at shutdown resolved as cancelled");
            }
            for id in left {
                let entry = threads.jobs.borrow_mut().remove(&id);
                if let Some(entry) = entry {
                    entry.fail(ThreadError::Cancelled);
                }
            }
        });
    }

    fn register<T: 'static>(&self, resolver: Resolver<T>) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.jobs.borrow_mut().insert(id, resolver.erase());
        id
    }

    fn take<T: 'static>(&self, id: u64) -> Option<Resolver<T>> {
        let entry = self.jobs.borrow_mut().remove(&id);
        self.check_drained();
        entry.and_then(Resolver::unerase)
    }

    fn forget(&self, id: u64) {
        self.jobs.borrow_mut().remove(&id);
        self.check_drained();
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

/// A job's shared state: its progress word and, once it has run, its
/// result. The same `Arc` carries the result back through the inbox, so a
/// completion allocates nothing.
struct JobShared<T> {
    id: u64,
    state: AtomicU8,
    result: Mutex<Option<Result<T, ThreadError>>>,
}

impl<T: Send + 'static> Deliver for JobShared<T> {
    fn deliver(self: Arc<Self>) {
        let result = self.result.lock().take();
        if let Some(result) = result {
            complete::<T>(self.id, result);
        }
    }
}

/// Sends a job's outcome to the loop; reports `Cancelled` if dropped unsent
/// (a worker that quit, a backlog discarded at shutdown).
struct Delivery<T: Send + 'static> {
    shared: Option<Arc<JobShared<T>>>,
    remote: Remote,
}

impl<T: Send + 'static> Delivery<T> {
    fn send(mut self, result: Result<T, ThreadError>) {
        if let Some(shared) = self.shared.take() {
            *shared.result.lock() = Some(result);
            let _ = self.remote.deliver(shared);
        }
    }

    fn disarm(mut self) {
        self.shared = None;
    }
}

impl<T: Send + 'static> Drop for Delivery<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            *shared.result.lock() = Some(Err(ThreadError::Cancelled));
            let _ = self.remote.deliver(shared);
        }
    }
}

/// On the loop: resolves job `id` with `result` (if it is still wanted).
fn complete<T: Send + 'static>(id: u64, result: Result<T, ThreadError>) {
    let Some(handle) = reactor::current() else {
        return;
    };
    if let Some(resolver) = Threads::of(&handle).take::<T>(id) {
        let _ = resolver.resolve(result);
    }
}

/// A registered job, ready to hand to a pool or a worker.
struct Prepared<T: Send + 'static, R> {
    deferred: Deferred<T>,
    id: u64,
    /// Runs `f` unless the job was cancelled first (then `None`).
    run: R,
    delivery: Delivery<T>,
}

/// Registers a `Deferred` for `f` and builds the pieces of its job.
fn prepare<T, F>(handle: &Handle, f: F) -> Prepared<T, impl FnOnce() -> Option<T> + Send + 'static>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let threads = Threads::of(handle);
    let deferred = Deferred::new();
    let id = threads.register(deferred.resolver());
    let shared = Arc::new(JobShared {
        id,
        state: AtomicU8::new(QUEUED),
        result: Mutex::new(None),
    });
    let weak: Weak<Threads> = Rc::downgrade(&threads);
    {
        let shared = shared.clone();
        deferred.resolver().set_canceller(move || {
            let _ = shared.state.compare_exchange(
                QUEUED,
                CANCELLED,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            if let Some(t) = weak.upgrade() {
                t.forget(id);
            }
        });
    }
    let span = tracing::Span::current();
    let state = shared.clone();
    let run = move || {
        state
            .state
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some(span.in_scope(f))
    };
    Prepared {
        deferred,
        id,
        run,
        delivery: Delivery {
            shared: Some(shared),
            remote: handle.remote(),
        },
    }
}

impl<T: Send + 'static> Delivery<T> {
    /// Sends what the job produced; `Ok(None)` means it was cancelled before
    /// it started, and the canceller has resolved the `Deferred` already.
    fn finish(self, outcome: Result<Option<T>, ThreadError>) {
        match outcome {
            Ok(Some(value)) => self.send(Ok(value)),
            Ok(None) => self.disarm(),
            Err(e) => self.send(Err(e)),
        }
    }
}

/// Resolves a job refused by a stopped pool or worker at once.
fn refused<T: 'static>(handle: &Handle, id: u64) {
    if let Some(r) = Threads::of(handle).take::<T>(id) {
        let _ = r.errback(ThreadError::Stopped);
    }
}

impl Handle {
    /// The reactor's thread pool, created on first use: started when the
    /// reactor runs (at once if it already does) and stopped during shutdown.
    /// It is named `weft-reactor`; its size is 0..64 unless
    /// [`suggest_thread_pool_size`](Handle::suggest_thread_pool_size) says
    /// otherwise (why 64: see the module docs of the bridge layer).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = reactor.thread_pool();
    /// assert_eq!(pool.statistics().threads_alive, 0); // not started before run
    /// ```
    pub fn thread_pool(&self) -> Arc<ThreadPool> {
        let threads = Threads::of(self);
        if let Some(pool) = threads.pool.borrow().as_ref() {
            return pool.clone();
        }
        let pool = Arc::new(
            ThreadPool::builder()
                .name(REACTOR_POOL_NAME)
                .min(REACTOR_POOL_MIN)
                .max(REACTOR_POOL_MAX)
                .build()
                .expect("reactor pool defaults are valid"),
        );
        *threads.pool.borrow_mut() = Some(pool.clone());
        if self.is_shut_down() {
            pool.stop();
            return pool;
        }
        {
            let pool = pool.clone();
            self.call_when_running(move || pool.start());
        }
        pool
    }

    /// Sets the reactor pool's maximum size (Twisted's `suggestThreadPoolSize`).
    ///
    /// # Errors
    ///
    /// [`PoolConfigError`] if `size` is zero or below the pool's minimum.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.suggest_thread_pool_size(34).unwrap();
    /// assert_eq!(reactor.thread_pool().statistics().max, 34);
    /// assert!(reactor.suggest_thread_pool_size(0).is_err());
    /// ```
    pub fn suggest_thread_pool_size(&self, size: usize) -> Result<(), PoolConfigError> {
        let pool = self.thread_pool();
        let min = pool.statistics().min;
        pool.adjust_pool_size(min, size)
    }

    /// Runs `f` on the reactor's thread pool; nothing comes back. A panic is
    /// caught and logged. The caller's `tracing` span is carried into `f`.
    ///
    /// # Errors
    ///
    /// [`AlreadyQuit`] with `f` handed back once the reactor has shut down.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// reactor.call_in_thread(move || {
    ///     assert!(!weft::reactor::is_in_io_thread());
    ///     remote.stop();
    /// }).unwrap();
    /// reactor.run().unwrap();
    /// ```
    pub fn call_in_thread<F>(&self, f: F) -> Result<(), AlreadyQuit<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        let pool = self.thread_pool();
        let span = tracing::Span::current();
        if span.is_none() {
            return pool.call_in_thread(f);
        }
        // Carry the span; keep `f` reachable so a refusal can hand it back.
        let slot = Arc::new(Mutex::new(Some(f)));
        let job_slot = slot.clone();
        let submitted = pool.call_in_thread(move || {
            let f = job_slot.lock().take();
            if let Some(f) = f {
                span.in_scope(f);
            }
        });
        match submitted {
            Ok(()) => Ok(()),
            Err(refused) => {
                drop(refused);
                let f = slot.lock().take().expect("refused work was never run");
                Err(AlreadyQuit(f))
            }
        }
    }

    /// Runs `calls` in order on one pool thread (Twisted's
    /// `callMultipleInThread`); at the first panic the rest are skipped and
    /// the panic is logged.
    ///
    /// # Errors
    ///
    /// [`AlreadyQuit`] with the calls handed back once the reactor has shut down.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let mut calls: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
    /// for i in 0..3 {
    ///     let seen = seen.clone();
    ///     calls.push(Box::new(move || seen.lock().unwrap().push(i)));
    /// }
    /// let remote = reactor.remote();
    /// calls.push(Box::new(move || remote.stop()));
    /// reactor.call_multiple_in_thread(calls).unwrap();
    /// reactor.run().unwrap();
    /// assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2]);
    /// ```
    pub fn call_multiple_in_thread(
        &self,
        calls: Vec<ThreadCall>,
    ) -> Result<(), AlreadyQuit<Vec<ThreadCall>>> {
        let slot = Arc::new(Mutex::new(Some(calls)));
        let job_slot = slot.clone();
        let span = tracing::Span::current();
        let submitted = self.thread_pool().call_in_thread(move || {
            let calls = job_slot.lock().take().unwrap_or_default();
            let _entered = span.enter();
            let total = calls.len();
            for (i, call) in calls.into_iter().enumerate() {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(call)) {
                    tracing::error!(
                        index = i,
                        skipped = total - i - 1,
                        panic = %panic_message(&*payload),
                        "weft: call_multiple_in_thread stopped at a panicking call"
                    );
                    break;
                }
            }
        });
        match submitted {
            Ok(()) => Ok(()),
            Err(_) => Err(AlreadyQuit(slot.lock().take().unwrap_or_default())),
        }
    }

    /// Runs `f` on the reactor's thread pool and returns a [`Deferred`] that
    /// gets its value (or [`ThreadError::Panicked`]) on the loop thread, in a
    /// later turn, never synchronously.
    ///
    /// Cancelling the `Deferred` before the job starts removes it: `f` never
    /// runs. Cancelling while it runs lets it finish detached; its result is
    /// discarded and the `Deferred` holds [`ThreadError::Cancelled`]. After
    /// shutdown the `Deferred` holds [`ThreadError::Stopped`].
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let d = reactor.defer_to_thread(|| 3 + 4);
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(7));
    /// ```
    #[track_caller]
    pub fn defer_to_thread<T, F>(&self, f: F) -> Deferred<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.thread_pool();
        self.defer_to_thread_pool(&pool, f)
    }

    /// [`defer_to_thread`](Handle::defer_to_thread) on a pool of your own.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft::ThreadPool::new(0, 8).unwrap();
    /// pool.start();
    /// let d = reactor.defer_to_thread_pool(&pool, || "done");
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), Ok("done"));
    /// pool.stop();
    /// ```
    pub fn defer_to_thread_pool<T, F>(&self, pool: &ThreadPool, f: F) -> Deferred<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if self.is_shut_down() {
            return Deferred::fail(ThreadError::Stopped);
        }
        let job = prepare(self, f);
        let delivery = job.delivery;
        // The pool catches a panic in `run` (and counts it in its statistics)
        // and hands it to the callback, on the same worker thread.
        if pool
            .call_in_thread_with_callback(job.run, move |outcome| delivery.finish(outcome))
            .is_err()
        {
            refused::<T>(self, job.id);
        }
        job.deferred
    }

    /// [`defer_to_thread`](Handle::defer_to_thread) on any [`Worker`] (asyncio's
    /// `run_in_executor` with any executor): for instance a
    /// [`ThreadWorker`](crate::threads::ThreadWorker) for a library that must
    /// always be called from one thread, like SQLite.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{ThreadWorker, Worker};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let worker = ThreadWorker::new().unwrap();
    /// let a = reactor.defer_to_worker(&worker, || std::thread::current().id());
    /// let b = reactor.defer_to_worker(&worker, || std::thread::current().id());
    /// let (a, b) = reactor.run_until_complete(async { (a.await, b.await) }).unwrap();
    /// assert_eq!(a.unwrap(), b.unwrap()); // same thread every time
    /// worker.quit().unwrap();
    /// ```
    pub fn defer_to_worker<T, F, W>(&self, worker: &W, f: F) -> Deferred<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
        W: Worker + ?Sized,
    {
        if self.is_shut_down() {
            return Deferred::fail(ThreadError::Stopped);
        }
        let job = prepare(self, f);
        let (run, delivery) = (job.run, job.delivery);
        let task: Task = Box::new(move || {
            let outcome = catch_unwind(AssertUnwindSafe(run))
                .map_err(|payload| ThreadError::from_panic(&*payload));
            delivery.finish(outcome);
        });
        if worker.do_work(task).is_err() {
            refused::<T>(self, job.id);
        }
        job.deferred
    }
}

/// Runs `f` on the loop thread and blocks the calling thread until it
/// returns; gives its value back (Twisted's `blockingCallFromThread`).
///
/// Called before the loop runs, it waits for it. For a closure that returns
/// a future or [`Deferred`] whose outcome you want, use
/// [`blocking_call_from_thread_future`].
///
/// # Errors
///
/// - [`CallError::OnLoopThread`] at once on the loop thread (Twisted deadlocks);
/// - [`CallError::LoopStopped`] at once if the loop has stopped or is
///   stopping, or if it shuts down before `f` ran;
/// - [`CallError::Panicked`] if `f` panicked.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let remote = reactor.remote();
/// let worker = std::thread::spawn(move || {
///     let v = weft::blocking_call_from_thread(&remote, || 40 + 2);
///     remote.stop();
///     v
/// });
/// reactor.run().unwrap();
/// assert_eq!(worker.join().unwrap(), Ok(42));
/// ```
#[track_caller]
pub fn blocking_call_from_thread<T, F>(remote: &Remote, f: F) -> Result<T, CallError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    start_call(remote, f)?.wait()
}

/// [`blocking_call_from_thread`] that gives up waiting after `timeout`. The
/// call itself is not cancelled: it may still run on the loop later.
///
/// # Errors
///
/// As [`blocking_call_from_thread`], plus [`CallError::TimedOut`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let reactor = weft::Reactor::new().unwrap(); // never run
/// let remote = reactor.remote();
/// let r = std::thread::spawn(move || {
///     weft::blocking_call_from_thread_timeout(&remote, Duration::from_millis(10), || 1)
/// })
/// .join()
/// .unwrap();
/// assert_eq!(r, Err(weft::CallError::TimedOut));
/// ```
#[track_caller]
pub fn blocking_call_from_thread_timeout<T, F>(
    remote: &Remote,
    timeout: Duration,
    f: F,
) -> Result<T, CallError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    start_call(remote, f)?.wait_timeout(timeout)
}

#[track_caller]
fn start_call<T, F>(remote: &Remote, f: F) -> Result<oneshot::Receiver<T>, CallError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    check_caller(remote)?;
    let (tx, rx) = oneshot::channel();
    remote
        .call_from_thread(move || {
            let result = catch_unwind(AssertUnwindSafe(f)).map_err(|p| CallError::Panicked {
                message: panic_message(&*p),
            });
            tx.send(result);
        })
        .map_err(|_| CallError::LoopStopped)?;
    Ok(rx)
}

fn check_caller(remote: &Remote) -> Result<(), CallError> {
    if remote.is_loop_thread() {
        return Err(CallError::OnLoopThread);
    }
    if remote.is_stopped() {
        return Err(CallError::LoopStopped);
    }
    Ok(())
}

/// Like [`blocking_call_from_thread`], for a closure that returns a future (a
/// [`Deferred`] is one): the future is built and driven on the loop, so it may
/// be `!Send`, and the call blocks until it completes.
///
/// # Errors
///
/// As [`blocking_call_from_thread`]; a future dropped unfinished at shutdown
/// gives [`CallError::LoopStopped`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weft::{Cancelled, Deferred};
///
/// let reactor = weft::Reactor::new().unwrap();
/// let remote = reactor.remote();
/// let worker = std::thread::spawn(move || {
///     let v = weft::blocking_call_from_thread_future(&remote, || {
///         let d: Deferred<&str, Cancelled> = Deferred::new();
///         let r = d.resolver();
///         weft::reactor::current()
///             .unwrap()
///             .call_later(Duration::from_millis(1), move || r.callback("egg").unwrap());
///         d
///     });
///     remote.stop();
///     v
/// });
/// reactor.run().unwrap();
/// assert_eq!(worker.join().unwrap(), Ok(Ok("egg")));
/// ```
#[track_caller]
pub fn blocking_call_from_thread_future<Fut, F>(
    remote: &Remote,
    f: F,
) -> Result<Fut::Output, CallError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    check_caller(remote)?;
    spawn_from_thread(remote, f)?.receiver.wait()
}

/// [`blocking_call_from_thread_future`] that gives up waiting after `timeout`
/// (the future keeps running on the loop).
///
/// # Errors
///
/// As [`blocking_call_from_thread_future`], plus [`CallError::TimedOut`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let reactor = weft::Reactor::new().unwrap();
/// let remote = reactor.remote();
/// let worker = std::thread::spawn(move || {
///     let r = weft::blocking_call_from_thread_future_timeout(&remote, Duration::from_millis(5), || {
///         std::future::pending::<()>()
///     });
///     remote.stop();
///     r
/// });
/// reactor.run().unwrap();
/// assert_eq!(worker.join().unwrap(), Err(weft::CallError::TimedOut));
/// ```
#[track_caller]
pub fn blocking_call_from_thread_future_timeout<Fut, F>(
    remote: &Remote,
    timeout: Duration,
    f: F,
) -> Result<Fut::Output, CallError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    check_caller(remote)?;
    spawn_from_thread(remote, f)?.receiver.wait_timeout(timeout)
}

/// Queues `make` onto the loop, where it builds a future that is spawned as a
/// local task; its outcome is sent to the returned handle.
#[track_caller]
fn spawn_from_thread<Fut, F>(
    remote: &Remote,
    make: F,
) -> Result<CrossThreadFuture<Fut::Output>, CallError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let cancel = Arc::new(CancelSlot::default());
    let task_cancel = cancel.clone();
    remote
        .call_from_thread(move || {
            if task_cancel.requested() {
                tx.send(Err(CallError::Cancelled));
                return;
            }
            let future = match catch_unwind(AssertUnwindSafe(make)) {
                Ok(fut) => fut,
                Err(p) => {
                    tx.send(Err(CallError::Panicked {
                        message: panic_message(&*p),
                    }));
                    return;
                }
            };
            let Some(handle) = reactor::current() else {
                return;
            };
            let task = handle.spawn_local(future);
            let id = task_cancel.id;
            let resolver = task.resolver();
            CrossCancels::register(&handle, id, Box::new(move || resolver.cancel()));
            // `tx` moves into the callback; if the task is dropped at shutdown
            // the callback is dropped with it and `tx` reports LoopStopped.
            task.add_both(move |res| {
                if let Some(h) = reactor::current() {
                    CrossCancels::take(&h, id);
                }
                tx.send(res.map_err(|e| match e {
                    ThreadError::Panicked { message } => CallError::Panicked { message },
                    ThreadError::Cancelled => CallError::Cancelled,
                    _ => CallError::LoopStopped,
                }))
            });
        })
        .map_err(|_| CallError::LoopStopped)?;
    Ok(CrossThreadFuture {
        receiver: rx,
        cancel,
        remote: remote.clone(),
    })
}

/// Where a cross-thread cancel request meets the loop-side task.
struct CancelSlot {
    id: u64,
    requested: std::sync::atomic::AtomicBool,
}

impl Default for CancelSlot {
    fn default() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        CancelSlot {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            requested: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl CancelSlot {
    fn requested(&self) -> bool {
        self.requested.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Loop-local: cancellers of tasks started from other threads, by slot id.
#[derive(Default)]
struct CrossCancels {
    map: RefCell<HashMap<u64, Box<dyn FnOnce()>>>,
}

impl CrossCancels {
    fn register(handle: &Handle, id: u64, cancel: Box<dyn FnOnce()>) {
        handle
            .extension(CrossCancels::default)
            .map
            .borrow_mut()
            .insert(id, cancel);
    }

    fn take(handle: &Handle, id: u64) -> Option<Box<dyn FnOnce()>> {
        handle
            .extension(CrossCancels::default)
            .map
            .borrow_mut()
            .remove(&id)
    }
}

impl Remote {
    /// Builds a future on the loop and runs it there as a local task
    /// (asyncio's `run_coroutine_threadsafe`). `make` is `Send`; the future it
    /// builds may be `!Send`. The returned [`CrossThreadFuture`] can be waited
    /// on by a plain thread or awaited by another runtime's task.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::rc::Rc;
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// let t = std::thread::spawn(move || {
    ///     let fut = remote.run_coroutine_threadsafe(|| {
    ///         let local = Rc::new(21); // !Send, built on the loop
    ///         async move { *local * 2 }
    ///     });
    ///     let v = fut.wait();
    ///     remote.stop();
    ///     v
    /// });
    /// reactor.run().unwrap();
    /// assert_eq!(t.join().unwrap(), Ok(42));
    /// ```
    #[track_caller]
    pub fn run_coroutine_threadsafe<Fut, F>(&self, make: F) -> CrossThreadFuture<Fut::Output>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        match spawn_from_thread(self, make) {
            Ok(f) => f,
            Err(e) => {
                let (tx, rx) = oneshot::channel();
                tx.send(Err(e));
                CrossThreadFuture {
                    receiver: rx,
                    cancel: Arc::new(CancelSlot::default()),
                    remote: self.clone(),
                }
            }
        }
    }
}

/// The outcome of a future running on the loop, for another thread:
/// returned by [`Remote::run_coroutine_threadsafe`].
///
/// Wait with [`wait`](CrossThreadFuture::wait) or
/// [`wait_timeout`](CrossThreadFuture::wait_timeout) from a plain thread, or
/// `.await` it from another runtime (it is a `Send` [`Future`]).
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let remote = reactor.remote();
/// let fut = remote.run_coroutine_threadsafe(|| async { "hi" });
/// let t = std::thread::spawn(move || fut.wait());
/// reactor.call_later(std::time::Duration::from_millis(1), || weft::reactor::current().unwrap().stop());
/// reactor.run().unwrap();
/// assert_eq!(t.join().unwrap(), Ok("hi"));
/// ```
///
/// # Dropping
///
/// Dropping it does not cancel the future on the loop; use
/// [`cancel`](CrossThreadFuture::cancel).
pub struct CrossThreadFuture<T> {
    receiver: oneshot::Receiver<T>,
    cancel: Arc<CancelSlot>,
    remote: Remote,
}

impl<T> fmt::Debug for CrossThreadFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrossThreadFuture")
            .field("ready", &self.receiver.is_ready())
            .finish()
    }
}

impl<T> CrossThreadFuture<T> {
    /// Blocks until the future completes on the loop and returns its output.
    ///
    /// # Errors
    ///
    /// [`CallError::OnLoopThread`] on the loop thread (it would deadlock),
    /// [`CallError::Panicked`], [`CallError::Cancelled`], or
    /// [`CallError::LoopStopped`] if the loop shut down first.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let fut = reactor.remote().run_coroutine_threadsafe(|| async { 1 });
    /// assert_eq!(fut.wait(), Err(weft::CallError::OnLoopThread));
    /// ```
    pub fn wait(self) -> Result<T, CallError> {
        if self.remote.is_loop_thread() {
            return Err(CallError::OnLoopThread);
        }
        self.receiver.wait()
    }

    /// Blocks at most `timeout`. [`CallError::TimedOut`] does not cancel the
    /// future: wait again, await, or [`cancel`](CrossThreadFuture::cancel).
    ///
    /// # Errors
    ///
    /// As [`wait`](CrossThreadFuture::wait), plus [`CallError::TimedOut`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let reactor = weft::Reactor::new().unwrap(); // not running
    /// let fut = reactor.remote().run_coroutine_threadsafe(|| async { 1 });
    /// let fut = std::thread::spawn(move || {
    ///     assert_eq!(fut.wait_timeout(Duration::from_millis(5)), Err(weft::CallError::TimedOut));
    ///     fut
    /// }).join().unwrap();
    /// assert_eq!(reactor.run_until_complete(async {}).unwrap(), ());
    /// assert_eq!(std::thread::spawn(move || fut.wait()).join().unwrap(), Ok(1));
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<T, CallError> {
        if self.remote.is_loop_thread() {
            return Err(CallError::OnLoopThread);
        }
        self.receiver.wait_timeout(timeout)
    }

    /// Asks the loop to cancel the future (it is dropped there; its outcome
    /// becomes [`CallError::Cancelled`]). Returns `false` if the outcome had
    /// already arrived, so there was nothing to cancel.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let fut = reactor.remote().run_coroutine_threadsafe(|| std::future::pending::<()>());
    /// assert!(fut.cancel());
    /// reactor.iterate(Some(std::time::Duration::ZERO));
    /// let r = std::thread::spawn(move || fut.wait()).join().unwrap();
    /// assert_eq!(r, Err(weft::CallError::Cancelled));
    /// ```
    pub fn cancel(&self) -> bool {
        if self.receiver.is_ready() {
            return false;
        }
        self.cancel
            .requested
            .store(true, std::sync::atomic::Ordering::Release);
        let id = self.cancel.id;
        let _ = self.remote.call_from_thread(move || {
            if let Some(h) = reactor::current() {
                if let Some(cancel) = CrossCancels::take(&h, id) {
                    cancel();
                }
            }
        });
        true
    }

    /// Whether the outcome has arrived.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let fut = reactor.remote().run_coroutine_threadsafe(|| async {});
    /// assert!(!fut.is_done());
    /// reactor.iterate(Some(std::time::Duration::ZERO));
    /// reactor.iterate(Some(std::time::Duration::ZERO));
    /// assert!(fut.is_done());
    /// ```
    pub fn is_done(&self) -> bool {
        self.receiver.is_ready()
    }
}

impl<T> Future for CrossThreadFuture<T> {
    type Output = Result<T, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.receiver.poll(cx)
    }
}
