//! Queue wait and run time of weft-db under weft-kv's load shape (90 %
//! point reads, 10 % single-row upserts, 64 in flight, one writer plus
//! `readers` readers, WAL, `synchronous=NORMAL`), with and without SQLite's
//! WAL checkpoint on the writer's commits.
//!
//! ```text
//! cargo run --release -p weft-db --example queue_wait -- [--ops N] [--in-flight N]
//!     [--readers N] [--keys N] [--value BYTES] [--rounds N] [--variants a,b,..] [--buckets]
//! ```
//!
//! Variants (each on a fresh file in a temp dir, run in turn, the order
//! rotated every round so no variant always runs first):
//!
//! - `default`: weft-db's defaults, as weft-kv uses them (SQLite's
//!   auto-checkpoint: a commit that leaves the WAL at 1000 pages or more
//!   runs a PASSIVE checkpoint itself).
//! - `traced`: the same behaviour, made visible: the writer's WAL hook does
//!   exactly what SQLite's default hook does (a PASSIVE checkpoint once the
//!   WAL holds 1000 frames) and times it, and every connection's busy
//!   handler follows SQLite's default schedule and counts its calls.
//! - `sync-off`: `traced` with `synchronous=OFF` (checkpoints without
//!   fsync), to split the checkpoint's cost into copying and syncing.
//! - `no-checkpoint`: `wal_autocheckpoint=0` and no checkpoint at all (the
//!   WAL grows): the cause removed, as a reference.
//! - `background`: the fix, [`Checkpoints::Background`]: commits never
//!   checkpoint; a checkpointer thread runs them PASSIVE.
//!
//! Figures come from `ConnectionPool::queue_wait_histogram` and
//! `run_time_histogram` (p50/p99 are bucket upper bounds, power-of-two
//! buckets; `max` is exact), plus each commit's own time, measured around
//! the connector's `commit`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use weft::diagnostics::{Histogram, HistogramSnapshot};
use weft::{Reactor, gather};
use weft_db::{
    Checkpoints, ConnectionPool, Connector, DbError, Group, Interrupter, Role, SqliteConnector,
    Synchronous,
};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID";
const UPSERT: &str = "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value";
const SELECT_ONE: &str = "SELECT value FROM kv WHERE key = ?1";
/// SQLite's `wal_autocheckpoint` default, in frames.
const AUTOCHECKPOINT: i32 = 1000;
/// A commit slower than this is an outlier.
const OUTLIER: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Default,
    Traced,
    SyncOff,
    NoCheckpoint,
    Background,
}

impl Variant {
    fn parse(s: &str) -> Option<Variant> {
        Some(match s {
            "default" => Variant::Default,
            "traced" => Variant::Traced,
            "sync-off" => Variant::SyncOff,
            "no-checkpoint" => Variant::NoCheckpoint,
            "background" => Variant::Background,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Variant::Default => "default",
            Variant::Traced => "traced",
            Variant::SyncOff => "sync-off",
            Variant::NoCheckpoint => "no-checkpoint",
            Variant::Background => "background",
        }
    }
    fn traced(self) -> bool {
        matches!(self, Variant::Traced | Variant::SyncOff)
    }
}

/// What the probe saw on the connection threads.
#[derive(Default)]
struct Log {
    /// Every commit: its time, and the checkpoint it ran, if any.
    commits: Mutex<Vec<(Duration, Option<Duration>)>>,
    checkpoints: Histogram,
    /// When each checkpoint ran (traced variants).
    windows: Mutex<Vec<(Instant, Instant)>>,
    /// Busy-handler calls on the writer and on the readers.
    busy_calls: [AtomicU64; 2],
}

thread_local! {
    /// The checkpoint the WAL hook ran during the current commit.
    static CHECKPOINT_IN_COMMIT: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// SQLite's default busy handler (`sqliteDefaultBusyCallback`, with
/// `usleep`): sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, then 100 ms,
/// up to the timeout; counted.
fn busy_handler(
    log: Arc<Log>,
    role: Role,
    timeout: Duration,
) -> impl FnMut(i32) -> bool + Send + 'static {
    const DELAYS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];
    move |count| {
        log.busy_calls[usize::from(role == Role::Reader)].fetch_add(1, Relaxed);
        let n = count as usize;
        let (delay, prior) = if n < DELAYS.len() {
            (DELAYS[n], DELAYS[..n].iter().sum::<u64>())
        } else {
            (
                100,
                DELAYS.iter().sum::<u64>() + 100 * (n - DELAYS.len()) as u64,
            )
        };
        let left = (timeout.as_millis() as u64).saturating_sub(prior);
        if left == 0 {
            return false;
        }
        std::thread::sleep(Duration::from_millis(delay.min(left)));
        true
    }
}

