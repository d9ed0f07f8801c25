//! Local tasks: `!Send` futures polled on the loop thread.
//!
//! Each task has one `Arc<TaskWaker>` for its whole life. Waking pushes the
//! task's id onto the shared ready list once (a `queued` flag dedupes
//! repeated wakes). A wake from the loop thread needs nothing more, since the
//! loop checks the ready list before it sleeps; a wake from another thread
//! also goes through the inbox's coalesced wake, so it costs at most one
//! syscall and none while the loop is awake.
//!
//! A task is taken out of the map while it is polled, so it may spawn or
//! cancel tasks (itself included) without a double borrow.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake as StdWake, Waker};
use std::thread::ThreadId;

use crate::error::ThreadError;
use crate::loom::atomic::{AtomicBool, Ordering};

use super::Shared;

pub(crate) type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

struct TaskSlot {
    future: LocalFuture,
    waker: Waker,
    wake: Arc<TaskWaker>,
    location: &'static Location<'static>,
    /// Called if the task ends without an output: it panicked, or the loop
    /// shut down under it.
    on_abort: Option<Box<dyn FnOnce(ThreadError)>>,
}

pub(crate) struct TaskWaker {
    id: u64,
    queued: AtomicBool,
    shared: Arc<Shared>,
    loop_thread: ThreadId,
}

thread_local! {
    static THREAD_ID: ThreadId = std::thread::current().id();
}

pub(crate) fn this_thread() -> ThreadId {
    THREAD_ID.with(|t| *t)
}

impl TaskWaker {
    fn schedule(&self) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.ready.lock().push(self.id);
        if this_thread() != self.loop_thread {
            self.shared.inbox.notify();
        }
    }
}

impl StdWake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.schedule();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.schedule();
    }
}

#[derive(Default)]
pub(crate) struct Tasks {
    slots: RefCell<HashMap<u64, TaskSlot>>,
    next_id: Cell<u64>,
    /// Ids whose slot is out for polling and that were cancelled meanwhile.
    cancelled_while_polled: RefCell<Vec<u64>>,
    polling: Cell<Option<u64>>,
    ready_buf: RefCell<Vec<u64>>,
}

impl Tasks {
    pub(crate) fn spawn(
        &self,
        shared: &Arc<Shared>,
        future: LocalFuture,
        on_abort: Box<dyn FnOnce(ThreadError)>,
        location: &'static Location<'static>,
    ) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let wake = Arc::new(TaskWaker {
            id,
            queued: AtomicBool::new(false),
            shared: shared.clone(),
            loop_thread: shared.loop_thread,
        });
        let waker = Waker::from(wake.clone());
        self.slots.borrow_mut().insert(
            id,
            TaskSlot {
                future,
                waker,
                wake: wake.clone(),
                location,
                on_abort: Some(on_abort),
            },
        );
        wake.schedule();
        id
    }

    /// Drops a task's future (cancellation). Returns whether it existed.
    pub(crate) fn remove(&self, id: u64) -> bool {
        if self.polling.get() == Some(id) {
            self.cancelled_while_polled.borrow_mut().push(id);
            return true;
        }
        let slot = self.slots.borrow_mut().remove(&id);
        slot.is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    /// Polls every task that was ready when the pass began. `guard` runs one
    /// poll with panic handling and returns `Err(message)` if it panicked.
    pub(crate) fn run_ready(
        &self,
        shared: &Shared,
        mut guard: impl FnMut(
            &mut dyn FnMut() -> Poll<()>,
            &'static Location<'static>,
        ) -> Result<Poll<()>, String>,
    ) -> usize {
        let mut ids = std::mem::take(&mut *self.ready_buf.borrow_mut());
        std::mem::swap(&mut *shared.ready.lock(), &mut ids);
        let mut polled = 0;
        for &id in &ids {
            let slot = self.slots.borrow_mut().remove(&id);
            let Some(mut slot) = slot else { continue };
            slot.wake.queued.store(false, Ordering::Release);
            self.polling.set(Some(id));
            let waker = slot.waker.clone();
            let mut cx = Context::from_waker(&waker);
            let future = &mut slot.future;
            let outcome = guard(&mut || future.as_mut().poll(&mut cx), slot.location);
            self.polling.set(None);
            polled += 1;
            let cancelled = {
                let mut c = self.cancelled_while_polled.borrow_mut();
                let hit = c.contains(&id);
                c.retain(|&x| x != id);
                hit
            };
            match outcome {
                Ok(Poll::Pending) if !cancelled => {
                    self.slots.borrow_mut().insert(id, slot);
                }
                Ok(_) => {}
                Err(message) => {
                    if let Some(f) = slot.on_abort.take() {
                        drop(slot);
                        f(ThreadError::Panicked { message });
                    }
                }
            }
        }
        ids.clear();
        *self.ready_buf.borrow_mut() = ids;
        polled
    }

    /// Drops every task's future, then tells each task's owner it was
    /// stopped (shutdown, or the reactor going away). Returns how many.
    pub(crate) fn abort_all(&self) -> usize {
        let mut n = 0;
        loop {
            // Aborting may resolve Deferreds whose callbacks spawn tasks.
            let slots = std::mem::take(&mut *self.slots.borrow_mut());
            if slots.is_empty() {
                return n;
            }
            n += slots.len();
            let mut aborts = Vec::with_capacity(slots.len());
            for (_, mut slot) in slots {
                aborts.extend(slot.on_abort.take());
            }
            for abort in aborts {
                abort(ThreadError::Stopped);
            }
        }
    }
}
