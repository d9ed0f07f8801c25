//! The pool's life: start (spawn the connection threads, dispatch the
//! jobs that waited for the reactor), and close (refuse new work, let the
//! queued work run or cancel it, close every connection on its own thread,
//! join).
//!
//! # Invariants
//!
//! - `Lifecycle` only moves forward: Idle → Running → Closing → Closed, or
//!   Idle → Closed when the pool closes before it started.
//! - The shutdown trigger holds the pool alive from start until shutdown or
//!   `close` (which removes it): dropping every handle never leaves threads
//!   unobserved.
//! - `close`'s `Deferred`s fire only after every thread has reported its
//!   exit, so each connection is closed (on its thread) by then.

use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use weft::Deferred;
use weft::reactor::{Phase, QueuedWork, SystemEvent};
use weft::threads::{BlockingQueue, ThreadWorker, WorkItem, WorkQueue, Worker};

use crate::connector::{Connector, Role};
use crate::pool::{ConnectionPool, Inner, Route};
use crate::shared::Gate;
use crate::stats::Group;
use crate::worker::spawn_worker;

/// A `WorkQueue` shared by all of a group's threads: any idle connection
/// takes the oldest job (one long job does not stall the jobs behind it).
#[derive(Clone, Default)]
pub(crate) struct SharedQueue(Arc<BlockingQueue>);

