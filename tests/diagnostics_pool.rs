//! The wedged-pool detector on a real pool wedged on purpose (every thread
//! blocked on a gate the test holds, work queued behind them), timed on a
//! manual clock, naming the lines that queued the stuck and the running
//! jobs; silent on a pool that is merely busy. Plus the pool's job
//! statistics (locations, ages, thread counts, histograms), exact under a
//! known workload on a manual clock.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::Registry;
use tracing_subscriber::layer::SubscriberExt;
use weft::ThreadPool;
use weft::diagnostics::{PoolWatchdog, PoolWedgeDetector};
use weft::testing::ManualClock;
use weft::threads::{JobInfo, PoolStatistics, Worker};

#[path = "support/capture.rs"]
mod capture;

use capture::Capture;

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

/// Like [`sampled`], with the running jobs.
fn sampled_jobs(
    pool: &Arc<ThreadPool>,
) -> (
    impl FnMut() -> (PoolStatistics, Vec<JobInfo>) + Send + 'static,
    mpsc::Receiver<()>,
) {
    let (tx, rx) = mpsc::channel();
    let pool = pool.clone();
    (
        move || {
            let s = (pool.statistics(), pool.running_jobs());
            let _ = tx.send(());
            s
        },
        rx,
    )
}

/// `file:line` of the code at `line` of this file.
fn here(line: u32) -> String {
    format!("{}:{line}:", file!())
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
    let clock = ManualClock::new();
    let pool = Arc::new(
        ThreadPool::builder()
            .min(0)
            .max(2)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    pool.start();
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().unwrap();
    let mut lines = Vec::new();
    for _ in 0..3 {
        let g = gate.clone();
        lines.push(line!() + 1);
        pool.call_in_thread(move || drop(g.lock().unwrap()))
            .unwrap();
    }
    wait_for(&pool, 2, 1);
    // `busy` counts a claim as soon as it is made; a job's run time starts
    // when its thread takes it. Both threads must have taken theirs before
    // the clock moves, or one would look younger than 1.5 s.
    while pool.running_jobs().len() < 2 {
        std::thread::yield_now();
    }

    let (dispatch, events) = capture();
    let (stats, samples) = sampled_jobs(&pool);
    let watchdog = tracing::dispatcher::with_default(&dispatch, || {
        PoolWatchdog::watch_jobs("wedged", stats, Duration::from_secs(1), clock.clone()).unwrap()
    });
    samples.recv_timeout(HANG_GUARD).unwrap(); // the baseline, at t = 0
    clock.advance(Duration::from_millis(1500));
    let warning = events.recv_timeout(HANG_GUARD).unwrap();
    assert!(warning.contains("\"wedged\" looks wedged"), "{warning}");
    assert!(
        warning.contains("all 2 threads busy, 1 tasks queued"),
        "{warning}"
    );
    // The stuck job and the running ones, by the line that queued them.
    assert!(
        warning.contains(&format!(
            "the oldest queued job, submitted at {}",
            here(lines[2])
        )),
        "{warning}"
    );
    assert!(warning.contains("has waited 1.5s"), "{warning}");
    let at = here(lines[0]);
    assert!(
        warning.contains(&format!("; running: {at}") as &str)
            && warning.contains(&format!("for 1.5s, {at}") as &str),
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

#[test]
fn a_healthy_pool_that_keeps_completing_is_never_reported() {
    let clock = ManualClock::new();
    let pool = Arc::new(
        ThreadPool::builder()
            .min(0)
            .max(1)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    pool.start();
    let (dispatch, events) = capture();
    let (stats, samples) = sampled_jobs(&pool);
    let watchdog = tracing::dispatcher::with_default(&dispatch, || {
        // A short threshold: the watchdog samples every 2 ms of real time.
        PoolWatchdog::watch_jobs("healthy", stats, 8 * MS, clock.clone()).unwrap()
    });
    samples.recv_timeout(HANG_GUARD).unwrap();
    // Saturated (one thread, work queued behind it) but completing: every
    // job ends before the threshold passes, 35 ms in all.
    for round in 0..5u64 {
        let (started, release) = (mpsc::channel(), mpsc::channel::<()>());
        let (tell, wait) = (started.0, release.1);
        pool.call_in_thread(move || {
            tell.send(()).unwrap();
            let _ = wait.recv();
        })
        .unwrap();
        pool.call_in_thread(|| ()).unwrap();
        started.1.recv_timeout(HANG_GUARD).unwrap();
        clock.advance(7 * MS);
        a_full_check_after_now(&samples);
        drop(release.0);
        wait_for(&pool, 0, 0);
        assert_eq!(pool.statistics().completed, 2 * (round + 1));
        a_full_check_after_now(&samples);
    }
    assert!(events.try_recv().is_err());
    assert_eq!(watchdog.episodes(), 0);
    drop(watchdog);
    pool.stop();
}

/// Blocks a pool job until the test says so; tells the test it started.
struct Gate {
    started: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

fn gated(clock: &ManualClock, runs_for: Duration) -> (impl FnOnce() + Send + 'static, Gate) {
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let clock = clock.clone();
    let job = move || {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        clock.advance(runs_for);
    };
    (job, Gate { started, release })
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn job_statistics_are_exact_under_a_known_workload() {
    let clock = ManualClock::new();
    let pool = ThreadPool::builder()
        .min(0)
        .max(1)
        .keep_alive(Duration::from_secs(1))
        .clock(clock.clone())
        .histograms(true)
        .build()
        .unwrap();
    // t = 0: A queued (the pool is not started); t = 10 ms: B queued.
    let (a, gate) = gated(&clock, 7 * MS);
    let line_a = line!() + 1;
    pool.call_in_thread(a).unwrap();
    clock.advance(10 * MS);
    let line_b = line!() + 1;
    pool.call_in_thread(|| ()).unwrap();
    clock.advance(20 * MS);
    // t = 30 ms.
    let s = pool.statistics();
    assert_eq!((s.backlog, s.threads_created, s.threads_reaped), (2, 0, 0));
    let oldest = s.oldest_backlog.unwrap();
    assert_eq!(
        (oldest.location.file(), oldest.location.line()),
        (file!(), line_a)
    );
    assert_eq!(oldest.age, 30 * MS);
    assert!(pool.running_jobs().is_empty());

    // A starts at 30 ms (waited 30 ms); B is now the oldest queued.
    pool.start();
    gate.started.recv_timeout(HANG_GUARD).unwrap();
    clock.advance(5 * MS);
    // t = 35 ms.
    let s = pool.statistics();
    assert_eq!((s.busy, s.backlog, s.threads_created), (1, 1, 1));
    let oldest = s.oldest_backlog.unwrap();
    assert_eq!((oldest.location.line(), oldest.age), (line_b, 25 * MS));
    let running = pool.running_jobs();
    assert_eq!(running.len(), 1);
    assert_eq!(
        (running[0].location.file(), running[0].location.line()),
        (file!(), line_a)
    );
    assert_eq!(running[0].age, 5 * MS);

    // A runs on to 42 ms (12 ms in all); B starts then (waited 32 ms) and
    // takes no time.
    gate.release.send(()).unwrap();
    wait_for(&pool, 0, 0);
    let s = pool.statistics();
    assert_eq!((s.completed, s.idle, s.oldest_backlog), (2, 1, None));
    assert!(pool.running_jobs().is_empty());
    let waits = pool.queue_wait_histogram();
    assert_eq!((waits.count(), waits.sum()), (2, 62 * MS));
    let runs = pool.run_time_histogram();
    assert_eq!((runs.count(), runs.sum()), (2, 12 * MS));

    // The idle thread is reaped after the keep-alive.
    clock.advance(Duration::from_secs(1));
    while pool.statistics().threads_alive > 0 {
        std::thread::yield_now();
    }
    let s = pool.statistics();
    assert_eq!((s.threads_created, s.threads_reaped), (1, 1));
    pool.stop();
}

#[test]
fn histograms_off_record_nothing_and_locations_still_come() {
    let clock = ManualClock::new();
    let pool = ThreadPool::builder()
        .min(0)
        .max(1)
        .clock(clock.clone())
        .histograms(false)
        .build()
        .unwrap();
    let (a, gate) = gated(&clock, 3 * MS);
    pool.start();
    let line_a = line!() + 1;
    pool.call_in_thread(a).unwrap();
    gate.started.recv_timeout(HANG_GUARD).unwrap();
    clock.advance(MS);
    assert_eq!(pool.running_jobs()[0].location.line(), line_a);
    assert_eq!(pool.running_jobs()[0].age, MS);
    gate.release.send(()).unwrap();
    pool.stop();
    assert_eq!(pool.queue_wait_histogram().count(), 0);
    assert_eq!(pool.run_time_histogram().count(), 0);
    assert_eq!(pool.statistics().completed, 1);
}

#[test]
fn every_public_submit_path_records_its_callers_line() {
    let pool = ThreadPool::new(0, 1).unwrap(); // not started: work waits
    let oldest_line = |pool: &ThreadPool| {
        let job = pool.statistics().oldest_backlog.unwrap();
        assert_eq!(job.location.file(), file!());
        pool.discard_backlog();
        job.location.line()
    };
    let line = line!() + 1;
    pool.call_in_thread(|| ()).unwrap();
    assert_eq!(oldest_line(&pool), line);
    let line = line!() + 1;
    pool.call_in_thread_with_callback(|| 1, |_| ())
        .unwrap_or_else(|_| unreachable!());
    assert_eq!(oldest_line(&pool), line);
    let line = line!() + 1;
    let handle = pool.call_in_thread_cancellable(|| ()).unwrap();
    assert_eq!(oldest_line(&pool), line);
    assert!(!handle.cancel());
    let line = line!() + 1;
    pool.do_work(Box::new(|| ())).unwrap();
    assert_eq!(oldest_line(&pool), line);
    // Through the trait, generically and as a trait object.
    fn submit<W: Worker + ?Sized>(worker: &W) -> u32 {
        let line = line!() + 1;
        worker.do_work(Box::new(|| ())).unwrap();
        line
    }
    let line = submit(&pool);
    assert_eq!(oldest_line(&pool), line);
    let dynamic: &dyn Worker = &pool;
    let line = line!() + 1;
    dynamic.do_work(Box::new(|| ())).unwrap();
    assert_eq!(oldest_line(&pool), line);
}
