//! Group commit: [`SharedPool::write_in_group`]. The grouped writes a loop
//! submits in one turn, one after another, become one writer job that runs
//! them in one transaction, each in its own savepoint, and commits once.
//!
//! # How a group forms
//!
//! The first grouped write of a run makes a [`Batch`] (the writes, shared
//! with the writer thread) and submits ONE ordinary writer job for it
//! through `SharedPool::submit`; deferred for the turn's flush, that job
//! opens the group in the turn's list (`shared/turn.rs`, `open_group`). The next
//! grouped writes of the turn join the open group instead of submitting a
//! job: they are pushed to its batch, and their answers (loop-side, with
//! each caller's `Resolver`) to its `answers`, in the same order.
//!
//! # Invariants
//!
//! - A group is open only while its job is still in the turn's list and
//!   no writer job was queued after it (a job for the writer closes it), so
//!   joining keeps the writer's FIFO order: a grouped write runs after every
//!   writer job submitted before it and before every one submitted after.
//!   Reads that go to reader threads do not close it (they are not ordered
//!   with the writer anyway).
//! - The writer seals the batch (under its lock) before it runs it; a
//!   sealed batch takes no write and no withdrawal. A write is withdrawn
//!   (never run, answered `Cancelled`) only while unsealed.
//! - Every caller is answered from the group job's outcome, on its loop,
//!   after the job returned, so after the COMMIT: a write answered `Ok` is
//!   committed. If BEGIN, a savepoint step or the COMMIT fails, every write
//!   that had succeeded gets that error (a copy); a write that failed alone
//!   keeps its own error. If the job itself fails (refused, cancelled by the
//!   pool's close, the loop's result lost), every caller gets that error or
//!   `Cancelled` (a dropped `Resolver`): never a silent drop.
//! - A group runs at most [`GROUP_MAX`] writes; a group with one live write
//!   runs it in autocommit (its own transaction, like `run_with_connection`).
//! - In the pool's statistics a group is one writer job.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use weft::{Deferred, Resolver};

use crate::SharedPool;
use crate::error::{DbError, WithStatement};
use crate::lock;
use crate::pool::Route;
use crate::shared::{open_group, with_open_group};
use crate::sqlite::{SqliteConnector, run_cached};
use crate::worker::{Mode, panic_message};

/// The most writes one group commits together.
pub(crate) const GROUP_MAX: usize = 64;

const BEGIN: &str = "BEGIN IMMEDIATE";
const COMMIT: &str = "COMMIT";
const SAVEPOINT: &str = "SAVEPOINT weft_db_group";
const RELEASE: &str = "RELEASE weft_db_group";
const ROLLBACK_TO: &str = "ROLLBACK TO weft_db_group";

