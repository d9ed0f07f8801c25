//! tokio, as its docs recommend for a single-threaded loop with threads.
//!
//! - The loop is a `current_thread` runtime with `enable_all()` (a real loop
//!   has I/O, and with I/O enabled a remote wake is an eventfd write).
//! - `tokio` (the lead column): the pattern tokio's docs give for `!Send`
//!   loop state. Producers send boxed closures on an unbounded `mpsc` drained
//!   by a task on a `LocalSet`; `blocking_call_from_thread` sends a closure
//!   that replies on a `oneshot` the caller `blocking_recv`s.
//!   `defer_to_thread` is `spawn_blocking(f).await`, the pool rows use
//!   `Handle::spawn_blocking`, the timer row `tokio::time::sleep` (1 ms
//!   granularity).
//! - `tokio-spawn`: `call_from_thread` is `Handle::spawn(async move { f() })`
//!   from the producer thread, its slowest pattern (an eventfd write per
//!   call); `blocking_call_from_thread` is `Handle::spawn` plus a `oneshot`
//!   (`Handle::block_on` would run the future on the *caller*). Pool rows are
//!   `tokio`'s.
//! - `tokio-capped`: the pool rows with `max_blocking_threads` set to the
//!   threads weft's pool runs with ([`capped_threads`]).

use std::sync::Arc;
use std::time::Instant;

use tokio::runtime::{Builder, Runtime};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::LocalSet;

use super::Subject;
use crate::model::{
    Ctx, Job, Params, Producers, Scenario, arm_loop, capped_threads, channel_producers,
    channel_result, channel_shape, loop_end, mark_end, mark_start, per_op, pin_loop, pin_other,
    pool_burst, pool_task, record_latency, take_latencies, thread_counts, tick_job, time_each,
    wake_job, wake_producer, work,
};

const THREAD_NAME: &str = "bench-tokio";

fn runtime(cap: Option<usize>) -> Runtime {
    let mut b = Builder::new_current_thread();
    b.enable_all().thread_name(THREAD_NAME);
    if let Some(cap) = cap {
        b.max_blocking_threads(cap);
    }
    b.build().expect("tokio runtime")
}

/// Arms the loop-side counter to notify the returned `Notify` on the last tick.
fn arm(target: usize) -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    let n = notify.clone();
    arm_loop(target, move || n.notify_one());
    notify
}

/// The rows that only use the runtime's blocking pool and timer.
fn pool_rows(sc: Scenario, p: &Params, cap: Option<usize>) -> Result<Vec<f64>, &'static str> {
    let rt = runtime(cap);
    let handle = rt.handle().clone();
    let ctx = Ctx::new();
    Ok(match sc {
        Scenario::DeferSeq => rt.block_on(async {
            pin_other();
            let _ = tokio::task::spawn_blocking(work(0, ctx.clone())).await;
            pin_loop();
            mark_start();
            let mut v = Vec::with_capacity(p.rtt_samples);
            for i in 0..p.rtt_samples {
                let t = Instant::now();
                let r = tokio::task::spawn_blocking(work(i, ctx.clone())).await;
                v.push(t.elapsed().as_nanos() as f64);
                assert_eq!(r.ok(), Some(ctx.value(i)), "spawn_blocking failed");
            }
            mark_end();
            v
        }),
        Scenario::DeferInFlight => rt.block_on(async {
            let mut t = Instant::now();
            // Wave 0 is untimed, as for every subject: the pool's threads are
            // started and its per-job state is warm before the window opens.
            for w in 0..=p.inflight_waves {
                if w == 1 {
                    mark_start();
                    t = Instant::now();
                }
                let wave: Vec<_> = (0..1000)
                    .map(|i| (i, tokio::task::spawn_blocking(work(i, ctx.clone()))))
                    .collect();
                for (i, h) in wave {
                    assert_eq!(h.await.ok(), Some(ctx.value(i)), "spawn_blocking failed");
                }
            }
            let ns = per_op(t, Instant::now(), p.inflight_waves * 1000);
            mark_end();
            vec![ns]
        }),
        Scenario::PoolThroughput => vec![pool_burst(p.pool_jobs, |i| {
            drop(handle.spawn_blocking(pool_task(i, ctx.clone())));
        })],
        Scenario::ThreadsAfterBurst | Scenario::ThreadsAfterKeepAlive => {
            thread_counts(sc, p, |i| {
                drop(handle.spawn_blocking(pool_task(i, ctx.clone())));
            })
        }
        Scenario::Timer => rt.block_on(async {
            mark_start();
            for _ in 0..p.timer_samples {
                let due = Instant::now() + p.timer_delay;
                tokio::time::sleep(p.timer_delay).await;
                record_latency(due.elapsed().as_nanos() as f64);
            }
            mark_end();
            take_latencies()
        }),
        Scenario::Idle => rt.block_on(async {
            let _ = tokio::task::spawn_blocking(work(0, ctx.clone())).await;
            mark_start();
            tokio::time::sleep(p.idle).await;
            mark_end();
            Vec::new()
        }),
        _ => return Err("not a tokio scenario"),
    })
}

