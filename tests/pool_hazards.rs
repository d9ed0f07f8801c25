//! Regression tests for the pool hazards of issue 8: user code under the
//! pool lock, durations that overflow, threads that die with work, and
//! unstarted work that could not be withdrawn. Each failed (or hung) against
//! the pool at `d685858`.

mod common;

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use common::{PATIENCE, capture_logs, log_lines, wait_until};
use weft::testing::ManualClock;
use weft::threads::Worker;
use weft::{Clock, PoolConfigError, ThreadPool};

type Body = Box<dyn FnOnce() + Send + 'static>;

fn recv<T>(rx: &mpsc::Receiver<T>) -> T {
    rx.recv_timeout(PATIENCE).expect("pool work did not run")
}

fn spawn_named(name: &str, body: Body) -> io::Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map(drop)
}

// --- user code under the pool lock ----------------------------------------

#[test]
fn a_thread_name_with_a_nul_byte_is_an_error_at_build() {
    let err = ThreadPool::builder().name("bad\0name").build().unwrap_err();
    assert_eq!(err, PoolConfigError::InvalidName);
    assert_eq!(err.to_string(), "pool name holds a NUL byte");
}

#[test]
fn a_panicking_thread_factory_leaves_no_phantom_thread_and_stop_returns() {
    capture_logs();
    let pool = ThreadPool::builder()
        .name("factorypanic")
        .min(1)
        .max(1)
        .thread_factory(|_name: &str, _body: Body| -> io::Result<()> { panic!("factory broke") })
        .build()
        .unwrap();
    let started = catch_unwind(AssertUnwindSafe(|| pool.start()));
    assert!(started.is_ok(), "the factory's panic stays in the pool");
    let s = pool.statistics();
    assert_eq!((s.threads_alive, s.idle, s.busy), (0, 0, 0));
    assert!(!log_lines(&["pool=factorypanic", "factory broke"]).is_empty());
    assert!(pool.stop().is_complete());
}

#[test]
fn a_thread_factory_may_call_into_the_pool() {
    let me: Arc<OnceLock<Weak<ThreadPool>>> = Arc::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (m, s) = (me.clone(), seen.clone());
    let pool = Arc::new(
        ThreadPool::builder()
            .min(1)
            .max(1)
            .thread_factory(move |name: &str, body: Body| {
                if let Some(pool) = m.get().and_then(Weak::upgrade) {
                    s.lock().unwrap().push(pool.statistics().threads_alive);
                }
                spawn_named(name, body)
            })
            .build()
            .unwrap(),
    );
    me.set(Arc::downgrade(&pool)).unwrap();
    pool.start(); // deadlocked when the factory ran under the state lock
    assert_eq!(
        *seen.lock().unwrap(),
        [1],
        "the new thread is already counted"
    );
    let (tx, rx) = mpsc::channel();
    pool.call_in_thread(move || tx.send(()).unwrap())
        .unwrap_or_else(|_| panic!("refused"));
    recv(&rx);
    pool.stop();
}

#[test]
fn a_factory_that_drops_the_body_unrun_is_undone() {
    let pool = ThreadPool::builder()
        .min(2)
        .max(2)
        .thread_factory(|_name: &str, body: Body| {
            drop(body);
            Ok(())
        })
        .build()
        .unwrap();
    pool.start();
    assert_eq!(pool.statistics().threads_alive, 0);
    assert!(pool.stop().is_complete());
}

// --- durations up to Duration::MAX ---------------------------------------

#[test]
fn a_keep_alive_of_duration_max_means_forever_and_the_idle_thread_keeps_working() {
    let pool = ThreadPool::builder()
        .min(0)
        .max(1)
        .keep_alive(Duration::MAX)
        .build()
        .unwrap();
    pool.start();
    let (tx, rx) = mpsc::channel();
    let t = tx.clone();
    pool.call_in_thread(move || t.send(1).unwrap())
        .unwrap_or_else(|_| panic!("refused"));
    assert_eq!(recv(&rx), 1);
    // The thread goes idle above min and computes its keep-alive deadline
    // (this overflowed, and the thread died counted as idle).
    assert!(wait_until(|| pool.statistics().idle == 1));
    pool.call_in_thread(move || tx.send(2).unwrap())
        .unwrap_or_else(|_| panic!("refused"));
    assert_eq!(recv(&rx), 2);
    let s = pool.statistics();
    assert_eq!((s.threads_alive, s.panicked), (1, 0));
    assert!(pool.stop_timeout(Duration::MAX).is_complete());
}

/// A clock that panics on its next reading once armed.
#[derive(Clone, Default)]
struct TrapClock {
    inner: ManualClock,
    armed: Arc<AtomicBool>,
}

impl Clock for TrapClock {
    fn now(&self) -> Duration {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("clock trap");
        }
        self.inner.now()
    }

    fn sleep_until(&self, deadline: Duration) -> Option<Duration> {
        self.inner.sleep_until(deadline)
    }

    fn register_waker(&self, wake: Arc<dyn Fn() + Send + Sync>) {
        self.inner.register_waker(wake);
    }
}

