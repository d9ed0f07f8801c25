//! Workers and teams: a port of Twisted's `twisted._threads`.
//!
//! This layer knows nothing about the reactor. It is usable from plain
//! threads, from tests (with the deterministic [`memory_worker`]) and from any
//! other runtime.
//!
//! # The pieces
//!
//! - A [`Worker`] accepts [`Task`]s ([`Worker::do_work`]) until it is told to
//!   [`quit`](Worker::quit); afterwards every call is [`AlreadyQuit`], and a
//!   refused task is handed back. An [`ExclusiveWorker`] also promises that its
//!   tasks never run concurrently with each other.
//! - [`Quit`] is the one-shot flag behind that rule, made atomic.
//! - [`ThreadWorker`] owns one thread from birth and runs its tasks in FIFO
//!   order; its thread starter and its [`WorkQueue`] can be injected.
//! - [`LockWorker`] runs each task at once on the calling thread under a
//!   [`Lock`]; a task that submits more work re-entrantly gets it queued and
//!   run before the lock is released (nesting depth stays 1).
//! - [`memory_worker`] runs nothing until its [`Perform`] handle is driven:
//!   the test double that makes [`Team`] logic deterministic.
//! - [`Team`] is a worker made of workers: a coordinator (an
//!   [`ExclusiveWorker`]) owns the idle set, the busy count and the backlog,
//!   and hands each task to an idle worker, a new worker, or the backlog.
//! - [`pool`] assembles Twisted's thread pool team: a [`LockWorker`]
//!   coordinator and [`ThreadWorker`] workers under a size limit (the
//!   faithful port, kept for its tests and for custom teams).
//! - [`ThreadPool`] is the pool to use: Team's rules (sizes, backlog, shrink
//!   debt, quit) on one shared queue, itself a [`Worker`], with a
//!   keep-alive, growth on stall and withdrawable unstarted work
//!   ([`CancelHandle`]). Its rules are plain state transitions, tested
//!   deterministically like `Team`'s.
//!
//! # Invariants
//!
//! - A `Team`'s state (idle workers, busy count, backlog, shrink debt) is
//!   touched only by work running inside its coordinator; the mutex around it
//!   only makes that visible to the compiler and is never contended.
//! - Dispatch is FIFO; while a backlog exists no worker is idle; backlog work
//!   goes before paying shrink debt, and is drained even after `quit`.
//! - Nothing is dropped silently: refused work comes back in
//!   [`AlreadyQuit`], and a panicking task is caught and reported.
//!
//! # Where weft differs from Twisted
//!
//! - `Team::quit` racing with `Team::do_work` cannot lose the task: the task
//!   is either refused (and handed back) or accepted and run.
//! - A [`ThreadWorker`] task that panics is caught and logged; the thread and
//!   the tasks queued behind it live on (Twisted lets the thread die).
//! - A [`LockWorker`] task that panics does not drop the tasks queued
//!   re-entrantly behind it: they still run, then the first panic resumes in
//!   the outermost caller after the lock is released.
//! - `Team`'s `create_worker` receives the team it serves, which is how
//!   [`pool`] reads the current size without a reference cycle.
//!
//! # Examples
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use weft::threads::{Worker, memory_worker};
//!
//! let (worker, perform) = memory_worker();
//! let ran = Arc::new(AtomicUsize::new(0));
//! let r = ran.clone();
//! worker.do_work(Box::new(move || { r.fetch_add(1, Ordering::SeqCst); })).unwrap();
//! assert_eq!(ran.load(Ordering::SeqCst), 0); // nothing runs until performed
//! assert!(perform.perform());
//! assert_eq!(ran.load(Ordering::SeqCst), 1);
//! assert!(!perform.perform());
//! ```

mod lock_worker;
mod memory;
pub(crate) mod pool;
mod quit;
mod team;
mod thread_worker;

#[cfg(all(test, loom))]
mod loom_tests;

pub use lock_worker::{Lock, LockWorker, MutexLock};
pub use memory::{MemoryWorker, Perform, memory_worker};
pub use pool::{
    CancelHandle, DEFAULT_HISTOGRAMS, DEFAULT_KEEP_ALIVE, DEFAULT_MAX_THREADS, DEFAULT_MIN_THREADS,
    JobInfo, PoolStatistics, StopReport, ThreadPool, ThreadPoolBuilder,
};
pub(crate) use pool::{SharedTask, TaskKey};
pub use quit::Quit;
pub use team::{Statistics, Team, pool};
pub use thread_worker::{BlockingQueue, ThreadWorker, TryDoWorkError, WorkItem, WorkQueue};

pub(crate) use sealed::SharedJob;

use std::panic::Location;

use crate::error::AlreadyQuit;

/// A unit of work: a boxed closure run once, somewhere, by a [`Worker`].
///
/// # Examples
///
/// ```
/// let task: weft::threads::Task = Box::new(|| println!("hello"));
/// task();
/// ```
pub type Task = Box<dyn FnOnce() + Send + 'static>;

