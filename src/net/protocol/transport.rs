//! [`Transport`] and the per-connection driver task.
//!
//! The connection's state lives in one `Conn` shared (by `Rc`) between the
//! driver task and every `Transport` clone. Three separate cells keep the
//! borrows short and disjoint: `state` (flags, write buffer, timers: borrowed
//! only inside transport methods and between callbacks), `stream` (the
//! socket: borrowed only by the driver and `set_nodelay`), and `protocol`
//! (borrowed only while one callback runs). So a callback may call any
//! transport method, of its own connection or another, without a double
//! borrow.
//!
//! Invariants:
//! - Only the driver (or a timer, when the protocol is not running) calls
//!   the protocol, through [`Conn::call`], which catches panics and then
//!   delivers queued flow-control events.
//! - `phase == Closed` exactly when `connection_lost` has been called (or is
//!   being called); the stream and the protocol are `None` after that.
//! - Every state change that the driver must act on (a write, a close, a
//!   resume) wakes the driver's stored waker.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::{Rc, Weak};
use std::task::Waker;
use std::time::Duration;

use super::buffer::{Flow, WriteBuffer, WriteLimits};
use super::driver::Stream;
use super::{Address, CloseReason, Protocol, WriteError};
use crate::reactor::Handle;
use crate::time::DelayedCall;

/// How long [`Transport::lose_connection`] waits for the peer to take the
/// buffered bytes before it aborts with [`CloseReason::TimedOut`] (a peer
/// that never reads must not pin the socket, spec/net.md §1 item 6).
///
/// # Examples
///
/// ```
/// assert_eq!(weft::net::DEFAULT_CLOSE_TIMEOUT.as_secs(), 30);
/// ```
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Open,
    /// `lose_connection` was called: flush, then close.
    Closing,
    Closed,
}

pub(super) struct State {
    pub(super) phase: Phase,
    pub(super) wbuf: WriteBuffer,
    pub(super) read_paused: bool,
    pub(super) read_eof: bool,
    pub(super) eof_requested: bool,
    pub(super) eof_sent: bool,
    pub(super) abort: Option<CloseReason>,
    pub(super) flows: VecDeque<Flow>,
    pub(super) waker: Option<Waker>,
    pub(super) idle: Option<(Duration, DelayedCall)>,
    pub(super) close_deadline: Option<DelayedCall>,
    pub(super) close_timeout: Duration,
    /// What a graceful close reports (`Done` unless
    /// `lose_connection_with` said otherwise).
    pub(super) close_reason: Option<CloseReason>,
    pub(super) local: Option<Address>,
    pub(super) peer: Option<Address>,
}

pub(super) struct Conn {
    pub(super) state: RefCell<State>,
    pub(super) stream: RefCell<Option<Box<dyn Stream>>>,
    pub(super) protocol: RefCell<Option<Box<dyn Protocol>>>,
    pub(super) handle: Handle,
}

impl Conn {
    /// One waker-free write of `parts` (at most `MAX_TRY_IOV` of them) if
    /// the stream is free; the number of bytes the socket took. Errors are
    /// left for the driver's flush, which meets them again on its write.
    ///
    /// Not from inside this connection's own callbacks (its protocol is
    /// borrowed then): the driver flushes right after the callback in the
    /// same poll, so nothing is gained, and writes made there keep going
    /// through the buffer and its flow control as before.
    fn try_send(&self, parts: &[&[u8]]) -> usize {
        const MAX_TRY_IOV: usize = 16;
        if self.protocol.try_borrow_mut().is_err() {
            return 0;
        }
        let Ok(mut stream) = self.stream.try_borrow_mut() else {
            return 0;
        };
        let Some(s) = stream.as_mut() else {
            return 0;
        };
        let mut iov = [IoSlice::new(&[]); MAX_TRY_IOV];
        let mut n = 0;
        for p in parts.iter().filter(|p| !p.is_empty()).take(MAX_TRY_IOV) {
            iov[n] = IoSlice::new(p);
            n += 1;
        }
        if n == 0 {
            return 0;
        }
        s.try_write_vectored(&iov[..n]).unwrap_or(0)
    }
    fn wake(&self) {
        if let Some(w) = &self.state.borrow().waker {
            w.wake_by_ref();
        }
    }

