//! `weft-kv`: the key-value HTTP service (see the `weft_kv` crate docs).
//!
//! ```text
//! cargo run --release -p weft-kv -- [--listen ADDR] [--db PATH] [--readers N] [--loops N]
//!     [--loop-nice N] [--try-loop-nice N] [--loop-fifo PRIO (1-99, SCHED_FIFO; needs CAP_SYS_NICE; with --loop-cpus)] [--checkpoints commit|background] [--db-handover turn|job] [--balance on|off] [--db-nice N] [--db-policy normal|batch|idle] [--db-slice-us US] [--loop-slice-us US]
//!     [--loop-cpus LIST] [--db-cpus LIST] [--max-value BYTES] [--header-timeout SECS] [--slow-callback-ms MS] [--task-pass-us US]
//! ```

use std::process::ExitCode;
use std::time::Duration;

fn usage() -> ! {
    eprintln!(
        "usage: weft-kv [--listen ADDR] [--db PATH] [--readers N] [--loops N] [--loop-nice N] [--try-loop-nice N] [--loop-fifo PRIO (1-99, SCHED_FIFO; needs CAP_SYS_NICE; with --loop-cpus)] [--checkpoints commit|background] [--db-handover turn|job] [--balance on|off] [--db-nice N] [--db-policy normal|batch|idle] [--db-slice-us US (0: the kernel's)] [--loop-slice-us US (0: the kernel's)] [--loop-cpus LIST] [--db-cpus LIST] (LIST as taskset -c: 0, 0-1, 0,2) [--max-value BYTES] [--header-timeout SECS] [--slow-callback-ms MS (0: off)] [--task-pass-us US (0: no budget; default 500)]"
    );
    std::process::exit(2);
}

/// Raises the open-file soft limit to the hard limit (as Go's runtime
/// does): every connection is a descriptor, and the usual soft limit of
/// 1024 would cap idle keep-alive connections far below what the loop
/// holds. A failure only leaves the limit as it was.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    // `None` is "unlimited".
    let below = match (lim.current, lim.maximum) {
        (Some(cur), Some(max)) => cur < max,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            eprintln!("weft-kv: cannot raise the open-file limit: {e}");
        }
    }
}

/// A CPU list flag's value, or exit 2 with the reason (whether the process
/// may use those CPUs is checked when the server starts).
fn cpu_list(flag: &str, v: &str) -> weft_kv::cpus::CpuList {
    v.parse().unwrap_or_else(|e| {
        eprintln!("weft-kv: {flag}: {e}");
        std::process::exit(2);
    })
}

fn main() -> ExitCode {
    raise_fd_limit();
    let mut cfg = weft_kv::Config::default();
    cfg.handle_signals = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--listen" => cfg.listen = val().parse().unwrap_or_else(|_| usage()),
            "--db" => cfg.db_path = val().into(),
            "--readers" => cfg.readers = val().parse().unwrap_or_else(|_| usage()),
            "--loops" => {
                cfg.loops = val().parse().unwrap_or_else(|_| usage());
                if cfg.loops == 0 {
                    usage();
                }
            }
            "--loop-fifo" => cfg.loop_fifo = Some(val().parse().unwrap_or_else(|_| usage())),
            "--loop-nice" => cfg.loop_nice = Some(val().parse().unwrap_or_else(|_| usage())),
            "--try-loop-nice" => {
                cfg.try_loop_nice = Some(val().parse().unwrap_or_else(|_| usage()))
            }
            "--checkpoints" => {
                cfg.checkpoints = match val().as_str() {
                    "commit" => weft_db::Checkpoints::default(),
                    "background" => weft_db::Checkpoints::background(),
                    _ => usage(),
                }
            }
            "--db-handover" => {
                cfg.db_hand_over_per_turn = match val().as_str() {
                    "turn" => true,
                    "job" => false,
                    _ => usage(),
                }
            }
            "--balance" => {
                cfg.balance_loops = match val().as_str() {
                    "on" => true,
                    "off" => false,
                    _ => usage(),
                }
            }
            "--db-nice" => cfg.db_nice = Some(val().parse().unwrap_or_else(|_| usage())),
            "--db-policy" => cfg.db_policy = val().parse().unwrap_or_else(|_| usage()),
            "--db-slice-us" => {
                let us: u64 = val().parse().unwrap_or_else(|_| usage());
                cfg.db_slice = (us > 0).then(|| Duration::from_micros(us));
            }
            "--loop-slice-us" => {
                let us: u64 = val().parse().unwrap_or_else(|_| usage());
                cfg.loop_slice = (us > 0).then(|| Duration::from_micros(us));
            }
            "--loop-cpus" => cfg.loop_cpus = Some(cpu_list("--loop-cpus", &val())),
            "--db-cpus" => cfg.db_cpus = Some(cpu_list("--db-cpus", &val())),
            "--max-value" => cfg.max_value_bytes = val().parse().unwrap_or_else(|_| usage()),
            "--header-timeout" => {
                cfg.header_read_timeout =
                    Duration::from_secs_f64(val().parse().unwrap_or_else(|_| usage()))
            }
            "--task-pass-us" => {
                let us: u64 = val().parse().unwrap_or_else(|_| usage());
                cfg.task_pass_budget = (us > 0).then(|| Duration::from_micros(us));
            }
            "--slow-callback-ms" => {
                let ms: u64 = val().parse().unwrap_or_else(|_| usage());
                cfg.slow_callback_threshold = (ms > 0).then(|| Duration::from_millis(ms));
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let db = cfg.db_path.display().to_string();
    let r = weft_kv::run(cfg, move |ready| {
        // Not println!: a closed stdout (a parent that read only the first
        // line) must not panic on the loop and take the server down.
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "weft-kv listening on http://{}/ (data in {db}; dashboard at /)",
            ready.addr
        );
        let _ = writeln!(
            out,
            "try: curl -X PUT --data-binary hello http://{0}/v1/kv/greeting && curl http://{0}/v1/kv/greeting",
            ready.addr
        );
        let _ = out.flush();
    });
    match r {
        Ok(s) => {
            eprintln!(
                "weft-kv: stopped cleanly ({} connections served, {} abandoned at drain)",
                s.connections, s.abandoned
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft-kv: {e}");
            ExitCode::FAILURE
        }
    }
}
