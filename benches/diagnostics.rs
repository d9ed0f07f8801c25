//! The cost of diagnostics (`slow_callback_threshold` on, which also starts
//! the stall watchdog), on vs off in the same run, on the rows issue 13
//! names:
//!
//! - **burst**: 100k `call_from_thread` calls into a running loop, from one
//!   and from two producer threads, each call capturing an index and an
//!   `Arc` it uses (as in the fair harness); timed until the last one ran;
//! - **pool**: 20k `defer_to_thread` round trips (job on the pool, result
//!   delivered on the loop), with a `PoolWatchdog` on the pool when on;
//! - **loop side** (for reference): calls queued from the loop's own thread
//!   and drained in one turn, the per-callback cost alone.
//!
//! # How to run it, and which figure to quote
//!
//! - `cargo bench --bench diagnostics`: criterion measures each row off and
//!   on, then the **interleaved summary** runs every row in three columns,
//!   off, off again (a second, identical instance: the A/A column) and on,
//!   in a rotating order every round, and prints per row the medians and
//!   the medians of each round's own ratios: on/off, and A/A (off again /
//!   off) with its spread (the 25th to 75th percentile of the A/A ratios).
//!   An on/off ratio is only meaningful where it lies outside the A/A
//!   spread of the same run; on a shared 2-core VM that spread is often
//!   wider than 5% for the burst rows. `DIAG_SUMMARY_ONLY=1` skips
//!   criterion; `DIAG_ROUNDS=n` sets the summary's rounds (default 21).
//!   `DIAG_AA=1` turns diagnostics off in every column.
//! - **Instructions per op** resolve 5% where wall time on a shared machine
//!   does not. `DIAG_CALLGRIND=1` runs each row (off, off again, on) under
//!   `valgrind --tool=callgrind` as a child process, at two sizes, and
//!   takes the difference (so start-up and thread creation cancel): the
//!   instructions per call or job of every thread of the process. It
//!   repeats that `DIAG_IR_ROUNDS` times (default 5) and prints the medians
//!   and the A/A ratio's range. Build for valgrind with
//!   `RUSTFLAGS="--cfg rustix_use_libc"` in a separate target directory
//!   (the pool's clock reads the vDSO through rustix, whose auxv lookup
//!   faults under valgrind):
//!   `RUSTFLAGS="--cfg rustix_use_libc" CARGO_TARGET_DIR=target/vg DIAG_CALLGRIND=1 cargo bench --bench diagnostics`.
//!   The burst rows' counts include the producers' and the loop's spins
//!   and wakes, which depend on how the threads interleave, hence the
//!   repetitions; the pool and drain rows are steady to well under 1%.
//! - **The pool row of the interleaved summary is not a diagnostics
//!   figure.** Its three instances live in one process, and the third (the
//!   "on" column) runs the pool round trips slower whatever its settings:
//!   with `DIAG_AA=1` (diagnostics off in every column) it measured ×1.90
//!   of the first, against ×1.43–1.67 with diagnostics on. For that row,
//!   quote the instruction counts or alternate whole processes:
//!   `DIAG_PROFILE=pool:off` and `pool:on` with `DIAG_N=1000000`, timed
//!   one after the other (level within 1% at the median on this VM).
//! - `DIAG_PROFILE=drain:on` (or `burst1:off`, `burst2:on`, `pool:off`,
//!   ...) runs one row once, of `DIAG_N` calls or jobs, for a profiler:
//!   `DIAG_PROFILE=burst1:on DIAG_N=100000 valgrind --tool=callgrind target/vg/release/deps/diagnostics-*`.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weft::diagnostics::{DEFAULT_SLOW_CALLBACK_THRESHOLD, DEFAULT_WEDGE_THRESHOLD, PoolWatchdog};
use weft::{Deferred, Reactor, Remote};

fn reactor(diag: bool) -> Reactor {
    // An A/A run (both columns off) shows the machine's noise floor.
    let diag = diag && std::env::var_os("DIAG_AA").is_none();
    let threshold = diag.then_some(DEFAULT_SLOW_CALLBACK_THRESHOLD);
    Reactor::builder()
        .slow_callback_threshold(threshold)
        .blocking_call_threshold(diag.then_some(Duration::from_secs(1)))
        .build()
        .unwrap()
}

