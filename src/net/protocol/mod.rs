//! Twisted-style protocols and transports on weft's loop.
//!
//! A [`Protocol`] is a set of callbacks for one connection; a [`Transport`]
//! is its handle on the connection (write, close, pause reading, addresses,
//! idle timeout). A [`Factory`] builds one protocol per accepted or
//! established connection.
//!
//! # Design
//!
//! Each connection is one local task (the *driver*) that owns the socket
//! and the protocol. The [`Transport`] is a cheap `Rc` handle on the
//! connection's state; its methods only change that state and wake the
//! driver, so they never call the protocol back re-entrantly. The driver, on
//! each poll: reads into a shared 64 KiB buffer (Twisted's fairness rule:
//! after a full buffer it requeues itself for the next turn rather than
//! waiting for an edge that may never come; after a short read it reads once
//! more so that the `WouldBlock` re-arms the wait in the same poll), applies
//! a pending abort, flushes the write buffer with vectored writes, and
//! finishes a pending graceful close.
//!
//! Flow control is asyncio's contract (spec/net.md §3.3): `pause_writing`
//! once when the buffer goes above the high-water mark, `resume_writing`
//! once when it drains to the low-water mark, plus a hard limit that closes
//! the connection with [`CloseReason::WriteBufferOverflow`]. Because a Rust
//! protocol is borrowed mutably while it runs, `pause_writing` cannot arrive
//! *inside* the `write` that crossed the mark (asyncio's synchronous call):
//! it arrives as soon as the current callback of that connection returns,
//! before any other event of that connection. A protocol writing in a loop
//! can check [`Transport::write_buffer_size`] meanwhile.
//!
//! # Invariants
//!
//! - `connection_made` runs first, `connection_lost` exactly once and last;
//!   nothing is read before `connection_made` returns.
//! - Protocol callbacks run only on the loop thread, one at a time, never
//!   nested for the same connection.
//! - A panic in a callback is caught and logged; that connection closes
//!   with [`CloseReason::Panicked`] and the loop goes on.
//! - After `connection_lost` the driver drops the protocol (breaking the
//!   `Rc` cycle protocol → transport → protocol) and every transport
//!   operation returns an error value or does nothing.

mod buffer;
mod datagram;
mod driver;
mod endpoints;
#[cfg(feature = "tls")]
mod tls;
mod transport;

#[cfg(test)]
mod tests;

pub use buffer::{InvalidWriteLimits, WriteLimits};
pub use transport::{DEFAULT_CLOSE_TIMEOUT, Transport};

pub use datagram::{DatagramProtocol, DatagramTransport, listen_udp};
pub use endpoints::{
    ConnectError, ListeningPort, connect_tcp, connect_unix, listen_tcp, listen_unix,
};
#[cfg(feature = "tls")]
pub use tls::{connect_tls, listen_tls};

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a connection ended; given to [`Protocol::connection_lost`].
///
/// # Examples
///
/// ```
/// use weft::net::CloseReason;
///
/// assert!(CloseReason::Done.is_clean());
/// assert!(!CloseReason::TimedOut.is_clean());
/// assert_eq!(CloseReason::LineTooLong.to_string(), "line too long");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// Closed cleanly: by the peer (EOF) or by `lose_connection`.
    Done,
    /// The peer reset the connection.
    Reset,
    /// Closed locally with [`Transport::abort`].
    Aborted,
    /// A line exceeded the line protocol's maximum length.
    LineTooLong,
    /// The protocol kept writing past the write buffer's hard limit.
    WriteBufferOverflow,
    /// The idle timeout, or the graceful-close deadline, expired.
    TimedOut,
    /// A protocol callback panicked.
    Panicked,
    /// Any other I/O error.
    Io(io::Error),
}

impl CloseReason {
    /// Whether this is [`CloseReason::Done`].
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!weft::net::CloseReason::Aborted.is_clean());
    /// ```
    pub fn is_clean(&self) -> bool {
        matches!(self, CloseReason::Done)
    }

    pub(crate) fn from_io(error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => CloseReason::Reset,
            _ => CloseReason::Io(error),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Done => f.write_str("connection closed cleanly"),
            CloseReason::Reset => f.write_str("connection reset by peer"),
            CloseReason::Aborted => f.write_str("connection aborted"),
            CloseReason::LineTooLong => f.write_str("line too long"),
            CloseReason::WriteBufferOverflow => f.write_str("write buffer overflow"),
            CloseReason::TimedOut => f.write_str("connection timed out"),
            CloseReason::Panicked => f.write_str("protocol callback panicked"),
            CloseReason::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for CloseReason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CloseReason::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// A write the transport refused.
///
/// # Examples
///
/// ```
/// use weft::net::WriteError;
///
/// assert_eq!(WriteError::Closed.to_string(), "transport is closing or closed");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The transport is closing or closed (or `write_eof` was called).
    Closed,
    /// The write would pass the hard limit; the connection is being closed
    /// with [`CloseReason::WriteBufferOverflow`].
    BufferOverflow,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Closed => f.write_str("transport is closing or closed"),
            WriteError::BufferOverflow => f.write_str("write buffer hard limit exceeded"),
        }
    }
}

impl std::error::Error for WriteError {}

