//! The loop side of the slow-callback and stall detectors, and the watchdog
//! thread that reads what the loop publishes.
//!
//! The loop pays per callback only what naming a stall needs; everything
//! that needs the time is paid per turn or when time has visibly moved.
//!
//! Invariants:
//! - Only top-level callbacks are timed: a callback run inside another one
//!   (a `call_when_running` on a running loop, a `Deferred` fired from a
//!   callback) belongs to its caller's time, so nothing is counted twice.
//! - The loop is the only writer of [`LoopWords::current`] and
//!   [`LoopWords::since`]. `current` is one word: zero between callbacks,
//!   otherwise the running callback's interned site (kind + scheduling
//!   location) plus one, stored (release) when a top-level callback starts
//!   and cleared when it returns; a callback that starts while it is
//!   non-zero is nested and publishes nothing. `since` is a clock reading
//!   taken before the running callback started (the turn's start, or a
//!   later reading); it is stored before the `current` word it covers, and
//!   re-read whenever a callback starts in a later tick than it, so it is
//!   never more than about one interval older than the callback's start.
//!   Two callbacks with the same site and the same `since` ran within one
//!   tick, so they need no serial number to be told apart: at most one of
//!   them can be stalled.
//! - Sites are interned into a table the watchdog can read, so the hot path
//!   stores one `u64`, never a pointer. The table only grows, by one entry
//!   per distinct call site; a small direct-mapped cache makes the lookup a
//!   compare in the common case.
//! - The clock is read only when time has visibly moved: `tick` is bumped
//!   by the watchdog every check interval (threshold / 4) and by the clock's
//!   waker (a `ManualClock::advance`). The loop keeps its last reading with
//!   the `tick` it was taken in (the turn hands it the reading it takes for
//!   the turn histogram). A callback during which `tick` did not change took
//!   less than one interval, so it cannot be slow and is not timed; one
//!   during which it changed is timed on the clock from the last reading,
//!   which is early by at most one interval (measured time errs long, never
//!   short). A callback that begins in a later tick than the reading reads
//!   the clock first, so the reading never goes stale by more than that.
//! - The watchdog's decision is `check_stall` (in `stall.rs`, with the
//!   watchdog thread), a plain function of a
//!   [`Snapshot`], a time and a threshold: the thread around it only sleeps
//!   and logs. It dates a callback from the later of `since` and its own
//!   last check that saw something else running (read before that check's
//!   snapshot), both at or before the callback's start: so it reports a
//!   stall at most one interval early, and never one that did not run
//!   past the threshold minus one interval.
//! - The calls of a turn run as a [`Run`]: `current` stays set from one
//!   call to the next and is stored only when the site changes, and the
//!   tick is looked at through one compare per call with a word every tick
//!   zeroes (see [`Run`]); the rules above hold unchanged.
//! - Hot words the loop writes per callback, the watchdog's `tick` and the
//!   rarely written counters sit on separate cache lines.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use super::stall::Watchdog;
use crate::loom::Mutex;
use crate::loom::atomic::{AtomicU64, Ordering};
use crate::time::Clock;

/// What a callback is and where it was scheduled from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Site {
    pub(crate) kind: &'static str,
    pub(crate) location: &'static Location<'static>,
}

/// Keeps a value on a cache line of its own.
#[derive(Default)]
#[repr(align(128))]
struct Line<T>(T);

/// The loop's per-callback words.
#[derive(Default)]
struct Hot {
    /// Zero between callbacks; else the running callback's site plus one.
    current: AtomicU64,
    /// A clock reading (ns) taken before the running callback started.
    since: AtomicU64,
    /// The key of the site a [`Run`] published (zero: none, or a tick
    /// since).
    key: AtomicU64,
}

/// The words the loop publishes for the watchdog, and the counters of the
/// diagnostics (read by `Reactor::statistics`).
#[derive(Default)]
pub(crate) struct LoopWords {
    hot: Line<Hot>,
    /// Bumped every watchdog interval and on every clock wake.
    tick: Line<AtomicU64>,
    pub(super) sites: Mutex<Vec<Site>>,
    pub(crate) slow_callbacks: AtomicU64,
    pub(crate) longest_callback_ns: AtomicU64,
    pub(crate) stalls: AtomicU64,
}

