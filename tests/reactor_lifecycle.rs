//! Running, stopping, system event triggers, local tasks, `Deferred` and
//! panic handling.
//!
//! Twisted origins: `internet/test/test_core.py` (system event triggers,
//! callWhenRunning), `test/test_threadable.py` (isInIOThread, §3 item 76),
//! `test/test_defer.py` (resolve twice, cancel).

mod common;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use weft::reactor::{PanicPolicy, Phase, SystemEvent};
use weft::{Cancelled, Deferred, Reactor, RunError, ThreadError};

type Log = Rc<RefCell<Vec<&'static str>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn push(log: &Log, what: &'static str) -> impl FnOnce() + 'static {
    let log = log.clone();
    move || log.borrow_mut().push(what)
}

#[test]
fn call_when_running_runs_once_the_loop_starts() {
    let reactor = Reactor::new().unwrap();
    let l = log();
    reactor.call_when_running(push(&l, "running"));
    assert!(l.borrow().is_empty());
    reactor.call_when_running(|| weft::reactor::current().unwrap().stop());
    reactor.run().unwrap();
    assert_eq!(*l.borrow(), vec!["running"]);
}

#[test]
fn call_when_running_on_a_running_loop_runs_at_once() {
    let reactor = Reactor::new().unwrap();
    let l = log();
    let l2 = l.clone();
    reactor.call_when_running(move || {
        let h = weft::reactor::current().unwrap();
        h.call_when_running(push(&l2, "inner"));
        l2.borrow_mut().push("after inner");
        h.stop();
    });
    reactor.run().unwrap();
    assert_eq!(*l.borrow(), vec!["inner", "after inner"]);
}

#[test]
fn shutdown_triggers_run_before_then_during_then_after() {
    let reactor = Reactor::new().unwrap();
    let l = log();
    reactor.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, push(&l, "after"));
    reactor.add_system_event_trigger(Phase::During, SystemEvent::Shutdown, push(&l, "during"));
    reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, push(&l, "before"));
    reactor.stop();
    reactor.run().unwrap();
    assert_eq!(*l.borrow(), vec!["before", "during", "after"]);
}

#[test]
fn a_removed_trigger_does_not_run() {
    let reactor = Reactor::new().unwrap();
    let l = log();
    let id = reactor.add_system_event_trigger(Phase::During, SystemEvent::Shutdown, push(&l, "x"));
    assert!(reactor.remove_system_event_trigger(id));
    reactor.stop();
    reactor.run().unwrap();
    assert!(l.borrow().is_empty());
}

#[test]
fn event_names_parse() {
    assert_eq!("startup".parse::<SystemEvent>(), Ok(SystemEvent::Startup));
    assert_eq!("shutdown".parse::<SystemEvent>(), Ok(SystemEvent::Shutdown));
    assert!("explode".parse::<SystemEvent>().is_err());
}

#[test]
fn shutdown_waits_for_a_deferred_returned_by_a_before_trigger() {
    let reactor = Reactor::new().unwrap();
    let l = log();
    let l2 = l.clone();
    reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
        let d: Deferred<(), Cancelled> = Deferred::new();
        let r = d.resolver();
        let l3 = l2.clone();
        // The loop keeps turning (timers fire) while shutdown waits.
        weft::reactor::current()
            .unwrap()
            .call_later(Duration::from_millis(1), move || {
                l3.borrow_mut().push("deferred fired");
                r.callback(()).unwrap();
            });
        d
    });
    reactor.add_system_event_trigger(Phase::During, SystemEvent::Shutdown, push(&l, "during"));
    reactor.stop();
    reactor.run().unwrap();
    assert_eq!(*l.borrow(), vec!["deferred fired", "during"]);
}

#[test]
fn shutdown_waits_for_a_future_returned_by_a_before_trigger() {
    let reactor = Reactor::new().unwrap();
    let done = Rc::new(Cell::new(false));
    let d2 = done.clone();
    reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
        Box::pin(async move {
            let d: Deferred<(), Cancelled> = Deferred::new();
            let r = d.resolver();
            weft::reactor::current()
                .unwrap()
                .call_soon(move || r.callback(()).unwrap());
            d.await.unwrap();
            d2.set(true);
        })
    });
    reactor.stop();
    reactor.run().unwrap();
    assert!(done.get());
}

#[test]
fn dropping_a_never_run_reactor_fires_its_shutdown_triggers() {
    let reactor = Reactor::new().unwrap();
    let l = log();
    reactor.add_system_event_trigger(Phase::During, SystemEvent::Shutdown, push(&l, "during"));
    drop(reactor);
    assert_eq!(*l.borrow(), vec!["during"]);
}

