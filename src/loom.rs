//! The concurrency seam: std primitives normally, loom's under `--cfg loom`.
//!
//! Contract: every cross-thread primitive the crate uses comes from here, so a
//! loom model exercises the same code that ships. The `Mutex` never poisons:
//! one panicking job must not poison the pool or the loop, so `lock()` takes
//! the guard back from a `PoisonError` (the data it guards is kept consistent
//! by never unwinding while a guard is held in library code).

#![allow(unreachable_pub, dead_code, unused_imports)]

#[cfg(loom)]
pub(crate) use ::loom::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;

#[cfg(loom)]
use ::loom::sync as imp;
#[cfg(not(loom))]
use std::sync as imp;

use std::sync::{PoisonError, TryLockError};
use std::time::Duration;

/// Atomics (std or loom).
pub(crate) mod atomic {
    #[cfg(loom)]
    pub(crate) use ::loom::sync::atomic::{
        AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize,
    };
    pub(crate) use std::sync::atomic::Ordering;
    #[cfg(not(loom))]
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize};
}

/// Threads (std or loom).
pub(crate) mod thread {
    #[cfg(loom)]
    pub(crate) use ::loom::thread::{Builder, JoinHandle, current, spawn, yield_now};
    #[cfg(not(loom))]
    pub(crate) use std::thread::{Builder, JoinHandle, current, spawn, yield_now};
}

/// `thread_local!` (std or loom): per-thread state that a loom model must
/// see per model thread (loom runs its threads on one OS thread).
#[cfg(loom)]
pub(crate) use ::loom::thread_local;
#[cfg(not(loom))]
pub(crate) use std::thread_local;

/// A mutex whose `lock` never fails.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(imp::Mutex<T>);

/// The guard of [`Mutex`].
pub(crate) type MutexGuard<'a, T> = imp::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(imp::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The guard if nobody holds the mutex now (a poisoned one is taken,
    /// as [`lock`](Self::lock) takes it); `None` if somebody does.
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        match self.0.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    pub(crate) fn into_inner(self) -> T {
        self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value, through a unique borrow: no locking (nobody else can
    /// hold the mutex).
    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.0.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A condition variable paired with [`Mutex`].
#[derive(Debug, Default)]
pub(crate) struct Condvar(imp::Condvar);

impl Condvar {
    pub(crate) fn new() -> Self {
        Condvar(imp::Condvar::new())
    }

    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0.wait(guard).unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits at most `timeout`; the flag is true when the wait timed out.
    pub(crate) fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, bool) {
        let (guard, res) = self
            .0
            .wait_timeout(guard, timeout)
            .unwrap_or_else(PoisonError::into_inner);
        (guard, res.timed_out())
    }

    pub(crate) fn notify_one(&self) {
        self.0.notify_one();
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}

/// Helpers shared by the loom models.
#[cfg(all(test, loom))]
pub(crate) mod model {
    use super::{Arc, Condvar, Mutex};

    /// Counts finished tasks; `wait_for(n)` blocks until n have finished
    /// (loom reports a deadlock if that never happens, i.e. a task was lost).
    #[derive(Default)]
    pub(crate) struct Done {
        count: Mutex<usize>,
        changed: Condvar,
    }

    /// A task that counts itself done.
    pub(crate) fn task(done: &Arc<Done>) -> impl FnOnce() + Send + 'static {
        let done = done.clone();
        move || {
            *done.count.lock() += 1;
            done.changed.notify_all();
        }
    }

    impl Done {
        pub(crate) fn wait_for(&self, n: usize) {
            let mut count = self.count.lock();
            while *count < n {
                count = self.changed.wait(count);
            }
            assert_eq!(*count, n, "a task ran twice");
        }
    }
}

/// A bounded spin: CPU-relax hints for at most `limit`, with the monotonic
/// clock read only every few rounds (it costs more than a relax). Used by
/// the loop's inbox and the pool's idle threads before they block. Under
/// loom a single round that yields, so the models explore both outcomes of
/// the spin without an unbounded loop.
pub(crate) struct Spin {
    #[cfg(not(loom))]
    limit: Duration,
    #[cfg(not(loom))]
    until: Option<std::time::Instant>,
    rounds: u32,
}

impl Spin {
    /// A spin that gives up after `limit`.
    #[cfg_attr(loom, allow(unused_variables))]
    pub(crate) fn new(limit: Duration) -> Spin {
        Spin {
            #[cfg(not(loom))]
            limit,
            #[cfg(not(loom))]
            until: None,
            rounds: 0,
        }
    }

    /// Relaxes once and says whether the spin may go on.
    #[cfg(not(loom))]
    pub(crate) fn again(&mut self) -> bool {
        self.rounds = self.rounds.wrapping_add(1);
        if self.rounds % 16 == 1 {
            let now = std::time::Instant::now();
            match self.until {
                None => self.until = Some(now.checked_add(self.limit).unwrap_or(now)),
                Some(until) if now >= until => return false,
                Some(_) => {}
            }
        }
        std::hint::spin_loop();
        true
    }

    /// Relaxes once and says whether the spin may go on.
    #[cfg(loom)]
    pub(crate) fn again(&mut self) -> bool {
        self.rounds += 1;
        thread::yield_now();
        self.rounds < 2
    }
}

/// The backoff rule of every adaptive spin in the crate (the loop's, a
/// blocking caller's, the pool's idle threads'): a spin that found nothing
/// pauses spinning for a number of waits that doubles with each miss (up
/// to a maximum); a hit halves it. Where the awaited thread shares the
/// spinner's only core (it cannot run while the spinner spins) or the
/// awaited event is rare, a spin is then tried about once per maximum
/// pause, and where it comes within the bound, every wait spins. Plain
/// values, so it lives under the pool's lock as well as in a [`SpinGate`]'s
/// cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SpinBackoff {
    backoff: u32,
    skip: u32,
}

