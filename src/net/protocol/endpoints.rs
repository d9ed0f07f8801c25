//! Listening and connecting in protocol style: [`listen_tcp`],
//! [`connect_tcp`] (and the Unix equivalents), over netcore's sockets.
//!
//! Design: a listening port is one local task that accepts (netcore's
//! `poll_accept` already backs off on `EMFILE` instead of spinning) and
//! starts one connection driver per accepted socket, with a fresh protocol
//! from the factory. Stopping is a flag plus a wake; the task drops the
//! listener and then resolves the `Deferred` from
//! [`ListeningPort::stop_listening`], so "resolved" means the port is
//! closed. Connections already accepted are not touched (Twisted's rule).
//!
//! Connecting is one local task: resolve (literal addresses at once, names
//! on the reactor's pool), then try the addresses in order; one overall
//! deadline covers both steps. Cancelling the returned `Deferred` drops
//! the task, which closes any half-open socket.
//!
//! Invariants: a factory panic is caught, logged, and costs only that
//! connection (its socket is dropped); the accept task never calls the
//! factory after `stop_listening`.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};

use super::driver::{Stream, spawn_connection};
use super::{Address, Factory, Transport};
use crate::net::async_io::not_on_loop;
use crate::net::{ResolveError, TcpListener, TcpStream, UnixListener, UnixStream};
use crate::reactor::{self, Handle};
use crate::{Cancelled, Deferred, Resolver, ThreadError};

impl Stream for TcpStream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_read(cx, buf)
    }
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_write_vectored(cx, bufs)
    }
    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Self::try_write_vectored(self, bufs)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
    fn abort(&mut self) {
        // RST instead of FIN: the peer learns the close was not clean.
        let _ = self.set_linger(Some(Duration::ZERO));
    }
    fn set_nodelay(&self, on: bool) -> io::Result<()> {
        TcpStream::set_nodelay(self, on)
    }
    fn local_address(&self) -> io::Result<Address> {
        self.local_addr().map(Address::Inet)
    }
    fn peer_address(&self) -> io::Result<Address> {
        self.peer_addr().map(Address::Inet)
    }
}

/// A socket that accepts connections for a [`ListeningPort`].
pub(crate) trait Acceptor: 'static {
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<Box<dyn Stream>>>;
}

impl Acceptor for TcpListener {
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<Box<dyn Stream>>> {
        TcpListener::poll_accept(self, cx).map_ok(|(s, _)| {
            // weft's default for TCP transports (spec/net.md §8):
            // request/response latency over batching.
            let _ = s.set_nodelay(true);
            Box::new(s) as Box<dyn Stream>
        })
    }
}

#[derive(Default)]
struct PortState {
    stopping: Cell<bool>,
    closed: Cell<bool>,
    waker: RefCell<Option<Waker>>,
    watchers: RefCell<Vec<Resolver<(), Cancelled>>>,
}

/// Marks the port closed (after the listener is dropped) and resolves the
/// `stop_listening` waiters.
struct CloseOnDrop(Rc<PortState>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl PortState {
    fn close(&self) {
        self.closed.set(true);
        for w in self.watchers.take() {
            let _ = w.callback(());
        }
    }
}

/// A listening socket started by [`listen_tcp`] or `listen_unix`.
/// Dropping it does **not** stop listening; call
/// [`stop_listening`](Self::stop_listening).
///
/// # Examples
///
/// ```
/// use weft::net::{Protocol, listen_tcp};
///
/// struct Discard;
/// impl Protocol for Discard {
///     fn data_received(&mut self, _: &[u8]) {}
/// }
///
/// let reactor = weft::Reactor::new().unwrap();
/// let port = listen_tcp("127.0.0.1:0".parse().unwrap(), || Discard).unwrap();
/// assert!(port.local_address().inet().unwrap().port() != 0);
/// let stopped = port.stop_listening();
/// assert_eq!(reactor.run_until_complete(stopped).unwrap(), Ok(()));
/// ```
pub struct ListeningPort {
    local: Address,
    state: Rc<PortState>,
}

impl fmt::Debug for ListeningPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListeningPort")
            .field("local", &self.local)
            .field("stopping", &self.state.stopping.get())
            .finish()
    }
}