/// `SqliteConnector` plus instruments: commit timing always; in the traced
/// variants, a WAL hook equal to SQLite's default one (timed) and a counting
/// busy handler equal to the default one.
struct Probe {
    inner: SqliteConnector,
    variant: Variant,
    log: Arc<Log>,
}

impl Connector for Probe {
    type Connection = Connection;
    type Error = rusqlite::Error;

    fn open(&self, role: Role) -> rusqlite::Result<Connection> {
        let mut conn = self.inner.open(role)?;
        if self.variant.traced() {
            conn.busy_handler(Some(busy_handler(
                self.log.clone(),
                role,
                Duration::from_secs(5),
            )))?;
            let log = self.log.clone();
            conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, frames| {
                // sqlite3WalDefaultHook: `if( nFrame>=N ) sqlite3_wal_checkpoint(db, zDb)`.
                if frames >= AUTOCHECKPOINT {
                    let t = Instant::now();
                    let _ = wal.checkpoint();
                    let took = t.elapsed();
                    log.checkpoints.record(took);
                    weft_db_lock(&log.windows).push((t, t + took));
                    CHECKPOINT_IN_COMMIT.set(Some(took));
                }
                Ok(())
            }))?;
        }
        Ok(conn)
    }
    fn probe(&self, c: &mut Connection, sql: &str) -> rusqlite::Result<()> {
        self.inner.probe(c, sql)
    }
    fn close(&self, c: Connection) -> rusqlite::Result<()> {
        self.inner.close(c)
    }
    fn begin(&self, c: &mut Connection, role: Role) -> rusqlite::Result<()> {
        self.inner.begin(c, role)
    }
    fn commit(&self, c: &mut Connection) -> rusqlite::Result<()> {
        CHECKPOINT_IN_COMMIT.set(None);
        let t = Instant::now();
        let r = self.inner.commit(c);
        let took = t.elapsed();
        weft_db_lock(&self.log.commits).push((took, CHECKPOINT_IN_COMMIT.take()));
        r
    }
    fn rollback(&self, c: &mut Connection) -> rusqlite::Result<()> {
        self.inner.rollback(c)
    }
    fn install_cancel(
        &self,
        c: &mut Connection,
        cancelled: Arc<std::sync::atomic::AtomicBool>,
    ) -> Option<Interrupter> {
        self.inner.install_cancel(c, cancelled)
    }
}

fn weft_db_lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Opts {
    ops: usize,
    in_flight: usize,
    readers: usize,
    keys: u64,
    value: usize,
    rounds: usize,
    variants: Vec<Variant>,
    buckets: bool,
}

