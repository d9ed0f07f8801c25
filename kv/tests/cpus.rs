//! `Config::loop_cpus` and `Config::db_cpus` (`--loop-cpus`, `--db-cpus`):
//! every loop thread and every database thread runs on the CPUs asked for
//! (read back with `sched_getaffinity`), every other thread keeps the
//! process's, and a bad list is refused at start. The placement test is
//! alone in its binary with the error tests, which start no threads: it
//! reads the process's threads.

mod common;
use common::*;

use std::sync::mpsc;
use std::time::Duration;

use weft_kv::cpus::CpuList;

/// (thread name, CPUs) of every thread of this process.
fn threads() -> Vec<(String, CpuList)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(tid) = t.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        // A thread that ended meanwhile is skipped.
        if let Ok(cpus) = CpuList::of_thread(tid) {
            out.push((comm.trim().to_owned(), cpus));
        }
    }
    out
}

fn cpu(n: usize) -> CpuList {
    n.to_string().parse().unwrap()
}

/// Runs a server with `cfg` on a thread named `kv-test-loop0` (loop 0),
/// lets `check` look at the process's threads while it serves, and
/// returns loop 0's CPUs once `run` returned.
fn serve_and_check(cfg: weft_kv::Config, check: impl FnOnce()) -> CpuList {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::Builder::new()
        .name("kv-test-loop0".into())
        .spawn(move || {
            let r = weft_kv::run(cfg, move |ready| {
                tx.send((ready.addr, ready.shutdown.clone())).unwrap();
            });
            (r.map(|_| ()), CpuList::of_this_thread().unwrap())
        })
        .unwrap();
    let (addr, shutdown) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server started");
    let base = format!("http://{addr}");
    // A PUT and a GET: the writer and a reader have opened their
    // connections (their start hook ran first).
    let a = agent();
    assert_eq!(put(&a, &format!("{base}/v1/kv/k"), b"v").0, 200);
    assert_eq!(get(&a, &format!("{base}/v1/kv/k")), (200, "v".to_owned()));
    wait_for_db_threads(&base, 3);
    check();
    shutdown.trigger();
    let (r, after) = t.join().unwrap();
    r.unwrap();
    after
}

/// Waits until `n` database connections are open (bounded by 60 s).
fn wait_for_db_threads(base: &str, n: usize) {
    let end = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = get(&agent(), &format!("{base}/metrics")).1;
        let open: f64 = page
            .lines()
            .filter(|l| l.starts_with("weft_db_connections_open{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if open as usize >= n {
            return;
        }
        assert!(std::time::Instant::now() < end, "{open} connections open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn loops_and_database_threads_run_where_asked_and_every_other_thread_keeps_the_process_cpus() {
    let all = CpuList::of_this_thread().unwrap();
    let (first, last) = (all.cpus()[0], all.cpus()[all.cpus().len() - 1]);
    let dir = tempfile::tempdir().unwrap();

    // Two loops on the first CPU, the database on the last.
    let mut c = config(dir.path());
    c.loops = 2;
    c.readers = 2;
    c.loop_cpus = Some(cpu(first));
    c.db_cpus = Some(cpu(last));
    let after = serve_and_check(c, || {
        let ts = threads();
        let of = |pred: &dyn Fn(&str) -> bool| -> Vec<&(String, CpuList)> {
            ts.iter().filter(|(n, _)| pred(n)).collect()
        };
        let loops = of(&|n| n == "kv-test-loop0" || n.starts_with("weft-kv-loop-"));
        assert_eq!(loops.len(), 2, "{ts:?}");
        assert!(loops.iter().all(|(_, c)| *c == cpu(first)), "{ts:?}");
        let db = of(&|n| n.starts_with("weft-db-"));
        assert_eq!(db.len(), 3, "{ts:?}");
        assert!(db.iter().all(|(_, c)| *c == cpu(last)), "{ts:?}");
        // The rest: both loops' watchdogs, the test's own threads.
        let rest = of(&|n| {
            n != "kv-test-loop0" && !n.starts_with("weft-kv-loop-") && !n.starts_with("weft-db-")
        });
        assert!(
            rest.iter()
                .filter(|(n, _)| n.starts_with("weft-loop-watch"))
                .count()
                == 2,
            "{ts:?}"
        );
        assert!(rest.iter().all(|(_, c)| *c == all), "{ts:?}");
    });
    // Loop 0 is the thread that called `run`: it gets its set back.
    assert_eq!(after, all);

    // Only the loop placed: the database threads, started from the placed
    // loop 0, are put back on the process's CPUs.
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.loops = 1;
    c.readers = 2;
    c.loop_cpus = Some(cpu(last));
    serve_and_check(c, || {
        let ts = threads();
        for (n, c) in &ts {
            let want = if n == "kv-test-loop0" {
                cpu(last)
            } else {
                all.clone()
            };
            assert_eq!(*c, want, "{n}: {ts:?}");
        }
        assert_eq!(
            ts.iter().filter(|(n, _)| n.starts_with("weft-db-")).count(),
            3,
            "{ts:?}"
        );
    });
}

#[test]
fn a_cpu_the_process_may_not_use_is_an_error_at_start_and_nothing_is_served() {
    let all = CpuList::of_this_thread().unwrap();
    // The highest CPU a list may name; no test machine lets a process use it.
    let outside = 1023;
    if all.contains(outside) {
        return;
    }
    for db in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.loops = 1;
        if db {
            c.db_cpus = Some(cpu(outside));
        } else {
            c.loop_cpus = Some(format!("{},{outside}", all.cpus()[0]).parse().unwrap());
        }
        let path = c.db_path.clone();
        let r = std::thread::spawn(move || weft_kv::run(c, |ready| ready.shutdown.trigger()))
            .join()
            .unwrap();
        common::assert_invalid_input(r, "CPU 1023");
        // Refused before the database was opened.
        assert!(!path.exists());
    }
}

#[test]
fn the_binary_refuses_bad_lists_with_a_reason_and_a_non_zero_status() {
    let all = CpuList::of_this_thread().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kv.sqlite3");
    let mut cases = vec![
        ("--loop-cpus", "", "empty CPU list"),
        ("--loop-cpus", "zero", "not a CPU number"),
        ("--db-cpus", "1,", "not a CPU number"),
        ("--db-cpus", "3-1", "backwards"),
        ("--loop-cpus", "4096", "out of range"),
    ];
    if !all.contains(1023) {
        cases.push(("--db-cpus", "1023", "not one this process may run on"));
        cases.push(("--loop-cpus", "1023", "not one this process may run on"));
    }
    for (flag, list, why) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft-kv"))
            .args(["--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .args([flag, list])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {list:?}: {err}");
        assert!(err.contains(why), "{flag} {list:?}: {err}");
        assert!(!err.contains("panicked"), "{flag} {list:?}: {err}");
        assert!(out.stdout.is_empty(), "{flag} {list:?} served");
        assert!(!db.exists(), "{flag} {list:?} opened the database");
    }
}
