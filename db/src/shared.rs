//! `SharedPool`: the pool from any loop. A `Send + Sync` handle that hands
//! a job straight to the pool's connection threads from the loop that calls
//! it, and resolves its `Deferred` on that same loop (through that loop's
//! own `defer_to_worker`), without a hop through the loop that built the
//! pool.
//!
//! # The gate
//!
//! The loop that owns the pool keeps its `Rc` state; what other loops need
//! sits in `Shared::gate`, one mutex: the pool's state as they must see it,
//! its threads once started, and the jobs handed over before the start.
//! A submission from any loop goes through a `Door` (a `Worker` for one
//! job) that, under the gate's lock, forwards the job to its group's
//! thread, keeps it for the start, or refuses it.
//!
//! # Invariants
//!
//! - The gate moves forward only: Idle → Running → Closing → Closed (or
//!   Idle → Closed), and the owner's `close` sets Closing under the lock
//!   *before* it queues the threads' stop orders. So a job is either
//!   forwarded before them (it runs, and `close` waits for it with the
//!   threads), or refused (`Stopped`): never lost behind a stop order.
//! - A job kept for the start is forwarded by `Gate::open`, or run at once
//!   off any connection thread by `Gate::close` / a refused forward: then
//!   `run_job` finds no connection and answers `Stopped`, and its ticket
//!   counts it refused. Every job's `Deferred` fires.
//! - Job ids come from one atomic counter (`Shared::next_id`), so a cancel
//!   names only its own job whichever loop submitted it.
//!
//! # One hand-over per turn
//!
//! A job submitted from a running loop is not forwarded at once: the `Door`
//! keeps it in this loop thread's `DEFERRED` list for the pool, and the first
//! job of a turn schedules a `Flush` (`Handle::call_soon`) that forwards
//! the whole list under one gate lock, each group's jobs as one batch
//! (`ThreadWorker::do_work_batch`: one queue lock, at most one wake per
//! job and waiting thread, after all are queued). Why: a connection
//! thread woken by the first job of a turn, on a busy machine, preempts
//! the loop on its core at once, runs that one job, finds its queue
//! empty and sleeps, and the loop's next job wakes it again: two context
//! switches and two futex calls per job (measured on weft-kv, 90/10 reads,
//! 2 cores: the loop was preempted by the reader thread 0.7 times per
//! request). Handed over per turn, the thread wakes once and finds the
//! turn's jobs queued. The delay is the rest of the submitting turn.
//!
//! - A `Flush` forwards when it runs *or when it is dropped* (the reactor
//!   dropping its timers unrun), so a deferred job is always forwarded,
//!   kept for the start, or refused (and answered `Stopped`) by the gate's
//!   state at that instant, like a job handed over directly.
//! - A `Flush` the loop runs waits for no lock another thread holds
//!   (`try_lock` on the gate, `ThreadWorker::try_do_work_batch` on a
//!   thread's queue): a connection thread preempted on another CPU while
//!   it holds its queue's lock (it takes it for every job it gets) kept
//!   the loop waiting for milliseconds (up to 3.7 ms, session 14). What
//!   it cannot hand over stays on this loop thread (a busy queue's tasks,
//!   sorted, in `Held`, offered first next time; everything, if the gate
//!   is busy) and the flush schedules itself for the next turn, so the
//!   loop does not sleep while jobs wait, and each queue still gets its
//!   jobs in submission order. A `Flush` dropped unrun, the owner's
//!   close, and a job handed over at once (which first hands over what
//!   this thread still holds, as it came after those) take the locks as
//!   they come.
//! - At most one `Flush` per (loop thread, pool) is pending while the loop
//!   runs: a job schedules one unless the list is armed, and the flush
//!   disarms it (and re-arms it if it leaves jobs behind).
//! - The list, the flush and the `Door` live in `shared/turn.rs`; the list
//!   also keeps the write group open for joiners (`group.rs`), closed by
//!   the flush and by any later job for the writer.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use weft::threads::{Task, ThreadWorker, TryDoWorkError, Worker};
use weft::{AlreadyQuit, Deferred};

use crate::connector::Connector;
use crate::error::DbError;
use crate::lifecycle::{Lifecycle, Workers, target};
use crate::lock;
use crate::pool::{Route, flatten, operation_job, query_job};
use crate::sqlite::SqliteConnector;
use crate::stats::Group;
use crate::worker::{JobState, Mode, Shared, Ticket, run_job};
use crate::{ConnectionPool, DbPoolStatistics};
use weft::diagnostics::HistogramSnapshot;