fn opts() -> Opts {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut o = Opts {
        ops: 200_000,
        in_flight: 64,
        readers: cores.saturating_sub(1).clamp(1, 4),
        keys: 10_000,
        value: 64,
        rounds: 2,
        variants: vec![Variant::Default, Variant::Traced, Variant::Background],
        buckets: false,
    };
    let mut args = std::env::args().skip(1);
    let usage = || -> ! {
        eprintln!(
            "usage: queue_wait [--ops N] [--in-flight N] [--readers N] [--keys N] [--value BYTES] [--rounds N] [--variants default,traced,sync-off,no-checkpoint,background] [--buckets]"
        );
        std::process::exit(2)
    };
    while let Some(a) = args.next() {
        if a == "--buckets" {
            o.buckets = true;
            continue;
        }
        let v = args.next().unwrap_or_else(|| usage());
        let n = || v.parse::<usize>().unwrap_or_else(|_| usage());
        match a.as_str() {
            "--ops" => o.ops = n(),
            "--in-flight" => o.in_flight = n().max(1),
            "--readers" => o.readers = n(),
            "--keys" => o.keys = n().max(1) as u64,
            "--value" => o.value = n(),
            "--rounds" => o.rounds = n().max(1),
            "--variants" => {
                o.variants = v
                    .split(',')
                    .map(|s| Variant::parse(s).unwrap_or_else(|| usage()))
                    .collect()
            }
            _ => usage(),
        }
    }
    o
}

/// A cheap deterministic stream (xorshift64*).
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

struct Outcome {
    elapsed: Duration,
    queue_wait: [HistogramSnapshot; 2],
    run_time: [HistogramSnapshot; 2],
    log: Arc<Log>,
    wal_bytes: u64,
    checkpoints: weft_db::CheckpointStatistics,
    /// Involuntary context switches per thread name during the run.
    preempted: Vec<(String, u64)>,
    /// Every write's and read's (submission, round trip), seen on the loop.
    trips: [Vec<(Instant, Duration)>; 2],
}

type Trips = Rc<RefCell<[Vec<(Instant, Duration)>; 2]>>;

/// p99 and max of `trips`, split by whether the operation overlapped a
/// checkpoint in `windows` (sorted by start, never overlapping), was sent
/// within `AFTER` of one's end (the refill once a stall ends), or neither.
fn split_by_checkpoint(trips: &[(Instant, Duration)], windows: &[(Instant, Instant)]) -> String {
    const AFTER: Duration = Duration::from_millis(5);
    let mut parts: [Vec<Duration>; 3] = Default::default();
    for (sent, rtt) in trips {
        let done = *sent + *rtt;
        let i = windows.partition_point(|w| w.0 < done);
        let last = i.checked_sub(1).map(|i| windows[i]);
        let part = match last {
            Some((_, end)) if end > *sent => 0,
            Some((_, end)) if *sent >= end && *sent < end + AFTER => 1,
            _ => 2,
        };
        parts[part].push(*rtt);
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        match v.last() {
            None => "n 0".to_owned(),
            Some(max) => format!(
                "n {} p99 {} max {}",
                v.len(),
                ms(v[((v.len() as f64 * 0.99) as usize).min(v.len() - 1)]),
                ms(*max)
            ),
        }
    };
    if windows.is_empty() {
        return stats(&mut parts[2]);
    }
    let [during, after, other] = &mut parts;
    format!(
        "during a checkpoint: {}; sent within 5 ms after one: {}; otherwise: {}",
        stats(during),
        stats(after),
        stats(other)
    )
}

/// `nonvoluntary_ctxt_switches` of this process's threads, by name
/// (Linux; empty elsewhere).
fn preemptions() -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let n = status
            .lines()
            .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        out.push((name.trim().to_owned(), n));
    }
    out.sort();
    out
}