/// One grouped write, type-erased, with its outcome once run.
trait Write: Send {
    /// Runs the write if it is still pending and keeps its outcome;
    /// whether it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Neither run nor withdrawn.
    fn is_pending(&self) -> bool;
    /// Its own error, if it failed.
    fn error(&self) -> Option<&DbError>;
    /// Never runs; answered `Cancelled`.
    fn withdraw(&mut self);
    /// The group failed with `e`: a success or a write not run gets it;
    /// a write's own failure (or withdrawal) stays.
    fn fail(&mut self, e: DbError);
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

struct WriteOf<T, F> {
    f: Option<F>,
    out: Option<Result<T, DbError>>,
}

impl<T, F> Write for WriteOf<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let out = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
            Ok(out) => out,
            Err(payload) => Err(DbError::Panicked {
                message: panic_message(&*payload),
            }),
        };
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn is_pending(&self) -> bool {
        self.f.is_some()
    }

    fn error(&self) -> Option<&DbError> {
        self.out.as_ref().and_then(|o| o.as_ref().err())
    }

    fn withdraw(&mut self) {
        if self.f.take().is_some() {
            self.out = Some(Err(DbError::Cancelled));
        }
    }

    fn fail(&mut self, e: DbError) {
        if !matches!(self.out, Some(Err(_))) {
            self.f = None;
            self.out = Some(Err(e));
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// A group's writes, shared by the loop (joining, withdrawing) and the
/// writer (sealing, running).
struct Batch {
    sealed: bool,
    writes: Vec<Box<dyn Write>>,
}

/// One caller's side, on its loop: where its write's outcome goes.
trait Answer {
    fn answer(self: Box<Self>, outcome: Result<Box<dyn Write>, &DbError>);
}

struct AnswerOf<T, F> {
    to: Resolver<T, DbError>,
    _write: PhantomData<fn(F)>,
}

impl<T: Send + 'static, F: 'static> Answer for AnswerOf<T, F> {
    fn answer(self: Box<Self>, outcome: Result<Box<dyn Write>, &DbError>) {
        let result = match outcome {
            Ok(write) => match write.into_any().downcast::<WriteOf<T, F>>() {
                // Not run: the job ended without reaching it.
                Ok(write) => write.out.unwrap_or(Err(DbError::Cancelled)),
                // Unreachable: answers and writes are pushed together, in
                // the same order. Answered all the same.
                Err(_) => Err(DbError::Stopped),
            },
            Err(e) => Err(copy_error(e)),
        };
        // Already resolved: the caller cancelled it.
        let _ = self.to.resolve(result);
    }
}

/// The group open for joiners in a loop's turn (kept in `shared/turn.rs`'s
/// `Turn`).
pub(crate) struct OpenGroup {
    batch: Arc<Mutex<Batch>>,
    answers: Rc<RefCell<Vec<Box<dyn Answer>>>>,
}

impl SharedPool<SqliteConnector> {
    /// A write on the writer that may be committed together with the
    /// other grouped writes this loop submits in the same turn (group
    /// commit); its result on this loop once committed.
    ///
    /// `write` runs on the writer connection and must not manage
    /// transactions itself. Consecutive grouped writes of one turn (at most
    /// 64, not separated by another job for the writer) run as one writer
    /// job, in submission order: `BEGIN IMMEDIATE`, each write inside its
    /// own `SAVEPOINT`, then one `COMMIT`.
    ///
    /// - Every caller's `Deferred` resolves after that `COMMIT` returned: a
    ///   write answered `Ok` is committed, with the durability of any commit
    ///   on the writer (its `synchronous` setting), as if it had run alone
    ///   in autocommit.
    /// - A write that fails (or panics) is rolled back to its savepoint;
    ///   only its caller gets the error, the others commit. Should its
    ///   failure take the whole transaction with it (SQLite rolls back on
    ///   some errors), every write of the group fails.
    /// - If `BEGIN` or the `COMMIT` fails, every write of the group gets
    ///   that error (none answers `Ok`).
    /// - Writer jobs keep their FIFO order: a grouped write runs after
    ///   every writer job this loop submitted before it, and before every
    ///   one it submits after it.
    /// - A group whose only write is still live runs it in autocommit.
    ///   Off a running loop, or with
    ///   [`hand_over_per_turn(false)`](crate::PoolBuilder::hand_over_per_turn),
    ///   there are no turns to group in: each write is such a group of one.
    /// - Cancelling the `Deferred` before its group runs withdraws the write
    ///   (it never runs); once the group runs, the cancel answers
    ///   `Cancelled` at once but the write may still commit.
    /// - The pool's close runs the queued groups (or fails every write of
    ///   them with [`DbError::Stopped`], or [`DbError::Cancelled`] under
    ///   [`QueuedWork::Cancel`](weft::reactor::QueuedWork::Cancel)), like any
    ///   job; a group counts as one writer job in the pool's statistics.
    ///
    /// # Examples
    ///
    /// Three writes in one turn, one of them failing: one transaction, the
    /// failing write rolled back alone.
    ///
    /// ```
    /// use weft_db::{ConnectionPool, DbError, SqliteConnector};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = ConnectionPool::new(&reactor.handle(), SqliteConnector::new(dir.path().join("a.db"))).unwrap();
    /// let shared = pool.shared();
    /// let outcomes = reactor.run_until_complete(async move {
    ///     shared.run_operation("create table t (x unique)", []).await?;
    ///     let insert = |x: i64| move |c: &rusqlite::Connection| Ok(c.execute("insert into t values (?1)", [x])?);
    ///     let (a, b, c) = (shared.write_in_group(insert(1)), shared.write_in_group(insert(1)), shared.write_in_group(insert(2)));
    ///     let outcomes = (a.await, b.await, c.await);
    ///     let n: Vec<Vec<rusqlite::types::Value>> = shared.run_query("select count(*) from t", []).await?;
    ///     Ok::<_, DbError>((outcomes, n))
    /// });
    /// let ((a, b, c), n) = outcomes.unwrap().unwrap();
    /// assert_eq!(a.unwrap(), 1);
    /// assert!(b.unwrap_err().is_constraint());
    /// assert_eq!(c.unwrap(), 1);
    /// assert_eq!(n, vec![vec![rusqlite::types::Value::Integer(2)]]);
    /// ```
    #[must_use = "the Deferred carries the outcome"]
    pub fn write_in_group<T, F>(&self, write: F) -> Deferred<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let Some(handle) = weft::reactor::current() else {
            return Deferred::fail(DbError::NotOnLoop);
        };
        let mut write: Option<Box<dyn Write>> = Some(Box::new(WriteOf {
            f: Some(write),
            out: None,
        }));
        if handle.is_running() && self.shared.per_turn && self.accepting() {
            let joined = with_open_group(&self.shared, |open| {
                let index = {
                    let mut batch = lock(&open.batch);
                    if batch.sealed || batch.writes.len() >= GROUP_MAX {
                        return None;
                    }
                    batch.writes.push(write.take().expect("taken once"));
                    batch.writes.len() - 1
                };
                let d = withdrawable::<T>(&open.batch, index);
                open.answers.borrow_mut().push(answer_to::<T, F>(&d));
                Some(d)
            });
            if let Some(Some(d)) = joined {
                return d;
            }
        }
        // A new group, opened for the turn's next grouped writes if its
        // job waits for the turn's flush.
        let mut writes = Vec::with_capacity(8);
        writes.extend(write);
        let batch = Arc::new(Mutex::new(Batch {
            sealed: false,
            writes,
        }));
        let d = withdrawable::<T>(&batch, 0);
        let answers = Rc::new(RefCell::new(vec![answer_to::<T, F>(&d)]));
        let open = OpenGroup {
            batch: batch.clone(),
            answers: answers.clone(),
        };
        let job = self.submit(Route::Write, Mode::Connection, true, move |conn| {
            Ok::<_, DbError>(run_group(conn, &batch))
        });
        open_group(&self.shared, open);
        job.add_both(move |outcome| deliver(&answers, outcome));
        d
    }
}

/// A caller's `Deferred` for write `index` of `batch`: cancelled before the
/// batch is sealed, the write is withdrawn.
fn withdrawable<T: Send + 'static>(
    batch: &Arc<Mutex<Batch>>,
    index: usize,
) -> Deferred<T, DbError> {
    let batch = batch.clone();
    Deferred::with_canceller(move || {
        let mut batch = lock(&batch);
        if !batch.sealed
            && let Some(write) = batch.writes.get_mut(index)
        {
            write.withdraw();
        }
    })
}

