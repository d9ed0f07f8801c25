//! The reactor's pool and the loop ↔ thread operations.
//!
//! Ported from Twisted's `test/test_threads.py` (§3 items 49–61) and
//! `internet/test/test_threads.py` (items 63, 64, 66, 69), and asyncio's
//! `test_base_events.py` / `test_threads.py` (run_in_executor, to_thread:
//! asyncio-bridge.md §4 items 26, 30–33).

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use weft::threads::{ThreadWorker, Worker};
use weft::{Reactor, ThreadError, ThreadPool};

#[test]
fn suggest_thread_pool_size_sets_the_pool_max() {
    let reactor = Reactor::new().unwrap();
    reactor.suggest_thread_pool_size(34).unwrap();
    assert_eq!(reactor.thread_pool().statistics().max, 34);
    reactor.suggest_thread_pool_size(4).unwrap();
    assert_eq!(reactor.thread_pool().statistics().max, 4);
    assert!(reactor.suggest_thread_pool_size(0).is_err());
}

#[test]
fn the_reactor_pool_is_started_with_the_loop_and_stopped_after_it() {
    let reactor = Reactor::new().unwrap();
    let pool = reactor.thread_pool();
    // Not started: work is held, no thread exists.
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    reactor
        .call_in_thread(move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    assert_eq!(pool.statistics().threads_alive, 0);
    assert_eq!(pool.statistics().backlog, 1);
    let seen_running = Rc::new(Cell::new(false));
    let s = seen_running.clone();
    let p2 = pool.clone();
    reactor.call_when_running(move || {
        // Started by the time call_when_running callbacks run.
        s.set(p2.statistics().backlog == 0 || p2.statistics().threads_alive > 0);
        weft::reactor::current().unwrap().stop();
    });
    reactor.run().unwrap();
    assert!(seen_running.get());
    // Queued work ran before shutdown finished; the pool is stopped.
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(pool.statistics().threads_alive, 0);
    assert!(reactor.call_in_thread(|| ()).is_err());
}

#[test]
fn call_in_thread_runs_off_the_loop_thread() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let (tx, rx) = mpsc::channel();
    reactor
        .call_in_thread(move || {
            tx.send(weft::reactor::is_in_io_thread()).unwrap();
            remote.stop();
        })
        .unwrap();
    let hung = common::watchdog(&reactor);
    reactor.run().unwrap();
    assert!(!hung.get());
    assert!(!rx.recv().unwrap());
}

#[test]
fn call_from_thread_works_from_the_loop_thread_and_from_a_pool_thread() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    remote
        .call_from_thread(move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let (r, c) = (remote.clone(), count.clone());
    reactor
        .call_in_thread(move || {
            let r2 = r.clone();
            r.call_from_thread(move || {
                c.fetch_add(1, Ordering::SeqCst);
                r2.stop();
            })
            .unwrap();
        })
        .unwrap();
    reactor.run().unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[test]
fn a_hundred_thousand_call_from_thread_from_a_pool_thread_never_fail() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let d = reactor.defer_to_thread(move || {
        for _ in 0..100_000 {
            let c = c.clone();
            remote
                .call_from_thread(move || {
                    c.fetch_add(1, Ordering::Relaxed);
                })
                .expect("loop running");
        }
    });
    reactor.run_until_complete(d).unwrap().unwrap();
    // The completion was queued after every call, and the inbox is FIFO.
    assert_eq!(count.load(Ordering::SeqCst), 100_000);
}

#[test]
fn call_multiple_in_thread_runs_in_order_on_one_thread() {
    let reactor = Reactor::new().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut calls: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
    for i in 0..10 {
        let seen = seen.clone();
        calls.push(Box::new(move || {
            seen.lock().unwrap().push((i, thread::current().id()));
        }));
    }
    let remote = reactor.remote();
    calls.push(Box::new(move || {
        let r2 = remote.clone();
        remote.call_from_thread(move || r2.stop()).unwrap();
    }));
    reactor.call_multiple_in_thread(calls).unwrap();
    reactor.run().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert!(seen.iter().all(|s| s.1 == seen[0].1));
}

#[test]
fn call_multiple_in_thread_stops_at_the_first_panic() {
    let reactor = Reactor::new().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s1, s2) = (seen.clone(), seen.clone());
    let calls: Vec<Box<dyn FnOnce() + Send>> = vec![
        Box::new(move || s1.lock().unwrap().push(1)),
        Box::new(|| panic!("second fails")),
        Box::new(move || s2.lock().unwrap().push(3)),
    ];
    reactor.call_multiple_in_thread(calls).unwrap();
    // A later job on a 1-thread pool runs after the batch: a fence.
    reactor.suggest_thread_pool_size(1).unwrap();
    let fence = reactor.defer_to_thread(|| ());
    reactor.run_until_complete(fence).unwrap().unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![1]);
}

