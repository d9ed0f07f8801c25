//! The protocol's states, one thread at a time (the interleavings are
//! the loom models' job), and the jobs' ownership.

use super::*;
use crate::loom::atomic::Ordering;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Message {
    fn run_for_test(self) {
        match self {
            Message::Call(f) => f.call(),
            Message::Deliver(d) => d.deliver(),
        }
    }
}

fn wakes(inbox: &Inbox<CountingWaker>) -> usize {
    inbox.waker.0.load(Ordering::SeqCst)
}

fn run_all(inbox: &Inbox<CountingWaker>) -> usize {
    let mut batch = VecDeque::new();
    inbox.drain_into(&mut batch);
    let n = batch.len();
    for job in batch {
        match job.message {
            Message::Call(f) => f.call(),
            Message::Deliver(d) => d.deliver(),
        }
    }
    n
}

/// Pushes one call per entry of `cpus`, each from that CPU's lane; the
/// call numbered `first + k` records its number in `order` when it runs.
fn push_recording(
    inbox: &Inbox<CountingWaker>,
    order: &Arc<crate::loom::Mutex<Vec<usize>>>,
    first: usize,
    cpus: &[u32],
) {
    for (k, &cpu) in cpus.iter().enumerate() {
        super::cpu::pretend(Some(cpu));
        let o = order.clone();
        assert!(
            inbox
                .push(move || o.lock().push(first + k), Location::caller())
                .is_ok()
        );
    }
}

/// The buffer the loop hands back to a lane (emptied as it merged the
/// lane's jobs into its batch) is filled from its front again: a burst
/// that fits its capacity stays in one piece, so it touches no more of the
/// buffer than it needs and growing it copies no wrapped part.
#[test]
fn the_producers_fill_the_buffer_the_loop_hands_back_from_its_front() {
    let inbox = Inbox::new(CountingWaker::default());
    let mut batch = VecDeque::new();
    for _ in 0..6 {
        assert!(inbox.push(|| (), Location::caller()).is_ok());
    }
    inbox.drain_into(&mut batch);
    // The loop runs its batch as `turn.rs` does, from the front.
    while let Some(job) = batch.pop_front() {
        job.message.run_for_test();
    }
    // Meanwhile producers refill the lane's other buffer; the loop drains
    // it, handing back the one it emptied.
    assert!(inbox.push(|| (), Location::caller()).is_ok());
    inbox.drain_into(&mut batch);
    assert_eq!(batch.len(), 1);
    let capacity = inbox
        .lane()
        .queue
        .lock()
        .jobs
        .as_ref()
        .expect("open")
        .capacity();
    assert!(capacity >= 6, "the lane got the drained buffer back");
    // As many pushes as the handed-back buffer holds: none wraps.
    for _ in 0..capacity {
        assert!(inbox.push(|| (), Location::caller()).is_ok());
    }
    let queue = inbox.lane().queue.lock();
    let jobs = queue.jobs.as_ref().expect("open");
    assert_eq!(jobs.len(), capacity);
    assert_eq!(jobs.capacity(), capacity, "no growth");
    assert!(jobs.as_slices().1.is_empty(), "the burst wrapped around");
}

#[test]
fn a_burst_into_a_sleeping_loop_wakes_it_once() {
    let inbox = Inbox::new(CountingWaker::default());
    for _ in 0..3 {
        assert!(inbox.push(|| (), Location::caller()).is_ok());
    }
    assert_eq!(wakes(&inbox), 1);
    assert_eq!(inbox.wakes(), 1);
    assert_eq!(inbox.pushes(), 3);
}

#[test]
fn an_awake_loop_is_not_woken() {
    let inbox = Inbox::new(CountingWaker::default());
    inbox.awake();
    assert!(inbox.push(|| (), Location::caller()).is_ok());
    assert_eq!(wakes(&inbox), 0);
}

