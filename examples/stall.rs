//! Shows the stalled-loop diagnostics: a timed call blocks the loop thread for 400 ms (a blocking call on the loop, the classic mistake); the watchdog names its line while it is stuck, and the slow-callback warning gives the total when it returns. Run: `cargo run --release --example stall`

use std::time::Duration;

use weft::Reactor;
use weft::diagnostics::DEFAULT_SLOW_CALLBACK_THRESHOLD;

fn main() {
    tracing_subscriber::fmt().with_target(false).init();
    let reactor = Reactor::builder()
        .slow_callback_threshold(Some(DEFAULT_SLOW_CALLBACK_THRESHOLD))
        .build()
        .expect("reactor");

    // Healthy work: many quick callbacks, no warning.
    for i in 0..1000 {
        reactor.call_soon(move || {
            std::hint::black_box(i);
        });
    }

    // The offending line: a callback that blocks the loop thread.
    reactor.call_later(Duration::from_millis(10), || {
        std::thread::sleep(Duration::from_millis(400))
    });

    reactor.call_later(Duration::from_millis(500), || {
        weft::reactor::current().expect("on the loop").stop();
    });
    reactor.run().expect("run");

    let stats = reactor.statistics();
    let lag = reactor.turn_histogram();
    println!(
        "slow callbacks: {}, stalls caught while stalled: {}, longest turn: {:?} ({} turns, median <= {:?})",
        stats.slow_callbacks,
        stats.stalls_detected,
        lag.largest(),
        lag.count(),
        lag.quantile(0.5),
    );
}
