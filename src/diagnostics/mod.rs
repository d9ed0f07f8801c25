//! Diagnostics: catch a blocked loop and a wedged pool while it happens, and
//! name the code responsible.
//!
//! - **Slow callbacks.** With
//!   [`Builder::slow_callback_threshold`](crate::reactor::Builder::slow_callback_threshold)
//!   set, every top-level callback the loop runs (call from a thread, timed
//!   call, task poll, I/O handler, trigger; `Deferred` callbacks run inside
//!   the callback that fires them) is timed on the reactor's
//!   [`Clock`](crate::Clock). One that holds the loop longer than the
//!   threshold is logged (`tracing` warn, target `weft::diagnostics`) with
//!   the `#[track_caller]` location of the code that scheduled it, and
//!   counted in [`ReactorStatistics`](crate::reactor::ReactorStatistics)
//!   (`slow_callbacks`, `longest_callback`).
//! - **A stalled loop, while it is stalled.** The same setting starts a
//!   watchdog thread. The loop publishes "which callback runs, and a time
//!   at or before its start" in two words; the watchdog reads them a few
//!   times per threshold and, when one callback has run longer than the
//!   threshold, logs then and there what it is and where it was scheduled
//!   from (`stalls_detected`). When the callback returns, the loop's
//!   slow-callback warning gives the total.
//! - **A wedged pool.** [`PoolWatchdog`] (or the pure [`PoolWedgeDetector`])
//!   watches a pool's statistics: every thread busy, backlog not empty, no
//!   completion for a threshold (default [`DEFAULT_WEDGE_THRESHOLD`]) warns
//!   once per episode, with the usual cure in the message.
//! - **Cross-waits.** With
//!   [`Builder::blocking_call_threshold`](crate::reactor::Builder::blocking_call_threshold)
//!   set, a [`Remote::blocking_call`](crate::Remote::blocking_call) (or
//!   `blocking_await`) that waits longer than it is logged with its caller's
//!   location, and again with the total when it returns.
//!
//! Always on, whatever the setting: the loop lag
//! ([`Reactor::turn_histogram`](crate::Reactor::turn_histogram), each
//! turn's work time, exact on the reactor's clock) and the age of the
//! oldest call waiting in the inbox (`ReactorStatistics::inbox_oldest_age`).
//! They cost per turn and per batch of calls, not per callback (see
//! [`Handle::turn_histogram`](crate::reactor::Handle::turn_histogram)).
//!
//! # Cost
//!
//! Off (the default) the loop pays nothing per callback: the calls of a
//! turn run through the same loop as when on, with a watch that compiles
//! to nothing. On:
//!
//! - the calls of a turn (calls from threads and pool completions, the
//!   burst and pool rows) run as one watched run: per call, one load and
//!   one compare (is this call's site the one published, with no watchdog
//!   tick since?). The site is published, and the clock read, only when
//!   the site changes or a tick passed (every threshold / 4, or a
//!   `ManualClock::advance`). About 7 instructions per call (callgrind:
//!   199 → 206 on the loop-side drain), within 5% of the burst rows'
//!   instructions per call and under 1% of the pool row's per job
//!   (`DIAG_CALLGRIND=1 cargo bench --bench diagnostics`, which also
//!   prints the A/A spread to judge them by);
//! - other top-level callbacks (timed calls, task polls, I/O handlers,
//!   triggers) pay an interned-site lookup (a compare with the last site,
//!   then a small cache), two stores of one word and two loads of the
//!   tick: about 30 instructions;
//! - the watchdogs log through the `tracing` dispatcher of the thread that
//!   started them, entered only around a report: a watchdog that kept it
//!   entered for its whole life made every `call_from_thread` and
//!   `defer_to_thread` in the process look for a span to carry (+100
//!   instructions each, the +13-18% once measured on the burst rows).
//!
//! The clock is read per turn (the turn histogram's reading is reused) and
//! for a callback during which a tick happened, since any other callback
//! was shorter than one tick. So measured times err long by at most one
//! tick, never short, and `longest_callback` counts only callbacks that
//! spanned a tick (on a manual clock: every callback that advanced it).
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use weft::diagnostics::DEFAULT_SLOW_CALLBACK_THRESHOLD;
//!
//! let reactor = weft::Reactor::builder()
//!     .slow_callback_threshold(Some(DEFAULT_SLOW_CALLBACK_THRESHOLD))
//!     .blocking_call_threshold(Some(Duration::from_secs(1)))
//!     .build()
//!     .unwrap();
//! reactor.call_soon(|| ());
//! reactor.iterate(Some(Duration::ZERO));
//! assert_eq!(reactor.statistics().slow_callbacks, 0);
//! ```

use std::time::Duration;

mod histogram;
mod loop_watch;
mod stall;
mod wedge;

pub use histogram::{Histogram, HistogramSnapshot};

pub(crate) use loop_watch::{LoopDiag, LoopWords, Run};
pub use wedge::{PoolWatchdog, PoolWedgeDetector, WedgeReport};

/// The slow-callback threshold asyncio's debug mode uses (100 ms); pass it
/// to [`Builder::slow_callback_threshold`](crate::reactor::Builder::slow_callback_threshold).
///
/// # Examples
///
/// ```
/// assert_eq!(weft::diagnostics::DEFAULT_SLOW_CALLBACK_THRESHOLD.as_millis(), 100);
/// ```
pub const DEFAULT_SLOW_CALLBACK_THRESHOLD: Duration = Duration::from_millis(100);

/// How long a saturated pool may go without completing anything before
/// [`PoolWedgeDetector`] calls it wedged (1 s).
///
/// # Examples
///
/// ```
/// assert_eq!(weft::diagnostics::DEFAULT_WEDGE_THRESHOLD.as_secs(), 1);
/// ```
pub const DEFAULT_WEDGE_THRESHOLD: Duration = Duration::from_secs(1);

/// Where a watchdog thread sends its reports: the `tracing` dispatcher that
/// was the default on the thread that started it, if there was one.
///
/// The dispatcher is entered only around a report, never for the thread's
/// whole life: a scoped default raises `tracing`'s process-wide "a
/// dispatcher has been set" flag for good and, while it lives, sends every
/// thread's dispatcher lookups through thread-local state. Held by the
/// watchdog, that would make every `call_from_thread` and
/// `defer_to_thread` in the process look for a span to carry (about 100
/// instructions each, `crate::deferred::span`) just because diagnostics
/// are on. With no dispatcher set anywhere at start, reports go to the
/// global default of when they happen, if one was set meanwhile.
pub(crate) struct ReportTo(Option<tracing::Dispatch>);

impl ReportTo {
    /// The calling thread's dispatcher (none if no dispatcher was ever set).
    pub(crate) fn current() -> ReportTo {
        if !tracing::dispatcher::has_been_set() {
            return ReportTo(None);
        }
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let none = dispatch.is::<tracing::subscriber::NoSubscriber>();
        ReportTo((!none).then_some(dispatch))
    }

    /// Runs `report` (which logs) with the dispatcher as the default.
    pub(crate) fn report(&self, report: impl FnOnce()) {
        match &self.0 {
            Some(dispatch) => tracing::dispatcher::with_default(dispatch, report),
            None => report(),
        }
    }
}

/// How often a watchdog looks: a few times per threshold, within bounds.
pub(crate) fn check_interval(threshold: Duration) -> Duration {
    (threshold / 4).clamp(Duration::from_millis(1), Duration::from_millis(250))
}
