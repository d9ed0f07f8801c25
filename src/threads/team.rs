//! `Team`: a worker made of workers, run by a coordinator.
//!
//! The coordinator (any [`ExclusiveWorker`]) runs every state change, so the
//! team's state (idle workers, busy count, backlog, shrink debt, "should quit
//! the coordinator") is touched only inside it. The state sits in a mutex that
//! is never contended: it makes the exclusivity visible to the compiler. The
//! three [`Statistics`] counts are mirrored into atomics after every change,
//! so `statistics()` never waits.
//!
//! # Coordination rules (Twisted's, kept exactly)
//!
//! - `do_work`: take the most recently idle worker, else `create_worker`; if
//!   that gives nothing, append to the backlog. A dispatched task is wrapped:
//!   it runs under `catch_unwind` (a panic is reported once to `log_panic`),
//!   then the coordinator recycles the worker.
//! - Recycling a worker, in priority order: take the oldest backlog item
//!   (even after quit), else quit the idle workers if a quit is pending, else
//!   pay one unit of shrink debt by quitting this worker.
//! - `grow(n)` creates up to n workers, stopping at the first refusal; each
//!   is recycled at once (it may take backlog or pay debt).
//! - `shrink(n)` quits n idle workers; each missing idle worker becomes debt.
//! - `quit` sets the flag at once; in the coordinator it quits idle workers;
//!   the coordinator itself is quit when no worker is busy.
//!
//! # The quit gate
//!
//! One atomic holds the quit bit and the number of submissions between their
//! quit check and their hand-over to the coordinator. The coordinator is quit
//! only when that number is zero, and the last submission to leave after a
//! quit asks the coordinator to check again. So a submission that passed the
//! check is always accepted by the coordinator, and one that failed it gets
//! its work back: `quit` racing with `do_work` never loses a task (in
//! Twisted the task could be dropped). Keeping both in one word makes every
//! race a single-location one, which loom checks exactly. A submission
//! leaves the gate through a drop guard, so a coordinator that panics cannot
//! keep the count up; a panicking `create_worker` is caught in the
//! coordinator and counts as "no worker now".

use std::collections::VecDeque;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{BlockingQueue, ExclusiveWorker, LockWorker, Task, ThreadWorker, Worker};
use crate::error::{AlreadyQuit, ThreadError};
use crate::loom::atomic::{AtomicUsize, Ordering};
use crate::loom::{Arc, Mutex, MutexGuard};

/// The quit bit of the gate; the other bits count submissions in flight.
const QUIT: usize = 1 << (usize::BITS - 1);

/// A snapshot of a [`Team`]'s size.
///
/// Each count is exact at some recent moment; the three may come from
/// slightly different moments while the team is busy.
///
/// # Examples
///
/// ```
/// use weft::threads::{LockWorker, Statistics, Team};
///
/// let team = Team::new(LockWorker::new(), |_| None::<LockWorker>, |_| ());
/// assert_eq!(team.statistics(), Statistics::default());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Statistics {
    /// Workers waiting for work.
    pub idle_worker_count: usize,
    /// Workers running a task.
    pub busy_worker_count: usize,
    /// Tasks accepted but not yet handed to a worker.
    pub backlogged_work_count: usize,
}

type CreateWorker = Box<dyn Fn(&Team) -> Option<Box<dyn Worker>> + Send + Sync>;
type LogPanic = Box<dyn Fn(&ThreadError) + Send + Sync>;