/// One consistent reading of [`LoopWords`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// The `current` word: zero when no callback runs.
    pub(crate) current: u64,
    /// `since`, as a time on the clock.
    pub(crate) since: Duration,
}

impl Snapshot {
    pub(super) fn site(&self) -> u64 {
        self.current.wrapping_sub(1)
    }
}

impl LoopWords {
    /// Reads the published words; `None` if the loop moved on mid-read.
    pub(crate) fn snapshot(&self) -> Option<Snapshot> {
        let hot = &self.hot.0;
        let current = hot.current.load(Ordering::Acquire);
        let since = hot.since.load(Ordering::Acquire);
        std::sync::atomic::fence(Ordering::Acquire);
        (hot.current.load(Ordering::Relaxed) == current).then(|| Snapshot {
            current,
            since: Duration::from_nanos(since),
        })
    }

    pub(crate) fn site(&self, index: u64) -> Option<Site> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.sites.lock().get(i).copied())
    }

    fn tick(&self) -> u64 {
        self.tick.0.load(Ordering::Acquire)
    }

    /// Moves time on for the loop: bumps `tick`, then zeroes a [`Run`]'s
    /// `key` so its next callback looks at the tick.
    pub(super) fn bump_tick(&self) {
        self.tick.0.fetch_add(1, Ordering::SeqCst);
        self.hot.0.key.store(0, Ordering::SeqCst);
    }
}

const CACHE: usize = 64;

/// The loop thread's half: times callbacks, publishes them, owns the
/// watchdog (stopped when this is dropped).
pub(crate) struct LoopDiag {
    clock: Arc<dyn Clock>,
    threshold: Duration,
    words: Arc<LoopWords>,
    /// The `tick` the last clock reading was taken in; `u64::MAX` when
    /// none yet.
    reading_tick: Cell<u64>,
    /// The last clock reading.
    reading_at: Cell<Duration>,
    /// The last site interned, and a direct-mapped cache of site indexes,
    /// keyed by location and kind addresses (`(0, 0)`: empty; no real
    /// location lives at address 0).
    last: Cell<(usize, usize, u64)>,
    cache: [Cell<(usize, usize, u64)>; CACHE],
    index: RefCell<HashMap<(usize, usize), u64>>,
    watchdog: Option<Watchdog>,
}

impl LoopDiag {
    /// Starts the watchdog thread (it logs through the dispatcher current
    /// on this thread).
    pub(crate) fn new(clock: Arc<dyn Clock>, threshold: Duration) -> std::io::Result<LoopDiag> {
        let words = Arc::new(LoopWords::default());
        {
            let words = words.clone();
            clock.register_waker(Arc::new(move || words.bump_tick()));
        }
        let watchdog = Watchdog::start(words.clone(), clock.clone(), threshold)?;
        Ok(LoopDiag {
            clock,
            threshold,
            words,
            reading_tick: Cell::new(u64::MAX),
            reading_at: Cell::new(Duration::ZERO),
            last: Cell::new((0, 0, 0)),
            cache: std::array::from_fn(|_| Cell::new((0, 0, 0))),
            index: RefCell::new(HashMap::new()),
            watchdog: Some(watchdog),
        })
    }

    pub(crate) fn words(&self) -> Arc<LoopWords> {
        self.words.clone()
    }

    #[inline]
    fn intern(&self, kind: &'static str, location: &'static Location<'static>) -> u64 {
        let key = (
            std::ptr::from_ref(location) as usize,
            kind.as_ptr() as usize,
        );
        // A burst usually comes from one site: try the last one first.
        let (l, k, i) = self.last.get();
        if (l, k) == key {
            return i;
        }
        let slot = &self.cache[(key.0 >> 3) % CACHE];
        let (l, k, i) = slot.get();
        if (l, k) == key {
            self.last.set((l, k, i));
            return i;
        }
        self.intern_slow(kind, location, key)
    }

