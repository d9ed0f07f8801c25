//! Ported from Twisted `src/twisted/_threads/test/test_memory.py`
//! (`createMemoryWorker`).

use std::sync::{Arc, Mutex};

use weft::threads::{ExclusiveWorker, Worker, memory_worker};

fn recorder() -> (Arc<Mutex<Vec<u32>>>, impl Fn(u32) -> weft::threads::Task) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    (log, move |i| {
        let l = l.clone();
        Box::new(move || l.lock().unwrap().push(i))
    })
}

#[test]
fn memory_worker_runs_nothing_until_performed_then_one_item_per_perform_in_fifo_order() {
    fn assert_exclusive<W: ExclusiveWorker>(_: &W) {}
    let (worker, perform) = memory_worker();
    assert_exclusive(&worker);
    let (log, task) = recorder();
    worker.do_work(task(1)).unwrap();
    worker.do_work(task(2)).unwrap();
    assert!(log.lock().unwrap().is_empty());
    assert!(perform.perform());
    assert_eq!(*log.lock().unwrap(), [1]);
    assert!(perform.perform());
    assert_eq!(*log.lock().unwrap(), [1, 2]);
}

#[test]
fn after_quit_do_and_quit_are_already_quit_and_earlier_work_still_performs_then_perform_is_false() {
    let (worker, perform) = memory_worker();
    let (log, task) = recorder();
    worker.do_work(task(1)).unwrap();
    worker.quit().unwrap();
    let refused = worker.do_work(task(2)).unwrap_err();
    assert!(worker.quit().is_err());
    assert!(perform.perform());
    assert!(!perform.perform());
    assert!(!perform.perform()); // the quit marker is never removed
    (refused.0)(); // the refused task is handed back intact
    assert_eq!(*log.lock().unwrap(), [1, 2]);
}

#[test]
fn perform_with_nothing_queued_is_false() {
    let (_worker, perform) = memory_worker();
    assert!(!perform.perform());
}

// Twisted: "the exception propagates out of perform(), but the item has
// already been consumed".
#[test]
fn a_panicking_item_panics_out_of_perform_and_is_consumed() {
    let (worker, perform) = memory_worker();
    worker.do_work(Box::new(|| panic!("boom"))).unwrap();
    let p = perform.clone();
    assert!(std::panic::catch_unwind(move || p.perform()).is_err());
    assert!(!perform.perform());
}