mod turn;

use turn::Door;
pub(crate) use turn::{hand_over_deferred, open_group, with_open_group};

/// A job handed over before the pool started.
pub(crate) struct Pending {
    route: Route,
    job: Arc<JobState>,
    task: Task,
}

/// The pool as every loop sees it (behind `Shared::gate`).
pub(crate) struct Gate {
    state: Lifecycle,
    workers: Option<Arc<Workers>>,
    backlog: Vec<Pending>,
}

impl Gate {
    pub(crate) fn new() -> Mutex<Gate> {
        Mutex::new(Gate {
            state: Lifecycle::Idle,
            workers: None,
            backlog: Vec::new(),
        })
    }

    /// The pool started with `workers` (`None`: no thread could start):
    /// hands over the jobs that waited.
    pub(crate) fn open<C: Connector>(shared: &Shared<C>, workers: Option<Arc<Workers>>) {
        let refused = {
            let mut gate = lock(&shared.gate);
            if gate.state != Lifecycle::Idle {
                return;
            }
            gate.state = Lifecycle::Running;
            gate.workers = workers;
            let backlog = std::mem::take(&mut gate.backlog);
            let mut refused = Vec::new();
            for p in backlog {
                if let Err(AlreadyQuit(task)) = gate.forward(shared, p.route, &p.job, p.task) {
                    refused.push(task);
                }
            }
            refused
        };
        // Off any connection thread: each answers `Stopped` (module docs).
        for task in refused {
            task();
        }
    }

    /// The owner closes (`to`: Closing or Closed): later jobs are refused;
    /// jobs still waiting for a start that will not come answer `Stopped`.
    pub(crate) fn close(gate: &Mutex<Gate>, to: Lifecycle) {
        let backlog = {
            let mut gate = lock(gate);
            if gate.state != Lifecycle::Closed {
                gate.state = to;
            }
            std::mem::take(&mut gate.backlog)
        };
        for p in backlog {
            (p.task)();
        }
    }

    /// Hands `task` to the thread serving `route`; under the gate's lock.
    fn forward<C: Connector>(
        &self,
        shared: &Shared<C>,
        route: Route,
        job: &JobState,
        task: Task,
    ) -> Result<(), AlreadyQuit<Task>> {
        let Some(workers) = self.workers.as_deref() else {
            return Err(AlreadyQuit(task));
        };
        let to = workers.target(route);
        job.regroup(to, &shared.stats);
        match &workers.writer {
            Some(writer) if to == Group::Writer => writer.do_work(task),
            _ if workers.group.is_empty() => Err(AlreadyQuit(task)),
            _ => {
                let i = workers.next.fetch_add(1, Ordering::Relaxed);
                // One shared queue: any of them serves the whole group.
                workers.group[i % workers.group.len()].do_work(task)
            }
        }
    }

    /// The group a job on `route` goes to now.
    fn plan<C: Connector>(&self, shared: &Shared<C>, route: Route) -> Group {
        match &self.workers {
            Some(workers) => workers.target(route),
            None => target(
                route,
                shared.single_writer,
                shared.max > usize::from(shared.single_writer),
            ),
        }
    }
}

/// Tasks already sorted to their thread and offered to it, handed back
/// because its queue was busy (`Gate::hand_over` without waiting): they go
/// first at the next offer, so each queue still gets its jobs in
/// submission order.
#[derive(Default)]
pub(crate) struct Held {
    writer: Vec<Task>,
    group: Vec<Task>,
}

impl Held {
    pub(crate) fn is_empty(&self) -> bool {
        self.writer.is_empty() && self.group.is_empty()
    }

    /// `later`'s tasks behind this one's (for each queue).
    pub(crate) fn append(&mut self, later: Held) {
        behind(&mut self.writer, later.writer);
        behind(&mut self.group, later.group);
    }

    fn drain_all(&mut self) -> impl Iterator<Item = Task> + '_ {
        self.writer.drain(..).chain(self.group.drain(..))
    }
}

