//! `weft-load`'s engine: N keep-alive connections on one weft loop, each a
//! local task running hyper's HTTP/1 client over [`HyperIo`], one request at
//! a time per connection (like `wrk`), with a read/write mix over a fixed
//! key space.
//!
//! Invariants: all state is loop-local (`Rc`/`RefCell`); a request counts as
//! an error unless it got the status its route promises (GET: 200 or 404,
//! PUT: 200); latencies are recorded for successes only.
//!
//! Around the measured phase it scrapes the server's `/metrics` and reports
//! what weft's own statistics saw of the server's loop during the run
//! ([`LoopReport`]); a server without those series (another
//! implementation) just gets no loop report.

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
    /// The server loop's statistics over the run, if it exports weft-kv's
    /// series.
    pub server_loop: Option<LoopReport>,
}

/// The server loop as weft's statistics saw it during a run: from two
/// scrapes of `/metrics`, one before the measured phase and one after.
///
/// Histogram quantiles are bucket upper bounds (weft's histograms have
/// power-of-two buckets): they err high by less than 2×, never low.
///
/// # Examples
///
/// ```
/// use weft_kv::load::{LoopReport, Scrape};
///
/// let before = Scrape::parse("weft_reactor_lag_probe_seconds_bucket{le=\"+Inf\"} 0\n");
/// let after = Scrape::parse(
///     "weft_reactor_lag_probe_seconds_bucket{le=\"0.000001024\"} 9\n\
///      weft_reactor_lag_probe_seconds_bucket{le=\"0.002048\"} 10\n\
///      weft_reactor_lag_probe_seconds_bucket{le=\"+Inf\"} 10\n\
///      weft_reactor_longest_turn_seconds 0.0005\n",
/// );
/// let r = LoopReport::between(&before, &after).unwrap();
/// assert_eq!(r.lag_ticks, 10);
/// assert_eq!(r.lag_p50.as_nanos(), 1024);
/// assert_eq!(r.lag_max.as_micros(), 2048);
/// assert!(r.turn.is_none()); // not exported yet
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct LoopReport {
    /// Ticks of the server's 10 ms lag probe during the run.
    pub lag_ticks: u64,
    /// Median lateness of those ticks.
    pub lag_p50: Duration,
    /// 99th percentile lateness.
    pub lag_p99: Duration,
    /// Largest lateness.
    pub lag_max: Duration,
    /// The longest turn since the server started
    /// (`ReactorStatistics::longest_turn`; see its docs for when it is
    /// measured).
    pub longest_turn: Duration,
    /// The longest single callback since the server started.
    pub longest_callback: Duration,
    /// Slow callbacks during the run.
    pub slow_callbacks: u64,
    /// Stalls the watchdog caught during the run.
    pub stalls: u64,
    /// Loop turns during the run: (p50, p99, max), once the server
    /// exports the turn histogram.
    pub turn: Option<(Duration, Duration, Duration)>,
    /// The inbox's oldest queued call at the end, once exported.
    pub inbox_oldest_age: Option<Duration>,
    /// Each server loop during the run, in loop order (weft-kv's
    /// `weft_kv_loop_*{loop="i"}` series; empty for a server without them).
    pub loops: Vec<PerLoop>,
}

/// One server loop during a run (quantiles are bucket upper bounds, as in
/// [`LoopReport`]).
///
/// # Examples
///
/// ```
/// use weft_kv::load::{LoopReport, Scrape};
///
/// let after = Scrape::parse(
///     "weft_reactor_lag_probe_seconds_bucket{le=\"+Inf\"} 0\n\
///      weft_kv_loop_turn_seconds_bucket{loop=\"0\",le=\"0.000016384\"} 99\n\
///      weft_kv_loop_turn_seconds_bucket{loop=\"0\",le=\"0.002097152\"} 100\n\
///      weft_kv_loop_turn_seconds_bucket{loop=\"0\",le=\"+Inf\"} 100\n\
///      weft_kv_loop_turn_seconds_bucket{loop=\"1\",le=\"0.000016384\"} 7\n\
///      weft_kv_loop_turn_seconds_bucket{loop=\"1\",le=\"+Inf\"} 7\n\
///      weft_kv_loop_requests_total{loop=\"0\"} 40\n",
/// );
/// let r = LoopReport::between(&Scrape::default(), &after).unwrap();
/// assert_eq!(r.loops.len(), 2);
/// assert_eq!(r.loops[0].turns, 100);
/// assert_eq!(r.loops[0].turn_p99.as_nanos(), 16384);
/// assert_eq!(r.loops[0].turn_max.as_nanos(), 2097152);
/// assert_eq!(r.loops[0].requests, 40);
/// assert_eq!(r.loops[1].turn_max.as_nanos(), 16384);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct PerLoop {
    /// Requests the loop answered during the run.
    pub requests: u64,
    /// Turns during the run.
    pub turns: u64,
    /// 99th percentile turn.
    pub turn_p99: Duration,
    /// Longest turn (its bucket's upper bound).
    pub turn_max: Duration,
    /// 99th percentile lateness of the loop's 10 ms lag probe.
    pub lag_p99: Duration,
    /// Largest lateness of the probe.
    pub lag_max: Duration,
}

