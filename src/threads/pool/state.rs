//! The pool's state machine: every decision, as plain functions.
//!
//! [`State`] is the data behind the pool's one mutex. Each transition here
//! takes `&mut State` (and, where time matters, a [`Clock`]) and returns what
//! the caller must do outside it: wake a sleeper, start a thread ([`Ticket`]),
//! run an item, discard items. Nothing here blocks, spawns, notifies or runs
//! user code, so the unit tests drive the rules with a manual clock and no
//! threads. `thread.rs` and `mod.rs` carry the results out.
//!
//! # Roles and counts
//!
//! Threads are anonymous: the state counts roles, not threads.
//!
//! - **idle**: asleep on the work condvar, free to be claimed;
//! - **busy**: running a task, or woken for one (a *claim*);
//! - **spare**: at most one thread that runs nothing until the pool stalls.
//!
//! Claims (`claimed`) and exit orders (`exit_idle`, `exit_spare`) are counts
//! taken by whichever sleeper wakes first, so no wake-up is lost and no
//! thread needs its own queue. A thread being started counts in its role
//! from the moment its [`Ticket`] is issued; if it never starts,
//! [`State::start_failed`] takes it out again.
//!
//! # Invariants
//!
//! - `queue.len() >= claimed`: the backlog is the live items beyond the
//!   claimed ones; withdrawing an item revokes a claim it would break.
//! - While the backlog is non-empty no thread is idle, or a claimed sleeper
//!   is on its way and will wake the next one.
//! - `spinning <= 1`, and a spinning thread is counted idle (or ordered to
//!   exit): it takes the lock and steps within the spin bound, so a claim
//!   made while `spinning > 0` needs no notify ([`Wake::Spinner`]).
//! - Before `started` the limit is 0; after `stopped` nothing is accepted and
//!   the backlog drains through the threads that exist, or, when none can
//!   run it, is handed out to be discarded.

use std::panic::Location;
use std::time::Duration;

use super::inbox::Inbox;
use super::queue::{Item, Meta, Queue, Queued, TaskKey};
use crate::loom::SpinBackoff;
use crate::time::Clock;

mod gate;

/// How long queued work may wait with every thread busy and no task taken
/// before the spare becomes a worker (above one busy thread per core).
pub(crate) const GROWTH_DELAY: Duration = Duration::from_millis(1);

/// The most idle spells without a spin after spins that found nothing
/// ([`State::end_spin`]).
pub(crate) const MAX_SPIN_PAUSE: u32 = 128;

/// The role a new thread starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// Idle, or busy with a claim when work was backlogged.
    Worker,
    /// The spare.
    Spare,
}

/// A thread the state already counts, to be started by the caller.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a ticket counts a thread that must be started or given back"]
pub(super) struct Ticket {
    pub(super) role: Role,
    /// The number in the thread's name.
    pub(super) number: u64,
}

/// What a submission asks of its caller.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Wake {
    Nothing,
    /// Notify one sleeper on the work condvar (a claim was made).
    Worker,
    /// A claim was made while a sleeper spins: raise the spin hint (an
    /// atomic store, no syscall); the spinner takes the claim.
    Spinner,
    /// Notify the spare.
    Spare,
    /// Start this thread.
    Start(Ticket),
}

/// What a sleeping worker does next.
pub(super) enum SleepStep {
    /// Run this item; `wake_next` is [`Wake::Worker`] or [`Wake::Spinner`]
    /// when one more sleeper was claimed, else [`Wake::Nothing`].
    Run {
        item: Queued,
        wake_next: Wake,
    },
    Exit,
    /// Wait on the work condvar, until the clock reaches the deadline if any.
    Wait(Option<Duration>),
}

/// What the spare does next.
pub(super) enum SpareStep {
    /// Run this item as a worker; start the new spare first, if any.
    Run {
        item: Queued,
        spare: Option<Ticket>,
    },
    Exit,
    /// Wait on the spare condvar, until the clock reaches the deadline if any.
    Wait(Option<Duration>),
}

/// What a thread does after its task.
pub(super) enum AfterTask {
    Run(Queued),
    Sleep,
    Exit,
}

/// A sleeper's or the spare's memory between steps.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    /// When this thread began to wait above `min` (the keep-alive start).
    idle_since: Option<Duration>,
    /// The spare's watch: tasks taken at its start, and when it ends.
    watch: Option<(u64, Duration)>,
}

