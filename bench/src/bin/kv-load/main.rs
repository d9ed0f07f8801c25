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
//!   machine is not a result.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use weft_kv::cpus::CpuList;

/// `/proc/PID/stat` counts CPU in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// A server under test: its row name and how to start it (the database
/// path and the listen address `127.0.0.1:0` are added).
struct Server {
    name: String,
    binary: &'static str,
    args: Vec<String>,
    /// Run only when named in `--only` (A/B rows).
    opt_in: bool,
    /// Where its binary is, if not `--bin-dir` (`--before-dir` rows).
    dir: Option<PathBuf>,
}

/// The servers, weft-kv first (one and two loops). Caps are the database connection counts:
/// weft-kv's (1 writer + [`weft_kv::default_readers`] readers, the cores
/// its loop leaves free) for the thread-local variant, the one connection
/// for the mutex; deadpool's pool size (its default, 2 × CPUs) already
/// bounds its blocking calls.
///
/// Opt-in rows (run only when named in `--only`), for A/B runs:
/// `weft-kv-{1loop,2loops}-bgckpt` (`--checkpoints background`),
/// `weft-kv-{1loop,2loops}-perjob` (`--db-handover job`),
/// `weft-kv-2loops-nobal` (`--balance off`) and
/// `weft-kv-before-{1loop,2loops}` (the `weft-kv` binary in `--before-dir`,
/// e.g. a build of an earlier commit).
fn servers(before_dir: Option<&Path>) -> Vec<Server> {
    let conns = weft_kv::default_readers() + 1;
    let row = |name: String, binary: &'static str, args: &[&str]| Server {
        name,
        binary,
        args: args.iter().map(|a| a.to_string()).collect(),
        opt_in: false,
        dir: None,
    };
    let opt_in = |name: &str, args: &[&str], dir: Option<&Path>| Server {
        opt_in: true,
        dir: dir.map(Path::to_path_buf),
        ..row(name.to_owned(), "weft-kv", args)
    };
    let tokio = |name: &str, args: &[&str]| row(name.to_owned(), "kv-tokio", args);
    vec![
        row("weft-kv-1loop".to_owned(), "weft-kv", &["--loops", "1"]),
        row("weft-kv-2loops".to_owned(), "weft-kv", &["--loops", "2"]),
        tokio("tokio-thread-local", &["--variant", "thread-local"]),
        row(
            format!("tokio-thread-local-cap{conns}"),
            "kv-tokio",
            &[
                "--variant",
                "thread-local",
                "--blocking",
                &conns.to_string(),
            ],
        ),
        tokio("tokio-mutex", &["--variant", "mutex"]),
        tokio(
            "tokio-mutex-cap1",
            &["--variant", "mutex", "--blocking", "1"],
        ),
        tokio("tokio-deadpool", &["--variant", "deadpool"]),
        Server {
            opt_in: true,
            ..tokio(
                "tokio-mutex-cap1-hc",
                &[
                    "--variant",
                    "mutex",
                    "--blocking",
                    "1",
                    "--half-close",
                    "on",
                ],
            )
        },
        opt_in(
            "weft-kv-1loop-bgckpt",
            &["--loops", "1", "--checkpoints", "background"],
            None,
        ),
        opt_in(
            "weft-kv-2loops-bgckpt",
            &["--loops", "2", "--checkpoints", "background"],
            None,
        ),
        opt_in(
            "weft-kv-1loop-perjob",
            &["--loops", "1", "--db-handover", "job"],
            None,
        ),
        opt_in(
            "weft-kv-2loops-perjob",
            &["--loops", "2", "--db-handover", "job"],
            None,
        ),
        opt_in(
            "weft-kv-2loops-nobal",
            &["--loops", "2", "--balance", "off"],
            None,
        ),
        opt_in("weft-kv-before-1loop", &["--loops", "1"], before_dir),
        opt_in("weft-kv-before-2loops", &["--loops", "2"], before_dir),
    ]
}

/// What a client measured.
#[derive(Debug, Default, Clone, PartialEq)]
struct Measured {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    requests: u64,
    errors: u64,
}

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