impl SpinBackoff {
    /// No pause: the next wait spins.
    pub(crate) const fn new() -> SpinBackoff {
        SpinBackoff {
            backoff: 0,
            skip: 0,
        }
    }

    /// Whether this wait spins (`false`: it uses up one wait of the pause).
    pub(crate) fn try_spin(&mut self) -> bool {
        match self.skip {
            0 => true,
            n => {
                self.skip = n - 1;
                false
            }
        }
    }

    /// The spin found what it waited for.
    pub(crate) fn hit(&mut self) {
        self.backoff /= 2;
    }

    /// The spin found nothing: the backoff doubles (at least 1, at most
    /// `max_pause`). The pause is the new backoff, or with `forgive_lone`
    /// the backoff before this miss, so a lone miss among hits (a producer
    /// descheduled once mid-burst) pauses nothing and a second miss in a
    /// row pauses one wait, then 2, 4, ...
    pub(crate) fn miss(&mut self, max_pause: u32, forgive_lone: bool) {
        let before = self.backoff;
        self.backoff = (before * 2).clamp(1, max_pause.max(1));
        self.skip = if forgive_lone { before } else { self.backoff };
    }

    /// Waits left in the current pause.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn pause_left(&self) -> u32 {
        self.skip
    }
}

/// Whether one thread's next bounded [`Spin`] is worth trying, from how its
/// last ones went: [`SpinBackoff`] with lone misses forgiven, in cells
/// owned by the one thread that spins.
///
/// # Cold start
///
/// A thread that asks through [`try_spin_once_warm`](Self::try_spin_once_warm)
/// (the loop) starts *cold*: no spin until one of its waits turned out
/// short (see [`settle`](Self::settle)), because nothing yet says that what
/// it waits for comes within a spin's bound. A loop that ran one job and
/// then idles never spins; one that sees calls in quick succession pays
/// one wake without a spin, and from then on the backoff decides. Cold
/// lets no spin through, just as a pause does, so the wake protocol is the
/// same in both. [`try_spin`](Self::try_spin) ignores it (a blocking
/// caller's gate has no settle, so it could never warm).
///
/// Under loom a gate starts warm: the models built on a new gate explore
/// the spin, and a cold one behaves as the paused gates they also check.
#[derive(Debug)]
pub(crate) struct SpinGate {
    backoff: std::cell::Cell<SpinBackoff>,
    max_pause: u32,
    /// A wait was short (or loom): `try_spin_once_warm` may spin.
    warm: std::cell::Cell<bool>,
    /// A wait began that [`settle`](Self::settle) judges.
    pending: std::cell::Cell<Pending>,
}

