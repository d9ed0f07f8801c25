//! Waker-free writes: `try_write`/`try_write_vectored` on streams, and
//! `Transport::write` sending at once from outside the connection's
//! callbacks. Unix sockets deliver into the peer's queue within the write
//! call, so "the peer can read it now, with no loop turn" is exact.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read};
use std::rc::Rc;
use std::task::{Context, Waker};
use std::time::Duration;

use futures_io::AsyncWrite;
use weft::net::{Protocol, Transport, UnixStream, listen_unix};
use weft::{Cancelled, Deferred, Reactor, Resolver};

#[test]
fn try_write_fills_the_socket_then_would_block_and_a_poll_waits_for_the_drain() {
    let reactor = Reactor::new().unwrap();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut a = UnixStream::from_std(a).unwrap();
    let chunk = [7u8; 64 * 1024];
    let mut sent = 0;
    loop {
        match a.try_write_vectored(&[IoSlice::new(&chunk[..1]), IoSlice::new(&chunk)]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sent > 0);
    // Readiness was cleared: a poll registers and waits (no busy retry).
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        std::pin::Pin::new(&mut a)
            .poll_write(&mut cx, b"x")
            .is_pending()
    );
    assert_eq!(
        a.try_write(b"x").unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    // The peer drains everything; the next edge makes the stream writable.
    let mut b = b;
    b.set_nonblocking(true).unwrap();
    let mut buf = vec![0; 256 * 1024];
    let mut got = 0;
    while got < sent {
        got += b.read(&mut buf).unwrap();
    }
    let n = reactor
        .run_until_complete(async move { futures_lite::AsyncWriteExt::write(&mut a, b"y").await })
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);
}

struct Keep(Option<Resolver<Transport, Cancelled>>);

impl Protocol for Keep {
    fn connection_made(&mut self, t: Transport) {
        let _ = self.0.take().unwrap().callback(t);
    }
    fn data_received(&mut self, _: &[u8]) {}
}

#[test]
fn transport_write_outside_callbacks_reaches_the_peer_without_a_turn() {
    let reactor = Reactor::new().unwrap();
    let path = std::env::temp_dir().join(format!("weft-try-write-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let made: Deferred<Transport, Cancelled> = Deferred::new();
    let r = RefCell::new(Some(made.resolver()));
    let port = listen_unix(&path, move || Keep(r.borrow_mut().take())).unwrap();
    let mut peer = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let t = reactor.run_until_complete(made).unwrap().unwrap();
    peer.set_nonblocking(true).unwrap();
    // Outside any callback, no loop turn in between.
    t.write_sequence(&[b"now ", b"", b"and here"]).unwrap();
    let mut buf = [0u8; 64];
    let n = peer.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"now and here");
    assert_eq!(t.write_buffer_size(), 0);
    // A reactor callback is not the connection's own: it sends at once too.
    let t2 = t.clone();
    let buffered = Rc::new(RefCell::new(None));
    let b = buffered.clone();
    reactor.call_soon(move || {
        t2.write(b"later").unwrap();
        *b.borrow_mut() = Some(t2.write_buffer_size());
    });
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(*buffered.borrow(), Some(0));
    peer.set_nonblocking(false).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let n = peer.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"later");
    let _ = reactor.run_until_complete(port.stop_listening());
    let _ = std::fs::remove_file(&path);
}
