//! The database rows (issue 11): the same SQLite work through weft-db and
//! through the patterns a tokio user would pick, over a fresh temp-file
//! database per cell.
//!
//! - **Same database settings for all**: WAL, `synchronous=NORMAL`, a 5 s
//!   busy timeout, `foreign_keys=ON`, a 64-statement cache (weft-db's
//!   `SqliteConnector` defaults, set by hand on the others' connections).
//!   Statements go through `prepare_cached` everywhere.
//! - **Same work for all**: an insert is `BEGIN IMMEDIATE; INSERT INTO log
//!   (n, v) VALUES (?, ?); COMMIT`; a read is `SELECT v FROM kv WHERE id = ?`
//!   on a table of `db_rows` rows filled before the measured section (keys
//!   spread by a fixed stride); the mix makes every tenth operation an insert.
//!   [`IN_FLIGHT`] clients each run their share of the operations one after
//!   another, so 16 are in flight; every value read is checked.
//! - Subjects:
//!   - `weft`: `weft_db::ConnectionPool` (defaults: 1 writer + 2 readers,
//!     all opened up front), inserts by `run_interaction`, reads by
//!     `run_read`, 16 `spawn_local` tasks on the reactor;
//!   - `tokio`: `Arc<Mutex<rusqlite::Connection>>` and
//!     `tokio::task::spawn_blocking` per operation, 16 `tokio::spawn` tasks
//!     on a `current_thread` runtime (the pattern most tokio + rusqlite code
//!     uses); the blocking pool at its default (512 threads);
//!   - `tokio-capped`: the same with `max_blocking_threads` at the
//!     connection count (1), so no thread waits on the mutex;
//!   - `tokio-pool`: what `deadpool-sqlite`'s `interact` does (it does not
//!     build next to weft-db: it needs an older `rusqlite`, and two
//!     `libsqlite3-sys` cannot link): [`POOL_SIZE`] connections behind a
//!     tokio `Semaphore`, each operation `spawn_blocking` with a checked-out
//!     connection;
//!   - `std`: the floor, no hop and no queue: [`POOL_SIZE`] threads, one
//!     connection each, the operations split between them up front; every
//!     insert runs on thread 0 (the one writer), reads on all three.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior, params};

use crate::model::{Params, Scenario, mark_end, mark_start, per_op};

/// Operations in flight.
const IN_FLIGHT: usize = 16;
/// Connections of weft-db's default pool, `tokio-pool` and `std`.
const POOL_SIZE: usize = 3;
const INSERT: &str = "insert into log (n, v) values (?1, ?2)";
const READ: &str = "select v from kv where id = ?1";
const VALUE: &str = "a value of about the size of a short name or a title";

/// Whether `sc` is a database row.
pub(super) fn is_db(sc: Scenario) -> bool {
    matches!(
        sc,
        Scenario::DbInsert | Scenario::DbPointRead | Scenario::DbMix
    )
}

/// Measures database row `sc` for the subject called `name`.
pub(super) fn measure(name: &str, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
    let run: fn(&Work) -> f64 = match name {
        "weft" => weft_db,
        "tokio" => |w| tokio_mutex(w, false),
        "tokio-capped" => |w| tokio_mutex(w, true),
        "tokio-pool" => tokio_pool,
        "std" => std_threads,
        _ => return Err("database rows: weft, tokio, tokio-capped, tokio-pool, std"),
    };
    let w = Work::new(sc, p);
    let v = run(&w);
    w.remove();
    Ok(vec![v])
}

/// One cell's database and operations.
struct Work {
    path: PathBuf,
    ops: usize,
    rows: usize,
    /// Every `write_every`-th operation is an insert (1: all of them).
    write_every: usize,
}

/// What operation `i` does.
#[derive(Clone, Copy)]
enum Op {
    Insert(i64),
    Read(i64),
}

impl Work {
    fn new(sc: Scenario, p: &Params) -> Work {
        let (ops, write_every) = match sc {
            Scenario::DbInsert => (p.db_inserts, 1),
            Scenario::DbPointRead => (p.db_reads, usize::MAX),
            _ => (p.db_mix_ops, 10),
        };
        let path = std::env::temp_dir().join(format!("weft-bench-{}.sqlite", std::process::id()));
        let w = Work {
            path,
            ops,
            rows: p.db_rows,
            write_every,
        };
        w.remove();
        let mut c = w.open();
        c.execute_batch(
            "create table kv (id integer primary key, v text not null);
             create table log (id integer primary key, n integer not null, v text not null);",
        )
        .expect("schema");
        let tx = c.transaction().expect("fill");
        {
            let mut st = tx
                .prepare("insert into kv (id, v) values (?1, ?2)")
                .expect("fill");
            for id in 1..=w.rows as i64 {
                st.execute(params![id, VALUE]).expect("fill");
            }
        }
        tx.commit().expect("fill");
        w
    }

