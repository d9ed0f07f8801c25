//! Name resolution on the pool: the literal fast path, a stub lookup, the
//! timeout on a manual clock, cancellation, and a hung lookup that does not
//! cost the pool a thread.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use weft::Reactor;
use weft::net::{DnsResolver, ResolveError};
use weft::testing::ManualClock;

/// A gate the stub lookup waits on, and a count of lookups started.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<(Mutex<bool>, Condvar)>,
    started: Arc<AtomicUsize>,
}

impl Gate {
    fn wait(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
        let (lock, cv) = &*self.open;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
    }

    fn release(&self) {
        let (lock, cv) = &*self.open;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
}

fn answer(port: u16) -> Vec<SocketAddr> {
    vec![SocketAddr::from(([192, 0, 2, 7], port))]
}

fn gated_resolver(gate: &Gate) -> DnsResolver {
    let gate = gate.clone();
    DnsResolver::new().with_lookup(move |_, port| {
        gate.wait();
        Ok(answer(port))
    })
}

/// Turns the loop until `cond` holds (bounded; a failure, not a timing).
fn turn_until(reactor: &Reactor, mut cond: impl FnMut() -> bool) {
    for _ in 0..20_000 {
        if cond() {
            return;
        }
        reactor.iterate(Some(Duration::from_millis(1)));
    }
    panic!("condition never held");
}

#[test]
fn literal_addresses_skip_the_pool() {
    let reactor = Reactor::new().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let resolver = DnsResolver::new().with_lookup(move |_, _| {
        c.fetch_add(1, Ordering::SeqCst);
        Ok(vec![])
    });
    for (host, want) in [
        ("127.0.0.1", "127.0.0.1:80"),
        ("::1", "[::1]:80"),
        ("[::1]", "[::1]:80"),
    ] {
        let d = resolver.resolve(host, 80);
        assert!(d.is_resolved(), "{host} answered synchronously");
        let got = reactor.run_until_complete(d).unwrap().unwrap();
        assert_eq!(got, vec![want.parse::<SocketAddr>().unwrap()]);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // A name does go to the lookup.
    let d = resolver.resolve("host.test", 80);
    assert!(!d.is_resolved());
    let err = reactor.run_until_complete(d).unwrap().unwrap_err();
    assert!(matches!(err, ResolveError::NotFound(_)), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_lookup_answer_and_a_lookup_error_come_back() {
    let reactor = Reactor::new().unwrap();
    let ok = DnsResolver::new().with_lookup(|host, port| {
        assert_eq!(host, "a.test");
        Ok(answer(port))
    });
    let got = reactor
        .run_until_complete(ok.resolve("a.test", 8080))
        .unwrap();
    assert_eq!(got.unwrap(), answer(8080));
    let bad = DnsResolver::new().with_lookup(|_, _| Err(std::io::Error::other("no such host")));
    let err = reactor
        .run_until_complete(bad.resolve("b.test", 1))
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("no such host"), "{err}");
}

#[test]
fn a_hung_lookup_times_out_and_the_pool_thread_comes_back() {
    let clock = ManualClock::new();
    let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
    // Stepped with `iterate`, the reactor never "runs": start its pool.
    reactor.thread_pool().start();
    let gate = Gate::default();
    let resolver = gated_resolver(&gate).timeout(Duration::from_secs(5));
    let d = resolver.resolve("hang.test", 53);
    turn_until(&reactor, || gate.started.load(Ordering::SeqCst) == 1);

    clock.advance(Duration::from_millis(4_999));
    reactor.iterate(Some(Duration::ZERO));
    assert!(!d.is_resolved(), "not before the timeout");
    clock.advance(Duration::from_millis(1));
    reactor.iterate(Some(Duration::ZERO));
    assert!(d.is_resolved());
    let err = reactor.run_until_complete(d).unwrap().unwrap_err();
    assert!(matches!(err, ResolveError::TimedOut), "{err:?}");

    // The lookup is still running on its thread; when it returns, the
    // thread is idle again and serves the next lookup.
    let pool = reactor.thread_pool();
    assert_eq!(pool.statistics().busy, 1);
    gate.release();
    assert!(common::wait_until(|| pool.statistics().busy == 0));
    let s = pool.statistics();
    assert!(s.idle >= 1 && s.threads_alive >= 1, "{s:?}");
    let again = reactor.run_until_complete(resolver.resolve("after.test", 1));
    assert_eq!(again.unwrap().unwrap(), answer(1));
}

#[test]
fn cancelling_a_lookup_gives_cancelled_and_leaves_no_timer() {
    let clock = ManualClock::new();
    let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
    // Stepped with `iterate`, the reactor never "runs": start its pool.
    reactor.thread_pool().start();
    let gate = Gate::default();
    let resolver = gated_resolver(&gate);
    let timers_before = reactor.delayed_calls().len();
    let d = resolver.resolve("slow.test", 53);
    turn_until(&reactor, || gate.started.load(Ordering::SeqCst) == 1);
    assert_eq!(reactor.delayed_calls().len(), timers_before + 1);
    d.cancel();
    assert_eq!(reactor.delayed_calls().len(), timers_before);
    let err = reactor.run_until_complete(d).unwrap().unwrap_err();
    assert!(matches!(err, ResolveError::Cancelled), "{err:?}");
    gate.release();
    let pool = reactor.thread_pool();
    assert!(common::wait_until(|| pool.statistics().busy == 0));
    // Time passing afterwards changes nothing.
    clock.advance(Duration::from_secs(60));
    reactor.iterate(Some(Duration::ZERO));
}

#[test]
fn an_answer_cancels_the_timeout() {
    let reactor = Reactor::new().unwrap();
    let resolver = DnsResolver::new().with_lookup(|_, port| Ok(answer(port)));
    let before = reactor.delayed_calls().len();
    let got = reactor.run_until_complete(resolver.resolve("quick.test", 9));
    assert_eq!(got.unwrap().unwrap(), answer(9));
    assert_eq!(reactor.delayed_calls().len(), before);
}

#[test]
fn resolving_off_the_loop_is_an_error() {
    let err = std::thread::spawn(|| {
        let d = DnsResolver::new().resolve("name.test", 1);
        assert!(d.is_resolved());
        let out = std::rc::Rc::new(std::cell::RefCell::new(None));
        let o = out.clone();
        d.add_both(move |r| *o.borrow_mut() = Some(r.map(drop)));
        let r = out.borrow_mut().take().unwrap();
        r.unwrap_err().to_string()
    })
    .join()
    .unwrap();
    assert!(err.contains("loop thread"), "{err}");
}
