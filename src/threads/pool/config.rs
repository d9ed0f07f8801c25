//! The pool's configuration and reports: sizes, builder, statistics.

use std::fmt;
use std::io;
use std::panic::Location;
use std::time::Duration;

use super::ThreadPool;
use super::spin::SpinHint;
use super::state::State;
use super::thread::{Body, Core, JobClock, ThreadFactory};

use crate::diagnostics::Histogram;
use crate::error::PoolConfigError;
use crate::loom::{Arc, Condvar, Mutex, thread};
use crate::time::{COARSE_AVAILABLE, Clock, SystemClock};

/// How long an idle thread above `min` waits for work before it exits.
///
/// Ten seconds: long enough that a steady trickle of work keeps its threads,
/// short enough that a burst's threads are gone soon after it.
///
/// # Examples
///
/// ```
/// assert_eq!(weft::DEFAULT_KEEP_ALIVE, std::time::Duration::from_secs(10));
/// ```
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Twisted's default minimum number of threads.
///
/// # Examples
///
/// ```
/// let pool = weft::ThreadPool::default();
/// assert_eq!(pool.statistics().min, weft::DEFAULT_MIN_THREADS);
/// ```
pub const DEFAULT_MIN_THREADS: usize = 5;

/// Twisted's default maximum number of threads.
///
/// # Examples
///
/// ```
/// let pool = weft::ThreadPool::default();
/// assert_eq!(pool.statistics().max, weft::DEFAULT_MAX_THREADS);
/// ```
pub const DEFAULT_MAX_THREADS: usize = 20;

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
    clock: Option<std::sync::Arc<dyn Clock>>,
    histograms: bool,
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
            .field("custom_clock", &self.clock.is_some())
            .field("histograms", &self.histograms)
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
            clock: None,
            histograms: DEFAULT_HISTOGRAMS,
        }
    }
}

impl ThreadPoolBuilder {
    /// The thread name prefix: threads are `{name}-{n}`. Default `weft-pool`.
    ///
    /// A name with a NUL byte is an error at [`build`](Self::build) (the OS
    /// cannot name a thread with it).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::builder().name("dns").build().unwrap();
    /// assert!(weft::ThreadPool::builder().name("a\0b").build().is_err());
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

    /// How long an idle thread above `min` waits before it exits, measured
    /// on the pool's [`clock`](Self::clock). Default [`DEFAULT_KEEP_ALIVE`].
    /// Any value is valid; one the clock cannot reach (up to
    /// [`Duration::MAX`]) means threads are never reaped.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = weft::ThreadPool::builder().keep_alive(Duration::MAX).build().unwrap();
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

    /// The clock behind the keep-alive and the growth delay. Default: a
    /// [`SystemClock`].
    ///
    /// With a [`ManualClock`](crate::testing::ManualClock) idle threads are
    /// reaped only when the test advances it (advancing wakes the pool's
    /// sleepers), and the spare never sees a stall by itself. The clock is
    /// read with the pool's lock held: it must not call into the pool.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::testing::ManualClock;
    ///
    /// let pool = weft::ThreadPool::builder().clock(ManualClock::new()).build().unwrap();
    /// # drop(pool);
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(std::sync::Arc::new(clock));
        self
    }

    /// Whether every job's queue wait and run time are recorded in
    /// [`ThreadPool::queue_wait_histogram`] and
    /// [`ThreadPool::run_time_histogram`]. Default off
    /// ([`DEFAULT_HISTOGRAMS`]), for its cost on short jobs: on, every job
    /// is timed on the precise clock (two reads per job, 40-90 ns each on
    /// the 2-core VMs measured) and recorded with four atomic additions on
    /// lines the pool's threads share; in the fair harness's pool row
    /// (500k tiny jobs) that took ~90 to ~150 ns per job. Off, the pool
    /// still knows each job's location and age
    /// ([`PoolStatistics::oldest_backlog`], [`ThreadPool::running_jobs`])
    /// on the kernel's coarse clock (a 1-4 ms tick, ~5 ns a read).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::builder().histograms(false).build().unwrap();
    /// assert_eq!(pool.run_time_histogram().count(), 0);
    /// ```
    pub fn histograms(mut self, enabled: bool) -> Self {
        self.histograms = enabled;
        self
    }

    /// Replaces how threads are started: `factory(name, body)` must run
    /// `body` on a new thread (named `name`), or return the error.
    ///
    /// This is a test seam: a factory can refuse, count, or keep the bodies
    /// instead of running them. It is called without any pool lock held, so
    /// it may use the pool; an error, a panic, or a body dropped unrun is
    /// logged and the thread is taken out of the counts. The stack size is
    /// then the factory's affair.
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
    /// [`PoolConfigError`] when `max` is 0, `min > max`, or the name holds a
    /// NUL byte.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(weft::ThreadPool::builder().min(3).max(2).build().is_err());
    /// ```
    pub fn build(self) -> Result<ThreadPool, PoolConfigError> {
        check_size(self.min, self.max)?;
        if self.name.contains('\0') {
            return Err(PoolConfigError::InvalidName);
        }
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
        let precise = self.clock.is_some() || self.histograms || !COARSE_AVAILABLE;
        let job_clock = if precise {
            JobClock::Pool
        } else {
            JobClock::Coarse
        };
        let clock = self
            .clock
            .unwrap_or_else(|| std::sync::Arc::new(SystemClock::new()));
        let eager = std::thread::available_parallelism().map_or(1, usize::from);
        let core = Arc::new(Core {
            name: self.name,
            factory,
            clock: clock.clone(),
            state: Mutex::new(State::new(self.min, self.max, eager, self.keep_alive)),
            inbox: Box::default(),
            work: Condvar::new(),
            spin_hint: SpinHint::new(),
            spare: Condvar::new(),
            exited: Condvar::new(),
            histograms: self.histograms,
            job_clock,
            queue_wait: Histogram::new(),
            run_time: Histogram::new(),
        });
        register_waker(&*clock, &core);
        Ok(ThreadPool { core })
    }
}

