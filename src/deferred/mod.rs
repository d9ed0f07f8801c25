//! `Deferred<T, E>`: a one-shot result cell resolved on the loop thread.
//!
//! Design:
//! - One cell, shared by `Rc`: the [`Deferred`] is the single consumer (it is
//!   not `Clone`: the value moves to exactly one place, a callback or an
//!   awaiter), and any number of [`Resolver`]s may resolve or cancel it.
//! - Resolving runs a registered callback at once, on the loop, as Twisted's
//!   `callback()` does; an awaiting task is woken instead.
//! - Resolving twice is an error that hands the second result back.
//! - Dropping a `Deferred` does not cancel it (as in Twisted); call
//!   [`Deferred::cancel`]. The result of a dropped, unconsumed `Deferred` is
//!   dropped when it arrives.
//! - No borrow of the cell is held while user code (callbacks, cancellers)
//!   runs, so they may freely touch the same `Deferred`.
//! - Every piece of work is accounted for: once the last [`Resolver`] goes
//!   away without resolving (work dropped unrun, a task aborted, a bridge
//!   table cleared), the `Deferred` resolves `Cancelled`. That is why
//!   [`Deferred::new`] needs `E: From<Cancelled>`. The count of live
//!   resolvers is held up while a canceller runs, so a canceller that drops
//!   resolvers cannot resolve the cell under a borrow of its own.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::error::{AlreadyResolved, Cancelled, ThreadError};

mod chain;
pub(crate) mod span;

pub use chain::gather;

type Callback<T, E> = Box<dyn FnOnce(Result<T, E>)>;

enum State<T, E> {
    Pending {
        waker: Option<Waker>,
        callback: Option<Callback<T, E>>,
    },
    Ready(Result<T, E>),
    Consumed,
}

/// What [`Deferred::cancel`] runs first: a closure, or (for the bridge's
/// thread jobs) the job record and its loop table, held inline so that a
/// job's `Deferred` costs no canceller allocation.
enum Canceller {
    Boxed(Box<dyn FnOnce()>),
    Job {
        job: Arc<dyn CancelJob>,
        table: Weak<dyn JobTable>,
        key: u64,
    },
}

/// A job record shared with a worker thread that a cancel empties.
pub(crate) trait CancelJob {
    /// Drops the job's closure (or undelivered result) now; whether the job
    /// had not started.
    fn cancel_job(&self) -> bool;
}

/// The loop-side table of jobs in flight.
pub(crate) trait JobTable {
    /// The job under `key` was cancelled (`unstarted`: before it ran).
    fn forget_job(&self, key: u64, unstarted: bool);
}

impl Canceller {
    fn run(self) {
        match self {
            Canceller::Boxed(f) => f(),
            Canceller::Job { job, table, key } => {
                let unstarted = job.cancel_job();
                if let Some(table) = table.upgrade() {
                    table.forget_job(key, unstarted);
                }
            }
        }
    }
}

struct Cell<T, E> {
    state: RefCell<State<T, E>>,
    canceller: RefCell<Option<Canceller>>,
    resolved: std::cell::Cell<bool>,
    /// Live `Resolver`s (plus one while a canceller runs).
    resolvers: std::cell::Cell<usize>,
    /// Builds the error of an abandoned cell (`E::from(Cancelled)`); `None`
    /// for cells created resolved.
    abandoned: Option<fn() -> E>,
}

impl<T, E> Cell<T, E> {
    fn resolve(&self, result: Result<T, E>) -> Result<(), AlreadyResolved<Result<T, E>>> {
        if self.resolved.replace(true) {
            return Err(AlreadyResolved(result));
        }
        self.canceller.borrow_mut().take();
        let mut state = self.state.borrow_mut();
        match std::mem::replace(&mut *state, State::Consumed) {
            State::Pending {
                callback: Some(cb), ..
            } => {
                drop(state);
                cb(result);
            }
            State::Pending { waker, .. } => {
                *state = State::Ready(result);
                drop(state);
                if let Some(w) = waker {
                    w.wake();
                }
            }
            // `resolved` guards against both; keep the cell consistent anyway.
            other => *state = other,
        }
        Ok(())
    }

