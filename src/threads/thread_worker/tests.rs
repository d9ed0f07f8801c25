//! `ThreadWorker::try_do_work_batch`: busy while another thread holds the
//! worker's quit gate or its queue's lock, refused once it quit; either
//! way every task comes back, in order, unqueued.

use std::sync::mpsc;

use super::*;

/// Runs `f` while another thread is inside `hold` (a thread preempted with
/// a lock held): `hold` takes the lock and calls its argument, which
/// returns once `f` has.
fn while_held_elsewhere<R>(hold: impl FnOnce(&dyn Fn()) + Send, f: impl FnOnce() -> R) -> R {
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            hold(&|| {
                held_tx.send(()).unwrap();
                let _ = release_rx.recv();
            })
        });
        held_rx.recv().unwrap();
        let out = f();
        release_tx.send(()).unwrap();
        out
    })
}

/// A task that records `i` in `order` when it runs.
fn record(order: &Arc<Mutex<Vec<u32>>>, i: u32) -> Task {
    let order = order.clone();
    Box::new(move || order.lock().push(i))
}

#[test]
fn try_do_work_batch_hands_back_busy_tasks_which_then_run_in_order_after_later_ones_wait() {
    let queue = Arc::new(BlockingQueue::new());
    let (start_tx, start_rx) = mpsc::channel();
    let worker = ThreadWorker::with_parts(SharedQueue(queue.clone()), move |body| {
        start_tx.send(body).unwrap();
        Ok(())
    })
    .unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let task = |i| record(&order, i);
    let back = while_held_elsewhere(
        |wait| queue.with_lock_held(wait),
        || worker.try_do_work_batch(vec![task(1), task(2)]),
    );
    let Err(TryDoWorkError::Busy(back)) = back else {
        panic!("the queue was busy: handed back");
    };
    assert_eq!(back.len(), 2);
    assert!(queue.is_empty());
    // The caller offers them again first, with what came after them.
    let mut again = back;
    again.push(task(3));
    assert!(worker.try_do_work_batch(again).is_ok());
    worker.quit().unwrap();
    let Err(TryDoWorkError::Quit(refused)) = worker.try_do_work_batch(vec![task(4)]) else {
        panic!("the worker quit: refused");
    };
    assert_eq!(refused.len(), 1);
    start_rx.recv().unwrap()(); // the thread's body: runs the tasks, stops
    assert_eq!(*order.lock(), [1, 2, 3]);
}

#[test]
fn try_do_work_batch_is_busy_while_another_thread_holds_the_quit_gate() {
    let worker = ThreadWorker::with_parts(BlockingQueue::new(), |_body| Ok(())).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let back = while_held_elsewhere(
        |wait| {
            let _gate = worker.quit.lock(); // a `do_work` or `quit` in progress
            wait();
        },
        || worker.try_do_work_batch(vec![record(&order, 1), record(&order, 2)]),
    );
    let Err(TryDoWorkError::Busy(back)) = back else {
        panic!("the gate was held: handed back");
    };
    assert!(worker.queue().is_empty(), "nothing queued");
    // Handed back whole and in order, unrun.
    for task in back {
        task();
    }
    assert_eq!(*order.lock(), [1, 2]);
}

#[test]
fn try_do_work_batch_after_quit_hands_every_task_back_in_order_and_queues_nothing() {
    let worker = ThreadWorker::with_parts(BlockingQueue::new(), |_body| Ok(())).unwrap();
    worker.quit().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<Task> = (0..3).map(|i| record(&order, i)).collect();
    let err = worker.try_do_work_batch(tasks).unwrap_err();
    assert!(err.is_quit() && !err.is_busy());
    assert_eq!(err.to_string(), "already quit");
    assert_eq!(worker.queue().len(), 1, "only the stop order");
    for task in err.into_inner() {
        task();
    }
    assert_eq!(*order.lock(), [0, 1, 2]);
}

/// A queue shared through an `Arc`, as weft-db's groups share one.
struct SharedQueue(Arc<BlockingQueue>);

impl WorkQueue for SharedQueue {
    fn put(&self, item: WorkItem) {
        self.0.put(item);
    }
    fn get(&self) -> WorkItem {
        self.0.get()
    }
    fn try_put_batch(&self, items: Vec<WorkItem>) -> Result<(), Vec<WorkItem>> {
        self.0.try_put_batch(items)
    }
}
