//! The turn's list: the jobs a loop thread submitted for a pool and has
//! not forwarded yet (see the parent module's "One hand-over per turn"),
//! with the write group open for joiners (`group.rs`), and the `Door`
//! through which a job gets there.

use std::cell::RefCell;
use std::sync::Arc;

use weft::AlreadyQuit;
use weft::threads::{Task, Worker};

use super::{Gate, Held, Pending};
use crate::connector::Connector;
use crate::group::OpenGroup;
use crate::lifecycle::Lifecycle;
use crate::lock;
use crate::pool::Route;
use crate::worker::{JobState, Shared};

/// One pool's jobs of this loop thread's turn, not yet forwarded.
struct Turn {
    /// The address of the pool's `Shared`.
    key: usize,
    jobs: Vec<Pending>,
    /// The write group still open for joiners (`group.rs`): its job is in
    /// `jobs` and no job for the writer was queued after it. Cleared when
    /// `jobs` is handed over, so a group's job never changes once it left.
    open: Option<OpenGroup>,
    /// The last job queued is a write group's, not yet opened: its
    /// submitter opens it next (`open_group`).
    opening: bool,
    /// Tasks a flush offered to a thread whose queue was busy: they go
    /// first at the next flush (`Gate::hand_over`).
    held: Held,
    /// A `Flush` is scheduled (at most one per pool and loop thread).
    armed: bool,
}

