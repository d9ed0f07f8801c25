//! `SharedPool`: one pool called from several reactors on several threads.
//! Every caller's job reaches the connection threads directly and its
//! result comes back on the caller's own loop; statistics count every
//! caller's jobs; `close` (on the owner) waits for jobs other loops handed
//! over; misuse gets an error value. Ordering by channels and barriers,
//! never by sleeps.

use std::sync::mpsc;
use std::thread::{self, ThreadId};

use weft::Reactor;
use weft_db::{ConnectionPool, DbError, SharedPool, SqliteConnector};

const JOBS: i64 = 50;

fn file_pool(reactor: &Reactor, max: usize) -> (tempfile::TempDir, ConnectionPool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("pragma journal_mode = wal; create table t (id integer, loop text)")
        .unwrap();
    let pool = ConnectionPool::builder(SqliteConnector::new(&path))
        .max(max)
        .build(&reactor.handle())
        .unwrap();
    (dir, pool)
}

/// On a new thread with its own reactor: `JOBS` writes and `JOBS` reads
/// through `shared`; returns this thread's id and, for every result, the
/// thread its callback ran on and the result.
fn caller(shared: SharedPool, tag: &'static str) -> thread::JoinHandle<(ThreadId, Vec<ThreadId>)> {
    thread::spawn(move || {
        let reactor = Reactor::new().unwrap();
        let me = thread::current().id();
        let out = reactor.run_until_complete(async move {
            let mut seen = Vec::new();
            for id in 0..JOBS {
                let w = shared.run_operation("insert into t values (?1, ?2)", (id, tag));
                let r = shared.run_query("select count(*) from t where loop = ?1", (tag,));
                let here = |v| Ok::<_, DbError>((v, thread::current().id()));
                let (n, on) = w.add_callbacks(here, Err).await.unwrap();
                assert_eq!(n, 1);
                seen.push(on);
                let here = |v| Ok::<_, DbError>((v, thread::current().id()));
                let (rows, on) = r.add_callbacks(here, Err).await.unwrap();
                assert_eq!(rows.len(), 1);
                seen.push(on);
            }
            seen
        });
        (me, out.unwrap())
    })
}

#[test]
fn calls_from_two_reactors_on_two_threads_are_served_and_answered_on_each_callers_loop() {
    let reactor = Reactor::new().unwrap();
    let (dir, pool) = file_pool(&reactor, 3); // a writer and two readers
    // Started before the owner runs: their first jobs wait for the start.
    let a = caller(pool.shared(), "a");
    let b = caller(pool.shared(), "b");
    let joined = reactor.defer_to_thread(move || (a.join().unwrap(), b.join().unwrap()));
    let ((a_id, a_seen), (b_id, b_seen)) = reactor.run_until_complete(joined).unwrap().unwrap();
    assert_ne!(a_id, b_id);
    assert_eq!(a_seen.len(), 2 * JOBS as usize);
    assert!(a_seen.iter().all(|t| *t == a_id), "a's results on a's loop");
    assert!(b_seen.iter().all(|t| *t == b_id), "b's results on b's loop");

    let s = pool.statistics();
    assert_eq!(s.writer.submitted, 2 * JOBS as u64);
    assert_eq!(s.writer.completed, 2 * JOBS as u64);
    assert_eq!(s.readers.submitted, 2 * JOBS as u64);
    assert_eq!(s.readers.completed, 2 * JOBS as u64);
    assert_eq!(
        s.total().failed + s.total().refused + s.total().cancelled,
        0
    );
    assert_eq!(pool.shared().statistics(), s);

    let p = pool.clone();
    let rows = reactor
        .run_until_complete(async move {
            let rows = p
                .run_query_map(
                    "select loop, count(*) from t group by loop order by loop",
                    [],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                )
                .await;
            p.close().await.unwrap();
            rows
        })
        .unwrap()
        .unwrap();
    assert_eq!(rows, [("a".to_owned(), JOBS), ("b".to_owned(), JOBS)]);
    drop(dir);
}

