//! A worker that owns one thread.
//!
//! The thread runs a loop that takes [`WorkItem`]s from a [`WorkQueue`] until it
//! gets [`WorkItem::Stop`]. `quit` sets the flag and enqueues `Stop` under the same
//! gate that `do_work` checks, so nothing can be queued behind `Stop` and
//! every accepted task runs before the thread exits.
//!
//! Unlike Twisted, a panicking task is caught and logged (`tracing::error!`)
//! and the loop goes on, so the tasks queued behind it are not lost. Inside a
//! [`Team`](super::Team) this never happens: the team catches panics first.

use std::collections::VecDeque;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use super::{ExclusiveWorker, Task, Worker};
use crate::error::{AlreadyQuit, panic_message};
use crate::loom::{Arc, Condvar, Mutex, thread};

/// An item of a [`WorkQueue`]: a task, or the order to stop.
///
/// # Examples
///
/// ```
/// use weft::threads::{BlockingQueue, WorkItem, WorkQueue};
///
/// let queue = BlockingQueue::new();
/// queue.put(WorkItem::Stop);
/// assert!(matches!(queue.get(), WorkItem::Stop));
/// ```
pub enum WorkItem {
    /// Run this task.
    Run(Task),
    /// Leave the loop; the thread exits.
    Stop,
}

/// The queue between a [`ThreadWorker`] and its thread.
///
/// # Examples
///
/// ```
/// use weft::threads::{BlockingQueue, WorkItem, WorkQueue};
///
/// let queue = BlockingQueue::new();
/// queue.put(WorkItem::Run(Box::new(|| ())));
/// match queue.get() {
///     WorkItem::Run(task) => task(),
///     WorkItem::Stop => unreachable!(),
/// }
/// ```
pub trait WorkQueue: Send + Sync + 'static {
    /// Appends an item.
    fn put(&self, item: WorkItem);

    /// Removes the oldest item, waiting for one if the queue is empty.
    fn get(&self) -> WorkItem;

    /// Like [`get`](WorkQueue::get), but gives up with `None` after `timeout`.
    ///
    /// The default waits without a limit.
    fn get_timeout(&self, timeout: Duration) -> Option<WorkItem> {
        let _ = timeout;
        Some(self.get())
    }
}

struct QueueState {
    items: VecDeque<WorkItem>,
    waiters: usize,
}

/// The default [`WorkQueue`]: a FIFO under a mutex, with a condition variable
/// signalled only when a consumer is waiting.
///
/// # Examples
///
/// ```
/// use weft::threads::{BlockingQueue, WorkItem, WorkQueue};
/// use std::time::Duration;
///
/// let queue = BlockingQueue::new();
/// assert!(queue.get_timeout(Duration::from_millis(1)).is_none());
/// queue.put(WorkItem::Stop);
/// assert_eq!(queue.len(), 1);
/// ```
pub struct BlockingQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

impl Default for BlockingQueue {
    fn default() -> Self {
        BlockingQueue::new()
    }
}

impl BlockingQueue {
    /// Returns an empty queue.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(weft::threads::BlockingQueue::new().is_empty());
    /// ```
    pub fn new() -> Self {
        BlockingQueue {
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                waiters: 0,
            }),
            ready: Condvar::new(),
        }
    }

    /// The number of queued items.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(weft::threads::BlockingQueue::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.state.lock().items.len()
    }

    /// Whether no item is queued.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(weft::threads::BlockingQueue::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl WorkQueue for BlockingQueue {
    fn put(&self, item: WorkItem) {
        let mut state = self.state.lock();
        state.items.push_back(item);
        let wake = state.waiters > 0;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
    }

    fn get(&self) -> WorkItem {
        let mut state = self.state.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                return item;
            }
            state.waiters += 1;
            state = self.ready.wait(state);
            state.waiters -= 1;
        }
    }

    fn get_timeout(&self, timeout: Duration) -> Option<WorkItem> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.state.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                return Some(item);
            }
            let left = match deadline {
                Some(deadline) => deadline.checked_duration_since(Instant::now())?,
                None => Duration::MAX,
            };
            if left.is_zero() {
                return None;
            }
            state.waiters += 1;
            state = self.ready.wait_timeout(state, left).0;
            state.waiters -= 1;
        }
    }
}

