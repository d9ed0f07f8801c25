//! The gate (see the parent module's "The gate" and "Invariants"): the
//! pool's state as every loop sees it, the jobs kept for the start, and
//! the hand-over of a turn's jobs to the connection threads (`Held`: the
//! tasks a busy queue handed back, offered first next time).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use weft::AlreadyQuit;
use weft::threads::{Task, ThreadWorker, TryDoWorkError, Worker};

use crate::connector::Connector;
use crate::lifecycle::{Lifecycle, Workers, target};
use crate::lock;
use crate::pool::Route;
use crate::stats::Group;
use crate::worker::{JobState, Shared};

/// A job handed over before the pool started.
pub(crate) struct Pending {
    pub(super) route: Route,
    pub(super) job: Arc<JobState>,
    pub(super) task: Task,
}

/// The pool as every loop sees it (behind `Shared::gate`).
pub(crate) struct Gate {
    pub(super) state: Lifecycle,
    pub(super) workers: Option<Arc<Workers>>,
    pub(super) backlog: Vec<Pending>,
}

impl Gate {
    pub(crate) fn new() -> Mutex<Gate> {
        Mutex::new(Gate {
            state: Lifecycle::Idle,
            workers: None,
            backlog: Vec::new(),
        })
    }

    /// The pool started with `workers` (`None`: no thread could start):
    /// hands over the jobs that waited.
    pub(crate) fn open<C: Connector>(shared: &Shared<C>, workers: Option<Arc<Workers>>) {
        let refused = {
            let mut gate = lock(&shared.gate);
            if gate.state != Lifecycle::Idle {
                return;
            }
            gate.state = Lifecycle::Running;
            gate.workers = workers;
            let backlog = std::mem::take(&mut gate.backlog);
            let mut refused = Vec::new();
            for p in backlog {
                if let Err(AlreadyQuit(task)) = gate.forward(shared, p.route, &p.job, p.task) {
                    refused.push(task);
                }
            }
            refused
        };
        // Off any connection thread: each answers `Stopped` (module docs).
        for task in refused {
            task();
        }
    }

    /// The owner closes (`to`: Closing or Closed): later jobs are refused;
    /// jobs still waiting for a start that will not come answer `Stopped`.
    pub(crate) fn close(gate: &Mutex<Gate>, to: Lifecycle) {
        let backlog = {
            let mut gate = lock(gate);
            if gate.state != Lifecycle::Closed {
                gate.state = to;
            }
            std::mem::take(&mut gate.backlog)
        };
        for p in backlog {
            (p.task)();
        }
    }

    /// Hands `task` to the thread serving `route`; under the gate's lock.
    pub(super) fn forward<C: Connector>(
        &self,
        shared: &Shared<C>,
        route: Route,
        job: &JobState,
        task: Task,
    ) -> Result<(), AlreadyQuit<Task>> {
        let Some(workers) = self.workers.as_deref() else {
            return Err(AlreadyQuit(task));
        };
        let to = workers.target(route);
        job.regroup(to, &shared.stats);
        match &workers.writer {
            Some(writer) if to == Group::Writer => writer.do_work(task),
            _ if workers.group.is_empty() => Err(AlreadyQuit(task)),
            _ => {
                let i = workers.next.fetch_add(1, Ordering::Relaxed);
                // One shared queue: any of them serves the whole group.
                workers.group[i % workers.group.len()].do_work(task)
            }
        }
    }

    /// The group a job on `route` goes to now.
    pub(super) fn plan<C: Connector>(&self, shared: &Shared<C>, route: Route) -> Group {
        match &self.workers {
            Some(workers) => workers.target(route),
            None => target(
                route,
                shared.single_writer,
                shared.max > usize::from(shared.single_writer),
            ),
        }
    }
}

/// Tasks already sorted to their thread and offered to it, handed back
/// because its queue was busy (`Gate::hand_over` without waiting): they go
/// first at the next offer, so each queue still gets its jobs in
/// submission order.
#[derive(Default)]
pub(crate) struct Held {
    pub(super) writer: Vec<Task>,
    pub(super) group: Vec<Task>,
}

impl Held {
    pub(crate) fn is_empty(&self) -> bool {
        self.writer.is_empty() && self.group.is_empty()
    }

    /// `later`'s tasks behind this one's (for each queue).
    pub(crate) fn append(&mut self, later: Held) {
        behind(&mut self.writer, later.writer);
        behind(&mut self.group, later.group);
    }

