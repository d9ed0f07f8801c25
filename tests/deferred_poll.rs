//! Polling a `Deferred` by hand: both kinds of state (a loop-local cell and
//! a thread job's record) answer a poll the same way, whichever path the
//! inlined `poll` takes.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use weft::{Cancelled, Deferred, Reactor, ThreadError};

/// A waker that counts its wakes.
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (Arc<Counter>, Waker) {
    let counter = Arc::new(Counter(AtomicUsize::new(0)));
    (counter.clone(), Waker::from(counter))
}

fn poll<T, E>(d: &mut Deferred<T, E>, waker: &Waker) -> Poll<Result<T, E>> {
    Pin::new(d).poll(&mut Context::from_waker(waker))
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

#[test]
fn a_pending_local_deferred_parks_its_waker_and_is_woken_once_resolved() {
    let mut d: Deferred<u8, Cancelled> = Deferred::new();
    let r = d.resolver();
    let (wakes, waker) = counting_waker();
    assert_eq!(poll(&mut d, &waker), Poll::Pending);
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
    r.callback(4).unwrap();
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    assert_eq!(poll(&mut d, &waker), Poll::Ready(Ok(4)));
}

#[test]
fn a_local_deferred_polled_after_its_result_panics_with_a_clear_message() {
    let mut d: Deferred<u8, Cancelled> = Deferred::succeed(1);
    let (_, waker) = counting_waker();
    assert_eq!(poll(&mut d, &waker), Poll::Ready(Ok(1)));
    let again = catch_unwind(AssertUnwindSafe(|| poll(&mut d, &waker)));
    let payload = again.expect_err("a second poll must panic");
    assert!(
        panic_text(&*payload).contains("polled after it returned its result"),
        "unexpected panic: {:?}",
        panic_text(&*payload)
    );
}

#[test]
fn a_thread_jobs_deferred_polled_after_its_result_panics_with_the_same_message() {
    let reactor = Reactor::new().unwrap();
    let h = reactor.handle();
    let text = reactor
        .run_until_complete(async move {
            let mut d = h.defer_to_thread(|| 7u32);
            // Awaited by reference: the outcome is taken, `d` is spent.
            assert_eq!((&mut d).await, Ok(7));
            let (_, waker) = counting_waker();
            let again = catch_unwind(AssertUnwindSafe(|| poll(&mut d, &waker)));
            panic_text(&*again.expect_err("a second poll must panic"))
        })
        .unwrap();
    assert!(
        text.contains("polled after it returned its result"),
        "unexpected panic: {text:?}"
    );
}

#[test]
fn a_thread_jobs_deferred_resolved_on_the_loop_is_ready_at_the_first_poll() {
    let reactor = Reactor::new().unwrap();
    let (worker, _perform) = weft::threads::memory_worker(); // never runs it
    let mut d = reactor.defer_to_worker(&worker, || 1u8);
    d.resolve(Err(ThreadError::Stopped)).unwrap();
    let (wakes, waker) = counting_waker();
    assert_eq!(poll(&mut d, &waker), Poll::Ready(Err(ThreadError::Stopped)));
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
}
