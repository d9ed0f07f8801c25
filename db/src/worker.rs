//! The connection threads: each owns one connection in its thread state,
//! opened there (eagerly or on first use), used only there and closed there
//! when the thread leaves its work loop.
//!
//! # A job's life
//!
//! A job is a [`JobState`] (id and an atomic state) plus the closure. The
//! worker attaches the job to its connection's [`ConnGuard`], then moves it
//! Queued → Running (a job already Cancelled is skipped: it never runs).
//! After the closure returns, the worker detaches the job from the guard
//! *before* anything else, then moves it Running → Committing; failing that
//! CAS means it was cancelled, and it is rolled back.
//!
//! # Invariants
//!
//! - The cancel flag and the interrupt handle are used only under the
//!   guard's lock and only while the guard names the cancelled job, and the
//!   worker clears both under the same lock before any later statement: a
//!   cancel can never reach the next job on the connection.
//! - Commit runs only after Running → Committing succeeded, so a job that
//!   was cancelled while running is never committed.
//! - Every failure path rolls back (a no-op when nothing is open), a
//!   failed `begin` included (a driver's `BEGIN` may fail half-way, with
//!   the transaction already open); the original error is returned and a
//!   failed rollback is logged.

use std::any::Any;
use std::cell::RefCell;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use weft::threads::{ThreadWorker, WorkQueue};

use crate::connector::{Connector, Interrupter, Role};
use crate::error::{DbError, DriverError, ErrorKind};
use crate::lock;
use crate::stats::{Group, Outcome, Stats};

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const COMMITTING: u8 = 2;
const DONE: u8 = 3;
const CANCELLED: u8 = 4;

/// How the pool brackets a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `begin`, the closure, then `commit` (Twisted's `runInteraction`).
    Transaction,
    /// The closure manages transactions itself; whatever it left open is
    /// committed on success (Twisted's `runWithConnection`).
    Connection,
    /// Autocommit reads; anything left open is rolled back.
    Read,
}

/// What the worker threads share with the loop side.
pub(crate) struct Shared<C: Connector> {
    pub(crate) connector: C,
    pub(crate) good_sql: String,
    pub(crate) reconnect: bool,
    /// Set by `close` under `QueuedWork::Cancel`: jobs not yet started are
    /// cancelled instead of run.
    pub(crate) discard_queued: AtomicBool,
    pub(crate) name: String,
    pub(crate) stats: Stats,
    /// The next job id: ids are unique across every loop that submits, so
    /// a cancel can only ever name its own job on a connection.
    pub(crate) next_id: AtomicU64,
    /// Whether the pool has a writer thread (routing before start).
    pub(crate) single_writer: bool,
    /// The configured connection count (routing before start).
    pub(crate) max: usize,
    /// `SharedPool` jobs of a running loop are handed over once per turn
    /// (`PoolBuilder::hand_over_per_turn`, `shared.rs`).
    pub(crate) per_turn: bool,
    /// `PoolBuilder::on_thread_start`: run first on each connection thread.
    pub(crate) on_thread_start: Option<ThreadStart>,
    /// What submitters on other loops see: the pool's state, its threads
    /// and the jobs waiting for it to start (`shared/gate.rs`).
    pub(crate) gate: Mutex<crate::shared::Gate>,
}

/// A hook run first on each connection thread (`PoolBuilder::on_thread_start`).
pub(crate) type ThreadStart = Arc<dyn Fn(Group) + Send + Sync>;

/// One job's cancel state.
pub(crate) struct JobState {
    id: u64,
    state: AtomicU8,
    /// The connection it runs on, while it runs.
    on: Mutex<Option<Arc<ConnGuard>>>,
    /// The group whose statistics count it (`Group::index`); changed only
    /// on the loop, before the job is handed to a thread.
    group: AtomicU8,
    /// When it was submitted, if the pool times jobs.
    queued_at: Option<Instant>,
}

