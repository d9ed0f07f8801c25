//! `defer_to_worker_with`: the job's own `Result`, the bridge's failures
//! mapped through `error`, and the submitter's canceller, all in the job's
//! single record (issue 12). On a memory worker, so when a job runs is
//! decided by the test.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use weft::threads::{Worker, memory_worker};
use weft::{Reactor, ThreadError};

#[derive(Debug, PartialEq)]
enum MyError {
    Parse,
    Cancelled,
    Panicked(String),
    Stopped,
    Other,
}

/// `Deferred::cancel` asks for it (a local cell's cancel builds its error
/// from `Cancelled`; the job's record uses `bridge`).
impl From<weft::Cancelled> for MyError {
    fn from(_: weft::Cancelled) -> Self {
        MyError::Cancelled
    }
}

fn bridge(e: ThreadError) -> MyError {
    match e {
        ThreadError::Cancelled => MyError::Cancelled,
        ThreadError::Panicked { message } => MyError::Panicked(message.to_string()),
        ThreadError::Stopped => MyError::Stopped,
        _ => MyError::Other,
    }
}

/// Counts how often it ran and whether it was dropped.
struct Canceller {
    ran: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl Canceller {
    fn new() -> (Canceller, Arc<AtomicUsize>, Arc<AtomicBool>) {
        let ran = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        let c = Canceller {
            ran: ran.clone(),
            dropped: dropped.clone(),
        };
        (c, ran, dropped)
    }

    fn call(self) {
        self.ran.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Canceller {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[test]
fn the_jobs_own_result_is_the_outcome_and_the_canceller_is_dropped_unrun() {
    let reactor = Reactor::new().unwrap();
    let (worker, perform) = memory_worker();
    let (c, ran, dropped) = Canceller::new();
    let ok =
        reactor.defer_to_worker_with(&worker, || Ok::<u8, MyError>(7), bridge, move || c.call());
    let err = reactor.defer_to_worker_with(&worker, || Err::<u8, _>(MyError::Parse), bridge, || ());
    assert!(perform.perform() && perform.perform());
    let (ok, err) = reactor
        .run_until_complete(async { (ok.await, err.await) })
        .unwrap();
    assert_eq!((ok, err), (Ok(7), Err(MyError::Parse)));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert!(
        dropped.load(Ordering::SeqCst),
        "a resolved job drops its canceller"
    );
}

#[test]
fn a_panic_reaches_the_awaiter_through_the_error_mapping() {
    let reactor = Reactor::new().unwrap();
    let (worker, perform) = memory_worker();
    let d = reactor.defer_to_worker_with(
        &worker,
        || -> Result<u8, MyError> { panic!("boom") },
        bridge,
        || (),
    );
    assert!(perform.perform());
    let out = reactor.run_until_complete(d).unwrap();
    assert!(
        matches!(&out, Err(MyError::Panicked(m)) if m.contains("boom")),
        "{out:?}"
    );
}

#[test]
fn cancelling_runs_the_canceller_once_and_the_unstarted_job_never_runs() {
    let reactor = Reactor::new().unwrap();
    let (worker, perform) = memory_worker();
    let (c, ran, _dropped) = Canceller::new();
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let d = reactor.defer_to_worker_with(
        &worker,
        move || {
            s.store(true, Ordering::SeqCst);
            Ok::<u8, MyError>(1)
        },
        bridge,
        move || c.call(),
    );
    d.cancel();
    d.cancel(); // a second cancel is a no-op
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert!(perform.perform()); // the worker reaches the emptied record
    assert!(!started.load(Ordering::SeqCst));
    assert_eq!(
        reactor.run_until_complete(d).unwrap(),
        Err(MyError::Cancelled)
    );
}

#[test]
fn a_cancel_after_the_result_arrived_runs_no_canceller() {
    let reactor = Reactor::new().unwrap();
    let (worker, perform) = memory_worker();
    let (c, ran, _dropped) = Canceller::new();
    let d =
        reactor.defer_to_worker_with(&worker, || Ok::<u8, MyError>(3), bridge, move || c.call());
    assert!(perform.perform());
    let out = reactor
        .run_until_complete(async move {
            // Let the completion be delivered, then cancel: too late.
            while !d.is_resolved() {
                weft::reactor::current()
                    .unwrap()
                    .defer_to_thread(|| ())
                    .await
                    .unwrap();
            }
            d.cancel();
            d.await
        })
        .unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(out, Ok(3));
}

#[test]
fn a_refused_job_fails_with_the_mapped_stop_and_its_canceller_never_runs() {
    let reactor = Reactor::new().unwrap();
    let (worker, _perform) = memory_worker();
    worker.quit().unwrap();
    let (c, ran, dropped) = Canceller::new();
    let d =
        reactor.defer_to_worker_with(&worker, || Ok::<u8, MyError>(1), bridge, move || c.call());
    assert_eq!(
        reactor.run_until_complete(d).unwrap(),
        Err(MyError::Stopped)
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert!(dropped.load(Ordering::SeqCst));
}

#[test]
fn a_job_whose_loop_ended_before_it_started_is_dropped_unrun() {
    let (worker, perform) = memory_worker();
    let started = Arc::new(AtomicBool::new(false));
    let captured = Arc::new(());
    let (s, c) = (started.clone(), captured.clone());
    let reactor = Reactor::new().unwrap();
    let d = reactor.defer_to_worker(&worker, move || {
        let _keep = c;
        s.store(true, Ordering::SeqCst);
    });
    drop(d);
    drop(reactor); // shuts the loop down with the job still queued
    assert!(perform.perform());
    assert!(
        !started.load(Ordering::SeqCst),
        "its result could never be delivered"
    );
    assert_eq!(Arc::strong_count(&captured), 1, "its captures are dropped");
}
