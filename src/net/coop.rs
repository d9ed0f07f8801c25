//! The co-operative I/O budget: one task cannot hold the loop thread.
//!
//! # Design
//!
//! An `Async` operation that keeps succeeding never returns `Pending`, so a
//! task reading a fast peer would run until EOF while every other task,
//! timer and callback waits (tokio#4782 was an accept loop doing this).
//! Each attempted operation therefore spends one unit of a budget of 128
//! (tokio's number). When it runs out, the operation returns `Pending`
//! after waking its own task, which the reactor polls again next turn.
//!
//! The budget belongs to "the task being polled in this turn": it resets
//! when the task's waker differs from the last one seen (another task) or
//! the reactor's I/O epoch moved (a new turn).
//!
//! # Invariants
//!
//! - `Pending` from the budget always comes with a wake of the same task.
//! - Thread-local, loop thread only; no cross-task sharing.

use std::cell::Cell;
use std::task::Context;

use crate::reactor::io_epoch;

/// Operations a task may attempt per poll before it yields.
pub(crate) const BUDGET: u32 = 128;

#[derive(Clone, Copy)]
struct State {
    epoch: u64,
    task: (usize, usize),
    remaining: u32,
}

thread_local! {
    static STATE: Cell<State> = const {
        Cell::new(State { epoch: u64::MAX, task: (0, 0), remaining: BUDGET })
    };
}

/// Spends one unit; `false` means "yield now" (the task was woken).
pub(crate) fn spend(cx: &mut Context<'_>) -> bool {
    let waker = cx.waker();
    let task = (waker.data() as usize, waker.vtable() as *const _ as usize);
    let epoch = io_epoch();
    STATE.with(|s| {
        let mut st = s.get();
        if st.epoch != epoch || st.task != task {
            st = State {
                epoch,
                task,
                remaining: BUDGET,
            };
        }
        let ok = st.remaining > 0;
        st.remaining = st.remaining.saturating_sub(1);
        s.set(st);
        if !ok {
            waker.wake_by_ref();
        }
        ok
    })
}
