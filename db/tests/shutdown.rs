//! Reactor shutdown with 1,000 interactions in flight: every `Deferred`
//! resolves, nothing is committed twice, and nothing reported committed is
//! lost.

use std::cell::RefCell;
use std::rc::Rc;

use weft::Reactor;
use weft::reactor::QueuedWork;
use weft_db::{ConnectionPool, DbError, SqliteConnector};

const JOBS: i64 = 1000;

type Outcomes = Rc<RefCell<Vec<(i64, Result<usize, DbError>)>>>;

fn shutdown_with_jobs_in_flight(policy: QueuedWork) -> (Outcomes, Vec<i64>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shutdown.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("create table t (id integer)") // no key: a double commit would show
        .unwrap();
    let reactor = Reactor::new().unwrap();
    let pool = ConnectionPool::builder(SqliteConnector::new(&path))
        .max(3)
        .queued_work_at_close(policy)
        .build(&reactor.handle())
        .unwrap();
    let outcomes: Outcomes = Rc::default();
    let o = outcomes.clone();
    let handle = reactor.handle();
    reactor.call_soon(move || {
        for id in 0..JOBS {
            let o = o.clone();
            pool.run_interaction(move |c| Ok(c.execute("insert into t values (?1)", (id,))?))
                .add_both(move |r| o.borrow_mut().push((id, r)));
        }
        // With all 1,000 in flight; `pool` is dropped here, so only the
        // shutdown trigger keeps it alive (it used to be dropped unclosed).
        handle.stop();
    });
    reactor.run().unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let ids: Vec<i64> = conn
        .prepare("select id from t order by id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    drop(conn);
    assert!(
        !dir.path().join("shutdown.db-wal").exists(),
        "connections were closed"
    );
    (outcomes, ids)
}

fn check(outcomes: &Outcomes, ids: &[i64]) -> (usize, usize) {
    let outcomes = outcomes.borrow();
    assert_eq!(outcomes.len() as i64, JOBS, "every Deferred resolved once");
    let mut seen = vec![0u32; JOBS as usize];
    for &id in ids {
        seen[id as usize] += 1;
    }
    assert!(seen.iter().all(|&n| n <= 1), "nothing committed twice");
    let (mut ok, mut cancelled) = (0, 0);
    for (id, r) in outcomes.iter() {
        match r {
            Ok(1) => {
                ok += 1;
                assert_eq!(
                    seen[*id as usize], 1,
                    "job {id} reported committed but lost"
                );
            }
            Err(DbError::Cancelled) => {
                cancelled += 1;
                assert_eq!(
                    seen[*id as usize], 0,
                    "job {id} reported cancelled but committed"
                );
            }
            other => panic!("job {id}: unexpected {other:?}"),
        }
    }
    (ok, cancelled)
}

#[test]
fn shutdown_runs_queued_interactions_and_delivers_them() {
    let (outcomes, ids) = shutdown_with_jobs_in_flight(QueuedWork::Run);
    let (ok, cancelled) = check(&outcomes, &ids);
    assert_eq!((ok, cancelled), (JOBS as usize, 0));
}

#[test]
fn shutdown_cancels_queued_interactions_under_the_cancel_policy() {
    let (outcomes, ids) = shutdown_with_jobs_in_flight(QueuedWork::Cancel);
    let (ok, cancelled) = check(&outcomes, &ids);
    assert_eq!(ok + cancelled, JOBS as usize);
    assert_eq!(ids.len(), ok);
    eprintln!("cancel policy: {ok} committed, {cancelled} cancelled unrun");
}
