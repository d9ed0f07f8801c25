//! The turn's clock readings, its lap and its turn-end hooks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{Clock, Reactor, SystemClock};

/// The system clock, counting its readings.
#[derive(Default)]
struct Counting {
    clock: SystemClock,
    reads: Arc<AtomicU32>,
}

impl Clock for Counting {
    fn now(&self) -> Duration {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.clock.now()
    }
}

fn counted() -> (Reactor, Arc<AtomicU32>) {
    let clock = Counting::default();
    let reads = clock.reads.clone();
    let reactor = Reactor::builder().system_like_clock(clock).build().unwrap();
    (reactor, reads)
}

fn reads_in(reads: &AtomicU32, f: impl FnOnce()) -> u32 {
    let before = reads.load(Ordering::Relaxed);
    f();
    reads.load(Ordering::Relaxed) - before
}

#[test]
fn a_lap_counts_its_work_and_leaves_out_its_pauses_saturating() {
    use super::Lap;
    let ns = Duration::from_nanos;
    let mut lap = Lap::start(ns(100));
    lap.pause(ns(130)); // 30 of work, then idle
    lap.resume(ns(1_000));
    assert_eq!(lap.since(ns(1_050)), 50);
    assert_eq!(lap.finish(ns(1_012)), ns(42));
    // A reading past u64::MAX nanoseconds (a manual clock moved far)
    // saturates rather than wrapping or panicking.
    let mut far = Lap::start(Duration::ZERO);
    far.pause(Duration::MAX);
    assert_eq!(far.finish(Duration::MAX), ns(u64::MAX));
}

#[test]
fn a_turn_end_hook_runs_once_at_the_end_of_the_turn_it_was_registered_in() {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    let reactor = Reactor::new().unwrap();
    let handle = reactor.handle();
    let log = Rc::new(RefCell::new(Vec::new()));
    let runs = Rc::new(Cell::new(0));
    let hook: Rc<dyn Fn()> = {
        let runs = runs.clone();
        let log = log.clone();
        Rc::new(move || {
            runs.set(runs.get() + 1);
            log.borrow_mut().push("hook");
        })
    };
    // Registered by a call of this turn: it runs after the call, once.
    {
        let (h, hook, log) = (handle.clone(), hook.clone(), log.clone());
        reactor.call_soon(move || {
            log.borrow_mut().push("call");
            h.at_turn_end(hook);
        });
    }
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(*log.borrow(), ["call", "hook"]);
    // Not again in the next turns: it was for that turn only.
    reactor.iterate(Some(Duration::ZERO));
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(runs.get(), 1);
    // A hook registered by a hook's work runs in the same turn end.
    let outer: Rc<dyn Fn()> = {
        let (h, hook) = (handle.clone(), hook.clone());
        Rc::new(move || h.at_turn_end(hook.clone()))
    };
    handle.at_turn_end(outer);
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(runs.get(), 2);
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(runs.get(), 2);
}

#[test]
fn an_idle_turn_reads_the_clock_at_its_start_for_its_wait_and_after_it() {
    let (reactor, reads) = counted();
    reactor.call_later(Duration::from_secs(3600), || ());
    // The timers and the lap's pause reuse the start reading (nothing
    // ran since), the end reuses the one after the wait (nothing ran
    // after it): was 6.
    let n = reads_in(&reads, || reactor.iterate(Some(Duration::ZERO)));
    assert_eq!(n, 3);
}

#[test]
fn a_turn_after_a_task_pass_that_left_no_task_ready_is_idle() {
    let (reactor, reads) = counted();
    reactor.call_later(Duration::from_secs(3600), || ());
    let _task = reactor.spawn_local(std::future::pending::<()>());
    reactor.iterate(Some(Duration::ZERO)); // polls the task once
    // Nothing is ready now: the turn goes idle at once (its start, how
    // long to wait, after the wait: 3 readings, as above). It used to
    // count the task pass as work and poll without blocking (its start
    // and end: 2), so the loop blocked only a turn and a poll later.
    let n = reads_in(&reads, || reactor.iterate(Some(Duration::ZERO)));
    assert_eq!(n, 3);
}

#[test]
fn a_turn_after_a_task_pass_that_left_a_task_ready_is_busy() {
    let (reactor, reads) = counted();
    reactor.call_later(Duration::from_secs(3600), || ());
    // A task that wakes itself each poll: always ready again.
    let _task = reactor.spawn_local(std::future::poll_fn(|cx| {
        cx.waker().wake_by_ref();
        std::task::Poll::<()>::Pending
    }));
    reactor.iterate(Some(Duration::ZERO));
    // Busy: no wait, no reading for one (start and end).
    let n = reads_in(&reads, || reactor.iterate(Some(Duration::ZERO)));
    assert_eq!(n, 2);
}

#[test]
fn a_turn_of_the_run_loop_starts_with_the_last_ones_end_reading() {
    let (reactor, reads) = counted();
    reactor.call_later(Duration::from_secs(3600), || ());
    let inner = &reactor.handle.inner;
    let end = inner.turn_from(Some(Duration::ZERO), None);
    let n = reads_in(&reads, || {
        inner.turn_from(Some(Duration::ZERO), Some(end));
    });
    assert_eq!(n, 2, "the wait and after it");
}

#[test]
fn a_turn_that_ran_calls_reads_the_clock_again_for_its_timers() {
    let (reactor, reads) = counted();
    let remote = reactor.remote();
    remote.call_from_thread(|| ()).unwrap();
    // Start, timers (after the calls), end; no timer is due so the
    // turn polls without blocking (no wait: no more readings).
    reactor.call_later(Duration::from_secs(3600), || ());
    let n = reads_in(&reads, || reactor.iterate(Some(Duration::ZERO)));
    assert_eq!(n, 3);
}

#[test]
fn a_sleep_on_the_run_loop_ends_at_or_after_its_deadline() {
    let (reactor, _reads) = counted();
    let h = reactor.handle();
    let (start, end) = reactor
        .run_until_complete(async move {
            let start = h.seconds();
            h.sleep(Duration::from_millis(3)).await.unwrap();
            (start, h.seconds())
        })
        .unwrap();
    assert!(end >= start + Duration::from_millis(3), "{start:?} {end:?}");
}