#[test]
fn after_deciding_to_sleep_the_next_push_wakes() {
    let inbox = Inbox::new(CountingWaker::default());
    inbox.awake();
    assert!(inbox.prepare_to_sleep(&SpinGate::new(MAX_SPIN_PAUSE), || false));
    assert!(inbox.push(|| (), Location::caller()).is_ok());
    assert!(inbox.push(|| (), Location::caller()).is_ok());
    assert_eq!(wakes(&inbox), 1);
}

/// `spells` idle spells of the loop (this thread, on CPU 0) as `turn.rs`
/// runs them with `gate`, spell `i` ended by a push from a producer thread
/// on `producer(i)` (a CPU, or unknown) while the loop is sleepy.
fn spells_woken_from(gate: &SpinGate, producer: impl Fn(usize) -> Option<u32>, spells: usize) {
    spells_ended_by(gate, |spell| Some(producer(spell)), spells);
}

/// `spells` short idle spells of the loop (this thread, on CPU 0) as
/// `turn.rs` runs them with `gate`: spell `i` ended by a push, while the
/// loop is sleepy, from a producer thread on `push(i)` = `Some(cpu)` (a
/// CPU, or unknown), or with `None` by something no producer notifies
/// (I/O, a timer: the poll just returns).
fn spells_ended_by(gate: &SpinGate, push: impl Fn(usize) -> Option<Option<u32>>, spells: usize) {
    super::cpu::pretend(Some(0));
    let inbox = Arc::new(Inbox::new(CountingWaker::default()));
    inbox.awake();
    let mut pushes = 0;
    for spell in 0..spells {
        // Nobody pushes during the spin (if the gate lets one through).
        assert!(inbox.prepare_to_sleep(gate, || false));
        let pushed = push(spell);
        if let Some(cpu) = pushed {
            let i2 = inbox.clone();
            std::thread::spawn(move || {
                super::cpu::pretend(cpu);
                assert!(i2.push(|| (), Location::caller()).is_ok());
            })
            .join()
            .unwrap();
            pushes += 1;
        }
        assert_eq!(wakes(&inbox), pushes);
        let unnotified = inbox.awake_unnotified();
        assert_eq!(unnotified, pushed.is_none());
        // A short sleep, as the turn settles it.
        gate.settle_with(false, || unnotified || inbox.woken_from_this_cpu());
        assert_eq!(run_all(&inbox), usize::from(pushed.is_some()));
    }
}

/// A loop whose short sleeps end by I/O (one TCP connection served in
/// lock-step with its client) never warms up to spin: its spin watches
/// only the inbox and could not have ended them. The awake state is not
/// a sleep: a poll that did not sleep reports nothing unnotified.
#[test]
fn a_loop_woken_by_io_never_spins() {
    let gate = SpinGate::new(MAX_SPIN_PAUSE);
    spells_ended_by(&gate, |_| None, 50);
    assert!(!gate.is_warm());
    assert!(!gate.try_spin_once_warm());
    let inbox = Inbox::new(CountingWaker::default());
    inbox.awake();
    assert!(!inbox.awake_unnotified());
    assert_eq!(wakes(&inbox), 0);
}

/// A warm loop (calls from another CPU) whose sleeps then end by I/O
/// pauses its spin as after any run of misses; calls again warm it back.
#[test]
fn a_warm_loop_woken_by_io_pauses_its_spin() {
    let gate = SpinGate::new(MAX_SPIN_PAUSE);
    spells_ended_by(&gate, |spell| (spell < 5).then_some(Some(1)), 40);
    // As `a_warm_loop_woken_from_its_own_cpu_pauses_its_spin`: spells 5,
    // 6, 8, 11, 16, 25 spin and miss; 14 of the last pause's 16 are used.
    assert!(gate.is_warm());
    assert_eq!(gate.pause_left(), 2);
    // Calls again: once the pause runs out, spins go on and end in hits
    // or short sleeps, which pause nothing.
    spells_ended_by(&gate, |_| Some(Some(1)), 40);
    assert_eq!(gate.pause_left(), 0);
    assert!(gate.try_spin_once_warm());
}

