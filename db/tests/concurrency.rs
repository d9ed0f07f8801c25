//! 8 concurrent readers and 4 concurrent writers on a file database: no
//! SQLITE_BUSY, every committed row readable, counts exact.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;

use weft::{Reactor, gather};
use weft_db::{ConnectionPool, DbError, SqliteConnector};

const WRITERS: i64 = 4;
const READERS: usize = 8;
const WRITES_PER_WRITER: i64 = 750; // 3,000 write transactions
const READS_PER_READER: usize = 400; // 3,200 read jobs

#[test]
fn eight_readers_four_writers_no_busy_and_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("concurrent.db");
    let reactor = Reactor::new().unwrap();
    let pool = ConnectionPool::builder(SqliteConnector::new(&path))
        .max(1 + READERS) // one writer, eight readers
        .min(1 + READERS)
        .build(&reactor.handle())
        .unwrap();
    let committed: Rc<RefCell<Vec<(i64, i64)>>> = Rc::default();
    let busy = Rc::new(Cell::new(0usize));
    let handle = reactor.handle();
    let p = pool.clone();
    let (c, b) = (committed.clone(), busy.clone());
    reactor
        .run_until_complete(async move {
            p.run_operation(
                "create table log (writer integer, seq integer, total integer, primary key (writer, seq))",
                [],
            )
            .await
            .unwrap();
            let mut streams = Vec::new();
            for w in 0..WRITERS {
                let (p, c, b) = (p.clone(), c.clone(), b.clone());
                streams.push(handle.spawn_local(async move {
                    for seq in 0..WRITES_PER_WRITER {
                        // Read-then-write: fails at once with BUSY/517
                        // under DEFERRED with several writer connections.
                        let r = p
                            .run_interaction(move |conn| -> Result<(), DbError> {
                                let total: i64 = conn
                                    .prepare_cached("select count(*) from log")?
                                    .query_row([], |r| r.get(0))?;
                                conn.prepare_cached("insert into log values (?1, ?2, ?3)")?
                                    .execute((w, seq, total + 1))?;
                                Ok(())
                            })
                            .await;
                        match r {
                            Ok(()) => c.borrow_mut().push((w, seq)),
                            Err(e) if e.is_busy() => b.set(b.get() + 1),
                            Err(e) => panic!("write failed: {e}"),
                        }
                    }
                }));
            }
            for _ in 0..READERS {
                let (p, c, b) = (p.clone(), c.clone(), b.clone());
                streams.push(handle.spawn_local(async move {
                    let mut last = 0;
                    for i in 0..READS_PER_READER {
                        // A row reported committed before this read was
                        // issued must be visible to it.
                        let known = c.borrow().get(i * 7 % c.borrow().len().max(1)).copied();
                        let counted = p.run_query_map("select count(*) from log", [], |r| r.get::<_, i64>(0));
                        let found = known.map(|(w, s)| {
                            p.run_query_map(
                                "select total from log where writer = ?1 and seq = ?2",
                                (w, s),
                                |r| r.get::<_, i64>(0),
                            )
                        });
                        match counted.await {
                            Ok(n) => {
                                assert!(n[0] >= last, "counts never go back");
                                last = n[0];
                            }
                            Err(e) if e.is_busy() => b.set(b.get() + 1),
                            Err(e) => panic!("read failed: {e}"),
                        }
                        if let Some(found) = found {
                            match found.await {
                                Ok(rows) => assert_eq!(rows.len(), 1, "committed row {known:?} not readable"),
                                Err(e) if e.is_busy() => b.set(b.get() + 1),
                                Err(e) => panic!("read failed: {e}"),
                            }
                        }
                    }
                }));
            }
            gather(streams).await.unwrap();
            p.close().await.unwrap();
        })
        .unwrap();
    assert_eq!(busy.get(), 0, "SQLITE_BUSY seen");
    let committed = committed.borrow();
    assert_eq!(committed.len() as i64, WRITERS * WRITES_PER_WRITER);
    // Check the file directly, after the pool closed it.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = conn
        .query_row("select count(*) from log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, WRITERS * WRITES_PER_WRITER);
    let rows: HashSet<(i64, i64)> = conn
        .prepare("select writer, seq from log")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(committed.iter().all(|k| rows.contains(k)));
    // Serialised writes: the running totals are exactly 1..=n.
    let totals: Vec<i64> = conn
        .prepare("select total from log order by total")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(totals, (1..=n).collect::<Vec<_>>());
    drop(conn);
    dir.close().unwrap();
}