    /// A connection with the settings every subject uses (weft-db's
    /// `SqliteConnector` defaults).
    fn open(&self) -> Connection {
        let c = Connection::open(&self.path).expect("open database");
        c.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        c.execute_batch(
            "pragma journal_mode=wal; pragma synchronous=normal; pragma foreign_keys=on;",
        )
        .expect("pragmas");
        c.set_prepared_statement_cache_capacity(64);
        c
    }

    fn op(&self, i: usize) -> Op {
        if self.write_every != usize::MAX && i % self.write_every == self.write_every - 1 {
            Op::Insert(i as i64)
        } else {
            Op::Read((i * 7919 % self.rows) as i64 + 1)
        }
    }

    /// The operations of client `k` of `n`.
    fn share(&self, k: usize, n: usize) -> impl Iterator<Item = Op> + '_ {
        (k..self.ops).step_by(n).map(|i| self.op(i))
    }

    fn remove(&self) {
        for ext in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(ext);
            let _ = std::fs::remove_file(p);
        }
    }
}

fn insert(c: &mut Connection, n: i64) -> rusqlite::Result<()> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached(INSERT)?.execute(params![n, VALUE])?;
    tx.commit()
}

fn read(c: &Connection, id: i64) -> rusqlite::Result<usize> {
    c.prepare_cached(READ)?.query_row([id], |r| {
        r.get_ref(0)?.as_str().map(str::len).map_err(Into::into)
    })
}

/// Runs `op` on `c` as every subject but weft does (weft-db opens the
/// transaction itself).
fn run_op(c: &mut Connection, op: Op) {
    match op {
        Op::Insert(n) => insert(c, n).expect("insert"),
        Op::Read(id) => assert_eq!(read(c, id).expect("read"), VALUE.len()),
    }
}

fn weft_db(w: &Work) -> f64 {
    use weft_db::{ConnectionPool, DbError, SqliteConnector};
    let reactor = super::weft_rows::reactor();
    let pool = ConnectionPool::builder(SqliteConnector::new(&w.path))
        .max(POOL_SIZE)
        .min(POOL_SIZE)
        .build(&reactor.handle())
        .expect("weft-db pool");
    let ops: Vec<Vec<Op>> = (0..IN_FLIGHT)
        .map(|k| w.share(k, IN_FLIGHT).collect())
        .collect();
    let h = reactor.handle();
    let total = w.ops;
    let per = reactor.run_until_complete(async move {
        // Warm-up: every connection open, statements prepared.
        let warm = pool.run_read(|c| Ok::<_, DbError>(read(c, 1)?));
        assert_eq!(warm.await.expect("warm read"), VALUE.len());
        pool.run_interaction(|c| {
            c.prepare_cached(INSERT)?.execute(params![-1, VALUE])?;
            Ok::<_, DbError>(())
        })
        .await
        .expect("warm insert");
        mark_start();
        let start = Instant::now();
        let clients: Vec<_> = ops
            .into_iter()
            .map(|share| {
                let pool = pool.clone();
                h.spawn_local(async move {
                    for op in share {
                        match op {
                            Op::Insert(n) => pool
                                .run_interaction(move |c| {
                                    c.prepare_cached(INSERT)?.execute(params![n, VALUE])?;
                                    Ok::<_, DbError>(())
                                })
                                .await
                                .expect("insert"),
                            Op::Read(id) => {
                                let d = pool.run_read(move |c| Ok::<_, DbError>(read(c, id)?));
                                assert_eq!(d.await.expect("read"), VALUE.len());
                            }
                        }
                    }
                })
            })
            .collect();
        for c in clients {
            c.await.expect("client task");
        }
        let end = Instant::now();
        mark_end();
        pool.close().await.expect("close");
        per_op(start, end, total)
    });
    per.expect("weft run")
}

fn tokio_runtime(capped: Option<usize>) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    if let Some(n) = capped {
        b.max_blocking_threads(n);
    }
    b.build().expect("tokio runtime")
}

