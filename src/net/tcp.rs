//! TCP: [`TcpListener`] and [`TcpStream`] on [`Async`].
//!
//! Connect is mio's non-blocking `connect`: the stream is registered at once,
//! and the connect has completed when the socket is writable and
//! `take_error` reports nothing; `peer_addr` failing with `NotConnected`
//! means a spurious wake-up (wait again). A refused connect therefore fails
//! as soon as the RST arrives, never by a timeout.

use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};
use socket2::{Domain, SockRef, Socket, Type};

use super::accept::{self, AcceptStatistics, Backoff};
use super::async_io::{Async, not_on_loop};
use crate::reactor;

/// The listen backlog (the kernel caps it at `net.core.somaxconn`).
pub(crate) const BACKLOG: i32 = 1024;

/// A TCP socket listening for connections, registered with the current
/// reactor.
///
/// Bound with `SO_REUSEADDR` and a backlog of 1024. Running out of file
/// descriptors does not break it: [`accept`](TcpListener::accept) backs off
/// on a timer (10 ms doubling to 1 s), logs once per episode, and resumes
/// by itself once descriptors are free again.
///
/// # Examples
///
/// ```
/// use weft::net::{TcpListener, TcpStream};
///
/// let reactor = weft::Reactor::new().unwrap();
/// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
/// let addr = listener.local_addr().unwrap();
/// let accepted = reactor.spawn_local(async move { listener.accept().await.unwrap().1 });
/// let client = reactor.run_until_complete(TcpStream::connect(addr)).unwrap().unwrap();
/// let peer = reactor.run_until_complete(accepted).unwrap().unwrap();
/// assert_eq!(peer, client.local_addr().unwrap());
/// ```
pub struct TcpListener {
    io: Async<mio::net::TcpListener>,
    backoff: Rc<Backoff>,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

impl TcpListener {
    /// Binds to `addr` (port 0 lets the OS choose) and listens.
    ///
    /// # Errors
    ///
    /// Fails off a loop thread, or if the socket calls fail.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let listener = weft::net::TcpListener::bind("[::1]:0".parse().unwrap()).unwrap();
    /// assert!(listener.local_addr().unwrap().is_ipv6());
    /// ```
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        let handle = reactor::current().ok_or_else(not_on_loop)?;
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            None,
        )?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        let listener = mio::net::TcpListener::from_std(socket.into());
        Ok(TcpListener {
            io: Async::with_handle(&handle, listener)?,
            backoff: Rc::default(),
        })
    }

    /// Wraps a listening std socket (switched to non-blocking mode), for
    /// options `bind` does not offer.
    ///
    /// # Errors
    ///
    /// Fails off a loop thread or if registration fails.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let addr = std_listener.local_addr().unwrap();
    /// let listener = weft::net::TcpListener::from_std(std_listener).unwrap();
    /// assert_eq!(listener.local_addr().unwrap(), addr);
    /// ```
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        Ok(TcpListener {
            io: Async::new(mio::net::TcpListener::from_std(listener))?,
            backoff: Rc::default(),
        })
    }

    /// Accepts the next connection.
    ///
    /// # Errors
    ///
    /// Fails only for errors of the listener itself (the reactor is gone, a
    /// bad descriptor). Lack of descriptors or memory delays the accept
    /// instead (see [`TcpListener`]); connections that died in the queue are
    /// skipped.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a connection is taken from the kernel only in the poll
    /// that returns it.
    ///
    /// # Examples
    ///
    /// See [`TcpListener`].
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let listener = weft::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let addr = listener.local_addr().unwrap();
    /// let _client = std::net::TcpStream::connect(addr).unwrap();
    /// let (_stream, _peer) = reactor.run_until_complete(async move {
    ///     listener.accept().await
    /// }).unwrap().unwrap();
    /// ```
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for the next connection; see [`accept`](TcpListener::accept).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::task::{Context, Waker};
    /// let reactor = weft::Reactor::new().unwrap();
    /// let listener = weft::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let mut cx = Context::from_waker(Waker::noop());
    /// assert!(listener.poll_accept(&mut cx).is_pending());
    /// ```
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        let (stream, addr) =
            std::task::ready!(accept::poll_accept(&self.io, &self.backoff, cx, |l| l.accept()))?;
        let handle = self.io.handle().ok_or_else(not_on_loop)?;
        Poll::Ready(Ok((
            TcpStream {
                io: Async::with_handle(&handle, stream)?,
            },
            addr,
        )))
    }

    /// The address the listener is bound to.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let listener = weft::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// assert_ne!(listener.local_addr().unwrap().port(), 0);
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// Counters of the accept loop (attempts, resource errors, backoffs).
    ///
    /// # Examples
    ///
    /// See [`AcceptStatistics`].
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let listener = weft::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// assert_eq!(listener.accept_statistics().attempts, 0);
    /// ```
    pub fn accept_statistics(&self) -> AcceptStatistics {
        self.backoff.statistics()
    }

    /// Deregisters the listener from this loop and gives the socket back
    /// (still non-blocking, still listening), e.g. to serve it from another
    /// loop with [`from_std`](TcpListener::from_std). Connections waiting
    /// in the backlog stay there.
    ///
    /// # Errors
    ///
    /// Fails if the deregistration fails (the socket is then closed).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let listener = weft::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let addr = listener.local_addr().unwrap();
    /// let std_listener = listener.into_std().unwrap();
    /// assert_eq!(std_listener.local_addr().unwrap(), addr);
    /// ```
    pub fn into_std(self) -> io::Result<std::net::TcpListener> {
        Ok(self.io.into_inner()?.into())
    }

    /// The registered listener, for readiness-level access.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let listener = weft::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let _ = listener.as_async().get_ref().local_addr().unwrap();
    /// ```
    pub fn as_async(&self) -> &Async<mio::net::TcpListener> {
        &self.io
    }
}

