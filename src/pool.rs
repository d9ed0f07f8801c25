//! `ThreadPool`: Twisted's thread pool, built on [`Team`].
//!
//! The pool is a [`Team`] with a [`LockWorker`](crate::threads::LockWorker)
//! coordinator and one [`ThreadWorker`] per thread, plus the bookkeeping
//! Twisted's `ThreadPool` adds: a min/max size, start and stop, statistics.
//!
//! # Hot path
//!
//! A submission boxes the closure once, takes the coordinator lock, pops the
//! most recently idle worker and pushes the task onto that worker's own queue,
//! waking only that thread (and only if it sleeps). A new thread is started
//! only when no worker is idle and the pool is below `max`; otherwise the task
//! waits in the backlog, which a worker drains itself when it finishes: under
//! load nobody sleeps and nobody is woken. There is no spinning and no timer.
//!
//! # Invariants and deliberate differences from Twisted
//!
//! - Before [`start`](ThreadPool::start) the limit is 0: work is backlogged
//!   and no thread exists. `start` grows to `min`, then by the backlog,
//!   capped at `max`.
//! - [`stop`](ThreadPool::stop) is idempotent (Twisted raises `AlreadyQuit`
//!   the second time); from then on submissions get `Err(AlreadyQuit(f))`
//!   with the closure (Twisted drops the work silently).
//! - [`adjust_pool_size`](ThreadPool::adjust_pool_size) counts only workers
//!   not yet marked to quit, so it reaches exactly the target even while
//!   workers are busy (Twisted over-shrinks, down to zero threads).
//! - Idle threads above `min` exit after the keep-alive (default
//!   [`DEFAULT_KEEP_ALIVE`], 10 s); Twisted never reaps. An idle thread at or
//!   below `min` sleeps without a timeout.
//! - A thread that cannot be started is logged (`tracing::warn!`) and the
//!   task stays in the backlog, to be run by a worker that exists. Only when
//!   the pool has no worker at all, and cannot start one, is the submission
//!   refused (`Err(AlreadyQuit(f))`, logged with `tracing::error!`). Twisted
//!   loses the task.
//! - Thread names are `{name}-{n}` with `n` counting up from 0 and never
//!   reused (Twisted's names repeat after a shrink).
//! - A panicking task is caught; the thread is reused. Fire-and-forget
//!   panics are logged once (`tracing::error!`); with a callback, the callback
//!   gets `Err(ThreadError::Panicked { .. })`.
//! - Work left when the pool stops with no thread to run it (a pool never
//!   started, or every thread refused) is dropped with a log line, so the
//!   closures' destructors run; nothing waits forever.
//!
//! Counters (completed, panicked) are kept per pool and found by the task
//! through a thread-local set by the pool's thread body, so a task carries no
//! reference to the pool.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

pub use crate::error::PoolConfigError;
use crate::error::{AlreadyQuit, ThreadError, panic_message};
use crate::loom::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::loom::{Arc, Condvar, Mutex, thread};
use crate::threads::{BlockingQueue, LockWorker, Team, ThreadWorker};

/// How long an idle thread above `min` waits for work before it exits.
///
/// Ten seconds: long enough that a steady trickle of work keeps its threads,
/// short enough that a burst's threads are gone soon after it.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Twisted's default minimum number of threads.
pub const DEFAULT_MIN_THREADS: usize = 5;

/// Twisted's default maximum number of threads.
pub const DEFAULT_MAX_THREADS: usize = 20;

/// The body a thread factory must run on its new thread.
type Body = Box<dyn FnOnce() + Send + 'static>;
type ThreadFactory = Box<dyn Fn(&str, Body) -> io::Result<()> + Send + Sync>;

std::thread_local! {
    /// The pool whose thread this is, while its body runs.
    static CURRENT: RefCell<Option<Arc<Core>>> = const { RefCell::new(None) };
}

fn with_current(f: impl FnOnce(&Core)) {
    CURRENT.with(|current| {
        if let Some(core) = current.borrow().as_deref() {
            f(core);
        }
    });
}

/// The pool's state shared with its threads (never the team: no cycle).
struct Core {
    name: String,
    keep_alive: Duration,
    factory: ThreadFactory,
    /// Serialises start, stop and resize decisions.
    config: Mutex<()>,
    min: AtomicUsize,
    max: AtomicUsize,
    /// 0 until started, then `max`.
    limit: AtomicUsize,
    started: AtomicBool,
    stopped: AtomicBool,
    next_thread: AtomicU64,
    alive: Mutex<usize>,
    exited: Condvar,
    completed: AtomicU64,
    panicked: AtomicU64,
}