/// A clock that moves on its own schedule wakes the sleepers so they re-read
/// it. Taking the lock first orders the wake after any sleeper's read of the
/// old time.
#[cfg(not(loom))]
fn register_waker(clock: &dyn Clock, core: &Arc<Core>) {
    let weak = Arc::downgrade(core);
    clock.register_waker(std::sync::Arc::new(move || {
        if let Some(core) = weak.upgrade() {
            drop(core.locked());
            core.work.notify_all();
            core.spare.notify_all();
        }
    }));
}

// loom's `Arc` has no weak references; the models use the system clock.
#[cfg(loom)]
fn register_waker(_clock: &dyn Clock, _core: &Arc<Core>) {}

pub(super) fn check_size(min: usize, max: usize) -> Result<(), PoolConfigError> {
    if max == 0 {
        Err(PoolConfigError::ZeroMax)
    } else if min > max {
        Err(PoolConfigError::MinAboveMax { min, max })
    } else {
        Ok(())
    }
}

/// Whether pools record job histograms unless told otherwise
/// ([`ThreadPoolBuilder::histograms`]).
///
/// # Examples
///
/// ```
/// assert!(!weft::threads::DEFAULT_HISTOGRAMS);
/// ```
pub const DEFAULT_HISTOGRAMS: bool = false;

/// A pool job, as diagnostics see it: where it was submitted, and how long
/// it has waited (queued) or run (running), on the pool's clock.
///
/// # Examples
///
/// ```
/// let pool = weft::ThreadPool::new(0, 1).unwrap(); // not started: work waits
/// pool.call_in_thread(|| ()).unwrap_or_else(|_| unreachable!());
/// let line = line!() - 1;
/// let oldest = pool.statistics().oldest_backlog.unwrap();
/// assert_eq!((oldest.location.file(), oldest.location.line()), (file!(), line));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobInfo {
    /// The code that submitted the job (`#[track_caller]`).
    pub location: &'static Location<'static>,
    /// Time since it was queued (for a queued job) or started (for a
    /// running one).
    pub age: Duration,
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
/// assert_eq!((stats.threads_created, stats.threads_reaped), (0, 0));
/// assert_eq!(stats.oldest_backlog, None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PoolStatistics {
    /// Threads waiting for work.
    pub idle: usize,
    /// Threads running a task, or woken to take one (a thread counts as
    /// busy from the moment work is handed to it, so a burst never finds
    /// a thread "idle" that is already on its way;
    /// [`ThreadPool::running_jobs`] lists only jobs a thread has taken).
    pub busy: usize,
    /// Tasks accepted but not yet started (withdrawn ones are not counted).
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
    /// Threads started so far (their body began to run).
    pub threads_created: u64,
    /// Threads that have exited so far, for any reason (keep-alive,
    /// shrinking, stop). `threads_created - threads_reaped` threads are
    /// running their body.
    pub threads_reaped: u64,
    /// The oldest job queued and not yet started (a thread may be on its
    /// way to it), with its age; `None` when nothing is queued.
    pub oldest_backlog: Option<JobInfo>,
}

impl PoolStatistics {
    /// The statistics of `st` at `now` (pool clock, ns).
    pub(super) fn of(st: &State, now: u64) -> PoolStatistics {
        PoolStatistics {
            idle: st.idle + st.spare,
            busy: st.busy,
            backlog: st.backlog(),
            threads_alive: st.alive,
            completed: st.completed,
            panicked: st.panicked,
            min: st.min,
            max: st.max,
            threads_created: st.threads_created,
            threads_reaped: st.threads_reaped,
            oldest_backlog: st.oldest().map(|meta| JobInfo {
                location: meta.location,
                age: Duration::from_nanos(now.saturating_sub(meta.enqueued)),
            }),
        }
    }
}

/// What [`ThreadPool::stop`] or [`ThreadPool::stop_timeout`] left unfinished.
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
/// assert!(!report.detached);
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
    /// The call did not wait at all, because it ran where waiting could
    /// deadlock: on a reactor's loop thread (pool work may be waiting for
    /// that loop) or on one of the pool's own threads. The pool is stopped
    /// all the same; its threads finish their work detached.
    pub detached: bool,
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
