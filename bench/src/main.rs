//! weft-bench: weft side by side with its peers and the physical floors.
//!
//! ```text
//! cargo run --release -p weft-bench -- [--quick] [--out DIR] [--only a,b] [--pin same|split|off] [--no-syscalls]
//! ```
//!
//! # Methodology
//!
//! - Each *subject* (weft, weft's protocol style, tokio in four set-ups,
//!   smol in two, calloop, rayon, threadpool, a plain std baseline, and the
//!   floors) implements the
//!   scenarios it supports (`subjects`); the others show as "n/a" with the
//!   reason.
//! - Every measurement (one scenario, one subject, one round: a *cell*) runs
//!   in a fresh process: the harness re-executes itself with the hidden
//!   `--cell SUBJECT SCENARIO` arguments and reads one JSON line back. So no
//!   subject inherits another's threads, a process-global pool starts empty,
//!   thread counts and CPU time belong to one subject, and per-process
//!   settings (smol's `BLOCKING_MAX_THREADS`) apply to one column only.
//! - The run is `rounds` rounds. In each round every scenario is measured for
//!   every subject, one after another, and the subject order rotates from
//!   round to round and scenario to scenario, so drift on a noisy machine
//!   hits every subject alike.
//! - After the rounds, once per run: thread counts after the keep-alive (the
//!   children are started one after another, each once the previous one has
//!   finished its burst, and then sleep together), the idle-CPU row (children
//!   idle side by side), and the wake syscalls (`syscalls`).
//! - Outputs go to `--out` (default `target/weft-bench`): `results.md` (also
//!   printed), `samples.json` (every raw sample) and `latency.svg`. Progress
//!   is drawn on stderr.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod model;
mod os;
mod report;
mod subjects;
mod syscalls;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use model::{Kind, Params, Scenario};
use report::{Record, Run, WakeRow};
use subjects::Subject;

struct Args {
    quick: bool,
    out: PathBuf,
    only: Option<Vec<String>>,
    syscalls: bool,
    pin: model::Pin,
    cell: Option<(String, String)>,
    calls: Option<usize>,
}

const USAGE: &str = "usage: weft-bench [--quick] [--out DIR] [--only NAME,NAME] [--pin same|split|off] [--no-syscalls]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        quick: false,
        out: PathBuf::from("target/weft-bench"),
        only: None,
        syscalls: true,
        pin: model::Pin::Same,
        cell: None,
        calls: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--no-syscalls" | "--no-strace" => a.syscalls = false,
            "--pin" => {
                let m = it.next().ok_or("--pin needs split, same or off")?;
                a.pin = model::Pin::parse(&m).ok_or("--pin needs split, same or off")?;
            }
            "--out" => a.out = it.next().ok_or("--out needs a directory")?.into(),
            "--only" => {
                let list = it.next().ok_or("--only needs a list")?;
                a.only = Some(list.split(',').map(str::to_owned).collect());
            }
            // Hidden: run one cell in this process (the harness's children).
            "--cell" => {
                let name = it.next().ok_or("--cell SUBJECT SCENARIO")?;
                let sc = it.next().ok_or("--cell SUBJECT SCENARIO")?;
                a.cell = Some((name, sc));
            }
            "--calls" => {
                let n = it
                    .next()
                    .and_then(|c| c.parse().ok())
                    .ok_or("bad --calls")?;
                a.calls = Some(n);
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn params(quick: bool) -> Params {
    if quick {
        Params::quick()
    } else {
        Params::full()
    }
}

/// The child side: measures one cell in this process and prints one JSON
/// line: `{"samples": [...], "cpu_ns": x}` or `{"na": reason}`.
fn run_cell_here(name: &str, sc: &str, quick: bool, calls: Option<usize>) -> ExitCode {
    let Some(sc) = Scenario::from_id(sc) else {
        eprintln!("unknown scenario {sc}");
        return ExitCode::FAILURE;
    };
    let Some(s) = subjects::all().into_iter().find(|s| s.name() == name) else {
        eprintln!("unknown subject {name}");
        return ExitCode::FAILURE;
    };
    let mut p = params(quick);
    if let Some(c) = calls {
        p.burst_calls = c;
    }
    model::set_cell(sc);
    model::pin_loop();
    model::reset_marks();
    let c0 = os::process_cpu_ns();
    let r = subjects::measure(s.as_ref(), sc, &p);
    let c1 = os::process_cpu_ns();
    let out = match r {
        Ok(mut samples) => {
            let (a, b) = model::marks().unwrap_or((c0, c1));
            let cpu = b.saturating_sub(a) as f64;
            if sc == Scenario::Idle {
                samples = vec![cpu];
            }
            json!({ "samples": samples, "cpu_ns": cpu })
        }
        Err(why) => json!({ "na": why }),
    };
    println!("{out}");
    ExitCode::SUCCESS
}

/// What one child reported.
enum CellResult {
    Ok { samples: Vec<f64>, cpu_ns: f64 },
    Na(String),
    Failed(String),
}

/// The `--pin` mode of this run, handed to every cell.
static PIN: OnceLock<model::Pin> = OnceLock::new();

fn cell_command(exe: &Path, s: &dyn Subject, sc: Scenario, quick: bool) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(cell_args(s.name(), sc, quick, None));
    let pin = PIN.get().copied().unwrap_or(model::Pin::Same);
    cmd.env(model::PIN_ENV, pin.name());
    cmd.env_remove("BLOCKING_MAX_THREADS");
    for (k, v) in s.env(sc) {
        cmd.env(k, v);
    }
    cmd
}

