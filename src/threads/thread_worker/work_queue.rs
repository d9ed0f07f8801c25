//! What a [`ThreadWorker`](crate::threads::ThreadWorker) takes its work from: the
//! [`WorkQueue`] trait and its items.

use std::time::Duration;

use super::super::Task;

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

/// The queue between a [`ThreadWorker`](crate::threads::ThreadWorker) and its thread.
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

    /// Appends `items` in order, as one hand-over.
    ///
    /// The default puts them one by one; [`BlockingQueue`](crate::threads::BlockingQueue) takes its lock
    /// once and wakes at most one waiting consumer per item, after all of
    /// them are queued (so a woken consumer finds the whole batch instead
    /// of one item, on a machine where it preempts the producer at once).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{BlockingQueue, WorkItem, WorkQueue};
    ///
    /// let queue = BlockingQueue::new();
    /// queue.put_batch(vec![WorkItem::Run(Box::new(|| ())), WorkItem::Stop]);
    /// assert!(matches!(queue.get(), WorkItem::Run(_)));
    /// assert!(matches!(queue.get(), WorkItem::Stop));
    /// ```
    fn put_batch(&self, items: Vec<WorkItem>) {
        for item in items {
            self.put(item);
        }
    }

    /// [`put_batch`](WorkQueue::put_batch) for a caller that must not
    /// wait (a reactor's loop): appends `items` in order if that needs no
    /// wait for a lock another thread holds now, else hands all of them
    /// back, none queued, for the caller to offer again later (ahead of
    /// anything it queues after them).
    ///
    /// The default queues them with `put_batch` and never hands them back;
    /// [`BlockingQueue`](crate::threads::BlockingQueue) hands them back when a consumer (or another
    /// producer) holds its lock, instead of waiting for it: a consumer
    /// preempted while it holds the lock would hold the caller up for as
    /// long as it stays off its CPU.
    ///
    /// # Errors
    ///
    /// The items, in order and none queued, when queueing them would wait.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{BlockingQueue, WorkItem, WorkQueue};
    ///
    /// let queue = BlockingQueue::new();
    /// // Nobody holds the lock: queued at once.
    /// assert!(queue.try_put_batch(vec![WorkItem::Stop]).is_ok());
    /// assert!(matches!(queue.get(), WorkItem::Stop));
    /// ```
    fn try_put_batch(&self, items: Vec<WorkItem>) -> Result<(), Vec<WorkItem>> {
        self.put_batch(items);
        Ok(())
    }
}
