//! The submission inbox: `call_in_thread` without the pool's lock while the
//! pool is busy.
//!
//! A bounded ring of slots that submitters claim with one compare-exchange
//! on [`Inbox::tail`] and fill; its one consumer is whoever holds the
//! pool's lock, which moves the ready items into the [`Queue`](super::queue::Queue)
//! (`State::drain_inbox`). Bit 0 of `tail` is the *gate*: a submitter may
//! use the inbox only while it is open, and the claim is a compare-exchange
//! on the word that holds the gate, so a claim either precedes a close or
//! fails.
//!
//! # The gate's rule (`state.rs`)
//!
//! The gate is opened, under the lock, only when a submission needs no
//! decision: `State::decide` would say `Nothing` (and keep saying it) and a
//! thread is running a task, so it will come back to the lock and drain the
//! inbox. Every other hold of the lock that changes a role or reads the
//! backlog closes it first and drains everything claimed before the close
//! (waiting for a claim whose item is still being written). So an item in
//! the inbox is never one that should have woken or started a thread: the
//! decision it skipped was `Nothing`, and nothing could change that without
//! first draining it.
//!
//! The slot protocol is the bounded MPMC queue of Dmitry Vyukov, with one
//! consumer: slot `i` holds the sequence number of the position it expects
//! (`pos`: free for a push at `pos`; `pos + 1`: holds the item of `pos`).

// The slots are written and read through raw pointers, each access ordered
// by its slot's `seq` (see the SAFETY notes).
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use super::queue::Queued;
use crate::loom::atomic::{AtomicU64, Ordering};

/// Slots in the ring: a submitter may be this many items ahead of the
/// threads before it falls back to the lock (which drains the inbox).
#[cfg(not(loom))]
const SLOTS: usize = 256;
#[cfg(loom)]
const SLOTS: usize = 2;

/// The gate bit of `tail`.
const OPEN: u64 = 1;

/// A word alone in its cache line.
#[repr(align(64))]
pub(super) struct Padded(pub(super) AtomicU64);

/// One slot, alone in its cache line (a `Queued` is 48 bytes).
#[repr(align(64))]
struct Slot {
    seq: AtomicU64,
    job: cell::Cell<MaybeUninit<Queued>>,
}

/// See the module docs.
pub(super) struct Inbox {
    /// `position << 1 | gate`: the next position a submitter claims.
    tail: Padded,
    /// The next position the consumer drains (only a lock holder touches
    /// it: relaxed). Here rather than in the pool's `State`: that field
    /// there made `defer_1000_in_flight` 1.2× slower with twice the futex
    /// calls (the state's hot fields on one more line; session 15, quiet
    /// machine).
    pub(super) head: Padded,
    slots: Box<[Slot]>,
}

// SAFETY: a slot's `job` is written only by the submitter whose claim won
// its position, and read only by the consumer after the `Release` store of
// `seq` that ends that write (`Acquire` load); the consumer hands the slot
// back the same way. `Queued` is `Send`.
unsafe impl Sync for Inbox {}
unsafe impl Send for Inbox {}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tail = self.tail.0.load(Ordering::Relaxed);
        f.debug_struct("Inbox")
            .field("open", &(tail & OPEN != 0))
            .field("tail", &(tail >> 1))
            .finish()
    }
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox {
            tail: Padded(AtomicU64::new(0)),
            head: Padded(AtomicU64::new(0)),
            slots: (0..SLOTS as u64)
                .map(|i| Slot {
                    seq: AtomicU64::new(i),
                    job: cell::Cell::new(MaybeUninit::uninit()),
                })
                .collect(),
        }
    }
}

/// A claimed position: the item must be written (nothing between the claim
/// and the write may fail or unwind).
pub(super) struct Claim<'a> {
    slot: &'a Slot,
    pos: u64,
}

