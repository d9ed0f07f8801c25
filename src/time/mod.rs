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

/// Whether the kernel's coarse monotonic clock exists here ([`coarse_nanos`]).
pub(crate) const COARSE_AVAILABLE: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// The kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`), in
/// nanoseconds since boot: the time of the kernel's last tick (1-4 ms
/// apart), about 5 ns a read where a precise read costs 40-90 ns on the
/// VMs measured. For ages that diagnostics report in milliseconds or more
/// (a wedged pool, a call waiting in the inbox), never for timers.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
pub(crate) fn coarse_nanos() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    // The monotonic clock counts from boot: both fields are non-negative,
    // and the sum fits in u64 for ~584 years of uptime. Read on hot paths,
    // so plain arithmetic (checked conversions cost ~15 instructions).
    #[allow(clippy::cast_sign_loss)]
    let (secs, nanos) = (t.tv_sec as u64, t.tv_nsec as u64);
    secs.wrapping_mul(1_000_000_000).wrapping_add(nanos)
}

/// Elsewhere no caller picks the coarse clock ([`COARSE_AVAILABLE`]).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn coarse_nanos() -> u64 {
    unreachable!("the coarse clock exists on Linux only")
}