#[test]
fn close_waits_for_a_job_another_loop_handed_over_and_refuses_later_ones() {
    let reactor = Reactor::new().unwrap();
    let (_dir, pool) = file_pool(&reactor, 1);
    let shared = pool.shared();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (closing_tx, closing_rx) = mpsc::channel::<()>();
    let other = thread::spawn(move || {
        let reactor = Reactor::new().unwrap();
        reactor
            .run_until_complete(async move {
                let held = shared.run_interaction(move |c| {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok(c.execute("insert into t values (1, 'held')", [])?)
                });
                let first = held.await;
                // `close` began before the job was released.
                let _ = weft::reactor::current()
                    .unwrap()
                    .defer_to_thread(move || closing_rx.recv().unwrap())
                    .await;
                let later = shared
                    .run_operation("insert into t values (2, 'late')", [])
                    .await;
                (first, later)
            })
            .unwrap()
    });
    let p = pool.clone();
    let closed_after_release = reactor
        .run_until_complete(async move {
            let handle = weft::reactor::current().unwrap();
            handle
                .defer_to_thread(move || started_rx.recv().unwrap())
                .await
                .unwrap();
            let closed = p.close();
            assert!(
                !closed.is_resolved(),
                "the other loop's job holds the writer"
            );
            closing_tx.send(()).unwrap();
            release_tx.send(()).unwrap();
            closed.await.unwrap();
            // Closed means the job ran and its connection is closed.
            let rows: i64 = rusqlite::Connection::open(_dir.path().join("shared.db"))
                .unwrap()
                .query_row("select count(*) from t where loop = 'held'", [], |r| {
                    r.get(0)
                })
                .unwrap();
            rows
        })
        .unwrap();
    assert_eq!(closed_after_release, 1);
    let (first, later) = other.join().unwrap();
    assert_eq!(first.unwrap(), 1);
    assert!(matches!(later, Err(DbError::Stopped)), "{later:?}");
    let s = pool.statistics().writer;
    assert_eq!((s.submitted, s.completed, s.refused), (2, 1, 1));
}

#[test]
fn a_caller_loop_gone_while_its_job_runs_drops_the_result_and_the_pool_goes_on() {
    let reactor = Reactor::new().unwrap();
    let (_dir, pool) = file_pool(&reactor, 1);
    let p = pool.clone();
    let shared = pool.shared();
    let (rows, after) = reactor
        .run_until_complete(async move {
            let handle = weft::reactor::current().unwrap();
            let (started_tx, started_rx) = mpsc::channel::<()>();
            let (release_tx, release_rx) = mpsc::channel::<()>();
            // The other loop hands a job over and is gone while it runs.
            let gone = thread::spawn(move || {
                let reactor = Reactor::new().unwrap();
                let d = shared.run_interaction(move |c| {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok(c.execute("insert into t values (1, 'gone')", [])?)
                });
                started_rx.recv().unwrap();
                drop(d);
                drop(reactor);
            });
            handle
                .defer_to_thread(move || gone.join().unwrap())
                .await
                .unwrap();
            release_tx.send(()).unwrap();
            // Behind it on the one writer: it committed, and the pool serves on.
            let after = p
                .run_operation("insert into t values (2, 'owner')", [])
                .await;
            let rows = p.run_query("select loop from t order by id", []).await;
            p.close().await.unwrap();
            (rows, after)
        })
        .unwrap();
    assert_eq!(rows.unwrap().len(), 2);
    assert_eq!(after.unwrap(), 1);
    let s = pool.statistics();
    assert_eq!(
        (s.writer.submitted, s.writer.completed, s.writer.panicked),
        (3, 3, 0)
    );
}

#[test]
fn a_caller_loop_gone_before_its_job_starts_gets_the_job_dropped_unrun() {
    let reactor = Reactor::new().unwrap();
    let (_dir, pool) = file_pool(&reactor, 1);
    let p = pool.clone();
    let shared = pool.shared();
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = ran.clone();
    let after = reactor
        .run_until_complete(async move {
            let handle = weft::reactor::current().unwrap();
            let (started_tx, started_rx) = mpsc::channel::<()>();
            let (release_tx, release_rx) = mpsc::channel::<()>();
            let blocker = p.run_interaction(move |_| {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                Ok(())
            });
            handle
                .defer_to_thread(move || started_rx.recv().unwrap())
                .await
                .unwrap();
            // Queued behind the blocker; its loop is gone before it starts.
            let gone = thread::spawn(move || {
                let reactor = Reactor::new().unwrap();
                let d = shared.run_interaction(move |_| {
                    r.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok(())
                });
                drop(d);
                drop(reactor);
            });
            handle
                .defer_to_thread(move || gone.join().unwrap())
                .await
                .unwrap();
            release_tx.send(()).unwrap();
            blocker.await.unwrap();
            let after = p
                .run_operation("insert into t values (2, 'owner')", [])
                .await;
            p.close().await.unwrap();
            after
        })
        .unwrap();
    assert_eq!(after.unwrap(), 1);
    assert!(
        !ran.load(std::sync::atomic::Ordering::SeqCst),
        "never started"
    );
    let s = pool.statistics().writer;
    assert_eq!(
        (s.submitted, s.completed, s.refused + s.cancelled),
        (3, 2, 1)
    );
}

