//! The loop side of the slow-callback and stall detectors, and the watchdog
//! thread that reads what the loop publishes.
//!
//! Invariants:
//! - Only top-level callbacks are timed: a callback run inside another one
//!   (a `call_when_running` on a running loop, a `Deferred` fired from a
//!   callback) belongs to its caller's time, so nothing is counted twice.
//! - The loop is the only writer of [`LoopWords`]. It publishes a callback
//!   as a seqlock: `started_at` and `site` are stored (release) before
//!   `seq` becomes odd, and `seq` becomes even again when the callback
//!   returns. A reader that sees the same odd `seq` before and after reading
//!   the two words read the words of that callback.
//! - Sites (kind + scheduling location) are interned into a table the
//!   watchdog can read, so the hot path stores one `u64`, never a pointer.
//!   The table only grows, by one entry per distinct call site.
//! - The watchdog's decision is [`check_stall`], a plain function of a
//!   [`Snapshot`], a time and a threshold: the thread around it only sleeps
//!   and logs.
//! - The clock is read only when time has visibly moved: `tick` is bumped
//!   by the watchdog every check interval (threshold / 4) and by the clock's
//!   waker (a `ManualClock::advance`). A callback during which `tick` did
//!   not change took less than one interval, so it cannot be slow and
//!   needs no clock read; one during which it changed is timed on the
//!   clock. Its start is the last reading taken in the same tick, so it is
//!   early by at most one interval (measured time errs long, never short).
//!   A reading is forgotten before the loop blocks in `poll`. This keeps a
//!   burst of quick callbacks to a few plain loads and stores each.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::Location;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::loom::Mutex;
use crate::loom::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::time::Clock;

/// What a callback is and where it was scheduled from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Site {
    pub(crate) kind: &'static str,
    pub(crate) location: &'static Location<'static>,
}

/// The words the loop publishes for the watchdog, and the counters of the
/// diagnostics (read by `Reactor::statistics`).
#[derive(Default)]
pub(crate) struct LoopWords {
    /// Odd while a top-level callback runs.
    seq: AtomicU64,
    /// Bumped every watchdog interval and on every clock wake.
    tick: AtomicU64,
    /// When the running callback started, in nanoseconds on the clock.
    started_at: AtomicU64,
    /// Index of the running callback's site in `sites`.
    site: AtomicU64,
    sites: Mutex<Vec<Site>>,
    pub(crate) slow_callbacks: AtomicU64,
    pub(crate) longest_callback_ns: AtomicU64,
    pub(crate) longest_turn_ns: AtomicU64,
    pub(crate) stalls: AtomicU64,
}

/// One consistent reading of [`LoopWords`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) seq: u64,
    pub(crate) started_at: Duration,
    pub(crate) site: u64,
}

impl LoopWords {
    /// Reads the published words; `None` if the loop moved on mid-read.
    pub(crate) fn snapshot(&self) -> Option<Snapshot> {
        let seq = self.seq.load(Ordering::Acquire);
        let started_at = self.started_at.load(Ordering::Acquire);
        let site = self.site.load(Ordering::Acquire);
        std::sync::atomic::fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == seq).then(|| Snapshot {
            seq,
            started_at: Duration::from_nanos(started_at),
            site,
        })
    }

    pub(crate) fn site(&self, index: u64) -> Option<Site> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.sites.lock().get(i).copied())
    }
}

/// The watchdog's memory between two checks.
#[derive(Debug, Default)]
pub(crate) struct StallState {
    /// The `seq` of the callback already reported.
    reported: Option<u64>,
}

/// A callback found running for longer than the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stall {
    pub(crate) site: u64,
    pub(crate) running_for: Duration,
}

/// The watchdog's decision: reports a callback that has run longer than
/// `threshold` at `now`, once per callback.
pub(crate) fn check_stall(
    snapshot: Snapshot,
    now: Duration,
    threshold: Duration,
    state: &mut StallState,
) -> Option<Stall> {
    if snapshot.seq % 2 == 0 || state.reported == Some(snapshot.seq) {
        return None;
    }
    let running_for = now.saturating_sub(snapshot.started_at);
    if running_for <= threshold {
        return None;
    }
    state.reported = Some(snapshot.seq);
    Some(Stall {
        site: snapshot.site,
        running_for,
    })
}

const CACHE: usize = 64;

