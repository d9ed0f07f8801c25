//! The subjects: weft, its peers and the physical floors, one type each.
//!
//! A subject measures the scenarios it supports and answers `Err(reason)` for
//! the others, which the table shows as "n/a". Adding a peer is one file with
//! one `impl Subject` and one line in [`all`]. Each peer is written the way its
//! own documentation recommends; the module of each peer says which calls it
//! uses and why.
//!
//! Every measurement builds the peer's runtime afresh, so a runtime that grows
//! (tokio's blocking pool) starts from zero each time; the exception is smol's
//! `blocking`, a process-global pool that cannot be reset (its rows say so).

use crate::model::{Params, Scenario};

mod calloop_rt;
mod floors;
mod pools;
mod smol;
mod std_base;
mod tokio_rt;
mod weft_rows;

/// How a subject's wake syscalls per burst are found.
#[derive(Clone, Debug)]
pub(crate) enum WakeCount {
    /// Counted in process by the subject's own statistics.
    Counted(u64),
    /// Counted by running the one-producer burst under `strace`.
    Strace,
    /// Not a `call_from_thread` subject, or not observable: the reason.
    NotApplicable(&'static str),
}

/// One column of the table.
pub(crate) trait Subject {
    /// The column name.
    fn name(&self) -> &'static str;

    /// Measures `scenario`, returning its samples, or why it does not apply.
    fn measure(&self, scenario: Scenario, p: &Params) -> Result<Vec<f64>, &'static str>;

    /// How this subject's wake syscalls per `calls` cross-thread calls are found.
    fn wake_syscalls(&self, calls: usize) -> WakeCount {
        let _ = calls;
        WakeCount::Strace
    }
}

/// Every subject, weft first when its rows are compiled in.
pub(crate) fn all() -> Vec<Box<dyn Subject>> {
    vec![
        Box::new(weft_rows::Weft),
        Box::new(tokio_rt::Tokio),
        Box::new(tokio_rt::TokioLocal),
        Box::new(smol::Smol),
        Box::new(calloop_rt::Calloop),
        Box::new(pools::Rayon),
        Box::new(pools::Threadpool),
        Box::new(std_base::StdBaseline),
        Box::new(floors::Floors),
    ]
}

/// The name of the subject holding the floors.
pub(crate) const FLOORS: &str = floors::NAME;

/// The name of the weft subject.
pub(crate) const WEFT: &str = "weft";
