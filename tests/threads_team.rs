//! Ported from Twisted `src/twisted/_threads/test/test_team.py` (`Team`,
//! driven by memory workers exactly as there), plus `pool()` and weft's
//! quit/do race guarantee.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use weft::AlreadyQuit;
use weft::ThreadError;
use weft::threads::{
    ExclusiveWorker, MemoryWorker, Perform, Statistics, Task, Team, Worker, memory_worker, pool,
};

#[derive(Default)]
struct Workers {
    ever: usize,
    unquit: Vec<usize>,
    active: Vec<(usize, Perform)>,
}

/// Twisted's test worker: a memory worker whose quit removes it from the
/// harness's lists.
struct Tracked {
    id: usize,
    inner: MemoryWorker,
    workers: Arc<Mutex<Workers>>,
}

impl Worker for Tracked {
    fn do_work(&self, task: Task) -> Result<(), AlreadyQuit<Task>> {
        self.inner.do_work(task)
    }

    fn quit(&self) -> Result<(), AlreadyQuit> {
        self.inner.quit()?;
        let mut workers = self.workers.lock().unwrap();
        workers.unquit.retain(|&id| id != self.id);
        workers.active.retain(|(id, _)| *id != self.id);
        Ok(())
    }
}

type Hook = Box<dyn FnOnce() + Send>;

/// A memory coordinator that can run a hook just before it accepts its next
/// item: the "gap" between `Team::quit` setting its flag and the coordinator
/// acting (Twisted monkeypatches `Quit.set` for this).
#[derive(Clone)]
struct Coordinator {
    inner: MemoryWorker,
    before_next: Arc<Mutex<Option<Hook>>>,
}

impl Worker for Coordinator {
    fn do_work(&self, task: Task) -> Result<(), AlreadyQuit<Task>> {
        let hook = self.before_next.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
        self.inner.do_work(task)
    }

    fn quit(&self) -> Result<(), AlreadyQuit> {
        self.inner.quit()
    }
}

impl ExclusiveWorker for Coordinator {}

struct Harness {
    team: Team,
    coordinator: Coordinator,
    coordinate: Perform,
    workers: Arc<Mutex<Workers>>,
    /// Workers `create_worker` may still make.
    allowance: Arc<AtomicUsize>,
    logged: Arc<Mutex<Vec<ThreadError>>>,
}

fn coordinate_all(coordinate: &Perform) -> bool {
    let mut did = false;
    while coordinate.perform() {
        did = true;
    }
    did
}

fn perform_all_outstanding(coordinate: &Perform, workers: &Mutex<Workers>) {
    loop {
        let mut again = coordinate_all(coordinate);
        let performers: Vec<Perform> = workers
            .lock()
            .unwrap()
            .active
            .iter()
            .map(|(_, p)| p.clone())
            .collect();
        for performer in performers {
            again |= performer.perform();
        }
        again |= coordinate_all(coordinate);
        if !again {
            return;
        }
    }
}

impl Harness {
    fn new() -> Harness {
        let (inner, coordinate) = memory_worker();
        let coordinator = Coordinator {
            inner,
            before_next: Arc::default(),
        };
        let workers = Arc::new(Mutex::new(Workers::default()));
        let allowance = Arc::new(AtomicUsize::new(usize::MAX));
        let logged = Arc::new(Mutex::new(Vec::new()));
        let (w, a, l) = (workers.clone(), allowance.clone(), logged.clone());
        let team = Team::new(
            coordinator.clone(),
            move |_team: &Team| {
                if a.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_err()
                {
                    return None;
                }
                let (inner, perform) = memory_worker();
                let mut all = w.lock().unwrap();
                let id = all.ever;
                all.ever += 1;
                all.unquit.push(id);
                all.active.push((id, perform));
                Some(Tracked {
                    id,
                    inner,
                    workers: w.clone(),
                })
            },
            move |err: &ThreadError| l.lock().unwrap().push(err.clone()),
        );
        Harness {
            team,
            coordinator,
            coordinate,
            workers,
            allowance,
            logged,
        }
    }

    fn coordinate(&self) -> bool {
        coordinate_all(&self.coordinate)
    }

    fn perform_all_outstanding(&self) {
        perform_all_outstanding(&self.coordinate, &self.workers);
    }

