//! Scheduling settings for weft-kv's threads.
//!
//! Public: [`set_this_thread_fifo`], the real-time policy behind
//! [`Config::loop_fifo`](crate::Config::loop_fifo) (privileged; it keeps a
//! loop's turns whole while the loop leaves some of its core idle, and is
//! throttled by the kernel when it does not: see there), also used by the
//! tokio twin's `--worker-fifo`.
//!
//! The rest is the crate's: the loop threads' scheduling slice (Linux's
//! EEVDF scheduler, 6.12 and later), the one unprivileged way found to
//! keep other threads from holding a loop off its core for more than a
//! millisecond.
//!
//! Under EEVDF every runnable thread gets a virtual deadline one slice
//! after it becomes eligible; the scheduler runs the eligible thread whose
//! deadline comes first, and a woken thread preempts the running one when
//! its deadline is earlier. The default slice is about 0.75 ms ×
//! (1 + log2(cores)) (1.4 ms measured here); a thread may ask for its own
//! between 0.1 ms and 100 ms (`sched_setattr` with `sched_runtime` under
//! `SCHED_OTHER`). A short slice buys latency, not CPU share (that stays
//! the nice value's): the loop, woken by a socket or a finished database
//! job, runs at once instead of waiting for the current thread's slice to
//! end. Unlike a lower nice value or a real-time policy it needs no
//! privilege (checked as an unprivileged user).
//!
//! Invariants:
//! - Only the calling thread is changed; its nice value is kept (passed
//!   back unchanged), and threads it starts later do not inherit the slice
//!   (`SCHED_FLAG_RESET_ON_FORK`): the database threads keep the default.
//! - On a kernel without custom slices the call fails (or is ignored): the
//!   caller logs it and the loop runs with the default slice.
//!
//! It also reads a loop thread's own scheduler figures
//! (`ThreadSchedStat`: time on a CPU and time runnable but waiting for
//! one), so that a late lag-probe tick can be told apart: the loop's own
//! work (`Cause::Working`) or the scheduler holding it off its core
//! (`Cause::Waiting`).

use std::io;
use std::time::Duration;

/// `struct sched_attr` of `sched_setattr(2)` (its first version, 56 bytes).
#[repr(C)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;
const SCHED_IDLE: u32 = 5;
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

/// The kernel's bounds on a custom slice.
pub(crate) const MIN_SLICE: Duration = Duration::from_micros(100);
pub(crate) const MAX_SLICE: Duration = Duration::from_millis(100);

/// Asks for `slice` as the calling thread's EEVDF slice, keeping its
/// policy (`SCHED_OTHER`, as every thread of weft-kv) and nice value.
///
/// # Errors
///
/// `InvalidInput` outside [`MIN_SLICE`]`..=`[`MAX_SLICE`]; the syscall's
/// error otherwise (e.g. `EINVAL` from a kernel that predates the call's
/// fields).
pub(crate) fn set_thread_slice(slice: Duration) -> io::Result<()> {
    set_thread_policy(crate::DbPolicy::Normal, Some(slice))
}

/// Moves the calling thread to `policy` (one of the fair class's three),
/// with `slice` as its EEVDF slice (`None`: the kernel's default), keeping
/// its nice value. Threads it starts later do not inherit the slice but do
/// inherit the policy (`SCHED_FLAG_RESET_ON_FORK` resets only real-time
/// policies and negative nice values).
///
/// None of these needs privilege: `SCHED_BATCH` and `SCHED_IDLE` only
/// give up claims (a thread under them never preempts another on waking;
/// an idle one also weighs almost nothing and is preempted by any other
/// waking thread of its run queue).
///
/// # Errors
///
/// As [`set_thread_slice`].
pub(crate) fn set_thread_policy(
    policy: crate::DbPolicy,
    slice: Option<Duration>,
) -> io::Result<()> {
    if let Some(slice) = slice
        && !(MIN_SLICE..=MAX_SLICE).contains(&slice)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a scheduling slice must be within 0.1..=100 ms, not {slice:?}"),
        ));
    }
    let nice = rustix::process::getpriority_process(None)?;
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: match policy {
            crate::DbPolicy::Normal => SCHED_OTHER,
            crate::DbPolicy::Batch => SCHED_BATCH,
            crate::DbPolicy::Idle => SCHED_IDLE,
        },
        sched_flags: SCHED_FLAG_RESET_ON_FORK,
        sched_nice: nice,
        sched_priority: 0,
        // 0: the kernel's default slice.
        sched_runtime: slice.map_or(0, |s| s.as_nanos() as u64),
        sched_deadline: 0,
        sched_period: 0,
        sched_util_min: 0,
        sched_util_max: 0,
    };
    // SAFETY: `sched_setattr(0, attr, 0)` reads `attr.size` bytes from a
    // live, properly aligned `#[repr(C)]` value whose layout is the
    // kernel's `struct sched_attr` (version 1, 56 bytes) and changes only
    // the calling thread's scheduling attributes; no memory is written.
    // Neither rustix nor libc wraps this call.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0 as libc::pid_t,
            &attr as *const SchedAttr,
            0 as libc::c_uint,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The highest `SCHED_FIFO` priority Linux takes (the lowest is 1).