/// A [`Worker`] that owns one thread from birth and runs its tasks there in
/// FIFO order.
///
/// `quit` lets the queued tasks finish; then the thread exits. A panicking
/// task is caught and logged, and the thread goes on with the next one.
///
/// # Dropping
///
/// Dropping the worker quits it: queued tasks still run, then the thread
/// exits (it is not joined).
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use weft::threads::{ThreadWorker, Worker};
///
/// let worker = ThreadWorker::new().unwrap();
/// let (tx, rx) = mpsc::channel();
/// worker.do_work(Box::new(move || tx.send(42).unwrap())).unwrap();
/// assert_eq!(rx.recv().unwrap(), 42);
/// worker.quit().unwrap();
/// ```
pub struct ThreadWorker<Q: WorkQueue = BlockingQueue> {
    /// `true` once quit; checked and changed only under this lock, together
    /// with the `put`, so `Stop` is always the last item.
    quit: Mutex<bool>,
    queue: Arc<Q>,
}

impl ThreadWorker {
    /// Starts a worker on a new unnamed thread.
    ///
    /// # Errors
    ///
    /// The OS error when no thread could be started.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{ThreadWorker, Worker};
    ///
    /// let worker = ThreadWorker::new().unwrap();
    /// worker.quit().unwrap();
    /// ```
    pub fn new() -> io::Result<Self> {
        Self::spawn(thread::Builder::new())
    }

    /// Starts a worker on a thread configured by `builder` (name, stack size).
    ///
    /// # Errors
    ///
    /// The OS error when no thread could be started.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{ThreadWorker, Worker};
    ///
    /// let worker = ThreadWorker::spawn(std::thread::Builder::new().name("io".into())).unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// worker
    ///     .do_work(Box::new(move || {
    ///         tx.send(std::thread::current().name().map(String::from)).unwrap()
    ///     }))
    ///     .unwrap();
    /// assert_eq!(rx.recv().unwrap().as_deref(), Some("io"));
    /// worker.quit().unwrap();
    /// ```
    pub fn spawn(builder: thread::Builder) -> io::Result<Self> {
        Self::with_parts(BlockingQueue::new(), |body| builder.spawn(body).map(drop))
    }
}

impl<Q: WorkQueue> ThreadWorker<Q> {
    /// Builds a worker over `queue`, calling `start_thread` exactly once with
    /// the body its thread must run.
    ///
    /// Tests pass a starter that keeps the body instead of starting a thread,
    /// and run it themselves.
    ///
    /// # Errors
    ///
    /// Whatever `start_thread` returns; the worker is then not built.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::{Arc, Mutex};
    /// use weft::threads::{BlockingQueue, ThreadWorker, Worker};
    ///
    /// let body = Arc::new(Mutex::new(None));
    /// let keep = body.clone();
    /// let worker = ThreadWorker::with_parts(BlockingQueue::new(), move |b| {
    ///     *keep.lock().unwrap() = Some(b);
    ///     Ok(())
    /// })
    /// .unwrap();
    /// let ran = Arc::new(AtomicBool::new(false));
    /// let r = ran.clone();
    /// worker.do_work(Box::new(move || r.store(true, Ordering::SeqCst))).unwrap();
    /// worker.quit().unwrap();
    /// let body = body.lock().unwrap().take().unwrap();
    /// body(); // runs the task, then sees the stop order and returns
    /// assert!(ran.load(Ordering::SeqCst));
    /// ```
    pub fn with_parts<S>(queue: Q, start_thread: S) -> io::Result<Self>
    where
        S: FnOnce(Box<dyn FnOnce() + Send + 'static>) -> io::Result<()>,
    {
        let queue = Arc::new(queue);
        let thread_queue = queue.clone();
        start_thread(Box::new(move || work_loop(&*thread_queue)))?;
        Ok(ThreadWorker {
            quit: Mutex::new(false),
            queue,
        })
    }
}

fn work_loop<Q: WorkQueue>(queue: &Q) {
    loop {
        let item = queue.get();
        match item {
            WorkItem::Run(task) => {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(task)) {
                    tracing::error!(
                        panic = %panic_message(&*payload),
                        "thread worker task panicked"
                    );
                }
            }
            WorkItem::Stop => return,
        }
    }
}

impl<Q: WorkQueue> Worker for ThreadWorker<Q> {
    fn do_work(&self, task: Task) -> Result<(), AlreadyQuit<Task>> {
        let quit = self.quit.lock();
        if *quit {
            return Err(AlreadyQuit(task));
        }
        self.queue.put(WorkItem::Run(task));
        Ok(())
    }

    fn quit(&self) -> Result<(), AlreadyQuit> {
        let mut quit = self.quit.lock();
        if *quit {
            return Err(AlreadyQuit(()));
        }
        *quit = true;
        self.queue.put(WorkItem::Stop);
        Ok(())
    }
}

impl<Q: WorkQueue> ExclusiveWorker for ThreadWorker<Q> {}

/// Dropping a worker quits it (if not done already): the queued tasks still
/// run, then the thread exits instead of waiting forever for work.
impl<Q: WorkQueue> Drop for ThreadWorker<Q> {
    fn drop(&mut self) {
        let _ = Worker::quit(self);
    }
}
