//! The pool's threads: starting them, their loop, and their exit guard.
//!
//! A thread is counted (by a [`Ticket`]) before it exists, under the lock;
//! the factory, which is user code, is called after the lock is released.
//! The body handed to the factory owns a [`Launch`] record: if the factory
//! fails, panics, or drops the body without running it, the launch is given
//! back exactly once and the counts are undone ([`State::start_failed`]).
//!
//! The loop carries out [`State`]'s decisions: it runs items outside the
//! lock, waits on the work condvar (sleepers) or the spare condvar (the
//! spare), and reads time only through the pool's [`Clock`].
//!
//! # Job timing
//!
//! A thread reads the clock once per job: when a job ends, that reading is
//! both the end of its run and the start of the next job it takes from the
//! backlog (a woken sleeper reads it on waking, under the lock). The start
//! and location go into the thread's `running` slot under the lock the
//! thread holds anyway; the histograms (when enabled) are recorded outside
//! it.
//!
//! # Invariant: a thread never swallows work
//!
//! [`Exit`] records, under the lock, where the thread stands in the counts
//! ([`Position`]). Whatever ends the thread (a normal exit, or a panic in
//! the pool's own code or its clock), the guard takes the thread out of the
//! counts, hands back any claim it held, and gets the backlog a thread
//! ([`State::rehome`]): another sleeper, a replacement thread, or, when no
//! thread can ever run it, a discard that reports it.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use super::inbox::Inbox;
use super::queue::{Item, Queued, message_and_drop};
use super::spin::{ColdStart, SpinHint};
use super::state::{
    AfterTask, Position, Rehome, Role, RunningJob, SleepStep, SpareStep, State, Ticket, Waiting,
    Wake,
};
use crate::diagnostics::Histogram;
use crate::loom::atomic::{AtomicU8, Ordering};
use crate::loom::{Arc, Condvar, Mutex, MutexGuard};
use crate::time::Clock;

/// The body a thread factory must run on its new thread.
pub(super) type Body = Box<dyn FnOnce() + Send + 'static>;
pub(super) type ThreadFactory = Box<dyn Fn(&str, Body) -> io::Result<()> + Send + Sync>;

/// The pool's state, shared with its threads.
pub(super) struct Core {
    pub(super) name: String,
    pub(super) factory: ThreadFactory,
    pub(super) clock: std::sync::Arc<dyn Clock>,
    pub(super) state: Mutex<State>,
    /// Submissions that skip the lock while the pool is busy (`inbox.rs`);
    /// boxed, so its cache-line-aligned words do not move the fields
    /// around it.
    pub(super) inbox: Box<Inbox>,
    /// Idle threads (and those with a claim or an exit order) wait here.
    pub(super) work: Condvar,
    /// What the one spinning idle thread watches instead (`spin.rs`).
    pub(super) spin_hint: SpinHint,
    /// The spare waits here.
    pub(super) spare: Condvar,
    /// Signalled whenever a thread exits or a start is given back.
    pub(super) exited: Condvar,
    /// Whether jobs are recorded in the two histograms.
    pub(super) histograms: bool,
    /// Where job times come from.
    pub(super) job_clock: JobClock,
    /// Time from submission to start, per job.
    pub(super) queue_wait: Histogram,
    /// Time from start to end (callback included), per job.
    pub(super) run_time: Histogram,
}

/// The pool clock's time in nanoseconds (saturating: ~584 years).
#[inline]
fn stamp(clock: &dyn Clock) -> u64 {
    u64::try_from(clock.now().as_nanos()).unwrap_or(u64::MAX)
}

/// Where job times (enqueue, start, end) come from.
///
/// Reading the system clock precisely costs 40-90 ns on the VMs this was
/// measured on (vDSO `CLOCK_MONOTONIC`), twice per job; the coarse clock
/// (`CLOCK_MONOTONIC_COARSE`, one tick of the kernel, 1-4 ms) costs about
/// 5 ns. Ages for diagnostics (a wedge is a second) need only the coarse
/// one; the histograms need the precise one. A custom clock (tests) is
/// always used as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum JobClock {
    /// The pool's clock.
    Pool,
    /// The kernel's coarse monotonic clock (only with the default clock).
    Coarse,
}

impl Core {
    /// The state, locked, with the inbox's gate closed and its items
    /// queued: how every hold but a submission's and a busy thread's
    /// `after_task` begins (`inbox.rs`).
    #[inline]
    pub(super) fn locked(&self) -> MutexGuard<'_, State> {
        let mut st = self.state.lock();
        st.close_inbox(&self.inbox);
        st
    }

    /// Now, in the job clock's nanoseconds.
    #[inline]
    pub(super) fn job_stamp(&self) -> u64 {
        match self.job_clock {
            JobClock::Pool => stamp(&*self.clock),
            JobClock::Coarse => crate::time::coarse_nanos(),
        }
    }
}

#[cfg(not(loom))]
crate::loom::thread_local! {
    /// The pool whose thread this is, while its body runs.
    static CURRENT: std::cell::RefCell<Option<Arc<Core>>> = const { std::cell::RefCell::new(None) };
}

