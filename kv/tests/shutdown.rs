//! Graceful shutdown with requests in flight, restart, read back; and the
//! binary's SIGTERM path.

mod common;
use common::*;
use std::io::{BufRead, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn graceful_shutdown_loses_nothing_answered() {
    graceful_shutdown_loses_nothing_answered_on(1);
}

#[test]
fn graceful_shutdown_loses_nothing_answered_with_two_loops() {
    graceful_shutdown_loses_nothing_answered_on(2);
}

fn graceful_shutdown_loses_nothing_answered_on(loops: usize) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |dir: &std::path::Path| {
        let mut c = config(dir);
        c.loops = loops;
        c
    };
    let srv = Server::start(cfg(dir.path()));
    // A PUT whose body is half sent: in flight when the trigger fires.
    let mut inflight = TcpStream::connect(srv.addr).unwrap();
    inflight
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    inflight
        .write_all(b"PUT /v1/kv/inflight HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
        .unwrap();
    srv.wait_metric("weft_http_requests_in_flight", |v| v >= 2.0); // it + the scrape

    // Writers hammering PUTs; each records what was answered 200.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let addr = srv.addr;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let a = agent();
                    let key = format!("w{w}-{i}");
                    let r = a
                        .put(&format!("http://{addr}/v1/kv/{key}"))
                        .send(key.as_bytes());
                    match r {
                        Ok(r) if r.status() == 200 => acked.lock().unwrap().push(key),
                        Ok(r) if r.status() == 503 => {}
                        Ok(r) => panic!("unexpected status {}", r.status()),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    // Let them land a few writes, then shut down.
    while acked.lock().unwrap().len() < 50 {
        std::thread::yield_now();
    }
    srv.shutdown.trigger();
    // The listener closes...
    let end = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < end, "listener never closed");
        std::thread::yield_now();
    }
    // ...but the request in flight is still served.
    inflight.write_all(b"56789").unwrap();
    assert_eq!(read_response(&mut inflight).0, 200);
    for w in writers {
        w.join().unwrap();
    }
    let mut srv = srv;
    let summary = srv.thread.take().unwrap().join().unwrap().unwrap();
    assert_eq!(summary.abandoned, 0);

    // Restart on the same file: every answered PUT is there.
    let srv = Server::start(cfg(dir.path()));
    let a = agent();
    assert_eq!(
        get(&a, &srv.url("/v1/kv/inflight")),
        (200, "0123456789".into())
    );
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 50);
    for key in &acked {
        assert_eq!(
            get(&a, &srv.url(&format!("/v1/kv/{key}"))),
            (200, key.clone()),
            "{key}"
        );
    }
    srv.stop();
}

#[test]
fn binary_serves_and_exits_zero_on_sigterm() {
    binary_serves_and_exits_zero_on_sigterm_with("1");
}

#[test]
fn binary_with_two_loops_serves_and_exits_zero_on_sigterm() {
    binary_serves_and_exits_zero_on_sigterm_with("2");
}

fn binary_serves_and_exits_zero_on_sigterm_with(loops: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bin.sqlite3");
    let start = || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weft-kv"))
            .args(["--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .args(["--readers", "2", "--loops", loops])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .trim_end_matches('/')
            .to_owned();
        let mut curl = String::new();
        out.read_line(&mut curl).unwrap();
        assert!(curl.contains("curl"), "{curl}");
        (child, url)
    };
    let signal = |child: &mut std::process::Child, sig: &str| {
        let st = std::process::Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{sig}: {status:?}");
    };
    let (mut child, url) = start();
    let a = agent();
    assert_eq!(put(&a, &format!("{url}/v1/kv/persist"), b"yes").0, 200);
    signal(&mut child, "-TERM");
    let (mut child, url) = start();
    assert_eq!(
        get(&agent(), &format!("{url}/v1/kv/persist")),
        (200, "yes".into())
    );
    signal(&mut child, "-INT");
}

#[test]
fn binary_exits_one_on_a_second_signal_during_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weft-kv"))
        .args(["--listen", "127.0.0.1:0", "--loops", "2", "--db"])
        .arg(dir.path().join("kv.sqlite3"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Both start-up lines are read: a closed pipe would fail the second.
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (mut line, mut curl) = (String::new(), String::new());
    out.read_line(&mut line).unwrap();
    out.read_line(&mut curl).unwrap();
    let addr: std::net::SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    // A half-sent PUT keeps the drain waiting (up to its 10 s bound). A
    // request answered on the same connection first proves a loop accepted
    // it (with several loops, another connection may land on another loop).
    let mut inflight = TcpStream::connect(addr).unwrap();
    inflight
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answered = Vec::new();
    while !answered.ends_with(b"\r\n\r\nok\n") {
        let mut buf = [0u8; 256];
        let n = std::io::Read::read(&mut inflight, &mut buf).unwrap();
        assert!(n > 0, "closed before answering: {answered:?}");
        answered.extend_from_slice(&buf[..n]);
    }
    // `Expect: 100-continue`: the interim response proves the server has
    // read the PUT's head and is waiting for its body, so the request is in
    // flight when the signal lands (without it, SIGTERM could reach an idle
    // connection that the drain closes at once, and the process exit 0).
    inflight
        .write_all(
            b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = std::io::Read::read(&mut inflight, &mut byte).unwrap();
        assert!(n > 0, "closed before 100 Continue: {interim:?}");
        interim.push(byte[0]);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "expected 100 Continue, got {:?}",
        String::from_utf8_lossy(&interim)
    );
    inflight.write_all(b"01234").unwrap();
    let kill = |sig: &str| {
        let st = std::process::Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    };
    kill("-TERM");
    // Draining: the listener is closed, the PUT still holds its connection.
    let end = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < end, "listener never closed");
        std::thread::yield_now();
    }
    kill("-INT");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{status:?}");
}

#[test]
fn signal_handlers_are_per_server_and_given_back_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let with_signals = |name: &str| {
        let mut c = config(dir.path());
        c.db_path = dir.path().join(name);
        c.handle_signals = true;
        c
    };
    let first = Server::start(with_signals("a.sqlite3"));
    // A second server in the process cannot take SIGINT/SIGTERM as well.
    let second = std::thread::spawn({
        let c = with_signals("b.sqlite3");
        move || weft_kv::run(c, |_| panic!("must not start serving"))
    })
    .join()
    .unwrap();
    assert!(matches!(second, Err(weft_kv::Error::Io(_))), "{second:?}");
    first.stop();
    // The first gave its handlers back when it finished.
    Server::start(with_signals("c.sqlite3")).stop();
}
