//! Plain pools with no loop: rayon and the `threadpool` crate.
//!
//! Both spawn `cores` threads eagerly and never grow, so they only take part in
//! the pool rows. rayon is a dedicated `ThreadPool` fed with `spawn` (the
//! fire-and-forget entry point; panics abort by default); `threadpool` uses
//! `execute`.

use super::{Subject, WakeCount};
use crate::model::{Params, Scenario, cores, pool_burst, pool_job, threads_named};

const NO_LOOP: &str = "a pool with no event loop";

fn jobs(sc: Scenario, p: &Params) -> Result<usize, &'static str> {
    match sc {
        Scenario::PoolThroughput => Ok(p.pool_jobs),
        Scenario::ThreadsAfterBurst => Ok(p.growth_jobs),
        _ => Err(NO_LOOP),
    }
}

fn result(sc: Scenario, ns: f64, prefix: &str) -> Vec<f64> {
    if sc == Scenario::PoolThroughput {
        vec![ns]
    } else {
        vec![threads_named(prefix) as f64]
    }
}

/// rayon's `ThreadPool::spawn`.
pub(super) struct Rayon;

impl Subject for Rayon {
    fn name(&self) -> &'static str {
        "rayon"
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        let n = jobs(sc, p)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cores())
            .thread_name(|i| format!("bench-rayon-{i}"))
            .build()
            .expect("rayon pool");
        let ns = pool_burst(n, || pool.spawn(pool_job));
        Ok(result(sc, ns, "bench-rayon"))
    }

    fn wake_syscalls(&self, _calls: usize) -> WakeCount {
        WakeCount::NotApplicable(NO_LOOP)
    }
}

/// The `threadpool` crate's `execute`.
pub(super) struct Threadpool;

impl Subject for Threadpool {
    fn name(&self) -> &'static str {
        "threadpool"
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        let n = jobs(sc, p)?;
        let pool = threadpool::Builder::new()
            .num_threads(cores())
            .thread_name("bench-tp".into())
            .build();
        let ns = pool_burst(n, || pool.execute(pool_job));
        let r = result(sc, ns, "bench-tp");
        pool.join();
        Ok(r)
    }

    fn wake_syscalls(&self, _calls: usize) -> WakeCount {
        WakeCount::NotApplicable(NO_LOOP)
    }
}
