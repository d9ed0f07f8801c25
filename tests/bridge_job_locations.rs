//! Every way the reactor submits work to a pool or worker names the
//! *caller's* line in the pool's diagnostics (`oldest_backlog`,
//! `running_jobs`), not a line inside the bridge. Jobs are observed queued
//! in pools that are not started (nothing runs, nothing races) or running on
//! a thread held on a gate the test owns; no sleeps.

use std::panic::Location;
use std::sync::{Arc, mpsc};

use weft::threads::{JobInfo, Task, Worker};
use weft::{Reactor, ThreadPool};

/// The oldest queued job in `pool` was submitted at this file's `line`;
/// then the backlog is emptied for the next check.
#[track_caller]
fn queued_at(pool: &ThreadPool, line: u32) {
    let oldest: JobInfo = pool.statistics().oldest_backlog.expect("a job is queued");
    assert_named(oldest.location, line);
    pool.discard_backlog();
    assert_eq!(pool.statistics().oldest_backlog, None);
}

#[track_caller]
fn assert_named(location: &Location<'_>, line: u32) {
    assert_eq!((location.file(), location.line()), (file!(), line));
}

#[test]
fn the_reactor_pool_paths_name_the_callers_line() {
    let reactor = Reactor::new().unwrap();
    let handle = reactor.handle();
    let pool = reactor.thread_pool(); // not started before `run`: work waits

    let line = line!() + 1;
    reactor.call_in_thread(|| ()).unwrap();
    queued_at(&pool, line);
    let line = line!() + 1;
    handle.call_in_thread(|| ()).unwrap();
    queued_at(&pool, line);

    let calls = || -> Vec<Task> { vec![Box::new(|| ())] };
    let line = line!() + 1;
    reactor.call_multiple_in_thread(calls()).unwrap();
    queued_at(&pool, line);
    let line = line!() + 1;
    handle.call_multiple_in_thread(calls()).unwrap();
    queued_at(&pool, line);

    let line = line!() + 1;
    let _d = reactor.defer_to_thread(|| 1);
    queued_at(&pool, line);
    let line = line!() + 1;
    let _d = handle.defer_to_thread(|| 1);
    queued_at(&pool, line);

    // `defer_to_worker` with the reactor pool itself, as an `Arc`.
    let line = line!() + 1;
    let _d = reactor.defer_to_worker(&pool, || 1);
    queued_at(&pool, line);
    let line = line!() + 1;
    let _d = handle.defer_to_worker(&pool, || 1);
    queued_at(&pool, line);
}

#[test]
fn the_reactor_pool_paths_with_a_tracing_span_name_the_callers_line() {
    // With a subscriber listening, `call_in_thread` takes its span path.
    let subscriber = tracing_subscriber::registry();
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("submitter");
        let _entered = span.enter();
        let reactor = Reactor::new().unwrap();
        let pool = reactor.thread_pool();
        let line = line!() + 1;
        reactor.call_in_thread(|| ()).unwrap();
        queued_at(&pool, line);
        let line = line!() + 1;
        let _d = reactor.defer_to_thread(|| 1);
        queued_at(&pool, line);
    });
}

#[test]
fn private_pools_and_workers_name_the_callers_line() {
    let reactor = Reactor::new().unwrap();
    let handle = reactor.handle();
    let pool = ThreadPool::new(0, 1).unwrap(); // never started: work waits

    let line = line!() + 1;
    let _d = reactor.defer_to_thread_pool(&pool, || 1);
    queued_at(&pool, line);
    let line = line!() + 1;
    let _d = handle.defer_to_thread_pool(&pool, || 1);
    queued_at(&pool, line);

    let line = line!() + 1;
    let _d = reactor.defer_to_worker(&pool, || 1);
    queued_at(&pool, line);
    let line = line!() + 1;
    let _d = handle.defer_to_worker(&pool, || 1);
    queued_at(&pool, line);

    let shared = Arc::new(ThreadPool::new(0, 1).unwrap());
    let line = line!() + 1;
    let _d = reactor.defer_to_worker(&shared, || 1);
    queued_at(&shared, line);

    let dynamic: &dyn Worker = &pool;
    let line = line!() + 1;
    let _d = reactor.defer_to_worker(dynamic, || 1);
    queued_at(&pool, line);
}

#[test]
fn running_deferred_jobs_name_the_callers_line() {
    let reactor = Reactor::new().unwrap();
    let pool = ThreadPool::new(0, 2).unwrap();
    pool.start();
    let (started, wait_started) = mpsc::channel::<()>();
    let (open_a, gate_a) = mpsc::channel::<()>();
    let (open_b, gate_b) = mpsc::channel::<()>();
    let job = |started: mpsc::Sender<()>, gate: mpsc::Receiver<()>| {
        move || {
            started.send(()).unwrap();
            gate.recv().is_ok()
        }
    };

    let line_a = line!() + 1;
    let a = reactor.defer_to_thread_pool(&pool, job(started.clone(), gate_a));
    let line_b = line!() + 1;
    let b = reactor.defer_to_worker(&pool, job(started, gate_b));
    wait_started.recv().unwrap();
    wait_started.recv().unwrap(); // both run now, held on their gates

    let mut lines: Vec<u32> = pool
        .running_jobs()
        .iter()
        .map(|job| {
            assert_eq!(job.location.file(), file!());
            job.location.line()
        })
        .collect();
    lines.sort_unstable();
    assert_eq!(lines, vec![line_a, line_b]);

    open_a.send(()).unwrap();
    open_b.send(()).unwrap();
    let (a, b) = reactor
        .run_until_complete(async { (a.await, b.await) })
        .unwrap();
    assert_eq!((a, b), (Ok(true), Ok(true)));
    pool.stop();
}
