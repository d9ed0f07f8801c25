//! Spin-then-park with more threads than cores (crossbeam #821 and #997
//! are the trap): a pool of 8 threads on this 2-core class of machine, fed
//! by sequential round trips (each next job arrives while a thread may
//! still spin) and by bursts, from two submitters at once. Correctness
//! only: every job runs exactly once, nothing waits forever, and the pool
//! ends idle and stops. How fast is the benchmarks' business.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;

use common::wait_until;
use weft::ThreadPool;

const THREADS: usize = 8;
const SUBMITTERS: usize = 2;
const ROUND_TRIPS: usize = 2_000;
const BURST: usize = 2_000;

#[test]
fn eight_threads_on_two_cores_run_every_round_trip_and_burst_job_exactly_once() {
    let pool = Arc::new(ThreadPool::new(THREADS, THREADS).unwrap());
    pool.start();
    let per = ROUND_TRIPS + BURST;
    let runs: Arc<Vec<AtomicU8>> =
        Arc::new((0..SUBMITTERS * per).map(|_| AtomicU8::new(0)).collect());
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|s| {
            let (pool, runs) = (pool.clone(), runs.clone());
            std::thread::spawn(move || {
                let (tx, rx) = mpsc::channel();
                // Round trips: the next job follows the last one's end by
                // about a channel hand-off, inside a spinner's window.
                for i in 0..ROUND_TRIPS {
                    let (runs, tx, slot) = (runs.clone(), tx.clone(), s * per + i);
                    pool.call_in_thread(move || {
                        runs[slot].fetch_add(1, Ordering::Relaxed);
                        tx.send(()).unwrap();
                    })
                    .unwrap_or_else(|_| panic!("refused"));
                    rx.recv().unwrap();
                }
                // A burst: threads catch up with the submitter, go idle and
                // spin or park, and are claimed again.
                for i in ROUND_TRIPS..per {
                    let (runs, tx, slot) = (runs.clone(), tx.clone(), s * per + i);
                    pool.call_in_thread(move || {
                        runs[slot].fetch_add(1, Ordering::Relaxed);
                        tx.send(()).unwrap();
                    })
                    .unwrap_or_else(|_| panic!("refused"));
                }
                for _ in ROUND_TRIPS..per {
                    rx.recv().unwrap();
                }
            })
        })
        .collect();
    for s in submitters {
        s.join().unwrap();
    }
    let total = (SUBMITTERS * per) as u64;
    assert!(wait_until(|| pool.statistics().completed == total));
    assert!(wait_until(|| {
        let s = pool.statistics();
        s.busy == 0 && s.backlog == 0 && s.idle == s.threads_alive
    }));
    let report = pool.stop();
    assert!(report.is_complete(), "{report:?}");
    let wrong = runs
        .iter()
        .filter(|r| r.load(Ordering::Relaxed) != 1)
        .count();
    assert_eq!(wrong, 0, "jobs that did not run exactly once");
}

#[test]
fn a_pool_of_one_thread_answers_a_thousand_round_trips_in_sequence() {
    // One thread: every job after the first is claimed while that thread
    // spins or after it parked; either way it must be taken.
    let pool = ThreadPool::new(1, 1).unwrap();
    pool.start();
    let (tx, rx) = mpsc::channel();
    for i in 0..1_000u32 {
        let tx = tx.clone();
        pool.call_in_thread(move || tx.send(i).unwrap())
            .unwrap_or_else(|_| panic!("refused"));
        assert_eq!(rx.recv().unwrap(), i);
    }
    // The last job is counted once it returns, after its send.
    assert!(wait_until(|| pool.statistics().completed == 1_000));
    assert_eq!(pool.statistics().threads_alive, 1);
    assert!(pool.stop().is_complete());
}
