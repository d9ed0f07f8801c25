//! weft-db against tokio + `spawn_blocking` + `Mutex<Connection>`, in one
//! run, on the same kind of file database (WAL, `synchronous=NORMAL`):
//!
//! - `insert`: `INSERTS` single-row insert transactions, 64 in flight;
//! - `point_read`: point reads by primary key, 16 in flight;
//! - `mix_90_10`: 90 % point reads, 10 % single-row inserts, 16 in flight.
//!
//! `point_read/weft_db_histograms_off` is weft-db with
//! `PoolBuilder::histograms(false)`, for the cost of the job histograms.
//!
//! weft-db uses one writer and four readers; tokio runs on a current-thread
//! runtime whose blocking pool is capped at 16 threads, sharing one
//! connection behind a mutex (the common pattern). Set
//! `WEFT_DB_BENCH_INSERTS` to change the insert count (default 100,000).
//! The machine is shared: read the ratios, not the absolute times.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rusqlite::Connection;
use weft::{Reactor, gather};
use weft_db::{ConnectionPool, DbError, SqliteConnector};

const ROWS: i64 = 10_000;
const READS: usize = 16_000;
const READERS: usize = 4;
const BLOCKING_THREADS: usize = 16;

fn inserts() -> usize {
    std::env::var("WEFT_DB_BENCH_INSERTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn schema(conn: &Connection) {
    conn.execute_batch(
        "pragma journal_mode = wal; pragma synchronous = normal;
         create table if not exists kv (k integer primary key, v text);
         create table if not exists log (id integer primary key autoincrement, v text);",
    )
    .unwrap();
    let n: i64 = conn
        .query_row("select count(*) from kv", [], |r| r.get(0))
        .unwrap();
    if n == 0 {
        let tx = conn.unchecked_transaction().unwrap();
        for k in 0..ROWS {
            tx.execute("insert into kv values (?1, ?2)", (k, format!("value {k}")))
                .unwrap();
        }
        tx.commit().unwrap();
    }
}

/// A cheap deterministic key stream.
fn key(i: usize) -> i64 {
    ((i as u64).wrapping_mul(2_654_435_761) % ROWS as u64) as i64
}

struct Weft {
    reactor: Reactor,
    pool: ConnectionPool,
}

impl Weft {
    /// A pool on its own file; `histograms` as
    /// `PoolBuilder::histograms` (on by default).
    fn new(dir: &std::path::Path, file: &str, histograms: bool) -> Self {
        let path = dir.join(file);
        schema(&Connection::open(&path).unwrap());
        let reactor = Reactor::new().unwrap();
        let pool = ConnectionPool::builder(SqliteConnector::new(&path))
            .max(1 + READERS)
            .min(1 + READERS)
            .histograms(histograms)
            .build(&reactor.handle())
            .unwrap();
        Weft { reactor, pool }
    }

    /// `total` operations over `streams` sequential streams; `write(i)`
    /// says whether operation `i` is an insert.
    fn run(&self, total: usize, streams: usize, write: fn(usize) -> bool) -> Duration {
        let pool = self.pool.clone();
        let h = self.reactor.handle();
        self.reactor
            .run_until_complete(async move {
                let t = Instant::now();
                let per = total / streams;
                let all: Vec<_> = (0..streams)
                    .map(|s| {
                        let pool = pool.clone();
                        h.spawn_local(async move {
                            for j in 0..per {
                                let i = s * per + j;
                                if write(i) {
                                    pool.run_interaction(move |c| -> Result<(), DbError> {
                                        c.prepare_cached("insert into log (v) values (?1)")?
                                            .execute((i as i64,))?;
                                        Ok(())
                                    })
                                    .await
                                    .unwrap();
                                } else {
                                    let v = pool
                                        .run_query_map(
                                            "select v from kv where k = ?1",
                                            (key(i),),
                                            |r| r.get::<_, String>(0),
                                        )
                                        .await
                                        .unwrap();
                                    assert_eq!(v.len(), 1);
                                }
                            }
                        })
                    })
                    .collect();
                gather(all).await.unwrap();
                t.elapsed()
            })
            .unwrap()
    }
}

struct Tokio {
    rt: tokio::runtime::Runtime,
    conn: Arc<Mutex<Connection>>,
}

impl Tokio {
    fn new(dir: &std::path::Path) -> Self {
        let conn = Connection::open(dir.join("tokio.db")).unwrap();
        schema(&conn);
        conn.set_prepared_statement_cache_capacity(64);
        let rt = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(BLOCKING_THREADS)
            .build()
            .unwrap();
        Tokio {
            rt,
            conn: Arc::new(Mutex::new(conn)),
        }
    }

    fn run(&self, total: usize, streams: usize, write: fn(usize) -> bool) -> Duration {
        let conn = self.conn.clone();
        self.rt.block_on(async move {
            let t = Instant::now();
            let per = total / streams;
            let all: Vec<_> = (0..streams)
                .map(|s| {
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        for j in 0..per {
                            let i = s * per + j;
                            let conn = conn.clone();
                            tokio::task::spawn_blocking(move || {
                                let mut c = conn.lock().unwrap();
                                if write(i) {
                                    let tx = c
                                        .transaction_with_behavior(
                                            rusqlite::TransactionBehavior::Immediate,
                                        )
                                        .unwrap();
                                    tx.prepare_cached("insert into log (v) values (?1)")
                                        .unwrap()
                                        .execute((i as i64,))
                                        .unwrap();
                                    tx.commit().unwrap();
                                } else {
                                    let v: String = c
                                        .prepare_cached("select v from kv where k = ?1")
                                        .unwrap()
                                        .query_row((key(i),), |r| r.get(0))
                                        .unwrap();
                                    assert!(!v.is_empty());
                                }
                            })
                            .await
                            .unwrap();
                        }
                    })
                })
                .collect();
            for task in all {
                task.await.unwrap();
            }
            t.elapsed()
        })
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::new(dir.path(), "weft.db", true);
    let weft_off = Weft::new(dir.path(), "weft_off.db", false);
    let tokio = Tokio::new(dir.path());
    let n = inserts();

    let mut group = c.benchmark_group("insert");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500));
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("weft_db", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| weft.run(n, 64, |_| true)).sum())
    });
    group.bench_function("tokio_mutex", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| tokio.run(n, 64, |_| true)).sum())
    });
    group.finish();

    let mut group = c.benchmark_group("point_read");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500));
    group.throughput(Throughput::Elements(READS as u64));
    group.bench_function("weft_db", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| weft.run(READS, 16, |_| false)).sum())
    });
    // The cost of the job histograms (on by default): the same row with
    // them off.
    group.bench_function("weft_db_histograms_off", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| weft_off.run(READS, 16, |_| false)).sum())
    });
    group.bench_function("tokio_mutex", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| tokio.run(READS, 16, |_| false)).sum())
    });
    group.finish();

    let mut group = c.benchmark_group("mix_90_10");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500));
    group.throughput(Throughput::Elements(READS as u64));
    group.bench_function("weft_db", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| weft.run(READS, 16, |i| i % 10 == 0))
                .sum()
        })
    });
    group.bench_function("tokio_mutex", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| tokio.run(READS, 16, |i| i % 10 == 0))
                .sum()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