impl ListeningPort {
    /// The address the port listens on (with the real port number when
    /// bound to port 0).
    ///
    /// # Examples
    ///
    /// See [`ListeningPort`].
    pub fn local_address(&self) -> Address {
        self.local.clone()
    }

    /// Stops accepting. The returned `Deferred` resolves once the listening
    /// socket is closed. Connections already made go on. Calling it again
    /// returns a `Deferred` that resolves at the same moment.
    ///
    /// # Examples
    ///
    /// See [`ListeningPort`].
    pub fn stop_listening(&self) -> Deferred<(), Cancelled> {
        self.state.stopping.set(true);
        if let Some(w) = self.state.waker.borrow_mut().take() {
            w.wake();
        }
        let d = Deferred::new();
        if self.state.closed.get() {
            let _ = d.callback(());
        } else {
            self.state.watchers.borrow_mut().push(d.resolver());
        }
        d
    }
}

pub(crate) fn listen(
    handle: &Handle,
    acceptor: impl Acceptor,
    local: Address,
    mut factory: impl Factory,
) -> ListeningPort {
    let state = Rc::new(PortState::default());
    let st = state.clone();
    let h = handle.clone();
    let label = local.to_string();
    handle
        .spawn_local(async move {
            // Resolves stop_listening even if the loop shuts down under us.
            let _closed = CloseOnDrop(st.clone());
            loop {
                let next = poll_fn(|cx| {
                    if st.stopping.get() {
                        return Poll::Ready(None);
                    }
                    *st.waker.borrow_mut() = Some(cx.waker().clone());
                    acceptor.poll_accept(cx).map(Some)
                })
                .await;
                match next {
                    None => break,
                    Some(Ok(stream)) => {
                        match catch_unwind(AssertUnwindSafe(|| factory.build_protocol())) {
                            Ok(protocol) => {
                                spawn_connection(&h, stream, protocol);
                            }
                            Err(_) => tracing::error!(
                                port = %label,
                                "protocol factory panicked; dropping the connection"
                            ),
                        }
                    }
                    Some(Err(e)) => {
                        tracing::error!(port = %label, error = %e, "accept failed; port stops listening");
                        break;
                    }
                }
            }
            drop(acceptor);
        })
        .detach();
    ListeningPort { local, state }
}

/// Listens on `addr` and runs one protocol from `factory` per accepted
/// connection (Twisted's `listenTCP`). Accepted sockets get `TCP_NODELAY`.
/// Must be called on the loop thread.
///
/// # Errors
///
/// Binding errors, or `Other` ("not on a reactor's loop thread").
///
/// # Examples
///
/// See [`ListeningPort`].
pub fn listen_tcp(addr: SocketAddr, factory: impl Factory) -> io::Result<ListeningPort> {
    let handle = reactor::current().ok_or_else(not_on_loop)?;
    let listener = TcpListener::bind(addr)?;
    let local = Address::Inet(listener.local_addr()?);
    Ok(listen(&handle, listener, local, factory))
}

