//! tokio, as its docs recommend for a single-threaded loop with threads.
//!
//! - The loop is a `current_thread` runtime with `enable_all()` (a real loop
//!   has I/O, and with I/O enabled a remote wake is an eventfd write).
//! - `tokio` (`Handle::spawn`): `call_from_thread` is
//!   `Handle::spawn(async move { f() })` from the producer thread;
//!   `blocking_call_from_thread` is `Handle::spawn` plus a `oneshot` the caller
//!   `blocking_recv`s (tokio has no direct equivalent; `Handle::block_on` runs
//!   the future on the *caller*); `defer_to_thread` is `spawn_blocking(f).await`
//!   and the pool rows use `Handle::spawn_blocking`.
//! - `tokio-local` (`mpsc` into a `LocalSet`): the pattern for `!Send` loop
//!   state. Producers send boxed closures on an unbounded `mpsc` drained by a
//!   task on the `LocalSet`. Its pool is the same as `tokio`'s, so pool and
//!   defer rows are n/a.

use std::sync::Arc;
use std::time::Instant;

use tokio::runtime::{Builder, Runtime};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::LocalSet;

use super::{Subject, WakeCount};
use crate::model::{
    Job, Params, Producers, Scenario, arm_loop, channel_producers, channel_result, channel_shape,
    loop_end, loop_tick, per_op, pool_burst, pool_job, take_latencies, threads_named, time_each,
    wake_job, wake_producer,
};

const THREAD_NAME: &str = "bench-tokio";

fn runtime() -> Runtime {
    Builder::new_current_thread()
        .enable_all()
        .thread_name(THREAD_NAME)
        .build()
        .expect("tokio runtime")
}

/// Arms the loop-side counter to notify the returned `Notify` on the last tick.
fn arm(target: usize) -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    let n = notify.clone();
    arm_loop(target, move || n.notify_one());
    notify
}

/// tokio with `Handle::spawn` for cross-thread calls.
pub(super) struct Tokio;

impl Subject for Tokio {
    fn name(&self) -> &'static str {
        "tokio"
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        let rt = runtime();
        let handle = rt.handle().clone();
        Ok(match sc {
            Scenario::CftBurst1 | Scenario::CftBurst2 => {
                let producers = if sc == Scenario::CftBurst1 { 1 } else { 2 };
                let per = p.burst_calls;
                let notify = arm(producers * per);
                let prods = Producers::spawn(producers, move |_| {
                    for _ in 0..per {
                        drop(handle.spawn(async { loop_tick() }));
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
                        let job = wake_job(t);
                        drop(handle.spawn(async move { job() }));
                    })
                });
                rt.block_on(notify.notified());
                prods.join();
                take_latencies()
            }
            Scenario::DeferSeq => rt.block_on(async {
                let mut v = Vec::with_capacity(p.rtt_samples);
                for _ in 0..p.rtt_samples {
                    let t = Instant::now();
                    let r = tokio::task::spawn_blocking(|| 1u64).await;
                    v.push(t.elapsed().as_nanos() as f64);
                    r.expect("spawn_blocking failed");
                }
                v
            }),
            Scenario::DeferInFlight => rt.block_on(async {
                let t = Instant::now();
                for _ in 0..p.inflight_waves {
                    let wave: Vec<_> = (0..1000)
                        .map(|_| tokio::task::spawn_blocking(|| 1u64))
                        .collect();
                    for h in wave {
                        h.await.expect("spawn_blocking failed");
                    }
                }
                vec![per_op(t, Instant::now(), p.inflight_waves * 1000)]
            }),
            Scenario::BlockingCall => {
                let notify = arm(1);
                let n = p.rtt_samples;
                let prods = Producers::spawn(1, move |_| {
                    let v = time_each(n, || {
                        let (tx, rx) = oneshot::channel();
                        drop(handle.spawn(async move {
                            let _ = tx.send(1u64);
                        }));
                        rx.blocking_recv().expect("loop dropped the reply");
                    });
                    drop(handle.spawn(async { loop_tick() }));
                    v
                });
                rt.block_on(notify.notified());
                prods.join().1
            }
            Scenario::PoolThroughput => vec![pool_burst(p.pool_jobs, || {
                drop(handle.spawn_blocking(pool_job));
            })],
            Scenario::ThreadsAfterBurst => {
                pool_burst(p.growth_jobs, || drop(handle.spawn_blocking(pool_job)));
                vec![threads_named(THREAD_NAME) as f64]
            }
            _ => return Err("not a tokio scenario"),
        })
    }
}

/// tokio with an `mpsc` channel drained on a `LocalSet`.
pub(super) struct TokioLocal;

impl Subject for TokioLocal {
    fn name(&self) -> &'static str {
        "tokio-local"
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        match sc {
            Scenario::DeferSeq | Scenario::DeferInFlight => {
                return Err("same blocking pool as tokio");
            }
            Scenario::PoolThroughput | Scenario::ThreadsAfterBurst => {
                return Err("same blocking pool as tokio");
            }
            _ => {}
        }
        let (_, target) = channel_shape(sc, p)?;
        let rt = runtime();
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
        let prods = channel_producers(sc, p, send, move || {
            let (rtx, rrx) = oneshot::channel();
            send2(Box::new(move || {
                let _ = rtx.send(1u64);
            }));
            rrx.blocking_recv().expect("loop dropped the reply");
        });
        rt.block_on(local.run_until(notify.notified()));
        Ok(channel_result(sc, target, prods))
    }

    fn wake_syscalls(&self, _calls: usize) -> WakeCount {
        WakeCount::Strace
    }
}
