//! `ThreadPool`: Twisted's thread pool, with a shared-queue fast path.
//!
//! Twisted's pool is a `Team` with a `LockWorker` coordinator and one
//! `ThreadWorker` per thread; [`threads::pool`](crate::threads::pool) keeps
//! that faithful port. `ThreadPool` keeps the same rules (sizes, backlog,
//! shrink debt, quit) but runs them on its own, cheaper machinery, because the
//! Team protocol costs four allocations, several `Arc` clones, a contended
//! coordinator lock and, on a machine with fewer cores than threads, a futex
//! wake per task (each task went to one chosen worker's private queue).
//!
//! # Design
//!
//! One mutex guards the whole state: a FIFO of tasks and the role counts.
//! Every thread is in exactly one role:
//!
//! - **idle**: asleep on the work condvar, free to be claimed;
//! - **busy**: running a task, or woken for one (a *claim*);
//! - **spare**: at most one thread that runs nothing until the pool stalls
//!   (below).
//!
//! A submission boxes the closure once (the box is the queue item), pushes it
//! and, if a thread is idle and no claim is in flight, moves one idle thread
//! to busy with a claim and wakes one sleeper. The woken thread, on taking
//! its task, wakes the next idle thread if work still waits (one wake in
//! flight at a time, like tokio's `num_notify`). Otherwise the task waits in
//! the backlog, which a busy thread drains itself when its task ends: under
//! load nobody sleeps and nobody is woken. Claims and exit orders are counts, not addressed to a
//! thread: whichever sleeper wakes takes one (a claim before an exit order),
//! so no wake-up can be lost and no thread needs its own queue. The backlog is
//! the queued tasks beyond the claimed ones.
//!
//! # Growth
//!
//! Twisted adds a thread whenever no thread is idle, so a burst of short
//! tasks grows the pool to `max` although the threads it has would drain it
//! at once. Here a task that finds every thread busy:
//!
//! - starts a new thread at once while fewer than `available_parallelism()`
//!   threads are busy (the pool always gets up to one busy thread per core);
//! - otherwise is left to the spare (started now if there is none). The spare
//!   watches the tasks taken from the queue: if the backlog stays non-empty
//!   and no task at all is taken for `GROWTH_DELAY` (1 ms) (every thread is
//!   blocked), the spare becomes a worker, takes the oldest task, and starts a
//!   new spare if work still waits. So work waiting on blocked threads gets a
//!   new thread after at most `GROWTH_DELAY` (1 ms) per thread, while a burst that
//!   the threads are draining adds none. The spare sleeps without a timeout
//!   while there is no backlog; the first submission that backlogs work wakes
//!   it (at most once per `GROWTH_DELAY` (1 ms)).
//!
//! [`start`](ThreadPool::start) and
//! [`adjust_pool_size`](ThreadPool::adjust_pool_size) grow exactly as Twisted
//! does: to `min`, then one thread per backlogged task, capped at `max`.
//! There is no spinning; the only timed waits are the spare's and the
//! keep-alive.
//!
//! # Invariants and deliberate differences from Twisted
//!
//! - While the backlog is non-empty no thread is idle, or a woken thread is
//!   on its way to take it (the spare is reported as idle in
//!   [`PoolStatistics`]; it is waiting for work).
//! - Before [`start`](ThreadPool::start) the limit is 0: work is backlogged
//!   and no thread exists.
//! - [`stop`](ThreadPool::stop) is idempotent (Twisted raises `AlreadyQuit`
//!   the second time); from then on submissions get `Err(AlreadyQuit(f))`
//!   with the closure (Twisted drops the work silently). Idle threads and the
//!   spare exit at once; busy ones drain the backlog first.
//! - [`adjust_pool_size`](ThreadPool::adjust_pool_size) counts only threads
//!   not yet marked to quit, so it reaches exactly the target even while
//!   threads are busy (Twisted over-shrinks, down to zero threads). Extra
//!   threads quit spare first, then idle ones, then busy ones as they finish.
//! - Idle threads (and the spare) above `min` exit after the keep-alive
//!   (default [`DEFAULT_KEEP_ALIVE`], 10 s); Twisted never reaps. An idle
//!   thread at or below `min` sleeps without a timeout.
//! - A thread that cannot be started is logged (`tracing::warn!`) and the
//!   task stays in the backlog, to be run by a thread that exists. Only when
//!   the pool has no thread at all, and cannot start one, is the submission
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
//! - Threads are started (the factory is called) with the state lock held, as
//!   Twisted's coordinator does, so the counts never show a half-made thread.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

