//! calloop: its `channel` event source as `call_from_thread`.
//!
//! - The loop is `EventLoop::run`, stopped through a `LoopSignal`.
//! - `call_from_thread` sends a boxed closure on `calloop::channel::Sender`; the
//!   channel's callback runs it.
//! - `blocking_call_from_thread` has no calloop API; the documented pattern is a
//!   closure plus a reply channel (`std::sync::mpsc::sync_channel(1)` here).
//! - calloop spawns no threads by design (maintainer on calloop #132), so the
//!   defer and pool rows are n/a.

use calloop::EventLoop;
use calloop::channel::{Event, channel};

use super::Subject;
use crate::model::{
    Job, Params, Scenario, arm_loop, channel_producers, channel_result, channel_shape,
};

/// calloop's channel into an `EventLoop`.
pub(super) struct Calloop;

impl Subject for Calloop {
    fn name(&self) -> &'static str {
        "calloop"
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        let (_, target) = match sc {
            Scenario::DeferSeq
            | Scenario::DeferInFlight
            | Scenario::PoolThroughput
            | Scenario::ThreadsAfterBurst => {
                return Err("calloop spawns no threads by design (calloop #132)");
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
        let prods = channel_producers(sc, p, send, move || {
            let (rtx, rrx) = std::sync::mpsc::sync_channel(1);
            send2(Box::new(move || {
                let _ = rtx.send(1u64);
            }));
            rrx.recv().expect("loop dropped the reply");
        });
        el.run(None, &mut (), |_| {}).expect("calloop run");
        Ok(channel_result(sc, target, prods))
    }
}
