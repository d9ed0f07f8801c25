//! The memory worker: nothing runs until the test says so.
//!
//! Work is appended to a list; [`Perform::perform`] runs the head. `quit`
//! appends a "no more work" marker that is never removed, so work queued
//! before the quit can still be performed and then `perform` returns false.
//! The quit check and the append happen under one lock, so nothing can be
//! queued behind the marker.

use std::collections::VecDeque;

use super::{ExclusiveWorker, Task, Worker};
use crate::error::AlreadyQuit;
use crate::loom::{Arc, Mutex};

/// `None` is the "no more work" marker.
type Items = VecDeque<Option<Task>>;

#[derive(Default)]
struct Shared {
    quit: bool,
    items: Items,
}

/// The queueing half of [`memory_worker`]: a [`Worker`] that runs nothing.
///
/// # Examples
///
/// ```
/// use weft::threads::{Worker, memory_worker};
///
/// let (worker, perform) = memory_worker();
/// worker.do_work(Box::new(|| ())).unwrap();
/// assert!(perform.perform());
/// ```
#[derive(Clone)]
pub struct MemoryWorker {
    shared: Arc<Mutex<Shared>>,
}

/// The running half of [`memory_worker`].
///
/// # Examples
///
/// ```
/// let (_worker, perform) = weft::threads::memory_worker();
/// assert!(!perform.perform());
/// ```
#[derive(Clone)]
pub struct Perform {
    shared: Arc<Mutex<Shared>>,
}

/// Creates a worker whose tasks run only when [`Perform::perform`] is called.
///
/// The worker is exclusive: each `perform` runs one task, in FIFO order.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use weft::threads::{Worker, memory_worker};
///
/// let (worker, perform) = memory_worker();
/// let log = Arc::new(Mutex::new(Vec::new()));
/// for i in 0..2 {
///     let log = log.clone();
///     worker.do_work(Box::new(move || log.lock().unwrap().push(i))).unwrap();
/// }
/// while perform.perform() {}
/// assert_eq!(*log.lock().unwrap(), [0, 1]);
/// ```
pub fn memory_worker() -> (MemoryWorker, Perform) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    (
        MemoryWorker {
            shared: shared.clone(),
        },
        Perform { shared },
    )
}

impl Perform {
    /// Runs the oldest queued task and returns true; returns false when
    /// nothing, or only the quit marker, is left.
    ///
    /// # Panics
    ///
    /// A panicking task panics here; it has been consumed all the same.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{Worker, memory_worker};
    ///
    /// let (worker, perform) = memory_worker();
    /// worker.do_work(Box::new(|| ())).unwrap();
    /// worker.quit().unwrap();
    /// assert!(perform.perform());
    /// assert!(!perform.perform()); // only the quit marker is left
    /// ```
    pub fn perform(&self) -> bool {
        let task = {
            let mut shared = self.shared.lock();
            match shared.items.front() {
                Some(Some(_)) => shared.items.pop_front().flatten(),
                _ => None,
            }
        };
        match task {
            Some(task) => {
                task();
                true
            }
            None => false,
        }
    }
}

impl Worker for MemoryWorker {
    fn do_work(&self, task: Task) -> Result<(), AlreadyQuit<Task>> {
        let mut shared = self.shared.lock();
        if shared.quit {
            return Err(AlreadyQuit(task));
        }
        shared.items.push_back(Some(task));
        Ok(())
    }

    fn quit(&self) -> Result<(), AlreadyQuit> {
        let mut shared = self.shared.lock();
        if shared.quit {
            return Err(AlreadyQuit(()));
        }
        shared.quit = true;
        shared.items.push_back(None);
        Ok(())
    }
}

impl ExclusiveWorker for MemoryWorker {}
