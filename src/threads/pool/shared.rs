//! Work that brings its own record ([`SharedTask`]) and the counter that
//! makes a panic visible in the statistics before its outcome
//! ([`PanicCounter`]).
//!
//! Invariants: a job is counted as completed and panicked at most once,
//! by whichever comes first of `PanicCounter::count*` (before the outcome
//! is handed on) and the thread's `after_task` (when it is done with the
//! job); the count takes the pool's lock on the panic path only, and never
//! while the running thread holds it.

use super::queue;
use super::thread::Core;

/// Work that brings its own shared record: the caller's `Arc` *is* the queue
/// item, so a job costs one allocation, and the caller keeps a handle to
/// withdraw it (`ThreadPool::withdraw`).
pub(crate) trait SharedTask: Send + Sync + 'static {
    /// Runs on a worker thread; called at most once. A panic of the work is
    /// caught by the task itself and reported to `panics` *before* the task
    /// publishes its outcome, so the pool's statistics count it by the time
    /// anyone can see the outcome. (A panic that still escapes is caught
    /// and counted by the pool, late.)
    fn run(self: std::sync::Arc<Self>, panics: &PanicCounter<'_>);

    /// The pool will never run it (backlog discarded, or the pool stopped
    /// with no thread to run it): drop captures and report. Called at most
    /// once, never after `run`, never after a successful `withdraw`.
    fn discard(self: std::sync::Arc<Self>);
}

/// Counts a caught panic in the pool's statistics at once, before the work
/// makes its outcome visible: a statistics read that follows the outcome
/// includes the panic. Counting takes the pool's lock, on the panic path
/// only. Workers that keep no statistics pass [`PanicCounter::none`].
pub(crate) struct PanicCounter<'a> {
    core: Option<&'a Core>,
    counted: std::cell::Cell<bool>,
    /// The message to log once the work has returned (logging is slow and
    /// may block, so it stays off the way to the outcome).
    message: std::cell::Cell<Option<String>>,
}

impl<'a> PanicCounter<'a> {
    /// A counter that counts nothing (a worker other than a pool).
    pub(crate) fn none() -> PanicCounter<'static> {
        PanicCounter {
            core: None,
            counted: std::cell::Cell::new(false),
            message: std::cell::Cell::new(None),
        }
    }

    pub(super) fn of(core: &'a Core) -> Self {
        PanicCounter {
            core: Some(core),
            counted: std::cell::Cell::new(false),
            message: std::cell::Cell::new(None),
        }
    }

    /// The job panicked with `payload`: counted (as completed and
    /// panicked) now, and logged by the pool once the work returns, unless
    /// it was counted already.
    pub(crate) fn count(&self, payload: &(dyn std::any::Any + Send)) {
        if self.core.is_some() && !self.counted.get() {
            self.message.set(Some(crate::error::panic_message(payload)));
        }
        self.count_silently();
    }

    /// Counts the job as panicked, once, without logging (whoever hears of
    /// the panic reports it).
    pub(crate) fn count_silently(&self) {
        let Some(core) = self.core else { return };
        if !self.counted.replace(true) {
            core.state.lock().count_panic();
        }
    }

    /// Whether the job was counted; logs a message `count` kept.
    pub(super) fn finish(&self) -> bool {
        if let (Some(core), Some(message)) = (self.core, self.message.take()) {
            queue::log_panic(&core.name, &message);
        }
        self.counted.get()
    }
}
