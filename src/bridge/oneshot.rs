//! A one-shot cross-thread reply cell: the hand-off under
//! `blocking_call_from_thread` and `CrossThreadFuture`.
//!
//! The loop holds the [`Sender`]; the waiting thread (or a foreign runtime's
//! task) holds the [`Receiver`]. Invariants:
//! - exactly one outcome is stored: the sender's value, or `LoopStopped` if
//!   the sender is dropped unsent (the loop shut down or the closure was
//!   discarded), so a waiter can never hang on a reply that will not come;
//! - a registered `Waker` is woken after the value is stored, outside the
//!   lock;
//! - a blocking waiter may first spin for a bounded time on `ready` (set,
//!   under the lock, once an outcome is stored) before it parks on the
//!   condvar ([`Receiver::spin_for`]); the sender notifies the condvar only
//!   when the waiter said, under the lock, that it parks (`parked`), so a
//!   reply caught by the spin costs the loop no futex wake. A waiter that
//!   sets `parked` and then waits releases the lock atomically with
//!   beginning to wait, so a sender that finds `parked` notifies a waiter
//!   that is already waiting, and one that does not find it stored the
//!   value before the waiter looked: no lost wake either way.
//! - a sender that stores a reply for a receiver that is neither parked nor
//!   registered a waker, on the CPU the receiver was made on, yields its
//!   CPU once after leaving the lock ([`Sender::send`]; a hint, never
//!   needed for correctness: the receiver takes the outcome whenever it
//!   runs).
//!
//! # Handing the CPU over
//!
//! A blocking caller that shares the loop's only core is preempted now and
//! then by the loop it wakes with its call's eventfd write, before it
//! parks. The loop then runs the call and stores the reply while the
//! caller, runnable, waits for the CPU. Left alone, the loop finishes its
//! turn and blocks in `epoll_wait`, the caller takes its reply, and its
//! next call finds the loop asleep: a second eventfd write and wake-up.
//! Yielding once right after storing lets the caller run at once: it takes
//! the reply and queues its next call into a loop that is still awake, so
//! the pair of sleeps and writes is gone. (On Linux's EEVDF scheduler the
//! yield also moves the loop's deadline a slice on, so the caller's next
//! wake-ups preempt it again. `blocking_call_rtt` on one core: eventfd
//! writes went from 22% of calls to 5.4%, d685858 made 7%.) The
//! yield never waits: with no other task runnable on the CPU it returns at
//! once. It is never made for a receiver on another CPU (it would spin or
//! park there on its own), nor for a receiver that parked (the futex wake
//! hands it over) or awaits with a waker, nor when either CPU is unknown.

use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{CallError, ThreadError};
use crate::loom::atomic::{AtomicBool, Ordering};
use crate::loom::{Arc, Condvar, Mutex, Spin};
use crate::reactor::cpu;

struct Slot<T> {
    value: Option<Result<T, CallError>>,
    waker: Option<Waker>,
    sent: bool,
    /// The blocking waiter is (about to be) waiting on the condvar.
    parked: bool,
}

struct Shared<T> {
    slot: Mutex<Slot<T>>,
    cv: Condvar,
    /// `slot.sent`, readable without the lock (for a spinning waiter).
    ready: AtomicBool,
    /// The CPU the receiver was made on (its thread's, a hint), for the
    /// hand-over (module notes).
    cpu: Option<u32>,
}

pub(crate) struct Sender<T> {
    shared: Option<Arc<Shared<T>>>,
}

pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// A cell whose receiver is the calling thread's (its CPU noted for the
/// hand-over, module notes).
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot {
            value: None,
            waker: None,
            sent: false,
            parked: false,
        }),
        cv: Condvar::new(),
        ready: AtomicBool::new(false),
        cpu: cpu::current(),
    });
    (
        Sender {
            shared: Some(shared.clone()),
        },
        Receiver { shared },
    )
}

/// A receiver whose outcome is `value` already (no sender, no hand-over).
pub(crate) fn ready<T>(value: Result<T, CallError>) -> Receiver<T> {
    let (mut tx, rx) = channel();
    if let Some(shared) = tx.shared.take() {
        let _ = deliver(&shared, value);
    }
    rx
}

impl<T> Sender<T> {
    /// Whether an outcome is already stored (the receiver cancelled).
    pub(crate) fn is_done(&self) -> bool {
        self.shared.as_ref().is_none_or(|s| s.slot.lock().sent)
    }

    /// Stores the outcome (unless the receiver cancelled) and wakes the
    /// receiver; returns whether it then yielded its CPU to a receiver that
    /// was waiting to run on it (module notes, "Handing the CPU over").
    pub(crate) fn send(mut self, value: Result<T, CallError>) -> bool {
        let Some(shared) = self.shared.take() else {
            return false;
        };
        let unwaited = deliver(&shared, value) == Some(false);
        if unwaited && shared.cpu.is_some() && shared.cpu == cpu::current() {
            crate::loom::thread::yield_now();
            return true;
        }
        false
    }
}

