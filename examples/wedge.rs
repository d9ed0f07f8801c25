//! Shows the wedged-pool and cross-wait diagnostics: (1) pool jobs that block on work queued to their own full pool (the pool watchdog warns once, naming the line that queued the stuck job, the lines that queued the running ones, and the cure); (2) a loop callback that waits for a pool job which itself waits for the loop with `blocking_call` (the stall watchdog and the blocking-call warning name both lines). Run: `cargo run --release --example wedge`

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use weft::diagnostics::{DEFAULT_SLOW_CALLBACK_THRESHOLD, DEFAULT_WEDGE_THRESHOLD, PoolWatchdog};
use weft::{Reactor, ThreadPool};

fn main() {
    tracing_subscriber::fmt().with_target(false).init();
    same_pool_wedge();
    cross_wait();
}

/// Two threads, two jobs that each wait for a job queued behind them.
fn same_pool_wedge() {
    println!("--- 1. a pool blocked on work queued to itself");
    let pool = Arc::new(ThreadPool::new(0, 2).expect("pool"));
    pool.start();
    let watchdog = PoolWatchdog::start(&pool, DEFAULT_WEDGE_THRESHOLD).expect("watchdog");
    let (done_tx, done_rx) = mpsc::channel();
    for job in 0..2 {
        let inner_pool = pool.clone();
        let done = done_tx.clone();
        pool.call_in_thread(move || {
            let (tx, rx) = mpsc::channel();
            // The offending line: queued to the pool this job occupies (the
            // warning names it as the oldest queued job).
            inner_pool
                .call_in_thread(move || {
                    let _ = tx.send(job);
                })
                .unwrap();
            // A real program would wait forever; this one gives up after 3 s.
            let outcome = rx.recv_timeout(Duration::from_secs(3));
            done.send(outcome.is_ok()).unwrap();
        })
        .expect("pool running");
    }
    let finished: Vec<bool> = (0..2).map(|_| done_rx.recv().unwrap()).collect();
    println!(
        "outer jobs got their inner results in time: {finished:?}; wedge episodes: {}",
        watchdog.episodes()
    );
    drop(watchdog);
    pool.stop();
}

/// The loop waits for a pool job; the pool job waits for the loop.
fn cross_wait() {
    println!("--- 2. a cross-wait between the loop and a pool job");
    let reactor = Reactor::builder()
        .slow_callback_threshold(Some(DEFAULT_SLOW_CALLBACK_THRESHOLD))
        .blocking_call_threshold(Some(Duration::from_millis(500)))
        .build()
        .expect("reactor");
    let pool = Arc::new(ThreadPool::new(0, 2).expect("pool"));
    pool.start();
    let remote = reactor.remote();
    let job_pool = pool.clone();
    reactor.call_soon(move || {
        let (tx, rx) = mpsc::channel();
        job_pool
            .call_in_thread(move || {
                // The offending line on the pool side: waits for the loop.
                let v = remote.blocking_call(|| 42);
                let _ = tx.send(v);
            })
            .expect("pool running");
        // The offending line on the loop side: blocks the loop on the pool
        // (a real program would wait forever; this one gives up after 2 s).
        let _ = rx.recv_timeout(Duration::from_secs(2));
    });
    reactor.call_later(Duration::from_millis(100), || {
        weft::reactor::current().expect("on the loop").stop();
    });
    reactor.run().expect("run");
    let stats = reactor.statistics();
    println!(
        "slow callbacks: {}, stalls caught: {}, longest callback: {:?}",
        stats.slow_callbacks, stats.stalls_detected, stats.longest_callback
    );
    pool.stop();
}
