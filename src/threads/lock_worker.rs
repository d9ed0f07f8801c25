//! A worker that runs work at once, on the calling thread, under a lock.
//!
//! This is the coordinator of Twisted's thread pool. The lock serialises all
//! callers; a thread-local stack of frames (one per `LockWorker` this thread
//! is currently inside) makes re-entrant `do_work` calls queue their task in
//! the frame instead of recursing, so nesting depth stays 1 and the lock is
//! never taken twice. The outer call drains the frame before it releases the
//! lock.
//!
//! A panicking task does not abandon the frame: the remaining queued tasks
//! still run (Twisted drops them), then the first panic resumes in the
//! outermost caller after the lock is released and the frame is gone. Later
//! panics in the same drain are logged.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use super::{ExclusiveWorker, Quit, Task, Worker};
use crate::error::{AlreadyQuit, panic_message};
use crate::loom::{Arc, Mutex, thread_local};

/// A lock a [`LockWorker`] holds while it runs work.
///
/// Tests inject their own to watch when it is held.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use weft::threads::Lock;
///
/// #[derive(Default)]
/// struct Watched(AtomicBool);
///
/// impl Lock for Watched {
///     fn with_lock(&self, f: &mut dyn FnMut()) {
///         assert!(!self.0.swap(true, Ordering::SeqCst), "would deadlock");
///         f();
///         self.0.store(false, Ordering::SeqCst);
///     }
/// }
///
/// let lock = Watched::default();
/// lock.with_lock(&mut || ());
/// ```
pub trait Lock: Send + Sync + 'static {
    /// Runs `f` while holding the lock.
    fn with_lock(&self, f: &mut dyn FnMut());
}

/// The default [`Lock`]: a mutex.
///
/// # Examples
///
/// ```
/// use weft::threads::{Lock, MutexLock};
///
/// let mut ran = false;
/// MutexLock::new().with_lock(&mut || ran = true);
/// assert!(ran);
/// ```
#[derive(Debug, Default)]
pub struct MutexLock(Mutex<()>);

impl MutexLock {
    /// Returns an unlocked lock.
    ///
    /// # Examples
    ///
    /// ```
    /// let _lock = weft::threads::MutexLock::new();
    /// ```
    pub fn new() -> Self {
        MutexLock(Mutex::new(()))
    }
}

impl Lock for MutexLock {
    fn with_lock(&self, f: &mut dyn FnMut()) {
        let _guard = self.0.lock();
        f();
    }
}

/// Work queued re-entrantly on one `LockWorker` by the current thread.
struct Frame {
    worker: usize,
    queue: VecDeque<Task>,
}

