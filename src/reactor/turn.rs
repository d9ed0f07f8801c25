//! One turn of the loop (see the turn order in the [module docs](super)),
//! and the panic guard every callback runs under.
//!
//! Invariants:
//! - The calls of a turn are popped from `Inner::batch` one at a time, so a
//!   panic that propagates ([`PanicPolicy::Propagate`]) leaves the rest of
//!   the batch for the next turn; likewise timers (still in the heap) and
//!   local tasks (still in the task batch). Nothing is lost.
//! - The loop blocks in `poll` only after a turn that found nothing to do,
//!   and only after the inbox's `prepare_to_sleep` says no call and no task
//!   wake slipped in (the wake protocol in `inbox.rs`).
//! - A turn that did work never blocks, and may skip its poll under the
//!   pacing rule of `io_pace.rs` (bounded in turns and time); a turn with
//!   nothing to do always polls. The task pass of the turn before counts as
//!   work only if it left a task ready: otherwise the loop may block right
//!   after it, one turn and one `epoll_wait` sooner than a non-blocking
//!   poll first would.
//! - I/O readiness is dispatched by [`Inner::dispatch_events`], a function
//!   of its own so the I/O registry hooks in there (contract C2).
//! - Each turn records its work in the turn histogram (the loop lag): the
//!   clock is read when the turn starts and when it ends and, around the
//!   stretch where the loop may go idle (the spin before sleeping and the
//!   blocking poll), before and after it, so the wait is left out. A turn
//!   with work costs two clock reads, an idle one four; time between turns
//!   (a caller's code between two `iterate`s) belongs to no turn.
//! - Readings are reused where nothing ran since (`Inner::reuse_readings`:
//!   the system clock, diagnostics off): the timers take the turn's start
//!   reading when no call ran, the idle pause takes it too, a turn that
//!   ran nothing after its wait ends with the reading taken as the wait
//!   ended, and in `run`/`run_until_complete` a turn starts with the
//!   reading its predecessor ended with. An idle turn of the run loop then
//!   reads the clock twice (how long to sleep, and after the wait) and a
//!   turn with work once or twice, as many as the timers alone used to. A
//!   clock that a waker moves (a `ManualClock`) is read afresh after the
//!   inbox drain, which may have taken the move's wake.

use std::any::Any;
use std::io;
use std::panic::{AssertUnwindSafe, Location, catch_unwind, resume_unwind};
use std::time::Duration;

use crate::diagnostics::Run;
use crate::error::{RunError, panic_message};
use crate::loom::atomic::Ordering;

use super::builder::PanicPolicy;
use super::core::{Inner, ResetOnDrop, TIMER_TOKEN, WAKER_TOKEN};
use super::inbox::{Job, Message};
use super::remote::STATE_STOPPING;
use super::stats::SharedStats;

/// The kinds of callback `run_calls` runs, as the diagnostics name them,
/// and their indexes.
const KINDS: [&str; 2] = ["call from thread", "thread job completion"];

/// The longest single poll: a timer years away must not overflow anything.
const MAX_POLL: Duration = Duration::from_secs(3600);

/// `inbox::MISS_AFTER_SLEEP` for [`Lap::since`].
const MISS_AFTER_SLEEP_NANOS: u64 = super::inbox::MISS_AFTER_SLEEP.as_nanos() as u64;

impl Inner {
    pub(super) fn check_can_run(&self) -> Result<(), RunError> {
        if self.running.get() || self.in_turn.get() {
            return Err(RunError::AlreadyRunning);
        }
        if self.shared.state() >= STATE_STOPPING {
            return Err(RunError::Stopped);
        }
        Ok(())
    }

    /// Runs `f`, catching a panic as the panic policy says.
    /// With diagnostics on, the call is timed (see `crate::diagnostics`).
    pub(super) fn guard(
        &self,
        kind: &'static str,
        location: &'static Location<'static>,
        f: impl FnOnce(),
    ) {
        let outcome = match &self.diag {
            None => catch_unwind(AssertUnwindSafe(f)),
            Some(d) => {
                let started = d.begin(kind, location);
                let outcome = catch_unwind(AssertUnwindSafe(f));
                d.end(started, kind, location);
                outcome
            }
        };
        if let Err(payload) = outcome {
            self.on_panic(kind, location, payload);
        }
    }

