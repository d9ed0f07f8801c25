//! What is read back: a client's result (weft-load's row, wrk's result
//! line), the server's CPU from `/proc/PID/stat`, weft-kv's loop metrics
//! (`/metrics`: longest turns, stalls, late ticks) and its loop threads'
//! scheduler figures.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `/proc/PID/stat` counts CPU in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// What a client measured.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Measured {
    pub(crate) rate: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
}

/// Server CPU seconds (user + system, all threads) from `/proc/PID/stat`.
fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. utime and stime are fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / TICKS_PER_SECOND)
}

pub(crate) fn process_cpu(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat_cpu(&s))
        .unwrap_or(f64::NAN)
}

fn ms(cell: &str) -> Option<f64> {
    cell.trim().trim_end_matches("ms").trim().parse().ok()
}

/// weft-load's result row: `| req/s | p50 | p90 | p99 | max | requests | errors |`.
pub(crate) fn parse_weft_load(out: &str) -> Option<Measured> {
    let row = out
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .nth(1)?;
    let c: Vec<&str> = row.trim_matches('|').split('|').collect();
    if c.len() != 7 {
        return None;
    }
    Some(Measured {
        rate: c[0].trim().parse().ok()?,
        p50_ms: ms(c[1])?,
        p99_ms: ms(c[3])?,
        max_ms: ms(c[4])?,
        requests: c[5].trim().parse().ok()?,
        errors: c[6].trim().parse().ok()?,
    })
}

/// The `wrk-result k=v ...` line the `bench/wrk` scripts print.
pub(crate) fn parse_wrk(out: &str) -> Option<Measured> {
    let line = out.lines().find(|l| l.starts_with("wrk-result "))?;
    let get = |k: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    let requests = get("requests")?;
    Some(Measured {
        rate: requests / (get("duration_us")? / 1e6).max(1e-9),
        p50_ms: get("p50_us")? / 1e3,
        p99_ms: get("p99_us")? / 1e3,
        max_ms: get("max_us")? / 1e3,
        requests: requests as u64,
        errors: get("errors")? as u64,
    })
}

/// `weft_kv_loop_longest_turn_seconds{loop="i"}` for each loop, in ms.
pub(crate) fn parse_longest_turns(metrics: &str) -> Vec<f64> {
    parse_per_loop::<f64>(metrics, "weft_kv_loop_longest_turn_seconds")
        .into_iter()
        .map(|s| s * 1e3)
        .collect()
}

/// The bound of weft's turn histogram nearest above 1 ms (2^20 ns; its
/// buckets are powers of two).
const STALL_BOUND: &str = "0.001048576";

/// Per loop: (turns counted, turns at most [`STALL_BOUND`]) from
/// `weft_kv_loop_turn_seconds` (cumulative buckets; a snapshot lists bounds
/// only up to its highest non-empty bucket, so a missing bound means no
/// turn above it).
fn parse_turn_counts(metrics: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for i in 0.. {
        let get = |key: &str| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let Some(count) = get(&format!("weft_kv_loop_turn_seconds_count{{loop=\"{i}\"}} ")) else {
            break;
        };
        let below = get(&format!(
            "weft_kv_loop_turn_seconds_bucket{{loop=\"{i}\",le=\"{STALL_BOUND}\"}} "
        ))
        .unwrap_or(count);
        out.push((count, below));
    }
    out
}

/// Per loop, turns longer than [`STALL_BOUND`] between two scrapes.
pub(crate) fn stalls_between(before: &str, after: &str) -> Vec<u64> {
    let b = parse_turn_counts(before);
    parse_turn_counts(after)
        .iter()
        .enumerate()
        .map(|(i, &(count, below))| {
            let (c0, b0) = b.get(i).copied().unwrap_or((0, 0));
            (count - below).saturating_sub(c0 - b0)
        })
        .collect()
}

/// Per loop, `family{loop="i"}` from one scrape, for loops 0, 1, .. up to
/// the first missing or unparsable one.
fn parse_per_loop<T: std::str::FromStr>(metrics: &str, family: &str) -> Vec<T> {
    let mut out = Vec::new();
    for i in 0.. {
        let prefix = format!("{family}{{loop=\"{i}\"}} ");
        match metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<T>().ok())
        {
            Some(v) => out.push(v),
            None => break,
        }
    }
    out
}

/// Per loop, the lag probe's late ticks (over 1 ms) between two scrapes:
/// (waiting for a core, working), from
/// `weft_kv_loop_late_ticks_{waiting,working}_total`.
pub(crate) fn late_ticks_between(before: &str, after: &str) -> Vec<(u64, u64)> {
    let delta = |family: &str| {
        let b = parse_per_loop::<u64>(before, family);
        parse_per_loop::<u64>(after, family)
            .iter()
            .enumerate()
            .map(|(i, &a)| a.saturating_sub(b.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
    };
    let waiting = delta("weft_kv_loop_late_ticks_waiting_total");
    let working = delta("weft_kv_loop_late_ticks_working_total");
    waiting.into_iter().zip(working).collect()
}

/// Scheduler figures of one thread: (CPU ns, run-queue wait ns) from
/// `schedstat`, involuntary switches from `status`.
fn parse_schedstat(schedstat: &str, status: &str) -> Option<(u64, u64, u64)> {
    let mut f = schedstat.split_whitespace();
    let cpu = f.next()?.parse().ok()?;
    let wait = f.next()?.parse().ok()?;
    let nonvol = status
        .lines()
        .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))?
        .trim()
        .parse()
        .ok()?;
    Some((cpu, wait, nonvol))
}

