//! The loop's timer heap.
//!
//! - The heap is ordered by `(deadline, seq)`; `seq` is fixed when the call is
//!   scheduled, so equal deadlines fire in scheduling order, also after a
//!   `reset` or `delay`.
//! - Rescheduling pushes a fresh entry and bumps the call's generation; the old
//!   entry becomes stale and is skipped when it surfaces. Cancelled and stale
//!   entries are counted, and the heap is compacted when they exceed 50 and
//!   half of it (Twisted's rule), so cancelled timers do not leak.
//! - Calls scheduled while a pass runs wait in `pending` until the next pass,
//!   so a callback that reschedules itself with zero delay cannot starve the
//!   loop (Twisted's `_newTimedCalls`).
//! - Loop-thread only (`Rc`, `RefCell`).

use std::cell::{Cell, RefCell};
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::panic::Location;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use super::{Clock, DelayedCall};

/// Compaction threshold: Twisted compacts past 50 cancellations that are
/// also more than half of the heap.
const COMPACT_MIN: usize = 50;

/// Heap entries with room from the start.
const HEAP_ROOM: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum CallState {
    Scheduled,
    Called,
    Cancelled,
}

pub(super) struct CallCell {
    seq: u64,
    pub(super) deadline: Cell<Duration>,
    generation: Cell<u64>,
    pub(super) state: Cell<CallState>,
    pub(super) func: RefCell<Option<Box<dyn FnOnce()>>>,
    pub(super) location: &'static Location<'static>,
    pub(super) timers: Weak<Timers>,
}

struct Entry {
    deadline: Duration,
    seq: u64,
    generation: u64,
    call: Rc<CallCell>,
}

impl Entry {
    fn is_live(&self) -> bool {
        self.call.state.get() == CallState::Scheduled
            && self.call.generation.get() == self.generation
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.deadline, self.seq, self.generation).cmp(&(
            other.deadline,
            other.seq,
            other.generation,
        ))
    }
}

/// Ends a timer pass when dropped.
struct EndPass<'a>(&'a Cell<bool>);

impl Drop for EndPass<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// The loop's timers. Loop-thread only.
pub(crate) struct Timers {
    clock: Arc<dyn Clock>,
    heap: RefCell<BinaryHeap<Reverse<Entry>>>,
    /// Entries scheduled while a pass runs; merged at the next pass.
    pending: RefCell<Vec<Entry>>,
    in_pass: Cell<bool>,
    next_seq: Cell<u64>,
    /// Heap entries that will be skipped (cancelled or superseded).
    stale: Cell<usize>,
    /// Scheduled, uncalled, uncancelled calls.
    live: Cell<usize>,
}

impl Timers {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Rc<Self> {
        Rc::new(Timers {
            clock,
            // Room up front: the first timer after a long idle spell (a
            // fresh loop's first sleep) would otherwise pay a cold
            // allocation on its way in (issue 8).
            heap: RefCell::new(BinaryHeap::with_capacity(HEAP_ROOM)),
            pending: RefCell::new(Vec::new()),
            in_pass: Cell::new(false),
            next_seq: Cell::new(0),
            stale: Cell::new(0),
            live: Cell::new(0),
        })
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub(crate) fn now(&self) -> Duration {
        self.clock.now()
    }

    /// Schedules `f` to run `delay` from now (saturating: `Duration::MAX`
    /// means never).
    pub(crate) fn schedule(
        self: &Rc<Self>,
        delay: Duration,
        f: Box<dyn FnOnce()>,
        location: &'static Location<'static>,
    ) -> DelayedCall {
        let deadline = self.now().saturating_add(delay);
        self.schedule_at(deadline, f, location)
    }

    /// Schedules `f` to run at `deadline` on this clock.
    pub(crate) fn schedule_at(
        self: &Rc<Self>,
        deadline: Duration,
        f: Box<dyn FnOnce()>,
        location: &'static Location<'static>,
    ) -> DelayedCall {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        let call = Rc::new(CallCell {
            seq,
            deadline: Cell::new(deadline),
            generation: Cell::new(0),
            state: Cell::new(CallState::Scheduled),
            func: RefCell::new(Some(f)),
            location,
            timers: Rc::downgrade(self),
        });
        self.live.set(self.live.get() + 1);
        self.push(Entry {
            deadline,
            seq,
            generation: 0,
            call: call.clone(),
        });
        DelayedCall::new(call)
    }