/// Where a thread stands in the counts, for its exit guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Position {
    /// Counted as a sleeper (idle, claimed or ordered to exit).
    Sleeping,
    /// A sleeper counted in `spinning` too (between `begin_spin` and
    /// `end_spin`).
    Spinning,
    /// Counted busy without a claim (running or about to recycle).
    Busy,
    /// Counted as the spare (or ordered to exit as one).
    Spare,
    /// No longer counted in any role.
    Gone,
}

/// See the module docs.
#[derive(Debug)]
pub(super) struct State {
    pub(super) queue: Queue,
    pub(super) claimed: usize,
    pub(super) idle: usize,
    /// Idle threads spinning before they wait (0 or 1; counted in `idle`,
    /// or ordered to exit). Such a thread takes the lock and looks for a
    /// claim within the spin bound, so a claim needs no notify.
    pub(super) spinning: usize,
    /// Whether the next idle spell may spin, from how the last spins went
    /// (a pause of idle spells after spins that found nothing).
    pub(super) spin_backoff: SpinBackoff,
    /// Spins begun so far (a count for tests and diagnostics).
    pub(super) spins: u64,
    pub(super) busy: usize,
    /// Spare threads (0 or 1) not told to exit.
    pub(super) spare: usize,
    /// Whether the spare is watching for a stall.
    pub(super) armed: bool,
    pub(super) exit_idle: usize,
    pub(super) exit_spare: usize,
    /// Busy threads to retire when they find no backlog.
    pub(super) to_shrink: usize,
    /// Tasks taken from the queue so far: the spare's progress signal.
    pub(super) taken: u64,
    pub(super) completed: u64,
    pub(super) panicked: u64,
    pub(super) min: usize,
    pub(super) max: usize,
    /// 0 until started, then `max`.
    pub(super) limit: usize,
    pub(super) started: bool,
    pub(super) stopped: bool,
    pub(super) next_thread: u64,
    /// Threads counted in a role or still running their exit.
    pub(super) alive: usize,
    /// Threads that may be busy before growth waits for a stall.
    pub(super) eager: usize,
    pub(super) keep_alive: Duration,
    /// Threads whose body started running, and those of them that exited.
    pub(super) threads_created: u64,
    pub(super) threads_reaped: u64,
    /// What each thread runs, by the slot it took at its start
    /// ([`enter_thread`](Self::enter_thread)); `None` between jobs. One
    /// cache line per thread: each thread writes its own on every job.
    pub(super) running: Vec<RunningSlot>,
    /// Slots of `running` whose thread exited, for reuse.
    free_slots: Vec<usize>,
    /// Whether the inbox's gate is open (only a lock holder moves it).
    pub(super) gate: bool,
}

/// A thread's `running` entry, alone in its cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(super) struct RunningSlot(pub(super) Option<RunningJob>);

/// A job a thread runs: where it was submitted, and when it started (pool
/// clock, nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RunningJob {
    pub(super) location: &'static Location<'static>,
    pub(super) started: u64,
}

impl State {
    pub(super) fn new(min: usize, max: usize, eager: usize, keep_alive: Duration) -> State {
        State {
            queue: Queue::default(),
            claimed: 0,
            idle: 0,
            spinning: 0,
            spin_backoff: SpinBackoff::new(),
            spins: 0,
            busy: 0,
            spare: 0,
            armed: false,
            exit_idle: 0,
            exit_spare: 0,
            to_shrink: 0,
            taken: 0,
            completed: 0,
            panicked: 0,
            min,
            max,
            limit: 0,
            started: false,
            stopped: false,
            next_thread: 0,
            alive: 0,
            eager: eager.max(1),
            keep_alive,
            threads_created: 0,
            threads_reaped: 0,
            running: Vec::new(),
            free_slots: Vec::new(),
            gate: false,
        }
    }

