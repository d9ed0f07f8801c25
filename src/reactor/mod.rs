//! The reactor: one loop thread, its timers, local tasks and the cross-thread
//! inbox.
//!
//! # Turn order
//!
//! Each turn of the loop does, in this order:
//!
//! 1. the calls queued from other threads ([`Remote::call_from_thread`]) that
//!    were present when the turn began, in FIFO order; calls queued meanwhile
//!    run next turn, and the loop does not sleep while any are queued;
//! 2. the timers that are due (equal deadlines in scheduling order); timers
//!    scheduled during this pass run next turn;
//! 3. I/O: the loop polls, blocking only when nothing is ready, up to the next
//!    timer deadline;
//! 4. the local tasks that were ready when this step began.
//!
//! # Threading
//!
//! [`Reactor`] and [`Handle`] are `!Send`: they live on the loop thread. The
//! [`Remote`] is `Send + Sync + Clone` and is the only way in from elsewhere.
//! Code running on the loop reaches its reactor with [`current`].
//!
//! # Panics in callbacks
//!
//! A panic in any callback, timer or local task is caught and logged with
//! `tracing` (with where the callback was scheduled), and the loop goes on.
//! [`PanicPolicy::Propagate`] re-raises instead, for tests.

mod inbox;
// netcore hook (C2): the I/O registry.
mod io_registry;
mod tasks;

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, Location, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use mio::{Events, Poll as MioPoll, Token};

use crate::deferred::Deferred;
use crate::error::{Cancelled, LoopStopped, RunError, ThreadError, panic_message};
use crate::loom::Mutex;
use crate::loom::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use crate::time::{Clock, DelayedCall, SystemClock, Timers};

pub(crate) use inbox::{Deliver, Inbox, Wake};
// netcore hook (C2): used by `net`.
pub(crate) use io_registry::{IoHandler, Ready, Registration, io_epoch};
use tasks::{LocalFuture, Tasks};

const WAKER_TOKEN: Token = Token(0);
const SIGNAL_TOKEN: Token = Token(1);
/// The longest single poll: a timer years away must not overflow anything.
const MAX_POLL: Duration = Duration::from_secs(3600);

const STATE_IDLE: u8 = 0;
const STATE_RUNNING: u8 = 1;
const STATE_STOPPING: u8 = 2;
const STATE_STOPPED: u8 = 3;

struct MioWaker(mio::Waker);

impl Wake for MioWaker {
    fn wake(&self) {
        if let Err(e) = self.0.wake() {
            tracing::error!(error = %e, "weft: failed to wake the reactor loop");
        }
    }
}

/// State shared with other threads.
pub(crate) struct Shared {
    inbox: Inbox<MioWaker>,
    /// Ids of local tasks woken since the last task pass.
    ready: Mutex<Vec<u64>>,
    stop_requested: AtomicBool,
    state: AtomicU8,
    loop_thread: ThreadId,
    stats: SharedStats,
}

#[derive(Default)]
struct SharedStats {
    turns: AtomicU64,
    calls_run: AtomicU64,
    timers_fired: AtomicU64,
    tasks_polled: AtomicU64,
    panics: AtomicU64,
    /// Loop-local gauges, published at the end of each turn.
    timers_live: AtomicU64,
    timer_heap_entries: AtomicU64,
    tasks_alive: AtomicU64,
}

impl Shared {
    fn request_stop(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        self.inbox.notify();
    }
}

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

/// What shutdown does with thread-pool work that was queued but not started.
///
/// # Examples
///
/// ```
/// use weft::reactor::QueuedWork;
///
/// let reactor = weft::Reactor::builder()
///     .queued_work_at_shutdown(QueuedWork::Cancel)
///     .build()
///     .unwrap();
/// # drop(reactor);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueuedWork {
    /// Run it, and deliver its results before the loop exits (default).
    #[default]
    Run,
    /// Drop it unrun; its `Deferred`s get `ThreadError::Cancelled`.
    Cancel,
}

/// A phase of a system event, as in Twisted's `addSystemEventTrigger`.
///
/// # Examples
///
/// ```
/// use weft::reactor::{Phase, SystemEvent};
///
/// let reactor = weft::Reactor::new().unwrap();
/// reactor.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, || println!("bye"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Runs first; a trigger may return a future the event waits for.
    Before,
    /// Runs once every `Before` wait has finished.
    During,
    /// Runs last.
    After,
}

/// A system event that triggers can be attached to.
///
/// # Examples
///
/// ```
/// use weft::reactor::SystemEvent;
/// assert_eq!("shutdown".parse::<SystemEvent>(), Ok(SystemEvent::Shutdown));
/// assert!("reboot".parse::<SystemEvent>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemEvent {
    /// The loop starts running ([`call_when_running`](Handle::call_when_running)
    /// callbacks are `During` startup triggers).
    Startup,
    /// The loop stops ([`stop`](Handle::stop)).
    Shutdown,
}

/// A name that is not a known system event (`"startup"` or `"shutdown"`).
///
/// # Examples
///
/// ```
/// assert_eq!("nope".parse::<weft::reactor::SystemEvent>().unwrap_err().to_string(), "unknown system event");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownEvent;

