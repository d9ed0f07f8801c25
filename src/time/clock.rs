//! The [`Clock`] seam: a [`SystemClock`] for real time and a [`ManualClock`]
//! for tests. The reactor reads time only through its clock (timers and the
//! shutdown deadline alike), so a test steps through both exactly.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::loom::Mutex;

/// A source of monotonic time for a reactor.
///
/// The reactor asks the clock what time it is and how long it may sleep to
/// reach a deadline. A [`SystemClock`] follows real time; a [`ManualClock`]
/// moves only when told, which makes timers deterministic in tests.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weft::{Clock, SystemClock};
///
/// let clock = SystemClock::new();
/// let t0 = clock.now();
/// assert!(clock.now() >= t0);
/// assert!(clock.sleep_until(t0 + Duration::from_secs(1)).is_some());
/// ```
pub trait Clock: Send + Sync + 'static {
    /// Time elapsed since this clock's origin.
    fn now(&self) -> Duration;

    /// How long the loop may block to reach `deadline`, or `None` when waiting
    /// does not bring the deadline closer (a manual clock), so the loop sleeps
    /// until woken.
    fn sleep_until(&self, deadline: Duration) -> Option<Duration> {
        Some(deadline.saturating_sub(self.now()))
    }

    /// Called once by each reactor that adopts this clock; `wake` wakes that
    /// reactor's loop, for clocks that move on their own schedule.
    fn register_waker(&self, wake: Arc<dyn Fn() + Send + Sync>) {
        let _ = wake;
    }
}

/// The real monotonic clock; its origin is the moment it was created.
///
/// # Examples
///
/// ```
/// use weft::{Clock, SystemClock};
///
/// let clock = SystemClock::new();
/// assert!(clock.now().as_secs() < 1);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// Creates a clock whose time starts at zero now.
    ///
    /// # Examples
    ///
    /// ```
    /// let clock = weft::SystemClock::new();
    /// # let _ = clock;
    /// ```
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    // The default's body, defined here so it is compiled next to `now`:
    // the loop calls both before it sleeps, and one code page fewer is one
    // miss fewer on the wake after a long sleep.
    fn sleep_until(&self, deadline: Duration) -> Option<Duration> {
        Some(deadline.saturating_sub(self.now()))
    }
}

/// A clock that moves only when [`advance`](ManualClock::advance)d, like
/// Twisted's `task.Clock`. It starts at zero.
///
/// Advancing wakes every reactor that uses the clock, so the next turn runs
/// the timers that became due; with [`Reactor::iterate`](crate::Reactor::iterate)
/// a test steps through time exactly.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use std::time::Duration;
/// use weft::{testing::ManualClock, Reactor};
///
/// let clock = ManualClock::new();
/// let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
/// let fired = Rc::new(Cell::new(false));
/// let f = fired.clone();
/// reactor.call_later(Duration::from_secs(2), move || f.set(true));
/// clock.advance(Duration::from_secs(1));
/// reactor.iterate(Some(Duration::ZERO));
/// assert!(!fired.get());
/// clock.advance(Duration::from_secs(1));
/// reactor.iterate(Some(Duration::ZERO));
/// assert!(fired.get());
/// ```
#[derive(Clone, Default)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Default)]
struct ManualInner {
    now: Mutex<Duration>,
    wakers: Mutex<Vec<Arc<dyn Fn() + Send + Sync>>>,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

impl ManualClock {
    /// Creates a clock at time zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::{Clock, testing::ManualClock};
    /// assert_eq!(ManualClock::new().now(), std::time::Duration::ZERO);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward by `by` and wakes the reactors using this clock.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft::{Clock, testing::ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// clock.advance(Duration::from_millis(1500));
    /// assert_eq!(clock.now(), Duration::from_millis(1500));
    /// ```
    pub fn advance(&self, by: Duration) {
        {
            let mut now = self.inner.now.lock();
            *now = now.saturating_add(by);
        }
        let wakers = self.inner.wakers.lock().clone();
        for wake in wakers {
            wake();
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.inner.now.lock()
    }

    fn sleep_until(&self, _deadline: Duration) -> Option<Duration> {
        None
    }

    fn register_waker(&self, wake: Arc<dyn Fn() + Send + Sync>) {
        self.inner.wakers.lock().push(wake);
    }
}
