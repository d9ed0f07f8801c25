//! The API seams of issue 8: loop-local state, `Remote::call_later`,
//! `try_call_from_thread` against the inbox capacity, and one lifecycle
//! vocabulary on `Handle`, `Reactor` and `Remote`.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use weft::reactor::{LocalError, TrySendError};
use weft::testing::ManualClock;
use weft::{LoopStopped, Reactor};

const S: fn(u64) -> Duration = Duration::from_secs;

// --- loop-local state -------------------------------------------------------

#[test]
fn loop_local_state_is_reached_from_callbacks_without_a_thread_local() {
    struct Count(u32);
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    assert_eq!(
        reactor.insert_local(Count(0)).map(|o| o.is_none()),
        Ok(true)
    );
    reactor.call_soon(|| {
        weft::reactor::current()
            .unwrap()
            .with_local(|c: &mut Count| c.0 += 1)
            .unwrap();
    });
    let r2 = remote.clone();
    thread::spawn(move || {
        r2.call_from_thread(|| {
            let h = weft::reactor::current().unwrap();
            h.with_local(|c: &mut Count| c.0 += 10).unwrap();
            h.stop();
        })
        .unwrap();
    })
    .join()
    .unwrap();
    reactor.run().unwrap();
    assert_eq!(reactor.with_local(|c: &mut Count| c.0), Ok(11));
}

#[test]
fn with_local_reports_absent_and_reentrant_borrows_as_errors() {
    let reactor = Reactor::new().unwrap();
    assert_eq!(reactor.with_local(|_: &mut u8| ()), Err(LocalError::Absent));
    reactor.insert_local(1u8).unwrap();
    reactor.insert_local(String::from("other")).unwrap();
    let h = reactor.handle();
    let inner = reactor
        .with_local(|_: &mut u8| {
            // Another type is free; the same type is lent out.
            let other = h.with_local(|s: &mut String| s.len());
            let same = h.with_local(|n: &mut u8| *n);
            let replace = h.insert_local(2u8);
            (other, same, replace)
        })
        .unwrap();
    assert_eq!(inner.0, Ok(5));
    assert_eq!(inner.1, Err(LocalError::Borrowed));
    assert_eq!(inner.2, Err(LocalError::Borrowed));
    assert_eq!(reactor.remove_local::<u8>(), Some(1));
    assert_eq!(reactor.with_local(|_: &mut u8| ()), Err(LocalError::Absent));
}

