//! [`Handle`]: the loop-side (`!Send`) handle and its operations.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location, catch_unwind, resume_unwind};
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use crate::deferred::{Deferred, Resolver};
use crate::error::{Cancelled, ThreadError};
use crate::time::DelayedCall;

use super::core::Inner;
use super::remote::{Remote, STATE_RUNNING, STATE_STOPPING};
use super::stats::{ReactorStatistics, statistics_of};
use super::triggers::{Phase, SystemEvent, TriggerId, TriggerOutcome};

/// The loop-side handle to a reactor: cheap to clone, `!Send`.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let handle = reactor.handle();
/// handle.call_soon(|| println!("hi"));
/// reactor.iterate(Some(std::time::Duration::ZERO));
/// ```
///
/// It cannot leave the loop thread; use a [`Remote`] for that:
///
/// ```compile_fail
/// let reactor = weft::Reactor::new().unwrap();
/// let handle = reactor.handle();
/// std::thread::spawn(move || handle.stop()); // error: `Rc` cannot be sent
/// ```
#[derive(Clone)]
pub struct Handle {
    pub(super) inner: Rc<Inner>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

/// Fails a task's `Deferred` with `Stopped` if the task is dropped before it
/// produced anything (shutdown); a no-op once resolved (output, panic, or
/// the `Deferred` cancelled).
struct StopOnDrop<T: 'static>(Resolver<T>);

impl<T: 'static> Drop for StopOnDrop<T> {
    fn drop(&mut self) {
        if !self.0.is_resolved() {
            let _ = self.0.errback(ThreadError::Stopped);
        }
    }
}

impl Handle {
    pub(super) fn from_inner(inner: Rc<Inner>) -> Handle {
        Handle { inner }
    }

    /// Runs `f` on the loop after `delay`, returning a handle to cancel or
    /// move it. Equal deadlines run in scheduling order. A delay up to
    /// `Duration::MAX` means "never" (it saturates).
    ///
    /// # Precision
    ///
    /// A timed call never runs before its deadline on the reactor's clock.
    /// When the loop sleeps until a deadline less than 50 ms away, it wakes
    /// within microseconds of it (on Linux: a `timerfd`); a sleep of 50 ms
    /// or more is rounded up to whole milliseconds (epoll's unit, as tokio
    /// rounds its timers), so such a call may run up to 1 ms late, and the
    /// sleep costs no syscall beyond the poll itself.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.call_later(Duration::from_millis(1), || weft::reactor::current().unwrap().stop());
    /// reactor.run().unwrap();
    /// ```
    #[track_caller]
    pub fn call_later(&self, delay: Duration, f: impl FnOnce() + 'static) -> DelayedCall {
        self.inner
            .timers
            .schedule(delay, Box::new(f), Location::caller())
    }

    /// Schedules `f` at `deadline` on the reactor's clock.
    pub(super) fn schedule_at(
        &self,
        deadline: Duration,
        f: Box<dyn FnOnce()>,
        location: &'static Location<'static>,
    ) -> DelayedCall {
        self.inner.timers.schedule_at(deadline, f, location)
    }