    /// Counts and logs a caught panic; re-raises it under `Propagate`.
    pub(super) fn on_panic(
        &self,
        kind: &str,
        location: &'static Location<'static>,
        payload: Box<dyn Any + Send>,
    ) {
        SharedStats::bump(&self.shared.stats.panics, 1);
        let message = panic_message(&*payload);
        tracing::error!(kind, %location, panic = %message, "weft: panic in loop callback; the loop goes on");
        if self.panic_policy == PanicPolicy::Propagate {
            resume_unwind(payload);
        }
    }

    pub(super) fn turn(&self, max_wait: Option<Duration>) {
        self.turn_from(max_wait, None);
    }

    /// One turn; `last` is the reading the previous turn ended with, when
    /// nothing ran since (the run loops). Returns the reading it ended with.
    pub(super) fn turn_from(&self, max_wait: Option<Duration>, last: Option<Duration>) -> Duration {
        self.in_turn.set(true);
        let _reset = ResetOnDrop(&self.in_turn);
        SharedStats::bump(&self.shared.stats.turns, 1);
        let start = match last {
            Some(t) if self.reuse_readings => t,
            _ => self.now(),
        };
        let mut lap = Lap::start(start);

        // 1. Calls from other threads: the snapshot present now.
        let calls = self.run_calls();

        // 2. Due timers. With no call run, the start reading is still
        // current (see `reuse_readings`).
        let fresh = (calls == 0 && self.reuse_readings).then_some(start);
        let fired = self
            .timers
            .run_due(fresh, |f, location| self.guard("timed call", location, f));
        SharedStats::bump(&self.shared.stats.timers_fired, fired as u64);

        // 3. I/O. A turn that did work does not block, so a producer
        // mid-burst is drained without a wake syscall, and it may skip its
        // poll altogether (the pacing rule, `io_pace.rs`); the loop sleeps
        // only after a turn that found nothing to do. A turn whose only work
        // was the last one's task pass, with no task ready now, found
        // nothing to do: it may block at once. The wait's re-checks see
        // whatever that pass left (a task it woke, a call it queued, a timer
        // now due, a stop), and a poll returns at once for I/O already ready;
        // a non-blocking poll first would only add a turn and an
        // `epoll_wait` on the way to every sleep (issue 8's idle rows).
        let flagged = self.busy.replace(false);
        let has_work = calls > 0 || fired > 0 || (flagged && self.tasks.has_ready(&self.shared));
        let mut slept = None;
        if has_work && self.io_pace.skip(start) {
            SharedStats::bump(&self.shared.stats.polls_skipped, 1);
            super::io_registry::advance_io_epoch();
        } else {
            // Right after a skipped poll, a turn with nothing to do looks
            // without blocking first (`io_pace.rs`).
            let idle = !has_work && !self.io_pace.owed();
            let timeout = if idle {
                // The loop may go idle: its spin and its wait are not work.
                // Nothing ran since the start reading.
                lap.pause(if self.reuse_readings {
                    start
                } else {
                    self.now()
                });
                self.poll_timeout(max_wait)
            } else {
                Some(Duration::ZERO)
            };
            slept = self.poll_io(timeout, idle.then_some(&mut lap), start);
        }

        // 4. Local tasks ready now.
        let polled = self.run_tasks(Some(start));
        self.busy.set(polled > 0);
        self.run_turn_end();
        self.publish_gauges();
        // After an idle wait that ran nothing, its end reading is current.
        let end = match slept {
            Some(t) if polled == 0 && self.reuse_readings => t,
            _ => self.now(),
        };
        let work = lap.finish(end);
        self.shared.stats.turn_histogram.record_single_writer(work);
        end
    }

    /// The turn-end hooks registered for this turn (`Handle::at_turn_end`),
    /// in order, each once.
    #[inline]
    fn run_turn_end(&self) {
        if !self.turn_end.borrow().is_empty() {
            self.run_turn_end_hooks();
        }
    }

    #[inline(never)]
    fn run_turn_end_hooks(&self) {
        let mut i = 0;
        // Cloned out, so the list is not borrowed while a hook runs; one a
        // hook's work registers is run in this pass too.
        loop {
            // The borrow ends with this statement, before the hook runs.
            let next = self.turn_end.borrow().get(i).cloned();
            let Some(hook) = next else { break };
            hook();
            i += 1;
        }
        // Cleared, not replaced: the list keeps its room.
        self.turn_end.borrow_mut().clear();
    }

