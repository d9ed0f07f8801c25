//! The inbox + wake protocol under loom, with a condvar-backed waker in
//! place of the eventfd: no lost call, no lost wakeup, no sleep while
//! work is queued (a sleep with work queued and no wake coming would be
//! reported by loom as a deadlock).

use super::*;
use crate::loom::atomic::Ordering;
use crate::loom::{Arc, Condvar, thread};
use ::loom::sync::atomic::{AtomicBool, AtomicUsize};

#[derive(Default)]
struct CondvarWaker {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Wake for CondvarWaker {
    fn wake(&self) {
        *self.woken.lock() = true;
        self.cv.notify_one();
    }
}

impl CondvarWaker {
    fn sleep(&self) {
        let mut woken = self.woken.lock();
        while !*woken {
            woken = self.cv.wait(woken);
        }
        *woken = false;
    }
}

/// A gate whose next spins are paused (the loop goes straight from
/// `SPINNING` to the re-check).
fn paused_gate() -> SpinGate {
    let gate = SpinGate::new(MAX_SPIN_PAUSE);
    for _ in 0..8 {
        gate.spun(false);
    }
    gate
}

/// The loop's part of a turn: drains the inbox into `batch` and runs what
/// it took; how many.
fn run_queued(inbox: &Inbox<CondvarWaker>, batch: &mut VecDeque<Job>) -> usize {
    inbox.drain_into(batch);
    let n = batch.len();
    for job in batch.drain(..) {
        match job.message {
            Message::Call(f) => f.call(),
            Message::Deliver(d) => d.deliver(),
        }
    }
    n
}

fn run_model(producers: usize, per_producer: usize) {
    run_model_gated(producers, per_producer, || SpinGate::new(MAX_SPIN_PAUSE));
}

fn run_model_gated(producers: usize, per_producer: usize, gate: fn() -> SpinGate) {
    ::loom::model(move || {
        let gate = gate();
        let inbox = Arc::new(Inbox::new(CondvarWaker::default()));
        let ran = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..producers)
            .map(|_| {
                let inbox = inbox.clone();
                let ran = ran.clone();
                thread::spawn(move || {
                    for _ in 0..per_producer {
                        let ran = ran.clone();
                        inbox
                            .push(
                                move || {
                                    ran.fetch_add(1, Ordering::SeqCst);
                                },
                                Location::caller(),
                            )
                            .unwrap_or_else(|_| panic!("inbox closed"));
                    }
                })
            })
            .collect();
        // The loop: drain, run, and sleep only when the protocol allows.
        let total = producers * per_producer;
        let mut batch = VecDeque::new();
        let mut done = 0;
        while done < total {
            done += run_queued(&inbox, &mut batch);
            if done < total && inbox.prepare_to_sleep(&gate, || false) {
                inbox.waker().sleep();
                inbox.awake();
            }
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(ran.load(Ordering::SeqCst), total);
        assert!(inbox.close().is_empty());
    });
}

/// The producer notes its CPU when it writes the waker, and the loop asks
/// for it after the wake (the spin rule's same-CPU test): a side note no
/// step of the protocol reads, so no call and no wake is lost, whether the
/// producer shares the loop's CPU or not.
#[test]
fn loom_inbox_producer_notes_its_cpu_as_it_wakes_the_loop() {
    for producer_cpu in [0, 1] {
        ::loom::model(move || {
            super::cpu::pretend(Some(0));
            let gate = SpinGate::new(MAX_SPIN_PAUSE);
            let inbox = Arc::new(Inbox::new(CondvarWaker::default()));
            let ran = Arc::new(AtomicUsize::new(0));
            let (i2, r2) = (inbox.clone(), ran.clone());
            let t = thread::spawn(move || {
                super::cpu::pretend(Some(producer_cpu));
                for _ in 0..2 {
                    let r2 = r2.clone();
                    let job = move || {
                        r2.fetch_add(1, Ordering::SeqCst);
                    };
                    assert!(i2.push(job, Location::caller()).is_ok());
                }
            });
            let mut batch = VecDeque::new();
            let mut done = 0;
            while done < 2 {
                done += run_queued(&inbox, &mut batch);
                if done < 2 && inbox.prepare_to_sleep(&gate, || false) {
                    inbox.waker().sleep();
                    inbox.awake();
                    let same = inbox.woken_from_this_cpu();
                    // Only a producer on the loop's CPU is ever reported.
                    assert!(!same || producer_cpu == 0);
                    gate.settle_with(false, || same);
                }
            }
            t.join().unwrap();
            assert_eq!(ran.load(Ordering::SeqCst), 2);
        });
    }
}

#[test]
fn loom_inbox_one_producer_two_calls() {
    run_model(1, 2);
}

#[test]
fn loom_inbox_two_producers() {
    run_model(2, 1);
}

/// The same with the loop's spin paused by its gate.
#[test]
fn loom_inbox_paused_spin_one_producer_two_calls() {
    run_model_gated(1, 2, paused_gate);
}

/// A wake with no job (a local task's waker, which marks the task under
/// the `ready` mutex and then notifies): the loop sees it through
/// `other_work`, whether it lands before the spin, during it, or after
/// the loop decided to sleep.
#[test]
fn loom_inbox_notify_without_push_wakes_the_loop() {
    ::loom::model(|| {
        let inbox = Arc::new(Inbox::new(CondvarWaker::default()));
        let ready = Arc::new(Mutex::new(false));
        let (i2, r2) = (inbox.clone(), ready.clone());
        let t = thread::spawn(move || {
            *r2.lock() = true;
            i2.notify();
        });
        inbox.awake();
        let gate = SpinGate::new(MAX_SPIN_PAUSE);
        while !*ready.lock() {
            if inbox.prepare_to_sleep(&gate, || *ready.lock()) {
                inbox.waker().sleep();
                inbox.awake();
            }
        }
        t.join().unwrap();
    });
}

/// A flag set outside the queue (the reactor's stop request: an atomic
/// store, then `notify`) while the loop is awake makes no wake, so the
/// loop must re-check it in `other_work`, after the inbox is marked
/// sleepy. Checking it only before `prepare_to_sleep` (as the reactor
/// once did) deadlocks in this model.
#[test]
fn loom_inbox_flag_set_while_awake_is_seen_before_sleeping() {
    ::loom::model(|| {
        let inbox = Arc::new(Inbox::new(CondvarWaker::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (i2, s2) = (inbox.clone(), stop.clone());
        inbox.awake();
        // Read-modify-writes on both sides, as in the reactor.
        let t = thread::spawn(move || {
            s2.swap(true, Ordering::SeqCst);
            i2.notify();
        });
        let gate = SpinGate::new(MAX_SPIN_PAUSE);
        while !stop.load(Ordering::SeqCst) {
            if inbox.prepare_to_sleep(&gate, || stop.fetch_or(false, Ordering::SeqCst)) {
                inbox.waker().sleep();
                inbox.awake();
            }
        }
        t.join().unwrap();
    });
}

crate::loom::thread_local! {
    /// The job the current thread is pushing (0: none).
    static PUSHING: std::cell::Cell<u64> = std::cell::Cell::new(0);
    /// The jobs run on this (the loop's) thread, in order.
    static RAN: std::cell::RefCell<Vec<u64>> = std::cell::RefCell::new(Vec::new());
}

/// A clock that reads the job its thread is pushing: a date names the push
/// that read it.
struct PushClock;

impl crate::time::Clock for PushClock {
    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(PUSHING.with(std::cell::Cell::get))
    }
}

/// Two producers push jobs 1 and 2 and date their batches after the lock
/// (see `stamp.rs`); before every drain the loop reads the stamp under the
/// lock. A date it reads is always that of the push of the first job the
/// drain then hands over: however the pushes, their late dates and the
/// drains interleave, no date lands on a later batch.
#[test]
fn loom_inbox_stamp_dates_the_batch_of_its_push() {
    ::loom::model(|| {
        let clock: std::sync::Arc<dyn crate::time::Clock> = std::sync::Arc::new(PushClock);
        let inbox = Arc::new(Inbox::with_clock(CondvarWaker::default(), clock));
        let handles: Vec<_> = (1..=2u64)
            .map(|id| {
                let inbox = inbox.clone();
                thread::spawn(move || {
                    PUSHING.with(|p| p.set(id));
                    let job = move || RAN.with(|r| r.borrow_mut().push(id));
                    assert!(inbox.push(job, Location::caller()).is_ok());
                })
            })
            .collect();
        let gate = SpinGate::new(MAX_SPIN_PAUSE);
        let mut batch = VecDeque::new();
        let mut done = 0;
        while done < 2 {
            let seen = {
                // Both producers are on lane 0 (no CPU known under loom).
                let lane = &inbox.lanes[0];
                let queue = lane.queue.lock();
                let queued = queue.jobs.as_ref().is_some_and(|q| !q.is_empty());
                queued.then(|| lane.stamp.read())
            };
            inbox.drain_into(&mut batch);
            let before = RAN.with(|r| r.borrow().len());
            for job in batch.drain(..) {
                match job.message {
                    Message::Call(f) => f.call(),
                    Message::Deliver(d) => d.deliver(),
                }
                done += 1;
            }
            // A drain that found the lane locked took nothing from it.
            if let Some(Some(date)) = seen.filter(|_| RAN.with(|r| r.borrow().len()) > before) {
                let first = RAN.with(|r| r.borrow()[before]);
                assert_eq!(date.as_nanos(), u128::from(first));
            }
            if done < 2 && inbox.prepare_to_sleep(&gate, || false) {
                inbox.waker().sleep();
                inbox.awake();
            }
        }
        for h in handles {
            h.join().unwrap();
        }
        RAN.with(|r| r.borrow_mut().clear());
    });
}

#[test]
fn loom_inbox_push_after_close_hands_job_back() {
    ::loom::model(|| {
        let inbox = Arc::new(Inbox::new(CondvarWaker::default()));
        let i2 = inbox.clone();
        let t = thread::spawn(move || i2.push(|| (), Location::caller()).is_ok());
        let left = inbox.close();
        let accepted = t.join().unwrap();
        // Either the push got in before close (and close returned it) or
        // it was refused: never lost.
        assert_eq!(accepted, left.len() == 1);
    });
}

/// Runs `jobs` (ids) pushed from threads on pretended CPUs through the
/// loop's drain-and-sleep cycle; returns the ids in the order they ran.
fn run_lanes(expected: usize, inbox: &Inbox<CondvarWaker>, ran: &Mutex<Vec<u64>>) {
    let gate = SpinGate::new(MAX_SPIN_PAUSE);
    let mut batch = VecDeque::new();
    let mut done = 0;
    while done < expected {
        done += run_queued(inbox, &mut batch);
        if done < expected && inbox.prepare_to_sleep(&gate, || false) {
            inbox.waker().sleep();
            inbox.awake();
        }
    }
    assert_eq!(ran.lock().len(), expected);
}

/// A call made after another that happened before it runs after it, when
/// the two land in different lanes (producers on two CPUs): the second
/// producer is started by the first after its push. However the loop's
/// drains interleave with the pushes (it may pass lane 0 before job 1
/// lands, then find job 2 in lane 1), job 1 runs first, no job is lost,
/// and the loop never sleeps with a job it could run.
#[test]
fn loom_inbox_lanes_keep_the_order_of_calls_across_threads() {
    ::loom::model(|| {
        let inbox = Arc::new(Inbox::new(CondvarWaker::default()));
        let ran = Arc::new(Mutex::new(Vec::new()));
        let (i1, r1) = (inbox.clone(), ran.clone());
        let t = thread::spawn(move || {
            super::cpu::pretend(Some(0));
            let r = r1.clone();
            assert!(
                i1.push(move || r.lock().push(1), Location::caller())
                    .is_ok()
            );
            thread::spawn(move || {
                super::cpu::pretend(Some(1));
                assert!(
                    i1.push(move || r1.lock().push(2), Location::caller())
                        .is_ok()
                );
            })
        });
        run_lanes(2, &inbox, &ran);
        t.join().unwrap().join().unwrap();
        assert_eq!(*ran.lock(), [1, 2]);
        assert!(inbox.close().is_empty());
        assert_eq!(inbox.len(), 0);
    });
}

/// Two producers on two lanes, one with two calls: each producer's calls
/// run in its order, none is lost, and the loop never sleeps on work.
#[test]
fn loom_inbox_two_lanes_lose_nothing() {
    ::loom::model(|| {
        let inbox = Arc::new(Inbox::new(CondvarWaker::default()));
        let ran = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = [(0u32, &[1u64, 2][..]), (1, &[3][..])]
            .into_iter()
            .map(|(cpu, ids)| {
                let (inbox, ran) = (inbox.clone(), ran.clone());
                let ids = ids.to_vec();
                thread::spawn(move || {
                    super::cpu::pretend(Some(cpu));
                    for id in ids {
                        let ran = ran.clone();
                        assert!(
                            inbox
                                .push(move || ran.lock().push(id), Location::caller())
                                .is_ok()
                        );
                    }
                })
            })
            .collect();
        run_lanes(3, &inbox, &ran);
        for h in handles {
            h.join().unwrap();
        }
        let order = ran.lock().clone();
        let pos = |id| order.iter().position(|&x| x == id).unwrap();
        assert!(pos(1) < pos(2), "{order:?}");
        assert_eq!(inbox.pushes(), 3);
    });
}

/// One producer thread on each of CPUs 0 and 1 (two lanes), each pushing
/// one job with room for `capacity` queued; each says whether it was taken.
fn push_from_two_cpus(
    inbox: &Arc<Inbox<CondvarWaker>>,
    capacity: usize,
) -> Vec<thread::JoinHandle<bool>> {
    (0..2u32)
        .map(|cpu| {
            let inbox = inbox.clone();
            thread::spawn(move || {
                super::cpu::pretend(Some(cpu));
                inbox
                    .push_within(|| (), Location::caller(), capacity)
                    .is_ok()
            })
        })
        .collect()
}

/// How many of `pushes` were taken.
fn accepted(pushes: Vec<thread::JoinHandle<bool>>) -> usize {
    pushes
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|&ok| ok)
        .count()
}

/// The bound holds across lanes: two producers on two CPUs race for the
/// last place; exactly one gets it, and the other's job comes back.
#[test]
fn loom_inbox_bounded_pushes_on_two_lanes_take_the_last_place_once() {
    ::loom::model(|| {
        let inbox = Arc::new(Inbox::new(CondvarWaker::default()));
        let pushes = push_from_two_cpus(&inbox, 1);
        let accepted = accepted(pushes);
        assert_eq!(accepted, 1);
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox.close().len(), 1);
    });
}

/// `close` races pushes on two lanes: every accepted job is handed back
/// by `close` or was drained, in push order; none after `close`.
#[test]
fn loom_inbox_close_hands_back_every_lane() {
    ::loom::model(|| {
        let inbox = Arc::new(Inbox::new(CondvarWaker::default()));
        let pushes = push_from_two_cpus(&inbox, usize::MAX);
        let mut batch = VecDeque::new();
        inbox.drain_into(&mut batch);
        let left = inbox.close();
        let accepted = accepted(pushes);
        assert_eq!(accepted, batch.len() + left.len());
        assert_eq!(inbox.len(), 0);
    });
}
