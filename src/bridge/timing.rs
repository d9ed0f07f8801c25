//! Time-driven helpers on top of `Deferred`: [`Deferred::add_timeout`]
//! (Twisted's `Deferred.addTimeout`) and [`LoopingCall`] (Twisted's
//! `task.LoopingCall`). Both use only the public timer API
//! ([`Handle::call_later`]), so they follow the reactor's clock, and a
//! manual clock drives them in tests.
//!
//! Invariants:
//! - a timeout's timer is cancelled as soon as the `Deferred` resolves, so a
//!   resolved chain holds no timer and no resolver of its input;
//! - a `LoopingCall` has at most one pending timer, and its `Deferred` fires
//!   exactly once: `Ok(())` on `stop`, `Panicked` if the function panicked,
//!   `Cancelled` once every `LoopingCall` handle is dropped (its timer holds
//!   it only weakly, so dropping the handles stops it).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::time::Duration;

use crate::deferred::{Deferred, Resolver};
use crate::error::{Cancelled, ThreadError, TimedOut};
use crate::reactor::Handle;
use crate::time::DelayedCall;

impl<T: 'static, E: From<Cancelled> + From<TimedOut> + 'static> Deferred<T, E> {
    /// A `Deferred` that resolves as this one does, unless `delay` passes
    /// first on `handle`'s clock: then this one is cancelled and the result
    /// is `E::from(TimedOut)` (Twisted's `addTimeout`). A canceller that
    /// resolves with a value instead keeps that value.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft::{Reactor, ThreadError, testing::ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
    /// let (worker, _perform) = weft::threads::memory_worker(); // never runs it
    /// let d = reactor.defer_to_worker(&worker, || 1).add_timeout(Duration::from_secs(5), &reactor.handle());
    /// clock.advance(Duration::from_secs(5));
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), Err(ThreadError::TimedOut));
    /// ```
    pub fn add_timeout(self, delay: Duration, handle: &Handle) -> Deferred<T, E> {
        let timed_out = Rc::new(Cell::new(false));
        let upstream = self.resolver();
        let flag = timed_out.clone();
        let call = handle.call_later(delay, move || {
            flag.set(true);
            upstream.cancel();
        });
        self.then(move |res| {
            let _ = call.cancel(); // drops the timer and its resolver
            match res {
                Err(_) if timed_out.get() => Err(E::from(TimedOut)),
                other => other,
            }
        })
    }
}

struct Inner {
    f: RefCell<Option<Box<dyn FnMut()>>>,
    handle: Handle,
    interval: Cell<Duration>,
    /// Clock time of the first call: later calls keep to its grid.
    started_at: Cell<Duration>,
    call: RefCell<Option<DelayedCall>>,
    done: RefCell<Option<Resolver<(), ThreadError>>>,
    calls: Cell<u64>,
}

/// Calls a function every `interval` on the loop (Twisted's
/// `task.LoopingCall`).
///
/// Calls keep to the grid set by [`start`](LoopingCall::start): a call that
/// runs late does not shift the ones after it, and intervals missed
/// entirely (a blocked loop) are skipped, not run in a burst, as Twisted
/// does. The `Deferred` from `start` fires `Ok(())` when
/// [`stop`](LoopingCall::stop) is called, or [`ThreadError::Panicked`] if the
/// function panicked (the loop stops then).
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use std::time::Duration;
/// use weft::{LoopingCall, Reactor, testing::ManualClock};
///
/// let clock = ManualClock::new();
/// let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
/// let ticks = Rc::new(Cell::new(0));
/// let t = ticks.clone();
/// let lc = LoopingCall::new(&reactor.handle(), move || t.set(t.get() + 1));
/// let done = lc.start(Duration::from_secs(1), true).unwrap();
/// assert_eq!(ticks.get(), 1); // `now`: the first call runs at once
/// for _ in 0..3 {
///     clock.advance(Duration::from_secs(1));
///     reactor.iterate(Some(Duration::ZERO));
/// }
/// assert_eq!(ticks.get(), 4);
/// lc.stop();
/// assert_eq!(reactor.run_until_complete(done).unwrap(), Ok(()));
/// ```
#[derive(Clone)]
pub struct LoopingCall {
    inner: Rc<Inner>,
}

impl fmt::Debug for LoopingCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopingCall")
            .field("running", &self.is_running())
            .field("interval", &self.inner.interval.get())
            .field("calls", &self.inner.calls.get())
            .finish()
    }
}