/// A reactor running on its own thread; stopped and joined on drop.
struct LoopThread {
    remote: Remote,
    join: Option<thread::JoinHandle<()>>,
}

impl LoopThread {
    fn start(diag: bool) -> LoopThread {
        let (tx, rx) = mpsc::channel();
        let join = thread::spawn(move || {
            let reactor = reactor(diag);
            tx.send(reactor.remote()).unwrap();
            reactor.run().unwrap();
        });
        LoopThread {
            remote: rx.recv().unwrap(),
            join: Some(join),
        }
    }
}

impl Drop for LoopThread {
    fn drop(&mut self) {
        self.remote.stop();
        if let Some(j) = self.join.take() {
            j.join().unwrap();
        }
    }
}

/// What every call of a burst captures and uses.
struct Ctx {
    sum: AtomicU64,
    done: AtomicU64,
    total: u64,
    waiter: Mutex<Option<thread::Thread>>,
}

impl Ctx {
    fn tick(&self, i: u64) {
        self.sum.fetch_add(i, Ordering::Relaxed);
        if self.done.fetch_add(1, Ordering::Relaxed) + 1 == self.total {
            if let Some(t) = self.waiter.lock().unwrap().take() {
                t.unpark();
            }
        }
    }
}

/// `n` calls split over `producers` threads; the time until the last ran.
fn burst(remote: &Remote, producers: u64, n: u64) -> Duration {
    let per = n / producers;
    let ctx = Arc::new(Ctx {
        sum: AtomicU64::new(0),
        done: AtomicU64::new(0),
        total: per * producers,
        waiter: Mutex::new(Some(thread::current())),
    });
    let start = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let (remote, ctx) = (remote.clone(), ctx.clone());
            thread::spawn(move || {
                for i in 0..per {
                    let ctx = ctx.clone();
                    remote.call_from_thread(move || ctx.tick(i)).unwrap();
                }
            })
        })
        .collect();
    while ctx.done.load(Ordering::Acquire) < ctx.total {
        thread::park();
    }
    let elapsed = start.elapsed();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        ctx.sum.load(Ordering::Relaxed),
        producers * (per * (per - 1) / 2)
    );
    elapsed
}

/// A reactor (on this thread) and, with diagnostics on, a pool watchdog.
struct PoolRow {
    reactor: Reactor,
    _watchdog: Option<PoolWatchdog>,
}

impl PoolRow {
    fn new(diag: bool) -> PoolRow {
        let reactor = reactor(diag);
        let watchdog = diag
            .then(|| PoolWatchdog::start(&reactor.thread_pool(), DEFAULT_WEDGE_THRESHOLD).unwrap());
        PoolRow {
            reactor,
            _watchdog: watchdog,
        }
    }

    /// `n` `defer_to_thread` jobs; the time until every result was
    /// delivered on the loop.
    fn round_trips(&self, n: u64) -> Duration {
        let all: Deferred<()> = Deferred::new();
        let resolver = all.resolver();
        let left = Rc::new(Cell::new(n));
        let data = Arc::new(7u64);
        let start = Instant::now();
        for i in 0..n {
            let left = left.clone();
            let resolver = resolver.clone();
            let data = data.clone();
            self.reactor
                .defer_to_thread(move || std::hint::black_box(i + *data))
                .add_both(move |_| {
                    left.set(left.get() - 1);
                    if left.get() == 0 {
                        let _ = resolver.callback(());
                    }
                });
        }
        self.reactor.run_until_complete(all).unwrap().unwrap();
        start.elapsed()
    }
}

/// Queues `n` calls from this thread, then times the turn that runs them.
fn drain(reactor: &Reactor, remote: &Remote, n: u64) -> Duration {
    let data = Arc::new(AtomicU64::new(0));
    for i in 0..n {
        let data = data.clone();
        remote
            .call_from_thread(move || {
                data.fetch_add(i, Ordering::Relaxed);
            })
            .unwrap();
    }
    let start = Instant::now();
    reactor.iterate(Some(Duration::ZERO));
    start.elapsed()
}

const BURST: u64 = 100_000;
const JOBS: u64 = 20_000;

fn per_element(iters: u64, run: impl FnOnce(u64) -> Duration) -> Duration {
    let n = iters.max(1000);
    run(n).mul_f64(iters as f64 / n as f64)
}

