//! The subjects: weft, its peers and the physical floors, one type each.
//!
//! A subject measures the scenarios it supports and answers `Err(reason)` for
//! the others, which the table shows as "n/a". Adding a peer is one file with
//! one `impl Subject` and one line in [`all`]. Each peer is written the way its
//! own documentation recommends; the module of each peer says which calls it
//! uses and why.
//!
//! Every measurement runs in a fresh process (the harness re-executes itself
//! with a hidden `--cell` argument), so a pool that grows (tokio's, smol's
//! process-global `blocking`) starts from zero each time, thread counts and
//! CPU time are the subject's alone, and per-process settings (smol's
//! `BLOCKING_MAX_THREADS`) can differ per column.

use crate::model::{Params, Scenario};

mod calloop_rt;
mod db;
mod floors;
mod net;
mod pools;
mod smol;
mod std_base;
mod tokio_rt;
mod weft_rows;

/// One column of the table.
pub(crate) trait Subject {
    /// The column name.
    fn name(&self) -> &'static str;

    /// Measures `scenario`, returning its samples, or why it does not apply.
    fn measure(&self, scenario: Scenario, p: &Params) -> Result<Vec<f64>, &'static str>;

    /// Environment variables the process measuring `scenario` must start
    /// with (smol's `blocking` reads its cap once per process).
    fn env(&self, scenario: Scenario) -> Vec<(&'static str, String)> {
        let _ = scenario;
        Vec::new()
    }
}

/// Every subject, in column order: weft, then the lead peers.
pub(crate) fn all() -> Vec<Box<dyn Subject>> {
    vec![
        Box::new(weft_rows::Weft),
        Box::new(RowsOnly {
            name: "weft-proto",
            why: "weft's protocol style only has network rows",
        }),
        Box::new(tokio_rt::Tokio),
        Box::new(tokio_rt::TokioSpawn),
        Box::new(tokio_rt::TokioCapped),
        Box::new(smol::Smol { capped: false }),
        Box::new(smol::Smol { capped: true }),
        Box::new(calloop_rt::Calloop),
        Box::new(pools::Rayon),
        Box::new(pools::Threadpool),
        Box::new(RowsOnly {
            name: "tokio-pool",
            why: "a connection pool only has database rows",
        }),
        Box::new(std_base::StdBaseline),
        Box::new(floors::Floors),
    ]
}

/// Measures `sc` for `s`: the network and database rows are written per
/// subject in [`net`] and [`db`] (one server, one client, one workload for
/// all), every other row by the subject itself.
pub(crate) fn measure(s: &dyn Subject, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
    if net::is_net(sc) {
        net::measure(s.name(), sc, p)
    } else if db::is_db(sc) {
        db::measure(s.name(), sc, p)
    } else {
        s.measure(sc, p)
    }
}

/// A column of the network or database rows only, measured in [`net`] or
/// [`db`]: weft's protocol style (`listen_tcp` with a `Protocol`) and the
/// tokio connection pool.
struct RowsOnly {
    name: &'static str,
    why: &'static str,
}

impl Subject for RowsOnly {
    fn name(&self) -> &'static str {
        self.name
    }

    fn measure(&self, _: Scenario, _: &Params) -> Result<Vec<f64>, &'static str> {
        Err(self.why)
    }
}

/// The name of the subject holding the floors.
pub(crate) const FLOORS: &str = floors::NAME;

/// The name of the weft subject.
pub(crate) const WEFT: &str = "weft";
