//! Unix-domain sockets on the loop: stream echo through a listener, pairs,
//! half-close, and datagrams.

use std::io;
use std::net::Shutdown;
use std::path::PathBuf;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use weft::Reactor;
use weft::net::{UnixDatagram, UnixListener, UnixStream};

mod common;
use common::block_on;

/// A fresh socket path in a per-test directory, removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        let dir = std::env::temp_dir().join(format!("weft-net-unix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn unix_stream_echo_through_a_listener() {
    let path = TempPath::new("echo.sock");
    let reactor = Reactor::new().unwrap();
    let listener = UnixListener::bind(&path.0).unwrap();
    let handle = reactor.handle();
    reactor
        .spawn_local(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                handle
                    .spawn_local(async move {
                        let mut w = &s;
                        futures_lite::io::copy(&s, &mut w).await.unwrap();
                        s.shutdown(Shutdown::Write).unwrap();
                    })
                    .detach();
            }
        })
        .detach();
    let p = path.0.clone();
    let replies = block_on(&reactor, async move {
        let mut replies = Vec::new();
        for i in 0..10 {
            let mut c = UnixStream::connect(&p).await?;
            let msg = vec![i as u8; 100_000];
            let writer = async {
                (&c).write_all(&msg).await?;
                c.shutdown(Shutdown::Write)
            };
            let mut back = Vec::new();
            let mut r = &c;
            let reader = r.read_to_end(&mut back);
            let (w, r) = futures_lite::future::zip(writer, reader).await;
            w?;
            r?;
            replies.push(back == msg);
            c.close().await?;
        }
        io::Result::Ok(replies)
    })
    .unwrap();
    assert_eq!(replies, vec![true; 10]);
}

#[test]
fn connecting_to_a_missing_path_is_an_error() {
    let reactor = Reactor::new().unwrap();
    let path = TempPath::new("missing.sock");
    let err = block_on(&reactor, UnixStream::connect(path.0.clone())).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

#[test]
fn a_pair_half_closes() {
    let reactor = Reactor::new().unwrap();
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let got = block_on(&reactor, async move {
        a.write_all(b"last words").await.unwrap();
        a.close().await.unwrap();
        let mut got = String::new();
        b.read_to_string(&mut got).await.unwrap();
        // `a` can still read after its write side was shut down.
        b.write_all(b"reply").await.unwrap();
        b.close().await.unwrap();
        let mut reply = String::new();
        a.read_to_string(&mut reply).await.unwrap();
        (got, reply)
    });
    assert_eq!(got, ("last words".to_owned(), "reply".to_owned()));
}

#[test]
fn datagrams_by_path_and_by_pair() {
    let reactor = Reactor::new().unwrap();
    let path = TempPath::new("dgram.sock");
    let server = UnixDatagram::bind(&path.0).unwrap();
    let client = UnixDatagram::unbound().unwrap();
    let p = path.0.clone();
    let (n, from) = block_on(&reactor, async move {
        client.send_to(b"hello", &p).await.unwrap();
        let mut buf = [0u8; 16];
        server.recv_from(&mut buf).await.unwrap()
    });
    assert_eq!(n, 5);
    assert!(from.is_unnamed());
    let (a, b) = UnixDatagram::pair().unwrap();
    let n = block_on(&reactor, async move {
        a.send(b"xyz").await.unwrap();
        b.recv(&mut [0u8; 8]).await.unwrap()
    });
    assert_eq!(n, 3);
}