/// A TCP connection registered with the current reactor: implements
/// [`futures_io::AsyncRead`] and [`futures_io::AsyncWrite`] (also on
/// `&TcpStream`, so one task can read while another writes).
///
/// `poll_close` shuts the write side down (`shutdown(Write)`): the peer reads
/// EOF while this side can still read.
///
/// # Examples
///
/// ```
/// use futures_lite::{AsyncReadExt, AsyncWriteExt};
/// use weft::net::{TcpListener, TcpStream};
///
/// let reactor = weft::Reactor::new().unwrap();
/// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
/// let addr = listener.local_addr().unwrap();
/// reactor.spawn_local(async move {
///     let (mut s, _) = listener.accept().await.unwrap();
///     let mut buf = [0u8; 4];
///     s.read_exact(&mut buf).await.unwrap();
///     s.write_all(&buf).await.unwrap();
/// }).detach();
/// let echoed = reactor.run_until_complete(async move {
///     let mut c = TcpStream::connect(addr).await.unwrap();
///     c.write_all(b"ping").await.unwrap();
///     let mut buf = [0u8; 4];
///     c.read_exact(&mut buf).await.unwrap();
///     buf
/// }).unwrap();
/// assert_eq!(&echoed, b"ping");
/// ```
pub struct TcpStream {
    io: Async<mio::net::TcpStream>,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("local_addr", &self.local_addr().ok())
            .field("peer_addr", &self.peer_addr().ok())
            .finish()
    }
}

/// Waits for a non-blocking connect on `io` to finish.
pub(crate) async fn finish_connect<T: std::os::fd::AsFd>(
    io: &Async<T>,
    take_error: impl Fn(&T) -> io::Result<Option<io::Error>>,
    connected: impl Fn(&T) -> io::Result<()>,
) -> io::Result<()> {
    io.write_with(|s| {
        if let Some(e) = take_error(s)? {
            return Err(e);
        }
        match connected(s) {
            // Still in progress: wait for the writable edge.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                Err(io::ErrorKind::WouldBlock.into())
            }
            r => r,
        }
    })
    .await
}

