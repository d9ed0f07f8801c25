//! What is measured: the scenarios, their sizes, and the loop-side helpers every
//! subject shares.
//!
//! # Methodology
//!
//! - Every scenario measures a *cost*: nanoseconds per operation, a number of
//!   threads, or a number of syscalls. Lower is better everywhere, so a ratio
//!   `weft / peer` at or below 1 means weft wins that row.
//! - Latency scenarios record one sample per operation (then reported as
//!   p50 / p99 over all rounds). Throughput scenarios record one sample per
//!   round: the wall time of the whole burst divided by the operation count,
//!   measured from the moment the first producer starts to the moment the last
//!   job has run on the consumer.
//! - The jobs sent across threads carry no state of their own (`loop_tick` is a
//!   plain function), so no allocation, `Arc` count or shared cache line of the
//!   harness is added to what a peer costs. Loop-side bookkeeping lives in
//!   thread-locals of the loop thread; pool-side bookkeeping in one atomic.
//! - Every wait of the harness is bounded by [`DEADLINE`]; a scenario that
//!   overruns it fails loudly instead of hanging the run.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// The longest any single wait of the harness may take.
pub(crate) const DEADLINE: Duration = Duration::from_secs(120);

/// One thing measured for every subject that supports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Scenario {
    /// `call_from_thread` burst from one producer, ns per call.
    CftBurst1,
    /// `call_from_thread` burst from two producers, ns per call.
    CftBurst2,
    /// `call_from_thread` into an idle loop: send → run latency, ns.
    CftWake,
    /// `defer_to_thread` round trip from the loop, one at a time, ns.
    DeferSeq,
    /// `defer_to_thread` with waves of 1000 in flight, ns per job.
    DeferInFlight,
    /// `blocking_call_from_thread` round trip from a plain thread, ns.
    BlockingCall,
    /// Pool throughput: trivial jobs from one submitter, ns per job.
    PoolThroughput,
    /// Pool threads alive right after a burst of 100k trivial jobs.
    ThreadsAfterBurst,
    /// Floor: two threads spinning on one atomic, round trip ns.
    FloorSpin,
    /// Floor: `thread::park` / `unpark` (futex) ping-pong, round trip ns.
    FloorFutex,
    /// Floor: eventfd + epoll ping-pong, round trip ns.
    FloorEpoll,
    /// Floor: uncontended `Mutex<VecDeque<Box<dyn FnOnce>>>` push + pop + call, ns.
    FloorMutexQueue,
    /// Floor: one eventfd `write(2)` with nobody waiting, ns.
    FloorEventfdWrite,
}

/// How a scenario's samples are summarised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Per-operation latency samples in ns: report p50 / p99.
    Latency,
    /// One ns-per-operation sample per round: report the median.
    Throughput,
    /// One count per round: report the median.
    Count,
}

impl Scenario {
    /// The scenarios of the round-robin, in table order.
    pub(crate) const ROWS: [Scenario; 8] = [
        Scenario::CftBurst1,
        Scenario::CftBurst2,
        Scenario::CftWake,
        Scenario::DeferSeq,
        Scenario::DeferInFlight,
        Scenario::BlockingCall,
        Scenario::PoolThroughput,
        Scenario::ThreadsAfterBurst,
    ];

    /// The physical floors, measured in the same rounds.
    pub(crate) const FLOORS: [Scenario; 5] = [
        Scenario::FloorSpin,
        Scenario::FloorFutex,
        Scenario::FloorEpoll,
        Scenario::FloorMutexQueue,
        Scenario::FloorEventfdWrite,
    ];