    /// Runs `f` on the loop in the next timer pass (`call_later` with no delay).
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
        self.call_later(Duration::ZERO, f)
    }

    /// A [`Deferred`] that fires after `delay` (Twisted's `deferLater`,
    /// asyncio's `sleep`); cancelling it cancels the timer.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let out = reactor.run_until_complete(async {
    ///     let h = weft::reactor::current().unwrap();
    ///     h.sleep(Duration::from_millis(1)).await.unwrap();
    ///     "woke"
    /// });
    /// assert_eq!(out.unwrap(), "woke");
    /// ```
    #[track_caller]
    pub fn sleep(&self, delay: Duration) -> Deferred<(), Cancelled> {
        let d = Deferred::new();
        let r = d.resolver();
        let call = self.call_later(delay, move || {
            let _ = r.callback(());
        });
        d.resolver().set_canceller(move || {
            let _ = call.cancel();
        });
        d
    }

    /// Every scheduled, uncancelled timed call, earliest first (Twisted's
    /// `getDelayedCalls`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let reactor = weft::Reactor::new().unwrap();
    /// let a = reactor.call_later(Duration::from_secs(1), || ());
    /// let b = reactor.call_later(Duration::from_secs(2), || ());
    /// b.cancel().unwrap();
    /// let calls = reactor.delayed_calls();
    /// assert_eq!(calls.len(), 1);
    /// assert!(calls[0].same_call(&a));
    /// ```
    pub fn delayed_calls(&self) -> Vec<DelayedCall> {
        self.inner.timers.delayed_calls()
    }

    /// The reactor clock's time (Twisted's `seconds()`).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::{Reactor, testing::ManualClock};
    /// let reactor = Reactor::builder().clock(ManualClock::new()).build().unwrap();
    /// assert_eq!(reactor.seconds(), std::time::Duration::ZERO);
    /// ```
    pub fn seconds(&self) -> Duration {
        self.inner.timers.now()
    }

    /// Spawns a (possibly `!Send`) future on the loop. The returned
    /// [`Deferred`] gets its output, `ThreadError::Panicked` if it panicked,
    /// or `ThreadError::Stopped` if the loop shut down first (its future is
    /// dropped then). Cancelling that `Deferred` drops the future: at once
    /// if the task is idle, else when the task pass reaches it (or, from
    /// inside the task itself, when its poll returns).
    ///
    /// The cost per task does not depend on how many tasks are alive.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::rc::Rc;
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let local = Rc::new(5); // !Send is fine
    /// let d = reactor.spawn_local(async move { *local + 1 });
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(6));
    /// ```
    #[track_caller]
    pub fn spawn_local<F>(&self, future: F) -> Deferred<F::Output>
    where
        F: Future + 'static,
    {
        let location = Location::caller();
        let d = Deferred::new();
        let guard = StopOnDrop(d.resolver());
        let task = self.inner.tasks.spawn(
            &self.inner.shared,
            async move {
                let guard = guard;
                let mut future = std::pin::pin!(future);
                let outcome = std::future::poll_fn(|cx| {
                    match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                        Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
                        Ok(Poll::Pending) => Poll::Pending,
                        Err(payload) => Poll::Ready(Err(payload)),
                    }
                })
                .await;
                match outcome {
                    Ok(v) => {
                        let _ = guard.0.callback(v);
                    }
                    Err(payload) => {
                        // The awaiter learns of the panic first and keeps
                        // its payload; then the loop's panic policy sees a
                        // copy (same type for `&str` and `String` payloads).
                        let copy = crate::error::copy_payload(&*payload);
                        let _ = guard.0.errback(ThreadError::from_panic_payload(payload));
                        resume_unwind(copy);
                    }
                }
            },
            location,
        );
        let weak = Rc::downgrade(&self.inner);
        let r = d.resolver();
        d.resolver().set_canceller(move || {
            // Resolve first, so the task's drop guard finds it resolved.
            let _ = r.errback(ThreadError::Cancelled);
            if let Some(inner) = weak.upgrade() {
                inner.tasks.cancel(task);
            }
        });
        d
    }

    /// Runs `f` when the loop starts running (at once if it already has):
    /// a `During` startup trigger.
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
        if self.inner.started.get() {
            self.inner.guard("call_when_running", Location::caller(), f);
        } else {
            self.add_system_event_trigger(Phase::During, SystemEvent::Startup, f);
        }
    }

    /// Adds a trigger for `phase` of `event`. A `Before` trigger may return a
    /// future or [`Deferred`] that the event waits for (bounded by the
    /// shutdown timeout) before its `During` phase.
    ///
    /// `event` may be a [`SystemEvent`] or its name (`"startup"`,
    /// `"shutdown"`) parsed with `str::parse`.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::reactor::{Phase, SystemEvent};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let event: SystemEvent = "shutdown".parse().unwrap();
    /// reactor.add_system_event_trigger(Phase::During, event, || println!("stopping"));
    /// reactor.stop();
    /// reactor.run().unwrap();
    /// ```
    #[track_caller]
    pub fn add_system_event_trigger<R: TriggerOutcome>(
        &self,
        phase: Phase,
        event: SystemEvent,
        f: impl FnOnce() -> R + 'static,
    ) -> TriggerId {
        self.inner.triggers.add(phase, event, f, Location::caller())
    }

    /// Removes a trigger that has not run; returns whether it was there.
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
        self.inner.triggers.remove(id)
    }

    /// Asks the loop to stop after the current turn; the shutdown sequence
    /// then runs. Calling it again is harmless.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.stop();
    /// reactor.stop();
    /// reactor.run().unwrap();
    /// ```
    pub fn stop(&self) {
        self.inner.shared.request_stop();
    }

    /// The thread-safe handle.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// std::thread::spawn(move || remote.stop()).join().unwrap();
    /// reactor.run().unwrap();
    /// ```
    pub fn remote(&self) -> Remote {
        Remote {
            shared: self.inner.shared.clone(),
        }
    }

    /// Whether the reactor has started (its startup triggers fired).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert!(!reactor.has_started());
    /// ```
    pub fn has_started(&self) -> bool {
        self.inner.started.get()
    }

    /// Whether the reactor is running: started, and its shutdown not begun
    /// (Twisted's `reactor.running`). Same as [`Remote::is_running`].
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert!(!reactor.is_running());
    /// reactor.call_soon(|| {
    ///     let h = weft::reactor::current().unwrap();
    ///     assert!(h.is_running());
    ///     h.stop();
    /// });
    /// reactor.run().unwrap();
    /// assert!(!reactor.is_running());
    /// ```
    pub fn is_running(&self) -> bool {
        self.inner.shared.state() == STATE_RUNNING
    }

    /// Whether the reactor's shutdown has begun or finished. Same as
    /// [`Remote::is_stopped`].
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.stop();
    /// reactor.run().unwrap();
    /// assert!(reactor.is_stopped());
    /// ```
    pub fn is_stopped(&self) -> bool {
        self.inner.shared.state() >= STATE_STOPPING
    }

    /// Whether the shutdown sequence has finished (state `STOPPED`): unlike
    /// [`is_stopped`](Handle::is_stopped), false while shutdown triggers run.
    #[inline]
    pub(crate) fn has_ended(&self) -> bool {
        self.inner.shared.state() == super::remote::STATE_STOPPED
    }

    /// Whether `weak` came from [`Remote::downgrade`] on this reactor: the
    /// same check as [`Remote::is`], without cloning a `Remote` (two
    /// reference-count updates on a word that other threads write).
    pub(crate) fn is(&self, weak: &std::sync::Weak<dyn std::any::Any + Send + Sync>) -> bool {
        std::ptr::addr_eq(weak.as_ptr(), std::sync::Arc::as_ptr(&self.inner.shared))
    }

    /// Whether `remote` is this reactor's (no `Remote` cloned).
    pub(crate) fn is_remote(&self, remote: &Remote) -> bool {
        std::sync::Arc::ptr_eq(&self.inner.shared, &remote.shared)
    }

    /// A snapshot of the reactor's counters.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert_eq!(reactor.statistics().turns, 0);
    /// ```
    pub fn statistics(&self) -> ReactorStatistics {
        self.inner.publish_gauges();
        statistics_of(&self.inner.shared)
    }

    /// How much of the shutdown budget is left (on the reactor's clock):
    /// the full timeout before shutdown begins, zero when the shutdown does
    /// not wait (a dropped reactor).
    pub(crate) fn shutdown_time_left(&self) -> Duration {
        match self.inner.shutdown_deadline.get() {
            Some(deadline) => deadline.saturating_sub(self.inner.timers.now()),
            None => self.inner.shutdown_timeout,
        }
    }

    /// The shutdown budget, as set by
    /// [`Builder::shutdown_timeout`](super::Builder::shutdown_timeout)
    /// (default 30 s; `Duration::MAX` means no limit): how long shutdown
    /// waits for `Before` triggers and pool work in flight.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let reactor = weft::Reactor::builder()
    ///     .shutdown_timeout(Duration::from_secs(5))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(reactor.handle().shutdown_timeout(), Duration::from_secs(5));
    /// ```
    pub fn shutdown_timeout(&self) -> Duration {
        self.inner.shutdown_timeout
    }

    /// Runs the calls and deliveries waiting in the inbox now, for code that
    /// must wait on the loop thread for threads that may be waiting for the
    /// loop (the bridge's pool join at shutdown).
    pub(crate) fn run_queued_calls(&self) -> usize {
        self.inner.run_calls()
    }

    /// Runs `f` at shutdown once the inbox is closed and everything that
    /// reached it (calls and deliveries) has run, before the `After`
    /// triggers: the place to fail what is left (the bridge's unfinished
    /// jobs), now that no result can still arrive.
    pub(crate) fn after_final_drain(&self, f: impl FnOnce() + 'static) {
        self.inner.after_drain.borrow_mut().push(Box::new(f));
    }

    /// Runs `hook` once, at the end of the current turn of this reactor's
    /// loop, after its task pass (a layer that collects a turn's work
    /// hands it over there: the bridge's reactor-pool jobs); registered
    /// outside a turn, at the end of the next one. A layer registers when
    /// it starts collecting, so a turn with nothing collected runs no hook
    /// and touches none of the layer's state. A hook registered while the
    /// hooks run (by code a hook ran) runs in the same turn end. Crate
    /// hooks only: a hook must not panic.
    pub(crate) fn at_turn_end(&self, hook: Rc<dyn Fn()>) {
        self.inner.turn_end.borrow_mut().push(hook);
    }

    /// Whether the loop is inside a turn (false between the turns of
    /// `run_until_complete`s, before `run` and after it returns).
    #[inline]
    pub(crate) fn in_turn(&self) -> bool {
        self.inner.in_turn.get()
    }
}
