//! Protocol-style connections over real loopback sockets, client and server
//! on one loop. Every wait is on an event (a `Deferred` resolved from a
//! protocol callback); nothing sleeps.
//!
//! Ported behaviours: Twisted's `IProtocol` life cycle and `loseConnection`,
//! asyncio's `eof_received`/flow-control contract (spec/net.md §2-§3).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use weft::net::{
    CloseReason, ListeningPort, Protocol, Transport, WriteError, WriteLimits, connect_tcp,
    listen_tcp,
};
use weft::testing::ManualClock;
use weft::{Cancelled, Deferred, Reactor, Resolver};

type Log = Rc<RefCell<Vec<String>>>;
type OnData = Box<dyn FnMut(&Transport, &[u8])>;

const TIMEOUT: Duration = Duration::from_secs(20);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn port_of(p: &ListeningPort) -> u16 {
    p.local_address().inet().unwrap().port()
}

/// A scriptable protocol: callbacks are closures, every event is logged, and
/// `connection_lost` resolves `done` with the log.
struct Script {
    log: Log,
    transport: Option<Transport>,
    on_made: Box<dyn FnMut(&Transport)>,
    on_data: OnData,
    on_eof: Box<dyn FnMut(&Transport) -> bool>,
    done: Option<Resolver<Vec<String>, Cancelled>>,
}

impl Script {
    fn new(log: &Log) -> Self {
        Script {
            log: log.clone(),
            transport: None,
            on_made: Box::new(|_| {}),
            on_data: Box::new(|_, _| {}),
            on_eof: Box::new(|_| false),
            done: None,
        }
    }
    fn made(mut self, f: impl FnMut(&Transport) + 'static) -> Self {
        self.on_made = Box::new(f);
        self
    }
    fn data(mut self, f: impl FnMut(&Transport, &[u8]) + 'static) -> Self {
        self.on_data = Box::new(f);
        self
    }
    fn eof(mut self, f: impl FnMut(&Transport) -> bool + 'static) -> Self {
        self.on_eof = Box::new(f);
        self
    }
    fn done(mut self, r: Resolver<Vec<String>, Cancelled>) -> Self {
        self.done = Some(r);
        self
    }
}

impl Protocol for Script {
    fn connection_made(&mut self, t: Transport) {
        self.log.borrow_mut().push("made".into());
        (self.on_made)(&t);
        self.transport = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.log
            .borrow_mut()
            .push(format!("data {}", String::from_utf8_lossy(data)));
        (self.on_data)(self.transport.as_ref().unwrap(), data);
    }
    fn eof_received(&mut self) -> bool {
        self.log.borrow_mut().push("eof".into());
        (self.on_eof)(self.transport.as_ref().unwrap())
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.log.borrow_mut().push(format!("lost {reason}"));
        if let Some(r) = self.done.take() {
            let _ = r.callback(self.log.borrow().clone());
        }
    }
    fn pause_writing(&mut self) {
        self.log.borrow_mut().push("pause".into());
    }
    fn resume_writing(&mut self) {
        self.log.borrow_mut().push("resume".into());
    }
}

fn joined_data(log: &[String]) -> String {
    log.iter()
        .filter_map(|e| e.strip_prefix("data "))
        .collect::<Vec<_>>()
        .concat()
}

#[test]
fn echo_in_protocol_style_over_loopback() {
    let reactor = Reactor::new().unwrap();
    let port = listen_tcp(any_port(), || {
        Script::new(&Log::default()).data(|t, d| t.write(d).unwrap())
    })
    .unwrap();
    let log = Log::default();
    let done = Deferred::new();
    let client = Script::new(&log)
        .made(|t| t.write_sequence(&[b"hel", b"lo"]).unwrap())
        .data({
            let got = Rc::new(RefCell::new(Vec::new()));
            move |t, d| {
                got.borrow_mut().extend_from_slice(d);
                if got.borrow().len() == 5 {
                    t.lose_connection();
                }
            }
        })
        .done(done.resolver());
    let mut client = Some(client);
    let connected = connect_tcp(
        "127.0.0.1",
        port_of(&port),
        move || client.take().unwrap(),
        TIMEOUT,
    );
    let log = reactor.run_until_complete(done).unwrap().unwrap();
    assert_eq!(joined_data(&log), "hello");
    assert_eq!(log.first().unwrap(), "made");
    assert_eq!(log.last().unwrap(), "lost connection closed cleanly");
    assert!(connected.is_resolved());
    let stopped = port.stop_listening();
    reactor.run_until_complete(stopped).unwrap().unwrap();
}

