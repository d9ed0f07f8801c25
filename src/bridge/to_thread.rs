//! Loop → threads: `call_in_thread`, `defer_to_thread` and friends on
//! `Handle`, and the reactor pool; `Reactor`'s forwarding methods for them
//! are in `to_thread/reactor.rs`.
//!
//! A `defer_to_*` call hands the worker one [`Job`] record (`job.rs`) and
//! returns a `Deferred` whose state is that same record, counted in flight
//! by the loop (`table.rs`); cancelling the `Deferred` empties the record
//! at once, so the closure and its captures are dropped by the cancel, not
//! when a worker reaches it.

use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;

use std::convert::identity;

use super::job::{Call, Fallible, Job, NoCanceller, Plain};
use super::table::Threads;
use crate::deferred::{Deferred, span};
use crate::error::{AlreadyQuit, PoolConfigError, ThreadError, panic_message};
use crate::loom::Mutex;
use crate::pool::ThreadPool;
use crate::reactor::Handle;
use crate::threads::{SharedJob, SharedTask, Task, TaskKey, Worker};

mod reactor;

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

/// The `Deferred` of a submitted `job`: the record itself, counted in
/// flight by the loop (with its place in the reactor pool's backlog,
/// `task`, if any, so a cancel withdraws it). No allocation.
fn register<T, E, F, C>(
    threads: &Threads,
    job: Arc<Job<T, E, F, C>>,
    task: Option<TaskKey>,
) -> Deferred<T, E>
where
    F: Call<T, E>,
    T: Send + 'static,
    E: Send + 'static,
    C: FnOnce() + Send + 'static,
{
    threads.register();
    if let Some(task) = task {
        job.set_task(task);
    }
    Deferred::from_job(job)
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
        // Jobs of this turn kept for the hand-over go first, so the pool's
        // statistics count them and whatever is submitted to it directly
        // queues behind them.
        threads.hand_over();
        self.reactor_pool(&threads)
    }

    /// The reactor pool held by `threads`, created on first use.
    fn reactor_pool(&self, threads: &Threads) -> Arc<ThreadPool> {
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
        // Created by a `Before` shutdown trigger it still runs work (and is
        // stopped in the `During` phase); after that it is stopped at once.
        if !threads.accepts(self) {
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
    /// caught and logged. The caller's `tracing` span is carried into `f`,
    /// and the pool's diagnostics (`oldest_backlog`, `running_jobs`, the
    /// wedge warning) name the caller's line, as for every submit here.
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
    #[track_caller]
    pub fn call_in_thread<F>(&self, f: F) -> Result<(), AlreadyQuit<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        let location = Location::caller();
        let pool = self.thread_pool();
        let Some(span) = span::current() else {
            return pool.call_in_thread_at(f, location);
        };
        // Carry the span; keep `f` reachable so a refusal can hand it back.
        let slot = Arc::new(Mutex::new(Some(f)));
        let job_slot = slot.clone();
        let submitted = pool.call_in_thread_at(
            move || {
                let f = job_slot.lock().take();
                if let Some(f) = f {
                    span.in_scope(f);
                }
            },
            location,
        );
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
    #[track_caller]
    pub fn call_multiple_in_thread(&self, calls: Vec<Task>) -> Result<(), AlreadyQuit<Vec<Task>>> {
        let location = Location::caller();
        let slot = Arc::new(Mutex::new(Some(calls)));
        let job_slot = slot.clone();
        let span = span::current();
        let work = move || {
            let calls = job_slot.lock().take().unwrap_or_default();
            let _entered = span.as_ref().map(tracing::Span::enter);
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
        };
        match self.thread_pool().call_in_thread_at(work, location) {
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
        self.defer_to_reactor_pool_at(f, Location::caller())
    }

    /// `defer_to_thread` with the submitter's location: one lookup of the
    /// bridge state for both the pool and the job table. Inline here, the
    /// usual case with jobs in flight inside a turn: the job is registered
    /// and its `Deferred` returned now, and the record goes to the reactor
    /// pool with the rest of the turn's ([`Threads::defer`]: one hold of
    /// the pool's lock and at most one wake per turn instead of one per
    /// job; a cancel before that drops the closure at once).
    fn defer_to_reactor_pool_at<T, F>(
        &self,
        f: F,
        location: &'static Location<'static>,
    ) -> Deferred<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let threads = Threads::of_handle(self);
        if threads.defers(self) && threads.accepts(self) && threads.pool.borrow().is_some() {
            let job = self.plain_job(&threads, f, location);
            threads.defer(self, job.clone(), location);
            return register(&threads, job, None);
        }
        self.defer_to_reactor_pool_rare(&threads, f, location)
    }

    /// The rest of `defer_to_reactor_pool_at`, out of line: a lone job
    /// (nothing in flight: queued at once), the pool's first job, a refusal.
    #[inline(never)]
    fn defer_to_reactor_pool_rare<T, F>(
        &self,
        threads: &Rc<Threads>,
        f: F,
        location: &'static Location<'static>,
    ) -> Deferred<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if threads.defers(self) {
            if !threads.accepts(self) {
                return Deferred::fail(ThreadError::Stopped);
            }
            drop(self.reactor_pool(threads)); // created on first use
            let job = self.plain_job(threads, f, location);
            threads.defer(self, job.clone(), location);
            return register(threads, job, None);
        }
        // The pool is borrowed, not cloned, while the job is submitted
        // (nothing on that path borrows it mutably: it exists already).
        if let Some(pool) = threads.pool.borrow().as_ref() {
            return self.defer_to_pool_in(threads, pool, true, f, location);
        }
        let pool = self.reactor_pool(threads);
        self.defer_to_pool_in(threads, &pool, true, f, location)
    }

    /// The record of a plain `defer_to_thread` job (no error mapping, no
    /// canceller), counted in flight on `threads`.
    #[inline]
    fn plain_job<T, F>(
        &self,
        threads: &Threads,
        f: F,
        location: &'static Location<'static>,
    ) -> Arc<Job<T, ThreadError, Plain<F>, NoCanceller>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Job::new(
            Plain(f),
            identity,
            None::<NoCanceller>,
            self,
            threads.in_flight(),
            location,
        )
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
    #[track_caller]
    pub fn defer_to_thread_pool<T, F>(&self, pool: &ThreadPool, f: F) -> Deferred<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let threads = Threads::of_handle(self);
        self.defer_to_pool_in(&threads, pool, false, f, Location::caller())
    }

    /// Submits the job record itself to `pool` (one allocation per job:
    /// the record is also the `Deferred`'s state); if `pool` is the reactor pool
    /// (`reactor_pool`), a cancel also withdraws the job from its backlog
    /// at once.
    #[inline]
    fn defer_to_pool_in<T, F>(
        &self,
        threads: &Threads,
        pool: &ThreadPool,
        reactor_pool: bool,
        f: F,
        location: &'static Location<'static>,
    ) -> Deferred<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if !threads.accepts(self) {
            return Deferred::fail(ThreadError::Stopped);
        }
        // A submission straight to a pool queues behind the turn's kept
        // jobs (in order with them if the pool is the reactor's).
        threads.hand_over();
        let job = self.plain_job(threads, f, location);
        // Nothing can be delivered before this returns (delivery runs on
        // this thread), so the `Deferred` is registered after submission.
        let task = match pool.submit_shared_at(job.clone() as Arc<dyn SharedTask>, location) {
            Ok(task) => task,
            Err(refused) => {
                drop(refused); // neither run nor discarded: posts nothing
                return Deferred::fail(ThreadError::Stopped);
            }
        };
        register(threads, job, reactor_pool.then_some(task))
    }

    /// [`defer_to_thread`](Handle::defer_to_thread) on any [`Worker`] (asyncio's
    /// `run_in_executor` with any executor): for instance a
    /// [`ThreadWorker`](crate::threads::ThreadWorker) for a library that must
    /// always be called from one thread, like SQLite. On a [`ThreadPool`]
    /// (also behind an `Arc`, a `Box` or `&dyn Worker`) the job costs the
    /// same single record as [`defer_to_thread_pool`](Handle::defer_to_thread_pool);
    /// other workers get it in a boxed [`Task`].
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
    #[track_caller]
    pub fn defer_to_worker<T, F, W>(&self, worker: &W, f: F) -> Deferred<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
        W: Worker + ?Sized,
    {
        self.defer_call_to_worker(worker, Plain(f), identity, None::<NoCanceller>)
    }

    /// [`defer_to_worker`](Handle::defer_to_worker) for work that fails in
    /// its own way, with its own cancel step, in the job's single record
    /// (no second `Deferred` to map the result or hook the cancel):
    /// - `f` returns `Result<T, E>`, which becomes the `Deferred`'s outcome;
    /// - `error` turns the bridge's own failures into `E`: a panic in `f`
    ///   ([`ThreadError::Panicked`]), a cancel ([`ThreadError::Cancelled`]),
    ///   a refused or shut-down submission ([`ThreadError::Stopped`]);
    /// - `on_cancel` runs on the loop when the `Deferred` is cancelled while
    ///   unresolved, before it resolves with `error(Cancelled)` (it may
    ///   resolve it first, as a [`Deferred::with_canceller`] canceller may),
    ///   for instance to interrupt running work; it is dropped unrun once
    ///   the `Deferred` resolves any other way.
    ///
    /// Otherwise as `defer_to_worker`: unstarted work cancelled never runs.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use weft::ThreadError;
    /// use weft::threads::{ThreadWorker, Worker};
    ///
    /// #[derive(Debug, PartialEq)]
    /// enum MyError { Parse, Bridge(String) }
    ///
    /// // For `Deferred::cancel` (the job's record itself uses `bridge`).
    /// impl From<weft::Cancelled> for MyError {
    ///     fn from(_: weft::Cancelled) -> Self { MyError::Bridge("cancelled".into()) }
    /// }
    ///
    /// fn bridge(e: ThreadError) -> MyError {
    ///     MyError::Bridge(e.to_string())
    /// }
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let worker = ThreadWorker::new().unwrap();
    /// let d = reactor.defer_to_worker_with(&worker, || "7".parse::<u8>().map_err(|_| MyError::Parse), bridge, || ());
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(7));
    ///
    /// let interrupted = Arc::new(AtomicBool::new(false));
    /// let flag = interrupted.clone();
    /// let d = reactor.defer_to_worker_with(&worker, || Ok(1), bridge, move || flag.store(true, Ordering::Relaxed));
    /// d.cancel();
    /// assert!(interrupted.load(Ordering::Relaxed));
    /// assert!(matches!(reactor.run_until_complete(d).unwrap(), Err(MyError::Bridge(_))));
    /// worker.quit().unwrap();
    /// ```
    #[track_caller]
    pub fn defer_to_worker_with<T, E, F, W, C>(
        &self,
        worker: &W,
        f: F,
        error: fn(ThreadError) -> E,
        on_cancel: C,
    ) -> Deferred<T, E>
    where
        F: FnOnce() -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
        W: Worker + ?Sized,
        C: FnOnce() + Send + 'static,
    {
        self.defer_call_to_worker(worker, Fallible(f), error, Some(on_cancel))
    }

    /// The body of `defer_to_worker` and `defer_to_worker_with`.
    #[track_caller]
    fn defer_call_to_worker<T, E, F, W, C>(
        &self,
        worker: &W,
        call: F,
        error: fn(ThreadError) -> E,
        on_cancel: Option<C>,
    ) -> Deferred<T, E>
    where
        F: Call<T, E>,
        T: Send + 'static,
        E: Send + 'static,
        W: Worker + ?Sized,
        C: FnOnce() + Send + 'static,
    {
        let location = Location::caller();
        let threads = Threads::of_handle(self);
        if !threads.accepts(self) {
            return Deferred::fail(error(ThreadError::Stopped));
        }
        let job = Job::new(call, error, on_cancel, self, threads.in_flight(), location);
        // A pool queues the record itself; other workers box it.
        let shared = SharedJob::new(job.clone() as Arc<dyn SharedTask>);
        if let Err(refused) = worker.do_shared(shared, location) {
            job.refuse(); // emptied first: dropping a boxed runner posts nothing
            drop(refused);
            return Deferred::fail(error(ThreadError::Stopped));
        }
        // Registered after submission, as on a pool: a worker may run the
        // job at once, but its completion is delivered on this thread, later.
        register(&threads, job, None)
    }
}