    fn push(&self, entry: Entry) {
        if self.in_pass.get() {
            self.pending.borrow_mut().push(entry);
        } else {
            self.heap.borrow_mut().push(Reverse(entry));
        }
    }

    /// Moves a scheduled call to `deadline`.
    pub(super) fn reschedule(&self, call: &Rc<CallCell>, deadline: Duration) {
        let generation = call.generation.get() + 1;
        call.generation.set(generation);
        call.deadline.set(deadline);
        self.stale.set(self.stale.get() + 1);
        self.push(Entry {
            deadline,
            seq: call.seq,
            generation,
            call: call.clone(),
        });
        self.maybe_compact();
    }

    pub(super) fn cancelled(&self) {
        self.live.set(self.live.get() - 1);
        self.stale.set(self.stale.get() + 1);
        self.maybe_compact();
    }

    fn maybe_compact(&self) {
        if self.in_pass.get() {
            return;
        }
        // The common case (few stale entries) touches nothing else.
        let stale = self.stale.get();
        if stale <= COMPACT_MIN {
            return;
        }
        let mut heap = self.heap.borrow_mut();
        if stale * 2 > heap.len() {
            let entries = std::mem::take(&mut *heap).into_vec();
            *heap = entries.into_iter().filter(|e| e.0.is_live()).collect();
            let kept = heap.len() + self.pending.borrow().len();
            self.stale.set(kept.saturating_sub(self.live.get()));
        }
    }

    /// The earliest live deadline, dropping stale entries from the top.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        let mut heap = self.heap.borrow_mut();
        while let Some(Reverse(top)) = heap.peek() {
            if top.is_live() {
                return Some(top.deadline);
            }
            heap.pop();
            self.stale.set(self.stale.get().saturating_sub(1));
        }
        None
    }

