//! weft-db: Twisted's `adbapi` for weft, over SQLite, done right.
//!
//! A [`ConnectionPool`] runs blocking database work on connection threads
//! and hands results back to the loop as [`Deferred`](weft::Deferred)s
//! (await them, or add callbacks). It is generic over a small
//! [`Connector`] trait (open, probe, close, plus transaction brackets), so
//! other blocking drivers plug in; [`SqliteConnector`] is SQLite through
//! rusqlite (bundled: no system library needed).
//!
//! # Design
//!
//! - **One connection per thread, never moved** (Twisted's design): each
//!   connection is a [`ThreadWorker`](weft::threads::ThreadWorker) whose
//!   thread opens it (eagerly for the first `min`, otherwise on first
//!   use), keeps it in its thread state, runs every job on it and closes it
//!   when it leaves its loop. Twisted closed connections from the reactor
//!   thread; weft-db never does.
//! - **One writer, many readers** (SQLite has one write lock per file):
//!   [`run_interaction`](ConnectionPool::run_interaction),
//!   [`run_with_connection`](ConnectionPool::run_with_connection) and
//!   [`run_operation`](ConnectionPool::run_operation) go to the single
//!   writer connection, whose transactions start with `BEGIN IMMEDIATE`, so
//!   writers queue in the pool instead of fighting over the lock (no
//!   `SQLITE_BUSY` storms, no `BUSY_SNAPSHOT` on read-then-write).
//!   [`run_query`](ConnectionPool::run_query) and
//!   [`run_read`](ConnectionPool::run_read) go to whichever reader is idle
//!   (one shared queue); readers run in autocommit with
//!   `PRAGMA query_only`. With no reader (`max = 1`, or `:memory:`, which is
//!   private to one connection) the writer serves everything.
//! - **SQLite defaults**: WAL journal mode (set once, by the first
//!   connection, before any other opens), `synchronous = NORMAL` on the
//!   writer, a 5 s busy timeout, `foreign_keys` set explicitly, SQLite's
//!   automatic checkpoint at 1000 WAL pages (set explicitly), and a
//!   64-entry prepared-statement cache per connection (rusqlite's
//!   `prepare_cached`; the pool's own statements use it).
//! - **Transactions**: committed when the closure returns `Ok`; rolled back
//!   on `Err`, panic or cancel. The original error always wins; a failed
//!   rollback is logged.
//! - **Cancellation**: cancelling a `Deferred` whose job has not started
//!   removes it (the closure never runs). A running job is interrupted: the
//!   canceller sets the connection's cancel flag (read by a progress handler
//!   every 1000 VM steps) and calls rusqlite's `InterruptHandle`, both only
//!   while holding the connection's guard and only if that job is the one
//!   running; the worker clears both under the same guard before the
//!   connection runs anything else, so a late cancel can never hit the next
//!   job. The job is then rolled back. A cancel that arrives while the
//!   commit is already running cannot stop it: the commit may land although
//!   the `Deferred` says `Cancelled`. Rust code inside a closure is not
//!   interruptible; its result is discarded.
//! - **Reconnect** (Twisted's `cp_reconnect`, on by default): a connection
//!   whose job failed with a lost-connection error
//!   ([`ErrorKind::ConnectionLost`]) is closed and reopened on next use; a
//!   lost connection found when a transaction starts is reopened and the
//!   start retried once; after a failed rollback the probe (`good_sql`,
//!   default `select 1`) decides whether the connection is kept.
//! - **Lifecycle**: the pool starts when the reactor runs (work submitted
//!   earlier waits) and closes in the reactor's `Before` shutdown phase, so
//!   the loop keeps delivering results while it drains.
//!   [`close`](ConnectionPool::close) is idempotent; work submitted after
//!   it fails [`DbError::Stopped`] at once (Twisted's `Deferred`s never
//!   fired); queued work runs, or is cancelled under
//!   [`QueuedWork::Cancel`](weft::reactor::QueuedWork::Cancel).
//! - **Several loops**: the pool belongs to the loop that built it, and
//!   [`ConnectionPool::shared`] gives a [`SharedPool`] (`Send + Sync +
//!   Clone`) for every other reactor: its calls hand the job straight to the
//!   connection threads from the calling loop and resolve on that loop, so
//!   the owner's loop does no work for them. Routing, statistics, cancel
//!   and close are the pool's own; called off any loop, it fails
//!   [`DbError::NotOnLoop`].
//! - **Statistics**: [`ConnectionPool::statistics`] gives exact counts per
//!   connection group (writer, readers): threads, open connections, busy,
//!   idle, backlog, and jobs submitted, completed, failed, panicked,
//!   interrupted, cancelled and refused; every job's queue wait and run
//!   time go to per-group histograms
//!   ([`ConnectionPool::queue_wait_histogram`]; on by default, see
//!   [`PoolBuilder::histograms`] for the cost).
//! - **Errors** are typed ([`DbError`]): SQL errors carry the statement text
//!   when known, constraint violations are distinguishable
//!   ([`DbError::is_constraint`]), a panic reaches the awaiter as
//!   [`DbError::Panicked`] and the pool goes on.
//!
//! # Opting out
//!
//! - WAL: [`SqliteConnector::wal(false)`](SqliteConnector::wal) keeps the
//!   file's journal mode. In rollback-journal mode readers block the
//!   writer's commit; use fewer readers (`max(1)` serves everything from one
//!   connection).
//! - The writer split: [`PoolBuilder::single_writer(false)`](PoolBuilder::single_writer)
//!   makes every connection a read-write writer and sends every job to any
//!   idle one (Twisted's topology), for drivers with real concurrent
//!   writers. With SQLite, expect waits on the write lock (and `BEGIN
//!   IMMEDIATE` still prevents `BUSY_SNAPSHOT`).
//! - Read-only readers: [`SqliteConnector::read_only_readers(false)`](SqliteConnector::read_only_readers).
//! - Durability: [`SqliteConnector::synchronous`] with [`Synchronous::Full`]
//!   syncs the WAL on every commit.
//! - Checkpoints: by default the commit that fills the WAL to 1000 pages
//!   checkpoints it itself (SQLite's automatic checkpoint), which stalls
//!   that commit and the writes queued behind it for the copy and two
//!   fsyncs. [`SqliteConnector::checkpoints`] with
//!   [`Checkpoints::background()`] moves them to a checkpointer thread
//!   (`db/examples/queue_wait.rs` measures both).
//!
//! # Examples
//!
//! ```
//! use weft_db::{ConnectionPool, DbError, SqliteConnector};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let reactor = weft::Reactor::new().unwrap();
//! let pool = ConnectionPool::builder(SqliteConnector::new(dir.path().join("app.db")))
//!     .max(3) // one writer, two readers
//!     .build(&reactor.handle())
//!     .unwrap();
//! let total = reactor.run_until_complete(async move {
//!     pool.run_operation("create table accounts (id integer primary key, balance integer)", []).await?;
//!     pool.run_interaction(|conn| {
//!         conn.execute("insert into accounts values (1, 100), (2, 50)", [])?;
//!         conn.execute("update accounts set balance = balance - 30 where id = 1", [])?;
//!         conn.execute("update accounts set balance = balance + 30 where id = 2", [])?;
//!         Ok::<_, DbError>(())
//!     })
//!     .await?;
//!     let total = pool
//!         .run_query_map("select sum(balance) from accounts", [], |r| r.get::<_, i64>(0))
//!         .await?;
//!     pool.close().await.ok();
//!     Ok::<_, DbError>(total[0])
//! });
//! assert_eq!(total.unwrap().unwrap(), 150);
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod builder;
mod checkpoint;
mod connector;
mod error;
mod group;
mod lifecycle;
mod pool;
mod shared;
mod sqlite;
mod stats;
mod worker;

pub use builder::PoolBuilder;
pub use checkpoint::{CheckpointStatistics, Checkpoints};
pub use connector::{Connector, Interrupter, Role};
pub use error::{DbError, DriverError, ErrorKind, WithStatement};
pub use pool::ConnectionPool;
pub use shared::SharedPool;
pub use sqlite::{SqliteConnector, Synchronous};
pub use stats::{DbPoolStatistics, Group, GroupStatistics};

/// Locks `m`, ignoring poisoning: a panic elsewhere never wedges the pool.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
