//! The loop side of the pool: configuration, routing, lifecycle and the
//! `Deferred`s callers hold.
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
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use weft::diagnostics::HistogramSnapshot;
use weft::reactor::{Handle, Phase, QueuedWork, SystemEvent, TriggerId};
use weft::threads::{BlockingQueue, ThreadWorker, WorkItem, WorkQueue, Worker};
use weft::{Deferred, PoolConfigError, Resolver, ThreadError};

use crate::connector::{Connector, Role, SqliteConnector};
use crate::error::DbError;
use crate::stats::{DbPoolStatistics, Group, Stats};
use crate::worker::{JobState, Mode, Shared, Ticket, run_job, spawn_worker};

/// A `WorkQueue` shared by all of a group's threads: any idle connection
/// takes the oldest job (one long job does not stall the jobs behind it).
#[derive(Clone, Default)]
struct SharedQueue(Arc<BlockingQueue>);

impl WorkQueue for SharedQueue {
    fn put(&self, job: WorkItem) {
        self.0.put(job)
    }
    fn get(&self) -> WorkItem {
        self.0.get()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Write,
    Read,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Idle,
    Running,
    Closing,
    Closed,
}

struct Workers {
    writer: Option<ThreadWorker>,
    group: Vec<ThreadWorker<SharedQueue>>,
    next: Cell<usize>,
}

/// The group serving `route`, given which groups have threads.
fn target(route: Route, has_writer: bool, has_group: bool) -> Group {
    if has_writer && (route == Route::Write || !has_group) {
        Group::Writer
    } else {
        Group::Readers
    }
}

impl Workers {
    fn target(&self, route: Route) -> Group {
        target(route, self.writer.is_some(), !self.group.is_empty())
    }

    fn quit(&self) {
        if let Some(w) = &self.writer {
            let _ = w.quit();
        }
        for w in &self.group {
            let _ = w.quit();
        }
    }
}

/// A job waiting for the pool to start: dispatched with the workers, or
/// failed `Stopped` with `None`.
type Backlogged = Box<dyn FnOnce(Option<&Workers>)>;

struct Inner<C: Connector> {
    handle: Handle,
    shared: Arc<Shared<C>>,
    min: usize,
    max: usize,
    single_writer: bool,
    queued_work: QueuedWork,
    state: Cell<Lifecycle>,
    workers: RefCell<Option<Workers>>,
    backlog: RefCell<Vec<Backlogged>>,
    start_trigger: Cell<Option<TriggerId>>,
    shutdown_trigger: Cell<Option<TriggerId>>,
    threads: Cell<usize>,
    exits: RefCell<Option<mpsc::Receiver<()>>>,
    close_waiters: RefCell<Vec<Resolver<(), weft::Cancelled>>>,
    next_id: Cell<u64>,
}

impl<C: Connector> Drop for Inner<C> {
    fn drop(&mut self) {
        // Threads left running would wait on their queues forever.
        if let Some(workers) = self.workers.get_mut().as_ref() {
            workers.quit();
        }
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
    inner: Rc<Inner<C>>,
}

impl<C: Connector> Clone for ConnectionPool<C> {
    fn clone(&self) -> Self {
        ConnectionPool {
            inner: self.inner.clone(),
        }
    }
}

/// Builds a [`ConnectionPool`] (Twisted's `cp_*` arguments).
///
/// Defaults: `min` 1, `max` 3 (one writer and two readers), name `"db"`,
/// `reconnect` on, `good_sql` `"select 1"`, `single_writer` on, queued work
/// at close as the reactor's
/// [`Handle::queued_work_at_shutdown`](weft::reactor::Handle::queued_work_at_shutdown).
///
/// # Examples
///
/// ```
/// use weft_db::{ConnectionPool, SqliteConnector};
///
/// let reactor = weft::Reactor::new().unwrap();
/// let pool = ConnectionPool::builder(SqliteConnector::new(":memory:"))
///     .name("cache")
///     .good_sql("select 1")
///     .build(&reactor.handle())
///     .unwrap();
/// assert_eq!(pool.max_connections(), 1); // a private in-memory database
/// ```
pub struct PoolBuilder<C: Connector> {
    connector: C,
    min: usize,
    max: usize,
    name: String,
    reconnect: bool,
    good_sql: String,
    single_writer: bool,
    queued_work: Option<QueuedWork>,
    histograms: bool,
}

impl<C: Connector> PoolBuilder<C> {
    /// Connections opened as soon as the pool starts (the rest open on first
    /// use). The writer is counted first.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = weft_db::ConnectionPool::builder(weft_db::SqliteConnector::new("a.db")).min(3);
    /// # drop(b);
    /// ```
    pub fn min(mut self, min: usize) -> Self {
        self.min = min;
        self
    }

