//! A listener that runs out of file descriptors neither spins nor dies: it
//! backs off on the reactor's clock and accepts the queued connections once
//! descriptors are free, without a new connection arriving (the stall that
//! raw mio shows).
//!
//! The test lowers `RLIMIT_NOFILE`, so it runs in a child process: the test
//! re-executes its own binary with `WEFT_EMFILE_CHILD=1`. Time comes from a
//! manual clock, so the counts asserted are exact, not timings.

mod common;

use std::cell::RefCell;
use std::fs::File;
use std::rc::Rc;
use std::time::Duration;

use weft::Reactor;
use weft::net::{TcpListener, TcpStream};
use weft::testing::ManualClock;

const CHILD_ENV: &str = "WEFT_EMFILE_CHILD";
const QUEUED: usize = 4;

#[test]
fn accept_on_emfile_backs_off_and_resumes() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "accept_on_emfile_backs_off_and_resumes",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
}

fn turns(reactor: &Reactor, n: usize) {
    for _ in 0..n {
        reactor.iterate(Some(Duration::ZERO));
    }
}

fn child() {
    common::capture_logs();
    let clock = ManualClock::new();
    let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    // Connections queued in the kernel before the descriptors run out.
    let clients: Vec<_> = (0..QUEUED)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();

    // Lower the limit, then use up every descriptor left.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(256),
            maximum: limit.maximum,
        },
    )
    .unwrap();
    let mut fillers = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) if e.raw_os_error() == Some(libc_emfile()) => break,
            Err(e) => panic!("unexpected error filling descriptors: {e}"),
        }
    }

    let accepted: Rc<RefCell<Vec<TcpStream>>> = Rc::default();
    let listener = Rc::new(listener);
    {
        let (l, acc) = (listener.clone(), accepted.clone());
        reactor
            .spawn_local(async move {
                loop {
                    let (s, _) = l.accept().await.unwrap();
                    acc.borrow_mut().push(s);
                }
            })
            .detach();
    }

    // Many turns, no time passing: exactly one attempt, no spin.
    turns(&reactor, 200);
    let s = listener.accept_statistics();
    assert_eq!(
        (s.attempts, s.resource_errors, s.backoffs),
        (1, 1, 1),
        "{s:?}"
    );

    // Each retry happens when its timer is due (10 ms, then 20 ms), once.
    clock.advance(Duration::from_millis(9));
    turns(&reactor, 20);
    assert_eq!(listener.accept_statistics().attempts, 1);
    clock.advance(Duration::from_millis(1));
    turns(&reactor, 20);
    assert_eq!(listener.accept_statistics().attempts, 2);
    clock.advance(Duration::from_millis(19));
    turns(&reactor, 20);
    assert_eq!(listener.accept_statistics().attempts, 2);
    clock.advance(Duration::from_millis(1));
    turns(&reactor, 20);
    let s = listener.accept_statistics();
    assert_eq!(
        (s.attempts, s.resource_errors, s.accepted),
        (3, 3, 0),
        "{s:?}"
    );

    // Free some descriptors; no new connection arrives. The next retry (due
    // after 40 ms) accepts every queued connection.
    fillers.truncate(fillers.len().saturating_sub(2 * QUEUED));
    turns(&reactor, 20);
    assert_eq!(
        accepted.borrow().len(),
        0,
        "retry only when the timer is due"
    );
    clock.advance(Duration::from_millis(40));
    turns(&reactor, 20);
    let s = listener.accept_statistics();
    assert_eq!(accepted.borrow().len(), QUEUED, "{s:?}");
    assert_eq!(s.accepted, QUEUED as u64);
    assert_eq!(s.resource_errors, 3);

    // Logged once per episode, and the recovery once.
    assert_eq!(common::log_lines(&["lack of resources"]).len(), 1);
    assert_eq!(common::log_lines(&["accept recovered"]).len(), 1);

    // The listener keeps working afterwards: a brand-new connection.
    let late = std::net::TcpStream::connect(addr).unwrap();
    turns(&reactor, 20);
    assert_eq!(accepted.borrow().len(), QUEUED + 1);
    drop((clients, late, fillers));
}

fn libc_emfile() -> i32 {
    rustix::io::Errno::MFILE.raw_os_error()
}
