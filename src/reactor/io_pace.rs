//! When a busy loop looks for I/O: the poll-pacing rule of step 3 of a
//! turn (see the turn order in the [module docs](super)).
//!
//! # Why
//!
//! A turn that did work (ran calls, timers or tasks) must not block in its
//! I/O step: more work may be on its way. It used to make one non-blocking
//! `epoll_wait` every such turn. Under load those turns are short (a few
//! µs, a handful of events each), and most of those polls find nothing:
//! in weft-kv at 90/10 with 64 connections, 82% of the loop's polls were
//! non-blocking and 64% of all its polls returned no event (perf, base
//! 783d440). Tokio polls its driver only every 61 scheduler ticks or when
//! it runs out of tasks.
//!
//! # The rule
//!
//! - After a **poll that reported no I/O event** (none for an I/O handler:
//!   the waker's and the precise timer's carry no I/O), the next busy turns
//!   skip their poll: at most [`SKIP_TURNS`] turns in a row, and none once
//!   [`MAX_GAP`] has passed (on the reactor's clock, read at each turn's
//!   start) since the last poll looked: the start of its turn, or for a
//!   blocking poll the reading taken as it returned.
//! - A poll that reported I/O ends the skipping: while I/O flows, every busy
//!   turn polls, as before.
//! - A loop that woke from a blocking poll for a timer or a call (the waker)
//!   has just looked at its I/O: the turn that runs that work skips the
//!   non-blocking poll it used to make (issue 8's idle rows: one
//!   `epoll_wait` per wake instead of two), and such a skip owes no poll
//!   (below): the loop was idle, so readiness is not likely to be waiting,
//!   and the next idle turn's blocking poll returns at once if it is.
//! - Only a turn with work of its own may skip: calls ran, timers fired,
//!   or a task is ready for its task pass. A turn whose only claim to work
//!   is the previous turn's task pass, with no task ready now, has nothing
//!   to do: it is idle and may block at once (a skip, or a non-blocking
//!   poll first, would only add a turn and a poll on the loop's way to
//!   sleep: issue 8's idle rows).
//! - A turn with nothing to do always polls. Right after a skip that
//!   followed a non-blocking poll (a busy loop) it polls without blocking
//!   (the readiness skipped is likely there, and the way to sleep costs
//!   more: the inbox's spin, a `timerfd` arm); otherwise
//!   it may block, exactly as before (`Inner::poll_timeout`: the inbox's
//!   `prepare_to_sleep`, then `awake` after the poll). A skipped poll
//!   touches neither: the inbox stays awake, since the loop is. So a loop
//!   with nothing to do blocks at the latest one turn after a skip, and
//!   never makes more polls than it did before the rule.
//!
//! # Invariants (bounds)
//!
//! - While the loop is kept busy, readiness that arrives is dispatched
//!   within `SKIP_TURNS + 1` turns of the last poll, and no later than the
//!   first turn that starts `MAX_GAP` after it; an idle turn polls at once.
//!   mio is edge-triggered: a skipped poll loses nothing, the edge waits
//!   in epoll for the next one.
//! - Timers are never delayed: they run in step 2 of every turn, and a
//!   skipped poll never blocks.
//! - The I/O epoch (the co-operative budget's turn marker, `net/coop.rs`)
//!   still moves on a turn that skips its poll, so a task that spent its
//!   budget gets a fresh one next turn, as with a poll.
//! - Costs no clock read: the turn's start time is read anyway (the loop
//!   lag).

use std::cell::Cell;
use std::time::Duration;

/// Busy turns that may skip their poll in a row after one that reported no I/O.
pub(super) const SKIP_TURNS: u32 = 3;

/// The longest a busy loop goes without polling (from the start of the turn
/// that polled to the start of a turn), unless a single turn's own work is
/// longer.
pub(super) const MAX_GAP: Duration = Duration::from_micros(100);

/// The pacing state (a field of the reactor's `Inner`, loop thread only).
#[derive(Debug, Default)]
pub(super) struct IoPace {
    /// Busy turns that may still skip their poll.
    skips_left: Cell<u32>,
    /// When the last poll looked: the start of its turn, or for a blocking
    /// poll the reading taken as it returned.
    last_poll: Cell<Duration>,
    /// The last turn skipped its poll (and none polled since).
    owed: Cell<bool>,
    /// The last poll blocked: skips after it owe no poll.
    blocked: Cell<bool>,
}