/// The server's loop threads (named `weft-kv` (loop 0, the main thread)
/// and `weft-kv-loop-N`) and their scheduler figures, summed.
pub(crate) fn loop_threads_sched(pid: u32) -> (u64, u64, u64) {
    let mut sum = (0, 0, 0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return sum;
    };
    for t in tasks.flatten() {
        let dir = t.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if comm != "weft-kv" && !comm.starts_with("weft-kv-loop") {
            continue;
        }
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        if let Some((c, w, n)) = parse_schedstat(&read("schedstat"), &read("status")) {
            sum = (sum.0 + c, sum.1 + w, sum.2 + n);
        }
    }
    sum
}

/// One `GET path` with `Connection: close`; the whole response.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: kv-load\r\nconnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// What weft-kv's loop threads went through during the client run.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct LoopThreads {
    /// Per loop (0, 1, ..): the longest turn since the server started
    /// (`weft_kv_loop_longest_turn_seconds`), ms.
    pub(crate) longest_turn_ms: Vec<f64>,
    /// Per loop: turns longer than 1.05 ms (weft's turn histogram) during
    /// the client run.
    pub(crate) stalls: Vec<u64>,
    /// Per loop: the lag probe's ticks over 1 ms late during the client
    /// run, (waiting for a core, working).
    pub(crate) late_ticks: Vec<(u64, u64)>,
    /// Summed over the loop threads, from `/proc/PID/task/TID/schedstat`
    /// and `status`: time runnable but waiting for a CPU (ms), involuntary
    /// context switches (preemptions), and CPU time (ms).
    pub(crate) runq_wait_ms: f64,
    pub(crate) preemptions: u64,
    pub(crate) cpu_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_after_the_command_name() {
        let stat = "4242 (weft kv (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 7 0";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn reads_weft_load_row() {
        let out = "weft-load: 64 connections, 2.0 s, 90/10 read/write\n\
                   | requests/s | p50 | p90 | p99 | max | requests | errors |\n\
                   |---|---|---|---|---|---|---|\n\
                   | 31234 | 1.500 ms | 2.000 ms | 4.250 ms | 20.000 ms | 62468 | 0 |\n";
        let m = parse_weft_load(out).unwrap();
        assert_eq!(
            m,
            Measured {
                rate: 31234.0,
                p50_ms: 1.5,
                p99_ms: 4.25,
                max_ms: 20.0,
                requests: 62468,
                errors: 0
            }
        );
        assert_eq!(parse_weft_load("weft-load: refused\n"), None);
    }

    #[test]
    fn reads_wrk_result_line() {
        let out = "Running 2s test\n  47502 requests in 2.05s\n\
                   wrk-result requests=40000 duration_us=2000000 p50_us=1890 p90_us=6152 p99_us=32195 max_us=66801 errors=3\n";
        let m = parse_wrk(out).unwrap();
        assert_eq!(m.rate, 20000.0);
        assert_eq!((m.p50_ms, m.p99_ms, m.max_ms), (1.89, 32.195, 66.801));
        assert_eq!((m.requests, m.errors), (40000, 3));
        assert_eq!(parse_wrk("no result"), None);
    }

    #[test]
    fn reads_longest_turn_per_loop_from_metrics() {
        let page = "# TYPE weft_kv_loop_longest_turn_seconds gauge\n\
                    weft_kv_loop_longest_turn_seconds{loop=\"0\"} 0.0125\n\
                    weft_kv_loop_longest_turn_seconds{loop=\"1\"} 0.0005\n";
        assert_eq!(parse_longest_turns(page), vec![12.5, 0.5]);
        assert!(parse_longest_turns("weft_turns 3\n").is_empty());
    }

    #[test]
    fn counts_turns_over_the_stall_bound_between_two_scrapes() {
        let before = "weft_kv_loop_turn_seconds_bucket{loop=\"0\",le=\"0.001048576\"} 90\n\
                      weft_kv_loop_turn_seconds_count{loop=\"0\"} 92\n\
                      weft_kv_loop_turn_seconds_count{loop=\"1\"} 10\n";
        // Loop 0: 5 more over the bound; loop 1 never had one (no bound line).
        let after = "weft_kv_loop_turn_seconds_bucket{loop=\"0\",le=\"0.001048576\"} 190\n\
                     weft_kv_loop_turn_seconds_count{loop=\"0\"} 197\n\
                     weft_kv_loop_turn_seconds_count{loop=\"1\"} 50\n";
        assert_eq!(stalls_between(before, after), vec![5, 0]);
        assert_eq!(stalls_between("", after), vec![7, 0]);
        assert!(stalls_between("", "").is_empty());
    }

    #[test]
    fn counts_late_ticks_per_loop_between_two_scrapes() {
        let before = "weft_kv_loop_late_ticks_waiting_total{loop=\"0\"} 4\n\
                      weft_kv_loop_late_ticks_working_total{loop=\"0\"} 1\n";
        let after = "weft_kv_loop_late_ticks_waiting_total{loop=\"0\"} 10\n\
                     weft_kv_loop_late_ticks_waiting_total{loop=\"1\"} 3\n\
                     weft_kv_loop_late_ticks_working_total{loop=\"0\"} 1\n\
                     weft_kv_loop_late_ticks_working_total{loop=\"1\"} 2\n";
        assert_eq!(late_ticks_between(before, after), vec![(6, 0), (3, 2)]);
        assert!(late_ticks_between("", "").is_empty());
    }

    #[test]
    fn reads_scheduler_figures_of_a_thread() {
        let status =
            "Name:\tweft-kv\nvoluntary_ctxt_switches:\t10\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(
            parse_schedstat("2000000 3000000 42\n", status),
            Some((2_000_000, 3_000_000, 7))
        );
        assert_eq!(parse_schedstat("", status), None);
    }
}
