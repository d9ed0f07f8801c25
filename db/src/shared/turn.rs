//! The turn's list: the jobs a loop thread submitted for a pool and has
//! not forwarded yet (see the parent module's "One hand-over per turn"),
//! with the write group open for joiners (`group.rs`), and the `Door`
//! through which a job gets there.

use std::cell::RefCell;
use std::sync::Arc;

use weft::AlreadyQuit;
use weft::threads::{Task, Worker};

use super::{Gate, Pending};
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
struct Flush<C: Connector> {
    shared: Arc<Shared<C>>,
}

impl<C: Connector> Drop for Flush<C> {
    fn drop(&mut self) {
        hand_over_deferred(&self.shared);
    }
}

/// Hands over the jobs this thread deferred for the pool of `shared`, now
/// (a flush; the owner's `close`, so that its own loop's jobs of this turn
/// are handed over before the gate closes, as they were submitted before).
pub(crate) fn hand_over_deferred<C: Connector>(shared: &Arc<Shared<C>>) {
    let key = pool_key(shared);
    let mut jobs = DEFERRED
        .try_with(|d| {
            let mut d = d.borrow_mut();
            d.iter_mut().find(|t| t.key == key).map(|t| {
                // Handed over: its group takes no more writes.
                t.open = None;
                t.opening = false;
                std::mem::take(&mut t.jobs)
            })
        })
        .ok()
        .flatten()
        .unwrap_or_default();
    Gate::hand_over(shared, &mut jobs);
    // The emptied list goes back for the next turn's jobs, so a turn's
    // first submit does not allocate it again (unless jobs submitted
    // meanwhile started a new one).
    if jobs.capacity() > 0 {
        let _ = DEFERRED.try_with(|d| {
            if let Some(turn) = d.borrow_mut().iter_mut().find(|t| t.key == key)
                && turn.jobs.capacity() == 0
            {
                turn.jobs = jobs;
            }
        });
    }
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
                    turn.jobs.len() == 1
                }
                None => {
                    d.push(Turn {
                        key,
                        jobs: vec![pending],
                        open: None,
                        opening: self.opens,
                    });
                    true
                }
            }
        });
        match first {
            Ok(true) => {
                let flush = Flush {
                    shared: self.shared.clone(),
                };
                // Runs at the loop's next timer pass; dropped unrun (or
                // off a loop, which `submit` rules out), it forwards all
                // the same.
                if let Some(handle) = weft::reactor::current() {
                    let _ = handle.call_soon(move || drop(flush));
                }
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
