//! Protocol style on UDP and Unix stream sockets (Twisted's `listenUDP`,
//! `listenUNIX`/`connectUNIX`), client and server on one loop.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use weft::net::{
    CloseReason, DatagramProtocol, DatagramTransport, Protocol, Transport, connect_unix,
    listen_udp, listen_unix,
};
use weft::{Cancelled, Deferred, Reactor, Resolver};

struct UdpEcho(Option<DatagramTransport>);

impl DatagramProtocol for UdpEcho {
    fn start_protocol(&mut self, t: DatagramTransport) {
        self.0 = Some(t);
    }
    fn datagram_received(&mut self, data: &[u8], from: SocketAddr) {
        self.0.as_ref().unwrap().write_to(data, from).unwrap();
    }
}

struct UdpClient {
    target: SocketAddr,
    got: Vec<Vec<u8>>,
    done: Option<Resolver<Vec<Vec<u8>>, Cancelled>>,
    stopped: Rc<RefCell<bool>>,
}

impl DatagramProtocol for UdpClient {
    fn start_protocol(&mut self, t: DatagramTransport) {
        for msg in [&b"one"[..], b"two", b"three"] {
            t.write_to(msg, self.target).unwrap();
        }
    }
    fn datagram_received(&mut self, data: &[u8], from: SocketAddr) {
        assert_eq!(from, self.target);
        self.got.push(data.to_vec());
        if self.got.len() == 3 {
            let _ = self
                .done
                .take()
                .unwrap()
                .callback(std::mem::take(&mut self.got));
        }
    }
    fn stop_protocol(&mut self) {
        *self.stopped.borrow_mut() = true;
    }
}

#[test]
fn udp_echo_round_trip_and_stop() {
    let reactor = Reactor::new().unwrap();
    let server = listen_udp("127.0.0.1:0".parse().unwrap(), UdpEcho(None)).unwrap();
    let done = Deferred::new();
    let stopped = Rc::new(RefCell::new(false));
    let client = listen_udp(
        "127.0.0.1:0".parse().unwrap(),
        UdpClient {
            target: server.local_address(),
            got: Vec::new(),
            done: Some(done.resolver()),
            stopped: stopped.clone(),
        },
    )
    .unwrap();
    let mut got = reactor.run_until_complete(done).unwrap().unwrap();
    got.sort();
    assert_eq!(got, [b"one".to_vec(), b"three".to_vec(), b"two".to_vec()]);
    reactor
        .run_until_complete(client.stop_listening())
        .unwrap()
        .unwrap();
    assert!(
        *stopped.borrow(),
        "stop_protocol ran before the Deferred fired"
    );
    assert_eq!(
        client.write_to(b"x", server.local_address()),
        Err(weft::net::WriteError::Closed)
    );
    reactor
        .run_until_complete(server.stop_listening())
        .unwrap()
        .unwrap();
}

struct Echo(Option<Transport>);
impl Protocol for Echo {
    fn connection_made(&mut self, t: Transport) {
        self.0 = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.as_ref().unwrap().write(data).unwrap();
    }
}

struct Client {
    t: Option<Transport>,
    got: Vec<u8>,
    done: Option<Resolver<(Vec<u8>, String), Cancelled>>,
}
impl Protocol for Client {
    fn connection_made(&mut self, t: Transport) {
        t.write(b"over unix").unwrap();
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
        if self.got.len() == 9 {
            self.t.as_ref().unwrap().lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        let _ = self
            .done
            .take()
            .unwrap()
            .callback((std::mem::take(&mut self.got), reason.to_string()));
    }
}

#[test]
fn unix_stream_echo_in_protocol_style() {
    let reactor = Reactor::new().unwrap();
    let path = std::env::temp_dir().join(format!("weft-netproto-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let port = listen_unix(&path, || Echo(None)).unwrap();
    let done = Deferred::new();
    let mut client = Some(Client {
        t: None,
        got: Vec::new(),
        done: Some(done.resolver()),
    });
    connect_unix(
        &path,
        move || client.take().unwrap(),
        Duration::from_secs(20),
    )
    .detach();
    let (got, reason) = reactor.run_until_complete(done).unwrap().unwrap();
    assert_eq!(got, b"over unix");
    assert_eq!(reason, "connection closed cleanly");
    reactor
        .run_until_complete(port.stop_listening())
        .unwrap()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn loop_shutdown_closes_ports_and_stops_datagram_protocols() {
    let reactor = Reactor::new().unwrap();
    let stopped = Rc::new(RefCell::new(false));
    let udp = listen_udp(
        "127.0.0.1:0".parse().unwrap(),
        UdpClient {
            target: "127.0.0.1:9".parse().unwrap(),
            got: Vec::new(),
            done: None,
            stopped: stopped.clone(),
        },
    )
    .unwrap();
    let tcp = weft::net::listen_tcp("127.0.0.1:0".parse().unwrap(), || Echo(None)).unwrap();
    reactor.iterate(Some(Duration::ZERO));
    drop(reactor);
    assert!(*stopped.borrow(), "stop_protocol ran at shutdown");
    assert!(udp.stop_listening().is_resolved());
    assert!(tcp.stop_listening().is_resolved());
}
