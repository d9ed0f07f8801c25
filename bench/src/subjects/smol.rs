//! smol: `blocking` for the pool, an `async-executor` `LocalExecutor` as the
//! loop, driven by `async_io::block_on` (what `smol::block_on` is: the loop
//! thread polls the async-io reactor, epoll, when idle), `async-channel` for
//! cross-thread calls.
//!
//! - A `LocalExecutor` cannot be spawned onto from another thread, so
//!   `call_from_thread` is an unbounded `async_channel` drained by a task on
//!   it (`send_blocking` from the producer).
//! - `blocking_call_from_thread` sends a closure that replies on a bounded(1)
//!   `async_channel` the caller waits on with `recv_blocking`.
//! - `defer_to_thread` is `blocking::unblock(f).await`; the pool rows use
//!   `unblock(f).detach()`; the timer row `async_io::Timer::after`.
//! - `smol-capped`: the pool rows with `BLOCKING_MAX_THREADS` set to the
//!   threads weft's pool runs with ([`capped_threads`]). `blocking` reads it once per process, so the
//!   harness runs every cell in a process of its own and sets it there
//!   ([`Subject::env`]).

use std::time::Instant;

use async_executor::LocalExecutor;

use super::Subject;
use crate::model::{
    Ctx, Job, Params, Scenario, arm_loop, capped_threads, channel_producers, channel_result,
    channel_shape, mark_end, mark_start, per_op, pin_loop, pin_other, pool_burst, pool_task,
    record_latency, take_latencies, thread_counts, work,
};

/// smol's `blocking` + `async-executor` + `async-channel` + `async-io`.
pub(super) struct Smol {
    /// Whether this is the capped variant.
    pub(super) capped: bool,
}

const CAP_VAR: &str = "BLOCKING_MAX_THREADS";

fn capped_row(sc: Scenario) -> bool {
    matches!(
        sc,
        Scenario::DeferInFlight
            | Scenario::PoolThroughput
            | Scenario::ThreadsAfterBurst
            | Scenario::ThreadsAfterKeepAlive
    )
}

impl Subject for Smol {
    fn name(&self) -> &'static str {
        if self.capped { "smol-capped" } else { "smol" }
    }

    fn env(&self, sc: Scenario) -> Vec<(&'static str, String)> {
        if self.capped && capped_row(sc) {
            vec![(CAP_VAR, capped_threads().to_string())]
        } else {
            Vec::new()
        }
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        if self.capped {
            if !capped_row(sc) {
                return Err("the cap only matters to the pool rows");
            }
            let want = capped_threads().to_string();
            if std::env::var(CAP_VAR).ok().as_deref() != Some(want.as_str()) {
                return Err("BLOCKING_MAX_THREADS not set: run through the harness");
            }
        }
        let ex = LocalExecutor::new();
        let ctx = Ctx::new();
        Ok(match sc {
            Scenario::DeferSeq => async_io::block_on(ex.run(async {
                pin_other();
                let _ = blocking::unblock(work(0, ctx.clone())).await;
                pin_loop();
                mark_start();
                let mut v = Vec::with_capacity(p.rtt_samples);
                for i in 0..p.rtt_samples {
                    let t = Instant::now();
                    let r = blocking::unblock(work(i, ctx.clone())).await;
                    v.push(t.elapsed().as_nanos() as f64);
                    assert_eq!(r, ctx.value(i));
                }
                mark_end();
                v
            })),
            Scenario::DeferInFlight => async_io::block_on(ex.run(async {
                let mut t = Instant::now();
                // Wave 0 is untimed, as for every subject: the pool's threads are
                // started and its per-job state is warm before the window opens.
                for w in 0..=p.inflight_waves {
                    if w == 1 {
                        mark_start();
                        t = Instant::now();
                    }
                    let wave: Vec<_> = (0..1000)
                        .map(|i| (i, blocking::unblock(work(i, ctx.clone()))))
                        .collect();
                    for (i, task) in wave {
                        assert_eq!(task.await, ctx.value(i));
                    }
                }
                let ns = per_op(t, Instant::now(), p.inflight_waves * 1000);
                mark_end();
                vec![ns]
            })),
            Scenario::PoolThroughput => vec![pool_burst(p.pool_jobs, |i| {
                blocking::unblock(pool_task(i, ctx.clone())).detach();
            })],
            Scenario::ThreadsAfterBurst | Scenario::ThreadsAfterKeepAlive => {
                thread_counts(sc, p, |i| {
                    blocking::unblock(pool_task(i, ctx.clone())).detach();
                })
            }
            Scenario::Timer => async_io::block_on(ex.run(async {
                mark_start();
                for _ in 0..p.timer_samples {
                    let due = Instant::now() + p.timer_delay;
                    async_io::Timer::after(p.timer_delay).await;
                    record_latency(due.elapsed().as_nanos() as f64);
                }
                mark_end();
                take_latencies()
            })),
            Scenario::Idle => async_io::block_on(ex.run(async {
                let _ = blocking::unblock(work(0, ctx.clone())).await;
                mark_start();
                async_io::Timer::after(p.idle).await;
                mark_end();
                Vec::new()
            })),
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
                let prods = channel_producers(sc, p, send, move |i, ctx| {
                    let (rtx, rrx) = async_channel::bounded(1);
                    let w = work(i, ctx.clone());
                    send2(Box::new(move || {
                        let _ = rtx.try_send(w());
                    }));
                    rrx.recv_blocking().expect("loop dropped the reply")
                });
                let _ = async_io::block_on(ex.run(stop_rx.recv()));
                channel_result(sc, target, prods)
            }
        })
    }
}
