//! The cross-thread inbox: the queue of jobs for the loop, and its
//! coalesced wake protocol (the states and the spin live in [`wake`]).
//!
//! Producers (any thread) push a job into their CPU's lane (a
//! `Mutex<VecDeque>` per CPU, modulo [`LANES`]), numbering it from one
//! shared counter under the lane's lock, then call [`WakeState::notify`]:
//! only the producer that finds the loop about to sleep writes the waker
//! (one syscall), so producers into a busy loop make one plain load and no
//! syscall. Before it blocks, the loop asks [`Inbox::prepare_to_sleep`],
//! which marks the loop sleepy and then re-checks the counter with a
//! read-modify-write: a push numbered after the re-check sees the mark and
//! wakes the loop; one before it is seen by the re-check. This is the
//! protocol modelled under loom (`inbox/loom_tests.rs`).
//!
//! Why lanes: with one queue, two producers on two cores passed its lock's
//! line, its header's and its buffer's lines (adjacent jobs written from
//! both cores) back and forth on every push, and the loser of each race
//! spun or slept in the lock (issue 9's two-producer burst: the lock and
//! unlock were a third of the process's CPU). In a lane a producer
//! touches lines of its own (and the loop's, once per drain); the two
//! cores share only the counter's line, one increment per push.
//!
//! The order is global: the loop merges the lanes by the pushes' numbers,
//! so a call made after another that happened before it runs after it,
//! whatever lanes they landed in (asyncio's and Twisted's one queue). The
//! loop never waits on a producer: it locks each lane briefly (as it locked
//! the one queue), and a job numbered after a gap (a push that landed in a
//! lane after the drain had passed it) is held for the next turn, never
//! waited for ([`Inbox::drain_into`]).
//!
//! The age of the oldest waiting call (`ReactorStatistics::inbox_oldest_age`)
//! costs one clock read per batch, not per call: the push that finds its
//! lane empty dates the lane's batch with the reactor's clock (with the
//! system clock: the kernel's coarse clock, `AgeClock`), and the loop's
//! drain takes the whole lane, so the date belongs to the lane's oldest
//! job (FIFO); the inbox's oldest age is the oldest lane's. A custom clock
//! is read after the push has left the lock (a claim made under the lock
//! keeps a late date off a later batch; see [`stamp`]), so the critical
//! section is the same with or without ages; the date is taken just after
//! the job is queued, and a batch whose push has not read the clock yet
//! reads as just queued. The coarse clock costs a few loads, less than the
//! claim and the compare-exchange that date a batch after the lock: there
//! the push dates its batch under the lock, with a plain store (every write
//! of that stamp is then made under the lock). Every blocking call into an
//! idle or waiting loop starts a batch, and on one core the caller's share
//! of the round trip decides how often the loop falls asleep before the
//! caller parks (`bridge/from_thread.rs`). The stamp adds no step to the
//! wake protocol. (The clock must not call back into the inbox: every
//! clock in the crate only reads time.)
//!
//! Invariants:
//! - Every lane's `jobs` is `None` once closed (all at once, under every
//!   lane's lock); a push then fails and returns the job.
//! - A lane's jobs are in order of their numbers; the numbers below
//!   `taken` are the jobs handed over; `claims - taken` jobs are queued
//!   (in lanes, held by the loop, or in a push still under its lock).
//! - While a lane holds jobs, its `stamp` holds the claim or the date of
//!   the push that found it empty (see [`stamp`]).
//! - Every job pushed before `close` is handed to the loop by a drain or by
//!   `close` itself.

use std::collections::VecDeque;
use std::panic::Location;

use std::sync::Arc;
use std::time::Duration;

use crate::inline_fn::{self, InlineFn};
use crate::loom::atomic::{AtomicU64, Ordering};
use crate::loom::{Mutex, SpinGate};
use crate::time::Clock;

pub(crate) mod cpu;
mod drain;
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

