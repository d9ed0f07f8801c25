//! Withdrawing unstarted work: [`CancelHandle`].
//!
//! A handle names its item by [`TaskKey`] (a sequence number the queue
//! never reuses), so a stale handle withdraws nothing; the closure is
//! dropped after the pool's lock is released.

use std::fmt;

use super::TaskKey;
use super::thread::Core;
use crate::loom::Arc;

/// Withdraws one unstarted call from its pool; see
/// [`ThreadPool::call_in_thread_cancellable`](super::ThreadPool::call_in_thread_cancellable).
///
/// Dropping the handle does not cancel the call.
///
/// # Examples
///
/// ```
/// let pool = weft::ThreadPool::new(0, 1).unwrap();
/// let handle = pool.call_in_thread_cancellable(|| unreachable!()).unwrap_or_else(|_| unreachable!());
/// assert!(handle.cancel());
/// assert!(!handle.cancel());
/// ```
pub struct CancelHandle {
    pub(super) core: Arc<Core>,
    pub(super) key: TaskKey,
}

impl fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelHandle")
            .field("pool", &self.core.name)
            .field("key", &self.key)
            .finish()
    }
}

impl CancelHandle {
    /// Removes the call from the pool's queue if no thread has taken it yet,
    /// and drops its closure (outside the pool's lock). Returns whether it
    /// did; `false` means the call has started (or finished, or was already
    /// cancelled or discarded).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::new(0, 1).unwrap();
    /// let h = pool.call_in_thread_cancellable(|| ()).unwrap_or_else(|_| unreachable!());
    /// assert_eq!(pool.statistics().backlog, 1);
    /// assert!(h.cancel());
    /// assert_eq!(pool.statistics().backlog, 0);
    /// ```
    pub fn cancel(&self) -> bool {
        withdraw(&self.core, self.key)
    }
}

pub(super) fn withdraw(core: &Core, key: TaskKey) -> bool {
    let item = core.locked().withdraw(key);
    let found = item.is_some();
    drop(item);
    found
}
