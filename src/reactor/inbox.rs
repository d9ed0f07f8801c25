//! The cross-thread inbox: the queue of jobs for the loop, and its
//! coalesced wake protocol (the states and the spin live in [`wake`]).
//!
//! Producers (any thread) push a job under a short mutex, then call
//! [`WakeState::notify`]: only the producer that finds the loop about to
//! sleep writes the waker (one syscall), so producers into a busy loop make
//! one plain load and no syscall. Before it blocks, the loop asks
//! [`Inbox::prepare_to_sleep`], which marks the loop sleepy and then
//! re-checks the queue under its lock: a push after the re-check sees the
//! mark and wakes the loop; a push before it is seen by the re-check. This
//! is the protocol modelled under loom (`inbox/loom_tests.rs`).
//!
//! The loop never waits on a producer: the queue is a `Mutex<VecDeque>` that
//! the loop swaps out whole (one short critical section per turn), never a
//! slot-based queue whose consumer may spin on a half-written slot.
//!
//! The age of the oldest waiting call (`ReactorStatistics::inbox_oldest_age`)
//! costs one clock read per batch, not per call: the push that finds the
//! queue empty dates the batch with the reactor's clock (with the system
//! clock: the kernel's coarse clock, `AgeClock`), and the loop's
//! drain takes the whole queue, so the date belongs to the oldest job
//! queued (FIFO). A custom clock is read after the push has left the lock
//! (a claim made under the lock keeps a late date off a later batch; see
//! [`stamp`]), so the critical section is the same with or without ages;
//! the date is taken just after the job is queued, and a batch whose push
//! has not read the clock yet reads as just queued. The coarse clock costs
//! a few loads, less than the claim and the compare-exchange that date a
//! batch after the lock: there the push dates its batch under the lock,
//! with a plain store (every write of that stamp is then made under the
//! lock). Every blocking call into an idle or waiting loop starts a batch,
//! and on one core the caller's share of the round trip decides how often
//! the loop falls asleep before the caller parks (`bridge/from_thread.rs`).
//! The stamp adds no step
//! to the wake protocol. (The clock must not call back into the inbox:
//! every clock in the crate only reads time.)
//!
//! Invariants:
//! - `queue` is `None` once closed; a push then fails and returns the job.
//! - While the queue holds jobs, `stamp` holds the claim or the date of the
//!   push that found it empty (see [`stamp`]); `pushes - len` jobs were
//!   pushed before that one.
//! - Every job pushed before `close` is handed to the loop by a drain or by
//!   `close` itself.

use std::collections::VecDeque;
use std::panic::Location;

use std::sync::Arc;
use std::time::Duration;

use crate::inline_fn::{self, InlineFn};
use crate::loom::{Mutex, SpinGate};
use crate::time::Clock;

pub(crate) mod cpu;
mod stamp;
mod wake;

use stamp::Stamp;
use wake::WakeState;
pub(crate) use wake::{MAX_SPIN_PAUSE, MISS_AFTER_SLEEP, Wake};

/// A message that is its own shared allocation: delivering it on the loop
/// needs no box of its own (pool completions ride in the job's state).
pub(crate) trait Deliver: Send + Sync {
    /// Runs on the loop thread.
    fn deliver(self: std::sync::Arc<Self>);
}

/// What a job carries: a closure (in place when small), or an `Arc`'d
/// message.
pub(crate) enum Message {
    Call(InlineFn),
    Deliver(std::sync::Arc<dyn Deliver>),
}

/// A message queued for the loop, with where it was queued from.
pub(crate) struct Job {
    pub(crate) message: Message,
    pub(crate) location: &'static Location<'static>,
}

/// Why [`Inbox::push_within`] did not queue a job; either way it is handed
/// back.
pub(crate) enum Refused<F> {
    /// `capacity` jobs are queued.
    Full(F),
    /// The inbox is closed.
    Closed(F),
}

impl<F> Refused<F> {
    pub(crate) fn into_inner(self) -> F {
        match self {
            Refused::Full(f) | Refused::Closed(f) => f,
        }
    }

