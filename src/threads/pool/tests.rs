//! The pool's rules, driven deterministically: [`State`]'s transitions with
//! a manual clock and no threads (like Team's memory-worker tests), plus the
//! loop-marker rule of `stop`, which needs real threads. The submission
//! inbox's tests are in `tests/inbox.rs`, spin-then-park's in
//! `tests/spin.rs`.

use std::sync::mpsc;
use std::time::Duration;

use super::ThreadPool;
use super::inbox::Inbox;
use super::queue::{Item, Meta, Queued};
use super::state::GROWTH_DELAY;
use super::state::{AfterTask, Position, Rehome, Role, SleepStep, SpareStep, State, Waiting, Wake};
use crate::testing::ManualClock;

const KEEP_ALIVE: Duration = Duration::from_secs(10);

fn item() -> Queued {
    Queued {
        item: Item::task(Box::new(|| ())),
        meta: Meta {
            location: std::panic::Location::caller(),
            enqueued: 0,
        },
    }
}

/// A pool state of `min..=max` threads, one busy thread per core allowed
/// before growth waits for a stall (`eager`).
fn state(min: usize, max: usize, eager: usize) -> State {
    State::new(min, max, eager, KEEP_ALIVE)
}

/// Counts as (idle, busy, spare, claimed, backlog, alive).
fn counts(st: &State) -> (usize, usize, usize, usize, usize, usize) {
    (
        st.idle,
        st.busy,
        st.spare,
        st.claimed,
        st.backlog(),
        st.alive,
    )
}

/// Runs a sleeper step that must hand out an item.
fn sleeper_takes(st: &mut State, clock: &ManualClock) -> bool {
    match st.sleeper_step(&mut Waiting::default(), clock) {
        SleepStep::Run { wake_next, .. } => wake_next != Wake::Nothing,
        SleepStep::Exit => panic!("expected work, got exit"),
        SleepStep::Wait(_) => panic!("expected work, got wait"),
    }
}

// --- Twisted's pool rules (spec/twisted-threads.md §3, 31, 43, 47, 48) ---

#[test]
fn before_start_work_is_backlogged_and_no_thread_is_counted() {
    let mut st = state(0, 10, 2);
    for _ in 0..5 {
        assert_eq!(st.submit(item()).1, Wake::Nothing);
    }
    assert_eq!(counts(&st), (0, 0, 0, 0, 5, 0));
}

#[test]
fn start_grows_by_the_backlog_up_to_max() {
    let mut st = state(0, 10, 2);
    for _ in 0..5 {
        let _ = st.submit(item());
    }
    let tickets = st.start();
    assert_eq!(tickets.len(), 5);
    assert!(tickets.iter().all(|t| t.role == Role::Worker));
    // Each new thread holds a claim on one backlogged item.
    assert_eq!(counts(&st), (0, 5, 0, 5, 0, 5));

    let mut st = state(0, 10, 2);
    for _ in 0..50 {
        let _ = st.submit(item());
    }
    assert_eq!(st.start().len(), 10);
    assert_eq!(st.backlog(), 40);
}

#[test]
fn start_creates_min_threads_and_a_second_start_does_nothing() {
    let mut st = state(3, 10, 2);
    let numbers: Vec<u64> = st.start().into_iter().map(|t| t.number).collect();
    assert_eq!(numbers, [0, 1, 2]);
    assert_eq!(counts(&st), (3, 0, 0, 0, 0, 3));
    assert!(st.start().is_empty());
}

// --- hand-off: claims and one wake in flight ---

