//! A short soak: mixed load with connection churn through weft-load's
//! engine; zero errors, and open fds / RSS flat at the end.

mod common;
use common::*;
use std::time::Duration;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn load(addr: std::net::SocketAddr, secs: u64) -> weft_kv::load::LoadReport {
    let mut o = weft_kv::load::LoadOptions::new(addr);
    o.connections = 32;
    o.duration = Duration::from_secs(secs);
    o.read_percent = 80;
    o.keys = 2000;
    o.value_size = 256;
    o.requests_per_connection = Some(50);
    std::thread::spawn(move || weft_kv::load::run(o).unwrap())
        .join()
        .unwrap()
}

#[test]
fn soak_mixed_load_with_churn() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(config(dir.path()));
    let quiet = |srv: &Server| {
        // Only the scrape's own connection and request remain.
        srv.wait_metric("weft_http_connections_open", |v| v <= 1.0);
    };
    // Warm up: SQLite's cache, hyper's buffers, allocator arenas.
    let warm = load(srv.addr, 2);
    assert_eq!(warm.errors, 0);
    quiet(&srv);
    let (fds0, rss0) = (open_fds(), rss_kib());

    let r = load(srv.addr, 8);
    quiet(&srv);
    let (fds1, rss1) = (open_fds(), rss_kib());
    eprintln!(
        "soak: {} requests ({:.0}/s), {} connections, {} errors; fds {fds0} -> {fds1}; RSS {rss0} -> {rss1} KiB",
        r.requests,
        r.rate(),
        r.connections,
        r.errors
    );
    // weft-load read the server loop's statistics around the run.
    let lp = r
        .server_loop
        .clone()
        .expect("weft-kv exports its loop series");
    eprintln!("soak: server loop {lp:?}");
    assert!(lp.lag_ticks > 0, "the lag probe ticked during the run");
    assert_eq!(r.errors, 0);
    assert!(r.requests > 0 && r.connections > 32, "churn happened");
    // The last scrape's socket may still be closing on the server side
    // (±1 each way); a leak over 300+ churned connections shows as far more.
    assert!(fds1 <= fds0 + 2, "fd leak: {fds0} -> {fds1}");
    assert!(
        rss1 <= rss0 + rss0 / 4 + 16 * 1024,
        "RSS grew: {rss0} -> {rss1} KiB"
    );
    assert_eq!(srv.metric("weft_db_errors_total"), 0.0);
    assert_eq!(srv.metric("weft_reactor_panics_total"), 0.0);
    srv.stop();
}