fn run(o: &Opts, variant: Variant, round: usize) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let mut connector = SqliteConnector::new(&path);
    match variant {
        Variant::SyncOff => connector = connector.synchronous(Synchronous::Off),
        Variant::NoCheckpoint => {
            connector = connector.on_open(|c, _| c.pragma_update(None, "wal_autocheckpoint", 0))
        }
        Variant::Background => connector = connector.checkpoints(Checkpoints::background()),
        _ => {}
    }
    let log = Arc::new(Log::default());
    let probe = Probe {
        inner: connector,
        variant,
        log: log.clone(),
    };
    let reactor = Reactor::new().unwrap();
    let pool = ConnectionPool::builder(probe)
        .name("kv")
        .max(o.readers + 1)
        .min(o.readers + 1)
        .build(&reactor.handle())
        .unwrap();
    let h = reactor.handle();
    let (keys, value, ops, in_flight) = (o.keys, o.value, o.ops, o.in_flight);
    let p = pool.clone();
    let (elapsed, preempted, trips) = reactor
        .run_until_complete(async move {
            p.run_interaction(move |c| {
                c.execute_batch(SCHEMA)?;
                let mut stmt = c.prepare_cached(UPSERT)?;
                for k in 0..keys {
                    stmt.execute((format!("load-{k}"), vec![b'x'; value]))?;
                }
                Ok::<_, DbError>(())
            })
            .await
            .unwrap();
            // Start from a checkpointed, empty WAL in every variant.
            p.run_with_connection(|c| {
                c.query_row("pragma wal_checkpoint(truncate)", [], |_| Ok(()))?;
                Ok::<_, DbError>(())
            })
            .await
            .unwrap();
            let before = preemptions();
            let t = Instant::now();
            let per = ops / in_flight;
            let trips: Trips = Rc::default();
            let tasks: Vec<_> = (0..in_flight)
                .map(|s| {
                    let p = p.clone();
                    let trips = trips.clone();
                    h.spawn_local(async move {
                        let mut rng = 0x9E37_79B9_7F4A_7C15 ^ ((s as u64 + 1) << 20) ^ round as u64;
                        for _ in 0..per {
                            let r = next(&mut rng);
                            let key = format!("load-{}", (r >> 8) % keys);
                            let sent = Instant::now();
                            let write = r % 10 == 0;
                            if write {
                                let v = vec![(r >> 40) as u8; value];
                                p.run_interaction(move |c| {
                                    c.prepare_cached(UPSERT)?.execute((key, v))?;
                                    Ok::<_, DbError>(())
                                })
                                .await
                                .unwrap();
                            } else {
                                let v = p
                                    .run_read(move |c| {
                                        let v: Vec<u8> = c
                                            .prepare_cached(SELECT_ONE)?
                                            .query_row([key], |r| r.get(0))?;
                                        Ok::<_, DbError>(v)
                                    })
                                    .await
                                    .unwrap();
                                assert_eq!(v.len(), value);
                            }
                            trips.borrow_mut()[usize::from(!write)].push((sent, sent.elapsed()));
                        }
                    })
                })
                .collect();
            gather(tasks).await.unwrap();
            let elapsed = t.elapsed();
            let after = preemptions()
                .into_iter()
                .map(|(name, n)| {
                    let was = before.iter().find(|(b, _)| *b == name).map_or(0, |b| b.1);
                    (name, n.saturating_sub(was))
                })
                .filter(|(name, _)| !name.starts_with("weft-pool"))
                .collect::<Vec<_>>();
            let trips = std::mem::take(&mut *trips.borrow_mut());
            (elapsed, after, trips)
        })
        .unwrap();
    let wal_bytes = std::fs::metadata(dir.path().join("kv.sqlite3-wal")).map_or(0, |m| m.len());
    let groups = [Group::Writer, Group::Readers];
    let out = Outcome {
        elapsed,
        queue_wait: groups.map(|g| pool.queue_wait_histogram(g)),
        run_time: groups.map(|g| pool.run_time_histogram(g)),
        log,
        wal_bytes,
        checkpoints: pool.connector().inner.checkpoint_statistics(),
        preempted,
        trips,
    };
    let p = pool.clone();
    reactor
        .run_until_complete(async move { p.close().await })
        .unwrap()
        .unwrap();
    out
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn row(h: &HistogramSnapshot) -> String {
    format!(
        "p50 {:>7} p99 {:>7} max {:>8}",
        ms(h.quantile(0.5)),
        ms(h.quantile(0.99)),
        ms(h.largest())
    )
}

