//! The inbox's wake protocol: whether a producer must write the loop's
//! waker, and the loop's bounded spin before it sleeps.
//!
//! One atomic `state`. The loop keeps it `AWAKE` while it runs, so
//! producers into a busy loop make one plain load and no syscall; only the
//! producer that moves it from `SLEEPY` to `AWAKE` writes the waker (one
//! syscall per sleep, however many producers). Before it blocks, the loop
//! sets `SLEEPY` and then re-checks for work (the inbox's push counter,
//! read with a read-modify-write, and whatever else the caller names): a producer that notifies
//! after the re-check sees `SLEEPY` and wakes the loop; one before it is
//! seen by the re-check, and the loop does not block.
//!
//! Bounded spin before sleeping: when a producer is mid-burst, its next call
//! is often a microsecond away, and a sleep then costs an eventfd write on
//! the producer and a wakeup on the loop. So before `SLEEPY` the loop sets
//! `SPINNING` and watches `state` for at most [`SPIN_LIMIT`]; a producer that
//! finds `SPINNING` moves it to `WORK` (one compare-exchange, no syscall) and
//! the loop goes on without sleeping. The spin reads only `state` (no lock,
//! no `sched_yield`, so nothing to fight over with a producer sharing its CPU,
//! crossbeam #821), it is bounded in time (an idle loop spins once, then
//! sleeps with 0 CPU), and the loop still never waits on a producer.
//!
//! The spin is gated by how the last ones went (the loop's [`SpinGate`]): a
//! spin that finds nothing, followed by a sleep of at least
//! [`MISS_AFTER_SLEEP`], pauses spinning for a doubling number of idle
//! spells (up to 128), a hit halves the pause. An idle loop woken now and
//! then (every spin misses) thus spins about once per 128 sleeps, and where
//! the producer shares the loop's only core (it cannot run while the loop
//! spins) the spins soon stop too. This matters beyond the CPU: on a shared
//! core, the 3 µs of spin per wake made the loop use more CPU than its
//! producer, and the kernel's fair scheduler (EEVDF, with sleeping tasks
//! keeping their lag) then stopped letting the woken loop preempt the
//! producer, so a call into an idle loop waited for the producer to go to
//! sleep first (p50 wake latency 5 → 10 µs, issue 8; `perf sched` showed
//! the loop preempting the producer on about half of the wakes before the
//! spin, and on 2% with it). Where calls come within the bound (bursts, a
//! `defer_to_thread` round trip on another core) every spell spins.
//!
//! Same CPU: a producer that shares the loop's CPU cannot run while the
//! loop spins (one core, or two threads the scheduler keeps together), so
//! a spin can never catch it, however soon it comes: the spin only burns
//! the time slice the producer needs, and then the loop sleeps and the
//! producer writes the waker anyway. So the producer that writes the waker
//! notes the CPU it runs on ([`cpu`](super::cpu)), and the loop, after
//! that wake, asks whether it was its own CPU
//! ([`WakeState::woken_from`]); if so the wait counts as long (a spin
//! could not have ended it): a miss after a spin, no warming after a cold
//! one. A loop that trades one core with a `blocking_call` caller then
//! never spins (the `blocking_call_rtt` row on one core; d685858 never
//! spun), while one woken from other CPUs spins as before. The CPU is a
//! hint (threads move); only the decision to spin depends on it.
//!
//! Woken by something else: the spin watches `state` only, so a sleep that
//! no producer ended (I/O readiness, a timer, the timeout) says nothing in
//! favour of spinning, however short it was: no spin could have ended it.
//! The loop tells such a sleep by its state at the wake, still `SLEEPY`
//! ([`WakeState::awake_unnotified`]), and counts it as long, as a wake from
//! its own CPU: a miss after a spin, no warming after a cold one. Without
//! this, a loop serving one TCP connection pinned to its client's core
//! spun 3 µs on every round trip (a short sleep is no miss), and the
//! client, which needed that core, waited for it (the `net_echo_rtt`
//! row, pinned: 66% of the cell's samples in the spin).
//!
//! A new loop's gate is cold: it spins only once a sleep was short (under
//! [`MISS_AFTER_SLEEP`], or no sleep at all because work came at the
//! re-check), so a loop that runs one job and then idles spends nothing on
//! a spin no producer can end (the `idle_cpu` row); a loop fed in quick
//! succession pays one eventfd wake before its first spin.
//!
//! Invariants:
//! - Every write of `state` is a read-modify-write (the loop's and the
//!   producers'): all of them read the latest value, so the states form one
//!   chain in which a producer's `WORK` or `AWAKE` can never be ordered
//!   after the loop's `SLEEPY` unseen. (Loom, which keeps a partial order
//!   for plain stores, checks exactly this: the models in `inbox.rs`.)
//! - A producer notifies after its work is visible to the loop's re-check
//!   (a push numbered with a read-modify-write of the inbox's counter, a flag
//!   set with a read-modify-write).

