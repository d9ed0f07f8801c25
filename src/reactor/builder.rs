//! [`Builder`] and the settings it takes ([`PanicPolicy`]).
//!
//! Layers above the reactor (the bridge's `QueuedWork`) keep their settings
//! as typed extension values the builder carries opaquely and seeds into the
//! reactor's loop-local extensions: the reactor names no type of theirs.

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Poll as MioPoll};

use crate::loom::Mutex;
use crate::loom::atomic::{AtomicBool, AtomicU8};
use crate::time::{Clock, SystemClock, Timers};

use super::context::{self, this_thread};
use super::core::{Inner, Reactor, TIMER_TOKEN, WAKER_TOKEN};
use super::handle::Handle;
use super::inbox::{AgeClock, Inbox};
use super::local::Locals;
use super::remote::{MioWaker, STATE_IDLE, Shared};
use super::stats::SharedStats;
use super::tasks::{RunQueue, Tasks};
use super::triggers::Triggers;

/// How long a turn may run before its pass over the ready local tasks
/// stops, by default (500 µs; see [`Builder::task_pass_budget`]): half the
/// loop-stall bound a responsive service aims for, so that a turn of many
/// ready connections still leaves its timers and its next I/O poll within
/// about a millisecond.
///
/// # Examples
///
/// ```
/// assert_eq!(weft::reactor::DEFAULT_TASK_PASS_BUDGET.as_micros(), 500);
/// ```
pub const DEFAULT_TASK_PASS_BUDGET: Duration = Duration::from_micros(500);

/// A task pass reads the clock for its budget once per this many polls
/// (and not at all in a pass of fewer tasks; see
/// [`Builder::task_pass_budget`]).
///
/// # Examples
///
/// ```
/// assert_eq!(weft::reactor::TASK_PASS_CHECK_EVERY, 8);
/// ```
pub const TASK_PASS_CHECK_EVERY: usize = 8;

/// What the loop does with a panic in a callback, timer or task.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::builder()
///     .panic_policy(weft::reactor::PanicPolicy::Propagate)
///     .build()
///     .unwrap();
/// # drop(reactor);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PanicPolicy {
    /// Log the panic with `tracing` and go on (Twisted's behaviour).
    #[default]
    Log,
    /// Re-raise the panic out of `run`/`iterate` (for tests).
    Propagate,
}

/// Builds a [`Reactor`] with non-default settings.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weft::{Reactor, testing::ManualClock};
///
/// let reactor = Reactor::builder()
///     .clock(ManualClock::new())
///     .shutdown_timeout(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// # drop(reactor);
/// ```
pub struct Builder {
    clock: Arc<dyn Clock>,
    /// `clock` is a [`SystemClock`]: no waker moves it (see
    /// `Inner::reuse_readings`).
    system_clock: bool,
    /// `clock` is the real [`SystemClock`]: the inbox may date its waiting
    /// calls on the kernel's coarse clock (`inbox::AgeClock`).
    coarse_ages: bool,
    panic_policy: PanicPolicy,
    handle_signals: bool,
    shutdown_timeout: Duration,
    /// Settings of layers above the reactor, one per type (see the module
    /// docs); they become the reactor's extensions.
    extensions: Vec<(TypeId, Box<dyn Any + Send>)>,
    events_capacity: usize,
    inbox_capacity: usize,
    slow_callback_threshold: Option<Duration>,
    blocking_call_threshold: Option<Duration>,
    task_pass_budget: Option<Duration>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("panic_policy", &self.panic_policy)
            .field("handle_signals", &self.handle_signals)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("inbox_capacity", &self.inbox_capacity)
            .field("slow_callback_threshold", &self.slow_callback_threshold)
            .field("blocking_call_threshold", &self.blocking_call_threshold)
            .field("task_pass_budget", &self.task_pass_budget)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            clock: Arc::new(SystemClock::new()),
            system_clock: true,
            coarse_ages: true,
            panic_policy: PanicPolicy::Log,
            handle_signals: false,
            shutdown_timeout: Duration::from_secs(30),
            extensions: Vec::new(),
            events_capacity: 256,
            inbox_capacity: usize::MAX,
            slow_callback_threshold: None,
            blocking_call_threshold: None,
            task_pass_budget: Some(DEFAULT_TASK_PASS_BUDGET),
        }
    }
}

