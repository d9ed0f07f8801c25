//! The pool's size rules, as transitions of [`State`]: `start`,
//! `adjust_pool_size` and `stop`.
//!
//! Like the rest of the state machine (`state.rs`), nothing here blocks,
//! spawns or notifies: each transition returns the threads to start
//! ([`Ticket`]s) or the items to discard, and the caller carries them out
//! outside the lock. Twisted's rules, kept: `start` grows to `min`, then
//! one thread per backlogged task, capped at `max`; shrinking quits the
//! spare, then idle threads, then busy ones as a debt paid when they find
//! no backlog. Unlike Twisted, the target counts only threads not yet
//! marked to quit, so repeated adjustments never over-shrink.

use super::queue::Item;
use super::state::{Role, State, Ticket};

impl State {
    /// `start`: the limit becomes `max`; returns the threads to start.
    pub(super) fn start(&mut self) -> Vec<Ticket> {
        if self.stopped || self.started {
            return Vec::new();
        }
        self.started = true;
        self.apply_size()
    }

    /// `adjust_pool_size` (the caller checked the bounds); every sleeper
    /// must then re-check its keep-alive and the exit orders.
    pub(super) fn adjust(&mut self, min: usize, max: usize) -> Vec<Ticket> {
        self.min = min;
        self.max = max;
        if !self.started || self.stopped {
            return Vec::new();
        }
        self.apply_size()
    }

    /// Limit, min, backlog: quits the extra threads, reserves the missing.
    fn apply_size(&mut self) -> Vec<Ticket> {
        self.limit = self.max;
        let mut tickets = Vec::new();
        let unmarked = self.unmarked();
        if unmarked > self.max {
            self.quit_threads(unmarked - self.max);
        } else if unmarked < self.min {
            let cancel = (self.min - unmarked).min(self.to_shrink);
            self.to_shrink -= cancel;
            while self.unmarked() < self.min && self.threads() < self.limit {
                tickets.push(self.reserve(Role::Worker));
            }
        }
        while self.backlog() > 0 && self.threads() < self.limit {
            tickets.push(self.reserve(Role::Worker));
        }
        tickets
    }

    /// Quits `n` threads: the spare, then idle ones, then busy ones (debt).
    fn quit_threads(&mut self, mut n: usize) {
        let spare = n.min(self.spare);
        self.spare -= spare;
        self.exit_spare += spare;
        self.armed &= self.spare > 0;
        n -= spare;
        let idle = n.min(self.idle);
        self.idle -= idle;
        self.exit_idle += idle;
        self.to_shrink += n - idle;
    }

    /// `stop`: refuses new work from now on; idle threads and the spare are
    /// told to exit; returns the items no thread will ever run.
    pub(super) fn stop(&mut self) -> Option<Vec<Item>> {
        if self.stopped {
            return None;
        }
        self.stopped = true;
        self.exit_idle += self.idle;
        self.idle = 0;
        if self.busy + self.spare == 0 {
            Some(self.queue.drain_after(0))
        } else {
            Some(Vec::new())
        }
    }
}
