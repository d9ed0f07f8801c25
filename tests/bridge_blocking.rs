//! Threads calling into the loop: `blocking_call_from_thread` and
//! `run_coroutine_threadsafe`.
//!
//! Ported from Twisted's `test/test_threads.py` (blockingCallFromThread, §3
//! items 53–56) and asyncio's `test_tasks.py` RunCoroutineThreadsafeTests
//! (asyncio-bridge.md §4 items 39–42), plus weft's deliberate differences
//! (no deadlock on the loop thread, no hang after stop).

mod common;

use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use weft::{
    CallError, Cancelled, Deferred, Reactor, ThreadError, blocking_call_from_thread,
    blocking_call_from_thread_future, blocking_call_from_thread_future_timeout,
    blocking_call_from_thread_timeout,
};

/// Runs `worker` on a plain thread while the reactor runs; stops the loop
/// when it returns and gives back its result.
fn with_worker<T: Send + 'static>(
    reactor: &Reactor,
    worker: impl FnOnce(weft::Remote) -> T + Send + 'static,
) -> T {
    let remote = reactor.remote();
    let t = thread::spawn(move || {
        let out = worker(remote.clone());
        remote.stop();
        out
    });
    let hung = common::watchdog(reactor);
    reactor.run().unwrap();
    assert!(!hung.get(), "watchdog fired");
    t.join().unwrap()
}

/// A test error that can stand for cancellation, as a `Deferred`'s error must.
#[derive(Debug, PartialEq)]
struct Oops(&'static str);

impl From<Cancelled> for Oops {
    fn from(_: Cancelled) -> Self {
        Oops("cancelled")
    }
}

fn later<T: 'static>(value: T, ms: u64) -> Deferred<T, Oops> {
    let d = Deferred::new();
    let r = d.resolver();
    weft::reactor::current()
        .unwrap()
        .call_later(Duration::from_millis(ms), move || {
            let _ = r.callback(value);
        });
    d
}

#[test]
fn blocking_call_returns_the_value() {
    let reactor = Reactor::new().unwrap();
    let out = with_worker(&reactor, |remote| {
        blocking_call_from_thread(&remote, weft::reactor::is_in_io_thread)
    });
    assert_eq!(out, Ok(true), "the closure ran on the loop thread");
}

#[test]
fn blocking_call_returns_the_value_of_an_already_fired_deferred() {
    let reactor = Reactor::new().unwrap();
    let out = with_worker(&reactor, |remote| {
        blocking_call_from_thread_future(&remote, || Deferred::<_, Cancelled>::succeed("foo"))
    });
    assert_eq!(out, Ok(Ok("foo")));
}

#[test]
fn blocking_call_returns_the_value_of_a_deferred_that_fires_later() {
    let reactor = Reactor::new().unwrap();
    let out = with_worker(&reactor, |remote| {
        blocking_call_from_thread_future(&remote, || later("egg", 5))
    });
    assert_eq!(out, Ok(Ok("egg")));
}

#[test]
fn blocking_call_returns_the_error_of_an_already_failed_deferred() {
    let reactor = Reactor::new().unwrap();
    let out = with_worker(&reactor, |remote| {
        blocking_call_from_thread_future(&remote, || Deferred::<u8, _>::fail("bar"))
    });
    assert_eq!(out, Ok(Err("bar")));
}

#[test]
fn blocking_call_returns_the_error_of_a_deferred_that_fails_later() {
    let reactor = Reactor::new().unwrap();
    let out = with_worker(&reactor, |remote| {
        blocking_call_from_thread_future(&remote, || {
            let d: Deferred<u8, Oops> = Deferred::new();
            let r = d.resolver();
            weft::reactor::current()
                .unwrap()
                .call_later(Duration::from_millis(5), move || {
                    r.errback(Oops("spam")).unwrap()
                });
            d
        })
    });
    assert_eq!(out, Ok(Err(Oops("spam"))));
}

#[test]
fn blocking_call_of_a_future_drives_a_not_send_future_on_the_loop() {
    let reactor = Reactor::new().unwrap();
    let out = with_worker(&reactor, |remote| {
        blocking_call_from_thread_future(&remote, || {
            let local = Rc::new(20);
            async move { *local + 22 }
        })
    });
    assert_eq!(out, Ok(42));
}

#[test]
fn a_panic_in_the_blocking_call_comes_back_as_an_error() {
    let reactor = Reactor::new().unwrap();
    let out = with_worker(&reactor, |remote| {
        blocking_call_from_thread(&remote, || -> u8 { panic!("on the loop") })
    });
    assert_eq!(
        out,
        Err(CallError::Failed(ThreadError::Panicked {
            message: "on the loop".into()
        }))
    );
    assert_eq!(
        reactor.statistics().panics,
        0,
        "the loop itself saw no panic"
    );
}