impl fmt::Display for UnknownEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown system event")
    }
}

impl std::error::Error for UnknownEvent {}

impl std::str::FromStr for SystemEvent {
    type Err = UnknownEvent;

    fn from_str(s: &str) -> Result<Self, UnknownEvent> {
        match s {
            "startup" => Ok(SystemEvent::Startup),
            "shutdown" => Ok(SystemEvent::Shutdown),
            _ => Err(UnknownEvent),
        }
    }
}

/// Identifies a system event trigger, for
/// [`remove_system_event_trigger`](Handle::remove_system_event_trigger).
///
/// # Examples
///
/// ```
/// use weft::reactor::{Phase, SystemEvent};
/// let reactor = weft::Reactor::new().unwrap();
/// let id = reactor.add_system_event_trigger(Phase::During, SystemEvent::Shutdown, || ());
/// assert!(reactor.remove_system_event_trigger(id));
/// assert!(!reactor.remove_system_event_trigger(id));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TriggerId(u64);

/// What a system event trigger returns: nothing, or something the event
/// waits for before its `During` phase (only `Before` triggers are waited for).
///
/// Implemented for `()`, [`Deferred`], `Pin<Box<F>>` where `F` is a future,
/// and `Option` of any of these.
///
/// # Examples
///
/// ```
/// use weft::reactor::{Phase, SystemEvent};
///
/// let reactor = weft::Reactor::new().unwrap();
/// reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, || {
///     Box::pin(async { /* flush something */ })
/// });
/// reactor.stop();
/// reactor.run().unwrap();
/// ```
pub trait TriggerOutcome: 'static {
    /// The future to wait for, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::reactor::TriggerOutcome;
    /// assert!(().into_wait().is_none());
    /// ```
    fn into_wait(self) -> Option<LocalFuture>;
}

impl TriggerOutcome for () {
    fn into_wait(self) -> Option<LocalFuture> {
        None
    }
}

impl<T: 'static, E: 'static> TriggerOutcome for Deferred<T, E> {
    fn into_wait(self) -> Option<LocalFuture> {
        Some(Box::pin(async move {
            let _ = self.await;
        }))
    }
}

impl<T: TriggerOutcome> TriggerOutcome for Option<T> {
    fn into_wait(self) -> Option<LocalFuture> {
        self.and_then(TriggerOutcome::into_wait)
    }
}

impl<F: Future + 'static> TriggerOutcome for Pin<Box<F>> {
    fn into_wait(self) -> Option<LocalFuture> {
        Some(Box::pin(async move {
            self.await;
        }))
    }
}

type TriggerFn = Box<dyn FnOnce() -> Option<LocalFuture>>;

struct Trigger {
    id: TriggerId,
    event: SystemEvent,
    phase: Phase,
    f: TriggerFn,
    location: &'static Location<'static>,
}

/// A snapshot of a reactor's counters.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// reactor.remote().call_from_thread(|| ()).unwrap();
/// reactor.iterate(Some(std::time::Duration::ZERO));
/// let stats = reactor.statistics();
/// assert_eq!(stats.calls_from_thread, 1);
/// assert_eq!(stats.calls_run, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ReactorStatistics {
    /// Closures accepted by `call_from_thread` (and other cross-thread paths).
    pub calls_from_thread: u64,
    /// Of those, how many have run on the loop.
    pub calls_run: u64,
    /// Writes to the loop's waker (eventfd) made to wake it.
    pub wake_syscalls: u64,
    /// Loop turns completed.
    pub turns: u64,
    /// Timed calls run.
    pub timers_fired: u64,
    /// Local task polls.
    pub tasks_polled: u64,
    /// Panics caught in callbacks, timers and tasks.
    pub panics: u64,
    /// Timed calls scheduled and not yet run or cancelled.
    pub timers_live: u64,
    /// Entries in the timer heap, including cancelled ones awaiting
    /// compaction (stays within a constant factor of `timers_live`).
    pub timer_heap_entries: u64,
    /// Local tasks alive.
    pub tasks_alive: u64,
}

