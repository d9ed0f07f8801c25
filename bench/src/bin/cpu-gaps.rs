//! `cpu-gaps`: the floor under any loop's stall figures on this machine. One
//! thread that does nothing but read the clock, placed on one CPU and
//! (optionally) real-time, counts every gap between two of its readings
//! longer than `--min-us`: time in which that thread, doing no work, made
//! no progress. A loop on the same CPU can stall no less than this.
//!
//! ```text
//! cargo run --release -p weft-bench --bin cpu-gaps -- [--cpu N] [--fifo PRIO]
//!     [-d SECS] [--min-us US] [--top N]
//! ```
//!
//! - `--cpu N`: the CPU it spins on (default 0); `--fifo PRIO`: under
//!   `SCHED_FIFO` at PRIO (as weft-kv's `--loop-fifo`; needs
//!   `CAP_SYS_NICE`), so no ordinary thread preempts it. Default: 60 s,
//!   gaps over 50 µs, the 10 longest listed.
//! - Each gap is split by the thread's own CPU clock
//!   (`CLOCK_THREAD_CPUTIME_ID`, read beside `CLOCK_MONOTONIC` at every
//!   spin): **off CPU** is the part the guest kernel knows the thread did
//!   not run (preempted, or steal that the hypervisor reports); **on CPU**
//!   is the part it charges to the thread: the thread's own instructions
//!   (a handful), interrupts and softirqs that ran on its CPU (this kernel
//!   charges them to the interrupted thread), and time the vCPU itself did
//!   not run but the guest was not told of.
//! - Beside them, over the run: the CPU's steal as the guest sees it
//!   (`/proc/stat`), its interrupts (`/proc/interrupts`), and the thread's
//!   involuntary switches.
//!
//! The longest gaps are printed with their `CLOCK_MONOTONIC` start (ns), to
//! line up with `perf record -k mono -C N` of the same CPU (interrupts and
//! softirqs inside a gap are the guest's; none at all is the host's).

use std::time::Duration;

use weft_kv::cpus::CpuList;

struct Options {
    cpu: usize,
    fifo: Option<u8>,
    secs: u64,
    min: Duration,
    top: usize,
}

fn usage() -> ! {
    eprintln!("usage: cpu-gaps [--cpu N] [--fifo PRIO] [-d SECS] [--min-us US] [--top N]");
    std::process::exit(2);
}

fn parse_args() -> Options {
    let mut o = Options {
        cpu: 0,
        fifo: None,
        secs: 60,
        min: Duration::from_micros(50),
        top: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        let bad = |what: &str| -> ! {
            eprintln!("cpu-gaps: {flag}: {what}, not {value:?}");
            std::process::exit(2);
        };
        match flag.as_str() {
            "--cpu" => o.cpu = value.parse().unwrap_or_else(|_| bad("a CPU number")),
            "--fifo" => o.fifo = Some(value.parse().unwrap_or_else(|_| bad("a priority 1-99"))),
            "-d" => o.secs = value.parse().unwrap_or_else(|_| bad("whole seconds")),
            "--min-us" => {
                o.min = Duration::from_micros(value.parse().unwrap_or_else(|_| bad("microseconds")))
            }
            "--top" => o.top = value.parse().unwrap_or_else(|_| bad("a count")),
            _ => usage(),
        }
    }
    if o.secs == 0 {
        eprintln!("cpu-gaps: -d must be at least 1 s");
        std::process::exit(2);
    }
    o
}

