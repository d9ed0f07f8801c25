//! [`SqliteConnector`]: SQLite through rusqlite, with the pool's defaults
//! (WAL, `synchronous=NORMAL` on writers, read-only readers, a busy
//! timeout, a statement cache) and cancellation through a progress handler
//! plus rusqlite's interrupt handle.
//!
//! # Invariants
//!
//! - The switch to WAL happens once per connector, on the first
//!   connection, before any other connection of the connector opens (it
//!   needs an exclusive lock).
//! - Every method runs on the connection's own thread (the pool's rule).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::checkpoint::{CheckpointStatistics, Checkpoints, Hub};
use crate::connector::{Connector, Interrupter, Role};

/// `PRAGMA synchronous` for the writer.
///
/// # Examples
///
/// ```
/// let c = weft_db::SqliteConnector::new("app.db").synchronous(weft_db::Synchronous::Full);
/// # drop(c);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Synchronous {
    /// `OFF`: no syncs at all.
    Off,
    /// `NORMAL`: in WAL mode, consistent, and durable except across power
    /// loss (the default here).
    Normal,
    /// `FULL`: a sync per commit.
    Full,
}

/// VM steps between two cancel checks (overhead within noise, spec §2.7).
const PROGRESS_OPS: std::ffi::c_int = 1000;

type OpenHook = Arc<dyn Fn(&Connection, Role) -> rusqlite::Result<()> + Send + Sync>;

/// SQLite through rusqlite: WAL, a busy timeout, a statement cache and
/// read-only readers by default.
///
/// Every connection gets `busy_timeout`, `foreign_keys` and the statement
/// cache capacity. The first connection opened switches the file to WAL
/// (it needs an exclusive lock, so it happens once, before any other
/// connection opens). Writers get `synchronous`; readers get
/// `query_only = 1`, so a stray write fails fast with
/// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly). Then the
/// [`on_open`](SqliteConnector::on_open) hook runs.
///
/// # Examples
///
/// ```
/// use weft_db::{Connector, Role, SqliteConnector};
///
/// let dir = tempfile::tempdir().unwrap();
/// let connector = SqliteConnector::new(dir.path().join("app.db"));
/// let mut w = connector.open(Role::Writer).unwrap();
/// let mode: String = w.query_row("pragma journal_mode", [], |r| r.get(0)).unwrap();
/// assert_eq!(mode, "wal");
/// connector.probe(&mut w, "select 1").unwrap();
/// connector.close(w).unwrap();
/// ```
#[derive(Clone)]
pub struct SqliteConnector {
    path: String,
    wal: bool,
    busy_timeout: Duration,
    synchronous: Synchronous,
    foreign_keys: bool,
    cache_capacity: usize,
    read_only_readers: bool,
    on_open: Option<OpenHook>,
    wal_done: Arc<std::sync::Mutex<()>>,
    wal_set: Arc<AtomicBool>,
    checkpoints: Checkpoints,
    hub: Arc<Hub>,
}

impl std::fmt::Debug for SqliteConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteConnector")
            .field("path", &self.path)
            .field("wal", &self.wal)
            .field("busy_timeout", &self.busy_timeout)
            .field("synchronous", &self.synchronous)
            .field("foreign_keys", &self.foreign_keys)
            .field("cache_capacity", &self.cache_capacity)
            .field("checkpoints", &self.checkpoints)
            .finish_non_exhaustive()
    }
}

impl SqliteConnector {
    /// A connector for the database file at `path` (or `":memory:"`, which
    /// allows one connection).
    ///
    /// # Examples
    ///
    /// ```
    /// let c = weft_db::SqliteConnector::new(":memory:");
    /// # drop(c);
    /// ```
    pub fn new(path: impl AsRef<std::path::Path>) -> Self {
        SqliteConnector {
            path: path.as_ref().to_string_lossy().into_owned(),
            wal: true,
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Normal,
            foreign_keys: true,
            cache_capacity: 64,
            read_only_readers: true,
            on_open: None,
            wal_done: Arc::new(std::sync::Mutex::new(())),
            wal_set: Arc::new(AtomicBool::new(false)),
            checkpoints: Checkpoints::default(),
            hub: Arc::new(Hub::default()),
        }
    }

    /// Whether to switch the file to WAL (default `true`). With `false` the
    /// journal mode is left as the file has it; in rollback-journal mode a
    /// reader blocks the writer's commit, so also consider
    /// [`single_writer(false)`](crate::PoolBuilder::single_writer) or fewer
    /// readers.
    ///
    /// # Examples
    ///
    /// ```
    /// let c = weft_db::SqliteConnector::new("app.db").wal(false);
    /// # drop(c);
    /// ```
    pub fn wal(mut self, on: bool) -> Self {
        self.wal = on;
        self
    }