#[test]
fn a_submission_claims_one_idle_thread_and_the_woken_one_wakes_the_next() {
    let clock = ManualClock::new();
    let mut st = state(3, 3, 3);
    let _ = st.start();
    assert_eq!(st.submit(item()).1, Wake::Worker);
    // A second submission while a wake is in flight wakes nobody.
    assert_eq!(st.submit(item()).1, Wake::Nothing);
    assert_eq!(counts(&st), (2, 1, 0, 1, 1, 3));
    assert!(sleeper_takes(&mut st, &clock), "work waits: wake the next");
    assert_eq!(counts(&st), (1, 2, 0, 1, 0, 3));
    assert!(!sleeper_takes(&mut st, &clock));
    assert_eq!(counts(&st), (1, 2, 0, 0, 0, 3));
}

#[test]
fn a_busy_thread_drains_the_backlog_before_going_idle() {
    let mut st = state(1, 1, 1);
    let _ = st.start();
    let _ = st.submit(item());
    let _ = sleeper_takes(&mut st, &ManualClock::new());
    let _ = st.submit(item());
    assert!(matches!(
        st.after_task(false, &Inbox::default()),
        AfterTask::Run(_)
    ));
    st.count_panic();
    assert_eq!((st.completed, st.panicked), (2, 1));
    assert!(matches!(
        st.after_task(true, &Inbox::default()),
        AfterTask::Sleep
    ));
    assert_eq!((st.completed, st.panicked), (2, 1));
    assert_eq!(counts(&st), (1, 0, 0, 0, 0, 1));
}

// --- growth ---

#[test]
fn a_task_finding_every_thread_busy_starts_one_per_core_then_a_spare() {
    let mut st = state(0, 5, 2);
    let _ = st.start();
    let Wake::Start(first) = st.submit(item()).1 else {
        panic!("expected a new worker")
    };
    assert_eq!(first.role, Role::Worker);
    let Wake::Start(second) = st.submit(item()).1 else {
        panic!("expected a new worker")
    };
    assert_eq!(second.role, Role::Worker);
    // Two busy on two cores: the third task gets a spare, the fourth nothing.
    let Wake::Start(spare) = st.submit(item()).1 else {
        panic!("expected the spare")
    };
    assert_eq!(spare.role, Role::Spare);
    assert_eq!(st.submit(item()).1, Wake::Nothing);
}

#[test]
fn the_spare_becomes_a_worker_only_after_a_stall_of_the_growth_delay() {
    let clock = ManualClock::new();
    let mut st = state(0, 5, 1);
    let _ = st.start();
    let Wake::Start(_) = st.submit(item()).1 else {
        panic!()
    };
    assert!(!sleeper_takes(&mut st, &clock));
    let Wake::Start(_) = st.submit(item()).1 else {
        panic!()
    };
    let mut spare = Waiting::default();
    let SpareStep::Wait(Some(until)) = st.spare_step(&mut spare, &clock) else {
        panic!("the armed spare watches")
    };
    assert_eq!(until, GROWTH_DELAY);
    // Progress (a task taken) restarts the watch.
    let _ = st.submit(item());
    assert!(matches!(
        st.after_task(false, &Inbox::default()),
        AfterTask::Run(_)
    ));
    clock.advance(GROWTH_DELAY);
    let SpareStep::Wait(Some(until)) = st.spare_step(&mut spare, &clock) else {
        panic!("progress was made: keep watching")
    };
    assert_eq!(until, GROWTH_DELAY * 2);
    clock.advance(GROWTH_DELAY);
    let SpareStep::Run { spare: next, .. } = st.spare_step(&mut spare, &clock) else {
        panic!("stalled: the spare takes the work")
    };
    assert!(next.is_none(), "no more backlog, no new spare");
    assert_eq!(counts(&st), (0, 2, 0, 0, 0, 2));
}

#[test]
fn withdrawn_work_does_not_make_the_spare_grow_the_pool() {
    let clock = ManualClock::new();
    let mut st = state(0, 5, 1);
    let _ = st.start();
    let Wake::Start(_) = st.submit(item()).1 else {
        panic!()
    };
    assert!(!sleeper_takes(&mut st, &clock));
    let (key, Wake::Start(_)) = st.submit(item()) else {
        panic!()
    };
    assert!(st.withdraw(key).is_some());
    clock.advance(GROWTH_DELAY * 10);
    let SpareStep::Wait(_) = st.spare_step(&mut Waiting::default(), &clock) else {
        panic!("nothing to grow for")
    };
    assert_eq!(counts(&st), (0, 1, 1, 0, 0, 2));
}