fn statistics_of(shared: &Shared) -> ReactorStatistics {
    let s = &shared.stats;
    ReactorStatistics {
        calls_from_thread: shared.inbox.pushes(),
        calls_run: s.calls_run.load(Ordering::Relaxed),
        wake_syscalls: shared.inbox.wakes(),
        turns: s.turns.load(Ordering::Relaxed),
        timers_fired: s.timers_fired.load(Ordering::Relaxed),
        tasks_polled: s.tasks_polled.load(Ordering::Relaxed),
        panics: s.panics.load(Ordering::Relaxed),
        timers_live: s.timers_live.load(Ordering::Relaxed),
        timer_heap_entries: s.timer_heap_entries.load(Ordering::Relaxed),
        tasks_alive: s.tasks_alive.load(Ordering::Relaxed),
    }
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
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("panic_policy", &self.panic_policy)
            .field("handle_signals", &self.handle_signals)
            .field("shutdown_timeout", &self.shutdown_timeout)
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
    /// work (default 30 s); what is left is logged and the loop exits.
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
            ready: Mutex::new(Vec::new()),
            stop_requested: AtomicBool::new(false),
            state: AtomicU8::new(STATE_IDLE),
            loop_thread: tasks::this_thread(),
            stats: SharedStats::default(),
        });
        let signals = if self.handle_signals {
            let mut signals = signal_hook_mio::v1_0::Signals::new([
                signal_hook::consts::SIGINT,
                signal_hook::consts::SIGTERM,
            ])?;
            poll.registry()
                .register(&mut signals, SIGNAL_TOKEN, mio::Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        {
            let shared = shared.clone();
            self.clock
                .register_waker(Arc::new(move || shared.inbox.notify()));
        }
        let inner = Rc::new(Inner {
            shared,
            poll: RefCell::new(poll),
            events: RefCell::new(Events::with_capacity(self.events_capacity)),
            timers: Timers::new(self.clock),
            tasks: Tasks::default(),
            batch: RefCell::new(VecDeque::new()),
            triggers: RefCell::new(Vec::new()),
            next_trigger: Cell::new(0),
            started: Cell::new(false),
            running: Cell::new(false),
            in_turn: Cell::new(false),
            busy: Cell::new(false),
            io_sources: Cell::new(usize::from(signals.is_some())),
            panic_policy: self.panic_policy,
            shutdown_timeout: self.shutdown_timeout,
            queued_work: self.queued_work,
            signals: RefCell::new(signals),
            extensions: RefCell::new(Vec::new()),
            // netcore hook (C2).
            io: io_registry::IoRegistry::default(),
        });
        CURRENT.with(|c| c.borrow_mut().push(Rc::downgrade(&inner)));
        Ok(Reactor {
            handle: Handle { inner },
        })
    }
}

pub(crate) struct Inner {
    shared: Arc<Shared>,
    poll: RefCell<MioPoll>,
    events: RefCell<Events>,
    timers: Rc<Timers>,
    tasks: Tasks,
    batch: RefCell<VecDeque<inbox::Job>>,
    triggers: RefCell<Vec<Trigger>>,
    next_trigger: Cell<u64>,
    started: Cell<bool>,
    running: Cell<bool>,
    in_turn: Cell<bool>,
    /// The last task pass polled something (so the next poll won't block).
    busy: Cell<bool>,
    /// Registered I/O sources other than the waker (signals, sockets).
    io_sources: Cell<usize>,
    panic_policy: PanicPolicy,
    shutdown_timeout: Duration,
    queued_work: QueuedWork,
    signals: RefCell<Option<signal_hook_mio::v1_0::Signals>>,
    /// Loop-local state of the layers above (a handful: scanned, not hashed).
    extensions: RefCell<Vec<(TypeId, Rc<dyn Any>)>>,
    /// netcore hook (C2): registered sockets and their handlers; each one
    /// is also counted in `io_sources`.
    io: io_registry::IoRegistry,
}

thread_local! {
    /// Reactors of this thread, innermost (running, or newest) last.
    static CURRENT: RefCell<Vec<Weak<Inner>>> = const { RefCell::new(Vec::new()) };
}

/// The reactor whose loop this thread runs, for code running on the loop.
///
/// Returns `None` on threads that have no reactor (pool threads, for one).
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// reactor.call_soon(|| {
///     let here = weft::reactor::current().expect("on the loop");
///     here.stop();
/// });
/// reactor.run().unwrap();
/// assert!(std::thread::spawn(|| weft::reactor::current().is_none()).join().unwrap());
/// ```
pub fn current() -> Option<Handle> {
    CURRENT.with(|c| {
        c.borrow()
            .iter()
            .rev()
            .find_map(Weak::upgrade)
            .map(|inner| Handle { inner })
    })
}

/// Whether this thread is a reactor's loop thread.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// assert!(weft::reactor::is_in_io_thread());
/// assert!(!std::thread::spawn(weft::reactor::is_in_io_thread).join().unwrap());
/// # drop(reactor);
/// ```
pub fn is_in_io_thread() -> bool {
    CURRENT.with(|c| c.borrow().iter().any(|w| w.strong_count() > 0))
}

/// Makes `inner` the current reactor for the duration of a run or turn.
struct Enter;

impl Enter {
    fn new(inner: &Rc<Inner>) -> Enter {
        CURRENT.with(|c| c.borrow_mut().push(Rc::downgrade(inner)));
        Enter
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        CURRENT.with(|c| {
            c.borrow_mut().pop();
        });
    }
}

/// The reactor: owns the loop. Create it on the thread that will run it.
///
/// It dereferences to its [`Handle`], so every loop-side operation
/// (`call_later`, `spawn_local`, ...) is available on it directly.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let reactor = weft::Reactor::new().unwrap();
/// reactor.call_later(Duration::from_millis(5), || {
///     weft::reactor::current().unwrap().stop();
/// });
/// reactor.run().unwrap();
/// ```
///
/// # Dropping
///
/// Dropping a reactor that has started but not shut down runs its shutdown
/// sequence first. Calls queued from other threads to a reactor that never
/// ran are discarded (and logged); afterwards `call_from_thread` fails with
/// [`LoopStopped`].
pub struct Reactor {
    handle: Handle,
}