fn cell_args(name: &str, sc: Scenario, quick: bool, calls: Option<usize>) -> Vec<String> {
    let mut v = vec!["--cell".to_owned(), name.to_owned(), sc.id().to_owned()];
    if quick {
        v.push("--quick".to_owned());
    }
    if let Some(c) = calls {
        v.extend(["--calls".to_owned(), c.to_string()]);
    }
    v
}

fn parse_cell(stdout: &str, stderr: &str, ok: bool) -> CellResult {
    let last = stdout.lines().rev().find(|l| l.starts_with('{'));
    let parsed: Option<Value> = last.and_then(|l| serde_json::from_str(l).ok());
    match parsed {
        Some(v) if ok => {
            if let Some(why) = v.get("na").and_then(Value::as_str) {
                return CellResult::Na(why.to_owned());
            }
            let samples = v["samples"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            let cpu_ns = v["cpu_ns"].as_f64().unwrap_or(f64::NAN);
            CellResult::Ok { samples, cpu_ns }
        }
        _ => {
            let why = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty() && !l.starts_with("note:"))
                .unwrap_or("no output")
                .to_owned();
            CellResult::Failed(why)
        }
    }
}

fn run_cell(exe: &Path, s: &dyn Subject, sc: Scenario, quick: bool) -> CellResult {
    let out = cell_command(exe, s, sc, quick)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => parse_cell(
            &String::from_utf8_lossy(&o.stdout),
            &String::from_utf8_lossy(&o.stderr),
            o.status.success(),
        ),
        Err(e) => CellResult::Failed(e.to_string()),
    }
}

/// A child of the keep-alive phase, started and past its burst.
struct Sleeper {
    subject: &'static str,
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

/// Starts the keep-alive child of `s` and waits until its burst is over.
fn start_sleeper(exe: &Path, s: &dyn Subject, quick: bool) -> Result<Sleeper, CellResult> {
    let mut child = cell_command(exe, s, Scenario::ThreadsAfterKeepAlive, quick)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| CellResult::Failed(e.to_string()))?;
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        match stdout.read_line(&mut line) {
            Ok(0) | Err(_) => {
                let ok = child.wait().is_ok_and(|st| st.success());
                return Err(parse_cell(&line, "exited during its burst", ok));
            }
            Ok(_) if line.trim() == "ready" => break,
            Ok(_) if line.starts_with('{') => {
                let ok = child.wait().is_ok_and(|st| st.success());
                return Err(parse_cell(&line, "", ok));
            }
            Ok(_) => {}
        }
    }
    Ok(Sleeper {
        subject: s.name(),
        child,
        stdout,
    })
}

fn finish_sleeper(mut sl: Sleeper) -> CellResult {
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut sl.stdout, &mut rest);
    let ok = sl.child.wait().is_ok_and(|st| st.success());
    parse_cell(&rest, "failed after its burst", ok)
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>14} [{bar:28}] {pos}/{len} {msg}")
        .expect("progress template")
        .progress_chars("=> ")
}

/// Collects cells into records, n/a reasons and failures.
struct Collector {
    params: Params,
    records: Vec<Record>,
    not_applicable: BTreeMap<(&'static str, &'static str), String>,
    failures: BTreeMap<(&'static str, &'static str), String>,
}

