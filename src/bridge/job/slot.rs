//! A job record's hand-off between the loop and the worker that runs it,
//! without a lock: the closure goes one way, the outcome the other, each
//! through a cell that one thread at a time owns, as a state word says.
//!
//! Why not a mutex: the loop must never wait for a lock a worker holds. A
//! worker preempted on another CPU while it holds the record's lock (to
//! take the closure or to post the outcome) would keep the loop waiting
//! until that thread runs again, milliseconds on a busy machine (seen:
//! 4.7 ms, session 14). Here every step is one atomic operation on either
//! side, and neither side ever waits for the other.
//!
//! ```text
//! QUEUED --worker start (CAS)--> RUNNING --worker post (CAS)--> DONE --loop take--> CLOSED
//!    |                              |                             |
//!    +------ loop close (CAS) ------+-----------------------------+----> CLOSED
//! ```
//!
//! Who owns which cell (the protocol every `unsafe` block relies on):
//! - `call` is filled before the slot is shared (or through `&mut`), and
//!   taken by whichever side wins the one compare-and-swap out of
//!   `QUEUED`: the worker's `start` (to `RUNNING`) or the loop's `close`
//!   (to `CLOSED`). Exactly one wins; nobody touches `call` after that.
//! - `posted` belongs to the worker while the state is `RUNNING` (only the
//!   worker that won `start` gets there). It writes the outcome, then
//!   publishes it with a release compare-and-swap `RUNNING → DONE`. If the
//!   loop closed the slot meanwhile (`RUNNING → CLOSED`), that swap fails
//!   and the worker takes its outcome back and drops it: the state never
//!   becomes `DONE`, so the loop never touches `posted`.
//! - Once `DONE` is published, `posted` belongs to the loop: it reads it
//!   only after an acquire load (or swap) saw `DONE`, and only the loop
//!   leaves `DONE` (to `CLOSED`, taking the outcome).
//! - Through `&mut` (a record nobody else can reach: the last `Arc`, whose
//!   count orders it after every other user) any cell may be touched.
//!
//! The loop side (`close`, `take`) runs on one thread (the job's loop);
//! the worker side (`start`, `post`) on the one worker that runs the job.

#![allow(unsafe_code)]

use crate::loom::atomic::{AtomicU8, Ordering};

/// `call` holds the closure.
const QUEUED: u8 = 0;
/// A worker took the closure; `posted` is its.
const RUNNING: u8 = 1;
/// `posted` holds the outcome, published; it is the loop's.
const DONE: u8 = 2;
/// Taken or given up by the loop (or never filled): nothing moves any more.
const CLOSED: u8 = 3;

/// What the slot held when the loop closed it.
pub(super) enum Was<F, R> {
    /// Not started: the closure, now the loop's (to drop).
    Queued(F),
    /// A worker runs it: its outcome will be dropped on the worker.
    Running,
    /// The outcome a worker posted, now the loop's.
    Done(R),
    /// Already closed.
    Closed,
}

/// The closure `F` on its way to a worker, and the outcome `R` on its way
/// back (see the module docs).
pub(super) struct Slot<F, R> {
    state: AtomicU8,
    call: Cell<Option<F>>,
    posted: Cell<Option<R>>,
}

// SAFETY: the cells are only ever touched by the one thread that owns them
// under the protocol in the module docs (ownership moves with an
// acquire/release operation on `state`), so sharing the slot shares no
// `F` or `R` between threads at once; both only move, hence `Send`.
unsafe impl<F: Send, R: Send> Sync for Slot<F, R> {}

impl<F, R> Slot<F, R> {
    /// A slot holding `f`, queued.
    pub(super) fn new(f: F) -> Self {
        Slot {
            state: AtomicU8::new(QUEUED),
            call: Cell::new(Some(f)),
            posted: Cell::new(None),
        }
    }

