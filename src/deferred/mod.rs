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
//!   away without resolving (work dropped unrun, a task aborted), the
//!   `Deferred` resolves `Cancelled`. That is why [`Deferred::new`] needs
//!   `E: From<Cancelled>`. The count of live resolvers is held up while a
//!   canceller runs, so a canceller that drops resolvers cannot resolve the
//!   cell under a borrow of its own.
//! - A thread job's `Deferred` has no cell: its state is the job's shared
//!   record (`job.rs`, `Repr::Job`), so the job costs one allocation at
//!   most (spent records are reused by the bridge). Its
//!   callbacks run when the loop delivers the record (in the task pass of
//!   that turn, not inside the delivery itself); the job reports work that
//!   can never run, so its resolvers count nothing.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::error::{AlreadyResolved, Cancelled, ThreadError};

mod chain;
mod job;
pub(crate) mod span;

pub(crate) use job::JobCell;
use job::{JobRef, Link};

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

struct Cell<T, E> {
    state: RefCell<State<T, E>>,
    canceller: RefCell<Option<Box<dyn FnOnce()>>>,
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
            c();
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
    repr: Repr<T, E>,
    _not_send: PhantomData<*const ()>,
}

/// Where a `Deferred`'s state lives: a loop-local cell, or the shared record
/// of a thread job (see `job.rs`).
enum Repr<T, E> {
    Local(Rc<Cell<T, E>>),
    Job(JobRef<T, E>),
}

impl<T, E> Repr<T, E> {
    fn resolve(&self, result: Result<T, E>) -> Result<(), AlreadyResolved<Result<T, E>>> {
        match self {
            Repr::Local(cell) => cell.resolve(result),
            Repr::Job(job) => job.resolve(result).map_err(AlreadyResolved),
        }
    }

    fn is_resolved(&self) -> bool {
        match self {
            Repr::Local(cell) => cell.resolved.get(),
            Repr::Job(job) => job.is_resolved(),
        }
    }

    fn cancel(&self)
    where
        E: From<Cancelled>,
    {
        match self {
            Repr::Local(cell) => cell.cancel(),
            Repr::Job(job) => job.cancel(),
        }
    }

    /// A new handle: a counted resolver of a local cell, or the record.
    fn resolver(&self) -> Resolver<T, E> {
        match self {
            Repr::Local(cell) => Resolver::of(cell),
            Repr::Job(job) => Resolver {
                repr: Repr::Job(job.share()),
            },
        }
    }
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
    /// A thread job's resolver names its record: the job itself reports
    /// work that can no longer run, so dropping it releases nothing.
    repr: Repr<T, E>,
}

impl<T, E> Resolver<T, E> {
    fn of(cell: &Rc<Cell<T, E>>) -> Self {
        cell.resolvers.set(cell.resolvers.get() + 1);
        Resolver {
            repr: Repr::Local(cell.clone()),
        }
    }
}

impl<T, E> Clone for Resolver<T, E> {
    fn clone(&self) -> Self {
        self.repr.resolver()
    }
}

impl<T, E> Drop for Resolver<T, E> {
    fn drop(&mut self) {
        if let Repr::Local(cell) = &self.repr {
            release(cell);
        }
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
        let cell = Cell::pending(Some(cancelled_error::<E>));
        *cell.canceller.borrow_mut() = Some(Box::new(canceller));
        Deferred::from_cell(cell)
    }
}

impl<T: 'static, E: 'static> Deferred<T, E> {
    fn from_cell(cell: Cell<T, E>) -> Self {
        Deferred {
            repr: Repr::Local(Rc::new(cell)),
            _not_send: PhantomData,
        }
    }

    /// The `Deferred` of a thread job, whose state is the job's shared
    /// record (no allocation of its own).
    pub(crate) fn from_job(job: Arc<dyn JobCell<T, E>>) -> Self {
        Deferred {
            repr: Repr::Job(JobRef::new(job)),
            _not_send: PhantomData,
        }
    }

    /// A weak link to this `Deferred`'s state (for chains).
    fn link(&self) -> Link<T, E> {
        match &self.repr {
            Repr::Local(cell) => Link::Local(Rc::downgrade(cell)),
            Repr::Job(job) => Link::Job(job.downgrade()),
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
        let cell = Cell::pending(None);
        let _ = cell.resolve(Ok(value));
        Self::from_cell(cell)
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
        let cell = Cell::pending(None);
        let _ = cell.resolve(Err(error));
        Self::from_cell(cell)
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
        self.repr.resolver()
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
        self.repr.resolve(result)
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
        self.repr.resolve(Ok(value))
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
        self.repr.resolve(Err(error))
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
        self.repr.cancel();
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
        self.repr.is_resolved()
    }

    /// Consumes the `Deferred`, calling `f` with the result on the loop: at
    /// once if it has arrived, otherwise when it does (Twisted's `addBoth`).
    ///
    /// A `Deferred` whose result was already taken by polling it (for
    /// example `(&mut d).await`) has no result left to give: `f` never runs.
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
        let cell = match self.repr {
            Repr::Local(cell) => cell,
            Repr::Job(job) => return job.on_result(Box::new(f)),
        };
        let mut state = cell.state.borrow_mut();
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
        match self.repr {
            // A job's record drops its outcome with the record.
            Repr::Job(_) => {}
            Repr::Local(_) => self.add_both(drop),
        }
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
        self.repr.resolve(result)
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
        self.repr.resolve(Ok(value))
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
        self.repr.resolve(Err(error))
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
        self.repr.cancel();
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
        self.repr.is_resolved()
    }

    /// Replaces the canceller run by [`cancel`](Resolver::cancel).
    pub(crate) fn set_canceller(&self, canceller: impl FnOnce() + 'static) {
        if let Repr::Local(cell) = &self.repr {
            if !cell.resolved.get() {
                *cell.canceller.borrow_mut() = Some(Box::new(canceller));
            }
        }
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

impl<T, E> Future for Deferred<T, E> {
    type Output = Result<T, E>;

    /// Inlined into the awaiting future: a thread job's poll is one
    /// dynamic call into its record (`JobRef::poll_take`), with no frame
    /// of its own around it; a local cell's poll stays out of line.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().repr {
            Repr::Local(cell) => poll_local(cell, cx),
            Repr::Job(job) => job.poll_take(cx),
        }
    }
}

/// A local cell's poll (out of line: the inlined `poll` keeps only the
/// thread job's short path).
#[inline(never)]
fn poll_local<T, E>(cell: &Cell<T, E>, cx: &mut Context<'_>) -> Poll<Result<T, E>> {
    let mut state = cell.state.borrow_mut();
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

impl<T, E> fmt::Debug for Deferred<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deferred")
            .field("resolved", &self.repr.is_resolved())
            .finish()
    }
}

impl<T, E> fmt::Debug for Resolver<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("resolved", &self.repr.is_resolved())
            .finish()
    }
}
