//! TLS on [`TcpStream`]s (feature `tls`): rustls with the ring provider.
//!
//! Two styles, as for plain TCP:
//!
//! - async: [`TlsConnector::connect`] / [`TlsAcceptor::accept`] give a
//!   [`TlsStream`] implementing `futures_io::AsyncRead`/`AsyncWrite`;
//! - protocol: [`listen_tls`](crate::net::listen_tls) and
//!   [`connect_tls`](crate::net::connect_tls) run a
//!   [`Protocol`](crate::net::Protocol) over TLS.
//!
//! Configurations are plain rustls ones ([`rustls`] is re-exported so the
//! versions match); `ClientConfig::builder()` picks the ring provider, the
//! only one compiled in.
//!
//! # Design
//!
//! The record layer is futures-rustls over weft's `TcpStream` (itself a
//! registered socket with per-direction readiness), so a TLS stream waits
//! on the reactor like any socket. rustls may hold encrypted bytes after a
//! write returned: `poll_flush` pushes them out, and the protocol driver
//! counts a connection drained only once it is ready (otherwise the last
//! records could sit in rustls forever). Closing sends `close_notify` before
//! the TCP half-close.
//!
//! Handshake failures are `io::Error`s whose message names the peer and the
//! rustls reason (e.g. `invalid peer certificate: UnknownIssuer`), and whose
//! `source()` is the rustls error.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
pub use futures_rustls::rustls;
use futures_rustls::rustls::pki_types::ServerName;

use super::TcpStream;

/// A handshake that failed, with whom.
#[derive(Debug)]
struct HandshakeError {
    peer: String,
    source: io::Error,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TLS handshake with {} failed: {}",
            self.peer, self.source
        )
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

pub(crate) fn handshake_error(peer: impl fmt::Display, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        HandshakeError {
            peer: peer.to_string(),
            source: e,
        },
    )
}

/// Starts client-side TLS on connected `TcpStream`s.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use weft::net::tls::{TlsConnector, rustls};
///
/// let roots = rustls::RootCertStore::empty(); // add your CA here
/// let config = rustls::ClientConfig::builder()
///     .with_root_certificates(roots)
///     .with_no_client_auth();
/// let connector = TlsConnector::new(Arc::new(config));
/// # drop(connector);
/// ```
#[derive(Clone)]
pub struct TlsConnector {
    inner: futures_rustls::TlsConnector,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// A connector using `config`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use weft::net::tls::{TlsConnector, rustls};
    ///
    /// let config = rustls::ClientConfig::builder()
    ///     .with_root_certificates(rustls::RootCertStore::empty())
    ///     .with_no_client_auth();
    /// let _connector = TlsConnector::new(Arc::new(config));
    /// ```
    pub fn new(config: Arc<rustls::ClientConfig>) -> TlsConnector {
        TlsConnector {
            inner: futures_rustls::TlsConnector::from(config),
        }
    }

    /// Runs the client handshake on `stream`, checking the server's
    /// certificate against `server_name` (a DNS name or an IP literal).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a malformed `server_name`; the handshake's
    /// failure otherwise (an untrusted certificate gives `InvalidData` with
    /// rustls's reason in the message).
    ///
    /// # Examples
    ///
    /// An untrusted server is refused (here: no trusted roots at all):
    ///
    /// ```
    /// use std::sync::Arc;
    /// use weft::net::tls::{TlsAcceptor, TlsConnector, rustls};
    /// use weft::net::{TcpListener, TcpStream};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// let server = rustls::ServerConfig::builder()
    ///     .with_no_client_auth()
    ///     .with_single_cert(
    ///         vec![cert.cert.der().clone()],
    ///         rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into()),
    ///     )
    ///     .unwrap();
    /// let acceptor = TlsAcceptor::new(Arc::new(server));
    /// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let addr = listener.local_addr().unwrap();
    /// reactor.spawn_local(async move {
    ///     let (s, _) = listener.accept().await.unwrap();
    ///     let _ = acceptor.accept(s).await;
    /// }).detach();
    /// let client = rustls::ClientConfig::builder()
    ///     .with_root_certificates(rustls::RootCertStore::empty())
    ///     .with_no_client_auth();
    /// let connector = TlsConnector::new(Arc::new(client));
    /// let err = reactor.run_until_complete(async move {
    ///     let tcp = TcpStream::connect(addr).await?;
    ///     connector.connect("localhost", tcp).await.map(drop)
    /// }).unwrap().unwrap_err();
    /// assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    /// ```
    pub async fn connect(&self, server_name: &str, stream: TcpStream) -> io::Result<TlsStream> {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid TLS server name {server_name:?}: {e}"),
            )
        })?;
        let peer = stream.peer_addr().map_or_else(
            |_| server_name.to_owned(),
            |a| format!("{server_name} ({a})"),
        );
        let s = self
            .inner
            .connect(name, stream)
            .await
            .map_err(|e| handshake_error(peer, e))?;
        Ok(TlsStream {
            inner: futures_rustls::TlsStream::Client(s),
        })
    }
}

