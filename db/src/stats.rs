//! The pool's statistics: exact counts per connection group, and per-job
//! queue-wait and run-time histograms.
//!
//! # A job's accounting
//!
//! A job counts in `submitted` and `backlog` from `submit` on. It leaves
//! the backlog exactly once, by whoever moves its [`JobState`] out of
//! Queued (a compare-and-swap, so two paths never both count it):
//!
//! - its connection thread starts it: `busy` until it ends, through the
//!   [`Running`] guard, which counts it `completed` (and `failed`,
//!   `panicked` or `interrupted`) when dropped, even by a panic;
//! - its `Deferred` is cancelled, or `close` under `QueuedWork::Cancel`
//!   reaches it: `cancelled`;
//! - it is dropped unrun (the pool closed before it started, no thread, the
//!   reactor refused the hand-off): `refused`, by the job's ticket's `Drop`.
//!
//! So `submitted == backlog + busy + completed + cancelled + refused` at
//! every quiet moment, and no path leaks a count. A job is counted in the
//! group it was routed to; a job waiting for the pool to start is moved to
//! the group that actually serves it when it is dispatched (they differ
//! only when a thread could not be spawned).
//!
//! # Invariants
//!
//! - Every counter is an atomic updated with relaxed ordering: a snapshot
//!   taken while jobs move may be off by the jobs moving at that instant,
//!   never by more, and never drifts. At a quiet moment (or after awaiting
//!   a job's `Deferred`: its counts are updated before its result is sent
//!   to the loop) it is exact.
//! - `connections` counts a thread from before it is spawned until just
//!   before it reports its exit, so after `close`'s `Deferred` fires it is
//!   0.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use weft::diagnostics::{Histogram, HistogramSnapshot};

/// A snapshot of a [`ConnectionPool`](crate::ConnectionPool)'s work, per
/// connection group; see [`ConnectionPool::statistics`](crate::ConnectionPool::statistics).
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
/// let _ = pool.run_query("select 1", []);
/// let stats = pool.statistics();
/// // Not started yet: the job waits, routed to the writer (`:memory:` has no readers).
/// assert_eq!((stats.writer.submitted, stats.writer.backlog), (1, 1));
/// assert_eq!(stats.total().backlog, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DbPoolStatistics {
    /// The writer connection (writes; every job when there is no reader).
    pub writer: GroupStatistics,
    /// The shared group: the reader connections, or, with
    /// [`single_writer(false)`](crate::PoolBuilder::single_writer), every
    /// connection.
    pub readers: GroupStatistics,
}

impl DbPoolStatistics {
    /// Both groups added up.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = weft_db::DbPoolStatistics::default();
    /// assert_eq!(s.total(), weft_db::GroupStatistics::default());
    /// ```
    pub fn total(&self) -> GroupStatistics {
        let (a, b) = (&self.writer, &self.readers);
        GroupStatistics {
            connections: a.connections + b.connections,
            open: a.open + b.open,
            busy: a.busy + b.busy,
            idle: a.idle + b.idle,
            backlog: a.backlog + b.backlog,
            submitted: a.submitted + b.submitted,
            completed: a.completed + b.completed,
            failed: a.failed + b.failed,
            panicked: a.panicked + b.panicked,
            interrupted: a.interrupted + b.interrupted,
            cancelled: a.cancelled + b.cancelled,
            refused: a.refused + b.refused,
        }
    }
}

/// One connection group's figures (a part of [`DbPoolStatistics`]).
///
/// At a quiet moment, `submitted == backlog + busy + completed + cancelled
/// + refused` and `connections == busy + idle`.
///
/// # Examples
///
/// ```
/// let g = weft_db::GroupStatistics::default();
/// assert_eq!(g.submitted, g.backlog as u64 + g.busy as u64 + g.completed + g.cancelled + g.refused);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GroupStatistics {
    /// Connection threads alive (each owns at most one connection).
    pub connections: usize,
    /// Of those, the ones holding an open connection (connections open
    /// lazily, and reopen after a lost one).
    pub open: usize,
    /// Threads running a job (from its start through its commit or
    /// rollback).
    pub busy: usize,
    /// Threads alive and not running a job (`connections - busy`).
    pub idle: usize,
    /// Jobs submitted and not started, not yet cancelled or refused.
    pub backlog: usize,
    /// Jobs submitted, including those refused at once.
    pub submitted: u64,
    /// Jobs that started and ended, whatever their outcome.
    pub completed: u64,
    /// Of `completed`, the ones that ended with an error (SQL, open,
    /// commit), not counting panics and interrupts.
    pub failed: u64,
    /// Of `completed`, the ones whose closure panicked.
    pub panicked: u64,
    /// Of `completed`, the ones cancelled while running (rolled back).
    pub interrupted: u64,
    /// Jobs withdrawn before they started (their closure never ran): their
    /// `Deferred` was cancelled, or `close` under
    /// [`QueuedWork::Cancel`](weft::reactor::QueuedWork::Cancel) reached
    /// them.
    pub cancelled: u64,
    /// Jobs failed [`DbError::Stopped`](crate::DbError::Stopped) without
    /// running: submitted after `close`, or waiting when the pool closed
    /// before it started, or dropped unrun by the reactor.
    pub refused: u64,
}

/// A connection group, for the per-group histograms.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
/// assert_eq!(pool.run_time_histogram(weft_db::Group::Readers).count(), 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// The writer connection ([`DbPoolStatistics::writer`]).
    Writer,
    /// The shared group ([`DbPoolStatistics::readers`]).
    Readers,
}

impl Group {
    pub(crate) fn index(self) -> usize {
        match self {
            Group::Writer => 0,
            Group::Readers => 1,
        }
    }

