//! loom models of the wake protocol (run with `--cfg loom`, see
//! `threads/loom_tests.rs`): a `put` that lands before, during or after
//! a consumer's spin is taken; two consumers (one spinning, one waiting,
//! or both waiting) both get an item from two puts, or from one batch of
//! two (`put_batch`), whatever order the signals are taken in.

use super::*;
use crate::loom::{Arc, thread};

fn spinning() -> Arc<BlockingQueue> {
    Arc::new(BlockingQueue::with_spin(Duration::from_micros(1)))
}

/// `consumers` threads each take one item from `queue`, then one more
/// thread takes `extra` items; as many puts as items, each taken once.
fn model_puts(queue: Arc<BlockingQueue>, consumers: usize, extra: usize) {
    let mut threads: Vec<_> = (0..consumers)
        .map(|_| {
            let q = queue.clone();
            thread::spawn(move || matches!(q.get(), WorkItem::Stop))
        })
        .collect();
    if extra > 0 {
        let q = queue.clone();
        threads.push(thread::spawn(move || {
            (0..extra).all(|_| matches!(q.get(), WorkItem::Stop))
        }));
    }
    for _ in 0..consumers + extra {
        queue.put(WorkItem::Stop);
    }
    for t in threads {
        assert!(t.join().unwrap());
    }
}

#[test]
fn loom_two_waiting_consumers_each_get_one_of_two_puts() {
    loom::model(|| model_puts(Arc::new(BlockingQueue::new()), 2, 0));
}

#[test]
fn loom_one_consumer_takes_three_puts_signalled_once() {
    loom::model(|| model_puts(Arc::new(BlockingQueue::new()), 0, 3));
}

#[test]
fn loom_spinning_queue_takes_a_put_racing_the_spin() {
    loom::model(|| model_puts(spinning(), 1, 0));
}

#[test]
fn loom_spinning_queue_serves_a_spinner_and_a_waiter_from_two_puts() {
    loom::model(|| model_puts(spinning(), 2, 0));
}

/// As [`model_puts`], with every item put as one batch.
fn model_batch(queue: Arc<BlockingQueue>, consumers: usize) {
    let threads: Vec<_> = (0..consumers)
        .map(|_| {
            let q = queue.clone();
            thread::spawn(move || matches!(q.get(), WorkItem::Stop))
        })
        .collect();
    queue.put_batch((0..consumers).map(|_| WorkItem::Stop).collect());
    for t in threads {
        assert!(t.join().unwrap());
    }
}

#[test]
fn loom_two_waiting_consumers_each_get_one_item_of_a_batch_of_two() {
    loom::model(|| model_batch(Arc::new(BlockingQueue::new()), 2));
}

#[test]
fn loom_spinning_queue_serves_a_spinner_and_a_waiter_from_a_batch_of_two() {
    loom::model(|| model_batch(spinning(), 2));
}

/// A producer that must not wait (`try_put_batch`) offers a batch of
/// `Run(i)` items, `0..n`, while `consumers` threads take them: whenever
/// the lock is held it gets the whole batch back (none queued) and offers
/// it again after a yield. Every item is taken exactly once, and each
/// consumer sees its items in the batch's order.
fn model_try_batch(queue: Arc<BlockingQueue>, consumers: usize, n: usize) {
    let taken = Arc::new(Mutex::new(Vec::new()));
    let per = n / consumers;
    let threads: Vec<_> = (0..consumers)
        .map(|_| {
            let (q, taken) = (queue.clone(), taken.clone());
            thread::spawn(move || {
                let mut mine = Vec::new();
                for _ in 0..per {
                    match q.get() {
                        WorkItem::Run(task) => {
                            task();
                            mine.push(*taken.lock().last().expect("the task recorded itself"));
                        }
                        WorkItem::Stop => panic!("only tasks were put"),
                    }
                }
                mine
            })
        })
        .collect();
    let mut items: Vec<WorkItem> = (0..n)
        .map(|i| {
            let taken = taken.clone();
            WorkItem::Run(Box::new(move || taken.lock().push(i)))
        })
        .collect();
    loop {
        match queue.try_put_batch(items) {
            Ok(()) => break,
            Err(back) => {
                assert_eq!(back.len(), n, "handed back whole");
                items = back;
                thread::yield_now();
            }
        }
    }
    for t in threads {
        let mine = t.join().unwrap();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "in order: {mine:?}");
    }
    let mut all = taken.lock().clone();
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "each exactly once");
}

#[test]
fn loom_a_try_batch_racing_a_waiting_consumer_is_taken_whole_in_order() {
    loom::model(|| model_try_batch(Arc::new(BlockingQueue::new()), 1, 2));
}

#[test]
fn loom_a_try_batch_racing_a_spinner_and_a_waiter_serves_both() {
    loom::model(|| model_try_batch(spinning(), 2, 2));
}
