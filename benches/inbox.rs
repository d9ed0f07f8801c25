//! Inbox benchmarks: `call_from_thread` bursts with captured data (1 and 2
//! producers) against tokio's mpsc → `LocalSet` pattern in the same run, wake
//! syscalls per 100k calls, and `call_later(100 µs)` lateness.
//!
//! The jobs capture an index and an `Arc` (what real callers send), so the
//! comparison is not flattered by zero-sized closures that need no
//! allocation. Run: `cargo bench --bench inbox`; the summary (medians of
//! interleaved rounds, ratios, wake syscalls, timer lateness p50/p99) is
//! printed after criterion's own output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use weft::{Reactor, Remote};

/// What every job captures besides its index: a shared counter and the
/// thread to unpark when the last job has run.
struct Sink {
    sum: AtomicU64,
    done: AtomicU64,
    total: AtomicU64,
    waiter: Mutex<Option<thread::Thread>>,
}

impl Sink {
    fn new() -> Arc<Sink> {
        Arc::new(Sink {
            sum: AtomicU64::new(0),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            waiter: Mutex::new(None),
        })
    }

    /// The job body, run on the loop.
    fn hit(&self, i: u64) {
        self.sum.fetch_add(i, Ordering::Relaxed);
        if self.done.fetch_add(1, Ordering::Relaxed) + 1 == self.total.load(Ordering::Relaxed) {
            if let Some(t) = self.waiter.lock().unwrap().take() {
                t.unpark();
            }
        }
    }

    fn arm(&self, total: u64) {
        self.done.store(0, Ordering::SeqCst);
        self.total.store(total, Ordering::SeqCst);
        *self.waiter.lock().unwrap() = Some(thread::current());
    }

    fn wait(&self, total: u64) {
        while self.done.load(Ordering::SeqCst) < total {
            thread::park();
        }
    }
}

/// A weft reactor running on its own thread; stopped and joined on drop.
struct WeftLoop {
    remote: Remote,
    join: Option<thread::JoinHandle<()>>,
}

impl WeftLoop {
    fn start() -> WeftLoop {
        let (tx, rx) = mpsc::channel();
        let join = thread::Builder::new()
            .name("weft-loop".into())
            .spawn(move || {
                let reactor = Reactor::new().unwrap();
                tx.send(reactor.remote()).unwrap();
                reactor.run().unwrap();
            })
            .unwrap();
        WeftLoop {
            remote: rx.recv().unwrap(),
            join: Some(join),
        }
    }
}

impl Drop for WeftLoop {
    fn drop(&mut self) {
        self.remote.stop();
        if let Some(j) = self.join.take() {
            j.join().unwrap();
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// tokio's way to run `Send` closures on one thread that owns `!Send` state:
/// a current-thread runtime driving a `LocalSet` whose task drains an
/// unbounded mpsc channel of boxed closures.
struct TokioLoop {
    tx: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    join: Option<thread::JoinHandle<()>>,
}

impl TokioLoop {
    fn start() -> TokioLoop {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let join = thread::Builder::new()
            .name("tokio-loop".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    while let Some(job) = rx.recv().await {
                        job();
                    }
                });
            })
            .unwrap();
        TokioLoop {
            tx: Some(tx),
            join: Some(join),
        }
    }
}

impl Drop for TokioLoop {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(j) = self.join.take() {
            j.join().unwrap();
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Subject {
    Weft,
    Tokio,
}

/// Pushes `n` jobs (each capturing an index and an `Arc`) from `producers`
/// threads and returns the time until the last one ran.
fn burst(
    subject: Subject,
    weft: &WeftLoop,
    tokio: &TokioLoop,
    sink: &Arc<Sink>,
    producers: usize,
    n: u64,
) -> Duration {
    let per = n / producers as u64;
    let total = per * producers as u64;
    sink.arm(total);
    let start = Instant::now();
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let sink = sink.clone();
            let remote = weft.remote.clone();
            let tx = tokio.tx.clone().unwrap();
            thread::spawn(move || {
                let base = p as u64 * per;
                match subject {
                    Subject::Weft => {
                        for i in base..base + per {
                            let sink = sink.clone();
                            remote
                                .call_from_thread(move || sink.hit(i))
                                .unwrap_or_else(|_| panic!("loop stopped"));
                        }
                    }
                    Subject::Tokio => {
                        for i in base..base + per {
                            let sink = sink.clone();
                            tx.send(Box::new(move || sink.hit(i)))
                                .unwrap_or_else(|_| panic!("loop stopped"));
                        }
                    }
                }
            })
        })
        .collect();
    sink.wait(total);
    let elapsed = start.elapsed();
    for h in handles {
        h.join().unwrap();
    }
    elapsed
}