    #[cold]
    #[inline(never)]
    fn intern_slow(
        &self,
        kind: &'static str,
        location: &'static Location<'static>,
        key: (usize, usize),
    ) -> u64 {
        let i = *self.index.borrow_mut().entry(key).or_insert_with(|| {
            let mut sites = self.words.sites.lock();
            sites.push(Site { kind, location });
            sites.len() as u64 - 1
        });
        self.cache[(key.0 >> 3) % CACHE].set((key.0, key.1, i));
        self.last.set((key.0, key.1, i));
        i
    }

    /// A callback starts; returns `Some` if it is top-level (to hand back to
    /// [`end`](Self::end)).
    #[inline]
    pub(crate) fn begin(
        &self,
        kind: &'static str,
        location: &'static Location<'static>,
    ) -> Option<Duration> {
        let current = &self.words.hot.0.current;
        // Only the loop writes it, so this reads its own last store.
        if current.load(Ordering::Relaxed) != 0 {
            return None; // nested: the caller's time
        }
        let site = self.intern(kind, location);
        if self.words.tick() != self.reading_tick.get() {
            // Time moved since the last reading.
            self.read_clock();
        }
        current.store(site.wrapping_add(1), Ordering::Release);
        // Its start estimate stays in `reading_at` until it ends: nothing
        // else reads the clock while a top-level callback runs (nested ones
        // return above, and turns do not nest).
        Some(Duration::ZERO)
    }

    /// The callback `begin` returned `top` for has returned (or unwound):
    /// counts it, and reports it if it was slow.
    #[inline]
    pub(crate) fn end(
        &self,
        top: Option<Duration>,
        kind: &'static str,
        location: &'static Location<'static>,
    ) {
        if top.is_none() {
            return;
        }
        self.words.hot.0.current.store(0, Ordering::Release);
        if self.words.tick() == self.reading_tick.get() {
            // Shorter than one check interval: not slow, not timed.
            return;
        }
        self.timed(self.reading_at.get(), kind, location);
    }