/// A [`Worker`] that spreads tasks over workers it creates on demand.
///
/// `Team` is a cheap handle: clones share one team.
///
/// # Coordination rules (Twisted's)
///
/// - A task goes to the most recently idle worker, else to a worker from
///   `create_worker`, else to the backlog. Dispatch order is FIFO.
/// - A worker that finishes takes the oldest backlog item (even after
///   [`quit`](Team::quit)); else, if quitting, it quits; else it pays one unit
///   of shrink debt by quitting; else it goes idle.
/// - [`grow`](Team::grow) stops at the first refusal of `create_worker`;
///   [`shrink`](Team::shrink) quits idle workers and turns the rest into debt.
/// - After `quit`, idle workers quit at once, busy ones after draining the
///   backlog, and the coordinator when no worker is busy. With no worker at
///   all, backlogged work is never run (it is dropped with the team).
/// - A panicking task is caught; `log_panic` is called once; the worker is
///   reused.
///
/// # Examples
///
/// ```
/// use weft::threads::{Team, Worker, memory_worker};
///
/// let (coordinator, coordinate) = memory_worker();
/// let (worker, perform) = memory_worker();
/// let team = Team::new(coordinator, move |_| Some(worker.clone()), |_| ());
/// team.do_work(Box::new(|| println!("hello from the team"))).unwrap();
/// assert!(coordinate.perform()); // hands the task to the worker
/// assert_eq!(team.statistics().busy_worker_count, 1);
/// assert!(perform.perform()); // runs it
/// assert!(coordinate.perform()); // recycles the worker
/// assert_eq!(team.statistics().idle_worker_count, 1);
/// ```
#[derive(Clone)]
pub struct Team {
    inner: Arc<Inner>,
}

struct Inner {
    coordinator: Box<dyn ExclusiveWorker>,
    create_worker: CreateWorker,
    log_panic: LogPanic,
    /// `QUIT` | submissions in flight.
    gate: AtomicUsize,
    state: Mutex<State>,
    idle: AtomicUsize,
    busy: AtomicUsize,
    backlog: AtomicUsize,
}

#[derive(Default)]
struct State {
    /// A slab: dispatched tasks name their worker by index.
    workers: Vec<Option<Box<dyn Worker>>>,
    free: Vec<usize>,
    /// Most recently idle at the back (dispatch end), longest idle at the front.
    idle: VecDeque<usize>,
    busy: usize,
    pending: VecDeque<Task>,
    should_quit_coordinator: bool,
    coordinator_quit: bool,
    to_shrink: usize,
}

impl State {
    fn insert(&mut self, worker: Box<dyn Worker>) -> usize {
        match self.free.pop() {
            Some(at) => {
                self.workers[at] = Some(worker);
                at
            }
            None => {
                self.workers.push(Some(worker));
                self.workers.len() - 1
            }
        }
    }

    fn remove(&mut self, at: usize) -> Box<dyn Worker> {
        self.free.push(at);
        self.workers[at]
            .take()
            .expect("team invariant: an idle index names a live worker")
    }
}

impl Team {
    /// Builds a team.
    ///
    /// - `coordinator` runs all of the team's bookkeeping;
    /// - `create_worker` is called (inside the coordinator, with the team it
    ///   serves) when a task finds no idle worker, and by `grow`; `None`
    ///   means "no more workers now" and the task waits in the backlog;
    /// - `log_panic` is called once, on the worker, for each panicking task.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{LockWorker, Team, ThreadWorker, Worker};
    ///
    /// let team = Team::new(
    ///     LockWorker::new(),
    ///     |team| {
    ///         let stats = team.statistics();
    ///         (stats.idle_worker_count + stats.busy_worker_count < 4)
    ///             .then(|| ThreadWorker::new().ok())
    ///             .flatten()
    ///     },
    ///     |err| eprintln!("{err}"),
    /// );
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// team.do_work(Box::new(move || tx.send(1).unwrap())).unwrap();
    /// assert_eq!(rx.recv().unwrap(), 1);
    /// team.quit().unwrap();
    /// ```
    pub fn new<C, W, F, L>(coordinator: C, create_worker: F, log_panic: L) -> Team
    where
        C: ExclusiveWorker + 'static,
        W: Worker + 'static,
        F: Fn(&Team) -> Option<W> + Send + Sync + 'static,
        L: Fn(&ThreadError) + Send + Sync + 'static,
    {
        Team {
            inner: Arc::new(Inner {
                coordinator: Box::new(coordinator),
                create_worker: Box::new(move |team| {
                    create_worker(team).map(|w| Box::new(w) as Box<dyn Worker>)
                }),
                log_panic: Box::new(log_panic),
                gate: AtomicUsize::new(0),
                state: Mutex::new(State::default()),
                idle: AtomicUsize::new(0),
                busy: AtomicUsize::new(0),
                backlog: AtomicUsize::new(0),
            }),
        }
    }