impl Core {
    fn log_panic(&self, message: &str) {
        self.panicked.fetch_add(1, Ordering::Relaxed);
        self.completed.fetch_add(1, Ordering::Relaxed);
        tracing::error!(pool = %self.name, panic = %message, "pool task panicked");
    }
}

/// Marks a pool thread's end: restores the thread-local, counts the exit.
struct ThreadExit {
    core: Arc<Core>,
    previous: Option<Arc<Core>>,
}

impl Drop for ThreadExit {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|current| *current.borrow_mut() = previous);
        let mut alive = self.core.alive.lock();
        *alive -= 1;
        drop(alive);
        self.core.exited.notify_all();
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
    team: Team,
    core: Arc<Core>,
}

/// Configures a [`ThreadPool`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weft::ThreadPool;
///
/// let pool = ThreadPool::builder()
///     .name("db")
///     .min(0)
///     .max(4)
///     .keep_alive(Duration::from_secs(30))
///     .stack_size(256 * 1024)
///     .build()
///     .unwrap();
/// assert_eq!(pool.statistics().max, 4);
/// ```
pub struct ThreadPoolBuilder {
    name: String,
    min: usize,
    max: usize,
    keep_alive: Duration,
    stack_size: Option<usize>,
    factory: Option<ThreadFactory>,
}

impl fmt::Debug for ThreadPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolBuilder")
            .field("name", &self.name)
            .field("min", &self.min)
            .field("max", &self.max)
            .field("keep_alive", &self.keep_alive)
            .field("stack_size", &self.stack_size)
            .field("custom_factory", &self.factory.is_some())
            .finish()
    }
}

impl Default for ThreadPoolBuilder {
    fn default() -> Self {
        ThreadPoolBuilder {
            name: "weft-pool".to_owned(),
            min: DEFAULT_MIN_THREADS,
            max: DEFAULT_MAX_THREADS,
            keep_alive: DEFAULT_KEEP_ALIVE,
            stack_size: None,
            factory: None,
        }
    }
}

impl ThreadPoolBuilder {
    /// The thread name prefix: threads are `{name}-{n}`. Default `weft-pool`.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::builder().name("dns").build().unwrap();
    /// # drop(pool);
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The number of threads kept when idle. Default 5.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::builder().min(0).build().unwrap();
    /// assert_eq!(pool.statistics().min, 0);
    /// ```
    pub fn min(mut self, min: usize) -> Self {
        self.min = min;
        self
    }

