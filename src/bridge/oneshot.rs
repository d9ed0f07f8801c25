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

use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{CallError, ThreadError};
use crate::loom::atomic::{AtomicBool, Ordering};
use crate::loom::{Arc, Condvar, Mutex, Spin};

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
}

pub(crate) struct Sender<T> {
    shared: Option<Arc<Shared<T>>>,
}

pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

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
    });
    (
        Sender {
            shared: Some(shared.clone()),
        },
        Receiver { shared },
    )
}

impl<T> Sender<T> {
    /// Whether an outcome is already stored (the receiver cancelled).
    pub(crate) fn is_done(&self) -> bool {
        self.shared.as_ref().is_none_or(|s| s.slot.lock().sent)
    }

    pub(crate) fn send(mut self, value: Result<T, CallError>) {
        if let Some(shared) = self.shared.take() {
            let _ = deliver(&shared, value);
        }
    }
}

/// Stores `value` unless an outcome is already stored; returns whether it
/// was stored. This is the single decision between completion and cancel.
fn deliver<T>(shared: &Shared<T>, value: Result<T, CallError>) -> bool {
    let (waker, parked) = {
        let mut slot = shared.slot.lock();
        if slot.sent {
            return false;
        }
        slot.sent = true;
        slot.value = Some(value);
        shared.ready.store(true, Ordering::Release);
        (slot.waker.take(), slot.parked)
    };
    if parked {
        shared.cv.notify_all();
    }
    if let Some(w) = waker {
        w.wake();
    }
    true
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
        deliver(&self.shared, Err(CallError::Failed(ThreadError::Cancelled)))
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