/// [`LoopingCall::start`] on a loop that is already running.
///
/// # Examples
///
/// ```
/// assert_eq!(weft::AlreadyRunning.to_string(), "looping call already running");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlreadyRunning;

impl fmt::Display for AlreadyRunning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("looping call already running")
    }
}

impl std::error::Error for AlreadyRunning {}

impl LoopingCall {
    /// A stopped looping call of `f` on `handle`'s loop.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let lc = weft::LoopingCall::new(&reactor.handle(), || ());
    /// assert!(!lc.is_running());
    /// ```
    pub fn new(handle: &Handle, f: impl FnMut() + 'static) -> LoopingCall {
        LoopingCall {
            inner: Rc::new(Inner {
                f: RefCell::new(Some(Box::new(f))),
                handle: handle.clone(),
                interval: Cell::new(Duration::ZERO),
                started_at: Cell::new(Duration::ZERO),
                call: RefCell::new(None),
                done: RefCell::new(None),
                calls: Cell::new(0),
            }),
        }
    }

    /// Starts calling every `interval`; the first call runs at once if
    /// `now`, else after one interval. The `Deferred` fires when the loop
    /// ends (see the type's docs).
    ///
    /// # Errors
    ///
    /// [`AlreadyRunning`] if it was started and not stopped.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let lc = weft::LoopingCall::new(&reactor.handle(), || ());
    /// let _done = lc.start(Duration::from_secs(1), false).unwrap();
    /// assert!(lc.start(Duration::from_secs(1), false).is_err());
    /// lc.stop();
    /// ```
    pub fn start(
        &self,
        interval: Duration,
        now: bool,
    ) -> Result<Deferred<(), ThreadError>, AlreadyRunning> {
        if self.is_running() {
            return Err(AlreadyRunning);
        }
        let d = Deferred::new();
        *self.inner.done.borrow_mut() = Some(d.resolver());
        self.inner.interval.set(interval);
        self.inner.started_at.set(self.inner.handle.seconds());
        if now {
            Inner::tick(&self.inner);
        } else {
            Inner::schedule(&self.inner);
        }
        Ok(d)
    }

    /// Stops the calls; the `Deferred` from [`start`](LoopingCall::start)
    /// fires `Ok(())`. Harmless if not running.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// weft::LoopingCall::new(&reactor.handle(), || ()).stop();
    /// ```
    pub fn stop(&self) {
        let call = self.inner.call.borrow_mut().take();
        if let Some(call) = call {
            let _ = call.cancel();
        }
        let done = self.inner.done.borrow_mut().take();
        if let Some(done) = done {
            let _ = done.callback(());
        }
    }

    /// Whether it is started and not stopped.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert!(!weft::LoopingCall::new(&reactor.handle(), || ()).is_running());
    /// ```
    pub fn is_running(&self) -> bool {
        self.inner.done.borrow().is_some()
    }

    /// How many times the function has been called.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert_eq!(weft::LoopingCall::new(&reactor.handle(), || ()).calls(), 0);
    /// ```
    pub fn calls(&self) -> u64 {
        self.inner.calls.get()
    }
}

impl Inner {
    fn tick(this: &Rc<Inner>) {
        let f = this.f.borrow_mut().take();
        let Some(mut f) = f else { return };
        this.calls.set(this.calls.get() + 1);
        let outcome = catch_unwind(AssertUnwindSafe(&mut f));
        *this.f.borrow_mut() = Some(f);
        if let Err(payload) = outcome {
            let done = this.done.borrow_mut().take();
            if let Some(done) = done {
                let _ = done.errback(ThreadError::from_panic_payload(payload));
            }
            return;
        }
        if this.done.borrow().is_some() {
            Inner::schedule(this);
        }
    }

    /// Arms the timer for the next point on the grid after now.
    fn schedule(this: &Rc<Inner>) {
        let interval = this.interval.get();
        let now = this.handle.seconds();
        let delay = if interval.is_zero() {
            Duration::ZERO
        } else {
            let elapsed = now.saturating_sub(this.started_at.get()).as_nanos();
            let step = interval.as_nanos();
            let next = (elapsed / step + 1) * step;
            Duration::from_nanos(u64::try_from(next - elapsed).unwrap_or(u64::MAX))
        };
        let weak = Rc::downgrade(this);
        let call = this.handle.call_later(delay, move || {
            if let Some(this) = weak.upgrade() {
                this.call.borrow_mut().take();
                Inner::tick(&this);
            }
        });
        *this.call.borrow_mut() = Some(call);
    }
}
