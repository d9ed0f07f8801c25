//! The loop side of the pool: the `ConnectionPool` handle, job submission
//! and routing (writer or readers), and the `Deferred`s callers hold. Its
//! configuration is in `builder`, start and close in `lifecycle`, the
//! counters in `stats`, the connection threads in `worker`.
//!
//! # Invariants
//!
//! - `ConnectionPool` lives on the loop thread (it holds `Rc`s); everything
//!   the threads need is in `Shared`.
//! - Every submitted job resolves its `Deferred` exactly once: with its
//!   result, `Cancelled`, `Panicked` or `Stopped`. Jobs submitted before the
//!   reactor runs wait in a loop-side backlog; `close` fails that backlog
//!   with `Stopped` if the pool never started.
//! - After `close` starts, no job is accepted (`Stopped` at once), so the
//!   workers' `Stop` orders are queued behind every accepted job.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use weft::reactor::{Handle, Phase, QueuedWork, SystemEvent, TriggerId};
use weft::{Deferred, Resolver, ThreadError};

use crate::connector::Connector;
use crate::error::DbError;
use crate::lifecycle::{Lifecycle, Workers, target};
use crate::shared::Gate;
use crate::sqlite::SqliteConnector;
use crate::stats::{Group, Stats};
use crate::worker::{JobState, Mode, Shared, Ticket, run_job};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Write,
    Read,
}

/// A job waiting for the pool to start: dispatched with the workers, or
/// failed `Stopped` with `None`.
pub(crate) type Backlogged = Box<dyn FnOnce(Option<&Workers>)>;

pub(crate) struct Inner<C: Connector> {
    pub(crate) handle: Handle,
    pub(crate) shared: Arc<Shared<C>>,
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) single_writer: bool,
    pub(crate) queued_work: QueuedWork,
    pub(crate) state: Cell<Lifecycle>,
    pub(crate) workers: RefCell<Option<Arc<Workers>>>,
    pub(crate) backlog: RefCell<Vec<Backlogged>>,
    pub(crate) start_trigger: Cell<Option<TriggerId>>,
    pub(crate) shutdown_trigger: Cell<Option<TriggerId>>,
    pub(crate) threads: Cell<usize>,
    pub(crate) exits: RefCell<Option<mpsc::Receiver<()>>>,
    pub(crate) close_waiters: RefCell<Vec<Resolver<(), weft::Cancelled>>>,
}

impl<C: Connector> Drop for Inner<C> {
    fn drop(&mut self) {
        // Threads left running would wait on their queues forever.
        if let Some(workers) = self.workers.get_mut().as_ref() {
            workers.quit();
        }
        // Handles on other loops must not wait for a start that cannot
        // come any more, nor submit to the threads just told to quit.
        Gate::close(&self.shared.gate, Lifecycle::Closed);
    }
}

/// Twisted's `adbapi.ConnectionPool`: blocking database work on dedicated
/// connection threads, results as [`Deferred`]s on the loop.
///
/// Clones share one pool. See the [crate docs](crate) for the design.
///
/// # Examples
///
/// ```
/// use weft_db::{ConnectionPool, SqliteConnector};
///
/// let dir = tempfile::tempdir().unwrap();
/// let reactor = weft::Reactor::new().unwrap();
/// let pool = ConnectionPool::new(&reactor.handle(), SqliteConnector::new(dir.path().join("a.db"))).unwrap();
/// let out = reactor.run_until_complete(async move {
///     pool.run_operation("create table t (x)", []).await?;
///     pool.run_operation("insert into t values (?1)", (7,)).await?;
///     let rows = pool.run_query("select x from t", []).await?;
///     pool.close().await.ok();
///     Ok::<_, weft_db::DbError>(rows)
/// });
/// assert_eq!(out.unwrap().unwrap(), vec![vec![rusqlite::types::Value::Integer(7)]]);
/// ```
pub struct ConnectionPool<C: Connector = SqliteConnector> {
    pub(crate) inner: Rc<Inner<C>>,
}

impl<C: Connector> Clone for ConnectionPool<C> {
    fn clone(&self) -> Self {
        ConnectionPool {
            inner: self.inner.clone(),
        }
    }
}

