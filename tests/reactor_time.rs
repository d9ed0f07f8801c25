//! Timers, `DelayedCall` and the manual clock.
//!
//! Ported from Twisted's `test/test_internet.py` (TimeTests, DelayedTests),
//! `internet/test/test_base.py` (DelayedCall), `test/test_task.py`
//! (ClockTests) and `internet/test/test_time.py` (spec/twisted-threads.md §3
//! items 77–93). Twisted's `Clock.advance` runs due calls itself; here the
//! clock moves and the next reactor turn runs them, so each `advance` below
//! is followed by one `iterate`.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use weft::testing::ManualClock;
use weft::{Clock, DelayedCall, DelayedCallError, Reactor};

const S: fn(u64) -> Duration = Duration::from_secs;

fn manual() -> (ManualClock, Reactor) {
    let clock = ManualClock::new();
    let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
    (clock, reactor)
}

fn advance(clock: &ManualClock, reactor: &Reactor, by: Duration) {
    clock.advance(by);
    reactor.iterate(Some(Duration::ZERO));
}

type Log = Rc<RefCell<Vec<u32>>>;

fn recorder() -> (Log, impl Fn(u32) -> Box<dyn FnOnce()>) {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    (log, move |v| {
        let l = l.clone();
        Box::new(move || l.borrow_mut().push(v)) as Box<dyn FnOnce()>
    })
}

#[test]
fn call_later_uses_the_reactor_clock() {
    let (clock, reactor) = manual();
    clock.advance(S(100));
    let call = reactor.call_later(S(5), || ());
    assert_eq!(call.time(), S(105));
    assert_eq!(reactor.seconds(), S(100));
}

#[test]
fn a_cancelled_call_never_runs() {
    let (clock, reactor) = manual();
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let call = reactor.call_later(S(1), move || r.set(true));
    call.cancel().unwrap();
    advance(&clock, &reactor, S(2));
    assert!(!ran.get());
}

#[test]
fn a_second_cancel_is_already_cancelled() {
    let (_clock, reactor) = manual();
    let call = reactor.call_later(S(1), || ());
    call.cancel().unwrap();
    assert_eq!(call.cancel(), Err(DelayedCallError::AlreadyCancelled));
    assert_eq!(call.reset(S(1)), Err(DelayedCallError::AlreadyCancelled));
    assert_eq!(call.delay(S(1)), Err(DelayedCallError::AlreadyCancelled));
}

#[test]
fn cancel_after_the_call_ran_is_already_called() {
    let (clock, reactor) = manual();
    let call = reactor.call_later(S(1), || ());
    advance(&clock, &reactor, S(1));
    assert_eq!(call.cancel(), Err(DelayedCallError::AlreadyCalled));
    assert_eq!(call.reset(S(1)), Err(DelayedCallError::AlreadyCalled));
}

#[test]
fn cancel_from_inside_the_call_is_already_called() {
    let (clock, reactor) = manual();
    let slot: Rc<RefCell<Option<DelayedCall>>> = Rc::new(RefCell::new(None));
    let seen = Rc::new(RefCell::new(None));
    let (s, seen2) = (slot.clone(), seen.clone());
    let call = reactor.call_later(S(1), move || {
        *seen2.borrow_mut() = Some(s.borrow().as_ref().unwrap().cancel());
    });
    *slot.borrow_mut() = Some(call);
    advance(&clock, &reactor, S(1));
    assert_eq!(*seen.borrow(), Some(Err(DelayedCallError::AlreadyCalled)));
}

#[test]
fn a_call_is_inactive_after_it_ran() {
    let (clock, reactor) = manual();
    let call = reactor.call_later(S(1), || ());
    assert!(call.is_active());
    advance(&clock, &reactor, S(1));
    assert!(!call.is_active());
}

#[test]
fn reset_counts_from_the_clock_now() {
    let (clock, reactor) = manual();
    clock.advance(S(10));
    let call = reactor.call_later(S(1), || ());
    call.reset(S(3)).unwrap();
    assert_eq!(call.time(), S(13));
}

#[test]
fn delayed_calls_lists_every_scheduled_uncancelled_call() {
    let (_clock, reactor) = manual();
    let a = reactor.call_later(S(1), || ());
    let b = reactor.call_later(S(2), || ());
    let c = reactor.call_later(S(3), || ());
    b.cancel().unwrap();
    let calls = reactor.delayed_calls();
    assert_eq!(calls.len(), 2);
    assert!(calls[0].same_call(&a));
    assert!(calls[1].same_call(&c));
}