    /// The most threads at once. Default 20.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::builder().max(8).build().unwrap();
    /// assert_eq!(pool.statistics().max, 8);
    /// ```
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// How long an idle thread above `min` waits before it exits.
    /// Default [`DEFAULT_KEEP_ALIVE`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = weft::ThreadPool::builder().keep_alive(Duration::from_secs(1)).build().unwrap();
    /// # drop(pool);
    /// ```
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// The stack size of each thread (used by the default thread factory).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::builder().stack_size(512 * 1024).build().unwrap();
    /// # drop(pool);
    /// ```
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Replaces how threads are started: `factory(name, body)` must run
    /// `body` on a new thread (named `name`), or return the error.
    ///
    /// This is a test seam: a factory can refuse, count, or keep the bodies
    /// instead of running them. The stack size is then the factory's affair.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io;
    /// use weft::ThreadPool;
    ///
    /// let pool = ThreadPool::builder()
    ///     .min(1)
    ///     .thread_factory(|_name, _body| Err(io::Error::other("no threads today")))
    ///     .build()
    ///     .unwrap();
    /// pool.start(); // logged; work will be refused while no thread exists
    /// assert!(pool.call_in_thread(|| ()).is_err());
    /// ```
    pub fn thread_factory<F>(mut self, factory: F) -> Self
    where
        F: Fn(&str, Box<dyn FnOnce() + Send + 'static>) -> io::Result<()> + Send + Sync + 'static,
    {
        self.factory = Some(Box::new(factory));
        self
    }

    /// Builds the pool (not started).
    ///
    /// # Errors
    ///
    /// [`PoolConfigError`] when `max` is 0 or `min > max`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(weft::ThreadPool::builder().min(3).max(2).build().is_err());
    /// ```
    pub fn build(self) -> Result<ThreadPool, PoolConfigError> {
        check_size(self.min, self.max)?;
        let stack_size = self.stack_size;
        let factory = self.factory.unwrap_or_else(|| {
            Box::new(move |name: &str, body: Body| {
                let mut builder = thread::Builder::new().name(name.to_owned());
                if let Some(bytes) = stack_size {
                    builder = builder.stack_size(bytes);
                }
                builder.spawn(body).map(drop)
            })
        });
        let core = Arc::new(Core {
            name: self.name,
            keep_alive: self.keep_alive,
            factory,
            config: Mutex::new(()),
            min: AtomicUsize::new(self.min),
            max: AtomicUsize::new(self.max),
            limit: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            next_thread: AtomicU64::new(0),
            alive: Mutex::new(0),
            exited: Condvar::new(),
            completed: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
        });
        let (for_workers, for_panics) = (core.clone(), core.clone());
        let team = Team::new(
            LockWorker::new(),
            move |team: &Team| create_worker(&for_workers, team),
            move |error: &ThreadError| {
                let message = match error {
                    ThreadError::Panicked { message } => message.as_str(),
                    _ => "unknown",
                };
                for_panics.log_panic(message);
            },
        );
        Ok(ThreadPool { team, core })
    }
}

fn check_size(min: usize, max: usize) -> Result<(), PoolConfigError> {
    if max == 0 {
        Err(PoolConfigError::ZeroMax)
    } else if min > max {
        Err(PoolConfigError::MinAboveMax { min, max })
    } else {
        Ok(())
    }
}

/// The team's `create_worker`: a new thread, unless the pool is at its limit
/// or the factory refuses (logged; the caller backlogs the task).
fn create_worker(core: &Arc<Core>, team: &Team) -> Option<ThreadWorker> {
    let stats = team.statistics();
    if stats.idle_worker_count + stats.busy_worker_count >= core.limit.load(Ordering::Acquire) {
        return None;
    }
    let n = core.next_thread.fetch_add(1, Ordering::Relaxed);
    let name = format!("{}-{n}", core.name);
    let (reaper, reaper_core) = (team.clone(), core.clone());
    let on_idle = Box::new(move || {
        let min = reaper_core.min.load(Ordering::Acquire);
        let stats = reaper.statistics();
        if stats.idle_worker_count + stats.busy_worker_count <= min {
            return false; // at or below min: sleep until work comes
        }
        let _ = reaper.reap_idle(min);
        true
    });
    *core.alive.lock() += 1;
    let thread_core = core.clone();
    let started = ThreadWorker::with_idle_hook(
        BlockingQueue::new(),
        |work| {
            (core.factory)(
                &name,
                Box::new(move || {
                    let previous = CURRENT.with(|c| c.replace(Some(thread_core.clone())));
                    let _exit = ThreadExit {
                        core: thread_core,
                        previous,
                    };
                    work();
                }),
            )
        },
        Some((core.keep_alive, on_idle)),
    );
    match started {
        Ok(worker) => Some(worker),
        Err(error) => {
            *core.alive.lock() -= 1;
            core.exited.notify_all();
            tracing::warn!(
                pool = %core.name,
                thread = %name,
                %error,
                "could not start a pool thread; work stays in the backlog"
            );
            None
        }
    }
}

/// A snapshot of a [`ThreadPool`].
///
/// # Examples
///
/// ```
/// let pool = weft::ThreadPool::new(0, 3).unwrap();
/// let stats = pool.statistics();
/// assert_eq!((stats.idle, stats.busy, stats.backlog, stats.threads_alive), (0, 0, 0, 0));
/// assert_eq!((stats.min, stats.max), (0, 3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PoolStatistics {
    /// Threads waiting for work.
    pub idle: usize,
    /// Threads running a task.
    pub busy: usize,
    /// Tasks accepted but not yet started.
    pub backlog: usize,
    /// Threads started and not yet exited (idle, busy, or quitting).
    pub threads_alive: usize,
    /// Tasks that finished (including those that panicked).
    pub completed: u64,
    /// Tasks whose closure or callback panicked.
    pub panicked: u64,
    /// The configured minimum.
    pub min: usize,
    /// The configured maximum.
    pub max: usize,
}