    /// The current idle, busy and backlog counts.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{Team, memory_worker};
    ///
    /// let (coordinator, coordinate) = memory_worker();
    /// let team = Team::new(coordinator, |_| Some(memory_worker().0), |_| ());
    /// team.grow(3).unwrap();
    /// while coordinate.perform() {}
    /// assert_eq!(team.statistics().idle_worker_count, 3);
    /// ```
    pub fn statistics(&self) -> Statistics {
        Statistics {
            idle_worker_count: self.inner.idle.load(Ordering::Acquire),
            busy_worker_count: self.inner.busy.load(Ordering::Acquire),
            backlogged_work_count: self.inner.backlog.load(Ordering::Acquire),
        }
    }

    /// Creates up to `n` workers (in the coordinator), stopping at the first
    /// one `create_worker` refuses.
    ///
    /// # Errors
    ///
    /// [`AlreadyQuit`] after [`quit`](Team::quit).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{LockWorker, Team, memory_worker};
    ///
    /// let team = Team::new(LockWorker::new(), |_| Some(memory_worker().0), |_| ());
    /// team.grow(2).unwrap();
    /// assert_eq!(team.statistics().idle_worker_count, 2);
    /// ```
    pub fn grow(&self, n: usize) -> Result<(), AlreadyQuit> {
        self.submit((), |()| {
            let team = self.clone();
            Box::new(move || team.grow_now(n))
        })
    }

    /// Quits `n` workers (all of them for `None`): idle ones at once (in the
    /// coordinator), busy ones when they next go idle with no backlog.
    ///
    /// # Errors
    ///
    /// [`AlreadyQuit`] after [`quit`](Team::quit).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{LockWorker, Team, memory_worker};
    ///
    /// let team = Team::new(LockWorker::new(), |_| Some(memory_worker().0), |_| ());
    /// team.grow(5).unwrap();
    /// team.shrink(Some(3)).unwrap();
    /// assert_eq!(team.statistics().idle_worker_count, 2);
    /// ```
    pub fn shrink(&self, n: Option<usize>) -> Result<(), AlreadyQuit> {
        self.submit((), |()| {
            let team = self.clone();
            Box::new(move || {
                let state = team.lock();
                team.quit_idlers(state, n);
            })
        })
    }

