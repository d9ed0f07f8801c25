//! weft: a Twisted-style reactor with first-class thread integration.
//!
//! Application state lives on one loop thread and needs no locks. Blocking
//! work runs on worker threads. A small set of bridges moves work and results
//! between the two:
//!
//! - [`Remote::call_from_thread`]: the one thread-safe way onto the loop;
//! - the [`threads`] layer: Twisted's `Worker`, `Team` and a [`ThreadPool`]
//!   built on them, usable without a reactor;
//! - [`Deferred`]: a one-shot result resolved on the loop thread, which is a
//!   `Future` and also takes callbacks.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use weft::Reactor;
//!
//! let reactor = Reactor::new().unwrap();
//! let remote = reactor.remote();
//! std::thread::spawn(move || {
//!     // Any thread may queue work onto the loop.
//!     remote.call_from_thread(|| println!("on the loop")).unwrap();
//! });
//! reactor.call_later(Duration::from_millis(10), || weft::reactor::current().unwrap().stop());
//! reactor.run().unwrap();
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod error;
mod inline_fn;
mod loom;

mod loop_marker;
pub mod threads;
// `crate::pool::ThreadPool` keeps resolving for the layers above.
use threads::pool;

// --- reactor layer (time, deferred, reactor), then the bridges ---
mod bridge;
mod deferred;
pub mod diagnostics;
pub mod net; // netcore
pub mod reactor;
pub mod testing;
mod time;

pub use bridge::{
    AlreadyRunning, CrossThreadFuture, LoopingCall, blocking_call_from_thread,
    blocking_call_from_thread_future, blocking_call_from_thread_future_timeout,
    blocking_call_from_thread_timeout,
};
pub use error::{
    AlreadyQuit, AlreadyResolved, CallError, Cancelled, DelayedCallError, LoopStopped, Panic,
    RunError, ThreadError, TimedOut,
};

pub use deferred::{Deferred, Resolver, gather};
pub use error::PoolConfigError;
pub use reactor::{Reactor, Remote};
pub use threads::{
    CancelHandle, DEFAULT_KEEP_ALIVE, DEFAULT_MAX_THREADS, DEFAULT_MIN_THREADS, PoolStatistics,
    StopReport, ThreadPool, ThreadPoolBuilder, TryDoWorkError,
};
pub use time::{Clock, DelayedCall, SystemClock};

#[doc = include_str!("../docs/coming-from-twisted-and-asyncio.md")]
pub mod coming_from_twisted_and_asyncio {}

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