    /// The reactor's time; with diagnostics on, also their reading (so a
    /// turn's first callback needs no clock read of its own).
    fn now(&self) -> Duration {
        match &self.diag {
            Some(d) => d.read_clock(),
            None => self.shared.clock.now(),
        }
    }

    /// Runs the calls queued from other threads that are present now (and
    /// any a propagated panic left over). Returns how many ran.
    pub(super) fn run_calls(&self) -> usize {
        {
            let mut batch = self.batch.borrow_mut();
            if batch.is_empty() {
                self.shared.inbox.drain_into(&mut batch);
            } else {
                let mut more = std::collections::VecDeque::new();
                self.shared.inbox.drain_into(&mut more);
                batch.append(&mut more);
            }
        }
        // The same loop either way; with diagnostics off (or in a batch
        // nested in a callback, which is that callback's time) the watch
        // compiles to nothing.
        match self.diag.as_ref().and_then(|d| d.run(KINDS)) {
            Some(mut run) => self.run_batch(&mut run),
            None => self.run_batch(&mut Unwatched),
        }
    }

    /// Runs `self.batch` to the end, one call at a time (so a propagated
    /// panic leaves the rest queued). `calls_run` is bumped once, at the
    /// end or as a panic unwinds.
    fn run_batch(&self, watch: &mut impl Watch) -> usize {
        let ran = CountOnDrop::new(&self.shared.stats.calls_run);
        loop {
            let Some(job) = self.batch.borrow_mut().pop_front() else {
                break;
            };
            ran.add(1);
            let kind = usize::from(matches!(job.message, Message::Deliver(_)));
            // A call from the site already published (and no tick since)
            // runs with no call out before it, so the job goes from the
            // batch to the call without being copied around; otherwise it
            // is announced first, out of line.
            if watch.is_current(kind, job.location) {
                self.run_job(kind, job);
            } else {
                self.announce_and_run(kind, job, watch);
            }
        }
        ran.count()
    }

    #[inline(never)]
    fn announce_and_run(&self, kind: usize, job: Job, watch: &mut impl Watch) {
        watch.announce(kind, job.location);
        self.run_job(kind, job);
    }

    #[inline(always)]
    fn run_job(&self, kind: usize, job: Job) {
        let Job {
            message, location, ..
        } = job;
        let outcome = catch_unwind(AssertUnwindSafe(|| match message {
            Message::Call(f) => f.call(),
            Message::Deliver(d) => d.deliver(),
        }));
        if let Err(payload) = outcome {
            self.on_panic(KINDS[kind], location, payload);
        }
    }

    /// One pass over the local tasks ready now, bounded by the task-pass
    /// budget counted from `start` (the turn's start; `None`: unbounded).
    /// Returns how many polled.
    pub(super) fn run_tasks(&self, start: Option<Duration>) -> usize {
        // The deadline is worked out only when it is checked: most passes
        // poll fewer tasks than that.
        let budget = start.zip(self.task_pass_budget);
        let polled = self.tasks.run_ready(
            &self.shared,
            self.diag.as_deref(),
            |polled| {
                polled % super::builder::TASK_PASS_CHECK_EVERY == 0
                    && budget.is_some_and(|(start, budget)| self.pass_over(start, budget))
            },
            |location, payload| self.on_panic("local task", location, payload),
        );
        SharedStats::bump(&self.shared.stats.tasks_polled, polled as u64);
        polled
    }

    /// Whether a task pass that began at `start` has used up `budget`.
    #[inline(never)]
    fn pass_over(&self, start: Duration, budget: Duration) -> bool {
        self.now() >= start.saturating_add(budget)
    }

    pub(super) fn publish_gauges(&self) {
        let s = &self.shared.stats;
        SharedStats::set(&s.timers_live, self.timers.live_count() as u64);
        SharedStats::set(&s.timer_heap_entries, self.timers.heap_len() as u64);
        SharedStats::set(&s.tasks_alive, self.tasks.len() as u64);
    }