pub use crate::error::PoolConfigError;
use crate::error::{AlreadyQuit, ThreadError, panic_message};
use crate::loom::atomic::{AtomicU64, Ordering};
use crate::loom::{Arc, Condvar, Mutex, MutexGuard, thread};

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

/// How long queued work may wait with every thread busy and no task taken
/// before the pool adds a thread (above one busy thread per core).
///
/// A task that blocks (on I/O, a lock, an event) takes no CPU, so work
/// queued behind blocked threads gets a new thread after this delay; a burst
/// of short tasks, which the threads keep taking, adds none.
pub(crate) const GROWTH_DELAY: Duration = Duration::from_millis(1);

/// The body a thread factory must run on its new thread.
type Body = Box<dyn FnOnce() + Send + 'static>;
type ThreadFactory = Box<dyn Fn(&str, Body) -> io::Result<()> + Send + Sync>;

/// A queued task: the submitted closure, boxed once, run with the pool's
/// core (for counting and logging panics).
trait Job: Send {
    fn run(self: Box<Self>, core: &Core);
}

/// `call_in_thread`'s job.
struct Plain<F>(F);

impl<F: FnOnce() + Send> Job for Plain<F> {
    fn run(self: Box<Self>, core: &Core) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(self.0)) {
            let message = panic_message(&*payload);
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            core.log_panic(&message);
        }
    }
}

/// `call_in_thread_with_callback`'s job.
struct WithCallback<F, C>(F, C);

impl<T, F, C> Job for WithCallback<F, C>
where
    F: FnOnce() -> T + Send,
    C: FnOnce(Result<T, ThreadError>) + Send,
{
    fn run(self: Box<Self>, core: &Core) {
        let WithCallback(f, on_result) = *self;
        let result = catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
            let err = ThreadError::from_panic(&*payload);
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            err
        });
        if result.is_err() {
            core.panicked.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || on_result(result))) {
            let message = panic_message(&*payload);
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            core.log_panic(&message);
        }
    }
}

#[cfg(not(loom))]
crate::loom::thread_local! {
    /// The pool whose thread this is, while its body runs.
    static CURRENT: std::cell::RefCell<Option<Arc<Core>>> = const { std::cell::RefCell::new(None) };
}

// loom's `thread_local!` takes no `const` initialiser.
#[cfg(loom)]
crate::loom::thread_local! {
    static CURRENT: std::cell::RefCell<Option<Arc<Core>>> = std::cell::RefCell::new(None);
}

/// The pool's state, shared with its threads.
struct Core {
    name: String,
    keep_alive: Duration,
    factory: ThreadFactory,
    /// Threads that may be busy before growth waits for a stall.
    eager: usize,
    state: Mutex<State>,
    /// Idle threads (and those with a claim or an exit order) wait here.
    work: Condvar,
    /// The spare waits here.
    spare: Condvar,
    /// Signalled whenever a thread exits.
    exited: Condvar,
    panicked: AtomicU64,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Box<dyn Job>>,
    /// Queued tasks promised to woken sleepers (those sleepers count busy).
    claimed: usize,
    /// Sleepers free to be claimed.
    idle: usize,
    /// Threads running a task or holding a claim.
    busy: usize,
    /// Spare threads (0 or 1) not told to exit.
    spare: usize,
    /// Whether the spare is watching for a stall.
    armed: bool,
    /// Exit orders for sleepers and for spares, taken by whoever wakes.
    exit_idle: usize,
    exit_spare: usize,
    /// Busy threads to retire when they find no backlog.
    to_shrink: usize,
    /// Tasks taken from the queue so far: the spare's progress signal.
    taken: u64,
    completed: u64,
    min: usize,
    max: usize,
    /// 0 until started, then `max`.
    limit: usize,
    started: bool,
    stopped: bool,
    next_thread: u64,
    alive: usize,
}

