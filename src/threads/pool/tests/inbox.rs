//! The submission inbox (`inbox.rs`): the gate's rule against `decide`,
//! and a busy pool taking `call_in_thread` without the lock.

use super::*;

#[test]
fn decides_nothing_agrees_with_decide_in_every_small_state() {
    for (idle, busy, claimed, spare, armed, started, limit, eager) in itertools_product() {
        let mut st = state(0, 10, eager);
        (st.idle, st.busy, st.claimed, st.spare, st.armed) = (idle, busy, claimed, spare, armed);
        (st.started, st.limit) = (started, limit);
        // A claim names a queued item, and one more item is the new one.
        for _ in 0..=claimed {
            let _ = st.queue.push(item());
        }
        let predicted = st.decides_nothing();
        let decided = st.decide();
        assert_eq!(
            predicted,
            decided == Wake::Nothing,
            "idle {idle} busy {busy} claimed {claimed} spare {spare} armed {armed} \
             started {started} limit {limit} eager {eager}: {decided:?}"
        );
    }
}

/// Every small combination of the counts `decide` reads.
#[allow(clippy::type_complexity)]
fn itertools_product() -> Vec<(usize, usize, usize, usize, bool, bool, usize, usize)> {
    let mut all = Vec::new();
    for idle in 0..3 {
        for busy in 0..3 {
            for claimed in 0..=busy {
                for spare in 0..2 {
                    for armed in [false, true] {
                        for started in [false, true] {
                            for limit in 0..5 {
                                for eager in 1..3 {
                                    all.push((
                                        idle, busy, claimed, spare, armed, started, limit, eager,
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    all
}

#[test]
fn the_gate_opens_while_a_thread_runs_and_closes_before_it_goes_idle() {
    let inbox = Inbox::default();
    let clock = ManualClock::new();
    let mut st = state(1, 1, 1);
    let _ = st.start();
    assert_eq!(st.submit(item()).1, Wake::Worker);
    st.open_inbox_if_quiet(&inbox);
    assert!(!st.gate, "a claimed sleeper is not running yet");
    let _ = sleeper_takes(&mut st, &clock);
    assert_eq!(st.submit(item()).1, Wake::Nothing);
    st.open_inbox_if_quiet(&inbox);
    assert!(st.gate, "one thread runs, and a submission decides nothing");
    for _ in 0..2 {
        inbox.claim().expect("open").write(item());
    }
    assert_eq!(st.backlog(), 1, "the inbox is not queued until drained");
    // The queued item first, then the two from the inbox.
    for _ in 0..3 {
        assert!(matches!(st.after_task(false, &inbox), AfterTask::Run(_)));
        assert!(st.gate);
    }
    assert!(matches!(st.after_task(false, &inbox), AfterTask::Sleep));
    assert!(!st.gate, "closed before the thread went idle");
    assert!(inbox.claim().is_none());
    assert_eq!((st.completed, st.taken), (4, 4));
}

/// A one-thread pool whose thread runs a job until the returned sender is
/// dropped, with one more job queued behind it (so the gate is open).
fn busy_pool_with_open_gate(
    log: &std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
) -> (ThreadPool, mpsc::Sender<()>) {
    let pool = ThreadPool::new(1, 1).unwrap();
    pool.start();
    let (started_tx, started) = mpsc::channel();
    let (release, wait) = mpsc::channel::<()>();
    let l = log.clone();
    assert!(
        pool.call_in_thread(move || {
            started_tx.send(()).expect("test");
            let _ = wait.recv();
            l.lock().unwrap().push(0);
        })
        .is_ok()
    );
    started.recv().expect("the job started");
    let l = log.clone();
    assert!(
        pool.call_in_thread(move || l.lock().unwrap().push(1))
            .is_ok()
    );
    assert!(
        pool.core.state.lock().gate,
        "busy, and a submission decides nothing"
    );
    (pool, release)
}

#[test]
fn a_busy_pool_takes_call_in_thread_through_the_inbox_without_the_lock() {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (pool, release) = busy_pool_with_open_gate(&log);
    let l = log.clone();
    // With the lock held here, the submission still completes.
    let st = pool.core.state.lock();
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(
                pool.call_in_thread(move || l.lock().unwrap().push(2))
                    .is_ok()
            )
        })
        .join()
        .expect("submitter");
    });
    assert_eq!(st.queue.len(), 1, "the new job is in the inbox, not queued");
    drop(st);
    assert_eq!(pool.statistics().backlog, 2, "statistics count the inbox");
    drop(release);
    pool.stop();
    assert_eq!(*log.lock().unwrap(), vec![0, 1, 2]);
    assert_eq!(pool.statistics().completed, 3);
}

#[test]
fn stop_runs_what_the_inbox_holds_and_refuses_after() {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (pool, release) = busy_pool_with_open_gate(&log);
    let l = log.clone();
    assert!(
        pool.call_in_thread(move || l.lock().unwrap().push(2))
            .is_ok()
    );
    assert!(crate::threads::Worker::quit(&pool).is_ok());
    assert!(pool.call_in_thread(|| ()).is_err(), "stopped: refused");
    drop(release);
    pool.stop();
    assert_eq!(*log.lock().unwrap(), vec![0, 1, 2]);
}

#[test]
fn a_cancellable_call_queues_behind_the_inbox_and_withdraws() {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (pool, release) = busy_pool_with_open_gate(&log);
    let push = |n: u32| {
        let l = log.clone();
        move || l.lock().unwrap().push(n)
    };
    assert!(pool.call_in_thread(push(2)).is_ok());
    let handle = pool
        .call_in_thread_cancellable(push(3))
        .unwrap_or_else(|_| unreachable!());
    assert!(pool.call_in_thread(push(4)).is_ok());
    let l = log.clone();
    let last = pool
        .call_in_thread_cancellable(move || l.lock().unwrap().push(5))
        .unwrap_or_else(|_| unreachable!());
    assert!(handle.cancel(), "unstarted: withdrawn");
    drop(release);
    pool.stop();
    assert!(!last.cancel(), "ran");
    assert_eq!(
        *log.lock().unwrap(),
        vec![0, 1, 2, 4, 5],
        "FIFO, 3 withdrawn"
    );
}