    /// A thread's body starts: counts it and gives it a `running` slot.
    pub(super) fn enter_thread(&mut self) -> usize {
        self.threads_created += 1;
        match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.running.push(RunningSlot(None));
                self.running.len() - 1
            }
        }
    }

    /// A thread that [entered](Self::enter_thread) exits (any reason).
    pub(super) fn exit_thread(&mut self, slot: usize) {
        self.threads_reaped += 1;
        self.running[slot].0 = None;
        self.free_slots.push(slot);
    }

    /// The oldest queued (accepted, not started) job.
    pub(super) fn oldest(&self) -> Option<Meta> {
        self.queue.front()
    }

    #[inline]
    pub(super) fn backlog(&self) -> usize {
        self.queue.len() - self.claimed
    }

    /// Threads with a role (idle, busy or spare), marked or not.
    pub(super) fn threads(&self) -> usize {
        self.idle + self.busy + self.spare
    }

    /// Threads not yet marked to quit.
    pub(super) fn unmarked(&self) -> usize {
        self.threads().saturating_sub(self.to_shrink)
    }

    #[inline]
    fn take(&mut self) -> Queued {
        self.taken += 1;
        self.queue
            .pop()
            .expect("pool invariant: a claim or a backlog names a queued item")
    }

    /// Counts a new thread in `role`; the caller must start it or call
    /// [`start_failed`](Self::start_failed).
    pub(super) fn reserve(&mut self, role: Role) -> Ticket {
        let number = self.next_thread;
        self.next_thread += 1;
        match role {
            Role::Worker if self.backlog() > 0 => {
                self.busy += 1;
                self.claimed += 1;
            }
            Role::Worker => self.idle += 1,
            Role::Spare => {
                self.spare += 1;
                self.armed = self.backlog() > 0;
            }
        }
        self.alive += 1;
        Ticket { role, number }
    }

    /// A reserved thread will never run: takes it out of the counts. Returns
    /// what the caller must do about the work it would have served.
    pub(super) fn start_failed(&mut self, role: Role) -> Rehome {
        self.alive -= 1;
        let position = match role {
            Role::Worker => Position::Sleeping,
            Role::Spare => Position::Spare,
        };
        self.leave(position);
        // Starting another thread now would most likely fail the same way.
        self.rehome(false)
    }

    /// A thread at `position` is gone (an exit guard after a panic in the
    /// pool's own code, or a start that failed): removes it from the counts.
    /// Sleepers are interchangeable, so any sleeper count will do; a claim
    /// goes last, and comes back to the backlog.
    pub(super) fn leave(&mut self, position: Position) {
        match position {
            Position::Spinning => {
                // A stale `spinning` would make claims skip their notify.
                self.spinning -= 1;
                self.leave(Position::Sleeping);
            }
            Position::Sleeping => {
                if self.idle > 0 {
                    self.idle -= 1;
                } else if self.exit_idle > 0 {
                    self.exit_idle -= 1;
                } else if self.claimed > 0 {
                    self.claimed -= 1;
                    self.busy -= 1;
                }
            }
            Position::Busy => self.busy -= 1,
            Position::Spare => {
                if self.spare > 0 {
                    self.spare -= 1;
                    self.armed &= self.spare > 0;
                } else if self.exit_spare > 0 {
                    self.exit_spare -= 1;
                }
            }
            Position::Gone => {}
        }
    }

    /// After a thread vanished: makes sure backlogged work has a thread on
    /// its way (starting one if `may_start`), or says which items no thread
    /// can ever run.
    pub(super) fn rehome(&mut self, may_start: bool) -> Rehome {
        if self.backlog() == 0 {
            return if self.claimed > 0 {
                Rehome::Wake
            } else {
                Rehome::Nothing
            };
        }
        if self.idle > 0 && self.claimed == 0 {
            self.idle -= 1;
            self.busy += 1;
            self.claimed += 1;
            return Rehome::Wake;
        }
        if self.claimed > 0 || self.busy > 0 || self.spare > 0 {
            // A woken sleeper or a busy thread drains it; the spare watches.
            return Rehome::Wake;
        }
        if !self.started {
            // Before `start` work waits in the backlog by design.
            return Rehome::Nothing;
        }
        if may_start && self.threads() < self.limit {
            return Rehome::Start(self.reserve(Role::Worker));
        }
        if self.stopped {
            return Rehome::Discard(self.queue.drain_after(0));
        }
        Rehome::Stranded
    }

    /// Queues `item` (the caller checked `stopped` and the first thread).
    #[inline(always)] // the hot path: keep it in the caller's lock hold
    pub(super) fn submit(&mut self, item: Queued) -> (TaskKey, Wake) {
        let key = self.queue.push(item);
        (key, self.decide())
    }

    /// What a submission that just queued an item asks for. A `Nothing`
    /// changes no count, so once it says `Nothing` it says so again until
    /// a thread moves (a batch decides only until then, `batch.rs`).
    #[inline(always)]
    pub(super) fn decide(&mut self) -> Wake {
        if self.idle > 0 && self.claimed > 0 {
            // A sleeper is already waking; it takes this item too, or wakes
            // the next sleeper if work is still waiting (one wake at a time).
            Wake::Nothing
        } else if self.idle > 0 {
            self.claim_idle()
        } else if !self.started || self.threads() >= self.limit {
            self.arm_spare()
        } else if self.busy < self.eager {
            // One thread per core may be busy at once: start one now.
            Wake::Start(self.reserve(Role::Worker))
        } else if self.spare == 0 {
            Wake::Start(self.reserve(Role::Spare))
        } else {
            self.arm_spare()
        }
    }

    /// Claims one idle thread: a spinner sees the hint, a waiter needs a
    /// notify. The caller checked `idle > 0`.
    #[inline]
    fn claim_idle(&mut self) -> Wake {
        self.idle -= 1;
        self.busy += 1;
        self.claimed += 1;
        if self.spinning > 0 {
            Wake::Spinner
        } else {
            Wake::Worker
        }
    }

    /// A thread whose [`sleeper_step`](Self::sleeper_step) said `Wait`, for
    /// the first time since it went idle, may spin before it waits: at most
    /// one thread spins at a time (its CPU is bounded; on two cores a crowd
    /// of spinners would only take the CPU a submitter needs), none after
    /// `stop`, and none while spins are paused (see
    /// [`end_spin`](Self::end_spin)). Returns whether this one may; it must
    /// then call `end_spin` under the lock before its next step.
    pub(super) fn begin_spin(&mut self) -> bool {
        if self.spinning > 0 || self.stopped {
            return false;
        }
        if !self.spin_backoff.try_spin() {
            return false;
        }
        self.spinning += 1;
        self.spins += 1;
        true
    }

    /// The spin is over (the lock is held again); it paid off if a claim
    /// waits for this thread now. Spins that find nothing pause spinning
    /// for a number of idle spells that doubles with each miss (up to
    /// [`MAX_SPIN_PAUSE`]); a hit halves it. So where the next job never
    /// comes within the spin (the submitter shares this thread's only
    /// core, or work is rare) a spin is tried about once per
    /// `MAX_SPIN_PAUSE` spells, and where it does, every spell spins.
    pub(super) fn end_spin(&mut self) {
        self.spinning -= 1;
        if self.claimed > 0 {
            self.spin_backoff.hit();
        } else {
            self.spin_backoff.miss(MAX_SPIN_PAUSE, false);
        }
    }

    fn arm_spare(&mut self) -> Wake {
        if self.spare > 0 && !self.armed {
            self.armed = true;
            Wake::Spare
        } else {
            Wake::Nothing
        }
    }

    /// Whether a submission is accepted with no further check: not stopped,
    /// and a thread exists or the pool is not started (the hot path).
    #[inline]
    pub(super) fn accepts_at_once(&self) -> bool {
        !self.stopped && (self.threads() > 0 || !self.started)
    }

    /// Whether a submission must first start a thread (started, none left).
    #[inline]
    pub(super) fn needs_first_thread(&self) -> bool {
        self.started && !self.stopped && self.threads() == 0
    }

    /// Removes an unstarted item. A claim that only it could satisfy goes
    /// back: its sleeper counts idle again and, woken, finds nothing.
    pub(super) fn withdraw(&mut self, key: TaskKey) -> Option<Item> {
        let item = self.queue.withdraw(key)?;
        if self.queue.len() < self.claimed {
            self.claimed -= 1;
            self.busy -= 1;
            self.idle += 1;
        }
        Some(item)
    }

    /// Removes every unclaimed item.
    pub(super) fn discard_backlog(&mut self) -> Vec<Item> {
        self.queue.drain_after(self.claimed)
    }

    /// A job panicked: it is counted as completed and panicked now, before
    /// its outcome is published (the thread then calls `after_task(true)`).
    #[cold]
    pub(super) fn count_panic(&mut self) {
        self.completed += 1;
        self.panicked += 1;
    }

    /// A busy thread's task ended: backlog first, then quit, then debt,
    /// then idle. `counted`: the job was already counted (`count_panic`).
    /// With the inbox open, an empty queue first takes what the inbox
    /// holds, and the gate closes before this thread leaves the busy.
    /// (A thread that runs on leaves the gate as it is.)
    #[inline]
    pub(super) fn after_task(&mut self, counted: bool, inbox: &Inbox) -> AfterTask {
        self.completed += u64::from(!counted);
        if self.backlog() == 0 && self.gate {
            self.drain_inbox(inbox);
            if self.backlog() == 0 {
                self.close_inbox(inbox);
            }
        }
        if self.backlog() > 0 {
            // The gate is opened by submissions only (`submit_stamped`):
            // a pool fed by batches and shared records never pays for it.
            AfterTask::Run(self.take())
        } else if self.stopped || self.to_shrink > 0 {
            if !self.stopped {
                self.to_shrink -= 1;
            }
            self.busy -= 1;
            AfterTask::Exit
        } else {
            self.busy -= 1;
            self.idle += 1;
            AfterTask::Sleep
        }
    }

    /// A sleeper: takes a claim, else an exit order, else waits (and exits
    /// after the keep-alive when above `min`).
    pub(super) fn sleeper_step(&mut self, waiting: &mut Waiting, clock: &dyn Clock) -> SleepStep {
        if self.claimed > 0 {
            self.claimed -= 1;
            let item = self.take();
            // Work still waits and a thread is idle: wake the next one.
            let wake_next = if self.backlog() > 0 && self.idle > 0 {
                self.claim_idle()
            } else {
                Wake::Nothing
            };
            waiting.idle_since = None;
            return SleepStep::Run { item, wake_next };
        }
        if self.backlog() > 0 && self.idle > 0 {
            // Backlogged work with no claim: this idle thread takes it.
            self.idle -= 1;
            self.busy += 1;
            waiting.idle_since = None;
            return SleepStep::Run {
                item: self.take(),
                wake_next: Wake::Nothing,
            };
        }
        if self.exit_idle > 0 {
            self.exit_idle -= 1;
            return SleepStep::Exit;
        }
        // No claim or order is pending, so this thread is one of the idle.
        if self.unmarked() > self.min && !self.stopped {
            let now = clock.now();
            let since = *waiting.idle_since.get_or_insert(now);
            match since.checked_add(self.keep_alive) {
                Some(until) if now >= until => {
                    self.idle -= 1;
                    SleepStep::Exit
                }
                // `None`: a keep-alive beyond the clock's range is forever.
                until => SleepStep::Wait(until),
            }
        } else {
            waiting.idle_since = None;
            SleepStep::Wait(None)
        }
    }

    /// The spare: exits when told, drains at stop, and becomes a worker when
    /// backlogged work sees no progress for [`GROWTH_DELAY`].
    pub(super) fn spare_step(&mut self, waiting: &mut Waiting, clock: &dyn Clock) -> SpareStep {
        loop {
            if self.exit_spare > 0 {
                self.exit_spare -= 1;
                return SpareStep::Exit;
            }
            // No exit order is pending, so this thread is the spare.
            let backlog = self.backlog();
            if self.stopped {
                self.spare -= 1;
                if backlog > 0 {
                    self.busy += 1;
                    return SpareStep::Run {
                        item: self.take(),
                        spare: None,
                    };
                }
                return SpareStep::Exit;
            }
            if !self.armed || backlog == 0 {
                self.armed = false;
                waiting.watch = None;
                if self.unmarked() > self.min {
                    let now = clock.now();
                    let since = *waiting.idle_since.get_or_insert(now);
                    return match since.checked_add(self.keep_alive) {
                        Some(until) if now >= until => {
                            self.spare -= 1;
                            SpareStep::Exit
                        }
                        until => SpareStep::Wait(until),
                    };
                }
                waiting.idle_since = None;
                return SpareStep::Wait(None);
            }
            waiting.idle_since = None;
            let now = clock.now();
            let (mark, until) = *waiting
                .watch
                .get_or_insert((self.taken, now.saturating_add(GROWTH_DELAY)));
            if now < until {
                return SpareStep::Wait(Some(until));
            }
            if self.taken != mark {
                waiting.watch = Some((self.taken, now.saturating_add(GROWTH_DELAY)));
                continue;
            }
            // Stalled: become a worker, and leave a spare if work still waits.
            waiting.watch = None;
            self.spare -= 1;
            self.armed = false;
            self.busy += 1;
            let item = self.take();
            let spare = (self.backlog() > 0 && self.threads() < self.limit)
                .then(|| self.reserve(Role::Spare));
            return SpareStep::Run { item, spare };
        }
    }
}

/// What to do about work after a thread vanished.
pub(super) enum Rehome {
    Nothing,
    /// Notify a sleeper (a claim is outstanding) and the spare.
    Wake,
    /// Start this thread to run the backlog.
    Start(Ticket),
    /// No thread will ever run these: discard them.
    Discard(Vec<Item>),
    /// Not stopped, no thread and none may start now: the backlog waits for
    /// the next submission or `start` (logged).
    Stranded,
}