    /// The rare path of `end`: the callback spanned a tick.
    #[cold]
    #[inline(never)]
    fn timed(&self, started: Duration, kind: &'static str, location: &'static Location<'static>) {
        let took = self.read_clock().saturating_sub(started);
        let w = &self.words;
        raise(&w.longest_callback_ns, nanos(took));
        if took > self.threshold {
            w.slow_callbacks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                target: "weft::diagnostics",
                kind,
                %location,
                took_ms = took.as_secs_f64() * 1e3,
                threshold_ms = self.threshold.as_secs_f64() * 1e3,
                "weft: slow callback: a {kind} scheduled at {location} held the loop for {took:?} \
                 (threshold {:?}); move blocking work to a thread (defer_to_thread)",
                self.threshold,
            );
        }
    }

    /// Begins a [`Run`] of top-level callbacks of the given kinds; `None`
    /// if a callback is running (the run is nested in it, and part of its
    /// time).
    #[inline]
    pub(crate) fn run<const K: usize>(&self, kinds: [&'static str; K]) -> Option<Run<'_, K>> {
        let hot = &self.words.hot.0;
        if hot.current.load(Ordering::Relaxed) != 0 {
            return None;
        }
        Some(Run {
            diag: self,
            key: &hot.key,
            kinds,
            site: None,
        })
    }

    /// Reads the clock, remembering the tick it was read in (loaded first,
    /// so a tick that moves during the read forces the next one), and
    /// publishes it as the start bound of what runs next.
    pub(crate) fn read_clock(&self) -> Duration {
        let tick = self.words.tick();
        let now = self.clock.now();
        self.reading_tick.set(tick);
        self.reading_at.set(now);
        self.words.hot.0.since.store(nanos(now), Ordering::Release);
        now
    }
}

/// A run of top-level callbacks the loop makes one after another (the
/// calls of a turn), of a few kinds fixed when it begins, watched for one
/// load and one compare each.
///
/// The loop publishes, besides `current`, the run's `key`: the running
/// site's location address with its kind's index in the low bits (a
/// `Location` is aligned to at least `K`, so the two never collide and a
/// key is never zero). A callback whose key equals the published one runs
/// at once: same site, and no tick since the last look, because every tick
/// zeroes `key` ([`LoopWords::bump_tick`]). Otherwise [`announce`] runs
/// first: it times the previous callback of the run if a tick passed (as
/// [`LoopDiag::end`] would have, at its end; the few instructions between
/// its end and now make the time err long, never short), re-reads the
/// clock then, and publishes the new site. The end of the run times its
/// last callback the same way and clears `current` and `key`.
///
/// So the module's invariants hold: `since` is re-read at the first start
/// of a callback after a tick (at most about one interval older than that
/// callback's start); a callback during which a tick happened is timed from
/// the last reading; two callbacks of a run with the same site and `since`
/// ran within about one interval, so at most one of them can be stalled.
/// `key` is stored before the tick is read, and a tick is bumped before
/// `key` is zeroed (both sequentially consistent), so either the loop sees
/// the tick now or its next compare fails.
///
/// [`announce`]: Run::announce
pub(crate) struct Run<'a, const K: usize> {
    diag: &'a LoopDiag,
    key: &'a AtomicU64,
    kinds: [&'static str; K],
    /// The site of the callback running or last run, if any.
    site: Option<Site>,
}

impl<const K: usize> Run<'_, K> {
    const FITS: () = assert!(K <= std::mem::align_of::<Location<'static>>());

    #[inline]
    fn key(kind: usize, location: &'static Location<'static>) -> u64 {
        let () = Self::FITS;
        (std::ptr::from_ref(location) as usize | kind) as u64
    }

    /// Whether the next callback, of kind `kinds[kind]`, may start at once;
    /// if not, [`announce`](Self::announce) it first.
    #[inline]
    pub(crate) fn is_current(&self, kind: usize, location: &'static Location<'static>) -> bool {
        self.key.load(Ordering::Relaxed) == Self::key(kind, location)
    }

    /// The next callback starts with a new site or after a tick: times the
    /// previous one if a tick passed, and publishes this one's site.
    #[inline(never)]
    pub(crate) fn announce(&mut self, kind: usize, location: &'static Location<'static>) {
        let d = self.diag;
        let hot = &d.words.hot.0;
        // Before the tick is read: a tick after this zeroes it again.
        hot.key.store(Self::key(kind, location), Ordering::SeqCst);
        if d.words.tick.0.load(Ordering::SeqCst) != d.reading_tick.get() {
            match self.site {
                Some(last) => d.timed(d.reading_at.get(), last.kind, last.location),
                None => {
                    d.read_clock();
                }
            }
        }
        let site = Site {
            kind: self.kinds[kind],
            location,
        };
        let same = self.site.is_some_and(|last| {
            std::ptr::eq(last.location, location) && std::ptr::eq(last.kind, site.kind)
        });
        if !same {
            let word = d.intern(site.kind, location).wrapping_add(1);
            hot.current.store(word, Ordering::Release);
        }
        self.site = Some(site);
    }
}

impl<const K: usize> Drop for Run<'_, K> {
    fn drop(&mut self) {
        let Some(last) = self.site else {
            return;
        };
        let d = self.diag;
        if d.words.tick() != d.reading_tick.get() {
            d.timed(d.reading_at.get(), last.kind, last.location);
        }
        let hot = &d.words.hot.0;
        hot.current.store(0, Ordering::Release);
        hot.key.store(0, Ordering::Relaxed);
    }
}

