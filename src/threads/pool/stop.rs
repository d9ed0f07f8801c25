//! Stopping a pool: [`ThreadPool::stop`] and its variants, and discarding
//! the backlog.
//!
//! Stopping is one transition of the state ([`State::stop`]): from then on
//! nothing is accepted, idle threads and the spare are told to exit, and the
//! backlog drains through the threads that exist or, when none can run it,
//! is discarded with a log line. The waits here only watch `alive` reach 0
//! on the `exited` condvar; they never decide anything, so every variant
//! (waiting, bounded, serving a loop, detached) ends in the same state.
//!
//! [`State::stop`]: super::state::State::stop

use std::time::{Duration, Instant};

use super::thread::Core;
use super::{StopReport, ThreadPool};

impl ThreadPool {
    /// Stops the pool and waits until every thread has exited; returns what
    /// was left when the wait ended.
    ///
    /// From the first call on, new work is refused. Running work finishes
    /// and backlogged work runs (when at least one thread exists; otherwise
    /// it is discarded, with a log line). Idempotent: later calls just wait.
    ///
    /// It does not wait (the report says `detached`) when called on a
    /// reactor's loop thread, where pool work may be waiting for the loop
    /// (`blocking_call_from_thread`), or on one of the pool's own threads,
    /// which cannot wait for itself. The threads then finish on their own.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::new(2, 2).unwrap();
    /// pool.start();
    /// assert!(pool.stop().is_complete());
    /// pool.stop(); // harmless
    /// assert_eq!(pool.statistics().threads_alive, 0);
    /// ```
    pub fn stop(&self) -> StopReport {
        self.stop_until(None)
    }

    /// Like [`stop`](Self::stop), but waits at most `timeout` (any value, up
    /// to [`Duration::MAX`] for "forever"), then reports what had not
    /// finished. Threads still running are left to finish on their own; the
    /// call never hangs.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    ///
    /// let pool = weft::ThreadPool::new(1, 1).unwrap();
    /// pool.start();
    /// let (release, wait) = mpsc::channel::<()>();
    /// pool.call_in_thread(move || { let _ = wait.recv(); }).unwrap_or_else(|_| unreachable!());
    /// let report = pool.stop_timeout(Duration::from_millis(10));
    /// assert!(!report.is_complete());
    /// drop(release); // lets the task, then the thread, finish
    /// pool.stop();
    /// ```
    pub fn stop_timeout(&self, timeout: Duration) -> StopReport {
        // `None`: a deadline past what `Instant` can hold is no deadline.
        self.stop_until(Some(Instant::now().checked_add(timeout)))
    }

    /// Stops the pool and waits for its threads until `timeout`, even on a
    /// loop thread: every millisecond of waiting is handed to `serve`, which
    /// runs the loop's queued calls, so a thread blocked on the loop
    /// (`blocking_call_from_thread`) is answered instead of deadlocking.
    /// The reactor's own shutdown joins its pool this way.
    pub(crate) fn stop_serving(&self, timeout: Duration, mut serve: impl FnMut()) -> StopReport {
        const SLICE: Duration = Duration::from_millis(1);
        self.begin_stop();
        let deadline = Instant::now().checked_add(timeout);
        let mut st = self.core.locked();
        while st.alive > 0 {
            let now = Instant::now();
            let slice = match deadline {
                Some(deadline) if now >= deadline => break,
                Some(deadline) => SLICE.min(deadline - now),
                None => SLICE,
            };
            st = self.core.exited.wait_timeout(st, slice).0;
            if st.alive == 0 {
                break;
            }
            drop(st);
            serve();
            st = self.core.locked();
        }
        StopReport {
            running: st.busy,
            backlog: st.backlog(),
            threads_alive: st.alive,
            detached: false,
        }
    }

    fn stop_until(&self, deadline: Option<Option<Instant>>) -> StopReport {
        self.begin_stop();
        let detached = crate::loop_marker::is_loop_thread() || Core::is_current(&self.core);
        let mut st = self.core.locked();
        while !detached && st.alive > 0 {
            match deadline.flatten() {
                None => st = self.core.exited.wait(st),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    st = self.core.exited.wait_timeout(st, deadline - now).0;
                }
            }
        }
        StopReport {
            running: st.busy,
            backlog: st.backlog(),
            threads_alive: st.alive,
            detached,
        }
    }

    /// Marks the pool stopped; returns false if it already was.
    pub(super) fn begin_stop(&self) -> bool {
        let mut st = self.core.locked();
        let Some(dropped) = st.stop() else {
            return false;
        };
        let started = st.started;
        drop(st);
        self.core.work.notify_all();
        self.core.spare.notify_all();
        let why = if started {
            "the pool stopped with no thread to run its backlog"
        } else {
            "the pool stopped before it started"
        };
        self.core.discard(dropped, why);
        true
    }

    /// Drops every task still waiting in the backlog (never started) and
    /// returns how many there were. Closures are dropped, so drop guards in
    /// them can report the cancellation. Works before, during and after stop.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::new(0, 1).unwrap();
    /// pool.call_in_thread(|| unreachable!()).unwrap_or_else(|_| unreachable!());
    /// assert_eq!(pool.discard_backlog(), 1);
    /// pool.start();
    /// pool.stop();
    /// ```
    pub fn discard_backlog(&self) -> usize {
        let dropped = self.core.locked().discard_backlog();
        let n = dropped.len();
        for item in dropped {
            item.discard();
        }
        n
    }
}