fn bench(c: &mut Criterion) {
    if let Ok(what) = std::env::var("DIAG_PROFILE") {
        profile(&what);
        return;
    }
    if std::env::var_os("DIAG_CALLGRIND").is_some() {
        callgrind_summary();
        return;
    }
    if std::env::var_os("DIAG_SUMMARY_ONLY").is_none() {
        for producers in [1, 2] {
            let mut group = c.benchmark_group(format!("diagnostics_burst_{producers}p"));
            group.throughput(Throughput::Elements(1));
            for (name, diag) in [("off", false), ("on", true)] {
                let lt = LoopThread::start(diag);
                group.bench_function(name, |b| {
                    b.iter_custom(|iters| per_element(iters, |n| burst(&lt.remote, producers, n)))
                });
            }
            group.finish();
        }

        let mut group = c.benchmark_group("diagnostics_pool_round_trip");
        group.throughput(Throughput::Elements(1));
        for (name, diag) in [("off", false), ("on", true)] {
            let row = PoolRow::new(diag);
            group.bench_function(name, |b| {
                b.iter_custom(|iters| per_element(iters, |n| row.round_trips(n)))
            });
        }
        group.finish();

        let mut group = c.benchmark_group("diagnostics_loop_side_drain");
        group.throughput(Throughput::Elements(1));
        for (name, diag) in [("off", false), ("on", true)] {
            let reactor = reactor(diag);
            let remote = reactor.remote();
            group.bench_function(name, |b| {
                b.iter_custom(|iters| per_element(iters, |n| drain(&reactor, &remote, n)))
            });
        }
        group.finish();
    }
    summary();
}

