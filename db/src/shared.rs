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

use std::sync::Arc;
use std::sync::atomic::Ordering;

use weft::Deferred;

use crate::connector::Connector;
use crate::error::DbError;
use crate::lifecycle::Lifecycle;
use crate::lock;
use crate::pool::{Route, flatten, operation_job, query_job};
use crate::sqlite::SqliteConnector;
use crate::stats::Group;
use crate::worker::{JobState, Mode, Shared, Ticket, run_job};
use crate::{ConnectionPool, DbPoolStatistics};
use weft::diagnostics::HistogramSnapshot;

mod gate;
mod turn;

pub(crate) use gate::{Gate, Held, Pending};
use turn::Door;
pub(crate) use turn::{hand_over_deferred, open_group, with_open_group};

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