    /// Runs one protocol callback, catching a panic, then hands over any
    /// flow-control crossing it caused. `None` if the protocol is gone, busy
    /// (a re-entrant call), or panicked.
    pub(super) fn call<R>(self: &Rc<Self>, f: impl FnOnce(&mut dyn Protocol) -> R) -> Option<R> {
        let mut slot = self.protocol.try_borrow_mut().ok()?;
        let protocol = slot.as_mut()?;
        let out = match catch_unwind(AssertUnwindSafe(|| f(&mut **protocol))) {
            Ok(out) => Some(out),
            Err(payload) => {
                self.panicked(payload);
                return None;
            }
        };
        loop {
            let flow = {
                let mut st = self.state.borrow_mut();
                if st.phase == Phase::Closed || st.abort.is_some() {
                    st.flows.clear();
                }
                st.flows.pop_front()
            };
            let Some(flow) = flow else { break };
            let r = catch_unwind(AssertUnwindSafe(|| match flow {
                Flow::Pause => protocol.pause_writing(),
                Flow::Resume => protocol.resume_writing(),
            }));
            if let Err(payload) = r {
                self.panicked(payload);
                return None;
            }
        }
        out
    }

    fn panicked(&self, payload: Box<dyn std::any::Any + Send>) {
        let msg = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(non-string panic)");
        tracing::error!(
            panic = msg,
            "protocol callback panicked; closing its connection"
        );
        let mut st = self.state.borrow_mut();
        if st.phase != Phase::Closed {
            st.abort = Some(CloseReason::Panicked);
        }
    }

    fn set_abort(&self, reason: CloseReason) {
        let mut st = self.state.borrow_mut();
        if st.phase == Phase::Closed || st.abort.is_some() {
            return;
        }
        st.abort = Some(reason);
        drop(st);
        self.wake();
    }

    /// Ends the connection: drops the socket and the buffer, cancels the
    /// timers, and calls `connection_lost` once.
    pub(super) fn finish(&self, reason: CloseReason) {
        {
            let mut st = self.state.borrow_mut();
            if st.phase == Phase::Closed {
                return;
            }
            st.phase = Phase::Closed;
            st.wbuf.clear();
            st.abort = None;
            st.flows.clear();
            st.waker = None;
            if let Some((_, dc)) = st.idle.take() {
                let _ = dc.cancel();
            }
            if let Some(dc) = st.close_deadline.take() {
                let _ = dc.cancel();
            }
        }
        let stream = self.stream.borrow_mut().take();
        if let Some(mut stream) = stream {
            let abortive = matches!(
                reason,
                CloseReason::Aborted
                    | CloseReason::TimedOut
                    | CloseReason::WriteBufferOverflow
                    | CloseReason::Panicked
            );
            if abortive {
                stream.abort();
            }
        }
        let protocol = self.protocol.borrow_mut().take();
        if let Some(mut p) = protocol {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| p.connection_lost(reason))) {
                self.panicked(payload);
                self.state.borrow_mut().abort = None;
            }
        }
    }

    fn on_idle_timeout(self: &Rc<Self>) {
        {
            let mut st = self.state.borrow_mut();
            if st.idle.take().is_none() || st.phase == Phase::Closed {
                return;
            }
        }
        let transport = Transport(self.clone());
        if self.call(|p| p.timeout_connection(&transport)).is_none() {
            self.set_abort(CloseReason::TimedOut);
        }
    }
}

/// A connection as its [`Protocol`](super::Protocol) sees it: write, close,
/// pause reading, addresses, idle timeout. Cheap to clone; `!Send` (it
/// belongs to the loop thread).
///
/// Writes are buffered and flushed by the connection's driver in the same
/// turn or the next; see [`Protocol`](super::Protocol) for the callback
/// order and flow control. A write from outside the connection's own
/// callbacks (a timer, another connection) with nothing queued ahead goes
/// to the socket at once (TCP and Unix; TLS always buffers); only what the
/// socket does not take is buffered.
///
/// # Examples
///
/// ```no_run
/// use weft::net::{Protocol, Transport, listen_tcp};
///
/// struct Hello;
/// impl Protocol for Hello {
///     fn connection_made(&mut self, t: Transport) {
///         t.write(b"hello\r\n").unwrap();
///         t.lose_connection();
///     }
///     fn data_received(&mut self, _: &[u8]) {}
/// }
///
/// let reactor = weft::Reactor::new().unwrap();
/// let port = listen_tcp("127.0.0.1:0".parse().unwrap(), || Hello).unwrap();
/// println!("listening on {}", port.local_address());
/// reactor.run().unwrap();
/// ```
#[derive(Clone)]
pub struct Transport(pub(super) Rc<Conn>);

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.0.state.borrow();
        f.debug_struct("Transport")
            .field("peer", &st.peer)
            .field("phase", &st.phase)
            .field("buffered", &st.wbuf.len())
            .finish()
    }
}