/// A producer on the loop's own CPU cannot run while the loop spins: the
/// loop never warms up to spin for it (a `blocking_call` caller pinned to
/// the loop's core). The same rhythm from another CPU warms it and keeps
/// every spin going (short sleeps are no misses).
#[test]
fn a_loop_woken_from_its_own_cpu_never_spins_for_it() {
    let same = SpinGate::new(MAX_SPIN_PAUSE);
    spells_woken_from(&same, |_| Some(0), 50);
    assert!(!same.is_warm());
    assert!(!same.try_spin_once_warm());
    let other = SpinGate::new(MAX_SPIN_PAUSE);
    spells_woken_from(&other, |_| Some(1), 50);
    assert!(other.is_warm());
    assert_eq!(other.pause_left(), 0);
    assert!(other.try_spin_once_warm());
    // A CPU nobody knows says nothing: as another CPU.
    let unknown = SpinGate::new(MAX_SPIN_PAUSE);
    spells_woken_from(&unknown, |_| None, 50);
    assert!(unknown.is_warm());
    assert_eq!(unknown.pause_left(), 0);
}

/// A warm loop whose producer moves onto its CPU stops spinning for it:
/// its dry spins become misses.
#[test]
fn a_warm_loop_woken_from_its_own_cpu_pauses_its_spin() {
    let gate = SpinGate::new(MAX_SPIN_PAUSE);
    spells_woken_from(&gate, |spell| Some(if spell < 5 { 1 } else { 0 }), 40);
    // Spins at spells 1-4 (hits: none, short waits), then from spell 5 on
    // misses pausing 0, 1, 2, 4, 8, 16: spells 5, 6, 8, 11, 16, 25 spin,
    // and 14 of the last pause's 16 spells are used up.
    assert!(gate.is_warm());
    assert_eq!(gate.pause_left(), 2);
}

/// A thread shares the loop's CPU only when both are known and equal.
#[test]
fn a_thread_shares_the_loops_cpu_only_if_both_are_known_and_equal() {
    let inbox = Arc::new(Inbox::new(CountingWaker::default()));
    let from = |cpu: Option<u32>| {
        let i2 = inbox.clone();
        std::thread::spawn(move || {
            super::cpu::pretend(cpu);
            i2.shares_loop_cpu()
        })
        .join()
        .unwrap()
    };
    // The loop never slept yet: nothing is known.
    assert!(!from(Some(0)));
    super::cpu::pretend(Some(0));
    inbox.note_loop_cpu();
    assert!(from(Some(0)));
    assert!(!from(Some(1)));
    assert!(!from(None));
    // The loop woke elsewhere.
    super::cpu::pretend(Some(1));
    inbox.note_loop_cpu();
    assert!(!from(Some(0)));
    assert!(from(Some(1)));
    super::cpu::pretend(None);
    inbox.note_loop_cpu();
    assert!(!from(None));
}

/// The CPU noted by a push that woke the loop is forgotten at the next
/// sleep: a wake with no push (I/O, a timer) is not taken for it.
#[test]
fn a_wake_with_no_push_is_from_no_cpu() {
    super::cpu::pretend(Some(0));
    let inbox = Inbox::new(CountingWaker::default());
    let gate = SpinGate::new(MAX_SPIN_PAUSE);
    inbox.awake();
    assert!(inbox.prepare_to_sleep(&gate, || false));
    assert!(inbox.push(|| (), Location::caller()).is_ok());
    inbox.awake();
    assert!(inbox.woken_from_this_cpu());
    run_all(&inbox);
    assert!(inbox.prepare_to_sleep(&gate, || false));
    inbox.awake();
    assert!(!inbox.woken_from_this_cpu());
}

#[test]
fn queued_or_other_work_keeps_the_loop_awake() {
    let inbox = Inbox::new(CountingWaker::default());
    inbox.awake();
    assert!(!inbox.prepare_to_sleep(&SpinGate::new(MAX_SPIN_PAUSE), || true));
    assert!(inbox.push(|| (), Location::caller()).is_ok());
    assert!(!inbox.prepare_to_sleep(&SpinGate::new(MAX_SPIN_PAUSE), || false));
    // Still awake: no syscall for the next push either.
    assert!(inbox.push(|| (), Location::caller()).is_ok());
    assert_eq!(wakes(&inbox), 0);
}

