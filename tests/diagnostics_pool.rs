//! The wedged-pool detector on a real pool wedged on purpose (every thread
//! blocked on a gate the test holds, work queued behind them), timed on a
//! manual clock; and silent on a pool that is merely busy.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};
use weft::ThreadPool;
use weft::diagnostics::{PoolWatchdog, PoolWedgeDetector};
use weft::testing::ManualClock;
use weft::threads::PoolStatistics;

struct Capture(Mutex<mpsc::Sender<String>>);

struct Message<'a>(&'a mut String);

impl Visit for Message<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() == "weft::diagnostics" {
            let mut m = String::new();
            event.record(&mut Message(&mut m));
            let _ = self.0.lock().unwrap().send(m);
        }
    }
}

fn capture() -> (tracing::Dispatch, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let layer = Capture(Mutex::new(tx));
    (tracing::Dispatch::new(Registry::default().with(layer)), rx)
}

/// Waits (without a timing decision) until `pool` shows `busy` and `backlog`.
fn wait_for(pool: &ThreadPool, busy: usize, backlog: usize) {
    loop {
        let s = pool.statistics();
        if s.busy == busy && s.backlog == backlog {
            return;
        }
        std::thread::yield_now();
    }
}

/// A statistics source that tells the test each time it is sampled.
fn sampled(
    pool: &Arc<ThreadPool>,
) -> (
    impl FnMut() -> PoolStatistics + Send + 'static,
    mpsc::Receiver<()>,
) {
    let (tx, rx) = mpsc::channel();
    let pool = pool.clone();
    (
        move || {
            let s = pool.statistics();
            let _ = tx.send(());
            s
        },
        rx,
    )
}

const HANG_GUARD: Duration = Duration::from_secs(120);

/// Returns once a whole check (sample, decision, warning, flag) has run
/// that started after this call: drops the stale signals, then sees three
/// more (the second sample's check began after the first fresh signal, and
/// finished before the third).
fn a_full_check_after_now(samples: &mpsc::Receiver<()>) {
    while samples.try_recv().is_ok() {}
    for _ in 0..3 {
        samples.recv_timeout(HANG_GUARD).unwrap();
    }
}

#[test]
fn a_wedged_pool_is_reported_once_with_the_hint_and_flagged() {
    let pool = Arc::new(ThreadPool::new(0, 2).unwrap());
    pool.start();
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().unwrap();
    for _ in 0..3 {
        let g = gate.clone();
        pool.call_in_thread(move || drop(g.lock().unwrap()))
            .unwrap();
    }
    wait_for(&pool, 2, 1);

    let (dispatch, events) = capture();
    let clock = ManualClock::new();
    let (stats, samples) = sampled(&pool);
    let watchdog = tracing::dispatcher::with_default(&dispatch, || {
        PoolWatchdog::watch("wedged", stats, Duration::from_secs(1), clock.clone()).unwrap()
    });
    samples.recv_timeout(HANG_GUARD).unwrap(); // the baseline, at t = 0
    clock.advance(Duration::from_millis(1500));
    let warning = events.recv_timeout(HANG_GUARD).unwrap();
    assert!(warning.contains("\"wedged\" looks wedged"), "{warning}");
    assert!(
        warning.contains("all 2 threads busy, 1 tasks queued"),
        "{warning}"
    );
    assert!(warning.contains("Raise the pool's max"), "{warning}");
    assert!(warning.contains("do not block a pool thread"), "{warning}");
    a_full_check_after_now(&samples);
    assert!(watchdog.is_wedged());
    // Once per episode: more checks, later, no second warning.
    clock.advance(Duration::from_secs(10));
    a_full_check_after_now(&samples);
    assert!(events.try_recv().is_err());
    assert_eq!(watchdog.episodes(), 1);

    drop(held);
    wait_for(&pool, 0, 0);
    a_full_check_after_now(&samples);
    assert!(!watchdog.is_wedged());
    drop(watchdog);
    pool.stop();
}

#[test]
fn a_busy_pool_with_a_free_thread_or_an_empty_backlog_is_not_wedged() {
    let pool = Arc::new(ThreadPool::new(0, 3).unwrap());
    pool.start();
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().unwrap();
    for _ in 0..2 {
        let g = gate.clone();
        pool.call_in_thread(move || drop(g.lock().unwrap()))
            .unwrap();
    }
    wait_for(&pool, 2, 0);
    let (dispatch, events) = capture();
    let clock = ManualClock::new();
    let (stats, samples) = sampled(&pool);
    let watchdog = tracing::dispatcher::with_default(&dispatch, || {
        PoolWatchdog::watch("busy", stats, Duration::from_secs(1), clock.clone()).unwrap()
    });
    samples.recv_timeout(HANG_GUARD).unwrap();
    clock.advance(Duration::from_secs(60));
    a_full_check_after_now(&samples);
    assert!(events.try_recv().is_err());
    assert!(!watchdog.is_wedged());
    drop(held);
    drop(watchdog);
    pool.stop();
}

#[test]
fn the_detector_needs_saturation_and_no_progress_for_the_whole_threshold() {
    let mut s = PoolStatistics::default();
    s.busy = 4;
    s.max = 4;
    s.backlog = 1;
    let mut d = PoolWedgeDetector::new(Duration::from_secs(1));
    assert_eq!(d.observe(&s, Duration::ZERO), None);
    // A completion restarts the count.
    s.completed = 1;
    assert_eq!(d.observe(&s, Duration::from_millis(900)), None);
    assert_eq!(d.observe(&s, Duration::from_millis(1800)), None);
    let r = d.observe(&s, Duration::from_millis(1900)).unwrap();
    assert_eq!(r.stuck_for, Duration::from_secs(1));
    assert_eq!((r.busy, r.backlog, r.max), (4, 1, 4));
    // An idle thread ends the episode; a new one can begin.
    s.idle = 1;
    assert_eq!(d.observe(&s, Duration::from_secs(3)), None);
    assert!(!d.is_wedged());
    s.idle = 0;
    assert_eq!(d.observe(&s, Duration::from_millis(3500)), None);
    assert!(d.observe(&s, Duration::from_secs(4)).is_some());
    assert_eq!(d.episodes(), 2);
}
