//! TCP on the loop: echo, many connections, half-close, reset, refused
//! connects, and edge-triggered readiness that never loses a wake-up.

use std::cell::Cell;
use std::io;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use weft::Reactor;
use weft::net::{TcpListener, TcpStream};

mod common;
use common::{block_on, loopback};

/// Accepts forever, echoing each connection until EOF, then half-closing.
fn spawn_echo_server(reactor: &Reactor, listener: TcpListener) {
    let handle = reactor.handle();
    reactor
        .spawn_local(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                handle
                    .spawn_local(async move {
                        let mut buf = vec![0u8; 4096];
                        loop {
                            let n = (&stream).read(&mut buf).await.unwrap();
                            if n == 0 {
                                break;
                            }
                            (&stream).write_all(&buf[..n]).await.unwrap();
                        }
                        stream.shutdown(Shutdown::Write).unwrap();
                    })
                    .detach();
            }
        })
        .detach();
}

#[test]
fn echo_round_trips_on_ipv4_and_ipv6_loopback() {
    let reactor = Reactor::new().unwrap();
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        let listener = match TcpListener::bind(addr.parse().unwrap()) {
            Ok(l) => l,
            Err(e) if addr.starts_with('[') => {
                eprintln!("skipping IPv6: {e}");
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        let addr = listener.local_addr().unwrap();
        spawn_echo_server(&reactor, listener);
        let got = block_on(&reactor, async move {
            let mut c = TcpStream::connect(addr).await?;
            c.set_nodelay(true)?;
            let mut out = Vec::new();
            for i in 0..100u32 {
                let msg = format!("message {i}\n");
                c.write_all(msg.as_bytes()).await?;
                let mut buf = vec![0u8; msg.len()];
                c.read_exact(&mut buf).await?;
                out.push(String::from_utf8(buf).unwrap());
            }
            io::Result::Ok(out)
        })
        .unwrap();
        assert_eq!(got.len(), 100);
        assert_eq!(got[42], "message 42\n");
    }
}

#[test]
fn a_thousand_concurrent_connections_on_one_loop() {
    const N: usize = 1000;
    // Both ends live in this process: about 2 * N descriptors. Raise the
    // soft limit to the hard one (a common soft default is 1024).
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if limit.current.is_some_and(|c| c < 4 * N as u64) {
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
    let reactor = Reactor::new().unwrap();
    let listener = TcpListener::bind(loopback()).unwrap();
    let addr = listener.local_addr().unwrap();
    spawn_echo_server(&reactor, listener);
    let done = Rc::new(Cell::new(0usize));
    let mut clients = Vec::new();
    for i in 0..N {
        let done = done.clone();
        clients.push(reactor.spawn_local(async move {
            let mut c = TcpStream::connect(addr).await?;
            let msg = format!("client {i}");
            c.write_all(msg.as_bytes()).await?;
            c.close().await?;
            let mut back = String::new();
            c.read_to_string(&mut back).await?;
            assert_eq!(back, msg);
            done.set(done.get() + 1);
            io::Result::Ok(())
        }));
    }
    block_on(&reactor, async move {
        for c in clients {
            c.await.unwrap().unwrap();
        }
    });
    assert_eq!(done.get(), N);
}

#[test]
fn half_close_lets_the_other_direction_finish() {
    let reactor = Reactor::new().unwrap();
    let listener = TcpListener::bind(loopback()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = reactor.spawn_local(async move {
        let (mut s, _) = listener.accept().await?;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await?; // EOF from the client's half-close
        // This side can still write after reading EOF.
        s.write_all(format!("got {} bytes", got.len()).as_bytes())
            .await?;
        s.close().await?;
        io::Result::Ok(got)
    });
    let reply = block_on(&reactor, async move {
        let mut c = TcpStream::connect(addr).await?;
        c.write_all(&[7u8; 10_000]).await?;
        c.shutdown(Shutdown::Write)?;
        let mut reply = String::new();
        c.read_to_string(&mut reply).await?;
        io::Result::Ok(reply)
    })
    .unwrap();
    assert_eq!(reply, "got 10000 bytes");
    let got = block_on(&reactor, server).unwrap().unwrap();
    assert_eq!(got, vec![7u8; 10_000]);
}

#[test]
fn a_reset_by_the_peer_is_an_error_value() {
    let reactor = Reactor::new().unwrap();
    let listener = TcpListener::bind(loopback()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = reactor.spawn_local(async move {
        let (s, _) = listener.accept().await.unwrap();
        s.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s); // RST
    });
    let result = block_on(&reactor, async move {
        let mut c = TcpStream::connect(addr).await?;
        server.await.unwrap();
        // Reads (and then writes) must fail or see EOF, never hang/panic.
        let mut buf = [0u8; 16];
        let read = c.read(&mut buf).await;
        let mut write = Ok(());
        for _ in 0..10 {
            write = c.write_all(b"after reset").await;
            if write.is_err() {
                break;
            }
        }
        io::Result::Ok((read, write))
    })
    .unwrap();
    let (read, write) = result;
    assert_eq!(
        read.unwrap_err().kind(),
        io::ErrorKind::ConnectionReset,
        "a read after a RST reports the reset"
    );
    assert!(write.is_err());
}

#[test]
fn connecting_to_a_closed_port_is_refused_not_hung() {
    let reactor = Reactor::new().unwrap();
    let addr = {
        let l = std::net::TcpListener::bind(loopback()).unwrap();
        l.local_addr().unwrap()
    };
    let turns_before = reactor.statistics().turns;
    let err = block_on(&reactor, TcpStream::connect(addr)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    // "Quickly" without a clock: a handful of turns, not a timeout.
    assert!(reactor.statistics().turns - turns_before < 10);
}

/// Writer and reader tasks on one loop, both pieces small and large: a lost
/// edge would hang the test (caught by the watchdog) instead of finishing.
#[test]
fn no_wakeup_is_lost_with_small_and_large_writes_and_small_reads() {
    let reactor = Reactor::new().unwrap();
    let listener = TcpListener::bind(loopback()).unwrap();
    let addr = listener.local_addr().unwrap();
    let pattern: Rc<Vec<u8>> = Rc::new((0..4_000_000u32).map(|i| (i % 251) as u8).collect());
    let p = pattern.clone();
    let writer = reactor.spawn_local(async move {
        let (mut s, _) = listener.accept().await?;
        let (small, large) = p.split_at(200_000);
        for piece in small.chunks(7) {
            s.write_all(piece).await?;
        }
        s.write_all(large).await?; // far beyond the socket buffers
        s.close().await?;
        io::Result::Ok(())
    });
    let got = block_on(&reactor, async move {
        let mut c = TcpStream::connect(addr).await?;
        let mut got = Vec::with_capacity(4_000_000);
        let mut buf = [0u8; 13];
        loop {
            let n = c.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        io::Result::Ok(got)
    })
    .unwrap();
    block_on(&reactor, writer).unwrap().unwrap();
    assert_eq!(got.len(), pattern.len());
    assert!(got == *pattern);
}

/// Data and the FIN arrive before the first read, so epoll reports them in
/// one edge; a read that takes all the data (fewer bytes than the buffer)
/// must not make the EOF wait for an edge that never comes.
#[test]
fn eof_that_arrived_with_the_data_is_seen() {
    let reactor = Reactor::new().unwrap();
    let listener = TcpListener::bind(loopback()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    io::Write::write_all(&mut client, b"abc").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let got = block_on(&reactor, async move {
        let (mut s, _) = listener.accept().await?;
        // Let the loop see the combined edge before reading.
        weft::reactor::current()
            .unwrap()
            .sleep(Duration::from_millis(20))
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let first = s.read(&mut buf).await?;
        let second = s.read(&mut buf).await?;
        io::Result::Ok((first, second))
    })
    .unwrap();
    assert_eq!(got, (3, 0));
    drop(client);
}

#[test]
fn cancelled_accept_and_read_futures_lose_nothing() {
    let reactor = Reactor::new().unwrap();
    let listener = Rc::new(TcpListener::bind(loopback()).unwrap());
    let addr = listener.local_addr().unwrap();
    // An accept future that is polled once and dropped.
    let l = listener.clone();
    block_on(&reactor, async move {
        let fut = std::pin::pin!(l.accept());
        let polled = futures_lite::future::poll_once(fut).await;
        assert!(polled.is_none());
    });
    let client = std::net::TcpStream::connect(addr).unwrap();
    let (server, _) = block_on(&reactor, async move { listener.accept().await }).unwrap();
    // A read future polled once (no data yet) and dropped; then data comes.
    let server = Rc::new(server);
    let s = server.clone();
    block_on(&reactor, async move {
        let mut buf = [0u8; 4];
        let mut r: &weft::net::TcpStream = &s;
        let fut = std::pin::pin!(r.read(&mut buf));
        assert!(futures_lite::future::poll_once(fut).await.is_none());
    });
    io::Write::write_all(&mut &client, b"data").unwrap();
    let got = block_on(&reactor, async move {
        let mut buf = [0u8; 4];
        (&*server).read_exact(&mut buf).await.map(|()| buf)
    })
    .unwrap();
    assert_eq!(&got, b"data");
}

#[test]
fn net_types_need_a_loop_thread() {
    let err = std::thread::spawn(|| TcpListener::bind(loopback()).unwrap_err().to_string())
        .join()
        .unwrap();
    assert!(err.contains("loop thread"), "{err}");
}