/// One stamp per batch: the push into an empty inbox dates it, later
/// pushes do not, and a drain starts the next batch.
#[test]
fn the_oldest_waiting_job_is_dated_by_the_push_that_found_the_inbox_empty() {
    use crate::testing::ManualClock;
    use std::time::Duration;
    let ms = Duration::from_millis;
    let clock = ManualClock::new();
    let inbox = Inbox::with_clock(CountingWaker::default(), Arc::new(clock.clone()));
    assert_eq!(inbox.oldest_age(), Duration::ZERO);
    assert!(inbox.push(|| (), Location::caller()).is_ok());
    clock.advance(ms(5));
    assert_eq!(inbox.oldest_age(), ms(5));
    assert!(inbox.push(|| (), Location::caller()).is_ok());
    clock.advance(ms(2));
    assert_eq!(inbox.oldest_age(), ms(7));
    assert_eq!(run_all(&inbox), 2);
    assert_eq!(inbox.oldest_age(), Duration::ZERO);
    clock.advance(ms(1));
    let d: Arc<dyn Deliver> = Arc::new(Noop);
    assert!(inbox.push_deliver(d, Location::caller()).is_ok());
    clock.advance(ms(3));
    assert_eq!(inbox.oldest_age(), ms(3));
    assert_eq!(inbox.close().len(), 1);
    assert_eq!(inbox.oldest_age(), Duration::ZERO);
    // Without a clock no age is kept.
    let plain = Inbox::new(CountingWaker::default());
    assert!(plain.push(|| (), Location::caller()).is_ok());
    clock.advance(ms(3));
    assert_eq!(plain.oldest_age(), Duration::ZERO);
}

/// A push dates its batch after leaving the lock: until then the batch
/// reads as just queued; a date that comes after its batch was drained and
/// the next batch claimed the stamp is dropped, never given to that batch;
/// one that comes after its batch was drained, with no batch since, is
/// replaced by the next batch's claim.
#[test]
fn a_late_date_never_lands_on_a_later_batch() {
    use crate::testing::ManualClock;
    use std::time::Duration;
    let ms = Duration::from_millis;
    let clock = ManualClock::new();
    let inbox = Inbox::with_clock(CountingWaker::default(), Arc::new(clock.clone()));
    // A push that has queued its job (and claimed the stamp) but has not
    // read the clock yet.
    let half_push = |inbox: &Inbox<CountingWaker>| {
        let first = inbox.enqueue(
            inbox.lane(),
            || (),
            Location::caller(),
            usize::MAX,
            |g| Message::Call(InlineFn::new(g)),
        );
        first.unwrap_or_else(|_| panic!("open"))
    };
    assert_eq!(half_push(&inbox), 1);
    clock.advance(ms(4));
    assert_eq!(inbox.oldest_age(), Duration::ZERO);
    assert_eq!(run_all(&inbox), 1);
    // The next batch, dated at 4 ms by its own push.
    assert!(inbox.push(|| (), Location::caller()).is_ok());
    clock.advance(ms(5));
    // Push 1 reads the clock at last (9 ms): its batch is gone, its date
    // dropped.
    inbox.lane().stamp.date(1, crate::Clock::now(&clock));
    assert_eq!(inbox.oldest_age(), ms(5));
    assert_eq!(run_all(&inbox), 1);
    // Push 3 queues, its batch is drained, then it dates the empty queue;
    // the next batch (push 4, at 10 ms) replaces that date with its own.
    assert_eq!(half_push(&inbox), 3);
    assert_eq!(run_all(&inbox), 1);
    clock.advance(ms(1));
    inbox.lane().stamp.date(3, crate::Clock::now(&clock));
    assert_eq!(inbox.oldest_age(), Duration::ZERO);
    assert_eq!(half_push(&inbox), 4);
    assert_eq!(inbox.oldest_age(), Duration::ZERO);
    inbox.lane().stamp.date(4, crate::Clock::now(&clock));
    clock.advance(ms(2));
    assert_eq!(inbox.oldest_age(), ms(2));
    // A second job joins the batch without a claim or a date.
    assert_eq!(half_push(&inbox), 0);
    assert_eq!(inbox.oldest_age(), ms(2));
    assert_eq!(inbox.pushes(), 5);
}