    pub(crate) fn from_index(i: u8) -> Group {
        if i == 0 {
            Group::Writer
        } else {
            Group::Readers
        }
    }
}

/// How a started job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeeded,
    Failed,
    Panicked,
    Interrupted,
}

/// One group's live counters.
#[derive(Default)]
pub(crate) struct Counters {
    connections: AtomicUsize,
    open: AtomicUsize,
    busy: AtomicUsize,
    backlog: AtomicUsize,
    submitted: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    interrupted: AtomicU64,
    cancelled: AtomicU64,
    refused: AtomicU64,
    queue_wait: Histogram,
    run_time: Histogram,
}

fn inc(c: &AtomicUsize) {
    c.fetch_add(1, Relaxed);
}

fn dec(c: &AtomicUsize) {
    c.fetch_sub(1, Relaxed);
}

fn count(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

impl Counters {
    pub(crate) fn thread_started(&self) {
        inc(&self.connections);
    }
    pub(crate) fn thread_exited(&self) {
        dec(&self.connections);
    }
    pub(crate) fn opened(&self) {
        inc(&self.open);
    }
    pub(crate) fn closed(&self) {
        dec(&self.open);
    }

    fn snapshot(&self) -> GroupStatistics {
        let connections = self.connections.load(Relaxed);
        let busy = self.busy.load(Relaxed);
        GroupStatistics {
            connections,
            open: self.open.load(Relaxed),
            busy,
            idle: connections.saturating_sub(busy),
            backlog: self.backlog.load(Relaxed),
            submitted: self.submitted.load(Relaxed),
            completed: self.completed.load(Relaxed),
            failed: self.failed.load(Relaxed),
            panicked: self.panicked.load(Relaxed),
            interrupted: self.interrupted.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            refused: self.refused.load(Relaxed),
        }
    }
}

/// The pool's counters: one set per group.
pub(crate) struct Stats {
    groups: [Counters; 2],
    /// Whether jobs are timed for the histograms.
    histograms: bool,
}

impl Stats {
    pub(crate) fn new(histograms: bool) -> Stats {
        Stats {
            groups: Default::default(),
            histograms,
        }
    }

    pub(crate) fn group(&self, g: Group) -> &Counters {
        &self.groups[g.index()]
    }

    pub(crate) fn snapshot(&self) -> DbPoolStatistics {
        DbPoolStatistics {
            writer: self.groups[0].snapshot(),
            readers: self.groups[1].snapshot(),
        }
    }

    pub(crate) fn queue_wait(&self, g: Group) -> HistogramSnapshot {
        self.group(g).queue_wait.snapshot()
    }

    pub(crate) fn run_time(&self, g: Group) -> HistogramSnapshot {
        self.group(g).run_time.snapshot()
    }

    /// A job submitted after `close`: counted and refused at once.
    pub(crate) fn refused_at_once(&self, g: Group) {
        let c = self.group(g);
        count(&c.submitted);
        count(&c.refused);
    }

    /// A job accepted into `g`'s backlog; its submission time when timed.
    pub(crate) fn queued(&self, g: Group) -> Option<Instant> {
        let c = self.group(g);
        count(&c.submitted);
        inc(&c.backlog);
        self.histograms.then(Instant::now)
    }

    /// A queued job moved from `from` to `to` before any thread saw it.
    pub(crate) fn moved(&self, from: Group, to: Group) {
        let (a, b) = (self.group(from), self.group(to));
        a.submitted.fetch_sub(1, Relaxed);
        dec(&a.backlog);
        count(&b.submitted);
        inc(&b.backlog);
    }

    /// A queued job withdrawn unrun (cancelled).
    pub(crate) fn withdrawn(&self, g: Group) {
        let c = self.group(g);
        dec(&c.backlog);
        count(&c.cancelled);
    }

    /// A queued job dropped unrun (refused).
    pub(crate) fn dropped(&self, g: Group) {
        let c = self.group(g);
        dec(&c.backlog);
        count(&c.refused);
    }

    /// A queued job starts on `g`'s thread: busy until the guard drops.
    pub(crate) fn start(&self, g: Group, queued_at: Option<Instant>) -> Running<'_> {
        let c = self.group(g);
        inc(&c.busy);
        dec(&c.backlog);
        let started = queued_at.map(|q| {
            let now = Instant::now();
            c.queue_wait.record(now.saturating_duration_since(q));
            now
        });
        Running {
            counters: c,
            started,
            outcome: Outcome::Panicked,
        }
    }
}

/// A running job: counts it busy, then completed with its outcome when
/// dropped. The outcome starts as `Panicked`, so a panic that unwinds past
/// the job's own `catch_unwind` is still counted.
pub(crate) struct Running<'a> {
    counters: &'a Counters,
    started: Option<Instant>,
    pub(crate) outcome: Outcome,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let c = self.counters;
        if let Some(started) = self.started {
            c.run_time.record(started.elapsed());
        }
        match self.outcome {
            Outcome::Succeeded => {}
            Outcome::Failed => count(&c.failed),
            Outcome::Panicked => count(&c.panicked),
            Outcome::Interrupted => count(&c.interrupted),
        }
        count(&c.completed);
        dec(&c.busy);
    }
}

impl<C: crate::Connector> crate::ConnectionPool<C> {
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
        self.stats().snapshot()
    }

    /// The queue wait of every job `group` started (submission to start,
    /// the wait for the pool to start included), since the pool was built.
    /// Empty with [`PoolBuilder::histograms(false)`](crate::PoolBuilder::histograms).
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
        self.stats().queue_wait(group)
    }

    /// The run time of every job `group` completed (start to end, its
    /// begin and commit or rollback included), since the pool was built.
    /// Empty with [`PoolBuilder::histograms(false)`](crate::PoolBuilder::histograms).
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
        self.stats().run_time(group)
    }
}
