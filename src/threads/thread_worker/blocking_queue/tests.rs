//! The wake protocol of `BlockingQueue`: signals, the opt-in spin, its
//! backoff (crate-internal state, so unit tests here).

use super::*;
use crate::loom::{Arc, thread};

/// Calls `get` on its own thread; the item comes back on the handle.
fn consumer(queue: &Arc<BlockingQueue>) -> thread::JoinHandle<WorkItem> {
    let queue = queue.clone();
    thread::spawn(move || queue.get())
}

/// Waits (yielding) until the queue's state satisfies `f`: an ordering
/// point, not a timing assumption.
fn until(queue: &BlockingQueue, f: impl Fn(&QueueState) -> bool) {
    while !f(&queue.state.lock()) {
        thread::yield_now();
    }
}

fn is_stop(item: WorkItem) -> bool {
    matches!(item, WorkItem::Stop)
}

#[test]
fn a_put_to_a_spinning_consumer_raises_the_hint_instead_of_notifying() {
    // A spin far longer than the test: the consumer is still spinning
    // when the put comes, so only the hint can end its spin early.
    let queue = Arc::new(BlockingQueue::with_spin(Duration::from_secs(600)));
    let got = consumer(&queue);
    until(&queue, |s| s.spinner == Spinner::Watching);
    queue.put(WorkItem::Stop);
    {
        let state = queue.state.lock();
        // Claimed (or already taken back by the spinner), never notified:
        // the consumer never counted itself a waiter.
        assert_ne!(state.spinner, Spinner::Watching);
        assert_eq!(state.waiters, 0);
    }
    assert!(is_stop(got.join().unwrap()));
    assert_eq!(queue.hint.0.load(Ordering::Relaxed), 1);
    let state = queue.state.lock();
    assert_eq!(state.spinner, Spinner::None);
    assert_eq!(state.backoff, SpinBackoff::new(), "a hit pauses nothing");
}

#[test]
fn a_spin_that_sees_no_put_pauses_the_next_and_the_waiter_still_wakes_on_put() {
    let queue = Arc::new(BlockingQueue::with_spin(Duration::from_nanos(1)));
    let got = consumer(&queue);
    // The spin missed and the consumer waits on the condvar.
    until(&queue, |s| s.waiters == 1);
    let mut missed = SpinBackoff::new();
    missed.miss(MAX_SPIN_PAUSE, false);
    assert_eq!(queue.state.lock().backoff, missed);
    assert_eq!(queue.state.lock().spinner, Spinner::None);
    queue.put(WorkItem::Stop);
    assert!(is_stop(got.join().unwrap()));
    assert_eq!(queue.hint.0.load(Ordering::Relaxed), 0, "woken by notify");

    // The next empty get is paused: it waits at once (its pause used
    // up, no second miss recorded), and still wakes on put.
    let got = consumer(&queue);
    until(&queue, |s| s.waiters == 1);
    let mut paused = missed;
    assert!(!paused.try_spin());
    assert_eq!(queue.state.lock().backoff, paused);
    queue.put(WorkItem::Stop);
    assert!(is_stop(got.join().unwrap()));

    // The pause is over: the next get spins again, misses again, and
    // the pause doubles.
    let got = consumer(&queue);
    until(&queue, |s| s.waiters == 1);
    paused.miss(MAX_SPIN_PAUSE, false);
    assert_eq!(queue.state.lock().backoff, paused);
    assert_eq!(paused.pause_left(), 2);
    queue.put(WorkItem::Stop);
    assert!(is_stop(got.join().unwrap()));
}