/// What [`SpinGate::settle`] decides about the wait that just ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// Nothing.
    Nothing,
    /// A spin ended empty-handed: a miss if the wait after it was long.
    Spin,
    /// A cold gate let no spin through: a short wait warms it.
    Cold,
}

impl SpinGate {
    /// A gate that lets the first spin through (cold for
    /// [`try_spin_once_warm`](Self::try_spin_once_warm)) and pauses at most
    /// `max_pause` waits after a run of misses.
    pub(crate) const fn new(max_pause: u32) -> SpinGate {
        SpinGate {
            backoff: std::cell::Cell::new(SpinBackoff::new()),
            max_pause,
            warm: std::cell::Cell::new(cfg!(loom)),
            pending: std::cell::Cell::new(Pending::Nothing),
        }
    }

    /// Runs `f` on the backoff.
    fn with<R>(&self, f: impl FnOnce(&mut SpinBackoff) -> R) -> R {
        let mut b = self.backoff.get();
        let r = f(&mut b);
        self.backoff.set(b);
        r
    }

    /// Whether this wait spins (`false`: it is one of the paused ones).
    pub(crate) fn try_spin(&self) -> bool {
        self.with(SpinBackoff::try_spin)
    }

    /// [`try_spin`](Self::try_spin) with the cold start (type docs):
    /// `false` while no wait was short. The wait must then be judged by
    /// [`settle`](Self::settle).
    pub(crate) fn try_spin_once_warm(&self) -> bool {
        if !self.warm.get() {
            self.pending.set(Pending::Cold);
            return false;
        }
        self.try_spin()
    }

    /// The spin let through by [`try_spin`](Self::try_spin) ended: `hit`
    /// says whether what it waited for came.
    pub(crate) fn spun(&self, hit: bool) {
        let max = self.max_pause;
        self.with(|b| if hit { b.hit() } else { b.miss(max, true) });
    }

    /// The spin let through ended with nothing, but whether it was a miss
    /// is known only later: [`settle`](Self::settle) decides.
    pub(crate) fn spun_undecided(&self) {
        self.pending.set(Pending::Spin);
    }

    /// The wait after the last spin decision is over; `long` says whether
    /// it lasted long (the thread was idle for real). After a spin that
    /// found nothing, a long wait makes it a miss and a short one counts
    /// for nothing (no pause, no hit); after a cold gate's wait, a short
    /// one warms the gate. Anything else: no change.
    pub(crate) fn settle(&self, long: bool) {
        match self.pending.replace(Pending::Nothing) {
            Pending::Spin if long => self.spun(false),
            Pending::Cold if !long => self.warm.set(true),
            _ => {}
        }
    }

    /// [`settle`](Self::settle), where a short wait still counts as long
    /// if `could_not_hit` says no spin could have caught what ended it
    /// (the loop's: a producer on its own CPU). `could_not_hit` is asked
    /// only after a short wait that the gate has to judge.
    pub(crate) fn settle_with(&self, long: bool, could_not_hit: impl FnOnce() -> bool) {
        let long = long || (self.pending.get() != Pending::Nothing && could_not_hit());
        self.settle(long);
    }