/// The loop-side handle to a reactor: cheap to clone, `!Send`.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let handle = reactor.handle();
/// handle.call_soon(|| println!("hi"));
/// reactor.iterate(Some(std::time::Duration::ZERO));
/// ```
///
/// It cannot leave the loop thread; use a [`Remote`] for that:
///
/// ```compile_fail
/// let reactor = weft::Reactor::new().unwrap();
/// let handle = reactor.handle();
/// std::thread::spawn(move || handle.stop()); // error: `Rc` cannot be sent
/// ```
#[derive(Clone)]
pub struct Handle {
    inner: Rc<Inner>,
}

/// The thread-safe handle to a reactor: `Send + Sync + Clone`.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let remote = reactor.remote();
/// std::thread::spawn(move || {
///     remote.call_from_thread(|| println!("on the loop")).unwrap();
///     remote.stop();
/// });
/// reactor.run().unwrap();
/// ```
#[derive(Clone)]
pub struct Remote {
    shared: Arc<Shared>,
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor").finish_non_exhaustive()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote").finish_non_exhaustive()
    }
}

impl Deref for Reactor {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Reactor {
    /// Creates a reactor with default settings on this thread.
    ///
    /// # Errors
    ///
    /// The OS refused the poller or the waker.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// # drop(reactor);
    /// ```
    pub fn new() -> io::Result<Reactor> {
        Builder::default().build()
    }

    /// A builder for non-default settings.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::builder().handle_signals(false).build().unwrap();
    /// # drop(reactor);
    /// ```
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A loop-side handle.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let _h: weft::reactor::Handle = reactor.handle();
    /// ```
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Runs the loop until [`stop`](Handle::stop), then the shutdown sequence
    /// (`Before` triggers, waited for; `During`; `After`), then returns.
    ///
    /// # Errors
    ///
    /// [`RunError::AlreadyRunning`] if called from inside the loop,
    /// [`RunError::Stopped`] if the reactor has already shut down.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.call_when_running(|| weft::reactor::current().unwrap().stop());
    /// reactor.run().unwrap();
    /// ```
    pub fn run(&self) -> Result<(), RunError> {
        let inner = &self.handle.inner;
        inner.check_can_run()?;
        let _enter = Enter::new(inner);
        inner.running.set(true);
        inner.start();
        while !inner.shared.stop_requested.load(Ordering::SeqCst) {
            inner.turn(None);
        }
        inner.shutdown();
        inner.running.set(false);
        Ok(())
    }

    /// Runs the loop until `future` completes and returns its output
    /// (asyncio's `run_until_complete`). The reactor starts (startup triggers
    /// fire) if it had not; it does not shut down, so it can be run again.
    ///
    /// # Errors
    ///
    /// [`RunError::StoppedBeforeCompletion`] if the loop was stopped first (its
    /// shutdown sequence then runs), [`RunError::Panicked`] if the future
    /// panicked, and the errors of [`run`](Reactor::run).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let v = reactor.run_until_complete(async { 6 * 7 }).unwrap();
    /// assert_eq!(v, 42);
    /// ```
    pub fn run_until_complete<F>(&self, future: F) -> Result<F::Output, RunError>
    where
        F: Future + 'static,
    {
        let inner = &self.handle.inner;
        inner.check_can_run()?;
        let _enter = Enter::new(inner);
        let out = Rc::new(RefCell::new(None));
        let slot = out.clone();
        self.handle
            .spawn_local(future)
            .add_both(move |r| *slot.borrow_mut() = Some(r));
        inner.running.set(true);
        inner.start();
        let result = loop {
            if let Some(r) = out.borrow_mut().take() {
                break r;
            }
            if inner.shared.stop_requested.load(Ordering::SeqCst) {
                inner.shutdown();
                break Err(ThreadError::Stopped);
            }
            inner.turn(None);
        };
        inner.running.set(false);
        result.map_err(|e| match e {
            ThreadError::Panicked { message } => RunError::Panicked { message },
            _ => RunError::StoppedBeforeCompletion,
        })
    }

    /// Runs exactly one turn of the loop (see the [module docs](crate::reactor)
    /// for the turn order), blocking at most `timeout` for I/O (`None`: until
    /// something happens). For tests and embedding; it does not fire startup
    /// triggers or act on `stop`.
    ///
    /// A call from inside the loop does nothing (and is logged).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// std::thread::spawn(move || remote.call_from_thread(|| ()).unwrap()).join().unwrap();
    /// reactor.iterate(Some(Duration::ZERO));
    /// assert_eq!(reactor.statistics().calls_run, 1);
    /// ```
    pub fn iterate(&self, timeout: Option<Duration>) {
        let inner = &self.handle.inner;
        if inner.in_turn.get() {
            tracing::error!("weft: Reactor::iterate called from inside the loop; ignored");
            return;
        }
        let _enter = Enter::new(inner);
        inner.turn(timeout);
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        let inner = &self.handle.inner;
        if inner.shared.state.load(Ordering::SeqCst) != STATE_STOPPED {
            let _enter = Enter::new(inner);
            inner.shutdown();
        }
        // Break `Rc` cycles (tasks and timers may hold handles).
        inner.tasks.abort_all();
        inner.triggers.borrow_mut().clear();
        inner.extensions.borrow_mut().clear();
        inner.timers.clear();
        let ptr = Rc::as_ptr(inner);
        CURRENT.with(|c| {
            c.borrow_mut()
                .retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), ptr))
        });
    }
}