/// Why [`connect_tcp`] (or `connect_unix`) failed.
///
/// # Examples
///
/// ```
/// use weft::net::ConnectError;
///
/// assert_eq!(ConnectError::TimedOut.to_string(), "connect timed out");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// The host name did not resolve (or resolved to nothing).
    Resolve(ResolveError),
    /// Every address refused or failed; the last error.
    Connect(io::Error),
    /// The overall deadline passed.
    TimedOut,
    /// The `Deferred` was cancelled, or the loop stopped first.
    Cancelled,
    /// The TLS handshake failed (`connect_tls`, feature `tls`), e.g. the
    /// server's certificate is not trusted; the message says why.
    #[cfg(feature = "tls")]
    Tls(io::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Resolve(e) => write!(f, "could not resolve host: {e}"),
            ConnectError::Connect(e) => write!(f, "connect failed: {e}"),
            ConnectError::TimedOut => f.write_str("connect timed out"),
            ConnectError::Cancelled => f.write_str("connect cancelled"),
            #[cfg(feature = "tls")]
            ConnectError::Tls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Resolve(e) => Some(e),
            ConnectError::Connect(e) => Some(e),
            #[cfg(feature = "tls")]
            ConnectError::Tls(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Cancelled> for ConnectError {
    fn from(_: Cancelled) -> Self {
        ConnectError::Cancelled
    }
}

/// Sorts `TcpStream::connect_host`'s error into a [`ConnectError`].
pub(crate) fn connect_error(e: io::Error) -> ConnectError {
    let kind = e.kind();
    if e.get_ref().is_some_and(|inner| inner.is::<ResolveError>()) {
        let inner = e.into_inner().expect("checked above");
        return match inner.downcast::<ResolveError>().map(|b| *b) {
            Ok(ResolveError::Cancelled) => ConnectError::Cancelled,
            Ok(r) => ConnectError::Resolve(r),
            Err(other) => ConnectError::Connect(io::Error::new(kind, other)),
        };
    }
    ConnectError::Connect(e)
}

/// Runs `connect` as a task with an overall `timeout`; on success builds one
/// protocol from `factory` and starts its connection.
pub(crate) fn connect_with<Fut>(
    handle: &Handle,
    connect: Fut,
    timeout: Duration,
    mut factory: impl Factory,
) -> Deferred<Transport, ConnectError>
where
    Fut: Future<Output = Result<Box<dyn Stream>, ConnectError>> + 'static,
{
    let out: Deferred<Transport, ConnectError> = Deferred::new();
    let r = out.resolver();
    let task = handle.spawn_local(connect);
    let task_r = task.resolver();
    let timer = handle.call_later(timeout, {
        let r = r.clone();
        let task_r = task_r.clone();
        move || {
            let _ = r.errback(ConnectError::TimedOut);
            task_r.cancel();
        }
    });
    r.set_canceller({
        let timer = timer.clone();
        let task_r = task_r.clone();
        move || {
            let _ = timer.cancel();
            task_r.cancel();
        }
    });
    let h = handle.clone();
    task.add_both(move |result| {
        let _ = timer.cancel();
        match result {
            Ok(Ok(stream)) if !r.is_resolved() => {
                match catch_unwind(AssertUnwindSafe(|| factory.build_protocol())) {
                    Ok(protocol) => {
                        let _ = r.callback(spawn_connection(&h, stream, protocol));
                    }
                    Err(_) => {
                        tracing::error!("protocol factory panicked; dropping the connection");
                        let _ = r.errback(ConnectError::Cancelled);
                    }
                }
            }
            Ok(Ok(_stream)) => {} // cancelled or timed out meanwhile: drop it
            Ok(Err(e)) => {
                let _ = r.errback(e);
            }
            Err(ThreadError::Cancelled) | Err(_) => {
                let _ = r.errback(ConnectError::Cancelled);
            }
        }
    });
    out
}

/// Connects to `host:port` and runs one protocol from `factory` on the
/// connection (Twisted's `connectTCP`). `host` is an IP literal or a name
/// (resolved on the reactor's pool); its addresses are raced as RFC 8305
/// says ([`TcpStream::connect_host`]). `timeout` bounds the whole attempt. The `Deferred` gives the transport
/// once `connection_made` is due; cancelling it abandons the attempt.
///
/// # Errors
///
/// The `Deferred` fails with a [`ConnectError`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weft::net::{ConnectError, Protocol, connect_tcp};
///
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _: &[u8]) {}
/// }
///
/// let reactor = weft::Reactor::new().unwrap();
/// // A port nothing listens on: refused.
/// let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
/// let d = connect_tcp("127.0.0.1", port, || Quiet, Duration::from_secs(5));
/// let err = reactor.run_until_complete(d).unwrap().unwrap_err();
/// assert!(matches!(err, ConnectError::Connect(_)));
/// ```
pub fn connect_tcp(
    host: &str,
    port: u16,
    factory: impl Factory,
    timeout: Duration,
) -> Deferred<Transport, ConnectError> {
    let Some(handle) = reactor::current() else {
        return Deferred::fail(ConnectError::Connect(not_on_loop()));
    };
    let host = host.to_owned();
    let connect = async move {
        let s = TcpStream::connect_host(&host, port)
            .await
            .map_err(connect_error)?;
        let _ = s.set_nodelay(true);
        Ok(Box::new(s) as Box<dyn Stream>)
    };
    connect_with(&handle, connect, timeout, factory)
}

fn unix_address(a: std::os::unix::net::SocketAddr) -> Address {
    Address::Unix(a.as_pathname().map(Path::to_path_buf))
}

impl Stream for UnixStream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_read(cx, buf)
    }
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_write_vectored(cx, bufs)
    }
    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Self::try_write_vectored(self, bufs)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
    fn local_address(&self) -> io::Result<Address> {
        self.local_addr().map(unix_address)
    }
    fn peer_address(&self) -> io::Result<Address> {
        self.peer_addr().map(unix_address)
    }
}

