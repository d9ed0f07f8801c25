//! `call_in_thread` keeps a small closure in the queue slot (no box) and
//! boxes a large one: both paths keep every guarantee. Each closure runs
//! once or is handed back or dropped unrun, its captures dropped exactly
//! once; a panic in either is caught and counted; a stopped pool hands the
//! closure back intact.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use weft::ThreadPool;

/// Counts drops of a capture.
struct Probe(Arc<AtomicUsize>);

impl Drop for Probe {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Larger than any inline slot: the pool must box it.
const BIG: usize = 16;

/// What the jobs of one test record, shared through each job's probe.
#[derive(Default)]
struct Record {
    drops: AtomicUsize,
    seen: Mutex<Vec<usize>>,
}

/// Counts its own drop in the shared record.
struct Tracked(Arc<Record>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.drops.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn small_and_large_closures_each_run_exactly_once_and_drop_their_captures() {
    let pool = ThreadPool::new(1, 2).unwrap();
    pool.start();
    let record = Arc::new(Record::default());
    const EACH: usize = 200;
    for i in 0..EACH {
        // Small (two words: kept in the slot).
        let t = Tracked(record.clone());
        pool.call_in_thread(move || t.0.seen.lock().unwrap().push(i))
            .unwrap_or_else(|_| unreachable!());
        // Large (boxed).
        let (t, big) = (Tracked(record.clone()), [i; BIG]);
        pool.call_in_thread(move || t.0.seen.lock().unwrap().push(big[BIG - 1]))
            .unwrap_or_else(|_| unreachable!());
    }
    pool.stop(); // waits for the backlog
    let mut seen = record.seen.lock().unwrap().clone();
    seen.sort_unstable();
    let expected: Vec<usize> = (0..EACH).flat_map(|i| [i, i]).collect();
    assert_eq!(seen, expected, "each index ran once per kind");
    assert_eq!(record.drops.load(Ordering::SeqCst), 2 * EACH);
    assert_eq!(pool.statistics().completed, 2 * EACH as u64);
}

#[test]
fn cancelled_small_and_large_closures_are_dropped_at_once_unrun() {
    let pool = ThreadPool::new(0, 1).unwrap(); // not started: work waits
    let drops = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let (probe, r) = (Probe(drops.clone()), ran.clone());
    let small = pool
        .call_in_thread_cancellable(move || {
            let _p = probe;
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap_or_else(|_| unreachable!());
    let (probe, r, big) = (Probe(drops.clone()), ran.clone(), [1u64; BIG]);
    let large = pool
        .call_in_thread_cancellable(move || {
            let _p = probe;
            r.fetch_add(big.len(), Ordering::SeqCst);
        })
        .unwrap_or_else(|_| unreachable!());
    assert_eq!(pool.statistics().backlog, 2);
    assert!(small.cancel());
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "small closure dropped at once"
    );
    assert!(large.cancel());
    assert_eq!(
        drops.load(Ordering::SeqCst),
        2,
        "large closure dropped at once"
    );
    assert_eq!(pool.statistics().backlog, 0);
    pool.start();
    pool.stop();
    assert_eq!(ran.load(Ordering::SeqCst), 0, "withdrawn work never runs");
    assert_eq!(drops.load(Ordering::SeqCst), 2, "and is dropped only once");
}

#[test]
fn a_stopped_pool_hands_back_small_and_large_closures_intact() {
    let pool = ThreadPool::new(1, 1).unwrap();
    pool.start();
    pool.stop();
    let drops = Arc::new(AtomicUsize::new(0));
    let probe = Probe(drops.clone());
    let small = pool
        .call_in_thread(move || drop(probe))
        .expect_err("a stopped pool refuses work");
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    (small.0)();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    let (probe, big) = (Probe(drops.clone()), [3u64; BIG]);
    let large = pool
        .call_in_thread(move || {
            let _p = probe;
            assert_eq!(big[0], 3);
        })
        .expect_err("a stopped pool refuses work");
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    (large.0)();
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}

#[test]
fn a_panic_in_a_small_or_large_closure_is_caught_counted_and_the_thread_reused() {
    let pool = ThreadPool::new(1, 1).unwrap();
    pool.start();
    let drops = Arc::new(AtomicUsize::new(0));
    let probe = Probe(drops.clone());
    pool.call_in_thread(move || {
        let _p = probe;
        panic!("small");
    })
    .unwrap_or_else(|_| unreachable!());
    let (probe, big) = (Probe(drops.clone()), [0u8; 8 * BIG]);
    pool.call_in_thread(move || {
        let _p = probe;
        panic!("large {}", big.len());
    })
    .unwrap_or_else(|_| unreachable!());
    let (tx, rx) = mpsc::channel();
    pool.call_in_thread(move || tx.send(()).unwrap())
        .unwrap_or_else(|_| unreachable!());
    rx.recv().unwrap();
    pool.stop();
    let s = pool.statistics();
    assert_eq!((s.panicked, s.completed), (2, 3));
    assert_eq!(
        drops.load(Ordering::SeqCst),
        2,
        "unwinding dropped each capture once"
    );
    assert_eq!(s.threads_created, 1, "the thread was reused");
}