impl Inner {
    fn check_can_run(&self) -> Result<(), RunError> {
        if self.running.get() || self.in_turn.get() {
            return Err(RunError::AlreadyRunning);
        }
        if self.shared.state.load(Ordering::SeqCst) >= STATE_STOPPING {
            return Err(RunError::Stopped);
        }
        Ok(())
    }

    /// Fires the startup event once.
    fn start(&self) {
        if self.started.replace(true) {
            return;
        }
        self.shared.state.store(STATE_RUNNING, Ordering::SeqCst);
        self.fire_event(SystemEvent::Startup);
    }

    /// Runs a system event's phases; `Before` waits keep the loop turning
    /// until they finish or the shutdown deadline passes.
    fn fire_event(&self, event: SystemEvent) {
        let pending = Rc::new(Cell::new(0usize));
        for trigger in self.take_triggers(event, Phase::Before) {
            if let Some(wait) = self.run_trigger(trigger) {
                pending.set(pending.get() + 1);
                let p = pending.clone();
                let fut: LocalFuture = Box::pin(async move {
                    wait.await;
                    p.set(p.get() - 1);
                });
                self.tasks
                    .spawn(&self.shared, fut, Box::new(|_| ()), Location::caller());
            }
        }
        if pending.get() > 0 {
            let deadline = Instant::now() + self.shutdown_timeout;
            while pending.get() > 0 {
                let now = Instant::now();
                if now >= deadline {
                    tracing::warn!(
                        event = ?event,
                        waiting = pending.get(),
                        "weft: gave up waiting for Before triggers after the shutdown timeout"
                    );
                    break;
                }
                self.turn(Some(deadline - now));
            }
        }
        for phase in [Phase::During, Phase::After] {
            for trigger in self.take_triggers(event, phase) {
                if let Some(wait) = self.run_trigger(trigger) {
                    // Only Before waits are awaited; run the rest as tasks.
                    self.tasks
                        .spawn(&self.shared, wait, Box::new(|_| ()), Location::caller());
                }
            }
        }
    }

    fn take_triggers(&self, event: SystemEvent, phase: Phase) -> Vec<Trigger> {
        let mut triggers = self.triggers.borrow_mut();
        let (take, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut *triggers)
            .into_iter()
            .partition(|t| t.event == event && t.phase == phase);
        *triggers = keep;
        take
    }

    fn run_trigger(&self, trigger: Trigger) -> Option<LocalFuture> {
        let mut out = None;
        let f = trigger.f;
        self.guard("system event trigger", trigger.location, || out = f());
        out
    }

    /// The shutdown sequence; leaves the reactor stopped for good.
    fn shutdown(&self) {
        if self.shared.state.swap(STATE_STOPPING, Ordering::SeqCst) >= STATE_STOPPING {
            return;
        }
        self.fire_event(SystemEvent::Shutdown);
        let left = self.shared.inbox.close();
        if self.started.get() {
            for job in left {
                self.run_job(job);
            }
        } else if !left.is_empty() {
            tracing::warn!(
                discarded = left.len(),
                "weft: reactor dropped without running; queued calls discarded"
            );
        }
        let tasks = self.tasks.abort_all();
        if tasks > 0 {
            tracing::debug!(tasks, "weft: unfinished local tasks stopped at shutdown");
        }
        self.shared.state.store(STATE_STOPPED, Ordering::SeqCst);
    }

    fn run_job(&self, job: inbox::Job) {
        self.shared.stats.calls_run.fetch_add(1, Ordering::Relaxed);
        match job.message {
            inbox::Message::Call(f) => self.guard("call from thread", job.location, f),
            inbox::Message::Deliver(d) => {
                self.guard("thread job completion", job.location, || d.deliver())
            }
        }
    }