#[test]
fn a_shared_pool_called_off_any_loop_fails_not_on_loop_and_submits_nothing() {
    let reactor = Reactor::new().unwrap();
    let pool = ConnectionPool::new(&reactor.handle(), SqliteConnector::new(":memory:")).unwrap();
    let shared = pool.shared();
    let err = thread::spawn(move || {
        let mut d = shared.run_query("select 1", []);
        assert!(d.is_resolved());
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(&mut d).poll(&mut cx) {
            std::task::Poll::Ready(r) => r.unwrap_err().to_string(),
            std::task::Poll::Pending => panic!("a failed Deferred is ready"),
        }
    })
    .join()
    .unwrap();
    assert_eq!(err, DbError::<rusqlite::Error>::NotOnLoop.to_string());
    assert_eq!(pool.statistics().total().submitted, 0);
}

#[test]
fn jobs_handed_over_to_a_pool_that_closes_before_it_starts_fail_stopped() {
    let reactor = Reactor::new().unwrap();
    let pool = ConnectionPool::new(&reactor.handle(), SqliteConnector::new(":memory:")).unwrap();
    let shared = pool.shared();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    let other = thread::spawn(move || {
        let reactor = Reactor::new().unwrap();
        let d = shared.run_query("select 1", []);
        ready_tx.send(()).unwrap();
        closed_rx.recv().unwrap();
        reactor.run_until_complete(d).unwrap()
    });
    ready_rx.recv().unwrap();
    // Never started (its reactor never ran): closing answers the waiting job.
    let closed = pool.close();
    assert!(closed.is_resolved());
    closed_tx.send(()).unwrap();
    let r = other.join().unwrap();
    assert!(matches!(r, Err(DbError::Stopped)), "{r:?}");
    let s = pool.statistics().total();
    assert_eq!((s.submitted, s.refused), (1, 1));
}

use std::future::Future as _;

#[test]
fn a_shared_pool_is_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<SharedPool>();
    check::<SharedPool<SqliteConnector>>();
}

#[test]
fn jobs_from_two_loops_racing_close_all_resolve_and_every_ok_is_committed() {
    const EACH: usize = 300;
    let reactor = Reactor::new().unwrap();
    let (dir, pool) = file_pool(&reactor, 2);
    let (first_tx, first_rx) = mpsc::channel::<()>();
    let spawn = |tag: &'static str, first: mpsc::Sender<()>| {
        let shared = pool.shared();
        thread::spawn(move || {
            let reactor = Reactor::new().unwrap();
            reactor
                .run_until_complete(async move {
                    let mut out = Vec::with_capacity(EACH);
                    // Two in flight at a time, so close meets queued jobs too.
                    for i in (0..EACH).step_by(2) {
                        let a =
                            shared.run_operation("insert into t values (?1, ?2)", (i as i64, tag));
                        let b = shared
                            .run_operation("insert into t values (?1, ?2)", (i as i64 + 1, tag));
                        out.push(a.await);
                        out.push(b.await);
                        let _ = first.send(());
                    }
                    out
                })
                .unwrap()
        })
    };
    let a = spawn("a", first_tx.clone());
    let b = spawn("b", first_tx);
    let p = pool.clone();
    let results = reactor
        .run_until_complete(async move {
            let handle = weft::reactor::current().unwrap();
            handle
                .defer_to_thread(move || first_rx.recv().unwrap())
                .await
                .unwrap();
            p.close().await.unwrap();
            handle
                .defer_to_thread(move || {
                    let mut all = a.join().unwrap();
                    all.extend(b.join().unwrap());
                    all
                })
                .await
                .unwrap()
        })
        .unwrap();
    assert_eq!(results.len(), 2 * EACH);
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let stopped = results
        .iter()
        .filter(|r| matches!(r, Err(DbError::Stopped)))
        .count();
    assert_eq!(ok + stopped, 2 * EACH, "only committed or Stopped");
    let rows: i64 = rusqlite::Connection::open(dir.path().join("shared.db"))
        .unwrap()
        .query_row("select count(*) from t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows as usize, ok, "every Ok is committed, nothing else is");
    let s = pool.statistics().writer;
    assert_eq!(s.submitted, 2 * EACH as u64);
    assert_eq!((s.completed, s.refused), (ok as u64, stopped as u64));
}

