//! Slow and stuck clients: header timeout, body timeout, a peer that never
//! reads, many idle connections. The timeouts are configured short; the
//! tests wait on observable outcomes (EOF, metrics), never on sleeps.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn slow_header_client_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.header_read_timeout = Duration::from_millis(300);
    let srv = Server::start(cfg);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    // One byte every 50 ms of an endless header; the reader decides.
    let dripper = std::thread::spawn(move || {
        let head = b"GET /healthz HTTP/1.1\r\nX-Slow: ";
        for (sent, b) in head.iter().chain(std::iter::repeat(&b'a')).enumerate() {
            if w.write_all(&[*b]).is_err() {
                return sent;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unreachable!()
    });
    let mut out = Vec::new();
    let r = s.read_to_end(&mut out);
    // Closed by the server (EOF or reset), not by our 60 s read timeout.
    if let Err(e) = &r {
        assert!(
            matches!(e.kind(), std::io::ErrorKind::ConnectionReset),
            "unexpected read error {e:?}"
        );
    }
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains(" 200 "), "{text}");
    let sent = dripper.join().unwrap();
    assert!(
        sent < 2000,
        "header timeout did not close the drip ({sent} bytes)"
    );
    // The server lives.
    assert_eq!(get(&agent(), &srv.url("/healthz")).0, 200);
    srv.stop();
}

#[test]
fn slow_body_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.body_read_timeout = Duration::from_millis(300);
    let srv = Server::start(cfg);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let (status, _) = read_response(&mut s);
    assert_eq!(status, 408);
    assert_eq!(srv.metric("weft_http_body_timeouts_total"), 1.0);
    assert_eq!(get(&agent(), &srv.url("/v1/kv/slow")).0, 404);
    srv.stop();
}

#[test]
fn client_that_never_reads_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.write_stall_timeout = Duration::from_millis(300);
    let srv = Server::start(cfg);
    let a = agent();
    assert_eq!(put(&a, &srv.url("/v1/kv/big"), &vec![b'v'; 1 << 20]).0, 200);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    // 64 pipelined GETs of 1 MiB each: far more than the socket buffers hold.
    let req = b"GET /v1/kv/big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(64);
    s.write_all(&req).unwrap();
    // Never read; the server must give up on its own.
    srv.wait_metric("weft_http_write_timeouts_total", |v| v >= 1.0);
    // What was buffered can still be read, then EOF/reset (no hang).
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut sink = vec![0u8; 1 << 16];
    let mut total = 0usize;
    loop {
        match s.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => {
                assert_ne!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock,
                    "server never closed"
                );
                break;
            }
        }
    }
    assert!(total < 64 << 20, "all responses were delivered ({total})");
    assert_eq!(get(&a, &srv.url("/healthz")).0, 200);
    srv.stop();
}

/// Raises this process's open-file soft limit to its hard limit; the
/// limit now in force.
fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current.is_some() && lim.current != lim.maximum {
        lim.current = lim.maximum;
        setrlimit(Resource::Nofile, lim).unwrap();
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The weft-kv binary as a child: its own fd table, so the test's 10,000
/// client sockets and the server's 10,000 do not share one limit.
struct Child {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Child {
    fn start(db: &std::path::Path, args: &[&str]) -> Child {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weft-kv"))
            .args(["--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Both start-up lines are read: a closed pipe would fail the second.
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (mut line, mut curl) = (String::new(), String::new());
        out.read_line(&mut line).unwrap();
        out.read_line(&mut curl).unwrap();
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .trim_end_matches('/')
            .parse()
            .unwrap();
        Child { child, addr }
    }

    fn metric(&self, name: &str) -> f64 {
        let body = get(&agent(), &format!("http://{}/metrics", self.addr)).1;
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("metric {name} missing"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Polls a metric until `pred` holds (bounded: fails after 60 s).
    fn wait_metric(&self, name: &str, pred: impl Fn(f64) -> bool) {
        let end = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.metric(name);
            if pred(v) {
                return;
            }
            assert!(
                std::time::Instant::now() < end,
                "metric {name} stuck at {v}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sigterm(mut self) -> std::process::ExitStatus {
        let st = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ten_thousand_idle_connections() {
    const N: usize = 10_000;
    // Each process holds N sockets plus its own few dozen.
    let need = N as u64 + 256;
    let limit = raise_fd_limit();
    if limit < need {
        eprintln!(
            "SKIPPED ten_thousand_idle_connections: the open-file hard limit is {limit}, \
             {need} are needed (raise `ulimit -Hn`)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Idle means no request at all: the header timeout (which closes idle
    // keep-alive connections) is set past the test's length.
    let srv = Child::start(&dir.path().join("kv.sqlite3"), &["--header-timeout", "600"]);
    let idle: Vec<TcpStream> = (0..N)
        .map(|_| TcpStream::connect(srv.addr).unwrap())
        .collect();
    srv.wait_metric("weft_http_connections_open", |v| v >= N as f64);
    // Still serving, on a fresh connection and on an idle one.
    let a = agent();
    let url = format!("http://{}/v1/kv/x", srv.addr);
    assert_eq!(put(&a, &url, b"1").0, 200);
    let mut one = idle[N / 2].try_clone().unwrap();
    one.write_all(b"GET /v1/kv/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    one.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    assert_eq!(read_response(&mut one), (200, b"1".to_vec()));
    drop(idle);
    drop(one);
    drop(a);
    // Only the scrape's own connection remains.
    srv.wait_metric("weft_http_connections_open", |v| v <= 1.0);
    assert_eq!(srv.metric("weft_reactor_panics_total"), 0.0);
    assert_eq!(srv.sigterm().code(), Some(0));
}
