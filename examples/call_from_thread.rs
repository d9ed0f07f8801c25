//! Pool threads hand a non-thread-safe increment back to the loop with
//! `call_from_thread`, as in the seed's Twisted example; the count is exact.
//! Run: `cargo run --release --example call_from_thread`
//!
//! The Python original (Glyph Lefkowitz, "Network Programming for the Rest
//! of Us"):
//!
//! ```python
//! c = 1
//! def increment(x):          # not thread-safe
//!     global c
//!     c = c + x
//!
//! def threadTask():          # runs in a pool thread
//!     reactor.callFromThread(increment, 7)
//!
//! for i in range(10):
//!     reactor.callInThread(threadTask)
//! ```
//!
//! In Rust the compiler enforces the rule the Python relies on: the closure
//! passed to `call_from_thread` must be `Send`, so it cannot capture the
//! loop's `Rc`/`Cell` state; it reaches that state when it runs, on the loop
//! thread, through a `thread_local`.

use std::cell::Cell;
use std::process::ExitCode;

use weft::Reactor;

const TASKS: u64 = 10;
const STEP: u64 = 7;

thread_local! {
    /// `c` from the seed: owned by the loop thread, touched only there.
    static C: Cell<u64> = const { Cell::new(1) };
    /// How many increments have run, to know when to stop.
    static DONE: Cell<u64> = const { Cell::new(0) };
}

/// Not thread-safe (a read-modify-write with no lock): must run on the loop.
fn increment(x: u64) {
    debug_assert!(
        weft::reactor::is_in_io_thread(),
        "increment runs on the loop"
    );
    C.set(C.get() + x);
    DONE.set(DONE.get() + 1);
    if DONE.get() == TASKS {
        weft::reactor::current()
            .expect("increment runs on the loop")
            .stop();
    }
}

fn main() -> ExitCode {
    let reactor = match Reactor::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("call_from_thread: cannot create the reactor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let remote = reactor.remote();

    for i in 0..TASKS {
        let remote = remote.clone();
        // threadTask: runs on a pool thread and asks the loop to increment.
        let thread_task = move || {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("?").to_owned();
            if remote
                .call_from_thread(move || {
                    println!("  task {i} (on {name}) -> increment({STEP}) on the loop");
                    increment(STEP);
                })
                .is_err()
            {
                eprintln!("call_from_thread: the loop stopped before task {i} reported");
            }
        };
        if reactor.call_in_thread(thread_task).is_err() {
            eprintln!("call_from_thread: the reactor refused task {i}");
            return ExitCode::FAILURE;
        }
    }

    println!("c = {} before the loop runs; {TASKS} tasks queued", C.get());
    if let Err(e) = reactor.run() {
        eprintln!("call_from_thread: the loop failed: {e}");
        return ExitCode::FAILURE;
    }
    let expected = 1 + TASKS * STEP;
    println!(
        "c = {} after the loop stopped (expected {expected})",
        C.get()
    );
    if C.get() == expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