pub const MAX_FIFO_PRIORITY: u8 = 99;

/// Moves the calling thread to the real-time `SCHED_FIFO` policy at
/// `priority` (1 to [`MAX_FIFO_PRIORITY`]): from then on no thread of the
/// fair class (every ordinary thread and process, and most kernel
/// threads) preempts it; it runs until it blocks, yields, or a thread of
/// higher real-time priority wants its core. Threads it starts later do
/// not inherit the policy (`SCHED_RESET_ON_FORK`).
///
/// This is what keeps a loop thread's turns whole on a machine shared
/// with other work ([`Config::loop_fifo`](crate::Config::loop_fifo) and
/// "Loop stalls" in the crate docs say when it pays and when it costs).
/// Linux's real-time throttling (`/proc/sys/kernel/sched_rt_runtime_us`,
/// 95% by default) still leaves the rest of the machine a share if such a
/// thread never blocks.
///
/// # Errors
///
/// `InvalidInput` for a priority outside `1..=99` (nothing is changed);
/// `PermissionDenied` without `CAP_SYS_NICE` or an `RLIMIT_RTPRIO` of at
/// least `priority`, with a message saying so; the syscall's error
/// otherwise.
///
/// # Examples
///
/// ```
/// use std::io::ErrorKind;
///
/// let kind = |r: std::io::Result<()>| r.err().map(|e| e.kind());
/// assert_eq!(kind(weft_kv::sched::set_this_thread_fifo(0)), Some(ErrorKind::InvalidInput));
/// // On a thread of its own: the policy stays with the thread.
/// let r = std::thread::spawn(|| weft_kv::sched::set_this_thread_fifo(1)).join().unwrap();
/// // Allowed (root, CAP_SYS_NICE or RLIMIT_RTPRIO) or refused, never half-done.
/// assert!(matches!(kind(r), None | Some(ErrorKind::PermissionDenied)));
/// ```
pub fn set_this_thread_fifo(priority: u8) -> io::Result<()> {
    if !(1..=MAX_FIFO_PRIORITY).contains(&priority) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a SCHED_FIFO priority must be within 1..={MAX_FIFO_PRIORITY}, not {priority}"),
        ));
    }
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: `sched_setscheduler(0, ..)` reads one live `sched_param` and
    // changes only the calling thread's policy; no memory is written.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    Err(if e.kind() == io::ErrorKind::PermissionDenied {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "SCHED_FIFO priority {priority} needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least {priority} ({e})"
            ),
        )
    } else {
        e
    })
}

/// The calling thread's scheduling policy and priority, put back when
/// dropped (on the same thread): `run` saves loop 0's, the caller's
/// thread, before it may move it to `SCHED_FIFO`. Putting back a fair
/// policy needs no privilege; a real-time one the thread had before,
/// the privilege it had then. A failure is logged.
pub(crate) struct SavedPolicy {
    policy: i32,
    param: libc::sched_param,
}

impl SavedPolicy {
    pub(crate) fn of_this_thread() -> SavedPolicy {
        let policy = raw_policy();
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: reads only the calling thread's priority into one
        // `sched_param` we own.
        #[allow(unsafe_code)]
        let r = unsafe { libc::sched_getparam(0, &mut param) };
        if policy < 0 || r != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "cannot read this thread's scheduling policy");
            // The fair class, which every thread of weft-kv starts in.
            return SavedPolicy {
                policy: libc::SCHED_OTHER,
                param: libc::sched_param { sched_priority: 0 },
            };
        }
        SavedPolicy { policy, param }
    }
}

