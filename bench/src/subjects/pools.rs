//! Plain pools with no loop: rayon and the `threadpool` crate.
//!
//! Both spawn `cores` threads eagerly and never grow, so they only take part in
//! the pool rows. rayon is a dedicated `ThreadPool` fed with `spawn` (the
//! fire-and-forget entry point; panics abort by default); `threadpool` uses
//! `execute`.

use std::sync::Arc;

use super::Subject;
use crate::model::{Ctx, Params, Scenario, cores, pool_burst, pool_task, thread_counts};

const NO_LOOP: &str = "a pool with no event loop";

/// The pool rows through `submit(i, ctx)`.
fn rows(
    sc: Scenario,
    p: &Params,
    submit: impl Fn(usize, &Arc<Ctx>),
) -> Result<Vec<f64>, &'static str> {
    let ctx = Ctx::new();
    match sc {
        Scenario::PoolThroughput => Ok(vec![pool_burst(p.pool_jobs, |i| submit(i, &ctx))]),
        Scenario::ThreadsAfterBurst | Scenario::ThreadsAfterKeepAlive => {
            Ok(thread_counts(sc, p, |i| submit(i, &ctx)))
        }
        _ => Err(NO_LOOP),
    }
}

/// rayon's `ThreadPool::spawn`.
pub(super) struct Rayon;

impl Subject for Rayon {
    fn name(&self) -> &'static str {
        "rayon"
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        if !matches!(
            sc,
            Scenario::PoolThroughput
                | Scenario::ThreadsAfterBurst
                | Scenario::ThreadsAfterKeepAlive
        ) {
            return Err(NO_LOOP);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cores())
            .thread_name(|i| format!("bench-rayon-{i}"))
            .build()
            .expect("rayon pool");
        rows(sc, p, |i, ctx| pool.spawn(pool_task(i, ctx.clone())))
    }
}

/// The `threadpool` crate's `execute`.
pub(super) struct Threadpool;

impl Subject for Threadpool {
    fn name(&self) -> &'static str {
        "threadpool"
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        let pool = threadpool::Builder::new()
            .num_threads(cores())
            .thread_name("bench-tp".into())
            .build();
        let r = rows(sc, p, |i, ctx| pool.execute(pool_task(i, ctx.clone())));
        pool.join();
        r
    }
}
