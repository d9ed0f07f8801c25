//! smol: `blocking` for the pool, an `async-executor` `LocalExecutor` as the
//! loop, `async-channel` for cross-thread calls.
//!
//! - The loop is `futures_lite::future::block_on(ex.run(..))`, as the
//!   async-executor docs show. A `LocalExecutor` cannot be spawned onto from
//!   another thread, so `call_from_thread` is an unbounded `async_channel`
//!   drained by a task on it (`send_blocking` from the producer).
//! - `blocking_call_from_thread` sends a closure that replies on a bounded(1)
//!   `async_channel` the caller waits on with `recv_blocking`.
//! - `defer_to_thread` is `blocking::unblock(f).await`; the pool rows use
//!   `unblock(f).detach()`.
//! - `blocking`'s pool is process-global and (in 1.7.0) never retires idle
//!   threads, so its thread count carries over between rounds and scenarios.

use std::time::Instant;

use async_executor::LocalExecutor;
use futures_lite::future;

use super::Subject;
use crate::model::{
    Job, Params, Scenario, arm_loop, channel_producers, channel_result, channel_shape, per_op,
    pool_burst, pool_job, threads_named,
};

/// smol's `blocking` + `async-executor` + `async-channel`.
pub(super) struct Smol;

impl Subject for Smol {
    fn name(&self) -> &'static str {
        "smol"
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        let ex = LocalExecutor::new();
        Ok(match sc {
            Scenario::DeferSeq => future::block_on(ex.run(async {
                let mut v = Vec::with_capacity(p.rtt_samples);
                for _ in 0..p.rtt_samples {
                    let t = Instant::now();
                    let r = blocking::unblock(|| 1u64).await;
                    v.push(t.elapsed().as_nanos() as f64);
                    assert_eq!(r, 1);
                }
                v
            })),
            Scenario::DeferInFlight => future::block_on(ex.run(async {
                let t = Instant::now();
                for _ in 0..p.inflight_waves {
                    let wave: Vec<_> = (0..1000).map(|_| blocking::unblock(|| 1u64)).collect();
                    for task in wave {
                        assert_eq!(task.await, 1);
                    }
                }
                vec![per_op(t, Instant::now(), p.inflight_waves * 1000)]
            })),
            Scenario::PoolThroughput => vec![pool_burst(p.pool_jobs, || {
                blocking::unblock(pool_job).detach();
            })],
            Scenario::ThreadsAfterBurst => {
                pool_burst(p.growth_jobs, || blocking::unblock(pool_job).detach());
                vec![threads_named("blocking-") as f64]
            }
            _ => {
                let (_, target) = channel_shape(sc, p)?;
                let (tx, rx) = async_channel::unbounded::<Job>();
                ex.spawn(async move {
                    while let Ok(job) = rx.recv().await {
                        job();
                    }
                })
                .detach();
                let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
                arm_loop(target, move || {
                    let _ = stop_tx.try_send(());
                });
                let send = move |job: Job| {
                    let _ = tx.send_blocking(job);
                };
                let send2 = send.clone();
                let prods = channel_producers(sc, p, send, move || {
                    let (rtx, rrx) = async_channel::bounded(1);
                    send2(Box::new(move || {
                        let _ = rtx.try_send(1u64);
                    }));
                    rrx.recv_blocking().expect("loop dropped the reply");
                });
                let _ = future::block_on(ex.run(stop_rx.recv()));
                channel_result(sc, target, prods)
            }
        })
    }
}