    /// How long a statement waits for a lock held by another connection or
    /// process (default 5 s).
    ///
    /// # Examples
    ///
    /// ```
    /// let c = weft_db::SqliteConnector::new("app.db").busy_timeout(std::time::Duration::from_secs(1));
    /// # drop(c);
    /// ```
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The writer's `PRAGMA synchronous` (default [`Synchronous::Normal`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let c = weft_db::SqliteConnector::new("app.db").synchronous(weft_db::Synchronous::Full);
    /// # drop(c);
    /// ```
    pub fn synchronous(mut self, mode: Synchronous) -> Self {
        self.synchronous = mode;
        self
    }

    /// `PRAGMA foreign_keys`, set explicitly on every connection (default
    /// `true`; the bundled and system SQLite builds disagree on it).
    ///
    /// # Examples
    ///
    /// ```
    /// let c = weft_db::SqliteConnector::new("app.db").foreign_keys(false);
    /// # drop(c);
    /// ```
    pub fn foreign_keys(mut self, on: bool) -> Self {
        self.foreign_keys = on;
        self
    }

    /// The per-connection prepared-statement cache capacity used by
    /// `prepare_cached` (default 64).
    ///
    /// # Examples
    ///
    /// ```
    /// let c = weft_db::SqliteConnector::new("app.db").statement_cache_capacity(128);
    /// # drop(c);
    /// ```
    pub fn statement_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Whether readers get `PRAGMA query_only = 1` (default `true`).
    ///
    /// # Examples
    ///
    /// ```
    /// let c = weft_db::SqliteConnector::new("app.db").read_only_readers(false);
    /// # drop(c);
    /// ```
    pub fn read_only_readers(mut self, on: bool) -> Self {
        self.read_only_readers = on;
        self
    }

    /// Runs `hook` on every new connection, on its own thread, after the
    /// built-in pragmas (Twisted's `cp_openfun`).
    ///
    /// # Examples
    ///
    /// ```
    /// let c = weft_db::SqliteConnector::new("app.db")
    ///     .on_open(|conn, _role| conn.execute_batch("pragma cache_size = -8000"));
    /// # drop(c);
    /// ```
    pub fn on_open(
        mut self,
        hook: impl Fn(&Connection, Role) -> rusqlite::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_open = Some(Arc::new(hook));
        self
    }

    /// When the WAL is checkpointed (default
    /// [`Checkpoints::OnCommit`]` { pages: 1000 }`, SQLite's own automatic
    /// checkpoint, set explicitly on every connection). Choose
    /// [`Checkpoints::background()`] when the time of the commit that
    /// triggers a checkpoint matters: with 1000 pages that commit copies
    /// about 4 MB back into the database file and, unless
    /// [`Synchronous::Off`], syncs it, while every job queued on the writer
    /// waits. Applies to file databases in WAL mode; the hook is installed
    /// on every connection before [`on_open`](SqliteConnector::on_open)
    /// runs (a `wal_autocheckpoint` set there replaces it).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft_db::{Checkpoints, ConnectionPool, DbError, SqliteConnector};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let connector = SqliteConnector::new(dir.path().join("app.db"))
    ///     .checkpoints(Checkpoints::Background { pages: 1, limit: 0 });
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = ConnectionPool::new(&reactor.handle(), connector).unwrap();
    /// let p = pool.clone();
    /// let auto = reactor.run_until_complete(async move {
    ///     p.run_operation("create table t (x)", []).await?;
    ///     // The commit only woke the checkpointer thread.
    ///     let auto = p
    ///         .run_with_connection(|c| Ok::<i64, DbError>(c.query_row("pragma wal_autocheckpoint", [], |r| r.get(0))?))
    ///         .await?;
    ///     p.close().await.ok();
    ///     Ok::<_, DbError>(auto)
    /// });
    /// assert_eq!(auto.unwrap().unwrap(), 0);
    /// ```
    pub fn checkpoints(mut self, mode: Checkpoints) -> Self {
        self.checkpoints = mode;
        self
    }

    /// What [`Checkpoints::Background`] did so far (all zero under
    /// `OnCommit`).
    ///
    /// # Examples
    ///
    /// ```
    /// let c = weft_db::SqliteConnector::new("app.db");
    /// assert_eq!(c.checkpoint_statistics(), weft_db::CheckpointStatistics::default());
    /// ```
    pub fn checkpoint_statistics(&self) -> CheckpointStatistics {
        self.hub.statistics()
    }

    fn synchronous_pragma(&self) -> &'static str {
        match self.synchronous {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }

    fn is_memory(&self) -> bool {
        self.path == ":memory:" || self.path.is_empty()
    }
}

