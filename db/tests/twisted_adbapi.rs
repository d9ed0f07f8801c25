//! Ported from Twisted's `src/twisted/test/test_adbapi.py` (twisted/twisted
//! commit 64661601, identical to Twisted 26.10.0): the behaviours that apply
//! to weft-db: the `test_pool` chain of `ADBAPITestBase` (with N = 50 and
//! several connections, where Twisted's SQLite run used N = 1 and one
//! connection), the `ReconnectTestBase` chain, `test_rollbackErrorLogged`,
//! `test_runWithConnectionRaiseOriginalError`,
//! `test_runWithInteractionRaiseOriginalError`, `test_closeLogError`,
//! `test_unstartedClose` and `test_startedClose`, plus close with work in
//! flight (Twisted's `finalClose` hazards, which weft-db must not copy).
//!
//! Not ported: `_testPool_6` (closing the connection inside
//! `runWithConnection` is harmless: rusqlite's `close` consumes the
//! connection, which the pool owns, so a job cannot do it) and
//! `checkConnect` (`connect`/`disconnect` on the reactor thread: weft-db
//! never hands a connection to another thread).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rusqlite::ffi;
use weft::Reactor;
use weft_db::{ConnectionPool, Connector, DbError, ErrorKind, Interrupter, Role, SqliteConnector};

const N: i64 = 50;

// --- log capture (Twisted's `flushLoggedErrors`) ---------------------------

type Events = Mutex<Vec<(tracing::Level, String, String)>>;

fn events() -> &'static Events {
    static EVENTS: OnceLock<Events> = OnceLock::new();
    EVENTS.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        struct Capture;
        #[derive(Default)]
        struct Fields {
            message: String,
            pool: String,
        }
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.message = format!("{value:?}"),
                    "pool" => self.pool = format!("{value:?}"),
                    _ => {}
                }
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.record_debug(field, &value)
            }
        }
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                let mut f = Fields::default();
                event.record(&mut f);
                events()
                    .lock()
                    .unwrap()
                    .push((*event.metadata().level(), f.pool, f.message));
            }
        }
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Capture))
            .unwrap();
        Mutex::new(Vec::new())
    })
}

/// Error events logged by pool `name` whose message contains `text`.
fn logged_errors(pool: &str, text: &str) -> usize {
    events()
        .lock()
        .unwrap()
        .iter()
        .filter(|(level, p, m)| {
            *level == tracing::Level::ERROR && p.contains(pool) && m.contains(text)
        })
        .count()
}

// --- a driver double over SQLite (Twisted's FakePool / FakeConnection) ----

#[derive(Default)]
struct Knobs {
    opens: AtomicUsize,
    closes: AtomicUsize,
    rollbacks: AtomicUsize,
    kill_next: AtomicBool,
    fail_rollback: AtomicBool,
    fail_probe: AtomicBool,
    fail_close: AtomicBool,
}

struct Flaky {
    inner: SqliteConnector,
    knobs: Arc<Knobs>,
}

struct FlakyConn {
    conn: rusqlite::Connection,
    dead: bool,
}

fn io_error(msg: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_IOERR), Some(msg.into()))
}

impl Connector for Flaky {
    type Connection = FlakyConn;
    type Error = rusqlite::Error;