impl JobState {
    pub(crate) fn new(id: u64, group: Group, queued_at: Option<Instant>) -> Arc<Self> {
        Arc::new(JobState {
            id,
            state: AtomicU8::new(QUEUED),
            on: Mutex::new(None),
            group: AtomicU8::new(group.index() as u8),
            queued_at,
        })
    }

    fn group(&self) -> Group {
        Group::from_index(self.group.load(Ordering::Relaxed))
    }

    /// Moves a job still queued (on the loop, before its hand-off) to the
    /// group that will serve it.
    pub(crate) fn regroup(&self, to: Group, stats: &Stats) {
        let from = self.group();
        if from != to && self.state.load(Ordering::Acquire) == QUEUED {
            self.group.store(to.index() as u8, Ordering::Relaxed);
            stats.moved(from, to);
        }
    }

    fn cas(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The `Deferred`'s canceller: a queued job will be skipped; a running
    /// one is interrupted (guarded) and rolled back by its worker.
    pub(crate) fn cancel(&self, stats: &Stats) {
        if self.cas(QUEUED, CANCELLED) {
            stats.withdrawn(self.group());
            return;
        }
        if !self.cas(RUNNING, CANCELLED) {
            return;
        }
        let guard = lock(&self.on).clone();
        if let Some(guard) = guard {
            let current = lock(&guard.current);
            if current.job == self.id {
                guard.cancelled.store(true, Ordering::Release);
                if let Some(interrupt) = &current.interrupter {
                    interrupt();
                }
            }
        }
    }
}

struct Current {
    /// The running job's id; 0 when none.
    job: u64,
    interrupter: Option<Interrupter>,
}

/// Per connection: which job runs, and how to stop it.
pub(crate) struct ConnGuard {
    current: Mutex<Current>,
    cancelled: Arc<AtomicBool>,
}

impl ConnGuard {
    fn attach(&self, job: u64) {
        let mut current = lock(&self.current);
        current.job = job;
        self.cancelled.store(false, Ordering::Release);
    }

