//! `call_from_thread`: ordering, wake, snapshot per turn, misuse.
//!
//! Ported from Twisted's `test/test_internet.py` (callFromThread tests),
//! `test/test_threads.py` (100 000 calls) and `internet/test/test_threads.py`
//! (spec/twisted-threads.md §3 items 52, 65, 66, 71–75).

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use weft::{LoopStopped, Reactor};

/// Sends `n` calls from one thread into a running loop, then stops it;
/// returns how many ran.
fn calls_from_one_thread(n: usize) -> usize {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let t = thread::spawn(move || {
        for _ in 0..n {
            let c = c.clone();
            remote
                .call_from_thread(move || {
                    c.fetch_add(1, Ordering::Relaxed);
                })
                .unwrap();
        }
        remote.stop();
    });
    let hung = common::watchdog(&reactor);
    reactor.run().unwrap();
    t.join().unwrap();
    assert!(!hung.get());
    count.load(Ordering::SeqCst)
}

#[test]
fn a_hundred_calls_from_threads_all_execute() {
    assert_eq!(calls_from_one_thread(100), 100);
}

#[test]
fn calls_from_thread_run_in_scheduling_order() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let log = Arc::new(Mutex::new(Vec::new()));
    for i in [1, 2, 3] {
        let log = log.clone();
        remote
            .call_from_thread(move || log.lock().unwrap().push(i))
            .unwrap();
    }
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(*log.lock().unwrap(), vec![1, 2, 3]);
}

#[test]
fn call_from_thread_before_run_is_not_synchronous_and_runs_once_running() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    remote
        .call_from_thread(move || {
            r.fetch_add(1, Ordering::SeqCst);
            weft::reactor::current().unwrap().stop();
        })
        .unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    reactor.run().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[test]
fn a_call_from_another_thread_wakes_the_idle_reactor() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let hung = common::watchdog(&reactor);
    // The loop has nothing to do but the watchdog a minute away, so it blocks
    // in poll; only the call's wake can end this run early.
    reactor.call_when_running(move || {
        let remote = remote.clone();
        thread::spawn(move || {
            let r2 = remote.clone();
            remote.call_from_thread(move || r2.stop()).unwrap();
        });
    });
    reactor.run().unwrap();
    assert!(!hung.get());
}

#[test]
fn call_from_thread_made_from_a_worker_runs_on_the_loop_thread() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let loop_thread = thread::current().id();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let t = thread::spawn(move || {
        let r2 = remote.clone();
        remote
            .call_from_thread(move || {
                *s.lock().unwrap() = Some(thread::current().id());
                assert!(weft::reactor::is_in_io_thread());
                r2.stop();
            })
            .unwrap();
    });
    let hung = common::watchdog(&reactor);
    reactor.run().unwrap();
    t.join().unwrap();
    assert!(!hung.get());
    assert_eq!(*seen.lock().unwrap(), Some(loop_thread));
}

#[test]
fn call_from_thread_issued_on_the_loop_inside_call_later_is_processed_next_turn() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let hung = common::watchdog(&reactor);
    reactor.call_later(Duration::ZERO, move || {
        let r2 = remote.clone();
        remote.call_from_thread(move || r2.stop()).unwrap();
    });
    reactor.run().unwrap();
    assert!(!hung.get());
}

#[test]
fn a_call_from_thread_queued_inside_one_runs_in_a_later_pass_after_call_later_zero() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let log = Rc::new(RefCell::new(Vec::new()));
    // The closures run on the loop; they reach loop state through a
    // thread-local handle rather than capturing the `Rc` (which is !Send).
    thread_local!(static LOG: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) });
    let r2 = remote.clone();
    remote
        .call_from_thread(move || {
            r2.call_from_thread(|| LOG.with(|l| l.borrow_mut().push("inner call")))
                .unwrap();
            weft::reactor::current()
                .unwrap()
                .call_later(Duration::ZERO, || {
                    LOG.with(|l| l.borrow_mut().push("call_later(0)"))
                });
        })
        .unwrap();
    reactor.iterate(Some(Duration::ZERO));
    LOG.with(|l| log.borrow_mut().extend(l.borrow().iter().copied()));
    assert_eq!(*log.borrow(), vec!["call_later(0)"]);
    reactor.iterate(Some(Duration::ZERO));
    LOG.with(|l| assert_eq!(*l.borrow(), vec!["call_later(0)", "inner call"]));
}

