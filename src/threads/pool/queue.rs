//! The pool's FIFO, from which unstarted work can be withdrawn.
//!
//! Items sit in submission order in a ring of slots; the slot at index `i`
//! holds sequence number `head + i`, so a [`TaskKey`] finds its slot in O(1).
//! A slot is the item (32 bytes: a small closure is kept in it, erased
//! with the way to run it, see `crate::inline_fn::Erased`; the tombstone
//! costs no byte) and its [`Meta`] (submission location and enqueue time,
//! 16 bytes) side by side: one ring, one cache line touched per push, no
//! second allocation. Withdrawing leaves a tombstone (`None`) that
//! `pop` skips; tombstones at the front go at once, and all of them once
//! nothing is live. Tombstones behind a live head stay until the head
//! reaches them, so the slots never outnumber what the backlog would have
//! held had nothing been withdrawn.
//!
//! Invariants: `live` is the number of `Some` slots; `head` only grows, and
//! a key names at most one item, ever.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};

use super::thread::Core;
use super::{PanicCounter, SharedTask};
use crate::error::panic_message;
use crate::inline_fn::{Erasable, Erased};
use crate::threads::Task;
use std::sync::Arc;

/// Names a queued item for [`ThreadPool::withdraw`](super::ThreadPool::withdraw).
///
/// Keys are never reused by a pool, so a stale key withdraws nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TaskKey(pub(super) u64);

impl TaskKey {
    /// The key as a word that is never 0, for a holder that keeps it in an
    /// atomic with 0 meaning "no key" (the bridge's job record).
    pub(crate) fn to_word(self) -> u64 {
        self.0 + 1
    }

    /// The key [`to_word`](TaskKey::to_word) made, or `None` for 0.
    pub(crate) fn from_word(word: u64) -> Option<TaskKey> {
        word.checked_sub(1).map(TaskKey)
    }
}

/// A queue item: the submitter's single allocation, erased in place
/// (`crate::inline_fn::Erased`, four words, and four with the `None` of a
/// withdrawn slot). Its kinds:
/// - a closure kept in the slot (`call_in_thread` and its kin, [`Plain`]);
/// - a boxed closure (`Worker::do_work`, a closure too large for the slot);
/// - a closure with its result callback (`call_in_thread_with_callback`);
/// - the caller's shared record (`submit_shared_at`).
pub(super) struct Item(Erased<Core>);

/// A plain closure: its outcome is its panic alone.
struct Plain<F>(F);

impl<F: FnOnce() + Send + 'static> Erasable<Core> for Plain<F> {
    /// The common case needs no counter until it panics (counting after
    /// the catch is still before anyone can learn of it).
    #[inline(always)] // in the thread's loop: no call frame per job
    fn run(self, core: &Core) -> bool {
        match catch_unwind(AssertUnwindSafe(self.0)) {
            Ok(()) => false,
            Err(payload) => Item::task_panicked(core, payload),
        }
    }

    fn discard(self) {}
}

impl Erasable<Core> for Box<dyn Call> {
    #[inline(never)]
    fn run(self, core: &Core) -> bool {
        Item::run_counted(core, |panics| {
            match catch_unwind(AssertUnwindSafe(|| self.call(panics))) {
                Ok(None) => None,
                Ok(Some(message)) => {
                    log_panic(&core.name, &message);
                    panics.count_silently();
                    None
                }
                Err(payload) => Some(payload),
            }
        })
    }

    fn discard(self) {}
}

impl Erasable<Core> for Arc<dyn SharedTask> {
    #[inline(never)]
    fn run(self, core: &Core) -> bool {
        Item::run_counted(core, |panics| {
            catch_unwind(AssertUnwindSafe(|| self.run(panics))).err()
        })
    }

    fn discard(self) {
        SharedTask::discard(self);
    }
}

/// Where and when a job was submitted, kept beside it in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    /// The submitter's `#[track_caller]` location.
    pub(crate) location: &'static Location<'static>,
    /// When it was queued, in nanoseconds on the pool's clock.
    pub(crate) enqueued: u64,
}

/// An item with its [`Meta`]: what is queued and what a thread takes.
pub(super) struct Queued {
    pub(super) item: Item,
    pub(super) meta: Meta,
}

/// A queued closure that reports its own outcome.
pub(super) trait Call: Send {
    /// Runs the closure, counting a panic of it in `panics` before the
    /// callback hears of it; returns the message of a panic in the
    /// callback, if any.
    fn call(self: Box<Self>, panics: &PanicCounter<'_>) -> Option<String>;
}

impl Item {
    /// A boxed closure.
    pub(super) fn task(task: Task) -> Item {
        Item(Erased::new(Plain(task)))
    }

