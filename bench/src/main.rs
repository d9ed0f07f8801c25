//! weft-bench: weft side by side with its peers and the physical floors, in
//! one process run.
//!
//! ```text
//! cargo run --release -p weft-bench -- [--quick] [--out DIR] [--only a,b] [--no-strace]
//! ```
//!
//! # Methodology
//!
//! - Each *subject* (weft, tokio, smol, calloop, rayon, threadpool, a plain std
//!   baseline, and the floors) implements the scenarios it supports
//!   (`subjects`); the others show as "n/a" with the reason.
//! - The run is `rounds` rounds. In each round every scenario is measured for
//!   every subject, one after another, and the subject order rotates from
//!   round to round and scenario to scenario. Drift on a noisy machine (other
//!   builds, frequency changes) therefore hits every subject alike, and the
//!   round-to-round spread is visible in the JSON.
//! - Every measurement builds the subject's runtime afresh on the measuring
//!   thread, which plays the loop thread; producers are fresh threads released
//!   by one barrier.
//! - Wake syscalls are counted once, after the rounds (`syscalls`).
//! - Outputs go to `--out` (default `target/weft-bench`): `results.md` (also
//!   printed), `samples.json` (every raw sample) and `latency.svg`.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod model;
mod report;
mod subjects;
mod syscalls;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use model::{Params, Scenario};
use report::{Record, Run, WakeRow, WakeValue};
use subjects::{Subject, WakeCount};

struct Args {
    quick: bool,
    out: PathBuf,
    only: Option<Vec<String>>,
    strace: bool,
    wake_child: Option<(String, usize)>,
}

const USAGE: &str = "usage: weft-bench [--quick] [--out DIR] [--only NAME,NAME] [--no-strace]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        quick: false,
        out: PathBuf::from("target/weft-bench"),
        only: None,
        strace: true,
        wake_child: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--no-strace" => a.strace = false,
            "--out" => a.out = it.next().ok_or("--out needs a directory")?.into(),
            "--only" => {
                let list = it.next().ok_or("--only needs a list")?;
                a.only = Some(list.split(',').map(str::to_owned).collect());
            }
            "--wake-child" => {
                let name = it.next().ok_or("--wake-child NAME CALLS")?;
                let calls = it.next().and_then(|c| c.parse().ok()).ok_or("bad CALLS")?;
                a.wake_child = Some((name, calls));
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(a)
}

/// The strace'd child: one one-producer burst of `calls`, nothing else.
fn wake_child(name: &str, calls: usize) -> ExitCode {
    let Some(s) = subjects::all().into_iter().find(|s| s.name() == name) else {
        return ExitCode::FAILURE;
    };
    let mut p = Params::quick();
    p.burst_calls = calls;
    match s.measure(Scenario::CftBurst1, &p) {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
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
    if let Some((name, calls)) = &args.wake_child {
        return wake_child(name, *calls);
    }
    let params = if args.quick {
        Params::quick()
    } else {
        Params::full()
    };
    let mut subjects = subjects::all();
    if let Some(only) = &args.only {
        subjects.retain(|s| s.name() == subjects::FLOORS || only.iter().any(|o| o == s.name()));
    }
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("cannot create {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }

    let started = Instant::now();
    let mut records = Vec::new();
    let mut not_applicable = BTreeMap::new();
    let scenarios: Vec<Scenario> = Scenario::ROWS.into_iter().chain(Scenario::FLOORS).collect();
    for round in 0..params.rounds {
        let t = Instant::now();
        for (k, &sc) in scenarios.iter().enumerate() {
            let n = subjects.len();
            for j in 0..n {
                let s = &subjects[(j + round + k) % n];
                let key = (sc.id(), s.name());
                if not_applicable.contains_key(&key) {
                    continue;
                }
                match measure(s.as_ref(), sc, &params) {
                    Ok(samples) => records.push(Record {
                        scenario: sc,
                        subject: s.name(),
                        round,
                        samples,
                    }),
                    Err(why) => {
                        not_applicable.insert(key, why);
                    }
                }
            }
        }
        eprintln!(
            "round {}/{} done in {:.1} s",
            round + 1,
            params.rounds,
            t.elapsed().as_secs_f64()
        );
    }

    let strace = args.strace && syscalls::strace_available();
    let mut wakes = Vec::new();
    for s in &subjects {
        let calls = params.syscall_calls;
        if s.name() == subjects::FLOORS
            || not_applicable.contains_key(&(Scenario::CftBurst1.id(), s.name()))
        {
            continue;
        }
        let value = match s.wake_syscalls(calls) {
            WakeCount::NotApplicable(why) => WakeValue::NotApplicable(why.to_owned()),
            WakeCount::Counted(n) => WakeValue::Counted(n),
            WakeCount::Strace if !strace => WakeValue::NotApplicable(if args.strace {
                "strace not found".to_owned()
            } else {
                "--no-strace".to_owned()
            }),
            WakeCount::Strace => match syscalls::trace_burst(s.name(), calls, &args.out) {
                Ok(t) => WakeValue::Traced(t),
                Err(e) => WakeValue::NotApplicable(format!("strace failed: {e}")),
            },
        };
        eprintln!("wake syscalls counted for {}", s.name());
        wakes.push(WakeRow {
            subject: s.name(),
            calls,
            value,
        });
    }

    let run = Run {
        quick: args.quick,
        params,
        subjects: subjects.iter().map(|s| s.name()).collect(),
        records,
        not_applicable,
        wakes,
        elapsed: started.elapsed(),
    };
    let md = run.markdown();
    println!("{md}");
    let mut ok = true;
    let write = |name: &str, body: String| -> bool {
        let path = args.out.join(name);
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
    let svg = args.out.join("latency.svg");
    if let Err(e) = run.svg(&svg) {
        eprintln!("cannot draw {}: {e}", svg.display());
        ok = false;
    }
    eprintln!(
        "wrote results.md, samples.json, latency.svg to {}",
        args.out.display()
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Measures one cell, turning a panic into an "n/a" so one broken peer does
/// not lose the whole run.
fn measure(s: &dyn Subject, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
    match catch_unwind(AssertUnwindSafe(|| s.measure(sc, p))) {
        Ok(r) => r,
        Err(_) => Err("panicked (see stderr)"),
    }
}
