//! Ported from Twisted `src/twisted/test/test_threadpool.py` (`ThreadPool`).
//!
//! Twisted's "memory-backed" pool tests swap the team's workers for memory
//! workers; here a thread factory that keeps the thread bodies instead of
//! running them plays that part (it counts the workers created).

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use common::{PATIENCE, capture_logs, log_lines, wait_until};
use weft::{ThreadError, ThreadPool};

type Body = Box<dyn FnOnce() + Send + 'static>;
type Bodies = Arc<Mutex<Vec<Body>>>;

fn recv<T>(rx: &mpsc::Receiver<T>) -> T {
    rx.recv_timeout(PATIENCE).expect("pool work did not run")
}

#[test]
fn a_pool_keeps_the_min_and_max_it_was_given() {
    let pool = ThreadPool::new(12, 22).unwrap();
    let stats = pool.statistics();
    assert_eq!((stats.min, stats.max), (12, 22));
}

#[test]
fn the_default_pool_is_five_to_twenty() {
    let stats = ThreadPool::default().statistics();
    assert_eq!((stats.min, stats.max), (5, 20));
}

#[test]
fn no_thread_exists_before_start_and_start_creates_exactly_min_threads() {
    let empty = ThreadPool::new(0, 5).unwrap();
    assert_eq!(empty.statistics().threads_alive, 0);
    empty.start();
    assert_eq!(empty.statistics().threads_alive, 0);

    let pool = ThreadPool::new(3, 10).unwrap();
    assert_eq!(pool.statistics().threads_alive, 0);
    pool.start();
    assert_eq!(pool.statistics().threads_alive, 3);
    assert_eq!(pool.statistics().idle, 3);
    pool.stop();
    empty.stop();
}

#[test]
fn adjusting_the_size_after_stop_creates_no_thread() {
    let pool = ThreadPool::new(0, 5).unwrap();
    pool.start();
    pool.stop();
    pool.adjust_pool_size(2, 5).unwrap();
    assert_eq!(pool.statistics().threads_alive, 0);
}

#[test]
fn after_a_task_completes_the_pool_holds_no_reference_to_the_callable() {
    let pool = ThreadPool::new(1, 1).unwrap();
    pool.start();
    let captured = Arc::new(());
    let weak = Arc::downgrade(&captured);
    pool.call_in_thread(move || drop(captured))
        .unwrap_or_else(|_| panic!("refused"));
    assert!(wait_until(|| pool.statistics().completed == 1));
    assert!(weak.upgrade().is_none());
    pool.stop();
}

#[test]
fn the_callable_is_gone_while_on_result_runs_and_on_result_and_the_result_are_gone_after() {
    let pool = ThreadPool::new(1, 1).unwrap();
    pool.start();
    let arg = Arc::new(());
    let arg_weak = Arc::downgrade(&arg);
    let result_weak = Arc::new(Mutex::new(None));
    let in_callback = Arc::new(());
    let callback_weak = Arc::downgrade(&in_callback);
    let (tx, rx) = mpsc::channel();
    let rw = result_weak.clone();
    pool.call_in_thread_with_callback(
        move || {
            let _keep = &arg;
            Arc::new("result")
        },
        move |result: Result<Arc<&str>, ThreadError>| {
            let _keep = &in_callback;
            let result = result.unwrap();
            *rw.lock().unwrap() = Some(Arc::downgrade(&result));
            tx.send(arg_weak.upgrade().is_none()).unwrap();
        },
    )
    .unwrap_or_else(|_| panic!("refused"));
    assert!(
        recv(&rx),
        "the callable was still reachable while on_result ran"
    );
    assert!(wait_until(|| pool.statistics().completed == 1));
    assert!(callback_weak.upgrade().is_none());
    assert!(
        result_weak
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .upgrade()
            .is_none()
    );
    pool.stop();
}

// Item 35 (pickling min and max) is Python-only: Rust has no pickling.

#[test]
fn ten_calls_on_a_default_pool_all_run() {
    let pool = ThreadPool::default();
    pool.start();
    let (tx, rx) = mpsc::channel();
    for i in 0..10 {
        let tx = tx.clone();
        pool.call_in_thread(move || tx.send(i).unwrap())
            .unwrap_or_else(|_| panic!("refused"));
    }
    let mut got: Vec<i32> = (0..10).map(|_| recv(&rx)).collect();
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    pool.stop();
}

#[test]
fn a_panicking_callable_queued_before_start_then_stopped_at_once_runs_and_is_logged_once() {
    capture_logs();
    let pool = ThreadPool::builder()
        .name("item37")
        .min(0)
        .max(1)
        .build()
        .unwrap();
    pool.call_in_thread(|| panic!("new error item37"))
        .unwrap_or_else(|_| panic!("refused"));
    pool.start();
    pool.stop();
    assert_eq!(pool.statistics().panicked, 1);
    assert_eq!(
        log_lines(&["pool task panicked", "new error item37"]).len(),
        1
    );
}

#[test]
fn on_result_gets_ok_with_the_return_value() {
    let pool = ThreadPool::new(1, 1).unwrap();
    pool.start();
    let (tx, rx) = mpsc::channel();
    pool.call_in_thread_with_callback(|| "test", move |r| tx.send(r).unwrap())
        .unwrap_or_else(|_| panic!("refused"));
    assert_eq!(recv(&rx), Ok("test"));
    pool.stop();
}

#[test]
fn on_result_gets_the_panic_when_the_callable_panics() {
    let pool = ThreadPool::new(1, 1).unwrap();
    pool.start();
    let (tx, rx) = mpsc::channel();
    pool.call_in_thread_with_callback(
        || -> u8 { panic!("new error") },
        move |r| tx.send(r).unwrap(),
    )
    .unwrap_or_else(|_| panic!("refused"));
    assert_eq!(
        recv(&rx),
        Err(ThreadError::Panicked {
            message: "new error".into()
        })
    );
    pool.stop();
    assert_eq!(pool.statistics().panicked, 1);
}

