//! [`Remote`]: the thread-safe handle, and the state it shares with the loop.
//!
//! Everything in [`Shared`] is touched from any thread through atomics, the
//! inbox's mutex or the run queue's mutex; nothing here blocks on the loop.
//!
//! Capacity accounting (for [`Remote::try_call_from_thread`]): the jobs
//! pushed into the inbox and not yet taken by the loop are the inbox queue's
//! length, checked under the inbox's lock together with the push (no counter
//! of its own: a shared atomic bumped by every producer and the loop cost a
//! contended read-modify-write per call). Only `try_call_from_thread` is
//! refused at capacity; every other path (plain `call_from_thread`, pool
//! completions) is counted but never refused, so results are never dropped
//! for want of room.

use std::fmt;
use std::panic::Location;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use crate::deferred::span;
use crate::error::LoopStopped;
use crate::loom::Mutex;
use crate::loom::atomic::{AtomicBool, AtomicU8, Ordering};
use crate::time::Clock;

use super::context::{self, this_thread};
use super::inbox::{Deliver, Inbox, Refused, Wake};
use super::stats::{ReactorStatistics, SharedStats, statistics_of};
use super::tasks::RunQueue;

/// Lifecycle states (see the module docs of [`crate::reactor`]).
pub(super) const STATE_IDLE: u8 = 0;
pub(super) const STATE_RUNNING: u8 = 1;
pub(super) const STATE_STOPPING: u8 = 2;
pub(super) const STATE_STOPPED: u8 = 3;

pub(super) struct MioWaker(pub(super) mio::Waker);

impl Wake for MioWaker {
    fn wake(&self) {
        if let Err(e) = self.0.wake() {
            tracing::error!(error = %e, "weft: failed to wake the reactor loop");
        }
    }
}

/// State shared with other threads.
pub(crate) struct Shared {
    pub(super) inbox: Inbox<MioWaker>,
    /// Local tasks woken and waiting to be polled.
    pub(super) run_queue: Mutex<RunQueue>,
    pub(super) stop_requested: AtomicBool,
    /// The startup event has fired (also true once stopped after a run).
    pub(super) started: AtomicBool,
    /// The inbox refuses pushes (set right after closing it).
    pub(super) inbox_closed: AtomicBool,
    pub(super) state: AtomicU8,
    pub(super) loop_thread: ThreadId,
    /// The bound `try_call_from_thread` checks the inbox's length against.
    pub(super) capacity: usize,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) stats: SharedStats,
}

impl Shared {
    pub(super) fn request_stop(&self) {
        // A read-modify-write, like every write the wake protocol relies on
        // (see `inbox.rs`): ordered against the loop's re-check before sleep.
        self.stop_requested.swap(true, Ordering::SeqCst);
        self.inbox.notify();
    }

    #[inline]
    pub(super) fn state(&self) -> u8 {
        self.state.load(Ordering::SeqCst)
    }

    #[track_caller]
    fn push<F: FnOnce() + Send + 'static>(&self, f: F) -> Result<(), F> {
        self.inbox.push(f, Location::caller())
    }
}

/// Why [`Remote::try_call_from_thread`] did not queue a call; either way the
/// closure is handed back.
///
/// # Examples
///
/// ```
/// use weft::reactor::TrySendError;
///
/// let reactor = weft::Reactor::builder().inbox_capacity(1).build().unwrap();
/// let remote = reactor.remote();
/// remote.try_call_from_thread(|| ()).unwrap();
/// let err = remote.try_call_from_thread(|| ()).unwrap_err();
/// assert!(matches!(err, TrySendError::Full(_)));
/// assert_eq!(err.to_string(), "reactor inbox full");
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TrySendError<F> {
    /// The inbox holds its capacity of calls; try again later.
    Full(F),
    /// The loop has ended; the call will never run.
    Stopped(F),
}