#[test]
fn blocking_call_on_the_loop_thread_fails_at_once_instead_of_deadlocking() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    assert_eq!(
        blocking_call_from_thread(&remote, || 1),
        Err(CallError::OnLoopThread)
    );
    let r2 = remote.clone();
    let inside = Rc::new(std::cell::RefCell::new(None));
    let i = inside.clone();
    reactor.call_soon(move || {
        *i.borrow_mut() = Some(blocking_call_from_thread_future(&r2, || async { 1 }));
        weft::reactor::current().unwrap().stop();
    });
    reactor.run().unwrap();
    assert_eq!(*inside.borrow(), Some(Err(CallError::OnLoopThread)));
}

#[test]
fn blocking_call_after_the_loop_stopped_fails_at_once() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    reactor.stop();
    reactor.run().unwrap();
    let out = thread::spawn(move || blocking_call_from_thread(&remote, || 1))
        .join()
        .unwrap();
    assert_eq!(out, Err(CallError::Failed(ThreadError::Stopped)));
}

#[test]
fn blocking_call_made_before_the_loop_runs_waits_for_it() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let (queued_tx, queued_rx) = mpsc::channel();
    let t = thread::spawn(move || {
        queued_tx.send(()).unwrap();
        let v = blocking_call_from_thread(&remote, || 9);
        remote.stop();
        v
    });
    queued_rx.recv().unwrap();
    reactor.run().unwrap();
    assert_eq!(t.join().unwrap(), Ok(9));
}

#[test]
fn blocking_call_whose_future_is_dropped_at_shutdown_reports_loop_stopped() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let (started_tx, started_rx) = mpsc::channel();
    let t = thread::spawn(move || {
        blocking_call_from_thread_future(&remote, move || {
            started_tx.send(()).unwrap();
            std::future::pending::<()>()
        })
    });
    let r = reactor.remote();
    reactor.call_when_running(move || {
        thread::spawn(move || {
            started_rx.recv().unwrap();
            r.stop();
        });
    });
    reactor.run().unwrap();
    assert_eq!(
        t.join().unwrap(),
        Err(CallError::Failed(ThreadError::Stopped))
    );
}

#[test]
fn blocking_call_timeout_gives_up_without_cancelling_the_call() {
    let reactor = Reactor::new().unwrap(); // not running yet
    let remote = reactor.remote();
    let (tx, rx) = mpsc::channel();
    let out = thread::spawn(move || {
        blocking_call_from_thread_timeout(&remote, Duration::from_millis(5), move || {
            tx.send("ran anyway").unwrap();
        })
    })
    .join()
    .unwrap();
    assert_eq!(out, Err(CallError::TimedOut));
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(rx.try_recv(), Ok("ran anyway"));
    let remote = reactor.remote();
    let out = thread::spawn(move || {
        blocking_call_from_thread_future_timeout(&remote, Duration::from_millis(5), || {
            std::future::pending::<()>()
        })
    });
    // Keep the loop turning until the waiter gives up.
    while !out.is_finished() {
        reactor.iterate(Some(Duration::from_millis(1)));
    }
    assert_eq!(out.join().unwrap(), Err(CallError::TimedOut));
}

#[test]
fn run_coroutine_threadsafe_returns_the_result_to_a_worker() {
    let reactor = Reactor::new().unwrap();
    let out = with_worker(&reactor, |remote| {
        remote.run_coroutine_threadsafe(|| async { 1 + 2 }).wait()
    });
    assert_eq!(out, Ok(3));
}

#[test]
fn run_coroutine_threadsafe_reports_a_panicking_future() {
    let reactor = Reactor::new().unwrap();
    let out = with_worker(&reactor, |remote| {
        remote
            .run_coroutine_threadsafe(|| async { panic!("Fail!") })
            .wait()
    });
    assert_eq!(
        out,
        Err::<(), _>(CallError::Failed(ThreadError::Panicked {
            message: "Fail!".into()
        }))
    );
}

#[test]
fn run_coroutine_threadsafe_wait_timeout_does_not_cancel_but_cancel_does() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let fut = remote.run_coroutine_threadsafe(std::future::pending::<u8>);
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(reactor.statistics().tasks_alive, 1);
    let fut = thread::spawn(move || {
        assert_eq!(fut.wait_timeout(Duration::ZERO), Err(CallError::TimedOut));
        fut
    })
    .join()
    .unwrap();
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(
        reactor.statistics().tasks_alive,
        1,
        "a timed-out wait cancels nothing"
    );
    assert!(fut.cancel());
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(
        reactor.statistics().tasks_alive,
        0,
        "the task on the loop was cancelled"
    );
    assert!(!fut.cancel(), "nothing left to cancel");
    let out = thread::spawn(move || fut.wait()).join().unwrap();
    assert_eq!(out, Err(CallError::Failed(ThreadError::Cancelled)));
}