impl LoopReport {
    /// The report between two scrapes; `None` if the server lacks the lag
    /// probe (not weft-kv).
    ///
    /// # Examples
    ///
    /// See [`LoopReport`].
    pub fn between(before: &Scrape, after: &Scrape) -> Option<LoopReport> {
        const LAG: &str = "weft_reactor_lag_probe_seconds";
        let lag = after.histogram(LAG)?;
        let lag = delta(&before.histogram(LAG).unwrap_or_default(), &lag);
        let secs = |v: Option<f64>| Duration::from_secs_f64(v.unwrap_or(0.0).max(0.0));
        let grew = |name: &str| {
            let a = after.value(name).unwrap_or(0.0);
            (a - before.value(name).unwrap_or(0.0)).max(0.0) as u64
        };
        let mut r = LoopReport {
            lag_ticks: lag.last().map_or(0, |b| b.1 as u64),
            lag_p50: quantile(&lag, 0.5),
            lag_p99: quantile(&lag, 0.99),
            lag_max: quantile(&lag, 1.0),
            longest_turn: secs(after.value("weft_reactor_longest_turn_seconds")),
            longest_callback: secs(after.value("weft_reactor_longest_callback_seconds")),
            slow_callbacks: grew("weft_reactor_slow_callbacks_total"),
            stalls: grew("weft_reactor_stalls_detected_total"),
            ..LoopReport::default()
        };
        loop_turn_series(&mut r, before, after);
        Some(r)
    }
}

/// The loop-turn histogram and the inbox's oldest age
/// (`metrics::render_loop_turns`), read by name when the server exports
/// them.
fn loop_turn_series(r: &mut LoopReport, before: &Scrape, after: &Scrape) {
    const TURN: &str = "weft_reactor_turn_seconds";
    if let Some(turn) = after.histogram(TURN) {
        let turn = delta(&before.histogram(TURN).unwrap_or_default(), &turn);
        r.turn = Some((
            quantile(&turn, 0.5),
            quantile(&turn, 0.99),
            quantile(&turn, 1.0),
        ));
    }
    r.inbox_oldest_age = after
        .value("weft_reactor_inbox_oldest_age_seconds")
        .map(|v| Duration::from_secs_f64(v.max(0.0)));
    r.loops = per_loop(before, after);
}

/// The `weft_kv_loop_*{loop="i"}` series, loop by loop, until one is
/// missing.
fn per_loop(before: &Scrape, after: &Scrape) -> Vec<PerLoop> {
    const TURN: &str = "weft_kv_loop_turn_seconds";
    const LAG: &str = "weft_kv_loop_lag_probe_seconds";
    let mut out = Vec::new();
    for i in 0.. {
        let label = format!("loop=\"{i}\"");
        let Some(turn) = after.histogram_with(TURN, &label) else {
            break;
        };
        let turn = delta(
            &before.histogram_with(TURN, &label).unwrap_or_default(),
            &turn,
        );
        let lag = after.histogram_with(LAG, &label).unwrap_or_default();
        let lag = delta(
            &before.histogram_with(LAG, &label).unwrap_or_default(),
            &lag,
        );
        let requests = |s: &Scrape| {
            s.labeled("weft_kv_loop_requests_total", &label)
                .unwrap_or(0.0)
        };
        out.push(PerLoop {
            requests: (requests(after) - requests(before)).max(0.0) as u64,
            turns: turn.last().map_or(0, |b| b.1 as u64),
            turn_p99: quantile(&turn, 0.99),
            turn_max: quantile(&turn, 1.0),
            lag_p99: quantile(&lag, 0.99),
            lag_max: quantile(&lag, 1.0),
        });
    }
    out
}

