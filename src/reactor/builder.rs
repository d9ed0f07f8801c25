//! [`Builder`] and the settings it takes ([`PanicPolicy`], and the bridge's
//! [`QueuedWork`], defined with the bridge that acts on it).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Poll as MioPoll};

use crate::bridge::QueuedWork;
use crate::loom::Mutex;
use crate::loom::atomic::{AtomicBool, AtomicU8, AtomicUsize};
use crate::time::{Clock, SystemClock, Timers};

use super::context::{self, this_thread};
use super::core::{Inner, Reactor, TIMER_TOKEN, WAKER_TOKEN};
use super::handle::Handle;
use super::inbox::Inbox;
use super::local::Locals;
use super::remote::{MioWaker, STATE_IDLE, Shared};
use super::stats::SharedStats;
use super::tasks::{RunQueue, Tasks};
use super::triggers::Triggers;

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
    panic_policy: PanicPolicy,
    handle_signals: bool,
    shutdown_timeout: Duration,
    queued_work: QueuedWork,
    events_capacity: usize,
    inbox_capacity: usize,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("panic_policy", &self.panic_policy)
            .field("handle_signals", &self.handle_signals)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("inbox_capacity", &self.inbox_capacity)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            clock: Arc::new(SystemClock::new()),
            panic_policy: PanicPolicy::Log,
            handle_signals: false,
            shutdown_timeout: Duration::from_secs(30),
            queued_work: QueuedWork::Run,
            events_capacity: 256,
            inbox_capacity: usize::MAX,
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

    /// Sets what shutdown does with pool work queued but not started
    /// (default: run it and deliver its results).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::reactor::QueuedWork;
    /// let r = weft::Reactor::builder().queued_work_at_shutdown(QueuedWork::Run).build().unwrap();
    /// # drop(r);
    /// ```
    pub fn queued_work_at_shutdown(mut self, policy: QueuedWork) -> Self {
        self.queued_work = policy;
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

    /// Creates the reactor on this thread, which becomes its loop thread.
    ///
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
        let poll = MioPoll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER_TOKEN)?;
        let shared = Arc::new(Shared {
            inbox: Inbox::new(MioWaker(waker)),
            run_queue: Mutex::new(RunQueue::default()),
            stop_requested: AtomicBool::new(false),
            started: AtomicBool::new(false),
            inbox_closed: AtomicBool::new(false),
            state: AtomicU8::new(STATE_IDLE),
            loop_thread: this_thread(),
            queued: AtomicUsize::new(0),
            capacity: self.inbox_capacity,
            clock: self.clock.clone(),
            stats: SharedStats::default(),
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
            panic_policy: self.panic_policy,
            shutdown_timeout: self.shutdown_timeout,
            shutdown_deadline: Cell::new(None),
            queued_work: self.queued_work,
            after_drain: RefCell::new(Vec::new()),
            signals: super::signals::SignalTable::default(),
            locals: Locals::default(),
            precise_timer,
            io: super::io_registry::IoRegistry::default(),
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