/// Stores `value` unless an outcome is already stored (`None`), and wakes
/// whoever waits for it; `Some(waited)`: stored, and the receiver had
/// parked or registered a waker. This is the single decision between
/// completion and cancel.
fn deliver<T>(shared: &Shared<T>, value: Result<T, CallError>) -> Option<bool> {
    let (waker, parked) = {
        let mut slot = shared.slot.lock();
        if slot.sent {
            return None;
        }
        slot.sent = true;
        slot.value = Some(value);
        shared.ready.store(true, Ordering::Release);
        (slot.waker.take(), slot.parked)
    };
    if parked {
        shared.cv.notify_all();
    }
    let woken = waker.is_some();
    if let Some(w) = waker {
        w.wake();
    }
    Some(parked || woken)
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let _ = deliver(&shared, Err(CallError::LOOP_STOPPED));
        }
    }
}

impl<T> Receiver<T> {
    /// Decides the outcome as `Cancelled` unless one is already stored;
    /// `true` means it was (and no sender can change it any more).
    pub(crate) fn cancel(&self) -> bool {
        deliver(&self.shared, Err(CallError::Failed(ThreadError::Cancelled))).is_some()
    }

    /// Identifies the cell while either end lives (its address).
    pub(crate) fn key(&self) -> usize {
        std::ptr::from_ref::<Shared<T>>(&self.shared) as usize
    }

    /// Blocks until the outcome arrives.
    pub(crate) fn wait(&self) -> Result<T, CallError> {
        self.wait_until(None)
    }