#[test]
fn a_reactor_cannot_run_again_after_it_stopped() {
    let reactor = Reactor::new().unwrap();
    reactor.stop();
    reactor.run().unwrap();
    assert_eq!(reactor.run(), Err(RunError::Stopped));
    assert_eq!(reactor.run_until_complete(async {}), Err(RunError::Stopped));
}

#[test]
fn run_from_inside_the_loop_is_already_running() {
    let reactor = Rc::new(Reactor::new().unwrap());
    let seen = Rc::new(RefCell::new(None));
    let (r, s) = (reactor.clone(), seen.clone());
    reactor.call_soon(move || {
        *s.borrow_mut() = Some(r.run());
        r.stop();
    });
    reactor.run().unwrap();
    assert_eq!(*seen.borrow(), Some(Err(RunError::AlreadyRunning)));
}

#[test]
fn is_in_io_thread_only_on_the_loop_thread() {
    let reactor = Reactor::new().unwrap();
    let inside = Rc::new(Cell::new(false));
    let i = inside.clone();
    reactor.call_when_running(move || {
        i.set(weft::reactor::is_in_io_thread());
        weft::reactor::current().unwrap().stop();
    });
    reactor.run().unwrap();
    assert!(inside.get());
    assert!(
        !std::thread::spawn(weft::reactor::is_in_io_thread)
            .join()
            .unwrap()
    );
    assert!(
        std::thread::spawn(|| weft::reactor::current().is_none())
            .join()
            .unwrap()
    );
}

#[test]
fn run_until_complete_returns_the_output_and_the_loop_can_run_again() {
    let reactor = Reactor::new().unwrap();
    assert_eq!(reactor.run_until_complete(async { 1 }).unwrap(), 1);
    assert!(reactor.has_started());
    assert_eq!(reactor.run_until_complete(async { 2 }).unwrap(), 2);
    reactor.stop();
    reactor.run().unwrap();
}

#[test]
fn run_until_complete_reports_a_stop_before_completion() {
    let reactor = Reactor::new().unwrap();
    reactor.call_soon(|| weft::reactor::current().unwrap().stop());
    let never: Deferred<(), Cancelled> = Deferred::new();
    assert_eq!(
        reactor.run_until_complete(never),
        Err(RunError::Failed(ThreadError::Stopped))
    );
    assert!(reactor.is_stopped());
}

#[test]
fn run_until_complete_reports_a_panicking_future() {
    let reactor = Reactor::new().unwrap();
    let r = reactor.run_until_complete(async { panic!("kaboom") });
    assert_eq!(
        r,
        Err::<(), _>(RunError::Failed(ThreadError::Panicked {
            message: "kaboom".into()
        }))
    );
}

#[test]
fn run_error_wraps_the_job_error_with_its_source_and_conversions() {
    use std::error::Error;

    let reactor = Reactor::new().unwrap();
    let err = reactor
        .run_until_complete(async { panic!("kaboom") })
        .unwrap_err();
    assert!(err.is_panic());
    assert_eq!(err.to_string(), "future panicked: kaboom");
    let source = err.source().expect("the job error is the source");
    assert_eq!(source.to_string(), "job panicked: kaboom");
    assert_eq!(
        RunError::from(ThreadError::Stopped),
        RunError::Failed(ThreadError::Stopped)
    );
    assert_eq!(
        RunError::from(Cancelled),
        RunError::Failed(ThreadError::Cancelled)
    );
    assert!(RunError::Stopped.source().is_none());
    assert_eq!(
        RunError::Stopped.try_into_panic().unwrap_err(),
        RunError::Stopped
    );
    // A job's error crosses `run_until_complete` with `?`, no `map_err`.
    fn job(reactor: &Reactor) -> Result<u8, RunError> {
        let d = reactor.defer_to_thread(|| -> u8 { panic!("in a job") });
        Ok(reactor.run_until_complete(d)??)
    }
    assert!(job(&reactor).unwrap_err().is_panic());
}

/// A oneshot completed from another thread, to test cross-thread wakes.
#[derive(Default)]
struct Signal {
    state: Mutex<(bool, Option<Waker>)>,
}

struct WaitSignal(Arc<Signal>);

