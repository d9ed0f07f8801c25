//! calloop: its `channel` event source as `call_from_thread`, and "bring your
//! own threads" (the maintainer's answer on calloop #132) for the pool.
//!
//! - The loop is `EventLoop::run`, stopped through a `LoopSignal`.
//! - `call_from_thread` sends a boxed closure on `calloop::channel::Sender`; the
//!   channel's callback runs it.
//! - `blocking_call_from_thread` has no calloop API; the documented pattern is a
//!   closure plus a reply channel (`std::sync::mpsc::sync_channel(1)` here).
//! - `defer_to_thread` is a `threadpool` job (one thread per core) that sends
//!   its value back on a `calloop::channel`; the pool rows themselves are the
//!   `threadpool` column's.
//! - The timer row uses `calloop::timer::Timer`, re-armed from its callback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use calloop::channel::{Event, Sender, channel};
use calloop::timer::{TimeoutAction, Timer};
use calloop::{EventLoop, LoopSignal};

use super::Subject;
use crate::model::{
    Ctx, Job, Params, Scenario, arm_loop, channel_producers, channel_result, channel_shape, cores,
    mark_end, mark_start, per_op, pin_loop, pin_other, record_latency, take_latencies, work,
};

/// calloop's channel into an `EventLoop`.
pub(super) struct Calloop;

/// Loop-side state of the defer rows.
struct Defer {
    pool: threadpool::ThreadPool,
    tx: Sender<u64>,
    ctx: Arc<Ctx>,
    sent: Instant,
    /// When the timed window opened (in flight: after the untimed wave 0).
    start: Instant,
    done: usize,
    total: usize,
    seq: bool,
    samples: Vec<f64>,
    signal: LoopSignal,
}

impl Defer {
    fn submit(&mut self, i: usize) {
        let tx = self.tx.clone();
        let w = work(i, self.ctx.clone());
        self.sent = Instant::now();
        self.pool.execute(move || {
            let _ = tx.send(w());
        });
    }

    fn on_value(&mut self, v: u64) {
        if self.seq {
            self.samples.push(self.sent.elapsed().as_nanos() as f64);
            assert_eq!(v, self.ctx.value(self.done), "defer lost its value");
        }
        self.done += 1;
        if !self.seq && self.done == 1000 {
            // Wave 0 was untimed, as for every subject.
            mark_start();
            self.start = Instant::now();
        }
        if self.done == self.total {
            mark_end();
            self.signal.stop();
        } else if self.seq {
            self.submit(self.done);
        } else if self.done % 1000 == 0 {
            for i in 0..1000 {
                self.submit(i);
            }
        }
    }
}

fn defer(sc: Scenario, p: &Params) -> Vec<f64> {
    // threadpool starts its threads at once: start them on the other core.
    pin_other();
    let pool = threadpool::Builder::new()
        .num_threads(cores())
        .thread_name("bench-calloop-pool".into())
        .build();
    pin_loop();
    let mut el: EventLoop<'_, Defer> = EventLoop::try_new().expect("calloop loop");
    let (tx, rx) = channel::<u64>();
    el.handle()
        .insert_source(rx, |ev, _, st: &mut Defer| {
            if let Event::Msg(v) = ev {
                st.on_value(v);
            }
        })
        .expect("insert channel");
    let seq = sc == Scenario::DeferSeq;
    let mut st = Defer {
        pool,
        tx,
        ctx: Ctx::new(),
        sent: Instant::now(),
        start: Instant::now(),
        done: 0,
        total: if seq {
            p.rtt_samples
        } else {
            (p.inflight_waves + 1) * 1000
        },
        seq,
        samples: Vec::new(),
        signal: el.get_signal(),
    };
    if seq {
        mark_start();
        st.start = Instant::now();
        st.submit(0);
    } else {
        for i in 0..1000 {
            st.submit(i);
        }
    }
    el.run(None, &mut st, |_| {}).expect("calloop run");
    if seq {
        st.samples
    } else {
        vec![per_op(st.start, Instant::now(), st.total - 1000)]
    }
}

fn timer(p: &Params) -> Vec<f64> {
    let mut el: EventLoop<'_, ()> = EventLoop::try_new().expect("calloop loop");
    let signal = el.get_signal();
    let delay = p.timer_delay;
    let mut left = p.timer_samples;
    let mut due = Instant::now() + delay;
    el.handle()
        .insert_source(Timer::from_duration(delay), move |_, _, _| {
            record_latency(due.elapsed().as_nanos() as f64);
            left -= 1;
            if left == 0 {
                mark_end();
                signal.stop();
                return TimeoutAction::Drop;
            }
            due = Instant::now() + delay;
            TimeoutAction::ToDuration(delay)
        })
        .expect("insert timer");
    mark_start();
    el.run(None, &mut (), |_| {}).expect("calloop run");
    take_latencies()
}

fn idle(idle: Duration) -> Vec<f64> {
    let pool = threadpool::Builder::new().num_threads(cores()).build();
    let (tx, rx) = std::sync::mpsc::channel();
    pool.execute(move || {
        let _ = tx.send(());
    });
    let _ = rx.recv();
    let mut el: EventLoop<'_, ()> = EventLoop::try_new().expect("calloop loop");
    let signal = el.get_signal();
    el.handle()
        .insert_source(Timer::from_duration(idle), move |_, _, _| {
            signal.stop();
            TimeoutAction::Drop
        })
        .expect("insert timer");
    mark_start();
    el.run(None, &mut (), |_| {}).expect("calloop run");
    mark_end();
    drop(pool);
    Vec::new()
}

impl Subject for Calloop {
    fn name(&self) -> &'static str {
        "calloop"
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        let (_, target) = match sc {
            Scenario::DeferSeq | Scenario::DeferInFlight => return Ok(defer(sc, p)),
            Scenario::Timer => return Ok(timer(p)),
            Scenario::Idle => return Ok(idle(p.idle)),
            Scenario::PoolThroughput
            | Scenario::ThreadsAfterBurst
            | Scenario::ThreadsAfterKeepAlive => {
                return Err("calloop has no pool: see the threadpool column");
            }
            _ => channel_shape(sc, p)?,
        };
        let mut el: EventLoop<'_, ()> = EventLoop::try_new().expect("calloop loop");
        let (tx, source) = channel::<Job>();
        el.handle()
            .insert_source(source, |ev, _, _| {
                if let Event::Msg(job) = ev {
                    job();
                }
            })
            .expect("insert channel");
        let signal = el.get_signal();
        arm_loop(target, move || signal.stop());
        let send = move |job: Job| {
            let _ = tx.send(job);
        };
        let send2 = send.clone();
        let prods = channel_producers(sc, p, send, move |i, ctx| {
            let (rtx, rrx) = std::sync::mpsc::sync_channel(1);
            let w = work(i, ctx.clone());
            send2(Box::new(move || {
                let _ = rtx.send(w());
            }));
            rrx.recv().expect("loop dropped the reply")
        });
        el.run(None, &mut (), |_| {}).expect("calloop run");
        Ok(channel_result(sc, target, prods))
    }
}