#[test]
fn stop_listening_resolves_and_refuses_new_connections() {
    let reactor = Reactor::new().unwrap();
    let port = listen_tcp(any_port(), || Script::new(&Log::default())).unwrap();
    let n = port_of(&port);
    reactor
        .run_until_complete(port.stop_listening())
        .unwrap()
        .unwrap();
    // A second call after the close resolves at once.
    assert!(port.stop_listening().is_resolved());
    let d = connect_tcp("127.0.0.1", n, || Script::new(&Log::default()), TIMEOUT);
    let err = reactor.run_until_complete(d).unwrap().unwrap_err();
    assert!(matches!(err, weft::net::ConnectError::Connect(_)), "{err}");
}

#[test]
fn pause_and_resume_writing_arrive_once_each_and_all_bytes_arrive() {
    const TOTAL: usize = 768 * 1024;
    let reactor = Reactor::new().unwrap();
    let server_log = Log::default();
    let slog = server_log.clone();
    let port = listen_tcp(any_port(), move || {
        Script::new(&slog).made(|t| {
            // Far above the high-water mark in one callback, below the
            // hard limit (1 MiB by default).
            for _ in 0..TOTAL / 4096 {
                t.write(&[b'x'; 4096]).unwrap();
            }
            t.lose_connection();
        })
    })
    .unwrap();
    let done = Deferred::new();
    let count = Rc::new(RefCell::new(0usize));
    let c = count.clone();
    let mut client = Some(
        Script::new(&Log::default())
            .data(move |_, d| *c.borrow_mut() += d.len())
            .done(done.resolver()),
    );
    connect_tcp(
        "127.0.0.1",
        port_of(&port),
        move || client.take().unwrap(),
        TIMEOUT,
    )
    .detach();
    reactor.run_until_complete(done).unwrap().unwrap();
    assert_eq!(*count.borrow(), TOTAL);
    let log = server_log.borrow().clone();
    let flow: Vec<&str> = log
        .iter()
        .map(String::as_str)
        .filter(|e| *e == "pause" || *e == "resume")
        .collect();
    assert_eq!(flow, ["pause", "resume"]);
}

#[test]
fn a_peer_that_stops_reading_gets_pause_then_the_hard_limit_closes_it() {
    let reactor = Reactor::new().unwrap();
    let done = Deferred::new();
    let mut server = Some(
        Script::new(&Log::default())
            .made(|t| {
                t.set_write_limits(
                    WriteLimits::new(64 * 1024)
                        .unwrap()
                        .with_hard(256 * 1024)
                        .unwrap(),
                );
                // A producer that ignores pause_writing: 64 KiB per turn.
                fn produce(t: Transport) {
                    if t.write(&[b'y'; 64 * 1024]).is_ok() {
                        weft::reactor::current()
                            .unwrap()
                            .call_soon(move || produce(t));
                    }
                }
                produce(t.clone());
            })
            .done(done.resolver()),
    );
    let port = listen_tcp(any_port(), move || server.take().unwrap()).unwrap();
    connect_tcp(
        "127.0.0.1",
        port_of(&port),
        || Script::new(&Log::default()).made(|t| t.pause_reading()),
        TIMEOUT,
    )
    .detach();
    let log = reactor.run_until_complete(done).unwrap().unwrap();
    assert_eq!(log.iter().filter(|e| *e == "pause").count(), 1, "{log:?}");
    assert!(!log.contains(&"resume".to_string()));
    assert_eq!(log.last().unwrap(), "lost write buffer overflow");
}

