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
//!
//! The default queue, [`BlockingQueue`], and its opt-in spin are in
//! `thread_worker/blocking_queue.rs`; the error of `try_do_work_batch` in
//! `thread_worker/try_error.rs`.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{ExclusiveWorker, Task, Worker};
use crate::error::{AlreadyQuit, panic_message};
use crate::loom::{Arc, Mutex, thread};

mod blocking_queue;
mod try_error;
mod work_queue;
pub use blocking_queue::BlockingQueue;
pub use try_error::TryDoWorkError;
pub use work_queue::{WorkItem, WorkQueue};

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

impl<Q: WorkQueue> ThreadWorker<Q> {
    /// The queue between this worker and its thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{ThreadWorker, Worker};
    ///
    /// let worker = ThreadWorker::new().unwrap();
    /// worker.quit().unwrap();
    /// let _ = worker.queue().len(); // the stop order, or nothing once taken
    /// ```
    pub fn queue(&self) -> &Q {
        &self.queue
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

impl<Q: WorkQueue> ThreadWorker<Q> {
    /// Queues `tasks` in order as one hand-over ([`WorkQueue::put_batch`]):
    /// on a [`BlockingQueue`], one lock and at most one wake for the
    /// thread, after all of them are queued. They run in order after the
    /// tasks queued before, exactly as if each went through
    /// [`do_work`](Worker::do_work).
    ///
    /// # Errors
    ///
    /// [`AlreadyQuit`] with every task, none queued, once the worker quit.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use weft::threads::{Task, ThreadWorker, Worker};
    ///
    /// let worker = ThreadWorker::new().unwrap();
    /// let (tx, rx) = mpsc::channel();
    /// let tasks: Vec<Task> = (0..3)
    ///     .map(|i| {
    ///         let tx = tx.clone();
    ///         Box::new(move || tx.send(i).unwrap()) as Task
    ///     })
    ///     .collect();
    /// worker.do_work_batch(tasks).unwrap();
    /// assert_eq!(rx.iter().take(3).collect::<Vec<_>>(), [0, 1, 2]);
    /// worker.quit().unwrap();
    /// assert_eq!(worker.do_work_batch(vec![Box::new(|| ())]).unwrap_err().0.len(), 1);
    /// ```
    pub fn do_work_batch(&self, tasks: Vec<Task>) -> Result<(), AlreadyQuit<Vec<Task>>> {
        let quit = self.quit.lock();
        if *quit {
            return Err(AlreadyQuit(tasks));
        }
        self.queue
            .put_batch(tasks.into_iter().map(WorkItem::Run).collect());
        Ok(())
    }

    /// [`do_work_batch`](Self::do_work_batch) for a caller that must not
    /// wait for a lock another thread holds (a reactor's loop handing its
    /// turn's jobs over): queues `tasks` in order if neither the worker's
    /// quit gate nor its queue ([`WorkQueue::try_put_batch`]) is held by
    /// another thread now.
    ///
    /// # Errors
    ///
    /// Nothing is queued and every task comes back, in order:
    /// - [`TryDoWorkError::Busy`] while another thread holds one of those
    ///   locks: offer the tasks again later, ahead of any task queued after
    ///   them, so the order is kept;
    /// - [`TryDoWorkError::Quit`] once the worker quit.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use weft::threads::{Task, ThreadWorker, TryDoWorkError, Worker};
    ///
    /// let worker = ThreadWorker::new().unwrap();
    /// let (tx, rx) = mpsc::channel();
    /// let mut tasks: Vec<Task> = vec![Box::new(move || tx.send(1).unwrap())];
    /// // Handed back only while another thread holds a lock: offer again.
    /// while let Err(TryDoWorkError::Busy(back)) = worker.try_do_work_batch(tasks) {
    ///     tasks = back;
    /// }
    /// assert_eq!(rx.recv().unwrap(), 1);
    /// worker.quit().unwrap();
    /// let refused = worker.try_do_work_batch(vec![Box::new(|| ())]).unwrap_err();
    /// assert!(refused.is_quit());
    /// assert_eq!(refused.into_inner().len(), 1);
    /// ```
    pub fn try_do_work_batch(&self, tasks: Vec<Task>) -> Result<(), TryDoWorkError<Vec<Task>>> {
        let Some(quit) = self.quit.try_lock() else {
            return Err(TryDoWorkError::Busy(tasks));
        };
        if *quit {
            return Err(TryDoWorkError::Quit(tasks));
        }
        let items = tasks.into_iter().map(WorkItem::Run).collect();
        let result = self.queue.try_put_batch(items);
        drop(quit);
        result.map_err(|items| {
            TryDoWorkError::Busy(
                items
                    .into_iter()
                    .filter_map(|item| match item {
                        WorkItem::Run(task) => Some(task),
                        // Only the tasks given come back.
                        WorkItem::Stop => None,
                    })
                    .collect(),
            )
        })
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

#[cfg(all(test, not(loom)))]
mod tests;
