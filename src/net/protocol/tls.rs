//! Protocols over TLS (feature `tls`): [`listen_tls`] and [`connect_tls`].
//!
//! Design: a TLS connection is one more driver `Stream`. On the client side
//! the handshake runs inside the connect future, so a refused certificate
//! fails the connect `Deferred` with [`ConnectError::Tls`] and no protocol
//! is built. On the server side the accept loop must not wait for one
//! client's handshake, so each accepted socket becomes a `LazyServer` whose
//! first read or write drives the handshake: `connection_made` runs at once
//! (Twisted's order for TLS), writes wait in the transport's buffer, and a
//! failed handshake ends the connection with `connection_lost(Io(..))`.
//!
//! Invariant: the driver only sees the connection drained when rustls has
//! no encrypted bytes left (`poll_flush`), and the half-close sends
//! `close_notify` first (`poll_shutdown_write`).

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};

use super::driver::Stream;
use super::endpoints::{
    Acceptor, ConnectError, ListeningPort, connect_error, connect_with, listen,
};
use super::{Address, Factory, Transport};
use crate::Deferred;
use crate::net::async_io::not_on_loop;
use crate::net::tls::{TlsAcceptor, TlsConnector, TlsStream, handshake_error, rustls};
use crate::net::{TcpListener, TcpStream};
use crate::reactor;

impl Stream for TlsStream {
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
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self).poll_flush(cx)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.get_ref().shutdown(std::net::Shutdown::Write)
    }
    fn poll_shutdown_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // close_notify, flush, then the TCP half-close.
        Pin::new(self).poll_close(cx)
    }
    fn abort(&mut self) {
        let _ = self.get_ref().set_linger(Some(Duration::ZERO));
    }
    fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.get_ref().set_nodelay(on)
    }
    fn local_address(&self) -> io::Result<Address> {
        self.get_ref().local_addr().map(Address::Inet)
    }
    fn peer_address(&self) -> io::Result<Address> {
        self.get_ref().peer_addr().map(Address::Inet)
    }
}

enum ServerState {
    Handshaking(futures_rustls::Accept<TcpStream>),
    Ready(TlsStream),
    /// The handshake failed; its error was reported once already.
    Failed,
}

/// A server-side TLS stream whose handshake runs on first use.
struct LazyServer {
    state: ServerState,
    peer: SocketAddr,
    local: SocketAddr,
}

impl LazyServer {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut TlsStream>> {
        if let ServerState::Handshaking(accept) = &mut self.state {
            match Pin::new(accept).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(s)) => self.state = ServerState::Ready(TlsStream::from_server(s)),
                Poll::Ready(Err(e)) => {
                    self.state = ServerState::Failed;
                    return Poll::Ready(Err(handshake_error(self.peer, e)));
                }
            }
        }
        match &mut self.state {
            ServerState::Ready(s) => Poll::Ready(Ok(s)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }
}

impl Stream for LazyServer {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.poll_ready(cx) {
            Poll::Ready(Ok(s)) => Stream::poll_read(s, cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.poll_ready(cx) {
            Poll::Ready(Ok(s)) => Stream::poll_write_vectored(s, cx, bufs),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.state {
            ServerState::Ready(s) => Stream::poll_flush(s, cx),
            // Nothing of the application's is held before the handshake.
            _ => Poll::Ready(Ok(())),
        }
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        match &mut self.state {
            ServerState::Ready(s) => s.shutdown_write(),
            _ => Ok(()),
        }
    }
    fn poll_shutdown_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.state {
            ServerState::Ready(s) => s.poll_shutdown_write(cx),
            // Closing before the handshake finished: dropping the socket
            // next is the whole close.
            _ => Poll::Ready(Ok(())),
        }
    }
    fn abort(&mut self) {
        if let ServerState::Ready(s) = &mut self.state {
            s.abort();
        }
    }
    fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match &self.state {
            ServerState::Ready(s) => s.get_ref().set_nodelay(on),
            _ => Err(io::ErrorKind::NotConnected.into()),
        }
    }
    fn local_address(&self) -> io::Result<Address> {
        Ok(Address::Inet(self.local))
    }
    fn peer_address(&self) -> io::Result<Address> {
        Ok(Address::Inet(self.peer))
    }
}

