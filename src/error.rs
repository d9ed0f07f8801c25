//! Small, specific error types.
//!
//! Each error that stands for work that was not delivered hands that work back
//! (`LoopStopped<F>(pub F)`, `AlreadyQuit<T>(pub T)`), as crossbeam's
//! `SendError<T>` does, so nothing is dropped behind the caller's back.

use std::any::Any;
use std::error::Error;
use std::fmt;

mod panic;

pub use panic::Panic;
pub(crate) use panic::{copy_payload, panic_message};

/// A worker, team or pool has been told to quit; it takes no more work.
///
/// `T` is what was refused: the task for `do_work`, `()` for `quit`.
///
/// # Examples
///
/// ```
/// use weft::threads::{memory_worker, Worker};
///
/// let (worker, _perform) = memory_worker();
/// worker.quit().unwrap();
/// let refused = worker.do_work(Box::new(|| ())).unwrap_err();
/// (refused.0)(); // the task is handed back
/// assert!(worker.quit().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct AlreadyQuit<T = ()>(pub T);

impl<T> AlreadyQuit<T> {
    /// Returns what was refused.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = weft::AlreadyQuit(7);
    /// assert_eq!(err.into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for AlreadyQuit<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AlreadyQuit(..)")
    }
}

impl<T> fmt::Display for AlreadyQuit<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("already quit")
    }
}

impl<T> Error for AlreadyQuit<T> {}

/// The reactor's loop has ended; the closure was not queued and is handed back.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let remote = reactor.remote();
/// remote.stop();
/// reactor.run().unwrap();
/// let (tx, rx) = std::sync::mpsc::channel();
/// let err = remote.call_from_thread(move || tx.send(42).unwrap()).unwrap_err();
/// (err.0)(); // the closure is handed back, unrun
/// assert_eq!(rx.recv().unwrap(), 42);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LoopStopped<F>(pub F);

impl<F> LoopStopped<F> {
    /// Returns the closure that was not queued.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = weft::LoopStopped(5);
    /// assert_eq!(err.into_inner(), 5);
    /// ```
    pub fn into_inner(self) -> F {
        self.0
    }
}

impl<F> fmt::Debug for LoopStopped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoopStopped(..)")
    }
}

impl<F> fmt::Display for LoopStopped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("reactor loop has stopped")
    }
}

impl<F> Error for LoopStopped<F> {}

/// Why a job or future on the other side (pool work, a worker's job, a
/// local task) produced no value: it panicked, was cancelled, was refused
/// by a stopped pool or loop, or timed out. tokio's `JoinError`, plus
/// `Stopped` and `TimedOut`.
///
/// # Examples
///
/// ```
/// use weft::ThreadError;
///
/// let err = ThreadError::Panicked { message: "boom".into() };
/// assert_eq!(err.to_string(), "job panicked: boom");
/// assert!(err.is_panic());
/// assert_eq!(ThreadError::from(weft::Cancelled), ThreadError::Cancelled);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ThreadError {
    /// The job panicked; `message` reads as the panic message and holds the
    /// original payload ([`ThreadError::into_panic`]).
    Panicked {
        /// The panic: its message and payload.
        message: Panic,
    },
    /// The job was cancelled before it produced a value.
    Cancelled,
    /// The pool or loop that would have run the job had stopped.
    Stopped,
    /// The job did not finish before its deadline
    /// ([`Deferred::add_timeout`](crate::Deferred::add_timeout)).
    TimedOut,
}

impl fmt::Display for ThreadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThreadError::Panicked { message } => write!(f, "job panicked: {message}"),
            ThreadError::Cancelled => f.write_str("job cancelled"),
            ThreadError::Stopped => f.write_str("job refused: stopped"),
            ThreadError::TimedOut => f.write_str("job timed out"),
        }
    }
}

impl Error for ThreadError {}

impl From<Cancelled> for ThreadError {
    fn from(_: Cancelled) -> Self {
        ThreadError::Cancelled
    }
}

impl ThreadError {
    /// Whether the job panicked (tokio's `JoinError::is_panic`).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!weft::ThreadError::Cancelled.is_panic());
    /// ```
    pub fn is_panic(&self) -> bool {
        matches!(self, ThreadError::Panicked { .. })
    }

