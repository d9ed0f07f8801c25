//! `kv-load`: the load-test table of weft-kv (one and two loops) against its tokio twin
//! (`kv-tokio`, three variants, default and capped), each run by weft-load
//! and by `wrk` (where installed) with the same connections and duration.
//!
//! ```text
//! bench/kv-load.sh [-d SECS] [-c CONNS] [--only NAME,..] [--mixes 90,10]
//!     [--clients weft-load,wrk] [--keys N] [--value BYTES] [--wrk-threads N] [--rounds N]
//!     [--bin-dir DIR] [--before-dir DIR] [--extra NAME=FLAGS].. [--extra-twin NAME=FLAGS]..
//!     [--every-run on|off] [--client-cpus LIST]
//! ```
//!
//! `--every-run on` prints a second table after the medians: every run's
//! row, in the order the runs were made (for paired A/B reading).
//!
//! `--extra NAME=FLAGS` adds a weft-kv row named `NAME` started with the
//! space-separated `FLAGS` (e.g. `--extra 'w2-nice=--loops 2 --db-nice 5'`),
//! for A/B runs of settings without a row of their own; it runs even when
//! `--only` does not name it. `--extra-twin NAME=FLAGS` does the same for a
//! `kv-tokio` row (the flags are all of the twin's: e.g.
//! `--extra-twin 'tokio-mutex-cap1-pin=--variant mutex --blocking 1
//! --worker-cpus 0 --blocking-cpus 1'`).
//!
//! `--client-cpus LIST` (as `taskset -c`: `1`, `0-1`, `0,2`) runs every
//! client (weft-load, its fill, wrk) on those CPUs, the same for every
//! server of the run: kv-load narrows its own thread's CPUs just around
//! starting the client (a child inherits them, and all its threads with
//! it), never around starting a server. Servers are placed only by their
//! own flags (weft-kv's `--loop-cpus` / `--db-cpus`, kv-tokio's
//! `--worker-cpus` / `--blocking-cpus`). Default: nothing placed.
//!
//! The "placement" column says, per row, where the client and the
//! server's threads were allowed to run, read back from
//! `/proc/PID/task/TID/status` (`Cpus_allowed_list`) at the end of the
//! client run: by role (`loop`, `db` and `other` for weft-kv; `workers`
//! and `blocking` for a placed kv-tokio, whose unplaced threads all share
//! tokio's name), or `server unplaced` when every server thread may run
//! on every CPU kv-load may.
//!
//! A/B rows, run only when named in `--only`: `weft-kv-1loop-bgckpt` and
//! `weft-kv-2loops-bgckpt` (weft-db's background checkpoints),
//! `weft-kv-1loop-perjob` and `weft-kv-2loops-perjob` (`--db-handover job`:
//! each database job handed over as it is submitted, not once per turn), and
//! `weft-kv-2loops-nobal` (`--balance off`: connections stay on the loop
//! whose listener the kernel chose), `tokio-mutex-cap1-hc` (the capped
//! mutex twin with hyper's `half_close(true)`, as weft-kv sets it, served
//! through hyper-util's connection builder because `axum::serve` does not
//! expose hyper's settings), and
//! `weft-kv-before-1loop` / `weft-kv-before-2loops`, which run the
//! `weft-kv` binary found in `--before-dir` (a build of an earlier commit).
//!
//! # Method
//!
//! - **One server per row**: every (mix, client, server) row starts its
//!   server afresh on `127.0.0.1:0` (the address is read from the line it
//!   prints) with a fresh database in a temporary directory, fills the key
//!   space (`load-0..keys`, `value` bytes each, weft-load's batch fill),
//!   runs the client, then kills the server. Rows run one at a time.
//! - **Same work for every server**: the same routes over the same SQLite
//!   settings; weft-load and the `bench/wrk/*.lua` scripts draw keys
//!   uniformly from the same key space and PUT the same values.
//! - **Counted the same way**: req/s and latencies are the client's (both
//!   clients run one request at a time per connection); errors are failed
//!   requests plus unexpected statuses. Server CPU is the server process's
//!   user + system time (`/proc/PID/stat`, all threads, exited ones
//!   included) across the client run, per 1,000 requests. weft-load fills
//!   the key space again before its timed phase; that fill's CPU (measured
//!   once per row on the first fill) is subtracted.
//! - **weft-kv's loops** (weft-kv rows only): the longest turn of each
//!   loop since the server started (`weft_kv_loop_longest_turn_seconds`,
//!   weft's turn histogram; the server is fresh for every row), and what
//!   the scheduler did to the loop threads during the client run, from
//!   `/proc/PID/task/TID/{schedstat,status}`: time runnable but waiting
//!   for a CPU, involuntary context switches (preemptions) and CPU time.
//!   A turn longer than 1 ms with preemptions and run-queue wait beside it
//!   is the scheduler's, not the loop's work.
//! - weft-kv runs twice, with one loop and with two (`--loops`); each gets
//!   its own ratio column.
//! - `--rounds N` runs every row N times, round after round, with the
//!   server order rotated each round so drift hits every server alike; the
//!   table shows the run with the median req/s and the range of req/s.
//! - The load average before and after is printed: a table from a busy
//!   machine is not a result. So are the host settings a loop's stalls
//!   depend on: the real-time throttle and whether `bench/host-tune.sh`
//!   keeps a CPU for the loop.

