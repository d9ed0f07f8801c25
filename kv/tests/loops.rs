//! Serving on several loops (`Config::loops`): the kernel spreads
//! connections over the loops' listeners, every loop calls the one
//! database pool (built by loop 0) directly, and `/metrics` adds the loops
//! up.

mod common;
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

fn two_loops(dir: &std::path::Path) -> weft_kv::Config {
    let mut c = config(dir);
    c.loops = 2;
    c
}

/// One request on a fresh connection (`Connection: close`).
fn once(addr: std::net::SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    read_response(&mut s)
}

/// `name{loop="i"} v` lines of one scrape, by loop.
fn per_loop(page: &str, name: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0.. {
        let prefix = format!("{name}{{loop=\"{i}\"}} ");
        match page.lines().find_map(|l| l.strip_prefix(&prefix)) {
            Some(v) => out.push(v.trim().parse().unwrap()),
            None => break,
        }
    }
    out
}

fn total(page: &str, name: &str) -> f64 {
    page.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|r| r.starts_with('{') || r.starts_with(' '))
        .map(|r| r.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[test]
fn both_loops_serve_and_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(two_loops(dir.path()));
    // New connections until each loop has answered writes and reads
    // (which loop gets a connection is the kernel's choice: bounded tries).
    let mut i = 0;
    loop {
        let key = format!("/v1/kv/k{i}");
        let value = format!("v{i}");
        assert_eq!(once(srv.addr, "PUT", &key, value.as_bytes()).0, 200);
        // Read back on another connection, maybe on the other loop.
        assert_eq!(once(srv.addr, "GET", &key, b""), (200, value.into_bytes()));
        i += 1;
        let page = get(&agent(), &srv.url("/metrics")).1;
        let by_loop = per_loop(&page, "weft_kv_loop_requests_total");
        assert_eq!(by_loop.len(), 2, "{page}");
        if by_loop.iter().all(|&n| n >= 4.0) {
            break;
        }
        assert!(i < 2000, "one loop never got a connection: {by_loop:?}");
    }
    // Everything written from either loop is in the one database.
    let list = get(&agent(), &srv.url("/v1/kv?prefix=k&limit=10000")).1;
    let items: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(items.as_array().unwrap().len(), i);
    let summary = srv.stop();
    assert_eq!(summary.abandoned, 0);
    assert!(summary.connections >= 2 * i as u64);
}

#[test]
fn metrics_sum_the_loops_and_show_each() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(two_loops(dir.path()));
    for i in 0..20 {
        assert_eq!(
            once(srv.addr, "GET", &format!("/v1/kv/none{i}"), b"").0,
            404
        );
    }
    let page = get(&agent(), &srv.url("/metrics")).1;
    assert!(page.contains("\nweft_kv_loops 2\n"), "{page}");
    // One scrape: the totals are the sums of the loops' own series.
    let by_loop = per_loop(&page, "weft_kv_loop_requests_total");
    assert_eq!(
        total(&page, "weft_http_requests_total"),
        by_loop.iter().sum::<f64>()
    );
    assert_eq!(total(&page, "weft_http_requests_total"), 20.0);
    let open = per_loop(&page, "weft_kv_loop_connections_open");
    assert_eq!(
        total(&page, "weft_http_connections_open"),
        open.iter().sum::<f64>()
    );
    // Per-loop lag and turn histograms, and the merged ones.
    for name in [
        "weft_kv_loop_turn_seconds_count{loop=\"0\"}",
        "weft_kv_loop_turn_seconds_count{loop=\"1\"}",
        "weft_kv_loop_lag_probe_seconds_count{loop=\"1\"}",
        "weft_kv_loop_longest_turn_seconds{loop=\"1\"}",
        "weft_reactor_turn_seconds_count ",
        "weft_reactor_lag_probe_seconds_count ",
    ] {
        assert!(page.contains(name), "{name} missing");
    }
    let turns = |p: &str| total(p, "weft_kv_loop_turn_seconds_count");
    assert_eq!(
        turns(&page),
        total(&page, "weft_reactor_turn_seconds_count")
    );
    srv.stop();
}

#[test]
fn one_loop_reports_itself_as_loop_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.loops = 1;
    let srv = Server::start(c);
    let page = get(&agent(), &srv.url("/metrics")).1;
    assert!(page.contains("\nweft_kv_loops 1\n"));
    assert_eq!(per_loop(&page, "weft_kv_loop_requests_total").len(), 1);
    srv.stop();
}

#[test]
fn render_loops_merges_the_loops_histograms_bucket_by_bucket() {
    use weft_kv::metrics::{LoopSources, Metrics, Sources, render_loops};
    let lag = |us: &[u64]| {
        let m = Metrics::default();
        for &u in us {
            m.loop_lag.record(Duration::from_micros(u));
        }
        let mut l = LoopSources::default();
        l.metrics = m.snapshot();
        l
    };
    // Loop 0's records stop below loop 1's highest bucket: its buckets
    // above its highest hold all of its records.
    let text = render_loops(&[lag(&[1, 1, 1]), lag(&[1, 100])], &Sources::default());
    let bucket = |le: &str| -> u64 {
        let prefix = format!("weft_reactor_lag_probe_seconds_bucket{{le=\"{le}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no bucket {le}"))
            .parse()
            .unwrap()
    };
    // 1 µs falls in [512, 1024) ns; 100 µs in [65536, 131072) ns.
    assert_eq!(bucket("0.000001024"), 4);
    assert_eq!(bucket("0.000131072"), 5);
    assert_eq!(bucket("+Inf"), 5);
    assert!(text.contains("weft_reactor_lag_probe_seconds_count 5\n"));
    assert!(text.contains("weft_kv_loop_lag_probe_seconds_count{loop=\"0\"} 3\n"));
    assert!(text.contains("weft_kv_loop_lag_probe_seconds_count{loop=\"1\"} 2\n"));
}

