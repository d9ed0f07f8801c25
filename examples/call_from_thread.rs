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
//! thread, as the reactor's loop-local value (`Handle::with_local`).

use std::process::ExitCode;

use weft::Reactor;

const TASKS: u64 = 10;
const STEP: u64 = 7;

/// The loop's state: owned by the loop thread, touched only there.
struct Counter {
    /// `c` from the seed.
    c: u64,
    /// How many increments have run, to know when to stop.
    done: u64,
}

/// Not thread-safe (a read-modify-write with no lock): must run on the loop.
fn increment(x: u64) {
    let here = weft::reactor::current().expect("increment runs on the loop");
    let all_done = here
        .with_local(|n: &mut Counter| {
            n.c += x;
            n.done += 1;
            n.done == TASKS
        })
        .expect("the counter was inserted before the loop ran");
    if all_done {
        here.stop();
    }
}

fn c_of(reactor: &Reactor) -> u64 {
    reactor.with_local(|n: &mut Counter| n.c).unwrap_or(0)
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
    if reactor.insert_local(Counter { c: 1, done: 0 }).is_err() {
        return ExitCode::FAILURE;
    }

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

    println!(
        "c = {} before the loop runs; {TASKS} tasks queued",
        c_of(&reactor)
    );
    if let Err(e) = reactor.run() {
        eprintln!("call_from_thread: the loop failed: {e}");
        return ExitCode::FAILURE;
    }
    let expected = 1 + TASKS * STEP;
    let c = c_of(&reactor);
    println!("c = {c} after the loop stopped (expected {expected})");
    if c == expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