    /// Whether the job was cancelled (tokio's `JoinError::is_cancelled`).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(weft::ThreadError::Cancelled.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self, ThreadError::Cancelled)
    }

    /// The panic's original payload, for [`std::panic::resume_unwind`]
    /// (tokio's `JoinError::into_panic`).
    ///
    /// # Panics
    ///
    /// If the error is not [`ThreadError::Panicked`]; see
    /// [`try_into_panic`](ThreadError::try_into_panic).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let d = reactor.defer_to_thread(|| -> u8 { panic!("boom") });
    /// let err = reactor.run_until_complete(d).unwrap().unwrap_err();
    /// let payload = err.into_panic();
    /// assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    /// // std::panic::resume_unwind(payload) re-raises it on this thread.
    /// ```
    #[track_caller]
    pub fn into_panic(self) -> Box<dyn Any + Send> {
        match self.try_into_panic() {
            Ok(payload) => payload,
            Err(other) => panic!("`ThreadError::into_panic` on a non-panic error: {other}"),
        }
    }

    /// The panic's original payload, for [`std::panic::resume_unwind`]; any
    /// other error is handed back (tokio's `JoinError::try_into_panic`).
    ///
    /// # Errors
    ///
    /// `self` when it is not [`ThreadError::Panicked`].
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let d = reactor.defer_to_thread(|| -> u8 { panic!("boom") });
    /// let err = reactor.run_until_complete(d).unwrap().unwrap_err();
    /// let payload = err.try_into_panic().unwrap();
    /// let rethrow = std::panic::AssertUnwindSafe(move || std::panic::resume_unwind(payload));
    /// let caught = std::panic::catch_unwind(rethrow).unwrap_err();
    /// assert_eq!(caught.downcast_ref::<&str>(), Some(&"boom"));
    /// assert!(weft::ThreadError::Stopped.try_into_panic().is_err());
    /// ```
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send>, ThreadError> {
        match self {
            ThreadError::Panicked { message } => Ok(message.into_payload()),
            other => Err(other),
        }
    }

    /// Builds a `Panicked` error from a payload caught by `catch_unwind`,
    /// keeping the payload.
    pub(crate) fn from_panic_payload(payload: Box<dyn Any + Send>) -> Self {
        ThreadError::Panicked {
            message: Panic::new(payload),
        }
    }

    /// Builds a `Panicked` error from a borrowed payload (the caller keeps
    /// the original): a `&'static str` or `String` payload is copied with
    /// its type, any other becomes its placeholder message.
    pub(crate) fn from_panic(payload: &(dyn Any + Send)) -> Self {
        Self::from_panic_payload(copy_payload(payload))
    }
}

/// A [`Deferred`](crate::Deferred) did not resolve before its deadline
/// ([`Deferred::add_timeout`](crate::Deferred::add_timeout)).
///
/// # Examples
///
/// ```
/// assert_eq!(weft::TimedOut.to_string(), "timed out");
/// assert_eq!(weft::ThreadError::from(weft::TimedOut), weft::ThreadError::TimedOut);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimedOut;

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timed out")
    }
}

impl Error for TimedOut {}

impl From<TimedOut> for ThreadError {
    fn from(_: TimedOut) -> Self {
        ThreadError::TimedOut
    }
}

/// A `Deferred` or job was cancelled.
///
/// # Examples
///
/// ```
/// assert_eq!(weft::Cancelled.to_string(), "cancelled");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cancelled")
    }
}

impl Error for Cancelled {}

/// Misuse of a [`DelayedCall`](crate::DelayedCall) that already ran or was cancelled.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weft::{DelayedCallError, Reactor};
///
/// let reactor = Reactor::new().unwrap();
/// let call = reactor.call_later(Duration::from_secs(5), || ());
/// call.cancel().unwrap();
/// assert_eq!(call.cancel(), Err(DelayedCallError::AlreadyCancelled));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayedCallError {
    /// The call has already run (or is running).
    AlreadyCalled,
    /// The call was cancelled.
    AlreadyCancelled,
}

impl fmt::Display for DelayedCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DelayedCallError::AlreadyCalled => f.write_str("delayed call already called"),
            DelayedCallError::AlreadyCancelled => f.write_str("delayed call already cancelled"),
        }
    }
}

impl Error for DelayedCallError {}

/// A [`Deferred`](crate::Deferred) was resolved a second time; the value is handed back.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let d: weft::Deferred<u8, weft::Cancelled> = weft::Deferred::new();
/// d.callback(1).unwrap();
/// let again = d.callback(2).unwrap_err();
/// assert_eq!(again.0, Ok(2));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AlreadyResolved<T>(pub T);

impl<T> fmt::Debug for AlreadyResolved<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AlreadyResolved(..)")
    }
}

impl<T> fmt::Display for AlreadyResolved<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deferred already resolved")
    }
}

impl<T> Error for AlreadyResolved<T> {}