    /// A stop was requested and shutdown has not begun acting on it.
    fn stop_pending(&self) -> bool {
        self.shared.stop_requested.load(Ordering::SeqCst) && self.shared.state() < STATE_STOPPING
    }

    /// [`stop_pending`](Self::stop_pending) read with a read-modify-write,
    /// for the re-check before sleep: like every write the wake protocol
    /// relies on (see `inbox.rs`), it is then ordered against the producer's
    /// `swap` in `request_stop` (the loom model in `inbox.rs`).
    fn stop_pending_rmw(&self) -> bool {
        self.shared.stop_requested.fetch_or(false, Ordering::SeqCst)
            && self.shared.state() < STATE_STOPPING
    }

    fn poll_timeout(&self, max_wait: Option<Duration>) -> Option<Duration> {
        // A stop requested on the loop thread sets no wake (the loop is
        // awake), so the main loop must not block before it sees it; during
        // shutdown itself the request is already being acted on.
        let ready_now = self.stop_pending()
            || self.timers.has_pending()
            || !self.batch.borrow().is_empty()
            || self.tasks.has_ready(&self.shared);
        if ready_now {
            return Some(Duration::ZERO);
        }
        let mut timeout = max_wait.map(|t| t.min(MAX_POLL));
        if let Some(deadline) = self.timers.next_deadline() {
            if let Some(wait) = self.timers.clock().sleep_until(deadline) {
                timeout = Some(timeout.map_or(wait, |t| t.min(wait)));
            }
        }
        let timeout = Some(timeout.unwrap_or(MAX_POLL).min(MAX_POLL));
        // The stop flag is re-checked after the inbox is marked sleepy: a
        // `Remote::stop` that set it while the loop was awake made no wake
        // (the loop was awake), so a check before this point alone could
        // miss it and block for good.
        if timeout != Some(Duration::ZERO)
            && !self.shared.inbox.prepare_to_sleep(&self.spin_gate, || {
                self.tasks.has_ready(&self.shared) || self.stop_pending_rmw()
            })
        {
            return Some(Duration::ZERO);
        }
        timeout
    }

    /// Polls for I/O and dispatches it; `idle` (the turn's lap, paused) is
    /// resumed as soon as the poll returns, so handlers count as work.
    /// `turn_start` feeds the pacing rule. Returns the reading taken when
    /// an idle poll returned, if no I/O handler ran after it.
    fn poll_io(
        &self,
        timeout: Option<Duration>,
        idle: Option<&mut Lap>,
        turn_start: Duration,
    ) -> Option<Duration> {
        // With no I/O source registered, a non-blocking poll could only
        // report the waker, which the next turn's drain covers: skip the
        // syscall.
        if timeout == Some(Duration::ZERO) && self.io_sources.get() == 0 {
            self.shared.inbox.awake();
            let lap = idle?;
            self.spin_gate.settle(false);
            let now = self.now();
            lap.resume(now);
            return Some(now);
        }
        if let Some(timer) = &self.precise_timer {
            timer.arm_for(timeout);
        }
        let mut events = self.events.borrow_mut();
        let result = self.poll.borrow_mut().poll(&mut events, timeout);
        let unnotified = self.shared.inbox.awake_unnotified();
        let nonblocking = timeout == Some(Duration::ZERO);
        let mut woke = None;
        if let Some(lap) = idle {
            let now = self.now();
            // The spin before this poll, if it found nothing, was a miss
            // only if the loop then slept long, or its sleep was ended by
            // something no spin could have caught: I/O, a timer or the
            // timeout (no producer notified), or a producer on its own CPU
            // (`inbox/wake.rs`).
            let slept_long = !nonblocking && lap.since(now) >= MISS_AFTER_SLEEP_NANOS;
            self.spin_gate.settle_with(slept_long, || {
                unnotified || self.shared.inbox.woken_from_this_cpu()
            });
            // Where the loop runs now, for blocking callers' spins.
            if !nonblocking {
                self.shared.inbox.note_loop_cpu();
            }
            lap.resume(now);
            woke = Some(now);
        }
        let handlers = result.is_ok() && self.dispatch_events(&events);
        // Handlers run with no borrow of the event buffer held.
        drop(events);
        // The pacing rule dates a blocking poll by its return (`io_pace.rs`).
        let looked = match woke {
            Some(now) if !nonblocking => now,
            _ => turn_start,
        };
        self.io_pace.polled(looked, nonblocking, !handlers);
        if let Err(e) = result {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "weft: poll failed");
            }
            return woke;
        }
        if handlers {
            self.dispatch_io();
            None
        } else {
            // Only the waker or the precise timer: no handler to look up,
            // but the I/O step still counts (`io_registry::EPOCH`).
            super::io_registry::advance_io_epoch();
            woke
        }
    }

    /// Hands each readiness event to its owner (the waker and the precise
    /// timer need nothing: the next turn drains the inbox and runs the due
    /// timers, and the timer's expiry is never read, see
    /// `precise_timer.rs`). Returns whether any went to an I/O handler.
    fn dispatch_events(&self, events: &mio::Events) -> bool {
        let mut handlers = false;
        for event in events.iter() {
            match event.token() {
                WAKER_TOKEN | TIMER_TOKEN => {}
                // Collected now, dispatched once the buffer is released.
                _ => {
                    handlers = true;
                    self.io.push_event(event);
                }
            }
        }
        handlers
    }
}
/// A turn's work time: the time from its start to its end, less the
/// stretch it spent idle. Kept in nanoseconds (saturating): `Duration`'s
/// normalizing, panicking arithmetic is several times the code, run on
/// every turn and fetched cold on a wake after a long sleep (issue 8).
struct Lap {
    from: u64,
    work: u64,
}

