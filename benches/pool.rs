//! Thread pool throughput and latency, beside a plain `std::sync::mpsc` +
//! fixed threads baseline measured in the same run; and the cost of the
//! pool's job histograms, on vs off, in the same run (issue 13).
//!
//! `cargo bench --bench pool` (add `-- --quick` for a short run;
//! `cargo bench --bench pool -- histograms` for the on/off rows only).
//!
//! The capturing rows also run [`MinimalPool`], a yardstick for issue 9:
//! the least a pool with weft's per-job duties does under one lock (see its
//! docs). `POOL_PROFILE=burst_minimal:N` runs it alone.

use std::collections::VecDeque;
use std::hint::black_box;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// A yardstick, not a pool to use: one mutex over a `VecDeque` of
/// closures kept in place (as `InlineFn` keeps them), each with its
/// submission location and a coarse enqueue stamp; exact `taken` and
/// `completed` counts and a per-thread "running" record under the lock;
/// one claim per wake and one idle thread spinning on a hint before it
/// parks, as weft's pool does. Fixed threads, no withdrawal, no growth,
/// no panic handling. In ring11's same-run series (issue 9, the harness's
/// job shape) it ran at 0.40-0.66 of `threadpool`'s wall per job while
/// weft's pool ran at 0.80-0.96: sharing one lock with the submitter does
/// not by itself keep weft's pool from the target.
struct MinimalPool<F> {
    shared: Arc<MinimalShared<F>>,
    threads: Vec<thread::JoinHandle<()>>,
}

struct MinimalShared<F> {
    state: Mutex<MinimalState<F>>,
    work: Condvar,
    hint: SpinHint,
}

/// The flag a spinning idle thread watches, alone in its cache line.
#[repr(align(64))]
struct SpinHint(AtomicBool);

/// A queued closure, where it was submitted and when (coarse clock, ns).
type MinimalJob<F> = (F, &'static Location<'static>, u64);

struct MinimalState<F> {
    queue: VecDeque<MinimalJob<F>>,
    idle: usize,
    claimed: usize,
    spinning: bool,
    stopped: bool,
    taken: u64,
    completed: u64,
    /// What each thread runs: the job's location and start.
    running: Vec<Option<(&'static Location<'static>, u64)>>,
}

/// The coarse monotonic clock (one kernel tick), as weft's job stamps.
fn coarse_nanos() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

/// The most spin rounds of an idle thread before it parks (a few us).
const SPIN_ROUNDS: usize = 2048;

impl<F: FnOnce() + Send + 'static> MinimalPool<F> {
    fn new(n: usize) -> MinimalPool<F> {
        let shared = Arc::new(MinimalShared {
            state: Mutex::new(MinimalState {
                queue: VecDeque::new(),
                idle: 0,
                claimed: 0,
                spinning: false,
                stopped: false,
                taken: 0,
                completed: 0,
                running: vec![None; n],
            }),
            work: Condvar::new(),
            hint: SpinHint(AtomicBool::new(false)),
        });
        let threads = (0..n)
            .map(|me| {
                let shared = shared.clone();
                thread::spawn(move || shared.run(me))
            })
            .collect();
        MinimalPool { shared, threads }
    }

    #[track_caller]
    fn submit(&self, f: F) {
        let job = (f, Location::caller(), coarse_nanos());
        let mut st = self.shared.state.lock().unwrap();
        st.queue.push_back(job);
        // One claim at a time: the claimed thread drains what follows.
        let wake = st.idle > 0 && st.claimed == 0;
        if wake {
            st.idle -= 1;
            st.claimed += 1;
        }
        let spinner = st.spinning;
        drop(st);
        if wake && spinner {
            self.shared.hint.0.store(true, Ordering::Release);
        } else if wake {
            self.shared.work.notify_one();
        }
    }
}

impl<F: FnOnce() + Send + 'static> MinimalShared<F> {
    fn run(&self, me: usize) {
        let mut st = self.state.lock().unwrap();
        loop {
            // Busy: one lock hold per job ends the last and takes the next.
            while let Some((f, location, enqueued)) = st.queue.pop_front() {
                st.taken += 1;
                st.running[me] = Some((location, coarse_nanos().max(enqueued)));
                drop(st);
                f();
                st = self.state.lock().unwrap();
                st.completed += 1;
                st.running[me] = None;
            }
            if st.stopped {
                return;
            }
            st.idle += 1;
            if !st.spinning {
                st.spinning = true;
                self.hint.0.store(false, Ordering::Relaxed);
                drop(st);
                for _ in 0..SPIN_ROUNDS {
                    if self.hint.0.load(Ordering::Acquire) {
                        break;
                    }
                    std::hint::spin_loop();
                }
                st = self.state.lock().unwrap();
                st.spinning = false;
            }
            while st.claimed == 0 && !st.stopped {
                st = self.work.wait(st).unwrap();
            }
            if st.claimed > 0 {
                st.claimed -= 1;
            }
        }
    }
}

impl<F> Drop for MinimalPool<F> {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().stopped = true;
        self.shared.work.notify_all();
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

    group.bench_function("minimal_locked_pool", |b| {
        b.iter(|| minimal_burst(&data, TASKS, THREADS, false))
    });
    group.finish();
}

