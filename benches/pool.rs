//! Thread pool throughput and latency, beside a plain `std::sync::mpsc` +
//! fixed threads baseline measured in the same run; and the cost of the
//! pool's job histograms, on vs off, in the same run (issue 13).
//!
//! `cargo bench --bench pool` (add `-- --quick` for a short run;
//! `cargo bench --bench pool -- histograms` for the on/off rows only).

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use weft::ThreadPool;

const TASKS: usize = 1_000_000;
const THREADS: usize = 2;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The Rust book's pool: one channel, fixed threads sharing the receiver.
struct MpscPool {
    tx: Option<mpsc::Sender<Job>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl MpscPool {
    fn new(n: usize) -> MpscPool {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..n)
            .map(|_| {
                let rx = rx.clone();
                thread::spawn(move || {
                    loop {
                        let job = rx.lock().unwrap().recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        MpscPool {
            tx: Some(tx),
            threads,
        }
    }

    fn submit(&self, job: impl FnOnce() + Send + 'static) {
        self.tx.as_ref().unwrap().send(Box::new(job)).unwrap();
    }
}

impl Drop for MpscPool {
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

/// Counts finished tasks; `wait` blocks until `target` have finished.
struct Countdown {
    done: AtomicUsize,
    target: usize,
    finished: Mutex<bool>,
    cv: Condvar,
}

impl Countdown {
    fn new(target: usize) -> Arc<Countdown> {
        Arc::new(Countdown {
            done: AtomicUsize::new(0),
            target,
            finished: Mutex::new(false),
            cv: Condvar::new(),
        })
    }

    fn tick(&self) {
        if self.done.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            *self.finished.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }

    fn wait(&self) {
        let mut finished = self.finished.lock().unwrap();
        while !*finished {
            finished = self.cv.wait(finished).unwrap();
        }
    }
}

/// Submits `n` jobs to `pool`, each capturing its index and `data` (as real
/// calls carry data), and waits until all of them ran.
fn capturing_burst(pool: &ThreadPool, data: &Arc<Vec<u64>>, n: usize) {
    let countdown = Countdown::new(n);
    for i in 0..n {
        let (c, data) = (countdown.clone(), data.clone());
        pool.call_in_thread(move || {
            black_box(data[i % data.len()]);
            c.tick();
        })
        .unwrap_or_else(|_| panic!("refused"));
    }
    countdown.wait();
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput_1m_trivial_tasks");
    group.throughput(Throughput::Elements(TASKS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));

    let pool = ThreadPool::new(THREADS, THREADS).unwrap();
    pool.start();
    group.bench_function("weft_thread_pool", |b| {
        b.iter(|| {
            let countdown = Countdown::new(TASKS);
            for _ in 0..TASKS {
                let c = countdown.clone();
                pool.call_in_thread(move || c.tick())
                    .unwrap_or_else(|_| panic!("refused"));
            }
            countdown.wait();
        })
    });
    pool.stop();

    let baseline = MpscPool::new(THREADS);
    group.bench_function("mpsc_fixed_threads", |b| {
        b.iter(|| {
            let countdown = Countdown::new(TASKS);
            for _ in 0..TASKS {
                let c = countdown.clone();
                baseline.submit(move || c.tick());
            }
            countdown.wait();
        })
    });
    drop(baseline);
    group.finish();
}

fn latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("submit_to_run_round_trip");
    group.measurement_time(Duration::from_secs(4));

    let pool = ThreadPool::new(THREADS, THREADS).unwrap();
    pool.start();
    let (tx, rx) = mpsc::channel::<usize>();
    group.bench_function("weft_thread_pool", |b| {
        b.iter(|| {
            let tx = tx.clone();
            pool.call_in_thread(move || tx.send(black_box(1)).unwrap())
                .unwrap_or_else(|_| panic!("refused"));
            rx.recv().unwrap()
        })
    });
    pool.stop();

    let baseline = MpscPool::new(THREADS);
    group.bench_function("mpsc_fixed_threads", |b| {
        b.iter(|| {
            let tx = tx.clone();
            baseline.submit(move || tx.send(black_box(1)).unwrap());
            rx.recv().unwrap()
        })
    });
    drop(baseline);
    group.finish();
}

/// Jobs that capture data, as real jobs do: an index and an `Arc` (issue 9).
fn throughput_capturing(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput_1m_capturing_tasks");
    group.throughput(Throughput::Elements(TASKS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    let data: Arc<Vec<u64>> = Arc::new((0..1024).collect());

    let pool = ThreadPool::new(THREADS, THREADS).unwrap();
    pool.start();
    group.bench_function("weft_thread_pool", |b| {
        b.iter(|| {
            capturing_burst(&pool, &data, TASKS);
        })
    });
    pool.stop();

    let baseline = MpscPool::new(THREADS);
    group.bench_function("mpsc_fixed_threads", |b| {
        b.iter(|| {
            let countdown = Countdown::new(TASKS);
            for i in 0..TASKS {
                let (c, data) = (countdown.clone(), data.clone());
                baseline.submit(move || {
                    black_box(data[i % data.len()]);
                    c.tick();
                });
            }
            countdown.wait();
        })
    });
    drop(baseline);
    group.finish();
}

/// Capturing jobs through a pool with job histograms off (the default: job
/// locations and coarse ages only) and on (precise clock, two histograms).
fn histograms(c: &mut Criterion) {
    const JOBS: usize = 200_000;
    let mut group = c.benchmark_group("histograms_200k_capturing_tasks");
    group.throughput(Throughput::Elements(JOBS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let data: Arc<Vec<u64>> = Arc::new((0..1024).collect());
    for on in [false, true] {
        let pool = ThreadPool::builder()
            .min(THREADS)
            .max(THREADS)
            .histograms(on)
            .build()
            .unwrap();
        pool.start();
        let name = if on { "on" } else { "off" };
        group.bench_function(name, |b| {
            b.iter(|| {
                capturing_burst(&pool, &data, JOBS);
            })
        });
        pool.stop();
    }
    group.finish();
}

criterion_group!(
    benches,
    throughput,
    throughput_capturing,
    latency,
    histograms
);

/// `POOL_PROFILE=burst:N` (N capturing jobs from one submitter through a
/// pool of two threads) or `round_trip:N` (N jobs in sequence, each
/// submitted when the last one's reply arrived) runs only that workload,
/// for callgrind: instructions per job are the difference of two sizes.
/// A third field sets the pool's threads (`round_trip:N:8`: eight threads,
/// more than this machine's cores), and the run prints its wall and
/// process CPU time per job (from `/proc/self/stat`, 10 ms ticks: use a
/// run of a second or more).
///
/// Under valgrind, build with `RUSTFLAGS="--cfg rustix_use_libc"` and a
/// separate `CARGO_TARGET_DIR` (see `benches/bridge.rs`). Callgrind runs
/// one thread at a time, so an idle thread's spin (`SpinHint::spin`) runs
/// until the scheduler switches: subtract its inclusive cost.
fn profile(spec: &str) {
    let mut fields = spec.split(':');
    let what = fields.next().unwrap_or_default();
    let n: usize = fields
        .next()
        .and_then(|n| n.parse().ok())
        .expect("POOL_PROFILE=burst:N or round_trip:N");
    let threads: usize = fields
        .next()
        .map_or(THREADS, |t| t.parse().expect("threads"));
    let pool = ThreadPool::new(threads, threads).unwrap();
    pool.start();
    let (t0, cpu0) = (std::time::Instant::now(), cpu_ticks());
    let data: Arc<Vec<u64>> = Arc::new((0..1024).collect());
    match what {
        "burst" => {
            capturing_burst(&pool, &data, n);
        }
        "round_trip" => {
            let (tx, rx) = mpsc::channel::<usize>();
            for i in 0..n {
                let (tx, data) = (tx.clone(), data.clone());
                pool.call_in_thread(move || {
                    tx.send(black_box(data[i % data.len()]) as usize).unwrap()
                })
                .unwrap_or_else(|_| panic!("refused"));
                rx.recv().unwrap();
            }
        }
        _ => panic!("POOL_PROFILE=burst:N or round_trip:N"),
    }
    let (wall, cpu) = (t0.elapsed(), cpu_ticks() - cpu0);
    pool.stop();
    println!(
        "{what} n={n} threads={threads}: {:.0} ns/job wall, {:.0} ns/job CPU",
        wall.as_nanos() as f64 / n as f64,
        cpu as f64 * 1e7 / n as f64
    );
}

/// This process's user + system CPU time, in 10 ms ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the line.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn main() {
    if let Ok(spec) = std::env::var("POOL_PROFILE") {
        return profile(&spec);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