/// What [`ThreadPool::stop_timeout`] left unfinished.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let pool = weft::ThreadPool::new(1, 1).unwrap();
/// pool.start();
/// let report = pool.stop_timeout(Duration::from_secs(10));
/// assert!(report.is_complete());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StopReport {
    /// Tasks still running when the wait ended.
    pub running: usize,
    /// Tasks still waiting in the backlog when the wait ended.
    pub backlog: usize,
    /// Threads that had not exited; they are left to finish on their own.
    pub threads_alive: usize,
}

impl StopReport {
    /// Whether every thread had exited.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::new(0, 1).unwrap();
    /// assert!(pool.stop_timeout(std::time::Duration::ZERO).is_complete());
    /// ```
    pub fn is_complete(&self) -> bool {
        self.threads_alive == 0 && self.running == 0 && self.backlog == 0
    }
}

impl Default for ThreadPool {
    /// A pool of Twisted's default size (5..=20), not started.
    fn default() -> Self {
        ThreadPool::builder()
            .build()
            .expect("the default pool size is valid")
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
        let config = self.core.config.lock();
        if self.core.stopped.load(Ordering::Acquire) || self.core.started.load(Ordering::Acquire) {
            return;
        }
        self.core.started.store(true, Ordering::Release);
        self.apply_size();
        drop(config);
        let stats = self.team.statistics();
        if stats.idle_worker_count + stats.busy_worker_count == 0 && stats.backlogged_work_count > 0
        {
            tracing::error!(
                pool = %self.core.name,
                backlog = stats.backlogged_work_count,
                "pool started without any thread; its backlog waits for one"
            );
        }
    }

    /// With the config lock held and the pool started: limit, min, backlog.
    fn apply_size(&self) {
        let min = self.core.min.load(Ordering::Acquire);
        let max = self.core.max.load(Ordering::Acquire);
        self.core.limit.store(max, Ordering::Release);
        let _ = self.team.resize(min, max);
        let backlog = self.team.statistics().backlogged_work_count;
        if backlog > 0 {
            let _ = self.team.grow(backlog);
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
    pub fn call_in_thread<F>(&self, f: F) -> Result<(), AlreadyQuit<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        if !self.ready_for_work() {
            return Err(AlreadyQuit(f));
        }
        self.team.submit_with(f, |f| {
            Box::new(move || match catch_unwind(AssertUnwindSafe(f)) {
                Ok(()) => with_current(|core| {
                    core.completed.fetch_add(1, Ordering::Relaxed);
                }),
                Err(payload) => {
                    let message = panic_message(&*payload);
                    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
                    with_current(|core| core.log_panic(&message));
                }
            })
        })
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
    pub fn call_in_thread_with_callback<T, F, C>(
        &self,
        f: F,
        on_result: C,
    ) -> Result<(), AlreadyQuit<(F, C)>>
    where
        F: FnOnce() -> T + Send + 'static,
        C: FnOnce(Result<T, ThreadError>) + Send + 'static,
    {
        if !self.ready_for_work() {
            return Err(AlreadyQuit((f, on_result)));
        }
        self.team.submit_with((f, on_result), |(f, on_result)| {
            Box::new(move || {
                let result = catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
                    let err = ThreadError::from_panic(&*payload);
                    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
                    err
                });
                if result.is_err() {
                    with_current(|core| {
                        core.panicked.fetch_add(1, Ordering::Relaxed);
                    });
                }
                on_result(result);
                with_current(|core| {
                    core.completed.fetch_add(1, Ordering::Relaxed);
                });
            })
        })
    }

    /// False when work must be refused: stopped, or started with no worker
    /// and none can be started now.
    fn ready_for_work(&self) -> bool {
        if self.core.stopped.load(Ordering::Acquire) {
            return false;
        }
        if !self.core.started.load(Ordering::Acquire) {
            return true;
        }
        let has_worker = |team: &Team| {
            let stats = team.statistics();
            stats.idle_worker_count + stats.busy_worker_count > 0
        };
        if has_worker(&self.team) {
            return true;
        }
        // No worker at all: try one now, so a refusal reaches this caller
        // instead of stranding the task in a backlog nobody drains.
        let _ = self.team.grow(1);
        if has_worker(&self.team) || self.core.stopped.load(Ordering::Acquire) {
            return true; // (a stopped pool's team refuses and hands back)
        }
        tracing::error!(
            pool = %self.core.name,
            "pool has no thread and cannot start one; work refused"
        );
        false
    }