// --- keep-alive on the clock ---

#[test]
fn an_idle_thread_above_min_exits_exactly_at_the_keep_alive() {
    let clock = ManualClock::new();
    let mut st = state(1, 2, 2);
    let _ = st.start();
    let _ = st.adjust(2, 2);
    let mut waiting = Waiting::default();
    let _ = st.adjust(1, 2);
    match st.sleeper_step(&mut waiting, &clock) {
        SleepStep::Wait(Some(until)) => assert_eq!(until, KEEP_ALIVE),
        _ => panic!("above min: a timed wait"),
    }
    clock.advance(KEEP_ALIVE - Duration::from_nanos(1));
    assert!(matches!(
        st.sleeper_step(&mut waiting, &clock),
        SleepStep::Wait(Some(_))
    ));
    clock.advance(Duration::from_nanos(1));
    assert!(matches!(
        st.sleeper_step(&mut waiting, &clock),
        SleepStep::Exit
    ));
    assert_eq!(
        counts(&st),
        (1, 0, 0, 0, 0, 2),
        "alive until the thread returns"
    );
    // The last one is at min: it waits without a deadline.
    assert!(matches!(
        st.sleeper_step(&mut Waiting::default(), &clock),
        SleepStep::Wait(None)
    ));
}

#[test]
fn a_keep_alive_beyond_the_clock_waits_forever_instead_of_overflowing() {
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(1));
    let mut st = State::new(0, 1, 1, Duration::MAX);
    let _ = st.start();
    let _ = st.adjust(1, 1);
    let _ = st.adjust(0, 1);
    assert!(matches!(
        st.sleeper_step(&mut Waiting::default(), &clock),
        SleepStep::Wait(None)
    ));
}

// --- sizes ---

#[test]
fn shrinking_while_busy_reaches_exactly_the_target() {
    let mut st = state(0, 6, 6);
    let _ = st.start();
    for _ in 0..6 {
        let Wake::Start(_) = st.submit(item()).1 else {
            panic!()
        };
    }
    let clock = ManualClock::new();
    for _ in 0..6 {
        let _ = sleeper_takes(&mut st, &clock);
    }
    for _ in 0..3 {
        assert!(st.adjust(0, 2).is_empty());
    }
    assert_eq!(st.to_shrink, 4, "repeated calls do not pile up debt");
    let exits = (0..6)
        .filter(|_| matches!(st.after_task(false, &Inbox::default()), AfterTask::Exit))
        .count();
    assert_eq!(exits, 4);
    assert_eq!(counts(&st).0, 2);
}

// --- stop ---

#[test]
fn stop_with_no_thread_hands_out_the_backlog_to_discard_and_is_idempotent() {
    let mut st = state(0, 1, 1);
    let _ = st.submit(item());
    let _ = st.submit(item());
    assert_eq!(st.stop().map(|items| items.len()), Some(2));
    assert!(st.stop().is_none());
    assert_eq!(st.backlog(), 0);
}

#[test]
fn after_stop_busy_threads_drain_the_backlog_then_exit() {
    let clock = ManualClock::new();
    let mut st = state(1, 1, 1);
    let _ = st.start();
    let _ = st.submit(item());
    let _ = sleeper_takes(&mut st, &clock);
    let _ = st.submit(item());
    assert_eq!(st.stop().map(|items| items.len()), Some(0));
    assert!(matches!(
        st.after_task(false, &Inbox::default()),
        AfterTask::Run(_)
    ));
    assert!(matches!(
        st.after_task(false, &Inbox::default()),
        AfterTask::Exit
    ));
}