impl TcpStream {
    /// Writes what the socket takes right now, without waiting and without
    /// a task: `Err(WouldBlock)` if it takes nothing (its buffer is full).
    /// No waker is registered; a later `poll_write`/`write().await` waits
    /// for writability as usual.
    ///
    /// # Errors
    ///
    /// `WouldBlock` as above; the socket's error otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::net::{TcpListener, TcpStream};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let addr = listener.local_addr().unwrap();
    /// let s = reactor.run_until_complete(TcpStream::connect(addr)).unwrap().unwrap();
    /// assert_eq!(s.try_write(b"hello").unwrap(), 5);
    /// ```
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.io
            .try_stream_io(self.io.write_direction(), buf.len(), |mut s| s.write(buf))
    }

    /// [`try_write`](Self::try_write) from several buffers (`writev`).
    ///
    /// # Errors
    ///
    /// As [`try_write`](Self::try_write).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::IoSlice;
    /// use weft::net::{TcpListener, TcpStream};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let addr = listener.local_addr().unwrap();
    /// let s = reactor.run_until_complete(TcpStream::connect(addr)).unwrap().unwrap();
    /// let n = s.try_write_vectored(&[IoSlice::new(b"he"), IoSlice::new(b"llo")]).unwrap();
    /// assert_eq!(n, 5);
    /// ```
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.io
            .try_stream_io(self.io.write_direction(), len, |mut s| {
                s.write_vectored(bufs)
            })
    }

    /// Connects to `addr`.
    ///
    /// # Errors
    ///
    /// The connect's own error (`ConnectionRefused` as soon as the peer
    /// refuses), or a failure to create or register the socket.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future closes the half-open socket.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::net::TcpStream;
    /// let reactor = weft::Reactor::new().unwrap();
    /// // Nothing listens on a port we just released: refused, at once.
    /// let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    /// let err = reactor.run_until_complete(TcpStream::connect(port)).unwrap().unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    /// ```
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let handle = reactor::current().ok_or_else(not_on_loop)?;
        let stream = mio::net::TcpStream::connect(addr)?;
        let io = Async::with_handle(&handle, stream)?;
        finish_connect(&io, |s| s.take_error(), |s| s.peer_addr().map(drop)).await?;
        Ok(TcpStream { io })
    }

    /// Wraps a connected std stream (switched to non-blocking mode).
    ///
    /// # Errors
    ///
    /// Fails off a loop thread or if registration fails.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    /// let s = weft::net::TcpStream::from_std(s).unwrap();
    /// assert_eq!(s.peer_addr().unwrap(), l.local_addr().unwrap());
    /// ```
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        Ok(TcpStream {
            io: Async::new(mio::net::TcpStream::from_std(stream))?,
        })
    }

    /// The remote address.
    ///
    /// # Examples
    ///
    /// See [`TcpStream::from_std`].
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let s = weft::net::TcpStream::from_std(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap()).unwrap();
    /// assert_eq!(s.peer_addr().unwrap(), l.local_addr().unwrap());
    /// ```
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().peer_addr()
    }

    /// The local address.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let s = weft::net::TcpStream::from_std(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap()).unwrap();
    /// assert!(s.local_addr().unwrap().ip().is_loopback());
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// Sets `TCP_NODELAY` (disables Nagle's algorithm when `true`).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let s = weft::net::TcpStream::from_std(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap()).unwrap();
    /// s.set_nodelay(true).unwrap();
    /// assert!(s.nodelay().unwrap());
    /// ```
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.io.get_ref().set_nodelay(on)
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Examples
    ///
    /// See [`set_nodelay`](TcpStream::set_nodelay).
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let s = weft::net::TcpStream::from_std(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap()).unwrap();
    /// let _ = s.nodelay().unwrap();
    /// ```
    pub fn nodelay(&self) -> io::Result<bool> {
        self.io.get_ref().nodelay()
    }

    /// Sets `SO_LINGER`. `Some(Duration::ZERO)` makes the close send a RST
    /// and discard unsent data (an abort).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let reactor = weft::Reactor::new().unwrap();
    /// let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let s = weft::net::TcpStream::from_std(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap()).unwrap();
    /// s.set_linger(Some(Duration::ZERO)).unwrap();
    /// drop(s); // the peer sees a reset
    /// ```
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        SockRef::from(self.io.get_ref()).set_linger(linger)
    }

    /// Shuts down the read, write or both halves. `Shutdown::Write` is the
    /// half-close: the peer reads EOF, this side can still read.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Read;
    /// let reactor = weft::Reactor::new().unwrap();
    /// let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let s = weft::net::TcpStream::from_std(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap()).unwrap();
    /// let (mut peer, _) = l.accept().unwrap();
    /// s.shutdown(std::net::Shutdown::Write).unwrap();
    /// assert_eq!(peer.read(&mut [0u8; 1]).unwrap(), 0);
    /// ```
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.get_ref().shutdown(how)
    }

    /// Takes the socket's pending error (`SO_ERROR`).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let s = weft::net::TcpStream::from_std(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap()).unwrap();
    /// assert!(s.take_error().unwrap().is_none());
    /// ```
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get_ref().take_error()
    }

    /// Deregisters the connection from this loop and gives the socket back
    /// (still non-blocking), e.g. to hand an accepted connection to another
    /// loop, which wraps it again with [`from_std`](TcpStream::from_std).
    /// Nothing is lost: weft buffers no data in user space, and the new
    /// registration starts by trying to read and write (bytes that arrived
    /// before the hand-over are read there).
    ///
    /// # Errors
    ///
    /// Fails if the deregistration fails (the socket is then closed).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use futures_lite::AsyncReadExt;
    /// use weft::net::{TcpListener, TcpStream};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    /// client.write_all(b"hi").unwrap();
    /// let accepted = reactor
    ///     .run_until_complete(async move { listener.accept().await.unwrap().0 })
    ///     .unwrap();
    /// let socket: std::net::TcpStream = accepted.into_std().unwrap();
    /// // Another loop (here on another thread) serves it from now on.
    /// let got = std::thread::spawn(move || {
    ///     let reactor = weft::Reactor::new().unwrap();
    ///     reactor.run_until_complete(async move {
    ///         let mut s = TcpStream::from_std(socket).unwrap();
    ///         let mut buf = [0u8; 2];
    ///         s.read_exact(&mut buf).await.unwrap();
    ///         buf
    ///     }).unwrap()
    /// }).join().unwrap();
    /// assert_eq!(&got, b"hi");
    /// ```
    pub fn into_std(self) -> io::Result<std::net::TcpStream> {
        Ok(self.io.into_inner()?.into())
    }

    /// The registered socket, for readiness-level access
    /// ([`Async::read_with`], [`Async::poll_writable`], ...).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let s = weft::net::TcpStream::from_std(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap()).unwrap();
    /// let _: &weft::net::Async<mio::net::TcpStream> = s.as_async();
    /// ```
    pub fn as_async(&self) -> &Async<mio::net::TcpStream> {
        &self.io
    }
}

