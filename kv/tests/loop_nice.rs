//! `Config::loop_nice`: every loop thread gets the nice value (alone in
//! its test binary: it reads the process's threads).

mod common;
use common::*;
use std::sync::mpsc;

/// The nice value (field 19) of a `/proc/.../stat` line.
fn nice_of(stat: &str) -> i32 {
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(16).unwrap().parse().unwrap()
}

#[test]
fn every_loop_thread_gets_the_nice_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.loops = 2;
    // Raising one's nice value needs no privilege.
    c.loop_nice = Some(7);
    let (tx, rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        weft_kv::run(c, move |ready| {
            let own = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            tx.send((nice_of(&own), ready.shutdown.clone())).unwrap();
        })
    });
    let (loop0, shutdown) = rx.recv().unwrap();
    assert_eq!(loop0, 7);
    // Threads a loop thread starts unnamed inherit its name (and its nice
    // value): every one named after loop 1 has it.
    let mut loop1 = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        // A thread that ends while it is read (another test's) is left out.
        let read = |f| std::fs::read_to_string(t.path().join(f));
        if let Ok(comm) = read("comm")
            && comm.trim() == "weft-kv-loop-1"
            && let Ok(stat) = read("stat")
        {
            loop1.push(nice_of(&stat));
        }
    }
    assert!(!loop1.is_empty());
    assert!(loop1.iter().all(|&n| n == 7), "{loop1:?}");
    shutdown.trigger();
    server.join().unwrap().unwrap();
}

#[test]
fn a_nice_value_out_of_range_is_an_error_not_a_silent_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.loops = 1;
    c.loop_nice = Some(1000);
    let served = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = served.clone();
    let r = std::thread::spawn(move || {
        weft_kv::run(c, move |ready| {
            s2.store(true, std::sync::atomic::Ordering::SeqCst);
            ready.shutdown.trigger();
        })
    })
    .join()
    .unwrap();
    common::assert_invalid_input(r, "1000");
    assert!(!served.load(std::sync::atomic::Ordering::SeqCst));
}

/// Runs one loop on a new thread with `c`, first dropping `CAP_SYS_NICE`
/// from that thread when `unprivileged`; returns the loop's
/// `weft_kv_loop_nice` and its thread's nice value while it serves.
fn serve_and_read_nice(c: weft_kv::Config, unprivileged: bool) -> (String, i32) {
    let (tx, rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        if unprivileged {
            drop_cap_sys_nice();
        }
        weft_kv::run(c, move |ready| {
            let own = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            tx.send((ready.addr, nice_of(&own), ready.shutdown.clone()))
                .unwrap();
        })
    });
    let (addr, nice, shutdown) = rx.recv().unwrap();
    let page = get(&agent(), &format!("http://{addr}/metrics")).1;
    let shown = page
        .lines()
        .find_map(|l| l.strip_prefix("weft_kv_loop_nice{loop=\"0\"} "))
        .unwrap()
        .to_owned();
    shutdown.trigger();
    server.join().unwrap().unwrap();
    (shown, nice)
}

#[test]
fn a_nice_value_tried_is_taken_when_allowed_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.loops = 1;
    // A higher value needs no privilege.
    c.try_loop_nice = Some(5);
    assert_eq!(serve_and_read_nice(c, false), ("5".to_owned(), 5));
}

#[test]
fn a_nice_value_refused_leaves_the_loop_serving_at_its_own_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.loops = 1;
    // Below the thread's own value without CAP_SYS_NICE: refused (the
    // default RLIMIT_NICE of 0 allows no lowering either).
    let own = rustix::process::getpriority_process(None).unwrap();
    c.try_loop_nice = Some((own - 3).max(-20));
    assert_eq!(serve_and_read_nice(c, true), (own.to_string(), own));
}