    /// A closure kept in the slot, or handed back when it does not fit
    /// (`crate::inline_fn::fits`).
    #[inline]
    pub(super) fn inline<F: FnOnce() + Send + 'static>(f: F) -> Result<Item, F> {
        Erased::try_new(Plain(f)).map(Item).map_err(|plain| plain.0)
    }

    /// A closure with its result callback.
    pub(super) fn call(call: Box<dyn Call>) -> Item {
        Item(Erased::new(call))
    }

    /// The caller's shared record.
    pub(super) fn shared(shared: Arc<dyn SharedTask>) -> Item {
        Item(Erased::new(shared))
    }

    /// Runs the item on a pool thread; never unwinds. A panic is counted in
    /// `core`'s statistics (and logged) before anyone can learn of it: for
    /// a callback or a shared task, before the outcome is handed on.
    /// Returns whether the job was counted that way, so the thread does
    /// not count it again when it is done with it.
    #[inline(always)] // in the thread's loop: no call frame per job
    pub(super) fn run(self, core: &Core) -> bool {
        self.0.run(core)
    }

    /// A plain task panicked: counted and logged.
    #[cold]
    #[inline(never)]
    fn task_panicked(core: &Core, payload: Box<dyn std::any::Any + Send>) -> bool {
        log_panic(&core.name, &message_and_drop(payload));
        let panics = PanicCounter::of(core);
        panics.count_silently();
        panics.finish()
    }

    /// [`run`](Self::run) for items that report through a [`PanicCounter`]:
    /// `run` runs the item and returns a panic payload that escaped it.
    fn run_counted(
        core: &Core,
        run: impl FnOnce(&PanicCounter<'_>) -> Option<Box<dyn std::any::Any + Send>>,
    ) -> bool {
        let panics = PanicCounter::of(core);
        let escaped = run(&panics);
        if let Some(payload) = escaped {
            log_panic(&core.name, &message_and_drop(payload));
            panics.count_silently();
        }
        panics.finish()
    }

    /// The pool will never run this item: drops it (its destructors report)
    /// or, for a shared record, tells it so. Never unwinds.
    pub(super) fn discard(self) {
        let result = catch_unwind(AssertUnwindSafe(move || self.0.discard()));
        if let Err(payload) = result {
            let message = message_and_drop(payload);
            tracing::error!(panic = %message, "discarding pool work panicked");
        }
    }
}

#[cold]
pub(super) fn log_panic(pool: &str, message: &str) {
    tracing::error!(pool = %pool, panic = %message, "pool task panicked");
}

/// The message of a caught panic; the payload is dropped under a guard (a
/// payload whose destructor panics must not take the thread down).
pub(super) fn message_and_drop(payload: Box<dyn std::any::Any + Send>) -> String {
    let message = panic_message(&*payload);
    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    message
}

/// One ring slot: the item (`None`: withdrawn) and its metadata.
struct Slot {
    item: Option<Item>,
    meta: Meta,
}

/// See the module docs.
#[derive(Default)]
pub(super) struct Queue {
    /// `None` is a tombstone; the slot at index `i` has sequence number
    /// `head + i`.
    slots: VecDeque<Slot>,
    head: u64,
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

impl Queue {
    /// Live items.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Slots held, tombstones included (unit tests only).
    #[cfg(all(test, not(loom)))]
    pub(super) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The key the next [`push`](Self::push) returns.
    #[inline]
    pub(super) fn next_key(&self) -> TaskKey {
        TaskKey(self.head + self.slots.len() as u64)
    }

    /// Appends `job`; returns its key.
    #[inline]
    pub(super) fn push(&mut self, job: Queued) -> TaskKey {
        let seq = self.head + self.slots.len() as u64;
        self.slots.push_back(Slot {
            item: Some(job.item),
            meta: job.meta,
        });
        self.live += 1;
        TaskKey(seq)
    }

    /// Removes the oldest live item.
    #[inline]
    pub(super) fn pop(&mut self) -> Option<Queued> {
        while let Some(slot) = self.slots.pop_front() {
            self.head += 1;
            if let Some(item) = slot.item {
                self.live -= 1;
                // Not a look at the next slot: the submitter may be writing
                // its cache line right now (`front` skips tombstones).
                return Some(Queued {
                    item,
                    meta: slot.meta,
                });
            }
        }
        None
    }

    /// The oldest live item's metadata: O(1) but for the tombstones a pop
    /// left at the front (at most the items withdrawn; diagnostics only).
    pub(super) fn front(&self) -> Option<Meta> {
        self.slots
            .iter()
            .find(|slot| slot.item.is_some())
            .map(|slot| slot.meta)
    }

    /// Removes the item named by `key` if it is still queued. O(1).
    pub(super) fn withdraw(&mut self, key: TaskKey) -> Option<Item> {
        let at = usize::try_from(key.0.checked_sub(self.head)?).ok()?;
        let item = self.slots.get_mut(at)?.item.take()?;
        self.live -= 1;
        self.trim();
        Some(item)
    }