/// The bound is checked under the push's own lock: exact, and a refused
/// job comes back whole (full or closed), uncounted.
#[test]
fn a_bounded_push_is_refused_at_capacity_and_after_close() {
    let inbox = Inbox::new(CountingWaker::default());
    assert!(inbox.push_within(|| (), Location::caller(), 2).is_ok());
    assert!(inbox.push_within(|| (), Location::caller(), 2).is_ok());
    let held = Arc::new(());
    let h = held.clone();
    let full = inbox.push_within(move || drop(h), Location::caller(), 2);
    assert!(matches!(full, Err(Refused::Full(_))));
    assert_eq!(Arc::strong_count(&held), 2);
    drop(full);
    assert_eq!(Arc::strong_count(&held), 1);
    assert_eq!((inbox.len(), inbox.pushes()), (2, 2));
    // Unbounded pushes are never refused for room.
    assert!(inbox.push(|| (), Location::caller()).is_ok());
    assert_eq!(run_all(&inbox), 3);
    assert_eq!(inbox.len(), 0);
    assert!(inbox.push_within(|| (), Location::caller(), 1).is_ok());
    assert_eq!(inbox.close().len(), 1);
    assert_eq!(inbox.len(), 0);
    let closed = inbox.push_within(|| (), Location::caller(), 1);
    assert!(matches!(closed, Err(Refused::Closed(_))));
}

struct Noop;

impl Deliver for Noop {
    fn deliver(self: Arc<Self>) {}
}

/// Captures of every size and alignment run once, in FIFO order, and
/// jobs handed back by `close` drop their captures exactly once.
#[test]
fn jobs_run_in_order_and_dropped_jobs_release_their_captures() {
    #[repr(align(32))]
    struct Wide(u8);
    let inbox = Inbox::new(CountingWaker::default());
    let order = Arc::new(crate::loom::Mutex::new(Vec::new()));
    let (o1, o2, o3) = (order.clone(), order.clone(), order.clone());
    let big = [1u8; 100];
    let wide = Wide(3);
    assert!(
        inbox
            .push(move || o1.lock().push(0), Location::caller())
            .is_ok()
    );
    assert!(
        inbox
            .push(move || o2.lock().push(big[0]), Location::caller())
            .is_ok()
    );
    assert!(
        inbox
            .push(move || o3.lock().push(wide.0), Location::caller())
            .is_ok()
    );
    assert_eq!(run_all(&inbox), 3);
    assert_eq!(*order.lock(), [0, 1, 3]);
    assert_eq!(Arc::strong_count(&order), 1);

    let held = Arc::new(());
    for pad in [0usize, 64] {
        let h = held.clone();
        let big = vec![0u8; pad];
        assert!(
            inbox
                .push(move || drop((h, big)), Location::caller())
                .is_ok()
        );
    }
    assert_eq!(Arc::strong_count(&held), 3);
    let left = inbox.close();
    assert_eq!(left.len(), 2);
    drop(left);
    assert_eq!(Arc::strong_count(&held), 1);
    // Closed: the closure comes back, captures intact.
    let h = held.clone();
    let back = inbox.push(move || drop(h), Location::caller());
    assert!(back.is_err());
    assert_eq!(Arc::strong_count(&held), 2);
}