    /// On the worker: takes the closure (`QUEUED → RUNNING`), or `None` if
    /// the loop closed the slot first. A worker that gets it must `post`.
    pub(super) fn start(&self) -> Option<F> {
        self.state
            .compare_exchange(QUEUED, RUNNING, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // SAFETY: this thread won the only swap out of QUEUED: `call` is
        // its alone (the loop's `close` lost, and never takes it).
        unsafe { self.call.with_mut(Option::take) }
    }

    /// On the worker that started the job: publishes `outcome` for the
    /// loop (`RUNNING → DONE`); if the loop closed the slot meanwhile, the
    /// outcome is dropped here and `false` returned.
    pub(super) fn post(&self, outcome: R) -> bool {
        // SAFETY: RUNNING, entered by this thread's `start`: `posted` is
        // its alone until the swap below publishes it.
        unsafe { self.posted.with_mut(|p| *p = Some(outcome)) };
        if self
            .state
            .compare_exchange(RUNNING, DONE, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return true;
        }
        // SAFETY: the loop closed the slot while it ran (CLOSED, never
        // DONE): it never touches `posted`, which is still this thread's.
        let outcome = unsafe { self.posted.with_mut(Option::take) };
        drop(outcome);
        false
    }

    /// On the loop: the outcome if a worker published one (`DONE →
    /// CLOSED`), else `None` (nothing changes).
    pub(super) fn take(&self) -> Option<R> {
        if self.state.load(Ordering::Acquire) != DONE {
            return None;
        }
        // Only the loop leaves DONE: a plain store.
        self.state.store(CLOSED, Ordering::Relaxed);
        // SAFETY: DONE was seen with acquire: the worker's write of
        // `posted` happened before, and `posted` is now the loop's.
        unsafe { self.posted.with_mut(Option::take) }
    }

    /// On the loop: closes the slot (nothing moves any more) and says what
    /// it held; the closure or outcome comes back to be dropped by the
    /// caller (outside anything it holds).
    pub(super) fn close(&self) -> Was<F, R> {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            match state {
                QUEUED | RUNNING => {
                    match self.state.compare_exchange(
                        state,
                        CLOSED,
                        Ordering::Acquire,
                        Ordering::Acquire,
                    ) {
                        Ok(QUEUED) => {
                            // SAFETY: this thread won the only swap out of
                            // QUEUED: `call` is its alone.
                            let f = unsafe { self.call.with_mut(Option::take) };
                            return f.map_or(Was::Closed, Was::Queued);
                        }
                        Ok(_) => return Was::Running,
                        Err(now) => state = now,
                    }
                }
                DONE => {
                    return match self.take() {
                        Some(outcome) => Was::Done(outcome),
                        None => Was::Closed,
                    };
                }
                _ => return Was::Closed,
            }
        }
    }

    /// Whether a worker has taken the closure and not yet published an
    /// outcome that the loop could see.
    #[cfg(all(test, not(loom)))]
    pub(super) fn is_running(&self) -> bool {
        self.state.load(Ordering::Acquire) == RUNNING
    }

    /// Through a unique borrow: the outcome if one was published (as
    /// [`take`](Self::take), with no atomic read-modify-write).
    #[inline]
    pub(super) fn take_mut(&mut self) -> Option<R> {
        if self.state.load(Ordering::Relaxed) != DONE {
            return None;
        }
        self.state.store(CLOSED, Ordering::Relaxed);
        self.posted.get_mut(Option::take)
    }

    /// Through a unique borrow: drops what the slot holds and leaves it
    /// closed (a spent record).
    pub(super) fn clear(&mut self) {
        self.state.store(CLOSED, Ordering::Relaxed);
        drop(self.call.get_mut(Option::take));
        drop(self.posted.get_mut(Option::take));
    }

    /// Through a unique borrow: queues `f` again (a reused record: its
    /// closure and outcome were taken or dropped when it was spent, so
    /// there is nothing to clear; were there, the assignments would drop
    /// it).
    #[inline]
    pub(super) fn refill(&mut self, f: F) {
        self.call.get_mut(|c| *c = Some(f));
        self.state.store(QUEUED, Ordering::Relaxed);
    }
}

/// `UnsafeCell`, std's or loom's (which checks that accesses are ordered).
#[cfg(not(loom))]
struct Cell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> Cell<T> {
    fn new(value: T) -> Self {
        Cell(std::cell::UnsafeCell::new(value))
    }

    /// # Safety
    ///
    /// The calling thread owns the cell now (module docs): no other thread
    /// touches it until ownership moves on through `state`.
    unsafe fn with_mut<U>(&self, f: impl FnOnce(&mut T) -> U) -> U {
        // SAFETY: exclusive by the caller's contract.
        f(unsafe { &mut *self.0.get() })
    }

    fn get_mut<U>(&mut self, f: impl FnOnce(&mut T) -> U) -> U {
        f(self.0.get_mut())
    }
}

#[cfg(loom)]
struct Cell<T>(::loom::cell::UnsafeCell<T>);

#[cfg(loom)]
impl<T> Cell<T> {
    fn new(value: T) -> Self {
        Cell(::loom::cell::UnsafeCell::new(value))
    }

    /// # Safety
    ///
    /// As the std version's.
    unsafe fn with_mut<U>(&self, f: impl FnOnce(&mut T) -> U) -> U {
        // SAFETY: exclusive by the caller's contract (loom checks it).
        self.0.with_mut(|p| f(unsafe { &mut *p }))
    }

