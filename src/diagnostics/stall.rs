//! The watchdog's side of the stall detector: its decision, a plain
//! function of what the loop publishes ([`LoopWords`], see `loop_watch.rs`
//! for the loop's side and the invariants both rely on), and the thread
//! that bumps the tick, takes a snapshot a few times per threshold and
//! reports a stall while it lasts.
//!
//! Invariants:
//! - [`check_stall`] dates a callback from the later of the loop's `since`
//!   and the clock read before the watchdog's last check that saw something
//!   else running (both at or before the callback's start), so it reports a
//!   stall at most about one interval early, once per callback.
//! - The clock is read before the snapshot, so a snapshot is never older
//!   than the time it is judged at.
//! - The thread is joined when its [`Watchdog`] is dropped; it sleeps at
//!   most one interval at a time.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::loop_watch::{LoopWords, Snapshot};
use crate::loom::atomic::{AtomicBool, Ordering};
use crate::time::Clock;

/// The watchdog's memory between two checks.
#[derive(Debug, Default)]
pub(crate) struct StallState {
    /// What the last check saw running (`current`, `since`), and the clock
    /// read just before that check.
    last: Option<((u64, Duration), Duration)>,
    /// The clock read before the last check that saw something other than
    /// the callback now running (so at or before its start).
    before: Option<Duration>,
    /// The callback (`current`, `since`) already reported.
    reported: Option<(u64, Duration)>,
}

/// A callback found running for longer than the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stall {
    pub(crate) site: u64,
    pub(crate) running_for: Duration,
}

/// The watchdog's decision: reports a callback that has run longer than
/// `threshold` at `now` (read before `snapshot` was taken), once per
/// callback.
pub(crate) fn check_stall(
    snapshot: Snapshot,
    now: Duration,
    threshold: Duration,
    state: &mut StallState,
) -> Option<Stall> {
    let running = (snapshot.current, snapshot.since);
    match state.last {
        Some((seen, _)) if seen == running => {}
        Some((_, at)) => state.before = Some(at),
        None => state.before = None,
    }
    state.last = Some((running, now));
    if snapshot.current == 0 || state.reported == Some(running) {
        return None;
    }
    let began = state
        .before
        .map_or(snapshot.since, |b| b.max(snapshot.since));
    let running_for = now.saturating_sub(began);
    if running_for <= threshold {
        return None;
    }
    state.reported = Some(running);
    Some(Stall {
        site: snapshot.site(),
        running_for,
    })
}

/// The watchdog thread: checks the loop's words a few times per threshold.
pub(super) struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub(super) fn start(
        words: Arc<LoopWords>,
        clock: Arc<dyn Clock>,
        threshold: Duration,
    ) -> std::io::Result<Watchdog> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let report_to = super::ReportTo::current();
        let interval = super::check_interval(threshold);
        let thread = std::thread::Builder::new()
            .name("weft-loop-watchdog".into())
            .spawn(move || {
                let mut state = StallState::default();
                while !flag.load(Ordering::Acquire) {
                    std::thread::park_timeout(interval);
                    words.bump_tick();
                    // Read before the snapshot (see `check_stall`).
                    let now = clock.now();
                    let Some(snapshot) = words.snapshot() else {
                        continue;
                    };
                    if let Some(stall) = check_stall(snapshot, now, threshold, &mut state) {
                        report_to.report(|| report_stall(&words, stall, threshold));
                    }
                }
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

    /// The check dates a callback from the later of the loop's reading and
    /// its own last sight of something else running: a callback that
    /// started late in a long turn of quick ones is not called stalled.
    #[test]
    fn the_check_dates_a_callback_no_earlier_than_it_was_last_absent() {
        let threshold = Duration::from_millis(100);
        let mut state = StallState::default();
        let ms = Duration::from_millis;
        let snap = |current, since| Snapshot { current, since };
        // Callback 1 seen at 500 ms (the loop's reading: 450 ms).
        assert_eq!(
            check_stall(snap(3, ms(450)), ms(500), threshold, &mut state),
            None
        );
        // Callback 2 (site 7) seen at 600 ms, with an older reading (as a
        // clock that moved without a tick would leave it): it began after
        // the last check, at 500 ms.
        let second = 8;
        assert_eq!(
            check_stall(snap(second, ms(0)), ms(600), threshold, &mut state),
            None
        );
        let stall = check_stall(snap(second, ms(0)), ms(601), threshold, &mut state).unwrap();
        assert_eq!(
            stall,
            Stall {
                site: 7,
                running_for: ms(101)
            }
        );
        // Reported once.
        assert_eq!(
            check_stall(snap(second, ms(0)), ms(900), threshold, &mut state),
            None
        );
        // The first sight of a callback with nothing earlier: dated from the
        // loop's reading.
        let mut fresh = StallState::default();
        let stall = check_stall(snap(second, ms(50)), ms(200), threshold, &mut fresh).unwrap();
        assert_eq!(stall.running_for, ms(150));
    }
}