/// The loop thread's half: times callbacks, publishes them, owns the
/// watchdog (stopped when this is dropped).
pub(crate) struct LoopDiag {
    clock: Arc<dyn Clock>,
    threshold: Duration,
    words: Arc<LoopWords>,
    depth: Cell<u32>,
    seq: Cell<u64>,
    turn_busy: Cell<Duration>,
    /// The last clock reading and the `tick` it was taken in; `None` when
    /// forgotten (the loop blocked since).
    reading: Cell<Option<(u64, Duration)>>,
    /// The `tick` seen when the running callback began.
    begun_in: Cell<u64>,
    /// Direct-mapped cache of site indexes, keyed by location address.
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
            clock.register_waker(Arc::new(move || {
                words.tick.fetch_add(1, Ordering::Release);
            }));
        }
        let watchdog = Watchdog::start(words.clone(), clock.clone(), threshold)?;
        Ok(LoopDiag {
            clock,
            threshold,
            words,
            depth: Cell::new(0),
            seq: Cell::new(0),
            turn_busy: Cell::new(Duration::ZERO),
            reading: Cell::new(None),
            begun_in: Cell::new(0),
            cache: std::array::from_fn(|_| Cell::new((0, 0, 0))),
            index: RefCell::new(HashMap::new()),
            watchdog: Some(watchdog),
        })
    }

    pub(crate) fn words(&self) -> Arc<LoopWords> {
        self.words.clone()
    }

    #[inline]
    fn intern(&self, site: Site) -> u64 {
        let key = (
            std::ptr::from_ref(site.location) as usize,
            site.kind.as_ptr() as usize,
        );
        let slot = &self.cache[(key.0 >> 3) % CACHE];
        let (l, k, i) = slot.get();
        if (l, k) == key {
            return i;
        }
        let i = *self.index.borrow_mut().entry(key).or_insert_with(|| {
            let mut sites = self.words.sites.lock();
            sites.push(site);
            sites.len() as u64 - 1
        });
        slot.set((key.0, key.1, i));
        i
    }

    /// A callback starts; returns its start time if it is top-level.
    #[inline]
    pub(crate) fn begin(
        &self,
        kind: &'static str,
        location: &'static Location<'static>,
    ) -> Option<Duration> {
        let depth = self.depth.get();
        self.depth.set(depth + 1);
        if depth > 0 {
            return None;
        }
        let site = self.intern(Site { kind, location });
        let tick = self.words.tick.load(Ordering::Acquire);
        self.begun_in.set(tick);
        let now = match self.reading.get() {
            Some((t, at)) if t == tick => at,
            _ => self.read_clock(),
        };
        let w = &self.words;
        w.started_at.store(nanos(now), Ordering::Release);
        w.site.store(site, Ordering::Release);
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        w.seq.store(seq, Ordering::Release);
        Some(now)
    }

    /// The callback `begin` returned `started` for has returned (or
    /// unwound): counts it, and reports it if it was slow.
    #[inline]
    pub(crate) fn end(
        &self,
        started: Option<Duration>,
        kind: &'static str,
        location: &'static Location<'static>,
    ) {
        self.depth.set(self.depth.get().saturating_sub(1));
        let Some(started) = started else { return };
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        let w = &self.words;
        w.seq.store(seq, Ordering::Release);
        if w.tick.load(Ordering::Acquire) == self.begun_in.get() {
            // Shorter than one check interval: not slow, not timed.
            return;
        }
        let took = self.read_clock().saturating_sub(started);
        self.turn_busy
            .set(self.turn_busy.get().saturating_add(took));
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

    /// Reads the clock, remembering the tick it was read in (loaded first,
    /// so a tick that moves during the read forces the next one).
    fn read_clock(&self) -> Duration {
        let tick = self.words.tick.load(Ordering::Acquire);
        let now = self.clock.now();
        self.reading.set(Some((tick, now)));
        now
    }

    /// The loop may block now: forget the last reading.
    pub(crate) fn before_poll(&self) {
        self.reading.set(None);
    }

    /// A turn ended: its callback time is a candidate for the longest turn.
    pub(crate) fn end_turn(&self) {
        self.reading.set(None);
        let busy = self.turn_busy.replace(Duration::ZERO);
        raise(&self.words.longest_turn_ns, nanos(busy));
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

/// The watchdog thread: checks the loop's words a few times per threshold.
struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    fn start(
        words: Arc<LoopWords>,
        clock: Arc<dyn Clock>,
        threshold: Duration,
    ) -> std::io::Result<Watchdog> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let interval = super::check_interval(threshold);
        let thread = std::thread::Builder::new()
            .name("weft-loop-watchdog".into())
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let mut state = StallState::default();
                    while !flag.load(Ordering::Acquire) {
                        std::thread::park_timeout(interval);
                        words.tick.fetch_add(1, Ordering::Release);
                        let Some(snapshot) = words.snapshot() else {
                            continue;
                        };
                        if let Some(stall) =
                            check_stall(snapshot, clock.now(), threshold, &mut state)
                        {
                            report_stall(&words, stall, threshold);
                        }
                    }
                });
            })?;
        Ok(Watchdog {
            stop,
            thread: Some(thread),
        })
    }
}

fn report_stall(words: &LoopWords, stall: Stall, threshold: Duration) {
    words.stalls.fetch_add(1, Ordering::Relaxed);
    let (kind, location) = match words.site(stall.site) {
        Some(site) => (site.kind, site.location.to_string()),
        None => ("callback", "<unknown>".to_string()),
    };
    tracing::warn!(
        target: "weft::diagnostics",
        kind,
        location = %location,
        running_ms = stall.running_for.as_secs_f64() * 1e3,
        "weft: the loop is stalled: a {kind} scheduled at {location} has been running for \
         {:?} (threshold {threshold:?}) and has not returned; nothing else runs on the loop \
         meanwhile",
        stall.running_for,
    );
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // Joined so no watchdog outlives its reactor; it only ever
            // sleeps at most one interval.
            let _ = thread.join();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
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
        assert_eq!(idle.seq % 2, 0);
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
        assert_eq!(d.words.snapshot().unwrap().seq % 2, 1);
        d.end(outer, "call from thread", Location::caller());
        d.end_turn();
        assert_eq!(d.words.longest_turn_ns.load(Ordering::Relaxed), 30_000_000);
    }

    #[test]
    fn sites_are_interned_once_per_call_site() {
        let clock = ManualClock::new();
        let d = diag(&clock);
        let here = Location::caller();
        let a = d.intern(Site {
            kind: "timed call",
            location: here,
        });
        let b = d.intern(Site {
            kind: "timed call",
            location: here,
        });
        let c = d.intern(Site {
            kind: "local task",
            location: here,
        });
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(d.words.sites.lock().len(), 2);
    }
}
