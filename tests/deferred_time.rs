//! `Deferred::add_timeout` and `LoopingCall` (Twisted's `addTimeout` and
//! `task.LoopingCall`), driven by the manual clock.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use weft::testing::ManualClock;
use weft::{Cancelled, Deferred, LoopingCall, Reactor, ThreadError, threads::memory_worker};

fn reactor_with_clock() -> (Reactor, ManualClock) {
    let clock = ManualClock::new();
    let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
    (reactor, clock)
}

fn turn(reactor: &Reactor) {
    reactor.iterate(Some(Duration::ZERO));
}

#[test]
fn a_timeout_cancels_the_work_and_resolves_timed_out() {
    let (reactor, clock) = reactor_with_clock();
    let (worker, perform) = memory_worker();
    let ran = Rc::new(Cell::new(false));
    let d = reactor
        .defer_to_worker(&worker, || 1)
        .add_timeout(Duration::from_secs(2), &reactor.handle());
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    let r = ran.clone();
    d.add_both(move |res| {
        r.set(true);
        s.set(Some(res));
    });
    clock.advance(Duration::from_secs(1));
    turn(&reactor);
    assert!(!ran.get(), "fired before the deadline");
    clock.advance(Duration::from_secs(1));
    turn(&reactor);
    assert_eq!(seen.take(), Some(Err(ThreadError::TimedOut)));
    assert!(perform.perform()); // the job was withdrawn: nothing runs
}

#[test]
fn a_result_before_the_deadline_wins_and_disarms_the_timer() {
    let (reactor, clock) = reactor_with_clock();
    let d: Deferred<u8> = Deferred::new();
    let r = d.resolver();
    let out = d.add_timeout(Duration::from_secs(2), &reactor.handle());
    r.callback(4).unwrap();
    assert!(
        reactor.handle().delayed_calls().is_empty(),
        "the timer outlived the result"
    );
    clock.advance(Duration::from_secs(3));
    assert_eq!(reactor.run_until_complete(out).unwrap(), Ok(4));
}

#[test]
fn a_looping_call_keeps_to_its_grid_and_skips_missed_intervals() {
    let (reactor, clock) = reactor_with_clock();
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    let lc = LoopingCall::new(&reactor.handle(), move || t.set(t.get() + 1));
    let done = lc.start(Duration::from_secs(1), false).unwrap();
    assert_eq!(ticks.get(), 0);
    clock.advance(Duration::from_millis(1500));
    turn(&reactor);
    assert_eq!(ticks.get(), 1);
    // Next is due at 2 s, not 2.5 s.
    clock.advance(Duration::from_millis(500));
    turn(&reactor);
    assert_eq!(ticks.get(), 2);
    // A blocked loop misses 3 s..5 s: one call, not three.
    clock.advance(Duration::from_millis(3500));
    turn(&reactor);
    assert_eq!(ticks.get(), 3);
    lc.stop();
    assert!(!lc.is_running());
    assert_eq!(reactor.run_until_complete(done).unwrap(), Ok(()));
}

#[test]
fn a_panicking_looping_call_stops_and_reports_it() {
    let (reactor, _clock) = reactor_with_clock();
    let lc = LoopingCall::new(&reactor.handle(), || panic!("tick"));
    let done = lc.start(Duration::from_secs(1), true).unwrap();
    assert!(!lc.is_running());
    assert!(matches!(
        reactor.run_until_complete(done).unwrap(),
        Err(ThreadError::Panicked { .. })
    ));
}

#[test]
fn dropping_every_looping_call_handle_stops_it_cancelled() {
    let (reactor, clock) = reactor_with_clock();
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    let lc = LoopingCall::new(&reactor.handle(), move || t.set(t.get() + 1));
    let done = lc.start(Duration::from_secs(1), false).unwrap();
    drop(lc);
    clock.advance(Duration::from_secs(2));
    turn(&reactor);
    assert_eq!(ticks.get(), 0);
    assert_eq!(
        reactor.run_until_complete(done).unwrap(),
        Err(ThreadError::Cancelled)
    );
    let _ = Cancelled;
}