    /// Runs `f`, catching a panic as the panic policy says.
    fn guard(&self, kind: &str, location: &'static Location<'static>, f: impl FnOnce()) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
            self.on_panic(kind, location, payload);
        }
    }

    fn on_panic(
        &self,
        kind: &str,
        location: &'static Location<'static>,
        payload: Box<dyn Any + Send>,
    ) -> String {
        self.shared.stats.panics.fetch_add(1, Ordering::Relaxed);
        let message = panic_message(&*payload);
        tracing::error!(kind, %location, panic = %message, "weft: panic in loop callback; the loop goes on");
        if self.panic_policy == PanicPolicy::Propagate {
            resume_unwind(payload);
        }
        message
    }

    fn turn(&self, max_wait: Option<Duration>) {
        self.in_turn.set(true);
        let _reset = ResetOnDrop(&self.in_turn);
        self.shared.stats.turns.fetch_add(1, Ordering::Relaxed);

        // 1. Calls from other threads: the snapshot present now.
        let mut batch = std::mem::take(&mut *self.batch.borrow_mut());
        self.shared.inbox.drain_into(&mut batch);
        let mut worked = !batch.is_empty();
        while let Some(job) = batch.pop_front() {
            self.run_job(job);
        }
        *self.batch.borrow_mut() = batch;

        // 2. Due timers.
        let fired = self
            .timers
            .run_due(|f, location| self.guard("timed call", location, f));
        self.shared
            .stats
            .timers_fired
            .fetch_add(fired as u64, Ordering::Relaxed);

        // 3. I/O. A turn that did work is followed by one that does not
        // block, so a producer mid-burst is drained without a wake syscall;
        // the loop sleeps only after a turn that found nothing to do.
        worked |= fired > 0 || self.busy.replace(false);
        let timeout = if worked {
            Some(Duration::ZERO)
        } else {
            self.poll_timeout(max_wait)
        };
        self.poll_io(timeout);

        // 4. Local tasks ready now.
        let polled = self.tasks.run_ready(&self.shared, |poll, location| {
            match catch_unwind(AssertUnwindSafe(poll)) {
                Ok(p) => Ok(p),
                Err(payload) => Err(self.on_panic("local task", location, payload)),
            }
        });
        self.shared
            .stats
            .tasks_polled
            .fetch_add(polled as u64, Ordering::Relaxed);
        self.busy.set(polled > 0);
        self.publish_gauges();
    }

    fn publish_gauges(&self) {
        let s = &self.shared.stats;
        s.timers_live
            .store(self.timers.live_count() as u64, Ordering::Relaxed);
        s.timer_heap_entries
            .store(self.timers.heap_len() as u64, Ordering::Relaxed);
        s.tasks_alive
            .store(self.tasks.len() as u64, Ordering::Relaxed);
    }

    fn poll_timeout(&self, max_wait: Option<Duration>) -> Option<Duration> {
        // A stop requested on the loop thread sets no wake (the loop is
        // awake), so the main loop must not block before it sees it; during
        // shutdown itself the request is already being acted on.
        let stop_pending = self.shared.stop_requested.load(Ordering::SeqCst)
            && self.shared.state.load(Ordering::SeqCst) < STATE_STOPPING;
        let ready_now =
            stop_pending || self.timers.has_pending() || !self.shared.ready.lock().is_empty();
        if ready_now {
            return Some(Duration::ZERO);
        }
        let mut timeout = max_wait.map(|t| t.min(MAX_POLL));
        if let Some(deadline) = self.timers.next_deadline() {
            if let Some(wait) = self.timers.clock().sleep_until(deadline) {
                timeout = Some(timeout.map_or(wait, |t| t.min(wait)));
            }
        }
        let timeout = Some(timeout.unwrap_or(MAX_POLL).min(MAX_POLL));
        if timeout != Some(Duration::ZERO)
            && !self
                .shared
                .inbox
                .prepare_to_sleep(|| !self.shared.ready.lock().is_empty())
        {
            return Some(Duration::ZERO);
        }
        timeout
    }

    fn poll_io(&self, timeout: Option<Duration>) {
        // With no I/O source registered, a non-blocking poll could only
        // report the waker, which the next turn's drain covers: skip the
        // syscall.
        if timeout == Some(Duration::ZERO) && self.io_sources.get() == 0 {
            self.shared.inbox.awake();
            return;
        }
        let mut events = self.events.borrow_mut();
        let result = self.poll.borrow_mut().poll(&mut events, timeout);
        self.shared.inbox.awake();
        if let Err(e) = result {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "weft: poll failed");
            }
            return;
        }
        for event in events.iter() {
            match event.token() {
                WAKER_TOKEN => {}
                SIGNAL_TOKEN => self.on_signal(),
                // netcore hook (C2): collected now, dispatched below.
                _ => self.io.push_event(event),
            }
        }
        // netcore hook (C2): handlers run with no borrow held.
        drop(events);
        self.dispatch_io();
    }

    fn on_signal(&self) {
        let mut signals = self.signals.borrow_mut();
        if let Some(signals) = signals.as_mut() {
            for signal in signals.pending() {
                tracing::info!(signal, "weft: signal received; stopping the reactor");
                self.shared.request_stop();
            }
        }
    }
}

struct ResetOnDrop<'a>(&'a Cell<bool>);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl Handle {
    /// Runs `f` on the loop after `delay`, returning a handle to cancel or
    /// move it. Equal deadlines run in scheduling order.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.call_later(Duration::from_millis(1), || weft::reactor::current().unwrap().stop());
    /// reactor.run().unwrap();
    /// ```
    #[track_caller]
    pub fn call_later(&self, delay: Duration, f: impl FnOnce() + 'static) -> DelayedCall {
        self.inner
            .timers
            .schedule(delay, Box::new(f), Location::caller())
    }

    /// Runs `f` on the loop in the next timer pass (`call_later` with no delay).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.call_soon(|| weft::reactor::current().unwrap().stop());
    /// reactor.run().unwrap();
    /// ```
    #[track_caller]
    pub fn call_soon(&self, f: impl FnOnce() + 'static) -> DelayedCall {
        self.call_later(Duration::ZERO, f)
    }

