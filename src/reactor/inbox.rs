//! The cross-thread inbox and its coalesced wake protocol.
//!
//! Producers (any thread) push a job under a short mutex, then flip the atomic
//! `wake_pending` flag; only the producer that flips it from `false` to `true`
//! writes the waker (one syscall). The loop keeps the flag `true` while it is
//! awake, so producers into a busy loop make no syscall at all. Before it
//! blocks, the loop clears the flag and then re-checks the queue: a push that
//! lands after the re-check sees the cleared flag and wakes the loop; a push
//! before it is seen by the re-check and the loop does not block. This is the
//! protocol modelled under loom below.
//!
//! The loop never waits on a producer: the queue is a `Mutex<VecDeque>` that
//! the loop swaps out whole (one short critical section per turn), never a
//! slot-based queue whose consumer may spin on a half-written slot.
//!
//! Invariants:
//! - `queue` is `None` once closed; a push then fails and returns the job.
//! - Every job pushed before `close` is handed to the loop by a drain or by
//!   `close` itself.

use std::collections::VecDeque;
use std::panic::Location;

use super::inline_call::{self, InlineCall};
use crate::loom::Mutex;
use crate::loom::atomic::{AtomicBool, AtomicU64, Ordering};

/// Something that wakes a sleeping loop (an eventfd in production, a condvar
/// under loom).
pub(crate) trait Wake: Send + Sync {
    fn wake(&self);
}

/// A message that is its own shared allocation: delivering it on the loop
/// needs no box of its own (pool completions ride in the job's state).
pub(crate) trait Deliver: Send + Sync {
    /// Runs on the loop thread.
    fn deliver(self: std::sync::Arc<Self>);
}

/// What a job carries: a closure (in place when small), or an `Arc`'d
/// message.
pub(crate) enum Message {
    Call(InlineCall),
    Deliver(std::sync::Arc<dyn Deliver>),
}

/// A message queued for the loop, with where it was queued from.
pub(crate) struct Job {
    pub(crate) message: Message,
    pub(crate) location: &'static Location<'static>,
}

pub(crate) struct Inbox<W> {
    queue: Mutex<Queue>,
    wake_pending: AtomicBool,
    wakes: AtomicU64,
    waker: W,
}

/// The guarded part: `jobs` is `None` once closed; `pushes` is counted under
/// the lock so producers share no extra cache line for statistics.
#[derive(Default)]
struct Queue {
    jobs: Option<VecDeque<Job>>,
    pushes: u64,
}

impl<W: Wake> Inbox<W> {
    pub(crate) fn new(waker: W) -> Self {
        Inbox {
            queue: Mutex::new(Queue {
                jobs: Some(VecDeque::new()),
                pushes: 0,
            }),
            wake_pending: AtomicBool::new(false),
            wakes: AtomicU64::new(0),
            waker,
        }
    }

    /// Queues `f`; gives it back if the inbox is closed. A closure of up to
    /// [`inline_call::INLINE_BYTES`] is stored in the queue slot itself (no
    /// allocation); a larger one is boxed, outside the lock.
    pub(crate) fn push<F: FnOnce() + Send + 'static>(
        &self,
        f: F,
        location: &'static Location<'static>,
    ) -> Result<(), F> {
        if inline_call::fits::<F>() {
            self.push_call(f, location)
        } else {
            self.push_call(Box::new(f), location)
                .map_err(|boxed| *boxed)
        }
    }

    /// `push` for a closure that is stored in place.
    fn push_call<G: FnOnce() + Send + 'static>(
        &self,
        g: G,
        location: &'static Location<'static>,
    ) -> Result<(), G> {
        {
            let mut queue = self.queue.lock();
            match queue.jobs.as_mut() {
                Some(q) => q.push_back(Job {
                    message: Message::Call(InlineCall::new(g)),
                    location,
                }),
                None => return Err(g),
            }
            queue.pushes += 1;
        }
        self.notify();
        Ok(())
    }

    /// Queues an `Arc`'d message; gives it back if the inbox is closed.
    pub(crate) fn push_deliver(
        &self,
        message: std::sync::Arc<dyn Deliver>,
        location: &'static Location<'static>,
    ) -> Result<(), std::sync::Arc<dyn Deliver>> {
        {
            let mut queue = self.queue.lock();
            match queue.jobs.as_mut() {
                Some(q) => q.push_back(Job {
                    message: Message::Deliver(message),
                    location,
                }),
                None => return Err(message),
            }
            queue.pushes += 1;
        }
        self.notify();
        Ok(())
    }

    /// Wakes the loop unless a wake is already pending or the loop is awake.
    pub(crate) fn notify(&self) {
        // Read first: while the loop is awake the flag stays true and the
        // cache line stays shared, so a burst costs no read-modify-write.
        if !self.wake_pending.load(Ordering::SeqCst)
            && !self.wake_pending.swap(true, Ordering::SeqCst)
        {
            self.wakes.fetch_add(1, Ordering::Relaxed);
            self.waker.wake();
        }
    }

    /// Loop: moves every queued job into `into` (which must be empty), keeping
    /// both buffers' capacity.
    pub(crate) fn drain_into(&self, into: &mut VecDeque<Job>) {
        debug_assert!(into.is_empty());
        let mut queue = self.queue.lock();
        if let Some(q) = queue.jobs.as_mut() {
            std::mem::swap(q, into);
        }
    }

    /// Loop, before blocking: clears the flag, then reports whether work
    /// arrived meanwhile. If it did, the flag is set again (the loop stays
    /// awake and producers need not write the waker).
    pub(crate) fn prepare_to_sleep(&self, other_work: impl FnOnce() -> bool) -> bool {
        self.wake_pending.store(false, Ordering::SeqCst);
        let has_work = self
            .queue
            .lock()
            .jobs
            .as_ref()
            .is_some_and(|q| !q.is_empty())
            || other_work();
        if has_work {
            self.wake_pending.store(true, Ordering::SeqCst);
        }
        !has_work
    }

    /// Loop, after waking: marks the loop awake so producers skip the waker.
    pub(crate) fn awake(&self) {
        self.wake_pending.store(true, Ordering::SeqCst);
    }

    /// Closes the inbox; later pushes fail. Returns the jobs still queued.
    pub(crate) fn close(&self) -> VecDeque<Job> {
        self.queue.lock().jobs.take().unwrap_or_default()
    }

    pub(crate) fn pushes(&self) -> u64 {
        self.queue.lock().pushes
    }

    pub(crate) fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Relaxed)
    }

    #[cfg(all(test, loom))]
    pub(crate) fn waker(&self) -> &W {
        &self.waker
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The inbox + wake protocol under loom, with a condvar-backed waker in
    //! place of the eventfd: no lost call, no lost wakeup, no sleep while
    //! work is queued (a sleep with work queued and no wake coming would be
    //! reported by loom as a deadlock).

    use super::*;
    use crate::loom::{Arc, Condvar, thread};
    use ::loom::sync::atomic::AtomicUsize;

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

    fn run_model(producers: usize, per_producer: usize) {
        ::loom::model(move || {
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
                inbox.drain_into(&mut batch);
                for job in batch.drain(..) {
                    match job.message {
                        Message::Call(f) => f.call(),
                        Message::Deliver(d) => d.deliver(),
                    }
                    done += 1;
                }
                if done < total && inbox.prepare_to_sleep(|| false) {
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

    #[test]
    fn loom_inbox_one_producer_two_calls() {
        run_model(1, 2);
    }

    #[test]
    fn loom_inbox_two_producers() {
        run_model(2, 1);
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
}