thread_local! {
    /// Jobs this loop thread submitted and not yet forwarded, per pool
    /// (keyed by the address of its `Shared`; see the module notes).
    static DEFERRED: RefCell<Vec<Turn>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with the write group open in this loop thread's turn for the
/// pool of `shared`, if there is one (`None`: no list, or the thread's
/// locals are torn down).
pub(crate) fn with_open_group<C: Connector, R>(
    shared: &Arc<Shared<C>>,
    f: impl FnOnce(&OpenGroup) -> R,
) -> Option<R> {
    let key = pool_key(shared);
    DEFERRED
        .try_with(|d| {
            let d = d.borrow();
            let turn = d.iter().find(|t| t.key == key)?;
            turn.open.as_ref().map(f)
        })
        .ok()
        .flatten()
}

/// Opens `group` for joiners if the job just submitted for it waits in
/// this loop thread's turn for the pool of `shared` (otherwise it was
/// forwarded, kept or refused at once, and nobody may join it).
pub(crate) fn open_group<C: Connector>(shared: &Arc<Shared<C>>, group: OpenGroup) {
    let key = pool_key(shared);
    let _ = DEFERRED.try_with(|d| {
        if let Some(turn) = d.borrow_mut().iter_mut().find(|t| t.key == key)
            && std::mem::take(&mut turn.opening)
        {
            turn.open = Some(group);
        }
    });
}

fn pool_key<C: Connector>(shared: &Arc<Shared<C>>) -> usize {
    Arc::as_ptr(shared) as *const () as usize
}

/// Forwards this loop thread's deferred jobs of one pool when run or
/// dropped (module notes).
///
/// Run by the loop, it waits for no lock another thread holds: what it
/// cannot hand over now (a connection thread's queue is busy) stays first
/// in this thread's list, and it schedules itself again for the next turn,
/// which keeps the loop from sleeping while jobs wait. Dropped unrun (the
/// reactor drops its timers), it hands everything over, waiting if need be.
struct Flush<C: Connector> {
    shared: Arc<Shared<C>>,
    /// Already run (the drop then does nothing).
    ran: bool,
}

impl<C: Connector> Flush<C> {
    /// Schedules a flush for the pool of `shared` on the current loop.
    fn arm(shared: &Arc<Shared<C>>) {
        let flush = Flush {
            shared: shared.clone(),
            ran: false,
        };
        // Runs at the loop's next timer pass; dropped unrun (or off a loop,
        // which `submit` rules out), it forwards all the same.
        if let Some(handle) = weft::reactor::current() {
            let _ = handle.call_soon(move || flush.run());
        }
    }

    fn run(mut self) {
        self.ran = true;
        if !hand_over(&self.shared, false) {
            Flush::arm(&self.shared);
        }
    }
}

impl<C: Connector> Drop for Flush<C> {
    fn drop(&mut self) {
        if !self.ran {
            hand_over(&self.shared, true);
        }
    }
}

/// Hands over the jobs this thread deferred for the pool of `shared`, now,
/// waiting for the locks if need be (the owner's `close`, so that its own
/// loop's jobs of this turn are handed over before the gate closes, as
/// they were submitted before; a job handed over at once, behind them).
pub(crate) fn hand_over_deferred<C: Connector>(shared: &Arc<Shared<C>>) {
    hand_over(shared, true);
}

/// Hands over this thread's deferred jobs for the pool of `shared`
/// (`Gate::hand_over`: `wait` or not); whether none is left. A flush that
/// leaves some (not waiting) stays armed: the caller schedules the next.
fn hand_over<C: Connector>(shared: &Arc<Shared<C>>, wait: bool) -> bool {
    let key = pool_key(shared);
    let (mut jobs, mut held) = DEFERRED
        .try_with(|d| {
            let mut d = d.borrow_mut();
            d.iter_mut().find(|t| t.key == key).map(|t| {
                // Handed over: its group takes no more writes.
                t.open = None;
                t.opening = false;
                t.armed = false;
                (std::mem::take(&mut t.jobs), std::mem::take(&mut t.held))
            })
        })
        .ok()
        .flatten()
        .unwrap_or_default();
    let done = Gate::hand_over(shared, &mut jobs, &mut held, wait);
    if done && jobs.capacity() == 0 {
        return true;
    }
    // What is left goes back first, and the emptied list goes back for the
    // next turn's jobs, so a turn's first submit does not allocate it
    // again (unless jobs submitted meanwhile started a new one).
    let mut left = Some((jobs, held));
    let _ = DEFERRED.try_with(|d| {
        let mut d = d.borrow_mut();
        let Some(turn) = d.iter_mut().find(|t| t.key == key) else {
            return;
        };
        let (mut jobs, mut held) = left.take().expect("taken once");
        if !jobs.is_empty() {
            // The gate was busy: none of them moved.
            jobs.append(&mut turn.jobs);
            turn.jobs = jobs;
        } else if turn.jobs.capacity() == 0 {
            turn.jobs = jobs;
        }
        if !held.is_empty() {
            held.append(std::mem::take(&mut turn.held));
            turn.held = held;
        }
        if !done {
            turn.armed = true;
        }
    });
    match left {
        // No list to keep them in (the thread's locals are torn down).
        Some((mut jobs, mut held)) if !done => Gate::hand_over(shared, &mut jobs, &mut held, true),
        _ => done,
    }
}

/// Whether this loop thread keeps jobs for the pool of `shared` (deferred
/// to its turn's flush, or held back from a busy queue): a job handed over
/// at once must go behind them. One look at the thread's list, so a pool
/// that hands every job over at once pays no hand-over for it.
fn keeps_jobs<C: Connector>(shared: &Arc<Shared<C>>) -> bool {
    let key = pool_key(shared);
    DEFERRED
        .try_with(|d| {
            d.borrow()
                .iter()
                .any(|t| t.key == key && !(t.jobs.is_empty() && t.held.is_empty()))
        })
        .unwrap_or(false)
}

/// One job's way in from a loop: kept in this thread's `DEFERRED` list
/// for the turn's flush (module notes) while that loop runs; otherwise
/// (a reactor not started or shutting down, or the list unavailable
/// because the thread is exiting) forwarded, kept for the start, or
/// refused at once by the gate's state at that instant.
pub(super) struct Door<'a, C: Connector> {
    pub(super) shared: &'a Arc<Shared<C>>,
    /// Whether the submitting loop runs (so its turn will end and flush);
    /// otherwise the job is handed over at once.
    pub(super) defer: bool,
    pub(super) route: Route,
    pub(super) job: &'a Arc<JobState>,
    /// Whether the job goes to the writer: deferred, it closes the open
    /// write group (writer jobs keep their submission order).
    pub(super) cuts: bool,
    /// A write group's job: deferred, its submitter may open the group.
    pub(super) opens: bool,
}

impl<C: Connector> Door<'_, C> {
    fn do_now(&self, task: Task) -> Result<(), AlreadyQuit<Task>> {
        // Behind any job this thread still keeps for the pool (a flush
        // that found a queue busy), as it was submitted after them.
        if keeps_jobs(self.shared) {
            hand_over(self.shared, true);
        }
        let mut gate = lock(&self.shared.gate);
        match gate.state {
            Lifecycle::Running => gate.forward(self.shared, self.route, self.job, task),
            Lifecycle::Idle => {
                gate.backlog.push(Pending {
                    route: self.route,
                    job: self.job.clone(),
                    task,
                });
                Ok(())
            }
            Lifecycle::Closing | Lifecycle::Closed => Err(AlreadyQuit(task)),
        }
    }
}

