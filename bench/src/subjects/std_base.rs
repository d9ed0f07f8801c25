//! The plain std baseline: `std::sync::mpsc` and threads, no runtime.
//!
//! - The "loop" is a thread blocked in `Receiver::recv` running boxed closures.
//! - `blocking_call_from_thread` is a closure plus a `sync_channel(1)` reply.
//! - The pool is `cores` threads sharing a `Mutex<Receiver<Job>>`
//!   (threadpool's design without the crate); `defer_to_thread` sends the job
//!   to that pool and the result back over a reply `mpsc`.
//! - The timer row is `recv_timeout(100 µs)` on the loop's channel.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use super::Subject;
use crate::model::{
    Ctx, DEADLINE, Job, Params, Scenario, arm_loop, channel_producers, channel_result,
    channel_shape, cores, mark_end, mark_start, per_op, pin_loop, pin_other, pool_burst, pool_task,
    thread_counts, work,
};

const THREAD_NAME: &str = "bench-std";

/// A fixed pool of threads sharing one `Mutex<Receiver>`.
struct StdPool {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl StdPool {
    fn new(n: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(rx));
        let threads = (0..n)
            .map(|_| {
                let rx = rx.clone();
                thread::Builder::new()
                    .name(THREAD_NAME.into())
                    .spawn(move || {
                        loop {
                            let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            match job {
                                Ok(job) => job(),
                                Err(_) => break,
                            }
                        }
                    })
                    .expect("spawn pool thread")
            })
            .collect();
        StdPool {
            tx: Some(tx),
            threads,
        }
    }

    fn submit(&self, job: Job) {
        let _ = self.tx.as_ref().expect("pool running").send(job);
    }
}

impl Drop for StdPool {
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// std `mpsc` + threads.
pub(super) struct StdBaseline;

impl Subject for StdBaseline {
    fn name(&self) -> &'static str {
        "std"
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        let ctx = Ctx::new();
        Ok(match sc {
            Scenario::DeferSeq | Scenario::DeferInFlight | Scenario::Idle => {
                // The pool starts its threads at once: on the other core.
                pin_other();
                let pool = StdPool::new(cores());
                pin_loop();
                let (rtx, rrx) = mpsc::channel::<u64>();
                let defer = |i: usize| {
                    let rtx = rtx.clone();
                    let w = work(i, ctx.clone());
                    pool.submit(Box::new(move || {
                        let _ = rtx.send(w());
                    }));
                };
                if sc == Scenario::Idle {
                    defer(0);
                    rrx.recv_timeout(DEADLINE).expect("defer reply");
                    mark_start();
                    assert!(rrx.recv_timeout(p.idle).is_err());
                    mark_end();
                    Vec::new()
                } else if sc == Scenario::DeferSeq {
                    mark_start();
                    let mut v = Vec::with_capacity(p.rtt_samples);
                    for i in 0..p.rtt_samples {
                        let t = Instant::now();
                        defer(i);
                        let out = rrx.recv_timeout(DEADLINE).expect("defer reply");
                        v.push(t.elapsed().as_nanos() as f64);
                        assert_eq!(out, ctx.value(i));
                    }
                    mark_end();
                    v
                } else {
                    let mut t = Instant::now();
                    // Wave 0 is untimed, as for every subject: the pool's threads are
                    // started and its per-job state is warm before the window opens.
                    for w in 0..=p.inflight_waves {
                        if w == 1 {
                            mark_start();
                            t = Instant::now();
                        }
                        for i in 0..1000 {
                            defer(i);
                        }
                        for _ in 0..1000 {
                            rrx.recv_timeout(DEADLINE).expect("defer reply");
                        }
                    }
                    let ns = per_op(t, Instant::now(), p.inflight_waves * 1000);
                    mark_end();
                    vec![ns]
                }
            }
            Scenario::PoolThroughput => {
                let pool = StdPool::new(cores());
                vec![pool_burst(p.pool_jobs, |i| {
                    pool.submit(Box::new(pool_task(i, ctx.clone())));
                })]
            }
            Scenario::ThreadsAfterBurst | Scenario::ThreadsAfterKeepAlive => {
                let pool = StdPool::new(cores());
                thread_counts(sc, p, |i| pool.submit(Box::new(pool_task(i, ctx.clone()))))
            }
            Scenario::Timer => {
                let (_tx, rx) = mpsc::channel::<Job>();
                mark_start();
                let v = (0..p.timer_samples)
                    .map(|_| {
                        let due = Instant::now() + p.timer_delay;
                        assert!(rx.recv_timeout(p.timer_delay).is_err());
                        due.elapsed().as_nanos() as f64
                    })
                    .collect();
                mark_end();
                v
            }
            _ => {
                let (_, target) = channel_shape(sc, p)?;
                let (tx, rx) = mpsc::channel::<Job>();
                let stopped = Rc::new(Cell::new(false));
                let s = stopped.clone();
                arm_loop(target, move || s.set(true));
                let send = move |job: Job| {
                    let _ = tx.send(job);
                };
                let send2 = send.clone();
                let prods = channel_producers(sc, p, send, move |i, ctx| {
                    let (rtx, rrx) = mpsc::sync_channel(1);
                    let w = work(i, ctx.clone());
                    send2(Box::new(move || {
                        let _ = rtx.send(w());
                    }));
                    rrx.recv().expect("loop dropped the reply")
                });
                while !stopped.get() {
                    let job = rx.recv_timeout(DEADLINE).expect("loop starved");
                    job();
                }
                channel_result(sc, target, prods)
            }
        })
    }
}