/// One row, once (for callgrind): `row:on` or `row:off`.
fn profile(what: &str) {
    let (row, diag) = what.split_once(':').unwrap_or((what, "on"));
    let diag = diag == "on";
    let n = std::env::var("DIAG_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(BURST);
    match row {
        "burst1" | "burst2" => {
            let lt = LoopThread::start(diag);
            let producers = if row == "burst1" { 1 } else { 2 };
            burst(&lt.remote, producers, n);
        }
        "pool" => {
            PoolRow::new(diag).round_trips(n);
        }
        _ => {
            let r = reactor(diag);
            drain(&r, &r.remote(), n);
        }
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The `p`-th quantile (0..=1) of sorted ratios.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Samples of one row in three columns, taken in turn: off, off again (the
/// A/A column) and on.
#[derive(Default)]
struct Row {
    off: Vec<Duration>,
    again: Vec<Duration>,
    on: Vec<Duration>,
}

impl Row {
    /// Runs the three columns once each, starting with a different one
    /// every round, so none is always first or always after another.
    fn round(
        &mut self,
        i: usize,
        mut off: impl FnMut() -> Duration,
        mut again: impl FnMut() -> Duration,
        mut on: impl FnMut() -> Duration,
    ) {
        for k in 0..3 {
            match (i + k) % 3 {
                0 => self.off.push(off()),
                1 => self.again.push(again()),
                _ => self.on.push(on()),
            }
        }
    }

    fn print(&mut self, name: &str, n: u64, unit: &str) {
        // Ratios within a round: its runs saw about the same load.
        let paired = |x: &[Duration], y: &[Duration]| {
            let mut r: Vec<f64> = x
                .iter()
                .zip(y)
                .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
                .collect();
            r.sort_by(f64::total_cmp);
            r
        };
        let on_off = paired(&self.on, &self.off);
        let aa = paired(&self.again, &self.off);
        let (off, on) = (median(&mut self.off), median(&mut self.on));
        let per = |d: Duration| d.as_nanos() as f64 / n as f64;
        println!(
            "  {name:<28} off {:>7.1} ns/{unit}  on {:>7.1} ns/{unit}  on/off {:.3}  A/A {:.3} [{:.3}, {:.3}]",
            per(off),
            per(on),
            quantile(&on_off, 0.5),
            quantile(&aa, 0.5),
            quantile(&aa, 0.25),
            quantile(&aa, 0.75),
        );
    }
}

/// Runs every row in three columns, in turn, so all see the same load.
fn summary() {
    let rounds: usize = std::env::var("DIAG_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let (off, again, on) = (
        LoopThread::start(false),
        LoopThread::start(false),
        LoopThread::start(true),
    );
    let (mut b1, mut b2) = (Row::default(), Row::default());
    for i in 0..rounds {
        b1.round(
            i,
            || burst(&off.remote, 1, BURST),
            || burst(&again.remote, 1, BURST),
            || burst(&on.remote, 1, BURST),
        );
        b2.round(
            i,
            || burst(&off.remote, 2, BURST),
            || burst(&again.remote, 2, BURST),
            || burst(&on.remote, 2, BURST),
        );
    }
    drop((off, again, on));
    let (p_off, p_again, p_on) = (PoolRow::new(false), PoolRow::new(false), PoolRow::new(true));
    let mut pool = Row::default();
    for i in 0..rounds {
        pool.round(
            i,
            || p_off.round_trips(JOBS),
            || p_again.round_trips(JOBS),
            || p_on.round_trips(JOBS),
        );
    }
    drop((p_off, p_again, p_on));
    let (d_off, d_again, d_on) = (reactor(false), reactor(false), reactor(true));
    let (r_off, r_again, r_on) = (d_off.remote(), d_again.remote(), d_on.remote());
    let mut loop_side = Row::default();
    for i in 0..rounds {
        loop_side.round(
            i,
            || drain(&d_off, &r_off, BURST),
            || drain(&d_again, &r_again, BURST),
            || drain(&d_on, &r_on, BURST),
        );
    }
    println!(
        "interleaved summary ({rounds} rounds; medians; ratios are medians of per-round ratios, \
         A/A = a second off instance / off, [25th, 75th percentile]):"
    );
    b1.print("burst, 1 producer", BURST, "call");
    b2.print("burst, 2 producers", BURST, "call");
    pool.print("pool round trip", JOBS, "job");
    loop_side.print("loop side (drain, reference)", BURST, "call");
}

/// Instructions of one run of `DIAG_PROFILE=what` under callgrind: those of
/// the largest process valgrind reports (the bench itself).
fn instructions(what: &str, n: u64) -> u64 {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .env("DIAG_PROFILE", what)
        .env("DIAG_N", n.to_string())
        .env_remove("DIAG_CALLGRIND")
        .output()
        .expect("valgrind (DIAG_CALLGRIND needs it on the PATH)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .filter_map(|l| l.split("Collected :").nth(1))
        .filter_map(|v| v.trim().replace(',', "").parse().ok())
        .max()
        .unwrap_or_else(|| panic!("no callgrind total for {what}:\n{stderr}"))
}

/// Instructions per op of `row:mode`: the difference between `2n` and `n`
/// ops, over `n`.
fn per_op(row: &str, mode: &str, n: u64) -> f64 {
    let what = format!("{row}:{mode}");
    let small = instructions(&what, n);
    let large = instructions(&what, 2 * n);
    (large as f64 - small as f64) / n as f64
}

/// `DIAG_CALLGRIND=1`: instructions per op, off, off again and on, in turn,
/// `DIAG_IR_ROUNDS` times (see the module docs).
fn callgrind_summary() {
    let rounds: usize = std::env::var("DIAG_IR_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    println!(
        "instructions per op under callgrind ({rounds} rounds; medians; A/A = off again / off, \
         [min, max]):"
    );
    for (row, n, unit) in [
        ("burst1", 50_000, "call"),
        ("burst2", 50_000, "call"),
        ("pool", 10_000, "job"),
        ("drain", 50_000, "call"),
    ] {
        let (mut off, mut again, mut on) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..rounds {
            for k in 0..3 {
                match (i + k) % 3 {
                    0 => off.push(per_op(row, "off", n)),
                    1 => again.push(per_op(row, "off", n)),
                    _ => on.push(per_op(row, "on", n)),
                }
            }
        }
        let mut on_off: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a / b).collect();
        let mut aa: Vec<f64> = again.iter().zip(&off).map(|(a, b)| a / b).collect();
        for v in [&mut off, &mut on, &mut on_off, &mut aa] {
            v.sort_by(f64::total_cmp);
        }
        println!(
            "  {row:<8} off {:>7.1} /{unit}  on {:>7.1} /{unit}  on/off {:.3} (of medians {:.3})  A/A {:.3} [{:.3}, {:.3}]",
            quantile(&off, 0.5),
            quantile(&on, 0.5),
            quantile(&on_off, 0.5),
            quantile(&on, 0.5) / quantile(&off, 0.5),
            quantile(&aa, 0.5),
            aa[0],
            aa[aa.len() - 1],
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