/// A parsed Prometheus text scrape (what `/metrics` returns).
///
/// # Examples
///
/// ```
/// let s = weft_kv::load::Scrape::parse("# HELP x y\nup 1\nreq{route=\"a\"} 2\nreq{route=\"b\"} 3\n");
/// assert_eq!(s.value("up"), Some(1.0));
/// assert_eq!(s.value("req"), Some(5.0));
/// assert_eq!(s.value("down"), None);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// (name, labels as written, value).
    samples: Vec<(String, String, f64)>,
}

impl Scrape {
    /// Parses the text format; lines it does not understand are skipped.
    ///
    /// # Examples
    ///
    /// See [`Scrape`].
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, v) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let v = match v {
                "+Inf" => f64::INFINITY,
                v => match v.parse() {
                    Ok(v) => v,
                    Err(_) => continue,
                },
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            samples.push((name.to_owned(), labels.to_owned(), v));
        }
        Scrape { samples }
    }

    /// The sum of a family's samples (over all labels); `None` if absent.
    ///
    /// # Examples
    ///
    /// See [`Scrape`].
    pub fn value(&self, name: &str) -> Option<f64> {
        let mut it = self.samples.iter().filter(|s| s.0 == name).peekable();
        it.peek()?;
        Some(it.map(|s| s.2).sum())
    }

    /// The sample of `name` whose labels are exactly `labels`.
    fn labeled(&self, name: &str, labels: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.0 == name && s.1 == labels)
            .map(|s| s.2)
    }

    /// A histogram's cumulative buckets `(le seconds, count)`, sorted.
    fn histogram(&self, name: &str) -> Option<Vec<(f64, f64)>> {
        self.histogram_with(name, "")
    }

    /// The buckets of the series of `name` with the other labels `labels`
    /// (`key="value",...` before `le`; empty: none).
    fn histogram_with(&self, name: &str, labels: &str) -> Option<Vec<(f64, f64)>> {
        let bucket = format!("{name}_bucket");
        let prefix = if labels.is_empty() {
            "le=\"".to_owned()
        } else {
            format!("{labels},le=\"")
        };
        let mut out: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.0 == bucket)
            .filter_map(|s| {
                let le = s.1.strip_prefix(prefix.as_str())?.strip_suffix('"')?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, s.2))
            })
            .collect();
        if out.is_empty() {
            return None;
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(out)
    }
}

/// The records between two cumulative bucket lists of one histogram. weft
/// lists buckets only up to its highest non-empty one, so a bucket missing
/// from `before` held all of `before`'s records.
fn delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let total = before.last().map_or(0.0, |b| b.1);
    after
        .iter()
        .map(|&(le, n)| {
            let was = before.iter().find(|b| b.0 == le).map_or(total, |b| b.1);
            (le, (n - was).max(0.0))
        })
        .collect()
}

/// The upper bound of the bucket holding quantile `q`; zero when empty.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Duration {
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total <= 0.0 {
        return Duration::ZERO;
    }
    let rank = (q * total).ceil().max(1.0);
    buckets
        .iter()
        .find(|b| b.1 >= rank)
        .map_or(Duration::MAX, |b| {
            Duration::try_from_secs_f64(b.0).unwrap_or(Duration::MAX)
        })
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

/// Fetches and parses `/metrics`; `None` if the server does not answer it
/// with 200.
async fn scrape(addr: SocketAddr) -> Option<Scrape> {
    let mut sender = connect(addr).await.ok()?;
    let req = Request::get("/metrics")
        .header("host", "weft-load")
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some(Scrape::parse(std::str::from_utf8(&body).ok()?))
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
    let before = scrape(opts.addr).await;
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
    if let (Some(before), Some(after)) = (before, scrape(opts.addr).await) {
        report.server_loop = LoopReport::between(&before, &after);
    }
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
