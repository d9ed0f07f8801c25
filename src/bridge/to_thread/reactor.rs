//! `Reactor`'s bridge methods (loop → threads): each forwards to the
//! same method of its `Handle`, so they stay reachable without `Deref`.
//! The work is done in `to_thread.rs`.

use std::panic::Location;
use std::sync::Arc;

use super::super::table::Threads;
use crate::deferred::Deferred;
use crate::error::{AlreadyQuit, PoolConfigError, ThreadError};
use crate::pool::ThreadPool;
use crate::reactor::Reactor;
use crate::threads::{Task, Worker};

/// The bridge operations on the reactor itself (they forward to its
/// [`Handle`](crate::reactor::Handle)), so they stay reachable without `Deref`.
impl Reactor {
    /// The reactor's thread pool; see
    /// [`Handle::thread_pool`](crate::reactor::Handle::thread_pool).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert_eq!(reactor.thread_pool().statistics().max, 64);
    /// ```
    pub fn thread_pool(&self) -> Arc<ThreadPool> {
        self.handle().thread_pool()
    }

    /// Sets the reactor pool's maximum size; see
    /// [`Handle::suggest_thread_pool_size`](crate::reactor::Handle::suggest_thread_pool_size).
    ///
    /// # Errors
    ///
    /// [`PoolConfigError`] if `size` is zero or below the pool's minimum.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.suggest_thread_pool_size(4).unwrap();
    /// ```
    pub fn suggest_thread_pool_size(&self, size: usize) -> Result<(), PoolConfigError> {
        self.handle().suggest_thread_pool_size(size)
    }

    /// Runs `f` on the reactor's pool; see
    /// [`Handle::call_in_thread`](crate::reactor::Handle::call_in_thread).
    ///
    /// # Errors
    ///
    /// [`AlreadyQuit`] with `f` handed back once the reactor has shut down.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// reactor.call_in_thread(move || remote.stop()).unwrap();
    /// reactor.run().unwrap();
    /// ```
    #[track_caller]
    pub fn call_in_thread<F>(&self, f: F) -> Result<(), AlreadyQuit<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        self.handle().call_in_thread(f)
    }

    /// Runs `calls` in order on one pool thread; see
    /// [`Handle::call_multiple_in_thread`](crate::reactor::Handle::call_multiple_in_thread).
    ///
    /// # Errors
    ///
    /// [`AlreadyQuit`] with the calls handed back once the reactor has shut down.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// reactor.call_multiple_in_thread(vec![Box::new(|| ()), Box::new(move || remote.stop())]).unwrap();
    /// reactor.run().unwrap();
    /// ```
    #[track_caller]
    pub fn call_multiple_in_thread(&self, calls: Vec<Task>) -> Result<(), AlreadyQuit<Vec<Task>>> {
        self.handle().call_multiple_in_thread(calls)
    }

    /// Runs `f` on the reactor's pool, its result in a [`Deferred`]; see
    /// [`Handle::defer_to_thread`](crate::reactor::Handle::defer_to_thread).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let d = reactor.defer_to_thread(|| 6 * 7);
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(42));
    /// ```
    #[track_caller]
    pub fn defer_to_thread<T, F>(&self, f: F) -> Deferred<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.handle()
            .defer_to_reactor_pool_at(f, Location::caller())
    }

    /// [`defer_to_thread`](Reactor::defer_to_thread) on a pool of your own;
    /// see [`Handle::defer_to_thread_pool`](crate::reactor::Handle::defer_to_thread_pool).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft::ThreadPool::new(0, 2).unwrap();
    /// pool.start();
    /// let d = reactor.defer_to_thread_pool(&pool, || 1);
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(1));
    /// pool.stop();
    /// ```
    #[track_caller]
    pub fn defer_to_thread_pool<T, F>(&self, pool: &ThreadPool, f: F) -> Deferred<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let handle = self.handle();
        let threads = Threads::of_handle(&handle);
        handle.defer_to_pool_in(&threads, pool, false, f, Location::caller())
    }

    /// [`defer_to_thread`](Reactor::defer_to_thread) on any [`Worker`]; see
    /// [`Handle::defer_to_worker`](crate::reactor::Handle::defer_to_worker).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{ThreadWorker, Worker};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let worker = ThreadWorker::new().unwrap();
    /// let d = reactor.defer_to_worker(&worker, || 5);
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(5));
    /// worker.quit().unwrap();
    /// ```
    #[track_caller]
    pub fn defer_to_worker<T, F, W>(&self, worker: &W, f: F) -> Deferred<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
        W: Worker + ?Sized,
    {
        self.handle().defer_to_worker(worker, f)
    }

    /// [`defer_to_worker`](Reactor::defer_to_worker) for work that fails in
    /// its own way, with its own cancel step; see
    /// [`Handle::defer_to_worker_with`](crate::reactor::Handle::defer_to_worker_with).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{ThreadWorker, Worker};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let worker = ThreadWorker::new().unwrap();
    /// let d = reactor.defer_to_worker_with(&worker, || Err::<u8, _>("no"), |_| "bridge", || ());
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), Err("no"));
    /// worker.quit().unwrap();
    /// ```
    #[track_caller]
    pub fn defer_to_worker_with<T, E, F, W, C>(
        &self,
        worker: &W,
        f: F,
        error: fn(ThreadError) -> E,
        on_cancel: C,
    ) -> Deferred<T, E>
    where
        F: FnOnce() -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
        W: Worker + ?Sized,
        C: FnOnce() + Send + 'static,
    {
        self.handle()
            .defer_to_worker_with(worker, f, error, on_cancel)
    }
}
