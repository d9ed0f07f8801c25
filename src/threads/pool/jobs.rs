//! Job diagnostics: what runs now and how long jobs wait and run.
//!
//! Every queued job carries its submitter's `#[track_caller]` location and
//! its enqueue time beside it in the queue slot (`queue.rs`); a thread
//! records the job it runs (location, start) in its own `running` slot
//! under the lock it holds anyway (`thread.rs`). The histograms are
//! recorded outside the lock, when enabled.
//!
//! Times are on the *job clock* (`thread.rs`, `JobClock`): the pool's clock
//! when it is a custom one (tests) or when histograms are on, else the
//! kernel's coarse monotonic clock (a tick of 1-4 ms, about 5 ns a read
//! where a precise read costs 40-90 ns on the VMs measured), which is
//! plenty for ages that matter in seconds (a wedge).

use std::time::Duration;

use super::{JobInfo, ThreadPool};
use crate::diagnostics::HistogramSnapshot;

impl ThreadPool {
    /// The jobs running now, longest-running first: where each was
    /// submitted and how long it has run, on the pool's clock.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    ///
    /// let pool = weft::ThreadPool::new(1, 1).unwrap();
    /// pool.start();
    /// let (started, wait) = (mpsc::channel(), mpsc::channel::<()>());
    /// let (tell, release) = (started.0, wait.1);
    /// let line = line!() + 1;
    /// pool.call_in_thread(move || { tell.send(()).unwrap(); let _ = release.recv(); })
    ///     .unwrap_or_else(|_| unreachable!());
    /// started.1.recv().unwrap();
    /// let running = pool.running_jobs();
    /// assert_eq!(running.len(), 1);
    /// assert_eq!(running[0].location.line(), line);
    /// drop(wait.0);
    /// pool.stop();
    /// assert!(pool.running_jobs().is_empty());
    /// ```
    pub fn running_jobs(&self) -> Vec<JobInfo> {
        let now = self.core.job_stamp();
        let mut jobs: Vec<JobInfo> = self
            .core
            .state
            .lock()
            .running
            .iter()
            .filter_map(|slot| slot.0)
            .map(|job| JobInfo {
                location: job.location,
                age: Duration::from_nanos(now.saturating_sub(job.started)),
            })
            .collect();
        jobs.sort_by_key(|job| std::cmp::Reverse(job.age));
        jobs
    }

    /// The time each job waited between its submission and its start, over
    /// the pool's life, on the pool's clock. Empty when histograms are off
    /// ([`ThreadPoolBuilder::histograms`](super::ThreadPoolBuilder::histograms)).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::builder().min(1).max(1).histograms(true).build().unwrap();
    /// pool.start();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// pool.call_in_thread(move || tx.send(()).unwrap()).unwrap_or_else(|_| unreachable!());
    /// rx.recv().unwrap();
    /// pool.stop();
    /// assert_eq!(pool.queue_wait_histogram().count(), 1);
    /// ```
    pub fn queue_wait_histogram(&self) -> HistogramSnapshot {
        self.core.queue_wait.snapshot()
    }

    /// The time each job ran (its callback included), over the pool's life,
    /// on the pool's clock; recorded when the job ends. Empty when
    /// histograms are off ([`ThreadPoolBuilder::histograms`](super::ThreadPoolBuilder::histograms)).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = weft::ThreadPool::builder().min(1).max(1).histograms(true).build().unwrap();
    /// pool.start();
    /// pool.call_in_thread(|| ()).unwrap_or_else(|_| unreachable!());
    /// pool.stop(); // waits for the job
    /// assert_eq!(pool.run_time_histogram().count(), 1);
    /// ```
    pub fn run_time_histogram(&self) -> HistogramSnapshot {
        self.core.run_time.snapshot()
    }
}
