//! The pool's FIFO, from which unstarted work can be withdrawn.
//!
//! Items sit in submission order in fixed blocks of [`BLOCK`] slots; the
//! item with sequence number `seq` is in block number `seq / BLOCK`, at
//! `seq % BLOCK`, so a [`TaskKey`] finds its slot in O(1). A slot is the
//! item (32 bytes: a small closure is kept in it, erased with the way to
//! run it, see `crate::inline_fn::Erased`) and its [`Meta`] (submission
//! location and enqueue time, 16 bytes) side by side, 48 bytes with the
//! tombstone (`None`) costing no byte: one cache line touched per push,
//! no allocation per job. A push writes its slot without reading it, a pop
//! moves it out without writing it. Withdrawing leaves a tombstone (`None`) that
//! `pop` skips; tombstones at the front go at once, and all of them once
//! nothing is live. Tombstones behind a live head stay until the head
//! reaches them, so the slots never outnumber what the backlog would have
//! held had nothing been withdrawn.
//!
//! # Why blocks, not one growing ring
//!
//! A burst from a fast submitter builds a deep backlog (ring11 sampled
//! 8k-70k items, peaks of 260k), and the first touch of the memory it needs
//! is a page fault (kernel zeroing, memcg charge) paid by the submitter:
//! about 30% of a burst's CPU samples with a `VecDeque` of slots
//! (pool12). A ring that doubles holds up to twice the peak, copies on
//! growth, and once grown its writes sweep its whole capacity. Here a
//! block the head leaves becomes a spare, and a push that needs a block
//! takes the newest spare first (still in cache): the memory ever touched
//! is the peak backlog rounded up to a block, and a steady stream cycles
//! through two blocks. Spares are kept (as the ring kept its capacity).
//!
//! Invariants: `live` is the number of `Some` slots, all of them in
//! `head..tail`; `blocks` are exactly the blocks numbered
//! `head / BLOCK .. ceil(tail / BLOCK)`, each holding the slots of its
//! range in `head..tail`, in order, and spares hold none;
//! `head` and `tail` only grow, and a key names at most one item, ever.

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

/// Slots per block (a power of two): 128 slots of 48 bytes, 6 KiB.
const BLOCK: u64 = 128;

/// A block of slots: `None` is a withdrawn item. It holds the slots pushed
/// into it and not yet popped, and has room for [`BLOCK`]: a push writes
/// into memory it does not read first, and a pop moves the item out
/// without writing the slot, so each slot's cache line goes from the
/// submitter to the thread that takes it once, and back clean. Alone in
/// its cache line: the submitter writes the back block's length and the
/// busy threads the front block's start, and while they are different
/// blocks neither stalls on the other.
#[repr(align(64))]
struct Block(VecDeque<Option<Queued>>);

impl Block {
    fn new() -> Block {
        Block(VecDeque::with_capacity(BLOCK as usize))
    }
}