use crate::loom::SpinGate;
use crate::loom::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

/// The loop is (about to be) blocked: the next producer wakes it.
const SLEEPY: u8 = 0;
/// The loop is running and will drain the queue before it blocks.
const AWAKE: u8 = 1;
/// The loop is spinning before it blocks; a producer sets `WORK`.
const SPINNING: u8 = 2;
/// A producer arrived during the spin.
const WORK: u8 = 3;

/// The longest spin before the loop blocks: a few wake costs (an eventfd
/// write plus a wakeup is 3-15 µs on a VM), so a failed spin costs less CPU
/// than the sleep and wake it tries to save.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const SPIN_LIMIT: std::time::Duration = std::time::Duration::from_micros(3);

/// The most idle spells a run of missed spins pauses the loop's spin for.
pub(crate) const MAX_SPIN_PAUSE: u32 = 128;

/// A spin that found nothing counts as a miss (and pauses the next spins)
/// only if the sleep after it lasted at least this long: a loop that is
/// idle for real. A producer mid-burst that was descheduled for a moment,
/// so that one spin ran dry, is back soon, and pausing the spin for it
/// would cost eventfd writes for the rest of its burst.
pub(crate) const MISS_AFTER_SLEEP: std::time::Duration = std::time::Duration::from_micros(50);

/// Something that wakes a sleeping loop (an eventfd in production, a condvar
/// under loom).
pub(crate) trait Wake: Send + Sync {
    fn wake(&self);
}

/// `WakeState::woken_from` when no producer wrote the waker since the loop
/// last prepared to sleep, or its CPU is unknown.
const NO_CPU: u32 = u32::MAX;

/// The protocol's state and its count of waker writes, on cache lines of
/// their own (see `Lane` in `inbox.rs`).
#[repr(align(128))]
pub(super) struct WakeState {
    /// `SLEEPY`, `AWAKE`, `SPINNING` or `WORK`.
    state: AtomicU8,
    /// The CPU of the producer that last wrote the waker, `NO_CPU` from
    /// the loop's next sleep on. A hint for the spin decision only (module
    /// notes), so relaxed: no step of the protocol reads it.
    woken_from: AtomicU32,
    /// The CPU the loop woke on after its last sleep (`NO_CPU`: unknown),
    /// for a blocking caller's spin decision (`bridge/from_thread.rs`).
    /// Written only when it changes, so the line stays shared.
    loop_cpu: AtomicU32,
    wakes: AtomicU64,
}

impl WakeState {
    pub(super) fn new() -> WakeState {
        WakeState {
            state: AtomicU8::new(SLEEPY),
            woken_from: AtomicU32::new(NO_CPU),
            loop_cpu: AtomicU32::new(NO_CPU),
            wakes: AtomicU64::new(0),
        }
    }