#[test]
fn a_panicking_on_result_is_logged_once_and_the_pool_keeps_working() {
    capture_logs();
    let pool = ThreadPool::builder()
        .name("item40")
        .min(1)
        .max(1)
        .build()
        .unwrap();
    pool.start();
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    pool.call_in_thread_with_callback(
        || (),
        move |r| {
            tx2.send(r.is_ok()).unwrap();
            panic!("callback error item40");
        },
    )
    .unwrap_or_else(|_| panic!("refused"));
    pool.call_in_thread(move || tx.send(true).unwrap())
        .unwrap_or_else(|_| panic!("refused"));
    assert!(recv(&rx), "on_result got Ok(())");
    assert!(recv(&rx), "a task queued after it still ran");
    pool.stop();
    assert_eq!(
        log_lines(&["pool=item40", "callback error item40"]).len(),
        1
    );
    assert_eq!(pool.statistics().panicked, 1);
}

#[test]
fn the_callable_and_on_result_run_on_the_same_pool_thread() {
    let pool = ThreadPool::new(0, 4).unwrap();
    pool.start();
    let (tx, rx) = mpsc::channel();
    pool.call_in_thread_with_callback(
        || std::thread::current().id(),
        move |r| tx.send((r.unwrap(), std::thread::current().id())).unwrap(),
    )
    .unwrap_or_else(|_| panic!("refused"));
    let (in_f, in_callback) = recv(&rx);
    assert_eq!(in_f, in_callback);
    assert_ne!(in_f, std::thread::current().id());
    pool.stop();
}

// Item 42 (the callable and on_result see the submitter's
// `twisted.python.context`) is Python-only: weft has no context frames.

#[test]
fn work_added_before_start_runs_after_start() {
    let pool = ThreadPool::new(0, 3).unwrap();
    let (tx, rx) = mpsc::channel();
    pool.call_in_thread(move || tx.send(()).unwrap())
        .unwrap_or_else(|_| panic!("refused"));
    assert_eq!(pool.statistics().backlog, 1);
    assert!(rx.try_recv().is_err());
    pool.start();
    recv(&rx);
    pool.stop();
}

#[test]
fn worker_states_of_a_zero_to_one_pool_follow_its_one_task() {
    let pool = ThreadPool::new(0, 1).unwrap();
    pool.start();
    let s = pool.statistics();
    assert_eq!((s.threads_alive, s.idle, s.busy), (0, 0, 0));
    let (started_tx, started) = mpsc::channel();
    let (release, wait) = mpsc::channel::<()>();
    pool.call_in_thread(move || {
        started_tx.send(()).unwrap();
        let _ = wait.recv();
    })
    .unwrap_or_else(|_| panic!("refused"));
    recv(&started);
    let s = pool.statistics();
    assert_eq!((s.threads_alive, s.idle, s.busy), (1, 0, 1));
    drop(release);
    assert!(wait_until(|| {
        let s = pool.statistics();
        (s.idle, s.busy) == (1, 0)
    }));
    pool.stop();
}

#[test]
fn a_fresh_pool_has_an_empty_backlog() {
    assert_eq!(ThreadPool::new(0, 1).unwrap().statistics().backlog, 0);
}

#[test]
fn a_task_that_releases_blocked_tasks_gets_a_new_thread_instead_of_waiting() {
    let pool = ThreadPool::new(0, 10).unwrap();
    pool.start();
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let (done_tx, done) = mpsc::channel();
    for _ in 0..3 {
        let (gate, done_tx) = (gate.clone(), done_tx.clone());
        pool.call_in_thread(move || {
            let (open, cv) = &*gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            done_tx.send(()).unwrap();
        })
        .unwrap_or_else(|_| panic!("refused"));
    }
    let g = gate.clone();
    pool.call_in_thread(move || {
        *g.0.lock().unwrap() = true;
        g.1.notify_all();
    })
    .unwrap_or_else(|_| panic!("refused"));
    for _ in 0..3 {
        recv(&done);
    }
    pool.stop();
}

/// A factory that keeps the bodies: each call is one worker created.
fn keeping_factory() -> (Bodies, impl Fn(&str, Body) -> std::io::Result<()>) {
    let bodies: Bodies = Arc::default();
    let b = bodies.clone();
    (bodies, move |_name: &str, body: Body| {
        b.lock().unwrap().push(body);
        Ok(())
    })
}

#[test]
fn memory_backed_work_before_start_creates_no_worker_until_start_then_one_per_task() {
    let (bodies, factory) = keeping_factory();
    let pool = ThreadPool::builder()
        .min(0)
        .max(10)
        .thread_factory(factory)
        .build()
        .unwrap();
    for _ in 0..5 {
        pool.call_in_thread(|| ())
            .unwrap_or_else(|_| panic!("refused"));
    }
    assert_eq!(bodies.lock().unwrap().len(), 0);
    pool.start();
    assert_eq!(bodies.lock().unwrap().len(), 5);
}

#[test]
fn memory_backed_more_work_than_max_before_start_creates_exactly_max_workers() {
    let (bodies, factory) = keeping_factory();
    let pool = ThreadPool::builder()
        .min(0)
        .max(10)
        .thread_factory(factory)
        .build()
        .unwrap();
    for _ in 0..50 {
        pool.call_in_thread(|| ())
            .unwrap_or_else(|_| panic!("refused"));
    }
    pool.start();
    assert_eq!(bodies.lock().unwrap().len(), 10);
    assert_eq!(pool.statistics().backlog, 40);
}
