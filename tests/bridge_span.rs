//! The caller's `tracing` span crosses the bridge (issue 13; asyncio's
//! `to_thread` carries context variables): pool work runs inside the span
//! that was current where it was submitted, and so do the `Deferred`
//! callbacks its completion runs and the calls other threads queue onto the
//! loop. A span no subscriber is interested in is not carried at all.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex, Once, mpsc};
use std::thread;
use std::time::Duration;

use tracing::Span;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use weft::Reactor;
use weft::threads::{ThreadWorker, Worker};

/// Spans named `ignored` are filtered out (disabled); every other span is
/// recorded by the registry. Installed once, process-wide, so pool threads
/// see it too.
fn subscriber() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = filter_fn(|meta| meta.name() != "ignored");
        let subscriber = tracing_subscriber::registry().with(filter);
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

/// The name of the span current on this thread, if any.
fn current_name() -> Option<&'static str> {
    Span::current().metadata().map(|m| m.name())
}

#[test]
fn defer_to_thread_runs_the_work_and_its_callback_in_the_submitters_span() {
    subscriber();
    let reactor = Reactor::new().unwrap();
    let span = tracing::info_span!("defer_submit");
    let d = span.in_scope(|| reactor.defer_to_thread(current_name));
    let in_callback = Rc::new(RefCell::new(None));
    let seen = in_callback.clone();
    // Registered outside the span: the completion brings it back.
    assert_eq!(current_name(), None);
    d.add_both(move |in_work| {
        *seen.borrow_mut() = Some((in_work, current_name()));
        weft::reactor::current().unwrap().stop();
    });
    reactor.run().unwrap();
    assert_eq!(
        in_callback.borrow_mut().take(),
        Some((Ok(Some("defer_submit")), Some("defer_submit")))
    );
}

#[test]
fn defer_to_worker_and_a_private_pool_carry_the_span() {
    subscriber();
    let reactor = Reactor::new().unwrap();
    let worker = ThreadWorker::new().unwrap();
    let pool = weft::ThreadPool::new(0, 2).unwrap();
    pool.start();
    let span = tracing::info_span!("worker_submit");
    let (a, b) = span.in_scope(|| {
        (
            reactor.defer_to_worker(&worker, current_name),
            reactor.defer_to_thread_pool(&pool, current_name),
        )
    });
    let (a, b) = reactor
        .run_until_complete(async { (a.await, b.await) })
        .unwrap();
    assert_eq!(a, Ok(Some("worker_submit")));
    assert_eq!(b, Ok(Some("worker_submit")));
    worker.quit().unwrap();
    pool.stop();
}

#[test]
fn call_in_thread_and_call_multiple_in_thread_carry_the_span() {
    subscriber();
    let reactor = Reactor::new().unwrap();
    let (tx, rx) = mpsc::channel();
    let span = tracing::info_span!("call_submit");
    span.in_scope(|| {
        let tx1 = tx.clone();
        reactor
            .call_in_thread(move || tx1.send(current_name()).unwrap())
            .unwrap();
        let tx2 = tx.clone();
        let remote = reactor.remote();
        reactor
            .call_multiple_in_thread(vec![
                Box::new(move || tx2.send(current_name()).unwrap()),
                Box::new(move || remote.stop()),
            ])
            .unwrap();
    });
    reactor.run().unwrap();
    let seen: Vec<_> = rx.try_iter().collect();
    assert_eq!(seen, vec![Some("call_submit"), Some("call_submit")]);
}

#[test]
fn calls_from_threads_run_on_the_loop_in_the_callers_span() {
    subscriber();
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let caller = thread::spawn(move || {
        let span = tracing::info_span!("from_thread");
        let _entered = span.enter();
        let s1 = s.clone();
        remote
            .call_from_thread(move || s1.lock().unwrap().push(("call", current_name())))
            .unwrap();
        let s2 = s.clone();
        remote
            .try_call_from_thread(move || s2.lock().unwrap().push(("try", current_name())))
            .unwrap();
        let value = remote.blocking_call(current_name).unwrap();
        s.lock().unwrap().push(("blocking", value));
        let polled = remote
            .run_coroutine_threadsafe(|| async { current_name() })
            .wait()
            .unwrap();
        s.lock().unwrap().push(("coroutine", polled));
        let (done_tx, done_rx) = mpsc::channel();
        let stopper = remote.clone();
        remote
            .call_later(Duration::ZERO, move || {
                done_tx.send(current_name()).unwrap();
                stopper.stop();
            })
            .unwrap();
        drop(_entered);
        done_rx.recv().unwrap()
    });
    reactor.run().unwrap();
    assert_eq!(caller.join().unwrap(), Some("from_thread"));
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            ("call", Some("from_thread")),
            ("try", Some("from_thread")),
            ("blocking", Some("from_thread")),
            ("coroutine", Some("from_thread")),
        ]
    );
}

#[test]
fn a_span_no_subscriber_is_interested_in_is_not_carried() {
    subscriber();
    let reactor = Reactor::new().unwrap();
    let outer = tracing::info_span!("outer");
    let ignored = tracing::info_span!("ignored");
    assert!(ignored.is_disabled());
    let d = outer.in_scope(|| ignored.in_scope(|| reactor.defer_to_thread(current_name)));
    // The disabled span is not entered; the enabled one around it is
    // current, and is what travels.
    assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(Some("outer")));
    let d = ignored.in_scope(|| reactor.defer_to_thread(current_name));
    assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(None));
}

#[test]
fn a_refused_call_is_handed_back_with_a_span_current() {
    subscriber();
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    remote.stop();
    reactor.run().unwrap();
    let span = tracing::info_span!("refused");
    let _entered = span.enter();
    let (tx, rx) = mpsc::channel();
    let t = tx.clone();
    let err = remote
        .call_from_thread(move || t.send(7).unwrap())
        .unwrap_err();
    (err.0)();
    let t = tx.clone();
    let err = remote
        .try_call_from_thread(move || t.send(8).unwrap())
        .unwrap_err();
    err.into_inner()();
    let err = remote
        .call_later(Duration::ZERO, move || tx.send(9).unwrap())
        .unwrap_err();
    (err.0)();
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![7, 8, 9]);
}
