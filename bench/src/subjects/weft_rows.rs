//! weft's rows, written against the public API only (compiled with the
//! harness always measures weft).
//!
//! - The loop is `Reactor::run` on the measuring thread; producers hold a
//!   `Remote` and call `call_from_thread` with the same stateless jobs the
//!   peers get (no boxing: weft takes the closure by value).
//! - `defer_to_thread` runs inside `run_until_complete`; the in-flight row
//!   awaits waves of 1000 `Deferred`s.
//! - `blocking_call_from_thread` is the free function, from a plain thread.
//! - The pool rows use a standalone `ThreadPool::new(POOL_MIN, POOL_MAX)`.
//! - Wake syscalls come from `Reactor::statistics().wake_syscalls`, read
//!   around a one-producer burst.

use std::time::Instant;

use weft::{Reactor, Remote, ThreadPool};

use super::{Subject, WakeCount};
use crate::model::{
    Params, Producers, Scenario, arm_loop, loop_end, loop_tick, per_op, pool_burst, pool_job,
    take_latencies, time_each, wake_job, wake_producer,
};

/// Twisted's reactor pool bounds (`ThreadPool(0, 10)`).
const POOL_MIN: usize = 0;
const POOL_MAX: usize = 10;

/// weft itself.
pub(super) struct Weft;

fn reactor() -> Reactor {
    Reactor::new().expect("weft reactor")
}

fn send<F: FnOnce() + Send + 'static>(remote: &Remote, f: F) {
    assert!(
        remote.call_from_thread(f).is_ok(),
        "call_from_thread: loop stopped"
    );
}

/// A `call_from_thread` burst; returns ns per call and the wake syscalls made.
fn burst(producers: usize, per: usize) -> (f64, u64) {
    let reactor = reactor();
    let remote = reactor.remote();
    let stopper = remote.clone();
    arm_loop(producers * per, move || stopper.stop());
    let before = reactor.statistics().wake_syscalls;
    let prods = Producers::spawn(producers, move |_| {
        for _ in 0..per {
            send(&remote, loop_tick);
        }
        Vec::new()
    });
    reactor.run().expect("weft run");
    let (start, _) = prods.join();
    let wakes = reactor.statistics().wake_syscalls - before;
    (per_op(start, loop_end(), producers * per), wakes)
}

fn pool() -> ThreadPool {
    let pool = ThreadPool::new(POOL_MIN, POOL_MAX).expect("weft pool");
    pool.start();
    pool
}

impl Subject for Weft {
    fn name(&self) -> &'static str {
        super::WEFT
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        Ok(match sc {
            Scenario::CftBurst1 => vec![burst(1, p.burst_calls).0],
            Scenario::CftBurst2 => vec![burst(2, p.burst_calls).0],
            Scenario::CftWake => {
                let reactor = reactor();
                let remote = reactor.remote();
                let stopper = remote.clone();
                arm_loop(p.wake_samples, move || stopper.stop());
                let pp = p.clone();
                let prods = Producers::spawn(1, move |_| {
                    wake_producer(&pp, |t| send(&remote, wake_job(t)))
                });
                reactor.run().expect("weft run");
                prods.join();
                take_latencies()
            }
            Scenario::DeferSeq => {
                let reactor = reactor();
                let r = reactor.handle();
                let n = p.rtt_samples;
                reactor
                    .run_until_complete(async move {
                        let mut v = Vec::with_capacity(n);
                        for _ in 0..n {
                            let t = Instant::now();
                            let out = r.defer_to_thread(|| 1u64).await;
                            v.push(t.elapsed().as_nanos() as f64);
                            assert!(matches!(out, Ok(1)), "defer_to_thread failed");
                        }
                        v
                    })
                    .expect("weft run_until_complete")
            }
            Scenario::DeferInFlight => {
                let reactor = reactor();
                let r = reactor.handle();
                let waves = p.inflight_waves;
                reactor
                    .run_until_complete(async move {
                        let t = Instant::now();
                        for _ in 0..waves {
                            let wave: Vec<_> =
                                (0..1000).map(|_| r.defer_to_thread(|| 1u64)).collect();
                            for d in wave {
                                assert!(matches!(d.await, Ok(1)), "defer_to_thread failed");
                            }
                        }
                        vec![per_op(t, Instant::now(), waves * 1000)]
                    })
                    .expect("weft run_until_complete")
            }
            Scenario::BlockingCall => {
                let reactor = reactor();
                let remote = reactor.remote();
                let stopper = remote.clone();
                arm_loop(1, move || stopper.stop());
                let n = p.rtt_samples;
                let prods = Producers::spawn(1, move |_| {
                    let v = time_each(n, || {
                        let out = weft::blocking_call_from_thread(&remote, || 1u64);
                        assert!(matches!(out, Ok(1)), "blocking_call_from_thread failed");
                    });
                    send(&remote, loop_tick);
                    v
                });
                reactor.run().expect("weft run");
                prods.join().1
            }
            Scenario::PoolThroughput | Scenario::ThreadsAfterBurst => {
                let pool = pool();
                let jobs = if sc == Scenario::PoolThroughput {
                    p.pool_jobs
                } else {
                    p.growth_jobs
                };
                let ns = pool_burst(jobs, || {
                    assert!(pool.call_in_thread(pool_job).is_ok(), "pool quit");
                });
                let alive = pool.statistics().threads_alive as f64;
                pool.stop();
                if sc == Scenario::PoolThroughput {
                    vec![ns]
                } else {
                    vec![alive]
                }
            }
            _ => return Err("not a weft scenario"),
        })
    }

    fn wake_syscalls(&self, calls: usize) -> WakeCount {
        WakeCount::Counted(burst(1, calls).1)
    }
}