impl Drop for LoopDiag {
    fn drop(&mut self) {
        drop(self.watchdog.take());
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Raises a maximum only the loop writes (no read-modify-write needed).
fn raise(max: &AtomicU64, value: u64) {
    if value > max.load(Ordering::Relaxed) {
        max.store(value, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::diagnostics::stall::{StallState, check_stall};
    use crate::testing::ManualClock;

    fn diag(clock: &ManualClock) -> LoopDiag {
        LoopDiag::new(Arc::new(clock.clone()), Duration::from_millis(100)).unwrap()
    }

    #[test]
    fn the_check_reports_a_callback_running_past_the_threshold_once() {
        let clock = ManualClock::new();
        let d = diag(&clock);
        let threshold = Duration::from_millis(100);
        let mut state = StallState::default();
        let here = Location::caller();
        let started = d.begin("timed call", here);
        clock.advance(Duration::from_millis(100));
        let snap = d.words.snapshot().unwrap();
        assert_eq!(check_stall(snap, clock.now(), threshold, &mut state), None);
        clock.advance(Duration::from_millis(1));
        let stall = check_stall(snap, clock.now(), threshold, &mut state).unwrap();
        assert_eq!(stall.running_for, Duration::from_millis(101));
        let site = d.words.site(stall.site).unwrap();
        assert_eq!(site.kind, "timed call");
        assert_eq!(site.location, here);
        // Once per callback.
        clock.advance(Duration::from_secs(5));
        assert_eq!(check_stall(snap, clock.now(), threshold, &mut state), None);
        d.end(started, "timed call", here);
        let idle = d.words.snapshot().unwrap();
        assert_eq!(idle.current, 0);
        assert_eq!(check_stall(idle, clock.now(), threshold, &mut state), None);
        assert_eq!(d.words.slow_callbacks.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_check_is_silent_for_quick_callbacks_and_an_idle_loop() {
        let clock = ManualClock::new();
        let d = diag(&clock);
        let threshold = Duration::from_millis(100);
        let mut state = StallState::default();
        assert_eq!(
            check_stall(
                d.words.snapshot().unwrap(),
                clock.now(),
                threshold,
                &mut state
            ),
            None
        );
        for _ in 0..3 {
            let s = d.begin("call from thread", Location::caller());
            clock.advance(Duration::from_millis(50));
            let snap = d.words.snapshot().unwrap();
            assert_eq!(check_stall(snap, clock.now(), threshold, &mut state), None);
            d.end(s, "call from thread", Location::caller());
            // An idle loop long after is not stalled.
            clock.advance(Duration::from_secs(10));
            let snap = d.words.snapshot().unwrap();
            assert_eq!(check_stall(snap, clock.now(), threshold, &mut state), None);
        }
        assert_eq!(d.words.slow_callbacks.load(Ordering::Relaxed), 0);
        assert_eq!(
            d.words.longest_callback_ns.load(Ordering::Relaxed),
            50_000_000
        );
    }

    #[test]
    fn a_nested_callback_is_part_of_its_callers_time() {
        let clock = ManualClock::new();
        let d = diag(&clock);
        let outer = d.begin("call from thread", Location::caller());
        let inner = d.begin("call_when_running", Location::caller());
        assert_eq!(inner, None);
        clock.advance(Duration::from_millis(30));
        d.end(inner, "call_when_running", Location::caller());
        // Still the outer callback's.
        assert_ne!(d.words.snapshot().unwrap().current, 0);
        d.end(outer, "call from thread", Location::caller());
        assert_eq!(d.words.snapshot().unwrap().current, 0);
        assert_eq!(
            d.words.longest_callback_ns.load(Ordering::Relaxed),
            30_000_000
        );
    }

    /// Time that passed between callbacks (here: outside any) is never
    /// charged to the next one: it reads the clock before it starts.
    #[test]
    fn a_callback_after_a_tick_is_timed_from_its_own_start() {
        let clock = ManualClock::new();
        let d = diag(&clock);
        let here = Location::caller();
        let a = d.begin("timed call", here);
        d.end(a, "timed call", here);
        clock.advance(Duration::from_secs(1));
        let b = d.begin("timed call", here);
        assert_eq!(d.words.snapshot().unwrap().since, Duration::from_secs(1));
        clock.advance(Duration::from_millis(10));
        d.end(b, "timed call", here);
        assert_eq!(
            d.words.longest_callback_ns.load(Ordering::Relaxed),
            10_000_000
        );
        assert_eq!(d.words.slow_callbacks.load(Ordering::Relaxed), 0);
    }

    /// Runs a batch the way `turn.rs` does: announce when not current.
    fn run_one<const K: usize>(
        run: &mut Run<'_, K>,
        kind: usize,
        at: &'static Location<'static>,
        f: impl FnOnce(),
    ) {
        if !run.is_current(kind, at) {
            run.announce(kind, at);
        }
        f();
    }

    #[test]
    fn a_run_publishes_a_site_once_and_clears_it_at_its_end() {
        let clock = ManualClock::new();
        let d = diag(&clock);
        let here = Location::caller();
        let mut run = d
            .run(["call from thread", "thread job completion"])
            .unwrap();
        assert!(!run.is_current(0, here));
        run_one(&mut run, 0, here, || ());
        let word = d.words.snapshot().unwrap().current;
        assert_ne!(word, 0);
        assert_eq!(d.words.sites.lock().len(), 1);
        // Same site: current at once; the other kind at the same line is
        // not.
        assert!(run.is_current(0, here));
        assert!(!run.is_current(1, here));
        run_one(&mut run, 1, here, || ());
        assert_ne!(d.words.snapshot().unwrap().current, word);
        assert_eq!(d.words.sites.lock().len(), 2);
        run_one(&mut run, 0, here, || ());
        assert_eq!(d.words.snapshot().unwrap().current, word);
        // A nested run (a callback is running) is its caller's.
        assert!(d.run(["call from thread"]).is_none());
        assert_eq!(d.begin("timed call", here), None);
        drop(run);
        assert_eq!(d.words.snapshot().unwrap().current, 0);
        assert!(
            d.run(["call from thread"])
                .unwrap()
                .key
                .load(Ordering::Relaxed)
                == 0
        );
    }

    /// Every callback of a run during which the clock moved is timed, on
    /// its own (the next one's start, or the end of the run), and the slow
    /// one is counted.
    #[test]
    fn a_run_times_each_callback_during_which_time_moved() {
        let clock = ManualClock::new();
        let d = diag(&clock);
        let here = Location::caller();
        let ms = Duration::from_millis;
        {
            let mut run = d.run(["call from thread"]).unwrap();
            for step in [10, 0, 150, 0, 30] {
                run_one(&mut run, 0, here, || {
                    if step > 0 {
                        clock.advance(ms(step));
                    }
                });
                // A tick makes the site not current, so the next callback
                // looks at the clock.
                assert_eq!(run.is_current(0, here), step == 0);
            }
            assert_eq!(d.words.slow_callbacks.load(Ordering::Relaxed), 1);
        }
        // The last one was timed as the run ended.
        assert_eq!(
            d.words.longest_callback_ns.load(Ordering::Relaxed),
            150_000_000
        );
        assert_eq!(d.words.slow_callbacks.load(Ordering::Relaxed), 1);
        assert_eq!(d.reading_at.get(), ms(190));
    }

    /// The watchdog sees the callback of a run that stalls, dated from the
    /// reading taken after the last tick, not from the start of the run.
    #[test]
    fn a_stalled_callback_of_a_run_is_seen_from_its_own_start() {
        let clock = ManualClock::new();
        let d = diag(&clock);
        let here = Location::caller();
        let threshold = Duration::from_millis(100);
        let mut state = StallState::default();
        let mut run = d.run(["call from thread"]).unwrap();
        run_one(&mut run, 0, here, || {
            clock.advance(Duration::from_millis(80))
        });
        run_one(&mut run, 0, here, || {
            clock.advance(Duration::from_millis(90));
            let snap = d.words.snapshot().unwrap();
            assert_eq!(snap.since, Duration::from_millis(80));
            assert_eq!(check_stall(snap, clock.now(), threshold, &mut state), None);
            clock.advance(Duration::from_millis(20));
            let stall = check_stall(snap, clock.now(), threshold, &mut state).unwrap();
            assert_eq!(stall.running_for, Duration::from_millis(110));
            assert_eq!(d.words.site(stall.site).unwrap().location, here);
        });
        drop(run);
        assert_eq!(d.words.slow_callbacks.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn sites_are_interned_once_per_call_site() {
        let clock = ManualClock::new();
        let d = diag(&clock);
        let here = Location::caller();
        let a = d.intern("timed call", here);
        let b = d.intern("timed call", here);
        let c = d.intern("local task", here);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(d.words.sites.lock().len(), 2);
    }
}
