//! Local task cost against the number of live tasks: `spawn_local` + await
//! of a trivial task while 1k, 100k or 1M other tasks are alive (parked
//! forever), for weft's executor and tokio's `LocalSet` in the same run.
//!
//! Run: `cargo bench --bench tasks`. The machine may be shared: compare the
//! two subjects' figures within one run, not across runs. After criterion's
//! output a summary prints ns/task for each subject and size and the
//! weft/tokio ratio.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tokio::task::LocalSet;
use weft::Reactor;

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];

/// A weft reactor with `live` tasks parked forever.
fn weft_with(live: usize) -> Reactor {
    let reactor = Reactor::new().unwrap();
    for _ in 0..live {
        reactor.spawn_local(std::future::pending::<()>()).detach();
    }
    // One turn polls them all once; they stay parked.
    reactor.run_until_complete(async {}).unwrap();
    assert_eq!(reactor.statistics().tasks_alive as usize, live);
    reactor
}

fn weft_spawn_await(reactor: &Reactor, n: u64) -> Duration {
    reactor
        .run_until_complete(async move {
            let h = weft::reactor::current().unwrap();
            let start = Instant::now();
            for i in 0..n {
                let v = h.spawn_local(async move { i }).await.unwrap();
                black_box(v);
            }
            start.elapsed()
        })
        .unwrap()
}

/// A tokio current-thread runtime and a `LocalSet` with `live` tasks parked.
fn tokio_with(live: usize) -> (tokio::runtime::Runtime, LocalSet) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let local = LocalSet::new();
    for _ in 0..live {
        local.spawn_local(std::future::pending::<()>());
    }
    rt.block_on(local.run_until(tokio::task::yield_now()));
    (rt, local)
}

fn tokio_spawn_await(rt: &tokio::runtime::Runtime, local: &LocalSet, n: u64) -> Duration {
    rt.block_on(local.run_until(async move {
        let start = Instant::now();
        for i in 0..n {
            let v = tokio::task::spawn_local(async move { i }).await.unwrap();
            black_box(v);
        }
        start.elapsed()
    }))
}

fn bench_tasks(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_local_await");
    let mut summary = Vec::new();
    for live in SIZES {
        let reactor = weft_with(live);
        group.bench_with_input(BenchmarkId::new("weft", live), &live, |b, _| {
            b.iter_custom(|iters| weft_spawn_await(&reactor, iters))
        });
        let (rt, local) = tokio_with(live);
        group.bench_with_input(BenchmarkId::new("tokio_localset", live), &live, |b, _| {
            b.iter_custom(|iters| tokio_spawn_await(&rt, &local, iters))
        });
        // Interleaved samples for the printed ratio (both subjects under
        // the same machine load).
        const N: u64 = 200_000;
        let (mut w, mut t) = (Duration::MAX, Duration::MAX);
        for _ in 0..5 {
            w = w.min(weft_spawn_await(&reactor, N));
            t = t.min(tokio_spawn_await(&rt, &local, N));
        }
        summary.push((live, w, t));
        drop(reactor);
        drop(local);
    }
    group.finish();
    for (live, w, t) in summary {
        let (w, t) = (
            w.as_nanos() as f64 / 200_000.0,
            t.as_nanos() as f64 / 200_000.0,
        );
        println!(
            "spawn_local+await with {live:>9} live tasks: weft {w:6.0} ns/task, tokio LocalSet {t:6.0} ns/task, ratio weft/tokio {:.2}",
            w / t
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    targets = bench_tasks
}
criterion_main!(benches);