impl IoPace {
    /// Whether the busy turn that started at `now` skips its non-blocking
    /// poll (and, if so, counts the skip).
    #[inline]
    pub(super) fn skip(&self, now: Duration) -> bool {
        let left = self.skips_left.get();
        if left == 0 {
            return false;
        }
        if now.saturating_sub(self.last_poll.get()) >= MAX_GAP {
            self.skips_left.set(0);
            return false;
        }
        self.skips_left.set(left - 1);
        self.owed.set(!self.blocked.get());
        true
    }

    /// Whether a turn skipped its poll since the last poll: then a turn
    /// with nothing to do polls without blocking first (it may find the
    /// skipped readiness) rather than sleep at once.
    #[inline]
    pub(super) fn owed(&self) -> bool {
        self.owed.get()
    }

    /// After a poll that looked at `at` (a non-blocking poll: the start of
    /// its turn; a blocking one: the reading taken as it returned):
    /// `nonblocking` if its timeout was zero, `no_io` if it reported no
    /// event for an I/O handler (the waker's and the precise timer's carry
    /// no I/O).
    #[inline]
    pub(super) fn polled(&self, at: Duration, nonblocking: bool, no_io: bool) {
        self.last_poll.set(at);
        self.owed.set(false);
        self.blocked.set(!nonblocking);
        self.skips_left.set(if no_io { SKIP_TURNS } else { 0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::from_secs(1);

    #[test]
    fn an_empty_nonblocking_poll_lets_the_next_busy_turns_skip_up_to_the_bound() {
        let pace = IoPace::default();
        assert!(!pace.skip(T0), "nothing polled yet: poll");
        pace.polled(T0, true, true);
        for i in 0..SKIP_TURNS {
            assert!(pace.skip(T0), "turn {i} after the empty poll skips");
        }
        assert!(!pace.skip(T0), "then one polls");
    }

    #[test]
    fn a_skip_is_owed_until_the_next_poll() {
        let pace = IoPace::default();
        pace.polled(T0, true, true);
        assert!(!pace.owed());
        assert!(pace.skip(T0));
        assert!(pace.owed());
        pace.polled(T0, true, true);
        assert!(!pace.owed());
    }

    #[test]
    fn a_poll_that_reported_io_ends_the_skipping() {
        let pace = IoPace::default();
        pace.polled(T0, true, false);
        assert!(!pace.skip(T0));
        pace.polled(T0, false, false);
        assert!(!pace.skip(T0), "blocking or not");
        pace.polled(T0, true, true);
        assert!(pace.skip(T0));
        pace.polled(T0, true, false);
        assert!(!pace.skip(T0));
    }

    #[test]
    fn a_blocking_poll_with_no_io_lets_busy_turns_skip_and_the_skips_owe_nothing() {
        let pace = IoPace::default();
        // Woken for a timer or a call: the wait returned no I/O event.
        pace.polled(T0, false, true);
        assert!(pace.skip(T0), "the turn that runs the work skips its poll");
        assert!(!pace.owed(), "and the loop may block next turn");
        // After a non-blocking poll the same skip is owed.
        pace.polled(T0, true, true);
        assert!(pace.skip(T0));
        assert!(pace.owed());
    }

    #[test]
    fn no_turn_skips_once_the_gap_since_the_last_poll_is_reached() {
        let pace = IoPace::default();
        pace.polled(T0, true, true);
        assert!(pace.skip(T0 + MAX_GAP - Duration::from_nanos(1)));
        assert!(!pace.skip(T0 + MAX_GAP));
        // And the turn budget is gone with it: the next turn polls too.
        assert!(!pace.skip(T0));
    }

    // The rule in the loop: a pipe registered with a reactor on a manual
    // clock (so only the turn bound acts, unless the test moves the clock).

    use std::future::Future;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::pin::Pin;
    use std::rc::Rc;
    use std::task::{Context, Poll};

    use mio::Interest;
    use mio::unix::pipe;

    use super::super::io_registry::{Ready, Registration};
    use crate::Reactor;
    use crate::testing::ManualClock;

    struct Rig {
        reactor: Reactor,
        clock: ManualClock,
        tx: pipe::Sender,
        _rx: pipe::Receiver,
        _reg: Registration,
        hits: Rc<Cell<u32>>,
    }

    fn rig() -> Rig {
        let clock = ManualClock::new();
        let reactor = Reactor::builder()
            .clock(clock.clone())
            .handle_signals(false)
            .build()
            .unwrap();
        let (tx, mut rx) = pipe::new().unwrap();
        let hits = Rc::new(Cell::new(0));
        let h = hits.clone();
        let reg = reactor
            .handle()
            .register_io(
                &mut rx,
                Interest::READABLE,
                Rc::new(move |_: Ready| h.set(h.get() + 1)),
            )
            .unwrap();
        Rig {
            reactor,
            clock,
            tx,
            _rx: rx,
            _reg: reg,
            hits,
        }
    }

    /// A local task that is ready again every turn, forever.
    struct Spin;

    impl Future for Spin {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// A call from the loop's remote that queues itself again when it runs.
    fn requeue(remote: crate::Remote) {
        let again = remote.clone();
        remote.call_from_thread(move || requeue(again)).unwrap();
    }

    /// Queues a call that queues the next, `left` of them in all.
    fn countdown(remote: crate::Remote, left: std::sync::Arc<std::sync::atomic::AtomicU32>) {
        use std::sync::atomic::Ordering;
        let again = remote.clone();
        remote
            .call_from_thread(move || {
                if left.fetch_sub(1, Ordering::Relaxed) > 1 {
                    countdown(again, left);
                }
            })
            .unwrap();
    }

    #[derive(Clone, Copy)]
    enum Busy {
        Task,
        Calls,
    }

    impl Rig {
        fn keep_busy(&self, busy: Busy) {
            match busy {
                Busy::Task => drop(self.reactor.spawn_local(Spin)),
                Busy::Calls => requeue(self.reactor.remote()),
            }
        }

        fn turn(&self) {
            self.reactor.iterate(Some(Duration::ZERO));
        }

        fn skipped(&self) -> u64 {
            self.reactor.statistics().polls_skipped
        }

        /// Turns until the first skip: the turn before it polled and found
        /// nothing, and `SKIP_TURNS - 1` skips are left.
        fn turn_until_a_skip(&self) {
            let before = self.skipped();
            for _ in 0..10 {
                self.turn();
                if self.skipped() > before {
                    return;
                }
            }
            panic!("a busy loop with no I/O never skipped a poll");
        }
    }

    fn a_ready_pipe_is_dispatched_within_the_turn_bound(busy: Busy) {
        let mut rig = rig();
        rig.keep_busy(busy);
        rig.turn_until_a_skip();
        rig.tx.write_all(b"x").unwrap();
        let mut turns = 0;
        while rig.hits.get() == 0 {
            turns += 1;
            assert!(
                turns <= SKIP_TURNS,
                "not dispatched within {SKIP_TURNS} turns of the readiness"
            );
            rig.turn();
        }
        // The skips left after the first one, then the poll's turn.
        assert_eq!(turns, SKIP_TURNS, "the skips were taken, then it polled");
        assert_eq!(rig.skipped(), u64::from(SKIP_TURNS));
    }

    #[test]
    fn a_loop_kept_busy_by_a_task_dispatches_a_ready_pipe_within_the_turn_bound() {
        a_ready_pipe_is_dispatched_within_the_turn_bound(Busy::Task);
    }

    #[test]
    fn a_loop_kept_busy_by_calls_dispatches_a_ready_pipe_within_the_turn_bound() {
        a_ready_pipe_is_dispatched_within_the_turn_bound(Busy::Calls);
    }

    #[test]
    fn a_turn_whose_only_work_was_the_last_task_pass_polls() {
        let mut rig = rig();
        // Turn 1 polls without blocking (a task is ready) and finds
        // nothing, so busy turns may skip; then it runs the task, which
        // ends at once.
        drop(rig.reactor.spawn_local(async {}));
        rig.turn();
        assert_eq!(rig.reactor.statistics().tasks_polled, 1);
        let pace = &rig.reactor.handle().inner.io_pace;
        assert_eq!(pace.skips_left.get(), SKIP_TURNS);
        // Turn 2 has nothing to run (the task pass before it polled, but no
        // task is ready): it is idle, so it polls (it would block, up to its
        // wait, if nothing were ready), the pipe is dispatched in it, and the
        // loop owes no poll (its next idle turn may block at once).
        rig.tx.write_all(b"x").unwrap();
        rig.turn();
        assert_eq!(rig.hits.get(), 1, "turn 2 polled");
        assert_eq!(rig.skipped(), 0);
        assert!(!rig.reactor.handle().inner.io_pace.owed());
    }

    #[test]
    fn the_turn_after_a_wait_that_returned_no_io_skips_its_poll_and_owes_none() {
        let mut rig = rig();
        // An idle turn waits (up to 1 ms here) and no I/O comes.
        rig.reactor.iterate(Some(Duration::from_millis(1)));
        assert_eq!(rig.skipped(), 0);
        // Then work: the turn that runs it looked at I/O as the wait
        // returned (the manual clock has not moved), so it skips its
        // non-blocking poll (it used to make one), and the loop owes none.
        rig.reactor.remote().call_from_thread(|| ()).unwrap();
        rig.turn();
        assert_eq!(rig.reactor.statistics().calls_run, 1);
        assert_eq!(rig.skipped(), 1);
        assert!(!rig.reactor.handle().inner.io_pace.owed());
        // Readiness that came meanwhile waits at most for the next poll.
        rig.tx.write_all(b"x").unwrap();
        rig.turn();
        assert_eq!(rig.hits.get(), 1, "the idle turn polled");
    }

    #[test]
    fn a_turn_that_skips_its_poll_still_moves_the_io_epoch() {
        let rig = rig();
        rig.keep_busy(Busy::Task);
        rig.turn_until_a_skip();
        let epoch = super::super::io_epoch();
        let skipped = rig.skipped();
        rig.turn();
        assert_eq!(rig.skipped(), skipped + 1, "this turn skipped too");
        assert_ne!(super::super::io_epoch(), epoch, "so the I/O budget resets");
    }

    #[test]
    fn a_busy_loop_polls_once_the_gap_is_reached_whatever_skips_are_left() {
        let mut rig = rig();
        rig.keep_busy(Busy::Task);
        rig.turn_until_a_skip();
        rig.tx.write_all(b"x").unwrap();
        rig.clock.advance(MAX_GAP);
        rig.turn();
        assert_eq!(rig.hits.get(), 1);
        assert_eq!(rig.skipped(), 1);
    }

    #[test]
    fn a_loop_with_nothing_to_do_polls_and_then_sleeps_until_io() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};

        let mut rig = rig();
        // Busy by calls, then not: the last call queues no other.
        let left = Arc::new(AtomicU32::new(5));
        countdown(rig.reactor.remote(), left.clone());
        rig.turn_until_a_skip();
        while left.load(Ordering::Relaxed) > 0 {
            rig.turn();
        }
        // Skips may be left (or one owed); a turn with nothing to do polls
        // all the same, and never skips.
        let skipped = rig.skipped();
        rig.tx.write_all(b"x").unwrap();
        rig.turn();
        assert_eq!(rig.hits.get(), 1, "the idle turn polled");
        assert!(!rig.reactor.handle().inner.io_pace.owed());
        // Then the next one with nothing to do blocks until the writer
        // thread's byte arrives: `iterate(None)` runs exactly one turn, and
        // only its poll can dispatch the pipe in it.
        let mut tx = std::fs::File::from(rig.tx.as_fd().try_clone_to_owned().unwrap());
        let writer = std::thread::spawn(move || tx.write_all(b"x").unwrap());
        rig.reactor.iterate(None);
        writer.join().unwrap();
        assert_eq!(rig.hits.get(), 2);
        assert_eq!(rig.skipped(), skipped);
    }

    #[test]
    fn a_turn_with_nothing_to_do_right_after_a_skip_polls_without_blocking() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};

        let rig = rig();
        // A chain of calls, each queueing the next: the turn that runs the
        // last one skips its poll, and the one after has nothing to do.
        let left = Arc::new(AtomicU32::new(3));
        countdown(rig.reactor.remote(), left.clone());
        rig.turn_until_a_skip();
        while left.load(Ordering::Relaxed) > 0 {
            rig.turn();
        }
        assert!(rig.reactor.handle().inner.io_pace.owed());
        // Nothing is ready and no other thread will act: a blocking poll
        // would wait out the 5 s here.
        rig.reactor.iterate(Some(Duration::from_secs(5)));
        let pace = &rig.reactor.handle().inner.io_pace;
        assert!(!pace.owed());
        assert!(!pace.blocked.get(), "it did not block");
        assert_eq!(pace.skips_left.get(), SKIP_TURNS);
        assert_eq!(rig.hits.get(), 0);
    }
}