impl Drop for SavedPolicy {
    fn drop(&mut self) {
        // SAFETY: as in `set_this_thread_fifo`.
        #[allow(unsafe_code)]
        let r = unsafe { libc::sched_setscheduler(0, self.policy, &self.param) };
        if r != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "cannot put this thread's scheduling policy back");
        }
    }
}

/// The calling thread's policy as `sched_getscheduler` gives it (with
/// `SCHED_RESET_ON_FORK` when set; negative on error).
fn raw_policy() -> i32 {
    // SAFETY: `sched_getscheduler(0)` only reads the calling thread's
    // policy.
    #[allow(unsafe_code)]
    unsafe {
        libc::sched_getscheduler(0)
    }
}

/// Whether the calling thread runs under `SCHED_FIFO`.
#[cfg(test)]
pub(crate) fn runs_fifo() -> bool {
    raw_policy() & !libc::SCHED_RESET_ON_FORK == libc::SCHED_FIFO
}

/// The calling thread's policy, as one of the fair class's (`None`:
/// another class, e.g. a real-time one).
#[cfg(test)]
pub(crate) fn thread_policy() -> Option<crate::DbPolicy> {
    match raw_policy() & !libc::SCHED_RESET_ON_FORK {
        libc::SCHED_OTHER => Some(crate::DbPolicy::Normal),
        libc::SCHED_BATCH => Some(crate::DbPolicy::Batch),
        libc::SCHED_IDLE => Some(crate::DbPolicy::Idle),
        _ => None,
    }
}

/// The calling thread's `/proc/thread-self/schedstat`, opened once (the
/// file stays bound to the thread that opened it) and read again with
/// `pread`: one syscall per reading.
pub(crate) struct ThreadSchedStat(std::fs::File);

impl ThreadSchedStat {
    /// Opens the calling thread's figures (`Err` without procfs or
    /// schedstats).
    pub(crate) fn open() -> io::Result<ThreadSchedStat> {
        std::fs::File::open("/proc/thread-self/schedstat").map(ThreadSchedStat)
    }

    /// Time on a CPU and time runnable but waiting for one, since the
    /// thread started.
    pub(crate) fn read(&self) -> io::Result<(Duration, Duration)> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 96];
        let n = self.0.read_at(&mut buf, 0)?;
        parse_schedstat(&buf[..n])
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable schedstat"))
    }
}

/// `schedstat`'s first two fields (ns on a CPU, ns waiting for one).
fn parse_schedstat(b: &[u8]) -> Option<(Duration, Duration)> {
    let mut f = std::str::from_utf8(b).ok()?.split_whitespace();
    let mut next = || f.next()?.parse::<u64>().ok().map(Duration::from_nanos);
    Some((next()?, next()?))
}

/// Why a loop's lag-probe tick came late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The loop thread was runnable but held off its core for at least
    /// half the lateness: the scheduler's doing, not the loop's work.
    Waiting,
    /// The loop ran (or slept) through most of it: its own turns.
    Working,
}