    fn open(&self, role: Role) -> rusqlite::Result<FlakyConn> {
        self.knobs.opens.fetch_add(1, Ordering::SeqCst);
        Ok(FlakyConn {
            conn: self.inner.open(role)?,
            dead: false,
        })
    }
    fn probe(&self, c: &mut FlakyConn, sql: &str) -> rusqlite::Result<()> {
        if c.dead || self.knobs.fail_probe.load(Ordering::SeqCst) {
            return Err(io_error("probe failed"));
        }
        self.inner.probe(&mut c.conn, sql)
    }
    fn close(&self, c: FlakyConn) -> rusqlite::Result<()> {
        self.knobs.closes.fetch_add(1, Ordering::SeqCst);
        self.inner.close(c.conn)?;
        if self.knobs.fail_close.load(Ordering::SeqCst) {
            return Err(io_error("close problem"));
        }
        Ok(())
    }
    fn begin(&self, c: &mut FlakyConn, role: Role) -> rusqlite::Result<()> {
        if self.knobs.kill_next.swap(false, Ordering::SeqCst) {
            c.dead = true; // closed behind the pool's back
        }
        if c.dead {
            return Err(io_error("connection is closed"));
        }
        self.inner.begin(&mut c.conn, role)
    }
    fn commit(&self, c: &mut FlakyConn) -> rusqlite::Result<()> {
        if c.dead {
            return Err(io_error("connection is closed"));
        }
        self.inner.commit(&mut c.conn)
    }
    fn rollback(&self, c: &mut FlakyConn) -> rusqlite::Result<()> {
        self.knobs.rollbacks.fetch_add(1, Ordering::SeqCst);
        // Twisted's test rolls back for real before raising "problem!".
        self.inner.rollback(&mut c.conn)?;
        if c.dead || self.knobs.fail_rollback.load(Ordering::SeqCst) {
            return Err(io_error("problem!"));
        }
        Ok(())
    }
    fn install_cancel(&self, c: &mut FlakyConn, cancelled: Arc<AtomicBool>) -> Option<Interrupter> {
        self.inner.install_cancel(&mut c.conn, cancelled)
    }
}

fn flaky(
    reactor: &Reactor,
    dir: &tempfile::TempDir,
    name: &str,
    reconnect: bool,
) -> (ConnectionPool<Flaky>, Arc<Knobs>) {
    let knobs = Arc::new(Knobs::default());
    let connector = Flaky {
        inner: SqliteConnector::new(dir.path().join("flaky.db")),
        knobs: knobs.clone(),
    };
    let pool = ConnectionPool::builder(connector)
        .name(name)
        .max(1)
        .reconnect(reconnect)
        .good_sql("select 1")
        .build(&reactor.handle())
        .unwrap();
    (pool, knobs)
}

fn count(c: &mut FlakyConn) -> Result<i64, DbError> {
    Ok(c.conn
        .query_row("select count(*) from simple", [], |r| r.get(0))?)
}

// --- ADBAPITestBase.test_pool ----------------------------------------------

