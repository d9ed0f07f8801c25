//! [`Reactor`], the loop's owner, and `Inner`, the loop-thread state every
//! [`Handle`] shares.
//!
//! `Inner` is touched only on the loop thread (`Rc`, `Cell`, `RefCell`);
//! what other threads see lives in [`Shared`]. No `RefCell` borrow is held
//! while user code runs: callbacks may re-enter the reactor freely.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Poll as MioPoll, Token};

use crate::error::{RunError, ThreadError};
use crate::loom::atomic::Ordering;
use crate::time::Timers;

use super::builder::{Builder, PanicPolicy};
use super::context::{self, Enter};
use super::handle::Handle;
use super::inbox::Job;
use super::local::Locals;
use super::remote::{Remote, STATE_STOPPED, Shared};
use super::tasks::Tasks;
use super::triggers::Triggers;

pub(super) const WAKER_TOKEN: Token = Token(0);
/// The precise timer's token: outside the range of I/O source tokens.
pub(super) const TIMER_TOKEN: Token = Token(usize::MAX);

/// Fields in the order a turn reads them, under `repr(C)`: a loop woken
/// after a long sleep finds its caches cold, and every line of `Inner` a
/// turn touches is a miss (issue 8's idle rows). The fields each turn reads
/// come first, packed into a few lines; the rest (shutdown, triggers,
/// signals, extensions) follow; what may be large sits behind a pointer.
#[repr(C)]
pub(crate) struct Inner {
    pub(super) shared: Arc<Shared>,
    pub(super) timers: Rc<Timers>,
    /// The slow-callback timer and its watchdog; `None` when off. Boxed:
    /// it is large (its site cache) and only its presence is read per
    /// turn when it is off.
    pub(super) diag: Option<Box<crate::diagnostics::LoopDiag>>,
    /// How long a turn may run before its task pass stops
    /// ([`Builder::task_pass_budget`](super::Builder::task_pass_budget)).
    pub(super) task_pass_budget: Option<Duration>,
    /// Registered I/O sources other than the waker (signals, sockets).
    pub(super) io_sources: Cell<usize>,
    pub(super) in_turn: Cell<bool>,
    /// The last task pass polled something: the next turn looks for a task
    /// it left ready before it decides whether to block (`turn.rs`).
    pub(super) busy: Cell<bool>,
    /// Inside `run` or `run_until_complete`.
    pub(super) running: Cell<bool>,
    /// Whether a turn may use a clock reading it already has where a
    /// fresh one would tell it nothing new (`turn.rs`): true with the
    /// system clock and diagnostics off. A clock that a waker moves (a
    /// `ManualClock`) needs its reading after the inbox drain that the
    /// waker's notify may have been consumed by, and the diagnostics
    /// publish each reading as the start of what runs next.
    pub(super) reuse_readings: bool,
    /// When a busy turn may skip its poll (`io_pace.rs`).
    pub(super) io_pace: super::io_pace::IoPace,
    /// Whether the loop's next idle spell spins before it sleeps (see
    /// `inbox/wake.rs`).
    pub(super) spin_gate: crate::loom::SpinGate,
    /// Wakes a poll whose timeout mio would round up to whole milliseconds.
    pub(super) precise_timer: Option<super::precise_timer::PreciseTimer>,
    pub(super) poll: RefCell<MioPoll>,
    pub(super) events: RefCell<Events>,
    /// The calls of the current turn (and any a propagated panic left).
    pub(super) batch: RefCell<VecDeque<Job>>,
    /// Run once at the end of this turn, in order (`Handle::at_turn_end`).
    pub(super) turn_end: RefCell<Vec<Rc<dyn Fn()>>>,
    pub(super) tasks: Tasks,
    // Not read by a turn.
    pub(super) started: Cell<bool>,
    pub(super) panic_policy: PanicPolicy,
    pub(super) shutdown_timeout: Duration,
    /// When the shutdown gives up waiting, on the reactor's clock; set when
    /// the shutdown begins.
    pub(super) shutdown_deadline: Cell<Option<Duration>>,
    pub(super) triggers: Triggers,
    /// Run once the final drain is done (see `Handle::after_final_drain`).
    pub(super) after_drain: RefCell<Vec<Box<dyn FnOnce()>>>,
    /// Signal handlers (`Handle::add_signal_handler`, `handle_signals`).
    pub(super) signals: super::signals::SignalTable,
    pub(super) locals: Locals,
    /// Registered sockets and their handlers; each one is also counted in
    /// `io_sources`.
    pub(super) io: super::io_registry::IoRegistry,
}

