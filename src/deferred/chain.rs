//! Callback chains on [`Deferred`]: Twisted's `addCallbacks` family and
//! `DeferredList`, as combinators that each return a new `Deferred`.
//!
//! Design:
//! - Every step runs on the loop, at once when its input resolves (as
//!   Twisted's callbacks do), never in a later turn.
//! - Cancelling a step's output cancels its input, and through it the work
//!   at the head of the chain. The output holds its input by `Weak` only, so
//!   a chain never forms an `Rc` cycle: an input nobody can resolve any more
//!   is still abandoned (and resolves `Cancelled`) as a plain one is.
//! - A step that returns a `Deferred` ([`and_then`](Deferred::and_then)) is
//!   waited for before the chain goes on (Twisted's chaining).

use std::cell::RefCell;
use std::rc::Rc;

use super::{Deferred, Link, Resolver};
use crate::error::Cancelled;

/// Cancels whichever link of an `and_then` chain is pending.
type CancelLink = Box<dyn Fn()>;

impl<T: 'static, E: From<Cancelled> + 'static> Deferred<T, E> {
    /// A `Deferred` resolved with `f(result)` once this one resolves:
    /// Twisted's `addBoth` as a new link. `f` sees errors too and may
    /// recover from them.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::{Cancelled, Deferred};
    ///
    /// let d: Deferred<u8, Cancelled> = Deferred::new();
    /// let r = d.resolver();
    /// let out: Deferred<&str, Cancelled> = d.then(|res| Ok(if res.is_ok() { "ok" } else { "err" }));
    /// r.errback(Cancelled).unwrap();
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert_eq!(reactor.run_until_complete(out).unwrap(), Ok("err"));
    /// ```
    pub fn then<U, E2>(
        self,
        f: impl FnOnce(Result<T, E>) -> Result<U, E2> + 'static,
    ) -> Deferred<U, E2>
    where
        U: 'static,
        E2: From<Cancelled> + 'static,
    {
        let upstream = self.link();
        let out = Deferred::with_canceller(move || upstream.cancel());
        let r = out.resolver();
        self.add_both(move |res| {
            let _ = r.resolve(f(res));
        });
        out
    }

    /// A `Deferred` holding `f` applied to this one's value; errors pass
    /// through.
    ///
    /// # Examples
    ///
    /// ```
    /// let d: weft::Deferred<u8, weft::Cancelled> = weft::Deferred::new();
    /// let r = d.resolver();
    /// let doubled = d.map(|v| u16::from(v) * 2);
    /// r.callback(21).unwrap();
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert_eq!(reactor.run_until_complete(doubled).unwrap(), Ok(42));
    /// ```
    pub fn map<U: 'static>(self, f: impl FnOnce(T) -> U + 'static) -> Deferred<U, E> {
        self.then(move |res| res.map(f))
    }

    /// A `Deferred` holding `f` applied to this one's error; values pass
    /// through. Cancellation reaches `f` as `E::from(Cancelled)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::{Cancelled, Deferred, ThreadError};
    ///
    /// let d: Deferred<u8, Cancelled> = Deferred::new();
    /// let out: Deferred<u8, ThreadError> = d.map_err(ThreadError::from);
    /// out.cancel();
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert_eq!(reactor.run_until_complete(out).unwrap(), Err(ThreadError::Cancelled));
    /// ```
    pub fn map_err<E2>(self, f: impl FnOnce(E) -> E2 + 'static) -> Deferred<T, E2>
    where
        E2: From<Cancelled> + 'static,
    {
        self.then(move |res| res.map_err(f))
    }

    /// Twisted's `addCallbacks`: `on_value` or `on_error`, whichever applies,
    /// and the chain goes on with what it returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::{Cancelled, Deferred};
    ///
    /// let d: Deferred<u8, Cancelled> = Deferred::fail(Cancelled);
    /// let out: Deferred<u8, Cancelled> = d.add_callbacks(|v| Ok(v + 1), |_cancelled| Ok(0));
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert_eq!(reactor.run_until_complete(out).unwrap(), Ok(0));
    /// ```
    pub fn add_callbacks<U, E2>(
        self,
        on_value: impl FnOnce(T) -> Result<U, E2> + 'static,
        on_error: impl FnOnce(E) -> Result<U, E2> + 'static,
    ) -> Deferred<U, E2>
    where
        U: 'static,
        E2: From<Cancelled> + 'static,
    {
        self.then(move |res| match res {
            Ok(v) => on_value(v),
            Err(e) => on_error(e),
        })
    }

    /// Chains a step that itself returns a `Deferred`: the output resolves
    /// when that one does (Twisted's callback returning a `Deferred`).
    /// Cancelling the output cancels whichever link is pending.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::{Cancelled, Deferred};
    ///
    /// let first: Deferred<u8, Cancelled> = Deferred::succeed(20);
    /// let inner: Deferred<u8, Cancelled> = Deferred::new();
    /// let r = inner.resolver();
    /// let out = first.and_then(move |v| inner.map(move |w| v + w));
    /// r.callback(22).unwrap();
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert_eq!(reactor.run_until_complete(out).unwrap(), Ok(42));
    /// ```
    pub fn and_then<U: 'static>(
        self,
        f: impl FnOnce(T) -> Deferred<U, E> + 'static,
    ) -> Deferred<U, E> {
        // The link that is pending now: the input, then the inner Deferred.
        let pending: Rc<RefCell<Option<CancelLink>>> = Rc::new(RefCell::new(None));
        let upstream = self.link();
        *pending.borrow_mut() = Some(Box::new(move || upstream.cancel()));
        let canceller = {
            let pending = pending.clone();
            move || {
                let cancel = pending.borrow_mut().take();
                if let Some(cancel) = cancel {
                    cancel();
                }
            }
        };
        let out = Deferred::with_canceller(canceller);
        let r = out.resolver();
        self.add_both(move |res| match res {
            Err(e) => {
                let _ = r.resolve(Err(e));
            }
            Ok(v) => {
                let inner = f(v);
                let inner_link = inner.link();
                *pending.borrow_mut() = Some(Box::new(move || inner_link.cancel()));
                inner.add_both(move |res| {
                    let _ = r.resolve(res);
                });
            }
        });
        out
    }
}