    fn detach(&self) {
        let mut current = lock(&self.current);
        current.job = 0;
        self.cancelled.store(false, Ordering::Release);
    }
}

struct ConnState<C: Connector> {
    conn: Option<C::Connection>,
    guard: Arc<ConnGuard>,
    role: Role,
    group: Group,
}

/// A job as handed to its thread: whoever drops it while the job is still
/// Queued (the job never reached `run_job`) counts it refused.
pub(crate) struct Ticket<C: Connector> {
    pub(crate) shared: Arc<Shared<C>>,
    pub(crate) job: Arc<JobState>,
}

impl<C: Connector> Drop for Ticket<C> {
    fn drop(&mut self) {
        if self.job.cas(QUEUED, CANCELLED) {
            self.shared.stats.dropped(self.job.group());
        }
    }
}

thread_local! {
    /// This thread's `ConnState<C>`, for the one connector type it serves.
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

fn with_state<C: Connector, R>(f: impl FnOnce(&mut ConnState<C>) -> R) -> Option<R> {
    STATE.with_borrow_mut(|slot| {
        slot.as_mut()
            .and_then(|b| b.downcast_mut::<ConnState<C>>())
            .map(f)
    })
}

/// Spawns a connection thread as a [`ThreadWorker`] over `queue`: the
/// thread sets up its state, opens at once if `eager`, runs the worker loop,
/// then closes its connection and reports on `exited`.
pub(crate) fn spawn_worker<C: Connector, Q: WorkQueue>(
    shared: &Arc<Shared<C>>,
    role: Role,
    group: Group,
    thread_name: String,
    eager: bool,
    queue: Q,
    exited: mpsc::Sender<()>,
) -> io::Result<ThreadWorker<Q>> {
    let shared = shared.clone();
    let counted = shared.clone();
    let builder = std::thread::Builder::new().name(thread_name);
    // Counted before the spawn, so the thread's exit can never come first.
    counted.stats.group(group).thread_started();
    let worker = ThreadWorker::with_parts(queue, move |body| {
        builder
            .spawn(move || {
                if let Some(f) = &shared.on_thread_start {
                    // Caught: the thread must still serve and report its
                    // exit, or jobs queued for it and the close would wait.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(group)));
                    if r.is_err() {
                        tracing::error!(pool = %shared.name, "weft-db: the thread-start hook panicked; the thread serves anyway");
                    }
                }
                let guard = Arc::new(ConnGuard {
                    current: Mutex::new(Current {
                        job: 0,
                        interrupter: None,
                    }),
                    cancelled: Arc::new(AtomicBool::new(false)),
                });
                let state = ConnState::<C> {
                    conn: None,
                    guard,
                    role,
                    group,
                };
                STATE.with_borrow_mut(|slot| *slot = Some(Box::new(state)));
                if eager {
                    with_state::<C, _>(|st| {
                        if let Err(e) = ensure_open(&shared, st) {
                            tracing::warn!(pool = %shared.name, error = %e, "weft-db: eager open failed; retrying on first use");
                        }
                    });
                }
                body();
                with_state::<C, _>(|st| drop_connection(&shared, st));
                STATE.with_borrow_mut(|slot| *slot = None);
                shared.stats.group(group).thread_exited();
                let _ = exited.send(());
            })
            .map(drop)
    });
    if worker.is_err() {
        counted.stats.group(group).thread_exited();
    }
    worker
}

fn ensure_open<'a, C: Connector>(
    shared: &Shared<C>,
    st: &'a mut ConnState<C>,
) -> Result<&'a mut C::Connection, DbError<C::Error>> {
    if st.conn.is_none() {
        let mut conn = shared
            .connector
            .open(st.role)
            .map_err(|source| DbError::Open { source })?;
        let interrupter = shared
            .connector
            .install_cancel(&mut conn, st.guard.cancelled.clone());
        lock(&st.guard.current).interrupter = interrupter;
        shared.stats.group(st.group).opened();
        tracing::debug!(pool = %shared.name, role = ?st.role, "weft-db: connected");
        st.conn = Some(conn);
    }
    Ok(st.conn.as_mut().expect("opened just above"))
}

/// Closes this thread's connection, on this thread; logs a failure.
fn drop_connection<C: Connector>(shared: &Shared<C>, st: &mut ConnState<C>) {
    lock(&st.guard.current).interrupter = None;
    if let Some(conn) = st.conn.take() {
        shared.stats.group(st.group).closed();
        tracing::debug!(pool = %shared.name, role = ?st.role, "weft-db: closing connection");
        if let Err(e) = shared.connector.close(conn) {
            tracing::error!(pool = %shared.name, error = %e, "weft-db: connection close failed");
        }
    }
}

/// Runs one job on this thread's connection (the worker side of every
/// operation).
pub(crate) fn run_job<C, T, W>(
    ticket: &Ticket<C>,
    mode: Mode,
    work: W,
) -> Result<T, DbError<C::Error>>
where
    C: Connector,
    W: FnOnce(&mut C::Connection) -> Result<T, DbError<C::Error>>,
{
    let (shared, job) = (&*ticket.shared, &*ticket.job);
    if shared.discard_queued.load(Ordering::Acquire) && job.cas(QUEUED, CANCELLED) {
        shared.stats.withdrawn(job.group());
    }
    with_state::<C, _>(|st| {
        let guard = st.guard.clone();
        guard.attach(job.id);
        *lock(&job.on) = Some(guard.clone());
        let result = if job.cas(QUEUED, RUNNING) {
            let mut running = shared.stats.start(job.group(), job.queued_at);
            let result = run_started(shared, st, job, mode, work);
            running.outcome = match &result {
                Ok(_) => Outcome::Succeeded,
                Err(DbError::Cancelled) => Outcome::Interrupted,
                Err(DbError::Panicked { .. }) => Outcome::Panicked,
                Err(_) => Outcome::Failed,
            };
            result
        } else {
            Err(DbError::Cancelled)
        };
        guard.detach();
        *lock(&job.on) = None;
        result
    })
    .unwrap_or(Err(DbError::Stopped))
}