    fn get_mut<U>(&mut self, f: impl FnOnce(&mut T) -> U) -> U {
        // SAFETY: a unique borrow of the cell.
        self.0.with_mut(|p| f(unsafe { &mut *p }))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_started_job_posts_and_the_loop_takes_the_outcome_once() {
        let slot = Slot::new(|| 7);
        let f = slot.start().unwrap();
        assert!(slot.is_running());
        assert!(slot.start().is_none(), "the closure goes out once");
        assert!(slot.take().is_none(), "nothing published yet");
        assert!(slot.post(f()));
        assert_eq!(slot.take(), Some(7));
        assert_eq!(slot.take(), None);
        assert!(matches!(slot.close(), Was::Closed));
    }

    #[test]
    fn closing_a_queued_slot_hands_the_closure_to_the_loop_and_the_worker_gets_none() {
        let slot: Slot<_, u32> = Slot::new(|| 7);
        let Was::Queued(f) = slot.close() else {
            panic!("queued")
        };
        assert_eq!(f(), 7);
        assert!(slot.start().is_none());
    }

    #[test]
    fn closing_a_running_slot_makes_the_workers_post_drop_its_outcome() {
        let slot = Slot::new(|| ());
        let _f = slot.start().unwrap();
        assert!(matches!(slot.close(), Was::Running));
        let outcome = std::rc::Rc::new(());
        assert!(!slot.post(outcome.clone()));
        assert_eq!(std::rc::Rc::strong_count(&outcome), 1, "dropped by post");
        assert!(slot.take().is_none());
    }

    #[test]
    fn closing_a_done_slot_gives_the_posted_outcome_to_the_loop() {
        let slot = Slot::new(|| 3);
        let f = slot.start().unwrap();
        assert!(slot.post(f()));
        assert!(matches!(slot.close(), Was::Done(3)));
        assert!(slot.take().is_none());
    }

    #[test]
    fn a_refilled_slot_is_queued_again() {
        let mut slot: Slot<fn() -> u32, u32> = Slot::new(|| 1);
        let f = slot.start().unwrap();
        assert!(slot.post(f()));
        assert_eq!(slot.take_mut(), Some(1));
        slot.refill(|| 2);
        let f = slot.start().unwrap();
        assert!(slot.post(f()));
        assert_eq!(slot.take_mut(), Some(2));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The hand-off under loom: whatever the interleaving, the closure runs
    //! at most once, an outcome is seen by the loop at most once and only
    //! whole, and every closure and outcome is dropped exactly once (loom
    //! reports a leaked `Arc`).

    use super::*;
    use crate::loom::{Arc, thread};

    /// A value whose drop loom tracks (a leaked one fails the model).
    type Tracked = Arc<u32>;

    fn job(n: u32) -> impl FnOnce() -> Tracked + Send + 'static {
        let captured = Arc::new(n);
        move || Arc::new(*captured + 1)
    }

    /// The worker side: starts and posts, if the loop did not close first.
    fn worker<F: FnOnce() -> Tracked + Send + 'static>(
        slot: &Arc<Slot<F, Tracked>>,
    ) -> thread::JoinHandle<bool> {
        let slot = slot.clone();
        thread::spawn(move || match slot.start() {
            Some(f) => slot.post(f()),
            None => false,
        })
    }

    #[test]
    fn loom_the_loop_polling_sees_the_posted_outcome_whole() {
        loom::model(|| {
            let slot = Arc::new(Slot::new(job(1)));
            let w = worker(&slot);
            let outcome = loop {
                if let Some(outcome) = slot.take() {
                    break outcome;
                }
                thread::yield_now();
            };
            assert_eq!(*outcome, 2);
            assert!(w.join().unwrap());
            assert!(slot.take().is_none());
        });
    }

    #[test]
    fn loom_a_close_racing_the_worker_settles_each_value_exactly_once() {
        loom::model(|| {
            let slot = Arc::new(Slot::new(job(1)));
            let w = worker(&slot);
            let was = slot.close();
            let posted = w.join().unwrap();
            match was {
                // Never started: the worker got nothing and posted nothing.
                Was::Queued(f) => {
                    assert!(!posted);
                    drop(f);
                }
                // Closed while it ran: its outcome was refused and dropped.
                Was::Running => assert!(!posted),
                Was::Done(outcome) => {
                    assert!(posted);
                    assert_eq!(*outcome, 2);
                }
                Was::Closed => panic!("only this close closes"),
            }
            assert!(slot.take().is_none());
        });
    }

    #[test]
    fn loom_a_take_then_close_racing_the_worker_never_sees_a_partial_outcome() {
        loom::model(|| {
            let slot = Arc::new(Slot::new(job(5)));
            let w = worker(&slot);
            // A poll that may come before or after the post, then a give-up.
            let early = slot.take();
            let was = slot.close();
            let posted = w.join().unwrap();
            let seen = early.or(match was {
                Was::Done(outcome) => Some(outcome),
                _ => None,
            });
            assert_eq!(seen.is_some(), posted, "published iff the loop saw it");
            if let Some(outcome) = seen {
                assert_eq!(*outcome, 6);
            }
        });
    }
}
