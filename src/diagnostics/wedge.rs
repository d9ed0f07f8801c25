//! Wedged-pool detection from the outside, on what
//! [`ThreadPool::statistics`](crate::ThreadPool::statistics) exposes.
//!
//! Invariants:
//! - A pool is *saturated* when no thread is idle, at least `max` threads
//!   are busy and the backlog is not empty (it cannot grow to take the
//!   backlog). It is *wedged* when it has stayed saturated with no task
//!   completing for the threshold.
//! - One episode, one warning: the detector reports when an episode starts
//!   and stays quiet until a completion (or an idle thread, or an empty
//!   backlog) ends it.
//! - The decision is [`PoolWedgeDetector::observe`], a plain function of a
//!   statistics snapshot and a time; [`PoolWatchdog`] only samples and logs.
//! - The report names the code: the oldest queued job's submission
//!   location and age come with the statistics
//!   ([`PoolStatistics::oldest_backlog`]), the running jobs' locations and
//!   ages with the sample ([`PoolWatchdog::watch_jobs`], from
//!   [`ThreadPool::running_jobs`](crate::ThreadPool::running_jobs)).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::loom::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::threads::{JobInfo, PoolStatistics};
use crate::time::{Clock, SystemClock};

/// What [`PoolWedgeDetector::observe`] reports when a wedge episode begins.
///
/// # Examples
///
/// See [`PoolWedgeDetector`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WedgeReport {
    /// Threads busy.
    pub busy: usize,
    /// Tasks waiting for a thread.
    pub backlog: usize,
    /// The pool's maximum size.
    pub max: usize,
    /// How long the pool has been saturated with no completion.
    pub stuck_for: Duration,
    /// The oldest queued job: where it was submitted, how long it waited.
    pub oldest_backlog: Option<JobInfo>,
    /// The running jobs, longest-running first (empty when the sample had
    /// none: [`PoolWedgeDetector::observe`] sees only statistics).
    pub running: Vec<JobInfo>,
}

/// Decides from successive pool statistics whether a pool is wedged.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weft::diagnostics::PoolWedgeDetector;
/// use weft::threads::PoolStatistics;
///
/// let mut stats = PoolStatistics::default();
/// stats.busy = 2;
/// stats.max = 2;
/// stats.backlog = 3;
/// let mut detector = PoolWedgeDetector::new(Duration::from_secs(1));
/// assert_eq!(detector.observe(&stats, Duration::ZERO), None);
/// let report = detector.observe(&stats, Duration::from_millis(1500)).unwrap();
/// assert_eq!(report.stuck_for, Duration::from_millis(1500));
/// assert!(detector.is_wedged());
/// // Once per episode.
/// assert_eq!(detector.observe(&stats, Duration::from_secs(9)), None);
/// stats.completed += 1;
/// assert_eq!(detector.observe(&stats, Duration::from_secs(10)), None);
/// assert!(!detector.is_wedged());
/// assert_eq!(detector.episodes(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct PoolWedgeDetector {
    threshold: Duration,
    /// `completed` and the time of the last sign of progress.
    progress: Option<(u64, Duration)>,
    wedged: bool,
    episodes: u64,
}

impl PoolWedgeDetector {
    /// A detector that calls a pool wedged after `threshold` saturated with
    /// no completion ([`DEFAULT_WEDGE_THRESHOLD`](super::DEFAULT_WEDGE_THRESHOLD)
    /// is 1 s).
    ///
    /// # Examples
    ///
    /// ```
    /// let d = weft::diagnostics::PoolWedgeDetector::new(weft::diagnostics::DEFAULT_WEDGE_THRESHOLD);
    /// assert!(!d.is_wedged());
    /// ```
    pub fn new(threshold: Duration) -> Self {
        PoolWedgeDetector {
            threshold,
            progress: None,
            wedged: false,
            episodes: 0,
        }
    }