#[test]
fn a_pool_thread_killed_by_a_panic_in_the_pools_own_code_loses_no_work() {
    capture_logs();
    let clock = TrapClock::default();
    let exited = Arc::new(AtomicUsize::new(0));
    let e = exited.clone();
    let pool = ThreadPool::builder()
        .name("trapclock")
        .min(0)
        .max(1)
        .clock(clock.clone())
        .thread_factory(move |name: &str, body: Body| {
            let e = e.clone();
            spawn_named(
                name,
                Box::new(move || {
                    let _ = catch_unwind(AssertUnwindSafe(body));
                    e.fetch_add(1, Ordering::SeqCst);
                }),
            )
        })
        .build()
        .unwrap();
    pool.start();
    let (tx, rx) = mpsc::channel();
    let t = tx.clone();
    pool.call_in_thread(move || t.send(1).unwrap())
        .unwrap_or_else(|_| panic!("refused"));
    assert_eq!(recv(&rx), 1);
    assert!(wait_until(|| pool.statistics().idle == 1));
    // Advancing wakes the idle thread; it reads the clock and dies.
    clock.armed.store(true, Ordering::SeqCst);
    clock.inner.advance(Duration::from_secs(1));
    assert!(wait_until(|| exited.load(Ordering::SeqCst) == 1));
    let s = pool.statistics();
    assert_eq!(
        (s.threads_alive, s.idle, s.busy),
        (0, 0, 0),
        "no phantom thread"
    );
    assert!(!log_lines(&["pool=trapclock", "died in the pool's own code"]).is_empty());
    pool.call_in_thread(move || tx.send(2).unwrap())
        .unwrap_or_else(|_| panic!("refused"));
    assert_eq!(recv(&rx), 2, "a new thread runs later work");
    assert!(pool.stop().is_complete());
}

// --- keep-alive on the pool's clock ------------------------------------------

#[test]
fn idle_threads_are_reaped_exactly_when_the_manual_clock_passes_the_keep_alive() {
    let clock = ManualClock::new();
    let (exit_tx, exits) = mpsc::channel();
    let pool = ThreadPool::builder()
        .min(0)
        .max(1)
        .keep_alive(Duration::from_secs(10))
        .clock(clock.clone())
        .thread_factory(move |name: &str, body: Body| {
            let exit_tx = exit_tx.clone();
            spawn_named(
                name,
                Box::new(move || {
                    body();
                    exit_tx.send(()).unwrap();
                }),
            )
        })
        .build()
        .unwrap();
    pool.start();
    let (tx, rx) = mpsc::channel();
    pool.call_in_thread(move || tx.send(()).unwrap())
        .unwrap_or_else(|_| panic!("refused"));
    recv(&rx);
    assert!(wait_until(|| pool.statistics().idle == 1));
    clock.advance(Duration::from_secs(9));
    assert_eq!(pool.statistics().threads_alive, 1, "not yet due");
    clock.advance(Duration::from_secs(1));
    exits
        .recv_timeout(PATIENCE)
        .expect("the idle thread was reaped");
    assert_eq!(pool.statistics().threads_alive, 0);
    pool.stop();
}

// --- withdrawing unstarted work ---------------------------------------------

#[test]
fn cancelling_unstarted_work_dequeues_it_and_frees_its_captures_at_once() {
    let pool = ThreadPool::new(0, 1).unwrap();
    let captured = Arc::new(());
    let c = captured.clone();
    let handle = pool
        .call_in_thread_cancellable(move || drop(c))
        .unwrap_or_else(|_| panic!("refused"));
    assert_eq!(pool.statistics().backlog, 1);
    assert!(handle.cancel());
    assert_eq!(pool.statistics().backlog, 0);
    assert_eq!(Arc::strong_count(&captured), 1);
    assert!(!handle.cancel(), "a call is withdrawn once");
    pool.start();
    assert_eq!(pool.statistics().threads_alive, 0, "no thread for a no-op");
    pool.stop();
    assert_eq!(pool.statistics().completed, 0);
}

#[test]
fn cancelling_work_that_already_ran_returns_false() {
    let pool = ThreadPool::new(1, 1).unwrap();
    pool.start();
    let (tx, rx) = mpsc::channel();
    let handle = pool
        .call_in_thread_cancellable(move || tx.send(()).unwrap())
        .unwrap_or_else(|_| panic!("refused"));
    recv(&rx);
    assert!(!handle.cancel());
    pool.stop();
}

#[test]
fn cancelling_one_of_several_queued_calls_keeps_the_others_in_order() {
    let pool = ThreadPool::new(0, 1).unwrap();
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = (0..5)
        .map(|i| {
            let tx = tx.clone();
            pool.call_in_thread_cancellable(move || tx.send(i).unwrap())
                .unwrap_or_else(|_| panic!("refused"))
        })
        .collect();
    assert!(handles[1].cancel());
    assert!(handles[3].cancel());
    pool.start();
    let got: Vec<i32> = (0..3).map(|_| recv(&rx)).collect();
    assert_eq!(got, [0, 2, 4]);
    pool.stop();
}

// --- the pool as a Worker -------------------------------------------------------

#[test]
fn the_pool_is_a_worker_and_quit_is_already_quit_the_second_time() {
    fn run_on(worker: &dyn Worker) -> mpsc::Receiver<u8> {
        let (tx, rx) = mpsc::channel();
        worker
            .do_work(Box::new(move || tx.send(7).unwrap()))
            .unwrap();
        rx
    }
    let pool = ThreadPool::new(1, 1).unwrap();
    pool.start();
    assert_eq!(recv(&run_on(&pool)), 7);
    pool.quit().unwrap();
    assert!(pool.quit().is_err());
    let refused = pool.do_work(Box::new(|| ())).unwrap_err();
    (refused.0)();
    assert!(pool.stop().is_complete());
}
