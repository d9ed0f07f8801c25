//! Spent job records are reused by the loop thread (`bridge/recycle.rs`):
//! a record is reused only when nothing else can reach it, what it held is
//! dropped when its `Deferred` is, and a reused record belongs wholly to
//! its new job (and its new reactor).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use weft::reactor::Handle;
use weft::{Deferred, Reactor, ThreadPool};

/// Counts its drops.
struct Noisy {
    id: u32,
    drops: Arc<AtomicUsize>,
}

impl Drop for Noisy {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Every call submits a closure of the same type, so the records are of
/// one type and can be reused for each other.
fn job(h: &Handle, pool: &ThreadPool, id: u32, drops: &Arc<AtomicUsize>) -> Deferred<Noisy> {
    let drops = drops.clone();
    h.defer_to_thread_pool(pool, move || Noisy { id, drops })
}

fn value(h: &Handle, pool: &ThreadPool, v: u32) -> Deferred<u32> {
    h.defer_to_thread_pool(pool, move || v)
}

/// A job's `Deferred` (value 7) whose result was delivered but never
/// polled (a second job, run after it on the one thread, was awaited
/// instead), with a resolver holding its record too when `shared`.
async fn delivered_unpolled(
    h: &Handle,
    pool: &ThreadPool,
    shared: bool,
) -> (Deferred<u32>, Option<weft::Resolver<u32>>) {
    let d = value(h, pool, 7);
    let resolver = shared.then(|| d.resolver());
    assert_eq!(value(h, pool, 8).await, Ok(8));
    (d, resolver)
}

/// A reactor and a started one-thread pool (one thread: its jobs run and
/// deliver in FIFO order).
fn reactor_and_pool() -> (Reactor, Arc<ThreadPool>) {
    let pool = Arc::new(ThreadPool::new(1, 1).unwrap());
    pool.start();
    (Reactor::new().unwrap(), pool)
}

#[test]
fn an_unconsumed_outcome_is_dropped_with_its_deferred_and_a_reused_record_gives_its_own() {
    let (reactor, pool) = reactor_and_pool();
    let h = reactor.handle();
    let drops = Arc::new(AtomicUsize::new(0));
    let (p, dr) = (pool.clone(), drops.clone());
    reactor
        .run_until_complete(async move {
            for round in 0..3u32 {
                let first = job(&h, &p, round * 2, &dr);
                // Delivered after `first` (same worker thread, FIFO inbox).
                let second = job(&h, &p, round * 2 + 1, &dr);
                let second = second.await.unwrap();
                assert_eq!(second.id, round * 2 + 1);
                assert!(first.is_resolved());
                let before = dr.load(Ordering::SeqCst);
                drop(first); // its record may be kept, its outcome may not
                assert_eq!(dr.load(Ordering::SeqCst), before + 1);
                drop(second);
            }
        })
        .unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 6);
    pool.stop();
}

#[test]
fn a_record_a_resolver_still_holds_is_not_reused() {
    let (reactor, pool) = reactor_and_pool();
    let (h, p) = (reactor.handle(), pool.clone());
    reactor
        .run_until_complete(async move {
            for _ in 0..3 {
                let first = value(&h, &p, 1);
                let resolver = first.resolver();
                assert_eq!(first.await, Ok(1));
                // If `first`'s record were reused while `resolver` holds
                // it, the resolver would reach the next job.
                let next = value(&h, &p, 2);
                assert!(resolver.callback(9).is_err(), "resolved already");
                drop(resolver);
                assert_eq!(next.await, Ok(2));
            }
        })
        .unwrap();
    pool.stop();
}

#[test]
fn a_record_reused_by_another_reactor_on_the_thread_reports_to_that_reactor() {
    let pool = Arc::new(ThreadPool::new(1, 1).unwrap());
    pool.start();
    let a = Reactor::new().unwrap();
    let b = Reactor::new().unwrap();
    for round in 0..3 {
        let (ha, p) = (a.handle(), pool.clone());
        let got = a
            .run_until_complete(async move { value(&ha, &p, round).await })
            .unwrap();
        assert_eq!(got, Ok(round));
        // `a`'s spent record is in this thread's free list now.
        let (hb, p) = (b.handle(), pool.clone());
        let got = b
            .run_until_complete(async move { value(&hb, &p, round + 10).await })
            .unwrap();
        assert_eq!(got, Ok(round + 10));
    }
    pool.stop();
}

/// A delivered outcome is taken exactly once, by either path: through the
/// unique borrow (the awaiter owns the record alone) or through the lock
/// (a resolver or a chain link still reaches the record); a second poll
/// of the spent `Deferred` panics in both.
#[test]
fn a_delivered_outcome_is_taken_once_whether_or_not_the_record_is_shared() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    let (reactor, pool) = reactor_and_pool();
    let (h, p) = (reactor.handle(), pool.clone());
    reactor
        .run_until_complete(async move {
            for shared in [false, true] {
                let (mut d, resolver) = delivered_unpolled(&h, &p, shared).await;
                assert!(d.is_resolved());
                let mut cx = Context::from_waker(Waker::noop());
                assert_eq!(Pin::new(&mut d).poll(&mut cx), Poll::Ready(Ok(7)));
                let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let _ = Pin::new(&mut d).poll(&mut cx);
                }));
                assert!(
                    again.is_err(),
                    "a second poll must panic (shared: {shared})"
                );
                drop(resolver);
            }
        })
        .unwrap();
    pool.stop();
}

/// A `Deferred` whose outcome was taken by a poll (awaited by reference)
/// behaves as consumed, whether its record was given back for reuse at the
/// take (owned alone) or is still shared with a resolver: resolved,
/// resolving hands the result back, a cancel does nothing, and a callback
/// added afterwards never runs (as for a consumed local `Deferred`; no
/// task that panics in the loop).
#[test]
fn a_deferred_whose_outcome_was_taken_behaves_as_consumed() {
    use std::cell::Cell;
    use std::rc::Rc;

    let (reactor, pool) = reactor_and_pool();
    let (h, p) = (reactor.handle(), pool.clone());
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    reactor
        .run_until_complete(async move {
            for shared in [false, true] {
                let (mut d, resolver) = delivered_unpolled(&h, &p, shared).await;
                assert_eq!((&mut d).await, Ok(7));
                assert!(d.is_resolved());
                assert!(
                    d.callback(1).is_err(),
                    "resolved already (shared: {shared})"
                );
                d.cancel();
                let again = d.resolver();
                assert!(again.is_resolved());
                assert!(again.errback(weft::ThreadError::Stopped).is_err());
                drop((again, resolver));
                let r = r.clone();
                d.add_both(move |_| r.set(true));
                // The same worker and FIFO inbox: a callback task would have
                // run by the time this round trip is back.
                assert_eq!(value(&h, &p, 9).await, Ok(9));
            }
        })
        .unwrap();
    assert!(!ran.get(), "a callback of a consumed Deferred ran");
    pool.stop();
}