    fn ever(&self) -> usize {
        self.workers.lock().unwrap().ever
    }

    fn unquit(&self) -> usize {
        self.workers.lock().unwrap().unquit.len()
    }

    fn stats(&self) -> Statistics {
        self.team.statistics()
    }

    fn do_counted(&self, counter: &Arc<AtomicUsize>) {
        let c = counter.clone();
        self.team
            .do_work(Box::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
            }))
            .unwrap();
    }

    fn coordinator_has_quit(&self) -> bool {
        self.coordinator.inner.quit().is_err()
    }
}

#[test]
fn do_work_runs_the_task_in_a_created_worker_and_the_busy_count_follows_it() {
    let h = Harness::new();
    let ran = Arc::new(AtomicUsize::new(0));
    h.do_counted(&ran);
    h.coordinate();
    assert_eq!(h.stats().busy_worker_count, 1);
    assert_eq!(h.ever(), 1);
    h.perform_all_outstanding();
    assert_eq!(h.stats().busy_worker_count, 0);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[test]
fn a_fresh_team_reports_no_idle_no_busy_and_no_backlog() {
    let h = Harness::new();
    assert_eq!(h.stats(), Statistics::default());
}

#[test]
fn grow_creates_that_many_workers() {
    let h = Harness::new();
    h.team.grow(5).unwrap();
    h.perform_all_outstanding();
    assert_eq!(h.ever(), 5);
    assert_eq!(h.stats().idle_worker_count, 5);
}

#[test]
fn grow_stops_at_the_first_worker_create_worker_refuses() {
    let h = Harness::new();
    h.allowance.store(3, Ordering::SeqCst);
    h.team.grow(5).unwrap();
    h.perform_all_outstanding();
    assert_eq!(h.ever(), 3);
    assert_eq!(h.stats().idle_worker_count, 3);
}

#[test]
fn grow_then_shrink_leaves_the_difference() {
    let h = Harness::new();
    h.team.grow(5).unwrap();
    h.team.shrink(Some(3)).unwrap();
    h.perform_all_outstanding();
    assert_eq!(h.unquit(), 2);
}

#[test]
fn shrink_with_no_count_quits_every_worker_but_only_once_the_coordinator_runs() {
    let h = Harness::new();
    h.team.grow(10).unwrap();
    h.perform_all_outstanding();
    assert_eq!(h.unquit(), 10);
    h.team.shrink(None).unwrap();
    assert_eq!(h.unquit(), 10);
    h.perform_all_outstanding();
    assert_eq!(h.unquit(), 0);
}

#[test]
fn tasks_beyond_the_idle_workers_are_backlogged_when_no_worker_can_be_created_and_all_run_later() {
    let h = Harness::new();
    h.team.grow(3).unwrap();
    h.perform_all_outstanding();
    assert_eq!(h.stats().idle_worker_count, 3);
    h.allowance.store(0, Ordering::SeqCst);
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        h.do_counted(&ran);
    }
    h.coordinate();
    assert_eq!(h.stats().idle_worker_count, 0);
    h.do_counted(&ran);
    h.coordinate();
    assert_eq!(h.stats().backlogged_work_count, 1);
    h.perform_all_outstanding();
    assert_eq!(h.stats().backlogged_work_count, 0);
    assert_eq!(ran.load(Ordering::SeqCst), 4);
}

#[test]
fn a_panicking_task_is_reported_to_log_panic_exactly_once_and_the_worker_is_reused() {
    let h = Harness::new();
    h.team
        .do_work(Box::new(|| panic!("division by zero")))
        .unwrap();
    h.perform_all_outstanding();
    assert_eq!(
        *h.logged.lock().unwrap(),
        [ThreadError::Panicked {
            message: "division by zero".into()
        }]
    );
    let ran = Arc::new(AtomicUsize::new(0));
    h.do_counted(&ran);
    h.perform_all_outstanding();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(h.ever(), 1, "the worker was reused");
}

