//! weft-db behaviours beyond Twisted's suite: typed errors, routing,
//! panics, cancellation of queued and running jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use weft::Reactor;
use weft_db::{ConnectionPool, DbError, ErrorKind, SqliteConnector};

fn pool(reactor: &Reactor, dir: &tempfile::TempDir, max: usize) -> ConnectionPool {
    ConnectionPool::builder(SqliteConnector::new(dir.path().join("t.db")))
        .max(max)
        .build(&reactor.handle())
        .unwrap()
}

#[test]
fn constraint_violations_are_typed_and_carry_the_statement() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = pool(&reactor, &dir, 3);
    let err = reactor
        .run_until_complete(async move {
            p.run_operation("create table t (x integer primary key)", [])
                .await
                .unwrap();
            p.run_operation("insert into t values (1)", [])
                .await
                .unwrap();
            p.run_operation("insert into t values (?1)", (1,))
                .await
                .unwrap_err()
        })
        .unwrap();
    assert!(err.is_constraint(), "{err:?}");
    assert_eq!(err.kind(), Some(ErrorKind::Constraint));
    assert_eq!(err.statement(), Some("insert into t values (?1)"));
}

#[test]
fn a_write_on_a_reader_fails_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = pool(&reactor, &dir, 2);
    let err = reactor
        .run_until_complete(async move {
            p.run_operation("create table t (x)", []).await.unwrap();
            p.run_read(|c| Ok(c.execute("insert into t values (1)", [])?))
                .await
                .unwrap_err()
        })
        .unwrap();
    assert_eq!(err.kind(), Some(ErrorKind::ReadOnly), "{err:?}");
}

#[test]
fn reads_and_writes_run_on_their_own_threads() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = ConnectionPool::builder(SqliteConnector::new(dir.path().join("t.db")))
        .name("routing")
        .max(2)
        .build(&reactor.handle())
        .unwrap();
    let name = || {
        std::thread::current()
            .name()
            .map(String::from)
            .unwrap_or_default()
    };
    let (w, r) = reactor
        .run_until_complete(async move {
            let w = p.run_interaction(move |_| Ok(name())).await.unwrap();
            let r = p.run_read(move |_| Ok(name())).await.unwrap();
            (w, r)
        })
        .unwrap();
    assert_eq!(w, "weft-db-routing-w");
    assert_eq!(r, "weft-db-routing-r0");
}

#[test]
fn a_panicking_interaction_rolls_back_and_the_pool_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = pool(&reactor, &dir, 1);
    let (err, count) = reactor
        .run_until_complete(async move {
            p.run_operation("create table t (x)", []).await.unwrap();
            let err = p
                .run_interaction(|c| -> Result<(), DbError> {
                    c.execute("insert into t values (1)", [])?;
                    panic!("boom in the interaction");
                })
                .await
                .unwrap_err();
            let count = p
                .run_query_map("select count(*) from t", [], |r| r.get::<_, i64>(0))
                .await
                .unwrap();
            (err, count)
        })
        .unwrap();
    assert!(
        matches!(&err, DbError::Panicked { message } if message.contains("boom")),
        "{err:?}"
    );
    assert_eq!(count, vec![0]);
}

#[test]
fn an_unstarted_job_cancelled_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = pool(&reactor, &dir, 1);
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let (release, wait) = mpsc::channel::<()>();
    let (err, after) = reactor
        .run_until_complete(async move {
            // The writer is held by the first job, so the second stays queued.
            let first = p.run_interaction(move |_| {
                wait.recv().ok();
                Ok(())
            });
            let second = p.run_interaction(move |_| {
                r.store(true, Ordering::SeqCst);
                Ok(())
            });
            second.cancel();
            release.send(()).unwrap();
            first.await.unwrap();
            let err = second.await.unwrap_err();
            let after = p.run_interaction(|_| Ok(7)).await.unwrap();
            (err, after)
        })
        .unwrap();
    assert!(err.is_cancelled());
    assert_eq!(after, 7);
    assert!(!ran.load(Ordering::SeqCst));
}

/// A recursive CTE that would count for minutes.
const ENDLESS: &str = "with recursive c(x) as (select 1 union all select x + 1 from c where x < 100000000000) select count(*) from c";

