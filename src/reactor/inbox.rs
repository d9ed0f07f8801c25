//! The cross-thread inbox: the queue of jobs for the loop, and its
//! coalesced wake protocol (the states and the spin live in [`wake`]).
//!
//! Producers (any thread) push a job under a short mutex, then call
//! [`WakeState::notify`]: only the producer that finds the loop about to
//! sleep writes the waker (one syscall), so producers into a busy loop make
//! one plain load and no syscall. Before it blocks, the loop asks
//! [`Inbox::prepare_to_sleep`], which marks the loop sleepy and then
//! re-checks the queue under its lock: a push after the re-check sees the
//! mark and wakes the loop; a push before it is seen by the re-check. This
//! is the protocol modelled under loom below.
//!
//! The loop never waits on a producer: the queue is a `Mutex<VecDeque>` that
//! the loop swaps out whole (one short critical section per turn), never a
//! slot-based queue whose consumer may spin on a half-written slot.
//!
//! The age of the oldest waiting call (`ReactorStatistics::inbox_oldest_age`)
//! costs one clock read per batch, not per call: the push that finds the
//! queue empty stamps it with the reactor's clock, under the lock, and the
//! loop's drain takes the whole queue, so the stamp always belongs to the
//! oldest job queued (FIFO). The stamp lives in the locked part, beside the
//! jobs it describes; it adds no atomic and no step to the wake protocol
//! (the loom models below cover that protocol unchanged; the stamp needs
//! no model of its own, since every read and write of it holds the lock).
//! A sampler reads it under the same lock. (So the clock must not call
//! back into the inbox: every clock in the crate only reads time.)
//!
//! Invariants:
//! - `queue` is `None` once closed; a push then fails and returns the job.
//! - While the queue holds jobs, `oldest` is the time its first job was
//!   pushed (when the inbox has a clock).
//! - Every job pushed before `close` is handed to the loop by a drain or by
//!   `close` itself.

use std::collections::VecDeque;
use std::panic::Location;

use std::sync::Arc;
use std::time::Duration;

use super::inline_call::{self, InlineCall};
use crate::loom::{Mutex, SpinGate};
use crate::time::Clock;

mod wake;

use wake::WakeState;
pub(crate) use wake::{MAX_SPIN_PAUSE, MISS_AFTER_SLEEP, Wake};

/// A message that is its own shared allocation: delivering it on the loop
/// needs no box of its own (pool completions ride in the job's state).
pub(crate) trait Deliver: Send + Sync {
    /// Runs on the loop thread.
    fn deliver(self: std::sync::Arc<Self>);
}

/// What a job carries: a closure (in place when small), or an `Arc`'d
/// message.
pub(crate) enum Message {
    Call(InlineCall),
    Deliver(std::sync::Arc<dyn Deliver>),
}

/// A message queued for the loop, with where it was queued from.
pub(crate) struct Job {
    pub(crate) message: Message,
    pub(crate) location: &'static Location<'static>,
}

/// Why [`Inbox::push_within`] did not queue a job; either way it is handed
/// back.
pub(crate) enum Refused<F> {
    /// `capacity` jobs are queued.
    Full(F),
    /// The inbox is closed.
    Closed(F),
}

impl<F> Refused<F> {
    pub(crate) fn into_inner(self) -> F {
        match self {
            Refused::Full(f) | Refused::Closed(f) => f,
        }
    }

    fn map<G>(self, f: impl FnOnce(F) -> G) -> Refused<G> {
        match self {
            Refused::Full(x) => Refused::Full(f(x)),
            Refused::Closed(x) => Refused::Closed(f(x)),
        }
    }
}

pub(crate) struct Inbox<W> {
    queue: Mutex<Queue>,
    wake: WakeState,
    waker: W,
    /// Stamps the oldest waiting job; `None`: ages are not kept.
    clock: Option<Arc<dyn Clock>>,
}

/// The guarded part: `jobs` is `None` once closed; `pushes` is counted under
/// the lock so producers share no extra cache line for statistics.
#[derive(Default)]
struct Queue {
    jobs: Option<VecDeque<Job>>,
    pushes: u64,
    /// When the first job now queued was pushed (meaningless when empty).
    oldest: Duration,
}

