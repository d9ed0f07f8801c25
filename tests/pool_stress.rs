//! Stress: 8 submitting threads × 50 000 tasks through a (2, 8) pool.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use common::wait_until;
use weft::ThreadPool;

const SUBMITTERS: usize = 8;
const PER_SUBMITTER: usize = 50_000;

#[test]
fn every_task_of_eight_concurrent_submitters_runs_exactly_once_and_the_pool_returns_to_idle() {
    let pool = Arc::new(ThreadPool::new(2, 8).unwrap());
    pool.start();
    let runs: Arc<Vec<AtomicU8>> = Arc::new(
        (0..SUBMITTERS * PER_SUBMITTER)
            .map(|_| AtomicU8::new(0))
            .collect(),
    );
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|s| {
            let (pool, runs) = (pool.clone(), runs.clone());
            std::thread::spawn(move || {
                for i in 0..PER_SUBMITTER {
                    let (runs, slot) = (runs.clone(), s * PER_SUBMITTER + i);
                    pool.call_in_thread(move || {
                        runs[slot].fetch_add(1, Ordering::Relaxed);
                    })
                    .unwrap_or_else(|_| panic!("refused"));
                }
            })
        })
        .collect();
    for s in submitters {
        s.join().unwrap();
    }
    let total = (SUBMITTERS * PER_SUBMITTER) as u64;
    assert!(wait_until(|| pool.statistics().completed == total));
    assert!(wait_until(|| {
        let s = pool.statistics();
        s.busy == 0 && s.backlog == 0 && s.idle == s.threads_alive
    }));
    let s = pool.statistics();
    assert!(s.threads_alive >= 2 && s.threads_alive <= 8, "{s:?}");
    assert_eq!(s.panicked, 0);
    pool.stop();
    assert_eq!(pool.statistics().threads_alive, 0);
    let wrong: Vec<usize> = (0..runs.len())
        .filter(|&i| runs[i].load(Ordering::Relaxed) != 1)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} tasks did not run exactly once",
        wrong.len()
    );
}
