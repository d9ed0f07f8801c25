//! Which threads are running a reactor loop (contract C4).
//!
//! A thread-local depth counter: the reactor's `Enter` holds a
//! [`LoopGuard`] while a loop runs on the thread (nested loops nest). Code
//! that would wait for other threads asks [`is_loop_thread`] first, because
//! those threads may be waiting for this loop (`blocking_call_from_thread`),
//! and waiting here would deadlock: `ThreadPool::stop` then does not wait.
//!
//! The layer below the reactor (threads, pool) reads the marker; only the
//! reactor sets it, so the dependency still points down.

use std::cell::Cell;
use std::marker::PhantomData;

std::thread_local! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Whether the calling thread is inside a reactor loop.
pub(crate) fn is_loop_thread() -> bool {
    DEPTH.with(|depth| depth.get() > 0)
}

/// Marks the calling thread as a loop thread until the guard is dropped.
pub(crate) fn enter_loop() -> LoopGuard {
    DEPTH.with(|depth| depth.set(depth.get() + 1));
    LoopGuard {
        _not_send: PhantomData,
    }
}

/// Keeps the calling thread marked as a loop thread; `!Send`, because the
/// mark belongs to the thread that made it.
#[derive(Debug)]
#[must_use = "the thread is a loop thread only while the guard lives"]
pub(crate) struct LoopGuard {
    _not_send: PhantomData<*const ()>,
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        DEPTH.with(|depth| depth.set(depth.get() - 1));
    }
}

#[cfg(test)]
mod tests {
    use super::{enter_loop, is_loop_thread};

    #[test]
    fn the_marker_nests_and_is_per_thread() {
        assert!(!is_loop_thread());
        let outer = enter_loop();
        let inner = enter_loop();
        drop(inner);
        assert!(is_loop_thread());
        assert!(!std::thread::spawn(is_loop_thread).join().unwrap());
        drop(outer);
        assert!(!is_loop_thread());
    }
}