fn bench_burst(c: &mut Criterion) {
    let weft = WeftLoop::start();
    let tokio = TokioLoop::start();
    let sink = Sink::new();
    let mut group = c.benchmark_group("inbox_burst_captured");
    group.throughput(Throughput::Elements(1));
    for producers in [1usize, 2] {
        for subject in [Subject::Weft, Subject::Tokio] {
            let name = format!("{subject:?}/{producers}_producer").to_lowercase();
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let n = iters.max(producers as u64 * 1000);
                    burst(subject, &weft, &tokio, &sink, producers, n)
                        .mul_f64(iters as f64 / n as f64)
                })
            });
        }
    }
    group.finish();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Interleaved rounds of 100k-call bursts: ns/call medians, the ratio to
/// tokio in the same run, and weft's wake syscalls per 100k calls.
fn summary_burst() {
    const N: u64 = 100_000;
    const ROUNDS: usize = 7;
    let weft = WeftLoop::start();
    let tokio = TokioLoop::start();
    let sink = Sink::new();
    for producers in [1usize, 2] {
        let (mut w, mut t, mut wakes) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let before = weft.remote.statistics().wake_syscalls;
            let d = burst(Subject::Weft, &weft, &tokio, &sink, producers, N);
            wakes.push((weft.remote.statistics().wake_syscalls - before) as f64);
            w.push(d.as_nanos() as f64 / N as f64);
            let d = burst(Subject::Tokio, &weft, &tokio, &sink, producers, N);
            t.push(d.as_nanos() as f64 / N as f64);
        }
        let (w, t, wakes) = (median(&mut w), median(&mut t), median(&mut wakes));
        println!(
            "burst of 100k captured calls, {producers} producer(s): weft {w:.0} ns/call, \
             tokio mpsc->LocalSet {t:.0} ns/call, ratio {:.2}x; weft wake syscalls {wakes:.0}",
            w / t
        );
    }
}

