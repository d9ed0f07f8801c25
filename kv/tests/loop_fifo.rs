//! `Config::loop_fifo`: every loop thread runs under `SCHED_FIFO`, the
//! threads they start (the database's) do not, and the caller's thread
//! (loop 0) leaves it when `run` returns; a value out of range or a
//! refusal is an error, never a loop silently left in the fair class
//! (alone in its test binary: it reads the process's threads).

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

/// The scheduling policy (field 41) of a `/proc/.../stat` line: 0 is
/// `SCHED_OTHER`, 1 `SCHED_FIFO`.
fn policy_of(stat: &str) -> u32 {
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    // Field 3 is the first after the name.
    rest.split_whitespace()
        .nth(41 - 3)
        .unwrap()
        .parse()
        .unwrap()
}

/// Every thread of this process with its name and policy, in the order
/// they were started (by thread id; one that ends while it is read, e.g.
/// another test's, is left out).
fn threads() -> Vec<(String, u32)> {
    let mut v = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let tid: u64 = t.file_name().to_str().unwrap().parse().unwrap();
        let read = |f| std::fs::read_to_string(t.path().join(f));
        if let (Ok(comm), Ok(stat)) = (read("comm"), read("stat")) {
            v.push((tid, comm.trim().to_owned(), policy_of(&stat)));
        }
    }
    v.sort();
    v.into_iter().map(|(_, n, p)| (n, p)).collect()
}

fn own_policy() -> u32 {
    policy_of(&std::fs::read_to_string("/proc/thread-self/stat").unwrap())
}

/// Whether this process may take a real-time policy (asked on a scratch
/// thread, which then ends).
fn fifo_allowed() -> bool {
    std::thread::spawn(|| weft_kv::sched::set_this_thread_fifo(1).is_ok())
        .join()
        .unwrap()
}

/// Runs `c` on a new thread, dropping `CAP_SYS_NICE` from it first when
/// `unprivileged`; returns `run`'s result and whether it served.
fn run_expecting_refusal(
    c: weft_kv::Config,
    unprivileged: bool,
) -> (Result<weft_kv::Summary, weft_kv::Error>, bool) {
    let served = Arc::new(AtomicBool::new(false));
    let s2 = served.clone();
    let r = std::thread::spawn(move || {
        if unprivileged {
            drop_cap_sys_nice();
        }
        weft_kv::run(c, move |ready| {
            s2.store(true, Ordering::SeqCst);
            ready.shutdown.trigger();
        })
    })
    .join()
    .unwrap();
    (r, served.load(Ordering::SeqCst))
}

#[test]
fn every_loop_thread_runs_fifo_the_database_threads_do_not_and_loop_0_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.loops = 2;
    c.loop_fifo = Some(1);
    if !fifo_allowed() {
        // Without the privilege the same config is refused (below).
        let (r, served) = run_expecting_refusal(c, false);
        assert!(
            matches!(r, Err(weft_kv::Error::Io(ref e)) if e.kind() == std::io::ErrorKind::PermissionDenied),
            "{r:?}"
        );
        assert!(!served);
        return;
    }
    let (tx, rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        let r = weft_kv::run(c, move |ready| {
            tx.send((own_policy(), ready.addr, ready.shutdown.clone()))
                .unwrap();
        });
        (r, own_policy())
    });
    let (loop0, addr, shutdown) = rx.recv().unwrap();
    assert_eq!(loop0, 1);
    // The database threads start while the server starts: a request
    // through them first.
    assert_eq!(
        put(&agent(), &format!("http://{addr}/v1/kv/a"), b"1").0,
        200
    );
    let all = threads();
    // Loop 1's thread first; threads it starts unnamed take its name but
    // not its policy.
    let loop1: Vec<_> = all.iter().filter(|(n, _)| n == "weft-kv-loop-1").collect();
    let (first, started) = loop1.split_first().expect("loop 1's thread");
    assert_eq!(first.1, 1, "{all:?}");
    assert!(started.iter().all(|(_, p)| *p == 0), "{all:?}");
    let db: Vec<_> = all
        .iter()
        .filter(|(n, _)| n.starts_with("weft-db"))
        .collect();
    assert!(!db.is_empty(), "{all:?}");
    assert!(db.iter().all(|(_, p)| *p == 0), "{all:?}");
    shutdown.trigger();
    let (r, after) = server.join().unwrap();
    r.unwrap();
    assert_eq!(after, 0, "loop 0's thread is back in the fair class");
}

#[test]
fn a_fifo_priority_out_of_range_is_an_error_and_nothing_is_served() {
    for p in [0, 100] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.loops = 1;
        c.loop_fifo = Some(p);
        let (r, served) = run_expecting_refusal(c, false);
        assert_invalid_input(r, &p.to_string());
        assert!(!served);
    }
}

#[test]
fn without_cap_sys_nice_fifo_is_refused_with_the_reason_and_nothing_is_served() {
    let rtprio = rustix::process::getrlimit(rustix::process::Resource::Rtprio);
    if rtprio.current.is_none_or(|n| n >= 1) {
        // This process may take real-time priorities without the
        // capability: nothing to refuse.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.loops = 1;
    c.loop_fifo = Some(1);
    let (r, served) = run_expecting_refusal(c, true);
    match r {
        Err(weft_kv::Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
            assert!(e.to_string().contains("CAP_SYS_NICE"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!served);
}

#[test]
fn a_run_that_fails_after_taking_fifo_gives_the_callers_thread_its_policy_back() {
    // The address is taken: the server fails after its loop (this
    // thread) took SCHED_FIFO, or is refused before when not allowed.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.loops = 1;
    c.loop_fifo = Some(1);
    c.listen = taken.local_addr().unwrap();
    let (failed, after) = std::thread::spawn(move || {
        let before = own_policy();
        let r = weft_kv::run(c, |_| panic!("served on a taken address"));
        (r.is_err(), (before, own_policy()))
    })
    .join()
    .unwrap();
    assert!(failed);
    assert_eq!(after, (0, 0));
}
