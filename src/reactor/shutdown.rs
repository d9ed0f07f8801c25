//! Startup, the shutdown sequence, and teardown when the reactor is dropped.
//!
//! Shutdown order (each step runs once):
//! 1. state `STOPPING`; the deadline is fixed on the reactor's clock;
//! 2. `Before` triggers, whose futures are waited for until the deadline
//!    (not at all when the reactor is being dropped);
//! 3. `During` triggers (the bridge stops its pool here);
//! 4. the **final drain**: the inbox is closed, and everything that reached
//!    it before (calls and pool results) runs, then the local tasks those
//!    woke get their polls, so results that already arrived are delivered;
//! 5. the `after_final_drain` hooks: now nothing can still arrive, so this
//!    is where what is left is failed as cancelled;
//! 6. `After` triggers; 7. remaining local tasks are stopped; state `STOPPED`.
//!
//! Teardown (on drop) breaks `Rc` cycles: tasks, triggers, loop-locals and
//! timers may all hold handles. While the thread is panicking, teardown does
//! the minimum and never lets a second panic escape (that would abort).

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::loom::atomic::Ordering;

use super::core::Inner;
use super::remote::{STATE_RUNNING, STATE_STOPPED, STATE_STOPPING};
use super::triggers::{Phase, SystemEvent};

/// Task passes allowed after the final drain: enough for a result to reach
/// the task awaiting it (and a few hops beyond), never an endless spin.
const FINAL_TASK_PASSES: usize = 64;

impl Inner {
    /// Fires the startup event once.
    pub(super) fn start(&self) {
        if self.started.replace(true) {
            return;
        }
        self.shared.started.store(true, Ordering::SeqCst);
        self.shared.state.store(STATE_RUNNING, Ordering::SeqCst);
        let deadline = self.timers.now().saturating_add(self.shutdown_timeout);
        self.fire_before(SystemEvent::Startup, true, deadline);
        self.fire_phase(SystemEvent::Startup, Phase::During);
        self.fire_phase(SystemEvent::Startup, Phase::After);
    }

    /// The shutdown sequence (see the module docs); leaves the reactor
    /// stopped for good. With `wait` false (a dropped reactor) nothing waits.
    pub(super) fn shutdown(&self, wait: bool) {
        if self.shared.state.swap(STATE_STOPPING, Ordering::SeqCst) >= STATE_STOPPING {
            return;
        }
        let now = self.timers.now();
        let deadline = if wait {
            now.saturating_add(self.shutdown_timeout)
        } else {
            now
        };
        self.shutdown_deadline.set(Some(deadline));
        self.fire_before(SystemEvent::Shutdown, wait, deadline);
        self.fire_phase(SystemEvent::Shutdown, Phase::During);
        self.final_drain();
        let hooks = std::mem::take(&mut *self.after_drain.borrow_mut());
        for hook in hooks {
            self.guard(
                "after_final_drain hook",
                std::panic::Location::caller(),
                hook,
            );
        }
        self.fire_phase(SystemEvent::Shutdown, Phase::After);
        let tasks = self.tasks.abort_all(&self.shared);
        if tasks > 0 {
            tracing::debug!(tasks, "weft: unfinished local tasks stopped at shutdown");
        }
        self.shared.state.store(STATE_STOPPED, Ordering::SeqCst);
    }

    /// Closes the inbox and runs what reached it, then lets the tasks those
    /// calls woke run (a bounded number of passes).
    fn final_drain(&self) {
        // Calls left over from a propagated panic come first (FIFO).
        let mut left = std::mem::take(&mut *self.batch.borrow_mut());
        let mut closed = self.shared.inbox.close();
        self.shared.inbox_closed.store(true, Ordering::SeqCst);
        left.append(&mut closed);
        if !self.started.get() {
            if !left.is_empty() {
                tracing::warn!(
                    discarded = left.len(),
                    "weft: reactor dropped without running; queued calls discarded"
                );
            }
            return;
        }
        *self.batch.borrow_mut() = left;
        self.run_calls();
        for _ in 0..FINAL_TASK_PASSES {
            if !self.tasks.has_ready(&self.shared) {
                break;
            }
            // Unbounded: these passes are the tasks' last chance to run.
            self.run_tasks(None);
        }
    }

    /// Breaks the `Rc` cycles of a reactor that has shut down.
    pub(super) fn teardown(&self) {
        self.tasks.abort_all(&self.shared);
        self.tasks.close(&self.shared);
        self.triggers.clear();
        self.after_drain.borrow_mut().clear();
        self.locals.clear();
        self.timers.clear();
    }

    /// Drop while the thread unwinds: close the inbox, fail what is queued,
    /// run no trigger, wait for nothing, and keep every panic inside.
    pub(super) fn teardown_while_panicking(&self) {
        self.shared.state.store(STATE_STOPPED, Ordering::SeqCst);
        let quietly = |what: &str, f: &mut dyn FnMut()| {
            if catch_unwind(AssertUnwindSafe(f)).is_err() {
                tracing::error!(
                    what,
                    "weft: panic while tearing down a reactor during a panic; ignored"
                );
            }
        };
        quietly("queued calls", &mut || {
            let left = self.shared.inbox.close();
            self.shared.inbox_closed.store(true, Ordering::SeqCst);
            let batch = std::mem::take(&mut *self.batch.borrow_mut());
            if !left.is_empty() || !batch.is_empty() {
                tracing::warn!(
                    discarded = left.len() + batch.len(),
                    "weft: reactor dropped during a panic; queued calls discarded"
                );
            }
            drop(batch);
            drop(left);
        });
        quietly("local tasks", &mut || {
            self.tasks.abort_all(&self.shared);
            self.tasks.close(&self.shared);
        });
        quietly("triggers", &mut || self.triggers.clear());
        quietly("hooks", &mut || self.after_drain.borrow_mut().clear());
        quietly("loop-locals", &mut || self.locals.clear());
        quietly("timers", &mut || self.timers.clear());
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use crate::Reactor;
    use crate::reactor::{Phase, SystemEvent};

    type Log = Rc<RefCell<Vec<&'static str>>>;

    /// The hook the bridge fails its leftovers in runs after every call that
    /// reached the inbox, and before the `After` triggers.
    #[test]
    fn after_final_drain_hooks_run_after_the_inbox_drain_and_before_after_triggers() {
        let reactor = Reactor::new().unwrap();
        let remote = reactor.remote();
        let log: Log = Rc::new(RefCell::new(Vec::new()));
        reactor.insert_local(log.clone()).unwrap();
        let push = |what: &'static str| {
            let log = log.clone();
            move || log.borrow_mut().push(what)
        };
        reactor.handle().after_final_drain(push("hook"));
        reactor.add_system_event_trigger(Phase::During, SystemEvent::Shutdown, push("during"));
        reactor.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, push("after"));
        reactor.call_when_running(move || {
            remote
                .call_from_thread(|| {
                    let h = crate::reactor::current().unwrap();
                    h.with_local(|l: &mut Log| l.borrow_mut().push("call"))
                        .unwrap();
                    // Pushed after the inbox closed: refused, never lost.
                    assert!(h.remote().call_from_thread(|| ()).is_err());
                })
                .unwrap();
            remote.stop();
        });
        reactor.run().unwrap();
        assert_eq!(*log.borrow(), vec!["during", "call", "hook", "after"]);
    }
}