/// Server CPU seconds (user + system, all threads) from `/proc/PID/stat`.
fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. utime and stime are fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / TICKS_PER_SECOND)
}

fn process_cpu(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat_cpu(&s))
        .unwrap_or(f64::NAN)
}

fn ms(cell: &str) -> Option<f64> {
    cell.trim().trim_end_matches("ms").trim().parse().ok()
}

/// weft-load's result row: `| req/s | p50 | p90 | p99 | max | requests | errors |`.
fn parse_weft_load(out: &str) -> Option<Measured> {
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
fn parse_wrk(out: &str) -> Option<Measured> {
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
fn parse_longest_turns(metrics: &str) -> Vec<f64> {
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
fn stalls_between(before: &str, after: &str) -> Vec<u64> {
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
fn late_ticks_between(before: &str, after: &str) -> Vec<(u64, u64)> {
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
fn loop_threads_sched(pid: u32) -> (u64, u64, u64) {
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
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
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

/// A running server; killed when dropped.
struct Running {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(o: &Options, s: &Server, row: usize) -> Result<Running, String> {
    let dir = std::env::temp_dir().join(format!("kv-load-{}-{row}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let log = std::fs::File::create(dir.join("stderr.log")).map_err(|e| e.to_string())?;
    let bin = s.dir.as_ref().unwrap_or(&o.bin_dir).join(s.binary);
    let mut child = Command::new(&bin)
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(dir.join("kv.sqlite3"))
        .args(&s.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.split('/').next().unwrap_or("").to_owned());
            }
        }
    });
    let running = |addr: SocketAddr| Running { child, addr, dir };
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(a) => match a.parse() {
            Ok(addr) => Ok(running(addr)),
            Err(_) => Err(format!("{}: bad address {a:?}", s.name)),
        },
        Err(_) => {
            let r = running(SocketAddr::from(([127, 0, 0, 1], 0)));
            let log = std::fs::read_to_string(r.dir.join("stderr.log")).unwrap_or_default();
            Err(format!("{} did not start: {log}", s.name))
        }
    }
}

fn weft_load(o: &Options, addr: SocketAddr, conns: u32, secs: u32, reads: u32) -> Command {
    let mut c = Command::new(o.bin_dir.join("weft-load"));
    c.arg("--url")
        .arg(format!("http://{addr}"))
        .args(["-c", &conns.to_string(), "-d", &secs.to_string()])
        .args(["--reads", &reads.to_string(), "--keys", &o.keys.to_string()])
        .args(["--value", &o.value.to_string()]);
    c
}

/// Runs a client to its end, on `cpus` if given; its stdout.
fn output(mut c: Command, cpus: Option<&CpuList>) -> Result<String, String> {
    let program = c.get_program().to_owned();
    let what = |e: std::io::Error| format!("{program:?}: {e}");
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = match cpus {
        None => c.spawn().map_err(what)?,
        Some(cpus) => {
            // The child inherits this thread's CPUs: narrow them just
            // around the start, then take them back (servers are started
            // from this thread too).
            let mine = CpuList::of_this_thread().map_err(what)?;
            cpus.apply_to_this_thread().map_err(what)?;
            let child = c.spawn();
            mine.apply_to_this_thread().map_err(what)?;
            child.map_err(what)?
        }
    };
    let out = child.wait_with_output().map_err(what)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A server thread's role, from its name (`comm`, at most 15 bytes).
fn role(comm: &str) -> &'static str {
    match comm {
        "weft-kv" => "loop",
        c if c.starts_with("weft-kv-loop") => "loop",
        c if c.starts_with("weft-db-") => "db",
        "kv-tokio" | "kv-tokio-worker" => "workers",
        "kv-tokio-block" => "blocking",
        c if c.starts_with("tokio-") => "tokio",
        _ => "other",
    }
}

/// `Cpus_allowed_list` of a `/proc/.../status`.
fn cpus_allowed(status: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
}

/// Where `threads` ((name, `Cpus_allowed_list`)) may run, by role
/// (`role CPUs`, several sets of one role joined by `|`), or
/// `server unplaced` when every one may run on `all`.
fn describe_placement(threads: &[(String, String)], all: &str) -> String {
    if threads.iter().all(|(_, c)| c == all) {
        return "server unplaced".into();
    }
    let mut roles: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in ["loop", "workers", "tokio", "db", "blocking", "other"] {
        let mut sets: Vec<&str> = threads
            .iter()
            .filter(|(n, _)| role(n) == r)
            .map(|(_, c)| c.as_str())
            .collect();
        sets.sort_unstable();
        sets.dedup();
        if !sets.is_empty() {
            roles.push((r, sets));
        }
    }
    roles
        .iter()
        .map(|(r, sets)| format!("{r} {}", sets.join("|")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The placement column: the client's CPUs, then the server's threads'.
fn placement(o: &Options, pid: u32) -> String {
    let all = CpuList::of_this_thread()
        .map(|l| l.to_string())
        .unwrap_or_default();
    let client = o
        .client_cpus
        .as_ref()
        .map_or("any".to_owned(), |c| c.to_string());
    let mut threads = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let dir = t.path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
            if let Some(c) = cpus_allowed(&status) {
                threads.push((comm.trim().to_owned(), c));
            }
        }
    }
    format!("client {client}; {}", describe_placement(&threads, &all))
}

/// What weft-kv's loop threads went through during the client run.
#[derive(Debug, Default, Clone, PartialEq)]
struct LoopThreads {
    /// Per loop (0, 1, ..): the longest turn since the server started
    /// (`weft_kv_loop_longest_turn_seconds`), ms.
    longest_turn_ms: Vec<f64>,
    /// Per loop: turns longer than 1.05 ms (weft's turn histogram) during
    /// the client run.
    stalls: Vec<u64>,
    /// Per loop: the lag probe's ticks over 1 ms late during the client
    /// run, (waiting for a core, working).
    late_ticks: Vec<(u64, u64)>,
    /// Summed over the loop threads, from `/proc/PID/task/TID/schedstat`
    /// and `status`: time runnable but waiting for a CPU (ms), involuntary
    /// context switches (preemptions), and CPU time (ms).
    runq_wait_ms: f64,
    preemptions: u64,
    cpu_ms: f64,
}

struct Row {
    server: String,
    mix: u32,
    client: String,
    /// Where the client and the server's threads ran (see the module docs).
    placement: String,
    result: Result<(Measured, f64, Option<LoopThreads>), String>,
}

fn run_row(o: &Options, s: &Server, mix: u32, client: &str, n: usize) -> Row {
    let mut placed = String::new();
    let placed_ref = &mut placed;
    let result = (move || {
        let placed = placed_ref;
        let srv = start(o, s, n)?;
        let pid = srv.child.id();
        // Fill the key space, timing the fill's server CPU.
        let c0 = process_cpu(pid);
        let client_cpus = o.client_cpus.as_ref();
        let fill = output(weft_load(o, srv.addr, 1, 0, mix), client_cpus)?;
        parse_weft_load(&fill).ok_or_else(|| format!("fill failed: {fill}"))?;
        let fill_cpu = process_cpu(pid) - c0;
        let c0 = process_cpu(pid);
        let weft = s.binary == "weft-kv";
        let sched0 = loop_threads_sched(pid);
        let page0 = if weft {
            http_get(srv.addr, "/metrics").unwrap_or_default()
        } else {
            String::new()
        };
        let (m, refill) = if client == "wrk" {
            let script = o.wrk_dir.join("mix.lua");
            let mut c = Command::new("wrk");
            c.arg(format!("-t{}", o.wrk_threads))
                .arg(format!("-c{}", o.conns))
                .arg(format!("-d{}s", o.secs))
                .arg("-s")
                .arg(&script)
                .arg(format!("http://{}", srv.addr))
                .args(["--", &mix.to_string(), &o.keys.to_string()])
                .arg(o.value.to_string());
            let out = output(c, client_cpus)?;
            (parse_wrk(&out).ok_or_else(|| format!("wrk: {out}"))?, 0.0)
        } else {
            let out = output(weft_load(o, srv.addr, o.conns, o.secs, mix), client_cpus)?;
            (
                parse_weft_load(&out).ok_or_else(|| format!("weft-load: {out}"))?,
                fill_cpu,
            )
        };
        // NaN (an unreadable /proc) stays NaN and prints as such.
        let cpu = process_cpu(pid) - c0 - refill;
        let cpu = if cpu < 0.0 { 0.0 } else { cpu };
        let sched1 = loop_threads_sched(pid);
        *placed = placement(o, pid);
        let loops = weft
            .then(|| http_get(srv.addr, "/metrics").ok())
            .flatten()
            .map(|page| LoopThreads {
                longest_turn_ms: parse_longest_turns(&page),
                stalls: stalls_between(&page0, &page),
                late_ticks: late_ticks_between(&page0, &page),
                cpu_ms: sched1.0.saturating_sub(sched0.0) as f64 / 1e6,
                runq_wait_ms: sched1.1.saturating_sub(sched0.1) as f64 / 1e6,
                preemptions: sched1.2.saturating_sub(sched0.2),
            });
        let per_1k = cpu / (m.requests.max(1) as f64 / 1000.0);
        Ok((m, per_1k, loops))
    })();
    Row {
        server: s.name.clone(),
        mix,
        client: client.to_owned(),
        placement: placed,
        result,
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The row to show for one (server, mix, client): the first failure, or the
/// run with the median req/s; and the range of req/s over the runs.
fn median(runs: Vec<Row>) -> (Row, Option<(f64, f64)>) {
    let mut ok: Vec<Row> = Vec::new();
    for r in runs {
        if r.result.is_err() {
            return (r, None);
        }
        ok.push(r);
    }
    let rate = |r: &Row| r.result.as_ref().map_or(0.0, |(m, ..)| m.rate);
    ok.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let range = (rate(&ok[0]), rate(&ok[ok.len() - 1]));
    let mid = ok.swap_remove(ok.len() / 2);
    (mid, Some(range))
}

fn print_table(rows: &[(Row, Option<(f64, f64)>)], rounds: u32) {
    let (extra_head, extra_rule) = if rounds > 1 {
        (" req/s range |", "---|")
    } else {
        ("", "")
    };
    // One ratio column per weft-kv row in the run.
    let mut weft_rows: Vec<&str> = Vec::new();
    for (r, _) in rows {
        if r.server.starts_with("weft-kv") && !weft_rows.contains(&r.server.as_str()) {
            weft_rows.push(&r.server);
        }
    }
    let ratio_head: String = weft_rows.iter().map(|w| format!(" {w} ÷ this |")).collect();
    let ratio_rule = "---|".repeat(weft_rows.len());
    println!(
        "| server | mix (read/write) | client | placement | req/s | p50 | p99 | max | errors | server CPU ms / 1k req | longest turn per loop | turns > 1.05 ms in the run, per loop | late ticks waiting / working, per loop | loop threads: run-queue wait / preemptions / CPU |{ratio_head}{extra_head}"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|{ratio_rule}{extra_rule}");
    for (r, range) in rows {
        let range = match range {
            Some((lo, hi)) if rounds > 1 => format!(" {lo:.0}–{hi:.0} |"),
            _ if rounds > 1 => " |".into(),
            _ => String::new(),
        };
        let head = format!(
            "| {} | {}/{} | {} | {} |",
            r.server,
            r.mix,
            100 - r.mix,
            r.client,
            if r.placement.is_empty() {
                "—"
            } else {
                &r.placement
            }
        );
        match &r.result {
            Ok((m, cpu, loops)) => {
                let ratios: String = weft_rows
                    .iter()
                    .map(|name| {
                        let weft = rows.iter().find_map(|(w, _)| match &w.result {
                            Ok((wm, ..))
                                if w.server == *name && w.mix == r.mix && w.client == r.client =>
                            {
                                Some(wm.rate)
                            }
                            _ => None,
                        });
                        weft.map_or(" — |".into(), |w| {
                            format!(" {:.2}× |", w / m.rate.max(1e-9))
                        })
                    })
                    .collect();
                let stalls = loops.as_ref().map_or("—".into(), |l| {
                    l.stalls
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(" / ")
                });
                let late = loops.as_ref().map_or("—".into(), |l| {
                    l.late_ticks
                        .iter()
                        .map(|(w, k)| format!("{w}/{k}"))
                        .collect::<Vec<_>>()
                        .join(" · ")
                });
                let (turns, sched) = match loops {
                    Some(l) => (
                        l.longest_turn_ms
                            .iter()
                            .map(|t| format!("{t:.2}"))
                            .collect::<Vec<_>>()
                            .join(" / ")
                            + " ms",
                        format!(
                            "{:.0} ms / {} / {:.0} ms",
                            l.runq_wait_ms, l.preemptions, l.cpu_ms
                        ),
                    ),
                    None => ("—".into(), "—".into()),
                };
                println!(
                    "{head} {:.0} | {:.2} ms | {:.2} ms | {:.1} ms | {} | {:.1} | {turns} | {stalls} | {late} | {sched} |{ratios}{range}",
                    m.rate,
                    m.p50_ms,
                    m.p99_ms,
                    m.max_ms,
                    m.errors,
                    cpu * 1e3,
                );
            }
            Err(e) => println!(
                "{head} failed: {} |||||||||||{}{range}",
                e.replace(['\n', '|'], " "),
                "|".repeat(weft_rows.len())
            ),
        }
    }
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

    fn row(rate: f64) -> Row {
        Row {
            server: "weft-kv".to_owned(),
            mix: 90,
            client: "wrk".into(),
            placement: String::new(),
            result: Ok((
                Measured {
                    rate,
                    ..Measured::default()
                },
                0.0,
                None,
            )),
        }
    }

    #[test]
    fn median_run_and_range() {
        let (mid, range) = median(vec![row(30.0), row(10.0), row(20.0)]);
        assert_eq!(mid.result.unwrap().0.rate, 20.0);
        assert_eq!(range, Some((10.0, 30.0)));
        let mut failed = row(0.0);
        failed.result = Err("did not start".into());
        let (shown, range) = median(vec![row(10.0), failed]);
        assert!(shown.result.is_err());
        assert_eq!(range, None);
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

#[cfg(test)]
mod placement_tests {
    use super::*;

    fn t(name: &str, cpus: &str) -> (String, String) {
        (name.to_owned(), cpus.to_owned())
    }

    #[test]
    fn describes_a_servers_threads_by_role() {
        let weft = [
            t("weft-kv", "0"),
            t("weft-loop-watch", "0-1"),
            t("weft-db-kv-w", "1"),
            t("weft-db-kv-r0", "1"),
        ];
        assert_eq!(describe_placement(&weft, "0-1"), "loop 0, db 1, other 0-1");
        let two = [
            t("weft-kv", "0"),
            t("weft-kv-loop-1", "1"),
            t("weft-db-kv-w", "0-1"),
        ];
        assert_eq!(describe_placement(&two, "0-1"), "loop 0|1, db 0-1");
        let twin = [
            t("kv-tokio", "0"),
            t("kv-tokio-worker", "0"),
            t("kv-tokio-block", "1"),
        ];
        assert_eq!(describe_placement(&twin, "0-1"), "workers 0, blocking 1");
        let unplaced = [t("kv-tokio", "0-1"), t("tokio-rt-worker", "0-1")];
        assert_eq!(describe_placement(&unplaced, "0-1"), "server unplaced");
        assert_eq!(
            cpus_allowed("Name:\tx\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n"),
            Some("0-1".to_owned())
        );
    }

    #[test]
    fn a_client_started_on_cpus_runs_there_and_kv_load_keeps_its_own() {
        let mine = CpuList::of_this_thread().unwrap();
        let last: CpuList = mine.cpus()[mine.cpus().len() - 1]
            .to_string()
            .parse()
            .unwrap();
        let mut c = Command::new("sh");
        c.args(["-c", "grep Cpus_allowed_list /proc/self/status"]);
        let out = output(c, Some(&last)).unwrap();
        assert_eq!(cpus_allowed(&out), Some(last.to_string()));
        assert_eq!(CpuList::of_this_thread().unwrap(), mine);
        let mut c = Command::new("sh");
        c.args(["-c", "grep Cpus_allowed_list /proc/self/status"]);
        let out = output(c, None).unwrap();
        assert_eq!(cpus_allowed(&out), Some(mine.to_string()));
    }
}