    fn map<G>(self, f: impl FnOnce(F) -> G) -> Refused<G> {
        match self {
            Refused::Full(x) => Refused::Full(f(x)),
            Refused::Closed(x) => Refused::Closed(f(x)),
        }
    }
}

pub(crate) struct Inbox<W> {
    locked: Locked,
    wake: WakeState,
    waker: W,
    /// Dates the oldest waiting job; `None`: ages are not kept.
    clock: Option<AgeClock>,
}

/// What dates the oldest waiting job: the reactor's clock, or, when that is
/// the system clock, the kernel's coarse clock (`crate::time::coarse_nanos`,
/// the same time at a tick's resolution): the push that starts a batch is
/// on every `call_from_thread`, `blocking_call_from_thread` and job
/// delivery to an idle loop, where a precise read costs 40-90 ns and the
/// age it feeds is reported in milliseconds.
pub(crate) enum AgeClock {
    /// The reactor's own clock (a custom one: tests, a manual clock).
    Reactor(Arc<dyn Clock>),
    /// The kernel's coarse monotonic clock: ages within one tick (1-4 ms).
    Coarse,
}

impl AgeClock {
    #[inline]
    fn now(&self) -> Duration {
        match self {
            AgeClock::Reactor(clock) => clock.now(),
            AgeClock::Coarse => Duration::from_nanos(crate::time::coarse_nanos()),
        }
    }
}

/// The queue and the stamp (claimed under its lock), each on cache lines
/// of its own: apart from the wake state, which the loop reads in a loop
/// while it spins (sharing a line, each push would pull the line back from
/// the spinning loop), from the reactor's other shared fields, and from
/// each other (a push dates its batch after leaving the lock: on the
/// queue's line, that would pull the line away from whoever took the lock
/// next). 128 bytes, as the adjacent-line prefetcher pairs 64-byte lines.
#[repr(align(128))]
struct Locked {
    queue: Mutex<Queue>,
    /// The date of the oldest waiting job (see [`stamp`]).
    stamp: Stamp,
}

/// The guarded part: `jobs` is `None` once closed; `pushes` is counted under
/// the lock so producers share no extra cache line for statistics.
#[derive(Default)]
struct Queue {
    jobs: Option<VecDeque<Job>>,
    pushes: u64,
}

impl Queue {
    /// The open queue, ready for one more job (the push counted), and, if
    /// it was empty, this push's sequence number, claimed in `stamp` (the
    /// push dates its batch after the lock, [`Inbox::pushed`]), else 0.
    /// On the coarse clock (`coarse`) a push that finds the queue empty
    /// dates its batch here, under the lock, and returns 0: reading that
    /// clock costs a few loads, less than the claim's swap and the date's
    /// compare-exchange after the lock (see [`stamp`]). `None` when closed.
    #[inline]
    fn slot(&mut self, stamp: &Stamp, coarse: bool) -> Option<(&mut VecDeque<Job>, u64)> {
        let q = self.jobs.as_mut()?;
        self.pushes += 1;
        let mut first = 0;
        if q.is_empty() {
            if coarse {
                stamp.set(crate::time::coarse_nanos());
            } else {
                first = self.pushes;
                stamp.claim(first);
            }
        }
        Some((q, first))
    }
}