impl Future for WaitSignal {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.0.state.lock().unwrap();
        if s.0 {
            Poll::Ready(())
        } else {
            s.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

impl Signal {
    fn fire(&self) {
        let waker = {
            let mut s = self.state.lock().unwrap();
            s.0 = true;
            s.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

#[test]
fn a_local_task_woken_from_another_thread_wakes_the_sleeping_loop() {
    let reactor = Reactor::new().unwrap();
    let signal = Arc::new(Signal::default());
    let not_send = Rc::new(3);
    let s2 = signal.clone();
    let task = reactor.spawn_local(async move {
        WaitSignal(s2).await;
        *not_send * 2
    });
    reactor.call_when_running(move || {
        std::thread::spawn(move || signal.fire());
    });
    let hung = common::watchdog(&reactor);
    let out = reactor.run_until_complete(task).unwrap();
    assert!(!hung.get());
    assert_eq!(out, Ok(6));
}

#[test]
fn local_tasks_can_spawn_tasks_and_await_deferreds() {
    let reactor = Reactor::new().unwrap();
    let out = reactor
        .run_until_complete(async {
            let h = weft::reactor::current().unwrap();
            let inner = h.spawn_local(async { 20 });
            let d: Deferred<u32, Cancelled> = Deferred::new();
            let r = d.resolver();
            h.call_later(Duration::from_millis(1), move || r.callback(22).unwrap());
            inner.await.unwrap() + d.await.unwrap()
        })
        .unwrap();
    assert_eq!(out, 42);
}

#[test]
fn cancelling_a_local_task_drops_its_future() {
    struct Guard(Rc<Cell<bool>>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let reactor = Reactor::new().unwrap();
    let dropped = Rc::new(Cell::new(false));
    let g = Guard(dropped.clone());
    let task = reactor.spawn_local(async move {
        let _g = g;
        std::future::pending::<()>().await;
    });
    reactor.iterate(Some(Duration::ZERO));
    assert!(!dropped.get());
    task.cancel();
    assert!(dropped.get());
    assert_eq!(reactor.statistics().tasks_alive, 0);
    assert_eq!(
        reactor.run_until_complete(task).unwrap(),
        Err(ThreadError::Cancelled)
    );
}

#[test]
fn a_deferred_resolved_twice_hands_the_second_result_back() {
    let d: Deferred<u8, Cancelled> = Deferred::new();
    d.callback(1).unwrap();
    let err = d.callback(2).unwrap_err();
    assert_eq!(err.0, Ok(2));
    assert!(d.errback(Cancelled).is_err());
}

#[test]
fn a_deferred_callback_runs_when_it_resolves_and_cancel_after_is_a_no_op() {
    let seen = Rc::new(RefCell::new(None));
    let s = seen.clone();
    let d: Deferred<u8, Cancelled> = Deferred::new();
    let r = d.resolver();
    d.add_both(move |v| *s.borrow_mut() = Some(v));
    assert!(seen.borrow().is_none());
    r.callback(4).unwrap();
    assert_eq!(*seen.borrow(), Some(Ok(4)));
    r.cancel();
}

#[test]
fn cancelling_a_deferred_runs_its_canceller_then_resolves_cancelled() {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let d: Deferred<u8> = Deferred::with_canceller(move || r.set(true));
    let seen = Rc::new(RefCell::new(None));
    let s = seen.clone();
    let res = d.resolver();
    d.add_both(move |v| *s.borrow_mut() = Some(v));
    res.cancel();
    assert!(ran.get());
    assert_eq!(*seen.borrow(), Some(Err(ThreadError::Cancelled)));
}

#[test]
fn a_panic_in_a_callback_is_logged_and_the_loop_goes_on() {
    common::init_tracing();
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let l = log();
    reactor.call_soon(|| panic!("timer boom"));
    remote
        .call_from_thread(|| panic!("thread call boom"))
        .unwrap();
    let task = reactor.spawn_local(async { panic!("task boom") });
    reactor.call_later(Duration::from_millis(1), push(&l, "still running"));
    reactor.call_later(Duration::from_millis(2), || {
        weft::reactor::current().unwrap().stop()
    });
    reactor.run().unwrap();
    assert_eq!(*l.borrow(), vec!["still running"]);
    assert_eq!(reactor.statistics().panics, 3);
    drop(task);
}

#[test]
fn a_panicking_local_task_fails_its_deferred() {
    let reactor = Reactor::new().unwrap();
    let task = reactor.spawn_local(async { panic!("inner") });
    let outer = reactor.run_until_complete(task).unwrap();
    assert_eq!(
        outer,
        Err::<(), _>(ThreadError::Panicked {
            message: "inner".into()
        })
    );
}

#[test]
fn the_propagate_policy_re_raises_panics_for_tests() {
    let reactor = Reactor::builder()
        .panic_policy(PanicPolicy::Propagate)
        .build()
        .unwrap();
    reactor.call_soon(|| panic!("crash"));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        reactor.iterate(Some(Duration::ZERO));
    }));
    let payload = caught.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"crash"));
}
