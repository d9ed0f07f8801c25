//! Local tasks: `!Send` futures polled on the loop thread, on `async-task`.
//!
//! Each task is one `async-task` allocation holding the future, its state
//! word and the schedule function; waking it hands its `Runnable` to the
//! run queue. Nothing scans or hashes per poll, so the cost of a task does
//! not depend on how many others are alive.
//!
//! - **Run queue.** A `Mutex<VecDeque<Runnable>>` in [`Shared`]: a wake from
//!   the loop thread pushes (an uncontended lock); a wake from another thread
//!   also goes through the inbox's coalesced wake, so it costs at most one
//!   syscall and none while the loop is awake. `async-task` dedupes repeated
//!   wakes (its `SCHEDULED` bit), so a task is queued at most once.
//! - **Snapshot per pass.** A pass moves the queue into `batch` and polls
//!   what is there; tasks woken meanwhile wait for the next pass. Runnables
//!   are popped from `batch` one at a time, so a panic that propagates out of
//!   a poll ([`PanicPolicy::Propagate`](super::PanicPolicy::Propagate))
//!   leaves the rest in `batch` for the next pass: nothing is lost.
//! - **Table.** A slab of the live tasks' `Task` handles (key + a unique id
//!   so a stale key never names a newer task), for cancellation, the count
//!   of live tasks and the abort at shutdown. A task's `Runnable` carries
//!   its key, id and spawn location as metadata.
//! - **Cancellation drops the future at once** when the task is idle:
//!   dropping its `Task` handle makes `async-task` schedule it one last time,
//!   and the schedule function, told by `RUN_CLOSED_NOW`, runs that closed
//!   runnable on the spot (which only drops the future). A task cancelled
//!   while queued drops its future when the queue reaches it; one cancelled
//!   from inside its own poll drops it when that poll returns.
//! - **Thread affinity.** Tasks are spawned with `spawn_local`, whose
//!   runnable may only run on the loop thread. After the queue is closed (the
//!   reactor is gone), a runnable scheduled from another thread is leaked
//!   rather than dropped there (dropping it would drop a `!Send` future on
//!   the wrong thread).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;

use async_task::{Runnable, Task};
use slab::Slab;

use super::context::this_thread;
use super::remote::Shared;

/// A boxed local future (trigger waits).
pub(crate) type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

/// What every runnable carries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TaskTag {
    key: usize,
    id: u64,
    location: &'static Location<'static>,
}

/// Names a live task (for cancellation); stale once the task ends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TaskRef {
    key: usize,
    id: u64,
}

/// Room for this many runnables in the run queue and in the pass's batch
/// from the start. A pass swaps the two buffers, so a buffer that had none
/// would hand the queue an empty one and the next wake would allocate; sized
/// both up front, a loop waking a few tasks per pass never allocates there
/// (issue 8: the first wake after a long sleep ran into that allocation).
const RUN_QUEUE_ROOM: usize = 16;

/// The cross-thread half: runnables waiting to be polled.
pub(crate) struct RunQueue {
    runnables: VecDeque<Runnable<TaskTag>>,
    closed: bool,
}

impl Default for RunQueue {
    fn default() -> Self {
        RunQueue {
            runnables: VecDeque::with_capacity(RUN_QUEUE_ROOM),
            closed: false,
        }
    }
}

struct Entry {
    id: u64,
    task: Task<(), TaskTag>,
}

thread_local! {
    /// Set by `Tasks::cancel` around dropping a `Task` handle: the next
    /// schedule on this thread is that task's last (it is closed), and runs
    /// at once so the future is dropped before `cancel` returns.
    static RUN_CLOSED_NOW: Cell<bool> = const { Cell::new(false) };
}

fn schedule(shared: &Shared, runnable: Runnable<TaskTag>) {
    let on_loop = this_thread() == shared.loop_thread;
    if on_loop && RUN_CLOSED_NOW.with(|c| c.replace(false)) {
        runnable.run();
        return;
    }
    let mut queue = shared.run_queue.lock();
    if queue.closed {
        drop(queue);
        if on_loop {
            // Dropping a runnable drops its future: fine on this thread.
            drop(runnable);
        } else {
            std::mem::forget(runnable);
        }
        return;
    }
    queue.runnables.push_back(runnable);
    drop(queue);
    if !on_loop {
        shared.inbox.notify();
    }
}

/// The loop's local tasks. Loop-thread only.
pub(crate) struct Tasks {
    live: RefCell<Slab<Entry>>,
    next_id: Cell<u64>,
    /// The runnables of the current pass (and any a propagated panic left).
    batch: RefCell<VecDeque<Runnable<TaskTag>>>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks {
            live: RefCell::default(),
            next_id: Cell::new(0),
            batch: RefCell::new(VecDeque::with_capacity(RUN_QUEUE_ROOM)),
        }
    }
}

