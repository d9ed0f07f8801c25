//! The submission inbox's gate (`inbox.rs`), as the locked state moves
//! it: opened only when a submission needs no decision, closed (and the
//! inbox queued) by every other hold of the lock.

use super::super::inbox::Inbox;
use super::super::queue::Queue;
use super::State;
use crate::loom::atomic::Ordering;

impl State {
    /// Closes the inbox's gate, if open, and queues everything submitted
    /// through it (waiting for a submission still writing its item). Every
    /// hold of the lock that may change a role or reads the backlog does
    /// this first (`Core::locked`).
    pub(in crate::threads::pool) fn close_inbox(&mut self, inbox: &Inbox) {
        if self.gate {
            self.gate = false;
            self.move_from_inbox(inbox, |head, queue| {
                inbox.close(head, |job| {
                    queue.push(job);
                })
            });
        }
    }

    /// Queues the items the open inbox holds ready, oldest first.
    #[inline]
    pub(in crate::threads::pool) fn drain_inbox(&mut self, inbox: &Inbox) {
        if self.gate {
            self.move_from_inbox(inbox, |head, queue| {
                inbox.drain(head, |job| {
                    queue.push(job);
                });
            });
        }
    }

    /// Queues everything submitted through the open inbox so far (a
    /// submission that takes the lock, so that it queues behind them).
    #[inline]
    pub(in crate::threads::pool) fn drain_inbox_claimed(&mut self, inbox: &Inbox) {
        if self.gate {
            self.move_from_inbox(inbox, |head, queue| {
                inbox.drain_claimed(head, |job| {
                    queue.push(job);
                });
            });
        }
    }

    /// Runs `step` from the inbox's drain position (kept in the inbox:
    /// `inbox.rs`), with the queue to move the items into.
    #[inline]
    fn move_from_inbox(&mut self, inbox: &Inbox, step: impl FnOnce(&mut u64, &mut Queue)) {
        let mut head = inbox.head.0.load(Ordering::Relaxed);
        step(&mut head, &mut self.queue);
        inbox.head.0.store(head, Ordering::Relaxed);
    }

    /// Opens the inbox's gate when a submission needs no decision: a
    /// thread is running a task (it comes back to the lock and drains the
    /// inbox) and [`decide`](Self::decide) would say `Nothing`.
    #[inline]
    pub(in crate::threads::pool) fn open_inbox_if_quiet(&mut self, inbox: &Inbox) {
        if !self.gate && self.quiet() {
            self.gate = true;
            inbox.open();
        }
    }

    /// See [`open_inbox_if_quiet`](Self::open_inbox_if_quiet).
    #[inline]
    pub(in crate::threads::pool) fn quiet(&self) -> bool {
        self.started && !self.stopped && self.busy > self.claimed && self.decides_nothing()
    }

    /// Whether [`decide`](Self::decide) would say `Nothing` (and change no
    /// count): its branches, without their effects.
    #[inline]
    pub(in crate::threads::pool) fn decides_nothing(&self) -> bool {
        // `arm_spare` says `Nothing`: no spare, or it is armed already.
        let spare_armed = self.spare == 0 || self.armed;
        if self.idle > 0 {
            self.claimed > 0
        } else if !self.started || self.threads() >= self.limit {
            spare_armed
        } else if self.busy < self.eager || self.spare == 0 {
            false
        } else {
            spare_armed
        }
    }
}