#[test]
fn half_close_keeps_writing_possible() {
    let reactor = Reactor::new().unwrap();
    let server_log = Log::default();
    let slog = server_log.clone();
    let port = listen_tcp(any_port(), move || {
        Script::new(&slog).eof(|t| {
            // The peer is done sending; we still may answer.
            t.write(b"pong").unwrap();
            t.lose_connection();
            true
        })
    })
    .unwrap();
    let done = Deferred::new();
    let mut client = Some(
        Script::new(&Log::default())
            .made(|t| {
                t.write(b"ping").unwrap();
                t.write_eof().unwrap();
                assert_eq!(t.write(b"late"), Err(WriteError::Closed));
            })
            .done(done.resolver()),
    );
    connect_tcp(
        "127.0.0.1",
        port_of(&port),
        move || client.take().unwrap(),
        TIMEOUT,
    )
    .detach();
    let log = reactor.run_until_complete(done).unwrap().unwrap();
    assert_eq!(joined_data(&log), "pong");
    assert_eq!(log.last().unwrap(), "lost connection closed cleanly");
    let slog = server_log.borrow().clone();
    assert_eq!(joined_data(&slog), "ping");
    assert!(slog.contains(&"eof".to_string()));
}

#[test]
fn write_after_close_is_an_error_value_not_a_panic() {
    let reactor = Reactor::new().unwrap();
    let results = Rc::new(RefCell::new(Vec::new()));
    let (r1, r2) = (results.clone(), results.clone());
    let kept: Rc<RefCell<Option<Transport>>> = Rc::default();
    let k = kept.clone();
    let done = Deferred::new();
    let mut server = Some(
        Script::new(&Log::default())
            .made(move |t| {
                t.lose_connection();
                r1.borrow_mut().push(t.write(b"x"));
                *k.borrow_mut() = Some(t.clone());
            })
            .done(done.resolver()),
    );
    let port = listen_tcp(any_port(), move || server.take().unwrap()).unwrap();
    connect_tcp(
        "127.0.0.1",
        port_of(&port),
        || Script::new(&Log::default()),
        TIMEOUT,
    )
    .detach();
    reactor.run_until_complete(done).unwrap().unwrap();
    let t = kept.borrow_mut().take().unwrap();
    r2.borrow_mut().push(t.write(b"after"));
    t.abort(); // no-op, no panic
    assert!(t.is_closing());
    assert_eq!(
        *results.borrow(),
        [Err(WriteError::Closed), Err(WriteError::Closed)]
    );
}

#[test]
fn idle_timeout_with_the_manual_clock_aborts_with_timed_out() {
    let clock = ManualClock::new();
    let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
    let done = Deferred::new();
    let c = clock.clone();
    let mut server = Some(
        Script::new(&Log::default())
            .made(move |t| {
                assert_eq!(t.set_timeout(Some(Duration::from_secs(30))), None);
                let c = c.clone();
                weft::reactor::current()
                    .unwrap()
                    .call_soon(move || c.advance(Duration::from_secs(30)));
            })
            .done(done.resolver()),
    );
    let port = listen_tcp(any_port(), move || server.take().unwrap()).unwrap();
    let client_done = Deferred::new();
    let mut client = Some(Script::new(&Log::default()).done(client_done.resolver()));
    connect_tcp(
        "127.0.0.1",
        port_of(&port),
        move || client.take().unwrap(),
        TIMEOUT,
    )
    .detach();
    let log = reactor.run_until_complete(done).unwrap().unwrap();
    assert_eq!(log, ["made", "lost connection timed out"]);
    // The abort is a reset, not a clean close, for the peer.
    let client_log = reactor.run_until_complete(client_done).unwrap().unwrap();
    assert_eq!(client_log.last().unwrap(), "lost connection reset by peer");
}

#[test]
fn connect_by_name_resolves_on_the_pool() {
    let reactor = Reactor::new().unwrap();
    let port = listen_tcp(any_port(), || Script::new(&Log::default())).unwrap();
    let d = connect_tcp(
        "localhost",
        port_of(&port),
        || Script::new(&Log::default()),
        TIMEOUT,
    );
    let t = reactor.run_until_complete(d).unwrap().unwrap();
    assert_eq!(t.peer_address(), Some(port.local_address()));
    t.abort();
}

#[test]
fn cancelling_a_connect_builds_no_protocol() {
    let reactor = Reactor::new().unwrap();
    let port = listen_tcp(any_port(), || Script::new(&Log::default())).unwrap();
    let built = Rc::new(RefCell::new(0));
    let b = built.clone();
    let d = connect_tcp(
        "127.0.0.1",
        port_of(&port),
        move || {
            *b.borrow_mut() += 1;
            Script::new(&Log::default())
        },
        TIMEOUT,
    );
    d.cancel();
    let err = reactor.run_until_complete(d).unwrap().unwrap_err();
    assert!(matches!(err, weft::net::ConnectError::Cancelled), "{err}");
    // Give the (dropped) attempt a few turns to misbehave.
    for _ in 0..5 {
        reactor.iterate(Some(Duration::ZERO));
    }
    assert_eq!(*built.borrow(), 0);
}

