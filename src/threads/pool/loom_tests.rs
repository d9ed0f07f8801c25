//! loom models of the pool's hand-off protocol: claims (of a parked or a
//! spinning thread), backlog drained by busy threads, exit orders and stop,
//! a push from another thread while the only thread finishes and goes
//! idle, a push racing `stop` while the thread is busy, a withdrawal
//! behind queued work (at most three threads each).
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom
//! cargo test --release -p weft --lib loom_`

use super::ThreadPool;
use crate::error::AlreadyQuit;
use crate::loom::model::{Done, task};
use crate::loom::{Arc, thread};

/// A started one-thread pool, shared, running (or about to run) one job of
/// the returned `Done`.
fn busy_shared_pool() -> (Arc<ThreadPool>, Arc<Done>) {
    let pool = Arc::new(ThreadPool::new(1, 1).unwrap());
    pool.start();
    let done = Arc::new(Done::default());
    pool.call_in_thread(task(&done))
        .unwrap_or_else(|_| panic!("refused"));
    (pool, done)
}

#[test]
fn loom_pool_claim_and_backlog_run_every_task_once_and_stop_joins() {
    loom::model(|| {
        let pool = ThreadPool::new(1, 1).unwrap();
        pool.start();
        let done = Arc::new(Done::default());
        for _ in 0..2 {
            pool.call_in_thread(task(&done))
                .unwrap_or_else(|_| panic!("refused"));
        }
        done.wait_for(2);
        pool.stop();
        let s = pool.statistics();
        assert_eq!((s.threads_alive, s.completed, s.backlog), (0, 2, 0));
    });
}

#[test]
fn loom_pool_two_submitters_grow_one_thread_and_lose_nothing() {
    loom::model(|| {
        let pool = Arc::new(ThreadPool::new(0, 1).unwrap());
        pool.start();
        let done = Arc::new(Done::default());
        let (other_pool, other_done) = (pool.clone(), done.clone());
        let other = thread::spawn(move || {
            other_pool
                .call_in_thread(task(&other_done))
                .unwrap_or_else(|_| panic!("refused"));
        });
        pool.call_in_thread(task(&done))
            .unwrap_or_else(|_| panic!("refused"));
        other.join().unwrap();
        done.wait_for(2);
        pool.stop();
        assert_eq!(pool.statistics().threads_alive, 0);
    });
}

#[test]
fn loom_pool_stop_racing_submit_runs_or_hands_back() {
    loom::model(|| {
        let pool = Arc::new(ThreadPool::new(1, 1).unwrap());
        pool.start();
        let done = Arc::new(Done::default());
        let (other_pool, other_done) = (pool.clone(), done.clone());
        let submitter = thread::spawn(move || {
            if let Err(AlreadyQuit(task)) = other_pool.call_in_thread(task(&other_done)) {
                task(); // handed back: run it here
            }
        });
        pool.stop();
        submitter.join().unwrap();
        done.wait_for(1);
        pool.stop();
        assert_eq!(pool.statistics().threads_alive, 0);
    });
}

#[test]
fn loom_pool_shrink_while_idle_exits_exactly_one_thread() {
    loom::model(|| {
        let pool = ThreadPool::new(2, 2).unwrap();
        pool.start();
        pool.adjust_pool_size(1, 1).unwrap();
        let done = Arc::new(Done::default());
        pool.call_in_thread(task(&done))
            .unwrap_or_else(|_| panic!("refused"));
        done.wait_for(1);
        let s = pool.statistics();
        assert_eq!((s.idle + s.busy, s.max), (1, 1));
        pool.stop();
        assert_eq!(pool.statistics().threads_alive, 0);
    });
}

