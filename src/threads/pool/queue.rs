//! The pool's FIFO, from which unstarted work can be withdrawn.
//!
//! Items sit in submission order, each under a sequence number that only
//! grows, so the slots are sorted by it and a [`TaskKey`] finds its slot by
//! binary search (O(log n)). Withdrawing leaves a tombstone (`None`) that
//! `pop` skips; tombstones at either end are trimmed at once, and the whole
//! queue is compacted when they outnumber the live items, so memory stays
//! proportional to the live work.
//!
//! Invariants: `live` is the number of `Some` slots; sequence numbers
//! strictly increase from front to back; a key names at most one item, ever.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::SharedTask;
use crate::error::panic_message;
use crate::threads::Task;
use std::sync::Arc;

/// Names a queued item for [`ThreadPool::withdraw`](super::ThreadPool::withdraw).
///
/// Keys are never reused by a pool, so a stale key withdraws nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TaskKey(pub(super) u64);

/// A queue item: the submitter's single allocation.
pub(super) enum Item {
    /// A boxed closure (`call_in_thread`, `Worker::do_work`).
    Task(Task),
    /// A closure with its result callback (`call_in_thread_with_callback`).
    Call(Box<dyn Call>),
    /// The caller's shared record (`submit_shared`).
    Shared(Arc<dyn SharedTask>),
}

/// A queued closure that reports its own outcome.
pub(super) trait Call: Send {
    /// Runs the closure; returns whether it panicked (the callback has been
    /// told) and the message of a panic in the callback, if any.
    fn call(self: Box<Self>) -> (bool, Option<String>);
}

/// How a run went, for the pool's counters and logs.
pub(super) struct Outcome {
    /// The work panicked (its awaiter was told, or it was logged).
    pub(super) panicked: bool,
    /// A panic to log (fire-and-forget work, or a callback).
    pub(super) log: Option<String>,
}

impl Item {
    /// Runs the item on a pool thread; never unwinds.
    pub(super) fn run(self) -> Outcome {
        match self {
            Item::Task(task) => match catch_unwind(AssertUnwindSafe(task)) {
                Ok(()) => Outcome {
                    panicked: false,
                    log: None,
                },
                Err(payload) => Outcome {
                    panicked: true,
                    log: Some(message_and_drop(payload)),
                },
            },
            Item::Call(call) => match catch_unwind(AssertUnwindSafe(move || call.call())) {
                Ok((panicked, log)) => Outcome {
                    panicked: panicked || log.is_some(),
                    log,
                },
                Err(payload) => Outcome {
                    panicked: true,
                    log: Some(message_and_drop(payload)),
                },
            },
            Item::Shared(shared) => match catch_unwind(AssertUnwindSafe(move || shared.run())) {
                Ok(()) => Outcome {
                    panicked: false,
                    log: None,
                },
                Err(payload) => Outcome {
                    panicked: true,
                    log: Some(message_and_drop(payload)),
                },
            },
        }
    }

    /// The pool will never run this item: drops it (its destructors report)
    /// or, for a shared record, tells it so. Never unwinds.
    pub(super) fn discard(self) {
        let result = catch_unwind(AssertUnwindSafe(move || match self {
            Item::Task(task) => drop(task),
            Item::Call(call) => drop(call),
            Item::Shared(shared) => shared.discard(),
        }));
        if let Err(payload) = result {
            let message = message_and_drop(payload);
            tracing::error!(panic = %message, "discarding pool work panicked");
        }
    }
}

/// The message of a caught panic; the payload is dropped under a guard (a
/// payload whose destructor panics must not take the thread down).
pub(super) fn message_and_drop(payload: Box<dyn std::any::Any + Send>) -> String {
    let message = panic_message(&*payload);
    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    message
}

struct Slot {
    seq: u64,
    item: Option<Item>,
}

