//! Both sides of a measurement: the loop-side counters (on the loop
//! thread, touched only by it), the producer threads, the pool-side
//! counter, and the producer side shared by the channel-pattern peers.

use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use super::{Ctx, DEADLINE, Job, Params, Scenario, mark_end, mark_start, pin_other, tick_job};

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

/// Counts one job run on the loop; the last one ends the measured section.
pub(crate) fn loop_tick() {
    let n = TICKS.get() + 1;
    TICKS.set(n);
    if n == TARGET.get() {
        END.set(Some(Instant::now()));
        mark_end();
        if let Some(f) = ON_LAST.with_borrow_mut(Option::take) {
            f();
        }
    }
}

/// A job that records how long ago `sent` was, then ticks.
pub(crate) fn wake_job(sent: Instant, ctx: Arc<Ctx>) -> impl FnOnce() + Send + 'static {
    move || {
        let ns = sent.elapsed().as_nanos() as f64;
        black_box(ctx.value(0));
        LAT.with_borrow_mut(|v| v.push(ns));
        loop_tick();
    }
}

/// The end time recorded by the last [`loop_tick`] on this thread.
pub(crate) fn loop_end() -> Instant {
    END.get().expect("loop stopped before its last tick")
}

/// The latency samples recorded by [`wake_job`] (or [`record_latency`]) on
/// this thread.
pub(crate) fn take_latencies() -> Vec<f64> {
    LAT.with_borrow_mut(std::mem::take)
}

/// Records one latency sample on this thread.
pub(crate) fn record_latency(ns: f64) {
    LAT.with_borrow_mut(|v| v.push(ns));
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
    /// In pinned measurements the producers sit where [`pin_other`] puts them.
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
                        pin_other();
                        barrier.wait();
                        start.get_or_init(|| {
                            mark_start();
                            Instant::now()
                        });
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

/// Runs `call(i)` for `i` in `0..n` from this thread and records each round
/// trip in ns.
pub(crate) fn time_each(n: usize, mut call: impl FnMut(usize)) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let t = Instant::now();
            call(i);
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
fn arm_pool(target: usize) {
    POOL_DONE.store(0, Ordering::SeqCst);
    POOL_TARGET.store(target, Ordering::SeqCst);
    *POOL_WAITER.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread::current());
}

/// Counts one pool job, and unparks the submitter after the last one.
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
fn wait_pool() -> Instant {
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

/// Runs a pool burst of `jobs` jobs through `submit(i)` from this thread;
/// returns ns per job (submit of the first to run of the last).
pub(crate) fn pool_burst(jobs: usize, mut submit: impl FnMut(usize)) -> f64 {
    arm_pool(jobs);
    mark_start();
    let start = Instant::now();
    for i in 0..jobs {
        submit(i);
    }
    let end = wait_pool();
    mark_end();
    per_op(start, end, jobs)
}

/// Cores available to this process.
pub(crate) fn cores() -> usize {
    thread::available_parallelism().map_or(1, usize::from)
}

/// The thread limit of the capped peers: the threads weft's self-limiting
/// pool runs a burst of short jobs with, one per core plus its spare (the
/// thread row shows weft's count; the peers' defaults are 512 and 500).
pub(crate) fn capped_threads() -> usize {
    cores() + 1
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
/// the loop; `block(i, ctx)` runs `work(i, ctx)` on the loop and waits for
/// its value (the peer's documented `blocking_call_from_thread` pattern).
pub(crate) fn channel_producers<S, B>(sc: Scenario, p: &Params, send: S, block: B) -> Producers
where
    S: Fn(Job) + Send + Clone + 'static,
    B: Fn(usize, &Arc<Ctx>) -> u64 + Send + Clone + 'static,
{
    let (producers, _) = channel_shape(sc, p).expect("checked by channel_shape");
    let p = p.clone();
    let ctx = Ctx::new();
    Producers::spawn(producers, move |_| match sc {
        Scenario::CftWake => wake_producer(&p, |t| send(Box::new(wake_job(t, ctx.clone())))),
        Scenario::BlockingCall => {
            let v = time_each(p.rtt_samples, |i| {
                assert_eq!(block(i, &ctx), ctx.value(i), "blocking call lost its value");
            });
            send(Box::new(tick_job(0, ctx.clone())));
            v
        }
        _ => {
            for i in 0..p.burst_calls {
                send(Box::new(tick_job(i, ctx.clone())));
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