/// CPU time (user + system) of this process's thread named `name`, from
/// /proc (10 ms ticks: use over runs of 100 ms or more).
fn thread_cpu(name: &str) -> Duration {
    let mut ticks = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for task in dir.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != name {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // Fields after the `(comm)`: state is 3rd, utime 14th, stime 15th.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                ticks += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                ticks += f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    Duration::from_millis(ticks * 10)
}

/// A producer that works `gap` between calls (one producer, `n` calls):
/// the loop drains faster than it fills, which is where sleeping and
/// waking again costs most. Returns (ns per call, loop-thread CPU ns per
/// call, weft wake syscalls).
fn paced(
    subject: Subject,
    weft: &WeftLoop,
    tokio: &TokioLoop,
    n: u64,
    gap: Duration,
) -> (f64, f64, u64) {
    let sink = Sink::new();
    sink.arm(n);
    let name = match subject {
        Subject::Weft => "weft-loop",
        Subject::Tokio => "tokio-loop",
    };
    let cpu0 = thread_cpu(name);
    let wakes0 = weft.remote.statistics().wake_syscalls;
    let start = Instant::now();
    let remote = weft.remote.clone();
    let tx = tokio.tx.clone().unwrap();
    let s2 = sink.clone();
    let producer = thread::spawn(move || {
        for i in 0..n {
            let t = Instant::now();
            while t.elapsed() < gap {
                std::hint::spin_loop();
            }
            let sink = s2.clone();
            match subject {
                Subject::Weft => remote
                    .call_from_thread(move || sink.hit(i))
                    .unwrap_or_else(|_| panic!("loop stopped")),
                Subject::Tokio => tx
                    .send(Box::new(move || sink.hit(i)))
                    .unwrap_or_else(|_| panic!("loop stopped")),
            }
        }
    });
    sink.wait(n);
    let elapsed = start.elapsed();
    producer.join().unwrap();
    let cpu = thread_cpu(name) - cpu0;
    let wakes = weft.remote.statistics().wake_syscalls - wakes0;
    (
        elapsed.as_nanos() as f64 / n as f64,
        cpu.as_nanos() as f64 / n as f64,
        wakes,
    )
}

fn summary_paced() {
    let weft = WeftLoop::start();
    let tokio = TokioLoop::start();
    for gap_ns in [300u64, 1_000, 5_000] {
        let gap = Duration::from_nanos(gap_ns);
        let n = 200_000_000 / (gap_ns + 200);
        let w = paced(Subject::Weft, &weft, &tokio, n, gap);
        let t = paced(Subject::Tokio, &weft, &tokio, n, gap);
        println!(
            "paced producer ({gap_ns} ns of work between calls, {n} calls): weft {:.0} ns/call, loop CPU {:.0} ns/call, \
             {:.0} wake syscalls per 100k; tokio {:.0} ns/call, loop CPU {:.0} ns/call",
            w.0,
            w.1,
            w.2 as f64 * 100_000.0 / n as f64,
            t.0,
            t.1
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `call_later(delay)` lateness on an otherwise idle loop: time from the
/// deadline to the callback, `samples` times in a row.
fn weft_timer_lateness(delay: Duration, samples: usize) -> Vec<Duration> {
    let reactor = Reactor::new().unwrap();
    let out = std::rc::Rc::new(std::cell::RefCell::new(Vec::with_capacity(samples)));
    fn arm(delay: Duration, left: usize, out: std::rc::Rc<std::cell::RefCell<Vec<Duration>>>) {
        let handle = weft::reactor::current().unwrap();
        let deadline = Instant::now() + delay;
        handle.call_later(delay, move || {
            out.borrow_mut()
                .push(Instant::now().saturating_duration_since(deadline));
            if left > 1 {
                arm(delay, left - 1, out);
            } else {
                weft::reactor::current().unwrap().stop();
            }
        });
    }
    let o = out.clone();
    reactor.call_soon(move || arm(delay, samples, o));
    reactor.run().unwrap();
    let mut v = out.take();
    v.sort();
    v
}

fn tokio_timer_lateness(delay: Duration, samples: usize) -> Vec<Duration> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut v = rt.block_on(async move {
        let mut v = Vec::with_capacity(samples);
        for _ in 0..samples {
            let deadline = Instant::now() + delay;
            tokio::time::sleep(delay).await;
            v.push(Instant::now().saturating_duration_since(deadline));
        }
        v
    });
    v.sort();
    v
}

fn bench_timer(c: &mut Criterion) {
    // Criterion's figure is schedule-to-fire time for a 100 µs timer, so
    // everything above 100 µs is lateness.
    c.bench_function("call_later_100us_schedule_to_fire", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let _ = weft_timer_lateness(Duration::from_micros(100), iters as usize);
            start.elapsed()
        })
    });
    let delay = Duration::from_micros(100);
    let w = weft_timer_lateness(delay, 2000);
    let t = tokio_timer_lateness(delay, 2000);
    println!(
        "call_later(100us) lateness (n=2000): weft p50 {:?} p99 {:?}; tokio sleep p50 {:?} p99 {:?}",
        percentile(&w, 0.5),
        percentile(&w, 0.99),
        percentile(&t, 0.5),
        percentile(&t, 0.99)
    );
}

fn bench_summary(_c: &mut Criterion) {
    summary_burst();
    summary_paced();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_burst, bench_timer, bench_summary
}

/// `INBOX_PROFILE=weft:N` or `tokio:N`: one burst of N captured calls from
/// one producer and nothing else, for `valgrind --tool=callgrind` (run twice
/// with different N and subtract to get instructions per call).
fn profile(spec: &str) {
    let (who, n) = spec
        .split_once(':')
        .expect("INBOX_PROFILE=weft:N or tokio:N");
    let n: u64 = n.parse().expect("N");
    let weft = WeftLoop::start();
    let tokio = TokioLoop::start();
    let sink = Sink::new();
    let subject = if who == "tokio" {
        Subject::Tokio
    } else {
        Subject::Weft
    };
    let producers = std::env::var("INBOX_PRODUCERS").map_or(1, |p| p.parse().expect("producers"));
    let d = burst(subject, &weft, &tokio, &sink, producers, n);
    eprintln!(
        "{who}: {n} calls in {d:?}, weft wake syscalls {}",
        weft.remote.statistics().wake_syscalls
    );
}

fn main() {
    if let Ok(spec) = std::env::var("INBOX_PROFILE") {
        profile(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