impl State {
    fn backlog(&self) -> usize {
        self.queue.len() - self.claimed
    }

    /// Threads with a role (idle, busy or spare), marked or not.
    fn threads(&self) -> usize {
        self.idle + self.busy + self.spare
    }

    /// Threads not yet marked to quit.
    fn unmarked(&self) -> usize {
        self.threads().saturating_sub(self.to_shrink)
    }

    /// Takes the oldest queued task for a busy thread.
    fn take(&mut self) -> Box<dyn Job> {
        self.taken += 1;
        self.queue
            .pop_front()
            .expect("pool invariant: a claim or a backlog names a queued task")
    }
}

/// The role a new thread starts in.
#[derive(Clone, Copy)]
enum Role {
    /// Idle, or busy with a claim when work is backlogged.
    Worker,
    /// The spare.
    Spare,
}

impl Core {
    fn log_panic(&self, message: &str) {
        self.panicked.fetch_add(1, Ordering::Relaxed);
        tracing::error!(pool = %self.name, panic = %message, "pool task panicked");
    }
}

/// Starts a thread in `role`, counting it first (under the state lock, which
/// the caller holds). A refusal is logged and undone; returns success.
fn spawn(core: &Arc<Core>, st: &mut State, role: Role) -> bool {
    let n = st.next_thread;
    st.next_thread += 1;
    let name = format!("{}-{n}", core.name);
    let claim = match role {
        Role::Worker if st.backlog() > 0 => {
            st.busy += 1;
            st.claimed += 1;
            true
        }
        Role::Worker => {
            st.idle += 1;
            false
        }
        Role::Spare => {
            st.spare += 1;
            st.armed = st.backlog() > 0;
            false
        }
    };
    st.alive += 1;
    let thread_core = core.clone();
    let body: Body = Box::new(move || thread_main(thread_core, role));
    match (core.factory)(&name, body) {
        Ok(()) => true,
        Err(error) => {
            st.alive -= 1;
            match role {
                Role::Worker if claim => {
                    st.busy -= 1;
                    st.claimed -= 1;
                }
                Role::Worker => st.idle -= 1,
                Role::Spare => {
                    st.spare -= 1;
                    st.armed = false;
                }
            }
            tracing::warn!(
                pool = %core.name,
                thread = %name,
                %error,
                "could not start a pool thread; work stays in the backlog"
            );
            false
        }
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
        self.core.state.lock().alive -= 1;
        self.core.exited.notify_all();
    }
}

/// What a thread does next.
enum Next {
    /// Run this task (the thread is busy), then recycle.
    Run(Box<dyn Job>),
    /// Sleep as a worker (counted idle, or given a claim or an exit order).
    Sleep,
    /// Watch as the spare.
    Spare,
    Exit,
}

/// The body of every pool thread.
fn thread_main(core: Arc<Core>, role: Role) {
    let previous = CURRENT.with(|c| c.replace(Some(core.clone())));
    let _exit = ThreadExit {
        core: core.clone(),
        previous,
    };
    let core = &core;
    let mut next = match role {
        Role::Worker => Next::Sleep,
        Role::Spare => Next::Spare,
    };
    let mut st = core.state.lock();
    loop {
        next = match next {
            Next::Run(job) => {
                drop(st);
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| job.run(core))) {
                    let message = panic_message(&*payload);
                    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
                    core.log_panic(&message);
                }
                st = core.state.lock();
                st.completed += 1;
                recycle(&mut st)
            }
            Next::Sleep => {
                let (guard, next) = sleep(core, st);
                st = guard;
                next
            }
            Next::Spare => {
                let (guard, next) = watch(core, st);
                st = guard;
                next
            }
            Next::Exit => return,
        };
    }
}

/// A busy thread whose task ended: backlog first, then quit, then debt,
/// then idle.
fn recycle(st: &mut State) -> Next {
    if st.backlog() > 0 {
        Next::Run(st.take())
    } else if st.stopped || st.to_shrink > 0 {
        if !st.stopped {
            st.to_shrink -= 1;
        }
        st.busy -= 1;
        Next::Exit
    } else {
        st.busy -= 1;
        st.idle += 1;
        Next::Sleep
    }
}