/// `later` behind `first` (taking `later`'s buffer whole when `first` is
/// empty, so no task is moved one by one).
fn behind(first: &mut Vec<Task>, mut later: Vec<Task>) {
    if first.is_empty() {
        *first = later;
    } else {
        first.append(&mut later);
    }
}

impl Gate {
    /// Forwards `jobs` (after the tasks `held` back from an earlier offer),
    /// keeps them for the start, or refuses them, by the gate's state now,
    /// leaving `jobs` empty; refused ones answer `Stopped` (run off any
    /// connection thread, module docs).
    ///
    /// `wait`: take every lock as it comes. Otherwise (the loop's turn
    /// flush) no lock another thread holds is waited for: if the gate is
    /// held, nothing moves; if a thread's queue is held (its thread,
    /// preempted with the lock held, could keep the loop waiting for
    /// milliseconds), that queue's tasks stay in `held` for the next
    /// offer. Returns whether everything was handed over.
    fn hand_over<C: Connector>(
        shared: &Shared<C>,
        jobs: &mut Vec<Pending>,
        held: &mut Held,
        wait: bool,
    ) -> bool {
        if jobs.is_empty() && held.is_empty() {
            return true;
        }
        let mut gate = if wait {
            lock(&shared.gate)
        } else {
            match shared.gate.try_lock() {
                Ok(gate) => gate,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return false,
            }
        };
        let refused = match gate.state {
            Lifecycle::Running => gate.forward_batch(shared, jobs.drain(..), held, wait),
            Lifecycle::Idle => {
                // Nothing is held before the start (nothing was offered).
                gate.backlog.append(jobs);
                Vec::new()
            }
            Lifecycle::Closing | Lifecycle::Closed => held
                .drain_all()
                .chain(jobs.drain(..).map(|p| p.task))
                .collect(),
        };
        for task in refused {
            task();
        }
        held.is_empty()
    }

    /// [`forward`](Gate::forward) for many jobs: each group's as one batch
    /// (in submission order, behind what `held` has for it); the tasks
    /// refused. Without `wait`, a batch whose queue is busy goes back to
    /// `held`.
    fn forward_batch<C: Connector>(
        &self,
        shared: &Shared<C>,
        jobs: impl ExactSizeIterator<Item = Pending>,
        held: &mut Held,
        wait: bool,
    ) -> Vec<Task> {
        let Some(workers) = self.workers.as_deref() else {
            return held.drain_all().chain(jobs.map(|p| p.task)).collect();
        };
        // Sized once (a batch is handed on whole, so the vectors cannot be
        // reused): no regrowth while a turn's jobs are sorted.
        held.group.reserve(jobs.len());
        for p in jobs {
            let to = workers.target(p.route);
            p.job.regroup(to, &shared.stats);
            if to == Group::Writer && workers.writer.is_some() {
                held.writer.push(p.task);
            } else {
                held.group.push(p.task);
            }
        }
        let mut refused = Vec::new();
        if !held.writer.is_empty() {
            let tasks = std::mem::take(&mut held.writer);
            match &workers.writer {
                Some(writer) => offer(writer, tasks, &mut held.writer, &mut refused, wait),
                None => refused.extend(tasks),
            }
        }
        if !held.group.is_empty() {
            let tasks = std::mem::take(&mut held.group);
            if workers.group.is_empty() {
                refused.extend(tasks);
            } else {
                let i = workers.next.fetch_add(1, Ordering::Relaxed);
                // One shared queue: any of them serves the whole group.
                let to = &workers.group[i % workers.group.len()];
                offer(to, tasks, &mut held.group, &mut refused, wait);
            }
        }
        refused
    }
}

/// Queues `tasks` on `worker` as one batch: waiting for its locks
/// (`wait`), or not (back into `busy` if they are held); into `refused` if
/// it has quit.
fn offer<Q: weft::threads::WorkQueue>(
    worker: &ThreadWorker<Q>,
    tasks: Vec<Task>,
    busy: &mut Vec<Task>,
    refused: &mut Vec<Task>,
    wait: bool,
) {
    let result = if wait {
        worker.do_work_batch(tasks).map_err(TryDoWorkError::from)
    } else {
        worker.try_do_work_batch(tasks)
    };
    match result {
        Ok(()) => {}
        Err(TryDoWorkError::Busy(back)) => *busy = back,
        Err(TryDoWorkError::Quit(tasks)) => refused.extend(tasks),
    }
}

