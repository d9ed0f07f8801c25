//! weft's deliberate differences from Twisted's `ThreadPool`
//! (design.md §4, spec/twisted-threads.md §2 and §4), one test each.

mod common;

use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use common::{PATIENCE, capture_logs, log_lines, wait_until};
use weft::{AlreadyQuit, PoolConfigError, ThreadPool};

type Body = Box<dyn FnOnce() + Send + 'static>;

fn recv<T>(rx: &mpsc::Receiver<T>) -> T {
    rx.recv_timeout(PATIENCE).expect("pool work did not run")
}

/// Sets its flag when dropped: tells whether a closure's captures were freed.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Starts `n` tasks that block until the returned sender is dropped, and
/// waits until all of them are running.
fn occupy(pool: &ThreadPool, n: usize) -> mpsc::Sender<()> {
    let (release, wait) = mpsc::channel::<()>();
    let wait = Arc::new(Mutex::new(wait));
    let barrier = Arc::new(Barrier::new(n + 1));
    for _ in 0..n {
        let (wait, barrier) = (wait.clone(), barrier.clone());
        pool.call_in_thread(move || {
            barrier.wait();
            let _ = wait.lock().unwrap().recv();
        })
        .unwrap_or_else(|_| panic!("refused"));
    }
    barrier.wait();
    release
}

#[test]
fn stop_is_idempotent() {
    let pool = ThreadPool::new(2, 4).unwrap();
    pool.start();
    pool.stop();
    pool.stop();
    let report = pool.stop_timeout(Duration::ZERO);
    assert!(report.is_complete());
}

#[test]
fn work_submitted_after_stop_is_handed_back() {
    let pool = ThreadPool::new(1, 1).unwrap();
    pool.start();
    pool.stop();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let AlreadyQuit(f) = pool
        .call_in_thread(move || r.store(true, Ordering::SeqCst))
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    f();
    assert!(ran.load(Ordering::SeqCst));
    let AlreadyQuit((f, on_result)) = pool
        .call_in_thread_with_callback(|| 5, |r| assert_eq!(r, Ok(5)))
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    on_result(Ok(f()));
}

#[test]
fn a_pool_cannot_be_restarted_after_stop() {
    let pool = ThreadPool::new(2, 2).unwrap();
    pool.start();
    pool.stop();
    pool.start();
    assert_eq!(pool.statistics().threads_alive, 0);
    assert!(pool.call_in_thread(|| ()).is_err());
}

#[test]
fn starting_twice_is_harmless() {
    let pool = ThreadPool::new(2, 4).unwrap();
    pool.start();
    pool.start();
    assert_eq!(pool.statistics().threads_alive, 2);
    pool.stop();
}

#[test]
fn bad_sizes_are_errors_not_panics() {
    assert_eq!(ThreadPool::new(0, 0).unwrap_err(), PoolConfigError::ZeroMax);
    assert_eq!(
        ThreadPool::new(3, 2).unwrap_err(),
        PoolConfigError::MinAboveMax { min: 3, max: 2 }
    );
    let pool = ThreadPool::new(1, 2).unwrap();
    assert!(pool.adjust_pool_size(4, 3).is_err());
    assert!(pool.adjust_pool_size(0, 0).is_err());
    assert_eq!((pool.statistics().min, pool.statistics().max), (1, 2));
}

// Twisted over-shrinks here: three adjust(max=2) with 6 busy workers leave 0.
#[test]
fn adjust_pool_size_reaches_exactly_the_target_while_workers_are_busy() {
    let pool = ThreadPool::new(0, 6).unwrap();
    pool.start();
    let release = occupy(&pool, 6);
    assert_eq!(pool.statistics().busy, 6);
    for _ in 0..3 {
        pool.adjust_pool_size(0, 2).unwrap();
    }
    drop(release);
    assert!(wait_until(|| {
        let s = pool.statistics();
        (s.idle, s.busy, s.threads_alive) == (2, 0, 2)
    }));
    // No leftover debt kills the next workers.
    let release = occupy(&pool, 2);
    drop(release);
    assert!(wait_until(|| {
        let s = pool.statistics();
        (s.idle, s.threads_alive) == (2, 2)
    }));
    pool.stop();
}

#[test]
fn raising_the_size_while_shrink_is_pending_cancels_the_debt_instead_of_overshooting() {
    let pool = ThreadPool::new(0, 6).unwrap();
    pool.start();
    let release = occupy(&pool, 6);
    pool.adjust_pool_size(0, 2).unwrap(); // 4 busy workers marked to quit
    pool.adjust_pool_size(4, 6).unwrap(); // keep 2 of them instead
    drop(release);
    assert!(wait_until(|| {
        let s = pool.statistics();
        (s.idle, s.busy, s.threads_alive) == (4, 0, 4)
    }));
    pool.stop();
}

