//! The watchdogs and `tracing`'s process-wide state. A scoped dispatcher
//! held by a watchdog thread for its whole life used to mark "a dispatcher
//! has been set" for the whole process, so every `call_from_thread` and
//! `defer_to_thread` looked for a span to carry just because diagnostics
//! were on. That state is process-wide, hence a test binary of its own
//! with a single test (its steps depend on their order).

use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use tracing_subscriber::Registry;
use tracing_subscriber::layer::SubscriberExt;
use weft::Reactor;
use weft::diagnostics::{DEFAULT_WEDGE_THRESHOLD, PoolWatchdog};
use weft::testing::ManualClock;

#[path = "support/capture.rs"]
mod capture;

use capture::Capture;

#[test]
fn watchdogs_set_no_dispatcher_and_report_to_a_global_one_set_later() {
    assert!(!tracing::dispatcher::has_been_set(), "precondition");

    // 1. Both watchdogs run and are joined (dropping each joins its
    // thread): neither may have set a dispatcher.
    {
        let reactor = Reactor::builder()
            .slow_callback_threshold(Some(Duration::from_millis(100)))
            .build()
            .unwrap();
        reactor.call_soon(|| ());
        reactor.iterate(Some(Duration::ZERO));
        let watchdog =
            PoolWatchdog::start(&reactor.thread_pool(), DEFAULT_WEDGE_THRESHOLD).unwrap();
        drop(watchdog);
        drop(reactor);
    }
    assert!(
        !tracing::dispatcher::has_been_set(),
        "a watchdog set a tracing dispatcher"
    );

    // 2. A reactor built with no dispatcher anywhere reports its stall to
    // the global default installed after it started.
    let clock = ManualClock::new();
    let (built_tx, built_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let loop_clock = clock.clone();
    let loop_thread = std::thread::spawn(move || {
        let reactor = Reactor::builder()
            .clock(loop_clock.clone())
            .slow_callback_threshold(Some(Duration::from_millis(100)))
            .build()
            .unwrap();
        built_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        reactor.call_soon(move || {
            loop_clock.advance(Duration::from_millis(250));
            // Held until the test has seen the watchdog's report.
            release_rx.recv().unwrap();
        });
        reactor.iterate(Some(Duration::ZERO));
        reactor.statistics()
    });
    built_rx.recv().unwrap();
    let (tx, rx) = mpsc::channel();
    tracing::subscriber::set_global_default(Registry::default().with(Capture(Mutex::new(tx))))
        .unwrap();
    go_tx.send(()).unwrap();
    // The timeout only keeps a broken build from hanging.
    let stall = rx.recv_timeout(Duration::from_secs(120)).unwrap();
    assert!(stall.contains("stalled"), "{stall}");
    release_tx.send(()).unwrap();
    let stats = loop_thread.join().unwrap();
    assert_eq!(stats.stalls_detected, 1);
    let slow = rx.recv_timeout(Duration::from_secs(120)).unwrap();
    assert!(slow.contains("slow callback"), "{slow}");
}