    /// The number of connections, each on its own thread: with
    /// `single_writer`, one writer and `max - 1` readers.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = weft_db::ConnectionPool::builder(weft_db::SqliteConnector::new("a.db")).max(9);
    /// # drop(b);
    /// ```
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The pool's name, used in its thread names (`weft-db-{name}-w`,
    /// `weft-db-{name}-r{N}`) and log records.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = weft_db::ConnectionPool::builder(weft_db::SqliteConnector::new("a.db")).name("users");
    /// # drop(b);
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Twisted's `cp_reconnect` (default on): a connection whose job failed
    /// with a lost-connection error, or whose rollback failed and then its
    /// probe too, is closed and reopened on next use; a lost connection at
    /// the start of a transaction is reopened and the start retried once.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = weft_db::ConnectionPool::builder(weft_db::SqliteConnector::new("a.db")).reconnect(false);
    /// # drop(b);
    /// ```
    pub fn reconnect(mut self, on: bool) -> Self {
        self.reconnect = on;
        self
    }

    /// Twisted's `cp_good_sql`: the probe statement, which must succeed and
    /// change nothing (default `select 1`).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = weft_db::ConnectionPool::builder(weft_db::SqliteConnector::new("a.db")).good_sql("select 2");
    /// # drop(b);
    /// ```
    pub fn good_sql(mut self, sql: impl Into<String>) -> Self {
        self.good_sql = sql.into();
        self
    }

    /// Whether writes go through one writer connection while reads spread
    /// over the others (default on). With `false` every connection is a
    /// read-write writer and every job goes to any idle one (Twisted's
    /// topology): for drivers with real concurrent writers.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = weft_db::ConnectionPool::builder(weft_db::SqliteConnector::new("a.db")).single_writer(false);
    /// # drop(b);
    /// ```
    pub fn single_writer(mut self, on: bool) -> Self {
        self.single_writer = on;
        self
    }

    /// What `close` (and shutdown) does with jobs queued but not started:
    /// run them or cancel them (default: the reactor's
    /// [`Handle::queued_work_at_shutdown`](weft::reactor::Handle::queued_work_at_shutdown),
    /// as its own pool).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = weft_db::ConnectionPool::builder(weft_db::SqliteConnector::new("a.db"))
    ///     .queued_work_at_close(weft::reactor::QueuedWork::Cancel);
    /// # drop(b);
    /// ```
    pub fn queued_work_at_close(mut self, policy: QueuedWork) -> Self {
        self.queued_work = Some(policy);
        self
    }

    /// Whether every job's queue wait (submission to start) and run time
    /// (start to end, its commit or rollback included) are recorded in
    /// [`ConnectionPool::queue_wait_histogram`] and
    /// [`ConnectionPool::run_time_histogram`]. Default on: it costs three
    /// clock reads per job (one on the loop, two on the connection thread;
    /// ~50 ns each on the VMs measured) and two histogram records, against
    /// a job that takes several µs even for a point read plus the round
    /// trip to its thread (~10 µs per read at 16 in flight in
    /// `db/benches`). Its `point_read` row with histograms on vs off
    /// (`weft_db_histograms_off`) showed no difference above the shared
    /// VM's run-to-run noise (±30 %) in two runs. The counts of
    /// [`statistics`](ConnectionPool::statistics) are always kept.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::builder(weft_db::SqliteConnector::new(":memory:"))
    ///     .histograms(false)
    ///     .build(&reactor.handle())
    ///     .unwrap();
    /// let d = pool.run_query("select 1", []);
    /// reactor.run_until_complete(d).unwrap().unwrap();
    /// assert_eq!(pool.statistics().writer.completed, 1);
    /// assert_eq!(pool.run_time_histogram(weft_db::Group::Writer).count(), 0);
    /// ```
    pub fn histograms(mut self, on: bool) -> Self {
        self.histograms = on;
        self
    }