#[test]
fn each_turn_runs_only_the_calls_present_when_it_began() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let count = Arc::new(AtomicUsize::new(0));
    // A call that re-queues itself forever must not starve the turn.
    fn requeue(remote: weft::Remote, count: Arc<AtomicUsize>) {
        count.fetch_add(1, Ordering::SeqCst);
        let r2 = remote.clone();
        let _ = remote.call_from_thread(move || requeue(r2, count));
    }
    let (r, c) = (remote.clone(), count.clone());
    remote.call_from_thread(move || requeue(r, c)).unwrap();
    for turn in 1..=5 {
        reactor.iterate(Some(Duration::ZERO));
        assert_eq!(count.load(Ordering::SeqCst), turn);
    }
}

#[test]
fn a_hundred_thousand_consecutive_calls_from_a_thread_never_fail() {
    assert_eq!(calls_from_one_thread(100_000), 100_000);
}

#[test]
fn a_burst_into_a_loop_that_has_not_slept_costs_one_wake() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let count = Arc::new(AtomicUsize::new(0));
    for _ in 0..100_000 {
        let c = count.clone();
        remote
            .call_from_thread(move || {
                c.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
    }
    let stats = reactor.statistics();
    assert_eq!(stats.calls_from_thread, 100_000);
    assert_eq!(stats.wake_syscalls, 1, "only the first call wakes the loop");
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(count.load(Ordering::SeqCst), 100_000);
}

#[test]
fn calls_made_while_the_loop_is_awake_make_no_wake_syscall() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    reactor.iterate(Some(Duration::ZERO)); // the loop is now marked awake
    let before = reactor.statistics().wake_syscalls;
    let r2 = remote.clone();
    remote
        .call_from_thread(move || {
            for _ in 0..1000 {
                r2.call_from_thread(|| ()).unwrap();
            }
        })
        .unwrap();
    reactor.iterate(Some(Duration::ZERO));
    reactor.iterate(Some(Duration::ZERO));
    let stats = reactor.statistics();
    assert_eq!(stats.calls_run, 1001);
    assert_eq!(stats.wake_syscalls, before);
}

#[test]
fn stress_four_producers_each_calls_run_exactly_once_and_in_producer_order() {
    const PRODUCERS: usize = 4;
    const CALLS: usize = 100_000;
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    // Loop-only state: next expected sequence per producer. No lock needed,
    // it is only touched on the loop; the Arc<Mutex> is just to move it in.
    let next = Arc::new(Mutex::new(vec![0usize; PRODUCERS]));
    let done = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let remote = remote.clone();
            let next = next.clone();
            let done = done.clone();
            thread::spawn(move || {
                for seq in 0..CALLS {
                    let next = next.clone();
                    let done = done.clone();
                    let r2 = remote.clone();
                    remote
                        .call_from_thread(move || {
                            let mut n = next.lock().unwrap();
                            assert_eq!(n[p], seq, "producer {p} out of order");
                            n[p] += 1;
                            if done.fetch_add(1, Ordering::Relaxed) + 1 == PRODUCERS * CALLS {
                                r2.stop();
                            }
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    let hung = common::watchdog(&reactor);
    reactor.handle().add_system_event_trigger(
        weft::reactor::Phase::Before,
        weft::reactor::SystemEvent::Shutdown,
        || (),
    );
    reactor.run().unwrap();
    for p in producers {
        p.join().unwrap();
    }
    assert!(!hung.get());
    assert_eq!(*next.lock().unwrap(), vec![CALLS; PRODUCERS]);
    let stats = reactor.statistics();
    assert_eq!(stats.calls_run, (PRODUCERS * CALLS) as u64);
    assert_eq!(stats.panics, 0);
}

#[test]
fn call_from_thread_after_the_loop_ended_hands_the_closure_back() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    reactor.stop();
    reactor.run().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let err: LoopStopped<_> = remote
        .call_from_thread(move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap_err();
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the closure did not run");
    (err.into_inner())();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "and it was handed back intact"
    );
}

#[test]
fn call_from_thread_after_the_reactor_is_dropped_hands_the_closure_back() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    drop(reactor);
    assert!(remote.call_from_thread(|| ()).is_err());
}

#[test]
fn calls_queued_before_shutdown_still_run_during_it() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let ran = Arc::new(AtomicUsize::new(0));
    let (r, n) = (remote.clone(), ran.clone());
    reactor.call_when_running(move || {
        // Queue a call and stop in the same turn: the call is accepted, so it
        // must run before the loop exits.
        r.call_from_thread(move || {
            n.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        r.stop();
    });
    reactor.run().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[test]
fn stop_twice_is_harmless() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    remote.stop();
    remote.stop();
    reactor.stop();
    reactor.run().unwrap();
    remote.stop();
    assert!(remote.is_stopped());
}

#[test]
fn remote_is_send_sync_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<weft::Remote>();
}
