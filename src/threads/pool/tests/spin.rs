//! Spin-then-park (`spin.rs`): a claim on a spinning sleeper, the spin's
//! backoff, a spinner that exits or dies, and the cold start of a real
//! pool thread driven by a manual clock.

use super::*;

/// Runs a sleeper step that must say `Wait`.
fn sleeper_waits(st: &mut State, clock: &ManualClock) {
    assert!(matches!(
        st.sleeper_step(&mut Waiting::default(), clock),
        SleepStep::Wait(_)
    ));
}

#[test]
fn a_claim_on_a_spinning_sleeper_raises_the_hint_instead_of_a_notify() {
    let clock = ManualClock::new();
    let mut st = state(2, 2, 2);
    let _ = st.start();
    sleeper_waits(&mut st, &clock);
    assert!(st.begin_spin());
    assert!(!st.begin_spin(), "one spinner at a time");
    assert_eq!(st.submit(item()).1, Wake::Spinner);
    assert_eq!(st.submit(item()).1, Wake::Nothing, "one wake in flight");
    st.end_spin();
    // The spinner's step after its spin takes the claim, and claims the
    // other (parked) sleeper for the second item with a notify.
    assert_eq!(
        match st.sleeper_step(&mut Waiting::default(), &clock) {
            SleepStep::Run { wake_next, .. } => wake_next,
            _ => panic!("the spinner must find its claim"),
        },
        Wake::Worker
    );
    assert_eq!(counts(&st), (0, 2, 0, 1, 0, 2));
    assert_eq!(st.spinning, 0);
}

#[test]
fn a_parked_sleeper_that_takes_the_claim_wakes_the_next_through_the_spinner() {
    let clock = ManualClock::new();
    let mut st = state(3, 3, 3);
    let _ = st.start();
    assert!(st.begin_spin());
    assert_eq!(st.submit(item()).1, Wake::Spinner);
    let _ = st.submit(item());
    // A parked sleeper woke (spuriously) first: it takes the claim, and the
    // next claim goes to the spinner, which needs no notify.
    assert_eq!(
        match st.sleeper_step(&mut Waiting::default(), &clock) {
            SleepStep::Run { wake_next, .. } => wake_next,
            _ => panic!("expected work"),
        },
        Wake::Spinner
    );
    st.end_spin();
    assert!(!sleeper_takes(&mut st, &clock));
    assert_eq!(counts(&st), (1, 2, 0, 0, 0, 3));
}

#[test]
fn a_spinner_ordered_to_exit_exits_after_its_spin_and_none_spins_after_stop() {
    let clock = ManualClock::new();
    let mut st = state(2, 2, 2);
    let _ = st.start();
    assert!(st.begin_spin());
    assert!(st.adjust(1, 1).is_empty());
    st.end_spin();
    assert!(matches!(
        st.sleeper_step(&mut Waiting::default(), &clock),
        SleepStep::Exit
    ));
    assert!(st.stop().is_some());
    assert!(
        !st.begin_spin(),
        "a stopped pool's threads go straight to exit"
    );
}

#[test]
fn withdrawing_the_item_a_spinner_was_claimed_for_leaves_it_idle() {
    let clock = ManualClock::new();
    let mut st = state(1, 1, 1);
    let _ = st.start();
    assert!(st.begin_spin());
    let (key, wake) = st.submit(item());
    assert_eq!(wake, Wake::Spinner);
    assert!(st.withdraw(key).is_some());
    st.end_spin();
    sleeper_waits(&mut st, &clock);
    assert_eq!(counts(&st), (1, 0, 0, 0, 0, 1));
    // Its spin found nothing in the end: a miss pauses one spell.
    assert!(!st.begin_spin());
    assert!(st.begin_spin());
}

#[test]
fn spins_that_find_nothing_pause_spinning_for_doubling_spells_and_hits_halve_the_pause() {
    use super::super::state::MAX_SPIN_PAUSE;
    let mut st = state(1, 1, 1);
    let _ = st.start();
    // Misses: 1, 2, 4, ... idle spells without a spin, up to the cap.
    let mut pauses = Vec::new();
    for _ in 0..10 {
        let mut skipped = 0;
        while !st.begin_spin() {
            skipped += 1;
        }
        st.end_spin(); // no claim waits: a miss
        pauses.push(skipped);
    }
    assert_eq!(
        pauses,
        [0, 1, 2, 4, 8, 16, 32, 64, MAX_SPIN_PAUSE, MAX_SPIN_PAUSE]
    );
    // Hits (a claim waits when the spin ends) halve the pause until spins
    // come every spell again.
    while !st.begin_spin() {}
    for _ in 0..9 {
        let (key, wake) = st.submit(item());
        assert_eq!(wake, Wake::Spinner);
        st.end_spin();
        assert!(st.withdraw(key).is_some());
        assert!(st.begin_spin(), "after a hit the next spell spins");
    }
    st.end_spin();
    assert_eq!(
        st.spin_backoff.pause_left(),
        1,
        "one miss after the hits: a pause of one"
    );
}

#[test]
fn a_spinner_that_dies_mid_spin_leaves_no_stale_spinner_to_skip_the_next_notify() {
    let mut st = state(2, 2, 2);
    let _ = st.start();
    assert!(st.begin_spin());
    // Its exit guard runs (a panic in the pool's own code while spinning).
    st.leave(Position::Spinning);
    st.alive -= 1;
    assert!(matches!(st.rehome(true), Rehome::Nothing));
    assert_eq!((st.spinning, st.idle), (0, 1));
    // The one parked sleeper must be notified, not left to a dead spinner.
    assert_eq!(st.submit(item()).1, Wake::Worker);
}

/// The cold start of a pool thread (`spin.rs`), on a real thread driven by
/// a manual clock: one job, then `then` (with the thread idle), one more
/// job; returns the spins begun after each of the two jobs.
fn spins_around_a_second_job(then: impl FnOnce(&ManualClock)) -> (u64, u64) {
    let clock = ManualClock::new();
    let pool = ThreadPool::builder()
        .min(0)
        .max(1)
        .keep_alive(Duration::MAX)
        .clock(clock.clone())
        .build()
        .expect("pool");
    pool.start();
    // Runs one job, then waits until its thread is idle again: it counts
    // as idle in the same lock hold in which it decides to spin or park
    // (and a parking cold thread reads the clock), so the count is final.
    let job = || {
        let (tx, rx) = mpsc::channel();
        assert!(
            pool.call_in_thread(move || tx.send(()).expect("test"))
                .is_ok()
        );
        rx.recv().expect("the job ran");
        while pool.core.state.lock().idle == 0 {
            std::thread::yield_now();
        }
        pool.core.state.lock().spins
    };
    let first = job();
    then(&clock);
    let second = job();
    pool.stop();
    (first, second)
}

#[test]
fn a_thread_started_for_a_lone_job_parks_without_a_spin() {
    let (first, _) = spins_around_a_second_job(|_| ());
    assert_eq!(first, 0, "a new thread has no sign that work comes soon");
}

#[test]
fn a_thread_claimed_soon_after_it_parked_spins_from_then_on() {
    // The clock stands still: the second job came 0 s after the park.
    assert_eq!(spins_around_a_second_job(|_| ()), (0, 1));
}

#[test]
fn a_thread_claimed_long_after_it_parked_stays_cold() {
    let (first, second) =
        spins_around_a_second_job(|clock| clock.advance(super::super::spin::WARM_WAIT * 2));
    assert_eq!((first, second), (0, 0));
}