impl<W: Wake> Inbox<W> {
    /// An inbox that keeps no ages (`oldest_age` is zero).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn new(waker: W) -> Self {
        Self::build(waker, None)
    }

    /// An inbox that stamps its oldest waiting job with `clock`.
    pub(crate) fn with_clock(waker: W, clock: Arc<dyn Clock>) -> Self {
        Self::build(waker, Some(AgeClock::Reactor(clock)))
    }

    /// An inbox that stamps its oldest waiting job on `clock`.
    pub(crate) fn with_age_clock(waker: W, clock: AgeClock) -> Self {
        Self::build(waker, Some(clock))
    }

    fn build(waker: W, clock: Option<AgeClock>) -> Self {
        Inbox {
            locked: Locked {
                queue: Mutex::new(Queue {
                    jobs: Some(VecDeque::new()),
                    pushes: 0,
                }),
                stamp: Stamp::new(),
            },
            wake: WakeState::new(),
            waker,
            clock,
        }
    }

    /// Queues `f`; gives it back if the inbox is closed. A closure of up to
    /// [`inline_fn::INLINE_BYTES`] is stored in the queue slot itself (no
    /// allocation); a larger one is boxed, outside the lock.
    #[inline]
    pub(crate) fn push<F: FnOnce() + Send + 'static>(
        &self,
        f: F,
        location: &'static Location<'static>,
    ) -> Result<(), F> {
        self.push_within(f, location, usize::MAX)
            .map_err(Refused::into_inner)
    }

    /// [`push`](Self::push) unless `capacity` jobs are already queued (the
    /// check and the push under one lock, so the bound is exact).
    #[inline]
    pub(crate) fn push_within<F: FnOnce() + Send + 'static>(
        &self,
        f: F,
        location: &'static Location<'static>,
        capacity: usize,
    ) -> Result<(), Refused<F>> {
        if inline_fn::fits::<F>() {
            self.push_call(f, location, capacity)
        } else {
            self.push_call(Box::new(f), location, capacity)
                .map_err(|refused| refused.map(|boxed| *boxed))
        }
    }

    /// `push_within` for a closure that is stored in place.
    #[inline]
    fn push_call<G: FnOnce() + Send + 'static>(
        &self,
        g: G,
        location: &'static Location<'static>,
        capacity: usize,
    ) -> Result<(), Refused<G>> {
        let first = {
            let mut queue = self.locked.queue.lock();
            if queue.jobs.as_ref().is_some_and(|q| q.len() >= capacity) {
                return Err(Refused::Full(g));
            }
            match queue.slot(&self.locked.stamp, self.dates_under_lock()) {
                Some((q, first)) => {
                    q.push_back(Job {
                        message: Message::Call(InlineFn::new(g)),
                        location,
                    });
                    first
                }
                None => return Err(Refused::Closed(g)),
            }
        };
        self.pushed(first);
        Ok(())
    }

    /// Queues an `Arc`'d message; gives it back if the inbox is closed.
    /// Inlined into the worker's completion (`bridge/job.rs`), which calls
    /// it once per job (always: with a plain hint it stayed a call, whose
    /// frame was a fifth of the push).
    #[inline(always)]
    pub(crate) fn push_deliver(
        &self,
        message: std::sync::Arc<dyn Deliver>,
        location: &'static Location<'static>,
    ) -> Result<(), std::sync::Arc<dyn Deliver>> {
        let first = {
            let mut queue = self.locked.queue.lock();
            match queue.slot(&self.locked.stamp, self.dates_under_lock()) {
                Some((q, first)) => {
                    q.push_back(Job {
                        message: Message::Deliver(message),
                        location,
                    });
                    first
                }
                None => return Err(message),
            }
        };
        self.pushed(first);
        Ok(())
    }

    /// Whether a push that starts a batch dates it under the lock (the
    /// coarse clock; [`Queue::slot`]).
    #[inline]
    fn dates_under_lock(&self) -> bool {
        matches!(self.clock, Some(AgeClock::Coarse))
    }

    /// After a push has left the lock: wakes the loop if it must, then, if
    /// the push started a batch (`first`: its sequence number, not 0), dates it
    /// (the wake first: a sleeping loop starts waking while the clock is
    /// read).
    #[inline]
    fn pushed(&self, first: u64) {
        self.notify();
        if first != 0 {
            self.date(first);
        }
    }

    /// Dates the batch push `seq` started (out of line: the push stays
    /// small enough to inline into its caller).
    #[inline(never)]
    fn date(&self, seq: u64) {
        if let Some(clock) = &self.clock {
            self.locked.stamp.date(seq, clock.now());
        }
    }

    /// Wakes the loop unless a wake is already pending or the loop is awake.
    pub(crate) fn notify(&self) {
        self.wake.notify(&self.waker);
    }

    /// Loop: moves every queued job into `into` (which must be empty), keeping
    /// both buffers' capacity. The producers get `into`'s buffer, filled
    /// from its front.
    pub(crate) fn drain_into(&self, into: &mut VecDeque<Job>) {
        debug_assert!(into.is_empty());
        // The loop emptied `into` by popping from its front, which leaves
        // its start mid-buffer. Producers pushing from there wrap around the
        // ring: they touch every page of the buffer instead of the first
        // ones, and when the queue outgrows the buffer its growth copies
        // the wrapped part (and faults in the pages it copies to), under
        // the lock (`perf`, 2-producer burst: `memmove` in the push 1-17%
        // of the process's CPU; page faults on fresh queue memory are
        // 20-45% of it, so touching fewer pages matters). On an empty deque
        // `clear` only resets the start: no job to drop, the allocation
        // kept.
        into.clear();
        let mut queue = self.locked.queue.lock();
        if let Some(q) = queue.jobs.as_mut() {
            std::mem::swap(q, into);
        }
    }

    /// Loop, before blocking: reports whether it may block (`false`: work
    /// arrived, or `other_work` says there is some; the loop stays awake).
    /// See [`WakeState::prepare_to_sleep`].
    pub(crate) fn prepare_to_sleep(
        &self,
        gate: &SpinGate,
        other_work: impl FnOnce() -> bool,
    ) -> bool {
        self.wake.prepare_to_sleep(gate, || {
            self.locked
                .queue
                .lock()
                .jobs
                .as_ref()
                .is_some_and(|q| !q.is_empty())
                || other_work()
        })
    }

    /// Loop, after waking: marks the loop awake so producers skip the waker.
    pub(crate) fn awake(&self) {
        self.wake.awake();
    }

    /// Loop, after a sleep: whether the producer that woke it ran on the
    /// loop's own CPU, so that no spin before the sleep could have caught
    /// it (`wake.rs`, "Same CPU"). Reads the CPU only when a producer noted
    /// one.
    pub(crate) fn woken_from_this_cpu(&self) -> bool {
        self.wake.woken_from_known_cpu()
            && cpu::current().is_some_and(|cpu| self.wake.woken_from(cpu))
    }

    /// Loop, after a sleep: notes the CPU it woke on, for
    /// [`shares_loop_cpu`](Self::shares_loop_cpu).
    pub(crate) fn note_loop_cpu(&self) {
        self.wake.note_loop_cpu(cpu::current());
    }

    /// Any thread: whether it runs on the CPU the loop woke on after its
    /// last sleep (both known). A thread that waits for the loop there
    /// gains nothing by spinning: the loop cannot run while it spins (one
    /// core). A hint: either may have moved since.
    pub(crate) fn shares_loop_cpu(&self) -> bool {
        self.wake
            .loop_cpu()
            .is_some_and(|loop_cpu| cpu::current() == Some(loop_cpu))
    }

    /// Closes the inbox; later pushes fail. Returns the jobs still queued.
    pub(crate) fn close(&self) -> VecDeque<Job> {
        self.locked.queue.lock().jobs.take().unwrap_or_default()
    }

    pub(crate) fn pushes(&self) -> u64 {
        self.locked.queue.lock().pushes
    }

    /// Jobs queued and not yet taken by the loop (zero once closed).
    pub(crate) fn len(&self) -> usize {
        self.locked
            .queue
            .lock()
            .jobs
            .as_ref()
            .map_or(0, VecDeque::len)
    }

    /// How long the oldest queued job has waited, from just after its push
    /// queued it (zero when empty, closed, kept without a clock, or while
    /// that push is still reading the clock).
    pub(crate) fn oldest_age(&self) -> Duration {
        let Some(clock) = &self.clock else {
            return Duration::ZERO;
        };
        let date = {
            let queue = self.locked.queue.lock();
            match &queue.jobs {
                Some(q) if !q.is_empty() => self.locked.stamp.read(),
                _ => None,
            }
        };
        // Read after the date (acquired from its push), so never before it.
        date.map_or(Duration::ZERO, |date| clock.now().saturating_sub(date))
    }

    pub(crate) fn wakes(&self) -> u64 {
        self.wake.wakes()
    }

    #[cfg(all(test, loom))]
    pub(crate) fn waker(&self) -> &W {
        &self.waker
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;