#[test]
fn run_coroutine_threadsafe_of_a_future_that_cancels_itself_is_cancelled() {
    let reactor = Reactor::new().unwrap();
    let out = with_worker(&reactor, |remote| {
        remote
            .run_coroutine_threadsafe(|| async {
                let d: Deferred<u8, Cancelled> = Deferred::new();
                d.cancel();
                d.await
            })
            .wait()
    });
    assert_eq!(out, Ok(Err(Cancelled)));
}

#[test]
fn cross_thread_future_can_be_awaited_by_a_tokio_task() {
    let reactor = Reactor::new().unwrap();
    let out = with_worker(&reactor, |remote| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move {
            let fut = remote.run_coroutine_threadsafe(|| async { "from weft" });
            tokio::spawn(fut).await.unwrap()
        })
    });
    assert_eq!(out, Ok("from weft"));
}

#[test]
fn run_coroutine_threadsafe_after_stop_fails_with_loop_stopped() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    reactor.stop();
    reactor.run().unwrap();
    let fut = remote.run_coroutine_threadsafe(|| async { 1 });
    assert!(fut.is_done());
    assert_eq!(
        thread::spawn(move || fut.wait()).join().unwrap(),
        Err(CallError::Failed(ThreadError::Stopped))
    );
}

/// One job error across the bridge: the `ThreadError` a loop-side await
/// gives is the one a thread's wait gives inside `CallError::Failed`, and
/// `?` carries either way without `map_err`.
#[test]
fn the_job_error_crosses_the_bridge_with_question_mark_and_no_map_err() {
    fn relay(r: Result<u8, ThreadError>) -> Result<u8, CallError> {
        Ok(r?)
    }
    fn relay_cancelled(r: Result<u8, Cancelled>) -> Result<u8, CallError> {
        Ok(r?)
    }
    assert_eq!(
        relay(Err(ThreadError::Stopped)),
        Err(CallError::Failed(ThreadError::Stopped))
    );
    assert!(relay_cancelled(Err(Cancelled)).unwrap_err().is_cancelled());
    let reactor = Reactor::new().unwrap();
    let out = with_worker(&reactor, |remote| -> Result<u8, CallError> {
        // A failed job's error, awaited on the loop, reaches the thread as
        // the same value.
        let inner = remote.blocking_await(|| async {
            let h = weft::reactor::current().unwrap();
            h.defer_to_thread(|| -> u8 { panic!("deep") }).await
        })?;
        Ok(inner?)
    });
    let err = out.unwrap_err();
    assert!(err.is_panic());
    assert_eq!(err.to_string(), "call panicked: deep");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(source, "job panicked: deep");
}

/// Callers spin on their reply before they park (`bridge/from_thread.rs`):
/// with more calling threads than cores, every call of every thread still
/// gets its own value, whether its reply was caught spinning, found already
/// there or waited for parked, and timed calls keep their timeouts.
#[test]
fn sequences_of_blocking_calls_from_more_threads_than_cores_all_get_their_values() {
    let reactor = Reactor::new().unwrap();
    let sums = with_worker(&reactor, |remote| {
        let callers: Vec<_> = (0..8u64)
            .map(|t| {
                let remote = remote.clone();
                thread::spawn(move || {
                    let mut sum = 0;
                    for i in 0..200u64 {
                        let v = if i % 2 == 0 {
                            blocking_call_from_thread(&remote, move || t * 1000 + i)
                        } else {
                            blocking_call_from_thread_timeout(
                                &remote,
                                Duration::from_secs(60),
                                move || t * 1000 + i,
                            )
                        };
                        assert_eq!(v, Ok(t * 1000 + i));
                        sum += v.unwrap();
                    }
                    sum
                })
            })
            .collect();
        callers
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    let expected: Vec<u64> = (0..8u64)
        .map(|t| (0..200u64).map(|i| t * 1000 + i).sum())
        .collect();
    assert_eq!(sums, expected);
}

/// A timed call's spin is bounded by its timeout (a zero timeout spins not
/// at all): a loop that never runs still gives `TimedOut`.
#[test]
fn a_timed_blocking_call_into_a_loop_that_never_runs_times_out() {
    let reactor = Reactor::new().unwrap(); // never run
    let remote = reactor.remote();
    let r = thread::spawn(move || {
        let a = blocking_call_from_thread_timeout(&remote, Duration::ZERO, || 1);
        let b = blocking_call_from_thread_timeout(&remote, Duration::from_micros(20), || 1);
        (a, b)
    })
    .join()
    .unwrap();
    assert_eq!(r, (Err(CallError::TimedOut), Err(CallError::TimedOut)));
}
