//! Sub-millisecond wakeups for the loop's poll.
//!
//! mio (epoll) takes its timeout in whole milliseconds and rounds up, so a
//! `call_later(100 µs)` used to fire about 1 ms late. Before a poll whose
//! timeout is not a whole number of milliseconds, the loop arms a one-shot
//! `timerfd` (registered with the poller) for the exact timeout; it makes the
//! poll return on time, and the rounded-up poll timeout stays as a backstop.
//!
//! Invariants:
//! - One-shot only (no interval): an idle loop with no timer due gets no
//!   wakeup from it, so idle CPU stays at 0.
//! - The timer is armed only for timeouts with a sub-millisecond part; a poll
//!   with a whole-millisecond timeout, none, or zero makes no extra syscall.
//! - A stale expiry (armed for a sleep that ended early for another reason)
//!   costs at most one spurious empty turn; re-arming replaces the old
//!   deadline, so stale expiries never pile up.
//! - Where `timerfd` is missing (non-Linux, or refused by the OS), the loop
//!   keeps mio's millisecond precision: [`PreciseTimer::new`] returns `None`.

use std::time::Duration;

use mio::{Interest, Registry, Token};

/// A one-shot `timerfd` registered with the loop's poller.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) struct PreciseTimer {
    fd: std::os::fd::OwnedFd,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
impl PreciseTimer {
    /// Creates the timer and registers it under `token`; `None` when the OS
    /// refuses (the loop then keeps millisecond precision).
    pub(super) fn new(registry: &Registry, token: Token) -> Option<PreciseTimer> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        use std::os::fd::AsRawFd;

        let fd = match timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
        ) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!(error = %e, "weft: no timerfd; timers keep millisecond precision");
                return None;
            }
        };
        let raw = fd.as_raw_fd();
        if let Err(e) = registry.register(&mut mio::unix::SourceFd(&raw), token, Interest::READABLE)
        {
            tracing::debug!(error = %e, "weft: timerfd not registered; timers keep millisecond precision");
            return None;
        }
        Some(PreciseTimer { fd })
    }

    /// Before a poll with `timeout`: arms the timer when mio would round the
    /// timeout up (it has a sub-millisecond part).
    pub(super) fn arm_for(&self, timeout: Option<Duration>) {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};

        let Some(t) = timeout.filter(|t| needs_timer(*t)) else {
            return;
        };
        let Ok(value) = Timespec::try_from(t) else {
            return;
        };
        let spec = Itimerspec {
            it_interval: Timespec::default(),
            it_value: value,
        };
        if let Err(e) = timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec) {
            tracing::debug!(error = %e, "weft: timerfd_settime failed; this sleep keeps millisecond precision");
        }
    }

    /// After the poller reported the timer: consumes the expiry so the fd is
    /// not left readable.
    pub(super) fn on_ready(&self) {
        let mut buf = [0u8; 8];
        match rustix::io::read(&self.fd, &mut buf) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => tracing::debug!(error = %e, "weft: timerfd read failed"),
        }
    }
}

/// Stand-in where `timerfd` does not exist: never created.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) struct PreciseTimer(());

#[cfg(not(any(target_os = "linux", target_os = "android")))]
impl PreciseTimer {
    pub(super) fn new(_registry: &Registry, _token: Token) -> Option<PreciseTimer> {
        None
    }
    pub(super) fn arm_for(&self, _timeout: Option<Duration>) {}
    pub(super) fn on_ready(&self) {}
}

/// Whether epoll's millisecond timeout would make a sleep of `t` late: it
/// is non-zero and not a whole number of milliseconds.
fn needs_timer(t: Duration) -> bool {
    !t.is_zero() && t.subsec_nanos() % 1_000_000 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sub_millisecond_timeouts_need_the_timer() {
        assert!(!needs_timer(Duration::ZERO));
        assert!(!needs_timer(Duration::from_millis(3)));
        assert!(!needs_timer(Duration::from_secs(2)));
        assert!(needs_timer(Duration::from_micros(100)));
        assert!(needs_timer(Duration::from_nanos(1)));
        assert!(needs_timer(Duration::from_micros(2_500)));
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn armed_timer_wakes_the_poller_once() {
        let mut poll = mio::Poll::new().unwrap();
        let timer = PreciseTimer::new(poll.registry(), Token(7)).unwrap();
        let mut events = mio::Events::with_capacity(4);
        timer.arm_for(Some(Duration::from_micros(50)));
        // No timeout: only the timer can end this poll.
        loop {
            poll.poll(&mut events, None).unwrap();
            if events.iter().any(|e| e.token() == Token(7)) {
                break;
            }
        }
        timer.on_ready();
        // Consumed and one-shot: nothing more to report.
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.iter().all(|e| e.token() != Token(7)));
    }
}
