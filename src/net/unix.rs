//! Unix-domain sockets on [`Async`]: the TCP shapes on a path.

use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};

use super::accept::{self, AcceptStatistics, Backoff};
use super::async_io::{Async, not_on_loop};
use super::tcp::{finish_connect, impl_stream_io};
use crate::reactor;

/// A Unix-domain stream listener registered with the current reactor.
/// Accepting backs off on descriptor exhaustion exactly like
/// [`TcpListener`](super::TcpListener).
///
/// The socket file is not removed on drop (as with std).
///
/// # Examples
///
/// ```
/// use futures_lite::{AsyncReadExt, AsyncWriteExt};
/// use weft::net::{UnixListener, UnixStream};
///
/// let dir = std::env::temp_dir().join(format!("weft-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("unix-listener.sock");
/// let _ = std::fs::remove_file(&path);
/// let reactor = weft::Reactor::new().unwrap();
/// let listener = UnixListener::bind(&path).unwrap();
/// reactor.spawn_local(async move {
///     let (mut s, _) = listener.accept().await.unwrap();
///     s.write_all(b"hello").await.unwrap();
/// }).detach();
/// let mut got = String::new();
/// let p = path.clone();
/// reactor.run_until_complete(async move {
///     let mut c = UnixStream::connect(&p).await.unwrap();
///     c.read_to_string(&mut got).await.unwrap();
///     assert_eq!(got, "hello");
/// }).unwrap();
/// std::fs::remove_file(&path).unwrap();
/// ```
pub struct UnixListener {
    io: Async<mio::net::UnixListener>,
    backoff: Rc<Backoff>,
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener")
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

impl UnixListener {
    /// Binds to `path` and listens.
    ///
    /// # Errors
    ///
    /// Fails off a loop thread, or if `path` exists or cannot be bound.
    ///
    /// # Examples
    ///
    /// See [`UnixListener`].
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert!(weft::net::UnixListener::bind("/nonexistent-dir/x.sock").is_err());
    /// ```
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        let handle = reactor::current().ok_or_else(not_on_loop)?;
        Ok(UnixListener {
            io: Async::with_handle(&handle, mio::net::UnixListener::bind(path)?)?,
            backoff: Rc::default(),
        })
    }

    /// Accepts the next connection.
    ///
    /// # Errors
    ///
    /// As [`TcpListener::accept`](super::TcpListener::accept).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    ///
    /// # Examples
    ///
    /// See [`UnixListener`].
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("weft-doc-acc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("a.sock");
    /// let _ = std::fs::remove_file(&path);
    /// let reactor = weft::Reactor::new().unwrap();
    /// let l = weft::net::UnixListener::bind(&path).unwrap();
    /// let _c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    /// reactor.run_until_complete(async move { l.accept().await.unwrap() }).unwrap();
    /// std::fs::remove_file(&path).unwrap();
    /// ```
    pub async fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for the next connection; see [`accept`](UnixListener::accept).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::task::{Context, Waker};
    /// let path = std::env::temp_dir().join(format!("weft-doc-poll-{}.sock", std::process::id()));
    /// let _ = std::fs::remove_file(&path);
    /// let reactor = weft::Reactor::new().unwrap();
    /// let l = weft::net::UnixListener::bind(&path).unwrap();
    /// assert!(l.poll_accept(&mut Context::from_waker(Waker::noop())).is_pending());
    /// std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(UnixStream, SocketAddr)>> {
        let (stream, addr) =
            std::task::ready!(accept::poll_accept(&self.io, &self.backoff, cx, |l| l.accept()))?;
        let handle = self.io.handle().ok_or_else(not_on_loop)?;
        Poll::Ready(Ok((
            UnixStream {
                io: Async::with_handle(&handle, stream)?,
            },
            addr,
        )))
    }

    /// The bound address.
    ///
    /// # Examples
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("weft-doc-la-{}.sock", std::process::id()));
    /// let _ = std::fs::remove_file(&path);
    /// let reactor = weft::Reactor::new().unwrap();
    /// let l = weft::net::UnixListener::bind(&path).unwrap();
    /// assert_eq!(l.local_addr().unwrap().as_pathname(), Some(path.as_path()));
    /// std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// Counters of the accept loop.
    ///
    /// # Examples
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("weft-doc-st-{}.sock", std::process::id()));
    /// let _ = std::fs::remove_file(&path);
    /// let reactor = weft::Reactor::new().unwrap();
    /// let l = weft::net::UnixListener::bind(&path).unwrap();
    /// assert_eq!(l.accept_statistics().accepted, 0);
    /// std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn accept_statistics(&self) -> AcceptStatistics {
        self.backoff.statistics()
    }
}