// loom's `thread_local!` takes no `const` initialiser.
#[cfg(loom)]
crate::loom::thread_local! {
    static CURRENT: std::cell::RefCell<Option<Arc<Core>>> = std::cell::RefCell::new(None);
}

impl Core {
    /// Whether the calling thread is one of this pool's threads.
    pub(super) fn is_current(this: &Arc<Self>) -> bool {
        CURRENT.with(|current| {
            current
                .borrow()
                .as_ref()
                .is_some_and(|core| Arc::ptr_eq(core, this))
        })
    }

    /// Carries out a submission's wake (outside the lock). Out of line: a
    /// submission that wakes nobody (a busy pool's) keeps a small frame.
    #[inline(never)]
    pub(super) fn wake(this: &Arc<Self>, wake: Wake) {
        match wake {
            Wake::Nothing => {}
            Wake::Worker => this.work.notify_one(),
            Wake::Spinner => this.spin_hint.raise(),
            Wake::Spare => this.spare.notify_one(),
            Wake::Start(ticket) => {
                Core::start_thread(this, ticket);
            }
        }
    }

    /// Starts the thread `ticket` counts; call without the lock. A refusal
    /// (error, panic, or a body dropped unrun) is logged and undone. Returns
    /// whether the body was handed over and not given back.
    pub(super) fn start_thread(this: &Arc<Self>, ticket: Ticket) -> bool {
        let name = format!("{}-{}", this.name, ticket.number);
        let launch = Arc::new(Launch {
            core: this.clone(),
            role: ticket.role,
            state: AtomicU8::new(PENDING),
        });
        let guard = BodyGuard(launch.clone());
        let body: Body = Box::new(move || guard.run());
        let error = match catch_unwind(AssertUnwindSafe(|| (this.factory)(&name, body))) {
            Ok(Ok(())) => return launch.state.load(Ordering::Acquire) != GIVEN_BACK,
            Ok(Err(error)) => error.to_string(),
            Err(payload) => format!("thread factory panicked: {}", message_and_drop(payload)),
        };
        launch.give_back();
        tracing::warn!(
            pool = %this.name,
            thread = %name,
            %error,
            "could not start a pool thread; work stays in the backlog"
        );
        false
    }

    /// Carries out what [`State::rehome`] decided (outside the lock).
    pub(super) fn carry_out(this: &Arc<Self>, rehome: Rehome) {
        match rehome {
            Rehome::Nothing => {}
            Rehome::Wake => {
                this.spin_hint.raise();
                this.work.notify_one();
                this.spare.notify_one();
            }
            Rehome::Start(ticket) => {
                Core::start_thread(this, ticket);
            }
            Rehome::Discard(items) => this.discard(items, "no pool thread is left to run it"),
            Rehome::Stranded => tracing::error!(
                pool = %this.name,
                "pool has no thread and cannot start one; its backlog waits for the next submission"
            ),
        }
    }

    /// Discards items no thread will run (outside the lock), with a log line.
    pub(super) fn discard(&self, items: Vec<Item>, why: &str) {
        if items.is_empty() {
            return;
        }
        tracing::error!(pool = %self.name, discarded = items.len(), why, "pool work discarded");
        for item in items {
            item.discard();
        }
    }
}

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const GIVEN_BACK: u8 = 2;

/// One thread start: run once, or given back once.
struct Launch {
    core: Arc<Core>,
    role: Role,
    state: AtomicU8,
}

impl Launch {
    /// Undoes the reservation unless the body already runs.
    fn give_back(&self) {
        if self
            .state
            .compare_exchange(PENDING, GIVEN_BACK, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let rehome = self.core.locked().start_failed(self.role);
        self.core.exited.notify_all();
        Core::carry_out(&self.core, rehome);
    }
}

/// The body's hold on its launch: gives it back when dropped unrun.
struct BodyGuard(Arc<Launch>);

impl BodyGuard {
    fn run(self) {
        let launch = &self.0;
        if launch
            .state
            .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            thread_main(launch.core.clone(), launch.role);
        }
    }
}

impl Drop for BodyGuard {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

/// Ends a pool thread's membership, however the thread ends.
struct Exit {
    core: Arc<Core>,
    position: Position,
    previous: Option<Arc<Core>>,
    /// The thread's `running` slot.
    slot: usize,
}

impl Drop for Exit {
    fn drop(&mut self) {
        let previous = self.previous.take();
        // The thread-local may already be gone if the thread is exiting.
        let _ = CURRENT.try_with(|current| *current.borrow_mut() = previous);
        let mut st = self.core.locked();
        let rehome = (self.position != Position::Gone).then(|| {
            st.leave(self.position);
            st.rehome(true)
        });
        st.alive -= 1;
        st.exit_thread(self.slot);
        drop(st);
        self.core.exited.notify_all();
        if let Some(rehome) = rehome {
            tracing::error!(
                pool = %self.core.name,
                "a pool thread died in the pool's own code; its work was handed on"
            );
            Core::carry_out(&self.core, rehome);
        }
    }
}

enum Next {
    /// Run this job, which started at this time (pool clock, ns).
    Run(Queued, u64),
    Sleep,
    Spare,
}

/// Waits on `condvar` until notified or the clock reaches `deadline`; the
/// lock comes back as [`Core::locked`] gives it.
fn wait<'a>(
    condvar: &Condvar,
    inbox: &Inbox,
    clock: &dyn Clock,
    st: MutexGuard<'a, State>,
    deadline: Option<Duration>,
) -> MutexGuard<'a, State> {
    let mut st = match deadline.and_then(|deadline| clock.sleep_until(deadline)) {
        Some(timeout) => condvar.wait_timeout(st, timeout).0,
        None => condvar.wait(st),
    };
    st.close_inbox(inbox);
    st
}