#[test]
fn test_pool() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    let o = opened.clone();
    let connector = SqliteConnector::new(dir.path().join("adbapi.db")).on_open(move |_, _| {
        o.fetch_add(1, Ordering::SeqCst); // cp_openfun
        Ok(())
    });
    let pool = ConnectionPool::builder(connector)
        .max(3)
        .build(&reactor.handle())
        .unwrap();
    let p = pool.clone();
    reactor
        .run_until_complete(async move {
            p.run_operation("CREATE TABLE simple (x integer)", [])
                .await
                .unwrap();

            // _testPool_1_1 .. _1_4: failures reach the Deferred.
            let e = p.run_query("select * from NOTABLE", []).await.unwrap_err();
            assert_eq!(e.statement(), Some("select * from NOTABLE"));
            assert_eq!(e.kind(), Some(ErrorKind::Other));
            let e = p
                .run_operation("deletexxx from NOTABLE", [])
                .await
                .unwrap_err();
            assert_eq!(e.statement(), Some("deletexxx from NOTABLE"));
            let bad_interaction = |c: &mut rusqlite::Connection| -> Result<(), DbError> {
                c.execute("insert into simple(x) values(0)", [])?;
                c.execute("select * from NOTABLE", [])?;
                Ok(())
            };
            assert!(p.run_interaction(bad_interaction).await.is_err());
            let bad_with_connection = |c: &mut rusqlite::Connection| -> Result<(), DbError> {
                c.execute_batch("BEGIN")?;
                c.execute("insert into simple(x) values(0)", [])?;
                c.execute("select * from NOTABLE", [])?;
                Ok(())
            };
            assert!(p.run_with_connection(bad_with_connection).await.is_err());

            // _testPool_2: the failed interactions were rolled back; openfun ran.
            let n = p.run_query_map("select count(1) from simple", [], |r| r.get::<_, i64>(0));
            assert_eq!(n.await.unwrap(), vec![0]);
            assert!(o_count(&opened) >= 1);

            // _testPool_3: N concurrent inserts.
            let inserts: Vec<_> = (0..N)
                .map(|i| p.run_operation("insert into simple(x) values(?1)", (i,)))
                .collect();
            for d in inserts {
                assert_eq!(d.await.unwrap(), 1);
            }
            let rows = p
                .run_query("select x from simple order by x", [])
                .await
                .unwrap();
            assert_eq!(rows.len(), N as usize);
            for (i, row) in rows.iter().enumerate() {
                assert_eq!(row, &vec![rusqlite::types::Value::Integer(i as i64)]);
            }

            // _testPool_4 / _5: row-by-row through the transaction / the connection.
            let walk = |c: &mut rusqlite::Connection| -> Result<&'static str, DbError> {
                let mut stmt = c.prepare_cached("select x from simple order by x")?;
                let mut rows = stmt.query([])?;
                for i in 0..N {
                    assert_eq!(rows.next()?.expect("a row").get::<_, i64>(0)?, i);
                }
                assert!(rows.next()?.is_none());
                Ok("done")
            };
            assert_eq!(p.run_interaction(walk).await.unwrap(), "done");
            assert_eq!(p.run_with_connection(walk).await.unwrap(), "done");

            // _testPool_7: N concurrent point queries, each gets its row.
            let reads: Vec<_> = (0..N)
                .map(|i| {
                    p.run_query_map("select x from simple where x = ?1", (i,), |r| {
                        r.get::<_, i64>(0)
                    })
                })
                .collect();
            for (i, d) in reads.into_iter().enumerate() {
                assert_eq!(d.await.unwrap(), vec![i as i64]);
            }

            // _testPool_8 / _9: N concurrent deletes; the table is empty.
            let deletes: Vec<_> = (0..N)
                .map(|i| p.run_operation("delete from simple where x = ?1", (i,)))
                .collect();
            for d in deletes {
                assert_eq!(d.await.unwrap(), 1);
            }
            let n = p.run_query_map("select count(1) from simple", [], |r| r.get::<_, i64>(0));
            assert_eq!(n.await.unwrap(), vec![0]);

            // tearDown
            p.run_operation("DROP TABLE simple", []).await.unwrap();
            p.close().await.unwrap();
        })
        .unwrap();
}

fn o_count(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

// --- ReconnectTestBase.test_pool ---------------------------------------------

#[test]
fn reconnect_test_pool() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let (p, knobs) = flaky(&reactor, &dir, "reconnect-on", true);
    reactor
        .run_until_complete(async move {
            p.run_interaction(|c| Ok(c.conn.execute_batch("CREATE TABLE simple (x integer)")?))
                .await
                .unwrap();
            // _testPool_1: the table is empty.
            assert_eq!(p.run_interaction(count).await.unwrap(), 0);
            // _testPool_2: the pool's only connection is closed behind its back.
            knobs.kill_next.store(true, Ordering::SeqCst);
            // _testPool_4 (SQLite reconnects early, so _3 does not apply):
            // the next query succeeds on a fresh connection.
            assert_eq!(p.run_interaction(count).await.unwrap(), 0);
            assert_eq!(knobs.opens.load(Ordering::SeqCst), 2);
            assert_eq!(knobs.closes.load(Ordering::SeqCst), 1); // closed on its thread
            // _testPool_5: bad SQL fails with the driver's error, not a lost connection.
            let e = p
                .run_interaction(|c| Ok(c.conn.execute("select * from NOTABLE", [])?))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), Some(ErrorKind::Other));
            assert_eq!(knobs.opens.load(Ordering::SeqCst), 2);
            p.close().await.unwrap();
        })
        .unwrap();
}

