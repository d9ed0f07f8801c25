//! `weft-load`'s engine: N keep-alive connections on one weft loop, each a
//! local task running hyper's HTTP/1 client over [`HyperIo`], one request at
//! a time per connection (like `wrk`), with a read/write mix over a fixed
//! key space.
//!
//! Invariants: all state is loop-local (`Rc`/`RefCell`); a request counts as
//! an error unless it got the status its route promises (GET: 200 or 404,
//! PUT: 200); latencies are recorded for successes only.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use weft::net::TcpStream;

use crate::rt::HyperIo;

/// What to run.
///
/// # Examples
///
/// ```
/// let o = weft_kv::load::LoadOptions::new("127.0.0.1:8080".parse().unwrap());
/// assert_eq!(o.read_percent, 90);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Server address.
    pub addr: SocketAddr,
    /// Concurrent connections.
    pub connections: usize,
    /// How long to run.
    pub duration: Duration,
    /// Percentage of GETs (the rest are PUTs).
    pub read_percent: u32,
    /// Size of the key space (`load-{n}`), filled before the run.
    pub keys: u32,
    /// Bytes per PUT value.
    pub value_size: usize,
    /// Reconnect after this many requests (connection churn); `None`: never.
    pub requests_per_connection: Option<u64>,
}

impl LoadOptions {
    /// 64 connections, 10 s, 90 % reads, 10,000 keys of 64 bytes.
    ///
    /// # Examples
    ///
    /// See [`LoadOptions`].
    pub fn new(addr: SocketAddr) -> LoadOptions {
        LoadOptions {
            addr,
            connections: 64,
            duration: Duration::from_secs(10),
            read_percent: 90,
            keys: 10_000,
            value_size: 64,
            requests_per_connection: None,
        }
    }
}

/// What a run measured.
///
/// # Examples
///
/// ```
/// let r = weft_kv::load::LoadReport::default();
/// assert_eq!(r.percentile(0.99), std::time::Duration::ZERO);
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct LoadReport {
    /// Successful requests.
    pub requests: u64,
    /// Failed requests (I/O errors or unexpected statuses).
    pub errors: u64,
    /// Connections opened.
    pub connections: u64,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Sorted latencies of successful requests, in microseconds.
    pub latencies_us: Vec<u32>,
}

impl LoadReport {
    /// Requests per second.
    ///
    /// # Examples
    ///
    /// See [`LoadReport`].
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies.
    ///
    /// # Examples
    ///
    /// See [`LoadReport`].
    pub fn percentile(&self, q: f64) -> Duration {
        if self.latencies_us.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        Duration::from_micros(self.latencies_us[i] as u64)
    }
}

struct Shared {
    report: RefCell<LoadReport>,
    value: Bytes,
    opts: LoadOptions,
    deadline: Instant,
}

/// Runs a load on a new reactor on this thread and returns its report.
///
/// # Errors
///
/// The reactor could not be built, or the key space could not be filled.
///
/// # Examples
///
/// ```no_run
/// let mut o = weft_kv::load::LoadOptions::new("127.0.0.1:8080".parse().unwrap());
/// o.duration = std::time::Duration::from_secs(1);
/// let r = weft_kv::load::run(o).unwrap();
/// println!("{:.0} req/s", r.rate());
/// ```
pub fn run(opts: LoadOptions) -> io::Result<LoadReport> {
    let reactor = weft::Reactor::new()?;
    reactor
        .run_until_complete(run_on_loop(opts))
        .map_err(|e| io::Error::other(e.to_string()))?
}

async fn connect(
    addr: SocketAddr,
) -> io::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let io = HyperIo::new(stream, Duration::from_secs(30), None);
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(io::Error::other)?;
    let handle = weft::reactor::current().expect("on the loop");
    handle
        .spawn_local(async move {
            let _ = conn.await;
        })
        .detach();
    Ok(sender)
}

async fn fill(opts: &LoadOptions, value: &str) -> io::Result<()> {
    let mut sender = connect(opts.addr).await?;
    let mut k = 0;
    while k < opts.keys {
        let end = (k + 1000).min(opts.keys);
        let map: serde_json::Map<String, serde_json::Value> = (k..end)
            .map(|i| {
                (
                    format!("load-{i}"),
                    serde_json::Value::String(value.to_owned()),
                )
            })
            .collect();
        let req = Request::post("/v1/batch")
            .header("host", "weft-load")
            .body(Full::new(Bytes::from(
                serde_json::Value::Object(map).to_string(),
            )))
            .map_err(io::Error::other)?;
        let resp = sender.send_request(req).await.map_err(io::Error::other)?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        if status != 200 {
            return Err(io::Error::other(format!("fill: batch answered {status}")));
        }
        k = end;
    }
    Ok(())
}

async fn run_on_loop(opts: LoadOptions) -> io::Result<LoadReport> {
    let value = "v".repeat(opts.value_size);
    fill(&opts, &value).await?;
    let handle = weft::reactor::current().expect("on the loop");
    let start = Instant::now();
    let shared = Rc::new(Shared {
        report: RefCell::new(LoadReport::default()),
        value: Bytes::from(value),
        deadline: start + opts.duration,
        opts: opts.clone(),
    });
    let tasks: Vec<_> = (0..opts.connections)
        .map(|i| handle.spawn_local(worker(shared.clone(), i as u64 + 1)))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let mut report = shared.report.borrow().clone();
    report.elapsed = start.elapsed();
    report.latencies_us.sort_unstable();
    Ok(report)
}

async fn worker(shared: Rc<Shared>, seed: u64) {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let opts = &shared.opts;
    'conn: while Instant::now() < shared.deadline {
        shared.report.borrow_mut().connections += 1;
        let mut sender = match connect(opts.addr).await {
            Ok(s) => s,
            Err(_) => {
                shared.report.borrow_mut().errors += 1;
                continue;
            }
        };
        let mut on_this = 0u64;
        while Instant::now() < shared.deadline {
            if let Some(max) = opts.requests_per_connection
                && on_this >= max
            {
                continue 'conn;
            }
            on_this += 1;
            let r = next();
            let key = format!("/v1/kv/load-{}", (r >> 8) % opts.keys as u64);
            let read = (r % 100) < opts.read_percent as u64;
            let req = if read {
                Request::get(key)
                    .header("host", "weft-load")
                    .body(Full::new(Bytes::new()))
            } else {
                Request::builder()
                    .method(Method::PUT)
                    .uri(key)
                    .header("host", "weft-load")
                    .body(Full::new(shared.value.clone()))
            }
            .expect("valid request");
            let t0 = Instant::now();
            let ok = match sender.send_request(req).await {
                Ok(resp) => {
                    let s = resp.status().as_u16();
                    let body_ok = resp.into_body().collect().await.is_ok();
                    body_ok && (s == 200 || (read && s == 404))
                }
                Err(_) => false,
            };
            let mut rep = shared.report.borrow_mut();
            if ok {
                rep.requests += 1;
                rep.latencies_us
                    .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
            } else {
                rep.errors += 1;
                drop(rep);
                continue 'conn;
            }
        }
    }
}