/// The body of every pool thread.
fn thread_main(core: Arc<Core>, role: Role) {
    let previous = CURRENT.with(|c| c.replace(Some(core.clone())));
    let clock = &*core.clock;
    let slot = core.state.lock().enter_thread();
    let mut exit = Exit {
        core: core.clone(),
        position: match role {
            Role::Worker => Position::Sleeping,
            Role::Spare => Position::Spare,
        },
        previous,
        slot,
    };
    let mut next = match role {
        Role::Worker => Next::Sleep,
        Role::Spare => Next::Spare,
    };
    // No spin until an idle wait was short (`spin.rs`).
    let mut cold = ColdStart::new();
    // Declared after `exit`, so dropped before it: the guard takes the lock.
    let mut st = core.locked();
    loop {
        next = match next {
            Next::Run(Queued { mut item, mut meta }, mut started) => {
                exit.position = Position::Busy;
                cold.works();
                // A busy thread's jobs, one lock hold between each two.
                loop {
                    st.running[slot].0 = Some(RunningJob {
                        location: meta.location,
                        started,
                    });
                    drop(st);
                    let (ended, counted) = run(&core, item, meta.enqueued, started);
                    // The one hold, with a submission's, that leaves the
                    // inbox open (`State::after_task`).
                    st = core.state.lock();
                    match st.after_task(counted, &core.inbox) {
                        AfterTask::Run(next) => {
                            (item, meta, started) = (next.item, next.meta, ended);
                        }
                        AfterTask::Sleep => {
                            st.running[slot].0 = None;
                            exit.position = Position::Sleeping;
                            break Next::Sleep;
                        }
                        AfterTask::Exit => {
                            st.running[slot].0 = None;
                            exit.position = Position::Gone;
                            return;
                        }
                    }
                }
            }
            Next::Sleep => {
                let mut waiting = Waiting::default();
                let mut spun = false;
                loop {
                    match st.sleeper_step(&mut waiting, clock) {
                        SleepStep::Run { item, wake_next } => {
                            cold.took_work(|| clock.now());
                            exit.position = Position::Busy;
                            Core::wake(&core, wake_next);
                            break Next::Run(item, core.job_stamp());
                        }
                        SleepStep::Exit => {
                            exit.position = Position::Gone;
                            return;
                        }
                        // Once per idle spell, spin before parking (`spin.rs`).
                        SleepStep::Wait(_) if !spun && cold.warm() && st.begin_spin() => {
                            spun = true;
                            exit.position = Position::Spinning;
                            let seen = core.spin_hint.current();
                            drop(st);
                            core.spin_hint.spin(seen);
                            st = core.locked();
                            st.end_spin();
                            exit.position = Position::Sleeping;
                        }
                        SleepStep::Wait(deadline) => {
                            // Timed under the lock, in the hold that made
                            // the decision: a claim comes after it.
                            cold.parks(|| clock.now());
                            st = wait(&core.work, &core.inbox, clock, st, deadline);
                        }
                    }
                }
            }
            Next::Spare => {
                let mut waiting = Waiting::default();
                loop {
                    match st.spare_step(&mut waiting, clock) {
                        SpareStep::Run { item, spare } => {
                            exit.position = Position::Busy;
                            if let Some(ticket) = spare {
                                drop(st);
                                Core::start_thread(&core, ticket);
                                st = core.locked();
                            }
                            break Next::Run(item, core.job_stamp());
                        }
                        SpareStep::Exit => {
                            exit.position = Position::Gone;
                            return;
                        }
                        SpareStep::Wait(deadline) => {
                            st = wait(&core.spare, &core.inbox, clock, st, deadline);
                        }
                    }
                }
            }
        };
    }
}

/// Runs one job (without the lock); returns when it ended (pool clock, ns)
/// and whether it panicked.
#[inline]
fn run(core: &Core, item: Item, enqueued: u64, started: u64) -> (u64, bool) {
    if !core.histograms {
        let panicked = item.run(core);
        return (core.job_stamp(), panicked);
    }
    core.queue_wait
        .record_nanos(started.saturating_sub(enqueued));
    let panicked = item.run(core);
    let ended = core.job_stamp();
    core.run_time.record_nanos(ended.saturating_sub(started));
    (ended, panicked)
}