#[test]
fn without_reconnect_a_lost_connection_stays_lost() {
    // Twisted's `cp_reconnect=False`: `_testPool_3` (the next query fails),
    // and nothing reopens it.
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let (p, knobs) = flaky(&reactor, &dir, "reconnect-off", false);
    reactor
        .run_until_complete(async move {
            p.run_interaction(|c| Ok(c.conn.execute_batch("CREATE TABLE simple (x integer)")?))
                .await
                .unwrap();
            knobs.kill_next.store(true, Ordering::SeqCst);
            for _ in 0..2 {
                let e = p.run_interaction(count).await.unwrap_err();
                assert_eq!(e.kind(), Some(ErrorKind::ConnectionLost), "{e:?}");
            }
            assert_eq!(knobs.opens.load(Ordering::SeqCst), 1);
            p.close().await.unwrap();
        })
        .unwrap();
}

// --- ConnectionTests / ConnectionPoolTests -----------------------------------

#[test]
fn test_run_with_interaction_raise_original_error() {
    events(); // capture logs from here on
    // Also test_rollbackErrorLogged: the rollback error is logged once.
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let (p, knobs) = flaky(&reactor, &dir, "original-interaction", true);
    reactor
        .run_until_complete(async move {
            p.run_interaction(|c| {
                Ok(c.conn
                    .execute_batch("CREATE TABLE simple (x integer primary key)")?)
            })
            .await
            .unwrap();
            knobs.fail_rollback.store(true, Ordering::SeqCst);
            let e = p
                .run_interaction(|c| -> Result<(), DbError> {
                    c.conn.execute("insert into simple values (1)", [])?;
                    c.conn.execute("insert into simple values (1)", [])?;
                    Ok(())
                })
                .await
                .unwrap_err();
            assert!(e.is_constraint(), "the original error wins: {e:?}");
            assert_eq!(logged_errors("original-interaction", "rollback failed"), 1);
            // The rollback itself happened and the probe passed: the
            // connection is kept.
            knobs.fail_rollback.store(false, Ordering::SeqCst);
            assert_eq!(p.run_interaction(count).await.unwrap(), 0);
            assert_eq!(knobs.opens.load(Ordering::SeqCst), 1);
            p.close().await.unwrap();
        })
        .unwrap();
}

#[test]
fn test_run_with_connection_raise_original_error() {
    events(); // capture logs from here on
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let (p, knobs) = flaky(&reactor, &dir, "original-connection", true);
    reactor
        .run_until_complete(async move {
            knobs.fail_rollback.store(true, Ordering::SeqCst);
            let e = p
                .run_with_connection(|c| -> Result<(), DbError> {
                    c.conn.execute("select * from NOTABLE", [])?;
                    Ok(())
                })
                .await
                .unwrap_err();
            assert_eq!(
                e.kind(),
                Some(ErrorKind::Other),
                "the original error wins: {e:?}"
            );
            assert!(e.to_string().contains("NOTABLE"), "{e}");
            assert_eq!(logged_errors("original-connection", "rollback failed"), 1);
            p.close().await.unwrap();
        })
        .unwrap();
}