#[test]
fn interrupting_a_long_write_transaction_cancels_it_and_the_writer_is_reusable() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = pool(&reactor, &dir, 1);
    let (started_tx, started) = mpsc::channel::<()>();
    let (seen_tx, seen) = mpsc::channel::<Option<rusqlite::ErrorCode>>();
    let h = reactor.handle();
    let (err, seen, rows, after) = reactor
        .run_until_complete(async move {
            p.run_operation("create table t (x)", []).await.unwrap();
            let long = p.run_interaction(move |c| {
                c.execute("insert into t values (1)", [])?;
                started_tx.send(()).unwrap();
                let r: rusqlite::Result<i64> = c.query_row(ENDLESS, [], |r| r.get(0));
                seen_tx
                    .send(r.as_ref().err().and_then(|e| e.sqlite_error_code()))
                    .unwrap();
                Ok(r?)
            });
            h.defer_to_thread(move || started.recv())
                .await
                .unwrap()
                .unwrap();
            long.cancel();
            let err = long.await.unwrap_err();
            let seen = h
                .defer_to_thread(move || seen.recv())
                .await
                .unwrap()
                .unwrap();
            // The same (only) connection: the insert was rolled back.
            let rows = p
                .run_query_map("select count(*) from t", [], |r| r.get::<_, i64>(0))
                .await
                .unwrap();
            let after = p
                .run_interaction(|c| Ok(c.query_row("select 41 + 1", [], |r| r.get::<_, i64>(0))?))
                .await
                .unwrap();
            (err, seen, rows, after)
        })
        .unwrap();
    assert!(err.is_cancelled(), "{err:?}");
    assert_eq!(seen, Some(rusqlite::ErrorCode::OperationInterrupted));
    assert_eq!(rows, vec![0]);
    assert_eq!(after, 42);
}

#[test]
fn interrupting_a_long_read_cancels_it_and_the_reader_is_reusable() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = pool(&reactor, &dir, 2); // one writer, one reader
    let (started_tx, started) = mpsc::channel::<()>();
    let (seen_tx, seen) = mpsc::channel::<Option<rusqlite::ErrorCode>>();
    let h = reactor.handle();
    let name = || {
        std::thread::current()
            .name()
            .map(String::from)
            .unwrap_or_default()
    };
    let (err, seen, after) = reactor
        .run_until_complete(async move {
            let long = p.run_read(move |c| {
                started_tx.send(()).unwrap();
                let r: rusqlite::Result<i64> = c.query_row(ENDLESS, [], |r| r.get(0));
                seen_tx
                    .send(r.as_ref().err().and_then(|e| e.sqlite_error_code()))
                    .unwrap();
                Ok(r?)
            });
            h.defer_to_thread(move || started.recv())
                .await
                .unwrap()
                .unwrap();
            long.cancel();
            let err = long.await.unwrap_err();
            let seen = h
                .defer_to_thread(move || seen.recv())
                .await
                .unwrap()
                .unwrap();
            let after = p
                .run_read(move |c| {
                    Ok((c.query_row("select 1", [], |r| r.get::<_, i64>(0))?, name()))
                })
                .await
                .unwrap();
            (err, seen, after)
        })
        .unwrap();
    assert!(err.is_cancelled(), "{err:?}");
    assert_eq!(seen, Some(rusqlite::ErrorCode::OperationInterrupted));
    assert_eq!(after, (1, "weft-db-db-r0".to_owned()));
}

#[test]
fn a_memory_database_gets_one_connection() {
    let reactor = Reactor::new().unwrap();
    let p = ConnectionPool::builder(SqliteConnector::new(":memory:"))
        .max(4)
        .build(&reactor.handle())
        .unwrap();
    assert_eq!(p.max_connections(), 1);
    let rows = reactor
        .run_until_complete(async move {
            p.run_operation("create table t (x)", []).await.unwrap();
            p.run_operation("insert into t values (3)", [])
                .await
                .unwrap();
            p.run_query_map("select x from t", [], |r| r.get::<_, i64>(0))
                .await
                .unwrap()
        })
        .unwrap();
    assert_eq!(rows, vec![3]);
}

#[test]
fn close_is_idempotent_and_later_work_is_stopped_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = pool(&reactor, &dir, 3);
    let q = p.clone();
    let (a, b, c) = reactor
        .run_until_complete(async move {
            q.run_operation("create table t (x)", []).await.unwrap();
            let (a, b) = (q.close(), q.close());
            let (a, b) = (a.await, b.await);
            (a, b, q.close().await)
        })
        .unwrap();
    assert_eq!((a, b, c), (Ok(()), Ok(()), Ok(())));
    let d = p.run_query("select 1", []);
    assert!(d.is_resolved());
    let err = reactor.run_until_complete(d).unwrap().unwrap_err();
    assert!(matches!(err, DbError::Stopped), "{err:?}");
    // Every connection was closed: the WAL files are gone.
    assert!(!dir.path().join("t.db-wal").exists());
}