// --- threads that never start or die ---

#[test]
fn a_failed_start_takes_back_its_claim_and_leaves_the_work_queued() {
    let mut st = state(0, 2, 2);
    let _ = st.start();
    let Wake::Start(ticket) = st.submit(item()).1 else {
        panic!()
    };
    assert_eq!(counts(&st), (0, 1, 0, 1, 0, 1));
    assert!(matches!(st.start_failed(ticket.role), Rehome::Stranded));
    assert_eq!(counts(&st), (0, 0, 0, 0, 1, 0));
    assert!(st.needs_first_thread(), "the next submission tries again");
}

#[test]
fn a_sleeper_that_dies_holding_a_claim_gets_the_work_a_replacement() {
    let mut st = state(1, 2, 2);
    let _ = st.start();
    let _ = st.submit(item()); // the only sleeper is claimed
    assert_eq!(counts(&st), (0, 1, 0, 1, 0, 1));
    st.leave(Position::Sleeping);
    st.alive -= 1;
    let Rehome::Start(ticket) = st.rehome(true) else {
        panic!("the work needs a thread")
    };
    assert_eq!(ticket.role, Role::Worker);
    assert_eq!(
        counts(&st),
        (0, 1, 0, 1, 0, 1),
        "the replacement holds the claim"
    );
}

#[test]
fn after_stop_work_that_no_thread_can_run_is_discarded() {
    let mut st = state(1, 1, 1);
    let _ = st.start();
    let _ = st.submit(item());
    let _ = st.stop();
    st.leave(Position::Sleeping);
    st.alive -= 1;
    let Rehome::Discard(items) = st.rehome(false) else {
        panic!("nobody can run it")
    };
    assert_eq!((items.len(), st.backlog()), (1, 0));
}

#[test]
fn withdrawing_the_item_a_claim_counts_on_returns_the_sleeper_to_idle() {
    let mut st = state(1, 1, 1);
    let _ = st.start();
    let (key, wake) = st.submit(item());
    assert_eq!(wake, Wake::Worker);
    assert!(st.withdraw(key).is_some());
    assert_eq!(counts(&st), (1, 0, 0, 0, 0, 1));
    // Woken, it finds nothing and waits again.
    assert!(matches!(
        st.sleeper_step(&mut Waiting::default(), &ManualClock::new()),
        SleepStep::Wait(None)
    ));
}

// --- stop on a loop thread (contract C4) ---

#[test]
fn stop_on_a_loop_thread_does_not_wait_for_work_that_waits_for_the_loop() {
    let pool = ThreadPool::new(1, 1).unwrap();
    pool.start();
    let (to_loop, on_loop) = mpsc::channel::<mpsc::Sender<()>>();
    let (started_tx, started) = mpsc::channel();
    // Pool work that blocks until "the loop" answers, as
    // `blocking_call_from_thread` does.
    pool.call_in_thread(move || {
        let (reply, answer) = mpsc::channel();
        to_loop.send(reply).unwrap();
        started_tx.send(()).unwrap();
        answer.recv().unwrap();
    })
    .unwrap_or_else(|_| panic!("refused"));
    started.recv().unwrap();
    let report = {
        let _loop = crate::loop_marker::enter_loop();
        pool.stop() // waited forever for the work before the marker
    };
    assert!(report.detached);
    assert_eq!((report.running, report.threads_alive), (1, 1));
    assert!(pool.call_in_thread(|| ()).is_err(), "stopped all the same");
    // The loop comes round and answers; off the loop, stop waits.
    on_loop.recv().unwrap().send(()).unwrap();
    let report = pool.stop();
    assert!(!report.detached);
    assert!(report.is_complete());
}

// --- Job metadata (issue 13) ---