/// Starts server-side TLS on accepted `TcpStream`s.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use weft::net::tls::{TlsAcceptor, rustls};
///
/// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let config = rustls::ServerConfig::builder()
///     .with_no_client_auth()
///     .with_single_cert(
///         vec![cert.cert.der().clone()],
///         rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into()),
///     )
///     .unwrap();
/// let _acceptor = TlsAcceptor::new(Arc::new(config));
/// ```
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: futures_rustls::TlsAcceptor,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor").finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// An acceptor using `config`.
    ///
    /// # Examples
    ///
    /// See [`TlsAcceptor`].
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use weft::net::tls::{TlsAcceptor, rustls};
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// # let config = rustls::ServerConfig::builder().with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()],
    /// #         rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into()))
    /// #     .unwrap();
    /// let acceptor = TlsAcceptor::new(Arc::new(config));
    /// # drop(acceptor);
    /// ```
    pub fn new(config: Arc<rustls::ServerConfig>) -> TlsAcceptor {
        TlsAcceptor {
            inner: futures_rustls::TlsAcceptor::from(config),
        }
    }

    /// Runs the server handshake on `stream`.
    ///
    /// # Errors
    ///
    /// The handshake's failure (e.g. the client refused the certificate).
    ///
    /// # Examples
    ///
    /// See [`TlsConnector::connect`] and the crate's `tests/net_tls.rs`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use weft::net::tls::{TlsAcceptor, rustls};
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// # let config = rustls::ServerConfig::builder().with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()],
    /// #         rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into()))
    /// #     .unwrap();
    /// let reactor = weft::Reactor::new().unwrap();
    /// let acceptor = TlsAcceptor::new(Arc::new(config));
    /// // A peer that hangs up during the handshake is an error:
    /// let listener = weft::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let addr = listener.local_addr().unwrap();
    /// let err = reactor.run_until_complete(async move {
    ///     drop(std::net::TcpStream::connect(addr).unwrap());
    ///     let (s, _) = listener.accept().await?;
    ///     acceptor.accept(s).await.map(drop)
    /// }).unwrap();
    /// assert!(err.is_err());
    /// ```
    pub async fn accept(&self, stream: TcpStream) -> io::Result<TlsStream> {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "a client".to_owned(), |a| a.to_string());
        let s = self
            .inner
            .accept(stream)
            .await
            .map_err(|e| handshake_error(peer, e))?;
        Ok(TlsStream {
            inner: futures_rustls::TlsStream::Server(s),
        })
    }

    pub(crate) fn start(&self, stream: TcpStream) -> futures_rustls::Accept<TcpStream> {
        self.inner.accept(stream)
    }
}

/// A TLS connection over a [`TcpStream`], client or server side.
///
/// `AsyncWrite::poll_close` sends `close_notify`, then half-closes the
/// socket.
///
/// # Examples
///
/// See [`TlsConnector::connect`]; an echo in both styles is in
/// `tests/net_tls.rs`.
///
/// ```
/// fn assert_io<T: futures_io::AsyncRead + futures_io::AsyncWrite>() {}
/// assert_io::<weft::net::tls::TlsStream>();
/// ```
pub struct TlsStream {
    inner: futures_rustls::TlsStream<TcpStream>,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.inner {
            futures_rustls::TlsStream::Client(_) => "client",
            futures_rustls::TlsStream::Server(_) => "server",
        };
        f.debug_struct("TlsStream")
            .field("side", &side)
            .field("tcp", self.get_ref())
            .finish()
    }
}

impl TlsStream {
    pub(crate) fn from_server(s: futures_rustls::server::TlsStream<TcpStream>) -> TlsStream {
        TlsStream {
            inner: futures_rustls::TlsStream::Server(s),
        }
    }

    /// The TCP stream underneath.
    ///
    /// # Examples
    ///
    /// ```
    /// fn peer(s: &weft::net::tls::TlsStream) -> std::net::SocketAddr {
    ///     s.get_ref().peer_addr().unwrap()
    /// }
    /// ```
    pub fn get_ref(&self) -> &TcpStream {
        self.inner.get_ref().0
    }

    /// The peer's address.
    ///
    /// # Examples
    ///
    /// ```
    /// fn peer(s: &weft::net::tls::TlsStream) -> std::io::Result<std::net::SocketAddr> {
    ///     s.peer_addr()
    /// }
    /// ```
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().peer_addr()
    }

    /// The ALPN protocol agreed on in the handshake, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// fn is_h2(s: &weft::net::tls::TlsStream) -> bool {
    ///     s.alpn_protocol() == Some(b"h2")
    /// }
    /// ```
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.inner.get_ref().1.alpn_protocol()
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read_vectored(cx, bufs)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}