/// A [`ConnectionPool`] usable from any reactor: `Send + Sync + Clone`,
/// from [`ConnectionPool::shared`].
///
/// Each call submits its job straight to the pool's connection threads
/// from the loop it is called on (found with [`weft::reactor::current`])
/// and resolves its [`Deferred`] on that loop; the loop that built the pool
/// does no work for it. Routing, statistics, cancellation and the job's
/// transaction are exactly those of the [`ConnectionPool`] methods of the
/// same names.
///
/// - Called on a thread that runs no reactor, a method returns a failed
///   `Deferred` with [`DbError::NotOnLoop`] (nothing is submitted).
/// - Jobs handed over before the pool starts wait for it.
/// - A loop hands its jobs over to the connection threads together, at
///   the end of the turn that submitted them (one queue hand-over and at
///   most one wake per thread and turn, instead of one per job), unless
///   the pool was built with
///   [`hand_over_per_turn(false)`](crate::PoolBuilder::hand_over_per_turn).
/// - Only the owner closes the pool ([`ConnectionPool::close`], or its
///   reactor's shutdown). Jobs handed over before that (the owner's own
///   loop hands over its pending jobs as it closes) run (or are cancelled
///   under [`QueuedWork::Cancel`](weft::reactor::QueuedWork::Cancel)), and
///   `close` waits for them; jobs submitted once the pool is closing fail
///   [`DbError::Stopped`] at once, and jobs another loop submitted but
///   had not handed over yet fail it when that loop hands them over.
/// - If the caller's loop stops before the result arrives, the result is
///   dropped; the job itself still runs (or is cancelled) as usual.
///
/// # Examples
///
/// A pool built on one reactor, used from another reactor on another
/// thread:
///
/// ```
/// use weft_db::{ConnectionPool, DbError, SqliteConnector};
///
/// let dir = tempfile::tempdir().unwrap();
/// let reactor = weft::Reactor::new().unwrap();
/// let pool = ConnectionPool::new(&reactor.handle(), SqliteConnector::new(dir.path().join("a.db"))).unwrap();
/// let shared = pool.shared();
/// let other = std::thread::spawn(move || {
///     let reactor = weft::Reactor::new().unwrap();
///     let d = reactor.run_until_complete(async move {
///         shared.run_operation("create table t (x)", []).await?;
///         shared.run_operation("insert into t values (1), (2)", []).await
///     });
///     d.unwrap()
/// });
/// // The owner's loop runs meanwhile: running it starts the pool.
/// let joined = reactor.defer_to_thread(move || other.join().unwrap());
/// let inserted: Result<usize, DbError> = reactor.run_until_complete(joined).unwrap().unwrap();
/// assert_eq!(inserted.unwrap(), 2);
/// ```
pub struct SharedPool<C: Connector = SqliteConnector> {
    pub(crate) shared: Arc<Shared<C>>,
}

impl<C: Connector> Clone for SharedPool<C> {
    fn clone(&self) -> Self {
        SharedPool {
            shared: self.shared.clone(),
        }
    }
}

impl<C: Connector> std::fmt::Debug for SharedPool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPool")
            .field("name", &self.shared.name)
            .field("running", &self.is_running())
            .finish()
    }
}

impl<C: Connector> ConnectionPool<C> {
    /// A handle to this pool for any reactor on any thread; see
    /// [`SharedPool`].
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
    /// let shared = pool.shared();
    /// let d = shared.run_query("select 1", []); // on this loop, like the pool itself
    /// assert_eq!(reactor.run_until_complete(d).unwrap().unwrap().len(), 1);
    /// ```
    pub fn shared(&self) -> SharedPool<C> {
        SharedPool {
            shared: self.inner.shared.clone(),
        }
    }
}