/// A transport's local or peer address.
///
/// # Examples
///
/// ```
/// use weft::net::Address;
///
/// let a = Address::Inet("127.0.0.1:80".parse().unwrap());
/// assert_eq!(a.to_string(), "127.0.0.1:80");
/// assert_eq!(a.inet(), Some("127.0.0.1:80".parse().unwrap()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// An IPv4 or IPv6 socket address.
    Inet(SocketAddr),
    /// A Unix socket path (`None` for an unnamed socket).
    Unix(Option<PathBuf>),
}

impl Address {
    /// The IP address, if this is one.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(weft::net::Address::Unix(None).inet(), None);
    /// ```
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            Address::Inet(a) => Some(*a),
            Address::Unix(_) => None,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(a) => write!(f, "{a}"),
            Address::Unix(Some(p)) => write!(f, "{}", p.display()),
            Address::Unix(None) => f.write_str("(unnamed)"),
        }
    }
}

/// The callbacks of one stream connection (Twisted's `IProtocol`, asyncio's
/// `Protocol`). All run on the loop thread.
///
/// Order: [`connection_made`](Self::connection_made), then any number of
/// [`data_received`](Self::data_received), at most one
/// [`eof_received`](Self::eof_received), and
/// [`connection_lost`](Self::connection_lost) exactly once. Callbacks of
/// one connection never nest; a panic in one is caught and logged, and
/// closes that connection only ([`CloseReason::Panicked`]).
///
/// # Flow control
///
/// asyncio's contract: [`pause_writing`](Self::pause_writing) once when
/// the transport's buffer goes above the high-water mark (64 KiB by
/// default), [`resume_writing`](Self::resume_writing) once when it drains
/// to the low-water mark (a quarter of it); see [`WriteLimits`]. A protocol
/// that ignores the pause and keeps writing past the hard limit gets
/// [`WriteError::BufferOverflow`] and its connection closes with
/// [`CloseReason::WriteBufferOverflow`]. A callback cannot be re-entered,
/// so the pause arrives right after the callback whose write crossed the
/// mark returns; a protocol writing in a loop can watch
/// [`Transport::write_buffer_size`] meanwhile.
///
/// # Reading
///
/// A busy connection reads 64 KiB at a time and lets the others run
/// between reads. [`Transport::pause_reading`] is a flag: data already waiting
/// is delivered after [`Transport::resume_reading`], with no new event
/// needed.
///
/// # Examples
///
/// ```
/// use weft::net::{CloseReason, Protocol, Transport};
///
/// /// Echoes everything back.
/// #[derive(Default)]
/// struct Echo(Option<Transport>);
///
/// impl Protocol for Echo {
///     fn connection_made(&mut self, transport: Transport) {
///         self.0 = Some(transport);
///     }
///     fn data_received(&mut self, data: &[u8]) {
///         if let Some(t) = &self.0 {
///             let _ = t.write(data);
///         }
///     }
///     fn connection_lost(&mut self, reason: CloseReason) {
///         println!("gone: {reason}");
///     }
/// }
/// # let _ = Echo::default();
/// ```
pub trait Protocol: 'static {
    /// The connection is up. Keep `transport` to write and close. Bytes
    /// written here are sent before anything else.
    fn connection_made(&mut self, transport: Transport) {
        let _ = transport;
    }

    /// Some bytes arrived, with arbitrary boundaries.
    fn data_received(&mut self, data: &[u8]);

    /// The peer closed its writing side. Return `true` to keep the
    /// connection half-open (this side may still write, then call
    /// [`Transport::lose_connection`]); `false` (the default) closes it
    /// after flushing.
    fn eof_received(&mut self) -> bool {
        false
    }

    /// The connection is gone; called exactly once, last.
    fn connection_lost(&mut self, reason: CloseReason) {
        let _ = reason;
    }

    /// The write buffer went above the high-water mark: stop writing until
    /// [`resume_writing`](Self::resume_writing).
    fn pause_writing(&mut self) {}

    /// The write buffer drained to the low-water mark.
    fn resume_writing(&mut self) {}

    /// The idle timeout set with [`Transport::set_timeout`] expired. The
    /// default aborts with [`CloseReason::TimedOut`] (Twisted's
    /// `TimeoutMixin.timeoutConnection`, but without waiting on a peer that
    /// may never read).
    fn timeout_connection(&mut self, transport: &Transport) {
        transport.abort_with(CloseReason::TimedOut);
    }
}

/// Builds one [`Protocol`] per connection. Any `FnMut() -> P` closure is a
/// factory.
///
/// # Examples
///
/// ```
/// use weft::net::{Factory, Protocol};
///
/// struct Discard;
/// impl Protocol for Discard {
///     fn data_received(&mut self, _: &[u8]) {}
/// }
///
/// let mut factory = || Discard;
/// let _protocol: Box<dyn Protocol> = factory.build_protocol();
/// ```
pub trait Factory: 'static {
    /// A protocol for a new connection.
    fn build_protocol(&mut self) -> Box<dyn Protocol>;
}

impl<F, P> Factory for F
where
    F: FnMut() -> P + 'static,
    P: Protocol,
{
    fn build_protocol(&mut self) -> Box<dyn Protocol> {
        Box::new(self())
    }
}