    /// A [`Deferred`] that fires after `delay` (Twisted's `deferLater`,
    /// asyncio's `sleep`); cancelling it cancels the timer.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let out = reactor.run_until_complete(async {
    ///     let h = weft::reactor::current().unwrap();
    ///     h.sleep(Duration::from_millis(1)).await.unwrap();
    ///     "woke"
    /// });
    /// assert_eq!(out.unwrap(), "woke");
    /// ```
    #[track_caller]
    pub fn sleep(&self, delay: Duration) -> Deferred<(), Cancelled> {
        let d = Deferred::new();
        let r = d.resolver();
        let call = self.call_later(delay, move || {
            let _ = r.callback(());
        });
        d.resolver().set_canceller(move || {
            let _ = call.cancel();
        });
        d
    }

    /// Every scheduled, uncancelled timed call, earliest first (Twisted's
    /// `getDelayedCalls`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let reactor = weft::Reactor::new().unwrap();
    /// let a = reactor.call_later(Duration::from_secs(1), || ());
    /// let b = reactor.call_later(Duration::from_secs(2), || ());
    /// b.cancel().unwrap();
    /// let calls = reactor.delayed_calls();
    /// assert_eq!(calls.len(), 1);
    /// assert!(calls[0].same_call(&a));
    /// ```
    pub fn delayed_calls(&self) -> Vec<DelayedCall> {
        self.inner.timers.delayed_calls()
    }

    /// The reactor clock's time (Twisted's `seconds()`).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::{Reactor, testing::ManualClock};
    /// let reactor = Reactor::builder().clock(ManualClock::new()).build().unwrap();
    /// assert_eq!(reactor.seconds(), std::time::Duration::ZERO);
    /// ```
    pub fn seconds(&self) -> Duration {
        self.inner.timers.now()
    }

    /// Spawns a (possibly `!Send`) future on the loop. The returned
    /// [`Deferred`] gets its output, `ThreadError::Panicked` if it panicked,
    /// or `ThreadError::Stopped` if the loop shut down first (its future is
    /// dropped then); cancelling that `Deferred` drops the future.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::rc::Rc;
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let local = Rc::new(5); // !Send is fine
    /// let d = reactor.spawn_local(async move { *local + 1 });
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(6));
    /// ```
    #[track_caller]
    pub fn spawn_local<F>(&self, future: F) -> Deferred<F::Output>
    where
        F: Future + 'static,
    {
        let location = Location::caller();
        let d = Deferred::new();
        let r = d.resolver();
        let on_abort = {
            let r = r.clone();
            Box::new(move |error| {
                let _ = r.errback(error);
            })
        };
        let done = r.clone();
        let fut: LocalFuture = Box::pin(async move {
            let v = future.await;
            let _ = done.callback(v);
        });
        let id = self
            .inner
            .tasks
            .spawn(&self.inner.shared, fut, on_abort, location);
        let weak = Rc::downgrade(&self.inner);
        r.set_canceller(move || {
            if let Some(inner) = weak.upgrade() {
                inner.tasks.remove(id);
            }
        });
        d
    }

    /// Runs `f` when the loop starts running (at once if it already has):
    /// a `During` startup trigger.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.call_when_running(|| weft::reactor::current().unwrap().stop());
    /// reactor.run().unwrap();
    /// ```
    #[track_caller]
    pub fn call_when_running(&self, f: impl FnOnce() + 'static) {
        if self.inner.started.get() {
            self.inner.guard("call_when_running", Location::caller(), f);
        } else {
            self.add_system_event_trigger(Phase::During, SystemEvent::Startup, f);
        }
    }

    /// Adds a trigger for `phase` of `event`. A `Before` trigger may return a
    /// future or [`Deferred`] that the event waits for (bounded by the
    /// shutdown timeout) before its `During` phase.
    ///
    /// `event` may be a [`SystemEvent`] or its name (`"startup"`,
    /// `"shutdown"`) parsed with `str::parse`.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::reactor::{Phase, SystemEvent};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let event: SystemEvent = "shutdown".parse().unwrap();
    /// reactor.add_system_event_trigger(Phase::During, event, || println!("stopping"));
    /// reactor.stop();
    /// reactor.run().unwrap();
    /// ```
    #[track_caller]
    pub fn add_system_event_trigger<R: TriggerOutcome>(
        &self,
        phase: Phase,
        event: SystemEvent,
        f: impl FnOnce() -> R + 'static,
    ) -> TriggerId {
        let id = TriggerId(self.inner.next_trigger.get());
        self.inner.next_trigger.set(id.0 + 1);
        self.inner.triggers.borrow_mut().push(Trigger {
            id,
            event,
            phase,
            f: Box::new(move || f().into_wait()),
            location: Location::caller(),
        });
        id
    }

    /// Removes a trigger that has not run; returns whether it was there.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::reactor::{Phase, SystemEvent};
    /// let reactor = weft::Reactor::new().unwrap();
    /// let id = reactor.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, || ());
    /// assert!(reactor.remove_system_event_trigger(id));
    /// ```
    pub fn remove_system_event_trigger(&self, id: TriggerId) -> bool {
        let mut triggers = self.inner.triggers.borrow_mut();
        let before = triggers.len();
        triggers.retain(|t| t.id != id);
        triggers.len() != before
    }

    /// Asks the loop to stop after the current turn; the shutdown sequence
    /// then runs. Calling it again is harmless.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.stop();
    /// reactor.stop();
    /// reactor.run().unwrap();
    /// ```
    pub fn stop(&self) {
        self.inner.shared.request_stop();
    }

    /// The thread-safe handle.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// std::thread::spawn(move || remote.stop()).join().unwrap();
    /// reactor.run().unwrap();
    /// ```
    pub fn remote(&self) -> Remote {
        Remote {
            shared: self.inner.shared.clone(),
        }
    }

    /// Whether the loop is inside `run` or `run_until_complete`.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert!(!reactor.is_running());
    /// reactor.call_soon(|| {
    ///     let h = weft::reactor::current().unwrap();
    ///     assert!(h.is_running());
    ///     h.stop();
    /// });
    /// reactor.run().unwrap();
    /// ```
    pub fn is_running(&self) -> bool {
        self.inner.running.get()
    }

    /// Whether the reactor has started running (startup triggers fired).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert!(!reactor.has_started());
    /// ```
    pub fn has_started(&self) -> bool {
        self.inner.started.get()
    }

    /// Whether the shutdown sequence has begun or finished.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.stop();
    /// reactor.run().unwrap();
    /// assert!(reactor.is_shut_down());
    /// ```
    pub fn is_shut_down(&self) -> bool {
        self.inner.shared.state.load(Ordering::SeqCst) >= STATE_STOPPING
    }

    /// A snapshot of the reactor's counters.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert_eq!(reactor.statistics().turns, 0);
    /// ```
    pub fn statistics(&self) -> ReactorStatistics {
        self.inner.publish_gauges();
        statistics_of(&self.inner.shared)
    }

    /// Loop-local state owned by a layer above the reactor (the bridge),
    /// created on first use. Dropped when the reactor is.
    pub(crate) fn extension<T: 'static>(&self, init: impl FnOnce() -> T) -> Rc<T> {
        let key = TypeId::of::<T>();
        let found = self
            .inner
            .extensions
            .borrow()
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, ext)| ext.clone().downcast::<T>().ok());
        if let Some(ext) = found {
            return ext;
        }
        let ext = Rc::new(init());
        self.inner
            .extensions
            .borrow_mut()
            .push((key, ext.clone() as Rc<dyn Any>));
        ext
    }

    /// The shutdown deadline configured for this reactor.
    pub(crate) fn shutdown_timeout(&self) -> Duration {
        self.inner.shutdown_timeout
    }

    /// The configured policy for queued pool work at shutdown.
    pub(crate) fn queued_work_at_shutdown(&self) -> QueuedWork {
        self.inner.queued_work
    }
}