    fn cancel(&self)
    where
        E: From<Cancelled>,
    {
        if self.resolved.get() {
            return;
        }
        self.run_canceller();
        // The canceller may have resolved it (e.g. with a more precise error).
        let _ = self.resolve(Err(E::from(Cancelled)));
    }

    /// Runs the canceller (once) with the resolver count held up, so the
    /// resolvers it drops do not resolve the cell in the middle.
    fn run_canceller(&self) {
        let canceller = self.canceller.borrow_mut().take();
        if let Some(c) = canceller {
            self.resolvers.set(self.resolvers.get() + 1);
            c.run();
            self.resolvers.set(self.resolvers.get() - 1);
        }
    }

    fn pending(abandoned: Option<fn() -> E>) -> Self {
        Cell {
            state: RefCell::new(State::Pending {
                waker: None,
                callback: None,
            }),
            canceller: RefCell::new(None),
            resolved: std::cell::Cell::new(false),
            resolvers: std::cell::Cell::new(0),
            abandoned,
        }
    }
}

fn cancelled_error<E: From<Cancelled>>() -> E {
    E::from(Cancelled)
}

/// A result that will arrive later on the loop thread: Twisted's `Deferred`.
///
/// It is a [`Future`] (`.await` gives `Result<T, E>`) and also takes a
/// callback ([`add_both`](Deferred::add_both)) that runs on the loop when it
/// resolves. Work handed to threads comes back as a `Deferred<T>` whose error
/// is [`ThreadError`].
///
/// Loop-thread only (`!Send`). To resolve it from another thread, go through
/// [`Remote::call_from_thread`](crate::Remote::call_from_thread).
///
/// # Examples
///
/// ```
/// use weft::{Cancelled, Deferred, Reactor};
///
/// let reactor = Reactor::new().unwrap();
/// let d: Deferred<u32, Cancelled> = Deferred::new();
/// let r = d.resolver();
/// reactor.call_soon(move || { r.callback(42).unwrap(); });
/// assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(42));
/// ```
///
/// # Cancel safety
///
/// Dropping a `Deferred` (or a future awaiting it) does not cancel the work
/// behind it; use [`cancel`](Deferred::cancel).
#[must_use = "a Deferred does nothing unless awaited, given a callback, or detached"]
pub struct Deferred<T, E = ThreadError> {
    cell: Rc<Cell<T, E>>,
    _not_send: PhantomData<*const ()>,
}

/// A handle that resolves or cancels a [`Deferred`]; cheap to clone.
///
/// # Examples
///
/// ```
/// let d: weft::Deferred<&str, weft::Cancelled> = weft::Deferred::new();
/// let r = d.resolver();
/// r.callback("done").unwrap();
/// assert!(d.is_resolved());
/// ```
///
/// # Dropping
///
/// When the last `Resolver` of a `Deferred` is dropped before it resolved,
/// the `Deferred` resolves `Cancelled`: work that can no longer report is
/// never awaited forever.
///
/// ```
/// let d: weft::Deferred<u8, weft::Cancelled> = weft::Deferred::new();
/// drop(d.resolver());
/// let reactor = weft::Reactor::new().unwrap();
/// assert_eq!(reactor.run_until_complete(d).unwrap(), Err(weft::Cancelled));
/// ```
pub struct Resolver<T, E = ThreadError> {
    cell: Rc<Cell<T, E>>,
}

impl<T, E> Resolver<T, E> {
    fn of(cell: &Rc<Cell<T, E>>) -> Self {
        cell.resolvers.set(cell.resolvers.get() + 1);
        Resolver { cell: cell.clone() }
    }
}

impl<T, E> Clone for Resolver<T, E> {
    fn clone(&self) -> Self {
        Resolver::of(&self.cell)
    }
}

impl<T, E> Drop for Resolver<T, E> {
    fn drop(&mut self) {
        release(&self.cell);
    }
}

impl<T: 'static, E: From<Cancelled> + 'static> Deferred<T, E> {
    /// Creates an unresolved `Deferred`. It resolves `E::from(Cancelled)` if
    /// every [`Resolver`] taken from it is dropped before resolving it.
    ///
    /// # Examples
    ///
    /// ```
    /// let d: weft::Deferred<(), weft::Cancelled> = weft::Deferred::new();
    /// assert!(!d.is_resolved());
    /// ```
    pub fn new() -> Self {
        Deferred::from_cell(Cell::pending(Some(cancelled_error::<E>)))
    }