#[test]
fn idle_threads_above_min_exit_after_the_keep_alive() {
    let pool = ThreadPool::builder()
        .min(1)
        .max(4)
        .keep_alive(Duration::from_millis(20))
        .build()
        .unwrap();
    pool.start();
    let release = occupy(&pool, 4);
    assert_eq!(pool.statistics().threads_alive, 4);
    drop(release);
    assert!(wait_until(|| {
        let s = pool.statistics();
        (s.threads_alive, s.idle) == (1, 1)
    }));
    // The survivor still works.
    let (tx, rx) = mpsc::channel();
    pool.call_in_thread(move || tx.send(()).unwrap())
        .unwrap_or_else(|_| panic!("refused"));
    recv(&rx);
    pool.stop();
}

/// A factory that runs real threads while `allow` is set and fails otherwise;
/// it records every name it was asked for.
fn switchable_factory(
    allow: &Arc<AtomicBool>,
    names: &Arc<Mutex<Vec<String>>>,
) -> impl Fn(&str, Body) -> io::Result<()> + use<> {
    let (allow, names) = (allow.clone(), names.clone());
    move |name: &str, body: Body| {
        names.lock().unwrap().push(name.to_owned());
        if !allow.load(Ordering::SeqCst) {
            return Err(io::Error::other("thread limit reached"));
        }
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(body)
            .map(drop)
    }
}

#[test]
fn a_failed_thread_creation_keeps_the_task_in_the_backlog_and_is_logged() {
    capture_logs();
    let allow = Arc::new(AtomicBool::new(true));
    let names = Arc::default();
    let pool = ThreadPool::builder()
        .name("failspawn")
        .min(1)
        .max(2)
        .thread_factory(switchable_factory(&allow, &names))
        .build()
        .unwrap();
    pool.start();
    let release = occupy(&pool, 1);
    allow.store(false, Ordering::SeqCst);
    let (tx, rx) = mpsc::channel();
    pool.call_in_thread(move || tx.send(()).unwrap())
        .unwrap_or_else(|_| panic!("refused"));
    assert_eq!(pool.statistics().backlog, 1);
    assert_eq!(
        log_lines(&[
            "pool=failspawn",
            "could not start a pool thread",
            "thread limit reached"
        ])
        .len(),
        1
    );
    drop(release); // the existing worker drains the backlog
    recv(&rx);
    pool.stop();
}

#[test]
fn with_no_worker_and_no_thread_possible_the_submission_is_refused_with_the_closure() {
    capture_logs();
    let allow = Arc::new(AtomicBool::new(false));
    let names = Arc::default();
    let pool = ThreadPool::builder()
        .name("nothread")
        .min(0)
        .max(2)
        .thread_factory(switchable_factory(&allow, &names))
        .build()
        .unwrap();
    pool.start();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let AlreadyQuit(f) = pool
        .call_in_thread(move || r.store(true, Ordering::SeqCst))
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    f();
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(pool.statistics().backlog, 0);
    assert!(!log_lines(&["pool=nothread", "cannot start one"]).is_empty());
    allow.store(true, Ordering::SeqCst); // the OS recovers: work is accepted again
    let (tx, rx) = mpsc::channel();
    pool.call_in_thread(move || tx.send(()).unwrap())
        .unwrap_or_else(|_| panic!("refused"));
    recv(&rx);
    pool.stop();
}

#[test]
fn stopping_a_pool_that_never_started_drops_its_backlog_and_runs_the_destructors() {
    let pool = ThreadPool::new(0, 1).unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = DropFlag(dropped.clone());
    pool.call_in_thread(move || drop(guard))
        .unwrap_or_else(|_| panic!("refused"));
    pool.stop();
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(pool.statistics().backlog, 0);
}