    /// Blocks at most `timeout`; `TimedOut` leaves the outcome to a later wait.
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> Result<T, CallError> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.wait_until(Some(deadline)),
            None => self.wait_until(None),
        }
    }

    /// Whether an outcome is stored (one atomic load, no lock).
    pub(crate) fn has_outcome(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// Spins for at most `limit` until an outcome is stored, without
    /// blocking; returns whether one is (the caller then takes it with
    /// [`wait`](Self::wait), which no longer blocks).
    pub(crate) fn spin_for(&self, limit: Duration) -> bool {
        let mut spin = Spin::new(limit);
        loop {
            if self.has_outcome() {
                return true;
            }
            if !spin.again() {
                return false;
            }
        }
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<T, CallError> {
        let mut slot = self.shared.slot.lock();
        loop {
            if let Some(v) = slot.value.take() {
                return v;
            }
            if slot.sent {
                return Err(CallError::AlreadyTaken);
            }
            slot.parked = true;
            slot = match deadline {
                None => self.shared.cv.wait(slot),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        slot.parked = false;
                        return Err(CallError::TimedOut);
                    }
                    self.shared.cv.wait_timeout(slot, left).0
                }
            };
            slot.parked = false;
        }
    }

    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<T, CallError>> {
        let mut slot = self.shared.slot.lock();
        if let Some(v) = slot.value.take() {
            return Poll::Ready(v);
        }
        if slot.sent {
            return Poll::Ready(Err(CallError::AlreadyTaken));
        }
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            slot.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.shared.slot.lock().sent
    }

    /// Whether the blocking waiter has said it parks (tests wait for it).
    #[cfg(all(test, not(loom)))]
    fn is_parked(&self) -> bool {
        self.shared.slot.lock().parked
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    //! The hand-over rule with pretended CPUs (`reactor::cpu::pretend`).

    use std::sync::Arc as StdArc;
    use std::task::Wake;

    use super::*;

    /// Sends `v` from a fresh thread on `cpu`; returns `send`'s verdict.
    fn send_from(cpu: Option<u32>, tx: Sender<u32>, v: u32) -> bool {
        std::thread::spawn(move || {
            cpu::pretend(cpu);
            tx.send(Ok(v))
        })
        .join()
        .unwrap()
    }

    #[test]
    fn a_reply_for_a_receiver_not_yet_waiting_on_the_senders_cpu_hands_the_cpu_over() {
        cpu::pretend(Some(2));
        let (tx, rx) = channel::<u32>();
        assert!(
            send_from(Some(2), tx, 7),
            "same CPU, receiver not parked: yield"
        );
        assert_eq!(rx.wait(), Ok(7));
    }

    #[test]
    fn a_reply_on_another_or_an_unknown_cpu_is_not_handed_over() {
        for (receiver, sender) in [
            (Some(2), Some(3)),
            (Some(2), None),
            (None, None),
            (None, Some(2)),
        ] {
            cpu::pretend(receiver);
            let (tx, rx) = channel::<u32>();
            assert!(!send_from(sender, tx, 1), "{receiver:?} {sender:?}");
            assert_eq!(rx.wait(), Ok(1));
        }
    }

    #[test]
    fn a_reply_for_a_parked_receiver_is_not_handed_over() {
        let (tx, rx) = channel::<u32>();
        let rx = StdArc::new(rx);
        let waiter = {
            let rx = rx.clone();
            std::thread::spawn(move || {
                cpu::pretend(Some(2));
                rx.wait()
            })
        };
        // The receiver's CPU is its maker's: this thread's, pretended.
        while !rx.is_parked() {
            std::thread::yield_now();
        }
        assert!(!send_from(Some(2), tx, 5), "the futex wake hands it over");
        assert_eq!(waiter.join().unwrap(), Ok(5));
    }

    struct Noop;
    impl Wake for Noop {
        fn wake(self: StdArc<Self>) {}
    }

    #[test]
    fn a_reply_for_a_receiver_with_a_waker_is_not_handed_over() {
        cpu::pretend(Some(2));
        let (tx, rx) = channel::<u32>();
        let waker = std::task::Waker::from(StdArc::new(Noop));
        assert!(rx.poll(&mut Context::from_waker(&waker)).is_pending());
        assert!(!send_from(Some(2), tx, 3));
        assert_eq!(
            rx.poll(&mut Context::from_waker(&waker)),
            Poll::Ready(Ok(3))
        );
    }

    #[test]
    fn a_ready_receiver_holds_its_value() {
        cpu::pretend(Some(2));
        let rx = ready::<u32>(Err(CallError::LOOP_STOPPED));
        assert!(rx.has_outcome());
        assert_eq!(rx.wait(), Err(CallError::LOOP_STOPPED));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The `blocking_call_from_thread` hand-off under loom: the waiter always
    //! gets exactly one outcome, whether the loop side sends or is dropped
    //! (shutdown), and never sleeps through it.

    use super::*;
    use crate::loom::thread;

    #[test]
    fn loom_blocking_hand_off_delivers_the_value() {
        ::loom::model(|| {
            let (tx, rx) = channel::<u32>();
            let t = thread::spawn(move || tx.send(Ok(7)));
            assert_eq!(rx.wait(), Ok(7));
            t.join().unwrap();
        });
    }

    /// The waiter spins first (under loom: a round or two that yield), then
    /// parks if nothing came: the sender's skipped notify (no `parked`)
    /// never strands it.
    #[test]
    fn loom_spinning_waiter_gets_the_value_whether_or_not_the_spin_sees_it() {
        ::loom::model(|| {
            let (tx, rx) = channel::<u32>();
            let t = thread::spawn(move || tx.send(Ok(7)));
            let _ = rx.spin_for(Duration::from_micros(1));
            assert_eq!(rx.wait(), Ok(7));
            t.join().unwrap();
        });
    }

    #[test]
    fn loom_spinning_waiter_sees_a_dropped_sender() {
        ::loom::model(|| {
            let (tx, rx) = channel::<u32>();
            let t = thread::spawn(move || drop(tx));
            let _ = rx.spin_for(Duration::from_micros(1));
            assert_eq!(rx.wait(), Err(CallError::LOOP_STOPPED));
            t.join().unwrap();
        });
    }

    #[test]
    fn loom_blocking_hand_off_reports_a_dropped_sender() {
        ::loom::model(|| {
            let (tx, rx) = channel::<u32>();
            let t = thread::spawn(move || drop(tx));
            assert_eq!(rx.wait(), Err(CallError::LOOP_STOPPED));
            t.join().unwrap();
        });
    }

    #[test]
    fn loom_cancel_that_returns_true_means_the_outcome_is_cancelled() {
        // The loop completes the future while another thread cancels it:
        // exactly one wins, and `cancel() == true` always reads `Cancelled`.
        ::loom::model(|| {
            let (tx, rx) = channel::<u32>();
            let t = thread::spawn(move || tx.send(Ok(1)));
            let cancelled = rx.cancel();
            let outcome = rx.wait();
            t.join().unwrap();
            if cancelled {
                assert_eq!(outcome, Err(CallError::Failed(ThreadError::Cancelled)));
            } else {
                assert_eq!(outcome, Ok(1));
            }
        });
    }

    #[test]
    fn loom_blocking_hand_off_send_races_drop_of_a_clone_path() {
        // The loop may send while the waiter is between checks; the value
        // is never lost and never delivered twice.
        ::loom::model(|| {
            let (tx, rx) = channel::<u32>();
            let t = thread::spawn(move || {
                tx.send(Ok(1));
            });
            let first = rx.wait();
            t.join().unwrap();
            assert_eq!(first, Ok(1));
            assert!(rx.is_ready());
        });
    }
}