impl Builder {
    /// Uses `clock` for timers (e.g. a [`ManualClock`](crate::testing::ManualClock)).
    ///
    /// # Examples
    ///
    /// ```
    /// let r = weft::Reactor::builder().clock(weft::SystemClock::new()).build().unwrap();
    /// # drop(r);
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.system_clock = (&clock as &dyn Any).is::<SystemClock>();
        self.coarse_ages = self.system_clock;
        self.clock = Arc::new(clock);
        self
    }

    /// Sets what happens to panics in callbacks (default: log and go on).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::reactor::PanicPolicy;
    /// let r = weft::Reactor::builder().panic_policy(PanicPolicy::Log).build().unwrap();
    /// # drop(r);
    /// ```
    pub fn panic_policy(mut self, policy: PanicPolicy) -> Self {
        self.panic_policy = policy;
        self
    }

    /// Stops the reactor cleanly on SIGINT and SIGTERM (off by default: signal
    /// handlers are process-wide).
    ///
    /// These are ordinary entries of the reactor's signal table: a
    /// [`Handle::add_signal_handler`] for SIGINT or SIGTERM replaces the stop
    /// until it is removed. Unlike user handlers they do not claim the
    /// signal, so several reactors may stop on it.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = weft::Reactor::builder().handle_signals(true).build().unwrap();
    /// # drop(r);
    /// ```
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.handle_signals = on;
        self
    }

    /// Bounds how long shutdown waits for `Before` triggers and in-flight
    /// work (default 30 s), measured on the reactor's clock; what is left is
    /// logged and the loop exits. `Duration::MAX` means no bound. Dropping a
    /// reactor never waits (see [`Reactor`]'s `# Dropping`).
    ///
    /// # Examples
    ///
    /// ```
    /// let r = weft::Reactor::builder().shutdown_timeout(std::time::Duration::from_secs(1)).build().unwrap();
    /// # drop(r);
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Seeds the reactor's extension of type `T` (a setting of a layer above
    /// the reactor, read back with `Handle::extension`), replacing an earlier
    /// value of the same type.
    pub(crate) fn with_extension<T: Any + Send>(mut self, value: T) -> Self {
        let key = TypeId::of::<T>();
        self.extensions.retain(|(k, _)| *k != key);
        self.extensions.push((key, Box::new(value)));
        self
    }

    /// Sets how many calls may wait in the inbox before
    /// [`Remote::try_call_from_thread`](super::Remote::try_call_from_thread)
    /// reports [`TrySendError::Full`](super::TrySendError::Full) (default:
    /// no limit). Only `try_call_from_thread` is refused; plain
    /// `call_from_thread` and pool completions are counted but always
    /// accepted, so results are never dropped for want of room.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = weft::Reactor::builder().inbox_capacity(1024).build().unwrap();
    /// # drop(r);
    /// ```
    pub fn inbox_capacity(mut self, calls: usize) -> Self {
        self.inbox_capacity = calls;
        self
    }

    /// Turns on the slow-callback and stalled-loop detectors (default: off;
    /// [`DEFAULT_SLOW_CALLBACK_THRESHOLD`](crate::diagnostics::DEFAULT_SLOW_CALLBACK_THRESHOLD)
    /// is asyncio's 100 ms). Each callback, timer, task poll and I/O handler
    /// is timed on the reactor's clock; one that holds the loop longer than
    /// `threshold` is logged (warn, target `weft::diagnostics`) with where
    /// it was scheduled from and counted in the statistics. A watchdog
    /// thread also reports a callback that is still running past the
    /// threshold, while it runs. See [`crate::diagnostics`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft::testing::ManualClock;
    ///
    /// let clock = ManualClock::new();
    /// let reactor = weft::Reactor::builder()
    ///     .clock(clock.clone())
    ///     .slow_callback_threshold(Some(Duration::from_millis(100)))
    ///     .build()
    ///     .unwrap();
    /// reactor.call_soon(move || clock.advance(Duration::from_millis(200)));
    /// reactor.iterate(Some(Duration::ZERO));
    /// let stats = reactor.statistics();
    /// assert_eq!(stats.slow_callbacks, 1);
    /// assert_eq!(stats.longest_callback, Duration::from_millis(200));
    /// ```
    pub fn slow_callback_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.slow_callback_threshold = threshold;
        self
    }

    /// Logs a [`Remote::blocking_call`](super::Remote::blocking_call) or
    /// `blocking_await` that has waited longer than `threshold` for the loop
    /// (with its caller's location), and again with the total when it
    /// returns: the classic cross-wait between a pool job and a loop that
    /// waits for the pool (default: off).
    ///
    /// # Examples
    ///
    /// ```
    /// let r = weft::Reactor::builder()
    ///     .blocking_call_threshold(Some(std::time::Duration::from_secs(1)))
    ///     .build()
    ///     .unwrap();
    /// # drop(r);
    /// ```
    pub fn blocking_call_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.blocking_call_threshold = threshold;
        self
    }

    /// Bounds how long one turn's pass over the ready local tasks may run
    /// (default: [`DEFAULT_TASK_PASS_BUDGET`]; `None`: no bound, every task
    /// ready when the pass began is polled in it). Once the turn has run
    /// this long (on the reactor's clock, counted from the turn's start),
    /// the pass stops after the poll in progress and the tasks it did not
    /// reach are polled first in the next turn, in the same order, after
    /// that turn's calls from other threads, due timers and I/O poll. So a
    /// loop serving many connections at once still runs its timers and
    /// takes new events every few hundred microseconds, instead of once
    /// per pass over every ready connection. The clock is read only in a
    /// pass that has polled at least [`TASK_PASS_CHECK_EVERY`] tasks, and
    /// then once per that many polls: a pass of a few tasks costs nothing,
    /// and a long pass may overrun the budget by up to that many polls.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let r = weft::Reactor::builder()
    ///     .task_pass_budget(Some(Duration::from_micros(200)))
    ///     .build()
    ///     .unwrap();
    /// # drop(r);
    /// ```
    pub fn task_pass_budget(mut self, budget: Option<Duration>) -> Self {
        self.task_pass_budget = budget;
        self
    }

    /// Creates the reactor on this thread, which becomes its loop thread.
    ///
    /// Uses `clock` as if it were the system clock (no waker moves it), so
    /// turns reuse readings as they do with a [`SystemClock`]: for tests
    /// that count readings.
    #[cfg(test)]
    pub(super) fn system_like_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self.system_clock = true;
        self.coarse_ages = false; // its readings are counted
        self
    }

    /// # Errors
    ///
    /// The OS refused the poller, the waker or the signal handlers.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::builder().build().unwrap();
    /// # drop(reactor);
    /// ```
    pub fn build(self) -> io::Result<Reactor> {
        let diag = match self.slow_callback_threshold {
            Some(t) => Some(crate::diagnostics::LoopDiag::new(self.clock.clone(), t)?),
            None => None,
        };
        let poll = MioPoll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER_TOKEN)?;
        let shared = Arc::new(Shared {
            inbox: if self.coarse_ages && crate::time::COARSE_AVAILABLE && !cfg!(loom) {
                Inbox::with_age_clock(MioWaker(waker), AgeClock::Coarse)
            } else {
                Inbox::with_clock(MioWaker(waker), self.clock.clone())
            },
            run_queue: Mutex::new(RunQueue::default()),
            stop_requested: AtomicBool::new(false),
            started: AtomicBool::new(false),
            inbox_closed: AtomicBool::new(false),
            state: AtomicU8::new(STATE_IDLE),
            loop_thread: this_thread(),
            capacity: self.inbox_capacity,
            clock: self.clock.clone(),
            stats: SharedStats {
                diag: diag.as_ref().map(|d| d.words()),
                blocking_call_threshold: self.blocking_call_threshold,
                ..SharedStats::default()
            },
        });
        {
            let shared = shared.clone();
            self.clock
                .register_waker(Arc::new(move || shared.inbox.notify()));
        }
        let precise_timer = super::precise_timer::PreciseTimer::new(poll.registry(), TIMER_TOKEN);
        let inner = Rc::new(Inner {
            shared,
            poll: RefCell::new(poll),
            events: RefCell::new(Events::with_capacity(self.events_capacity)),
            timers: Timers::new(self.clock),
            tasks: Tasks::default(),
            batch: RefCell::new(VecDeque::new()),
            triggers: Triggers::default(),
            started: Cell::new(false),
            running: Cell::new(false),
            in_turn: Cell::new(false),
            busy: Cell::new(false),
            io_sources: Cell::new(0),
            io_pace: Default::default(),
            panic_policy: self.panic_policy,
            shutdown_timeout: self.shutdown_timeout,
            shutdown_deadline: Cell::new(None),
            after_drain: RefCell::new(Vec::new()),
            turn_end: RefCell::new(Vec::new()),
            signals: super::signals::SignalTable::default(),
            locals: Locals::with_extensions(self.extensions),
            precise_timer,
            io: super::io_registry::IoRegistry::default(),
            spin_gate: crate::loom::SpinGate::new(super::inbox::MAX_SPIN_PAUSE),
            reuse_readings: self.system_clock && diag.is_none(),
            task_pass_budget: self.task_pass_budget,
            diag: diag.map(Box::new),
        });
        context::register(&inner);
        let handle = Handle::from_inner(inner);
        if self.handle_signals {
            // The same table as `Handle::add_signal_handler`: a user
            // handler for one of these replaces the stop.
            handle.add_default_stop(signal_hook::consts::SIGINT)?;
            handle.add_default_stop(signal_hook::consts::SIGTERM)?;
        }
        Ok(Reactor { handle })
    }
}