/// A validated configuration, from [`PoolBuilder::build`](crate::PoolBuilder::build).
pub(crate) struct Config<C> {
    pub(crate) connector: C,
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) name: String,
    pub(crate) reconnect: bool,
    pub(crate) good_sql: String,
    pub(crate) single_writer: bool,
    pub(crate) queued_work: QueuedWork,
    pub(crate) histograms: bool,
    pub(crate) per_turn: bool,
    pub(crate) on_thread_start: Option<crate::worker::ThreadStart>,
}

impl<C: Connector> ConnectionPool<C> {
    /// The pool for `config`: it starts when the reactor runs (at once if
    /// it does) and closes during its shutdown.
    pub(crate) fn with_config(handle: &Handle, config: Config<C>) -> Self {
        let inner = Rc::new(Inner {
            handle: handle.clone(),
            shared: Arc::new(Shared {
                connector: config.connector,
                good_sql: config.good_sql,
                reconnect: config.reconnect,
                discard_queued: AtomicBool::new(false),
                name: config.name,
                stats: Stats::new(config.histograms),
                next_id: AtomicU64::new(1),
                single_writer: config.single_writer,
                max: config.max,
                per_turn: config.per_turn,
                on_thread_start: config.on_thread_start,
                gate: Gate::new(),
            }),
            min: config.min,
            max: config.max,
            single_writer: config.single_writer,
            queued_work: config.queued_work,
            state: Cell::new(Lifecycle::Idle),
            workers: RefCell::new(None),
            backlog: RefCell::new(Vec::new()),
            start_trigger: Cell::new(None),
            shutdown_trigger: Cell::new(None),
            threads: Cell::new(0),
            exits: RefCell::new(None),
            close_waiters: RefCell::new(Vec::new()),
        });
        if handle.has_started() && handle.is_running() {
            Inner::start(&inner);
        } else {
            let weak = Rc::downgrade(&inner);
            let id =
                handle.add_system_event_trigger(Phase::During, SystemEvent::Startup, move || {
                    if let Some(inner) = weak.upgrade() {
                        inner.start_trigger.set(None);
                        Inner::start(&inner);
                    }
                });
            inner.start_trigger.set(Some(id));
        }
        ConnectionPool { inner }
    }

    /// The pool's statistics counters.
    pub(crate) fn stats(&self) -> &Stats {
        &self.inner.shared.stats
    }
}

pub(crate) fn flatten<T, E>(
    result: Result<Result<T, DbError<E>>, ThreadError>,
) -> Result<T, DbError<E>> {
    match result {
        Ok(r) => r,
        Err(ThreadError::Panicked { message }) => Err(DbError::Panicked {
            message: message.to_string(),
        }),
        Err(ThreadError::Cancelled) => Err(DbError::Cancelled),
        Err(_) => Err(DbError::Stopped),
    }
}

impl<C: Connector> ConnectionPool<C> {
    /// The number of connections (threads) the pool runs.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::builder(weft_db::SqliteConnector::new("x.db"))
    ///     .max(5)
    ///     .build(&reactor.handle())
    ///     .unwrap();
    /// assert_eq!(pool.max_connections(), 5);
    /// ```
    pub fn max_connections(&self) -> usize {
        self.inner.max
    }

    /// Whether the pool has started and not begun closing.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
    /// assert!(!pool.is_running()); // starts when the reactor runs
    /// ```
    pub fn is_running(&self) -> bool {
        self.inner.state.get() == Lifecycle::Running
    }

    /// The connector the pool opens connections with.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
    /// let _c: &weft_db::SqliteConnector = pool.connector();
    /// ```
    pub fn connector(&self) -> &C {
        &self.inner.shared.connector
    }

    /// The group a job on `route` goes to: by the threads running, or, before
    /// the pool started, by its configuration.
    fn plan(&self, route: Route) -> Group {
        let inner = &self.inner;
        match inner.workers.borrow().as_ref() {
            Some(workers) => workers.target(route),
            None => target(
                route,
                inner.single_writer,
                inner.max > usize::from(inner.single_writer),
            ),
        }
    }

