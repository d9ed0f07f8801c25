//! [`PoolBuilder`]: Twisted's `cp_*` arguments, their defaults and their
//! validation.
//!
//! The builder only collects and checks settings; `build` hands a
//! validated [`Config`] to the pool, which owns construction and start-up.
//!
//! # Invariants
//!
//! - A `Config` always has `1 <= max`, `min <= max`, `max` capped by the
//!   connector's own limit (`:memory:` allows one connection), and a name
//!   without NUL (it becomes thread names).

use weft::PoolConfigError;
use weft::reactor::{Handle, QueuedWork};

use crate::connector::Connector;
use crate::pool::{Config, ConnectionPool};
use crate::sqlite::SqliteConnector;

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
    per_turn: bool,
    on_thread_start: Option<crate::worker::ThreadStart>,
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

    /// Whether a running loop hands its [`SharedPool`](crate::SharedPool)
    /// jobs over once per turn (default on): the turn's jobs reach each
    /// connection thread together at its end, with one queue hand-over
    /// and at most one wake, instead of one per job. Off, each job is
    /// handed over as it is submitted. The batch costs each job the rest
    /// of its turn before its thread may start it, and saves a connection
    /// thread that would preempt the loop on its core from doing so for
    /// every job (weft-kv, 90/10 reads, 2 busy cores: context switches per
    /// request 0.6–1.0 → 0.15–0.3). [`ConnectionPool`]'s own methods
    /// always hand over at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = weft_db::ConnectionPool::builder(weft_db::SqliteConnector::new("a.db"))
    ///     .hand_over_per_turn(false);
    /// # drop(b);
    /// ```
    pub fn hand_over_per_turn(mut self, on: bool) -> Self {
        self.per_turn = on;
        self
    }

    /// Runs `f` first on every connection thread the pool starts, with the
    /// thread's group (before its connection opens), e.g. to set the
    /// thread's scheduling priority. weft-kv runs its connection threads
    /// at a lower priority (a positive nice value, which needs no
    /// privilege) so that the loop preempts them, not the other way round.
    /// A panic in `f` is caught and logged; the thread serves anyway.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use weft_db::{ConnectionPool, Group, SqliteConnector};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let started = Arc::new(AtomicUsize::new(0));
    /// let s = started.clone();
    /// let pool = ConnectionPool::builder(SqliteConnector::new(":memory:"))
    ///     .on_thread_start(move |group| {
    ///         assert_eq!(group, Group::Writer);
    ///         s.fetch_add(1, Ordering::SeqCst);
    ///     })
    ///     .build(&reactor.handle())
    ///     .unwrap();
    /// let n = reactor
    ///     .run_until_complete(pool.run_interaction(|_| Ok(2)))
    ///     .unwrap()
    ///     .unwrap();
    /// assert_eq!(n, 2);
    /// assert_eq!(started.load(Ordering::SeqCst), 1);
    /// ```
    pub fn on_thread_start(mut self, f: impl Fn(crate::Group) + Send + Sync + 'static) -> Self {
        self.on_thread_start = Some(std::sync::Arc::new(f));
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
        let config = Config {
            min: self.min.min(max),
            max,
            name: self.name,
            reconnect: self.reconnect,
            good_sql: self.good_sql,
            single_writer: self.single_writer,
            queued_work: self
                .queued_work
                .unwrap_or_else(|| handle.queued_work_at_shutdown()),
            histograms: self.histograms,
            per_turn: self.per_turn,
            on_thread_start: self.on_thread_start,
            connector: self.connector,
        };
        Ok(ConnectionPool::with_config(handle, config))
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
            per_turn: true,
            on_thread_start: None,
        }
    }
}