fn answer_to<T, F>(d: &Deferred<T, DbError>) -> Box<dyn Answer>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
{
    Box::new(AnswerOf::<T, F> {
        to: d.resolver(),
        _write: PhantomData,
    })
}

/// On the loop: each caller gets its write's outcome, or the job's error.
fn deliver(answers: &RefCell<Vec<Box<dyn Answer>>>, outcome: Result<Vec<Box<dyn Write>>, DbError>) {
    // Taken out first: an answer's callbacks may submit again.
    let answers = std::mem::take(&mut *answers.borrow_mut());
    match outcome {
        // Same length and order (module notes); an answer left without a
        // write would resolve `Cancelled` as its resolver drops.
        Ok(writes) => {
            for (answer, write) in answers.into_iter().zip(writes) {
                answer.answer(Ok(write));
            }
        }
        Err(e) => {
            for answer in answers {
                answer.answer(Err(&e));
            }
        }
    }
}

/// On the writer: seals the batch and runs it (module notes).
fn run_group(conn: &Connection, batch: &Mutex<Batch>) -> Vec<Box<dyn Write>> {
    let mut writes = {
        let mut batch = lock(batch);
        batch.sealed = true;
        std::mem::take(&mut batch.writes)
    };
    if writes.iter().filter(|w| w.is_pending()).count() <= 1 {
        // Its own transaction: no BEGIN, savepoint or COMMIT to pay.
        for w in &mut writes {
            w.run(conn);
        }
        return writes;
    }
    if let Err(e) = run_cached(conn, BEGIN).with_statement(BEGIN) {
        roll_back(conn, &e);
        fail_all(&mut writes, &e);
        return writes;
    }
    for w in &mut writes {
        if w.is_pending()
            && let Err(e) = in_savepoint(conn, &mut **w)
        {
            roll_back(conn, &e);
            fail_all(&mut writes, &e);
            return writes;
        }
    }
    if let Err(e) = run_cached(conn, COMMIT).with_statement(COMMIT) {
        // A failed COMMIT (a deferred constraint, SQLITE_BUSY) leaves the
        // transaction open.
        roll_back(conn, &e);
        fail_all(&mut writes, &e);
    }
    writes
}