struct TlsListener {
    tcp: TcpListener,
    tls: TlsAcceptor,
}

impl Acceptor for TlsListener {
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<Box<dyn Stream>>> {
        self.tcp.poll_accept(cx).map_ok(|(s, peer)| {
            let _ = s.set_nodelay(true);
            let local = s.local_addr().unwrap_or(peer);
            Box::new(LazyServer {
                state: ServerState::Handshaking(self.tls.start(s)),
                peer,
                local,
            }) as Box<dyn Stream>
        })
    }
}

/// Listens on `addr` for TLS connections (configured by `config`); each
/// gets a protocol from `factory`. `connection_made` runs on accept; the
/// handshake runs with the first read or write, and a failed handshake
/// ends the connection with [`CloseReason::Io`](crate::net::CloseReason::Io).
///
/// # Errors
///
/// Called off a loop thread, or the bind failed.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use weft::net::tls::rustls;
/// use weft::net::{Protocol, Transport, listen_tls};
///
/// struct Echo(Option<Transport>);
/// impl Protocol for Echo {
///     fn connection_made(&mut self, t: Transport) { self.0 = Some(t); }
///     fn data_received(&mut self, data: &[u8]) {
///         let _ = self.0.as_ref().unwrap().write(data);
///     }
/// }
///
/// let reactor = weft::Reactor::new().unwrap();
/// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let config = rustls::ServerConfig::builder()
///     .with_no_client_auth()
///     .with_single_cert(
///         vec![cert.cert.der().clone()],
///         rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into()),
///     )
///     .unwrap();
/// let port = listen_tls("127.0.0.1:0".parse().unwrap(), Arc::new(config), || Echo(None)).unwrap();
/// assert!(port.local_address().inet().is_some());
/// ```
pub fn listen_tls(
    addr: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    factory: impl Factory,
) -> io::Result<ListeningPort> {
    let handle = reactor::current().ok_or_else(not_on_loop)?;
    let tcp = TcpListener::bind(addr)?;
    let local = Address::Inet(tcp.local_addr()?);
    let tls = TlsAcceptor::new(config);
    Ok(listen(&handle, TlsListener { tcp, tls }, local, factory))
}

/// Connects to `host:port` (resolved and raced as
/// [`connect_tcp`](crate::net::connect_tcp) does), runs the TLS handshake
/// checking the certificate against `host`, then starts a protocol from
/// `factory`. `timeout` covers all of it.
///
/// # Errors
///
/// The `Deferred` fails with [`ConnectError::Tls`] if the handshake fails
/// (e.g. an untrusted certificate), or as `connect_tcp` does.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use weft::net::tls::rustls;
/// use weft::net::{ConnectError, Protocol, connect_tls};
///
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _: &[u8]) {}
/// }
///
/// let reactor = weft::Reactor::new().unwrap();
/// let config = rustls::ClientConfig::builder()
///     .with_root_certificates(rustls::RootCertStore::empty())
///     .with_no_client_auth();
/// // Nothing listens on port 1: the TCP connect itself fails.
/// let d = connect_tls("127.0.0.1", 1, Arc::new(config), || Quiet, Duration::from_secs(5));
/// let err = reactor.run_until_complete(d).unwrap().unwrap_err();
/// assert!(matches!(err, ConnectError::Connect(_)));
/// ```
pub fn connect_tls(
    host: &str,
    port: u16,
    config: Arc<rustls::ClientConfig>,
    factory: impl Factory,
    timeout: Duration,
) -> Deferred<Transport, ConnectError> {
    let Some(handle) = reactor::current() else {
        return Deferred::fail(ConnectError::Connect(not_on_loop()));
    };
    let host = host.to_owned();
    let connector = TlsConnector::new(config);
    let connect = async move {
        let s = TcpStream::connect_host(&host, port)
            .await
            .map_err(connect_error)?;
        let _ = s.set_nodelay(true);
        // IP literals are checked against the certificate's IP names.
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let tls = connector
            .connect(name, s)
            .await
            .map_err(ConnectError::Tls)?;
        Ok(Box::new(tls) as Box<dyn Stream>)
    };
    connect_with(&handle, connect, timeout, factory)
}