    /// Takes one sample (`now` on any monotonic clock); returns a report
    /// when a wedge episode begins.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut d = weft::diagnostics::PoolWedgeDetector::new(Duration::from_secs(1));
    /// let idle = weft::threads::PoolStatistics::default();
    /// assert_eq!(d.observe(&idle, Duration::from_secs(100)), None);
    /// ```
    pub fn observe(&mut self, stats: &PoolStatistics, now: Duration) -> Option<WedgeReport> {
        let saturated =
            stats.idle == 0 && stats.busy > 0 && stats.busy >= stats.max && stats.backlog > 0;
        match self.progress {
            Some((completed, _)) if saturated && completed == stats.completed => {}
            _ => {
                self.progress = Some((stats.completed, now));
                self.wedged = false;
                return None;
            }
        }
        let since = self.progress.map_or(now, |(_, at)| at);
        let stuck_for = now.saturating_sub(since);
        if self.wedged || stuck_for < self.threshold {
            return None;
        }
        self.wedged = true;
        self.episodes += 1;
        Some(WedgeReport {
            busy: stats.busy,
            backlog: stats.backlog,
            max: stats.max,
            stuck_for,
            oldest_backlog: stats.oldest_backlog,
            running: Vec::new(),
        })
    }

    /// Whether the current episode is a wedge (the statistics flag).
    ///
    /// # Examples
    ///
    /// ```
    /// let d = weft::diagnostics::PoolWedgeDetector::new(std::time::Duration::from_secs(1));
    /// assert!(!d.is_wedged());
    /// ```
    pub fn is_wedged(&self) -> bool {
        self.wedged
    }

    /// Wedge episodes seen so far.
    ///
    /// # Examples
    ///
    /// ```
    /// let d = weft::diagnostics::PoolWedgeDetector::new(std::time::Duration::from_secs(1));
    /// assert_eq!(d.episodes(), 0);
    /// ```
    pub fn episodes(&self) -> u64 {
        self.episodes
    }
}

/// A thread that samples a pool's statistics a few times per threshold and
/// warns (`tracing`, target `weft::diagnostics`) once per wedge episode.
/// It stops when dropped.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use weft::{ThreadPool, diagnostics::{PoolWatchdog, DEFAULT_WEDGE_THRESHOLD}};
///
/// let pool = Arc::new(ThreadPool::new(0, 4).unwrap());
/// pool.start();
/// let watchdog = PoolWatchdog::start(&pool, DEFAULT_WEDGE_THRESHOLD).unwrap();
/// assert!(!watchdog.is_wedged());
/// drop(watchdog);
/// pool.stop();
/// ```
#[derive(Debug)]
pub struct PoolWatchdog {
    shared: Arc<WatchShared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct WatchShared {
    stop: AtomicBool,
    wedged: AtomicBool,
    episodes: AtomicU64,
}

impl PoolWatchdog {
    /// Watches `pool` on the system clock.
    ///
    /// # Errors
    ///
    /// The OS refused the thread.
    ///
    /// # Examples
    ///
    /// See [`PoolWatchdog`].
    pub fn start(pool: &Arc<crate::ThreadPool>, threshold: Duration) -> std::io::Result<Self> {
        let pool = pool.clone();
        let name = pool.name().to_string();
        Self::watch_jobs(
            name,
            move || (pool.statistics(), pool.running_jobs()),
            threshold,
            SystemClock::new(),
        )
    }

    /// Watches any statistics source on `clock` (e.g. a
    /// [`ManualClock`](crate::testing::ManualClock) in tests). `name` goes
    /// into the warning, which names no running job (see
    /// [`watch_jobs`](Self::watch_jobs)).
    ///
    /// # Errors
    ///
    /// The OS refused the thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft::{diagnostics::PoolWatchdog, testing::ManualClock, threads::PoolStatistics};
    ///
    /// let w = PoolWatchdog::watch("idle", PoolStatistics::default, Duration::from_secs(1), ManualClock::new())
    ///     .unwrap();
    /// assert_eq!(w.episodes(), 0);
    /// ```
    pub fn watch(
        name: impl Into<String>,
        mut statistics: impl FnMut() -> PoolStatistics + Send + 'static,
        threshold: Duration,
        clock: impl Clock,
    ) -> std::io::Result<Self> {
        Self::watch_jobs(name, move || (statistics(), Vec::new()), threshold, clock)
    }