/// tokio's recommended pattern: `mpsc` into a `LocalSet`, `spawn_blocking`.
pub(super) struct Tokio;

impl Subject for Tokio {
    fn name(&self) -> &'static str {
        "tokio"
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        let Ok((_, target)) = channel_shape(sc, p) else {
            return pool_rows(sc, p, None);
        };
        let rt = runtime(None);
        let local = LocalSet::new();
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        local.spawn_local(async move {
            while let Some(job) = rx.recv().await {
                job();
            }
        });
        let notify = arm(target);
        let send = move |job: Job| {
            let _ = tx.send(job);
        };
        let send2 = send.clone();
        let prods = channel_producers(sc, p, send, move |i, ctx| {
            let (rtx, rrx) = oneshot::channel();
            let w = work(i, ctx.clone());
            send2(Box::new(move || {
                let _ = rtx.send(w());
            }));
            rrx.blocking_recv().expect("loop dropped the reply")
        });
        rt.block_on(local.run_until(notify.notified()));
        Ok(channel_result(sc, target, prods))
    }
}

/// tokio with `Handle::spawn` for cross-thread calls.
pub(super) struct TokioSpawn;

impl Subject for TokioSpawn {
    fn name(&self) -> &'static str {
        "tokio-spawn"
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        let rt = runtime(None);
        let handle = rt.handle().clone();
        let ctx = Ctx::new();
        Ok(match sc {
            Scenario::CftBurst1 | Scenario::CftBurst2 => {
                let producers = if sc == Scenario::CftBurst1 { 1 } else { 2 };
                let per = p.burst_calls;
                let notify = arm(producers * per);
                let prods = Producers::spawn(producers, move |_| {
                    for i in 0..per {
                        let job = tick_job(i, ctx.clone());
                        drop(handle.spawn(async move { job() }));
                    }
                    Vec::new()
                });
                rt.block_on(notify.notified());
                let (start, _) = prods.join();
                vec![per_op(start, loop_end(), producers * per)]
            }
            Scenario::CftWake => {
                let notify = arm(p.wake_samples);
                let pp = p.clone();
                let prods = Producers::spawn(1, move |_| {
                    wake_producer(&pp, |t| {
                        let job = wake_job(t, ctx.clone());
                        drop(handle.spawn(async move { job() }));
                    })
                });
                rt.block_on(notify.notified());
                prods.join();
                take_latencies()
            }
            Scenario::BlockingCall => {
                let notify = arm(1);
                let n = p.rtt_samples;
                let prods = Producers::spawn(1, move |_| {
                    let v = time_each(n, |i| {
                        let (tx, rx) = oneshot::channel();
                        let w = work(i, ctx.clone());
                        drop(handle.spawn(async move {
                            let _ = tx.send(w());
                        }));
                        let out = rx.blocking_recv().expect("loop dropped the reply");
                        assert_eq!(out, ctx.value(i));
                    });
                    let job = tick_job(0, ctx.clone());
                    drop(handle.spawn(async move { job() }));
                    v
                });
                rt.block_on(notify.notified());
                prods.join().1
            }
            _ => return Err("same runtime and pool as tokio"),
        })
    }
}

/// tokio's blocking pool capped at weft's pool size.
pub(super) struct TokioCapped;

impl Subject for TokioCapped {
    fn name(&self) -> &'static str {
        "tokio-capped"
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        match sc {
            Scenario::DeferInFlight
            | Scenario::PoolThroughput
            | Scenario::ThreadsAfterBurst
            | Scenario::ThreadsAfterKeepAlive => pool_rows(sc, p, Some(capped_threads())),
            _ => Err("the cap only matters to the pool rows"),
        }
    }
}