    /// Refuses all further work; idle workers quit now (in the coordinator),
    /// busy ones after they finish and drain the backlog; then the
    /// coordinator quits.
    ///
    /// # Errors
    ///
    /// [`AlreadyQuit`] on a second call.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{LockWorker, Team, Worker};
    ///
    /// let team = Team::new(LockWorker::new(), |_| None::<LockWorker>, |_| ());
    /// team.quit().unwrap();
    /// assert!(team.quit().is_err());
    /// assert!(team.do_work(Box::new(|| ())).is_err());
    /// ```
    pub fn quit(&self) -> Result<(), AlreadyQuit> {
        let prev = self.inner.gate.fetch_or(QUIT, Ordering::AcqRel);
        if prev & QUIT != 0 {
            return Err(AlreadyQuit(()));
        }
        let team = self.clone();
        let start_finishing: Task = Box::new(move || {
            let mut state = team.lock();
            state.should_quit_coordinator = true;
            team.quit_idlers(state, None);
        });
        if self.inner.coordinator.do_work(start_finishing).is_err() {
            tracing::error!("team coordinator quit behind the team's back");
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock()
    }

    fn publish(&self, state: &State) {
        self.inner.idle.store(state.idle.len(), Ordering::Release);
        self.inner.busy.store(state.busy, Ordering::Release);
        self.inner
            .backlog
            .store(state.pending.len(), Ordering::Release);
    }

    fn in_flight(&self) -> usize {
        self.inner.gate.load(Ordering::Acquire) & !QUIT
    }

    /// Hands coordinator work over unless the team has quit.
    fn submit<J>(&self, job: J, make: impl FnOnce(J) -> Task) -> Result<(), AlreadyQuit<J>> {
        let prev = self.inner.gate.fetch_add(1, Ordering::AcqRel);
        // Leaves the gate however the hand-over ends: a coordinator that
        // panics must not keep the team's quit waiting forever.
        let in_flight = InFlight(self);
        if prev & QUIT != 0 {
            drop(in_flight);
            return Err(AlreadyQuit(job));
        }
        let refused = self.inner.coordinator.do_work(make(job)).is_err();
        drop(in_flight);
        if refused {
            tracing::error!("team coordinator quit behind the team's back; work dropped");
        }
        Ok(())
    }

    fn leave(&self) {
        let prev = self.inner.gate.fetch_sub(1, Ordering::AcqRel);
        if prev == QUIT | 1 {
            // The coordinator may have deferred its own quit for us.
            let team = self.clone();
            let _ = self.inner.coordinator.do_work(Box::new(move || {
                let state = team.lock();
                team.finish_if_done(state);
            }));
        }
    }

    /// In the coordinator: quits the coordinator once quitting and idle.
    fn finish_if_done(&self, mut state: MutexGuard<'_, State>) {
        let done = state.should_quit_coordinator
            && state.busy == 0
            && !state.coordinator_quit
            && self.in_flight() == 0;
        if done {
            state.coordinator_quit = true;
        }
        drop(state);
        if done {
            let _ = self.inner.coordinator.quit();
        }
    }

    /// In the coordinator: `create_worker`, with a panic logged and taken
    /// as "no worker now" (the task waits in the backlog instead of being
    /// lost with the unwinding coordinator).
    fn create_worker(&self) -> Option<Box<dyn Worker>> {
        match catch_unwind(AssertUnwindSafe(|| (self.inner.create_worker)(self))) {
            Ok(created) => created,
            Err(payload) => {
                let err = ThreadError::from_panic(&*payload);
                let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
                tracing::error!(error = %err, "team create_worker panicked; work stays in the backlog");
                None
            }
        }
    }

    /// In the coordinator.
    fn coordinate(&self, task: Task) {
        let mut state = self.lock();
        if let Some(at) = state.idle.pop_back() {
            return self.dispatch(state, at, task);
        }
        drop(state);
        let created = self.create_worker();
        state = self.lock();
        match created {
            Some(worker) => {
                let at = state.insert(worker);
                self.dispatch(state, at, task);
            }
            None => {
                state.pending.push_back(task);
                self.publish(&state);
            }
        }
    }

    /// In the coordinator: `at` is neither idle nor busy yet.
    fn dispatch(&self, mut state: MutexGuard<'_, State>, at: usize, task: Task) {
        state.busy += 1;
        self.publish(&state);
        let team = self.clone();
        let wrapped: Task = Box::new(move || team.run(at, task));
        let worker = state.workers[at]
            .as_ref()
            .expect("team invariant: a dispatched index names a live worker");
        if let Err(AlreadyQuit(wrapped)) = worker.do_work(wrapped) {
            state.busy -= 1;
            let worker = state.remove(at);
            self.publish(&state);
            drop(state);
            drop((wrapped, worker));
            tracing::error!("team worker quit behind the team's back; work dropped");
        }
    }

    /// On the worker: runs the task, then recycles the worker.
    fn run(self, at: usize, task: Task) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(task)) {
            let err = ThreadError::from_panic(&*payload);
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            let log = &self.inner.log_panic;
            if catch_unwind(AssertUnwindSafe(|| log(&err))).is_err() {
                tracing::error!(error = %err, "team panic logger panicked");
            }
        }
        let team = self.clone();
        let recycle: Task = Box::new(move || team.recycle(at, true));
        let _ = self.inner.coordinator.do_work(recycle);
    }

    /// In the coordinator.
    fn recycle(&self, at: usize, was_busy: bool) {
        let mut state = self.lock();
        if was_busy {
            state.busy -= 1;
        }
        if let Some(task) = state.pending.pop_front() {
            // While a backlog exists no other worker is idle: this one takes it.
            self.dispatch(state, at, task);
        } else if state.should_quit_coordinator {
            state.idle.push_back(at);
            self.quit_idlers(state, None);
        } else if state.to_shrink > 0 {
            state.to_shrink -= 1;
            let worker = state.remove(at);
            self.publish(&state);
            drop(state);
            let _ = worker.quit();
        } else {
            state.idle.push_back(at);
            self.publish(&state);
        }
    }

    /// In the coordinator.
    fn grow_now(&self, n: usize) {
        for _ in 0..n {
            let Some(worker) = self.create_worker() else {
                break;
            };
            let at = self.lock().insert(worker);
            self.recycle(at, false);
        }
    }

    /// In the coordinator: quits `n` workers (`None`: idle + busy), idle ones
    /// now, the rest as debt; then quits the coordinator if that is due.
    fn quit_idlers(&self, mut state: MutexGuard<'_, State>, n: Option<usize>) {
        let n = n.unwrap_or(state.idle.len() + state.busy);
        let mut quitting = Vec::new();
        for _ in 0..n {
            match state.idle.pop_back() {
                Some(at) => quitting.push(state.remove(at)),
                None => state.to_shrink += 1,
            }
        }
        self.publish(&state);
        drop(state);
        for worker in quitting {
            let _ = worker.quit();
        }
        self.finish_if_done(self.lock());
    }
}

