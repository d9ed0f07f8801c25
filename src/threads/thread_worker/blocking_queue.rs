//! The default [`WorkQueue`]: [`BlockingQueue`], a FIFO under a mutex whose
//! condition variable is signalled only for a consumer no earlier `put`
//! signalled, with an opt-in spin.
//!
//! # The opt-in spin of a [`BlockingQueue`]
//!
//! A queue built by [`BlockingQueue::with_spin`] lets a consumer that finds
//! it empty watch a hint for a bounded time before it waits on the condvar,
//! so a `put` that comes within the bound costs an atomic add instead of a
//! `FUTEX_WAKE` on the producer and a sleep and wakeup on the consumer (the
//! same protocol as the pool's idle spin, `pool/spin.rs`):
//!
//! - Under the lock the consumer becomes *the* spinner (`Spinner::Watching`;
//!   at most one per queue, so consumers on few cores never burn more than
//!   one core between them) and reads the hint; then it spins on the hint
//!   alone (no lock, no `sched_yield`: crossbeam #821/#997).
//! - A `put` that finds a watching spinner claims it (`Spinner::Claimed`)
//!   and raises the hint after unlocking, instead of notifying. The spinner
//!   takes the lock when the hint moves or the bound passes and pops as
//!   usual: an item whose put claimed it is in the queue by then (or another
//!   consumer took it), so no item waits for a notify that never comes.
//!   A second `put` finds the spinner claimed and notifies as without spin.
//! - A consumer spins at most once per `get`, before it first waits.
//! - Spinning adapts through the crate's one backoff rule
//!   ([`SpinBackoff`](crate::loom::SpinBackoff), under the lock): a spin
//!   that was not claimed pauses spinning for a number of `get`s that
//!   doubles with each miss, up to [`MAX_SPIN_PAUSE`]; a claimed one halves
//!   it. Where producers share the spinner's only core the spins miss and
//!   soon become rare.
//! - The hint is a counter: a stale raise (meant for an earlier spin) ends
//!   a later spin early, costing one look at the lock, never a lost item.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{WorkItem, WorkQueue};
use crate::loom::atomic::{AtomicUsize, Ordering};
use crate::loom::{Condvar, Mutex, MutexGuard, Spin, SpinBackoff};

/// The most `get`s without a spin after spins that were not claimed (the
/// pool's idle spin uses the same bound).
pub(crate) const MAX_SPIN_PAUSE: u32 = 128;

struct QueueState {
    items: VecDeque<WorkItem>,
    /// Consumers waiting on the condvar that no `put` has signalled yet.
    waiters: usize,
    /// Signals sent to waiters and not yet taken: a consumer leaves its
    /// wait only by taking one (or, in `get_timeout`, by giving up its
    /// count). So `waiters + wakeups` is the number of consumers inside a
    /// wait, and a `put` signals only a waiter no earlier `put` signalled:
    /// while a woken consumer has not run yet, further puts cost no
    /// `FUTEX_WAKE` (it takes their items when it runs, before it waits
    /// again).
    wakeups: usize,
    /// Signals sent (tests count them).
    #[cfg(test)]
    signals: usize,
    /// The one consumer spinning on the hint, if any (spinning queues only).
    spinner: Spinner,
    /// Whether the next empty `get` may spin, from how the last spins went.
    backoff: SpinBackoff,
}

/// The spin state of a queue (see the module notes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spinner {
    /// No consumer spins: a `put` notifies a waiter if there is one.
    None,
    /// A consumer spins on the hint: the next `put` raises it, no notify.
    Watching,
    /// A `put` raised the hint for the spinner, which has not yet taken the
    /// lock back.
    Claimed,
}

/// The counter a spinning consumer watches, alone in its cache line (the
/// lock word beside it changes on every `put` and `get`).
#[derive(Debug)]
#[repr(align(64))]
struct SpinHint(AtomicUsize);

impl SpinHint {
    /// Spins until the hint moves from `seen` or `limit` passes; whether it
    /// moved.
    fn spin(&self, seen: usize, limit: Duration) -> bool {
        let mut spin = Spin::new(limit);
        loop {
            if self.0.load(Ordering::Acquire) != seen {
                return true;
            }
            if !spin.again() {
                return false;
            }
        }
    }
}