/// The reactor: owns the loop. Create it on the thread that will run it.
///
/// Its loop-side operations (`call_later`, `spawn_local`, ...) are inherent
/// methods that forward to its [`Handle`]; [`handle`](Reactor::handle) gives
/// a `Handle` of its own to keep.
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
/// Dropping a reactor that has not shut down runs its shutdown sequence
/// without waiting: triggers run (the futures of `Before` triggers are not
/// waited for), the calls and results already in the inbox run, and what is
/// left fails (`ThreadError::Stopped` for local tasks). To wait for in-flight
/// work, [`stop`](Reactor::stop) and [`run`](Reactor::run) it before
/// dropping. Calls queued from other threads to a reactor that never ran are
/// discarded (and logged). Afterwards `call_from_thread` fails with
/// [`LoopStopped`](crate::LoopStopped).
///
/// Dropped while its thread unwinds from a panic, it does the minimum: the
/// inbox is closed and what is queued is failed, no trigger runs, nothing
/// waits, and a panic in a destructor it runs is caught, so the original
/// panic is never turned into an abort.
pub struct Reactor {
    pub(super) handle: Handle,
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor").finish_non_exhaustive()
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

    /// The thread-safe handle.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote: weft::Remote = reactor.remote();
    /// # drop(remote);
    /// ```
    pub fn remote(&self) -> Remote {
        self.handle.remote()
    }

    /// Runs the loop until [`stop`](Reactor::stop), then the shutdown sequence
    /// (`Before` triggers, waited for; `During`; the final drain of the
    /// inbox; `After`), then returns.
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
        let _running = ResetOnDrop(&inner.running);
        inner.start();
        // Each turn starts with the reading its predecessor ended with.
        let mut last = None;
        while !inner.shared.stop_requested.load(Ordering::SeqCst) {
            last = Some(inner.turn_from(None, last));
        }
        inner.shutdown(true);
        Ok(())
    }

    /// Runs the loop until `future` completes and returns its output
    /// (asyncio's `run_until_complete`). The reactor starts (startup triggers
    /// fire) if it had not; it does not shut down, so it can be run again.
    ///
    /// # Errors
    ///
    /// [`RunError::Failed`] with [`ThreadError::Stopped`] if the loop was
    /// stopped first (its shutdown sequence then runs), or with
    /// [`ThreadError::Panicked`] (the original payload inside) if the future
    /// panicked; and the errors of [`run`](Reactor::run).
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
        let _running = ResetOnDrop(&inner.running);
        inner.start();
        let mut last = None;
        let result = loop {
            if let Some(r) = out.borrow_mut().take() {
                break r;
            }
            if inner.shared.stop_requested.load(Ordering::SeqCst) {
                inner.shutdown(true);
                break Err(ThreadError::Stopped);
            }
            last = Some(inner.turn_from(None, last));
        };
        result.map_err(RunError::Failed)
    }

    /// Runs exactly one turn of the loop (see the [module docs](crate::reactor)
    /// for the turn order), blocking at most `timeout` for I/O (`None`: until
    /// something happens; any `Duration` up to `Duration::MAX` is fine). For
    /// tests and embedding; it does not fire startup triggers or act on
    /// `stop`.
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
        if std::thread::panicking() {
            inner.teardown_while_panicking();
        } else {
            if inner.shared.state() != STATE_STOPPED {
                let _enter = Enter::new(inner);
                inner.shutdown(false);
            }
            inner.teardown();
        }
        context::unregister(inner);
    }
}

/// Clears a flag when dropped (also on unwind).
pub(super) struct ResetOnDrop<'a>(pub(super) &'a Cell<bool>);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// The bridge's delivery hook for thread-job callbacks.
impl Handle {
    /// Spawns a local task with no `Deferred` and no canceller of its own
    /// (one allocation): the bridge runs a thread job's callbacks in one,
    /// woken when the job's record is delivered. Dropped unpolled if the
    /// reactor has closed its task queue (its future's drop then reports).
    pub(crate) fn spawn_detached(
        &self,
        future: impl Future<Output = ()> + 'static,
        location: &'static std::panic::Location<'static>,
    ) {
        let _ = self.inner.tasks.spawn(&self.inner.shared, future, location);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::Inner;

    /// A wake after a long sleep misses on every line of `Inner` a turn
    /// reads: those fields come first, in a few lines, and the large or
    /// rarely read ones after them.
    #[test]
    fn the_fields_a_turn_reads_fit_in_the_first_six_cache_lines() {
        let hot_end = offset_of!(Inner, tasks) + size_of::<super::Tasks>();
        assert!(
            hot_end <= 6 * 64,
            "the per-turn fields end at byte {hot_end}"
        );
        assert!(offset_of!(Inner, started) >= hot_end);
        assert!(offset_of!(Inner, io) >= hot_end);
        // The diagnostics (with their site cache) are behind a pointer.
        assert_eq!(
            size_of::<Option<Box<crate::diagnostics::LoopDiag>>>(),
            size_of::<usize>()
        );
    }
}