macro_rules! impl_stream_io {
    ($ty:ty) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                let len = buf.len();
                self.io
                    .poll_stream_io(self.io.read_direction(), cx, len, |mut s| s.read(buf))
            }

            fn poll_read_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &mut [IoSliceMut<'_>],
            ) -> Poll<io::Result<usize>> {
                let len = bufs.iter().map(|b| b.len()).sum();
                self.io
                    .poll_stream_io(self.io.read_direction(), cx, len, |mut s| {
                        s.read_vectored(bufs)
                    })
            }
        }

        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let len = buf.len();
                self.io
                    .poll_stream_io(self.io.write_direction(), cx, len, |mut s| s.write(buf))
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                let len = bufs.iter().map(|b| b.len()).sum();
                self.io
                    .poll_stream_io(self.io.write_direction(), cx, len, |mut s| {
                        s.write_vectored(bufs)
                    })
            }

            fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                // Nothing is buffered in user space.
                Poll::Ready(Ok(()))
            }

            fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.io.get_ref().shutdown(Shutdown::Write) {
                    Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
                    _ => Poll::Ready(Ok(())),
                }
            }
        }
    };
}

pub(crate) use impl_stream_io;

mod fd;

impl_stream_io!(TcpStream);
impl_stream_io!(&TcpStream);