    /// A stable identifier used in the JSON file.
    pub(crate) fn id(self) -> &'static str {
        match self {
            Scenario::CftBurst1 => "cft_burst_1p",
            Scenario::CftBurst2 => "cft_burst_2p",
            Scenario::CftWake => "cft_wake_latency",
            Scenario::DeferSeq => "defer_rtt_seq",
            Scenario::DeferInFlight => "defer_1000_in_flight",
            Scenario::BlockingCall => "blocking_call_rtt",
            Scenario::PoolThroughput => "pool_throughput",
            Scenario::ThreadsAfterBurst => "threads_after_100k_burst",
            Scenario::FloorSpin => "floor_spin_rtt",
            Scenario::FloorFutex => "floor_futex_rtt",
            Scenario::FloorEpoll => "floor_eventfd_epoll_rtt",
            Scenario::FloorMutexQueue => "floor_mutex_queue",
            Scenario::FloorEventfdWrite => "floor_eventfd_write",
        }
    }

    /// The row label in the markdown table.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Scenario::CftBurst1 => "call_from_thread burst, 1 producer (ns/call)",
            Scenario::CftBurst2 => "call_from_thread burst, 2 producers (ns/call)",
            Scenario::CftWake => "call_from_thread wake latency, idle loop (p50 / p99)",
            Scenario::DeferSeq => "defer_to_thread round trip, sequential (p50 / p99)",
            Scenario::DeferInFlight => "defer_to_thread, 1000 in flight (ns/job)",
            Scenario::BlockingCall => "blocking_call_from_thread round trip (p50 / p99)",
            Scenario::PoolThroughput => "pool throughput, one submitter (ns/job)",
            Scenario::ThreadsAfterBurst => "threads alive after 100k short jobs",
            Scenario::FloorSpin => "atomic spin ping-pong RTT",
            Scenario::FloorFutex => "futex park/unpark ping-pong RTT",
            Scenario::FloorEpoll => "eventfd + epoll ping-pong RTT",
            Scenario::FloorMutexQueue => "uncontended mutex queue push + pop + call",
            Scenario::FloorEventfdWrite => "eventfd write, nobody waiting",
        }
    }

    /// How the samples are summarised.
    pub(crate) fn kind(self) -> Kind {
        match self {
            Scenario::CftBurst1
            | Scenario::CftBurst2
            | Scenario::DeferInFlight
            | Scenario::PoolThroughput
            | Scenario::FloorMutexQueue
            | Scenario::FloorEventfdWrite => Kind::Throughput,
            Scenario::ThreadsAfterBurst => Kind::Count,
            _ => Kind::Latency,
        }
    }
}

/// Sizes of every scenario for one run.
#[derive(Clone, Debug)]
pub(crate) struct Params {
    /// Round-robin rounds.
    pub(crate) rounds: usize,
    /// Calls per producer in a `call_from_thread` burst.
    pub(crate) burst_calls: usize,
    /// Samples of the wake-latency scenario per round.
    pub(crate) wake_samples: usize,
    /// Pause between wake-latency sends, long enough for the loop to go idle.
    pub(crate) wake_gap: Duration,
    /// Sequential round trips per round (defer and blocking call).
    pub(crate) rtt_samples: usize,
    /// Waves of 1000 in-flight defers per round.
    pub(crate) inflight_waves: usize,
    /// Jobs in the pool-throughput scenario.
    pub(crate) pool_jobs: usize,
    /// Jobs in the thread-growth burst.
    pub(crate) growth_jobs: usize,
    /// Round trips of each ping-pong floor per round.
    pub(crate) floor_rtts: usize,
    /// Cross-thread calls counted for the wake-syscall row.
    pub(crate) syscall_calls: usize,
}

impl Params {
    /// Sizes for `--quick` (under a minute on 2 cores).
    pub(crate) fn quick() -> Self {
        Params {
            rounds: 3,
            burst_calls: 50_000,
            wake_samples: 200,
            wake_gap: Duration::from_micros(250),
            rtt_samples: 1_000,
            inflight_waves: 5,
            pool_jobs: 100_000,
            growth_jobs: 100_000,
            floor_rtts: 5_000,
            syscall_calls: 100_000,
        }
    }

    /// Sizes for the full run (under ten minutes on 2 cores).
    pub(crate) fn full() -> Self {
        Params {
            rounds: 7,
            burst_calls: 200_000,
            wake_samples: 1_000,
            wake_gap: Duration::from_micros(250),
            rtt_samples: 5_000,
            inflight_waves: 20,
            pool_jobs: 1_000_000,
            growth_jobs: 100_000,
            floor_rtts: 20_000,
            syscall_calls: 100_000,
        }
    }
}

/// A boxed cross-thread job, for peers whose queues need one type.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

