//! [`DelayedCall`]: the user's handle to a scheduled call.

use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use super::heap::{CallCell, CallState, Timers};
use crate::error::DelayedCallError;

/// A call scheduled with [`Handle::call_later`](crate::reactor::Handle::call_later).
///
/// It can be cancelled, moved ([`reset`](DelayedCall::reset),
/// [`delay`](DelayedCall::delay)) and inspected until it runs. Cloning gives
/// another handle to the same call. Loop-thread only (`!Send`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weft::Reactor;
///
/// let reactor = Reactor::new().unwrap();
/// let call = reactor.call_later(Duration::from_secs(60), || unreachable!());
/// assert!(call.is_active());
/// call.cancel().unwrap();
/// assert!(!call.is_active());
/// ```
#[derive(Clone)]
pub struct DelayedCall {
    call: Rc<CallCell>,
}

impl DelayedCall {
    pub(super) fn new(call: Rc<CallCell>) -> Self {
        DelayedCall { call }
    }

    fn timers(&self) -> Result<Rc<Timers>, DelayedCallError> {
        match self.call.state.get() {
            CallState::Called => Err(DelayedCallError::AlreadyCalled),
            CallState::Cancelled => Err(DelayedCallError::AlreadyCancelled),
            CallState::Scheduled => self
                .call
                .timers
                .upgrade()
                .ok_or(DelayedCallError::AlreadyCancelled),
        }
    }

    /// Cancels the call; it will never run and its closure is dropped now.
    ///
    /// # Errors
    ///
    /// [`DelayedCallError::AlreadyCalled`] if it ran (or is running: cancelling
    /// from inside the call), [`DelayedCallError::AlreadyCancelled`] if it was
    /// cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let reactor = weft::Reactor::new().unwrap();
    /// let call = reactor.call_later(Duration::from_secs(1), || ());
    /// assert!(call.cancel().is_ok());
    /// assert!(call.cancel().is_err());
    /// ```
    pub fn cancel(&self) -> Result<(), DelayedCallError> {
        let timers = self.timers()?;
        self.call.state.set(CallState::Cancelled);
        drop(self.call.func.borrow_mut().take());
        timers.cancelled();
        Ok(())
    }

    /// Reschedules the call to run `delay` from now (earlier or later).
    ///
    /// # Errors
    ///
    /// As [`cancel`](DelayedCall::cancel).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft::{Reactor, testing::ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
    /// clock.advance(Duration::from_secs(10));
    /// let call = reactor.call_later(Duration::from_secs(1), || ());
    /// call.reset(Duration::from_secs(3)).unwrap();
    /// assert_eq!(call.time(), Duration::from_secs(13));
    /// ```
    pub fn reset(&self, delay: Duration) -> Result<(), DelayedCallError> {
        let timers = self.timers()?;
        let deadline = timers.now().saturating_add(delay);
        timers.reschedule(&self.call, deadline);
        Ok(())
    }

    /// Postpones the call by `by` more.
    ///
    /// # Errors
    ///
    /// As [`cancel`](DelayedCall::cancel).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft::{Reactor, testing::ManualClock};
    ///
    /// let reactor = Reactor::builder().clock(ManualClock::new()).build().unwrap();
    /// let call = reactor.call_later(Duration::from_secs(1), || ());
    /// call.delay(Duration::from_secs(1)).unwrap();
    /// assert_eq!(call.time(), Duration::from_secs(2));
    /// ```
    pub fn delay(&self, by: Duration) -> Result<(), DelayedCallError> {
        let timers = self.timers()?;
        let deadline = self.call.deadline.get().saturating_add(by);
        timers.reschedule(&self.call, deadline);
        Ok(())
    }

    /// Whether the call is still scheduled (not run, not cancelled).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let reactor = weft::Reactor::new().unwrap();
    /// let call = reactor.call_later(Duration::ZERO, || ());
    /// assert!(call.is_active());
    /// reactor.iterate(Some(Duration::ZERO));
    /// assert!(!call.is_active());
    /// ```
    pub fn is_active(&self) -> bool {
        self.call.state.get() == CallState::Scheduled
    }

    /// When the call is due, as time since the reactor clock's origin.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft::{Reactor, testing::ManualClock};
    ///
    /// let reactor = Reactor::builder().clock(ManualClock::new()).build().unwrap();
    /// let call = reactor.call_later(Duration::from_secs(5), || ());
    /// assert_eq!(call.time(), Duration::from_secs(5));
    /// ```
    pub fn time(&self) -> Duration {
        self.call.deadline.get()
    }

    /// Whether two handles name the same call (Twisted: equality is identity).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let reactor = weft::Reactor::new().unwrap();
    /// let a = reactor.call_later(Duration::ZERO, || ());
    /// let b = reactor.call_later(Duration::ZERO, || ());
    /// assert!(a.same_call(&a.clone()));
    /// assert!(!a.same_call(&b));
    /// ```
    pub fn same_call(&self, other: &DelayedCall) -> bool {
        Rc::ptr_eq(&self.call, &other.call)
    }
}

impl fmt::Debug for DelayedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.call.state.get();
        write!(
            f,
            "<DelayedCall [{:?}] called={} cancelled={} at {}>",
            self.call.deadline.get(),
            u8::from(state == CallState::Called),
            u8::from(state == CallState::Cancelled),
            self.call.location
        )
    }
}
