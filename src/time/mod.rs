//! Time: the [`Clock`] seam, the loop's timer heap and [`DelayedCall`].
//!
//! Design:
//! - Time is a `Duration` since the clock's origin (Twisted's `seconds()`), so a
//!   manual clock can start at zero and tests read exact values.
//! - Every deadline is computed with saturating arithmetic: a delay up to
//!   `Duration::MAX` means "never", not an overflow.
//! - Everything but the clocks is touched only by the loop thread (`Rc`,
//!   `RefCell`).
//! - Timers never fire early: a call runs only once the clock has reached
//!   its deadline. How late it may be depends on how the loop sleeps (see
//!   `reactor/precise_timer.rs`): within microseconds for a wait under
//!   50 ms, up to 1 ms for a longer one (epoll's millisecond timeout,
//!   rounded up).
//!
//! Files: `clock.rs` (the seam and its two clocks), `heap.rs` (the timer
//! heap and its invariants), `delayed_call.rs` (the user's handle).

mod clock;
mod delayed_call;
mod heap;

pub use clock::{Clock, ManualClock, SystemClock};
pub use delayed_call::DelayedCall;
pub(crate) use heap::Timers;