    /// Builds the pool. It starts when the reactor runs (at once if it
    /// does) and closes during its shutdown.
    ///
    /// # Errors
    ///
    /// [`PoolConfigError`] for `max == 0`, `min > max` or a name holding NUL.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let b = weft_db::ConnectionPool::builder(weft_db::SqliteConnector::new(":memory:"));
    /// assert!(b.max(0).build(&reactor.handle()).is_err());
    /// ```
    pub fn build(self, handle: &Handle) -> Result<ConnectionPool<C>, PoolConfigError> {
        if self.max == 0 {
            return Err(PoolConfigError::ZeroMax);
        }
        if self.min > self.max {
            return Err(PoolConfigError::MinAboveMax {
                min: self.min,
                max: self.max,
            });
        }
        if self.name.contains('\0') {
            return Err(PoolConfigError::InvalidName);
        }
        let limit = self
            .connector
            .max_connections()
            .unwrap_or(usize::MAX)
            .max(1);
        let max = self.max.min(limit);
        let inner = Rc::new(Inner {
            handle: handle.clone(),
            shared: Arc::new(Shared {
                connector: self.connector,
                good_sql: self.good_sql,
                reconnect: self.reconnect,
                discard_queued: AtomicBool::new(false),
                name: self.name,
                stats: Stats::new(self.histograms),
            }),
            min: self.min.min(max),
            max,
            single_writer: self.single_writer,
            queued_work: self
                .queued_work
                .unwrap_or_else(|| handle.queued_work_at_shutdown()),
            state: Cell::new(Lifecycle::Idle),
            workers: RefCell::new(None),
            backlog: RefCell::new(Vec::new()),
            start_trigger: Cell::new(None),
            shutdown_trigger: Cell::new(None),
            threads: Cell::new(0),
            exits: RefCell::new(None),
            close_waiters: RefCell::new(Vec::new()),
            next_id: Cell::new(1),
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
        Ok(ConnectionPool { inner })
    }
}

impl<C: Connector> Inner<C> {
    fn start(this: &Rc<Self>) {
        if this.state.get() != Lifecycle::Idle {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let name = &this.shared.name;
        let mut spawned = 0;
        let writer = if this.single_writer {
            match spawn_worker(
                &this.shared,
                Role::Writer,
                Group::Writer,
                format!("weft-db-{name}-w"),
                this.min > 0,
                BlockingQueue::new(),
                tx.clone(),
            ) {
                Ok(w) => {
                    spawned += 1;
                    Some(w)
                }
                Err(e) => {
                    tracing::error!(pool = %name, error = %e, "weft-db: could not start the writer thread");
                    None
                }
            }
        } else {
            None
        };
        let (group_size, group_role, offset) = if this.single_writer {
            (this.max - 1, Role::Reader, 1)
        } else {
            (this.max, Role::Writer, 0)
        };
        let queue = SharedQueue::default();
        let mut group = Vec::with_capacity(group_size);
        for i in 0..group_size {
            let tag = if group_role == Role::Reader { 'r' } else { 'w' };
            match spawn_worker(
                &this.shared,
                group_role,
                Group::Readers,
                format!("weft-db-{name}-{tag}{i}"),
                i + offset < this.min,
                queue.clone(),
                tx.clone(),
            ) {
                Ok(w) => {
                    spawned += 1;
                    group.push(w);
                }
                Err(e) => {
                    tracing::error!(pool = %name, error = %e, "weft-db: could not start a connection thread");
                }
            }
        }
        drop(tx);
        this.threads.set(spawned);
        *this.exits.borrow_mut() = Some(rx);
        let workers = Workers {
            writer,
            group,
            next: Cell::new(0),
        };
        let usable = workers.writer.is_some() || !workers.group.is_empty();
        *this.workers.borrow_mut() = Some(workers);
        this.state.set(Lifecycle::Running);
        // The trigger keeps the pool alive until shutdown (or `close`, which
        // removes it), as Twisted's reactor does: dropping every handle
        // must not leave its threads unobserved.
        let keep = this.clone();
        let id =
            this.handle
                .add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
                    keep.shutdown_trigger.set(None);
                    ConnectionPool { inner: keep }.close()
                });
        this.shutdown_trigger.set(Some(id));
        let backlog = std::mem::take(&mut *this.backlog.borrow_mut());
        let workers = this.workers.borrow();
        for job in backlog {
            job(workers.as_ref().filter(|_| usable));
        }
    }
}

fn flatten<T, E>(result: Result<Result<T, DbError<E>>, ThreadError>) -> Result<T, DbError<E>> {
    match result {
        Ok(r) => r,
        Err(ThreadError::Panicked { message }) => Err(DbError::Panicked {
            message: message.to_string(),
        }),
        Err(ThreadError::Cancelled) => Err(DbError::Cancelled),
        Err(_) => Err(DbError::Stopped),
    }
}

impl ConnectionPool<SqliteConnector> {
    /// A pool with the default settings over `connector`; see
    /// [`builder`](ConnectionPool::builder).
    ///
    /// # Errors
    ///
    /// Never with the defaults; the signature matches
    /// [`PoolBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
    /// assert!(!pool.is_running());
    /// ```
    pub fn new(handle: &Handle, connector: SqliteConnector) -> Result<Self, PoolConfigError> {
        ConnectionPool::builder(connector).build(handle)
    }
}

impl<C: Connector> ConnectionPool<C> {
    /// A builder over `connector`.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::builder(weft_db::SqliteConnector::new(":memory:"))
    ///     .build(&reactor.handle())
    ///     .unwrap();
    /// # drop(pool);
    /// ```
    pub fn builder(connector: C) -> PoolBuilder<C> {
        PoolBuilder {
            connector,
            min: 1,
            max: 3,
            name: "db".to_owned(),
            reconnect: true,
            good_sql: "select 1".to_owned(),
            single_writer: true,
            queued_work: None,
            histograms: true,
        }
    }

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