/// Why [`Reactor::run`](crate::Reactor::run) or
/// [`Reactor::run_until_complete`](crate::Reactor::run_until_complete) gave
/// no value.
///
/// The future's own fate is the one job error, [`ThreadError`], in
/// [`RunError::Failed`], as in [`CallError::Failed`]: it panicked
/// ([`ThreadError::Panicked`], with the original payload) or the loop was
/// stopped before it completed ([`ThreadError::Stopped`]). The other
/// variants say the loop could not run at all. `?` converts a
/// [`ThreadError`] or [`Cancelled`] into it.
///
/// # Examples
///
/// ```
/// use weft::{RunError, ThreadError};
///
/// let reactor = weft::Reactor::new().unwrap();
/// reactor.stop();
/// let err = reactor.run_until_complete(std::future::pending::<()>()).unwrap_err();
/// assert_eq!(err, RunError::Failed(ThreadError::Stopped));
/// assert_eq!(reactor.run(), Err(RunError::Stopped)); // it cannot restart
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunError {
    /// The loop is already running on this thread (a re-entrant call).
    AlreadyRunning,
    /// The loop has shut down; a reactor cannot be restarted.
    Stopped,
    /// The future produced no value: it panicked
    /// ([`ThreadError::Panicked`], see [`RunError::try_into_panic`]) or the
    /// loop was stopped before it completed ([`ThreadError::Stopped`]).
    Failed(ThreadError),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::AlreadyRunning => f.write_str("reactor is already running"),
            RunError::Stopped => f.write_str("reactor has stopped and cannot be restarted"),
            RunError::Failed(ThreadError::Panicked { message }) => {
                write!(f, "future panicked: {message}")
            }
            RunError::Failed(ThreadError::Stopped) => {
                f.write_str("reactor stopped before the future completed")
            }
            RunError::Failed(ThreadError::Cancelled) => f.write_str("future cancelled"),
            RunError::Failed(ThreadError::TimedOut) => f.write_str("future timed out"),
        }
    }
}

impl Error for RunError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            RunError::Failed(e) => Some(e),
            _ => None,
        }
    }
}

impl RunError {
    /// Whether the future panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let err = reactor.run_until_complete(async { panic!("boom") }).unwrap_err();
    /// assert!(err.is_panic());
    /// ```
    pub fn is_panic(&self) -> bool {
        matches!(self, RunError::Failed(e) if e.is_panic())
    }

    /// The future's original panic payload, for
    /// [`std::panic::resume_unwind`]; any other error is handed back.
    ///
    /// # Errors
    ///
    /// `self` when it is not a panic.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let err = reactor.run_until_complete(async { panic!("boom") }).unwrap_err();
    /// assert_eq!(err.try_into_panic().unwrap().downcast_ref::<&str>(), Some(&"boom"));
    /// ```
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send>, RunError> {
        match self {
            RunError::Failed(e) => e.try_into_panic().map_err(RunError::Failed),
            other => Err(other),
        }
    }
}

/// A job's failure as seen by `run_until_complete`'s caller: the same
/// error, in [`RunError::Failed`].
///
/// # Examples
///
/// ```
/// use weft::{RunError, ThreadError};
///
/// fn relay(r: Result<u8, ThreadError>) -> Result<u8, RunError> {
///     Ok(r?)
/// }
/// assert_eq!(relay(Err(ThreadError::Stopped)), Err(RunError::Failed(ThreadError::Stopped)));
/// ```
impl From<ThreadError> for RunError {
    fn from(err: ThreadError) -> Self {
        RunError::Failed(err)
    }
}

impl From<Cancelled> for RunError {
    fn from(_: Cancelled) -> Self {
        RunError::Failed(ThreadError::Cancelled)
    }
}

