//! System event triggers (Twisted's `addSystemEventTrigger`): the public
//! types, the store, and the firing of an event's three phases.
//!
//! Invariants: a trigger runs at most once (it is taken out of the store
//! before it runs, so a trigger may add or remove others); `Before` waits are
//! bounded by the reactor's shutdown deadline, read from the reactor's
//! [`Clock`](crate::Clock) so tests drive it with the manual clock.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use crate::deferred::Deferred;

use super::core::Inner;
use super::tasks::LocalFuture;

/// A phase of a system event, as in Twisted's `addSystemEventTrigger`.
///
/// # Examples
///
/// ```
/// use weft::reactor::{Phase, SystemEvent};
///
/// let reactor = weft::Reactor::new().unwrap();
/// reactor.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, || println!("bye"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Runs first; a trigger may return a future the event waits for.
    Before,
    /// Runs once every `Before` wait has finished.
    During,
    /// Runs last.
    After,
}

/// A system event that triggers can be attached to.
///
/// # Examples
///
/// ```
/// use weft::reactor::SystemEvent;
/// assert_eq!("shutdown".parse::<SystemEvent>(), Ok(SystemEvent::Shutdown));
/// assert!("reboot".parse::<SystemEvent>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemEvent {
    /// The loop starts running ([`call_when_running`](super::Handle::call_when_running)
    /// callbacks are `During` startup triggers).
    Startup,
    /// The loop stops ([`stop`](super::Handle::stop)).
    Shutdown,
}

/// A name that is not a known system event (`"startup"` or `"shutdown"`).
///
/// # Examples
///
/// ```
/// assert_eq!("nope".parse::<weft::reactor::SystemEvent>().unwrap_err().to_string(), "unknown system event");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownEvent;

impl fmt::Display for UnknownEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown system event")
    }
}

impl std::error::Error for UnknownEvent {}

impl std::str::FromStr for SystemEvent {
    type Err = UnknownEvent;

    fn from_str(s: &str) -> Result<Self, UnknownEvent> {
        match s {
            "startup" => Ok(SystemEvent::Startup),
            "shutdown" => Ok(SystemEvent::Shutdown),
            _ => Err(UnknownEvent),
        }
    }
}

/// Identifies a system event trigger, for
/// [`remove_system_event_trigger`](super::Handle::remove_system_event_trigger).
///
/// # Examples
///
/// ```
/// use weft::reactor::{Phase, SystemEvent};
/// let reactor = weft::Reactor::new().unwrap();
/// let id = reactor.add_system_event_trigger(Phase::During, SystemEvent::Shutdown, || ());
/// assert!(reactor.remove_system_event_trigger(id));
/// assert!(!reactor.remove_system_event_trigger(id));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TriggerId(u64);

/// What a system event trigger returns: nothing, or something the event
/// waits for before its `During` phase (only `Before` triggers are waited for).
///
/// Implemented for `()`, [`Deferred`], `Pin<Box<F>>` where `F` is a future,
/// and `Option` of any of these.
///
/// # Examples
///
/// ```
/// use weft::reactor::{Phase, SystemEvent};
///
/// let reactor = weft::Reactor::new().unwrap();
/// reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, || {
///     Box::pin(async { /* flush something */ })
/// });
/// reactor.stop();
/// reactor.run().unwrap();
/// ```
pub trait TriggerOutcome: 'static {
    /// The future to wait for, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::reactor::TriggerOutcome;
    /// assert!(().into_wait().is_none());
    /// ```
    fn into_wait(self) -> Option<LocalFuture>;
}

impl TriggerOutcome for () {
    fn into_wait(self) -> Option<LocalFuture> {
        None
    }
}

impl<T: 'static, E: 'static> TriggerOutcome for Deferred<T, E> {
    fn into_wait(self) -> Option<LocalFuture> {
        Some(Box::pin(async move {
            let _ = self.await;
        }))
    }
}