/// Runs `w` in a savepoint: its own failure is rolled back alone (`Ok`);
/// `Err` means the transaction cannot go on.
fn in_savepoint(conn: &Connection, w: &mut dyn Write) -> Result<(), DbError> {
    run_cached(conn, SAVEPOINT).with_statement(SAVEPOINT)?;
    if w.run(conn) {
        return run_cached(conn, RELEASE).with_statement(RELEASE);
    }
    if conn.is_autocommit() {
        // SQLite rolled the whole transaction back with the failure (an
        // interrupt, a full disk): the group's earlier writes are gone.
        return Err(w.error().map_or(DbError::Cancelled, copy_error));
    }
    run_cached(conn, ROLLBACK_TO).with_statement(ROLLBACK_TO)?;
    run_cached(conn, RELEASE).with_statement(RELEASE)
}

fn roll_back(conn: &Connection, original: &DbError) {
    if !conn.is_autocommit()
        && let Err(e) = run_cached(conn, "ROLLBACK")
    {
        tracing::error!(error = %e, original = %original, "weft-db: rollback of a write group failed");
    }
}

fn fail_all(writes: &mut [Box<dyn Write>], e: &DbError) {
    for w in writes {
        w.fail(copy_error(e));
    }
}

/// A copy of `e` for another caller of the group (`rusqlite::Error` is not
/// `Clone`: a SQLite failure keeps its codes and message, anything else
/// becomes a SQLite error with its text).
fn copy_error(e: &DbError) -> DbError {
    fn copy_sqlite(e: &rusqlite::Error) -> rusqlite::Error {
        match e {
            rusqlite::Error::SqliteFailure(code, message) => {
                rusqlite::Error::SqliteFailure(*code, message.clone())
            }
            other => rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                Some(other.to_string()),
            ),
        }
    }
    match e {
        DbError::Sql { statement, source } => DbError::Sql {
            statement: statement.clone(),
            source: copy_sqlite(source),
        },
        DbError::Open { source } => DbError::Open {
            source: copy_sqlite(source),
        },
        DbError::Cancelled => DbError::Cancelled,
        DbError::Panicked { message } => DbError::Panicked {
            message: message.clone(),
        },
        DbError::Stopped => DbError::Stopped,
        DbError::NotOnLoop => DbError::NotOnLoop,
    }
}