#[test]
fn resume_reading_delivers_bytes_already_waiting_in_the_kernel() {
    // Edge-triggered readiness: the edge for these bytes comes while reading
    // is paused; resuming must still deliver them (spec/net.md §1 item 2).
    #[derive(Default)]
    struct Meet {
        server: Option<Transport>,
        client: Option<Transport>,
        /// (server close was clean, client was still paused then)
        seen: Option<(bool, bool)>,
    }
    /// Once both sides are up (the client paused), the server sends and
    /// closes.
    fn go(meet: &Rc<RefCell<Meet>>) {
        let m = meet.borrow();
        if let (Some(s), Some(_)) = (&m.server, &m.client) {
            s.write(b"queued").unwrap();
            s.lose_connection();
        }
    }
    // The server's connection_lost(Done) means the bytes and the FIN were
    // handed to the kernel, so they wait in the client's receive buffer.
    struct Server(Rc<RefCell<Meet>>);
    impl Protocol for Server {
        fn connection_made(&mut self, t: Transport) {
            self.0.borrow_mut().server = Some(t);
            go(&self.0);
        }
        fn data_received(&mut self, _: &[u8]) {}
        fn connection_lost(&mut self, reason: CloseReason) {
            // No asserts here: a panic would only close this connection.
            let client = self.0.borrow().client.clone().unwrap();
            self.0.borrow_mut().seen = Some((reason.is_clean(), client.is_reading_paused()));
            client.resume_reading();
        }
    }
    let reactor = Reactor::new().unwrap();
    let meet: Rc<RefCell<Meet>> = Rc::default();
    let m = meet.clone();
    let port = listen_tcp(any_port(), move || Server(m.clone())).unwrap();
    let done = Deferred::new();
    let m = meet.clone();
    let mut client = Some(
        Script::new(&Log::default())
            .made(move |t| {
                t.pause_reading();
                m.borrow_mut().client = Some(t.clone());
                go(&m);
            })
            .done(done.resolver()),
    );
    connect_tcp(
        "127.0.0.1",
        port_of(&port),
        move || client.take().unwrap(),
        TIMEOUT,
    )
    .detach();
    let log = reactor.run_until_complete(done).unwrap().unwrap();
    assert_eq!(
        log,
        [
            "made",
            "data queued",
            "eof",
            "lost connection closed cleanly"
        ]
    );
    meet.borrow_mut().client = None;
}

#[test]
fn a_panicking_factory_costs_only_that_connection() {
    let reactor = Reactor::new().unwrap();
    let mut calls = 0;
    let port = listen_tcp(any_port(), move || {
        calls += 1;
        if calls == 1 {
            panic!("factory failure (deliberate)");
        }
        Script::new(&Log::default()).data(|t, d| t.write(d).unwrap())
    })
    .unwrap();
    let first = Deferred::new();
    let mut c1 = Some(Script::new(&Log::default()).done(first.resolver()));
    connect_tcp(
        "127.0.0.1",
        port_of(&port),
        move || c1.take().unwrap(),
        TIMEOUT,
    )
    .detach();
    let log = reactor.run_until_complete(first).unwrap().unwrap();
    assert!(log.last().unwrap().starts_with("lost "), "{log:?}");

    let second = Deferred::new();
    let mut c2 = Some(
        Script::new(&Log::default())
            .made(|t| t.write(b"still listening").unwrap())
            .data({
                let mut got = 0;
                move |t, d| {
                    got += d.len();
                    if got == b"still listening".len() {
                        t.lose_connection();
                    }
                }
            })
            .done(second.resolver()),
    );
    connect_tcp(
        "127.0.0.1",
        port_of(&port),
        move || c2.take().unwrap(),
        TIMEOUT,
    )
    .detach();
    let log = reactor.run_until_complete(second).unwrap().unwrap();
    assert_eq!(joined_data(&log), "still listening");
}
