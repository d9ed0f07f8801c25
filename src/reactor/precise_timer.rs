//! Sub-millisecond wakeups for the loop's poll.
//!
//! mio (epoll) takes its timeout in whole milliseconds and rounds up, so a
//! `call_later(100 µs)` used to fire about 1 ms late. Before a poll whose
//! timeout is short ([`PRECISE_BELOW`]) and not a whole number of
//! milliseconds, the loop arms a one-shot `timerfd` (registered with the
//! poller) for the exact timeout; it makes the poll return on time, and the
//! rounded-up poll timeout stays as a backstop.
//!
//! # The policy ([`needs_timer`])
//!
//! - Zero, or a whole number of milliseconds: epoll's own timeout is exact;
//!   no timer.
//! - Shorter than [`PRECISE_BELOW`] (50 ms) with a sub-millisecond part: the
//!   timer, so short timers keep microsecond precision (the 100 µs timer
//!   row).
//! - From [`PRECISE_BELOW`] on: no timer; epoll's timeout is rounded UP to
//!   the next millisecond (as tokio's timer wheel does), so the wait ends up
//!   to 1 ms late (at most 2% of it), never early. A long sleep thus costs no
//!   syscall beyond its `epoll_wait`: arming and consuming a timer for it
//!   took two more, for a precision nobody needs on a 2 s sleep (issue 8's
//!   `idle_cpu` row). A loop woken early for something else recomputes its
//!   timeout, and once the rest is short the timer is armed for it.
//!
//! Timers never fire early whatever the poll does: a timer runs only when
//! the reactor's clock has reached its deadline (`time/heap.rs`); a poll
//! that returns before that only costs an empty turn.
//!
//! Invariants:
//! - One-shot only (no interval): an idle loop with no timer due gets no
//!   wakeup from it, so idle CPU stays at 0.
//! - The timer is armed only for the timeouts above; a poll with a long, a
//!   whole-millisecond, no or a zero timeout makes no extra syscall.
//! - The expiry is never read. mio registers the fd edge-triggered, so an
//!   expiry is reported once and an unread one is never reported again;
//!   re-arming (`timerfd_settime`) resets the fd's expiry count, so the
//!   next expiry is a fresh edge. That saves a `read` per precise wakeup.
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
    /// The check is inlined into the poll; the arming, which most polls
    /// do not need, stays out of line.
    #[inline]
    pub(super) fn arm_for(&self, timeout: Option<Duration>) {
        if let Some(t) = timeout.filter(|t| needs_timer(*t)) {
            self.arm(t);
        }
    }

    #[inline(never)]
    fn arm(&self, t: Duration) {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};

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
}

/// Timeouts from this one on are left to epoll's millisecond timeout,
/// rounded up (see the policy in the module docs).
pub(super) const PRECISE_BELOW: Duration = Duration::from_millis(50);

/// Whether a poll with timeout `t` arms the timer: epoll's millisecond
/// timeout would make it late (it is non-zero and not a whole number of
/// milliseconds), and it is short enough for that to matter (under
/// [`PRECISE_BELOW`]).
pub(super) fn needs_timer(t: Duration) -> bool {
    !t.is_zero() && t < PRECISE_BELOW && t.subsec_nanos() % 1_000_000 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_sub_millisecond_timeouts_need_the_timer() {
        assert!(!needs_timer(Duration::ZERO));
        assert!(!needs_timer(Duration::from_millis(3)));
        assert!(!needs_timer(Duration::from_secs(2)));
        assert!(needs_timer(Duration::from_micros(100)));
        assert!(needs_timer(Duration::from_nanos(1)));
        assert!(needs_timer(Duration::from_micros(2_500)));
        assert!(needs_timer(PRECISE_BELOW - Duration::from_nanos(1)));
    }

    #[test]
    fn long_timeouts_are_left_to_the_rounded_up_poll() {
        // A long sleep makes no syscall beyond its poll (issue 8's idle
        // row): epoll's timeout, rounded up, ends it at most 1 ms late.
        assert!(!needs_timer(PRECISE_BELOW));
        assert!(!needs_timer(PRECISE_BELOW + Duration::from_micros(500)));
        assert!(!needs_timer(
            Duration::from_secs(2) - Duration::from_nanos(1)
        ));
        assert!(!needs_timer(Duration::from_micros(1_999_990)));
        assert!(!needs_timer(Duration::MAX));
    }

    /// Polls until the timer is reported; `false` if 10 s pass without it
    /// (a bound for a broken timer, not a timing assertion).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn reported(poll: &mut mio::Poll, events: &mut mio::Events) -> bool {
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < give_up {
            poll.poll(events, Some(Duration::from_secs(1))).unwrap();
            if events.iter().any(|e| e.token() == Token(7)) {
                return true;
            }
        }
        false
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn armed_timer_wakes_the_poller_once() {
        let mut poll = mio::Poll::new().unwrap();
        let timer = PreciseTimer::new(poll.registry(), Token(7)).unwrap();
        let mut events = mio::Events::with_capacity(4);
        timer.arm_for(Some(Duration::from_micros(50)));
        assert!(reported(&mut poll, &mut events));
        // One-shot, and reported once although never read (edge-triggered).
        poll.poll(&mut events, Some(Duration::from_millis(2)))
            .unwrap();
        assert!(events.iter().all(|e| e.token() != Token(7)));
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_timer_rearmed_after_an_unread_expiry_wakes_the_poller_again() {
        let mut poll = mio::Poll::new().unwrap();
        let timer = PreciseTimer::new(poll.registry(), Token(7)).unwrap();
        let mut events = mio::Events::with_capacity(4);
        for _ in 0..3 {
            timer.arm_for(Some(Duration::from_micros(50)));
            assert!(
                reported(&mut poll, &mut events),
                "the expiry was a new edge"
            );
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_long_timeout_arms_nothing() {
        let mut poll = mio::Poll::new().unwrap();
        let timer = PreciseTimer::new(poll.registry(), Token(7)).unwrap();
        let mut events = mio::Events::with_capacity(4);
        // Were it armed, this would expire within the second poll's 100 ms.
        timer.arm_for(Some(PRECISE_BELOW + Duration::from_micros(1)));
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        assert!(events.iter().all(|e| e.token() != Token(7)));
    }
}
