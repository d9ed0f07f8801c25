//! The reactor: one loop thread, its timers, local tasks and the cross-thread
//! inbox.
//!
//! # Turn order
//!
//! Each turn of the loop does, in this order:
//!
//! 1. the calls queued from other threads ([`Remote::call_from_thread`]) that
//!    were present when the turn began, in FIFO order; calls queued meanwhile
//!    run next turn, and the loop does not sleep while any are queued;
//! 2. the timers that are due (equal deadlines in scheduling order); timers
//!    scheduled during this pass run next turn;
//! 3. I/O: the loop polls, blocking only when nothing is ready, up to the next
//!    timer deadline; a busy turn right after a poll that reported no I/O may
//!    skip it (a few turns at most, and never for more than 100 µs: see
//!    [`ReactorStatistics::polls_skipped`]);
//! 4. the local tasks that were ready when this step began.
//!
//! # Threading
//!
//! [`Reactor`] and [`Handle`] are `!Send`: they live on the loop thread. The
//! [`Remote`] is `Send + Sync + Clone` and is the only way in from elsewhere.
//! Code running on the loop reaches its reactor with [`current`], and its
//! loop-local state with [`Handle::with_local`] (no `thread_local` needed).
//!
//! # Lifecycle vocabulary
//!
//! One set of words, the same on [`Handle`], [`Reactor`] and [`Remote`]:
//!
//! - **started** ([`has_started`](Handle::has_started)): the startup
//!   triggers have fired (`run` or `run_until_complete` was called);
//! - **running** ([`is_running`](Handle::is_running)): started and the
//!   shutdown not begun (Twisted's `reactor.running`); stays true between
//!   two `run_until_complete` calls;
//! - **stopped** ([`is_stopped`](Handle::is_stopped)): the shutdown has begun
//!   or finished; the reactor cannot run again. `stop()` *asks* for this.
//!
//! # Shutdown
//!
//! `Before` triggers (waited for, up to the shutdown timeout on the
//! reactor's clock), `During` triggers, then the final drain: the inbox
//! closes and every call and pool result that reached it runs, so results
//! that already arrived are delivered; only then is what is left failed,
//! and the `After` triggers run.
//!
//! # Panics in callbacks
//!
//! A panic in any callback, timer or local task is caught and logged with
//! `tracing` (with where the callback was scheduled), and the loop goes on.
//! [`PanicPolicy::Propagate`] re-raises instead, for tests; what the turn had
//! not yet run (the rest of its calls, timers and tasks) stays queued for the
//! next turn, and a panicking task's `Deferred` gets `Panicked` first.
//!
//! # Durations
//!
//! Every duration the reactor takes (`call_later` delays, the shutdown
//! timeout, `iterate` timeouts) may be anything up to `Duration::MAX`, which
//! means "forever": arithmetic saturates, never overflows.

mod builder;
mod context;
mod core;
mod forward;
mod handle;
mod inbox;
mod io_pace;
mod io_registry;
mod local;
mod precise_timer;
mod remote;
mod shutdown;
mod signals;
mod stats;
mod tasks;
mod triggers;
mod turn;

pub use crate::bridge::QueuedWork; // defined with the bridge that acts on it
pub use builder::{Builder, DEFAULT_TASK_PASS_BUDGET, PanicPolicy, TASK_PASS_CHECK_EVERY};
pub use context::{current, is_in_io_thread};
pub use core::Reactor;
pub use handle::Handle;
pub(crate) use inbox::Deliver;
pub(crate) use io_registry::{IoHandler, Ready, Registration, io_epoch};
pub use local::LocalError;
pub use remote::{Remote, TrySendError};
pub use signals::{SignalError, SignalHandlerId};
pub use stats::ReactorStatistics;
pub use triggers::{Phase, SystemEvent, TriggerId, TriggerOutcome, UnknownEvent};