fn run_started<C, T, W>(
    shared: &Shared<C>,
    st: &mut ConnState<C>,
    job: &JobState,
    mode: Mode,
    work: W,
) -> Result<T, DbError<C::Error>>
where
    C: Connector,
    W: FnOnce(&mut C::Connection) -> Result<T, DbError<C::Error>>,
{
    let role = st.role;
    let connector = &shared.connector;
    let conn = ensure_open(shared, st)?;
    if mode == Mode::Transaction
        && let Err(e) = connector.begin(conn, role)
    {
        // Twisted's `Transaction.reopen`: a lost connection is reopened and
        // the start retried once.
        if !(shared.reconnect && e.kind() == ErrorKind::ConnectionLost) {
            // A start that failed half-way (the driver opened the
            // transaction, then failed) must not leave it open for the next
            // job on this connection.
            if let Err(r) = connector.rollback(conn) {
                tracing::warn!(pool = %shared.name, error = %r, original = %e, "weft-db: rollback after a failed begin failed");
            }
            return Err(e.into());
        }
        tracing::warn!(pool = %shared.name, error = %e, "weft-db: connection lost, reconnecting");
        drop_connection(shared, st);
        let conn = ensure_open(shared, st)?;
        connector.begin(conn, role)?;
    }
    let conn = st.conn.as_mut().expect("open");
    let outcome = catch_unwind(AssertUnwindSafe(|| work(conn)));
    // No cancel may reach this connection from here on.
    st.guard.detach();
    let cancelled = !job.cas(RUNNING, COMMITTING);
    let result = match outcome {
        Ok(Ok(value)) if !cancelled => {
            let conn = st.conn.as_mut().expect("open");
            let end = match mode {
                Mode::Transaction | Mode::Connection => connector.commit(conn),
                Mode::Read => connector.rollback(conn),
            };
            match end {
                Ok(()) => Ok(value),
                Err(e) => {
                    let err = DbError::from(e);
                    after_failure(shared, st, &err);
                    Err(err)
                }
            }
        }
        Ok(Ok(_)) => {
            after_failure(shared, st, &DbError::Cancelled);
            Err(DbError::Cancelled)
        }
        Ok(Err(err)) => {
            after_failure(shared, st, &err);
            if cancelled {
                Err(DbError::Cancelled)
            } else {
                Err(err)
            }
        }
        Err(payload) => {
            let err = DbError::Panicked {
                message: panic_message(&*payload),
            };
            after_failure(shared, st, &err);
            if cancelled {
                Err(DbError::Cancelled)
            } else {
                Err(err)
            }
        }
    };
    job.state
        .store(if cancelled { CANCELLED } else { DONE }, Ordering::Release);
    result
}

/// Rolls back after a failed job (the original error stays the caller's).
/// A failed rollback is logged; with reconnect on, the probe then decides
/// whether the connection is kept. A lost connection is dropped, to be
/// reopened on next use.
fn after_failure<C: Connector>(
    shared: &Shared<C>,
    st: &mut ConnState<C>,
    original: &DbError<C::Error>,
) {
    let Some(conn) = st.conn.as_mut() else { return };
    let mut drop_it = original.kind() == Some(ErrorKind::ConnectionLost) && shared.reconnect;
    if let Err(e) = shared.connector.rollback(conn) {
        tracing::error!(pool = %shared.name, error = %e, original = %original, "weft-db: rollback failed");
        if shared.reconnect
            && let Err(probe) = shared.connector.probe(conn, &shared.good_sql)
        {
            tracing::warn!(pool = %shared.name, error = %probe, "weft-db: probe failed; connection lost, reopening on next use");
            drop_it = true;
        }
    }
    if drop_it {
        drop_connection(shared, st);
    }
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}