/// Something that runs [`Task`]s until it is told to quit.
///
/// Every method is thread-safe. The trait promises nothing about when or
/// where a task runs: later on this thread, at once on another, or (after a
/// quit) never, in which case the task is handed back.
///
/// # Examples
///
/// ```
/// use weft::threads::{LockWorker, Worker};
///
/// let worker = LockWorker::new();
/// worker.do_work(Box::new(|| println!("runs at once, under the lock"))).unwrap();
/// worker.quit().unwrap();
/// assert!(worker.do_work(Box::new(|| ())).is_err());
/// ```
pub trait Worker: Send + Sync {
    /// Schedules `task`.
    ///
    /// # Errors
    ///
    /// [`AlreadyQuit`] with the task when [`quit`](Worker::quit) was called.
    ///
    /// `#[track_caller]`: an implementation may record where the work was
    /// submitted ([`ThreadPool`] does, for diagnostics).
    #[track_caller]
    fn do_work(&self, task: Task) -> Result<(), AlreadyQuit<Task>>;

    /// Crate-internal (the type cannot be named outside weft): schedules a
    /// job record the submitter shares, submitted at `location`. The default
    /// boxes it into a [`Task`] for [`do_work`](Worker::do_work) (run on
    /// call, discarded if dropped unrun); [`ThreadPool`] queues the record
    /// itself, so the job costs no box.
    ///
    /// # Errors
    ///
    /// [`AlreadyQuit`] with the job when the worker quit. Dropping a job
    /// refused by the default may discard the record: the submitter marks
    /// it refused first.
    #[doc(hidden)]
    fn do_shared(
        &self,
        job: sealed::SharedJob,
        location: &'static Location<'static>,
    ) -> Result<(), AlreadyQuit<sealed::SharedJob>> {
        let _ = location; // only a pool records it
        let record = job.task.clone();
        let runner = sealed::Runner(Some(job.into_task()));
        match self.do_work(Box::new(move || runner.run())) {
            Ok(()) => Ok(()),
            Err(AlreadyQuit(refused)) => Err(AlreadyQuit(sealed::SharedJob {
                task: record,
                _refused: Some(refused),
            })),
        }
    }

    /// Frees the worker's resources and refuses all future work.
    ///
    /// # Errors
    ///
    /// [`AlreadyQuit`] on a second call.
    fn quit(&self) -> Result<(), AlreadyQuit>;
}

/// A [`Worker`] whose tasks never run concurrently with each other.
///
/// # Examples
///
/// ```
/// use weft::threads::{ExclusiveWorker, LockWorker, Team};
///
/// fn coordinator() -> impl ExclusiveWorker { LockWorker::new() }
/// let team = Team::new(coordinator(), |_team| None::<LockWorker>, |_err| ());
/// assert_eq!(team.statistics().idle_worker_count, 0);
/// ```
pub trait ExclusiveWorker: Worker {}

impl<W: Worker + ?Sized> Worker for Box<W> {
    fn do_work(&self, task: Task) -> Result<(), AlreadyQuit<Task>> {
        (**self).do_work(task)
    }

    fn do_shared(
        &self,
        job: sealed::SharedJob,
        location: &'static Location<'static>,
    ) -> Result<(), AlreadyQuit<sealed::SharedJob>> {
        (**self).do_shared(job, location)
    }

    fn quit(&self) -> Result<(), AlreadyQuit> {
        (**self).quit()
    }
}

impl<W: ExclusiveWorker + ?Sized> ExclusiveWorker for Box<W> {}

impl<W: Worker + ?Sized> Worker for std::sync::Arc<W> {
    fn do_work(&self, task: Task) -> Result<(), AlreadyQuit<Task>> {
        (**self).do_work(task)
    }

    fn do_shared(
        &self,
        job: sealed::SharedJob,
        location: &'static Location<'static>,
    ) -> Result<(), AlreadyQuit<sealed::SharedJob>> {
        (**self).do_shared(job, location)
    }

    fn quit(&self) -> Result<(), AlreadyQuit> {
        (**self).quit()
    }
}

impl<W: ExclusiveWorker + ?Sized> ExclusiveWorker for std::sync::Arc<W> {}

/// The job record behind [`Worker::do_shared`]: public only so the trait
/// can name it, in a private module so no one outside weft can.
mod sealed {
    use std::sync::Arc;

    use super::Task;
    use super::pool::{PanicCounter, SharedTask};

    /// A shared job record on its way to a worker (or refused by one).
    pub struct SharedJob {
        pub(super) task: Arc<dyn SharedTask>,
        /// The box a default `do_shared` made and the worker refused: it
        /// discards the record when dropped, so it is dropped last.
        pub(super) _refused: Option<Task>,
    }

    impl SharedJob {
        pub(crate) fn new(task: Arc<dyn SharedTask>) -> Self {
            SharedJob {
                task,
                _refused: None,
            }
        }

        /// The record, to queue (a job that was not refused).
        pub(crate) fn into_task(self) -> Arc<dyn SharedTask> {
            self.task
        }
    }

    /// A default `do_shared`'s box: runs the record, or discards it if the
    /// worker drops it unrun.
    pub(super) struct Runner(pub(super) Option<Arc<dyn SharedTask>>);

    impl Runner {
        pub(super) fn run(mut self) {
            if let Some(task) = self.0.take() {
                task.run(&PanicCounter::none());
            }
        }
    }

    impl Drop for Runner {
        fn drop(&mut self) {
            if let Some(task) = self.0.take() {
                task.discard();
            }
        }
    }
}