#[cfg(not(loom))]
thread_local! {
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

// loom's `thread_local!` takes no `const` initialiser.
#[cfg(loom)]
thread_local! {
    static FRAMES: RefCell<Vec<Frame>> = RefCell::new(Vec::new());
}

/// Removes this thread's frame for one worker, even when unwinding.
struct FrameGuard(usize);

impl Drop for FrameGuard {
    fn drop(&mut self) {
        // Tasks left here (only if the lock itself panicked) drop outside
        // the borrow, so their destructors may use a LockWorker.
        let _left = FRAMES.with(|frames| {
            let mut frames = frames.borrow_mut();
            let at = frames.iter().rposition(|f| f.worker == self.0);
            at.map(|at| frames.remove(at))
        });
    }
}

/// An [`ExclusiveWorker`] that runs each task at once on the calling thread
/// while holding a [`Lock`].
///
/// A task that calls `do_work` on the same worker gets the new task queued;
/// it runs after the current one, before the lock is released. `quit` drops
/// the worker's reference to the lock; work already running finishes, with
/// its queued tasks.
///
/// # Panics
///
/// `do_work` resumes the first panic of the tasks it ran, after running the
/// rest of them and releasing the lock.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use weft::threads::{LockWorker, Worker};
///
/// let worker = Arc::new(LockWorker::new());
/// let log = Arc::new(Mutex::new(Vec::new()));
/// let (w, l) = (worker.clone(), log.clone());
/// worker
///     .do_work(Box::new(move || {
///         let l2 = l.clone();
///         w.do_work(Box::new(move || l2.lock().unwrap().push("inner"))).unwrap();
///         l.lock().unwrap().push("outer");
///     }))
///     .unwrap();
/// assert_eq!(*log.lock().unwrap(), ["outer", "inner"]);
/// ```
pub struct LockWorker<L: Lock = MutexLock> {
    quit: Quit,
    lock: Mutex<Option<Arc<L>>>,
}

impl Default for LockWorker {
    fn default() -> Self {
        LockWorker::new()
    }
}

impl LockWorker {
    /// Returns a worker over a fresh [`MutexLock`].
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{LockWorker, Worker};
    /// LockWorker::new().do_work(Box::new(|| ())).unwrap();
    /// ```
    pub fn new() -> Self {
        LockWorker::with_lock(Arc::new(MutexLock::new()))
    }
}

impl<L: Lock> LockWorker<L> {
    /// Returns a worker over `lock`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use weft::threads::{LockWorker, MutexLock, Worker};
    ///
    /// let lock = Arc::new(MutexLock::new());
    /// let worker = LockWorker::with_lock(lock.clone());
    /// worker.quit().unwrap();
    /// assert_eq!(Arc::strong_count(&lock), 1); // quit dropped its reference
    /// ```
    pub fn with_lock(lock: Arc<L>) -> Self {
        LockWorker {
            quit: Quit::new(),
            lock: Mutex::new(Some(lock)),
        }
    }

    fn id(&self) -> usize {
        std::ptr::from_ref(self).addr()
    }
}

fn run_caught(task: Task, first_panic: &mut Option<Box<dyn Any + Send>>) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(task)) {
        if first_panic.is_none() {
            *first_panic = Some(payload);
        } else {
            tracing::error!(
                panic = %panic_message(&*payload),
                "lock worker task panicked after an earlier panic"
            );
        }
    }
}

impl<L: Lock> Worker for LockWorker<L> {
    fn do_work(&self, task: Task) -> Result<(), AlreadyQuit<Task>> {
        if self.quit.is_set() {
            return Err(AlreadyQuit(task));
        }
        let id = self.id();
        let task = FRAMES.with(|frames| {
            let mut frames = frames.borrow_mut();
            match frames.iter_mut().rev().find(|f| f.worker == id) {
                Some(frame) => {
                    frame.queue.push_back(task);
                    None
                }
                None => Some(task),
            }
        });
        let Some(task) = task else {
            return Ok(());
        };
        // `quit` may have won the race since the flag check.
        let Some(lock) = self.lock.lock().clone() else {
            return Err(AlreadyQuit(task));
        };

        FRAMES.with(|frames| {
            frames.borrow_mut().push(Frame {
                worker: id,
                queue: VecDeque::new(),
            })
        });
        let guard = FrameGuard(id);
        let mut first = Some(task);
        let mut first_panic = None;
        lock.with_lock(&mut || {
            if let Some(task) = first.take() {
                run_caught(task, &mut first_panic);
            }
            loop {
                let next = FRAMES.with(|frames| {
                    let mut frames = frames.borrow_mut();
                    let frame = frames.iter_mut().rev().find(|f| f.worker == id);
                    frame.and_then(|f| f.queue.pop_front())
                });
                match next {
                    Some(task) => run_caught(task, &mut first_panic),
                    None => break,
                }
            }
        });
        drop(guard);
        drop(lock);
        if let Some(payload) = first_panic {
            resume_unwind(payload);
        }
        Ok(())
    }

    fn quit(&self) -> Result<(), AlreadyQuit> {
        self.quit.set()?;
        let lock = self.lock.lock().take();
        drop(lock);
        Ok(())
    }
}

impl<L: Lock> ExclusiveWorker for LockWorker<L> {}