/// A sleeper: takes a claim, else an exit order, else waits (and exits
/// after the keep-alive when above `min`).
fn sleep<'a>(core: &'a Core, mut st: MutexGuard<'a, State>) -> (MutexGuard<'a, State>, Next) {
    let mut deadline = None;
    loop {
        if st.claimed > 0 {
            st.claimed -= 1;
            let job = st.take();
            // Work still waits and a thread is idle: wake the next one.
            if st.backlog() > 0 && st.idle > 0 {
                st.idle -= 1;
                st.busy += 1;
                st.claimed += 1;
                core.work.notify_one();
            }
            return (st, Next::Run(job));
        }
        if st.backlog() > 0 && st.idle > 0 {
            // Backlogged work with no claim: this idle thread takes it.
            st.idle -= 1;
            st.busy += 1;
            let job = st.take();
            return (st, Next::Run(job));
        }
        if st.exit_idle > 0 {
            st.exit_idle -= 1;
            return (st, Next::Exit);
        }
        // No claim or order is pending, so this thread is one of the idle.
        if st.unmarked() > st.min && !st.stopped {
            let now = Instant::now();
            let until = *deadline.get_or_insert_with(|| now + core.keep_alive);
            if now >= until {
                st.idle -= 1;
                return (st, Next::Exit);
            }
            st = core.work.wait_timeout(st, until - now).0;
        } else {
            deadline = None;
            st = core.work.wait(st);
        }
    }
}

