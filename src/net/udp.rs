//! UDP on [`Async`]: each call is one datagram, retried on `WouldBlock`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use super::async_io::{Async, not_on_loop};
use crate::reactor;

/// A UDP socket registered with the current reactor.
///
/// # Examples
///
/// ```
/// use weft::net::UdpSocket;
///
/// let reactor = weft::Reactor::new().unwrap();
/// let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
/// let b = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
/// let to = b.local_addr().unwrap();
/// let (n, from) = reactor.run_until_complete(async move {
///     a.send_to(b"ping", to).await.unwrap();
///     let mut buf = [0u8; 16];
///     b.recv_from(&mut buf).await.unwrap()
/// }).unwrap();
/// assert_eq!(n, 4);
/// assert!(from.ip().is_loopback());
/// ```
pub struct UdpSocket {
    io: Async<mio::net::UdpSocket>,
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

impl UdpSocket {
    /// Binds to `addr` (port 0 lets the OS choose).
    ///
    /// # Errors
    ///
    /// Fails off a loop thread or if the bind fails.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let s = weft::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// assert_ne!(s.local_addr().unwrap().port(), 0);
    /// ```
    pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
        let handle = reactor::current().ok_or_else(not_on_loop)?;
        Ok(UdpSocket {
            io: Async::with_handle(&handle, mio::net::UdpSocket::bind(addr)?)?,
        })
    }

    /// The local address.
    ///
    /// # Examples
    ///
    /// See [`UdpSocket::bind`].
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let s = weft::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// assert!(s.local_addr().unwrap().ip().is_loopback());
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// The address set by [`connect`](UdpSocket::connect).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let s = weft::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// assert!(s.peer_addr().is_err());
    /// ```
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().peer_addr()
    }

    /// Sets the default destination for [`send`](UdpSocket::send) and the
    /// only source [`recv`](UdpSocket::recv) accepts. Does not block.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let a = weft::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let b = weft::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// a.connect(b.local_addr().unwrap()).unwrap();
    /// assert_eq!(a.peer_addr().unwrap(), b.local_addr().unwrap());
    /// ```
    pub fn connect(&self, addr: SocketAddr) -> io::Result<()> {
        self.io.get_ref().connect(addr)
    }

    /// Sends one datagram to `target`.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the datagram is sent in the poll that returns, or not
    /// at all.
    ///
    /// # Examples
    ///
    /// See [`UdpSocket`].
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let s = weft::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let to = s.local_addr().unwrap();
    /// let n = reactor.run_until_complete(async move { s.send_to(b"x", to).await }).unwrap();
    /// assert_eq!(n.unwrap(), 1);
    /// ```
    pub async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.io.write_with(|s| s.send_to(buf, target)).await
    }

    /// Receives one datagram and its source.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    ///
    /// # Examples
    ///
    /// See [`UdpSocket`].
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let s = weft::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let me = s.local_addr().unwrap();
    /// let got = reactor.run_until_complete(async move {
    ///     s.send_to(b"self", me).await.unwrap();
    ///     let mut buf = [0u8; 8];
    ///     s.recv_from(&mut buf).await.unwrap()
    /// }).unwrap();
    /// assert_eq!(got, (4, me));
    /// ```
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io.read_with(|s| s.recv_from(buf)).await
    }

    /// Sends one datagram to the connected peer.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let a = weft::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let b = weft::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// a.connect(b.local_addr().unwrap()).unwrap();
    /// let n = reactor.run_until_complete(async move {
    ///     a.send(b"hi").await.unwrap();
    ///     b.recv(&mut [0u8; 8]).await.unwrap()
    /// }).unwrap();
    /// assert_eq!(n, 2);
    /// ```
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.io.write_with(|s| s.send(buf)).await
    }

    /// Receives one datagram (from the connected peer, once connected).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    ///
    /// # Examples
    ///
    /// See [`send`](UdpSocket::send).
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let s = weft::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// s.connect(s.local_addr().unwrap()).unwrap();
    /// let n = reactor.run_until_complete(async move {
    ///     s.send(b"loop").await.unwrap();
    ///     s.recv(&mut [0u8; 8]).await.unwrap()
    /// }).unwrap();
    /// assert_eq!(n, 4);
    /// ```
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.read_with(|s| s.recv(buf)).await
    }

    /// Polls a receive of one datagram; see [`recv_from`](UdpSocket::recv_from).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::task::{Context, Waker};
    /// let reactor = weft::Reactor::new().unwrap();
    /// let s = weft::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let mut cx = Context::from_waker(Waker::noop());
    /// assert!(s.poll_recv_from(&mut cx, &mut [0u8; 8]).is_pending());
    /// ```
    pub fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        self.io.poll_read_with(cx, |s| s.recv_from(buf))
    }

    /// The registered socket, for readiness-level access.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let s = weft::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let _: &weft::net::Async<mio::net::UdpSocket> = s.as_async();
    /// ```
    pub fn as_async(&self) -> &Async<mio::net::UdpSocket> {
        &self.io
    }
}
