//! Handing sockets between loops: `TcpStream::into_std`,
//! `TcpListener::into_std` and the `AsFd`/`AsRawFd` impls.
//!
//! The hazards: bytes that arrived while the socket was registered on the
//! first loop (whose edge-triggered readiness that loop consumed) must be
//! read on the second; the first loop must keep no descriptor of its own
//! (closing the handed-over socket closes the connection); the hand-over
//! must work even when the first loop's reactor is already gone.

use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use weft::Reactor;
use weft::net::{TcpListener, TcpStream};

mod common;
use common::{block_on, loopback};

/// Runs `f` on a fresh reactor on a new thread (the "other loop").
fn on_other_loop<T: Send + 'static, F: Future<Output = T> + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        let reactor = Reactor::new().unwrap();
        block_on(&reactor, f())
    })
    .join()
    .unwrap()
}

#[test]
fn an_accepted_connection_handed_to_another_loop_keeps_the_bytes_that_arrived_before() {
    let reactor = Reactor::new().unwrap();
    let listener = TcpListener::bind(loopback()).unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.write_all(b"early").unwrap();
    let accepted = block_on(&reactor, async move {
        let (s, _) = listener.accept().await.unwrap();
        // Let this loop see (and consume) the readable edge first.
        s.as_async().readable().await.unwrap();
        s
    });
    let socket = accepted.into_std().unwrap();
    let other = std::thread::spawn(move || {
        let reactor = Reactor::new().unwrap();
        block_on(&reactor, async move {
            let mut s = TcpStream::from_std(socket).unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(b"reply").await.unwrap();
            // Bytes sent after the hand-over arrive too.
            let mut more = [0u8; 4];
            s.read_exact(&mut more).await.unwrap();
            (buf, more)
        })
    });
    let mut reply = [0u8; 5];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"reply");
    client.write_all(b"late").unwrap();
    let got = other.join().unwrap();
    assert_eq!(&got.0, b"early");
    assert_eq!(&got.1, b"late");
}

#[test]
fn the_first_loop_keeps_no_descriptor_of_a_handed_over_connection() {
    let reactor = Reactor::new().unwrap();
    let listener = TcpListener::bind(loopback()).unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let accepted = block_on(&reactor, async move { listener.accept().await.unwrap().0 });
    let fd = accepted.as_raw_fd();
    let socket = accepted.into_std().unwrap();
    // The same descriptor, not a duplicate.
    assert_eq!(socket.as_raw_fd(), fd);
    on_other_loop(move || async move {
        let s = TcpStream::from_std(socket).unwrap();
        drop(s);
    });
    // Closing it on the other loop closed the connection: EOF here.
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0);
    // The first loop still runs (nothing of the socket left in its poller).
    assert_eq!(block_on(&reactor, async { 7 }), 7);
}

#[test]
fn a_stream_whose_reactor_is_gone_is_still_handed_back() {
    let reactor = Reactor::new().unwrap();
    let listener = TcpListener::bind(loopback()).unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let accepted = block_on(&reactor, async move { listener.accept().await.unwrap().0 });
    drop(reactor);
    let mut socket = accepted.into_std().unwrap();
    socket.set_nonblocking(false).unwrap();
    client.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    socket.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"x");
}

#[test]
fn a_listener_handed_to_another_loop_accepts_what_waits_in_its_backlog() {
    let reactor = Reactor::new().unwrap();
    let listener = TcpListener::bind(loopback()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    let std_listener = listener.into_std().unwrap();
    drop(reactor);
    assert_eq!(std_listener.local_addr().unwrap(), addr);
    on_other_loop(move || async move {
        let l = TcpListener::from_std(std_listener).unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"ok").await.unwrap();
    });
    let mut b = [0u8; 2];
    client.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ok");
}

#[test]
fn as_fd_is_the_connections_own_socket() {
    let reactor = Reactor::new().unwrap();
    let listener = TcpListener::bind(loopback()).unwrap();
    let laddr = listener.local_addr().unwrap();
    assert_eq!(
        socket2::SockRef::from(&listener)
            .local_addr()
            .unwrap()
            .as_socket(),
        Some(laddr)
    );
    assert_eq!(listener.as_fd().as_raw_fd(), listener.as_raw_fd());
    let client = std::net::TcpStream::connect(laddr).unwrap();
    let accepted = block_on(&reactor, async move { listener.accept().await.unwrap().0 });
    let sock = socket2::SockRef::from(&accepted);
    assert_eq!(
        sock.peer_addr().unwrap().as_socket(),
        Some(client.local_addr().unwrap())
    );
    // An option set through the descriptor is the stream's.
    sock.set_tcp_nodelay(true).unwrap();
    assert!(accepted.nodelay().unwrap());
}