impl Claim<'_> {
    /// Fills the claimed slot and hands it to the consumer.
    #[inline]
    pub(super) fn write(self, job: Queued) {
        // SAFETY: this claim won `pos`, and the slot's `seq == pos` (read
        // `Acquire` before the claim) says the consumer is done with it.
        self.slot.job.with_mut(|p| unsafe { (*p).write(job) });
        self.slot.seq.store(self.pos + 1, Ordering::Release);
    }
}

impl Inbox {
    /// Claims the next position, if the gate is open and the ring has room.
    #[inline]
    pub(super) fn claim(&self) -> Option<Claim<'_>> {
        let mut tail = self.tail.0.load(Ordering::Relaxed);
        loop {
            if tail & OPEN == 0 {
                return None;
            }
            let pos = tail >> 1;
            let slot = &self.slots[pos as usize % SLOTS];
            let seq = slot.seq.load(Ordering::Acquire);
            if seq == pos {
                match self.tail.0.compare_exchange_weak(
                    tail,
                    tail + 2,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(Claim { slot, pos }),
                    Err(now) => tail = now,
                }
            } else if seq < pos {
                // The item of `pos - SLOTS` is not drained yet: full.
                return None;
            } else {
                // Another submitter took `pos`.
                tail = self.tail.0.load(Ordering::Relaxed);
            }
        }
    }

    /// Moves the ready items from position `*head` on to `out`, in order;
    /// stops at the first position not written yet. Consumer only (the
    /// pool's lock held; `head` is the state's).
    #[inline]
    pub(super) fn drain(&self, head: &mut u64, mut out: impl FnMut(Queued)) -> usize {
        let mut moved = 0;
        loop {
            let slot = &self.slots[*head as usize % SLOTS];
            if slot.seq.load(Ordering::Acquire) != *head + 1 {
                return moved;
            }
            // SAFETY: `seq == head + 1`: the claim of `head` wrote the item
            // (`Release`), and only this consumer takes it.
            let job = slot.job.with_mut(|p| unsafe { (*p).assume_init_read() });
            slot.seq.store(*head + SLOTS as u64, Ordering::Release);
            *head += 1;
            moved += 1;
            out(job);
        }
    }

    /// Closes the gate and moves every item claimed before the close to
    /// `out`, waiting for claims still being written. Consumer only.
    pub(super) fn close(&self, head: &mut u64, out: impl FnMut(Queued)) {
        let end = self.tail.0.fetch_and(!OPEN, Ordering::AcqRel) >> 1;
        self.drain_until(head, end, out);
    }

    /// Moves every item claimed so far to `out`, waiting for claims still
    /// being written, and leaves the gate as it is: what a submitter that
    /// takes the lock queues behind (so its own earlier submissions stay
    /// ahead of it). Consumer only.
    pub(super) fn drain_claimed(&self, head: &mut u64, out: impl FnMut(Queued)) {
        let end = self.tail.0.load(Ordering::Acquire) >> 1;
        self.drain_until(head, end, out);
    }

    fn drain_until(&self, head: &mut u64, end: u64, mut out: impl FnMut(Queued)) {
        let mut spins = 0u32;
        while *head < end {
            if self.drain(head, &mut out) == 0 {
                // A submitter between its claim and its write (a few
                // instructions, unless it was preempted).
                spins += 1;
                if cfg!(loom) || spins > 64 {
                    crate::loom::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }

    /// Opens the gate. Consumer only, with the inbox closed.
    pub(super) fn open(&self) {
        self.tail.0.fetch_or(OPEN, Ordering::Release);
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // Items still here (none once the pool stopped: `stop` closes and
        // drains) are dropped with their captures. Slot `i` holds an item
        // when its `seq` is one past a position it serves (`i + k * SLOTS`).
        for (i, slot) in self.slots.iter().enumerate() {
            let seq = slot.seq.load(Ordering::Relaxed);
            if seq.wrapping_sub(i as u64) % SLOTS as u64 == 1 {
                // SAFETY: written and not taken (see above); `&mut self`.
                let job = slot.job.with_mut(|p| unsafe { (*p).assume_init_read() });
                job.item.discard();
            }
        }
    }
}

/// `UnsafeCell` with loom's access API (loom checks the accesses).
mod cell {
    #[cfg(loom)]
    pub(super) use loom::cell::UnsafeCell as Cell;

    #[cfg(not(loom))]
    pub(super) struct Cell<T>(std::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> Cell<T> {
        pub(super) const fn new(value: T) -> Self {
            Cell(std::cell::UnsafeCell::new(value))
        }

        #[inline(always)]
        pub(super) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::panic::Location;

    use super::super::queue::{Item, Meta};
    use super::*;

    fn job(n: u64) -> Queued {
        Queued {
            item: Item::task(Box::new(|| ())),
            meta: Meta {
                location: Location::caller(),
                enqueued: n,
            },
        }
    }

    fn drained(inbox: &Inbox, head: &mut u64) -> Vec<u64> {
        let mut out = Vec::new();
        inbox.drain(head, |q| out.push(q.meta.enqueued));
        out
    }

    #[test]
    fn a_closed_inbox_refuses_and_an_open_one_keeps_fifo_order() {
        let inbox = Inbox::default();
        let mut head = 0;
        assert!(inbox.claim().is_none(), "closed at first");
        inbox.open();
        for n in 0..5 {
            inbox.claim().expect("open, with room").write(job(n));
        }
        assert_eq!(drained(&inbox, &mut head), vec![0, 1, 2, 3, 4]);
        assert_eq!(drained(&inbox, &mut head), Vec::<u64>::new());
    }

    #[test]
    fn a_full_inbox_refuses_until_drained_and_wraps_in_order() {
        let inbox = Inbox::default();
        let mut head = 0;
        inbox.open();
        for n in 0..SLOTS as u64 {
            inbox.claim().expect("room").write(job(n));
        }
        assert!(inbox.claim().is_none(), "full");
        assert_eq!(drained(&inbox, &mut head).len(), SLOTS);
        for n in 0..3 {
            inbox.claim().expect("room again").write(job(100 + n));
        }
        assert_eq!(drained(&inbox, &mut head), vec![100, 101, 102]);
    }

    #[test]
    fn close_moves_everything_claimed_before_it_and_then_refuses() {
        let inbox = Inbox::default();
        let mut head = 0;
        inbox.open();
        for n in 0..3 {
            inbox.claim().expect("open").write(job(n));
        }
        let mut out = Vec::new();
        inbox.close(&mut head, |q| out.push(q.meta.enqueued));
        assert_eq!(out, vec![0, 1, 2]);
        assert!(inbox.claim().is_none(), "closed");
        inbox.open();
        inbox.claim().expect("reopened").write(job(7));
        assert_eq!(drained(&inbox, &mut head), vec![7]);
    }

    #[test]
    fn items_left_in_a_dropped_inbox_are_dropped() {
        let captured = std::sync::Arc::new(());
        let inbox = Inbox::default();
        inbox.open();
        for _ in 0..3 {
            let c = captured.clone();
            inbox.claim().expect("open").write(Queued {
                item: Item::task(Box::new(move || drop(c))),
                meta: Meta {
                    location: Location::caller(),
                    enqueued: 0,
                },
            });
        }
        let mut head = 0;
        let mut taken = Vec::new();
        inbox.drain(&mut head, |q| taken.push(q));
        drop(taken);
        for _ in 0..SLOTS + 2 {
            let c = captured.clone();
            let Some(claim) = inbox.claim() else { break };
            claim.write(Queued {
                item: Item::task(Box::new(move || drop(c))),
                meta: Meta {
                    location: Location::caller(),
                    enqueued: 0,
                },
            });
        }
        assert_eq!(std::sync::Arc::strong_count(&captured), 1 + SLOTS);
        drop(inbox);
        assert_eq!(std::sync::Arc::strong_count(&captured), 1);
    }
}