    /// Whether a wait was short yet (the cold start is over).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn is_warm(&self) -> bool {
        self.warm.get()
    }

    /// Waits left in the current pause.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn pause_left(&self) -> u32 {
        self.backoff.get().pause_left()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::SpinGate;

    /// Spins let through by the gate, out of `n` waits, when every spin
    /// ends as `hit` says.
    fn spins(gate: &SpinGate, n: usize, hit: bool) -> usize {
        (0..n)
            .filter(|_| {
                let spun = gate.try_spin();
                if spun {
                    gate.spun(hit);
                }
                spun
            })
            .count()
    }

    #[test]
    fn misses_pause_spinning_for_doubling_spells_up_to_the_maximum() {
        let gate = SpinGate::new(8);
        // Spins at waits 0, 1, 3, 6, 11, 20: pauses 0, 1, 2, 4, 8, 8.
        assert_eq!(spins(&gate, 29, false), 6);
        // Capped: one spin per 9 waits from here on.
        assert_eq!(spins(&gate, 90, false), 10);
    }

    #[test]
    fn hits_keep_every_wait_spinning_and_undo_a_pause() {
        let gate = SpinGate::new(8);
        assert_eq!(spins(&gate, 10, true), 10);
        // A lone miss pauses nothing; a second in a row pauses one wait.
        gate.spun(false);
        assert!(gate.try_spin());
        gate.spun(false);
        assert!(!gate.try_spin());
        // Hits halve the backoff to nothing: a lone miss is free again.
        assert_eq!(spins(&gate, 10, true), 10);
        gate.spun(false);
        assert!(gate.try_spin());
    }

    #[test]
    fn an_undecided_spin_pauses_only_if_settled_as_a_miss() {
        let gate = SpinGate::new(8);
        assert!(gate.try_spin());
        gate.spun_undecided();
        gate.settle(false);
        assert!(gate.try_spin());
        for _ in 0..2 {
            gate.spun_undecided();
            gate.settle(true);
        }
        assert!(!gate.try_spin());
        assert!(gate.try_spin());
        // Nothing undecided: a settle changes nothing.
        gate.settle(true);
        assert!(gate.try_spin());
    }

    #[test]
    fn a_cold_start_lets_no_spin_through_until_a_wait_is_short() {
        let gate = SpinGate::new(8);
        assert!(!gate.is_warm());
        // Long waits (a loop that ran one job, then idles): never a spin.
        for _ in 0..300 {
            assert!(
                !gate.try_spin_once_warm(),
                "a cold gate lets no spin through"
            );
            gate.settle(true);
        }
        // A settle with no cold wait pending changes nothing.
        gate.settle(false);
        assert!(!gate.is_warm());
        // A short wait warms it: the next wait spins.
        assert!(!gate.try_spin_once_warm());
        gate.settle(false);
        assert!(gate.is_warm());
        assert!(gate.try_spin_once_warm());
    }

    #[test]
    fn a_warmed_gate_backs_off_as_a_new_one_does() {
        let warmed = SpinGate::new(8);
        assert!(!warmed.try_spin_once_warm());
        warmed.settle(false);
        let new = SpinGate::new(8);
        let spins_warm = |gate: &SpinGate, n: usize, hit: bool| {
            (0..n)
                .filter(|_| {
                    let spun = gate.try_spin_once_warm();
                    if spun {
                        gate.spun(hit);
                    }
                    spun
                })
                .count()
        };
        for hit in [false, false, true, false, false, false] {
            assert_eq!(spins_warm(&warmed, 7, hit), spins(&new, 7, hit));
        }
        // A warm gate never turns cold again.
        assert!(warmed.is_warm());
    }

    #[test]
    fn a_short_wait_no_spin_could_catch_counts_as_long() {
        let gate = SpinGate::new(8);
        // Cold: a short wait ended by a producer on the loop's CPU does
        // not warm the gate; one from another CPU does.
        for _ in 0..10 {
            assert!(!gate.try_spin_once_warm());
            gate.settle_with(false, || true);
        }
        assert!(!gate.is_warm());
        assert!(!gate.try_spin_once_warm());
        gate.settle_with(false, || false);
        assert!(gate.is_warm());
        // Warm: dry spins before such waits are misses (the second in a
        // row pauses), where short waits alone count for nothing.
        for _ in 0..2 {
            assert!(gate.try_spin_once_warm());
            gate.spun_undecided();
            gate.settle_with(false, || true);
        }
        assert!(!gate.try_spin_once_warm());
        for _ in 0..4 {
            assert!(gate.try_spin_once_warm());
            gate.spun_undecided();
            gate.settle_with(false, || false);
        }
        // Nothing to judge (a paused wait, or a long one): not asked.
        let gate = SpinGate::new(8);
        gate.settle_with(false, || unreachable!("nothing pending"));
        assert!(!gate.try_spin_once_warm());
        gate.settle_with(true, || unreachable!("a long wait needs no answer"));
        assert!(!gate.is_warm());
    }

    #[test]
    fn plain_try_spin_has_no_cold_start() {
        // A blocking caller's gate (no settle): its first spin goes through.
        let gate = SpinGate::new(8);
        assert!(gate.try_spin());
        assert!(!gate.is_warm());
    }
}
