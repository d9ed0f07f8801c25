//! Bridge benchmarks: `defer_to_thread` round trip (sequential, and 1000 in
//! flight) and `blocking_call_from_thread` round trip.
//!
//! Run: `cargo bench --bench bridge`. p50/p99 of the sequential round trips
//! are printed after criterion's output.
//!
//! `bridge_1000_in_flight` compares, in one run, 1000 jobs that capture
//! data (32 bytes each) sent from a loop to a pool of `POOL` threads and
//! their results brought back: weft's `defer_to_thread`, tokio's
//! `spawn_blocking` with `max_blocking_threads(POOL)`, and a baseline of std
//! threads sharing an mpsc job queue with an mpsc result channel. The
//! machine is shared: read the ratios, not the absolute times.
//!
//! `bridge_span` measures what carrying the caller's `tracing` span costs:
//! the same 1000-in-flight wave and sequential round trip with no span
//! current (`off`: nothing is carried) and inside a span recorded by a
//! `tracing_subscriber::registry()` (`on`: the span is cloned into each job,
//! entered around the work on the pool thread and around the completion on
//! the loop, then dropped).

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use weft::{Reactor, blocking_call_from_thread};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name} (n={}): p50 {:?}, p99 {:?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99)
    );
}

fn bench_defer(c: &mut Criterion) {
    let reactor = Reactor::new().unwrap();
    // Start the loop (and with it the reactor pool).
    reactor.run_until_complete(async {}).unwrap();
    let h = reactor.handle();
    c.bench_function("defer_to_thread_round_trip", |b| {
        b.iter_custom(|iters| {
            let h = h.clone();
            reactor
                .run_until_complete(async move {
                    let t = Instant::now();
                    for _ in 0..iters {
                        h.defer_to_thread(|| 1u64).await.unwrap();
                    }
                    t.elapsed()
                })
                .unwrap()
        })
    });
    let mut group = c.benchmark_group("defer_to_thread_in_flight");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000", |b| {
        b.iter_custom(|iters| {
            let h = h.clone();
            reactor
                .run_until_complete(async move {
                    let t = Instant::now();
                    for _ in 0..iters {
                        let wave: Vec<_> = (0..1000).map(|_| h.defer_to_thread(|| 1u64)).collect();
                        for d in wave {
                            d.await.unwrap();
                        }
                    }
                    t.elapsed()
                })
                .unwrap()
        })
    });
    group.finish();
    let h2 = h.clone();
    let samples = reactor
        .run_until_complete(async move {
            let mut v = Vec::with_capacity(5000);
            for _ in 0..5000 {
                let t = Instant::now();
                h2.defer_to_thread(|| 1u64).await.unwrap();
                v.push(t.elapsed());
            }
            v
        })
        .unwrap();
    report("defer_to_thread round trip", samples);
    reactor.stop();
    reactor.run().unwrap();
}

fn bench_blocking_call(c: &mut Criterion) {
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let loop_thread = thread::spawn(move || {
        let reactor = Reactor::new().unwrap();
        tx.send(reactor.remote()).unwrap();
        reactor.run().unwrap();
        done_tx.send(()).unwrap();
    });
    let remote = rx.recv().unwrap();
    c.bench_function("blocking_call_from_thread_round_trip", |b| {
        b.iter(|| blocking_call_from_thread(&remote, || 1u64).unwrap())
    });
    let samples = (0..5000)
        .map(|_| {
            let t = Instant::now();
            blocking_call_from_thread(&remote, || 1u64).unwrap();
            t.elapsed()
        })
        .collect();
    report("blocking_call_from_thread round trip", samples);
    remote.stop();
    done_rx.recv().unwrap();
    loop_thread.join().unwrap();
}

/// Pool size for the in-flight comparison (weft's pool is capped to it).
const POOL: usize = 8;
const WAVE: u64 = 1000;

type StdJob = Box<dyn FnOnce() -> u64 + Send>;