/// Runs one of the transaction statements (`BEGIN`, `COMMIT`, `ROLLBACK`)
/// through the statement cache, with its VM step count reset first.
///
/// SQLite calls the progress handler (a job's cancel check, see
/// `install_cancel`) by a statement's step count summed over all its runs,
/// so a cached statement of a few steps would sooner or later reach the
/// handler mid-run: a cancel flag still set could then interrupt a `BEGIN`
/// half-done (leaving a transaction open for the next job) or a `COMMIT`.
/// With the count reset, these few-step statements never reach it, as a
/// freshly prepared one never does.
pub(crate) fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(sql)?;
    stmt.reset_status(rusqlite::StatementStatus::VmStep);
    stmt.execute([]).map(drop)
}

impl Connector for SqliteConnector {
    type Connection = Connection;
    type Error = rusqlite::Error;

    fn open(&self, role: Role) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(self.cache_capacity);
        conn.pragma_update(None, "foreign_keys", self.foreign_keys)?;
        if self.wal && !self.is_memory() && !self.wal_set.load(Ordering::Acquire) {
            // Switching to WAL needs an exclusive lock: do it once, before
            // any other connection of this connector holds the file open.
            let _guard = crate::lock(&self.wal_done);
            if !self.wal_set.load(Ordering::Acquire) {
                let mode: String =
                    conn.query_row("pragma journal_mode = wal", [], |row| row.get(0))?;
                if !mode.eq_ignore_ascii_case("wal") {
                    tracing::warn!(mode, path = %self.path, "weft-db: SQLite refused WAL mode");
                }
                self.wal_set.store(true, Ordering::Release);
            }
        }
        match role {
            Role::Writer => {
                conn.pragma_update(None, "synchronous", self.synchronous_pragma())?;
            }
            Role::Reader => {
                if self.read_only_readers {
                    conn.pragma_update(None, "query_only", true)?;
                }
            }
        }
        if self.wal && !self.is_memory() {
            match self.checkpoints {
                Checkpoints::OnCommit { pages } => {
                    conn.pragma_update(None, "wal_autocheckpoint", pages)?;
                }
                Checkpoints::Background { pages, limit } => {
                    let sync = self.synchronous_pragma();
                    self.hub
                        .install(&mut conn, &self.path, sync, pages, limit)?;
                }
            }
        }
        if let Some(hook) = &self.on_open {
            hook(&conn, role)?;
        }
        Ok(conn)
    }

    fn probe(&self, conn: &mut Connection, good_sql: &str) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(good_sql)?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
        Ok(())
    }

    fn close(&self, mut conn: Connection) -> rusqlite::Result<()> {
        if matches!(self.checkpoints, Checkpoints::Background { .. }) {
            // Drops this connection's lease first: the last one stops and
            // joins the checkpointer, so its connection is closed before
            // this one (the last closer checkpoints and removes the WAL).
            type Hook = fn(&mut rusqlite::hooks::Wal, std::ffi::c_int) -> rusqlite::Result<()>;
            if let Err(e) = conn.wal_hook(None::<Hook>) {
                tracing::warn!(error = %e, "weft-db: could not remove the WAL hook");
            }
        }
        conn.close().map_err(|(_conn, e)| e)
    }

    fn begin(&self, conn: &mut Connection, role: Role) -> rusqlite::Result<()> {
        // The writer takes the write lock up front: a DEFERRED read-then-write
        // gets SQLITE_BUSY(_SNAPSHOT) at once, whatever the busy timeout.
        // Through the statement cache: `execute_batch` would parse the
        // statement again for every job (a prepare per write).
        let sql = match role {
            Role::Writer => "BEGIN IMMEDIATE",
            Role::Reader => "BEGIN",
        };
        run_cached(conn, sql)
    }

    fn commit(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        if conn.is_autocommit() {
            return Ok(());
        }
        run_cached(conn, "COMMIT")
    }

    fn rollback(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        // After an interrupt or some errors SQLite has already rolled back.
        if conn.is_autocommit() {
            return Ok(());
        }
        run_cached(conn, "ROLLBACK")
    }

    fn install_cancel(
        &self,
        conn: &mut Connection,
        cancelled: Arc<AtomicBool>,
    ) -> Option<Interrupter> {
        // The progress handler covers a cancel that lands between two
        // statements (where `sqlite3_interrupt` would be a no-op); the
        // interrupt handle stops a long step at once.
        if let Err(e) = conn.progress_handler(
            PROGRESS_OPS,
            Some(move || cancelled.load(Ordering::Acquire)),
        ) {
            tracing::warn!(error = %e, "weft-db: no progress handler; cancel is best effort");
        }
        let handle = conn.get_interrupt_handle();
        Some(Arc::new(move || handle.interrupt()))
    }

    fn max_connections(&self) -> Option<usize> {
        self.is_memory().then_some(1)
    }
}