    fn submit<T, W>(&self, route: Route, mode: Mode, work: W) -> Deferred<T, DbError<C::Error>>
    where
        T: Send + 'static,
        W: FnOnce(&mut C::Connection) -> Result<T, DbError<C::Error>> + Send + 'static,
    {
        let inner = &self.inner;
        let group = self.plan(route);
        if matches!(inner.state.get(), Lifecycle::Closing | Lifecycle::Closed) {
            inner.shared.stats.refused_at_once(group);
            return Deferred::fail(DbError::Stopped);
        }
        let id = inner.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let queued_at = inner.shared.stats.queued(group);
        let job = JobState::new(id, group, queued_at);
        // From here on the ticket accounts for the job if it is dropped
        // unrun, on any path.
        let ticket = Ticket {
            shared: inner.shared.clone(),
            job: job.clone(),
        };
        let cancel_shared = inner.shared.clone();
        let outer = Deferred::with_canceller(move || job.cancel(&cancel_shared.stats));
        let resolver = outer.resolver();
        let handle = inner.handle.clone();
        let dispatch = move |workers: Option<&Workers>| {
            let Some(workers) = workers else {
                drop(ticket);
                let _ = resolver.errback(DbError::Stopped);
                return;
            };
            let to = workers.target(route);
            ticket.job.regroup(to, &ticket.shared.stats);
            let task = move || run_job::<C, T, W>(&ticket, mode, work);
            let d = match &workers.writer {
                Some(writer) if to == Group::Writer => handle.defer_to_worker(writer, task),
                _ => {
                    let i = workers.next.fetch_add(1, Ordering::Relaxed);
                    // One shared queue: any of them serves the whole group.
                    handle.defer_to_worker(&workers.group[i % workers.group.len()], task)
                }
            };
            d.add_both(move |r| {
                let _ = resolver.resolve(flatten(r));
            });
        };
        match inner.state.get() {
            Lifecycle::Running => {
                let workers = inner.workers.borrow();
                let usable = workers.as_deref().filter(|w| w.usable());
                dispatch(usable);
            }
            _ => inner.backlog.borrow_mut().push(Box::new(dispatch)),
        }
        outer
    }

    /// Twisted's `runInteraction`: runs `f` on the writer inside a
    /// transaction (SQLite: `BEGIN IMMEDIATE`), committed when `f` returns
    /// `Ok`, rolled back on `Err` or panic. The original error wins; a failed
    /// rollback is logged.
    ///
    /// Cancelling the `Deferred` before `f` starts means it never runs;
    /// while it runs, its statements are interrupted and the transaction is
    /// rolled back.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft_db::{ConnectionPool, DbError, SqliteConnector};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = ConnectionPool::new(&reactor.handle(), SqliteConnector::new(":memory:")).unwrap();
    /// let d = pool.run_interaction(|conn| {
    ///     conn.execute_batch("create table t (x); insert into t values (1), (2)")?;
    ///     let n: i64 = conn.query_row("select count(*) from t", [], |r| r.get(0))?;
    ///     Ok::<_, DbError>(n)
    /// });
    /// assert_eq!(reactor.run_until_complete(d).unwrap().unwrap(), 2);
    /// ```
    #[must_use = "the Deferred carries the outcome"]
    pub fn run_interaction<T, F>(&self, f: F) -> Deferred<T, DbError<C::Error>>
    where
        T: Send + 'static,
        F: FnOnce(&mut C::Connection) -> Result<T, DbError<C::Error>> + Send + 'static,
    {
        self.submit(Route::Write, Mode::Transaction, f)
    }

    /// Twisted's `runWithConnection`: runs `f` with the writer's connection
    /// and no transaction opened for it (it may open its own); a transaction
    /// left open is committed when `f` returns `Ok` and rolled back on `Err`
    /// or panic.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft_db::{ConnectionPool, DbError, SqliteConnector};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = ConnectionPool::new(&reactor.handle(), SqliteConnector::new(":memory:")).unwrap();
    /// let d = pool.run_with_connection(|conn| {
    ///     let tx = conn.transaction()?;
    ///     tx.execute_batch("create table t (x)")?;
    ///     tx.commit()?;
    ///     Ok::<_, DbError>(conn.is_autocommit())
    /// });
    /// assert!(reactor.run_until_complete(d).unwrap().unwrap());
    /// ```
    #[must_use = "the Deferred carries the outcome"]
    pub fn run_with_connection<T, F>(&self, f: F) -> Deferred<T, DbError<C::Error>>
    where
        T: Send + 'static,
        F: FnOnce(&mut C::Connection) -> Result<T, DbError<C::Error>> + Send + 'static,
    {
        self.submit(Route::Write, Mode::Connection, f)
    }

