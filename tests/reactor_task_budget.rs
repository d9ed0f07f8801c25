//! The task-pass budget (`Builder::task_pass_budget`): a turn's pass over
//! the ready local tasks stops once the turn has run its budget, and the
//! rest run first next turn, after that turn's timers. Driven by a manual
//! clock that each task advances, so "how long" is exact.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use weft::Reactor;
use weft::reactor::TASK_PASS_CHECK_EVERY;
use weft::testing::ManualClock;

const TASKS: usize = 20;
const EACH: Duration = Duration::from_micros(100);

/// A reactor on a manual clock with `budget` and `tasks` ready tasks that
/// each log their index and advance the clock by `EACH`.
fn with_tasks(budget: Option<Duration>, tasks: usize) -> (Reactor, Rc<RefCell<Vec<usize>>>) {
    let clock = ManualClock::new();
    let reactor = Reactor::builder()
        .clock(clock.clone())
        .task_pass_budget(budget)
        .build()
        .unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    for i in 0..tasks {
        let (l, clock) = (log.clone(), clock.clone());
        reactor
            .spawn_local(async move {
                l.borrow_mut().push(i);
                clock.advance(EACH);
            })
            .detach();
    }
    (reactor, log)
}

/// [`with_tasks`] with `TASKS` tasks, and a timer due after 300 µs that
/// logs `usize::MAX` (armed after the tasks were spawned: timers run
/// before a turn's task pass).
fn setup(budget: Option<Duration>) -> (Reactor, Rc<RefCell<Vec<usize>>>) {
    let (reactor, log) = with_tasks(budget, TASKS);
    let l = log.clone();
    reactor.call_later(Duration::from_micros(300), move || {
        l.borrow_mut().push(usize::MAX)
    });
    (reactor, log)
}

/// Runs one turn that may not block; returns what it logged.
fn turn(reactor: &Reactor, log: &RefCell<Vec<usize>>) -> Vec<usize> {
    reactor.iterate(Some(Duration::ZERO));
    std::mem::take(&mut *log.borrow_mut())
}

#[test]
fn a_task_pass_stops_at_its_budget_and_the_rest_run_first_next_turn_after_due_timers() {
    let (reactor, log) = setup(Some(Duration::from_micros(500)));
    // 500 µs is spent after 5 tasks; the clock is read every
    // TASK_PASS_CHECK_EVERY polls, so the pass stops after that many.
    let n = TASK_PASS_CHECK_EVERY;
    assert!(n * EACH.as_micros() as usize >= 500 && n < TASKS / 2);
    assert_eq!(turn(&reactor, &log), (0..n).collect::<Vec<_>>());
    // The timer came due during the first pass: it runs before the rest,
    // which keep their order.
    let mut second = vec![usize::MAX];
    second.extend(n..2 * n);
    assert_eq!(turn(&reactor, &log), second);
    assert_eq!(turn(&reactor, &log), (2 * n..TASKS).collect::<Vec<_>>());
    assert_eq!(turn(&reactor, &log), Vec::<usize>::new());
    assert_eq!(reactor.statistics().tasks_polled, TASKS as u64);
}

#[test]
fn without_a_budget_one_pass_polls_every_ready_task_before_the_timer() {
    let (reactor, log) = setup(None);
    assert_eq!(turn(&reactor, &log), (0..TASKS).collect::<Vec<_>>());
    assert_eq!(turn(&reactor, &log), vec![usize::MAX]);
}

#[test]
fn a_pass_of_fewer_tasks_than_the_check_interval_is_never_cut() {
    // Budget zero: only the clock check can stop the pass, and a pass of
    // fewer than TASK_PASS_CHECK_EVERY tasks never makes it.
    let (reactor, log) = with_tasks(Some(Duration::ZERO), TASK_PASS_CHECK_EVERY - 1);
    assert_eq!(
        turn(&reactor, &log),
        (0..TASK_PASS_CHECK_EVERY - 1).collect::<Vec<_>>()
    );
}

#[test]
fn a_budget_cut_leaves_the_loop_awake_until_the_rest_ran() {
    // On the run loop (not iterate): the tasks left by a cut pass are work,
    // so the loop does not block on its (empty) poll before running them.
    let (reactor, log) = setup(Some(Duration::ZERO));
    let handle = reactor.handle();
    let l = log.clone();
    reactor
        .spawn_local(async move {
            // Queued behind the 20: runs in a later pass, then stops the loop.
            l.borrow_mut().push(TASKS);
            handle.stop();
        })
        .detach();
    reactor.run().unwrap();
    let got = log.borrow().clone();
    let tasks: Vec<usize> = got.iter().copied().filter(|&i| i != usize::MAX).collect();
    assert_eq!(tasks, (0..=TASKS).collect::<Vec<_>>());
    assert_eq!(got.iter().filter(|&&i| i == usize::MAX).count(), 1);
}