    /// The pool's statistics now, per connection group: threads, open
    /// connections, busy, idle, backlog, and how many jobs were submitted,
    /// completed, failed, panicked, interrupted, cancelled or refused.
    ///
    /// Exact: a job counts in `backlog` from submission until its thread
    /// starts it or it is withdrawn or dropped unrun, and in `busy` while
    /// it runs (its commit or rollback included); a job's counts are
    /// updated before its result leaves its thread, so they are final once
    /// its `Deferred` has fired. A snapshot taken while jobs move may be
    /// off by those moving at that instant. Reading it costs a few dozen
    /// relaxed atomic loads.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft_db::{ConnectionPool, SqliteConnector};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = ConnectionPool::builder(SqliteConnector::new(dir.path().join("s.db")))
    ///     .max(3)
    ///     .build(&reactor.handle())
    ///     .unwrap();
    /// let p = pool.clone();
    /// reactor.run_until_complete(async move {
    ///     p.run_operation("create table t (x)", []).await.unwrap();
    ///     p.run_query("select * from t", []).await.unwrap();
    ///     assert!(p.run_operation("insert into nowhere values (1)", []).await.is_err());
    /// }).unwrap();
    /// let s = pool.statistics();
    /// assert_eq!((s.writer.completed, s.writer.failed), (2, 1));
    /// assert_eq!((s.readers.completed, s.readers.connections), (1, 2));
    /// assert_eq!((s.total().busy, s.total().idle, s.total().backlog), (0, 3, 0));
    /// ```
    pub fn statistics(&self) -> DbPoolStatistics {
        self.inner.shared.stats.snapshot()
    }

    /// The queue wait of every job `group` started (submission to start,
    /// the wait for the pool to start included), since the pool was built.
    /// Empty with [`PoolBuilder::histograms(false)`](PoolBuilder::histograms).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
    /// let d = pool.run_query("select 1", []);
    /// reactor.run_until_complete(d).unwrap().unwrap();
    /// assert_eq!(pool.queue_wait_histogram(weft_db::Group::Writer).count(), 1);
    /// ```
    pub fn queue_wait_histogram(&self, group: Group) -> HistogramSnapshot {
        self.inner.shared.stats.queue_wait(group)
    }

