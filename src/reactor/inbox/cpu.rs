//! Which CPU the calling thread runs on, for the spin rules' same-CPU
//! test.
//!
//! A bounded spin waits for another thread to act. If that thread last ran
//! on the spinner's own CPU, it most likely cannot act while the spinner
//! spins: the spin only burns the time slice the other thread needs (a loop
//! and its producer pinned to one core, or two threads the scheduler keeps
//! on one core). The loop's spin before sleeping asks this after each wake
//! (`wake.rs`): a wake written from the loop's CPU says a spin could not
//! have caught it.
//!
//! The answer is a hint, never a rule for correctness: a thread may move
//! to another CPU right after asking. `None` where the platform does not
//! say (non-Linux), and under loom unless a model pretends.
//!
//! Tests pretend a CPU per thread ([`pretend`]) so the decision rules can
//! be checked deterministically on any machine.

/// The CPU the calling thread runs on, if known: one `getcpu` through the
/// vDSO on Linux (tens of nanoseconds, no syscall).
#[inline]
pub(crate) fn current() -> Option<u32> {
    #[cfg(test)]
    if let Some(pretended) = PRETEND.with(std::cell::Cell::get) {
        return pretended;
    }
    os()
}

/// libc's `sched_getcpu` (glibc, musl and bionic read it through the
/// vDSO or `rseq`). Not rustix's: its own vDSO parsing crashes any program
/// run under valgrind (rustix #1559), and every weft program would reach
/// it with its first wake.
#[cfg(all(not(loom), any(target_os = "linux", target_os = "android")))]
#[inline]
#[allow(unsafe_code)]
fn os() -> Option<u32> {
    // SAFETY: `sched_getcpu` takes no arguments and touches no memory of
    // the caller's; it returns a CPU number or -1 (then `None`).
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).ok()
}

#[cfg(any(loom, not(any(target_os = "linux", target_os = "android"))))]
#[inline]
fn os() -> Option<u32> {
    None
}

#[cfg(test)]
crate::loom::thread_local! {
    /// The CPU [`current`] reports on this thread (`Some(None)`: unknown);
    /// `None`: the real one.
    #[allow(clippy::missing_const_for_thread_local)]
    static PRETEND: std::cell::Cell<Option<Option<u32>>> = std::cell::Cell::new(None);
}

/// Makes [`current`] report `cpu` on the calling thread from now on.
#[cfg(test)]
pub(crate) fn pretend(cpu: Option<u32>) {
    PRETEND.with(|p| p.set(Some(cpu)));
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_pretended_cpu_is_per_thread() {
        pretend(Some(3));
        assert_eq!(current(), Some(3));
        let other = std::thread::spawn(|| {
            pretend(None);
            current()
        });
        assert_eq!(other.join().unwrap(), None);
        assert_eq!(current(), Some(3));
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn linux_names_a_cpu_the_thread_may_run_on() {
        let cpu = current().expect("Linux reports the CPU");
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        // The CPU number is below the machine's count of possible CPUs,
        // which is at least the usable ones; a loose bound that holds in
        // containers too.
        assert!((cpu as usize) < 4096.max(cpus), "cpu {cpu}");
    }
}