impl Queue {
    /// The open queue, ready for one more job: stamped if it is empty, the
    /// push counted. `None` when closed.
    #[inline]
    fn slot(&mut self, clock: Option<&Arc<dyn Clock>>) -> Option<&mut VecDeque<Job>> {
        let q = self.jobs.as_mut()?;
        if q.is_empty() {
            if let Some(clock) = clock {
                self.oldest = clock.now();
            }
        }
        self.pushes += 1;
        Some(q)
    }
}

impl<W: Wake> Inbox<W> {
    /// An inbox that keeps no ages (`oldest_age` is zero).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn new(waker: W) -> Self {
        Self::build(waker, None)
    }

    /// An inbox that stamps its oldest waiting job with `clock`.
    pub(crate) fn with_clock(waker: W, clock: Arc<dyn Clock>) -> Self {
        Self::build(waker, Some(clock))
    }

    fn build(waker: W, clock: Option<Arc<dyn Clock>>) -> Self {
        Inbox {
            queue: Mutex::new(Queue {
                jobs: Some(VecDeque::new()),
                pushes: 0,
                oldest: Duration::ZERO,
            }),
            wake: WakeState::new(),
            waker,
            clock,
        }
    }

    /// Queues `f`; gives it back if the inbox is closed. A closure of up to
    /// [`inline_call::INLINE_BYTES`] is stored in the queue slot itself (no
    /// allocation); a larger one is boxed, outside the lock.
    pub(crate) fn push<F: FnOnce() + Send + 'static>(
        &self,
        f: F,
        location: &'static Location<'static>,
    ) -> Result<(), F> {
        self.push_within(f, location, usize::MAX)
            .map_err(Refused::into_inner)
    }

    /// [`push`](Self::push) unless `capacity` jobs are already queued (the
    /// check and the push under one lock, so the bound is exact).
    pub(crate) fn push_within<F: FnOnce() + Send + 'static>(
        &self,
        f: F,
        location: &'static Location<'static>,
        capacity: usize,
    ) -> Result<(), Refused<F>> {
        if inline_call::fits::<F>() {
            self.push_call(f, location, capacity)
        } else {
            self.push_call(Box::new(f), location, capacity)
                .map_err(|refused| refused.map(|boxed| *boxed))
        }
    }

    /// `push_within` for a closure that is stored in place.
    fn push_call<G: FnOnce() + Send + 'static>(
        &self,
        g: G,
        location: &'static Location<'static>,
        capacity: usize,
    ) -> Result<(), Refused<G>> {
        {
            let mut queue = self.queue.lock();
            if queue.jobs.as_ref().is_some_and(|q| q.len() >= capacity) {
                return Err(Refused::Full(g));
            }
            match queue.slot(self.clock.as_ref()) {
                Some(q) => q.push_back(Job {
                    message: Message::Call(InlineCall::new(g)),
                    location,
                }),
                None => return Err(Refused::Closed(g)),
            }
        }
        self.notify();
        Ok(())
    }

    /// Queues an `Arc`'d message; gives it back if the inbox is closed.
    pub(crate) fn push_deliver(
        &self,
        message: std::sync::Arc<dyn Deliver>,
        location: &'static Location<'static>,
    ) -> Result<(), std::sync::Arc<dyn Deliver>> {
        {
            let mut queue = self.queue.lock();
            match queue.slot(self.clock.as_ref()) {
                Some(q) => q.push_back(Job {
                    message: Message::Deliver(message),
                    location,
                }),
                None => return Err(message),
            }
        }
        self.notify();
        Ok(())
    }

    /// Wakes the loop unless a wake is already pending or the loop is awake.
    pub(crate) fn notify(&self) {
        self.wake.notify(&self.waker);
    }

    /// Loop: moves every queued job into `into` (which must be empty), keeping
    /// both buffers' capacity.
    pub(crate) fn drain_into(&self, into: &mut VecDeque<Job>) {
        debug_assert!(into.is_empty());
        let mut queue = self.queue.lock();
        if let Some(q) = queue.jobs.as_mut() {
            std::mem::swap(q, into);
        }
    }

    /// Loop, before blocking: reports whether it may block (`false`: work
    /// arrived, or `other_work` says there is some; the loop stays awake).
    /// See [`WakeState::prepare_to_sleep`].
    pub(crate) fn prepare_to_sleep(
        &self,
        gate: &SpinGate,
        other_work: impl FnOnce() -> bool,
    ) -> bool {
        self.wake.prepare_to_sleep(gate, || {
            self.queue
                .lock()
                .jobs
                .as_ref()
                .is_some_and(|q| !q.is_empty())
                || other_work()
        })
    }

    /// Loop, after waking: marks the loop awake so producers skip the waker.
    pub(crate) fn awake(&self) {
        self.wake.awake();
    }

    /// Closes the inbox; later pushes fail. Returns the jobs still queued.
    pub(crate) fn close(&self) -> VecDeque<Job> {
        self.queue.lock().jobs.take().unwrap_or_default()
    }

    pub(crate) fn pushes(&self) -> u64 {
        self.queue.lock().pushes
    }

    /// Jobs queued and not yet taken by the loop (zero once closed).
    pub(crate) fn len(&self) -> usize {
        self.queue.lock().jobs.as_ref().map_or(0, VecDeque::len)
    }

    /// How long the oldest queued job has waited (zero when empty, closed,
    /// or kept without a clock).
    pub(crate) fn oldest_age(&self) -> Duration {
        let Some(clock) = &self.clock else {
            return Duration::ZERO;
        };
        let stamp = {
            let queue = self.queue.lock();
            match &queue.jobs {
                Some(q) if !q.is_empty() => queue.oldest,
                _ => return Duration::ZERO,
            }
        };
        // Read after the stamp, so never before it.
        clock.now().saturating_sub(stamp)
    }

    pub(crate) fn wakes(&self) -> u64 {
        self.wake.wakes()
    }

    #[cfg(all(test, loom))]
    pub(crate) fn waker(&self) -> &W {
        &self.waker
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
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
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The inbox + wake protocol under loom, with a condvar-backed waker in
    //! place of the eventfd: no lost call, no lost wakeup, no sleep while
    //! work is queued (a sleep with work queued and no wake coming would be
    //! reported by loom as a deadlock).

    use super::*;
    use crate::loom::atomic::Ordering;
    use crate::loom::{Arc, Condvar, thread};
    use ::loom::sync::atomic::{AtomicBool, AtomicUsize};

    #[derive(Default)]
    struct CondvarWaker {
        woken: Mutex<bool>,
        cv: Condvar,
    }

    impl Wake for CondvarWaker {
        fn wake(&self) {
            *self.woken.lock() = true;
            self.cv.notify_one();
        }
    }

    impl CondvarWaker {
        fn sleep(&self) {
            let mut woken = self.woken.lock();
            while !*woken {
                woken = self.cv.wait(woken);
            }
            *woken = false;
        }
    }

    /// A gate whose next spins are paused (the loop goes straight from
    /// `SPINNING` to the re-check).
    fn paused_gate() -> SpinGate {
        let gate = SpinGate::new(MAX_SPIN_PAUSE);
        for _ in 0..8 {
            gate.spun(false);
        }
        gate
    }

    fn run_model(producers: usize, per_producer: usize) {
        run_model_gated(producers, per_producer, || SpinGate::new(MAX_SPIN_PAUSE));
    }

    fn run_model_gated(producers: usize, per_producer: usize, gate: fn() -> SpinGate) {
        ::loom::model(move || {
            let gate = gate();
            let inbox = Arc::new(Inbox::new(CondvarWaker::default()));
            let ran = Arc::new(AtomicUsize::new(0));
            let handles: Vec<_> = (0..producers)
                .map(|_| {
                    let inbox = inbox.clone();
                    let ran = ran.clone();
                    thread::spawn(move || {
                        for _ in 0..per_producer {
                            let ran = ran.clone();
                            inbox
                                .push(
                                    move || {
                                        ran.fetch_add(1, Ordering::SeqCst);
                                    },
                                    Location::caller(),
                                )
                                .unwrap_or_else(|_| panic!("inbox closed"));
                        }
                    })
                })
                .collect();
            // The loop: drain, run, and sleep only when the protocol allows.
            let total = producers * per_producer;
            let mut batch = VecDeque::new();
            let mut done = 0;
            while done < total {
                inbox.drain_into(&mut batch);
                for job in batch.drain(..) {
                    match job.message {
                        Message::Call(f) => f.call(),
                        Message::Deliver(d) => d.deliver(),
                    }
                    done += 1;
                }
                if done < total && inbox.prepare_to_sleep(&gate, || false) {
                    inbox.waker().sleep();
                    inbox.awake();
                }
            }
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(ran.load(Ordering::SeqCst), total);
            assert!(inbox.close().is_empty());
        });
    }

    #[test]
    fn loom_inbox_one_producer_two_calls() {
        run_model(1, 2);
    }

    #[test]
    fn loom_inbox_two_producers() {
        run_model(2, 1);
    }

    /// The same with the loop's spin paused by its gate.
    #[test]
    fn loom_inbox_paused_spin_one_producer_two_calls() {
        run_model_gated(1, 2, paused_gate);
    }

    /// A wake with no job (a local task's waker, which marks the task under
    /// the `ready` mutex and then notifies): the loop sees it through
    /// `other_work`, whether it lands before the spin, during it, or after
    /// the loop decided to sleep.
    #[test]
    fn loom_inbox_notify_without_push_wakes_the_loop() {
        ::loom::model(|| {
            let inbox = Arc::new(Inbox::new(CondvarWaker::default()));
            let ready = Arc::new(Mutex::new(false));
            let (i2, r2) = (inbox.clone(), ready.clone());
            let t = thread::spawn(move || {
                *r2.lock() = true;
                i2.notify();
            });
            inbox.awake();
            let gate = SpinGate::new(MAX_SPIN_PAUSE);
            while !*ready.lock() {
                if inbox.prepare_to_sleep(&gate, || *ready.lock()) {
                    inbox.waker().sleep();
                    inbox.awake();
                }
            }
            t.join().unwrap();
        });
    }

    /// A flag set outside the queue (the reactor's stop request: an atomic
    /// store, then `notify`) while the loop is awake makes no wake, so the
    /// loop must re-check it in `other_work`, after the inbox is marked
    /// sleepy. Checking it only before `prepare_to_sleep` (as the reactor
    /// once did) deadlocks in this model.
    #[test]
    fn loom_inbox_flag_set_while_awake_is_seen_before_sleeping() {
        ::loom::model(|| {
            let inbox = Arc::new(Inbox::new(CondvarWaker::default()));
            let stop = Arc::new(AtomicBool::new(false));
            let (i2, s2) = (inbox.clone(), stop.clone());
            inbox.awake();
            // Read-modify-writes on both sides, as in the reactor.
            let t = thread::spawn(move || {
                s2.swap(true, Ordering::SeqCst);
                i2.notify();
            });
            let gate = SpinGate::new(MAX_SPIN_PAUSE);
            while !stop.load(Ordering::SeqCst) {
                if inbox.prepare_to_sleep(&gate, || stop.fetch_or(false, Ordering::SeqCst)) {
                    inbox.waker().sleep();
                    inbox.awake();
                }
            }
            t.join().unwrap();
        });
    }

    #[test]
    fn loom_inbox_push_after_close_hands_job_back() {
        ::loom::model(|| {
            let inbox = Arc::new(Inbox::new(CondvarWaker::default()));
            let i2 = inbox.clone();
            let t = thread::spawn(move || i2.push(|| (), Location::caller()).is_ok());
            let left = inbox.close();
            let accepted = t.join().unwrap();
            // Either the push got in before close (and close returned it) or
            // it was refused: never lost.
            assert_eq!(accepted, left.len() == 1);
        });
    }
}
