//! The few OS facts the harness reads or sets through raw `libc` calls:
//! process CPU time, thread pinning and the process's thread count.
//!
//! - CPU time is `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`: user + system time
//!   of every thread of the process, including threads that already exited
//!   (the same quantity as `getrusage(RUSAGE_SELF)` utime + stime, at ns
//!   resolution).
//! - Pinning is `sched_setaffinity` on the calling thread. The harness pins
//!   the two threads of every latency row to the first core of the process's
//!   allowed set (`--pin split`: to its first two), for every subject alike;
//!   with fewer than two allowed cores it pins nothing.
//! - Threads are counted in `/proc/self/task`, the same way for every subject.
//!
//! This module and the floors are the only places with `unsafe`; each block
//! says why it is sound.
#![allow(unsafe_code)]

use std::sync::OnceLock;

/// CPU time (user + system, all threads, living or exited) of this process, ns.
pub(crate) fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // every Linux kernel supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The cores this process may run on, as read once at first use.
fn allowed_cores() -> &'static [usize] {
    static CORES: OnceLock<Vec<usize>> = OnceLock::new();
    CORES.get_or_init(|| {
        // SAFETY: an all-zero cpu_set_t is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable cpu_set_t of the size we pass;
        // pid 0 is the calling thread.
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `c` is below CPU_SETSIZE, the size of the set.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect()
    })
}

/// The two cores the latency rows use: the loop's and the other thread's.
pub(crate) fn pin_pair() -> Option<(usize, usize)> {
    match allowed_cores() {
        [a, b, ..] => Some((*a, *b)),
        _ => None,
    }
}

/// Pins the calling thread to `core`; false if the kernel refused.
pub(crate) fn pin_current(core: usize) -> bool {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `core` comes from `allowed_cores`, so it is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size we pass; pid 0 is the
    // calling thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 }
}

/// Threads of this process, from `/proc/self/task`.
pub(crate) fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.filter_map(Result::ok).count())
}