/// One submission between its quit check and its hand-over; leaves the
/// gate when dropped, also while unwinding.
struct InFlight<'a>(&'a Team);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

impl Worker for Team {
    fn do_work(&self, task: Task) -> Result<(), AlreadyQuit<Task>> {
        self.submit(task, |task| {
            let team = self.clone();
            Box::new(move || team.coordinate(task))
        })
    }

    fn quit(&self) -> Result<(), AlreadyQuit> {
        Team::quit(self)
    }
}

/// Builds Twisted's thread-pool team: a [`LockWorker`] coordinator and one
/// [`ThreadWorker`] per thread, created on demand until
/// `idle + busy >= current_limit()`.
///
/// `thread_factory` starts a thread running the body it is given. A factory
/// error is logged and treated as "no more workers now", so the task waits in
/// the backlog instead of being lost. Panicking tasks are logged with
/// `tracing::error!`.
///
/// # Examples
///
/// ```
/// use weft::threads::{Worker, pool};
///
/// let team = pool(|| 2, |body| std::thread::Builder::new().spawn(body).map(drop));
/// let (tx, rx) = std::sync::mpsc::channel();
/// for i in 0..4 {
///     let tx = tx.clone();
///     team.do_work(Box::new(move || tx.send(i).unwrap())).unwrap();
/// }
/// let mut got: Vec<i32> = rx.iter().take(4).collect();
/// got.sort();
/// assert_eq!(got, [0, 1, 2, 3]);
/// assert!(team.statistics().idle_worker_count + team.statistics().busy_worker_count <= 2);
/// team.quit().unwrap();
/// ```
pub fn pool<L, S>(current_limit: L, thread_factory: S) -> Team
where
    L: Fn() -> usize + Send + Sync + 'static,
    S: Fn(Box<dyn FnOnce() + Send + 'static>) -> io::Result<()> + Send + Sync + 'static,
{
    Team::new(
        LockWorker::new(),
        move |team: &Team| {
            let stats = team.statistics();
            if stats.idle_worker_count + stats.busy_worker_count >= current_limit() {
                return None;
            }
            match ThreadWorker::with_parts(BlockingQueue::new(), &thread_factory) {
                Ok(worker) => Some(worker),
                Err(error) => {
                    tracing::warn!(%error, "could not start a pool thread; work stays in the backlog");
                    None
                }
            }
        },
        |error| tracing::error!(%error, "unhandled panic in pool work"),
    )
}