#[test]
fn after_team_quit_quit_and_do_work_are_already_quit_at_once() {
    let h = Harness::new();
    h.team.quit().unwrap();
    assert!(h.team.quit().is_err());
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let refused = h
        .team
        .do_work(Box::new(move || r.store(true, Ordering::SeqCst)))
        .unwrap_err();
    (refused.0)(); // handed back intact
    assert!(ran.load(Ordering::SeqCst));
    assert!(h.team.grow(1).is_err());
    assert!(h.team.shrink(None).is_err());
}

#[test]
fn quit_after_completed_work_quits_every_worker_and_the_coordinator() {
    let h = Harness::new();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        h.do_counted(&ran);
    }
    h.perform_all_outstanding();
    assert_eq!(ran.load(Ordering::SeqCst), 10);
    assert_eq!(h.unquit(), 10);
    h.team.quit().unwrap();
    h.perform_all_outstanding();
    assert_eq!(h.unquit(), 0);
    assert!(h.coordinator_has_quit());
}

#[test]
fn quit_while_some_workers_are_busy_quits_them_only_after_their_work_completes() {
    let h = Harness::new();
    h.team.grow(10).unwrap();
    h.perform_all_outstanding();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..5 {
        h.do_counted(&ran);
    }
    h.coordinate();
    assert_eq!(h.stats().busy_worker_count, 5);
    h.team.quit().unwrap();
    h.coordinate();
    assert_eq!(h.unquit(), 5, "the busy workers are still alive");
    h.perform_all_outstanding();
    assert_eq!(ran.load(Ordering::SeqCst), 5);
    assert_eq!(h.unquit(), 0);
    assert!(h.coordinator_has_quit());
}

#[test]
fn work_that_runs_in_the_gap_after_the_quit_flag_is_set_still_lets_the_team_shut_down_cleanly() {
    let h = Harness::new();
    let ran = Arc::new(AtomicUsize::new(0));
    h.do_counted(&ran);
    let (coordinate, workers) = (h.coordinate.clone(), h.workers.clone());
    *h.coordinator.before_next.lock().unwrap() = Some(Box::new(move || {
        perform_all_outstanding(&coordinate, &workers)
    }));
    h.team.quit().unwrap(); // the flag is set, then all outstanding work runs
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert!(h.team.quit().is_err());
    assert!(h.team.do_work(Box::new(|| ())).is_err());
    h.perform_all_outstanding();
    assert_eq!(h.unquit(), 0);
    assert!(h.coordinator_has_quit());
}

#[test]
fn shrink_while_all_workers_are_busy_leaves_the_rest_once_the_work_completes() {
    let h = Harness::new();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        h.do_counted(&ran);
    }
    h.coordinate();
    assert_eq!(h.stats().busy_worker_count, 10);
    h.team.shrink(Some(7)).unwrap();
    h.perform_all_outstanding();
    assert_eq!(ran.load(Ordering::SeqCst), 10);
    assert_eq!(h.unquit(), 3);
}

// Spec §1.1: "backlog drained even after quit", "dispatch order is FIFO".
#[test]
fn the_backlog_is_drained_in_fifo_order_even_after_quit() {
    let h = Harness::new();
    h.allowance.store(1, Ordering::SeqCst);
    let order = Arc::new(Mutex::new(Vec::new()));
    for i in 0..4 {
        let o = order.clone();
        h.team
            .do_work(Box::new(move || o.lock().unwrap().push(i)))
            .unwrap();
    }
    h.coordinate();
    assert_eq!(h.stats().backlogged_work_count, 3);
    h.team.quit().unwrap();
    h.perform_all_outstanding();
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
    assert_eq!(h.unquit(), 0);
    assert!(h.coordinator_has_quit());
}

#[test]
fn grown_workers_pay_shrink_debt_before_becoming_idle() {
    let h = Harness::new();
    let ran = Arc::new(AtomicUsize::new(0));
    h.do_counted(&ran);
    h.coordinate();
    h.team.shrink(Some(2)).unwrap(); // one busy worker: debt of 2
    h.perform_all_outstanding();
    assert_eq!(h.unquit(), 0);
    h.team.grow(2).unwrap(); // the first new worker pays the last unit
    h.perform_all_outstanding();
    assert_eq!(h.unquit(), 1);
    assert_eq!(h.stats().idle_worker_count, 1);
}

// --- pool() ---------------------------------------------------------------