/// The std baseline: `POOL` threads on one shared job queue, results on an
/// mpsc channel to the submitting ("loop") thread.
struct StdPool {
    jobs: Option<mpsc::Sender<StdJob>>,
    results: mpsc::Receiver<u64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl StdPool {
    fn new(n: usize) -> StdPool {
        let (job_tx, job_rx) = mpsc::channel::<StdJob>();
        let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
        let (res_tx, res_rx) = mpsc::channel();
        let threads = (0..n)
            .map(|_| {
                let job_rx = job_rx.clone();
                let res_tx = res_tx.clone();
                thread::spawn(move || {
                    loop {
                        let job = job_rx.lock().unwrap().recv();
                        let Ok(job) = job else { return };
                        if res_tx.send(job()).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        StdPool {
            jobs: Some(job_tx),
            results: res_rx,
            threads,
        }
    }
}

impl Drop for StdPool {
    fn drop(&mut self) {
        self.jobs.take();
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

fn bench_in_flight_peers(c: &mut Criterion) {
    let mut group = c.benchmark_group("bridge_1000_in_flight");
    group.throughput(Throughput::Elements(WAVE));

    let reactor = Reactor::new().unwrap();
    reactor.suggest_thread_pool_size(POOL).unwrap();
    reactor.run_until_complete(async {}).unwrap();
    let h = reactor.handle();
    group.bench_function("weft_defer_to_thread", |b| {
        b.iter_custom(|iters| {
            let h = h.clone();
            reactor
                .run_until_complete(async move {
                    let t = Instant::now();
                    for _ in 0..iters {
                        let wave: Vec<_> = (0..WAVE)
                            .map(|i| {
                                let data = [i; 4];
                                h.defer_to_thread(move || data.iter().sum::<u64>())
                            })
                            .collect();
                        let mut sum = 0;
                        for d in wave {
                            sum += d.await.unwrap();
                        }
                        assert_eq!(sum, 4 * WAVE * (WAVE - 1) / 2);
                    }
                    t.elapsed()
                })
                .unwrap()
        })
    });
    reactor.stop();
    reactor.run().unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(POOL)
        .build()
        .unwrap();
    group.bench_function("tokio_spawn_blocking", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async move {
                let t = Instant::now();
                for _ in 0..iters {
                    let wave: Vec<_> = (0..WAVE)
                        .map(|i| {
                            let data = [i; 4];
                            tokio::task::spawn_blocking(move || data.iter().sum::<u64>())
                        })
                        .collect();
                    let mut sum = 0;
                    for j in wave {
                        sum += j.await.unwrap();
                    }
                    assert_eq!(sum, 4 * WAVE * (WAVE - 1) / 2);
                }
                t.elapsed()
            })
        })
    });
    drop(rt);

    // The pool alone (no loop): how much of weft's figure is the pool.
    let pool = weft::ThreadPool::new(POOL, POOL).unwrap();
    pool.start();
    let (res_tx, res_rx) = mpsc::channel::<u64>();
    group.bench_function("weft_pool_alone_mpsc", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                for i in 0..WAVE {
                    let data = [i; 4];
                    let tx = res_tx.clone();
                    pool.call_in_thread(move || tx.send(data.iter().sum::<u64>()).unwrap())
                        .unwrap_or_else(|_| unreachable!());
                }
                let sum: u64 = (0..WAVE).map(|_| res_rx.recv().unwrap()).sum();
                assert_eq!(sum, 4 * WAVE * (WAVE - 1) / 2);
            }
            t.elapsed()
        })
    });
    pool.stop();

    let pool = StdPool::new(POOL);
    group.bench_function("std_threads_mpsc", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            let jobs = pool.jobs.as_ref().unwrap();
            for _ in 0..iters {
                for i in 0..WAVE {
                    let data = [i; 4];
                    jobs.send(Box::new(move || data.iter().sum::<u64>()))
                        .unwrap();
                }
                let sum: u64 = (0..WAVE).map(|_| pool.results.recv().unwrap()).sum();
                assert_eq!(sum, 4 * WAVE * (WAVE - 1) / 2);
            }
            t.elapsed()
        })
    });
    drop(pool);
    group.finish();
}