impl<C: Connector> Worker for Door<'_, C> {
    fn do_work(&self, task: Task) -> Result<(), AlreadyQuit<Task>> {
        if !self.defer {
            return self.do_now(task);
        }
        let key = pool_key(self.shared);
        // Moved into the list only if the closure runs; `try_with` fails
        // (and runs nothing) while the thread's locals are torn down.
        let mut task = Some(task);
        let first = DEFERRED.try_with(|d| {
            let pending = Pending {
                route: self.route,
                job: self.job.clone(),
                task: task.take().expect("taken once"),
            };
            let mut d = d.borrow_mut();
            match d.iter_mut().find(|t| t.key == key) {
                Some(turn) => {
                    turn.jobs.push(pending);
                    turn.opening = self.opens;
                    if self.cuts {
                        turn.open = None;
                    }
                    !std::mem::replace(&mut turn.armed, true)
                }
                None => {
                    d.push(Turn {
                        key,
                        jobs: vec![pending],
                        open: None,
                        opening: self.opens,
                        held: Held::default(),
                        armed: true,
                    });
                    true
                }
            }
        });
        match first {
            Ok(true) => {
                Flush::arm(self.shared);
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(_) => self.do_now(task.expect("the list took nothing: the task is still here")),
        }
    }

    fn quit(&self) -> Result<(), AlreadyQuit> {
        // A door serves one job; the pool's owner quits the threads.
        Err(AlreadyQuit(()))
    }
}

/// How many tasks this loop thread holds back for the pool of `shared`
/// (offered to a busy queue, not yet handed over).
#[cfg(test)]
fn held_here<C: Connector>(shared: &Arc<Shared<C>>) -> usize {
    let key = pool_key(shared);
    DEFERRED.with(|d| {
        d.borrow()
            .iter()
            .find(|t| t.key == key)
            .map_or(0, |t| t.held.writer.len() + t.held.group.len())
    })
}

#[cfg(test)]
mod tests {
    //! The turn's flush waits for no lock a connection thread holds.
    //! Ordering by channels, never by sleeps; a loop that did wait for the
    //! lock fails the test (the holder gives up after a long timeout).

    use std::sync::mpsc;
    use std::time::Duration;

    use super::held_here;
    use crate::{ConnectionPool, DbError, SqliteConnector, lock};

    type Order = std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>;

    fn record(
        order: &Order,
        tag: &'static str,
    ) -> impl FnOnce(&mut rusqlite::Connection) -> Result<(), DbError> + Send + 'static {
        let order = order.clone();
        move |_| {
            order.lock().unwrap().push(tag);
            Ok(())
        }
    }

    #[test]
    fn a_flush_while_a_thread_holds_the_writers_queue_lock_goes_on_and_hands_over_in_order_later() {
        let reactor = weft::Reactor::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pool = ConnectionPool::builder(SqliteConnector::new(dir.path().join("a.db")))
            .max(1) // the writer alone
            .build(&reactor.handle())
            .unwrap();
        let shared = pool.shared();
        let order = Order::default();
        let o = order.clone();
        let out = reactor.run_until_complete(async move {
            let handle = weft::reactor::current().unwrap();
            pool.run_with_connection(|_| Ok::<_, DbError>(()))
                .await
                .unwrap();
            let workers = lock(&shared.shared.gate).workers.clone().unwrap();
            let (held_tx, held_rx) = mpsc::channel();
            let (release_tx, release_rx) = mpsc::channel::<()>();
            // Stands in for the writer thread preempted with its queue's
            // lock held.
            let holder = std::thread::spawn(move || {
                let writer = workers.writer.as_ref().unwrap();
                writer.queue().with_lock_held(|| {
                    held_tx.send(()).unwrap();
                    release_rx
                        .recv_timeout(Duration::from_secs(30))
                        .expect("the loop waited for the queue's lock")
                });
            });
            held_rx.recv().unwrap();
            let a = shared.run_with_connection(record(&o, "1"));
            let b = shared.run_with_connection(record(&o, "2"));
            // Turns go by: the flush found the queue busy, kept both jobs
            // and the loop went on.
            for _ in 0..3 {
                handle.sleep(Duration::ZERO).await.unwrap();
            }
            assert_eq!(held_here(&shared.shared), 2);
            let c = shared.run_with_connection(record(&o, "3"));
            handle.sleep(Duration::ZERO).await.unwrap();
            assert!(o.lock().unwrap().is_empty(), "nothing ran yet");
            release_tx.send(()).unwrap();
            holder.join().unwrap();
            let out = (a.await, b.await, c.await);
            assert_eq!(held_here(&shared.shared), 0);
            out
        });
        let (a, b, c) = out.unwrap();
        assert!(a.is_ok() && b.is_ok() && c.is_ok());
        assert_eq!(*order.lock().unwrap(), ["1", "2", "3"]);
    }
}
