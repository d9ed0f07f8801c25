//! How the twin reaches SQLite: three ways tokio users write it, behind one
//! `Store::run(closure)` so the handlers are the same for every variant.
//!
//! - [`Variant::ThreadLocal`]: `spawn_blocking` per request; each blocking
//!   thread opens its own connection on first use and keeps it in a
//!   `thread_local!` (it closes when tokio retires the thread). With the
//!   default blocking pool there can be as many connections as requests in
//!   flight; writers then queue on SQLite's lock through the busy timeout.
//! - [`Variant::Mutex`]: one `Arc<Mutex<Connection>>`, locked inside
//!   `spawn_blocking` (the "one to beat" when capped at 1 thread).
//! - [`Variant::Deadpool`]: a `deadpool` managed pool of
//!   `deadpool_sync::SyncWrapper<Connection>`, i.e. what `deadpool-sqlite`
//!   is. `deadpool-sqlite` itself cannot be used: its published versions
//!   (0.13, 0.14) need rusqlite 0.38/0.40, whose `libsqlite3-sys` cannot link
//!   next to the workspace's rusqlite 0.43 (`links = "sqlite3"`). [`Manager`]
//!   does what `deadpool-sqlite` 0.14's manager does, including its recycle
//!   check (one `SELECT` round trip through `interact` per checkout).
//!
//! Every connection gets weft-db's `SqliteConnector` writer settings (WAL,
//! `synchronous=NORMAL`, 5 s busy timeout, foreign keys on, a 64-statement
//! cache); the file is switched to WAL and the schema (weft-kv's own
//! `SCHEMA`) created once, before serving.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use deadpool::Runtime;
use deadpool::managed::{self, Metrics, Pool, PoolConfig, RecycleError, RecycleResult};
use deadpool_sync::SyncWrapper;
use rusqlite::Connection;

/// Which way the twin reaches SQLite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    ThreadLocal,
    Mutex,
    Deadpool,
}

impl Variant {
    pub(crate) fn parse(s: &str) -> Option<Variant> {
        match s {
            "thread-local" => Some(Variant::ThreadLocal),
            "mutex" => Some(Variant::Mutex),
            "deadpool" => Some(Variant::Deadpool),
            _ => None,
        }
    }
}

/// Opens a connection with weft-db's writer settings (the file is already
/// in WAL mode: see [`init`]). rusqlite's default open flags are weft-db's
/// (read-write, create, URI, no mutex).
pub(crate) fn open(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(5))?;
    c.set_prepared_statement_cache_capacity(64);
    c.pragma_update(None, "foreign_keys", true)?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(c)
}

/// Switches the file to WAL and creates weft-kv's table, once, before any
/// other connection exists (the switch needs an exclusive lock).
pub(crate) fn init(path: &Path) -> rusqlite::Result<Connection> {
    let c = open(path)?;
    let mode: String = c.query_row("pragma journal_mode = wal", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        eprintln!("kv-tokio: SQLite refused WAL mode ({mode})");
    }
    c.execute_batch(weft_kv::routes::SCHEMA)?;
    Ok(c)
}

thread_local! {
    /// This blocking thread's connection and the file it is for.
    static THREAD_CONN: RefCell<Option<(PathBuf, Connection)>> = const { RefCell::new(None) };
}

/// `deadpool-sqlite`'s manager, over the workspace's rusqlite.
#[derive(Debug)]
pub(crate) struct Manager {
    path: PathBuf,
    recycle_count: AtomicIsize,
}

impl managed::Manager for Manager {
    type Type = SyncWrapper<Connection>;
    type Error = rusqlite::Error;

    async fn create(&self) -> Result<Self::Type, Self::Error> {
        let path = self.path.clone();
        SyncWrapper::new(Runtime::Tokio1, move || open(&path)).await
    }

    async fn recycle(&self, conn: &mut Self::Type, _: &Metrics) -> RecycleResult<Self::Error> {
        if conn.is_mutex_poisoned() {
            return Err(RecycleError::message("connection mutex poisoned"));
        }
        let n = self.recycle_count.fetch_add(1, Ordering::Relaxed);
        let got: isize = conn
            .interact(move |c| c.query_row("SELECT ?1", [n], |r| r.get(0)))
            .await
            .map_err(|e| RecycleError::message(e.to_string()))??;
        if got == n {
            Ok(())
        } else {
            Err(RecycleError::message("recycle check mismatch"))
        }
    }
}

/// The connection source shared by every handler.
#[derive(Clone)]
pub(crate) enum Store {
    ThreadLocal(Arc<PathBuf>),
    Mutex(Arc<Mutex<Connection>>),
    Deadpool(Pool<Manager>),
}

/// Why a store call failed (all answered 500, as weft-kv does).
#[derive(Debug)]
pub(crate) enum StoreError {
    Sql(rusqlite::Error),
    Pool(String),
    Panicked,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Sql(e) => write!(f, "sqlite: {e}"),
            StoreError::Pool(e) => write!(f, "pool: {e}"),
            StoreError::Panicked => f.write_str("the blocking call panicked"),
        }
    }
}

impl IntoResponse for StoreError {
    fn into_response(self) -> Response {
        eprintln!("kv-tokio: database error: {self}");
        (StatusCode::INTERNAL_SERVER_ERROR, "database error\n").into_response()
    }
}

impl Store {
    /// Builds the store for `variant` over the (initialised) file at `path`;
    /// `pool_size` is the deadpool's size (`None`: deadpool's default).
    pub(crate) fn new(
        variant: Variant,
        path: &Path,
        first: Connection,
        pool_size: Option<usize>,
    ) -> Result<Store, String> {
        Ok(match variant {
            Variant::ThreadLocal => Store::ThreadLocal(Arc::new(path.to_owned())),
            Variant::Mutex => Store::Mutex(Arc::new(Mutex::new(first))),
            Variant::Deadpool => {
                let manager = Manager {
                    path: path.to_owned(),
                    recycle_count: AtomicIsize::new(0),
                };
                let config = pool_size.map(PoolConfig::new).unwrap_or_default();
                Store::Deadpool(
                    Pool::builder(manager)
                        .config(config)
                        .runtime(Runtime::Tokio1)
                        .build()
                        .map_err(|e| e.to_string())?,
                )
            }
        })
    }

    /// Runs `f` with a connection on tokio's blocking pool.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        match self {
            Store::ThreadLocal(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    THREAD_CONN.with(|cell| {
                        let mut slot = cell.borrow_mut();
                        if slot.as_ref().is_none_or(|(p, _)| p != &*path) {
                            *slot = Some((path.to_path_buf(), open(&path)?));
                        }
                        match slot.as_mut() {
                            Some((_, c)) => f(c),
                            None => unreachable!("just opened"),
                        }
                    })
                })
                .await
                .map_err(|_| StoreError::Panicked)?
                .map_err(StoreError::Sql)
            }
            Store::Mutex(db) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || {
                    let mut c = db.lock().unwrap_or_else(PoisonError::into_inner);
                    f(&mut c)
                })
                .await
                .map_err(|_| StoreError::Panicked)?
                .map_err(StoreError::Sql)
            }
            Store::Deadpool(pool) => {
                let conn = pool
                    .get()
                    .await
                    .map_err(|e| StoreError::Pool(e.to_string()))?;
                conn.interact(f)
                    .await
                    .map_err(|_| StoreError::Panicked)?
                    .map_err(StoreError::Sql)
            }
        }
    }
}