/// One wave of `WAVE` jobs in flight, then a sequential round trip, each
/// with and without a current span.
fn bench_span(c: &mut Criterion) {
    let reactor = Reactor::new().unwrap();
    reactor.suggest_thread_pool_size(POOL).unwrap();
    reactor.run_until_complete(async {}).unwrap();
    let h = reactor.handle();
    let mut group = c.benchmark_group("bridge_span");
    group.throughput(Throughput::Elements(WAVE));
    let wave = |iters: u64| {
        let h = h.clone();
        reactor
            .run_until_complete(async move {
                let t = Instant::now();
                for _ in 0..iters {
                    let wave: Vec<_> = (0..WAVE)
                        .map(|i| h.defer_to_thread(move || i + 1))
                        .collect();
                    for d in wave {
                        d.await.unwrap();
                    }
                }
                t.elapsed()
            })
            .unwrap()
    };
    let round_trip = |iters: u64| {
        let h = h.clone();
        reactor
            .run_until_complete(async move {
                let t = Instant::now();
                for i in 0..iters {
                    h.defer_to_thread(move || i + 1).await.unwrap();
                }
                t.elapsed()
            })
            .unwrap()
    };
    group.bench_function("in_flight_off", |b| b.iter_custom(wave));
    let subscriber = tracing_subscriber::registry();
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("bench");
        let _entered = span.enter();
        group.bench_function("in_flight_on", |b| b.iter_custom(wave));
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("round_trip_off", |b| b.iter_custom(round_trip));
    let subscriber = tracing_subscriber::registry();
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("bench");
        let _entered = span.enter();
        group.bench_function("round_trip_on", |b| b.iter_custom(round_trip));
    });
    group.finish();
    reactor.stop();
    reactor.run().unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_defer, bench_blocking_call, bench_in_flight_peers, bench_span
}
/// `BRIDGE_PROFILE=in_flight:N` (waves of 1000 in flight),
/// `round_trip:N` (sequential jobs) or `std_in_flight:N` (the std
/// baseline's waves) runs only that workload, for callgrind
/// or perf: instructions per job are the difference of two sizes. A
/// `span_` prefix (`span_in_flight:N`) runs it inside a span recorded by a
/// `tracing_subscriber::registry()`.
///
/// Under valgrind, build with `RUSTFLAGS="--cfg rustix_use_libc"` (and a
/// separate `CARGO_TARGET_DIR`): the pool's coarse clock reads the vDSO
/// through rustix, whose auxv lookup faults under valgrind (SIGSEGV in
/// `check_elf_base` before the workload starts).
fn profile(spec: &str) {
    if let Some(rest) = spec.strip_prefix("span_") {
        let subscriber = tracing_subscriber::registry();
        let _default = tracing::subscriber::set_default(subscriber);
        let span = tracing::info_span!("bench");
        let _entered = span.enter();
        return profile(rest);
    }
    let (what, n) = spec.split_once(':').expect("WHAT:N");
    let n: u64 = n.parse().expect("a count");
    if what == "std_in_flight" {
        return profile_std(n);
    }
    let what = what.to_owned();
    let reactor = Reactor::new().unwrap();
    reactor.suggest_thread_pool_size(POOL).unwrap();
    let h = reactor.handle();
    let sum = reactor
        .run_until_complete(async move {
            let mut sum = 0;
            match what.as_str() {
                "in_flight" => {
                    for _ in 0..n {
                        let wave: Vec<_> = (0..WAVE)
                            .map(|i| {
                                let data = [i; 4];
                                h.defer_to_thread(move || data.iter().sum::<u64>())
                            })
                            .collect();
                        for d in wave {
                            sum += d.await.unwrap();
                        }
                    }
                }
                "round_trip" => {
                    for i in 0..n {
                        sum += h.defer_to_thread(move || i).await.unwrap();
                    }
                }
                other => panic!("unknown workload {other}"),
            }
            sum
        })
        .unwrap();
    println!("{spec}: checksum {sum}");
    reactor.stop();
    reactor.run().unwrap();
}

/// The std baseline's waves (`std_in_flight:N`), for its instructions per
/// job beside weft's: `POOL` threads on one mpsc job queue, results on an
/// mpsc channel.
fn profile_std(n: u64) {
    let pool = StdPool::new(POOL);
    let jobs = pool.jobs.as_ref().unwrap();
    let mut sum = 0;
    for _ in 0..n {
        for i in 0..WAVE {
            let data = [i; 4];
            jobs.send(Box::new(move || data.iter().sum::<u64>()))
                .unwrap();
        }
        sum += (0..WAVE).map(|_| pool.results.recv().unwrap()).sum::<u64>();
    }
    println!("std_in_flight:{n}: checksum {sum}");
}

fn main() {
    if let Ok(spec) = std::env::var("BRIDGE_PROFILE") {
        profile(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
