//! `SharedPool::write_in_group`: the grouped writes of one turn commit in
//! one transaction, each in its own savepoint. Every answer comes after the
//! COMMIT; a failing write is rolled back alone; a failing COMMIT fails the
//! whole group; the writer's FIFO order is kept; the pool's close runs or
//! fails every queued write. Writes of one turn are submitted from one
//! synchronous stretch of a task (one poll), never ordered by sleeps.

use std::cell::RefCell;
use std::rc::Rc;

use rusqlite::Connection;
use weft::Reactor;
use weft::reactor::QueuedWork;
use weft_db::{ConnectionPool, DbError, SharedPool, SqliteConnector};

fn pool(
    reactor: &Reactor,
    schema: &str,
    policy: QueuedWork,
) -> (tempfile::TempDir, ConnectionPool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("group.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(&format!("pragma journal_mode = wal; {schema}"))
        .unwrap();
    let pool = ConnectionPool::builder(SqliteConnector::new(&path))
        .max(2) // a writer and a reader
        .queued_work_at_close(policy)
        .build(&reactor.handle())
        .unwrap();
    (dir, pool)
}

fn rows(dir: &tempfile::TempDir, sql: &str) -> Vec<i64> {
    let conn = Connection::open(dir.path().join("group.db")).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A write inserting `x`; it answers whether it ran inside a transaction
/// it did not open (a group's).
fn insert(x: i64) -> impl FnOnce(&Connection) -> Result<bool, DbError> + Send + 'static {
    move |c| {
        c.execute("insert into t (x) values (?1)", [x])?;
        Ok(!c.is_autocommit())
    }
}

#[test]
fn the_grouped_writes_of_a_turn_commit_once_and_every_one_is_visible_once_any_is_answered() {
    let reactor = Reactor::new().unwrap();
    let (dir, pool) = pool(&reactor, "create table t (x integer)", QueuedWork::Run);
    let shared = pool.shared();
    let path = dir.path().join("group.db");
    let (first, rest, seen_at_first) = reactor
        .run_until_complete(async move {
            let mut ds: Vec<_> = (0..10).map(|x| shared.write_in_group(insert(x))).collect();
            let first = ds.remove(0).await;
            // Read by a connection of our own the moment the first write is
            // answered: all ten are committed already.
            let n: i64 = Connection::open(&path)
                .unwrap()
                .query_row("select count(*) from t", [], |r| r.get(0))
                .unwrap();
            (first, weft::gather(ds).await, n)
        })
        .unwrap();
    assert!(first.unwrap(), "ran inside the group's transaction");
    assert!(rest.unwrap().into_iter().all(|in_group| in_group));
    assert_eq!(seen_at_first, 10);
    assert_eq!(
        rows(&dir, "select x from t order by rowid"),
        (0..10).collect::<Vec<_>>()
    );
    let s = pool.statistics();
    assert_eq!(s.writer.submitted, 1, "one writer job for the group");
    assert_eq!(s.writer.completed, 1);
}

#[test]
fn a_failing_or_panicking_write_is_rolled_back_alone_and_only_its_caller_errs() {
    let reactor = Reactor::new().unwrap();
    let (dir, pool) = pool(
        &reactor,
        "create table t (x integer unique)",
        QueuedWork::Run,
    );
    let shared = pool.shared();
    let out = reactor
        .run_until_complete(async move {
            let a = shared.write_in_group(insert(1));
            let dup = shared.write_in_group(insert(1));
            // Writes a row, then fails: its row must go with it.
            let half = shared.write_in_group(|c| {
                c.execute("insert into t (x) values (3)", [])?;
                Err::<bool, _>(DbError::Panicked {
                    message: "given up".into(),
                })
            });
            let panics = shared.write_in_group(|c| -> Result<bool, DbError> {
                c.execute("insert into t (x) values (4)", [])?;
                panic!("a write panics")
            });
            let b = shared.write_in_group(insert(2));
            (a.await, dup.await, half.await, panics.await, b.await)
        })
        .unwrap();
    let (a, dup, half, panics, b) = out;
    assert!(a.unwrap());
    assert!(dup.unwrap_err().is_constraint());
    assert!(matches!(half, Err(DbError::Panicked { message }) if message == "given up"));
    assert!(
        matches!(panics, Err(DbError::Panicked { message }) if message.contains("a write panics"))
    );
    assert!(b.unwrap());
    assert_eq!(rows(&dir, "select x from t order by rowid"), [1, 2]);
    assert_eq!(pool.statistics().writer.submitted, 1);
}

#[test]
fn a_failing_commit_fails_every_write_of_the_group_and_keeps_none() {
    let reactor = Reactor::new().unwrap();
    let (dir, pool) = pool(
        &reactor,
        "create table parent (id integer primary key);
         create table t (x integer, p integer references parent (id) deferrable initially deferred)",
        QueuedWork::Run,
    );
    let shared = pool.shared();
    let out = reactor
        .run_until_complete(async move {
            shared
                .run_with_connection(|c| {
                    Ok::<_, DbError>(c.execute_batch("pragma foreign_keys = on")?)
                })
                .await
                .unwrap();
            let good = shared.write_in_group(insert(1));
            // A deferred foreign key violation: only the COMMIT fails.
            let orphan = shared.write_in_group(|c| {
                c.execute("insert into t (x, p) values (2, 99)", [])?;
                Ok(!c.is_autocommit())
            });
            let after = shared.write_in_group(insert(3));
            let outcome = (good.await, orphan.await, after.await);
            // The writer is usable afterwards (the failed group was rolled back).
            let next = shared.write_in_group(insert(4)).await;
            (outcome, next)
        })
        .unwrap();
    let ((good, orphan, after), next) = out;
    for r in [good, orphan, after] {
        let e = r.unwrap_err();
        assert!(e.is_constraint(), "{e}");
        assert_eq!(e.statement(), Some("COMMIT"));
    }
    assert!(!next.unwrap(), "a group of one runs in autocommit");
    assert_eq!(rows(&dir, "select x from t"), [4]);
}

#[test]
fn writer_jobs_keep_their_order_and_a_non_grouped_one_cuts_the_group_while_a_read_does_not() {
    let reactor = Reactor::new().unwrap();
    let (dir, pool) = pool(&reactor, "create table t (x integer)", QueuedWork::Run);
    let shared = pool.shared();
    let out = reactor
        .run_until_complete(async move {
            let a = shared.write_in_group(insert(1));
            let read = shared.run_query("select 1", []); // to a reader: no cut
            let b = shared.write_in_group(insert(2));
            let op = shared.run_operation("insert into t (x) values (3)", []);
            let c = shared.write_in_group(insert(4));
            let d = shared.write_in_group(insert(5));
            (a.await, read.await, b.await, op.await, c.await, d.await)
        })
        .unwrap();
    let (a, read, b, op, c, d) = out;
    assert!(
        a.unwrap() && b.unwrap() && c.unwrap() && d.unwrap(),
        "two groups of two"
    );
    assert_eq!(read.unwrap().len(), 1);
    assert_eq!(op.unwrap(), 1);
    assert_eq!(
        rows(&dir, "select x from t order by rowid"),
        [1, 2, 3, 4, 5]
    );
    let s = pool.statistics();
    assert_eq!(s.writer.submitted, 3, "group, operation, group");
    assert_eq!(s.readers.submitted, 1);
}

#[test]
fn a_huge_turn_is_cut_into_bounded_groups() {
    let reactor = Reactor::new().unwrap();
    let (dir, pool) = pool(&reactor, "create table t (x integer)", QueuedWork::Run);
    let shared = pool.shared();
    let out = reactor
        .run_until_complete(async move {
            let ds: Vec<_> = (0..150).map(|x| shared.write_in_group(insert(x))).collect();
            weft::gather(ds).await
        })
        .unwrap()
        .unwrap();
    assert_eq!(out.len(), 150);
    assert_eq!(rows(&dir, "select count(*) from t"), [150]);
    assert_eq!(pool.statistics().writer.submitted, 3, "64 + 64 + 22");
}

#[test]
fn a_write_cancelled_before_its_group_runs_is_withdrawn_and_the_others_commit() {
    let reactor = Reactor::new().unwrap();
    let (dir, pool) = pool(&reactor, "create table t (x integer)", QueuedWork::Run);
    let shared = pool.shared();
    let out = reactor
        .run_until_complete(async move {
            let a = shared.write_in_group(insert(1));
            let gone = shared.write_in_group(insert(2));
            let b = shared.write_in_group(insert(3));
            gone.cancel();
            (a.await, gone.await, b.await)
        })
        .unwrap();
    let (a, gone, b) = out;
    assert!(a.unwrap() && b.unwrap());
    assert!(matches!(gone, Err(DbError::Cancelled)));
    assert_eq!(rows(&dir, "select x from t order by rowid"), [1, 3]);
}

#[test]
fn off_a_loop_a_grouped_write_fails_not_on_loop() {
    let reactor = Reactor::new().unwrap();
    let (_dir, pool) = pool(&reactor, "create table t (x integer)", QueuedWork::Run);
    let shared: SharedPool = pool.shared();
    let d = std::thread::spawn(move || {
        let d = shared.write_in_group(insert(1));
        Reactor::new().unwrap().run_until_complete(d).unwrap()
    })
    .join()
    .unwrap();
    assert!(matches!(d, Err(DbError::NotOnLoop)));
}

type Outcomes = Rc<RefCell<Vec<(i64, Result<bool, DbError>)>>>;

/// Grouped writes queued on the owner's loop, then its reactor stops in the
/// same turn: every write is answered, and exactly the ones answered `Ok`
/// are in the file.
fn shutdown_with_grouped_writes_queued(policy: QueuedWork) -> (usize, usize) {
    let reactor = Reactor::new().unwrap();
    let (dir, pool) = pool(&reactor, "create table t (x integer)", policy);
    let outcomes: Outcomes = Rc::default();
    let o = outcomes.clone();
    let handle = reactor.handle();
    reactor.call_soon(move || {
        let shared = pool.shared();
        for x in 0..200 {
            let o = o.clone();
            shared
                .write_in_group(insert(x))
                .add_both(move |r| o.borrow_mut().push((x, r)));
        }
        handle.stop();
    });
    reactor.run().unwrap();
    let outcomes = outcomes.borrow();
    assert_eq!(outcomes.len(), 200, "every write answered");
    let mut ok: Vec<i64> = outcomes
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(x, _)| *x)
        .collect();
    ok.sort_unstable();
    for (_, r) in outcomes.iter().filter(|(_, r)| r.is_err()) {
        assert!(
            matches!(r, Err(DbError::Cancelled | DbError::Stopped)),
            "{r:?}"
        );
    }
    assert_eq!(
        rows(&dir, "select x from t order by x"),
        ok,
        "answered Ok is there, nothing else"
    );
    (ok.len(), outcomes.len() - ok.len())
}

#[test]
fn shutdown_runs_every_queued_grouped_write() {
    assert_eq!(
        shutdown_with_grouped_writes_queued(QueuedWork::Run),
        (200, 0)
    );
}

#[test]
fn shutdown_under_cancel_answers_every_queued_grouped_write_and_keeps_only_the_ok_ones() {
    let (ok, failed) = shutdown_with_grouped_writes_queued(QueuedWork::Cancel);
    assert_eq!(ok + failed, 200);
}