/// Waits for every `Deferred` (Twisted's `DeferredList` with
/// `fireOnOneErrback=True, consumeErrors=True`): all values in input order,
/// or the first error, at which point the others still pending are
/// cancelled. Cancelling the output cancels every input still pending.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let jobs: Vec<_> = (1..=3).map(|i| reactor.defer_to_thread(move || i * 10)).collect();
/// let all = weft::gather(jobs);
/// assert_eq!(reactor.run_until_complete(all).unwrap(), Ok(vec![10, 20, 30]));
/// ```
pub fn gather<T, E>(deferreds: Vec<Deferred<T, E>>) -> Deferred<Vec<T>, E>
where
    T: 'static,
    E: From<Cancelled> + 'static,
{
    struct State<T, E> {
        values: Vec<Option<T>>,
        left: usize,
        out: Option<Resolver<Vec<T>, E>>,
        inputs: Vec<Link<T, E>>,
    }

    fn cancel_all<T, E: From<Cancelled>>(inputs: Vec<Link<T, E>>) {
        for input in inputs {
            input.cancel();
        }
    }

    let n = deferreds.len();
    if n == 0 {
        return Deferred::succeed(Vec::new());
    }
    let state: Rc<RefCell<State<T, E>>> = Rc::new(RefCell::new(State {
        values: (0..n).map(|_| None).collect(),
        left: n,
        out: None,
        inputs: deferreds.iter().map(Deferred::link).collect(),
    }));
    let out = {
        let state = Rc::downgrade(&state);
        Deferred::with_canceller(move || {
            if let Some(state) = state.upgrade() {
                let inputs = std::mem::take(&mut state.borrow_mut().inputs);
                cancel_all(inputs);
            }
        })
    };
    state.borrow_mut().out = Some(out.resolver());
    for (i, d) in deferreds.into_iter().enumerate() {
        let state = state.clone();
        d.add_both(move |res| {
            let mut st = state.borrow_mut();
            let Some(out) = st.out.as_ref() else { return };
            match res {
                Ok(v) => {
                    st.values[i] = Some(v);
                    st.left -= 1;
                    if st.left == 0 {
                        let out = st.out.take();
                        let values = std::mem::take(&mut st.values);
                        drop(st);
                        if let Some(out) = out {
                            let _ = out.callback(values.into_iter().flatten().collect());
                        }
                    }
                }
                Err(e) => {
                    let _ = out;
                    let out = st.out.take();
                    let inputs = std::mem::take(&mut st.inputs);
                    drop(st);
                    if let Some(out) = out {
                        let _ = out.errback(e);
                    }
                    cancel_all(inputs);
                }
            }
        });
    }
    out
}
