//! I/O on the loop: registered sockets for async code.
//!
//! # Layers
//!
//! - The reactor keeps a registry of mio sources (a slab; tokens carry a
//!   generation so stale events are dropped) and hands each event to the
//!   source's handler. Nothing else in the reactor knows sockets.
//! - [`Async<T>`] owns a non-blocking descriptor registered there. It caches
//!   readiness per direction and clears it only when an operation returns
//!   `WouldBlock` (mio is edge-triggered: stopping before `WouldBlock` would
//!   otherwise wait for an edge that never comes).
//! - [`TcpListener`], [`TcpStream`], [`UdpSocket`], [`UnixListener`],
//!   [`UnixStream`] and [`UnixDatagram`] are thin types over `Async`; the
//!   streams implement `futures_io::AsyncRead`/`AsyncWrite`.
//! - Every I/O attempt spends one unit of a per-task budget (128 per poll,
//!   tokio's figure); when it runs out the task yields for a turn, so one
//!   busy connection cannot starve the loop.
//! - [`resolve`] runs `getaddrinfo` on the reactor's thread pool, with a
//!   timeout and cancellation; literal addresses never leave the loop.
//! - [`Protocol`]/[`Transport`], [`listen_tcp`]/[`connect_tcp`],
//!   [`LineReceiver`], [`DatagramProtocol`]: Twisted-style callbacks on the
//!   same machinery.
//! - `tls` (feature `tls`): rustls over [`TcpStream`], as an async stream
//!   (`tls::TlsStream`) or for protocols (`listen_tls`/`connect_tls`).
//!
//! # Threading
//!
//! Every type here is `!Send` and is created on a reactor's loop thread
//! (the "current" reactor); creating one elsewhere is an error value.
//!
//! # Examples
//!
//! ```
//! use futures_lite::{AsyncReadExt, AsyncWriteExt};
//! use weft::net::{TcpListener, TcpStream};
//!
//! let reactor = weft::Reactor::new().unwrap();
//! let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
//! let addr = listener.local_addr().unwrap();
//! reactor.spawn_local(async move {
//!     while let Ok((mut s, _)) = listener.accept().await {
//!         weft::reactor::current().unwrap().spawn_local(async move {
//!             let (r, mut w) = (&s, &s);
//!             let _ = futures_lite::io::copy(r, &mut w).await;
//!             let _ = s.close().await;
//!         }).detach();
//!     }
//! }).detach();
//! let reply = reactor.run_until_complete(async move {
//!     let mut c = TcpStream::connect(addr).await?;
//!     c.write_all(b"hello").await?;
//!     c.close().await?; // half-close: the echo ends
//!     let mut reply = Vec::new();
//!     c.read_to_end(&mut reply).await?;
//!     std::io::Result::Ok(reply)
//! }).unwrap().unwrap();
//! assert_eq!(reply, b"hello");
//! ```

mod accept;
mod async_io;
mod coop;
mod happy;
mod resolve;
mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
mod udp;
mod unix;

pub use accept::AcceptStatistics;
pub use async_io::Async;
pub use happy::{CONNECT_ATTEMPT_TIMEOUT, CONNECTION_ATTEMPT_DELAY, ConnectErrors};
pub use resolve::{DEFAULT_RESOLVE_TIMEOUT, DnsResolver, ResolveError, resolve};
pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixDatagram, UnixListener, UnixStream};

// --- protocol layer (netproto) ---
mod line;
mod line_receiver;
mod protocol;

pub use line::{DEFAULT_MAX_LINE_LENGTH, LineBuffer, LineEvent};
pub use line_receiver::{LineMode, LineProtocol, LineReceiver};
pub use protocol::{
    Address, CloseReason, ConnectError, DEFAULT_CLOSE_TIMEOUT, DatagramProtocol, DatagramTransport,
    Factory, InvalidWriteLimits, ListeningPort, Protocol, Transport, WriteError, WriteLimits,
    connect_tcp, connect_unix, listen_tcp, listen_udp, listen_unix,
};
#[cfg(feature = "tls")]
pub use protocol::{connect_tls, listen_tls};
