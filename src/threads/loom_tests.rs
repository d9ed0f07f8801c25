//! loom models of the coordination protocols (run with `--cfg loom`).
//!
//! Each model uses at most three threads. Run:
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom
//! cargo test --release -p weft --lib loom_`

use super::{LockWorker, Team, ThreadWorker, Worker};
use crate::error::AlreadyQuit;
use crate::loom::atomic::{AtomicBool, Ordering};
use crate::loom::{Arc, Condvar, Mutex, thread};

/// Counts finished tasks; `wait_for(n)` blocks until n have finished (loom
/// reports a deadlock if that never happens, i.e. a task was lost).
#[derive(Default)]
struct Done {
    count: Mutex<usize>,
    changed: Condvar,
}

/// A task that counts itself done.
fn task(done: &Arc<Done>) -> super::Task {
    let done = done.clone();
    Box::new(move || {
        *done.count.lock() += 1;
        done.changed.notify_all();
    })
}

impl Done {
    fn wait_for(&self, n: usize) {
        let mut count = self.count.lock();
        while *count < n {
            count = self.changed.wait(count);
        }
        assert_eq!(*count, n, "a task ran twice");
    }
}

/// A team of at most one real (loom) thread worker.
fn one_thread_team() -> Team {
    Team::new(
        LockWorker::new(),
        |team: &Team| {
            let stats = team.statistics();
            if stats.idle_worker_count + stats.busy_worker_count >= 1 {
                return None;
            }
            ThreadWorker::new().ok()
        },
        |_| (),
    )
}

#[test]
fn loom_team_runs_tasks_from_two_submitters_exactly_once() {
    loom::model(|| {
        let team = one_thread_team();
        let done = Arc::new(Done::default());
        let (other_team, other_done) = (team.clone(), done.clone());
        let other = thread::spawn(move || {
            other_team
                .do_work(task(&other_done))
                .unwrap_or_else(|_| panic!("refused"));
        });
        team.do_work(task(&done))
            .unwrap_or_else(|_| panic!("refused"));
        other.join().unwrap();
        done.wait_for(2);
        team.quit().unwrap();
    });
}

#[test]
fn loom_team_quit_racing_do_work_never_loses_the_task() {
    loom::model(|| {
        let team = one_thread_team();
        team.grow(1).unwrap();
        let done = Arc::new(Done::default());
        let (other_team, other_done) = (team.clone(), done.clone());
        let submitter = thread::spawn(move || {
            if let Err(AlreadyQuit(task)) = other_team.do_work(task(&other_done)) {
                task(); // handed back: run it here
            }
        });
        team.quit().unwrap();
        submitter.join().unwrap();
        done.wait_for(1);
    });
}

#[test]
fn loom_lock_worker_quit_racing_do_work_runs_or_refuses() {
    loom::model(|| {
        let worker = Arc::new(LockWorker::new());
        let quitter = {
            let worker = worker.clone();
            thread::spawn(move || worker.quit().unwrap())
        };
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        match worker.do_work(Box::new(move || r.store(true, Ordering::SeqCst))) {
            Ok(()) => assert!(ran.load(Ordering::SeqCst)),
            Err(AlreadyQuit(task)) => {
                assert!(!ran.load(Ordering::SeqCst));
                task();
            }
        }
        quitter.join().unwrap();
        assert!(worker.do_work(Box::new(|| ())).is_err());
    });
}

#[test]
fn loom_thread_worker_quit_racing_do_work_runs_or_refuses_and_the_thread_exits() {
    loom::model(|| {
        let worker = Arc::new(ThreadWorker::new().unwrap());
        let done = Arc::new(Done::default());
        let quitter = {
            let worker = worker.clone();
            thread::spawn(move || worker.quit().unwrap())
        };
        if let Err(AlreadyQuit(task)) = worker.do_work(task(&done)) {
            task();
        }
        quitter.join().unwrap();
        done.wait_for(1);
    });
}