    /// Producer, after its work is visible: wakes the loop through `waker`
    /// unless a wake is already pending or the loop is awake.
    pub(super) fn notify(&self, waker: &impl Wake) {
        // Read first: while the loop is awake the state stays `AWAKE` and the
        // cache line stays shared, so a burst costs no read-modify-write.
        let mut state = self.state.load(Ordering::SeqCst);
        loop {
            let next = match state {
                AWAKE | WORK => return,
                SPINNING => WORK,
                _ => AWAKE,
            };
            match self
                .state
                .compare_exchange(state, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) if state == SLEEPY => {
                    self.wakes.fetch_add(1, Ordering::Relaxed);
                    // Before the write, so the woken loop finds it.
                    let cpu = super::cpu::current().unwrap_or(NO_CPU);
                    self.woken_from.store(cpu, Ordering::Relaxed);
                    waker.wake();
                    return;
                }
                Ok(_) => return,
                Err(now) => state = now,
            }
        }
    }

    /// Loop, before blocking: spins briefly for a producer (when `gate`
    /// lets it), then marks the loop sleepy and asks `has_work` (the
    /// re-check) whether work arrived meanwhile. `false`: do not block; the
    /// state is `AWAKE` again (the loop stays awake and producers need not
    /// write the waker).
    pub(super) fn prepare_to_sleep(
        &self,
        gate: &SpinGate,
        has_work: impl FnOnce() -> bool,
    ) -> bool {
        if self.spin_for_work(gate) {
            return false;
        }
        // The spin found nothing: `SPINNING` becomes `SLEEPY`, unless a
        // producer made it `WORK` at the last moment.
        if self
            .state
            .compare_exchange(SPINNING, SLEEPY, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            self.state.swap(AWAKE, Ordering::SeqCst);
            return false;
        }
        let has_work = has_work();
        if has_work {
            self.state.swap(AWAKE, Ordering::SeqCst);
        }
        !has_work
    }

    /// Loop: announces `SPINNING` and, when `gate` lets it, watches for a
    /// producer for at most [`SPIN_LIMIT`]. `true` (state `AWAKE` again): one
    /// arrived. A paused spin still passes through `SPINNING` (zero rounds),
    /// so the protocol is one and the same either way.
    fn spin_for_work(&self, gate: &SpinGate) -> bool {
        // A CPU noted for an earlier wake says nothing about this sleep.
        if self.woken_from.load(Ordering::Relaxed) != NO_CPU {
            self.woken_from.store(NO_CPU, Ordering::Relaxed);
        }
        self.state.swap(SPINNING, Ordering::SeqCst);
        // The loop's spins start cold (module notes).
        if !gate.try_spin_once_warm() {
            return false;
        }
        let mut spin = crate::loom::Spin::new(SPIN_LIMIT);
        loop {
            if self.state.load(Ordering::SeqCst) == WORK {
                self.state.swap(AWAKE, Ordering::SeqCst);
                gate.spun(true);
                return true;
            }
            if !spin.again() {
                // A miss only if the loop then sleeps long (the turn
                // settles it): see `MISS_AFTER_SLEEP`.
                gate.spun_undecided();
                return false;
            }
        }
    }

    /// Loop, after a sleep: whether the producer that wrote the waker
    /// during it ran on `cpu` (the loop's own; module notes). `false` when
    /// no producer wrote it (the loop woke for I/O or a timer) or its CPU
    /// is unknown.
    pub(super) fn woken_from(&self, cpu: u32) -> bool {
        let from = self.woken_from.load(Ordering::Relaxed);
        from != NO_CPU && from == cpu
    }

    /// Whether a producer wrote the waker since the loop last prepared to
    /// sleep, and noted its CPU.
    pub(super) fn woken_from_known_cpu(&self) -> bool {
        self.woken_from.load(Ordering::Relaxed) != NO_CPU
    }

    /// Loop, after a sleep: notes the CPU it woke on, if it changed.
    pub(super) fn note_loop_cpu(&self, cpu: Option<u32>) {
        let cpu = cpu.unwrap_or(NO_CPU);
        if self.loop_cpu.load(Ordering::Relaxed) != cpu {
            self.loop_cpu.store(cpu, Ordering::Relaxed);
        }
    }

    /// The CPU the loop woke on after its last sleep, if known.
    pub(super) fn loop_cpu(&self) -> Option<u32> {
        Some(self.loop_cpu.load(Ordering::Relaxed)).filter(|&cpu| cpu != NO_CPU)
    }

    /// Loop, after waking: marks the loop awake so producers skip the waker.
    pub(super) fn awake(&self) {
        self.awake_unnotified();
    }

    /// Loop, after its poll returned: as [`awake`](Self::awake), and says
    /// whether the poll ended a sleep that no producer notified (the state
    /// was still `SLEEPY`: I/O, a timer, the timeout or a signal ended it;
    /// see "Woken by something else" in the module notes). `false` after a
    /// poll that did not sleep (the state was `AWAKE`).
    pub(super) fn awake_unnotified(&self) -> bool {
        // A read-modify-write, like every write of `state` (module notes).
        self.state.load(Ordering::Relaxed) != AWAKE
            && self.state.swap(AWAKE, Ordering::SeqCst) == SLEEPY
    }

    /// Waker writes so far.
    pub(super) fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Relaxed)
    }
}