impl<T: TriggerOutcome> TriggerOutcome for Option<T> {
    fn into_wait(self) -> Option<LocalFuture> {
        self.and_then(TriggerOutcome::into_wait)
    }
}

impl<F: Future + 'static> TriggerOutcome for Pin<Box<F>> {
    fn into_wait(self) -> Option<LocalFuture> {
        Some(Box::pin(async move {
            self.await;
        }))
    }
}

type TriggerFn = Box<dyn FnOnce() -> Option<LocalFuture>>;

struct Trigger {
    id: TriggerId,
    event: SystemEvent,
    phase: Phase,
    f: TriggerFn,
    location: &'static Location<'static>,
}

/// The registered triggers of one reactor. Loop-thread only.
#[derive(Default)]
pub(super) struct Triggers {
    list: RefCell<Vec<Trigger>>,
    next_id: Cell<u64>,
}

impl Triggers {
    pub(super) fn add<R: TriggerOutcome>(
        &self,
        phase: Phase,
        event: SystemEvent,
        f: impl FnOnce() -> R + 'static,
        location: &'static Location<'static>,
    ) -> TriggerId {
        let id = TriggerId(self.next_id.get());
        self.next_id.set(id.0 + 1);
        self.list.borrow_mut().push(Trigger {
            id,
            event,
            phase,
            f: Box::new(move || f().into_wait()),
            location,
        });
        id
    }

    pub(super) fn remove(&self, id: TriggerId) -> bool {
        let mut list = self.list.borrow_mut();
        let before = list.len();
        list.retain(|t| t.id != id);
        list.len() != before
    }

    fn take(&self, event: SystemEvent, phase: Phase) -> Vec<Trigger> {
        let mut list = self.list.borrow_mut();
        let (take, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut *list)
            .into_iter()
            .partition(|t| t.event == event && t.phase == phase);
        *list = keep;
        take
    }

    /// Drops every trigger (breaking `Rc` cycles at teardown), outside the
    /// borrow: their captures' destructors may reach the reactor.
    pub(super) fn clear(&self) {
        let list = std::mem::take(&mut *self.list.borrow_mut());
        drop(list);
    }
}

impl Inner {
    /// Runs the `Before` phase of `event`; with `wait`, keeps the loop
    /// turning until the futures those triggers returned finish or the
    /// deadline (on the reactor's clock) passes.
    pub(super) fn fire_before(&self, event: SystemEvent, wait: bool, deadline: Duration) {
        let pending = Rc::new(Cell::new(0usize));
        for trigger in self.triggers.take(event, Phase::Before) {
            if let Some(future) = self.run_trigger(trigger) {
                pending.set(pending.get() + 1);
                let p = pending.clone();
                self.tasks.spawn(
                    &self.shared,
                    async move {
                        future.await;
                        p.set(p.get() - 1);
                    },
                    Location::caller(),
                );
            }
        }
        if !wait {
            return;
        }
        let clock = self.timers.clock().clone();
        while pending.get() > 0 {
            if clock.now() >= deadline {
                tracing::warn!(
                    event = ?event,
                    waiting = pending.get(),
                    "weft: gave up waiting for Before triggers after the shutdown timeout"
                );
                break;
            }
            // `None` (a manual clock): sleep until something wakes the loop,
            // such as the clock being advanced.
            self.turn(clock.sleep_until(deadline));
        }
    }

    /// Runs one phase (`During` or `After`) of `event`; futures returned
    /// here are not waited for, they run as local tasks.
    pub(super) fn fire_phase(&self, event: SystemEvent, phase: Phase) {
        for trigger in self.triggers.take(event, phase) {
            if let Some(future) = self.run_trigger(trigger) {
                self.tasks.spawn(&self.shared, future, Location::caller());
            }
        }
    }

    fn run_trigger(&self, trigger: Trigger) -> Option<LocalFuture> {
        let mut out = None;
        let f = trigger.f;
        self.guard("system event trigger", trigger.location, || out = f());
        out
    }
}
