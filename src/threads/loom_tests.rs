//! loom models of the coordination protocols (run with `--cfg loom`).
//!
//! Each model uses at most three threads. Run:
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom
//! cargo test --release -p weft --lib loom_`

use super::{LockWorker, Team, ThreadWorker, Worker};
use crate::error::AlreadyQuit;
use crate::loom::atomic::{AtomicBool, Ordering};
use crate::loom::model::{self, Done};
use crate::loom::{Arc, thread};

/// A boxed counting task, as workers take it.
fn task(done: &Arc<Done>) -> super::Task {
    Box::new(model::task(done))
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