/// On the coarse clock the date comes from the kernel's coarse monotonic
/// clock, read by the push: the age is bounded by two readings of that
/// clock taken around the push and the sampling (it is monotonic).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn on_the_coarse_clock_the_age_lies_within_readings_of_that_clock() {
    use std::time::Duration;
    let coarse = || Duration::from_nanos(crate::time::coarse_nanos());
    let inbox = Inbox::with_age_clock(CountingWaker::default(), AgeClock::Coarse);
    let before = coarse();
    assert!(inbox.push(|| (), Location::caller()).is_ok());
    let age = inbox.oldest_age();
    let after = coarse();
    assert!(age <= after - before, "{age:?} > {:?}", after - before);
    // The date is kept: it is not "just queued" forever.
    assert!(inbox.lane().stamp.read().is_some());
    assert_eq!(run_all(&inbox), 1);
    assert_eq!(inbox.oldest_age(), Duration::ZERO);
}

/// On the coarse clock the push that starts a batch dates it under the
/// queue lock: a sampler that takes the lock after the job is queued finds
/// a date, never a claim (which would read as "just queued"), and it lies
/// between readings of that clock taken around the push. Later pushes into
/// the batch leave the date alone.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn on_the_coarse_clock_a_batch_is_dated_under_the_lock_by_its_first_push() {
    use std::time::Duration;
    let coarse = || Duration::from_nanos(crate::time::coarse_nanos());
    let inbox = Inbox::with_age_clock(CountingWaker::default(), AgeClock::Coarse);
    let queue_one = |inbox: &Inbox<CountingWaker>| {
        // The locked part of a push only: whatever date the stamp holds
        // now was written under the lock.
        let first = inbox
            .enqueue(
                inbox.lane(),
                || (),
                Location::caller(),
                usize::MAX,
                |g| Message::Call(InlineFn::new(g)),
            )
            .unwrap_or_else(|_| panic!("open"));
        (first, inbox.lane().stamp.read())
    };
    let before = coarse();
    let (first, date) = queue_one(&inbox);
    let after = coarse();
    assert_eq!(first, 0, "nothing left to date after the lock");
    let date = date.expect("dated under the lock, not claimed");
    assert!(
        before <= date && date <= after,
        "{before:?} {date:?} {after:?}"
    );
    let (_, again) = queue_one(&inbox);
    assert_eq!(again, Some(date), "a later push keeps the batch's date");
    assert_eq!(run_all(&inbox), 2);
    // A custom clock still claims under the lock and dates after it.
    let manual = Inbox::with_clock(
        CountingWaker::default(),
        Arc::new(crate::testing::ManualClock::new()),
    );
    let (first, date) = queue_one(&manual);
    assert_eq!((first, date), (1, None));
}

/// The reactor dates its inbox on the coarse clock only with the real
/// system clock: a custom clock (a manual one in tests) is used as is.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn a_reactor_dates_its_inbox_on_the_coarse_clock_only_with_the_system_clock() {
    let coarse =
        |r: &crate::Reactor| matches!(r.handle().inner.shared.inbox.clock, Some(AgeClock::Coarse));
    assert!(coarse(&crate::Reactor::new().unwrap()));
    let system = crate::Reactor::builder()
        .clock(crate::SystemClock::new())
        .build()
        .unwrap();
    assert!(coarse(&system));
    let manual = crate::Reactor::builder()
        .clock(crate::testing::ManualClock::new())
        .build()
        .unwrap();
    assert!(!coarse(&manual));
}

/// Calls from threads on different CPUs land in different lanes, and the
/// loop runs them in the order they were made, not lane by lane: a call
/// made after another (here on one thread that moved from CPU 1 to CPU 0,
/// so its second call lands in a lane the drain visits first) runs after
/// it. The same holds across threads: the loom model
/// `loom_inbox_lanes_keep_the_order_of_calls_across_threads`.
#[test]
fn calls_in_different_lanes_run_in_the_order_they_were_made() {
    let inbox = Inbox::new(CountingWaker::default());
    let order = Arc::new(crate::loom::Mutex::new(Vec::new()));
    push_recording(&inbox, &order, 0, &[1, 0, 1, 2, 0]);
    assert_eq!(inbox.len(), 5);
    assert_eq!(run_all(&inbox), 5);
    assert_eq!(*order.lock(), [0, 1, 2, 3, 4]);
    // Jobs `close` hands back are in that order too.
    push_recording(&inbox, &order, 10, &[3, 1, 3]);
    for job in inbox.close() {
        job.message.run_for_test();
    }
    assert_eq!(order.lock()[5..], [10, 11, 12]);
    assert_eq!(inbox.len(), 0);
}

