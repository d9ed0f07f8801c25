//! `TcpStream::connect_host_with`: RFC 8305 racing on loopback with a stub
//! resolver and a manual clock, so every step is counted, not timed.
//!
//! A "stalled" address is a listener with backlog 0 whose queue is already
//! full: Linux drops further SYNs, so a connect to it neither completes nor
//! fails (until the kernel gives up minutes later).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use weft::net::{ConnectErrors, DnsResolver, TcpStream};
use weft::testing::ManualClock;
use weft::{Deferred, Reactor};

struct Stalled {
    addr: SocketAddr,
    _listener: socket2::Socket,
    _filler: std::net::TcpStream,
}

fn stalled() -> Stalled {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let filler = std::net::TcpStream::connect(addr).unwrap();
    Stalled {
        addr,
        _listener: s,
        _filler: filler,
    }
}

fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn setup() -> (Reactor, ManualClock) {
    let clock = ManualClock::new();
    let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
    reactor.thread_pool().start();
    (reactor, clock)
}

fn stub(addrs: Vec<SocketAddr>) -> DnsResolver {
    DnsResolver::new().with_lookup(move |_, _| Ok(addrs.clone()))
}

type Outcome = Rc<RefCell<Option<std::io::Result<TcpStream>>>>;

fn start(reactor: &Reactor, resolver: DnsResolver) -> (Outcome, Deferred<()>) {
    let out: Outcome = Rc::default();
    let o = out.clone();
    let task = reactor.spawn_local(async move {
        let r = TcpStream::connect_host_with(&resolver, "svc.test", 0).await;
        *o.borrow_mut() = Some(r);
    });
    (out, task)
}

/// Turns the loop (real I/O, frozen clock) until `cond` holds; gives up
/// after a bound (long enough for loopback, which needs a few turns).
fn turn_until(reactor: &Reactor, cond: impl FnMut() -> bool) -> bool {
    turns_until(reactor, 5_000, cond)
}

/// Turns the loop `n` times at most; for "nothing happens" checks.
fn stays_false(reactor: &Reactor, cond: impl FnMut() -> bool) -> bool {
    !turns_until(reactor, 200, cond)
}

fn turns_until(reactor: &Reactor, n: usize, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..n {
        if cond() {
            return true;
        }
        reactor.iterate(Some(Duration::from_millis(1)));
    }
    cond()
}

#[test]
fn a_refused_attempt_starts_the_next_one_at_once() {
    let (reactor, _clock) = setup();
    let good = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let good_addr = good.local_addr().unwrap();
    let (out, _task) = start(&reactor, stub(vec![closed_port(), good_addr]));
    // No time passes: the second attempt must not wait for the 250 ms.
    assert!(turn_until(&reactor, || out.borrow().is_some()));
    let s = out.borrow_mut().take().unwrap().unwrap();
    assert_eq!(s.peer_addr().unwrap(), good_addr);
}

#[test]
fn a_stalled_attempt_is_joined_by_the_next_after_250_ms() {
    let (reactor, clock) = setup();
    let stall = stalled();
    let good = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    good.set_nonblocking(true).unwrap();
    let good_addr = good.local_addr().unwrap();
    let (out, _task) = start(&reactor, stub(vec![stall.addr, good_addr]));
    // The first attempt hangs; the second has not started.
    assert!(stays_false(&reactor, || out.borrow().is_some()));
    assert!(good.accept().is_err(), "second attempt started early");
    clock.advance(Duration::from_millis(249));
    assert!(stays_false(&reactor, || out.borrow().is_some()));
    clock.advance(Duration::from_millis(1));
    assert!(turn_until(&reactor, || out.borrow().is_some()));
    let s = out.borrow_mut().take().unwrap().unwrap();
    assert_eq!(s.peer_addr().unwrap(), good_addr);
}

#[test]
fn when_every_attempt_fails_each_error_is_reported() {
    let (reactor, clock) = setup();
    let stall = stalled();
    let (a, b) = (closed_port(), stall.addr);
    let (out, _task) = start(&reactor, stub(vec![a, b]));
    // `a` is refused at once, `b` starts at once and hangs until its own
    // 10 s timeout.
    assert!(stays_false(&reactor, || out.borrow().is_some()));
    clock.advance(Duration::from_secs(10));
    assert!(turn_until(&reactor, || out.borrow().is_some()));
    let err = out.borrow_mut().take().unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let all = err
        .get_ref()
        .unwrap()
        .downcast_ref::<ConnectErrors>()
        .unwrap();
    let tried: Vec<_> = all
        .attempts()
        .iter()
        .map(|(addr, e)| (*addr, e.kind()))
        .collect();
    assert_eq!(
        tried,
        vec![
            (a, std::io::ErrorKind::ConnectionRefused),
            (b, std::io::ErrorKind::TimedOut)
        ]
    );
}

#[test]
fn cancelling_during_the_connects_leaves_no_timer() {
    let (reactor, _clock) = setup();
    let stall = stalled();
    let stall2 = stalled();
    let timers = reactor.delayed_calls().len();
    let (out, task) = start(&reactor, stub(vec![stall.addr, stall2.addr]));
    assert!(stays_false(&reactor, || out.borrow().is_some()));
    assert!(reactor.delayed_calls().len() > timers);
    task.cancel();
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(reactor.delayed_calls().len(), timers);
    assert!(out.borrow().is_none());
}

#[test]
fn cancelling_during_the_lookup_cancels_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    let (reactor, _clock) = setup();
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let started = Arc::new(AtomicBool::new(false));
    let (g, st) = (gate.clone(), started.clone());
    let resolver = DnsResolver::new().with_lookup(move |_, _| {
        st.store(true, Ordering::SeqCst);
        let mut open = g.0.lock().unwrap();
        while !*open {
            open = g.1.wait(open).unwrap();
        }
        Ok(vec![closed_port()])
    });
    let timers = reactor.delayed_calls().len();
    let (out, task) = start(&reactor, resolver);
    assert!(turn_until(&reactor, || started.load(Ordering::SeqCst)));
    assert_eq!(
        reactor.delayed_calls().len(),
        timers + 1,
        "the lookup timeout"
    );
    task.cancel();
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(reactor.delayed_calls().len(), timers);
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    let pool = reactor.thread_pool();
    assert!(turn_until(&reactor, || pool.statistics().busy == 0));
    assert!(out.borrow().is_none(), "no attempt was made");
}