#[test]
fn pool_runs_work_on_threads_and_never_exceeds_its_limit() {
    let team = pool(
        || 2,
        |body| std::thread::Builder::new().spawn(body).map(drop),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let peak = Arc::new(AtomicUsize::new(0));
    for i in 0..20 {
        let (tx, peak, t) = (tx.clone(), peak.clone(), team.clone());
        team.do_work(Box::new(move || {
            let s = t.statistics();
            peak.fetch_max(s.busy_worker_count + s.idle_worker_count, Ordering::SeqCst);
            tx.send(i).unwrap();
        }))
        .unwrap();
    }
    let mut got: Vec<i32> = rx.iter().take(20).collect();
    got.sort_unstable();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    assert!(peak.load(Ordering::SeqCst) <= 2);
    team.quit().unwrap();
}

#[test]
fn pool_backlogs_work_when_the_thread_factory_fails() {
    let team = pool(|| 4, |_body| Err(std::io::Error::other("no threads")));
    team.do_work(Box::new(|| ())).unwrap();
    assert_eq!(team.statistics().backlogged_work_count, 1);
    assert_eq!(team.statistics().idle_worker_count, 0);
}

// weft: a quit racing submissions from other threads never loses a task:
// each one either ran or came back in `AlreadyQuit`.
#[test]
fn quit_racing_submissions_never_loses_a_task() {
    for _ in 0..50 {
        let team = pool(
            || 2,
            |body| std::thread::Builder::new().spawn(body).map(drop),
        );
        let ran = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let submitters: Vec<_> = (0..2)
            .map(|_| {
                let (team, ran, refused) = (team.clone(), ran.clone(), refused.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let r = ran.clone();
                        let task: Task = Box::new(move || {
                            r.fetch_add(1, Ordering::SeqCst);
                        });
                        if team.do_work(task).is_err() {
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        team.quit().unwrap();
        for s in submitters {
            s.join().unwrap();
        }
        // Accepted work finishes (the backlog drains after quit).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while ran.load(Ordering::SeqCst) + refused.load(Ordering::SeqCst) < 100 {
            assert!(std::time::Instant::now() < deadline, "a task was lost");
            std::thread::yield_now();
        }
        assert_eq!(
            ran.load(Ordering::SeqCst) + refused.load(Ordering::SeqCst),
            100
        );
    }
}

// --- panics inside coordination (issue 8) --------------------------------

#[test]
fn a_panicking_create_worker_backlogs_the_task_and_the_coordinator_still_quits() {
    use weft::threads::LockWorker;
    let coordinator = Arc::new(LockWorker::new());
    let team = Team::new(
        coordinator.clone(),
        |_: &Team| -> Option<MemoryWorker> { panic!("cannot create a worker") },
        |_| (),
    );
    let submitted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        team.do_work(Box::new(|| ()))
    }));
    assert!(
        matches!(submitted, Ok(Ok(()))),
        "the panic stays inside the team"
    );
    assert_eq!(team.statistics().backlogged_work_count, 1);
    team.quit().unwrap();
    assert!(coordinator.quit().is_err(), "the team quit its coordinator");
}

/// A coordinator whose `do_work` panics once, before running anything.
struct PanicsOnce {
    inner: Arc<weft::threads::LockWorker>,
    armed: AtomicBool,
}

impl Worker for PanicsOnce {
    fn do_work(&self, task: Task) -> Result<(), AlreadyQuit<Task>> {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("coordinator failure");
        }
        self.inner.do_work(task)
    }

    fn quit(&self) -> Result<(), AlreadyQuit> {
        self.inner.quit()
    }
}

impl ExclusiveWorker for PanicsOnce {}

#[test]
fn a_coordinator_panic_does_not_leave_the_quit_gate_waiting_forever() {
    let inner = Arc::new(weft::threads::LockWorker::new());
    let coordinator = PanicsOnce {
        inner: inner.clone(),
        armed: AtomicBool::new(true),
    };
    let team = Team::new(coordinator, |_: &Team| None::<MemoryWorker>, |_| ());
    let submitted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        team.do_work(Box::new(|| ()))
    }));
    assert!(
        submitted.is_err(),
        "the coordinator's own panic reaches the caller"
    );
    team.quit().unwrap();
    assert!(inner.quit().is_err(), "the team quit its coordinator");
}