#[test]
fn a_claimed_spin_after_misses_halves_the_backoff() {
    let queue = Arc::new(BlockingQueue::with_spin(Duration::from_secs(600)));
    let mut expect = SpinBackoff::new();
    for _ in 0..3 {
        expect.miss(MAX_SPIN_PAUSE, false);
    }
    // Its pause used up: the next empty get spins.
    while expect.pause_left() > 0 {
        assert!(!expect.try_spin());
    }
    queue.state.lock().backoff = expect;
    let got = consumer(&queue);
    until(&queue, |s| s.spinner == Spinner::Watching);
    assert!(expect.try_spin());
    queue.put(WorkItem::Stop);
    assert!(is_stop(got.join().unwrap()));
    expect.hit();
    assert_eq!(queue.state.lock().backoff, expect);
    // Two misses and three waits of pause behind it: 4 -> 2 after the hit.
    let mut two = SpinBackoff::new();
    two.miss(MAX_SPIN_PAUSE, false);
    two.miss(MAX_SPIN_PAUSE, false);
    while !two.try_spin() {}
    assert_eq!(expect, two);
}

#[test]
fn one_consumer_spins_at_a_time_and_a_second_put_notifies_the_waiter() {
    let queue = Arc::new(BlockingQueue::with_spin(Duration::from_secs(600)));
    let first = consumer(&queue);
    until(&queue, |s| s.spinner == Spinner::Watching);
    let second = consumer(&queue);
    // The second consumer does not spin beside the first: it waits.
    until(&queue, |s| s.waiters == 1);
    assert_eq!(queue.state.lock().spinner, Spinner::Watching);
    queue.put(WorkItem::Stop);
    queue.put(WorkItem::Stop);
    assert!(is_stop(first.join().unwrap()));
    assert!(is_stop(second.join().unwrap()));
    assert_eq!(queue.hint.0.load(Ordering::Relaxed), 1);
    assert!(queue.is_empty());
}

#[test]
fn puts_behind_a_signalled_consumer_that_has_not_run_yet_signal_no_one() {
    for queue in [
        BlockingQueue::new(),
        BlockingQueue::with_spin(Duration::from_nanos(1)),
    ] {
        let queue = Arc::new(queue);
        let got = consumer(&queue);
        until(&queue, |s| s.waiters == 1);
        // The first put signals the one waiter; the others find no
        // unsignalled waiter, whether it has run yet or not.
        queue.put(WorkItem::Stop);
        queue.put(WorkItem::Stop);
        queue.put(WorkItem::Stop);
        assert!(is_stop(got.join().unwrap()));
        let state = queue.state.lock();
        assert_eq!(state.signals, 1);
        assert_eq!((state.waiters, state.wakeups), (0, 0));
        assert_eq!(state.items.len(), 2);
    }
}

#[test]
fn two_waiters_get_two_signals_for_two_puts_and_a_timed_out_consumer_leaves_no_count() {
    let queue = Arc::new(BlockingQueue::new());
    let (a, b) = (consumer(&queue), consumer(&queue));
    until(&queue, |s| s.waiters == 2);
    queue.put(WorkItem::Stop);
    queue.put(WorkItem::Stop);
    assert!(is_stop(a.join().unwrap()));
    assert!(is_stop(b.join().unwrap()));
    {
        let state = queue.state.lock();
        assert_eq!(state.signals, 2);
        assert_eq!((state.waiters, state.wakeups), (0, 0));
    }
    assert!(queue.get_timeout(Duration::from_millis(1)).is_none());
    let state = queue.state.lock();
    assert_eq!((state.waiters, state.wakeups), (0, 0));
}

#[test]
fn a_zero_limit_and_the_default_queue_never_spin() {
    for queue in [
        BlockingQueue::new(),
        BlockingQueue::with_spin(Duration::ZERO),
    ] {
        let queue = Arc::new(queue);
        let got = consumer(&queue);
        until(&queue, |s| s.waiters == 1);
        assert_eq!(queue.state.lock().backoff, SpinBackoff::new());
        queue.put(WorkItem::Stop);
        assert!(is_stop(got.join().unwrap()));
        assert_eq!(queue.hint.0.load(Ordering::Relaxed), 0);
    }
}