#[test]
fn a_transaction_left_open_by_a_read_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = pool(&reactor, &dir, 2); // one reader
    let autocommit = reactor
        .run_until_complete(async move {
            p.run_read(|c| Ok(c.execute_batch("BEGIN")?)).await.unwrap();
            p.run_read(|c| Ok(c.is_autocommit())).await.unwrap()
        })
        .unwrap();
    assert!(autocommit);
}

#[test]
fn a_late_cancel_never_reaches_the_next_job_on_the_connection() {
    // Each victim is cancelled at a different point (queued, running, done);
    // the witness queued right behind it on the same (only) connection must
    // always succeed. Undirected interrupts fail such witnesses (spec §2.7).
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = pool(&reactor, &dir, 1);
    let h = reactor.handle();
    let short = "with recursive c(x) as (select 1 union all select x + 1 from c where x < 3000) select count(*) from c";
    reactor
        .run_until_complete(async move {
            for i in 0..300u32 {
                let victim =
                    p.run_interaction(move |c| Ok(c.query_row(short, [], |r| r.get::<_, i64>(0))?));
                let witness =
                    p.run_interaction(move |c| Ok(c.query_row(short, [], |r| r.get::<_, i64>(0))?));
                for _ in 0..i % 7 {
                    h.sleep(std::time::Duration::ZERO).await.unwrap();
                }
                victim.cancel();
                // Already delivered (the cancel came too late) or cancelled.
                match victim.await {
                    Ok(n) => assert_eq!(n, 3000),
                    Err(e) => assert!(e.is_cancelled(), "{e:?}"),
                }
                assert_eq!(witness.await.unwrap(), 3000, "iteration {i}");
            }
        })
        .unwrap();
}

/// BEGIN, COMMIT and ROLLBACK go through the statement cache: with a cache
/// of 0 (every statement prepared afresh) and with the default one,
/// transactions commit and roll back the same, job after job.
#[test]
fn transactions_commit_and_roll_back_whatever_the_statement_cache() {
    for capacity in [0, 64] {
        let dir = tempfile::tempdir().unwrap();
        let reactor = Reactor::new().unwrap();
        let p = ConnectionPool::builder(
            SqliteConnector::new(dir.path().join("t.db")).statement_cache_capacity(capacity),
        )
        .max(2)
        .build(&reactor.handle())
        .unwrap();
        let count = reactor
            .run_until_complete(async move {
                p.run_operation("create table t (x)", []).await.unwrap();
                for i in 0..3 {
                    p.run_operation("insert into t values (?1)", (i,))
                        .await
                        .unwrap();
                    let failed = p
                        .run_interaction(move |c| {
                            c.execute("insert into t values (?1)", (100 + i,))?;
                            Err::<(), _>(DbError::Stopped)
                        })
                        .await;
                    assert!(failed.is_err());
                }
                let n = p
                    .run_query("select count(*) from t where x < 100", [])
                    .await;
                let rolled = p
                    .run_query("select count(*) from t where x >= 100", [])
                    .await;
                (n.unwrap(), rolled.unwrap())
            })
            .unwrap();
        use rusqlite::types::Value;
        assert_eq!(
            count.0,
            vec![vec![Value::Integer(3)]],
            "capacity {capacity}"
        );
        assert_eq!(
            count.1,
            vec![vec![Value::Integer(0)]],
            "capacity {capacity}"
        );
    }
}

/// A cancel flag still set while the connection starts or ends a later
/// transaction must not interrupt it. SQLite calls the progress handler by
/// a statement's step count summed over its runs, so a cached `BEGIN` used
/// to reach the handler every few hundred runs and stop half-done, leaving
/// a transaction open for the next job ("cannot start a transaction within
/// a transaction"; `a_late_cancel_never_reaches_the_next_job_on_the_connection`
/// failed about one run in five). Here the flag is set for good: thousands
/// of `BEGIN`/`COMMIT`s must all succeed.
#[test]
fn a_set_cancel_flag_never_interrupts_begin_or_commit() {
    use weft_db::{Connector, Role};
    let dir = tempfile::tempdir().unwrap();
    let connector = SqliteConnector::new(dir.path().join("t.db"));
    let mut conn = connector.open(Role::Writer).unwrap();
    let _interrupter = connector.install_cancel(&mut conn, Arc::new(AtomicBool::new(true)));
    for i in 0..5000 {
        connector
            .begin(&mut conn, Role::Writer)
            .unwrap_or_else(|e| panic!("begin {i}: {e}"));
        assert!(!conn.is_autocommit());
        connector
            .commit(&mut conn)
            .unwrap_or_else(|e| panic!("commit {i}: {e}"));
        assert!(conn.is_autocommit());
    }
}

