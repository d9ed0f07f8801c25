//! TEMPORARY (reactor branch): `Reactor` forwarding for the bridge's thread
//! operations, so this branch builds on its own now that `Reactor` no longer
//! dereferences to `Handle`. The bridge branch owns the real block (contract
//! C5); delete this file and its `mod` line when merging it.

use std::sync::Arc;

use crate::bridge::ThreadCall;
use crate::deferred::Deferred;
use crate::error::{AlreadyQuit, PoolConfigError};
use crate::pool::ThreadPool;
use crate::threads::Worker;

use super::core::Reactor;

impl Reactor {
    /// [`Handle::thread_pool`](super::Handle::thread_pool) on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let _pool = reactor.thread_pool();
    /// ```
    pub fn thread_pool(&self) -> Arc<ThreadPool> {
        self.handle.thread_pool()
    }

    /// [`Handle::suggest_thread_pool_size`](super::Handle::suggest_thread_pool_size)
    /// on this reactor.
    ///
    /// # Errors
    ///
    /// As the `Handle` method.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.suggest_thread_pool_size(4).unwrap();
    /// ```
    pub fn suggest_thread_pool_size(&self, size: usize) -> Result<(), PoolConfigError> {
        self.handle.suggest_thread_pool_size(size)
    }

    /// [`Handle::call_in_thread`](super::Handle::call_in_thread) on this reactor.
    ///
    /// # Errors
    ///
    /// As the `Handle` method.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.call_in_thread(|| ()).unwrap();
    /// reactor.stop();
    /// reactor.run().unwrap();
    /// ```
    pub fn call_in_thread<F>(&self, f: F) -> Result<(), AlreadyQuit<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        self.handle.call_in_thread(f)
    }

    /// [`Handle::call_multiple_in_thread`](super::Handle::call_multiple_in_thread)
    /// on this reactor.
    ///
    /// # Errors
    ///
    /// As the `Handle` method.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.call_multiple_in_thread(Vec::new()).unwrap();
    /// ```
    pub fn call_multiple_in_thread(
        &self,
        calls: Vec<ThreadCall>,
    ) -> Result<(), AlreadyQuit<Vec<ThreadCall>>> {
        self.handle.call_multiple_in_thread(calls)
    }

    /// [`Handle::defer_to_thread`](super::Handle::defer_to_thread) on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let d = reactor.defer_to_thread(|| 2 + 2);
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(4));
    /// ```
    pub fn defer_to_thread<T, F>(&self, f: F) -> Deferred<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.handle.defer_to_thread(f)
    }

    /// [`Handle::defer_to_thread_pool`](super::Handle::defer_to_thread_pool)
    /// on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft::ThreadPool::new(1, 1).unwrap();
    /// pool.start();
    /// let d = reactor.defer_to_thread_pool(&pool, || 5);
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(5));
    /// pool.stop();
    /// ```
    pub fn defer_to_thread_pool<T, F>(&self, pool: &ThreadPool, f: F) -> Deferred<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.handle.defer_to_thread_pool(pool, f)
    }

    /// [`Handle::defer_to_worker`](super::Handle::defer_to_worker) on this reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::{ThreadWorker, Worker};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let worker = ThreadWorker::new().unwrap();
    /// let d = reactor.defer_to_worker(&worker, || 6);
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(6));
    /// worker.quit().unwrap();
    /// ```
    pub fn defer_to_worker<T, F, W>(&self, worker: &W, f: F) -> Deferred<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
        W: Worker + ?Sized,
    {
        self.handle.defer_to_worker(worker, f)
    }
}
