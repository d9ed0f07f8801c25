//! The cell's frame, set up by the cell runner: the measured section's CPU
//! marks ([`mark_start`], [`mark_end`]), how latency rows pin their threads
//! ([`Pin`]), and the thread counts of the thread rows.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::thread;

use super::{Params, Scenario, pool_burst};
use crate::os;

static MARK_START: Mutex<Option<u64>> = Mutex::new(None);
static MARK_END: Mutex<Option<u64>> = Mutex::new(None);
static BASE_THREADS: AtomicUsize = AtomicUsize::new(1);

/// Forgets the marks of the previous measurement.
pub(crate) fn reset_marks() {
    *MARK_START.lock().unwrap_or_else(|e| e.into_inner()) = None;
    *MARK_END.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Marks the start of the measured section (the first mark wins).
pub(crate) fn mark_start() {
    let mut m = MARK_START.lock().unwrap_or_else(|e| e.into_inner());
    if m.is_none() {
        *m = Some(os::process_cpu_ns());
    }
}

/// Marks the end of the measured section (the last mark wins).
pub(crate) fn mark_end() {
    *MARK_END.lock().unwrap_or_else(|e| e.into_inner()) = Some(os::process_cpu_ns());
}

/// The process CPU time at the two marks, if both were set.
pub(crate) fn marks() -> Option<(u64, u64)> {
    let s = *MARK_START.lock().unwrap_or_else(|e| e.into_inner());
    let e = *MARK_END.lock().unwrap_or_else(|e| e.into_inner());
    s.zip(e)
}

/// How latency rows pin their two threads (`--pin`, passed to the cells in
/// [`PIN_ENV`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pin {
    /// The loop on one core, the other thread on another.
    Split,
    /// Both threads on one core (the default).
    Same,
    /// No pinning.
    Off,
}

/// The environment variable that carries `--pin` to the cells.
pub(crate) const PIN_ENV: &str = "WEFT_BENCH_PIN";

impl Pin {
    /// Parses `split`, `same` or `off`.
    pub(crate) fn parse(s: &str) -> Option<Pin> {
        match s {
            "split" => Some(Pin::Split),
            "same" => Some(Pin::Same),
            "off" => Some(Pin::Off),
            _ => None,
        }
    }

    /// The name `parse` reads.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Pin::Split => "split",
            Pin::Same => "same",
            Pin::Off => "off",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }
}

static PIN_MODE: AtomicU8 = AtomicU8::new(Pin::Off as u8);

/// Sets how measurement `sc` pins its threads (latency rows only; the mode
/// comes from [`PIN_ENV`], default same; the spin floor always splits), and
/// the thread count the subject's threads are counted from.
pub(crate) fn set_cell(sc: Scenario) {
    let mode = std::env::var(PIN_ENV)
        .ok()
        .and_then(|v| Pin::parse(&v))
        .unwrap_or(Pin::Same);
    let mode = match mode {
        _ if !sc.pinned() || os::pin_pair().is_none() => Pin::Off,
        // Two spinners on one core only trade time slices (crossbeam #821).
        Pin::Same if sc == Scenario::FloorSpin => Pin::Split,
        m => m,
    };
    PIN_MODE.store(mode.code(), Ordering::SeqCst);
    BASE_THREADS.store(os::threads(), Ordering::SeqCst);
}

fn pin_mode() -> Pin {
    match PIN_MODE.load(Ordering::SeqCst) {
        0 => Pin::Split,
        1 => Pin::Same,
        _ => Pin::Off,
    }
}

/// Pins the calling (loop) thread to the first core, in pinned measurements.
pub(crate) fn pin_loop() {
    if let (Pin::Split | Pin::Same, Some((a, _))) = (pin_mode(), os::pin_pair()) {
        os::pin_current(a);
    }
}

/// Pins the calling thread to the other thread's core, in pinned
/// measurements (the loop's core with `--pin same`, the second core with
/// `--pin split`): the producer or caller, and the loop thread while it
/// starts its pool threads (they inherit its mask), so pool workers sit
/// where the mode puts the other thread.
pub(crate) fn pin_other() {
    match (pin_mode(), os::pin_pair()) {
        (Pin::Split, Some((_, b))) => {
            os::pin_current(b);
        }
        (Pin::Same, Some((a, _))) => {
            os::pin_current(a);
        }
        _ => {}
    }
}

/// Threads the subject added to this process since the cell started.
fn threads_added() -> usize {
    os::threads().saturating_sub(BASE_THREADS.load(Ordering::SeqCst))
}

/// The keep-alive row's pause: tells the parent the burst is over (one line
/// on stdout), then sleeps past the keep-alive.
fn keep_alive_pause(p: &Params) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);
    thread::sleep(p.keep_alive_wait);
}

/// The thread rows: counts the threads added by a burst of `jobs` pool jobs
/// through `submit`, and for the keep-alive row again after the keep-alive.
pub(crate) fn thread_counts(sc: Scenario, p: &Params, submit: impl FnMut(usize)) -> Vec<f64> {
    pool_burst(p.growth_jobs, submit);
    let mut v = vec![threads_added() as f64];
    if sc == Scenario::ThreadsAfterKeepAlive {
        keep_alive_pause(p);
        v.push(threads_added() as f64);
    }
    v
}
