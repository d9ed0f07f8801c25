//! One row's run: start a server afresh, fill its key space, run the
//! client (on `--client-cpus` if given), and collect what it measured.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use weft_kv::cpus::CpuList;

use crate::Options;
use crate::metrics::{
    LoopThreads, Measured, http_get, late_ticks_between, loop_threads_sched, parse_longest_turns,
    parse_weft_load, parse_wrk, process_cpu, stalls_between,
};
use crate::placement::placement;
use crate::servers::Server;

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
pub(crate) fn output(mut c: Command, cpus: Option<&CpuList>) -> Result<String, String> {
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

pub(crate) struct Row {
    pub(crate) server: String,
    pub(crate) mix: u32,
    pub(crate) client: String,
    /// Where the client and the server's threads ran (see the module docs).
    pub(crate) placement: String,
    pub(crate) result: Result<(Measured, f64, Option<LoopThreads>), String>,
}

pub(crate) fn run_row(o: &Options, s: &Server, mix: u32, client: &str, n: usize) -> Row {
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