impl Acceptor for UnixListener {
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<Box<dyn Stream>>> {
        UnixListener::poll_accept(self, cx).map_ok(|(s, _)| Box::new(s) as Box<dyn Stream>)
    }
}

/// Listens on the Unix socket `path` and runs one protocol from `factory`
/// per connection. The socket file is not removed when the port stops.
///
/// # Errors
///
/// Binding errors (`AddrInUse` if `path` exists), or `Other` off the loop
/// thread.
///
/// # Examples
///
/// ```
/// use weft::net::{Protocol, listen_unix};
///
/// struct Discard;
/// impl Protocol for Discard {
///     fn data_received(&mut self, _: &[u8]) {}
/// }
///
/// let reactor = weft::Reactor::new().unwrap();
/// let path = std::env::temp_dir().join(format!("weft-doc-{}.sock", std::process::id()));
/// let _ = std::fs::remove_file(&path);
/// let port = listen_unix(&path, || Discard).unwrap();
/// reactor.run_until_complete(port.stop_listening()).unwrap().unwrap();
/// std::fs::remove_file(&path).unwrap();
/// ```
pub fn listen_unix(path: impl AsRef<Path>, factory: impl Factory) -> io::Result<ListeningPort> {
    let handle = reactor::current().ok_or_else(not_on_loop)?;
    let listener = UnixListener::bind(path)?;
    let local = unix_address(listener.local_addr()?);
    Ok(listen(&handle, listener, local, factory))
}

/// Connects to the Unix socket `path` and runs one protocol from `factory`
/// on it; like [`connect_tcp`].
///
/// # Errors
///
/// The `Deferred` fails with a [`ConnectError`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weft::net::{ConnectError, Protocol, connect_unix};
///
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _: &[u8]) {}
/// }
///
/// let reactor = weft::Reactor::new().unwrap();
/// let d = connect_unix("/nonexistent/weft.sock", || Quiet, Duration::from_secs(5));
/// let err = reactor.run_until_complete(d).unwrap().unwrap_err();
/// assert!(matches!(err, ConnectError::Connect(_)));
/// ```
pub fn connect_unix(
    path: impl AsRef<Path>,
    factory: impl Factory,
    timeout: Duration,
) -> Deferred<Transport, ConnectError> {
    let Some(handle) = reactor::current() else {
        return Deferred::fail(ConnectError::Connect(not_on_loop()));
    };
    let path: PathBuf = path.as_ref().to_path_buf();
    let connect = async move {
        UnixStream::connect(&path)
            .await
            .map(|s| Box::new(s) as Box<dyn Stream>)
            .map_err(ConnectError::Connect)
    };
    connect_with(&handle, connect, timeout, factory)
}