impl WorkQueue for SharedQueue {
    fn put(&self, job: WorkItem) {
        self.0.put(job)
    }
    fn get(&self) -> WorkItem {
        self.0.get()
    }
    fn put_batch(&self, jobs: Vec<WorkItem>) {
        self.0.put_batch(jobs)
    }
    fn try_put_batch(&self, jobs: Vec<WorkItem>) -> Result<(), Vec<WorkItem>> {
        self.0.try_put_batch(jobs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    Idle,
    Running,
    Closing,
    Closed,
}

pub(crate) struct Workers {
    pub(crate) writer: Option<ThreadWorker>,
    pub(crate) group: Vec<ThreadWorker<SharedQueue>>,
    /// Round-robin over `group` (any of them serves the whole group).
    pub(crate) next: AtomicUsize,
}

/// The group serving `route`, given which groups have threads.
pub(crate) fn target(route: Route, has_writer: bool, has_group: bool) -> Group {
    if has_writer && (route == Route::Write || !has_group) {
        Group::Writer
    } else {
        Group::Readers
    }
}

impl Workers {
    pub(crate) fn target(&self, route: Route) -> Group {
        target(route, self.writer.is_some(), !self.group.is_empty())
    }

    /// Whether any thread could be started.
    pub(crate) fn usable(&self) -> bool {
        self.writer.is_some() || !self.group.is_empty()
    }

    pub(crate) fn quit(&self) {
        if let Some(w) = &self.writer {
            let _ = w.quit();
        }
        for w in &self.group {
            let _ = w.quit();
        }
    }
}

impl<C: Connector> Inner<C> {
    pub(crate) fn start(this: &Rc<Self>) {
        if this.state.get() != Lifecycle::Idle {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let name = &this.shared.name;
        let mut spawned = 0;
        let writer = if this.single_writer {
            match spawn_worker(
                &this.shared,
                Role::Writer,
                Group::Writer,
                format!("weft-db-{name}-w"),
                this.min > 0,
                BlockingQueue::new(),
                tx.clone(),
            ) {
                Ok(w) => {
                    spawned += 1;
                    Some(w)
                }
                Err(e) => {
                    tracing::error!(pool = %name, error = %e, "weft-db: could not start the writer thread");
                    None
                }
            }
        } else {
            None
        };
        let (group_size, group_role, offset) = if this.single_writer {
            (this.max - 1, Role::Reader, 1)
        } else {
            (this.max, Role::Writer, 0)
        };
        let queue = SharedQueue::default();
        let mut group = Vec::with_capacity(group_size);
        for i in 0..group_size {
            let tag = if group_role == Role::Reader { 'r' } else { 'w' };
            match spawn_worker(
                &this.shared,
                group_role,
                Group::Readers,
                format!("weft-db-{name}-{tag}{i}"),
                i + offset < this.min,
                queue.clone(),
                tx.clone(),
            ) {
                Ok(w) => {
                    spawned += 1;
                    group.push(w);
                }
                Err(e) => {
                    tracing::error!(pool = %name, error = %e, "weft-db: could not start a connection thread");
                }
            }
        }
        drop(tx);
        this.threads.set(spawned);
        *this.exits.borrow_mut() = Some(rx);
        let workers = Arc::new(Workers {
            writer,
            group,
            next: AtomicUsize::new(0),
        });
        let usable = workers.usable();
        *this.workers.borrow_mut() = Some(workers.clone());
        this.state.set(Lifecycle::Running);
        Gate::open(&this.shared, usable.then_some(workers));
        // The trigger keeps the pool alive until shutdown (or `close`, which
        // removes it), as Twisted's reactor does: dropping every handle
        // must not leave its threads unobserved.
        let keep = this.clone();
        let id =
            this.handle
                .add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
                    keep.shutdown_trigger.set(None);
                    ConnectionPool { inner: keep }.close()
                });
        this.shutdown_trigger.set(Some(id));
        let backlog = std::mem::take(&mut *this.backlog.borrow_mut());
        let workers = this.workers.borrow();
        for job in backlog {
            job(workers.as_deref().filter(|_| usable));
        }
    }
}

impl<C: Connector> ConnectionPool<C> {
    /// Closes the pool; idempotent (every call's `Deferred` fires when the
    /// pool has closed). New work fails with [`DbError::Stopped`](crate::DbError::Stopped) at once;
    /// jobs in flight finish and deliver; queued jobs run, or are cancelled
    /// under [`QueuedWork::Cancel`]; then each connection is closed on its
    /// own thread and the threads exit. The reactor calls it at shutdown.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let pool = weft_db::ConnectionPool::new(&reactor.handle(), weft_db::SqliteConnector::new(":memory:")).unwrap();
    /// let p = pool.clone();
    /// let done = reactor.run_until_complete(async move {
    ///     p.run_operation("create table t (x)", []).await.unwrap();
    ///     let (a, b) = (p.close(), p.close());
    ///     (a.await, b.await)
    /// });
    /// assert_eq!(done.unwrap(), (Ok(()), Ok(())));
    /// assert!(pool.run_operation("select 1", []).is_resolved()); // Stopped at once
    /// ```
    #[must_use = "the Deferred fires once the pool has closed"]
    pub fn close(&self) -> Deferred<(), weft::Cancelled> {
        let inner = &self.inner;
        // This loop's `SharedPool` jobs of this turn were submitted before
        // the close: handed over now, ahead of the gate's closing.
        crate::shared::hand_over_deferred(&inner.shared);
        match inner.state.get() {
            Lifecycle::Closed => return Deferred::succeed(()),
            Lifecycle::Closing => {
                let d = Deferred::new();
                inner.close_waiters.borrow_mut().push(d.resolver());
                return d;
            }
            Lifecycle::Idle => {
                if let Some(id) = inner.start_trigger.take() {
                    inner.handle.remove_system_event_trigger(id);
                }
                inner.state.set(Lifecycle::Closed);
                Gate::close(&inner.shared.gate, Lifecycle::Closed);
                let backlog = std::mem::take(&mut *inner.backlog.borrow_mut());
                for job in backlog {
                    job(None);
                }
                return Deferred::succeed(());
            }
            Lifecycle::Running => {}
        }
        if let Some(id) = inner.shutdown_trigger.take() {
            inner.handle.remove_system_event_trigger(id);
        }
        inner.state.set(Lifecycle::Closing);
        // Before the quit orders: a job another loop hands over from now on
        // is refused, and every job handed over before is queued ahead of
        // them (the gate forwards under its lock).
        Gate::close(&inner.shared.gate, Lifecycle::Closing);
        if inner.queued_work == QueuedWork::Cancel {
            inner.shared.discard_queued.store(true, Ordering::Release);
        }
        if let Some(workers) = inner.workers.borrow().as_ref() {
            workers.quit();
        }
        let d = Deferred::new();
        inner.close_waiters.borrow_mut().push(d.resolver());
        let threads = inner.threads.get();
        let exits = inner.exits.borrow_mut().take();
        let weak: Weak<Inner<C>> = Rc::downgrade(inner);
        let finish = move |_| {
            if let Some(inner) = weak.upgrade() {
                inner.state.set(Lifecycle::Closed);
                Gate::close(&inner.shared.gate, Lifecycle::Closed);
                let waiters = std::mem::take(&mut *inner.close_waiters.borrow_mut());
                for w in waiters {
                    let _ = w.callback(());
                }
            }
        };
        match exits {
            Some(rx) => inner
                .handle
                .defer_to_thread(move || {
                    for _ in 0..threads {
                        if rx.recv().is_err() {
                            break;
                        }
                    }
                })
                .add_both(finish),
            None => finish(Ok(())),
        }
        d
    }
}