impl<C: Connector> SharedPool<C> {
    /// Submits `work` (see the module notes); `opens`: the job of a write
    /// group, which `open_group` may open if it is deferred for the turn's
    /// flush.
    pub(crate) fn submit<T, W>(
        &self,
        route: Route,
        mode: Mode,
        opens: bool,
        work: W,
    ) -> Deferred<T, DbError<C::Error>>
    where
        T: Send + 'static,
        W: FnOnce(&mut C::Connection) -> Result<T, DbError<C::Error>> + Send + 'static,
    {
        let Some(handle) = weft::reactor::current() else {
            return Deferred::fail(DbError::NotOnLoop);
        };
        let shared = &self.shared;
        let group = {
            let gate = lock(&shared.gate);
            let group = gate.plan(shared, route);
            if matches!(gate.state, Lifecycle::Closing | Lifecycle::Closed) {
                drop(gate);
                shared.stats.refused_at_once(group);
                return Deferred::fail(DbError::Stopped);
            }
            group
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let queued_at = shared.stats.queued(group);
        let job = JobState::new(id, group, queued_at);
        // From here on the ticket accounts for the job if it is dropped
        // unrun, on any path (a refused hand-over included).
        let ticket = Ticket {
            shared: shared.clone(),
            job: job.clone(),
        };
        let (cancel_shared, cancel_job) = (shared.clone(), job.clone());
        let door = Door {
            shared,
            defer: shared.per_turn && handle.is_running(),
            route,
            job: &job,
            cuts: group == Group::Writer,
            opens,
        };
        let task = move || run_job::<C, T, W>(&ticket, mode, work);
        // One record per job: the bridge maps its own failures and runs the
        // pool's canceller itself (no second `Deferred`, no callback).
        handle.defer_to_worker_with(
            &door,
            task,
            |e| flatten::<(), C::Error>(Err(e)).unwrap_err(),
            move || cancel_job.cancel(&cancel_shared.stats),
        )
    }

    /// [`ConnectionPool::run_interaction`] from the calling loop: `f` on
    /// the writer inside a transaction, the result on this loop.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft_db::{ConnectionPool, DbError, SqliteConnector};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = ConnectionPool::new(&reactor.handle(), SqliteConnector::new(":memory:")).unwrap();
    /// let d = pool.shared().run_interaction(|conn| {
    ///     conn.execute_batch("create table t (x); insert into t values (1)")?;
    ///     Ok::<i64, DbError>(conn.query_row("select count(*) from t", [], |r| r.get(0))?)
    /// });
    /// assert_eq!(reactor.run_until_complete(d).unwrap().unwrap(), 1);
    /// ```
    #[must_use = "the Deferred carries the outcome"]
    pub fn run_interaction<T, F>(&self, f: F) -> Deferred<T, DbError<C::Error>>
    where
        T: Send + 'static,
        F: FnOnce(&mut C::Connection) -> Result<T, DbError<C::Error>> + Send + 'static,
    {
        self.submit(Route::Write, Mode::Transaction, false, f)
    }

    /// [`ConnectionPool::run_with_connection`] from the calling loop.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft_db::{ConnectionPool, DbError, SqliteConnector};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = ConnectionPool::new(&reactor.handle(), SqliteConnector::new(":memory:")).unwrap();
    /// let d = pool.shared().run_with_connection(|conn| Ok::<_, DbError>(conn.is_autocommit()));
    /// assert!(reactor.run_until_complete(d).unwrap().unwrap());
    /// ```
    #[must_use = "the Deferred carries the outcome"]
    pub fn run_with_connection<T, F>(&self, f: F) -> Deferred<T, DbError<C::Error>>
    where
        T: Send + 'static,
        F: FnOnce(&mut C::Connection) -> Result<T, DbError<C::Error>> + Send + 'static,
    {
        self.submit(Route::Write, Mode::Connection, false, f)
    }

    /// [`ConnectionPool::run_read`] from the calling loop: `f` on a reader
    /// (the writer if there is none), in autocommit.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft_db::{ConnectionPool, DbError, SqliteConnector};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = ConnectionPool::new(&reactor.handle(), SqliteConnector::new(":memory:")).unwrap();
    /// let d = pool.shared().run_read(|conn| Ok::<i64, DbError>(conn.query_row("select 6 * 7", [], |r| r.get(0))?));
    /// assert_eq!(reactor.run_until_complete(d).unwrap().unwrap(), 42);
    /// ```
    #[must_use = "the Deferred carries the outcome"]
    pub fn run_read<T, F>(&self, f: F) -> Deferred<T, DbError<C::Error>>
    where
        T: Send + 'static,
        F: FnOnce(&mut C::Connection) -> Result<T, DbError<C::Error>> + Send + 'static,
    {
        self.submit(Route::Read, Mode::Read, false, f)
    }

    /// Whether the pool takes jobs (not closing or closed).
    pub(crate) fn accepting(&self) -> bool {
        matches!(
            lock(&self.shared.gate).state,
            Lifecycle::Idle | Lifecycle::Running
        )
    }

    /// Whether the pool has started and not begun closing.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
    /// assert!(!pool.shared().is_running()); // starts when the reactor runs
    /// ```
    pub fn is_running(&self) -> bool {
        lock(&self.shared.gate).state == Lifecycle::Running
    }

    /// The number of connections (threads) the pool runs.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::builder(weft_db::SqliteConnector::new("x.db"))
    ///     .max(3)
    ///     .build(&reactor.handle())
    ///     .unwrap();
    /// assert_eq!(pool.shared().max_connections(), 3);
    /// ```
    pub fn max_connections(&self) -> usize {
        self.shared.max
    }

    /// The connector the pool opens connections with.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
    /// let _c: &weft_db::SqliteConnector = pool.shared().connector();
    /// ```
    pub fn connector(&self) -> &C {
        &self.shared.connector
    }

    /// The pool's counters, the same as [`ConnectionPool::statistics`]
    /// (every loop's jobs included); readable from any thread.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
    /// let shared = pool.shared();
    /// let d = shared.run_query("select 1", []);
    /// reactor.run_until_complete(d).unwrap().unwrap();
    /// assert_eq!(shared.statistics(), pool.statistics());
    /// ```
    pub fn statistics(&self) -> DbPoolStatistics {
        self.shared.stats.snapshot()
    }

    /// [`ConnectionPool::queue_wait_histogram`], from any thread.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
    /// assert_eq!(pool.shared().queue_wait_histogram(weft_db::Group::Writer).count(), 0);
    /// ```
    pub fn queue_wait_histogram(&self, group: Group) -> HistogramSnapshot {
        self.shared.stats.queue_wait(group)
    }

    /// [`ConnectionPool::run_time_histogram`], from any thread.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
    /// assert_eq!(pool.shared().run_time_histogram(weft_db::Group::Writer).count(), 0);
    /// ```
    pub fn run_time_histogram(&self, group: Group) -> HistogramSnapshot {
        self.shared.stats.run_time(group)
    }
}

impl SharedPool<SqliteConnector> {
    /// [`ConnectionPool::run_query`] from the calling loop: every row as
    /// owned values.
    ///
    /// # Examples
    ///
    /// ```
    /// use rusqlite::types::Value;
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
    /// let d = pool.shared().run_query("select ?1 + 1", (41,));
    /// assert_eq!(reactor.run_until_complete(d).unwrap().unwrap(), vec![vec![Value::Integer(42)]]);
    /// ```
    #[must_use = "the Deferred carries the rows"]
    pub fn run_query<P>(
        &self,
        sql: impl Into<String>,
        params: P,
    ) -> Deferred<Vec<Vec<rusqlite::types::Value>>, DbError>
    where
        P: rusqlite::Params + Send + 'static,
    {
        self.run_query_map(sql, params, |row| {
            let n = row.as_ref().column_count();
            (0..n).map(|i| row.get(i)).collect()
        })
    }