#[test]
fn delayed_call_debug_shows_time_and_state() {
    let (_clock, reactor) = manual();
    let call = reactor.call_later(Duration::from_millis(10_500), || ());
    let text = format!("{call:?}");
    assert!(
        text.starts_with("<DelayedCall [10.5s] called=0 cancelled=0 at "),
        "{text}"
    );
    assert!(text.contains("reactor_time.rs"), "{text}");
}

#[test]
fn a_call_centuries_away_stays_active_and_does_not_stop_the_loop() {
    let reactor = Reactor::new().unwrap();
    let far = reactor.call_later(Duration::MAX, || unreachable!());
    let soon_ran = Rc::new(Cell::new(false));
    let s = soon_ran.clone();
    reactor.call_later(Duration::from_millis(1), move || {
        s.set(true);
        weft::reactor::current().unwrap().stop();
    });
    let hung = common::watchdog(&reactor);
    reactor.run().unwrap();
    assert!(!hung.get());
    assert!(soon_ran.get());
    assert!(far.is_active());
}

#[test]
fn manual_clock_starts_at_zero() {
    assert_eq!(ManualClock::new().now(), Duration::ZERO);
}

#[test]
fn call_later_on_the_manual_clock_is_due_at_its_delay_and_active() {
    let (_clock, reactor) = manual();
    let call = reactor.call_later(S(1), || ());
    assert_eq!(call.time(), S(1));
    assert!(call.is_active());
}

#[test]
fn advancing_part_way_does_not_fire_and_the_rest_does() {
    let (clock, reactor) = manual();
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let call = reactor.call_later(S(2), move || r.set(true));
    advance(&clock, &reactor, S(1));
    assert!(!ran.get());
    assert!(call.is_active());
    advance(&clock, &reactor, S(1));
    assert!(ran.get());
    assert!(!call.is_active());
}

#[test]
fn delay_moves_a_call_later() {
    let (_clock, reactor) = manual();
    let call = reactor.call_later(S(1), || ());
    call.delay(S(1)).unwrap();
    assert_eq!(call.time(), S(2));
}

#[test]
fn reset_moves_a_call_earlier_or_later() {
    let (clock, reactor) = manual();
    let later = reactor.call_later(S(1), || ());
    clock.advance(S(1));
    later.reset(S(3)).unwrap();
    assert_eq!(later.time(), S(4));

    let (_clock2, reactor2) = manual();
    let earlier = reactor2.call_later(S(4), || ());
    earlier.reset(S(3)).unwrap();
    assert_eq!(earlier.time(), S(3));
}

#[test]
fn calls_fire_in_time_order() {
    let (clock, reactor) = manual();
    let (log, rec) = recorder();
    reactor.call_later(S(2), rec(2));
    reactor.call_later(S(1), rec(1));
    advance(&clock, &reactor, S(3));
    assert_eq!(*log.borrow(), vec![1, 2]);
}

#[test]
fn order_is_kept_across_reset() {
    let (clock, reactor) = manual();
    let (log, rec) = recorder();
    let first = reactor.call_later(S(2), rec(2));
    reactor.call_later(S(1), rec(1));
    first.reset(S(3)).unwrap();
    reactor.call_later(S(2), rec(22));
    advance(&clock, &reactor, S(3));
    assert_eq!(*log.borrow(), vec![1, 22, 2]);
}

#[test]
fn order_is_kept_across_a_reset_issued_from_inside_another_call() {
    let (clock, reactor) = manual();
    let (log, rec) = recorder();
    let target = reactor.call_later(S(3), rec(3));
    let t = target.clone();
    reactor.call_later(S(1), move || t.reset(S(1)).unwrap());
    reactor.call_later(S(2), rec(2));
    advance(&clock, &reactor, S(1));
    assert_eq!(target.time(), S(2));
    advance(&clock, &reactor, S(1));
    // Equal deadlines run in scheduling order: target was scheduled first.
    assert_eq!(*log.borrow(), vec![3, 2]);
}

#[test]
fn equal_deadlines_fire_in_scheduling_order() {
    let (clock, reactor) = manual();
    let (log, rec) = recorder();
    for i in 0..20 {
        reactor.call_later(S(1), rec(i));
    }
    advance(&clock, &reactor, S(1));
    assert_eq!(*log.borrow(), (0..20).collect::<Vec<_>>());
}