    /// Stops the pool and waits until every thread has exited.
    ///
    /// From the first call on, new work is refused. Running work finishes
    /// and backlogged work runs (when at least one thread exists; otherwise
    /// it is dropped, with a log line). Idempotent: later calls just wait.
    /// Called from one of the pool's own threads it does not wait (a thread
    /// cannot wait for itself); use [`stop_timeout`](Self::stop_timeout) for
    /// a report.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::new(2, 2).unwrap();
    /// pool.start();
    /// pool.stop();
    /// pool.stop(); // harmless
    /// assert_eq!(pool.statistics().threads_alive, 0);
    /// ```
    pub fn stop(&self) {
        let _ = self.stop_until(None);
    }

    /// Like [`stop`](Self::stop), but waits at most `timeout`, then reports
    /// what had not finished. Threads still running are left to finish on
    /// their own; the call never hangs.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    ///
    /// let pool = weft::ThreadPool::new(1, 1).unwrap();
    /// pool.start();
    /// let (release, wait) = mpsc::channel::<()>();
    /// pool.call_in_thread(move || { let _ = wait.recv(); }).unwrap_or_else(|_| unreachable!());
    /// let report = pool.stop_timeout(Duration::from_millis(10));
    /// assert!(!report.is_complete());
    /// drop(release); // lets the task, then the thread, finish
    /// pool.stop();
    /// ```
    pub fn stop_timeout(&self, timeout: Duration) -> StopReport {
        self.stop_until(Instant::now().checked_add(timeout))
    }

    fn stop_until(&self, deadline: Option<Instant>) -> StopReport {
        self.begin_stop();
        if !self.on_own_thread() {
            let mut alive = self.core.alive.lock();
            while *alive > 0 {
                match deadline {
                    None => alive = self.core.exited.wait(alive),
                    Some(deadline) => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        alive = self.core.exited.wait_timeout(alive, deadline - now).0;
                    }
                }
            }
        }
        let stats = self.statistics();
        StopReport {
            running: stats.busy,
            backlog: stats.backlog,
            threads_alive: stats.threads_alive,
        }
    }

    fn begin_stop(&self) {
        let config = self.core.config.lock();
        let first = !self.core.stopped.swap(true, Ordering::AcqRel);
        let started = self.core.started.load(Ordering::Acquire);
        drop(config);
        if !first || self.team.quit().is_err() {
            return;
        }
        let stats = self.team.statistics();
        if stats.idle_worker_count + stats.busy_worker_count == 0 && stats.backlogged_work_count > 0
        {
            let dropped = self.team.discard_backlog();
            if started {
                tracing::error!(
                    pool = %self.core.name,
                    dropped,
                    "pool stopped with no thread to run its backlog; work dropped"
                );
            } else {
                tracing::warn!(
                    pool = %self.core.name,
                    dropped,
                    "pool stopped before it started; backlogged work dropped"
                );
            }
        }
    }

    fn on_own_thread(&self) -> bool {
        CURRENT.with(|current| {
            current
                .borrow()
                .as_ref()
                .is_some_and(|core| Arc::ptr_eq(core, &self.core))
        })
    }

    /// Drops every task still waiting in the backlog (never started) and
    /// returns how many there were. Their destructors run, so drop guards in
    /// them can report the cancellation. Works before, during and after stop.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::new(0, 1).unwrap();
    /// pool.call_in_thread(|| unreachable!()).unwrap_or_else(|_| unreachable!());
    /// assert_eq!(pool.discard_backlog(), 1);
    /// pool.start();
    /// pool.stop();
    /// ```
    pub fn discard_backlog(&self) -> usize {
        self.team.discard_backlog()
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
        let _config = self.core.config.lock();
        self.core.min.store(min, Ordering::Release);
        self.core.max.store(max, Ordering::Release);
        if self.core.started.load(Ordering::Acquire) && !self.core.stopped.load(Ordering::Acquire) {
            self.apply_size();
        }
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
        let team = self.team.statistics();
        PoolStatistics {
            idle: team.idle_worker_count,
            busy: team.busy_worker_count,
            backlog: team.backlogged_work_count,
            threads_alive: *self.core.alive.lock(),
            completed: self.core.completed.load(Ordering::Relaxed),
            panicked: self.core.panicked.load(Ordering::Relaxed),
            min: self.core.min.load(Ordering::Acquire),
            max: self.core.max.load(Ordering::Acquire),
        }
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

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.begin_stop();
    }
}
