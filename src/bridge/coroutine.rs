//! Threads → loop, as a future: [`Remote::run_coroutine_threadsafe`] and
//! its [`CrossThreadFuture`] (asyncio's `run_coroutine_threadsafe` with a
//! `concurrent.futures.Future`).
//!
//! Cancel and completion are one decision, taken in the one-shot cell under
//! its lock: whichever stores an outcome first wins. So a `cancel()` that
//! returns `true` guarantees the outcome is `Cancelled` (asyncio's
//! contract), even when the future completes on the loop in the same turn;
//! the loop-side task is then dropped by a queued request. The loop finds the
//! task by the cell's address, which cannot be reused while the cell lives.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tracing::Instrument;

use super::oneshot;
use crate::deferred::span;
use crate::error::CallError;
use crate::reactor::{self, Handle, Remote};

/// Queues `make` onto the loop, where it builds a future that is spawned as a
/// local task; its outcome is sent to the returned handle.
#[track_caller]
pub(super) fn spawn_from_thread<Fut, F>(
    remote: &Remote,
    make: F,
) -> Result<CrossThreadFuture<Fut::Output>, CallError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let id = rx.key();
    remote
        .call_from_thread(move || {
            if tx.is_done() {
                return; // cancelled before it was built
            }
            let future = match catch_unwind(AssertUnwindSafe(make)) {
                Ok(fut) => fut,
                Err(p) => {
                    tx.send(Err(CallError::panicked(p)));
                    return;
                }
            };
            let Some(handle) = reactor::current() else {
                return;
            };
            // Polled in the caller's span (entered around this call by
            // `call_from_thread`), as the call itself runs.
            let task = match span::current() {
                Some(span) => handle.spawn_local(future.instrument(span)),
                None => handle.spawn_local(future),
            };
            let resolver = task.resolver();
            CrossCancels::register(&handle, id, Box::new(move || resolver.cancel()));
            // `tx` moves into the callback; if the task is dropped at shutdown
            // the callback is dropped with it and `tx` reports LoopStopped.
            task.add_both(move |res| {
                if let Some(h) = reactor::current() {
                    CrossCancels::take(&h, id);
                }
                tx.send(res.map_err(CallError::from))
            });
        })
        .map_err(|_| CallError::LOOP_STOPPED)?;
    Ok(CrossThreadFuture {
        receiver: rx,
        remote: remote.clone(),
    })
}

/// Loop-local: cancellers of tasks started from other threads, by slot id.
#[derive(Default)]
struct CrossCancels {
    map: RefCell<HashMap<usize, Box<dyn FnOnce()>>>,
}

impl CrossCancels {
    fn register(handle: &Handle, id: usize, cancel: Box<dyn FnOnce()>) {
        handle
            .extension(CrossCancels::default)
            .map
            .borrow_mut()
            .insert(id, cancel);
    }

    fn take(handle: &Handle, id: usize) -> Option<Box<dyn FnOnce()>> {
        handle
            .extension(CrossCancels::default)
            .map
            .borrow_mut()
            .remove(&id)
    }
}

impl Remote {
    /// Builds a future on the loop and runs it there as a local task
    /// (asyncio's `run_coroutine_threadsafe`). `make` is `Send`; the future it
    /// builds may be `!Send`. The returned [`CrossThreadFuture`] can be waited
    /// on by a plain thread or awaited by another runtime's task.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::rc::Rc;
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// let t = std::thread::spawn(move || {
    ///     let fut = remote.run_coroutine_threadsafe(|| {
    ///         let local = Rc::new(21); // !Send, built on the loop
    ///         async move { *local * 2 }
    ///     });
    ///     let v = fut.wait();
    ///     remote.stop();
    ///     v
    /// });
    /// reactor.run().unwrap();
    /// assert_eq!(t.join().unwrap(), Ok(42));
    /// ```
    #[track_caller]
    pub fn run_coroutine_threadsafe<Fut, F>(&self, make: F) -> CrossThreadFuture<Fut::Output>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        match spawn_from_thread(self, make) {
            Ok(f) => f,
            Err(e) => {
                let (tx, rx) = oneshot::channel();
                tx.send(Err(e));
                CrossThreadFuture {
                    receiver: rx,
                    remote: self.clone(),
                }
            }
        }
    }
}