/// The spare: exits when told, drains at stop, and turns into a worker when
/// backlogged work sees no progress for `GROWTH_DELAY` (1 ms).
fn watch<'a>(core: &'a Arc<Core>, mut st: MutexGuard<'a, State>) -> (MutexGuard<'a, State>, Next) {
    let mut keep_alive = None;
    let mut watching: Option<(u64, Instant)> = None;
    loop {
        if st.exit_spare > 0 {
            st.exit_spare -= 1;
            return (st, Next::Exit);
        }
        // No exit order is pending, so this thread is the spare.
        let backlog = st.backlog();
        if st.stopped {
            st.spare -= 1;
            if backlog > 0 {
                st.busy += 1;
                let job = st.take();
                return (st, Next::Run(job));
            }
            return (st, Next::Exit);
        }
        if !st.armed || backlog == 0 {
            st.armed = false;
            watching = None;
            if st.unmarked() > st.min {
                let now = Instant::now();
                let until = *keep_alive.get_or_insert_with(|| now + core.keep_alive);
                if now >= until {
                    st.spare -= 1;
                    return (st, Next::Exit);
                }
                st = core.spare.wait_timeout(st, until - now).0;
            } else {
                keep_alive = None;
                st = core.spare.wait(st);
            }
            continue;
        }
        keep_alive = None;
        let now = Instant::now();
        let (mark, until) = *watching.get_or_insert((st.taken, now + GROWTH_DELAY));
        if now < until {
            st = core.spare.wait_timeout(st, until - now).0;
            continue;
        }
        if st.taken != mark {
            watching = Some((st.taken, now + GROWTH_DELAY));
            continue;
        }
        // Stalled: become a worker, and leave a spare if work still waits.
        st.spare -= 1;
        st.armed = false;
        st.busy += 1;
        let job = st.take();
        if st.backlog() > 0 && st.threads() < st.limit {
            spawn(core, &mut st, Role::Spare);
        }
        return (st, Next::Run(job));
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
        let eager = std::thread::available_parallelism().map_or(1, usize::from);
        let core = Arc::new(Core {
            name: self.name,
            keep_alive: self.keep_alive,
            factory,
            eager,
            state: Mutex::new(State {
                min: self.min,
                max: self.max,
                ..State::default()
            }),
            work: Condvar::new(),
            spare: Condvar::new(),
            exited: Condvar::new(),
            panicked: AtomicU64::new(0),
        });
        Ok(ThreadPool { core })
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
        let mut st = self.core.state.lock();
        if st.stopped || st.started {
            return;
        }
        st.started = true;
        self.apply_size(&mut st);
        if st.threads() == 0 && st.backlog() > 0 {
            tracing::error!(
                pool = %self.core.name,
                backlog = st.backlog(),
                "pool started without any thread; its backlog waits for one"
            );
        }
    }

    /// With the state lock held and the pool started: limit, min, backlog.
    fn apply_size(&self, st: &mut State) {
        st.limit = st.max;
        let unmarked = st.unmarked();
        if unmarked > st.max {
            self.quit_threads(st, unmarked - st.max);
        } else if unmarked < st.min {
            let cancel = (st.min - unmarked).min(st.to_shrink);
            st.to_shrink -= cancel;
            for _ in st.unmarked()..st.min {
                if st.threads() >= st.limit || !spawn(&self.core, st, Role::Worker) {
                    break;
                }
            }
        }
        for _ in 0..st.backlog() {
            if st.threads() >= st.limit || !spawn(&self.core, st, Role::Worker) {
                break;
            }
        }
    }

    /// Quits `n` threads: the spare, then idle ones, then busy ones (debt).
    fn quit_threads(&self, st: &mut State, mut n: usize) {
        let spare = n.min(st.spare);
        st.spare -= spare;
        st.exit_spare += spare;
        if st.spare == 0 {
            st.armed = false;
        }
        n -= spare;
        let idle = n.min(st.idle);
        st.idle -= idle;
        st.exit_idle += idle;
        st.to_shrink += n - idle;
        if spare > 0 {
            self.core.spare.notify_all();
        }
        if idle > 0 {
            self.core.work.notify_all();
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
        self.submit(Box::new(Plain(f)))
            .map_err(|job| AlreadyQuit(job.0))
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
        self.submit(Box::new(WithCallback(f, on_result)))
            .map_err(|job| AlreadyQuit((job.0, job.1)))
    }

    /// Queues `job` and wakes or starts a thread for it; hands it back when
    /// the pool is stopped, or started with no thread and none can start.
    fn submit<J: Job + 'static>(&self, job: Box<J>) -> Result<(), Box<J>> {
        let core = &self.core;
        let mut st = core.state.lock();
        if st.stopped {
            return Err(job);
        }
        if st.started && st.threads() == 0 && !spawn(core, &mut st, Role::Worker) {
            drop(st);
            tracing::error!(
                pool = %core.name,
                "pool has no thread and cannot start one; work refused"
            );
            return Err(job);
        }
        st.queue.push_back(job);
        if st.idle > 0 && st.claimed > 0 {
            // A sleeper is already waking; it takes this task too, or wakes
            // the next sleeper if work is still waiting (one wake at a time).
            return Ok(());
        }
        if st.idle > 0 {
            st.idle -= 1;
            st.busy += 1;
            st.claimed += 1;
            drop(st);
            core.work.notify_one();
            return Ok(());
        }
        if !st.started || st.threads() >= st.limit {
            if st.spare > 0 && !st.armed {
                st.armed = true;
                drop(st);
                core.spare.notify_one();
            }
            return Ok(());
        }
        if st.busy < core.eager {
            // One thread per core may be busy at once: start one now (a
            // refusal is logged and the task waits for a thread that exists).
            spawn(core, &mut st, Role::Worker);
        } else if st.spare == 0 {
            spawn(core, &mut st, Role::Spare);
        } else if !st.armed {
            st.armed = true;
            drop(st);
            core.spare.notify_one();
        }
        Ok(())
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
        let mut st = self.core.state.lock();
        if !self.on_own_thread() {
            while st.alive > 0 {
                match deadline {
                    None => st = self.core.exited.wait(st),
                    Some(deadline) => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        st = self.core.exited.wait_timeout(st, deadline - now).0;
                    }
                }
            }
        }
        StopReport {
            running: st.busy,
            backlog: st.backlog(),
            threads_alive: st.alive,
        }
    }

    fn begin_stop(&self) {
        let mut st = self.core.state.lock();
        if st.stopped {
            return;
        }
        st.stopped = true;
        st.exit_idle += st.idle;
        st.idle = 0;
        let dropped = if st.busy + st.spare == 0 {
            std::mem::take(&mut st.queue)
        } else {
            VecDeque::new()
        };
        let started = st.started;
        drop(st);
        self.core.work.notify_all();
        self.core.spare.notify_all();
        if dropped.is_empty() {
            return;
        }
        let dropped_count = dropped.len();
        drop(dropped);
        if started {
            tracing::error!(
                pool = %self.core.name,
                dropped = dropped_count,
                "pool stopped with no thread to run its backlog; work dropped"
            );
        } else {
            tracing::warn!(
                pool = %self.core.name,
                dropped = dropped_count,
                "pool stopped before it started; backlogged work dropped"
            );
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
        let mut st = self.core.state.lock();
        let claimed = st.claimed;
        let dropped: Vec<Box<dyn Job>> = st.queue.drain(claimed..).collect();
        drop(st);
        dropped.len()
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
        let mut st = self.core.state.lock();
        st.min = min;
        st.max = max;
        if st.started && !st.stopped {
            self.apply_size(&mut st);
        }
        // Sleepers re-check their keep-alive against the new minimum.
        drop(st);
        self.core.work.notify_all();
        self.core.spare.notify_all();
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
        let st = self.core.state.lock();
        PoolStatistics {
            idle: st.idle + st.spare,
            busy: st.busy,
            backlog: st.backlog(),
            threads_alive: st.alive,
            completed: st.completed,
            panicked: self.core.panicked.load(Ordering::Relaxed),
            min: st.min,
            max: st.max,
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

/// loom models of the pool's hand-off protocol: claims, backlog drained by
/// busy threads, exit orders and stop (at most three threads each).
///
/// `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom
/// cargo test --release -p weft --lib loom_`
#[cfg(all(test, loom))]
mod loom_tests {
    use super::ThreadPool;
    use crate::error::AlreadyQuit;
    use crate::loom::model::{Done, task};
    use crate::loom::{Arc, thread};

    #[test]
    fn loom_pool_claim_and_backlog_run_every_task_once_and_stop_joins() {
        loom::model(|| {
            let pool = ThreadPool::new(1, 1).unwrap();
            pool.start();
            let done = Arc::new(Done::default());
            for _ in 0..2 {
                pool.call_in_thread(task(&done))
                    .unwrap_or_else(|_| panic!("refused"));
            }
            done.wait_for(2);
            pool.stop();
            let s = pool.statistics();
            assert_eq!((s.threads_alive, s.completed, s.backlog), (0, 2, 0));
        });
    }

    #[test]
    fn loom_pool_two_submitters_grow_one_thread_and_lose_nothing() {
        loom::model(|| {
            let pool = Arc::new(ThreadPool::new(0, 1).unwrap());
            pool.start();
            let done = Arc::new(Done::default());
            let (other_pool, other_done) = (pool.clone(), done.clone());
            let other = thread::spawn(move || {
                other_pool
                    .call_in_thread(task(&other_done))
                    .unwrap_or_else(|_| panic!("refused"));
            });
            pool.call_in_thread(task(&done))
                .unwrap_or_else(|_| panic!("refused"));
            other.join().unwrap();
            done.wait_for(2);
            pool.stop();
            assert_eq!(pool.statistics().threads_alive, 0);
        });
    }

    #[test]
    fn loom_pool_stop_racing_submit_runs_or_hands_back() {
        loom::model(|| {
            let pool = Arc::new(ThreadPool::new(1, 1).unwrap());
            pool.start();
            let done = Arc::new(Done::default());
            let (other_pool, other_done) = (pool.clone(), done.clone());
            let submitter = thread::spawn(move || {
                if let Err(AlreadyQuit(task)) = other_pool.call_in_thread(task(&other_done)) {
                    task(); // handed back: run it here
                }
            });
            pool.stop();
            submitter.join().unwrap();
            done.wait_for(1);
            pool.stop();
            assert_eq!(pool.statistics().threads_alive, 0);
        });
    }

    #[test]
    fn loom_pool_shrink_while_idle_exits_exactly_one_thread() {
        loom::model(|| {
            let pool = ThreadPool::new(2, 2).unwrap();
            pool.start();
            pool.adjust_pool_size(1, 1).unwrap();
            let done = Arc::new(Done::default());
            pool.call_in_thread(task(&done))
                .unwrap_or_else(|_| panic!("refused"));
            done.wait_for(1);
            let s = pool.statistics();
            assert_eq!((s.idle + s.busy, s.max), (1, 1));
            pool.stop();
            assert_eq!(pool.statistics().threads_alive, 0);
        });
    }
}