/// A message queued for the loop, with where it was queued from and its
/// push's sequence number (the order the loop runs it in). The lanes and
/// the loop's batch hold the same type, so a drain can hand a whole lane
/// over by swapping buffers ([`Inbox::drain_into`]).
pub(crate) struct Job {
    pub(crate) message: Message,
    pub(crate) location: &'static Location<'static>,
    seq: u64,
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
    /// The queues producers push into, one per CPU (modulo [`LANES`]).
    lanes: [Lane; LANES],
    /// Pushes so far: each push's sequence number is the count before it.
    claims: Counter,
    /// Jobs handed to the loop (or back by `close`): every sequence number
    /// below it. Written by the loop only, under `merge`.
    taken: Counter,
    /// The loop's side of the lanes (see [`Merge`]).
    merge: Mutex<Merge>,
    wake: WakeState,
    waker: W,
    /// Dates the oldest waiting job; `None`: ages are not kept.
    clock: Option<AgeClock>,
}

/// How many lanes an inbox has: producers on CPUs `c` and `c + LANES`
/// share one (correct, only slower). Under loom, two: enough for every
/// cross-lane interleaving, few enough to keep the models small.
const LANES: usize = if cfg!(loom) { 2 } else { 8 };

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

/// One lane: a queue and its stamp, each on cache lines of their own
/// (apart from the other lanes, from the wake state, which the loop reads
/// in a loop while it spins, from the counters, and from each other: a
/// push dates its batch after leaving the lock, and on the queue's line
/// that would pull the line away from whoever took the lock next). 128
/// bytes, as the adjacent-line prefetcher pairs 64-byte lines.
#[repr(align(128))]
struct Lane {
    queue: Mutex<LaneQueue>,
    /// The date of the lane's oldest waiting job (see [`stamp`]).
    stamp: Stamp,
}

/// A lane's guarded part: `None` once closed.
struct LaneQueue {
    jobs: Option<VecDeque<Job>>,
}

/// A counter on cache lines of its own.
#[repr(align(128))]
struct Counter(AtomicU64);

/// The loop's side of the lanes: per lane, the jobs it took from that
/// lane and has not handed over yet (those after a gap in the sequence,
/// see [`Inbox::drain_into`]; usually none), in a buffer the loop swaps
/// with the lane's when it takes a whole lane. What every drain reads
/// comes first, next to the lock; the buffers are read only when the
/// mask says they hold jobs (`repr(C)`: in this order).
#[repr(C)]
struct Merge {
    /// The lane the last drain found jobs in first: where the next starts.
    start: usize,
    /// Bit `i`: `held[i]` holds jobs.
    holding: u32,
    /// When the jobs now held were taken from their lanes (with a clock;
    /// `None` while none are held).
    held_since: Option<Duration>,
    held: [VecDeque<Job>; LANES],
}

impl Merge {
    /// How many jobs the loop holds.
    fn held(&self) -> usize {
        lanes_of(self.holding).map(|i| self.held[i].len()).sum()
    }
}