    /// Creates an unresolved `Deferred` whose [`cancel`](Deferred::cancel)
    /// first runs `canceller` (which may resolve it itself).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    ///
    /// let stopped = Rc::new(Cell::new(false));
    /// let s = stopped.clone();
    /// let d: weft::Deferred<(), weft::Cancelled> = weft::Deferred::with_canceller(move || s.set(true));
    /// d.cancel();
    /// assert!(stopped.get());
    /// ```
    pub fn with_canceller(canceller: impl FnOnce() + 'static) -> Self {
        let d = Self::new();
        *d.cell.canceller.borrow_mut() = Some(Canceller::Boxed(Box::new(canceller)));
        d
    }

    /// An unresolved `Deferred` whose cancel empties `job` and then tells
    /// `table` (if still alive) to forget `key`: what a closure canceller
    /// would do, without its allocation.
    pub(crate) fn with_job_canceller(
        job: Arc<dyn CancelJob>,
        table: Weak<dyn JobTable>,
        key: u64,
    ) -> Self {
        let d = Self::new();
        *d.cell.canceller.borrow_mut() = Some(Canceller::Job { job, table, key });
        d
    }
}

impl<T: 'static, E: 'static> Deferred<T, E> {
    fn from_cell(cell: Cell<T, E>) -> Self {
        Deferred {
            cell: Rc::new(cell),
            _not_send: PhantomData,
        }
    }

    /// A `Deferred` that already holds `value`.
    ///
    /// # Examples
    ///
    /// ```
    /// let d: weft::Deferred<u8, weft::Cancelled> = weft::Deferred::succeed(3);
    /// assert!(d.is_resolved());
    /// ```
    pub fn succeed(value: T) -> Self {
        let d = Self::from_cell(Cell::pending(None));
        let _ = d.cell.resolve(Ok(value));
        d
    }

    /// A `Deferred` that already holds the error `error`.
    ///
    /// # Examples
    ///
    /// ```
    /// let d: weft::Deferred<u8, weft::Cancelled> = weft::Deferred::fail(weft::Cancelled);
    /// assert!(d.is_resolved());
    /// ```
    pub fn fail(error: E) -> Self {
        let d = Self::from_cell(Cell::pending(None));
        let _ = d.cell.resolve(Err(error));
        d
    }

    /// A handle that can resolve or cancel this `Deferred`.
    ///
    /// # Examples
    ///
    /// ```
    /// let d: weft::Deferred<u8, weft::Cancelled> = weft::Deferred::new();
    /// d.resolver().callback(1).unwrap();
    /// ```
    pub fn resolver(&self) -> Resolver<T, E> {
        Resolver::of(&self.cell)
    }

    /// Resolves with `result`.
    ///
    /// # Errors
    ///
    /// [`AlreadyResolved`] with `result` handed back if it was resolved before.
    ///
    /// # Examples
    ///
    /// ```
    /// let d: weft::Deferred<u8, weft::ThreadError> = weft::Deferred::new();
    /// d.resolve(Err(weft::ThreadError::Stopped)).unwrap();
    /// assert!(d.resolve(Ok(1)).is_err());
    /// ```
    pub fn resolve(&self, result: Result<T, E>) -> Result<(), AlreadyResolved<Result<T, E>>> {
        self.cell.resolve(result)
    }

    /// Resolves with a value (Twisted's `callback`).
    ///
    /// # Errors
    ///
    /// [`AlreadyResolved`] if it was resolved before.
    ///
    /// # Examples
    ///
    /// ```
    /// let d: weft::Deferred<u8, weft::Cancelled> = weft::Deferred::new();
    /// d.callback(9).unwrap();
    /// ```
    pub fn callback(&self, value: T) -> Result<(), AlreadyResolved<Result<T, E>>> {
        self.cell.resolve(Ok(value))
    }

    /// Resolves with an error (Twisted's `errback`).
    ///
    /// # Errors
    ///
    /// [`AlreadyResolved`] if it was resolved before.
    ///
    /// # Examples
    ///
    /// ```
    /// let d: weft::Deferred<u8, weft::ThreadError> = weft::Deferred::new();
    /// d.errback(weft::ThreadError::Stopped).unwrap();
    /// ```
    pub fn errback(&self, error: E) -> Result<(), AlreadyResolved<Result<T, E>>> {
        self.cell.resolve(Err(error))
    }