fn report(o: &Opts, v: Variant, out: &Outcome) {
    let ops_s = o.ops as f64 / out.elapsed.as_secs_f64();
    println!(
        "{:<13} {:>7.0} ops/s, WAL at end {} KiB",
        v.name(),
        ops_s,
        out.wal_bytes / 1024
    );
    for (i, g) in ["writer", "readers"].iter().enumerate() {
        println!(
            "  {g:<7} queue wait (ms) {}   run time (ms) {}",
            row(&out.queue_wait[i]),
            row(&out.run_time[i])
        );
    }
    let commits = weft_db_lock(&out.log.commits);
    let slow: Vec<_> = commits.iter().filter(|(t, _)| *t >= OUTLIER).collect();
    let with_ckpt = commits.iter().filter(|(_, c)| c.is_some()).count();
    let slow_with = slow.iter().filter(|(_, c)| c.is_some()).count();
    let max_with = commits
        .iter()
        .filter(|(_, c)| c.is_some())
        .map(|c| c.0)
        .max();
    let max_without = commits
        .iter()
        .filter(|(_, c)| c.is_none())
        .map(|c| c.0)
        .max();
    let mut sorted: Vec<Duration> = commits.iter().map(|c| c.0).collect();
    sorted.sort();
    let pct = |q: f64| {
        sorted.get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
    };
    println!(
        "  commits {} (p50 {} p99 {} ms): {} took >= {} ms{}; max {} ms{}",
        commits.len(),
        pct(0.5).map_or("-".into(), |d| ms(*d)),
        pct(0.99).map_or("-".into(), |d| ms(*d)),
        slow.len(),
        ms(OUTLIER),
        if v.traced() {
            format!(" ({slow_with} of them ran a checkpoint)")
        } else {
            String::new()
        },
        max_without
            .into_iter()
            .chain(max_with)
            .max()
            .map_or("-".into(), ms),
        if v.traced() {
            format!(
                "; {} commits ran a checkpoint (max {} ms), the others max {} ms; checkpoint time {}; busy-handler calls: writer {}, readers {}",
                with_ckpt,
                max_with.map_or("-".into(), ms),
                max_without.map_or("-".into(), ms),
                row(&out.log.checkpoints.snapshot()),
                out.log.busy_calls[0].load(Relaxed),
                out.log.busy_calls[1].load(Relaxed)
            )
        } else {
            String::new()
        }
    );
    // Exact round trips on the loop; the traced variants split them by
    // whether they overlapped a checkpoint in a commit.
    let mut windows = weft_db_lock(&out.log.windows).clone();
    windows.sort();
    for (i, g) in ["writes", "reads"].iter().enumerate() {
        println!(
            "  {g:<6} round trip (ms) {}",
            split_by_checkpoint(&out.trips[i], &windows)
        );
    }
    if v == Variant::Background {
        let c = out.checkpoints;
        println!(
            "  checkpointer: {} checkpoints ({} busy, {} failed), {} commits checkpointed inline at the limit",
            c.background, c.busy, c.failed, c.inline
        );
    }
    let p: Vec<String> = out
        .preempted
        .iter()
        .map(|(n, c)| format!("{n} {c}"))
        .collect();
    println!("  involuntary context switches: {}", p.join(", "));
    if o.buckets {
        for (i, g) in ["writer", "readers"].iter().enumerate() {
            let cells: Vec<String> = out.queue_wait[i]
                .cumulative()
                .filter(|(b, _)| *b >= Duration::from_micros(128))
                .map(|(b, n)| format!("<{}:{n}", ms(b)))
                .collect();
            println!("  {g:<7} queue wait cumulative: {}", cells.join(" "));
        }
    }
}

fn main() {
    let o = opts();
    println!(
        "queue_wait: {} ops, {} in flight, 1 writer + {} readers, {} keys, {} B values, {} round(s), {} CPUs",
        o.ops,
        o.in_flight,
        o.readers,
        o.keys,
        o.value,
        o.rounds,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for round in 0..o.rounds {
        println!("-- round {}", round + 1);
        let n = o.variants.len();
        for i in 0..n {
            let v = o.variants[(i + round) % n];
            let out = run(&o, v, round);
            report(&o, v, &out);
        }
    }
}