/// A Unix-domain stream: `AsyncRead`/`AsyncWrite` (also on `&UnixStream`);
/// `poll_close` shuts the write side down.
///
/// # Examples
///
/// ```
/// use futures_lite::{AsyncReadExt, AsyncWriteExt};
///
/// let reactor = weft::Reactor::new().unwrap();
/// let (mut a, mut b) = weft::net::UnixStream::pair().unwrap();
/// let got = reactor.run_until_complete(async move {
///     a.write_all(b"ping").await.unwrap();
///     let mut buf = [0u8; 4];
///     b.read_exact(&mut buf).await.unwrap();
///     buf
/// }).unwrap();
/// assert_eq!(&got, b"ping");
/// ```
pub struct UnixStream {
    io: Async<mio::net::UnixStream>,
}

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixStream")
            .field("peer_addr", &self.peer_addr().ok())
            .finish()
    }
}

impl UnixStream {
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
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (a, _b) = weft::net::UnixStream::pair().unwrap();
    /// assert_eq!(a.try_write(b"hello").unwrap(), 5);
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
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (a, _b) = weft::net::UnixStream::pair().unwrap();
    /// let n = a.try_write_vectored(&[IoSlice::new(b"he"), IoSlice::new(b"llo")]).unwrap();
    /// assert_eq!(n, 5);
    /// ```
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.io
            .try_stream_io(self.io.write_direction(), len, |mut s| {
                s.write_vectored(bufs)
            })
    }

    /// Connects to the listener at `path`.
    ///
    /// # Errors
    ///
    /// The connect's error (`NotFound`, `ConnectionRefused`, ...);
    /// `ConnectionRefused` also when the listener's backlog is full.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future closes the socket.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let r = reactor.run_until_complete(weft::net::UnixStream::connect("/nonexistent.sock"));
    /// assert!(r.unwrap().is_err());
    /// ```
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let handle = reactor::current().ok_or_else(not_on_loop)?;
        let stream = match mio::net::UnixStream::connect(path) {
            // Linux: a non-blocking connect to a listener whose backlog is
            // full fails with EAGAIN; an async fn must not return WouldBlock.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "the listener's backlog is full",
                ));
            }
            r => r?,
        };
        let io = Async::with_handle(&handle, stream)?;
        finish_connect(&io, |s| s.take_error(), |s| s.peer_addr().map(drop)).await?;
        Ok(UnixStream { io })
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
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let a = weft::net::UnixStream::from_std(a).unwrap();
    /// # drop(a);
    /// ```
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        stream.set_nonblocking(true)?;
        Ok(UnixStream {
            io: Async::new(mio::net::UnixStream::from_std(stream))?,
        })
    }

    /// A connected pair of streams.
    ///
    /// # Examples
    ///
    /// See [`UnixStream`].
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (_a, _b) = weft::net::UnixStream::pair().unwrap();
    /// ```
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let handle = reactor::current().ok_or_else(not_on_loop)?;
        let (a, b) = mio::net::UnixStream::pair()?;
        Ok((
            UnixStream {
                io: Async::with_handle(&handle, a)?,
            },
            UnixStream {
                io: Async::with_handle(&handle, b)?,
            },
        ))
    }

    /// The local address.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (a, _b) = weft::net::UnixStream::pair().unwrap();
    /// assert!(a.local_addr().unwrap().is_unnamed());
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// The peer's address.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (a, _b) = weft::net::UnixStream::pair().unwrap();
    /// assert!(a.peer_addr().unwrap().is_unnamed());
    /// ```
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().peer_addr()
    }

    /// Shuts down one or both halves (`Shutdown::Write` is the half-close).
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_lite::AsyncReadExt;
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (a, mut b) = weft::net::UnixStream::pair().unwrap();
    /// a.shutdown(std::net::Shutdown::Write).unwrap();
    /// let n = reactor.run_until_complete(async move { b.read(&mut [0u8; 4]).await.unwrap() });
    /// assert_eq!(n.unwrap(), 0);
    /// ```
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.get_ref().shutdown(how)
    }

    /// The registered socket, for readiness-level access.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (a, _b) = weft::net::UnixStream::pair().unwrap();
    /// let _: &weft::net::Async<mio::net::UnixStream> = a.as_async();
    /// ```
    pub fn as_async(&self) -> &Async<mio::net::UnixStream> {
        &self.io
    }
}

impl_stream_io!(UnixStream);
impl_stream_io!(&UnixStream);

/// A Unix-domain datagram socket.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let (a, b) = weft::net::UnixDatagram::pair().unwrap();
/// let n = reactor.run_until_complete(async move {
///     a.send(b"one datagram").await.unwrap();
///     b.recv(&mut [0u8; 64]).await.unwrap()
/// }).unwrap();
/// assert_eq!(n, 12);
/// ```
pub struct UnixDatagram {
    io: Async<mio::net::UnixDatagram>,
}