#[test]
fn defer_to_thread_delivers_the_value() {
    let reactor = Reactor::new().unwrap();
    let (x, y) = (3, 4);
    let d = reactor.defer_to_thread(move || x + y);
    assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(7));
}

#[test]
fn defer_to_thread_of_a_panicking_function_fails_with_panicked() {
    let reactor = Reactor::new().unwrap();
    let d = reactor.defer_to_thread(|| -> u32 { panic!("division by zero") });
    assert_eq!(
        reactor.run_until_complete(d).unwrap(),
        Err(ThreadError::Panicked {
            message: "division by zero".into()
        })
    );
}

#[test]
fn a_panic_in_deferred_work_is_counted_in_the_pool_statistics() {
    let reactor = Reactor::new().unwrap();
    let d = reactor.defer_to_thread(|| -> u8 { panic!("counted") });
    assert!(reactor.run_until_complete(d).unwrap().is_err());
    // A panic is counted before its outcome is posted to the loop.
    let pool = reactor.thread_pool();
    assert_eq!(pool.statistics().panicked, 1);
    let ok = reactor.defer_to_thread(|| 1);
    assert_eq!(reactor.run_until_complete(ok).unwrap(), Ok(1));
    // A success is counted when the worker is done with the task, just
    // after its result was handed to the loop.
    assert!(common::wait_until(|| {
        let s = pool.statistics();
        s.panicked == 1 && s.completed == 2
    }));
}

#[test]
fn a_success_chained_to_a_failure_produces_the_failure() {
    let reactor = Reactor::new().unwrap();
    let out = reactor
        .run_until_complete(async {
            let h = weft::reactor::current().unwrap();
            let first = h.defer_to_thread(|| 1).await?;
            h.defer_to_thread(move || -> u32 { panic!("after {first}") })
                .await
        })
        .unwrap();
    assert_eq!(
        out,
        Err(ThreadError::Panicked {
            message: "after 1".into()
        })
    );
}

#[test]
fn defer_to_thread_pool_uses_the_given_pool() {
    let reactor = Reactor::new().unwrap();
    let pool = ThreadPool::builder()
        .name("private")
        .min(0)
        .max(8)
        .build()
        .unwrap();
    pool.start();
    let d = reactor.defer_to_thread_pool(&pool, || thread::current().name().map(str::to_owned));
    let name = reactor.run_until_complete(d).unwrap().unwrap().unwrap();
    assert!(name.starts_with("private-"), "{name}");
    let bad = reactor.defer_to_thread_pool(&pool, || -> () { panic!("x") });
    assert!(matches!(
        reactor.run_until_complete(bad).unwrap(),
        Err(ThreadError::Panicked { .. })
    ));
    pool.stop();
}

#[test]
fn defer_to_a_stopped_pool_fails_with_stopped_at_once() {
    let reactor = Reactor::new().unwrap();
    let pool = ThreadPool::new(0, 1).unwrap();
    pool.stop();
    let d = reactor.defer_to_thread_pool(&pool, || 1);
    assert!(d.is_resolved());
    assert_eq!(
        reactor.run_until_complete(d).unwrap(),
        Err(ThreadError::Stopped)
    );
}

#[test]
fn defer_to_worker_runs_every_job_on_the_workers_one_thread() {
    let reactor = Reactor::new().unwrap();
    let worker = ThreadWorker::new().unwrap();
    let ids: Vec<_> = (0..5)
        .map(|_| reactor.defer_to_worker(&worker, || thread::current().id()))
        .collect();
    let got = reactor
        .run_until_complete(async move {
            let mut out = Vec::new();
            for d in ids {
                out.push(d.await.unwrap());
            }
            out
        })
        .unwrap();
    assert!(got.iter().all(|id| *id == got[0]));
    assert_ne!(got[0], thread::current().id());
    worker.quit().unwrap();
    let refused = reactor.defer_to_worker(&worker, || 1);
    assert_eq!(
        reactor.run_until_complete(refused).unwrap(),
        Err(ThreadError::Stopped)
    );
}

#[test]
fn a_defer_to_thread_result_is_never_delivered_synchronously() {
    let reactor = Reactor::new().unwrap();
    reactor.run_until_complete(async {}).unwrap(); // start the pool
    let (tx, rx) = mpsc::channel();
    let d = reactor.defer_to_thread(move || {
        tx.send(()).unwrap();
        5
    });
    rx.recv().unwrap(); // the job has run...
    assert!(!d.is_resolved(), "...but the result waits for a loop turn");
    assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(5));
}