fn tokio_mutex(w: &Work, capped: bool) -> f64 {
    let rt = tokio_runtime(capped.then_some(1));
    let conn = Arc::new(Mutex::new(w.open()));
    rt.block_on(async {
        let warm = conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = warm.lock().expect("connection");
            run_op(&mut c, Op::Read(1));
            run_op(&mut c, Op::Insert(-1));
        })
        .await
        .expect("warm-up");
        mark_start();
        let start = Instant::now();
        let clients: Vec<_> = (0..IN_FLIGHT)
            .map(|k| {
                let share: Vec<Op> = w.share(k, IN_FLIGHT).collect();
                let conn = conn.clone();
                tokio::spawn(async move {
                    for op in share {
                        let conn = conn.clone();
                        tokio::task::spawn_blocking(move || {
                            run_op(&mut conn.lock().expect("connection"), op);
                        })
                        .await
                        .expect("operation");
                    }
                })
            })
            .collect();
        for c in clients {
            c.await.expect("client task");
        }
        let end = Instant::now();
        mark_end();
        per_op(start, end, w.ops)
    })
}

fn tokio_pool(w: &Work) -> f64 {
    let rt = tokio_runtime(None);
    let conns: Arc<Mutex<Vec<Connection>>> =
        Arc::new(Mutex::new((0..POOL_SIZE).map(|_| w.open()).collect()));
    let permits = Arc::new(tokio::sync::Semaphore::new(POOL_SIZE));
    // Check a connection out, run `op` on it on the blocking pool, put it back.
    async fn interact(
        conns: &Arc<Mutex<Vec<Connection>>>,
        permits: &tokio::sync::Semaphore,
        op: Op,
    ) {
        let _permit = permits.acquire().await.expect("semaphore");
        let mut c = conns
            .lock()
            .expect("pool")
            .pop()
            .expect("a free connection");
        let back = conns.clone();
        tokio::task::spawn_blocking(move || {
            run_op(&mut c, op);
            back.lock().expect("pool").push(c);
        })
        .await
        .expect("operation");
    }
    rt.block_on(async {
        for _ in 0..POOL_SIZE {
            interact(&conns, &permits, Op::Read(1)).await;
        }
        interact(&conns, &permits, Op::Insert(-1)).await;
        mark_start();
        let start = Instant::now();
        let clients: Vec<_> = (0..IN_FLIGHT)
            .map(|k| {
                let share: Vec<Op> = w.share(k, IN_FLIGHT).collect();
                let (conns, permits) = (conns.clone(), permits.clone());
                tokio::spawn(async move {
                    for op in share {
                        interact(&conns, &permits, op).await;
                    }
                })
            })
            .collect();
        for c in clients {
            c.await.expect("client task");
        }
        let end = Instant::now();
        mark_end();
        per_op(start, end, w.ops)
    })
}

fn std_threads(w: &Work) -> f64 {
    // Thread 0 holds the one writer connection and runs every insert; reads
    // are dealt round-robin to all threads.
    let mut shares: Vec<Vec<Op>> = vec![Vec::new(); POOL_SIZE];
    let mut next = 0;
    for i in 0..w.ops {
        match w.op(i) {
            op @ Op::Insert(_) => shares[0].push(op),
            op @ Op::Read(_) => {
                shares[next % POOL_SIZE].push(op);
                next += 1;
            }
        }
    }
    let barrier = Arc::new(std::sync::Barrier::new(POOL_SIZE + 1));
    let threads: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let mut c = w.open();
            run_op(&mut c, Op::Read(1));
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                for op in share {
                    run_op(&mut c, op);
                }
            })
        })
        .collect();
    mark_start();
    let start = Instant::now();
    barrier.wait();
    for t in threads {
        t.join().expect("db thread");
    }
    let end = Instant::now();
    mark_end();
    per_op(start, end, w.ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(ops: usize, write_every: usize) -> Work {
        Work {
            path: PathBuf::from("unused"),
            ops,
            rows: 100,
            write_every,
        }
    }

    #[test]
    fn the_mix_writes_every_tenth_and_reads_existing_rows() {
        let w = work(1000, 10);
        let ops: Vec<Op> = (0..w.ops).map(|i| w.op(i)).collect();
        let writes = ops.iter().filter(|o| matches!(o, Op::Insert(_))).count();
        assert_eq!(writes, 100);
        for op in ops {
            if let Op::Read(id) = op {
                assert!((1..=100).contains(&id));
            }
        }
        assert!((0..50).all(|i| matches!(work(50, 1).op(i), Op::Insert(_))));
        assert!((0..50).all(|i| matches!(work(50, usize::MAX).op(i), Op::Read(_))));
    }

    #[test]
    fn the_clients_share_every_operation_once() {
        let w = work(1003, 10);
        let total: usize = (0..IN_FLIGHT).map(|k| w.share(k, IN_FLIGHT).count()).sum();
        assert_eq!(total, 1003);
    }
}