/// See the module docs. `repr(C)`, cursors first: they share the pool
/// lock's cache line (`State`'s layout).
#[derive(Default)]
#[repr(C)]
pub(super) struct Queue {
    /// The oldest slot held (a live item or a tombstone behind one).
    head: u64,
    /// The next key.
    tail: u64,
    live: usize,
    /// The blocks that hold sequence numbers `head..tail`: `blocks[0]` is
    /// block number `head / BLOCK`, and there are exactly
    /// `ceil(tail / BLOCK) - floor(head / BLOCK)` of them.
    blocks: VecDeque<Block>,
    /// Emptied blocks (no slot), the last emptied on top.
    spare: Vec<Block>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("live", &self.live)
            .field("slots", &(self.tail - self.head))
            .field("blocks", &self.blocks.len())
            .field("spare", &self.spare.len())
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
        usize::try_from(self.tail - self.head).unwrap_or(usize::MAX)
    }

    /// Blocks held, in use and spare (unit tests only).
    #[cfg(all(test, not(loom)))]
    pub(super) fn blocks(&self) -> (usize, usize) {
        (self.blocks.len(), self.spare.len())
    }

    /// The key the next [`push`](Self::push) returns.
    #[inline]
    pub(super) fn next_key(&self) -> TaskKey {
        TaskKey(self.tail)
    }

    /// The slot of sequence number `seq` (`head <= seq < tail`): the front
    /// block holds `head..`, every later block its whole range.
    fn slot(&mut self, seq: u64) -> &mut Option<Queued> {
        let (block, at) = match seq / BLOCK - self.head / BLOCK {
            0 => (0, seq - self.head),
            block => (block, seq % BLOCK),
        };
        let (block, at) = (usize::try_from(block), usize::try_from(at));
        let (Ok(block), Ok(at)) = (block, at) else {
            unreachable!("queue invariant: the slots held fit in memory")
        };
        (self.blocks[block].0.get_mut(at)).expect("queue invariant: a held slot is in its block")
    }

    /// Appends `job`; returns its key.
    #[inline]
    pub(super) fn push(&mut self, job: Queued) -> TaskKey {
        let seq = self.tail;
        if seq % BLOCK == 0 {
            // The last block is full (or there is none): the newest spare,
            // which is most likely still in this core's cache, else a new
            // one.
            let block = self.spare.pop().unwrap_or_else(Block::new);
            self.blocks.push_back(block);
        }
        (self.blocks.back_mut())
            .expect("queue invariant: the tail's block is held")
            .0
            .push_back(Some(job));
        self.tail += 1;
        self.live += 1;
        TaskKey(seq)
    }

    /// Moves the head's slot out (an item, or `None` for a tombstone); a
    /// block left behind becomes a spare.
    #[inline]
    fn pop_slot(&mut self) -> Option<Queued> {
        let front = self.blocks.front_mut();
        let slot = front.and_then(|block| block.0.pop_front());
        let slot = slot.expect("queue invariant: the head's slot is held");
        self.head += 1;
        if self.head % BLOCK == 0 {
            self.recycle_front();
        }
        slot
    }

    /// The front block's slots are all gone: it becomes a spare.
    fn recycle_front(&mut self) {
        if let Some(mut block) = self.blocks.pop_front() {
            // Empty but for the tombstones of a queue emptied by `trim`:
            // nothing to drop.
            block.0.clear();
            self.spare.push(block);
        }
    }

    /// Removes the oldest live item.
    #[inline]
    pub(super) fn pop(&mut self) -> Option<Queued> {
        while self.head < self.tail {
            let job = self.pop_slot();
            if job.is_some() {
                self.live -= 1;
                // Not a look at the next slot: the submitter may be writing
                // its cache line right now (`front` skips tombstones).
                return job;
            }
        }
        None
    }

    /// The oldest live item's metadata: O(1) but for the tombstones a pop
    /// left at the front (at most the items withdrawn; diagnostics only).
    pub(super) fn front(&self) -> Option<Meta> {
        self.blocks
            .iter()
            .flat_map(|block| block.0.iter())
            .find_map(|slot| slot.as_ref().map(|job| job.meta))
    }

    /// Removes the item named by `key` if it is still queued. O(1).
    pub(super) fn withdraw(&mut self, key: TaskKey) -> Option<Item> {
        if key.0 < self.head || key.0 >= self.tail {
            return None;
        }
        let job = self.slot(key.0).take()?;
        self.live -= 1;
        self.trim();
        Some(job.item)
    }

    /// Drops the tombstones at the front (the head moves on), and all of
    /// them once nothing is live. Trailing ones must stay while live items
    /// precede them: the next key is `tail` and keys are never reused.
    fn trim(&mut self) {
        if self.live == 0 {
            // Every slot is a tombstone: keep only the block the next push
            // writes into, if it is part-used, emptied.
            let keep = usize::from(self.tail % BLOCK != 0);
            while self.blocks.len() > keep {
                self.recycle_front();
            }
            if let Some(block) = self.blocks.front_mut() {
                block.0.clear();
            }
            self.head = self.tail;
            return;
        }
        while self.head < self.tail {
            let head = self.head;
            if self.slot(head).is_some() {
                break;
            }
            self.pop_slot();
        }
    }

    /// Removes every live item after the first `keep`, oldest first.
    pub(super) fn drain_after(&mut self, keep: usize) -> Vec<Item> {
        let mut kept = 0;
        let mut out = Vec::new();
        let slots = self.blocks.iter_mut().flat_map(|block| block.0.iter_mut());
        for slot in slots.filter(|slot| slot.is_some()) {
            if kept < keep {
                kept += 1;
            } else if let Some(job) = slot.take() {
                out.push(job.item);
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
    fn blocks_the_head_leaves_are_reused_so_memory_stays_at_the_peak_backlog() {
        let block = BLOCK as usize;
        let mut q = Queue::default();
        // A steady stream (push one, pop one) cycles through two blocks.
        for _ in 0..10 * block {
            q.push(task());
            assert!(q.pop().is_some());
        }
        let (used, spare) = q.blocks();
        assert!(used + spare <= 2, "{used} in use, {spare} spare");
        // A backlog of 3.5 blocks needs 4 blocks in all, whatever came before.
        let keys: Vec<_> = (0..7 * block / 2).map(|_| q.push(task())).collect();
        let (used, spare) = q.blocks();
        assert_eq!((used, used + spare), (4, 4));
        // Withdrawals reach into any block; a withdrawn head's block is freed
        // once the head passes it.
        for key in &keys[..block + 1] {
            assert!(q.withdraw(*key).is_some());
        }
        assert_eq!(q.blocks().0, 3, "the first block's slots are all gone");
        assert!(
            q.withdraw(keys[3 * block]).is_some(),
            "a slot in the last block"
        );
        assert_eq!(q.len(), 7 * block / 2 - block - 2);
        // Draining leaves every block spare (or the tail's, part-used), and
        // the next backlog of the same depth allocates nothing new.
        while q.pop().is_some() {}
        let (used, spare) = q.blocks();
        assert_eq!((used, used + spare), (1, 4));
        for _ in 0..7 * block / 2 {
            q.push(task());
        }
        let (used, spare) = q.blocks();
        assert_eq!((used, used + spare), (4, 4), "spares reused, none new");
        // Keys stay unique across reused blocks: the old ones are stale.
        for key in &keys {
            assert!(q.withdraw(*key).is_none());
        }
        assert_eq!(q.drain_after(0).len(), 7 * block / 2);
        assert_eq!((q.len(), q.slots()), (0, 0));
    }

    #[test]
    fn a_submission_shares_only_the_lock_line_with_what_busy_threads_write_per_job() {
        use super::super::state::State;
        use std::mem::{align_of, offset_of};
        // The mutex word starts a cache line; where does the state start?
        assert_eq!((offset_of!(Core, state), align_of::<Core>()), (0, 64));
        let mutex = crate::loom::Mutex::new(State::new(0, 1, 1, std::time::Duration::ZERO));
        let data = {
            let guard = mutex.lock();
            (&*guard as *const State as usize) - (&mutex as *const _ as usize)
        };
        let line = |offset: usize| (data + offset) / 64;
        let queue = offset_of!(State, queue);
        let cursors = [
            offset_of!(Queue, head),
            offset_of!(Queue, tail),
            offset_of!(Queue, live),
            offset_of!(Queue, blocks),
        ];
        for cursor in cursors {
            assert_eq!(
                line(queue + cursor),
                0,
                "queue cursors share the lock's line"
            );
        }
        // Written by a busy thread on every job, besides the cursors.
        let per_job = [offset_of!(State, taken), offset_of!(State, completed)];
        // Read by every submission (`State::decide` on a busy pool).
        let decide = [
            offset_of!(State, idle),
            offset_of!(State, busy),
            offset_of!(State, spare),
            offset_of!(State, spinning),
            offset_of!(State, limit),
            offset_of!(State, eager),
            offset_of!(State, started),
            offset_of!(State, stopped),
            offset_of!(State, armed),
        ];
        for written in per_job {
            for read in decide {
                assert_ne!(line(written), line(read), "fields at {written} and {read}");
            }
        }
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
        assert_eq!(std::mem::size_of::<Option<Queued>>(), 48);
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