mod metrics;
mod placement;
mod run;
mod servers;
mod table;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use weft_kv::cpus::CpuList;

use run::{Row, run_row};
use servers::{Server, servers};
use table::{median, print_table};

struct Options {
    secs: u32,
    conns: u32,
    keys: u32,
    value: u32,
    mixes: Vec<u32>,
    clients: Vec<String>,
    only: Option<Vec<String>>,
    wrk_threads: u32,
    rounds: u32,
    bin_dir: PathBuf,
    before_dir: Option<PathBuf>,
    wrk_dir: PathBuf,
    /// `--extra NAME=FLAGS` rows: (name, flags).
    extra: Vec<(String, Vec<String>)>,
    /// `--every-run on`: a second table with every run's row, not only
    /// each cell's median.
    every_run: bool,
    /// `--extra-twin NAME=FLAGS` rows: (name, kv-tokio flags).
    extra_twin: Vec<(String, Vec<String>)>,
    /// `--client-cpus`: where every client runs (`None`: where kv-load
    /// may).
    client_cpus: Option<CpuList>,
}

fn usage() -> ! {
    eprintln!(
        "usage: kv-load [-d SECS] [-c CONNS] [--only NAME,..] [--mixes 90,10] [--clients weft-load,wrk] [--keys N] [--value BYTES] [--wrk-threads N] [--rounds N] [--bin-dir DIR] [--before-dir DIR] [--extra NAME=FLAGS].. [--extra-twin NAME=FLAGS].. [--every-run on|off] [--client-cpus LIST]"
    );
    std::process::exit(2);
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_args() -> Options {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/release"));
    let mut o = Options {
        secs: 10,
        conns: 64,
        keys: 10_000,
        value: 64,
        mixes: vec![90, 10],
        clients: vec!["weft-load".into(), "wrk".into()],
        only: None,
        wrk_threads: 2,
        rounds: 1,
        bin_dir: exe_dir,
        before_dir: None,
        wrk_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/wrk")),
        extra: Vec::new(),
        every_run: false,
        extra_twin: Vec::new(),
        client_cpus: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        let n = || v.parse::<u32>().unwrap_or_else(|_| usage());
        match a.as_str() {
            "-d" => o.secs = n(),
            "-c" => o.conns = n(),
            "--keys" => o.keys = n(),
            "--value" => o.value = n(),
            "--wrk-threads" => o.wrk_threads = n(),
            "--rounds" => o.rounds = n().max(1),
            "--only" => o.only = Some(list(&v)),
            "--clients" => o.clients = list(&v),
            "--bin-dir" => o.bin_dir = PathBuf::from(&v),
            "--before-dir" => o.before_dir = Some(PathBuf::from(&v)),
            "--extra" | "--extra-twin" => {
                let (name, flags) = v.split_once('=').unwrap_or_else(|| usage());
                let row = (
                    name.to_owned(),
                    flags.split_whitespace().map(str::to_owned).collect(),
                );
                if a == "--extra" {
                    o.extra.push(row);
                } else {
                    o.extra_twin.push(row);
                }
            }
            "--client-cpus" => {
                let l: CpuList = v.parse().unwrap_or_else(|e| {
                    eprintln!("kv-load: --client-cpus: {e}");
                    std::process::exit(2);
                });
                if let Err(e) = CpuList::of_this_thread().and_then(|all| l.check_within(&all)) {
                    eprintln!("kv-load: --client-cpus {l}: {e}");
                    std::process::exit(2);
                }
                o.client_cpus = Some(l);
            }
            "--every-run" => {
                o.every_run = match v.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => usage(),
                }
            }
            "--mixes" => {
                o.mixes = list(&v)
                    .iter()
                    .map(|m| match m.parse() {
                        Ok(m @ (90 | 10)) => m,
                        _ => usage(),
                    })
                    .collect()
            }
            _ => usage(),
        }
    }
    o
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The host settings a table depends on, for its header: the real-time
/// throttle and whether `bench/host-tune.sh apply` is in force (its state
/// file, `$HOST_TUNE_STATE` or `/tmp/weft-host-tune.state`, exists).
fn host_settings() -> String {
    let rt = std::fs::read_to_string("/proc/sys/kernel/sched_rt_runtime_us").ok();
    let state = std::env::var_os("HOST_TUNE_STATE")
        .map_or_else(|| PathBuf::from("/tmp/weft-host-tune.state"), PathBuf::from);
    describe_host(rt.as_deref(), state.exists())
}

fn describe_host(rt_runtime_us: Option<&str>, tuned: bool) -> String {
    format!(
        "host: sched_rt_runtime_us {}, bench/host-tune.sh {}",
        rt_runtime_us.map_or("?", str::trim),
        if tuned { "applied" } else { "not applied" }
    )
}

fn main() -> ExitCode {
    let mut o = parse_args();
    let have_wrk = Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok_and(|out| !out.stdout.is_empty() || !out.stderr.is_empty());
    if !have_wrk && o.clients.iter().any(|c| c == "wrk") {
        eprintln!("kv-load: wrk not found: weft-load only (apt-get install wrk)");
        o.clients.retain(|c| c != "wrk");
    }
    let mut all = servers(o.before_dir.as_deref());
    for (binary, rows) in [("weft-kv", &o.extra), ("kv-tokio", &o.extra_twin)] {
        for (name, flags) in rows {
            all.push(Server {
                name: name.clone(),
                binary,
                args: flags.clone(),
                opt_in: false,
                dir: None,
            });
        }
    }
    let extra = |s: &Server| {
        o.extra
            .iter()
            .chain(&o.extra_twin)
            .any(|(n, _)| *n == s.name)
    };
    let servers: Vec<&Server> = all
        .iter()
        .filter(|s| match &o.only {
            Some(only) => only.contains(&s.name) || extra(s),
            None => !s.opt_in,
        })
        .collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "kv-load: {} connections, {} s per row, {} round(s), {} keys, {} B values, {cores} CPUs, clients on CPUs {}, load average before: {}",
        o.conns,
        o.secs,
        o.rounds,
        o.keys,
        o.value,
        o.client_cpus
            .as_ref()
            .map_or("any".to_owned(), |c| c.to_string()),
        load_average()
    );
    println!("{}", host_settings());
    // One cell per (mix, client, server), in table order; each holds its runs.
    let mut cells: Vec<Vec<Row>> = Vec::new();
    cells.resize_with(o.mixes.len() * o.clients.len() * servers.len(), Vec::new);
    let mut n = 0;
    for round in 0..o.rounds as usize {
        let mut first = 0;
        for &mix in &o.mixes {
            for client in &o.clients {
                // Rotate the server order each round.
                for i in 0..servers.len() {
                    let at = (i + round) % servers.len();
                    let s = servers[at];
                    n += 1;
                    eprintln!(
                        "kv-load: round {}/{}: {} {mix}/{} {client}",
                        round + 1,
                        o.rounds,
                        s.name,
                        100 - mix
                    );
                    let row = run_row(&o, s, mix, client, n);
                    if let Err(e) = &row.result {
                        eprintln!("kv-load: {} failed: {e}", s.name);
                    }
                    cells[first + at].push(row);
                }
                first += servers.len();
            }
        }
    }
    println!("load average after: {}\n", load_average());
    let runs: Vec<(Row, Option<(f64, f64)>)> = if o.every_run {
        let mut all: Vec<(usize, Row)> = Vec::new();
        for (c, cell) in cells.iter().enumerate() {
            for (round, r) in cell.iter().enumerate() {
                let copy = Row {
                    server: r.server.clone(),
                    mix: r.mix,
                    client: r.client.clone(),
                    placement: r.placement.clone(),
                    result: r.result.clone(),
                };
                all.push((round * cells.len() + c, copy));
            }
        }
        all.sort_by_key(|(k, _)| *k);
        all.into_iter().map(|(_, r)| (r, None)).collect()
    } else {
        Vec::new()
    };
    let rows: Vec<_> = cells.into_iter().map(median).collect();
    print_table(&rows, o.rounds);
    if o.every_run {
        println!("\nEvery run (round by round):\n");
        print_table(&runs, 1);
    }
    if rows
        .iter()
        .all(|(r, _)| matches!(&r.result, Ok((m, ..)) if m.errors == 0))
    {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::describe_host;

    #[test]
    fn the_header_names_the_throttle_and_the_kept_core() {
        assert_eq!(
            describe_host(Some("950000\n"), false),
            "host: sched_rt_runtime_us 950000, bench/host-tune.sh not applied"
        );
        assert_eq!(
            describe_host(Some("-1\n"), true),
            "host: sched_rt_runtime_us -1, bench/host-tune.sh applied"
        );
        assert_eq!(
            describe_host(None, false),
            "host: sched_rt_runtime_us ?, bench/host-tune.sh not applied"
        );
    }
}
