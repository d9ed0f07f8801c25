//! `Config::db_policy` and `Config::db_slice`: every database connection
//! thread takes the policy, the loop keeps its own (alone in its test
//! binary: it reads the process's threads).

mod common;
use common::*;

/// The scheduling policy (field 41) of a `/proc/.../stat` line.
fn policy_of(stat: &str) -> u32 {
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(38).unwrap().parse().unwrap()
}

/// (thread name, policy) of every thread of this process whose name
/// starts with `prefix` (`db` true) or does not (`db` false).
fn policies(prefix: &str, db: bool) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim().starts_with(prefix) == db {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap();
            out.push((comm.trim().to_owned(), policy_of(&stat)));
        }
    }
    out
}

#[test]
fn every_database_thread_takes_the_policy_and_the_loop_keeps_its_own() {
    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.loops = 1;
    c.readers = 2;
    // Neither needs privilege.
    c.db_policy = weft_kv::DbPolicy::Batch;
    c.db_slice = Some(std::time::Duration::from_millis(3));
    let server = Server::start(c);
    // A connection opens after its thread's start hook ran.
    server.wait_metric("weft_db_connections_open{group=\"writer\"}", |v| v == 1.0);
    server.wait_metric("weft_db_connections_open{group=\"readers\"}", |v| v == 2.0);
    let db = policies("weft-db-", true);
    assert_eq!(db.len(), 3, "{db:?}");
    assert!(db.iter().all(|(_, p)| *p == SCHED_BATCH), "{db:?}");
    // Every other thread (the loop, its watchdog, the test's) is untouched.
    let own = policies("weft-db-", false);
    assert!(own.len() >= 2, "{own:?}");
    assert!(own.iter().all(|(_, p)| *p == SCHED_OTHER), "{own:?}");
    // And it serves.
    let a = agent();
    assert_eq!(put(&a, &server.url("/v1/kv/k"), b"v").0, 200);
    assert_eq!(get(&a, &server.url("/v1/kv/k")), (200, "v".to_owned()));
    server.stop();
}

#[test]
fn a_database_slice_out_of_range_is_an_error_not_a_silent_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.loops = 1;
    c.db_slice = Some(std::time::Duration::from_micros(50));
    let r = std::thread::spawn(move || weft_kv::run(c, |ready| ready.shutdown.trigger()))
        .join()
        .unwrap();
    common::assert_invalid_input(r, "slice");
}
