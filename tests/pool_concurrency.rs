//! The pool under mixed concurrent use, with more threads than cores:
//! plain, callback and cancellable submissions from several threads while
//! the size changes, and submissions racing `stop`; every job runs, is
//! withdrawn, or is handed back exactly once, and the statistics are exact
//! once the pool is quiescent.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use common::wait_until;
use weft::ThreadPool;

const SUBMITTERS: usize = 6;
const PER_SUBMITTER: usize = 20_000;

/// Per job: 1 when it ran, 2 when its closure was dropped unrun.
struct Outcomes(Vec<AtomicU8>);

impl Outcomes {
    fn new(n: usize) -> Arc<Outcomes> {
        Arc::new(Outcomes((0..n).map(|_| AtomicU8::new(0)).collect()))
    }

    fn mark(&self, slot: usize, how: u8) {
        assert_eq!(
            self.0[slot].swap(how, Ordering::SeqCst),
            0,
            "job {slot} settled twice"
        );
    }
}

/// A job's closure: marks "ran" when called, "dropped" when dropped unrun.
struct Job {
    outcomes: Arc<Outcomes>,
    slot: usize,
    ran: bool,
}

impl Job {
    fn run(mut self) {
        self.ran = true;
        self.outcomes.mark(self.slot, 1);
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.ran {
            self.outcomes.mark(self.slot, 2);
        }
    }
}

#[test]
fn mixed_submissions_under_resizing_settle_every_job_exactly_once() {
    let pool = Arc::new(ThreadPool::new(1, 6).unwrap());
    pool.start();
    let outcomes = Outcomes::new(SUBMITTERS * PER_SUBMITTER);
    let cancelled = Arc::new(AtomicUsize::new(0));
    let resizing = Arc::new(AtomicBool::new(true));
    let resizer = {
        let (pool, resizing) = (pool.clone(), resizing.clone());
        std::thread::spawn(move || {
            let sizes = [(1, 6), (2, 3), (0, 1), (3, 8)];
            let mut i = 0;
            while resizing.load(Ordering::SeqCst) {
                let (min, max) = sizes[i % sizes.len()];
                pool.adjust_pool_size(min, max).unwrap();
                i += 1;
                std::thread::yield_now();
            }
            pool.adjust_pool_size(1, 6).unwrap();
        })
    };
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|s| {
            let (pool, outcomes, cancelled) = (pool.clone(), outcomes.clone(), cancelled.clone());
            std::thread::spawn(move || {
                for i in 0..PER_SUBMITTER {
                    let slot = s * PER_SUBMITTER + i;
                    let job = Job {
                        outcomes: outcomes.clone(),
                        slot,
                        ran: false,
                    };
                    match i % 4 {
                        // Unkeyed.
                        0 | 1 => pool
                            .call_in_thread(move || job.run())
                            .unwrap_or_else(|_| panic!("refused")),
                        2 => pool
                            .call_in_thread_with_callback(move || job.run(), |r| r.unwrap())
                            .unwrap_or_else(|_| panic!("refused")),
                        // Keyed, behind the unkeyed ones; withdrawn at once
                        // when still queued.
                        _ => {
                            let handle = pool
                                .call_in_thread_cancellable(move || job.run())
                                .unwrap_or_else(|_| panic!("refused"));
                            if handle.cancel() {
                                cancelled.fetch_add(1, Ordering::SeqCst);
                                assert_eq!(
                                    outcomes.0[slot].load(Ordering::SeqCst),
                                    2,
                                    "a withdrawn job's closure is dropped at once"
                                );
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for s in submitters {
        s.join().unwrap();
    }
    resizing.store(false, Ordering::SeqCst);
    resizer.join().unwrap();
    let cancelled = cancelled.load(Ordering::SeqCst);
    let total = SUBMITTERS * PER_SUBMITTER;
    let ran = (total - cancelled) as u64;
    assert!(wait_until(|| pool.statistics().completed == ran));
    assert!(wait_until(|| {
        let s = pool.statistics();
        s.busy == 0 && s.backlog == 0 && s.idle == s.threads_alive
    }));
    let s = pool.statistics();
    assert_eq!((s.completed, s.panicked, s.backlog), (ran, 0, 0), "{s:?}");
    assert!(s.oldest_backlog.is_none());
    pool.stop();
    assert_eq!(pool.statistics().threads_alive, 0);
    let count = |how| {
        outcomes
            .0
            .iter()
            .filter(|o| o.load(Ordering::SeqCst) == how)
            .count()
    };
    assert_eq!((count(1), count(2)), (total - cancelled, cancelled));
}

#[test]
fn stop_racing_submissions_runs_every_accepted_job_and_hands_back_the_rest() {
    const PER: usize = 50_000;
    let pool = Arc::new(ThreadPool::new(2, 2).unwrap());
    pool.start();
    let outcomes = Outcomes::new(4 * PER);
    let accepted = Arc::new(AtomicUsize::new(0));
    let submitted = Arc::new(AtomicUsize::new(0));
    let submitters: Vec<_> = (0..4)
        .map(|s| {
            let (pool, outcomes, accepted, submitted) = (
                pool.clone(),
                outcomes.clone(),
                accepted.clone(),
                submitted.clone(),
            );
            std::thread::spawn(move || {
                for i in 0..PER {
                    let job = Job {
                        outcomes: outcomes.clone(),
                        slot: s * PER + i,
                        ran: false,
                    };
                    submitted.fetch_add(1, Ordering::SeqCst);
                    match pool.call_in_thread(move || job.run()) {
                        Ok(()) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                        // Handed back: dropping it marks it unrun.
                        Err(refused) => drop(refused),
                    }
                }
            })
        })
        .collect();
    assert!(wait_until(|| submitted.load(Ordering::SeqCst) > PER));
    let report = pool.stop();
    for s in submitters {
        s.join().unwrap();
    }
    assert!(report.is_complete(), "{report:?}");
    let accepted = accepted.load(Ordering::SeqCst);
    let s = pool.statistics();
    assert_eq!(
        (s.completed, s.backlog, s.threads_alive),
        (accepted as u64, 0, 0)
    );
    let ran = outcomes
        .0
        .iter()
        .filter(|o| o.load(Ordering::SeqCst) == 1)
        .count();
    let unrun = outcomes
        .0
        .iter()
        .filter(|o| o.load(Ordering::SeqCst) == 2)
        .count();
    assert_eq!((ran, unrun), (accepted, 4 * PER - accepted));
}
