//! Many shared records queued in one lock hold (the bridge hands a loop
//! turn's reactor-pool jobs over this way, `bridge/table.rs`).
//!
//! Each record is queued exactly as [`submit_shared_at`] would queue it, in
//! order, under one hold of the pool's lock: the same acceptance check (made
//! once, for the whole batch), the same per-item decision of
//! [`State::submit`], the same keys. What differs is only when the wakes
//! are carried out: after the whole batch is queued, each at most once
//! (the first claim's sleeper wakes the next as it takes its item, so one
//! notify serves a batch, as it serves a burst). So a woken thread finds
//! the batch queued instead of racing the submitter for the lock on every
//! item.
//!
//! [`submit_shared_at`]: super::ThreadPool::submit_shared_at
//! [`State::submit`]: super::state::State::submit

use std::panic::Location;
use std::sync::Arc;

use super::queue::{Item, Meta, Queued};
use super::state::Wake;
use super::thread::Core;
use super::{SharedTask, TaskKey, ThreadPool};

impl ThreadPool {
    /// Queues shared records in order under one hold of the pool's lock:
    /// `next(key)` is called, under the lock, with the key the next record
    /// gets, until it returns `None`; it must not block or run user code
    /// (nor drop a record), and should not allocate but on a rare path (the
    /// bridge's hand-over sets aside a job cancelled while kept, to be
    /// dropped after the lock). Returns `false`, without calling
    /// `next`, when the pool refuses work (as
    /// [`submit_shared_at`](ThreadPool::submit_shared_at) would).
    pub(crate) fn submit_shared_batch_at(
        &self,
        mut next: impl FnMut(TaskKey) -> Option<(Arc<dyn SharedTask>, &'static Location<'static>)>,
    ) -> bool {
        let core = &self.core;
        let enqueued = core.job_stamp();
        let Some(mut st) = self.lock_to_submit() else {
            return false;
        };
        let mut queued = 0;
        while let Some((task, location)) = next(st.queue.next_key()) {
            st.queue.push(Queued {
                item: Item::shared(task),
                meta: Meta { location, enqueued },
            });
            queued += 1;
        }
        // One decision per item, as `submit` makes, until one says
        // `Nothing`: it changed no count, so every later one would too.
        let mut wakes = Wakes::default();
        for _ in 0..queued {
            match st.decide() {
                Wake::Nothing => break,
                wake => wakes.add(wake),
            }
        }
        drop(st);
        wakes.carry_out(core);
        true
    }
}

/// The wakes a batch asks for, each kind at most once (thread starts: as
/// many as were counted, since each ticket counts a thread).
#[derive(Default)]
struct Wakes {
    worker: bool,
    spinner: bool,
    spare: bool,
    starts: Vec<Wake>,
}

impl Wakes {
    fn add(&mut self, wake: Wake) {
        match wake {
            Wake::Nothing => {}
            Wake::Worker => self.worker = true,
            Wake::Spinner => self.spinner = true,
            Wake::Spare => self.spare = true,
            start @ Wake::Start(_) => self.starts.push(start),
        }
    }

    /// Outside the lock: starts first (each a counted thread that takes
    /// backlog), then the notifies.
    fn carry_out(self, core: &crate::loom::Arc<Core>) {
        for start in self.starts {
            Core::wake(core, start);
        }
        if self.spinner {
            Core::wake(core, Wake::Spinner);
        }
        if self.worker {
            Core::wake(core, Wake::Worker);
        }
        if self.spare {
            Core::wake(core, Wake::Spare);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::panic::Location;
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::sync::mpsc;

    use super::super::{PanicCounter, SharedTask, ThreadPool};

    /// Records its number when run, and whether it was discarded.
    struct Record(usize, Arc<Mutex<Vec<usize>>>);

    impl SharedTask for Record {
        fn run(self: Arc<Self>, _: &PanicCounter<'_>) {
            self.1.lock().unwrap().push(self.0);
        }
        fn discard(self: Arc<Self>) {
            self.1.lock().unwrap().push(usize::MAX);
        }
    }

    fn batch(pool: &ThreadPool, log: &Arc<Mutex<Vec<usize>>>, n: usize) -> Option<Vec<u64>> {
        let mut keys = Vec::new();
        let queued = pool.submit_shared_batch_at(|key| {
            (keys.len() < n).then(|| {
                keys.push(key.0);
                (
                    Arc::new(Record(keys.len() - 1, log.clone())) as Arc<dyn SharedTask>,
                    Location::caller(),
                )
            })
        });
        queued.then_some(keys)
    }

    #[test]
    fn a_batch_queues_in_order_with_consecutive_keys_and_exact_counts() {
        let pool = ThreadPool::new(0, 1).unwrap(); // not started: work waits
        let log = Arc::new(Mutex::new(Vec::new()));
        pool.call_in_thread(|| ())
            .unwrap_or_else(|_| unreachable!());
        let keys = batch(&pool, &log, 5).expect("accepted");
        assert_eq!(
            keys,
            (1..6).collect::<Vec<u64>>(),
            "the keys a push would give"
        );
        assert_eq!(pool.statistics().backlog, 6);
        // A key of the batch withdraws its record at once.
        assert!(pool.withdraw(super::TaskKey(keys[2])));
        assert_eq!(pool.statistics().backlog, 5);
        pool.start();
        pool.stop();
        assert_eq!(
            *log.lock().unwrap(),
            vec![0, 1, 3, 4],
            "FIFO, the withdrawn one never ran"
        );
        assert_eq!(pool.statistics().completed, 5);
    }

    #[test]
    fn a_stopped_pool_refuses_a_batch_without_taking_a_record() {
        let pool = ThreadPool::new(0, 1).unwrap();
        pool.start();
        pool.stop();
        let queued = pool.submit_shared_batch_at(|_| unreachable!("refused before any record"));
        assert!(!queued);
    }

    #[test]
    fn one_batch_on_idle_threads_runs_every_record_once() {
        let pool = ThreadPool::new(2, 2).unwrap();
        pool.start();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        batch(&pool, &log, 100).expect("accepted");
        pool.call_in_thread(move || tx.send(()).unwrap())
            .unwrap_or_else(|_| unreachable!());
        rx.recv().unwrap();
        pool.stop();
        let mut seen = log.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        let s = pool.statistics();
        assert_eq!((s.completed, s.backlog), (101, 0));
    }
}
