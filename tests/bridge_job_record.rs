//! A thread job's `Deferred` is its shared record (see `bridge/job.rs`):
//! what its other handles (resolvers, late callbacks) do with it.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc;

use weft::{Reactor, ThreadError};

#[test]
fn a_resolver_of_a_job_resolves_it_first_and_the_late_result_is_dropped() {
    let reactor = Reactor::new().unwrap();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let d = reactor.defer_to_thread(move || {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        1
    });
    let r = d.resolver();
    reactor.run_until_complete(async {}).unwrap(); // start the pool
    started_rx.recv().unwrap(); // the job runs
    r.callback(2).unwrap();
    assert!(d.is_resolved());
    assert!(r.callback(3).is_err(), "the first result wins");
    release_tx.send(()).unwrap();
    assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(2));
}

#[test]
fn a_callback_added_after_delivery_runs_at_once_with_the_value() {
    let reactor = Reactor::new().unwrap();
    let d = reactor.defer_to_thread(|| 5);
    let r = d.resolver();
    let delivered = reactor.defer_to_thread(|| ());
    // Both jobs go through the same inbox; wait until the second arrived.
    reactor.run_until_complete(delivered).unwrap().unwrap();
    while !r.is_resolved() {
        reactor.iterate(Some(std::time::Duration::from_millis(10)));
    }
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    d.add_both(move |res| s.set(Some(res)));
    assert_eq!(seen.take(), Some(Ok(5)), "no turn needed once delivered");
}

#[test]
fn a_callback_added_after_the_loop_ended_gets_cancelled_at_once() {
    let reactor = Reactor::new().unwrap();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let d = reactor.defer_to_thread(move || {
        let _ = release_rx.recv();
    });
    drop(reactor); // never run: the job can never be delivered
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    d.add_both(move |res| s.set(Some(res)));
    assert_eq!(seen.take(), Some(Err(ThreadError::Cancelled)));
    drop(release_tx);
}

#[test]
fn cancelling_a_job_wakes_its_awaiter_with_cancelled() {
    let reactor = Reactor::new().unwrap();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let d = reactor.defer_to_thread(move || {
        let _ = release_rx.recv();
    });
    let r = d.resolver();
    reactor.call_soon(move || r.cancel());
    assert_eq!(
        reactor.run_until_complete(d).unwrap(),
        Err(ThreadError::Cancelled)
    );
    drop(release_tx);
}

/// Polls `d` once on the current thread (no executor, no waiting).
fn poll_once<F: std::future::Future + Unpin>(d: &mut F) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(d).poll(&mut cx)
}

#[test]
fn a_job_deferred_polled_after_the_loop_ended_is_never_left_pending() {
    use std::task::Poll;
    use std::time::Duration;
    let reactor = Reactor::builder()
        .shutdown_timeout(Duration::ZERO)
        .build()
        .unwrap();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    // Still running when the loop ends: its result arrives after the end.
    let mut running = reactor.defer_to_thread(move || {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        done_tx.send(()).unwrap();
        7
    });
    reactor.run_until_complete(async {}).unwrap(); // start the pool
    started_rx.recv().unwrap();
    reactor.stop();
    reactor.run().unwrap();
    release_tx.send(()).unwrap();
    done_rx.recv().unwrap();
    // The loop will never deliver again: the outcome that arrived is given,
    // or `Cancelled`, but never `Pending` forever.
    match poll_once(&mut running) {
        Poll::Ready(r) => assert!(matches!(r, Ok(7) | Err(ThreadError::Cancelled)), "{r:?}"),
        Poll::Pending => panic!("a job's Deferred stayed pending after its loop ended"),
    }
}

/// The loop caches its bridge state per thread (keyed by reactor): jobs of
/// two reactors submitted alternately from one thread each go to their own
/// reactor's pool and count, and come back to their own loop.
#[test]
fn jobs_of_two_reactors_on_one_thread_stay_with_their_own_reactor() {
    let a = Reactor::new().unwrap();
    let b = Reactor::new().unwrap();
    let mut from_a = Vec::new();
    let mut from_b = Vec::new();
    for i in 0..3u32 {
        from_a.push(a.defer_to_thread(move || i));
        if i < 2 {
            from_b.push(b.defer_to_thread(move || 10 + i));
        }
    }
    let got_a = a
        .run_until_complete(async move {
            let mut v = Vec::new();
            for d in from_a {
                v.push(d.await.unwrap());
            }
            v
        })
        .unwrap();
    let got_b = b
        .run_until_complete(async move {
            let mut v = Vec::new();
            for d in from_b {
                v.push(d.await.unwrap());
            }
            v
        })
        .unwrap();
    assert_eq!(got_a, vec![0, 1, 2]);
    assert_eq!(got_b, vec![10, 11]);
    // Shut both down (their pools are joined), then count what each ran.
    for r in [&a, &b] {
        r.stop();
        r.run().unwrap();
    }
    assert_eq!(a.thread_pool().statistics().completed, 3);
    assert_eq!(b.thread_pool().statistics().completed, 2);
}

/// A job delivered while nobody awaits it is resolved at once for a
/// callback added later, and one awaited (its waker parked) is woken by
/// the delivery: both paths of the lock-free delivery.
#[test]
fn delivery_wakes_a_parked_awaiter_and_resolves_an_unawaited_job() {
    let reactor = Reactor::new().unwrap();
    let h = reactor.handle();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let out = reactor
        .run_until_complete(async move {
            let slow = h.defer_to_thread(move || {
                release_rx.recv().unwrap();
                2
            });
            let quick = h.defer_to_thread(|| 1);
            let quick_seen = quick.resolver();
            // Released in a later turn: the await below has parked its
            // waker in the record by then, and the delivery wakes it.
            h.call_soon(move || release_tx.send(()).unwrap());
            let v = slow.await.unwrap();
            // `quick` finished first; it may be delivered by now or later.
            let q = quick.await.unwrap();
            assert!(quick_seen.is_resolved());
            (v, q)
        })
        .unwrap();
    assert_eq!(out, (2, 1));
}