    /// The run time of every job `group` completed (start to end, its
    /// begin and commit or rollback included), since the pool was built.
    /// Empty with [`PoolBuilder::histograms(false)`](PoolBuilder::histograms).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
    /// let d = pool.run_query("select 1", []);
    /// reactor.run_until_complete(d).unwrap().unwrap();
    /// let h = pool.run_time_histogram(weft_db::Group::Writer);
    /// assert_eq!(h.count(), 1);
    /// assert!(h.sum() > std::time::Duration::ZERO);
    /// ```
    pub fn run_time_histogram(&self, group: Group) -> HistogramSnapshot {
        self.inner.shared.stats.run_time(group)
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
        let id = inner.next_id.get();
        inner.next_id.set(id + 1);
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
                    let i = workers.next.get();
                    workers.next.set(i.wrapping_add(1));
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
                let usable = workers
                    .as_ref()
                    .filter(|w| w.writer.is_some() || !w.group.is_empty());
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

    /// Closes the pool; idempotent (every call's `Deferred` fires when the
    /// pool has closed). New work fails with [`DbError::Stopped`] at once;
    /// jobs in flight finish and deliver; queued jobs run, or are cancelled
    /// under [`QueuedWork::Cancel`]; then each connection is closed on its
    /// own thread and the threads exit. The reactor calls it at shutdown.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
    /// let p = pool.clone();
    /// let done = reactor.run_until_complete(async move {
    ///     p.run_operation("create table t (x)", []).await.unwrap();
    ///     let (a, b) = (p.close(), p.close());
    ///     (a.await, b.await)
    /// });
    /// assert_eq!(done.unwrap(), (Ok(()), Ok(())));
    /// assert!(pool.run_operation("select 1", []).is_resolved()); // Stopped at once
    /// ```
    #[must_use = "the Deferred fires once the pool has closed"]
    pub fn close(&self) -> Deferred<(), weft::Cancelled> {
        let inner = &self.inner;
        match inner.state.get() {
            Lifecycle::Closed => return Deferred::succeed(()),
            Lifecycle::Closing => {
                let d = Deferred::new();
                inner.close_waiters.borrow_mut().push(d.resolver());
                return d;
            }
            Lifecycle::Idle => {
                if let Some(id) = inner.start_trigger.take() {
                    inner.handle.remove_system_event_trigger(id);
                }
                inner.state.set(Lifecycle::Closed);
                let backlog = std::mem::take(&mut *inner.backlog.borrow_mut());
                for job in backlog {
                    job(None);
                }
                return Deferred::succeed(());
            }
            Lifecycle::Running => {}
        }
        if let Some(id) = inner.shutdown_trigger.take() {
            inner.handle.remove_system_event_trigger(id);
        }
        inner.state.set(Lifecycle::Closing);
        if inner.queued_work == QueuedWork::Cancel {
            inner.shared.discard_queued.store(true, Ordering::Release);
        }
        if let Some(workers) = inner.workers.borrow().as_ref() {
            workers.quit();
        }
        let d = Deferred::new();
        inner.close_waiters.borrow_mut().push(d.resolver());
        let threads = inner.threads.get();
        let exits = inner.exits.borrow_mut().take();
        let weak: Weak<Inner<C>> = Rc::downgrade(inner);
        let finish = move |_| {
            if let Some(inner) = weak.upgrade() {
                inner.state.set(Lifecycle::Closed);
                let waiters = std::mem::take(&mut *inner.close_waiters.borrow_mut());
                for w in waiters {
                    let _ = w.callback(());
                }
            }
        };
        match exits {
            Some(rx) => inner
                .handle
                .defer_to_thread(move || {
                    for _ in 0..threads {
                        if rx.recv().is_err() {
                            break;
                        }
                    }
                })
                .add_both(finish),
            None => finish(Ok(())),
        }
        d
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
        mut f: F,
    ) -> Deferred<Vec<T>, DbError>
    where
        P: rusqlite::Params + Send + 'static,
        T: Send + 'static,
        F: FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let sql = sql.into();
        self.run_read(move |conn| {
            let run = || -> rusqlite::Result<Vec<T>> {
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params, &mut f)?;
                rows.collect()
            };
            run().map_err(|source| DbError::Sql {
                statement: Some(sql.clone()),
                source,
            })
        })
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
        let sql = sql.into();
        self.run_interaction(move |conn| {
            let run = || conn.prepare_cached(&sql)?.execute(params);
            run().map_err(|source| DbError::Sql {
                statement: Some(sql.clone()),
                source,
            })
        })
    }
}