    /// Drops the tombstones at the front (the head moves on), and all of
    /// them once nothing is live. Trailing ones must stay while live items
    /// precede them: the next key is `head + len` and keys are never reused.
    fn trim(&mut self) {
        while self.slots.front().is_some_and(|slot| slot.item.is_none()) {
            self.slots.pop_front();
            self.head += 1;
        }
        if self.live == 0 {
            self.head += self.slots.len() as u64;
            self.slots.clear();
        }
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
        self.trim();
        out
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn task() -> Queued {
        Queued {
            item: Item::task(Box::new(|| ())),
            meta: Meta {
                location: Location::caller(),
                enqueued: 0,
            },
        }
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
    fn tombstones_go_with_the_head_and_keys_are_never_reused() {
        let mut q = Queue::default();
        let a = q.push(task());
        assert!(q.withdraw(a).is_some());
        assert_eq!(q.slots(), 0, "nothing live: nothing kept");
        let b = q.push(task());
        assert_ne!(a, b);
        assert!(q.withdraw(a).is_none(), "a stale key withdraws nothing");
        let keys: Vec<_> = (0..10).map(|_| q.push(task())).collect();
        for key in &keys[..5] {
            assert!(q.withdraw(*key).is_some());
        }
        assert_eq!(q.slots(), 11, "tombstones behind a live head stay");
        assert!(q.pop().is_some()); // b
        assert_eq!((q.len(), q.slots()), (5, 10));
        assert_eq!(q.front(), Some(task().meta), "front skips the tombstones");
        assert!(q.withdraw(keys[9]).is_some()); // the front tombstones go
        assert_eq!((q.len(), q.slots()), (4, 5));
        assert!(q.withdraw(keys[5]).is_some());
        assert_eq!((q.len(), q.slots()), (3, 4));
        let popped = std::iter::from_fn(|| q.pop()).count();
        assert_eq!((popped, q.len(), q.slots()), (3, 0, 0));
        assert!(q.withdraw(keys[9]).is_none());
    }

    /// A task numbered by its metadata (its enqueue stamp).
    fn numbered(n: usize) -> Queued {
        Queued {
            item: Item::task(Box::new(|| ())),
            meta: Meta {
                location: Location::caller(),
                enqueued: n as u64,
            },
        }
    }

    #[test]
    fn the_ring_keeps_fifo_order_and_keys_while_it_wraps_and_grows() {
        let ran = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let run = |q: &mut Queue| {
            let job = q.pop().expect("a task was queued");
            ran.lock().unwrap().push(job.meta.enqueued as usize);
        };
        let mut q = Queue::default();
        let mut keys = Vec::new();
        let mut expected = Vec::new();
        let mut n = 0;
        // Keep the ring part-full while its head goes round it several
        // times, so it grows while wrapped, with tombstones in it.
        for round in 0..6 {
            for _ in 0..(40 + 30 * round) {
                keys.push((n, q.push(numbered(n))));
                n += 1;
            }
            // Withdraw every third item still queued, wherever it sits.
            keys.retain(|&(i, key)| {
                if i % 3 == 0 {
                    assert!(q.withdraw(key).is_some(), "item {i} was queued");
                    false
                } else {
                    true
                }
            });
            let live = q.len();
            for _ in 0..live / 2 {
                run(&mut q);
            }
            assert_eq!(q.len(), live - live / 2);
        }
        while q.len() > 0 {
            run(&mut q);
        }
        expected.extend((0..n).filter(|i| i % 3 != 0));
        assert_eq!(
            *ran.lock().unwrap(),
            expected,
            "FIFO, withdrawn ones skipped"
        );
        assert_eq!(q.slots(), 0);
        for (i, key) in keys {
            assert!(q.withdraw(key).is_none(), "item {i} ran: its key is stale");
        }
        assert_eq!(q.front(), None);
        assert!(q.pop().is_none());
    }

    #[test]
    fn a_key_survives_its_word_and_the_word_zero_names_no_key() {
        let mut q = Queue::default();
        let first = q.push(task());
        let second = q.push(task());
        for key in [first, second, TaskKey(u64::MAX - 1)] {
            assert_ne!(key.to_word(), 0);
            assert_eq!(TaskKey::from_word(key.to_word()), Some(key));
        }
        assert_eq!(TaskKey::from_word(0), None);
    }

    #[test]
    fn a_slot_keeps_a_small_closure_and_its_meta_in_48_bytes() {
        // The ring is written by the submitter and read by the threads: its
        // slot size is memory traffic per job (56 bytes with an enum of the
        // item kinds: 0.87 of its wall per job in the harness, ring11).
        assert_eq!(std::mem::size_of::<Option<Item>>(), 32);
        assert_eq!(std::mem::size_of::<Slot>(), 48);
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