#[test]
fn call_later_zero_from_a_timer_runs_next_turn_not_this_one() {
    let (_clock, reactor) = manual();
    let (log, rec) = recorder();
    let rec = Rc::new(rec);
    let r2 = rec.clone();
    reactor.call_soon(move || {
        weft::reactor::current().unwrap().call_soon(r2(2));
        r2(1)();
    });
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(*log.borrow(), vec![1]);
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(*log.borrow(), vec![1, 2]);
}

#[test]
fn cancelled_timers_do_not_leak() {
    let (_clock, reactor) = manual();
    for _ in 0..10_000 {
        reactor.call_later(S(60), || ()).cancel().unwrap();
    }
    assert!(reactor.delayed_calls().is_empty());
    let stats = reactor.statistics();
    assert_eq!(stats.timers_live, 0);
    // Compaction (past 50 stale entries that are half the heap) keeps the
    // heap bounded, not 10 000 entries long.
    assert!(stats.timer_heap_entries <= 102, "{stats:?}");
}

#[test]
fn advancing_the_manual_clock_from_another_thread_wakes_a_running_loop() {
    let (clock, reactor) = manual();
    reactor.call_later(S(5), || weft::reactor::current().unwrap().stop());
    let c = clock.clone();
    reactor.call_when_running(move || {
        std::thread::spawn(move || c.advance(S(5)));
    });
    reactor.run().unwrap();
    assert_eq!(clock.now(), S(5));
}

#[test]
fn sleep_fires_after_its_delay_and_cancelling_it_cancels_the_timer() {
    let (clock, reactor) = manual();
    let d = reactor.sleep(S(2));
    advance(&clock, &reactor, S(1));
    assert!(!d.is_resolved());
    advance(&clock, &reactor, S(1));
    assert!(d.is_resolved());
    let d2 = reactor.sleep(S(5));
    assert_eq!(reactor.delayed_calls().len(), 1);
    d2.cancel();
    assert!(reactor.delayed_calls().is_empty());
    assert_eq!(
        reactor.run_until_complete(d2).unwrap(),
        Err(weft::Cancelled)
    );
}

/// A manual clock that moves to `to` (waking the loop) right after the
/// first reading taken once armed: another thread moving time just as a
/// turn begins.
struct MovesAfterOneRead {
    inner: ManualClock,
    to: Duration,
    armed: std::sync::atomic::AtomicBool,
}

impl Clock for MovesAfterOneRead {
    fn now(&self) -> Duration {
        use std::sync::atomic::Ordering;
        let t = self.inner.now();
        if self.armed.swap(false, Ordering::Relaxed) {
            self.inner.advance(self.to.saturating_sub(t));
        }
        t
    }

    fn sleep_until(&self, _deadline: Duration) -> Option<Duration> {
        None
    }

    fn register_waker(&self, wake: std::sync::Arc<dyn Fn() + Send + Sync>) {
        self.inner.register_waker(wake);
    }
}

#[test]
fn a_clock_moved_by_its_waker_as_a_turn_begins_is_read_again_for_the_timers() {
    // The turn's first reading is stale by the time it looks at the timers:
    // the move's wake may have been taken by the turn's inbox drain, so a
    // turn that reused that reading would leave the due timer for a wake
    // that never comes. The reactor reuses readings only for the system
    // clock, which no waker moves.
    let clock = std::sync::Arc::new(MovesAfterOneRead {
        inner: ManualClock::new(),
        to: S(1),
        armed: std::sync::atomic::AtomicBool::new(false),
    });
    struct Shared(std::sync::Arc<MovesAfterOneRead>);
    impl Clock for Shared {
        fn now(&self) -> Duration {
            self.0.now()
        }
        fn sleep_until(&self, deadline: Duration) -> Option<Duration> {
            self.0.sleep_until(deadline)
        }
        fn register_waker(&self, wake: std::sync::Arc<dyn Fn() + Send + Sync>) {
            self.0.register_waker(wake);
        }
    }
    let reactor = Reactor::builder()
        .clock(Shared(clock.clone()))
        .build()
        .unwrap();
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    reactor.call_later(S(1), move || f.set(true));
    clock
        .armed
        .store(true, std::sync::atomic::Ordering::Relaxed);
    reactor.iterate(Some(S(5)));
    assert!(fired.get(), "the timer due after the move ran in that turn");
}