/// A driver whose `BEGIN` opens the transaction and then reports an error
/// (as a `BEGIN` interrupted half-way does) must not leave the transaction
/// open for the next job on the connection: the worker rolls it back.
#[test]
fn a_begin_that_fails_half_way_leaves_no_transaction_open() {
    use std::sync::atomic::AtomicUsize;
    use weft_db::{Connector, Interrupter, Role};

    struct HalfBegin {
        inner: SqliteConnector,
        begins: AtomicUsize,
    }
    impl Connector for HalfBegin {
        type Connection = rusqlite::Connection;
        type Error = rusqlite::Error;
        fn open(&self, role: Role) -> rusqlite::Result<rusqlite::Connection> {
            self.inner.open(role)
        }
        fn probe(&self, c: &mut rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
            self.inner.probe(c, sql)
        }
        fn close(&self, c: rusqlite::Connection) -> rusqlite::Result<()> {
            self.inner.close(c)
        }
        fn begin(&self, c: &mut rusqlite::Connection, role: Role) -> rusqlite::Result<()> {
            self.inner.begin(c, role)?;
            if self.begins.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERRUPT),
                    Some("interrupted half-way".into()),
                ));
            }
            Ok(())
        }
        fn commit(&self, c: &mut rusqlite::Connection) -> rusqlite::Result<()> {
            self.inner.commit(c)
        }
        fn rollback(&self, c: &mut rusqlite::Connection) -> rusqlite::Result<()> {
            self.inner.rollback(c)
        }
        fn install_cancel(
            &self,
            c: &mut rusqlite::Connection,
            cancelled: Arc<AtomicBool>,
        ) -> Option<Interrupter> {
            self.inner.install_cancel(c, cancelled)
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = ConnectionPool::builder(HalfBegin {
        inner: SqliteConnector::new(dir.path().join("t.db")),
        begins: AtomicUsize::new(0),
    })
    .max(1)
    .build(&reactor.handle())
    .unwrap();
    let (first, second) = reactor
        .run_until_complete(async move {
            let first = p.run_interaction(|_| Ok(())).await;
            let second = p
                .run_interaction(|c| Ok(c.query_row("select 7", [], |r| r.get::<_, i64>(0))?))
                .await;
            (first, second)
        })
        .unwrap();
    assert!(first.is_err(), "the half-way begin is reported");
    assert_eq!(second.unwrap(), 7, "and leaves nothing open behind it");
}

#[test]
fn the_thread_start_hook_runs_first_on_every_connection_thread_with_its_group() {
    use std::sync::Mutex;
    use weft_db::Group;
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let seen: Arc<Mutex<Vec<(String, Group)>>> = Arc::default();
    let s = seen.clone();
    let p = ConnectionPool::builder(SqliteConnector::new(dir.path().join("t.db")))
        .name("hook")
        .max(3)
        .on_thread_start(move |group| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            s.lock().unwrap().push((name, group));
        })
        .build(&reactor.handle())
        .unwrap();
    let p2 = p.clone();
    reactor
        .run_until_complete(async move {
            p2.run_interaction(|_| Ok(())).await.unwrap();
            p2.run_read(|_| Ok(())).await.unwrap();
            let _ = p2.close().await;
        })
        .unwrap();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        [
            ("weft-db-hook-r0".to_owned(), Group::Readers),
            ("weft-db-hook-r1".to_owned(), Group::Readers),
            ("weft-db-hook-w".to_owned(), Group::Writer),
        ]
    );
}

#[test]
fn a_panicking_thread_start_hook_leaves_the_threads_serving() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = ConnectionPool::builder(SqliteConnector::new(dir.path().join("t.db")))
        .max(2)
        .on_thread_start(|_| panic!("hook"))
        .build(&reactor.handle())
        .unwrap();
    let (w, r) = reactor
        .run_until_complete(async move {
            let w = p.run_interaction(|_| Ok(1)).await.unwrap();
            let r = p.run_read(|_| Ok(2)).await.unwrap();
            let _ = p.close().await;
            (w, r)
        })
        .unwrap();
    assert_eq!((w, r), (1, 2));
}