#[test]
fn after_a_failed_rollback_a_failed_probe_drops_the_connection() {
    // Twisted's reconnecting `Connection.rollback`: rollback and probe fail,
    // the connection is disconnected and the next job opens a new one.
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let (p, knobs) = flaky(&reactor, &dir, "probe-decides", true);
    reactor
        .run_until_complete(async move {
            p.run_interaction(|c| Ok(c.conn.execute_batch("CREATE TABLE simple (x integer)")?))
                .await
                .unwrap();
            knobs.fail_rollback.store(true, Ordering::SeqCst);
            knobs.fail_probe.store(true, Ordering::SeqCst);
            let e = p
                .run_interaction(|c| -> Result<(), DbError> {
                    c.conn.execute("insert into simple values (1)", [])?;
                    Err(c
                        .conn
                        .execute("select * from NOTABLE", [])
                        .unwrap_err()
                        .into())
                })
                .await
                .unwrap_err();
            assert_eq!(e.kind(), Some(ErrorKind::Other));
            knobs.fail_rollback.store(false, Ordering::SeqCst);
            knobs.fail_probe.store(false, Ordering::SeqCst);
            assert_eq!(knobs.closes.load(Ordering::SeqCst), 1);
            // The insert was rolled back; a fresh connection serves the next job.
            assert_eq!(p.run_interaction(count).await.unwrap(), 0);
            assert_eq!(knobs.opens.load(Ordering::SeqCst), 2);
            p.close().await.unwrap();
        })
        .unwrap();
}

#[test]
fn test_close_log_error() {
    events(); // capture logs from here on
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let (p, knobs) = flaky(&reactor, &dir, "close-log-error", true);
    knobs.fail_close.store(true, Ordering::SeqCst);
    reactor
        .run_until_complete(async move {
            p.run_interaction(|_| Ok(())).await.unwrap();
            p.close().await.unwrap(); // does not raise
        })
        .unwrap();
    assert_eq!(knobs.closes.load(Ordering::SeqCst), 1);
    assert_eq!(
        logged_errors("close-log-error", "connection close failed"),
        1
    );
}

#[test]
fn test_unstarted_close() {
    // Closing before the reactor runs removes the startup trigger: the pool
    // never starts, and the work submitted meanwhile fails `Stopped`.
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let (p, knobs) = flaky(&reactor, &dir, "unstarted", true);
    let early = p.run_interaction(|_| Ok(1));
    p.close().detach();
    assert!(!p.is_running());
    let out = reactor.run_until_complete(early).unwrap();
    assert!(matches!(out, Err(DbError::Stopped)), "{out:?}");
    assert!(!p.is_running());
    assert_eq!(knobs.opens.load(Ordering::SeqCst), 0);
}

#[test]
fn test_started_close() {
    // Closing a started pool removes its shutdown trigger: shutdown does not
    // close it again, and each connection was closed exactly once.
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let (p, knobs) = flaky(&reactor, &dir, "started", true);
    let q = p.clone();
    reactor
        .run_until_complete(async move {
            assert!(q.is_running());
            q.run_interaction(|_| Ok(())).await.unwrap();
            q.close().await.unwrap();
        })
        .unwrap();
    reactor.stop();
    reactor.run().unwrap();
    assert_eq!(knobs.opens.load(Ordering::SeqCst), 1);
    assert_eq!(knobs.closes.load(Ordering::SeqCst), 1);
}

#[test]
fn close_with_work_in_flight_delivers_everything() {
    // Twisted's `finalClose` closes off-thread and drops queued work
    // (Deferreds that never fire); here every job runs and delivers, and
    // work after close fails at once.
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let (p, knobs) = flaky(&reactor, &dir, "in-flight", true);
    reactor
        .run_until_complete(async move {
            p.run_interaction(|c| Ok(c.conn.execute_batch("CREATE TABLE simple (x integer)")?))
                .await
                .unwrap();
            let jobs: Vec<_> = (0..N)
                .map(|i| {
                    p.run_interaction(move |c| {
                        Ok(c.conn.execute("insert into simple values (?1)", (i,))?)
                    })
                })
                .collect();
            let closed = p.close();
            let late = p.run_interaction(|_| Ok(0));
            assert!(matches!(late.await, Err(DbError::Stopped)));
            for d in jobs {
                assert_eq!(d.await.unwrap(), 1);
            }
            closed.await.unwrap();
        })
        .unwrap();
    assert_eq!(knobs.closes.load(Ordering::SeqCst), 1);
    let conn = rusqlite::Connection::open(dir.path().join("flaky.db")).unwrap();
    let n: i64 = conn
        .query_row("select count(*) from simple", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, N);
}