/// Each lane dates its own oldest job; the inbox's oldest age is the
/// oldest of them.
#[test]
fn the_oldest_age_is_the_oldest_lanes() {
    use crate::testing::ManualClock;
    use std::time::Duration;
    let ms = Duration::from_millis;
    let clock = ManualClock::new();
    let inbox = Inbox::with_clock(CountingWaker::default(), Arc::new(clock.clone()));
    super::cpu::pretend(Some(1));
    assert!(inbox.push(|| (), Location::caller()).is_ok());
    clock.advance(ms(4));
    super::cpu::pretend(Some(0));
    assert!(inbox.push(|| (), Location::caller()).is_ok());
    clock.advance(ms(1));
    assert_eq!(inbox.oldest_age(), ms(5));
    assert_eq!(run_all(&inbox), 2);
    assert_eq!(inbox.oldest_age(), Duration::ZERO);
}

/// Two threads on two lanes take turns (a channel hands the turn over, so
/// each call happens before the next), while the loop drains as they go:
/// the calls run in the order they were made.
#[test]
fn calls_handed_between_threads_run_in_order_while_the_loop_drains() {
    const CALLS: usize = 2000;
    let inbox = Arc::new(Inbox::new(CountingWaker::default()));
    let ran = Arc::new(crate::loom::Mutex::new(Vec::with_capacity(CALLS)));
    let (to_a, a_rx) = std::sync::mpsc::channel::<usize>();
    let (to_b, b_rx) = std::sync::mpsc::channel::<usize>();
    let spawn =
        |cpu: u32, rx: std::sync::mpsc::Receiver<usize>, next: std::sync::mpsc::Sender<usize>| {
            let (inbox, ran) = (inbox.clone(), ran.clone());
            std::thread::spawn(move || {
                super::cpu::pretend(Some(cpu));
                while let Ok(i) = rx.recv() {
                    let r = ran.clone();
                    assert!(
                        inbox
                            .push(move || r.lock().push(i), Location::caller())
                            .is_ok()
                    );
                    if i + 1 == CALLS || next.send(i + 1).is_err() {
                        break;
                    }
                }
            })
        };
    let a = spawn(0, a_rx, to_b);
    let b = spawn(1, b_rx, to_a.clone());
    to_a.send(0).unwrap();
    // The threads hold the only senders now: the one whose turn never
    // comes again sees its channel close when the other ends.
    drop(to_a);
    let mut done = 0;
    while done < CALLS {
        done += run_all(&inbox);
        std::thread::yield_now();
    }
    a.join().unwrap();
    b.join().unwrap();
    let ran = ran.lock();
    assert!(ran.iter().copied().eq(0..CALLS), "out of order");
}