    /// Like [`watch`](Self::watch), with a source that also gives the
    /// running jobs ([`ThreadPool::running_jobs`](crate::ThreadPool::running_jobs)),
    /// which the warning then names with their ages.
    ///
    /// # Errors
    ///
    /// The OS refused the thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use weft::{ThreadPool, diagnostics::PoolWatchdog, testing::ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let pool = Arc::new(ThreadPool::builder().clock(clock.clone()).build().unwrap());
    /// let p = pool.clone();
    /// let w = PoolWatchdog::watch_jobs(
    ///     "db",
    ///     move || (p.statistics(), p.running_jobs()),
    ///     Duration::from_secs(1),
    ///     clock,
    /// )
    /// .unwrap();
    /// assert!(!w.is_wedged());
    /// ```
    pub fn watch_jobs(
        name: impl Into<String>,
        mut sample: impl FnMut() -> (PoolStatistics, Vec<JobInfo>) + Send + 'static,
        threshold: Duration,
        clock: impl Clock,
    ) -> std::io::Result<Self> {
        let name = name.into();
        let shared = Arc::new(WatchShared::default());
        let seen = shared.clone();
        let report_to = super::ReportTo::current();
        let interval = super::check_interval(threshold);
        let thread = std::thread::Builder::new()
            .name("weft-pool-watchdog".into())
            .spawn(move || {
                let mut detector = PoolWedgeDetector::new(threshold);
                while !seen.stop.load(Ordering::Acquire) {
                    // Time first: a sample is never older than its time.
                    let now = clock.now();
                    let (statistics, running) = sample();
                    if let Some(mut report) = detector.observe(&statistics, now) {
                        report.running = running;
                        seen.episodes.fetch_add(1, Ordering::Relaxed);
                        report_to.report(|| report_wedge(&name, &report));
                    }
                    seen.wedged.store(detector.is_wedged(), Ordering::Release);
                    std::thread::park_timeout(interval);
                }
            })?;
        Ok(PoolWatchdog {
            shared,
            thread: Some(thread),
        })
    }

    /// Whether the pool was wedged at the last sample.
    ///
    /// # Examples
    ///
    /// See [`PoolWatchdog`].
    pub fn is_wedged(&self) -> bool {
        self.shared.wedged.load(Ordering::Acquire)
    }

    /// Wedge episodes reported so far.
    ///
    /// # Examples
    ///
    /// See [`PoolWatchdog::watch`].
    pub fn episodes(&self) -> u64 {
        self.shared.episodes.load(Ordering::Relaxed)
    }
}

impl Drop for PoolWatchdog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn report_wedge(name: &str, r: &WedgeReport) {
    let oldest = match &r.oldest_backlog {
        Some(job) => format!(
            "; the oldest queued job, submitted at {}, has waited {:?}",
            job.location,
            to_millis(job.age)
        ),
        None => String::new(),
    };
    let running = if r.running.is_empty() {
        String::new()
    } else {
        let jobs: Vec<String> = r
            .running
            .iter()
            .map(|job| format!("{} for {:?}", job.location, to_millis(job.age)))
            .collect();
        format!("; running: {}", jobs.join(", "))
    };
    tracing::warn!(
        target: "weft::diagnostics",
        pool = name,
        busy = r.busy,
        backlog = r.backlog,
        max = r.max,
        stuck_ms = r.stuck_for.as_secs_f64() * 1e3,
        oldest_location = r.oldest_backlog.map(|job| tracing::field::display(job.location)),
        oldest_age_ms = r.oldest_backlog.map(|job| job.age.as_secs_f64() * 1e3),
        "weft: thread pool {name:?} looks wedged: all {} threads busy, {} tasks queued, nothing \
         completed for {:?}{oldest}{running}. Raise the pool's max, or do not block a pool thread \
         on work queued to the same pool (nor on a blocking_call to a loop that waits for this \
         pool)",
        r.busy,
        r.backlog,
        to_millis(r.stuck_for),
    );
}

/// Whole milliseconds, for reading (the fields keep the exact values).
fn to_millis(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
