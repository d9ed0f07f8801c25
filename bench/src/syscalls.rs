//! Wake syscalls per cross-thread call, counted the same way for every
//! subject, weft included.
//!
//! The harness re-runs itself as a child that does one one-producer
//! `call_from_thread` burst and nothing else, under a syscall counter, and
//! counts `write(2)` calls (eventfd wakes of a loop asleep in epoll) and
//! `futex` wakes (`FUTEX_WAKE`, private or not, plain or bitset: wakes of a
//! thread parked on a futex, which is how a `block_on` loop or a condvar
//! sleeps). It does so for a burst of N calls and for a small one of n calls,
//! and reports `(count(N) - count(n)) / (N - n)` per call, so what the process
//! does once (setup, teardown, printing its result) cancels out.
//!
//! - With `perf` and the `syscalls:` tracepoints (check with
//!   `perf stat -e 'syscalls:sys_enter_write' true`), counting costs the
//!   traced process almost nothing.
//! - Otherwise `strace -f -e trace=write,futex`, for every subject alike.
//!   Ptrace slows every traced syscall by microseconds, which leaves loops
//!   idle more often than untraced, so these counts are an upper bound.

use std::path::Path;
use std::process::{Command, Stdio};

/// Syscalls counted in one run.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Traced {
    /// `write(2)` calls (eventfd / pipe wakes).
    pub(crate) writes: f64,
    /// `futex` wake calls.
    pub(crate) futex_wakes: f64,
}

/// How syscalls are counted in this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counter {
    /// `perf stat` on the `syscalls:sys_enter_*` tracepoints.
    Perf,
    /// `strace -f`.
    Strace,
}

impl Counter {
    /// The name shown in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Counter::Perf => "perf tracepoints",
            Counter::Strace => "strace -f",
        }
    }
}

/// `futex` ops that wake: FUTEX_WAKE (1), FUTEX_WAKE_BITSET (10), each also
/// with FUTEX_PRIVATE_FLAG (128).
const FUTEX_WAKE_FILTER: &str = "op == 1 || op == 129 || op == 10 || op == 138";

fn runs(mut cmd: Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The best counter this machine offers, if any.
pub(crate) fn counter() -> Option<Counter> {
    let mut perf = Command::new("perf");
    perf.args(["stat", "-e", "syscalls:sys_enter_write", "true"]);
    if runs(perf) {
        return Some(Counter::Perf);
    }
    let mut strace = Command::new("strace");
    strace.arg("-V");
    runs(strace).then_some(Counter::Strace)
}

/// Runs `exe args` under `counter` and counts its wake syscalls; `log` is a
/// scratch file.
pub(crate) fn count(
    counter: Counter,
    exe: &Path,
    args: &[String],
    log: &Path,
) -> Result<Traced, String> {
    let mut last_err = String::new();
    let attempts: &[bool] = match counter {
        Counter::Perf => &[false],
        // `--seccomp-bpf` stops only on the traced syscalls; older strace lacks it.
        Counter::Strace => &[true, false],
    };
    for &seccomp in attempts {
        let mut cmd = match counter {
            Counter::Perf => {
                let mut c = Command::new("perf");
                c.args(["stat", "-x", ",", "-o"])
                    .arg(log)
                    .args(["-e", "syscalls:sys_enter_write"])
                    .args([
                        "-e",
                        "syscalls:sys_enter_futex",
                        "--filter",
                        FUTEX_WAKE_FILTER,
                    ])
                    .arg("--");
                c
            }
            Counter::Strace => {
                let mut c = Command::new("strace");
                c.args(["-f", "-qq"]);
                if seccomp {
                    c.arg("--seccomp-bpf");
                }
                c.args(["-e", "trace=write,futex", "-o"]).arg(log);
                c
            }
        };
        cmd.arg(exe)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = cmd.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            let text = std::fs::read_to_string(log).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(log);
            return Ok(match counter {
                Counter::Perf => parse_perf(&text),
                Counter::Strace => parse_strace(&text),
            });
        }
        last_err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    }
    let _ = std::fs::remove_file(log);
    Err(last_err)
}

/// `perf stat -x,` lines: `value,unit,event,...`.
fn parse_perf(text: &str) -> Traced {
    let mut t = Traced::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut f = line.split(',');
        let (Some(v), Some(_), Some(ev)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let v: f64 = v.trim().parse().unwrap_or(0.0);
        if ev.contains("sys_enter_write") {
            t.writes += v;
        } else if ev.contains("sys_enter_futex") {
            t.futex_wakes += v;
        }
    }
    t
}

fn parse_strace(text: &str) -> Traced {
    let mut t = Traced::default();
    for line in text.lines() {
        // `<... write resumed>` lines continue a call already counted.
        if line.contains("resumed>") {
            continue;
        }
        if line.contains(" write(") || line.starts_with("write(") {
            t.writes += 1.0;
        } else if line.contains("FUTEX_WAKE") {
            t.futex_wakes += 1.0;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_csv_sums_writes_and_filtered_futex_wakes() {
        let text = "# started on Sun Nov 29\n\n\
                    296,,syscalls:sys_enter_write,810306,100.00,,\n\
                    19,,syscalls:sys_enter_futex,810306,100.00,,\n";
        let t = parse_perf(text);
        assert_eq!((t.writes, t.futex_wakes), (296.0, 19.0));
    }

    #[test]
    fn strace_counts_each_call_once_and_only_futex_wakes() {
        let text = "12 write(5, \"\\1\\0\\0\\0\\0\\0\\0\\0\", 8 <unfinished ...>\n\
                    12 <... write resumed>) = 8\n\
                    13 futex(0x7f, FUTEX_WAKE_PRIVATE, 1) = 1\n\
                    13 futex(0x7f, FUTEX_WAIT_PRIVATE, 0, NULL) = 0\n\
                    write(1, \"x\", 1) = 1\n";
        let t = parse_strace(text);
        assert_eq!((t.writes, t.futex_wakes), (2.0, 1.0));
    }
}