/// The outcome of a future running on the loop, for another thread:
/// returned by [`Remote::run_coroutine_threadsafe`].
///
/// Wait with [`wait`](CrossThreadFuture::wait) or
/// [`wait_timeout`](CrossThreadFuture::wait_timeout) from a plain thread, or
/// `.await` it from another runtime (it is a `Send` [`Future`]).
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let remote = reactor.remote();
/// let fut = remote.run_coroutine_threadsafe(|| async { "hi" });
/// let t = std::thread::spawn(move || fut.wait());
/// reactor.call_later(std::time::Duration::from_millis(1), || weft::reactor::current().unwrap().stop());
/// reactor.run().unwrap();
/// assert_eq!(t.join().unwrap(), Ok("hi"));
/// ```
///
/// # Dropping
///
/// Dropping it does not cancel the future on the loop; use
/// [`cancel`](CrossThreadFuture::cancel).
pub struct CrossThreadFuture<T> {
    receiver: oneshot::Receiver<T>,
    remote: Remote,
}

impl<T> fmt::Debug for CrossThreadFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrossThreadFuture")
            .field("ready", &self.receiver.is_ready())
            .finish()
    }
}

impl<T> CrossThreadFuture<T> {
    /// Blocks until the future completes on the loop and returns its output.
    ///
    /// # Errors
    ///
    /// [`CallError::OnLoopThread`] on the loop thread (it would deadlock),
    /// [`CallError::Failed`] with the call's [`ThreadError`](crate::ThreadError): `Panicked`,
    /// `Cancelled`, or `Stopped` if the loop shut down first.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let fut = reactor.remote().run_coroutine_threadsafe(|| async { 1 });
    /// assert_eq!(fut.wait(), Err(weft::CallError::OnLoopThread));
    /// ```
    pub fn wait(self) -> Result<T, CallError> {
        self.wait_ref()
    }

    fn wait_ref(&self) -> Result<T, CallError> {
        if self.remote.is_loop_thread() {
            return Err(CallError::OnLoopThread);
        }
        self.receiver.wait()
    }

    /// Blocks at most `timeout`. [`CallError::TimedOut`] does not cancel the
    /// future: wait again, await, or [`cancel`](CrossThreadFuture::cancel).
    ///
    /// # Errors
    ///
    /// As [`wait`](CrossThreadFuture::wait), plus [`CallError::TimedOut`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let reactor = weft::Reactor::new().unwrap(); // not running
    /// let fut = reactor.remote().run_coroutine_threadsafe(|| async { 1 });
    /// let fut = std::thread::spawn(move || {
    ///     assert_eq!(fut.wait_timeout(Duration::from_millis(5)), Err(weft::CallError::TimedOut));
    ///     fut
    /// }).join().unwrap();
    /// assert_eq!(reactor.run_until_complete(async {}).unwrap(), ());
    /// assert_eq!(std::thread::spawn(move || fut.wait()).join().unwrap(), Ok(1));
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<T, CallError> {
        if self.remote.is_loop_thread() {
            return Err(CallError::OnLoopThread);
        }
        self.receiver.wait_timeout(timeout)
    }

    /// Cancels: the outcome becomes `CallError::Failed(ThreadError::Cancelled)` and the loop is
    /// asked to drop the future. Returns `false` if the outcome had already
    /// been decided, so there was nothing to cancel; `true` guarantees that
    /// [`wait`](CrossThreadFuture::wait) gives `Cancelled`, even if the
    /// future completes on the loop at the same moment.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let fut = reactor.remote().run_coroutine_threadsafe(|| std::future::pending::<()>());
    /// assert!(fut.cancel());
    /// reactor.iterate(Some(std::time::Duration::ZERO));
    /// let r = std::thread::spawn(move || fut.wait()).join().unwrap();
    /// assert_eq!(r, Err(weft::CallError::Failed(weft::ThreadError::Cancelled)));
    /// ```
    pub fn cancel(&self) -> bool {
        if !self.receiver.cancel() {
            return false;
        }
        let id = self.receiver.key();
        let _ = self.remote.call_from_thread(move || {
            if let Some(h) = reactor::current() {
                if let Some(cancel) = CrossCancels::take(&h, id) {
                    cancel();
                }
            }
        });
        true
    }

    /// Whether the outcome has arrived.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let fut = reactor.remote().run_coroutine_threadsafe(|| async {});
    /// assert!(!fut.is_done());
    /// reactor.iterate(Some(std::time::Duration::ZERO));
    /// reactor.iterate(Some(std::time::Duration::ZERO));
    /// assert!(fut.is_done());
    /// ```
    pub fn is_done(&self) -> bool {
        self.receiver.is_ready()
    }
}

impl<T> CrossThreadFuture<T> {
    pub(super) fn receiver(&self) -> &oneshot::Receiver<T> {
        &self.receiver
    }
}

impl<T> Future for CrossThreadFuture<T> {
    type Output = Result<T, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.receiver.poll(cx)
    }
}