    /// Cancels: runs the canceller, then resolves with `Cancelled` unless the
    /// canceller resolved it. Does nothing once resolved.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::{Deferred, ThreadError};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let d: Deferred<u8> = Deferred::new();
    /// d.cancel();
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), Err(ThreadError::Cancelled));
    /// ```
    pub fn cancel(&self)
    where
        E: From<Cancelled>,
    {
        self.cell.cancel();
    }

    /// Whether a result has arrived (or been consumed).
    ///
    /// # Examples
    ///
    /// ```
    /// let d: weft::Deferred<(), weft::Cancelled> = weft::Deferred::succeed(());
    /// assert!(d.is_resolved());
    /// ```
    pub fn is_resolved(&self) -> bool {
        self.cell.resolved.get()
    }

    /// Consumes the `Deferred`, calling `f` with the result on the loop: at
    /// once if it has arrived, otherwise when it does (Twisted's `addBoth`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    ///
    /// let seen = Rc::new(Cell::new(0));
    /// let s = seen.clone();
    /// let d: weft::Deferred<u8, weft::Cancelled> = weft::Deferred::new();
    /// let r = d.resolver();
    /// d.add_both(move |res| s.set(res.unwrap()));
    /// r.callback(5).unwrap();
    /// assert_eq!(seen.get(), 5);
    /// ```
    pub fn add_both(self, f: impl FnOnce(Result<T, E>) + 'static) {
        let mut state = self.cell.state.borrow_mut();
        match std::mem::replace(&mut *state, State::Consumed) {
            State::Ready(result) => {
                drop(state);
                f(result);
            }
            State::Pending { .. } => {
                *state = State::Pending {
                    waker: None,
                    callback: Some(Box::new(f)),
                };
            }
            State::Consumed => {}
        }
    }

    /// Lets the result arrive unobserved (it is dropped when it does).
    ///
    /// # Examples
    ///
    /// ```
    /// let d: weft::Deferred<u8, weft::Cancelled> = weft::Deferred::new();
    /// d.resolver().callback(1).unwrap();
    /// # let d2: weft::Deferred<u8, weft::Cancelled> = weft::Deferred::new();
    /// d2.detach();
    /// ```
    pub fn detach(self) {
        self.add_both(drop);
    }
}

impl<T: 'static, E: From<Cancelled> + 'static> Default for Deferred<T, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: 'static, E: 'static> Resolver<T, E> {
    /// Resolves with `result`; see [`Deferred::resolve`].
    ///
    /// # Errors
    ///
    /// [`AlreadyResolved`] if it was resolved before.
    ///
    /// # Examples
    ///
    /// ```
    /// let d: weft::Deferred<u8, weft::Cancelled> = weft::Deferred::new();
    /// d.resolver().resolve(Ok(1)).unwrap();
    /// ```
    pub fn resolve(&self, result: Result<T, E>) -> Result<(), AlreadyResolved<Result<T, E>>> {
        self.cell.resolve(result)
    }

    /// Resolves with a value.
    ///
    /// # Errors
    ///
    /// [`AlreadyResolved`] if it was resolved before.
    ///
    /// # Examples
    ///
    /// ```
    /// let d: weft::Deferred<u8, weft::Cancelled> = weft::Deferred::new();
    /// d.resolver().callback(1).unwrap();
    /// ```
    pub fn callback(&self, value: T) -> Result<(), AlreadyResolved<Result<T, E>>> {
        self.cell.resolve(Ok(value))
    }

    /// Resolves with an error.
    ///
    /// # Errors
    ///
    /// [`AlreadyResolved`] if it was resolved before.
    ///
    /// # Examples
    ///
    /// ```
    /// let d: weft::Deferred<u8, weft::Cancelled> = weft::Deferred::new();
    /// d.resolver().errback(weft::Cancelled).unwrap();
    /// ```
    pub fn errback(&self, error: E) -> Result<(), AlreadyResolved<Result<T, E>>> {
        self.cell.resolve(Err(error))
    }