#[test]
fn discard_backlog_drops_only_never_started_work_and_counts_it() {
    let pool = ThreadPool::new(1, 1).unwrap();
    pool.start();
    let release = occupy(&pool, 1);
    let flags: Vec<_> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let ran = Arc::new(AtomicUsize::new(0));
    for flag in &flags {
        let (guard, ran) = (DropFlag(flag.clone()), ran.clone());
        pool.call_in_thread(move || {
            let _guard = guard;
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap_or_else(|_| panic!("refused"));
    }
    assert_eq!(pool.discard_backlog(), 3);
    assert!(flags.iter().all(|f| f.load(Ordering::SeqCst)));
    drop(release);
    pool.stop();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(pool.statistics().completed, 1);
}

#[test]
fn thread_names_are_the_pool_name_and_a_number_never_reused() {
    let allow = Arc::new(AtomicBool::new(true));
    let names = Arc::new(Mutex::new(Vec::new()));
    let pool = ThreadPool::builder()
        .name("uniq")
        .min(2)
        .max(2)
        .thread_factory(switchable_factory(&allow, &names))
        .build()
        .unwrap();
    pool.start();
    pool.adjust_pool_size(1, 1).unwrap();
    pool.adjust_pool_size(2, 2).unwrap();
    pool.adjust_pool_size(0, 1).unwrap();
    pool.adjust_pool_size(2, 2).unwrap();
    let names = names.lock().unwrap().clone();
    assert_eq!(names, ["uniq-0", "uniq-1", "uniq-2", "uniq-3"]);
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), names.len());
    pool.stop();
}

#[test]
fn default_threads_carry_their_name() {
    let pool = ThreadPool::builder()
        .name("named")
        .min(1)
        .max(1)
        .build()
        .unwrap();
    pool.start();
    let (tx, rx) = mpsc::channel();
    pool.call_in_thread(move || {
        tx.send(std::thread::current().name().map(str::to_owned))
            .unwrap()
    })
    .unwrap_or_else(|_| panic!("refused"));
    assert_eq!(recv(&rx).as_deref(), Some("named-0"));
    pool.stop();
}

#[test]
fn stop_timeout_reports_what_had_not_finished_and_the_work_still_completes() {
    let pool = ThreadPool::new(1, 1).unwrap();
    pool.start();
    let release = occupy(&pool, 1);
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let ran = ran.clone();
        pool.call_in_thread(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap_or_else(|_| panic!("refused"));
    }
    let report = pool.stop_timeout(Duration::from_millis(10));
    assert_eq!(
        (report.running, report.backlog, report.threads_alive),
        (1, 2, 1)
    );
    assert!(!report.is_complete());
    drop(release);
    pool.stop(); // waits for the backlog too
    assert_eq!(ran.load(Ordering::SeqCst), 2);
    assert!(pool.stop_timeout(Duration::ZERO).is_complete());
}

#[test]
fn stop_called_from_a_pool_thread_returns_instead_of_waiting_for_itself() {
    let pool = Arc::new(ThreadPool::new(1, 1).unwrap());
    pool.start();
    let (tx, rx) = mpsc::channel();
    let p = pool.clone();
    pool.call_in_thread(move || {
        let report = p.stop_timeout(PATIENCE);
        p.stop();
        tx.send(report.threads_alive).unwrap();
    })
    .unwrap_or_else(|_| panic!("refused"));
    assert_eq!(recv(&rx), 1, "its own thread was still alive");
    pool.stop();
    assert_eq!(pool.statistics().threads_alive, 0);
}

#[test]
fn a_fire_and_forget_panic_is_logged_once_and_the_thread_is_reused() {
    capture_logs();
    let pool = ThreadPool::builder()
        .name("panicky")
        .min(1)
        .max(1)
        .build()
        .unwrap();
    pool.start();
    pool.call_in_thread(|| panic!("kaboom-ff"))
        .unwrap_or_else(|_| panic!("refused"));
    let (tx, rx) = mpsc::channel();
    pool.call_in_thread(move || {
        tx.send(std::thread::current().name().map(str::to_owned))
            .unwrap()
    })
    .unwrap_or_else(|_| panic!("refused"));
    assert_eq!(recv(&rx).as_deref(), Some("panicky-0"));
    pool.stop();
    let s = pool.statistics();
    assert_eq!((s.completed, s.panicked), (2, 1));
    assert_eq!(log_lines(&["pool=panicky", "kaboom-ff"]).len(), 1);
}

#[test]
fn dropping_a_running_pool_lets_its_work_finish() {
    let pool = ThreadPool::new(1, 1).unwrap();
    pool.start();
    let (tx, rx) = mpsc::channel();
    for i in 0..3 {
        let tx = tx.clone();
        pool.call_in_thread(move || tx.send(i).unwrap())
            .unwrap_or_else(|_| panic!("refused"));
    }
    drop(pool);
    let got: Vec<i32> = (0..3).map(|_| recv(&rx)).collect();
    assert_eq!(got, [0, 1, 2]);
}
