//! weft's rows, written against the public API only.
//!
//! - The loop is `Reactor::run` on the measuring thread, built by
//!   [`reactor`] with one idle I/O source registered, as every real program
//!   has: weft skips `epoll_wait` while no source is registered, a fast path
//!   no program with sockets gets (tokio likewise runs with `enable_all()`).
//!   Until weft has a socket API the source is the signal pipe
//!   (`handle_signals(true)`, registered with mio); swapping it for an idle
//!   UDP socket changes that one function.
//! - Producers hold a `Remote` and call `call_from_thread` with the same jobs
//!   the peers get (an index and an `Arc` captured; weft boxes the closure).
//! - `defer_to_thread` runs inside `run_until_complete` on the reactor's own
//!   pool (0..64 threads); the in-flight row awaits waves of 1000 `Deferred`s.
//! - `blocking_call_from_thread` is the free function, from a plain thread.
//! - The pool rows use a standalone `ThreadPool::new(POOL_MIN, POOL_MAX)`.
//! - The timer row chains `call_later(100 µs)` calls on the loop.

use std::time::{Duration, Instant};

use weft::reactor::Handle;
use weft::{Reactor, Remote, ThreadPool};

use super::Subject;
use crate::model::{
    Ctx, Params, Producers, Scenario, arm_loop, loop_end, mark_end, mark_start, per_op, pin_loop,
    pin_other, pool_burst, pool_task, record_latency, take_latencies, thread_counts, tick_job,
    time_each, wake_job, wake_producer, work,
};

/// Twisted's reactor pool bounds (`ThreadPool(0, 10)`), for the pool rows.
const POOL_MIN: usize = 0;
const POOL_MAX: usize = 10;

/// weft itself.
pub(super) struct Weft;

/// The loop every weft row runs: a reactor with one idle I/O source (a bound
/// UDP socket nobody sends to, kept in loop-local state), so each turn polls
/// epoll as a real program's loop does.
pub(super) fn reactor() -> Reactor {
    let reactor = Reactor::new().expect("weft reactor");
    let idle = weft::net::UdpSocket::bind(([127, 0, 0, 1], 0).into()).expect("idle UDP socket");
    reactor
        .insert_local(idle)
        .expect("loop-local slot for the idle socket");
    reactor
}

fn send<F: FnOnce() + Send + 'static>(remote: &Remote, f: F) {
    assert!(
        remote.call_from_thread(f).is_ok(),
        "call_from_thread: loop stopped"
    );
}

/// A `call_from_thread` burst; returns ns per call.
fn burst(producers: usize, per: usize) -> f64 {
    let reactor = reactor();
    let remote = reactor.remote();
    let stopper = remote.clone();
    arm_loop(producers * per, move || stopper.stop());
    let ctx = Ctx::new();
    let prods = Producers::spawn(producers, move |_| {
        for i in 0..per {
            send(&remote, tick_job(i, ctx.clone()));
        }
        Vec::new()
    });
    reactor.run().expect("weft run");
    let (start, _) = prods.join();
    per_op(start, loop_end(), producers * per)
}

fn pool() -> ThreadPool {
    let pool = ThreadPool::new(POOL_MIN, POOL_MAX).expect("weft pool");
    pool.start();
    pool
}

/// Chains `left` timers of `delay`, each armed when the previous one ran,
/// recording how late each ran; stops the loop after the last.
fn arm_timer(h: &Handle, left: usize, delay: Duration) {
    let due = Instant::now() + delay;
    let next = h.clone();
    h.call_later(delay, move || {
        record_latency(due.elapsed().as_nanos() as f64);
        if left > 1 {
            arm_timer(&next, left - 1, delay);
        } else {
            mark_end();
            next.stop();
        }
    });
}

impl Subject for Weft {
    fn name(&self) -> &'static str {
        super::WEFT
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        let ctx = Ctx::new();
        Ok(match sc {
            Scenario::CftBurst1 => vec![burst(1, p.burst_calls)],
            Scenario::CftBurst2 => vec![burst(2, p.burst_calls)],
            Scenario::CftWake => {
                let reactor = reactor();
                let remote = reactor.remote();
                let stopper = remote.clone();
                arm_loop(p.wake_samples, move || stopper.stop());
                let pp = p.clone();
                let prods = Producers::spawn(1, move |_| {
                    wake_producer(&pp, |t| send(&remote, wake_job(t, ctx.clone())))
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
                        // Start the pool's threads on the other core.
                        pin_other();
                        let _ = r.defer_to_thread(work(0, ctx.clone())).await;
                        pin_loop();
                        mark_start();
                        let mut v = Vec::with_capacity(n);
                        for i in 0..n {
                            let t = Instant::now();
                            let out = r.defer_to_thread(work(i, ctx.clone())).await;
                            v.push(t.elapsed().as_nanos() as f64);
                            assert_eq!(out.ok(), Some(ctx.value(i)), "defer_to_thread failed");
                        }
                        mark_end();
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
                        let mut t = Instant::now();
                        // Wave 0 is untimed, as for every subject: the pool's threads are
                        // started and its per-job state is warm before the window opens.
                        for w in 0..=waves {
                            if w == 1 {
                                mark_start();
                                t = Instant::now();
                            }
                            let wave: Vec<_> = (0..1000)
                                .map(|i| (i, r.defer_to_thread(work(i, ctx.clone()))))
                                .collect();
                            for (i, d) in wave {
                                assert_eq!(d.await.ok(), Some(ctx.value(i)), "defer failed");
                            }
                        }
                        let ns = per_op(t, Instant::now(), waves * 1000);
                        mark_end();
                        vec![ns]
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
                    let v = time_each(n, |i| {
                        let out = weft::blocking_call_from_thread(&remote, work(i, ctx.clone()));
                        assert_eq!(out.ok(), Some(ctx.value(i)), "blocking call failed");
                    });
                    send(&remote, tick_job(0, ctx.clone()));
                    v
                });
                reactor.run().expect("weft run");
                prods.join().1
            }
            Scenario::PoolThroughput => {
                let pool = pool();
                let ns = pool_burst(p.pool_jobs, |i| {
                    assert!(
                        pool.call_in_thread(pool_task(i, ctx.clone())).is_ok(),
                        "pool quit"
                    );
                });
                pool.stop();
                vec![ns]
            }
            Scenario::ThreadsAfterBurst | Scenario::ThreadsAfterKeepAlive => {
                let pool = pool();
                let v = thread_counts(sc, p, |i| {
                    assert!(
                        pool.call_in_thread(pool_task(i, ctx.clone())).is_ok(),
                        "pool quit"
                    );
                });
                pool.stop();
                v
            }
            Scenario::Timer => {
                let reactor = reactor();
                arm_timer(&reactor.handle(), p.timer_samples, p.timer_delay);
                mark_start();
                reactor.run().expect("weft run");
                take_latencies()
            }
            Scenario::Idle => {
                let reactor = reactor();
                let r = reactor.handle();
                let idle = p.idle;
                reactor
                    .run_until_complete(async move {
                        let _ = r.defer_to_thread(work(0, ctx.clone())).await;
                        mark_start();
                        let _ = r.sleep(idle).await;
                        mark_end();
                    })
                    .expect("weft run_until_complete");
                Vec::new()
            }
            _ => return Err("not a weft scenario"),
        })
    }
}