impl fmt::Debug for UnixDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixDatagram")
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

impl UnixDatagram {
    fn wrap(io: mio::net::UnixDatagram) -> io::Result<UnixDatagram> {
        let handle = reactor::current().ok_or_else(not_on_loop)?;
        Ok(UnixDatagram {
            io: Async::with_handle(&handle, io)?,
        })
    }

    /// Binds to `path`.
    ///
    /// # Errors
    ///
    /// Fails off a loop thread or if the bind fails.
    ///
    /// # Examples
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("weft-doc-dg-{}.sock", std::process::id()));
    /// let _ = std::fs::remove_file(&path);
    /// let reactor = weft::Reactor::new().unwrap();
    /// let s = weft::net::UnixDatagram::bind(&path).unwrap();
    /// assert_eq!(s.local_addr().unwrap().as_pathname(), Some(path.as_path()));
    /// std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixDatagram> {
        UnixDatagram::wrap(mio::net::UnixDatagram::bind(path)?)
    }

    /// A socket bound to no address (it can send, and receive replies once
    /// connected).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let s = weft::net::UnixDatagram::unbound().unwrap();
    /// assert!(s.local_addr().unwrap().is_unnamed());
    /// ```
    pub fn unbound() -> io::Result<UnixDatagram> {
        UnixDatagram::wrap(mio::net::UnixDatagram::unbound()?)
    }

    /// A connected pair.
    ///
    /// # Examples
    ///
    /// See [`UnixDatagram`].
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (_a, _b) = weft::net::UnixDatagram::pair().unwrap();
    /// ```
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = mio::net::UnixDatagram::pair()?;
        Ok((UnixDatagram::wrap(a)?, UnixDatagram::wrap(b)?))
    }

    /// Sets the default peer.
    ///
    /// # Examples
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("weft-doc-dgc-{}.sock", std::process::id()));
    /// let _ = std::fs::remove_file(&path);
    /// let reactor = weft::Reactor::new().unwrap();
    /// let server = weft::net::UnixDatagram::bind(&path).unwrap();
    /// let client = weft::net::UnixDatagram::unbound().unwrap();
    /// client.connect(&path).unwrap();
    /// std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn connect(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.io.get_ref().connect(path)
    }

    /// The local address.
    ///
    /// # Examples
    ///
    /// See [`UnixDatagram::bind`].
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (a, _b) = weft::net::UnixDatagram::pair().unwrap();
    /// let _ = a.local_addr().unwrap();
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// Sends one datagram to `path`.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    ///
    /// # Examples
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("weft-doc-dgs-{}.sock", std::process::id()));
    /// let _ = std::fs::remove_file(&path);
    /// let reactor = weft::Reactor::new().unwrap();
    /// let server = weft::net::UnixDatagram::bind(&path).unwrap();
    /// let client = weft::net::UnixDatagram::unbound().unwrap();
    /// let p = path.clone();
    /// let (n, _from) = reactor.run_until_complete(async move {
    ///     client.send_to(b"hey", &p).await.unwrap();
    ///     server.recv_from(&mut [0u8; 8]).await.unwrap()
    /// }).unwrap();
    /// assert_eq!(n, 3);
    /// std::fs::remove_file(&path).unwrap();
    /// ```
    pub async fn send_to(&self, buf: &[u8], path: impl AsRef<Path>) -> io::Result<usize> {
        let path = path.as_ref();
        self.io.write_with(|s| s.send_to(buf, path)).await
    }

    /// Receives one datagram and its source.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    ///
    /// # Examples
    ///
    /// See [`send_to`](UnixDatagram::send_to).
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (a, b) = weft::net::UnixDatagram::pair().unwrap();
    /// let (n, _) = reactor.run_until_complete(async move {
    ///     a.send(b"x").await.unwrap();
    ///     b.recv_from(&mut [0u8; 8]).await.unwrap()
    /// }).unwrap();
    /// assert_eq!(n, 1);
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
    /// See [`UnixDatagram`].
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (a, _b) = weft::net::UnixDatagram::pair().unwrap();
    /// let n = reactor.run_until_complete(async move { a.send(b"x").await.unwrap() });
    /// assert_eq!(n.unwrap(), 1);
    /// ```
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.io.write_with(|s| s.send(buf)).await
    }

    /// Receives one datagram.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    ///
    /// # Examples
    ///
    /// See [`UnixDatagram`].
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (a, b) = weft::net::UnixDatagram::pair().unwrap();
    /// let n = reactor.run_until_complete(async move {
    ///     a.send(b"xy").await.unwrap();
    ///     b.recv(&mut [0u8; 8]).await.unwrap()
    /// });
    /// assert_eq!(n.unwrap(), 2);
    /// ```
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.read_with(|s| s.recv(buf)).await
    }
}