/// See the module docs.
#[derive(Default)]
pub(super) struct Queue {
    slots: VecDeque<Slot>,
    next_seq: u64,
    live: usize,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("live", &self.live)
            .field("slots", &self.slots.len())
            .finish()
    }
}

/// Below this many slots tombstones are left for `pop` to skip.
const COMPACT_MIN: usize = 64;

impl Queue {
    /// Live items.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Slots held, tombstones included (for tests of the compaction).
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Appends `item`; returns its key.
    pub(super) fn push(&mut self, item: Item) -> TaskKey {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slots.push_back(Slot {
            seq,
            item: Some(item),
        });
        self.live += 1;
        TaskKey(seq)
    }

    /// Removes the oldest live item.
    pub(super) fn pop(&mut self) -> Option<Item> {
        while let Some(slot) = self.slots.pop_front() {
            if let Some(item) = slot.item {
                self.live -= 1;
                return Some(item);
            }
        }
        None
    }

    /// Removes the item named by `key` if it is still queued.
    pub(super) fn withdraw(&mut self, key: TaskKey) -> Option<Item> {
        let at = self.slots.binary_search_by_key(&key.0, |s| s.seq).ok()?;
        let item = self.slots[at].item.take()?;
        self.live -= 1;
        while self.slots.front().is_some_and(|s| s.item.is_none()) {
            self.slots.pop_front();
        }
        while self.slots.back().is_some_and(|s| s.item.is_none()) {
            self.slots.pop_back();
        }
        if self.slots.len() > COMPACT_MIN && self.slots.len() > 2 * self.live {
            self.slots.retain(|s| s.item.is_some());
        }
        Some(item)
    }

    /// Removes every live item after the first `keep`, oldest first.
    pub(super) fn drain_after(&mut self, keep: usize) -> Vec<Item> {
        let mut kept = 0;
        let mut out = Vec::new();
        for slot in &mut self.slots {
            if slot.item.is_none() {
                continue;
            }
            if kept < keep {
                kept += 1;
            } else if let Some(item) = slot.item.take() {
                out.push(item);
            }
        }
        self.live -= out.len();
        self.slots.retain(|s| s.item.is_some());
        out
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn task() -> Item {
        Item::Task(Box::new(|| ()))
    }

    #[test]
    fn withdraw_removes_exactly_the_named_item_and_pop_skips_it() {
        let mut q = Queue::default();
        let keys: Vec<_> = (0..5).map(|_| q.push(task())).collect();
        assert!(q.withdraw(keys[2]).is_some());
        assert!(q.withdraw(keys[2]).is_none(), "a key withdraws once");
        assert_eq!(q.len(), 4);
        assert!(q.pop().is_some());
        assert!(
            q.withdraw(keys[0]).is_none(),
            "a popped item cannot be withdrawn"
        );
        let mut popped = 0;
        while q.pop().is_some() {
            popped += 1;
        }
        assert_eq!((popped, q.len(), q.slots()), (3, 0, 0));
    }

    #[test]
    fn tombstones_never_outgrow_the_live_items() {
        let mut q = Queue::default();
        let keys: Vec<_> = (0..1000).map(|_| q.push(task())).collect();
        let _head = q.push(task());
        for key in keys.iter().skip(1).step_by(2) {
            assert!(q.withdraw(*key).is_some());
        }
        for key in keys.iter().step_by(2) {
            assert!(q.withdraw(*key).is_some());
        }
        assert_eq!(q.len(), 1);
        assert!(q.slots() <= COMPACT_MIN + 1, "slots {}", q.slots());
    }

    #[test]
    fn drain_after_keeps_the_claimed_head() {
        let mut q = Queue::default();
        let keys: Vec<_> = (0..4).map(|_| q.push(task())).collect();
        q.withdraw(keys[1]);
        assert_eq!(q.drain_after(1).len(), 2);
        assert_eq!(q.len(), 1);
        assert!(q.withdraw(keys[0]).is_some());
    }
}