#[test]
fn loom_pool_withdraw_racing_the_claim_runs_or_removes_exactly_once() {
    use crate::loom::atomic::{AtomicBool, Ordering};
    loom::model(|| {
        let pool = ThreadPool::new(1, 1).unwrap();
        pool.start();
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let handle = pool
            .call_in_thread_cancellable(move || r.store(true, Ordering::SeqCst))
            .unwrap_or_else(|_| panic!("refused"));
        let canceller = thread::spawn(move || handle.cancel());
        let cancelled = canceller.join().unwrap();
        pool.stop();
        assert_eq!(cancelled, !ran.load(Ordering::SeqCst));
        let s = pool.statistics();
        assert_eq!((s.threads_alive, s.backlog, s.busy), (0, 0, 0));
    });
}

#[test]
fn loom_pool_round_trip_claims_a_spinning_or_parked_thread_without_loss() {
    // The second job arrives while the thread spins (the claim raises the
    // hint, no notify), as its spin ends, or after it parked (a notify).
    loom::model(|| {
        let pool = ThreadPool::new(1, 1).unwrap();
        pool.start();
        let done = Arc::new(Done::default());
        pool.call_in_thread(task(&done))
            .unwrap_or_else(|_| panic!("refused"));
        done.wait_for(1);
        pool.call_in_thread(task(&done))
            .unwrap_or_else(|_| panic!("refused"));
        done.wait_for(2);
        pool.stop();
        let s = pool.statistics();
        assert_eq!((s.threads_alive, s.completed, s.backlog), (0, 2, 0));
    });
}

#[test]
fn loom_pool_push_while_the_last_busy_thread_goes_idle_runs() {
    // The first job claims the only thread; the second is pushed from
    // another thread while that thread finishes, looks at the backlog (or
    // not) and goes idle: it must run.
    loom::model(|| {
        let (pool, done) = busy_shared_pool();
        let (other_pool, other_done) = (pool.clone(), done.clone());
        let other = thread::spawn(move || {
            other_pool
                .call_in_thread(task(&other_done))
                .unwrap_or_else(|_| panic!("refused"));
        });
        other.join().unwrap();
        done.wait_for(2);
        pool.stop();
        let s = pool.statistics();
        assert_eq!((s.threads_alive, s.completed, s.backlog), (0, 2, 0));
    });
}

#[test]
fn loom_pool_stop_racing_a_submission_to_a_busy_pool_runs_it_or_hands_it_back() {
    loom::model(|| {
        let (pool, done) = busy_shared_pool();
        let (other_pool, other_done) = (pool.clone(), done.clone());
        let submitter = thread::spawn(move || {
            if let Err(AlreadyQuit(task)) = other_pool.call_in_thread(task(&other_done)) {
                task(); // handed back: run it here
            }
        });
        pool.stop();
        submitter.join().unwrap();
        done.wait_for(2);
        let s = pool.statistics();
        assert_eq!((s.threads_alive, s.backlog), (0, 0));
    });
}

#[test]
fn loom_pool_withdraw_behind_queued_work_runs_or_removes_exactly_once() {
    use crate::loom::atomic::{AtomicBool, Ordering};
    loom::model(|| {
        let pool = ThreadPool::new(1, 1).unwrap();
        pool.start();
        let done = Arc::new(Done::default());
        pool.call_in_thread(task(&done))
            .unwrap_or_else(|_| panic!("refused"));
        // Queued while the thread is busy; the cancellable one waits behind.
        pool.call_in_thread(task(&done))
            .unwrap_or_else(|_| panic!("refused"));
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let handle = pool
            .call_in_thread_cancellable(move || r.store(true, Ordering::SeqCst))
            .unwrap_or_else(|_| panic!("refused"));
        let canceller = thread::spawn(move || handle.cancel());
        let cancelled = canceller.join().unwrap();
        done.wait_for(2);
        pool.stop();
        let ran = ran.load(Ordering::SeqCst);
        assert_eq!(cancelled, !ran);
        let s = pool.statistics();
        assert_eq!(
            (s.threads_alive, s.backlog, s.busy, s.completed),
            (0, 0, 0, 2 + u64::from(ran))
        );
    });
}

/// A shared record that counts itself done (the bridge's kind of item).
struct Counted(Arc<crate::loom::model::Done>);

