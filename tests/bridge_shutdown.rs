//! Shutdown that loses nothing: results of pool work in flight reach their
//! `Deferred`s before the loop exits (Twisted loses them: spec §2 item 4),
//! queued work runs or is cancelled by policy, and a deadline bounds the wait.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::Duration;

use weft::reactor::{Phase, QueuedWork, SystemEvent};
use weft::{Reactor, ThreadError, blocking_call_from_thread};

#[derive(Default)]
struct Tally {
    values: Cell<usize>,
    cancelled: Cell<usize>,
    other: Cell<usize>,
}

fn track(tally: &Rc<Tally>, d: weft::Deferred<usize>) {
    let t = tally.clone();
    d.add_both(move |r| match r {
        Ok(_) => t.values.set(t.values.get() + 1),
        Err(ThreadError::Cancelled) => t.cancelled.set(t.cancelled.get() + 1),
        Err(_) => t.other.set(t.other.get() + 1),
    });
}

#[test]
fn ten_thousand_jobs_in_flight_at_stop_all_resolve() {
    const JOBS: usize = 10_000;
    let reactor = Reactor::new().unwrap();
    let tally = Rc::new(Tally::default());
    let t = tally.clone();
    reactor.call_when_running(move || {
        let h = weft::reactor::current().unwrap();
        for i in 0..JOBS {
            track(&t, h.defer_to_thread(move || i));
        }
        h.stop();
    });
    let hung = common::watchdog(&reactor);
    reactor.run().unwrap();
    assert!(!hung.get());
    assert_eq!(tally.values.get() + tally.cancelled.get(), JOBS);
    assert_eq!(tally.other.get(), 0);
    // Default policy: queued work runs, so every value arrived.
    assert_eq!(tally.values.get(), JOBS);
}

#[test]
fn ten_thousand_jobs_in_flight_with_the_cancel_policy_all_resolve() {
    const JOBS: usize = 10_000;
    let reactor = Reactor::builder()
        .queued_work_at_shutdown(QueuedWork::Cancel)
        .build()
        .unwrap();
    let tally = Rc::new(Tally::default());
    let ran = Arc::new(AtomicUsize::new(0));
    let (t, r) = (tally.clone(), ran.clone());
    reactor.call_when_running(move || {
        let h = weft::reactor::current().unwrap();
        for i in 0..JOBS {
            let r = r.clone();
            track(
                &t,
                h.defer_to_thread(move || {
                    r.fetch_add(1, Ordering::SeqCst);
                    i
                }),
            );
        }
        h.stop();
    });
    reactor.run().unwrap();
    assert_eq!(tally.values.get() + tally.cancelled.get(), JOBS);
    assert_eq!(tally.other.get(), 0);
    // Every job that ran delivered its value; every one that did not was
    // reported cancelled.
    assert_eq!(tally.values.get(), ran.load(Ordering::SeqCst));
}

#[test]
fn the_result_of_work_running_at_stop_is_delivered_before_the_loop_exits() {
    let reactor = Reactor::new().unwrap();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let got = Rc::new(Cell::new(None));
    let g = got.clone();
    let started = Arc::new(Barrier::new(2));
    let s = started.clone();
    reactor.call_when_running(move || {
        let h = weft::reactor::current().unwrap();
        h.defer_to_thread(move || {
            s.wait();
            release_rx.recv().unwrap();
            "finished"
        })
        .add_both(move |r| g.set(Some(r)));
        let remote = h.remote();
        thread::spawn(move || {
            started.wait();
            remote.stop(); // stop while the job is running...
            release_tx.send(()).unwrap(); // ...then let it finish
        });
    });
    reactor.run().unwrap();
    assert_eq!(got.take(), Some(Ok("finished")));
}

#[test]
fn the_cancel_policy_cancels_queued_work_which_never_runs() {
    let reactor = Reactor::builder()
        .queued_work_at_shutdown(QueuedWork::Cancel)
        .build()
        .unwrap();
    reactor.suggest_thread_pool_size(1).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let tally = Rc::new(Tally::default());
    let gate = Arc::new(Barrier::new(2));
    let (t, r, g) = (tally.clone(), ran.clone(), gate.clone());
    reactor.call_when_running(move || {
        let h = weft::reactor::current().unwrap();
        track(
            &t,
            h.defer_to_thread(move || {
                g.wait(); // holds the only thread until shutdown has begun
                0
            }),
        );
        for i in 1..=5 {
            let r = r.clone();
            track(
                &t,
                h.defer_to_thread(move || {
                    r.fetch_add(1, Ordering::SeqCst);
                    i
                }),
            );
        }
        h.stop();
    });
    reactor.add_system_event_trigger(Phase::During, SystemEvent::Shutdown, || ());
    // Release the blocker once the Before phase (which discards the backlog)
    // has run: a second Before trigger registered later runs after it.
    let g = gate.clone();
    reactor.call_when_running(move || {
        weft::reactor::current().unwrap().add_system_event_trigger(
            Phase::Before,
            SystemEvent::Shutdown,
            move || {
                g.wait();
            },
        );
    });
    reactor.run().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(tally.values.get(), 1);
    assert_eq!(tally.cancelled.get(), 5);
}

#[test]
fn a_job_that_outlives_the_shutdown_deadline_is_reported_and_never_hangs() {
    let reactor = Reactor::builder()
        .shutdown_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let got = Rc::new(Cell::new(None));
    let g = got.clone();
    reactor.call_when_running(move || {
        let h = weft::reactor::current().unwrap();
        h.defer_to_thread(move || {
            let _ = release_rx.recv(); // never released before the loop exits
        })
        .add_both(move |r| g.set(Some(r)));
        h.stop();
    });
    reactor.run().unwrap();
    assert_eq!(got.take(), Some(Err(ThreadError::Cancelled)));
    drop(release_tx); // let the detached thread end
}