    /// [`ConnectionPool::run_query_map`] from the calling loop.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
    /// let d = pool.shared().run_query_map("select 'a'", [], |r| r.get::<_, String>(0));
    /// assert_eq!(reactor.run_until_complete(d).unwrap().unwrap(), ["a"]);
    /// ```
    #[must_use = "the Deferred carries the rows"]
    pub fn run_query_map<P, T, F>(
        &self,
        sql: impl Into<String>,
        params: P,
        f: F,
    ) -> Deferred<Vec<T>, DbError>
    where
        P: rusqlite::Params + Send + 'static,
        T: Send + 'static,
        F: FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.run_read(query_job(sql.into(), params, f))
    }

    /// [`ConnectionPool::run_operation`] from the calling loop: one
    /// statement on the writer in a transaction; the rows changed.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
    /// let d = pool.shared().run_operation("create table t (x)", []);
    /// assert_eq!(reactor.run_until_complete(d).unwrap().unwrap(), 0);
    /// ```
    #[must_use = "the Deferred carries the outcome"]
    pub fn run_operation<P>(&self, sql: impl Into<String>, params: P) -> Deferred<usize, DbError>
    where
        P: rusqlite::Params + Send + 'static,
    {
        self.run_interaction(operation_job(sql.into(), params))
    }
}
