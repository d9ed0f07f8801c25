//! The cost of diagnostics, on vs off in the same run: the
//! `call_from_thread` burst (100k calls from one producer into a running
//! loop) and a pool round-trip loop (`defer_to_thread` jobs whose results
//! come back through the loop's inbox, with a `PoolWatchdog` on the pool
//! when diagnostics are on); and the loop side alone (calls queued from the
//! loop thread, then drained in one turn: the least noisy figure of the
//! per-callback cost). After criterion, an interleaved summary runs
//! each row alternately and prints the on/off ratio of the medians.
//!
//! `cargo bench --bench diagnostics` (add `-- --quick` for a short run).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weft::diagnostics::{DEFAULT_SLOW_CALLBACK_THRESHOLD, DEFAULT_WEDGE_THRESHOLD, PoolWatchdog};
use weft::{Deferred, Reactor, Remote};

fn reactor(diag: bool) -> Reactor {
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

static DONE: AtomicU64 = AtomicU64::new(0);
static WAITER: Mutex<Option<thread::Thread>> = Mutex::new(None);

/// `n` calls from one producer; the time until the last one ran.
fn burst(remote: &Remote, n: u64) -> Duration {
    DONE.store(0, Ordering::SeqCst);
    *WAITER.lock().unwrap() = Some(thread::current());
    let start = Instant::now();
    let remote = remote.clone();
    let producer = thread::spawn(move || {
        for _ in 0..n {
            remote
                .call_from_thread(move || {
                    if DONE.fetch_add(1, Ordering::Relaxed) + 1 == n {
                        if let Some(t) = WAITER.lock().unwrap().take() {
                            t.unpark();
                        }
                    }
                })
                .unwrap();
        }
    });
    while DONE.load(Ordering::SeqCst) < n {
        thread::park();
    }
    let elapsed = start.elapsed();
    producer.join().unwrap();
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
        let start = Instant::now();
        for i in 0..n {
            let left = left.clone();
            let resolver = resolver.clone();
            self.reactor
                .defer_to_thread(move || std::hint::black_box(i))
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

const BURST: u64 = 100_000;
const JOBS: u64 = 20_000;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("diagnostics_burst");
    group.throughput(Throughput::Elements(1));
    for (name, diag) in [("off", false), ("on", true)] {
        let lt = LoopThread::start(diag);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let n = iters.max(1000);
                burst(&lt.remote, n).mul_f64(iters as f64 / n as f64)
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("diagnostics_pool_round_trip");
    group.throughput(Throughput::Elements(1));
    for (name, diag) in [("off", false), ("on", true)] {
        let row = PoolRow::new(diag);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let n = iters.max(1000);
                row.round_trips(n).mul_f64(iters as f64 / n as f64)
            })
        });
    }
    group.finish();

    // The loop side alone, one thread (least noise): n calls queued, then
    // one turn runs them.
    let mut group = c.benchmark_group("diagnostics_loop_side_drain");
    group.throughput(Throughput::Elements(1));
    for (name, diag) in [("off", false), ("on", true)] {
        let reactor = reactor(diag);
        let remote = reactor.remote();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let n = iters.max(1000);
                drain(&reactor, &remote, n).mul_f64(iters as f64 / n as f64)
            })
        });
    }
    group.finish();

    summary();
}

/// Queues `n` calls from this thread, then times the turn that runs them.
fn drain(reactor: &Reactor, remote: &Remote, n: u64) -> Duration {
    for i in 0..n {
        remote
            .call_from_thread(move || {
                std::hint::black_box(i);
            })
            .unwrap();
    }
    let start = Instant::now();
    reactor.iterate(Some(Duration::ZERO));
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Alternates off/on rounds so both see the same machine load.
fn summary() {
    const ROUNDS: usize = 15;
    let (off, on) = (LoopThread::start(false), LoopThread::start(true));
    let (mut b_off, mut b_on) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        b_off.push(burst(&off.remote, BURST));
        b_on.push(burst(&on.remote, BURST));
    }
    drop((off, on));
    let (p_off, p_on) = (PoolRow::new(false), PoolRow::new(true));
    let (mut q_off, mut q_on) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        q_off.push(p_off.round_trips(JOBS));
        q_on.push(p_on.round_trips(JOBS));
    }
    let (d_off, d_on) = (reactor(false), reactor(true));
    let (r_off, r_on) = (d_off.remote(), d_on.remote());
    let (mut l_off, mut l_on) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        l_off.push(drain(&d_off, &r_off, BURST));
        l_on.push(drain(&d_on, &r_on, BURST));
    }
    let (lo, ln) = (median(l_off), median(l_on));
    println!(
        "  loop-side drain: off {:.1} ns/call, on {:.1} ns/call, on/off {:.3}",
        lo.as_nanos() as f64 / BURST as f64,
        ln.as_nanos() as f64 / BURST as f64,
        ln.as_secs_f64() / lo.as_secs_f64(),
    );
    let per = |d: Duration, n: u64| d.as_nanos() as f64 / n as f64;
    let (bo, bn) = (median(b_off), median(b_on));
    let (qo, qn) = (median(q_off), median(q_on));
    println!(
        "interleaved summary ({ROUNDS} rounds, medians):\n  burst: off {:.1} ns/call, on {:.1} ns/call, on/off {:.3}\n  pool round trip: off {:.1} ns/job, on {:.1} ns/job, on/off {:.3}",
        per(bo, BURST),
        per(bn, BURST),
        bn.as_secs_f64() / bo.as_secs_f64(),
        per(qo, JOBS),
        per(qn, JOBS),
        qn.as_secs_f64() / qo.as_secs_f64(),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