/// The loop never waits for a lane's lock. A producer holding it (here
/// the test, as a producer preempted mid-push on another CPU would) makes
/// the drain skip that lane: its job is the gap the merge stops at, so
/// nothing after it runs yet and the loop stays awake; the next drain,
/// once the lock is free, runs everything in the order of the calls.
#[test]
fn a_drain_skips_a_lane_whose_lock_a_producer_holds_and_keeps_the_order() {
    let inbox = Arc::new(Inbox::new(CountingWaker::default()));
    let order = Arc::new(crate::loom::Mutex::new(Vec::new()));
    // Numbers 0, 1, 2 in lanes 1, 0, 2.
    push_recording(&inbox, &order, 0, &[1, 0, 2]);
    let held = inbox.lanes[1].queue.lock();
    // The drain runs on a thread of its own: with a blocking lock it would
    // wait for `held` for good, and the test would fail at the timeout
    // below instead of hanging.
    let (done, drained) = std::sync::mpsc::channel();
    let drainer = {
        let inbox = inbox.clone();
        std::thread::spawn(move || done.send(run_all(&inbox)).unwrap())
    };
    let ran = drained
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the drain waited for a lane's lock");
    drainer.join().unwrap();
    assert_eq!(ran, 0, "nothing runs past the gap of the first call");
    assert!(order.lock().is_empty());
    assert_eq!(inbox.len(), 3);
    // Not sleepy: the calls not taken keep the loop awake.
    assert!(!inbox.prepare_to_sleep(&SpinGate::new(MAX_SPIN_PAUSE), || false));
    inbox.awake();
    drop(held);
    assert_eq!(run_all(&inbox), 3);
    assert_eq!(*order.lock(), [0, 1, 2]);
    assert_eq!(inbox.len(), 0);
}

/// A drain that finds every job in one lane, in one run from the next
/// number on (one producer: every call into an idle loop), takes that
/// lane's buffer whole: the batch becomes the lane's buffer and the lane
/// gets the batch's (emptied) one, as the single queue's swap did. No job
/// is moved one by one, and no buffer of the loop's is touched.
#[test]
fn a_drain_of_one_lane_with_every_job_swaps_its_buffer_with_the_batch() {
    let inbox = Inbox::new(CountingWaker::default());
    let order = Arc::new(crate::loom::Mutex::new(Vec::new()));
    push_recording(&inbox, &order, 0, &[3, 3, 3]);
    let lane_buffer = inbox.lanes[3]
        .queue
        .lock()
        .jobs
        .as_ref()
        .unwrap()
        .as_slices()
        .0
        .as_ptr();
    let mut batch = VecDeque::with_capacity(64);
    let batch_capacity = batch.capacity();
    inbox.drain_into(&mut batch);
    assert_eq!(
        batch.as_slices().0.as_ptr(),
        lane_buffer,
        "the lane's buffer"
    );
    let queue = inbox.lanes[3].queue.lock();
    let jobs = queue.jobs.as_ref().unwrap();
    assert_eq!(jobs.capacity(), batch_capacity, "the batch's buffer");
    drop(queue);
    assert_eq!(inbox.len(), 0);
    for job in batch {
        job.message.run_for_test();
    }
    assert_eq!(*order.lock(), [0, 1, 2]);
}

/// While the loop holds jobs after a gap, a drain merges: a lane that
/// holds a run from the next number on is not simply taken, as the jobs
/// held come into the order too.
#[test]
fn jobs_held_after_a_gap_run_in_order_with_a_lane_taken_later() {
    let inbox = Arc::new(Inbox::new(CountingWaker::default()));
    let order = Arc::new(crate::loom::Mutex::new(Vec::new()));
    // 0 in lane 1 (held by a producer), 1 in lane 0: 1 is held after the gap.
    push_recording(&inbox, &order, 0, &[1, 0]);
    let held = inbox.lanes[1].queue.lock();
    let (done, drained) = std::sync::mpsc::channel();
    let drainer = {
        let inbox = inbox.clone();
        std::thread::spawn(move || done.send(run_all(&inbox)).unwrap())
    };
    assert_eq!(drained.recv().unwrap(), 0);
    drainer.join().unwrap();
    drop(held);
    // 2 and 3 join 0 in lane 1: that lane now holds 0, 2, 3 (a gap at 1,
    // which the loop holds).
    push_recording(&inbox, &order, 2, &[1, 1]);
    assert_eq!(run_all(&inbox), 4);
    assert_eq!(*order.lock(), [0, 1, 2, 3]);
    // And the next call, with nothing held, takes its lane whole.
    push_recording(&inbox, &order, 4, &[1]);
    assert_eq!(run_all(&inbox), 1);
    assert_eq!(*order.lock(), [0, 1, 2, 3, 4]);
    assert_eq!(inbox.len(), 0);
}
