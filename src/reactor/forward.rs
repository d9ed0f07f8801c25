//! `Reactor`'s inherent loop-side operations: each forwards to its
//! [`Handle`] (the reactor does not dereference to it; see the API
//! guidelines on `Deref`). The bridge layer adds its own forwarding block
//! for the thread operations in its files.

use std::future::Future;
use std::time::Duration;

use crate::deferred::Deferred;
use crate::error::Cancelled;
use crate::time::DelayedCall;

use super::core::Reactor;
use super::local::LocalError;
use super::stats::ReactorStatistics;
use super::triggers::{Phase, SystemEvent, TriggerId, TriggerOutcome};

impl Reactor {
    /// [`Handle::call_later`](super::Handle::call_later) on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let call = reactor.call_later(std::time::Duration::MAX, || ()); // never
    /// assert!(call.is_active());
    /// ```
    #[track_caller]
    pub fn call_later(&self, delay: Duration, f: impl FnOnce() + 'static) -> DelayedCall {
        self.handle.call_later(delay, f)
    }

    /// [`Handle::call_soon`](super::Handle::call_soon) on this reactor.
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
        self.handle.call_soon(f)
    }

    /// [`Handle::sleep`](super::Handle::sleep) on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let nap = reactor.sleep(std::time::Duration::from_millis(1));
    /// assert_eq!(reactor.run_until_complete(nap).unwrap(), Ok(()));
    /// ```
    #[track_caller]
    pub fn sleep(&self, delay: Duration) -> Deferred<(), Cancelled> {
        self.handle.sleep(delay)
    }

    /// [`Handle::delayed_calls`](super::Handle::delayed_calls) on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert!(reactor.delayed_calls().is_empty());
    /// ```
    pub fn delayed_calls(&self) -> Vec<DelayedCall> {
        self.handle.delayed_calls()
    }

    /// [`Handle::seconds`](super::Handle::seconds) on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::builder().clock(weft::testing::ManualClock::new()).build().unwrap();
    /// assert_eq!(reactor.seconds(), std::time::Duration::ZERO);
    /// ```
    pub fn seconds(&self) -> Duration {
        self.handle.seconds()
    }

    /// [`Handle::spawn_local`](super::Handle::spawn_local) on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let d = reactor.spawn_local(async { 1 });
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(1));
    /// ```
    #[track_caller]
    pub fn spawn_local<F>(&self, future: F) -> Deferred<F::Output>
    where
        F: Future + 'static,
    {
        self.handle.spawn_local(future)
    }

    /// [`Handle::call_when_running`](super::Handle::call_when_running) on
    /// this reactor.
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
        self.handle.call_when_running(f)
    }

    /// [`Handle::add_system_event_trigger`](super::Handle::add_system_event_trigger)
    /// on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::reactor::{Phase, SystemEvent};
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, || ());
    /// ```
    #[track_caller]
    pub fn add_system_event_trigger<R: TriggerOutcome>(
        &self,
        phase: Phase,
        event: SystemEvent,
        f: impl FnOnce() -> R + 'static,
    ) -> TriggerId {
        self.handle.add_system_event_trigger(phase, event, f)
    }

    /// [`Handle::remove_system_event_trigger`](super::Handle::remove_system_event_trigger)
    /// on this reactor.
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
        self.handle.remove_system_event_trigger(id)
    }

    /// [`Handle::stop`](super::Handle::stop) on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.stop();
    /// reactor.run().unwrap();
    /// ```
    pub fn stop(&self) {
        self.handle.stop()
    }

    /// [`Handle::has_started`](super::Handle::has_started) on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert!(!reactor.has_started());
    /// ```
    pub fn has_started(&self) -> bool {
        self.handle.has_started()
    }

    /// [`Handle::is_running`](super::Handle::is_running) on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.run_until_complete(async {}).unwrap();
    /// assert!(reactor.is_running()); // started, not stopped
    /// ```
    pub fn is_running(&self) -> bool {
        self.handle.is_running()
    }

    /// [`Handle::is_stopped`](super::Handle::is_stopped) on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert!(!reactor.is_stopped());
    /// ```
    pub fn is_stopped(&self) -> bool {
        self.handle.is_stopped()
    }

    /// [`Handle::statistics`](super::Handle::statistics) on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert_eq!(reactor.statistics().tasks_alive, 0);
    /// ```
    pub fn statistics(&self) -> ReactorStatistics {
        self.handle.statistics()
    }

    /// [`Handle::insert_local`](super::Handle::insert_local) on this reactor.
    ///
    /// # Errors
    ///
    /// As [`Handle::insert_local`](super::Handle::insert_local).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert_eq!(reactor.insert_local(0u64), Ok(None));
    /// ```
    pub fn insert_local<T: 'static>(&self, value: T) -> Result<Option<T>, LocalError> {
        self.handle.insert_local(value)
    }

    /// [`Handle::with_local`](super::Handle::with_local) on this reactor.
    ///
    /// # Errors
    ///
    /// As [`Handle::with_local`](super::Handle::with_local).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.insert_local(41u64).unwrap();
    /// assert_eq!(reactor.with_local(|n: &mut u64| { *n += 1; *n }), Ok(42));
    /// ```
    pub fn with_local<T: 'static, R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, LocalError> {
        self.handle.with_local(f)
    }

    /// [`Handle::remove_local`](super::Handle::remove_local) on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert_eq!(reactor.remove_local::<u64>(), None);
    /// ```
    pub fn remove_local<T: 'static>(&self) -> Option<T> {
        self.handle.remove_local()
    }
}