    /// Whether calls scheduled during the last pass are waiting to be merged.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.borrow().is_empty()
    }

    /// Number of live (scheduled, not called, not cancelled) calls.
    pub(crate) fn live_count(&self) -> usize {
        self.live.get()
    }

    /// Heap size including stale entries (for leak tests and statistics).
    pub(crate) fn heap_len(&self) -> usize {
        self.heap.borrow().len() + self.pending.borrow().len()
    }

    /// Runs every call due now; `run` invokes one callback (with panic
    /// handling supplied by the reactor). `now` is a clock reading the
    /// caller just took, if it has one (else the clock is read, and only if
    /// a call is scheduled). Returns how many ran.
    pub(crate) fn run_due(
        &self,
        now: Option<Duration>,
        mut run: impl FnMut(Box<dyn FnOnce()>, &'static Location<'static>),
    ) -> usize {
        {
            let mut heap = self.heap.borrow_mut();
            let mut pending = self.pending.borrow_mut();
            // Checked first: an empty `drain` still runs its out-of-line
            // drop, code a turn after a long sleep would fetch cold.
            if !pending.is_empty() {
                for e in pending.drain(..) {
                    heap.push(Reverse(e));
                }
            }
            drop(pending);
            // No timer, no clock read: on some hosts reading the clock costs
            // more than a whole turn of task polling.
            if heap.is_empty() {
                return 0;
            }
        }
        let now = now.unwrap_or_else(|| self.now());
        self.in_pass.set(true);
        // Cleared also if `run` unwinds (a propagated panic): the calls not
        // yet run stay in the heap for the next pass.
        let _pass = EndPass(&self.in_pass);
        let mut ran = 0;
        loop {
            let entry = {
                let mut heap = self.heap.borrow_mut();
                match heap.peek() {
                    Some(Reverse(top)) if top.deadline <= now => heap.pop().map(|r| r.0),
                    _ => None,
                }
            };
            let Some(entry) = entry else { break };
            if !entry.is_live() {
                self.stale.set(self.stale.get().saturating_sub(1));
                continue;
            }
            let call = entry.call;
            // `called` is set before the function runs, so cancelling from
            // inside the call reports AlreadyCalled (Twisted).
            call.state.set(CallState::Called);
            self.live.set(self.live.get() - 1);
            let f = call.func.borrow_mut().take();
            if let Some(f) = f {
                ran += 1;
                run(f, call.location);
            }
        }
        drop(_pass);
        self.maybe_compact();
        ran
    }

    /// Drops every call (breaking `Rc` cycles when the reactor goes away).
    pub(crate) fn clear(&self) {
        self.heap.borrow_mut().clear();
        self.pending.borrow_mut().clear();
        self.stale.set(0);
        self.live.set(0);
    }

    /// Every scheduled, uncancelled call, earliest first.
    pub(crate) fn delayed_calls(&self) -> Vec<DelayedCall> {
        let heap = self.heap.borrow();
        let pending = self.pending.borrow();
        let mut calls: Vec<&Entry> = heap
            .iter()
            .map(|r| &r.0)
            .chain(pending.iter())
            .filter(|e| e.is_live())
            .collect();
        calls.sort();
        calls
            .into_iter()
            .map(|e| DelayedCall::new(e.call.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ManualClock;

    fn timers() -> (ManualClock, Rc<Timers>) {
        let clock = ManualClock::new();
        let t = Timers::new(Arc::new(clock.clone()));
        (clock, t)
    }

    fn run_all(t: &Timers) -> usize {
        t.run_due(None, |f, _| f())
    }

    #[test]
    fn the_first_timers_need_no_allocation_of_the_heap() {
        let (_c, t) = timers();
        assert!(t.heap.borrow().capacity() >= HEAP_ROOM);
    }

    #[test]
    fn equal_deadlines_fire_in_scheduling_order() {
        let (_c, t) = timers();
        let log = Rc::new(RefCell::new(Vec::new()));
        for i in 0..10 {
            let l = log.clone();
            t.schedule(
                Duration::ZERO,
                Box::new(move || l.borrow_mut().push(i)),
                Location::caller(),
            );
        }
        run_all(&t);
        assert_eq!(*log.borrow(), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn cancelled_timers_are_compacted() {
        let (_c, t) = timers();
        for _ in 0..1000 {
            let c = t.schedule(Duration::from_secs(5), Box::new(|| ()), Location::caller());
            c.cancel().unwrap();
        }
        assert!(
            t.heap_len() <= 2 * COMPACT_MIN + 2,
            "heap kept {}",
            t.heap_len()
        );
        assert_eq!(t.live_count(), 0);
    }

    #[test]
    fn rescheduling_leaves_one_live_entry() {
        let (clock, t) = timers();
        let hits = Rc::new(Cell::new(0));
        let h = hits.clone();
        let c = t.schedule(
            Duration::from_secs(1),
            Box::new(move || h.set(h.get() + 1)),
            Location::caller(),
        );
        for _ in 0..500 {
            c.reset(Duration::from_secs(2)).unwrap();
        }
        assert!(t.heap_len() <= 2 * COMPACT_MIN + 2);
        clock.advance(Duration::from_secs(2));
        assert_eq!(run_all(&t), 1);
        assert_eq!(hits.get(), 1);
    }

    #[test]
    fn calls_scheduled_during_a_pass_wait_for_the_next() {
        let (_c, t) = timers();
        let t2 = t.clone();
        let hits = Rc::new(Cell::new(0));
        let h = hits.clone();
        t.schedule(
            Duration::ZERO,
            Box::new(move || {
                let h = h.clone();
                t2.schedule(
                    Duration::ZERO,
                    Box::new(move || h.set(h.get() + 1)),
                    Location::caller(),
                );
            }),
            Location::caller(),
        );
        assert_eq!(run_all(&t), 1);
        assert_eq!(hits.get(), 0);
        assert_eq!(run_all(&t), 1);
        assert_eq!(hits.get(), 1);
    }

    #[test]
    fn huge_delays_saturate_instead_of_overflowing() {
        let (_c, t) = timers();
        let c = t.schedule(Duration::MAX, Box::new(|| ()), Location::caller());
        assert_eq!(c.time(), Duration::MAX);
        c.delay(Duration::MAX).unwrap();
        assert_eq!(t.next_deadline(), Some(Duration::MAX));
    }
}