// ---------------------------------------------------------------------------
// Loop-side bookkeeping: lives on the loop thread, touched only by it.

thread_local! {
    static TICKS: Cell<usize> = const { Cell::new(0) };
    static TARGET: Cell<usize> = const { Cell::new(usize::MAX) };
    static END: Cell<Option<Instant>> = const { Cell::new(None) };
    static ON_LAST: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
    static LAT: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// Arms the loop thread: after `target` calls of [`loop_tick`], record the end
/// time and call `on_last` (which stops the peer's loop).
pub(crate) fn arm_loop(target: usize, on_last: impl FnOnce() + 'static) {
    TICKS.set(0);
    TARGET.set(target);
    END.set(None);
    ON_LAST.with_borrow_mut(|s| *s = Some(Box::new(on_last)));
    LAT.with_borrow_mut(Vec::clear);
}

/// The job every `call_from_thread` burst sends; runs on the loop thread.
pub(crate) fn loop_tick() {
    let n = TICKS.get() + 1;
    TICKS.set(n);
    if n == TARGET.get() {
        END.set(Some(Instant::now()));
        if let Some(f) = ON_LAST.with_borrow_mut(Option::take) {
            f();
        }
    }
}

/// A job that records how long ago `sent` was, then ticks.
pub(crate) fn wake_job(sent: Instant) -> impl FnOnce() + Send + 'static {
    move || {
        let ns = sent.elapsed().as_nanos() as f64;
        LAT.with_borrow_mut(|v| v.push(ns));
        loop_tick();
    }
}

/// The end time recorded by the last [`loop_tick`] on this thread.
pub(crate) fn loop_end() -> Instant {
    END.get().expect("loop stopped before its last tick")
}

/// The latency samples recorded by [`wake_job`] on this thread.
pub(crate) fn take_latencies() -> Vec<f64> {
    LAT.with_borrow_mut(std::mem::take)
}

// ---------------------------------------------------------------------------
// Producers.

/// Producer threads released together, sharing the instant the first started.
pub(crate) struct Producers {
    start: Arc<OnceLock<Instant>>,
    handles: Vec<JoinHandle<Vec<f64>>>,
}

impl Producers {
    /// Spawns `n` threads that wait on one barrier, then run `body(index)`.
    /// `body` returns samples of its own (blocking-call latencies) or nothing.
    pub(crate) fn spawn<F>(n: usize, body: F) -> Self
    where
        F: Fn(usize) -> Vec<f64> + Send + Clone + 'static,
    {
        let start = Arc::new(OnceLock::new());
        let barrier = Arc::new(Barrier::new(n));
        let handles = (0..n)
            .map(|i| {
                let (start, barrier, body) = (start.clone(), barrier.clone(), body.clone());
                thread::Builder::new()
                    .name(format!("bench-producer-{i}"))
                    .spawn(move || {
                        barrier.wait();
                        start.get_or_init(Instant::now);
                        body(i)
                    })
                    .expect("spawn producer")
            })
            .collect();
        Producers { start, handles }
    }

    /// Joins the producers; returns their start instant and their samples.
    pub(crate) fn join(self) -> (Instant, Vec<f64>) {
        let mut samples = Vec::new();
        for h in self.handles {
            samples.extend(h.join().expect("producer panicked"));
        }
        (*self.start.get().expect("producers never started"), samples)
    }
}

/// ns per operation between two instants.
pub(crate) fn per_op(start: Instant, end: Instant, ops: usize) -> f64 {
    end.saturating_duration_since(start).as_nanos() as f64 / ops as f64
}

/// The body of a wake-latency producer: `samples` sends, each after a pause.
pub(crate) fn wake_producer<S: Fn(Instant)>(p: &Params, send: S) -> Vec<f64> {
    for _ in 0..p.wake_samples {
        thread::sleep(p.wake_gap);
        send(Instant::now());
    }
    Vec::new()
}

/// Runs `call` `n` times from this thread and records each round trip in ns.
pub(crate) fn time_each(n: usize, mut call: impl FnMut()) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            call();
            t.elapsed().as_nanos() as f64
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Pool-side bookkeeping: one atomic counter and the submitter to unpark.

