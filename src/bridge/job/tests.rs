//! The record's loop-side outcomes against a worker's posted one, made
//! deterministic with a one-thread worker: a task queued behind the job
//! runs only after the job's outcome was posted.

use std::sync::mpsc;

use crate::Reactor;
use crate::ThreadError;
use crate::threads::{ThreadWorker, Worker};

/// Waits until every task queued on `worker` so far has run (so a job
/// queued before has posted its outcome).
fn settle_worker(worker: &ThreadWorker) {
    let (tx, rx) = mpsc::channel();
    worker
        .do_work(Box::new(move || tx.send(()).unwrap()))
        .unwrap();
    rx.recv().unwrap();
}

#[test]
fn a_cancel_after_the_worker_posted_but_before_delivery_wins_and_the_late_delivery_changes_nothing()
{
    let reactor = Reactor::new().unwrap();
    let worker = ThreadWorker::new().unwrap();
    let d = reactor.defer_to_worker(&worker, || 7);
    settle_worker(&worker); // posted; its delivery waits in the inbox
    d.cancel();
    // The run delivers the posted outcome after the cancel settled it.
    let got = reactor.run_until_complete(d).unwrap();
    assert!(matches!(got, Err(ThreadError::Cancelled)), "{got:?}");
    worker.quit().unwrap();
}

#[test]
fn an_outcome_posted_and_delivered_is_taken_once() {
    let reactor = Reactor::new().unwrap();
    let worker = ThreadWorker::new().unwrap();
    let d = reactor.defer_to_worker(&worker, || 7);
    settle_worker(&worker);
    assert_eq!(reactor.run_until_complete(d).unwrap().unwrap(), 7);
    worker.quit().unwrap();
}

#[test]
fn a_cancel_while_queued_drops_the_closure_unrun() {
    let reactor = Reactor::new().unwrap();
    let worker = ThreadWorker::new().unwrap();
    let (hold_tx, hold_rx) = mpsc::channel::<()>();
    // The worker is busy until released: the job stays queued.
    worker
        .do_work(Box::new(move || {
            let _ = hold_rx.recv();
        }))
        .unwrap();
    let (ran_tx, ran_rx) = mpsc::channel();
    let d = reactor.defer_to_worker(&worker, move || ran_tx.send(()).unwrap());
    d.cancel();
    hold_tx.send(()).unwrap();
    settle_worker(&worker);
    assert!(ran_rx.try_recv().is_err(), "a cancelled job never runs");
    let got = reactor.run_until_complete(d).unwrap();
    assert!(matches!(got, Err(ThreadError::Cancelled)), "{got:?}");
    worker.quit().unwrap();
}