    fn drain_all(&mut self) -> impl Iterator<Item = Task> + '_ {
        self.writer.drain(..).chain(self.group.drain(..))
    }
}

/// `later` behind `first` (taking `later`'s buffer whole when `first` is
/// empty, so no task is moved one by one).
fn behind(first: &mut Vec<Task>, mut later: Vec<Task>) {
    if first.is_empty() {
        *first = later;
    } else {
        first.append(&mut later);
    }
}

impl Gate {
    /// Forwards `jobs` (after the tasks `held` back from an earlier offer),
    /// keeps them for the start, or refuses them, by the gate's state now,
    /// leaving `jobs` empty; refused ones answer `Stopped` (run off any
    /// connection thread, module docs).
    ///
    /// `wait`: take every lock as it comes. Otherwise (the loop's turn
    /// flush) no lock another thread holds is waited for: if the gate is
    /// held, nothing moves; if a thread's queue is held (its thread,
    /// preempted with the lock held, could keep the loop waiting for
    /// milliseconds), that queue's tasks stay in `held` for the next
    /// offer. Returns whether everything was handed over.
    pub(super) fn hand_over<C: Connector>(
        shared: &Shared<C>,
        jobs: &mut Vec<Pending>,
        held: &mut Held,
        wait: bool,
    ) -> bool {
        if jobs.is_empty() && held.is_empty() {
            return true;
        }
        let mut gate = if wait {
            lock(&shared.gate)
        } else {
            match shared.gate.try_lock() {
                Ok(gate) => gate,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return false,
            }
        };
        let refused = match gate.state {
            Lifecycle::Running => gate.forward_batch(shared, jobs.drain(..), held, wait),
            Lifecycle::Idle => {
                // Nothing is held before the start (nothing was offered).
                gate.backlog.append(jobs);
                Vec::new()
            }
            Lifecycle::Closing | Lifecycle::Closed => held
                .drain_all()
                .chain(jobs.drain(..).map(|p| p.task))
                .collect(),
        };
        for task in refused {
            task();
        }
        held.is_empty()
    }

    /// [`forward`](Gate::forward) for many jobs: each group's as one batch
    /// (in submission order, behind what `held` has for it); the tasks
    /// refused. Without `wait`, a batch whose queue is busy goes back to
    /// `held`.
    fn forward_batch<C: Connector>(
        &self,
        shared: &Shared<C>,
        jobs: impl ExactSizeIterator<Item = Pending>,
        held: &mut Held,
        wait: bool,
    ) -> Vec<Task> {
        let Some(workers) = self.workers.as_deref() else {
            return held.drain_all().chain(jobs.map(|p| p.task)).collect();
        };
        // Sized once (a batch is handed on whole, so the vectors cannot be
        // reused): no regrowth while a turn's jobs are sorted.
        held.group.reserve(jobs.len());
        for p in jobs {
            let to = workers.target(p.route);
            p.job.regroup(to, &shared.stats);
            if to == Group::Writer && workers.writer.is_some() {
                held.writer.push(p.task);
            } else {
                held.group.push(p.task);
            }
        }
        let mut refused = Vec::new();
        if !held.writer.is_empty() {
            let tasks = std::mem::take(&mut held.writer);
            match &workers.writer {
                Some(writer) => offer(writer, tasks, &mut held.writer, &mut refused, wait),
                None => refused.extend(tasks),
            }
        }
        if !held.group.is_empty() {
            let tasks = std::mem::take(&mut held.group);
            if workers.group.is_empty() {
                refused.extend(tasks);
            } else {
                let i = workers.next.fetch_add(1, Ordering::Relaxed);
                // One shared queue: any of them serves the whole group.
                let to = &workers.group[i % workers.group.len()];
                offer(to, tasks, &mut held.group, &mut refused, wait);
            }
        }
        refused
    }
}

/// Queues `tasks` on `worker` as one batch: waiting for its locks
/// (`wait`), or not (back into `busy` if they are held); into `refused` if
/// it has quit.
fn offer<Q: weft::threads::WorkQueue>(
    worker: &ThreadWorker<Q>,
    tasks: Vec<Task>,
    busy: &mut Vec<Task>,
    refused: &mut Vec<Task>,
    wait: bool,
) {
    let result = if wait {
        worker.do_work_batch(tasks).map_err(TryDoWorkError::from)
    } else {
        worker.try_do_work_batch(tasks)
    };
    match result {
        Ok(()) => {}
        Err(TryDoWorkError::Busy(back)) => *busy = back,
        Err(TryDoWorkError::Quit(tasks)) => refused.extend(tasks),
    }
}