    /// Runs `f` on a reader connection (the writer if there is none), in
    /// autocommit; a transaction left open is rolled back. With SQLite's
    /// read-only readers a write fails with
    /// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft_db::{ConnectionPool, DbError, SqliteConnector};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = ConnectionPool::new(&reactor.handle(), SqliteConnector::new(":memory:")).unwrap();
    /// let d = pool.run_read(|conn| Ok::<i64, DbError>(conn.query_row("select 6 * 7", [], |r| r.get(0))?));
    /// assert_eq!(reactor.run_until_complete(d).unwrap().unwrap(), 42);
    /// ```
    #[must_use = "the Deferred carries the outcome"]
    pub fn run_read<T, F>(&self, f: F) -> Deferred<T, DbError<C::Error>>
    where
        T: Send + 'static,
        F: FnOnce(&mut C::Connection) -> Result<T, DbError<C::Error>> + Send + 'static,
    {
        self.submit(Route::Read, Mode::Read, f)
    }
}

impl ConnectionPool<SqliteConnector> {
    /// Twisted's `runQuery`: runs `sql` with `params` on a reader and returns
    /// every row as owned values. The statement is prepared through the
    /// connection's statement cache.
    ///
    /// # Examples
    ///
    /// ```
    /// use rusqlite::types::Value;
    /// use weft_db::{ConnectionPool, SqliteConnector};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = ConnectionPool::new(&reactor.handle(), SqliteConnector::new(":memory:")).unwrap();
    /// let d = pool.run_query("select ?1 + 1, 'x'", (41,));
    /// let rows = reactor.run_until_complete(d).unwrap().unwrap();
    /// assert_eq!(rows, vec![vec![Value::Integer(42), Value::Text("x".into())]]);
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

    /// [`run_query`](ConnectionPool::run_query) with each row mapped by `f`.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft_db::{ConnectionPool, SqliteConnector};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = ConnectionPool::new(&reactor.handle(), SqliteConnector::new(":memory:")).unwrap();
    /// let d = pool.run_query_map("select 'a' union all select 'b'", [], |r| r.get::<_, String>(0));
    /// assert_eq!(reactor.run_until_complete(d).unwrap().unwrap(), ["a", "b"]);
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

    /// Twisted's `runOperation`: runs one statement on the writer inside a
    /// transaction; the `Deferred` gets the number of rows changed.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft_db::{ConnectionPool, SqliteConnector};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = ConnectionPool::new(&reactor.handle(), SqliteConnector::new(":memory:")).unwrap();
    /// let p = pool.clone();
    /// let n = reactor.run_until_complete(async move {
    ///     p.run_operation("create table t (x unique)", []).await?;
    ///     p.run_operation("insert into t values (1), (2)", []).await
    /// });
    /// assert_eq!(n.unwrap().unwrap(), 2);
    /// ```
    #[must_use = "the Deferred carries the outcome"]
    pub fn run_operation<P>(&self, sql: impl Into<String>, params: P) -> Deferred<usize, DbError>
    where
        P: rusqlite::Params + Send + 'static,
    {
        self.run_interaction(operation_job(sql.into(), params))
    }
}

/// `run_query_map`'s job: `sql` through the statement cache, each row
/// mapped by `f`.
pub(crate) fn query_job<P, T, F>(
    sql: String,
    params: P,
    mut f: F,
) -> impl FnOnce(&mut rusqlite::Connection) -> Result<Vec<T>, DbError> + Send + 'static
where
    P: rusqlite::Params + Send + 'static,
    T: Send + 'static,
    F: FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T> + Send + 'static,
{
    move |conn| {
        let run = || -> rusqlite::Result<Vec<T>> {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params, &mut f)?;
            rows.collect()
        };
        run().map_err(|source| DbError::Sql {
            statement: Some(sql.clone()),
            source,
        })
    }
}

/// `run_operation`'s job: one statement; the rows changed.
pub(crate) fn operation_job<P>(
    sql: String,
    params: P,
) -> impl FnOnce(&mut rusqlite::Connection) -> Result<usize, DbError> + Send + 'static
where
    P: rusqlite::Params + Send + 'static,
{
    move |conn| {
        let run = || conn.prepare_cached(&sql)?.execute(params);
        run().map_err(|source| DbError::Sql {
            statement: Some(sql.clone()),
            source,
        })
    }
}