#[test]
fn running_slots_are_reused_and_threads_counted_in_and_out() {
    let mut st = state(0, 4, 2);
    let (a, b) = (st.enter_thread(), st.enter_thread());
    assert_ne!(a, b);
    st.exit_thread(a);
    assert_eq!(st.enter_thread(), a, "a freed slot is reused");
    st.exit_thread(b);
    assert_eq!((st.threads_created, st.threads_reaped), (3, 2));
    assert_eq!(st.running.len(), 2);
}

#[test]
fn the_oldest_job_is_the_front_live_one_through_withdrawals_and_pops() {
    let mut st = state(0, 4, 2);
    let job = |enqueued| Queued {
        item: Item::task(Box::new(|| ())),
        meta: Meta {
            location: std::panic::Location::caller(),
            enqueued,
        },
    };
    let keys: Vec<_> = (0..4).map(|t| st.submit(job(t)).0).collect();
    assert_eq!(st.oldest().map(|m| m.enqueued), Some(0));
    assert!(st.withdraw(keys[0]).is_some());
    assert!(st.withdraw(keys[2]).is_some());
    assert_eq!(st.oldest().map(|m| m.enqueued), Some(1));
    let _ = st.start(); // one thread per backlogged job, each with a claim
    assert!(matches!(
        st.sleeper_step(&mut Waiting::default(), &ManualClock::new()),
        SleepStep::Run { item, .. } if item.meta.enqueued == 1
    ));
    // The withdrawn job behind it is skipped.
    assert_eq!(st.oldest().map(|m| m.enqueued), Some(3));
    assert!(st.withdraw(keys[3]).is_some());
    assert_eq!(st.oldest(), None);
}

struct Shared(mpsc::Sender<()>);

impl super::SharedTask for Shared {
    fn run(self: std::sync::Arc<Self>, _: &super::PanicCounter<'_>) {
        let _ = self.0.send(());
    }
    fn discard(self: std::sync::Arc<Self>) {}
}

#[test]
fn shared_tasks_carry_the_location_they_are_given() {
    let pool = ThreadPool::new(0, 1).unwrap();
    let (tx, rx) = mpsc::channel();
    let at = std::panic::Location::caller();
    pool.submit_shared_at(std::sync::Arc::new(Shared(tx.clone())), at)
        .unwrap_or_else(|_| panic!("refused"));
    assert_eq!(pool.statistics().oldest_backlog.unwrap().location, at);
    pool.discard_backlog();
    let line = line!() + 1;
    let key = pool.submit_shared(std::sync::Arc::new(Shared(tx)));
    let key = key.unwrap_or_else(|_| panic!("refused"));
    assert_eq!(
        pool.statistics().oldest_backlog.unwrap().location.line(),
        line
    );
    assert!(pool.withdraw(key));
    pool.start();
    pool.stop();
    assert!(rx.try_recv().is_err());
}

#[test]
fn the_submit_fast_path_accepts_exactly_when_no_slow_check_would_refuse_or_start() {
    // `accepts_at_once` lets a submission skip the first-thread and stop
    // checks: it must hold exactly when neither applies.
    let agrees = |st: &State| {
        assert_eq!(
            st.accepts_at_once(),
            !st.stopped && !st.needs_first_thread(),
            "fast path disagrees with the checks it skips: {:?}",
            counts(st)
        );
    };
    let mut st = state(0, 4, 2);
    agrees(&st); // not started: work is backlogged
    let tickets = st.start();
    assert!(tickets.is_empty());
    agrees(&st); // started with no thread: the slow path starts one
    assert!(!st.accepts_at_once());
    let ticket = st.reserve(Role::Worker);
    agrees(&st);
    assert!(st.accepts_at_once());
    let _ = st.start_failed(ticket.role);
    agrees(&st);
    let _ = st.reserve(Role::Worker);
    let _ = st.stop();
    agrees(&st); // stopped: refused
    assert!(!st.accepts_at_once());
}

// The submission inbox (`inbox.rs`).
mod inbox;

// Spin-then-park (`spin.rs`).
mod spin;