#[test]
fn loop_local_values_are_dropped_with_the_reactor() {
    struct Flag(Rc<Cell<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let dropped = Rc::new(Cell::new(false));
    let reactor = Reactor::new().unwrap();
    reactor.insert_local(Flag(dropped.clone())).unwrap();
    assert!(!dropped.get());
    drop(reactor);
    assert!(dropped.get());
}

// --- Remote::call_later -----------------------------------------------------

#[test]
fn remote_call_later_runs_on_the_loop_after_its_delay_on_the_reactor_clock() {
    let clock = ManualClock::new();
    let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
    let remote = reactor.remote();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let loop_thread = thread::current().id();
    thread::spawn(move || {
        remote
            .call_later(S(2), move || {
                assert_eq!(thread::current().id(), loop_thread);
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
    })
    .join()
    .unwrap();
    reactor.iterate(Some(Duration::ZERO));
    clock.advance(S(1));
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    clock.advance(S(1));
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[test]
fn remote_call_later_counts_its_delay_from_the_call_not_from_the_loop_taking_it() {
    let clock = ManualClock::new();
    let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    reactor
        .remote()
        .call_later(S(3), move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    clock.advance(S(3)); // before the loop has even seen the call
    reactor.iterate(Some(Duration::ZERO)); // takes it: already due
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[test]
fn remote_call_later_after_the_loop_ended_hands_the_closure_back() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    reactor.stop();
    reactor.run().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let err: LoopStopped<_> = remote
        .call_later(S(1), move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap_err();
    (err.into_inner())();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

// --- try_call_from_thread ---------------------------------------------------

#[test]
fn try_call_from_thread_refuses_at_capacity_and_hands_the_closure_back() {
    let reactor = Reactor::builder().inbox_capacity(2).build().unwrap();
    let remote = reactor.remote();
    let ran = Arc::new(AtomicUsize::new(0));
    let add = |n: &Arc<AtomicUsize>| {
        let n = n.clone();
        move || {
            n.fetch_add(1, Ordering::SeqCst);
        }
    };
    remote.try_call_from_thread(add(&ran)).unwrap();
    remote.try_call_from_thread(add(&ran)).unwrap();
    let full = remote.try_call_from_thread(add(&ran)).unwrap_err();
    assert!(full.is_full());
    // Plain call_from_thread is never refused for room (results must land).
    remote.call_from_thread(add(&ran)).unwrap();
    (full.into_inner())();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "handed back intact, run by hand"
    );
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(ran.load(Ordering::SeqCst), 4);
    // The loop took everything: room again.
    remote.try_call_from_thread(add(&ran)).unwrap();
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(ran.load(Ordering::SeqCst), 5);
}

#[test]
fn try_call_from_thread_after_the_loop_ended_reports_stopped() {
    let reactor = Reactor::builder().inbox_capacity(1).build().unwrap();
    let remote = reactor.remote();
    reactor.stop();
    reactor.run().unwrap();
    assert!(matches!(
        remote.try_call_from_thread(|| ()),
        Err(TrySendError::Stopped(_))
    ));
}

#[test]
fn try_call_from_thread_producers_never_exceed_the_capacity() {
    const CAP: usize = 8;
    const PER: usize = 5_000;
    let reactor = Reactor::builder().inbox_capacity(CAP).build().unwrap();
    let remote = reactor.remote();
    let done = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = (0..2)
        .map(|_| {
            let remote = remote.clone();
            let done = done.clone();
            thread::spawn(move || {
                let mut full = 0u64;
                for _ in 0..PER {
                    let d = done.clone();
                    let mut call = move || {
                        d.fetch_add(1, Ordering::SeqCst);
                    };
                    loop {
                        match remote.try_call_from_thread(call) {
                            Ok(()) => break,
                            Err(TrySendError::Full(f)) => {
                                full += 1;
                                call = f;
                                thread::yield_now();
                            }
                            Err(TrySendError::Stopped(_)) => panic!("the loop stopped"),
                        }
                    }
                }
                full
            })
        })
        .collect();
    while done.load(Ordering::SeqCst) < 2 * PER {
        reactor.iterate(Some(Duration::from_millis(10)));
        // What the loop has not taken yet never exceeds the capacity (plus
        // one per producer caught between its check and its push).
        let s = reactor.statistics();
        assert!(s.calls_from_thread - s.calls_run <= (CAP + 2) as u64);
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(reactor.statistics().calls_run, (2 * PER) as u64);
}

// --- one lifecycle vocabulary -----------------------------------------------

#[test]
fn has_started_is_running_and_is_stopped_agree_on_every_handle() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let handle = reactor.handle();
    let all = |r: &Reactor| {
        let v = (r.has_started(), r.is_running(), r.is_stopped());
        assert_eq!(
            v,
            (
                handle.has_started(),
                handle.is_running(),
                handle.is_stopped()
            )
        );
        assert_eq!(
            v,
            (
                remote.has_started(),
                remote.is_running(),
                remote.is_stopped()
            )
        );
        v
    };
    assert_eq!(all(&reactor), (false, false, false));
    reactor.run_until_complete(async {}).unwrap();
    assert_eq!(all(&reactor), (true, true, false));
    reactor.stop();
    reactor.run().unwrap();
    assert_eq!(all(&reactor), (true, false, true));
}