impl Tasks {
    /// Spawns `future`; it is polled in the next task pass.
    pub(crate) fn spawn<F>(
        &self,
        shared: &Arc<Shared>,
        future: F,
        location: &'static Location<'static>,
    ) -> TaskRef
    where
        F: Future<Output = ()> + 'static,
    {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let key = self.live.borrow().vacant_key();
        let tag = TaskTag { key, id, location };
        let s = shared.clone();
        let (runnable, task) = async_task::Builder::new()
            .metadata(tag)
            .spawn_local(move |_| future, move |r| schedule(&s, r));
        let inserted = self.live.borrow_mut().insert(Entry { id, task });
        debug_assert_eq!(inserted, key);
        runnable.schedule();
        TaskRef { key, id }
    }

    /// Cancels a task: its future is dropped (at once if it is idle).
    /// Returns whether it was alive.
    pub(crate) fn cancel(&self, task: TaskRef) -> bool {
        let entry = {
            let mut live = self.live.borrow_mut();
            match live.get(task.key) {
                Some(e) if e.id == task.id => Some(live.remove(task.key)),
                _ => None,
            }
        };
        let Some(entry) = entry else { return false };
        RUN_CLOSED_NOW.with(|c| c.set(true));
        drop(entry.task);
        RUN_CLOSED_NOW.with(|c| c.set(false));
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.live.borrow().len()
    }

    /// Whether a task is waiting to be polled.
    pub(crate) fn has_ready(&self, shared: &Shared) -> bool {
        !self.batch.borrow().is_empty() || !shared.run_queue.lock().runnables.is_empty()
    }

    /// Polls the tasks that were ready when the pass began (each poll timed
    /// by `diag` when diagnostics are on), until `stop(polled so far)` says
    /// the pass has run long enough (asked after each poll): the tasks not
    /// reached stay in the batch, polled first by the next pass. A poll that
    /// panics is reported to `on_panic` (after the task's own `Deferred`, if
    /// any, got the panic); if `on_panic` unwinds, the rest of the pass
    /// stays queued for the next one.
    pub(crate) fn run_ready(
        &self,
        shared: &Shared,
        diag: Option<&crate::diagnostics::LoopDiag>,
        mut stop: impl FnMut(usize) -> bool,
        mut on_panic: impl FnMut(&'static Location<'static>, Box<dyn std::any::Any + Send>),
    ) -> usize {
        {
            let mut batch = self.batch.borrow_mut();
            if batch.is_empty() {
                std::mem::swap(&mut shared.run_queue.lock().runnables, &mut *batch);
            }
        }
        let mut polled = 0;
        loop {
            let Some(runnable) = self.batch.borrow_mut().pop_front() else {
                break;
            };
            let tag = *runnable.metadata();
            polled += 1;
            let started = diag.map(|d| d.begin("local task", tag.location));
            let outcome = catch_unwind(AssertUnwindSafe(|| runnable.run()));
            if let Some(d) = diag {
                d.end(started.flatten(), "local task", tag.location);
            }
            self.reap(tag);
            if let Err(payload) = outcome {
                on_panic(tag.location, payload);
            }
            if stop(polled) {
                break;
            }
        }
        polled
    }

    /// Forgets a task that has finished (completed, panicked or closed).
    fn reap(&self, tag: TaskTag) {
        let done = {
            let mut live = self.live.borrow_mut();
            match live.get(tag.key) {
                Some(e) if e.id == tag.id && e.task.is_finished() => Some(live.remove(tag.key)),
                _ => None,
            }
        };
        drop(done);
    }

    /// Drops every task's future; a task with a `Deferred` fails it with
    /// `ThreadError::Stopped`. Repeats while those failures spawn more.
    /// Returns how many tasks were stopped.
    pub(crate) fn abort_all(&self, shared: &Shared) -> usize {
        let mut stopped = 0;
        loop {
            let entries: Vec<Entry> = self.live.borrow_mut().drain().collect();
            stopped += entries.len();
            // Idle tasks schedule themselves one last time as they close.
            drop(entries);
            let mut runnables = std::mem::take(&mut *self.batch.borrow_mut());
            runnables.append(&mut shared.run_queue.lock().runnables);
            if runnables.is_empty() && self.live.borrow().is_empty() {
                return stopped;
            }
            for runnable in runnables {
                // Closed: running it only drops the future.
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| runnable.run())) {
                    let message = crate::error::panic_message(&*payload);
                    tracing::error!(panic = %message, "weft: panic while dropping a stopped local task");
                }
            }
        }
    }

    /// Refuses every later schedule (the reactor is going away).
    pub(crate) fn close(&self, shared: &Shared) {
        shared.run_queue.lock().closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::RUN_QUEUE_ROOM;
    use crate::Reactor;

    #[test]
    fn the_run_queue_and_the_batch_keep_their_room_across_passes() {
        let reactor = Reactor::new().unwrap();
        let inner = &reactor.handle.inner;
        for _ in 0..3 {
            drop(reactor.spawn_local(async {}));
            reactor.iterate(Some(std::time::Duration::ZERO));
            // A pass swaps the two buffers: neither is left without room,
            // so the next wake does not allocate.
            assert!(inner.shared.run_queue.lock().runnables.capacity() >= RUN_QUEUE_ROOM);
            assert!(inner.tasks.batch.borrow().capacity() >= RUN_QUEUE_ROOM);
        }
    }
}
