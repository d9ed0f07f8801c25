//! `Deferred`: abandonment (the last resolver dropped), callback chains and
//! `gather` (Twisted's `Deferred` / `DeferredList` behaviour, as ported).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use weft::{Cancelled, Deferred, Reactor, ThreadError, gather};

#[test]
fn a_deferred_whose_last_resolver_is_dropped_resolves_cancelled() {
    let d: Deferred<u8, Cancelled> = Deferred::new();
    let r1 = d.resolver();
    let r2 = r1.clone();
    drop(r1);
    assert!(!d.is_resolved(), "one resolver is still alive");
    drop(r2);
    assert!(d.is_resolved());
    let reactor = Reactor::new().unwrap();
    assert_eq!(reactor.run_until_complete(d).unwrap(), Err(Cancelled));
}

#[test]
fn a_resolver_dropped_with_a_cancelled_timer_fails_its_deferred() {
    let reactor = Reactor::new().unwrap();
    let d: Deferred<u8, Cancelled> = Deferred::new();
    let r = d.resolver();
    let call = reactor
        .handle()
        .call_later(Duration::from_secs(60), move || {
            let _ = r.callback(1);
        });
    call.cancel().unwrap();
    assert_eq!(reactor.run_until_complete(d).unwrap(), Err(Cancelled));
}

#[test]
fn a_resolved_deferred_is_not_changed_by_dropping_its_resolvers() {
    let d: Deferred<u8, Cancelled> = Deferred::new();
    let r = d.resolver();
    r.callback(3).unwrap();
    drop(r);
    let reactor = Reactor::new().unwrap();
    assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(3));
}

#[test]
fn a_canceller_that_drops_the_resolvers_resolves_once() {
    let d: Deferred<u8, Cancelled> = Deferred::new();
    let keep = Rc::new(RefCell::new(Some(d.resolver())));
    let k = keep.clone();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let d = d.then(move |r| {
        c.set(c.get() + 1);
        r
    });
    // The upstream canceller drops the only resolver.
    *keep.borrow_mut() = None;
    drop(k);
    d.cancel();
    assert_eq!(calls.get(), 1);
}

#[test]
fn then_sees_errors_and_may_recover() {
    let d: Deferred<u8, Cancelled> = Deferred::fail(Cancelled);
    let out: Deferred<u8, Cancelled> = d.then(|r| Ok(r.unwrap_or(9)));
    let reactor = Reactor::new().unwrap();
    assert_eq!(reactor.run_until_complete(out).unwrap(), Ok(9));
}

#[test]
fn cancelling_a_chain_cancels_its_head() {
    let reactor = Reactor::new().unwrap();
    let (worker, perform) = weft::threads::memory_worker();
    let head = reactor.defer_to_worker(&worker, || 1);
    let tail = head.map(|v| v + 1).map_err(|e| e);
    tail.cancel();
    assert!(perform.perform());
    assert_eq!(
        reactor.run_until_complete(tail).unwrap(),
        Err(ThreadError::Cancelled)
    );
}

#[test]
fn and_then_waits_for_the_inner_deferred() {
    let reactor = Reactor::new().unwrap();
    let d = reactor.defer_to_thread(|| 20).and_then(|v| {
        weft::reactor::current()
            .unwrap()
            .defer_to_thread(move || v + 22)
    });
    assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(42));
}

#[test]
fn add_callbacks_routes_values_and_errors() {
    let ok: Deferred<u8, Cancelled> = Deferred::succeed(1);
    let err: Deferred<u8, Cancelled> = Deferred::fail(Cancelled);
    let a: Deferred<&str, Cancelled> = ok.add_callbacks(|_| Ok("value"), |_| Ok("error"));
    let b: Deferred<&str, Cancelled> = err.add_callbacks(|_| Ok("value"), |_| Ok("error"));
    let reactor = Reactor::new().unwrap();
    assert_eq!(reactor.run_until_complete(a).unwrap(), Ok("value"));
    assert_eq!(reactor.run_until_complete(b).unwrap(), Ok("error"));
}

#[test]
fn gather_keeps_input_order() {
    let a: Deferred<u8, Cancelled> = Deferred::new();
    let b: Deferred<u8, Cancelled> = Deferred::new();
    let (ra, rb) = (a.resolver(), b.resolver());
    let all = gather(vec![a, b]);
    rb.callback(2).unwrap();
    ra.callback(1).unwrap();
    let reactor = Reactor::new().unwrap();
    assert_eq!(reactor.run_until_complete(all).unwrap(), Ok(vec![1, 2]));
}

#[test]
fn gather_fails_on_the_first_error_and_cancels_the_rest() {
    let a: Deferred<u8, Cancelled> = Deferred::new();
    let b: Deferred<u8, Cancelled> = Deferred::new();
    let ra = a.resolver();
    let rb = b.resolver();
    let all = gather(vec![a, b]);
    ra.errback(Cancelled).unwrap();
    assert!(rb.is_resolved(), "the other input was not cancelled");
    let reactor = Reactor::new().unwrap();
    assert_eq!(reactor.run_until_complete(all).unwrap(), Err(Cancelled));
}

#[test]
fn cancelling_gather_cancels_every_input() {
    let a: Deferred<u8, Cancelled> = Deferred::new();
    let b: Deferred<u8, Cancelled> = Deferred::new();
    let (ra, rb) = (a.resolver(), b.resolver());
    let all = gather(vec![a, b]);
    all.cancel();
    assert!(ra.is_resolved() && rb.is_resolved());
}

#[test]
fn gather_of_nothing_is_an_empty_list() {
    let all = gather(Vec::<Deferred<u8, Cancelled>>::new());
    let reactor = Reactor::new().unwrap();
    assert_eq!(reactor.run_until_complete(all).unwrap(), Ok(vec![]));
}
