//! UDP on the loop: datagrams both ways, connected sockets, many datagrams
//! without a lost wake-up.

use weft::Reactor;
use weft::net::UdpSocket;

mod common;
use common::{block_on, loopback};

#[test]
fn send_to_and_recv_from_round_trip() {
    let reactor = Reactor::new().unwrap();
    let server = UdpSocket::bind(loopback()).unwrap();
    let client = UdpSocket::bind(loopback()).unwrap();
    let server_addr = server.local_addr().unwrap();
    let client_addr = client.local_addr().unwrap();
    reactor
        .spawn_local(async move {
            let mut buf = [0u8; 1500];
            loop {
                let (n, from) = server.recv_from(&mut buf).await.unwrap();
                buf[..n].reverse();
                server.send_to(&buf[..n], from).await.unwrap();
            }
        })
        .detach();
    let (reply, from) = block_on(&reactor, async move {
        client.send_to(b"abc", server_addr).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        (buf[..n].to_vec(), from)
    });
    assert_eq!(reply, b"cba");
    assert_eq!(from, server_addr);
    assert_ne!(client_addr, server_addr);
}

#[test]
fn connected_sockets_send_and_recv() {
    let reactor = Reactor::new().unwrap();
    let a = UdpSocket::bind(loopback()).unwrap();
    let b = UdpSocket::bind(loopback()).unwrap();
    a.connect(b.local_addr().unwrap()).unwrap();
    b.connect(a.local_addr().unwrap()).unwrap();
    let got = block_on(&reactor, async move {
        a.send(b"to b").await.unwrap();
        let mut buf = [0u8; 16];
        let n = b.recv(&mut buf).await.unwrap();
        b.send(&buf[..n]).await.unwrap();
        let n = a.recv(&mut buf).await.unwrap();
        buf[..n].to_vec()
    });
    assert_eq!(got, b"to b");
}

/// A queue of datagrams read one per call: each `recv` must find the next
/// one even though only one edge was reported for the whole burst.
#[test]
fn a_burst_of_datagrams_is_read_completely() {
    const N: u32 = 200;
    let reactor = Reactor::new().unwrap();
    let rx = UdpSocket::bind(loopback()).unwrap();
    let to = rx.local_addr().unwrap();
    let tx = std::net::UdpSocket::bind(loopback()).unwrap();
    for i in 0..N {
        tx.send_to(&i.to_be_bytes(), to).unwrap();
    }
    let got = block_on(&reactor, async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4];
        while got.len() < N as usize {
            let n = rx.recv(&mut buf).await.unwrap();
            assert_eq!(n, 4);
            got.push(u32::from_be_bytes(buf));
        }
        got
    });
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}