/// The default [`WorkQueue`]: a FIFO under a mutex, with a condition variable
/// signalled only when a consumer is waiting and no earlier `put` has
/// signalled it already.
///
/// [`new`](BlockingQueue::new) consumers wait on the condition variable as
/// soon as the queue is empty; [`with_spin`](BlockingQueue::with_spin)
/// consumers first spin for a bounded, adaptive time, so a `put` soon
/// after needs no wake (see the module notes). Either way items come out
/// in FIFO order, each exactly once, and `get` waits until there is one.
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
    /// How long an empty `get` may spin; `None`: never.
    spin_limit: Option<Duration>,
    hint: SpinHint,
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
                wakeups: 0,
                #[cfg(test)]
                signals: 0,
                spinner: Spinner::None,
                backoff: SpinBackoff::new(),
            }),
            ready: Condvar::new(),
            spin_limit: None,
            hint: SpinHint(AtomicUsize::new(0)),
        }
    }

    /// Returns an empty queue whose consumers, finding it empty, first spin
    /// for at most `limit` (one consumer at a time, adaptively: spins that
    /// see no `put` become rare) before they wait. For a consumer thread
    /// whose next item usually comes within a few microseconds of its last
    /// one finishing; a zero `limit` never spins.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft::threads::{BlockingQueue, ThreadWorker, Worker};
    ///
    /// let queue = BlockingQueue::with_spin(Duration::from_micros(10));
    /// let worker = ThreadWorker::with_parts(queue, |body| {
    ///     std::thread::Builder::new().spawn(body).map(drop)
    /// })
    /// .unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// worker.do_work(Box::new(move || tx.send(7).unwrap())).unwrap();
    /// assert_eq!(rx.recv().unwrap(), 7);
    /// worker.quit().unwrap();
    /// ```
    pub fn with_spin(limit: Duration) -> Self {
        BlockingQueue {
            spin_limit: Some(limit).filter(|l| !l.is_zero()),
            ..BlockingQueue::new()
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

    /// Runs `f` on the calling thread with the queue's lock held: for tests
    /// of callers that must not wait for it ([`WorkQueue::try_put_batch`]),
    /// which stand in for a consumer preempted while it holds the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{BlockingQueue, WorkItem, WorkQueue};
    ///
    /// let queue = BlockingQueue::new();
    /// queue.with_lock_held(|| assert!(queue.try_put_batch(vec![WorkItem::Stop]).is_err()));
    /// assert!(queue.try_put_batch(vec![WorkItem::Stop]).is_ok());
    /// ```
    #[doc(hidden)]
    pub fn with_lock_held<R>(&self, f: impl FnOnce() -> R) -> R {
        let _held = self.state.lock();
        f()
    }
}

impl BlockingQueue {
    /// Queues `n` items (`push` appends them) under one lock hold, then
    /// signals what `n` single puts would: a watching spinner is claimed by
    /// the first, and each later item signals a waiter while one is
    /// unsignalled. All signals go out after every item is queued.
    #[inline]
    fn hand_over(&self, n: usize, push: impl FnOnce(&mut VecDeque<WorkItem>)) {
        self.hand_over_locked(self.state.lock(), n, push);
    }

    /// [`hand_over`](Self::hand_over) with the lock already held (taken
    /// by `lock` or by `try_lock`).
    #[inline]
    fn hand_over_locked(
        &self,
        mut state: MutexGuard<'_, QueueState>,
        n: usize,
        push: impl FnOnce(&mut VecDeque<WorkItem>),
    ) {
        push(&mut state.items);
        let raise = state.spinner == Spinner::Watching;
        let mut left = n;
        if raise {
            state.spinner = Spinner::Claimed;
            left -= 1;
        }
        let signal = left.min(state.waiters);
        state.waiters -= signal;
        state.wakeups += signal;
        #[cfg(test)]
        {
            state.signals += signal;
        }
        drop(state);
        if raise {
            self.hint.0.fetch_add(1, Ordering::Release);
        }
        for _ in 0..signal {
            self.ready.notify_one();
        }
    }
}

impl WorkQueue for BlockingQueue {
    fn put(&self, item: WorkItem) {
        self.hand_over(1, |items| items.push_back(item));
    }

    fn put_batch(&self, items: Vec<WorkItem>) {
        if !items.is_empty() {
            self.hand_over(items.len(), |queued| queued.extend(items));
        }
    }

    /// Takes the lock only if nobody holds it (`try_lock`: one atomic
    /// compare-and-swap, never a futex wait); the signals are those of
    /// `put_batch`.
    fn try_put_batch(&self, items: Vec<WorkItem>) -> Result<(), Vec<WorkItem>> {
        if items.is_empty() {
            return Ok(());
        }
        let Some(state) = self.state.try_lock() else {
            return Err(items);
        };
        self.hand_over_locked(state, items.len(), |queued| queued.extend(items));
        Ok(())
    }

    fn get(&self) -> WorkItem {
        let mut state = self.state.lock();
        let mut may_spin = self.spin_limit;
        loop {
            if let Some(item) = state.items.pop_front() {
                return item;
            }
            let spin = match may_spin.take() {
                Some(limit) if state.spinner == Spinner::None && state.backoff.try_spin() => {
                    Some(limit)
                }
                _ => None,
            };
            if let Some(limit) = spin {
                state.spinner = Spinner::Watching;
                let seen = self.hint.0.load(Ordering::Relaxed);
                drop(state);
                self.hint.spin(seen, limit);
                state = self.state.lock();
                if state.spinner == Spinner::Claimed {
                    state.backoff.hit();
                } else {
                    state.backoff.miss(MAX_SPIN_PAUSE, false);
                }
                state.spinner = Spinner::None;
                continue;
            }
            may_spin = None;
            state.waiters += 1;
            loop {
                state = self.ready.wait(state);
                // A wakeup without a signal: still counted, wait again.
                if state.wakeups > 0 {
                    state.wakeups -= 1;
                    break;
                }
            }
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
            // Leaving the wait, signalled or not: take a signal if one is
            // pending (then this consumer takes the item it was sent for,
            // and a signalled consumer that finds none waits again, still
            // counted), otherwise give up the count.
            if state.wakeups > 0 {
                state.wakeups -= 1;
            } else {
                state.waiters -= 1;
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_spin;
