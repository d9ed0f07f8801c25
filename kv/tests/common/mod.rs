//! Shared helpers: a server on its own thread, a ureq agent, raw HTTP.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weft_kv::{Config, ShutdownTrigger, Summary};

pub struct Server {
    pub addr: SocketAddr,
    pub shutdown: ShutdownTrigger,
    pub thread: Option<JoinHandle<Result<Summary, weft_kv::Error>>>,
}

impl Server {
    pub fn start(config: Config) -> Server {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            weft_kv::run(config, move |ready| {
                tx.send((ready.addr, ready.shutdown.clone())).unwrap();
            })
        });
        let (addr, shutdown) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server started");
        Server {
            addr,
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn stop(mut self) -> Summary {
        self.shutdown.trigger();
        self.thread.take().unwrap().join().unwrap().unwrap()
    }

    /// Reads one counter/gauge from /metrics.
    pub fn metric(&self, name: &str) -> f64 {
        let body = get(&agent(), &self.url("/metrics")).1;
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("metric {name} missing"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Polls a metric until `pred` holds (bounded: fails after 60 s).
    pub fn wait_metric(&self, name: &str, pred: impl Fn(f64) -> bool) -> f64 {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.metric(name);
            if pred(v) {
                return v;
            }
            assert!(Instant::now() < end, "metric {name} stuck at {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.shutdown.trigger();
            let _ = t.join();
        }
    }
}

pub fn config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.db_path = dir.join("kv.sqlite3");
    c.readers = 2;
    c
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

pub fn get(agent: &ureq::Agent, url: &str) -> (u16, String) {
    let mut r = agent.get(url).call().unwrap();
    let s = r.status().as_u16();
    (s, r.body_mut().read_to_string().unwrap())
}

pub fn put(agent: &ureq::Agent, url: &str, body: &[u8]) -> (u16, String) {
    let mut r = agent.put(url).send(body).unwrap();
    let s = r.status().as_u16();
    (s, r.body_mut().read_to_string().unwrap())
}

/// Sends raw bytes on a new connection and reads until the peer closes or
/// `responses` responses have arrived; returns everything read.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in `text`.
pub fn status_of(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Reads exactly one response (with Content-Length) from `s`.
pub fn read_response(s: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).unwrap();
        assert_eq!(n, 1, "eof in head: {}", String::from_utf8_lossy(&buf));
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    (status_of(&head), body)
}

/// Asserts that `r` is the `InvalidInput` refusal a bad setting gets at
/// start, with `needle` in its message.
pub fn assert_invalid_input<T: std::fmt::Debug>(r: Result<T, weft_kv::Error>, needle: &str) {
    match r {
        Err(weft_kv::Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
            assert!(e.to_string().contains(needle), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

/// Drops `CAP_SYS_NICE` from the calling thread only (capabilities are
/// per thread): what an unprivileged deployment runs with.
pub fn drop_cap_sys_nice() {
    use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
    let mut caps = capabilities(None).unwrap();
    caps.effective.remove(CapabilitySet::SYS_NICE);
    caps.permitted.remove(CapabilitySet::SYS_NICE);
    set_capabilities(None, caps).unwrap();
}