/// A job that appends `tag` to `order` on the connection thread.
fn record(
    order: &Order,
    tag: &'static str,
) -> impl FnOnce(&mut rusqlite::Connection) -> Result<(), DbError> + Send + 'static {
    let order = order.clone();
    move |_| {
        order.lock().unwrap().push(tag);
        Ok(())
    }
}

type Order = std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>;

/// Runs `turn` on the loop once `pool` runs (it starts with the loop),
/// given the pool, its `SharedPool` and a recorder for [`record`]; returns
/// `turn`'s output and the order in which the recorded jobs ran.
fn on_running_pool<T: 'static, Fut: std::future::Future<Output = T> + 'static>(
    reactor: &Reactor,
    pool: ConnectionPool<SqliteConnector>,
    turn: impl FnOnce(ConnectionPool<SqliteConnector>, SharedPool<SqliteConnector>, Order) -> Fut
    + 'static,
) -> (T, Vec<&'static str>) {
    let shared = pool.shared();
    let order = Order::default();
    let o = order.clone();
    let out = reactor
        .run_until_complete(async move {
            pool.run_with_connection(|_| Ok::<_, DbError>(()))
                .await
                .unwrap();
            turn(pool, shared, o).await
        })
        .unwrap();
    let ran = order.lock().unwrap().clone();
    (out, ran)
}

/// Runs one turn that submits two jobs through the `SharedPool` and then
/// one through the owner, on a pool with one connection (the writer
/// alone); the order in which the writer ran them.
fn order_of_one_turns_jobs(
    reactor: &Reactor,
    pool: ConnectionPool<SqliteConnector>,
) -> Vec<&'static str> {
    let ((a, b, c), ran) = on_running_pool(reactor, pool, |pool, shared, o| async move {
        let a = shared.run_with_connection(record(&o, "shared 1"));
        let b = shared.run_with_connection(record(&o, "shared 2"));
        let c = pool.run_with_connection(record(&o, "owner"));
        (a.await, b.await, c.await)
    });
    assert!(a.is_ok() && b.is_ok() && c.is_ok());
    ran
}

#[test]
fn a_loops_shared_jobs_of_one_turn_are_handed_over_together_when_the_turn_ends() {
    let reactor = Reactor::new().unwrap();
    let (_dir, pool) = file_pool(&reactor, 1); // the writer alone
    // The shared ones wait for the end of the turn and reach the writer
    // together, behind the one the owner handed over directly.
    assert_eq!(
        order_of_one_turns_jobs(&reactor, pool),
        ["owner", "shared 1", "shared 2"]
    );
}

#[test]
fn the_owners_shared_jobs_of_the_turn_that_closes_the_pool_still_run() {
    let reactor = Reactor::new().unwrap();
    let (_dir, pool) = file_pool(&reactor, 2);
    let ((w, r, late, closed), mut ran) =
        on_running_pool(&reactor, pool, |pool, shared, o| async move {
            // Submitted before the close, in the same turn: handed over by the
            // close itself, so they run and the close waits for them.
            let w = shared.run_with_connection(record(&o, "write"));
            let r = shared.run_read(record(&o, "read"));
            let closed = pool.close();
            let late = shared.run_read(record(&o, "late"));
            (w.await, r.await, late.await, closed.await)
        });
    assert!(w.is_ok() && r.is_ok() && closed.is_ok());
    assert!(matches!(late, Err(DbError::Stopped)));
    ran.sort();
    assert_eq!(ran, ["read", "write"]);
}

#[test]
fn a_pool_built_to_hand_over_per_job_forwards_each_shared_job_as_it_is_submitted() {
    let reactor = Reactor::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pool = ConnectionPool::builder(SqliteConnector::new(dir.path().join("a.db")))
        .max(1)
        .hand_over_per_turn(false)
        .build(&reactor.handle())
        .unwrap();
    assert_eq!(
        order_of_one_turns_jobs(&reactor, pool),
        ["shared 1", "shared 2", "owner"]
    );
}
