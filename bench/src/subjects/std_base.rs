//! The plain std baseline: `std::sync::mpsc` and threads, no runtime.
//!
//! - The "loop" is a thread blocked in `Receiver::recv` running boxed closures.
//! - `blocking_call_from_thread` is a closure plus a `sync_channel(1)` reply.
//! - The pool is `cores` threads sharing a `Mutex<Receiver<Job>>`
//!   (threadpool's design without the crate); `defer_to_thread` sends the job
//!   to that pool and the result back over a reply `mpsc`.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use super::Subject;
use crate::model::{
    DEADLINE, Job, Params, Scenario, arm_loop, channel_producers, channel_result, channel_shape,
    cores, per_op, pool_burst, pool_job, threads_named,
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
        Ok(match sc {
            Scenario::DeferSeq | Scenario::DeferInFlight => {
                let pool = StdPool::new(cores());
                let (rtx, rrx) = mpsc::channel::<u64>();
                let defer = || {
                    let rtx = rtx.clone();
                    pool.submit(Box::new(move || {
                        let _ = rtx.send(1u64);
                    }));
                };
                if sc == Scenario::DeferSeq {
                    let mut v = Vec::with_capacity(p.rtt_samples);
                    for _ in 0..p.rtt_samples {
                        let t = Instant::now();
                        defer();
                        rrx.recv_timeout(DEADLINE).expect("defer reply");
                        v.push(t.elapsed().as_nanos() as f64);
                    }
                    v
                } else {
                    let t = Instant::now();
                    for _ in 0..p.inflight_waves {
                        for _ in 0..1000 {
                            defer();
                        }
                        for _ in 0..1000 {
                            rrx.recv_timeout(DEADLINE).expect("defer reply");
                        }
                    }
                    vec![per_op(t, Instant::now(), p.inflight_waves * 1000)]
                }
            }
            Scenario::PoolThroughput | Scenario::ThreadsAfterBurst => {
                let pool = StdPool::new(cores());
                let jobs = if sc == Scenario::PoolThroughput {
                    p.pool_jobs
                } else {
                    p.growth_jobs
                };
                let ns = pool_burst(jobs, || pool.submit(Box::new(pool_job)));
                if sc == Scenario::PoolThroughput {
                    vec![ns]
                } else {
                    vec![threads_named(THREAD_NAME) as f64]
                }
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
                let prods = channel_producers(sc, p, send, move || {
                    let (rtx, rrx) = mpsc::sync_channel(1);
                    send2(Box::new(move || {
                        let _ = rtx.send(1u64);
                    }));
                    rrx.recv().expect("loop dropped the reply");
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