impl super::SharedTask for Counted {
    fn run(self: std::sync::Arc<Self>, _: &super::PanicCounter<'_>) {
        task(&self.0)();
    }
    fn discard(self: std::sync::Arc<Self>) {
        panic!("a started pool discarded a batch item");
    }
}

/// A batch of two on two idle threads: one claim and one notify for the
/// whole batch; the woken thread claims the next sleeper for the second
/// item, or a thread finds it in the backlog. Nothing is lost or run twice.
#[test]
fn loom_pool_a_batch_of_two_on_two_idle_threads_runs_both_once() {
    loom::model(|| {
        let pool = ThreadPool::new(2, 2).unwrap();
        pool.start();
        let done = Arc::new(Done::default());
        let mut left = 2;
        let queued = pool.submit_shared_batch_at(|_| {
            (left > 0).then(|| {
                left -= 1;
                (
                    std::sync::Arc::new(Counted(done.clone()))
                        as std::sync::Arc<dyn super::SharedTask>,
                    std::panic::Location::caller(),
                )
            })
        });
        assert!(queued);
        done.wait_for(2);
        pool.stop();
        let s = pool.statistics();
        assert_eq!((s.threads_alive, s.completed, s.backlog), (0, 2, 0));
    });
}

/// A one-thread pool whose thread has started a job that waits for
/// `release`, with a second job queued behind it: the inbox's gate is open
/// (one thread runs; a submission decides nothing).
fn pool_with_open_gate() -> (Arc<ThreadPool>, Arc<Done>, Arc<Done>) {
    let pool = Arc::new(ThreadPool::new(1, 1).unwrap());
    pool.start();
    let (started, release, done) = (
        Arc::new(Done::default()),
        Arc::new(Done::default()),
        Arc::new(Done::default()),
    );
    let (started_task, wait, done_task) = (task(&started), release.clone(), task(&done));
    pool.call_in_thread(move || {
        started_task();
        wait.wait_for(1);
        done_task();
    })
    .unwrap_or_else(|_| panic!("refused"));
    started.wait_for(1);
    pool.call_in_thread(task(&done))
        .unwrap_or_else(|_| panic!("refused"));
    assert!(pool.core.state.lock().gate, "the gate is open");
    (pool, release, done)
}

/// The submission inbox (`inbox.rs`): with the gate open, a submission
/// from another thread skips the lock while the only thread finishes both
/// jobs, drains the inbox (or not yet) and goes idle, closing the gate.
/// Nothing is lost or run twice.
#[test]
fn loom_pool_inbox_push_while_the_busy_thread_goes_idle_runs_every_job_once() {
    loom::model(|| {
        let (pool, release, done) = pool_with_open_gate();
        let (other_pool, other_done) = (pool.clone(), done.clone());
        let other = thread::spawn(move || {
            other_pool
                .call_in_thread(task(&other_done))
                .unwrap_or_else(|_| panic!("refused"));
        });
        task(&release)();
        other.join().unwrap();
        done.wait_for(3);
        pool.stop();
        let s = pool.statistics();
        assert_eq!((s.threads_alive, s.completed, s.backlog), (0, 3, 0));
    });
}

/// With the gate open, a submission that may go through the inbox races
/// `stop`: it runs, or it is handed back; never lost.
#[test]
fn loom_pool_inbox_stop_racing_a_submission_runs_it_or_hands_it_back() {
    loom::model(|| {
        let (pool, release, done) = pool_with_open_gate();
        let (other_pool, other_done) = (pool.clone(), done.clone());
        let submitter = thread::spawn(move || match other_pool.call_in_thread(task(&other_done)) {
            Ok(()) => 3,
            Err(AlreadyQuit(job)) => {
                drop(job);
                2
            }
        });
        task(&release)();
        pool.stop();
        let expected = submitter.join().unwrap();
        done.wait_for(expected);
        let s = pool.statistics();
        assert_eq!(
            (s.threads_alive, s.completed, s.backlog),
            (0, expected as u64, 0)
        );
    });
}