/// [`capturing_burst`] through a fresh [`MinimalPool`] of `threads`
/// threads. Its threads start as the burst begins, so they find a backlog;
/// with `settle` they start and park first, as a started weft pool's have.
/// Returns the time spent settling (not part of the burst).
fn minimal_burst(data: &Arc<Vec<u64>>, n: usize, threads: usize, settle: bool) -> Duration {
    let pool = MinimalPool::new(threads);
    let settling = std::time::Instant::now();
    if settle {
        thread::sleep(Duration::from_millis(20));
    }
    let settled = settling.elapsed();
    let countdown = Countdown::new(n);
    for i in 0..n {
        let (c, data) = (countdown.clone(), data.clone());
        pool.submit(move || {
            black_box(data[i % data.len()]);
            c.tick();
        });
    }
    countdown.wait();
    settled
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

/// `POOL_PROFILE=WHAT:N[:THREADS]` runs only one workload, for callgrind
/// (instructions per job are the difference of two sizes) and perf:
/// - `burst`: N capturing jobs from one submitter through a pool of two
///   threads; `burst_mpsc` through [`MpscPool`] (the harness's std
///   baseline); `burst_minimal` through [`MinimalPool`], whose threads start
///   with the burst; `burst_minimal_settled` the same once they parked;
/// - `submit` / `submit_minimal` / `submit_mpsc`: the submitter's side
///   alone, N jobs into a pool that runs none of them (not started; no
///   thread; a channel nobody receives from);
/// - `round_trip`: N jobs in sequence, each submitted when the last one's
///   reply arrived.
///
/// The third field sets the threads (`round_trip:N:8`: eight threads, more
/// than this machine's cores). The run prints its wall and process CPU
/// time per job (from `/proc/self/stat`, 10 ms ticks: use a run of a
/// second or more) and the submitting thread's own CPU per job
/// (`/proc/thread-self/schedstat`, exact).
///
/// Under valgrind, build with `RUSTFLAGS="--cfg rustix_use_libc"` and a
/// separate `CARGO_TARGET_DIR` (see `benches/bridge.rs`). Callgrind runs
/// one thread at a time, so an idle thread's spin (`SpinHint::spin`) runs
/// until the scheduler switches: subtract its inclusive cost.
///
/// Context switches and futex calls per burst (the pool's cost beyond its
/// instructions) count the same way for every pool, in this profile or in
/// a harness cell: `perf stat -e context-switches,syscalls:sys_enter_futex
/// weft-bench --cell weft pool_throughput`. On a loaded machine (pool13)
/// a 500k-job burst had 2,300-2,800 idle spells of a worker, each ended by
/// a park and a notify; the few spins all timed out, none ended by a job.
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
    let (t0, cpu0, own0) = (std::time::Instant::now(), cpu_ticks(), own_cpu_nanos());
    let data: Arc<Vec<u64>> = Arc::new((0..1024).collect());
    let mut settled = Duration::ZERO;
    match what {
        "burst" => {
            capturing_burst(&pool, &data, n);
        }
        "burst_minimal" => {
            minimal_burst(&data, n, threads, false);
        }
        "burst_minimal_settled" => settled = minimal_burst(&data, n, threads, true),
        // The std baseline of the harness: `MpscPool` (a boxed closure per
        // job, one channel, the receiver behind one mutex).
        "burst_mpsc" => {
            let mpsc_pool = MpscPool::new(threads);
            let countdown = Countdown::new(n);
            for i in 0..n {
                let (c, data) = (countdown.clone(), data.clone());
                mpsc_pool.submit(move || {
                    black_box(data[i % data.len()]);
                    c.tick();
                });
            }
            countdown.wait();
        }
        // The submitter's side alone: nothing runs the jobs while they are
        // queued (a pool not started; a minimal pool with no thread).
        "submit" => {
            let idle = ThreadPool::new(1, 1).unwrap();
            let t = own_cpu_nanos();
            for i in 0..n {
                let data = data.clone();
                idle.call_in_thread(move || {
                    black_box(data[i % data.len()]);
                })
                .unwrap_or_else(|_| panic!("refused"));
            }
            let own = own_cpu_nanos() - t;
            println!("submit only: {:.1} ns/job CPU", own as f64 / n as f64);
        }
        "submit_minimal" => {
            let idle = MinimalPool::new(0);
            let t = own_cpu_nanos();
            for i in 0..n {
                let data = data.clone();
                idle.submit(move || {
                    black_box(data[i % data.len()]);
                });
            }
            let own = own_cpu_nanos() - t;
            println!("submit only: {:.1} ns/job CPU", own as f64 / n as f64);
        }
        "submit_mpsc" => {
            let (tx, rx) = mpsc::channel::<Job>();
            let t = own_cpu_nanos();
            for i in 0..n {
                let data = data.clone();
                tx.send(Box::new(move || {
                    black_box(data[i % data.len()]);
                }))
                .unwrap();
            }
            let own = own_cpu_nanos() - t;
            println!("submit only: {:.1} ns/job CPU", own as f64 / n as f64);
            drop(rx);
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
    let (wall, cpu, own) = (
        t0.elapsed() - settled,
        cpu_ticks() - cpu0,
        own_cpu_nanos() - own0,
    );
    pool.stop();
    println!(
        "{what} n={n} threads={threads}: {:.0} ns/job wall, {:.0} ns/job CPU",
        wall.as_nanos() as f64 / n as f64,
        cpu as f64 * 1e7 / n as f64
    );
    println!("submitter: {:.1} ns/job CPU", own as f64 / n as f64);
}

/// The calling thread's time on a CPU so far, in nanoseconds (the first
/// field of `/proc/thread-self/schedstat`; 0 where there is none).
fn own_cpu_nanos() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
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