impl Transport {
    /// Queues `data` for sending.
    ///
    /// # Errors
    ///
    /// [`WriteError::Closed`] once the transport is closing or closed, or
    /// after [`write_eof`](Self::write_eof); [`WriteError::BufferOverflow`]
    /// if the buffer would pass the hard limit (the connection then closes
    /// with [`CloseReason::WriteBufferOverflow`] and `data` is not queued).
    ///
    /// # Examples
    ///
    /// See [`Transport`].
    pub fn write(&self, data: &[u8]) -> Result<(), WriteError> {
        self.write_sequence(&[data])
    }

    /// Queues several buffers as one write: all or none, one flow-control
    /// check, sent with vectored writes (Twisted's `writeSequence`).
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write).
    ///
    /// # Examples
    ///
    /// ```
    /// fn send_line(t: &weft::net::Transport, line: &[u8]) {
    ///     let _ = t.write_sequence(&[line, b"\r\n"]);
    /// }
    /// ```
    pub fn write_sequence(&self, parts: &[&[u8]]) -> Result<(), WriteError> {
        let mut st = self.0.state.borrow_mut();
        if st.phase != Phase::Open || st.abort.is_some() || st.eof_requested {
            return Err(WriteError::Closed);
        }
        // Send at once when nothing is queued ahead (spec/net.md §8): no
        // turn of latency, and no copy for what the socket takes.
        let sent = if st.wbuf.is_empty() {
            self.0.try_send(parts)
        } else {
            0
        };
        let mut rest: Vec<&[u8]> = Vec::new();
        let parts = if sent == 0 {
            parts
        } else {
            let mut skip = sent;
            for p in parts {
                if skip >= p.len() {
                    skip -= p.len();
                } else {
                    rest.push(&p[skip..]);
                    skip = 0;
                }
            }
            if rest.is_empty() {
                return Ok(());
            }
            &rest[..]
        };
        match st.wbuf.push(parts) {
            Ok(flow) => {
                st.flows.extend(flow);
                drop(st);
                self.0.wake();
                Ok(())
            }
            Err(_) => {
                let (len, hard) = (st.wbuf.len(), st.wbuf.limits().hard());
                drop(st);
                tracing::warn!(
                    buffered = len,
                    hard,
                    "protocol wrote past the write buffer's hard limit; closing the connection"
                );
                self.0.set_abort(CloseReason::WriteBufferOverflow);
                Err(WriteError::BufferOverflow)
            }
        }
    }

    /// Closes the writing side once the buffer is flushed
    /// (`shutdown(SHUT_WR)`); reading goes on. The connection ends when the
    /// peer closes too.
    ///
    /// # Errors
    ///
    /// [`WriteError::Closed`] if the transport is already closing.
    ///
    /// # Examples
    ///
    /// ```
    /// fn done_sending(t: &weft::net::Transport) {
    ///     t.write_eof().ok();
    /// }
    /// ```
    pub fn write_eof(&self) -> Result<(), WriteError> {
        let mut st = self.0.state.borrow_mut();
        if st.phase != Phase::Open || st.abort.is_some() {
            return Err(WriteError::Closed);
        }
        st.eof_requested = true;
        drop(st);
        self.0.wake();
        Ok(())
    }

    /// Closes gracefully: stops reading, flushes the buffer, then closes
    /// (`connection_lost(Done)`). If the peer does not take the bytes within
    /// the close timeout ([`DEFAULT_CLOSE_TIMEOUT`]), aborts with
    /// [`CloseReason::TimedOut`]. Idempotent.
    ///
    /// # Examples
    ///
    /// ```
    /// fn bye(t: &weft::net::Transport) {
    ///     let _ = t.write(b"bye\r\n");
    ///     t.lose_connection();
    /// }
    /// ```
    pub fn lose_connection(&self) {
        self.lose_connection_with(CloseReason::Done);
    }

    /// Like [`lose_connection`](Self::lose_connection) (flush, then close),
    /// but `connection_lost` gets `reason`: a protocol closing a peer that
    /// broke its rules, after telling it why. Idempotent; the first close
    /// wins.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::net::{CloseReason, Transport};
    ///
    /// fn reject(t: &Transport) {
    ///     let _ = t.write(b"line too long\r\n");
    ///     t.lose_connection_with(CloseReason::LineTooLong);
    /// }
    /// ```
    pub fn lose_connection_with(&self, reason: CloseReason) {
        let mut st = self.0.state.borrow_mut();
        if st.phase != Phase::Open {
            return;
        }
        st.phase = Phase::Closing;
        st.close_reason = Some(reason);
        let weak = Rc::downgrade(&self.0);
        let deadline = st.close_timeout;
        drop(st);
        let dc = self.0.handle.call_later(deadline, move || {
            if let Some(conn) = weak.upgrade() {
                conn.set_abort(CloseReason::TimedOut);
            }
        });
        self.0.state.borrow_mut().close_deadline = Some(dc);
        self.0.wake();
    }

    /// Closes at once, discarding buffered bytes; `connection_lost(Aborted)`
    /// follows on a later turn, never inside this call. Idempotent.
    ///
    /// # Examples
    ///
    /// ```
    /// fn kick(t: &weft::net::Transport) {
    ///     t.abort();
    /// }
    /// ```
    pub fn abort(&self) {
        self.abort_with(CloseReason::Aborted);
    }

    /// Like [`abort`](Self::abort), with the reason `connection_lost` will
    /// get (a protocol enforcing its own limits, for example). The first
    /// reason wins.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::net::{CloseReason, Transport};
    ///
    /// fn too_slow(t: &Transport) {
    ///     t.abort_with(CloseReason::TimedOut);
    /// }
    /// ```
    pub fn abort_with(&self, reason: CloseReason) {
        self.0.set_abort(reason);
    }

    /// Whether the transport is closing or closed (writes would fail).
    ///
    /// # Examples
    ///
    /// ```
    /// fn may_write(t: &weft::net::Transport) -> bool {
    ///     !t.is_closing()
    /// }
    /// ```
    pub fn is_closing(&self) -> bool {
        let st = self.0.state.borrow();
        st.phase != Phase::Open || st.abort.is_some()
    }

    /// Stops delivering data until [`resume_reading`](Self::resume_reading).
    /// A flag only: readiness stays known, so nothing is lost (spec/net.md
    /// §1 item 2). Idempotent.
    ///
    /// # Examples
    ///
    /// ```
    /// fn backpressure(t: &weft::net::Transport, busy: bool) {
    ///     if busy { t.pause_reading() } else { t.resume_reading() }
    /// }
    /// ```
    pub fn pause_reading(&self) {
        self.0.state.borrow_mut().read_paused = true;
    }

    /// Resumes delivering data; bytes already waiting arrive on the next
    /// turn. Idempotent.
    ///
    /// # Examples
    ///
    /// See [`pause_reading`](Self::pause_reading).
    pub fn resume_reading(&self) {
        let was = std::mem::replace(&mut self.0.state.borrow_mut().read_paused, false);
        if was {
            self.0.wake();
        }
    }

    /// Whether reading is paused.
    ///
    /// # Examples
    ///
    /// ```
    /// fn paused(t: &weft::net::Transport) -> bool {
    ///     t.is_reading_paused()
    /// }
    /// ```
    pub fn is_reading_paused(&self) -> bool {
        self.0.state.borrow().read_paused
    }

    /// The peer's address (`None` if the OS could not tell).
    ///
    /// # Examples
    ///
    /// ```
    /// fn who(t: &weft::net::Transport) -> String {
    ///     t.peer_address().map_or("?".into(), |a| a.to_string())
    /// }
    /// ```
    pub fn peer_address(&self) -> Option<Address> {
        self.0.state.borrow().peer.clone()
    }

    /// This side's address (`None` if the OS could not tell).
    ///
    /// # Examples
    ///
    /// ```
    /// fn me(t: &weft::net::Transport) -> Option<weft::net::Address> {
    ///     t.local_address()
    /// }
    /// ```
    pub fn local_address(&self) -> Option<Address> {
        self.0.state.borrow().local.clone()
    }

    /// Sets `TCP_NODELAY` (on by default for TCP transports).
    ///
    /// # Errors
    ///
    /// The OS error; `NotConnected` once closed; `Unsupported` on a
    /// non-TCP transport.
    ///
    /// # Examples
    ///
    /// ```
    /// fn batchy(t: &weft::net::Transport) {
    ///     let _ = t.set_nodelay(false);
    /// }
    /// ```
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match &*self.0.stream.borrow() {
            Some(s) => s.set_nodelay(on),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Bytes written but not yet accepted by the socket.
    ///
    /// # Examples
    ///
    /// ```
    /// fn backlog(t: &weft::net::Transport) -> usize {
    ///     t.write_buffer_size()
    /// }
    /// ```
    pub fn write_buffer_size(&self) -> usize {
        self.0.state.borrow().wbuf.len()
    }

    /// The write buffer's limits.
    ///
    /// # Examples
    ///
    /// ```
    /// fn high(t: &weft::net::Transport) -> usize {
    ///     t.write_limits().high()
    /// }
    /// ```
    pub fn write_limits(&self) -> WriteLimits {
        self.0.state.borrow().wbuf.limits()
    }

    /// Replaces the write buffer's limits; a crossing they cause is
    /// reported at once (after the current callback).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::net::{Transport, WriteLimits};
    ///
    /// fn small(t: &Transport) {
    ///     t.set_write_limits(WriteLimits::new(4096).unwrap());
    /// }
    /// ```
    pub fn set_write_limits(&self, limits: WriteLimits) {
        let mut st = self.0.state.borrow_mut();
        if st.phase == Phase::Closed {
            return;
        }
        let flow = st.wbuf.set_limits(limits);
        st.flows.extend(flow);
        drop(st);
        self.0.wake();
    }

    /// Sets how long [`lose_connection`](Self::lose_connection) waits for
    /// the buffer to drain before aborting. Takes effect at the next
    /// `lose_connection`.
    ///
    /// # Examples
    ///
    /// ```
    /// fn impatient(t: &weft::net::Transport) {
    ///     t.set_close_timeout(std::time::Duration::from_secs(1));
    /// }
    /// ```
    pub fn set_close_timeout(&self, timeout: Duration) {
        self.0.state.borrow_mut().close_timeout = timeout;
    }

    /// Arms (`Some`) or cancels (`None`) the idle timeout and returns the
    /// previous period (Twisted's `TimeoutMixin.setTimeout`). Received data
    /// resets it; on expiry [`Protocol::timeout_connection`] runs. It is
    /// cancelled when the connection ends.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// fn arm(t: &weft::net::Transport) {
    ///     t.set_timeout(Some(Duration::from_secs(60)));
    /// }
    /// ```
    pub fn set_timeout(&self, period: Option<Duration>) -> Option<Duration> {
        let mut st = self.0.state.borrow_mut();
        let previous = st.idle.take().map(|(p, dc)| {
            let _ = dc.cancel();
            p
        });
        if st.phase == Phase::Closed {
            return previous;
        }
        drop(st);
        if let Some(p) = period {
            let weak: Weak<Conn> = Rc::downgrade(&self.0);
            let dc = self.0.handle.call_later(p, move || {
                if let Some(conn) = weak.upgrade() {
                    conn.on_idle_timeout();
                }
            });
            self.0.state.borrow_mut().idle = Some((p, dc));
        }
        previous
    }

    /// Restarts the idle countdown (no-op when none is armed). Received
    /// data does this already; call it for other activity that counts.
    ///
    /// # Examples
    ///
    /// ```
    /// fn activity(t: &weft::net::Transport) {
    ///     t.reset_timeout();
    /// }
    /// ```
    pub fn reset_timeout(&self) {
        if let Some((p, dc)) = &self.0.state.borrow().idle {
            let _ = dc.reset(*p);
        }
    }
}