/// The lanes whose bits are set in `bits`, lowest first.
fn lanes_of(mut bits: u32) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (bits != 0).then(|| {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            i
        })
    })
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
            lanes: std::array::from_fn(|_| Lane {
                queue: Mutex::new(LaneQueue {
                    jobs: Some(VecDeque::new()),
                }),
                stamp: Stamp::new(),
            }),
            claims: Counter(AtomicU64::new(0)),
            taken: Counter(AtomicU64::new(0)),
            merge: Mutex::new(Merge {
                start: 0,
                holding: 0,
                held_since: None,
                held: std::array::from_fn(|_| VecDeque::new()),
            }),
            wake: WakeState::new(),
            waker,
            clock,
        }
    }

    /// The lane of the calling thread: its CPU's (lane 0 where the CPU is
    /// unknown). Producers on different CPUs then touch no cache line of
    /// each other's but the sequence counter's.
    #[inline]
    fn lane(&self) -> &Lane {
        let cpu = cpu::current().unwrap_or(0) as usize;
        &self.lanes[cpu % LANES]
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
    /// check and the push's sequence number taken in one compare-exchange,
    /// so the bound is exact).
    #[inline]
    pub(crate) fn push_within<F: FnOnce() + Send + 'static>(
        &self,
        f: F,
        location: &'static Location<'static>,
        capacity: usize,
    ) -> Result<(), Refused<F>> {
        if inline_fn::fits::<F>() {
            self.queue(f, location, capacity, |g| Message::Call(InlineFn::new(g)))
        } else {
            self.queue(Box::new(f), location, capacity, |g| {
                Message::Call(InlineFn::new(g))
            })
            .map_err(|refused| refused.map(|boxed| *boxed))
        }
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
        self.queue(message, location, usize::MAX, Message::Deliver)
            .map_err(Refused::into_inner)
    }

    /// Queues `item` (made a message by `message`, under the lock) in the
    /// calling thread's lane, then wakes the loop if it must and dates the
    /// batch if this push started one.
    #[inline(always)]
    fn queue<T>(
        &self,
        item: T,
        location: &'static Location<'static>,
        capacity: usize,
        message: impl FnOnce(T) -> Message,
    ) -> Result<(), Refused<T>> {
        let lane = self.lane();
        let first = self.enqueue(lane, item, location, capacity, message)?;
        self.pushed(lane, first);
        Ok(())
    }

    /// The locked part of a push into `lane`: the job and its sequence
    /// number are queued together, so a lane is in sequence order and a
    /// number the loop has read is in its lane once the loop holds that
    /// lane's lock (see [`drain_into`](Self::drain_into)). Returns the
    /// push's number (from 1) if it started the lane's batch and must date
    /// it after the lock, else 0. On the coarse clock a push that finds the
    /// lane empty dates it here, under the lock, and returns 0: reading that
    /// clock costs a few loads, less than the claim's swap and the date's
    /// compare-exchange after the lock (see [`stamp`]).
    #[inline(always)]
    fn enqueue<T>(
        &self,
        lane: &Lane,
        item: T,
        location: &'static Location<'static>,
        capacity: usize,
        message: impl FnOnce(T) -> Message,
    ) -> Result<u64, Refused<T>> {
        let mut queue = lane.queue.lock();
        let Some(jobs) = queue.jobs.as_mut() else {
            return Err(Refused::Closed(item));
        };
        let Some(seq) = self.claim(capacity) else {
            return Err(Refused::Full(item));
        };
        let mut first = 0;
        if jobs.is_empty() {
            if self.dates_under_lock() {
                lane.stamp.set(crate::time::coarse_nanos());
            } else {
                first = seq + 1;
                lane.stamp.claim(first);
            }
        }
        jobs.push_back(Job {
            message: message(item),
            location,
            seq,
        });
        Ok(first)
    }

    /// Takes the next sequence number, unless `capacity` jobs are queued
    /// (pushed and not yet taken by the loop; a push still in its lane's
    /// lock counts as queued). Acquire-release: the loop's last read before
    /// it sleeps is a read-modify-write of this counter
    /// ([`prepare_to_sleep`](Self::prepare_to_sleep)), so a push numbered
    /// after it sees the loop sleepy.
    #[inline(always)]
    fn claim(&self, capacity: usize) -> Option<u64> {
        if capacity == usize::MAX {
            return Some(self.claims.0.fetch_add(1, Ordering::AcqRel));
        }
        let mut seq = self.claims.0.load(Ordering::Acquire);
        loop {
            // `taken` only grows: a stale read counts more queued, never
            // fewer, and a refusal is true when `taken` was read.
            let taken = self.taken.0.load(Ordering::Acquire);
            if seq.saturating_sub(taken) >= capacity as u64 {
                return None;
            }
            match self.claims.0.compare_exchange_weak(
                seq,
                seq + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(seq),
                Err(now) => seq = now,
            }
        }
    }

    /// Whether a push that starts a batch dates it under the lock (the
    /// coarse clock; [`enqueue`](Self::enqueue)).
    #[inline]
    fn dates_under_lock(&self) -> bool {
        matches!(self.clock, Some(AgeClock::Coarse))
    }

    /// After a push has left the lock: wakes the loop if it must, then, if
    /// the push started a batch (`first`: its number, not 0), dates it (the
    /// wake first: a sleeping loop starts waking while the clock is read).
    #[inline]
    fn pushed(&self, lane: &Lane, first: u64) {
        self.notify();
        if first != 0 {
            self.date(lane, first);
        }
    }

    /// Dates the batch push `first` started in `lane` (out of line: the
    /// push stays small enough to inline into its caller).
    #[inline(never)]
    fn date(&self, lane: &Lane, first: u64) {
        if let Some(clock) = &self.clock {
            lane.stamp.date(first, clock.now());
        }
    }

    /// Wakes the loop unless a wake is already pending or the loop is awake.
    pub(crate) fn notify(&self) {
        self.wake.notify(&self.waker);
    }

    /// Loop, before blocking: reports whether it may block (`false`: work
    /// arrived, or `other_work` says there is some; the loop stays awake).
    /// See [`WakeState::prepare_to_sleep`]. The re-check reads the
    /// sequence counter with a read-modify-write: a push numbered after it
    /// acquires it, so sees the loop sleepy when it notifies; one numbered
    /// before it is counted here. Jobs held after a gap count as work: the
    /// next drain finds the gap's job in its lane.
    pub(crate) fn prepare_to_sleep(
        &self,
        gate: &SpinGate,
        other_work: impl FnOnce() -> bool,
    ) -> bool {
        self.wake.prepare_to_sleep(gate, || {
            self.claims.0.fetch_add(0, Ordering::AcqRel) != self.taken.0.load(Ordering::Relaxed)
                || other_work()
        })
    }

    /// Loop, after waking: marks the loop awake so producers skip the waker.
    pub(crate) fn awake(&self) {
        self.wake.awake();
    }

    /// Loop, after its poll returned: marks the loop awake and says whether
    /// the poll ended a sleep that no producer notified, which no spin
    /// before it could have ended (`wake.rs`, "Woken by something else").
    pub(crate) fn awake_unnotified(&self) -> bool {
        self.wake.awake_unnotified()
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

    /// Closes the inbox; later pushes fail. Returns the jobs still queued,
    /// in the order of their pushes. Every lane is locked at once, so no
    /// push succeeds after one was refused as closed.
    pub(crate) fn close(&self) -> VecDeque<Job> {
        let mut merge = self.merge.lock();
        let mut queues: Vec<_> = self.lanes.iter().map(|l| l.queue.lock()).collect();
        let mut left: Vec<Job> = merge.held.iter_mut().flat_map(|h| h.drain(..)).collect();
        for queue in &mut queues {
            left.extend(queue.jobs.take().into_iter().flatten());
        }
        // No push can number itself while every lane is locked.
        let claimed = self.claims.0.load(Ordering::Acquire);
        self.taken.0.store(claimed, Ordering::Release);
        merge.holding = 0;
        merge.held_since = None;
        drop(queues);
        left.sort_unstable_by_key(|e| e.seq);
        left.into()
    }

    pub(crate) fn pushes(&self) -> u64 {
        self.claims.0.load(Ordering::Relaxed)
    }

    /// Jobs queued and not yet taken by the loop (zero once closed).
    pub(crate) fn len(&self) -> usize {
        let taken = self.taken.0.load(Ordering::Acquire);
        let claimed = self.claims.0.load(Ordering::Acquire);
        usize::try_from(claimed.saturating_sub(taken)).unwrap_or(usize::MAX)
    }

    /// How long the oldest queued job has waited, from just after its push
    /// queued it (zero when empty, closed, kept without a clock, or while
    /// that push is still reading the clock). Each lane dates its own
    /// oldest job; jobs the loop holds after a gap (rare: a push landing in
    /// a lane a drain had passed) are dated when the loop took them, a
    /// little after they were queued.
    pub(crate) fn oldest_age(&self) -> Duration {
        let Some(clock) = &self.clock else {
            return Duration::ZERO;
        };
        let mut oldest = {
            let merge = self.merge.lock();
            merge.held_since.filter(|_| merge.holding != 0)
        };
        for lane in &self.lanes {
            let queue = lane.queue.lock();
            if queue.jobs.as_ref().is_some_and(|q| !q.is_empty()) {
                if let Some(date) = lane.stamp.read() {
                    oldest = Some(oldest.map_or(date, |o| o.min(date)));
                }
            }
        }
        // Read after the dates (acquired from their pushes), so never before.
        oldest.map_or(Duration::ZERO, |date| clock.now().saturating_sub(date))
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