/// Why a call onto the loop from another thread
/// ([`Remote::blocking_call`](crate::Remote::blocking_call),
/// [`CrossThreadFuture`](crate::CrossThreadFuture)) produced no value.
///
/// The call's own fate is the one job error, [`ThreadError`], in
/// [`CallError::Failed`]: the same type a `defer_to_thread` gives on the
/// loop, so code on either side matches the same variants. The other
/// variants are the waiting caller's own cases: misuse (`OnLoopThread`,
/// `AlreadyTaken`) and a wait that gave up (`TimedOut`, while the call may
/// still run). `?` converts a [`ThreadError`] or [`Cancelled`] into it.
///
/// # Examples
///
/// ```
/// use weft::{CallError, ThreadError};
///
/// let reactor = weft::Reactor::new().unwrap();
/// // On the loop thread it would deadlock, so it fails at once.
/// let err = weft::blocking_call_from_thread(&reactor.remote(), || 1).unwrap_err();
/// assert_eq!(err, CallError::OnLoopThread);
/// // A job error converts with `?`.
/// fn relay(r: Result<u8, ThreadError>) -> Result<u8, CallError> {
///     Ok(r?)
/// }
/// assert_eq!(relay(Err(ThreadError::Stopped)), Err(CallError::Failed(ThreadError::Stopped)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// Called on the loop thread, where waiting would deadlock.
    OnLoopThread,
    /// The wait timed out. The call itself is not withdrawn: it may still
    /// run on the loop later.
    TimedOut,
    /// The outcome was already taken by an earlier wait or poll.
    AlreadyTaken,
    /// The call produced no value: it panicked ([`ThreadError::Panicked`],
    /// with the original payload), was cancelled ([`ThreadError::Cancelled`]),
    /// or the loop stopped, is stopping, or shut down before it completed
    /// ([`ThreadError::Stopped`]).
    Failed(ThreadError),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::OnLoopThread => {
                f.write_str("called on the loop thread; waiting would deadlock")
            }
            CallError::TimedOut => {
                f.write_str("timed out waiting for the loop; the call may still run")
            }
            CallError::AlreadyTaken => f.write_str("outcome already taken"),
            CallError::Failed(ThreadError::Panicked { message }) => {
                write!(f, "call panicked: {message}")
            }
            CallError::Failed(ThreadError::Cancelled) => f.write_str("call cancelled"),
            CallError::Failed(ThreadError::Stopped) => {
                f.write_str("reactor loop stopped before the call completed")
            }
            CallError::Failed(ThreadError::TimedOut) => f.write_str("call timed out"),
        }
    }
}

impl Error for CallError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            CallError::Failed(e) => Some(e),
            _ => None,
        }
    }
}

impl CallError {
    /// The loop stopped (or is stopping) before the call completed.
    pub(crate) const LOOP_STOPPED: CallError = CallError::Failed(ThreadError::Stopped);

    /// A call that panicked, keeping the payload.
    pub(crate) fn panicked(payload: Box<dyn Any + Send>) -> CallError {
        CallError::Failed(ThreadError::from_panic_payload(payload))
    }

    /// Whether the call panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!weft::CallError::TimedOut.is_panic());
    /// ```
    pub fn is_panic(&self) -> bool {
        matches!(self, CallError::Failed(e) if e.is_panic())
    }

    /// Whether the call was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(weft::CallError::from(weft::Cancelled).is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self, CallError::Failed(e) if e.is_cancelled())
    }

    /// The call's original panic payload, for
    /// [`std::panic::resume_unwind`]; any other error is handed back.
    ///
    /// # Errors
    ///
    /// `self` when it is not a panic.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// let caller = std::thread::spawn(move || {
    ///     let err = remote.blocking_call(|| -> u8 { std::panic::panic_any(7_u32) }).unwrap_err();
    ///     remote.stop();
    ///     err
    /// });
    /// reactor.run().unwrap();
    /// let payload = caller.join().unwrap().try_into_panic().unwrap();
    /// assert_eq!(payload.downcast_ref::<u32>(), Some(&7));
    /// ```
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send>, CallError> {
        match self {
            CallError::Failed(e) => e.try_into_panic().map_err(CallError::Failed),
            other => Err(other),
        }
    }
}

/// A job's failure as seen by a cross-thread caller: the same error, in
/// [`CallError::Failed`].
impl From<ThreadError> for CallError {
    fn from(err: ThreadError) -> Self {
        CallError::Failed(err)
    }
}

impl From<Cancelled> for CallError {
    fn from(_: Cancelled) -> Self {
        CallError::Failed(ThreadError::Cancelled)
    }
}

/// A [`ThreadPool`](crate::ThreadPool) size that cannot work.
///
/// # Examples
///
/// ```
/// use weft::{PoolConfigError, ThreadPool};
///
/// assert_eq!(ThreadPool::new(0, 0).unwrap_err(), PoolConfigError::ZeroMax);
/// let err = ThreadPool::new(3, 2).unwrap_err();
/// assert_eq!(err.to_string(), "pool min 3 is greater than max 2");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolConfigError {
    /// `max` is zero, so the pool could never run anything.
    ZeroMax,
    /// `min` is greater than `max`.
    MinAboveMax {
        /// The requested minimum.
        min: usize,
        /// The requested maximum.
        max: usize,
    },
    /// The thread name holds a NUL byte, which no OS thread name may hold.
    InvalidName,
}

impl fmt::Display for PoolConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolConfigError::ZeroMax => f.write_str("pool max must be at least 1"),
            PoolConfigError::MinAboveMax { min, max } => {
                write!(f, "pool min {min} is greater than max {max}")
            }
            PoolConfigError::InvalidName => f.write_str("pool name holds a NUL byte"),
        }
    }
}

impl Error for PoolConfigError {}