#[test]
fn with_background_checkpoints_both_loops_write_and_read_and_the_db_counts_every_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = two_loops(dir.path());
    c.checkpoints = weft_db::Checkpoints::background();
    let srv = Server::start(c);
    for i in 0..20 {
        let key = format!("/v1/kv/b{i}");
        assert_eq!(once(srv.addr, "PUT", &key, b"x").0, 200);
        assert_eq!(once(srv.addr, "GET", &key, b""), (200, b"x".to_vec()));
    }
    // Every loop's jobs reach the pool's own counters (no hop to lose).
    let page = get(&agent(), &srv.url("/metrics")).1;
    let jobs = |group: &str| {
        let prefix = format!("weft_db_jobs_submitted_total{{group=\"{group}\"}} ");
        let v = page.lines().find_map(|l| l.strip_prefix(&prefix));
        v.unwrap_or_else(|| panic!("{page}"))
            .trim()
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(jobs("writer"), 21.0, "the schema and 20 PUTs");
    assert_eq!(jobs("readers"), 20.0);
    assert_eq!(srv.stop().abandoned, 0);
}

#[test]
fn a_server_handing_database_jobs_over_one_by_one_serves_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = two_loops(dir.path());
    cfg.db_hand_over_per_turn = false;
    let srv = Server::start(cfg);
    for i in 0..8 {
        let path = format!("/v1/kv/one-by-one-{i}");
        assert_eq!(once(srv.addr, "PUT", &path, b"v").0, 200);
        assert_eq!(once(srv.addr, "GET", &path, b""), (200, b"v".to_vec()));
    }
}

/// Opens `n` keep-alive connections one after another, each answered once
/// (so it was accepted and placed before the next one connects).
fn open_answered(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            assert_eq!(read_response(&mut s).0, 200);
            s
        })
        .collect()
}

#[test]
fn connections_end_up_balanced_over_the_loops_whichever_listener_the_kernel_picks() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(two_loops(dir.path()));
    for round in 0..2 {
        let conns = open_answered(srv.addr, 40);
        // The scrape is one more connection.
        let page = get(&agent(), &srv.url("/metrics")).1;
        let open = per_loop(&page, "weft_kv_loop_connections_open");
        assert_eq!(open.iter().sum::<f64>(), 41.0, "{page}");
        assert!((open[0] - open[1]).abs() <= 1.0, "unbalanced: {open:?}");
        let handed = per_loop(&page, "weft_kv_loop_connections_handed_over_total");
        assert_eq!(handed.len(), 2, "{page}");
        if round == 0 {
            // Each connection is counted once, by the loop that serves it.
            assert_eq!(total(&page, "weft_http_connections_accepted_total"), 41.0);
        }
        drop(conns);
        srv.wait_metric("weft_http_connections_open", |n| n <= 1.0);
    }
    assert_eq!(srv.stop().abandoned, 0);
}

#[test]
fn without_balancing_connections_stay_on_the_loop_that_accepted_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = two_loops(dir.path());
    c.balance_loops = false;
    let srv = Server::start(c);
    let conns = open_answered(srv.addr, 40);
    let page = get(&agent(), &srv.url("/metrics")).1;
    assert_eq!(
        per_loop(&page, "weft_kv_loop_connections_handed_over_total"),
        [0.0, 0.0]
    );
    let open = per_loop(&page, "weft_kv_loop_connections_open");
    assert_eq!(open.iter().sum::<f64>(), 41.0, "{page}");
    drop(conns);
    assert_eq!(srv.stop().abandoned, 0);
}

#[test]
fn each_loop_reports_its_late_ticks_by_cause_and_its_wait_for_a_core() {
    use weft_kv::metrics::{LoopSources, Metrics, Sources, render_loops};
    let one = |waiting: u64, working: u64, wait_ms: u64| {
        let m = Metrics::default();
        m.late_ticks_waiting.set(waiting);
        m.late_ticks_working.set(working);
        m.runqueue_wait.set(Duration::from_millis(wait_ms));
        let mut l = LoopSources::default();
        l.metrics = m.snapshot();
        l
    };
    let text = render_loops(&[one(3, 1, 250), one(0, 2, 0)], &Sources::default());
    for line in [
        "weft_kv_loop_late_ticks_waiting_total{loop=\"0\"} 3\n",
        "weft_kv_loop_late_ticks_waiting_total{loop=\"1\"} 0\n",
        "weft_kv_loop_late_ticks_working_total{loop=\"0\"} 1\n",
        "weft_kv_loop_late_ticks_working_total{loop=\"1\"} 2\n",
        "weft_kv_loop_runqueue_wait_seconds_total{loop=\"0\"} 0.25\n",
    ] {
        assert!(text.contains(line), "{line:?} missing");
    }
}

#[test]
fn a_running_loop_reads_its_own_wait_for_a_core() {
    // The probe ticks every 10 ms and reads the loop thread's schedstat;
    // on a kernel with schedstats the series is there from the first
    // scrape (its value is whatever the scheduler did).
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.loops = 1;
    let srv = Server::start(c);
    let page = get(&agent(), &srv.url("/metrics")).1;
    assert_eq!(
        per_loop(&page, "weft_kv_loop_runqueue_wait_seconds_total").len(),
        1
    );
    assert_eq!(
        per_loop(&page, "weft_kv_loop_late_ticks_waiting_total").len(),
        1
    );
    assert_eq!(
        per_loop(&page, "weft_kv_loop_late_ticks_working_total").len(),
        1
    );
    srv.stop();
}
