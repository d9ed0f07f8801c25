//! The accept loop shared by TCP and Unix listeners, with its answer to
//! running out of descriptors.
//!
//! # Design
//!
//! `accept` failing with `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM` leaves the
//! connection queued in the kernel. Under mio's edge triggering no new event
//! comes for it (a stall); retrying at once would spin the single loop
//! thread at 100 % CPU. So the listener stops, arms a retry timer on the
//! reactor's clock (10 ms, doubling to 1 s, reset by the next success) and,
//! when it fires, marks itself readable again and wakes the waiting task:
//! the retry happens without waiting for a new connection. Readiness events
//! during the backoff wake the task but start no `accept`.
//!
//! The first error of an episode is logged at `warn`, the rest at `debug`;
//! the recovery is logged at `info`.
//!
//! Per-connection errors (the peer gave up, `ECONNABORTED`, `EPROTO`,
//! `EPERM` from a firewall, pending network errors) skip that connection
//! and accept the next one.
//!
//! # Invariants
//!
//! - While `timer` is `Some`, no `accept` call is made.
//! - The timer holds only weak references; dropping the listener cancels it.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::time::DelayedCall;

use super::async_io::Async;

/// The first retry delay after a resource error.
pub(crate) const BACKOFF_START: Duration = Duration::from_millis(10);
/// The longest retry delay.
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(1);

/// Counters of one listener's accept loop.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let listener = weft::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
/// let stats = listener.accept_statistics();
/// assert_eq!(stats.accepted, 0);
/// assert_eq!(stats.resource_errors, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcceptStatistics {
    /// Connections returned to the caller.
    pub accepted: u64,
    /// `accept` system calls made (including those that failed).
    pub attempts: u64,
    /// Calls that failed for lack of descriptors or memory.
    pub resource_errors: u64,
    /// Retry timers armed after such failures.
    pub backoffs: u64,
}

#[derive(Default)]
pub(crate) struct Backoff {
    stats: Cell<AcceptStatistics>,
    delay: Cell<Option<Duration>>,
    timer: RefCell<Option<DelayedCall>>,
}

impl Backoff {
    pub(crate) fn statistics(&self) -> AcceptStatistics {
        self.stats.get()
    }

    fn bump(&self, f: impl FnOnce(&mut AcceptStatistics)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }
}

impl Drop for Backoff {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.get_mut().take() {
            let _ = timer.cancel();
        }
    }
}

fn raw_in(e: &io::Error, codes: &[i32]) -> bool {
    e.raw_os_error().is_some_and(|c| codes.contains(&c))
}

pub(crate) fn is_resource_error(e: &io::Error) -> bool {
    raw_in(
        e,
        &[libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM],
    )
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::PermissionDenied
    ) || raw_in(
        e,
        &[
            libc::EPROTO,
            libc::ENETDOWN,
            libc::ENOPROTOOPT,
            libc::EHOSTDOWN,
            libc::ENONET,
            libc::EHOSTUNREACH,
            libc::EOPNOTSUPP,
            libc::ENETUNREACH,
        ],
    )
}

/// One step of an accept loop: returns the next connection, backing off on
/// resource errors instead of failing or spinning.
pub(crate) fn poll_accept<T: AsFd, R>(
    io: &Async<T>,
    backoff: &Rc<Backoff>,
    cx: &mut Context<'_>,
    mut op: impl FnMut(&T) -> io::Result<R>,
) -> Poll<io::Result<R>> {
    let read = &io.state().read;
    loop {
        if backoff.timer.borrow().is_some() {
            // Woken by the timer (which clears `timer`) or by an event.
            read.register(cx.waker());
            return Poll::Pending;
        }
        if let Err(e) = std::task::ready!(io.poll_readable(cx)) {
            return Poll::Ready(Err(e));
        }
        if !super::coop::spend(cx) {
            return Poll::Pending;
        }
        let tick = read.tick();
        backoff.bump(|s| s.attempts += 1);
        match op(io.get_ref()) {
            Ok(conn) => {
                if backoff.delay.take().is_some() {
                    tracing::info!("weft: accept recovered; listening normally again");
                }
                backoff.bump(|s| s.accepted += 1);
                return Poll::Ready(Ok(conn));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => read.clear(tick),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "weft: accept: connection dropped before accept");
            }
            Err(e) if is_resource_error(&e) => {
                backoff.bump(|s| {
                    s.resource_errors += 1;
                    s.backoffs += 1;
                });
                let delay = match backoff.delay.get() {
                    None => {
                        tracing::warn!(
                            error = %e,
                            "weft: accept failed for lack of resources; \
                             backing off (logged once per episode)"
                        );
                        BACKOFF_START
                    }
                    Some(d) => {
                        tracing::debug!(error = %e, retry_in = ?d, "weft: accept still failing");
                        (d * 2).min(BACKOFF_CAP)
                    }
                };
                backoff.delay.set(Some(delay));
                let Some(handle) = io.handle() else {
                    return Poll::Ready(Err(e));
                };
                let weak_state = Rc::downgrade(io.state());
                let weak_backoff = Rc::downgrade(backoff);
                let timer = handle.call_later(delay, move || {
                    if let Some(b) = weak_backoff.upgrade() {
                        b.timer.borrow_mut().take();
                    }
                    // No edge will come for the queued connections: re-arm.
                    if let Some(s) = weak_state.upgrade() {
                        s.read.set_ready();
                    }
                });
                *backoff.timer.borrow_mut() = Some(timer);
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}