/// Classifies a tick `lag` late, given how long the loop thread waited
/// for a core since the tick before.
pub(crate) fn cause_of(lag: Duration, waited: Duration) -> Cause {
    if waited * 2 >= lag {
        Cause::Waiting
    } else {
        Cause::Working
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_tick_is_the_schedulers_when_the_loop_waited_for_a_core_half_of_it() {
        let ms = Duration::from_millis;
        assert_eq!(cause_of(ms(4), ms(2)), Cause::Waiting);
        assert_eq!(cause_of(ms(4), ms(9)), Cause::Waiting);
        assert_eq!(cause_of(ms(4), Duration::from_micros(1999)), Cause::Working);
        assert_eq!(cause_of(ms(2), Duration::ZERO), Cause::Working);
    }

    #[test]
    fn schedstat_reads_cpu_and_wait_and_a_second_reading_sees_more_cpu() {
        assert_eq!(
            parse_schedstat(b"3500000 2200000 93738\n"),
            Some((Duration::from_micros(3500), Duration::from_micros(2200)))
        );
        assert_eq!(parse_schedstat(b"12"), None);
        let Ok(stat) = ThreadSchedStat::open() else {
            // No schedstats on this kernel: nothing else to check.
            return;
        };
        let (cpu0, _) = stat.read().unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let (cpu1, _) = stat.read().unwrap();
        assert!(cpu1 > cpu0, "{cpu0:?} then {cpu1:?}");
    }

    #[test]
    fn a_fifo_priority_out_of_range_is_refused_before_any_change() {
        for p in [0, 100, 255] {
            let e = set_this_thread_fifo(p).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(e.to_string().contains(&p.to_string()), "{e}");
        }
        assert!(!runs_fifo());
    }

    /// A refusal for want of privilege, saying so, and nothing changed.
    fn assert_refused(e: &io::Error) {
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("CAP_SYS_NICE"), "{e}");
        assert!(!runs_fifo());
    }

    #[test]
    fn a_fifo_thread_runs_fifo_and_the_threads_it_starts_do_not() {
        std::thread::spawn(|| match set_this_thread_fifo(1) {
            Ok(()) => {
                assert!(runs_fifo());
                let child = std::thread::spawn(|| (runs_fifo(), thread_policy()));
                assert_eq!(
                    child.join().unwrap(),
                    (false, Some(crate::DbPolicy::Normal))
                );
            }
            Err(e) => assert_refused(&e),
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_saved_policy_is_put_back_when_dropped() {
        std::thread::spawn(|| {
            let saved = SavedPolicy::of_this_thread();
            let took = set_this_thread_fifo(2).is_ok();
            assert_eq!(runs_fifo(), took);
            drop(saved);
            assert!(!runs_fifo());
            assert_eq!(thread_policy(), Some(crate::DbPolicy::Normal));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn without_cap_sys_nice_fifo_is_refused_with_the_reason() {
        std::thread::spawn(|| {
            use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
            // Capabilities are per thread: only this one gives it up.
            let mut caps = capabilities(None).unwrap();
            caps.effective.remove(CapabilitySet::SYS_NICE);
            caps.permitted.remove(CapabilitySet::SYS_NICE);
            set_capabilities(None, caps).unwrap();
            let rtprio = rustix::process::getrlimit(rustix::process::Resource::Rtprio);
            if rtprio.current.is_none_or(|n| n >= 1) {
                // This process may take real-time priorities without the
                // capability: nothing to refuse here.
                return;
            }
            assert_refused(&set_this_thread_fifo(1).unwrap_err());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_attribute_block_has_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<SchedAttr>(), 56);
        assert_eq!(std::mem::offset_of!(SchedAttr, sched_runtime), 24);
        assert_eq!(std::mem::offset_of!(SchedAttr, sched_util_max), 52);
    }

    #[test]
    fn a_slice_outside_the_kernels_bounds_is_refused_before_the_call() {
        for bad in [
            Duration::ZERO,
            Duration::from_micros(99),
            Duration::from_millis(101),
        ] {
            let e = set_thread_slice(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn a_batch_policy_applies_to_this_thread_and_keeps_its_nice_value() {
        std::thread::spawn(|| {
            let nice = rustix::process::getpriority_process(None).unwrap();
            assert_eq!(thread_policy(), Some(crate::DbPolicy::Normal));
            set_thread_policy(crate::DbPolicy::Batch, None).unwrap();
            assert_eq!(thread_policy(), Some(crate::DbPolicy::Batch));
            assert_eq!(rustix::process::getpriority_process(None).unwrap(), nice);
            // A thread started now inherits it (only real-time policies
            // are reset on fork).
            let child = std::thread::spawn(thread_policy).join().unwrap();
            assert_eq!(child, Some(crate::DbPolicy::Batch));
        })
        .join()
        .unwrap();
        // The calling thread was not touched.
        assert_eq!(thread_policy(), Some(crate::DbPolicy::Normal));
    }

    /// The thread's slice as `/proc/thread-self/sched` shows it, in ns
    /// (`None`: not shown, e.g. without `CONFIG_SCHED_DEBUG`).
    fn shown_slice() -> Option<u64> {
        let s = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("se.slice"))
            .and_then(|v| v.trim_start_matches([' ', ':']).trim().parse().ok())
    }

    #[test]
    fn the_slice_applies_to_this_thread_only_and_keeps_its_nice_value() {
        std::thread::spawn(|| {
            let nice = rustix::process::getpriority_process(None).unwrap();
            if set_thread_slice(Duration::from_micros(300)).is_err() {
                // A kernel without custom slices: nothing else to check.
                return;
            }
            assert_eq!(rustix::process::getpriority_process(None).unwrap(), nice);
            let Some(mine) = shown_slice() else { return };
            assert_eq!(mine, 300_000);
            // A thread started now does not inherit it.
            let child = std::thread::spawn(shown_slice).join().unwrap();
            assert_ne!(child, Some(300_000));
        })
        .join()
        .unwrap();
    }
}
