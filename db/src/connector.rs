//! The connector trait: how the pool opens, probes, closes and brackets
//! transactions on one blocking driver's connections (SQLite's is in
//! `sqlite`).
//!
//! Invariant: every method is called on the thread that owns the
//! connection; a connection is opened, used and closed on one thread and
//! never moved (so `Connection` need not be `Send`).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::error::DriverError;

/// What a connection is for.
///
/// # Examples
///
/// ```
/// assert_ne!(weft_db::Role::Writer, weft_db::Role::Reader);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs writes (and reads when there is no reader); transactions take
    /// the write lock up front (SQLite: `BEGIN IMMEDIATE`).
    Writer,
    /// Runs reads only, in autocommit (SQLite: `PRAGMA query_only`).
    Reader,
}

/// Interrupts whatever statement runs on one connection; callable from any
/// thread. The pool calls it only while the job it means to stop is the one
/// running (see the crate docs).
///
/// # Examples
///
/// ```
/// let conn = rusqlite::Connection::open_in_memory().unwrap();
/// let handle = conn.get_interrupt_handle();
/// let interrupter: weft_db::Interrupter = std::sync::Arc::new(move || handle.interrupt());
/// interrupter(); // nothing is running: a no-op
/// ```
pub type Interrupter = Arc<dyn Fn() + Send + Sync>;

/// A blocking database driver, as the pool needs it.
///
/// The core is `open`, `probe` and `close`; `begin`, `commit` and
/// `rollback` bracket transactions, and `interrupter` (optional) lets a
/// running job be cancelled. All are called on the connection's own thread.
///
/// # Examples
///
/// A driver double that counts opens:
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use weft_db::{Connector, Role};
///
/// struct Counting(AtomicUsize);
/// impl Connector for Counting {
///     type Connection = rusqlite::Connection;
///     type Error = rusqlite::Error;
///     fn open(&self, _role: Role) -> rusqlite::Result<rusqlite::Connection> {
///         self.0.fetch_add(1, Ordering::SeqCst);
///         rusqlite::Connection::open_in_memory()
///     }
///     fn probe(&self, c: &mut rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
///         c.execute_batch(sql)
///     }
///     fn close(&self, c: rusqlite::Connection) -> rusqlite::Result<()> {
///         c.close().map_err(|(_, e)| e)
///     }
///     fn begin(&self, c: &mut rusqlite::Connection, _: Role) -> rusqlite::Result<()> {
///         c.execute_batch("BEGIN")
///     }
///     fn commit(&self, c: &mut rusqlite::Connection) -> rusqlite::Result<()> {
///         c.execute_batch("COMMIT")
///     }
///     fn rollback(&self, c: &mut rusqlite::Connection) -> rusqlite::Result<()> {
///         if c.is_autocommit() { Ok(()) } else { c.execute_batch("ROLLBACK") }
///     }
/// }
/// let connector = Counting(AtomicUsize::new(0));
/// let mut c = connector.open(Role::Writer).unwrap();
/// connector.probe(&mut c, "select 1").unwrap();
/// assert_eq!(connector.0.load(Ordering::SeqCst), 1);
/// ```
pub trait Connector: Send + Sync + 'static {
    /// The driver's connection; it never leaves the thread that opened it.
    type Connection: 'static;
    /// The driver's error type.
    type Error: DriverError;

    /// Opens a connection for `role` (Twisted's `dbapi.connect` plus
    /// `cp_openfun`).
    ///
    /// # Errors
    ///
    /// The driver's error; the pool reports it as [`DbError::Open`](crate::DbError::Open)
    /// and retries on the next job.
    fn open(&self, role: Role) -> Result<Self::Connection, Self::Error>;

    /// Runs `good_sql`, which must succeed and change nothing, to check that
    /// `conn` still works (Twisted's `cp_good_sql`).
    ///
    /// # Errors
    ///
    /// The driver's error: the connection is dropped and reopened.
    fn probe(&self, conn: &mut Self::Connection, good_sql: &str) -> Result<(), Self::Error>;

    /// Closes `conn`.
    ///
    /// # Errors
    ///
    /// The driver's error; the pool logs it and goes on.
    fn close(&self, conn: Self::Connection) -> Result<(), Self::Error>;

    /// Starts a transaction for a job on a connection of `role`.
    ///
    /// # Errors
    ///
    /// The driver's error.
    fn begin(&self, conn: &mut Self::Connection, role: Role) -> Result<(), Self::Error>;

    /// Commits the open transaction; must succeed harmlessly when none is
    /// open.
    ///
    /// # Errors
    ///
    /// The driver's error; the pool then rolls back.
    fn commit(&self, conn: &mut Self::Connection) -> Result<(), Self::Error>;

    /// Rolls back the open transaction; must succeed harmlessly when none is
    /// open.
    ///
    /// # Errors
    ///
    /// The driver's error; the pool logs it ("rollback failed").
    fn rollback(&self, conn: &mut Self::Connection) -> Result<(), Self::Error>;

    /// Arranges for statements on `conn` to fail while `cancelled` is set,
    /// and returns a handle that interrupts a running statement at once, if
    /// the driver has one. Called once per new connection. Without it,
    /// cancelling a running job only discards its result.
    ///
    /// The pool sets `cancelled` only while the job being cancelled is the
    /// one running on `conn`, and clears it before the next job starts.
    fn install_cancel(
        &self,
        conn: &mut Self::Connection,
        cancelled: Arc<AtomicBool>,
    ) -> Option<Interrupter> {
        let _ = (conn, cancelled);
        None
    }

    /// The most connections this database supports (`Some(1)` for a
    /// private in-memory database). `None` means no limit.
    fn max_connections(&self) -> Option<usize> {
        None
    }
}