impl<F> TrySendError<F> {
    /// The closure that was not queued.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::reactor::TrySendError;
    /// let e = TrySendError::Full(7);
    /// assert_eq!(e.into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> F {
        match self {
            TrySendError::Full(f) | TrySendError::Stopped(f) => f,
        }
    }

    /// Whether the inbox was full (as opposed to the loop having stopped).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(weft::reactor::TrySendError::Full(()).is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }
}

impl<F> fmt::Debug for TrySendError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Stopped(_) => f.write_str("Stopped(..)"),
        }
    }
}

impl<F> fmt::Display for TrySendError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("reactor inbox full"),
            TrySendError::Stopped(_) => f.write_str("reactor loop stopped"),
        }
    }
}

impl<F> std::error::Error for TrySendError<F> {}

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
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote").finish_non_exhaustive()
    }
}

/// `f` to run inside `span`, kept in a shared slot so that a refused push
/// can hand `f` back: returns the call to queue (one pointer, stored in the
/// inbox's slot) and what recovers `f` from a refused call.
fn carry_span<F>(span: tracing::Span, f: F) -> (impl FnOnce() + Send + 'static, impl FnOnce() -> F)
where
    F: FnOnce() + Send + 'static,
{
    let slot = Arc::new(Mutex::new(Some((span, f))));
    let taken = slot.clone();
    let call = move || {
        let job = taken.lock().take();
        if let Some((span, f)) = job {
            span.in_scope(f);
        }
    };
    let back = move || {
        let job = slot.lock().take();
        job.expect("a refused call is handed back unrun").1
    };
    (call, back)
}

impl Remote {
    /// Queues `f` to run on the loop thread: the one thread-safe way onto the
    /// loop. Calls run in the order they were queued (FIFO across all
    /// threads, by enqueue order). Calls queued before the loop runs are kept
    /// and run once it does. It never blocks and is never refused for lack of
    /// room (see [`try_call_from_thread`](Remote::try_call_from_thread) for
    /// backpressure).
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
        match span::current() {
            None => self.shared.push(f).map_err(LoopStopped),
            Some(span) => {
                let (call, back) = carry_span(span, f);
                self.shared.push(call).map_err(|call| {
                    drop(call);
                    LoopStopped(back())
                })
            }
        }
    }

    /// Queues `f` like [`call_from_thread`](Remote::call_from_thread) unless
    /// the inbox already holds the capacity set with
    /// [`Builder::inbox_capacity`](super::Builder::inbox_capacity) (calls
    /// queued and not yet taken by the loop): the form for producers that
    /// want backpressure. It never blocks.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] at capacity, [`TrySendError::Stopped`] once the
    /// loop has ended; both hand `f` back.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::reactor::TrySendError;
    ///
    /// let reactor = weft::Reactor::builder().inbox_capacity(2).build().unwrap();
    /// let remote = reactor.remote();
    /// assert!(remote.try_call_from_thread(|| ()).is_ok());
    /// assert!(remote.try_call_from_thread(|| ()).is_ok());
    /// assert!(matches!(remote.try_call_from_thread(|| ()), Err(TrySendError::Full(_))));
    /// reactor.iterate(Some(std::time::Duration::ZERO)); // the loop takes both
    /// assert!(remote.try_call_from_thread(|| ()).is_ok());
    /// ```
    #[track_caller]
    pub fn try_call_from_thread<F>(&self, f: F) -> Result<(), TrySendError<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        let shared = &self.shared;
        let location = Location::caller();
        let refused = |r: Refused<_>| match r {
            Refused::Full(f) => TrySendError::Full(f),
            Refused::Closed(f) => TrySendError::Stopped(f),
        };
        match span::current() {
            None => shared
                .inbox
                .push_within(f, location, shared.capacity)
                .map_err(refused),
            Some(span) => {
                let (call, back) = carry_span(span, f);
                shared
                    .inbox
                    .push_within(call, location, shared.capacity)
                    .map_err(|r| {
                        let full = matches!(r, Refused::Full(_));
                        drop(r);
                        let f = back();
                        if full {
                            TrySendError::Full(f)
                        } else {
                            TrySendError::Stopped(f)
                        }
                    })
            }
        }
    }

    /// Runs `f` on the loop thread once `delay` has passed on the reactor's
    /// clock, counted from this call. A delay up to `Duration::MAX` means
    /// "never" (the call stays scheduled until shutdown drops it).
    ///
    /// # Errors
    ///
    /// [`LoopStopped`] with `f` handed back once the loop has ended.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// std::thread::spawn(move || {
    ///     let r2 = remote.clone();
    ///     remote.call_later(Duration::from_millis(1), move || r2.stop()).unwrap();
    /// });
    /// reactor.run().unwrap();
    /// ```
    #[track_caller]
    pub fn call_later<F>(&self, delay: Duration, f: F) -> Result<(), LoopStopped<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        let deadline = self.shared.clock.now().saturating_add(delay);
        let location = Location::caller();
        // The closure travels in an Option so a refused push hands it back.
        let slot = Arc::new(Mutex::new(Some(f)));
        let taken = slot.clone();
        let span = span::current();
        let schedule = move || {
            let Some(f) = taken.lock().take() else { return };
            if let Some(handle) = context::current() {
                let call: Box<dyn FnOnce()> = match span {
                    Some(span) => Box::new(move || span.in_scope(f)),
                    None => Box::new(f),
                };
                handle.schedule_at(deadline, call, location);
            }
        };
        match self.shared.push(schedule) {
            Ok(()) => Ok(()),
            Err(schedule) => {
                drop(schedule);
                let f = slot.lock().take();
                Err(LoopStopped(f.expect("a refused call is handed back unrun")))
            }
        }
    }

    /// Queues an `Arc`'d message for the loop (no allocation); gives it back
    /// once the loop has ended.
    #[inline]
    #[track_caller]
    pub(crate) fn deliver(&self, message: Arc<dyn Deliver>) -> Result<(), Arc<dyn Deliver>> {
        self.shared.inbox.push_deliver(message, Location::caller())
    }

    /// A weak reference that identifies this reactor: while it is held, the
    /// reactor's shared state is not freed, so its address is not reused,
    /// and [`is`](Remote::is) can compare against it safely.
    pub(crate) fn downgrade(&self) -> std::sync::Weak<dyn std::any::Any + Send + Sync> {
        let shared: Arc<dyn std::any::Any + Send + Sync> = self.shared.clone();
        Arc::downgrade(&shared)
    }

    /// Whether `weak` came from [`downgrade`](Remote::downgrade) on a
    /// `Remote` of this reactor.
    pub(crate) fn is(&self, weak: &std::sync::Weak<dyn std::any::Any + Send + Sync>) -> bool {
        std::ptr::addr_eq(weak.as_ptr(), Arc::as_ptr(&self.shared))
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
        this_thread() == self.shared.loop_thread
    }

    /// Whether the calling thread runs on the CPU the loop woke on after
    /// its last sleep (a hint for a blocking caller's spin: see
    /// `Inbox::shares_loop_cpu`).
    pub(crate) fn shares_loop_cpu(&self) -> bool {
        self.shared.inbox.shares_loop_cpu()
    }

    /// Whether the reactor has started (its startup triggers fired).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert!(!reactor.remote().has_started());
    /// reactor.run_until_complete(async {}).unwrap();
    /// assert!(reactor.remote().has_started());
    /// ```
    pub fn has_started(&self) -> bool {
        self.shared.started.load(Ordering::SeqCst)
    }

    /// Whether the reactor is running: started, and its shutdown not begun.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert!(!reactor.remote().is_running());
    /// ```
    pub fn is_running(&self) -> bool {
        self.shared.state() == STATE_RUNNING
    }

    /// Whether the reactor's shutdown has begun or finished.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert!(!reactor.remote().is_stopped());
    /// ```
    pub fn is_stopped(&self) -> bool {
        self.shared.state() >= STATE_STOPPING
    }

    /// Whether the shutdown sequence has finished (state `STOPPED`): the
    /// loop will never run a call or deliver a result again.
    #[inline]
    pub(crate) fn has_ended(&self) -> bool {
        self.shared.state() == STATE_STOPPED
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