static POOL_DONE: AtomicUsize = AtomicUsize::new(0);
static POOL_TARGET: AtomicUsize = AtomicUsize::new(usize::MAX);
static POOL_WAITER: Mutex<Option<Thread>> = Mutex::new(None);

/// Arms the pool counter for `target` jobs, to be awaited by this thread.
pub(crate) fn arm_pool(target: usize) {
    POOL_DONE.store(0, Ordering::SeqCst);
    POOL_TARGET.store(target, Ordering::SeqCst);
    *POOL_WAITER.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread::current());
}

/// The trivial pool job: count, and unpark the submitter after the last one.
pub(crate) fn pool_job() {
    let n = POOL_DONE.fetch_add(1, Ordering::AcqRel) + 1;
    if n == POOL_TARGET.load(Ordering::Acquire) {
        if let Some(t) = POOL_WAITER
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            t.unpark();
        }
    }
}

/// Waits (parked, bounded by [`DEADLINE`]) until every armed pool job ran.
pub(crate) fn wait_pool() -> Instant {
    let target = POOL_TARGET.load(Ordering::Acquire);
    let deadline = Instant::now() + DEADLINE;
    while POOL_DONE.load(Ordering::Acquire) < target {
        assert!(
            Instant::now() < deadline,
            "pool jobs did not finish in time"
        );
        thread::park_timeout(Duration::from_millis(10));
    }
    Instant::now()
}

/// Threads of this process whose name starts with `prefix` (Linux `/proc`).
pub(crate) fn threads_named(prefix: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// Runs a pool burst of `jobs` trivial jobs through `submit` from this thread;
/// returns ns per job (submit of the first to run of the last).
pub(crate) fn pool_burst(jobs: usize, mut submit: impl FnMut()) -> f64 {
    arm_pool(jobs);
    let start = Instant::now();
    for _ in 0..jobs {
        submit();
    }
    per_op(start, wait_pool(), jobs)
}

/// Cores available to this process.
pub(crate) fn cores() -> usize {
    thread::available_parallelism().map_or(1, usize::from)
}

// ---------------------------------------------------------------------------
// The channel pattern: peers whose `call_from_thread` is "send a boxed closure
// to a task or source on the loop" share the producer side.

/// Producers and tick target of a channel-pattern scenario, or n/a.
pub(crate) fn channel_shape(sc: Scenario, p: &Params) -> Result<(usize, usize), &'static str> {
    Ok(match sc {
        Scenario::CftBurst1 => (1, p.burst_calls),
        Scenario::CftBurst2 => (2, 2 * p.burst_calls),
        Scenario::CftWake => (1, p.wake_samples),
        Scenario::BlockingCall => (1, 1),
        _ => return Err("no such operation"),
    })
}

/// Starts the producers of a channel-pattern scenario. `send` queues a job on
/// the loop; `block` runs a job on the loop and waits for it (the peer's
/// documented `blocking_call_from_thread` pattern).
pub(crate) fn channel_producers<S, B>(sc: Scenario, p: &Params, send: S, block: B) -> Producers
where
    S: Fn(Job) + Send + Clone + 'static,
    B: Fn() + Send + Clone + 'static,
{
    let (producers, _) = channel_shape(sc, p).expect("checked by channel_shape");
    let p = p.clone();
    Producers::spawn(producers, move |_| match sc {
        Scenario::CftWake => wake_producer(&p, |t| send(Box::new(wake_job(t)))),
        Scenario::BlockingCall => {
            let v = time_each(p.rtt_samples, &block);
            send(Box::new(loop_tick));
            v
        }
        _ => {
            for _ in 0..p.burst_calls {
                send(Box::new(loop_tick));
            }
            Vec::new()
        }
    })
}

/// Collects the result of a channel-pattern scenario once the loop stopped.
pub(crate) fn channel_result(sc: Scenario, target: usize, prods: Producers) -> Vec<f64> {
    let (start, samples) = prods.join();
    match sc {
        Scenario::CftWake => take_latencies(),
        Scenario::BlockingCall => samples,
        _ => vec![per_op(start, loop_end(), target)],
    }
}
