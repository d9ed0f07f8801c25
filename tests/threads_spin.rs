//! `BlockingQueue::with_spin` under more threads than cores: every item is
//! taken exactly once, in FIFO order per producer, and every consumer that
//! stopped spinning still wakes for its item (a lost wake would hang here).

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use weft::threads::{BlockingQueue, ThreadWorker, WorkItem, WorkQueue, Worker};

/// More threads than the machine has cores, on each side.
fn crowd() -> usize {
    thread::available_parallelism().map_or(2, |n| n.get()) * 2 + 2
}

#[test]
fn a_spinning_queue_shared_by_more_consumers_than_cores_delivers_every_item_once() {
    let queue = Arc::new(BlockingQueue::with_spin(Duration::from_micros(20)));
    let (consumers, producers, per_producer) = (crowd(), crowd(), 500usize);
    let (tx, rx) = mpsc::channel();
    let takers: Vec<_> = (0..consumers)
        .map(|_| {
            let queue = queue.clone();
            thread::spawn(move || {
                while let WorkItem::Run(task) = queue.get() {
                    task();
                }
            })
        })
        .collect();
    let putters: Vec<_> = (0..producers)
        .map(|p| {
            let (queue, tx) = (queue.clone(), tx.clone());
            thread::spawn(move || {
                for i in 0..per_producer {
                    let tx = tx.clone();
                    queue.put(WorkItem::Run(Box::new(move || tx.send((p, i)).unwrap())));
                    if i % 7 == 0 {
                        // Let consumers run dry now and then, so spins both
                        // hit and miss and some consumers park.
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    drop(tx);
    for p in putters {
        p.join().unwrap();
    }
    let mut seen = vec![vec![false; per_producer]; producers];
    for _ in 0..producers * per_producer {
        let (p, i) = rx.recv().unwrap();
        assert!(!seen[p][i], "item {p}/{i} ran twice");
        seen[p][i] = true;
    }
    for _ in 0..consumers {
        queue.put(WorkItem::Stop);
    }
    for t in takers {
        t.join().unwrap();
    }
    assert!(queue.is_empty());
}

#[test]
fn thread_workers_on_spinning_queues_outnumbering_the_cores_run_all_work_in_order() {
    let workers: Vec<_> = (0..crowd())
        .map(|_| {
            ThreadWorker::with_parts(
                BlockingQueue::with_spin(Duration::from_micros(20)),
                |body| thread::Builder::new().spawn(body).map(drop),
            )
            .unwrap()
        })
        .collect();
    let (tx, rx) = mpsc::channel();
    // Round trips: each task is submitted only after the previous answer,
    // the pattern a spin is for; the spins race every other worker's.
    for round in 0..200usize {
        for (w, worker) in workers.iter().enumerate() {
            let tx = tx.clone();
            worker
                .do_work(Box::new(move || tx.send((w, round)).unwrap()))
                .unwrap_or_else(|_| panic!("refused"));
        }
        let mut got: Vec<_> = (0..workers.len()).map(|_| rx.recv().unwrap()).collect();
        got.sort_unstable();
        let want: Vec<_> = (0..workers.len()).map(|w| (w, round)).collect();
        assert_eq!(got, want);
    }
    for worker in &workers {
        worker.quit().unwrap();
    }
}