#[test]
fn defer_to_thread_callbacks_run_on_the_loop_thread() {
    let reactor = Reactor::new().unwrap();
    let loop_thread = thread::current().id();
    let seen = Rc::new(RefCell::new(None));
    let s = seen.clone();
    let d = reactor.defer_to_thread(|| thread::current().id());
    d.add_both(move |r| {
        *s.borrow_mut() = Some((r.unwrap(), thread::current().id()));
        weft::reactor::current().unwrap().stop();
    });
    reactor.run().unwrap();
    let (worker, cb) = seen.borrow().unwrap();
    assert_ne!(worker, loop_thread);
    assert_eq!(cb, loop_thread);
}

#[test]
fn ten_concurrent_defers_gathered_all_run() {
    let reactor = Reactor::new().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let ds: Vec<_> = (0..10)
        .map(|i| {
            let c = count.clone();
            reactor.defer_to_thread(move || {
                c.fetch_add(1, Ordering::SeqCst);
                i
            })
        })
        .collect();
    let sum = reactor
        .run_until_complete(async move {
            let mut sum = 0;
            for d in ds {
                sum += d.await.unwrap();
            }
            sum
        })
        .unwrap();
    assert_eq!(sum, 45);
    assert_eq!(count.load(Ordering::SeqCst), 10);
}

#[test]
fn cancelling_a_queued_defer_removes_the_job_so_it_never_runs() {
    let reactor = Reactor::new().unwrap();
    reactor.suggest_thread_pool_size(1).unwrap();
    reactor.run_until_complete(async {}).unwrap();
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let blocker = reactor.defer_to_thread(move || {
        g.wait();
    });
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let queued = reactor.defer_to_thread(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    queued.cancel();
    assert!(queued.is_resolved());
    gate.wait();
    reactor.run_until_complete(blocker).unwrap().unwrap();
    // A fence job on the single thread runs after the cancelled one would have.
    let fence = reactor.defer_to_thread(|| ());
    reactor.run_until_complete(fence).unwrap().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(
        reactor.run_until_complete(queued).unwrap(),
        Err(ThreadError::Cancelled)
    );
}

#[test]
fn cancelling_a_running_defer_resolves_cancelled_and_discards_the_late_result() {
    let reactor = Reactor::new().unwrap();
    reactor.run_until_complete(async {}).unwrap();
    let started = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let (s, r) = (started.clone(), release.clone());
    let finished = Arc::new(AtomicUsize::new(0));
    let f = finished.clone();
    let d = reactor.defer_to_thread(move || {
        s.wait();
        r.wait();
        f.fetch_add(1, Ordering::SeqCst);
        "late"
    });
    started.wait();
    d.cancel();
    release.wait();
    assert_eq!(
        reactor.run_until_complete(d).unwrap(),
        Err(ThreadError::Cancelled)
    );
    // The job finished detached; its result arrives and is dropped quietly.
    let fence = reactor.defer_to_thread(|| ());
    reactor.run_until_complete(fence).unwrap().unwrap();
    common::wait_until(|| finished.load(Ordering::SeqCst) == 1);
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(reactor.statistics().panics, 0);
}

#[test]
fn the_callers_tracing_span_is_carried_into_pool_work() {
    common::capture_logs();
    let reactor = Reactor::new().unwrap();
    let span = tracing::info_span!("request", id = 4242);
    let d = {
        let _e = span.enter();
        reactor.defer_to_thread(|| tracing::info!("inside the pool job"))
    };
    reactor.run_until_complete(d).unwrap().unwrap();
    let (tx, rx) = mpsc::channel();
    {
        let _e = span.enter();
        reactor
            .call_in_thread(move || {
                tracing::info!("inside call_in_thread");
                tx.send(()).unwrap();
            })
            .unwrap();
    }
    rx.recv().unwrap();
    assert_eq!(common::log_lines(&["4242", "inside the pool job"]).len(), 1);
    assert_eq!(
        common::log_lines(&["4242", "inside call_in_thread"]).len(),
        1
    );
}

/// Completions find their own reactor's table even when one thread drives
/// several reactors in turn and reactors come and go (the loop caches the
/// last table it delivered to).
#[test]
fn completions_reach_their_own_reactor_when_a_thread_drives_several() {
    let a = Reactor::new().unwrap();
    let b = Reactor::new().unwrap();
    for round in 0..3u32 {
        let da = a.defer_to_thread(move || ("a", round));
        let db = b.defer_to_thread(move || ("b", round));
        assert_eq!(b.run_until_complete(db).unwrap(), Ok(("b", round)));
        assert_eq!(a.run_until_complete(da).unwrap(), Ok(("a", round)));
    }
    drop(a);
    let c = Reactor::new().unwrap();
    let dc = c.defer_to_thread(|| "c");
    let db = b.defer_to_thread(|| "b again");
    assert_eq!(c.run_until_complete(dc).unwrap(), Ok("c"));
    assert_eq!(b.run_until_complete(db).unwrap(), Ok("b again"));
}