impl Collector {
    fn add(&mut self, sc: Scenario, subject: &'static str, round: usize, r: CellResult) {
        match r {
            CellResult::Ok { samples, cpu_ns } => {
                let ops = match sc.kind() {
                    Kind::Latency => samples.len(),
                    Kind::Throughput => sc.ops(&self.params),
                    Kind::Count => 0,
                };
                let cpu_per_op = (ops > 0 && cpu_ns.is_finite()).then(|| cpu_ns / ops as f64);
                self.records.push(Record {
                    scenario: sc,
                    subject,
                    round,
                    samples,
                    cpu_per_op,
                });
            }
            CellResult::Na(why) => {
                self.not_applicable.insert((sc.id(), subject), why);
            }
            CellResult::Failed(why) => {
                self.failures.insert((sc.id(), subject), why);
            }
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some((name, sc)) = &args.cell {
        return run_cell_here(name, sc, args.quick, args.calls);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot find this executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = PIN.set(args.pin);
    let params = params(args.quick);
    let mut subjects = subjects::all();
    if let Some(only) = &args.only {
        subjects.retain(|s| s.name() == subjects::FLOORS || only.iter().any(|o| o == s.name()));
    }
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("cannot create {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }

    let started = Instant::now();
    let mut col = Collector {
        params: params.clone(),
        records: Vec::new(),
        not_applicable: BTreeMap::new(),
        failures: BTreeMap::new(),
    };
    let scenarios: Vec<Scenario> = Scenario::ROWS.into_iter().chain(Scenario::FLOORS).collect();
    let mp = MultiProgress::new();
    let overall = mp.add(ProgressBar::new((params.rounds * scenarios.len()) as u64));
    overall.set_style(bar_style());
    overall.set_prefix("all rounds");
    for round in 0..params.rounds {
        let t = Instant::now();
        for (k, &sc) in scenarios.iter().enumerate() {
            let n = subjects.len();
            let bar = mp.add(ProgressBar::new(n as u64));
            bar.set_style(bar_style());
            bar.set_prefix(format!("round {}/{}", round + 1, params.rounds));
            for j in 0..n {
                let s = &subjects[(j + round + k) % n];
                bar.set_message(format!("{} · {}", sc.id(), s.name()));
                let key = (sc.id(), s.name());
                if !col.not_applicable.contains_key(&key) {
                    let r = run_cell(&exe, s.as_ref(), sc, args.quick);
                    if let CellResult::Failed(why) = &r {
                        mp.suspend(|| eprintln!("{} / {} failed: {why}", s.name(), sc.id()));
                    }
                    col.add(sc, s.name(), round, r);
                }
                bar.inc(1);
            }
            bar.finish_and_clear();
            mp.remove(&bar);
            overall.inc(1);
        }
        if mp.is_hidden() {
            eprintln!(
                "round {}/{} done in {:.1} s",
                round + 1,
                params.rounds,
                t.elapsed().as_secs_f64()
            );
        }
    }
    overall.finish_and_clear();

    once_per_run(&exe, &subjects, &args, &mp, &mut col);

    let counter = if args.syscalls {
        syscalls::counter()
    } else {
        None
    };
    let wakes = wake_rows(&exe, &subjects, &args, counter, &mp);
    let run = Run {
        quick: args.quick,
        pin: args.pin,
        params,
        subjects: subjects.iter().map(|s| s.name()).collect(),
        records: col.records,
        not_applicable: col.not_applicable,
        failures: col.failures,
        wakes,
        counter,
        elapsed: started.elapsed(),
    };
    write_outputs(&run, &args.out)
}

/// The keep-alive and idle rows, measured once per run.
fn once_per_run(
    exe: &Path,
    subjects: &[Box<dyn Subject>],
    args: &Args,
    mp: &MultiProgress,
    col: &mut Collector,
) {
    let peers: Vec<&dyn Subject> = subjects
        .iter()
        .map(AsRef::as_ref)
        .filter(|s| s.name() != subjects::FLOORS)
        .collect();
    // Keep-alive: start the children one after another (each after the
    // previous one finished its burst), then let them sleep side by side.
    let bar = mp.add(ProgressBar::new(peers.len() as u64));
    bar.set_style(bar_style());
    bar.set_prefix("keep-alive");
    let mut sleepers = Vec::new();
    for s in &peers {
        bar.set_message(format!("burst · {}", s.name()));
        match start_sleeper(exe, *s, args.quick) {
            Ok(sl) => sleepers.push(sl),
            Err(r) => {
                col.add(Scenario::ThreadsAfterKeepAlive, s.name(), 0, r);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    mp.remove(&bar);
    // Idle CPU, while the keep-alive children sleep: every child idles.
    let bar = mp.add(ProgressBar::new_spinner());
    bar.set_prefix("idle");
    bar.set_message("every loop idles side by side");
    bar.enable_steady_tick(Duration::from_millis(200));
    let idlers: Vec<_> = peers
        .iter()
        .map(|s| {
            let child = cell_command(exe, *s, Scenario::Idle, args.quick)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            (s.name(), child)
        })
        .collect();
    for (name, child) in idlers {
        let r = match child.and_then(Child::wait_with_output) {
            Ok(o) => parse_cell(
                &String::from_utf8_lossy(&o.stdout),
                &String::from_utf8_lossy(&o.stderr),
                o.status.success(),
            ),
            Err(e) => CellResult::Failed(e.to_string()),
        };
        col.add(Scenario::Idle, name, 0, r);
    }
    bar.set_message("waiting for the keep-alive to pass");
    for sl in sleepers {
        let name = sl.subject;
        let r = finish_sleeper(sl);
        col.add(Scenario::ThreadsAfterKeepAlive, name, 0, r);
    }
    bar.finish_and_clear();
    mp.remove(&bar);
}

/// The wake-syscall row: every `call_from_thread` subject counted alike.
fn wake_rows(
    exe: &Path,
    subjects: &[Box<dyn Subject>],
    args: &Args,
    counter: Option<syscalls::Counter>,
    mp: &MultiProgress,
) -> Vec<WakeRow> {
    let p = params(args.quick);
    let bar = mp.add(ProgressBar::new(subjects.len() as u64));
    bar.set_style(bar_style());
    bar.set_prefix("wake syscalls");
    let mut rows = Vec::new();
    for s in subjects {
        bar.inc(1);
        bar.set_message(s.name());
        if s.name() == subjects::FLOORS {
            continue;
        }
        // Only subjects with a call_from_thread burst take part.
        if let CellResult::Na(_) = run_cell_probe(exe, s.as_ref()) {
            continue;
        }
        let value = match counter {
            None => Err(if args.syscalls {
                "neither perf tracepoints nor strace available".to_owned()
            } else {
                "--no-syscalls".to_owned()
            }),
            Some(c) => count_per_call(exe, s.name(), c, &p, &args.out),
        };
        rows.push(WakeRow {
            subject: s.name(),
            value,
        });
    }
    bar.finish_and_clear();
    mp.remove(&bar);
    rows
}

/// Whether `s` has a burst at all (a tiny one, untraced).
fn run_cell_probe(exe: &Path, s: &dyn Subject) -> CellResult {
    let out = Command::new(exe)
        .args(cell_args(s.name(), Scenario::CftBurst1, true, Some(10)))
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => parse_cell(
            &String::from_utf8_lossy(&o.stdout),
            &String::from_utf8_lossy(&o.stderr),
            o.status.success(),
        ),
        Err(e) => CellResult::Failed(e.to_string()),
    }
}

/// Wake syscalls per 100k calls: a big burst minus a small one.
fn count_per_call(
    exe: &Path,
    name: &str,
    counter: syscalls::Counter,
    p: &Params,
    dir: &Path,
) -> Result<syscalls::Traced, String> {
    let log = dir.join(format!("syscalls-{name}.txt"));
    let (big, small) = (p.syscall_calls, p.syscall_calls_small);
    let b = syscalls::count(
        counter,
        exe,
        &cell_args(name, Scenario::CftBurst1, true, Some(big)),
        &log,
    )?;
    let s = syscalls::count(
        counter,
        exe,
        &cell_args(name, Scenario::CftBurst1, true, Some(small)),
        &log,
    )?;
    let per = 100_000.0 / (big - small) as f64;
    Ok(syscalls::Traced {
        writes: ((b.writes - s.writes) * per).max(0.0),
        futex_wakes: ((b.futex_wakes - s.futex_wakes) * per).max(0.0),
    })
}

fn write_outputs(run: &Run, out: &Path) -> ExitCode {
    let md = run.markdown();
    println!("{md}");
    let mut ok = true;
    let write = |name: &str, body: String| -> bool {
        let path = out.join(name);
        match std::fs::write(&path, body) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("cannot write {}: {e}", path.display());
                false
            }
        }
    };
    ok &= write("results.md", md);
    ok &= write(
        "samples.json",
        serde_json::to_string(&run.json()).expect("json"),
    );
    let svg = out.join("latency.svg");
    if let Err(e) = run.svg(&svg) {
        eprintln!("cannot draw {}: {e}", svg.display());
        ok = false;
    }
    eprintln!(
        "wrote results.md, samples.json, latency.svg to {}",
        out.display()
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