    /// Cancels the `Deferred`; see [`Deferred::cancel`].
    ///
    /// # Examples
    ///
    /// ```
    /// let d: weft::Deferred<u8, weft::Cancelled> = weft::Deferred::new();
    /// d.resolver().cancel();
    /// assert!(d.is_resolved());
    /// ```
    pub fn cancel(&self)
    where
        E: From<Cancelled>,
    {
        self.cell.cancel();
    }

    /// Whether a result has arrived.
    ///
    /// # Examples
    ///
    /// ```
    /// let d: weft::Deferred<u8, weft::Cancelled> = weft::Deferred::new();
    /// assert!(!d.resolver().is_resolved());
    /// ```
    pub fn is_resolved(&self) -> bool {
        self.cell.resolved.get()
    }

    /// Replaces the canceller run by [`cancel`](Resolver::cancel).
    pub(crate) fn set_canceller(&self, canceller: impl FnOnce() + 'static) {
        if !self.cell.resolved.get() {
            *self.cell.canceller.borrow_mut() = Some(Canceller::Boxed(Box::new(canceller)));
        }
    }
}

/// A `Resolver<T, ThreadError>` with `T` erased, so one loop table holds
/// the bridge's jobs of every type. It counts as a live resolver: dropping
/// it unresolved resolves the `Deferred` `Cancelled`, as any resolver does.
pub(crate) struct AnyResolver(Option<Rc<dyn ErasedCell>>);

pub(crate) trait ErasedCell {
    fn into_any(self: Rc<Self>) -> Rc<dyn std::any::Any>;
    fn fail(&self, error: ThreadError);
    /// Gives up one resolver count (the erased resolver's).
    fn release(&self);
}

impl<T: 'static> ErasedCell for Cell<T, ThreadError> {
    fn into_any(self: Rc<Self>) -> Rc<dyn std::any::Any> {
        self
    }

    fn fail(&self, error: ThreadError) {
        let _ = self.resolve(Err(error));
    }

    fn release(&self) {
        release(self);
    }
}

/// Drops one resolver count; the last one out of an unresolved cell resolves
/// it with the abandonment error.
fn release<T, E>(cell: &Cell<T, E>) {
    let left = cell.resolvers.get() - 1;
    cell.resolvers.set(left);
    if left == 0 && !cell.resolved.get() {
        if let Some(error) = cell.abandoned {
            let _ = cell.resolve(Err(error()));
        }
    }
}

impl AnyResolver {
    /// Resolves the erased `Deferred` with `error` (if still unresolved).
    pub(crate) fn fail(&self, error: ThreadError) {
        if let Some(cell) = &self.0 {
            cell.fail(error);
        }
    }

    /// The typed resolver back, if `T` is right.
    pub(crate) fn unerase<T: 'static>(mut self) -> Option<Resolver<T, ThreadError>> {
        let cell = self.0.take()?;
        match cell.into_any().downcast::<Cell<T, ThreadError>>() {
            // The count moves over to the typed resolver unchanged.
            Ok(cell) => Some(Resolver { cell }),
            Err(_) => None,
        }
    }
}

impl Drop for AnyResolver {
    fn drop(&mut self) {
        if let Some(cell) = self.0.take() {
            cell.release();
        }
    }
}

impl<T: 'static> Resolver<T, ThreadError> {
    pub(crate) fn erase(self) -> AnyResolver {
        // Keep this resolver's count for the erased one.
        self.cell.resolvers.set(self.cell.resolvers.get() + 1);
        let cell: Rc<dyn ErasedCell> = self.cell.clone();
        AnyResolver(Some(cell))
    }
}

impl<T, E> Future for Deferred<T, E> {
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.cell.state.borrow_mut();
        match std::mem::replace(&mut *state, State::Consumed) {
            State::Ready(result) => Poll::Ready(result),
            State::Pending { callback, .. } => {
                *state = State::Pending {
                    waker: Some(cx.waker().clone()),
                    callback,
                };
                Poll::Pending
            }
            State::Consumed => panic!("Deferred polled after it returned its result"),
        }
    }
}

impl<T, E> fmt::Debug for Deferred<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deferred")
            .field("resolved", &self.cell.resolved.get())
            .finish()
    }
}

impl<T, E> fmt::Debug for Resolver<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("resolved", &self.cell.resolved.get())
            .finish()
    }
}