impl Remote {
    /// Queues `f` to run on the loop thread: the one thread-safe way onto the
    /// loop. Calls run in the order they were queued (FIFO across all
    /// threads, by enqueue order). Calls queued before the loop runs are kept
    /// and run once it does.
    ///
    /// It costs one short lock and, only when the loop is asleep and no wake
    /// is already pending, one write to the loop's eventfd.
    ///
    /// # Errors
    ///
    /// [`LoopStopped`] with `f` handed back once the loop has ended.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// let r2 = remote.clone();
    /// std::thread::spawn(move || {
    ///     r2.call_from_thread(|| println!("hello from the loop")).unwrap();
    ///     r2.stop();
    /// });
    /// reactor.run().unwrap();
    /// assert!(remote.call_from_thread(|| ()).is_err());
    /// ```
    #[track_caller]
    pub fn call_from_thread<F>(&self, f: F) -> Result<(), LoopStopped<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        self.shared
            .inbox
            .push(f, Location::caller())
            .map_err(LoopStopped)
    }

    /// Queues an `Arc`'d message for the loop (no allocation); gives it back
    /// once the loop has ended.
    #[track_caller]
    pub(crate) fn deliver(&self, message: Arc<dyn Deliver>) -> Result<(), Arc<dyn Deliver>> {
        self.shared.inbox.push_deliver(message, Location::caller())
    }

    /// Asks the loop to stop; harmless if repeated or if it already stopped.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// remote.stop();
    /// reactor.run().unwrap();
    /// remote.stop();
    /// ```
    pub fn stop(&self) {
        self.shared.request_stop();
    }

    /// Whether the calling thread is this reactor's loop thread.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// assert!(remote.is_loop_thread());
    /// assert!(!std::thread::spawn(move || remote.is_loop_thread()).join().unwrap());
    /// ```
    pub fn is_loop_thread(&self) -> bool {
        tasks::this_thread() == self.shared.loop_thread
    }

    /// Whether the loop has begun or finished shutting down.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert!(!reactor.remote().is_stopped());
    /// ```
    pub fn is_stopped(&self) -> bool {
        self.shared.state.load(Ordering::SeqCst) >= STATE_STOPPING
    }

    /// Whether the loop is running (between startup and the end of shutdown).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert!(!reactor.remote().is_running());
    /// ```
    pub fn is_running(&self) -> bool {
        self.shared.state.load(Ordering::SeqCst) == STATE_RUNNING
    }

    /// A snapshot of the reactor's counters, readable from any thread (the
    /// timer and task gauges are as of the end of the last turn).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert_eq!(reactor.remote().statistics().wake_syscalls, 0);
    /// ```
    pub fn statistics(&self) -> ReactorStatistics {
        statistics_of(&self.shared)
    }
}