#[test]
fn work_submitted_after_shutdown_is_refused_with_the_closure_or_stopped() {
    let reactor = Reactor::new().unwrap();
    reactor.thread_pool();
    reactor.stop();
    reactor.run().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let refused = reactor
        .call_in_thread(move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap_err();
    (refused.into_inner())();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "the closure came back intact"
    );
    let d = reactor.defer_to_thread(|| 1);
    assert!(d.is_resolved());
    assert_eq!(reactor.run_until_complete(d), Err(weft::RunError::Stopped));
}

#[test]
fn a_blocking_call_from_a_pool_thread_during_shutdown_is_answered_instead_of_hanging() {
    // Twisted #10124: this hung forever, even on Ctrl-C. weft's loop answers
    // calls until its inbox closes (the final drain), so the call gets its
    // value; after that it would fail `LoopStopped`, never hang.
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let outcome = Rc::new(Cell::new(None));
    let o = outcome.clone();
    let (stopping_tx, stopping_rx) = mpsc::channel::<()>();
    reactor.call_when_running(move || {
        let h = weft::reactor::current().unwrap();
        h.defer_to_thread(move || {
            stopping_rx.recv().unwrap();
            blocking_call_from_thread(&remote, || 1)
        })
        .add_both(move |r| o.set(Some(r)));
        h.stop();
    });
    reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
        stopping_tx.send(()).unwrap();
    });
    let hung = common::watchdog(&reactor);
    reactor.run().unwrap();
    assert!(!hung.get());
    assert_eq!(outcome.take(), Some(Ok(Ok(1))));
}

#[test]
fn a_never_run_reactor_drops_its_queued_pool_work_and_exits_cleanly() {
    // Twisted test_threads item 62: callInThread before run, never run.
    let ran = Arc::new(AtomicUsize::new(0));
    {
        let reactor = Reactor::new().unwrap();
        let r = ran.clone();
        reactor
            .call_in_thread(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn a_defer_to_worker_result_in_flight_at_stop_is_delivered_without_the_reactor_pool() {
    let reactor = Reactor::new().unwrap();
    let worker = weft::threads::ThreadWorker::new().unwrap();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let got = Rc::new(Cell::new(None));
    let g = got.clone();
    reactor
        .defer_to_worker(&worker, move || {
            release_rx.recv().unwrap();
            7
        })
        .add_both(move |r| g.set(Some(r)));
    let remote = reactor.remote();
    reactor.call_when_running(move || {
        remote.stop();
        release_tx.send(()).unwrap();
    });
    reactor.run().unwrap();
    assert_eq!(got.take(), Some(Ok(7)));
    use weft::threads::Worker;
    worker.quit().unwrap();
}

#[test]
fn waiting_for_work_at_shutdown_sleeps_instead_of_spinning() {
    let reactor = Reactor::new().unwrap();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    reactor
        .defer_to_thread(move || {
            release_rx.recv().unwrap();
        })
        .detach();
    let remote = reactor.remote();
    let turns_at_stop = Rc::new(Cell::new(0));
    let t = turns_at_stop.clone();
    reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
        t.set(weft::reactor::current().unwrap().statistics().turns);
        // Release the job from another thread a little later.
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            release_tx.send(()).unwrap();
        });
    });
    remote.stop();
    reactor.run().unwrap();
    let during_shutdown = reactor.statistics().turns - turns_at_stop.get();
    // A spinning loop makes tens of thousands of turns in 50 ms; a sleeping
    // one a handful (one per wake).
    assert!(
        during_shutdown < 100,
        "{during_shutdown} turns while waiting"
    );
}

#[test]
fn dropping_a_never_run_reactor_cancels_its_deferred_work_without_waiting_out_the_deadline() {
    common::capture_logs();
    let got = Rc::new(Cell::new(None));
    {
        let reactor = Reactor::builder()
            .shutdown_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let g = got.clone();
        reactor
            .defer_to_thread(|| 1)
            .add_both(move |r| g.set(Some(r)));
    }
    assert_eq!(got.take(), Some(Err(ThreadError::Cancelled)));
    assert!(
        common::log_lines(&["gave up waiting for Before triggers"]).is_empty(),
        "shutdown waited out its deadline for work that could never run"
    );
}

#[test]
fn the_handle_reports_the_shutdown_settings_pools_on_the_loop_follow() {
    let reactor = Reactor::new().unwrap();
    let handle = reactor.handle();
    assert_eq!(handle.queued_work_at_shutdown(), QueuedWork::Run);
    assert_eq!(handle.shutdown_timeout(), Duration::from_secs(30));
    let reactor = Reactor::builder()
        .queued_work_at_shutdown(QueuedWork::Cancel)
        .shutdown_timeout(Duration::MAX)
        .build()
        .unwrap();
    assert_eq!(
        reactor.handle().queued_work_at_shutdown(),
        QueuedWork::Cancel
    );
    assert_eq!(reactor.handle().shutdown_timeout(), Duration::MAX);
}

#[test]
fn the_last_queued_work_setting_wins() {
    let reactor = Reactor::builder()
        .queued_work_at_shutdown(QueuedWork::Cancel)
        .queued_work_at_shutdown(QueuedWork::Run)
        .build()
        .unwrap();
    assert_eq!(reactor.handle().queued_work_at_shutdown(), QueuedWork::Run);
}