#[test]
fn a_batch_is_queued_whole_before_any_waiter_is_signalled_and_signals_one_per_item_at_most() {
    for queue in [
        BlockingQueue::new(),
        BlockingQueue::with_spin(Duration::from_nanos(1)),
    ] {
        let queue = Arc::new(queue);
        // A waiter leaves its wait only by taking a signal, and the batch
        // signals after all three are queued: it finds the other two.
        let q = queue.clone();
        let got = thread::spawn(move || {
            let first = q.get();
            (first, q.len())
        });
        until(&queue, |s| s.waiters == 1);
        queue.put_batch(vec![WorkItem::Stop, WorkItem::Stop, WorkItem::Stop]);
        let (first, left) = got.join().unwrap();
        assert!(is_stop(first));
        assert_eq!(left, 2);
        let state = queue.state.lock();
        assert_eq!(state.signals, 1, "one waiter, one signal");
        assert_eq!((state.waiters, state.wakeups), (0, 0));
    }

    // Two waiters, a batch of three: both signalled; an empty batch
    // signals no one.
    let queue = Arc::new(BlockingQueue::new());
    let (a, b) = (consumer(&queue), consumer(&queue));
    until(&queue, |s| s.waiters == 2);
    queue.put_batch(Vec::new());
    assert_eq!(queue.state.lock().signals, 0);
    queue.put_batch(vec![WorkItem::Stop, WorkItem::Stop, WorkItem::Stop]);
    assert!(is_stop(a.join().unwrap()));
    assert!(is_stop(b.join().unwrap()));
    let state = queue.state.lock();
    assert_eq!(state.signals, 2);
    assert_eq!((state.waiters, state.wakeups), (0, 0));
    assert_eq!(state.items.len(), 1);
}

#[test]
fn a_batch_put_to_a_spinning_consumer_claims_it_and_signals_only_the_rest() {
    let queue = Arc::new(BlockingQueue::with_spin(Duration::from_secs(600)));
    let got = consumer(&queue);
    until(&queue, |s| s.spinner == Spinner::Watching);
    queue.put_batch(vec![WorkItem::Stop, WorkItem::Stop]);
    assert!(is_stop(got.join().unwrap()));
    assert_eq!(queue.hint.0.load(Ordering::Relaxed), 1);
    let state = queue.state.lock();
    assert_eq!(state.signals, 0, "no waiter to signal");
    assert_eq!(state.items.len(), 1);
}

/// Runs `f` while another thread holds the queue's lock (a consumer
/// preempted with it held); the lock is released when `f` returns.
fn with_lock_held_elsewhere<R>(queue: &Arc<BlockingQueue>, f: impl FnOnce() -> R) -> R {
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let q = queue.clone();
    let holder = thread::spawn(move || {
        let _state = q.state.lock();
        held_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    held_rx.recv().unwrap();
    let out = f();
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    out
}

fn tag(item: &WorkItem) -> &'static str {
    match item {
        WorkItem::Run(_) => "run",
        WorkItem::Stop => "stop",
    }
}

#[test]
fn a_try_put_batch_while_another_thread_holds_the_lock_hands_every_item_back_in_order() {
    let queue = Arc::new(BlockingQueue::new());
    let items = vec![WorkItem::Run(Box::new(|| ())), WorkItem::Stop];
    let back = with_lock_held_elsewhere(&queue, || queue.try_put_batch(items));
    let back = back.expect_err("the lock was held: nothing queued");
    assert_eq!(back.iter().map(tag).collect::<Vec<_>>(), ["run", "stop"]);
    assert!(queue.is_empty());
    // Offered again once the lock is free: queued, in order.
    assert!(queue.try_put_batch(back).is_ok());
    assert_eq!(tag(&queue.get()), "run");
    assert_eq!(tag(&queue.get()), "stop");
}

#[test]
fn a_try_put_batch_signals_a_waiting_consumer_as_put_batch_does() {
    let queue = Arc::new(BlockingQueue::new());
    let got = consumer(&queue);
    until(&queue, |s| s.waiters == 1);
    assert!(queue.try_put_batch(vec![WorkItem::Stop]).is_ok());
    assert!(is_stop(got.join().unwrap()));
    assert_eq!(queue.state.lock().signals, 1);
}
