//! Bridge benchmarks: `defer_to_thread` round trip (sequential, and 1000 in
//! flight) and `blocking_call_from_thread` round trip.
//!
//! Run: `cargo bench --bench bridge`. p50/p99 of the sequential round trips
//! are printed after criterion's output.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weft::{Reactor, blocking_call_from_thread};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name} (n={}): p50 {:?}, p99 {:?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99)
    );
}

fn bench_defer(c: &mut Criterion) {
    let reactor = Reactor::new().unwrap();
    // Start the loop (and with it the reactor pool).
    reactor.run_until_complete(async {}).unwrap();
    let h = reactor.handle();
    c.bench_function("defer_to_thread_round_trip", |b| {
        b.iter_custom(|iters| {
            let h = h.clone();
            reactor
                .run_until_complete(async move {
                    let t = Instant::now();
                    for _ in 0..iters {
                        h.defer_to_thread(|| 1u64).await.unwrap();
                    }
                    t.elapsed()
                })
                .unwrap()
        })
    });
    let mut group = c.benchmark_group("defer_to_thread_in_flight");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000", |b| {
        b.iter_custom(|iters| {
            let h = h.clone();
            reactor
                .run_until_complete(async move {
                    let t = Instant::now();
                    for _ in 0..iters {
                        let wave: Vec<_> = (0..1000).map(|_| h.defer_to_thread(|| 1u64)).collect();
                        for d in wave {
                            d.await.unwrap();
                        }
                    }
                    t.elapsed()
                })
                .unwrap()
        })
    });
    group.finish();
    let h2 = h.clone();
    let samples = reactor
        .run_until_complete(async move {
            let mut v = Vec::with_capacity(5000);
            for _ in 0..5000 {
                let t = Instant::now();
                h2.defer_to_thread(|| 1u64).await.unwrap();
                v.push(t.elapsed());
            }
            v
        })
        .unwrap();
    report("defer_to_thread round trip", samples);
    reactor.stop();
    reactor.run().unwrap();
}

fn bench_blocking_call(c: &mut Criterion) {
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let loop_thread = thread::spawn(move || {
        let reactor = Reactor::new().unwrap();
        tx.send(reactor.remote()).unwrap();
        reactor.run().unwrap();
        done_tx.send(()).unwrap();
    });
    let remote = rx.recv().unwrap();
    c.bench_function("blocking_call_from_thread_round_trip", |b| {
        b.iter(|| blocking_call_from_thread(&remote, || 1u64).unwrap())
    });
    let samples = (0..5000)
        .map(|_| {
            let t = Instant::now();
            blocking_call_from_thread(&remote, || 1u64).unwrap();
            t.elapsed()
        })
        .collect();
    report("blocking_call_from_thread round trip", samples);
    remote.stop();
    done_rx.recv().unwrap();
    loop_thread.join().unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_defer, bench_blocking_call
}
criterion_main!(benches);