/// A clock's reading in ns.
fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` we own; both clocks
    // used here exist on every Linux this runs on.
    #[allow(unsafe_code)]
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(r, 0, "clock_gettime({clock}) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One gap: when it began (`CLOCK_MONOTONIC`, ns), how long it was and
/// how much of it the thread's CPU clock advanced.
#[derive(Clone, Copy)]
struct Gap {
    at: u64,
    wall: u64,
    cpu: u64,
}

/// The upper bounds of the gap classes counted, µs (the last is open).
const CLASSES_US: [u64; 7] = [100, 250, 500, 1000, 2000, 5000, 10_000];

fn class_of(wall_ns: u64) -> usize {
    CLASSES_US
        .iter()
        .position(|&us| wall_ns <= us * 1000)
        .unwrap_or(CLASSES_US.len())
}

/// Field `n` (0-based, after the name) of `/proc/stat`'s line for `cpu`.
fn proc_stat_field(cpu: usize, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&name))?;
    line.split_whitespace().nth(1 + n)?.parse().ok()
}

/// The sum of `cpu`'s column of `/proc/interrupts` (every source).
fn interrupts_on(cpu: usize) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/interrupts").ok()?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let col = header.iter().position(|h| *h == format!("CPU{cpu}"))?;
    Some(
        lines
            .filter_map(|l| l.split_whitespace().nth(1 + col)?.parse::<u64>().ok())
            .sum(),
    )
}

/// The calling thread's involuntary context switches.
fn involuntary_switches() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))?
        .trim()
        .parse()
        .ok()
}

fn main() {
    let o = parse_args();
    let place = o
        .cpu
        .to_string()
        .parse::<CpuList>()
        .map_err(|e| e.to_string())
        .and_then(|c| c.apply_to_this_thread().map_err(|e| e.to_string()))
        .map_err(|e| format!("--cpu {}: {e}", o.cpu));
    if let Err(e) = place {
        eprintln!("cpu-gaps: {e}");
        std::process::exit(2);
    }
    if let Some(p) = o.fifo
        && let Err(e) = weft_kv::sched::set_this_thread_fifo(p)
    {
        eprintln!("cpu-gaps: --fifo {p}: {e}");
        std::process::exit(2);
    }
    // Jiffies are USER_HZ (100 per second) in /proc/stat.
    let steal0 = proc_stat_field(o.cpu, 7);
    let irq0 = interrupts_on(o.cpu);
    let inv0 = involuntary_switches();

    let min = o.min.as_nanos() as u64;
    let end_at = read(libc::CLOCK_MONOTONIC) + o.secs * 1_000_000_000;
    let mut gaps: Vec<Gap> = Vec::new();
    let (mut wall, mut cpu) = (
        read(libc::CLOCK_MONOTONIC),
        read(libc::CLOCK_THREAD_CPUTIME_ID),
    );
    let (start, cpu_start) = (wall, cpu);
    let mut spins = 0u64;
    while wall < end_at {
        let (w, c) = (
            read(libc::CLOCK_MONOTONIC),
            read(libc::CLOCK_THREAD_CPUTIME_ID),
        );
        spins += 1;
        let gap = w - wall;
        if gap > min {
            gaps.push(Gap {
                at: wall,
                wall: gap,
                cpu: c.saturating_sub(cpu),
            });
        }
        (wall, cpu) = (w, c);
    }
    let secs = (wall - start) as f64 / 1e9;
    let cpu_share = (cpu - cpu_start) as f64 / (wall - start) as f64;
    let steal_ms = steal0
        .zip(proc_stat_field(o.cpu, 7))
        .map(|(a, b)| (b - a) * 10);
    let irqs = irq0.zip(interrupts_on(o.cpu)).map(|(a, b)| b - a);
    let inv = inv0.zip(involuntary_switches()).map(|(a, b)| b - a);

    let mut counts = [0u64; CLASSES_US.len() + 1];
    for g in &gaps {
        counts[class_of(g.wall)] += 1;
    }
    let show = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
    println!(
        "cpu-gaps: CPU {}, {}, {secs:.1} s, {spins} readings; the thread's CPU clock ran {:.2}% of the time",
        o.cpu,
        o.fifo
            .map_or_else(|| "fair class".to_owned(), |p| format!("SCHED_FIFO {p}")),
        cpu_share * 100.0
    );
    println!(
        "  over the run: steal {} ms (/proc/stat), interrupts {}, involuntary switches {}",
        show(steal_ms),
        show(irqs),
        show(inv)
    );
    let mut lo = o.min.as_micros() as u64;
    print!("  gaps by length (µs):");
    for (i, n) in counts.iter().enumerate() {
        match CLASSES_US.get(i) {
            Some(&hi) if hi > lo => {
                print!(" {lo}-{hi}: {n};");
                lo = hi;
            }
            Some(_) => {}
            None => println!(" over {lo}: {n}"),
        }
    }
    let over_1ms = gaps.iter().filter(|g| g.wall > 1_000_000).count();
    let on_cpu_over_1ms = gaps
        .iter()
        .filter(|g| g.wall > 1_000_000 && g.cpu * 2 > g.wall)
        .count();
    println!(
        "  over 1 ms: {over_1ms} ({:.1} per 10 s), of which the thread's CPU clock ran for most: {on_cpu_over_1ms}",
        over_1ms as f64 * 10.0 / secs
    );
    gaps.sort_by_key(|g| std::cmp::Reverse(g.wall));
    for g in gaps.iter().take(o.top) {
        println!(
            "  gap at mono {} ns: {:.3} ms, on CPU {:.3} ms, off CPU {:.3} ms",
            g.at,
            g.wall as f64 / 1e6,
            g.cpu.min(g.wall) as f64 / 1e6,
            g.wall.saturating_sub(g.cpu) as f64 / 1e6
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_split_at_their_upper_bounds() {
        assert_eq!(class_of(60_000), 0);
        assert_eq!(class_of(100_000), 0);
        assert_eq!(class_of(100_001), 1);
        assert_eq!(class_of(1_000_000), 3);
        assert_eq!(class_of(1_500_000), 4);
        assert_eq!(class_of(10_000_001), CLASSES_US.len());
    }

    #[test]
    fn reads_this_machines_counters() {
        // The thread's switches and CPU 0's stat line exist on any Linux.
        assert!(involuntary_switches().is_some());
        assert!(proc_stat_field(0, 7).is_some());
        assert!(proc_stat_field(usize::MAX, 0).is_none());
        let c0 = read(libc::CLOCK_THREAD_CPUTIME_ID);
        let c1 = read(libc::CLOCK_THREAD_CPUTIME_ID);
        assert!(c1 >= c0);
    }
}
