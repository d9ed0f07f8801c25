//! Reactor benchmarks: `call_from_thread` burst throughput (1 and 2
//! producers), wake latency into an idle loop (p50/p99), and wake syscalls
//! per 100k calls.
//!
//! Run: `cargo bench --bench reactor`. The p50/p99 and syscall figures are
//! printed after criterion's own output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weft::{Reactor, Remote};

/// A reactor running on its own thread; stopped and joined on drop.
struct LoopThread {
    remote: Remote,
    join: Option<thread::JoinHandle<()>>,
}

impl LoopThread {
    fn start() -> LoopThread {
        let (tx, rx) = mpsc::channel();
        let join = thread::spawn(move || {
            let reactor = Reactor::new().unwrap();
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

/// Pushes `n` calls from `producers` threads into the loop and returns the
/// time until the last one ran. The closures capture only a `u64`, so the
/// figure is the bridge's cost, not reference counting in the benchmark.
fn burst(remote: &Remote, producers: usize, n: u64) -> Duration {
    let per = n / producers as u64;
    let total = per * producers as u64;
    DONE.store(0, Ordering::SeqCst);
    *WAITER.lock().unwrap() = Some(thread::current());
    let start = Instant::now();
    let handles: Vec<_> = (0..producers)
        .map(|_| {
            let remote = remote.clone();
            thread::spawn(move || {
                for _ in 0..per {
                    remote
                        .call_from_thread(move || {
                            if DONE.fetch_add(1, Ordering::Relaxed) + 1 == total {
                                if let Some(t) = WAITER.lock().unwrap().take() {
                                    t.unpark();
                                }
                            }
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    while DONE.load(Ordering::SeqCst) < total {
        thread::park();
    }
    let elapsed = start.elapsed();
    for h in handles {
        h.join().unwrap();
    }
    elapsed
}

fn bench_burst(c: &mut Criterion) {
    let lt = LoopThread::start();
    let mut group = c.benchmark_group("call_from_thread_burst");
    group.throughput(Throughput::Elements(1));
    for producers in [1usize, 2] {
        group.bench_function(format!("{producers}_producer"), |b| {
            b.iter_custom(|iters| {
                let n = iters.max(producers as u64 * 1000);
                burst(&lt.remote, producers, n).mul_f64(iters as f64 / n as f64)
            })
        });
    }
    group.finish();
}

/// One-way latency: stamped on the producer, read on the loop.
fn wake_latency_samples(lt: &LoopThread, samples: usize) -> Vec<Duration> {
    let (tx, rx) = mpsc::channel();
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        // Let the loop go back to sleep in poll.
        thread::sleep(Duration::from_micros(200));
        let tx = tx.clone();
        let sent = Instant::now();
        lt.remote
            .call_from_thread(move || tx.send(sent.elapsed()).unwrap())
            .unwrap();
        out.push(rx.recv().unwrap());
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn bench_wake(c: &mut Criterion) {
    let lt = LoopThread::start();
    c.bench_function("call_from_thread_wake_idle_loop_round_trip", |b| {
        let (tx, rx) = mpsc::channel();
        b.iter(|| {
            let tx = tx.clone();
            lt.remote
                .call_from_thread(move || tx.send(()).unwrap())
                .unwrap();
            rx.recv().unwrap();
        })
    });
    let mut samples = wake_latency_samples(&lt, 2000);
    samples.sort();
    println!(
        "wake latency into an idle loop (one-way, n={}): p50 {:?}, p99 {:?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99)
    );
    // Wake syscalls for a 100k burst into the running loop.
    for producers in [1, 2] {
        let before = lt.remote.statistics();
        let t = burst(&lt.remote, producers, 100_000);
        let wakes = lt.remote.statistics().wake_syscalls - before.wake_syscalls;
        println!(
            "burst of 100k calls ({producers} producer(s)): {:.0} ns/call, {} wake syscalls ({:.3}% of calls)",
            t.as_nanos() as f64 / 100_000.0,
            wakes,
            wakes as f64 / 1000.0
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_burst, bench_wake
}
criterion_main!(benches);
