//! TLS (feature `tls`) over loopback with a certificate made at test time:
//! echo in the async style and the protocol style, and clients refusing an
//! untrusted certificate. Client and server share one loop; every wait is
//! on an event, nothing sleeps.

#![cfg(feature = "tls")]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use weft::net::tls::{TlsAcceptor, TlsConnector, rustls};
use weft::net::{
    CloseReason, ConnectError, Protocol, TcpListener, TcpStream, Transport, connect_tls, listen_tls,
};
use weft::{Cancelled, Deferred, Reactor, Resolver};

const TIMEOUT: Duration = Duration::from_secs(20);

struct Pki {
    server: Arc<rustls::ServerConfig>,
    trusting: Arc<rustls::ClientConfig>,
    untrusting: Arc<rustls::ClientConfig>,
}

fn pki() -> Pki {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let trusting = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Trusts nothing: the self-signed certificate has no known issuer.
    let untrusting = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Pki {
        server: Arc::new(server),
        trusting: Arc::new(trusting),
        untrusting: Arc::new(untrusting),
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// 1 MiB of a pattern: more than the socket buffers, so writes must wait.
fn payload() -> Vec<u8> {
    (0..1 << 20).map(|i: u32| (i % 251) as u8).collect()
}

#[test]
fn async_style_echo() {
    let pki = pki();
    let reactor = Reactor::new().unwrap();
    let listener = TcpListener::bind(any_port()).unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::new(pki.server.clone());
    reactor
        .spawn_local(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut s = acceptor.accept(tcp).await.unwrap();
            let mut buf = vec![0; 16 * 1024];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).await.unwrap();
            }
            s.close().await.unwrap();
        })
        .detach();
    let connector = TlsConnector::new(pki.trusting.clone());
    let data = payload();
    let sent = data.clone();
    let got = reactor
        .run_until_complete(async move {
            let tcp = TcpStream::connect(addr).await?;
            let s = connector.connect("localhost", tcp).await?;
            assert_eq!(s.peer_addr()?, addr);
            let (mut r, mut w) = futures_lite::io::split(s);
            let writer = weft::reactor::current().unwrap().spawn_local(async move {
                w.write_all(&sent).await?;
                w.close().await // close_notify: the server's read ends
            });
            let mut got = Vec::new();
            r.read_to_end(&mut got).await?;
            writer.await.unwrap()?;
            std::io::Result::Ok(got)
        })
        .unwrap()
        .unwrap();
    assert!(got == data, "echo differs ({} bytes back)", got.len());
}

#[test]
fn async_client_refuses_an_untrusted_certificate() {
    let pki = pki();
    let reactor = Reactor::new().unwrap();
    let listener = TcpListener::bind(any_port()).unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::new(pki.server.clone());
    let server = reactor.spawn_local(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.map(drop)
    });
    let connector = TlsConnector::new(pki.untrusting.clone());
    let err = reactor
        .run_until_complete(async move {
            let tcp = TcpStream::connect(addr).await?;
            connector.connect("localhost", tcp).await.map(drop)
        })
        .unwrap()
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    assert!(msg.contains("localhost"), "names the peer: {msg}");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    // The server hears the client's alert as a failed handshake.
    assert!(
        reactor
            .run_until_complete(server)
            .unwrap()
            .unwrap()
            .is_err()
    );
    // A malformed name is refused before any handshake.
    let connector = TlsConnector::new(pki.trusting);
    let l2 = TcpListener::bind(any_port()).unwrap();
    let a2 = l2.local_addr().unwrap();
    let err = reactor
        .run_until_complete(async move {
            let tcp = TcpStream::connect(a2).await?;
            connector.connect("not a name!", tcp).await.map(drop)
        })
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    drop(l2);
}

/// Echoes and records how its connection ended.
struct Echo {
    t: Option<Transport>,
    lost: Option<Resolver<String, Cancelled>>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.t.as_ref().unwrap().write(data).unwrap();
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        if let Some(r) = self.lost.take() {
            let _ = r.callback(format!("{reason:?}"));
        }
    }
}

/// Sends `data`, collects the echo, closes once all came back.
struct Client {
    data: Rc<Vec<u8>>,
    got: Vec<u8>,
    t: Option<Transport>,
    done: Option<Resolver<(Vec<u8>, String), Cancelled>>,
}

impl Protocol for Client {
    fn connection_made(&mut self, t: Transport) {
        t.write(&self.data).unwrap();
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
        if self.got.len() >= self.data.len() {
            self.t.as_ref().unwrap().lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        if let Some(r) = self.done.take() {
            let _ = r.callback((std::mem::take(&mut self.got), format!("{reason:?}")));
        }
    }
}

#[test]
fn protocol_style_echo() {
    let pki = pki();
    let reactor = Reactor::new().unwrap();
    let server_lost: Deferred<String, Cancelled> = Deferred::new();
    let sl = RefCell::new(Some(server_lost.resolver()));
    let port = listen_tls(any_port(), pki.server.clone(), move || Echo {
        t: None,
        lost: sl.borrow_mut().take(),
    })
    .unwrap();
    let p = port.local_address().inet().unwrap().port();
    let data = Rc::new(payload());
    let done: Deferred<(Vec<u8>, String), Cancelled> = Deferred::new();
    let c = RefCell::new(Some(done.resolver()));
    let d = data.clone();
    let connected = connect_tls(
        "127.0.0.1",
        p,
        pki.trusting.clone(),
        move || Client {
            data: d.clone(),
            got: Vec::new(),
            t: None,
            done: c.borrow_mut().take(),
        },
        TIMEOUT,
    );
    let transport = reactor.run_until_complete(connected).unwrap().unwrap();
    assert!(transport.peer_address().is_some());
    let (got, reason) = reactor.run_until_complete(done).unwrap().unwrap();
    assert!(got == *data, "echo differs ({} bytes back)", got.len());
    assert_eq!(reason, "Done");
    // The server saw close_notify and a clean end.
    let server = reactor.run_until_complete(server_lost).unwrap().unwrap();
    assert_eq!(server, "Done");
    let _ = reactor.run_until_complete(port.stop_listening());
}

#[test]
fn connect_tls_refuses_an_untrusted_certificate() {
    let pki = pki();
    let reactor = Reactor::new().unwrap();
    let server_lost: Deferred<String, Cancelled> = Deferred::new();
    let sl = RefCell::new(Some(server_lost.resolver()));
    let port = listen_tls(any_port(), pki.server.clone(), move || Echo {
        t: None,
        lost: sl.borrow_mut().take(),
    })
    .unwrap();
    let p = port.local_address().inet().unwrap().port();
    let built = Rc::new(RefCell::new(0));
    let b = built.clone();
    let connected = connect_tls(
        "localhost",
        p,
        pki.untrusting.clone(),
        move || {
            *b.borrow_mut() += 1;
            Client {
                data: Rc::new(Vec::new()),
                got: Vec::new(),
                t: None,
                done: None,
            }
        },
        TIMEOUT,
    );
    let err = reactor.run_until_complete(connected).unwrap().unwrap_err();
    match &err {
        ConnectError::Tls(e) => assert!(e.to_string().contains("UnknownIssuer"), "{e}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert_eq!(*built.borrow(), 0, "no protocol for a refused server");
    // The server's protocol hears the failed handshake as an I/O error.
    let server = reactor.run_until_complete(server_lost).unwrap().unwrap();
    assert!(server.starts_with("Io("), "{server}");
}
