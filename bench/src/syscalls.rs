//! Wake syscalls per cross-thread call, for subjects with no statistics of
//! their own.
//!
//! The harness re-runs itself as a child (`--wake-child NAME CALLS`: one
//! one-producer `call_from_thread` burst, nothing else) under
//! `strace -f --seccomp-bpf -e trace=write,futex`, and counts the `write`
//! calls (eventfd wakes of a sleeping loop) and the `FUTEX_WAKE` calls (wakes
//! of a thread parked on a futex, which is how a `block_on` loop or a condvar
//! sleeps). Ptrace slows every traced syscall by microseconds, which leaves the
//! loop idle more often than in an untraced run, so these counts are an upper
//! bound. weft's figure comes from its own counter, untraced.

use std::path::Path;
use std::process::{Command, Stdio};

/// Syscalls counted in one traced burst.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Traced {
    /// `write(2)` calls (eventfd / pipe wakes).
    pub(crate) writes: u64,
    /// `futex(FUTEX_WAKE…)` calls.
    pub(crate) futex_wakes: u64,
}

/// Whether `strace` can be run here.
pub(crate) fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the child burst of `subject` under strace and counts its wakes.
pub(crate) fn trace_burst(subject: &str, calls: usize, dir: &Path) -> Result<Traced, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let log = dir.join(format!("strace-{subject}.txt"));
    let mut last_err = String::new();
    // `--seccomp-bpf` stops only on the traced syscalls; older strace lacks it.
    for seccomp in [true, false] {
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq"]);
        if seccomp {
            cmd.arg("--seccomp-bpf");
        }
        cmd.args(["-e", "trace=write,futex", "-o"])
            .arg(&log)
            .arg(&exe)
            .args(["--wake-child", subject, &calls.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = cmd.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(&log);
            return Ok(count(&text));
        }
        last_err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    }
    let _ = std::fs::remove_file(&log);
    Err(last_err)
}

fn count(text: &str) -> Traced {
    let mut t = Traced {
        writes: 0,
        futex_wakes: 0,
    };
    for line in text.lines() {
        // `<... write resumed>` lines continue a call already counted.
        if line.contains("resumed>") {
            continue;
        }
        if line.contains(" write(") || line.starts_with("write(") {
            t.writes += 1;
        } else if line.contains("FUTEX_WAKE") {
            t.futex_wakes += 1;
        }
    }
    t
}
