//! loom models of the wake protocol (run with `--cfg loom`, see
//! `threads/loom_tests.rs`): a `put` that lands before, during or after
//! a consumer's spin is taken; two consumers (one spinning, one waiting,
//! or both waiting) both get an item from two puts, whatever order the
//! signals are taken in.

use super::*;

fn spinning() -> Arc<BlockingQueue> {
    Arc::new(BlockingQueue::with_spin(Duration::from_micros(1)))
}

#[test]
fn loom_two_waiting_consumers_each_get_one_of_two_puts() {
    loom::model(|| {
        let queue = Arc::new(BlockingQueue::new());
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let q = queue.clone();
                thread::spawn(move || matches!(q.get(), WorkItem::Stop))
            })
            .collect();
        queue.put(WorkItem::Stop);
        queue.put(WorkItem::Stop);
        for c in consumers {
            assert!(c.join().unwrap());
        }
    });
}

#[test]
fn loom_one_consumer_takes_three_puts_signalled_once() {
    loom::model(|| {
        let queue = Arc::new(BlockingQueue::new());
        let q = queue.clone();
        let consumer = thread::spawn(move || (0..3).all(|_| matches!(q.get(), WorkItem::Stop)));
        for _ in 0..3 {
            queue.put(WorkItem::Stop);
        }
        assert!(consumer.join().unwrap());
    });
}

#[test]
fn loom_spinning_queue_takes_a_put_racing_the_spin() {
    loom::model(|| {
        let queue = spinning();
        let q = queue.clone();
        let consumer = thread::spawn(move || matches!(q.get(), WorkItem::Stop));
        queue.put(WorkItem::Stop);
        assert!(consumer.join().unwrap());
    });
}

#[test]
fn loom_spinning_queue_serves_a_spinner_and_a_waiter_from_two_puts() {
    loom::model(|| {
        let queue = spinning();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let q = queue.clone();
                thread::spawn(move || matches!(q.get(), WorkItem::Stop))
            })
            .collect();
        queue.put(WorkItem::Stop);
        queue.put(WorkItem::Stop);
        for c in consumers {
            assert!(c.join().unwrap());
        }
    });
}