/// A reading in nanoseconds, saturating (a `ManualClock` may be moved
/// past `u64::MAX` nanoseconds).
#[inline(always)]
fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

impl Lap {
    fn start(now: Duration) -> Lap {
        Lap {
            from: nanos(now),
            work: 0,
        }
    }

    fn pause(&mut self, now: Duration) {
        let now = nanos(now);
        self.work = self.work.saturating_add(now.saturating_sub(self.from));
        self.from = now;
    }

    fn resume(&mut self, now: Duration) {
        self.from = nanos(now);
    }

    /// How long since the lap was last paused or resumed.
    fn since(&self, now: Duration) -> u64 {
        nanos(now).saturating_sub(self.from)
    }

    fn finish(mut self, now: Duration) -> Duration {
        self.pause(now);
        Duration::from_nanos(self.work)
    }
}

/// What a batch of calls does before each one: nothing, or the
/// diagnostics' [`Run`] (publish the running call's site, time a slow one;
/// the end of the run is its `Drop`).
trait Watch {
    /// Whether the call (of kind `KINDS[kind]`) may start at once.
    fn is_current(&self, kind: usize, location: &'static Location<'static>) -> bool;
    /// Otherwise this, first.
    fn announce(&mut self, kind: usize, location: &'static Location<'static>);
}

/// Diagnostics off, or a batch nested in a callback.
struct Unwatched;

impl Watch for Unwatched {
    #[inline(always)]
    fn is_current(&self, _: usize, _: &'static Location<'static>) -> bool {
        true
    }
    #[inline(always)]
    fn announce(&mut self, _: usize, _: &'static Location<'static>) {}
}

impl<const K: usize> Watch for Run<'_, K> {
    #[inline(always)]
    fn is_current(&self, kind: usize, location: &'static Location<'static>) -> bool {
        Run::is_current(self, kind, location)
    }
    #[inline(always)]
    fn announce(&mut self, kind: usize, location: &'static Location<'static>) {
        Run::announce(self, kind, location);
    }
}

/// A count added to a shared counter once, when dropped (also when a
/// propagated panic unwinds), rather than one atomic add per event.
struct CountOnDrop<'a> {
    counter: &'a crate::loom::atomic::AtomicU64,
    n: std::cell::Cell<usize>,
}

impl<'a> CountOnDrop<'a> {
    fn new(counter: &'a crate::loom::atomic::AtomicU64) -> Self {
        CountOnDrop {
            counter,
            n: std::cell::Cell::new(0),
        }
    }

    fn add(&self, n: usize) {
        self.n.set(self.n.get() + n);
    }

    fn count(&self) -> usize {
        self.n.get()
    }
}

impl Drop for CountOnDrop<'_> {
    fn drop(&mut self) {
        SharedStats::bump(self.counter, self.n.get() as u64);
    }
}

#[cfg(test)]
mod tests;
