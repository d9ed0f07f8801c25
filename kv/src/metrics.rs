//! Loop-local request metrics and their Prometheus text rendering.
//!
//! Everything here lives on the loop thread (`Rc<Metrics>` with `Cell` /
//! `RefCell`): no lock, no atomics (the lag probe's [`Histogram`] is
//! weft's lock-free one). Scraping reads the reactor's, the listener's,
//! the reactor pool's and the database pool's statistics at render time
//! ([`Sources`]); the database pool's figures are weft-db's own
//! ([`weft_db::ConnectionPool::statistics`]), exact.
//!
//! The dashboard (`GET /`, [`crate::dashboard`]) reads these series by
//! name; a test checks that every name it reads is rendered here.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use weft::diagnostics::{Histogram, HistogramSnapshot};

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Counters and gauges of one server.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let m = weft_kv::metrics::Metrics::default();
/// m.record("healthz", 200, Duration::from_micros(50));
/// assert_eq!(m.requests("healthz", 200), 1);
/// ```
#[derive(Default, Debug)]
pub struct Metrics {
    by_route: RefCell<BTreeMap<(&'static str, u16), u64>>,
    buckets: RefCell<[u64; LATENCY_BUCKETS.len()]>,
    latency_count: Cell<u64>,
    latency_sum: Cell<f64>,
    /// Connections accepted.
    pub connections_accepted: Cell<u64>,
    /// Requests being handled now.
    pub requests_in_flight: Cell<u64>,
    /// Connections open now.
    pub connections_open: Cell<u64>,
    /// Connections closed by the write-stall timeout.
    pub write_timeouts: Cell<u64>,
    /// Requests whose body did not arrive within the body timeout.
    pub body_timeouts: Cell<u64>,
    /// Connections that ended with an error (parse errors, resets, timeouts).
    pub connection_errors: Cell<u64>,
    /// Database operations submitted and not yet answered on the loop.
    pub db_in_flight: Cell<u64>,
    /// Database operations answered with an error.
    pub db_errors: Cell<u64>,
    /// Largest loop lag seen by the lag probe.
    pub loop_lag_max: Cell<Duration>,
    /// Lag of the last probe tick.
    pub loop_lag_last: Cell<Duration>,
    /// Every probe tick's lag.
    pub loop_lag: Histogram,
    /// When the server started (the `weft_kv_uptime_seconds` clock).
    pub started: Cell<Option<std::time::Instant>>,
}

/// What [`Metrics::render`] reads besides its own counters.
///
/// # Examples
///
/// ```
/// let mut src = weft_kv::metrics::Sources::default();
/// src.db.readers.connections = 2;
/// src.db.readers.busy = 1;
/// src.db.readers.idle = 1;
/// let text = weft_kv::metrics::Metrics::default().render(&src);
/// assert!(text.contains("weft_pool_idle{pool=\"db\"} 1"));
/// assert!(text.contains("weft_db_busy{group=\"readers\"} 1"));
/// ```
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct Sources {
    /// The loop's statistics.
    pub reactor: weft::reactor::ReactorStatistics,
    /// The listener's accept statistics, once it accepted.
    pub accept: Option<weft::net::AcceptStatistics>,
    /// The database pool (`ConnectionPool::statistics`).
    pub db: weft_db::DbPoolStatistics,
    /// The database pool's job histograms, per group (none: not rendered).
    pub db_histograms: Vec<DbHistograms>,
    /// The reactor's thread pool (`Handle::thread_pool`).
    pub reactor_pool: weft::threads::PoolStatistics,
    /// The loop-turn histogram (`Handle::turn_histogram`; `None`: not
    /// rendered).
    pub turn: Option<HistogramSnapshot>,
    /// The inbox's oldest waiting call (`ReactorStatistics::inbox_oldest_age`;
    /// `None`: not rendered).
    pub inbox_oldest_age: Option<Duration>,
}

/// One database connection group's job histograms
/// (`ConnectionPool::queue_wait_histogram` and `run_time_histogram`).
///
/// # Examples
///
/// ```
/// let h = weft::diagnostics::Histogram::new();
/// h.record_nanos(5_000);
/// let mut src = weft_kv::metrics::Sources::default();
/// src.db_histograms.push(weft_kv::metrics::DbHistograms {
///     group: weft_db::Group::Writer,
///     queue_wait: h.snapshot(),
///     run_time: h.snapshot(),
/// });
/// let text = weft_kv::metrics::Metrics::default().render(&src);
/// assert!(text.contains("weft_db_queue_wait_seconds_count{group=\"writer\"} 1"));
/// ```
#[derive(Debug, Clone)]
pub struct DbHistograms {
    /// The group.
    pub group: weft_db::Group,
    /// Submission to start, per job.
    pub queue_wait: HistogramSnapshot,
    /// Start to end, per job.
    pub run_time: HistogramSnapshot,
}

impl Metrics {
    /// Counts one answered request.
    ///
    /// # Examples
    ///
    /// See [`Metrics`].
    pub fn record(&self, route: &'static str, status: u16, latency: Duration) {
        *self
            .by_route
            .borrow_mut()
            .entry((route, status))
            .or_insert(0) += 1;
        let secs = latency.as_secs_f64();
        let mut b = self.buckets.borrow_mut();
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *le {
                b[i] += 1;
            }
        }
        self.latency_count.set(self.latency_count.get() + 1);
        self.latency_sum.set(self.latency_sum.get() + secs);
    }

    /// Requests answered for `route` with `status`.
    ///
    /// # Examples
    ///
    /// See [`Metrics`].
    pub fn requests(&self, route: &'static str, status: u16) -> u64 {
        self.by_route
            .borrow()
            .get(&(route, status))
            .copied()
            .unwrap_or(0)
    }

    /// Adds one to a counter cell.
    ///
    /// # Examples
    ///
    /// ```
    /// let m = weft_kv::metrics::Metrics::default();
    /// m.bump(&m.write_timeouts);
    /// assert_eq!(m.write_timeouts.get(), 1);
    /// ```
    pub fn bump(&self, c: &Cell<u64>) {
        c.set(c.get() + 1);
    }

    /// A copy of the counters, to move to another loop (`Send`).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = weft_kv::metrics::Metrics::default();
    /// m.bump(&m.connections_accepted);
    /// assert_eq!(m.snapshot().connections_accepted, 1);
    /// ```
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            by_route: self.by_route.borrow().clone(),
            buckets: *self.buckets.borrow(),
            latency_count: self.latency_count.get(),
            latency_sum: self.latency_sum.get(),
            connections_accepted: self.connections_accepted.get(),
            requests_in_flight: self.requests_in_flight.get(),
            connections_open: self.connections_open.get(),
            write_timeouts: self.write_timeouts.get(),
            body_timeouts: self.body_timeouts.get(),
            connection_errors: self.connection_errors.get(),
            db_in_flight: self.db_in_flight.get(),
            db_errors: self.db_errors.get(),
            loop_lag_max: self.loop_lag_max.get(),
            loop_lag_last: self.loop_lag_last.get(),
            loop_lag: self.loop_lag.snapshot(),
            uptime: self.started.get().map_or(Duration::ZERO, |t| t.elapsed()),
        }
    }

    /// Renders the Prometheus text format: this server's counters, then
    /// what `src` holds (loop, listener, pools). One loop's view of
    /// [`render_loops`].
    ///
    /// # Examples
    ///
    /// ```
    /// let m = weft_kv::metrics::Metrics::default();
    /// let text = m.render(&Default::default());
    /// assert!(text.contains("weft_http_request_duration_seconds_count 0"));
    /// ```
    pub fn render(&self, src: &Sources) -> String {
        let one = LoopSources {
            metrics: self.snapshot(),
            reactor: src.reactor,
            accept: src.accept,
            turn: src.turn.clone(),
            inbox_oldest_age: src.inbox_oldest_age,
        };
        render_loops(std::slice::from_ref(&one), src)
    }
}

/// One loop's counters, copied off its thread ([`Metrics::snapshot`]).
///
/// # Examples
///
/// See [`Metrics::snapshot`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    by_route: BTreeMap<(&'static str, u16), u64>,
    buckets: [u64; LATENCY_BUCKETS.len()],
    latency_count: u64,
    latency_sum: f64,
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Requests being handled now.
    pub requests_in_flight: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections closed by the write-stall timeout.
    pub write_timeouts: u64,
    /// Requests whose body did not arrive in time.
    pub body_timeouts: u64,
    /// Connections that ended with an error.
    pub connection_errors: u64,
    /// Database operations submitted and not yet answered.
    pub db_in_flight: u64,
    /// Database operations answered with an error.
    pub db_errors: u64,
    /// Largest lag probe lateness.
    pub loop_lag_max: Duration,
    /// Lateness of the last probe tick.
    pub loop_lag_last: Duration,
    /// Every probe tick's lateness.
    pub loop_lag: HistogramSnapshot,
    /// Time since the loop's server started.
    pub uptime: Duration,
}

impl Default for MetricsSnapshot {
    fn default() -> Self {
        Metrics::default().snapshot()
    }
}

impl MetricsSnapshot {
    /// Requests answered (all routes and statuses).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = weft_kv::metrics::Metrics::default();
    /// m.record("healthz", 200, std::time::Duration::ZERO);
    /// assert_eq!(m.snapshot().requests_total(), 1);
    /// ```
    pub fn requests_total(&self) -> u64 {
        self.latency_count
    }

    /// Adds `o`'s counters into `self` (gauges that are maxima take the
    /// larger; the lag histogram is kept per loop, not merged here).
    fn absorb(&mut self, o: &MetricsSnapshot) {
        for (k, n) in &o.by_route {
            *self.by_route.entry(*k).or_insert(0) += n;
        }
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.latency_count += o.latency_count;
        self.latency_sum += o.latency_sum;
        self.connections_accepted += o.connections_accepted;
        self.requests_in_flight += o.requests_in_flight;
        self.connections_open += o.connections_open;
        self.write_timeouts += o.write_timeouts;
        self.body_timeouts += o.body_timeouts;
        self.connection_errors += o.connection_errors;
        self.db_in_flight += o.db_in_flight;
        self.db_errors += o.db_errors;
        self.loop_lag_max = self.loop_lag_max.max(o.loop_lag_max);
        self.loop_lag_last = self.loop_lag_last.max(o.loop_lag_last);
        self.uptime = self.uptime.max(o.uptime);
    }
}

/// What one loop contributes to `/metrics`: its counters and its reactor's
/// statistics (read from any thread through its `Remote`).
///
/// # Examples
///
/// ```
/// use weft_kv::metrics::{LoopSources, Sources, render_loops};
///
/// let a = LoopSources::default();
/// let text = render_loops(&[a.clone(), a], &Sources::default());
/// assert!(text.contains("weft_kv_loops 2"));
/// assert!(text.contains("weft_kv_loop_lag_max_seconds{loop=\"1\"} 0"));
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoopSources {
    /// The loop's request counters.
    pub metrics: MetricsSnapshot,
    /// Its reactor's statistics.
    pub reactor: weft::reactor::ReactorStatistics,
    /// Its listener's accept statistics, once it accepted.
    pub accept: Option<weft::net::AcceptStatistics>,
    /// Its turn histogram (`None`: not rendered).
    pub turn: Option<HistogramSnapshot>,
    /// Its inbox's oldest waiting call (`None`: not rendered).
    pub inbox_oldest_age: Option<Duration>,
}

/// Sums the loops' reactor counters; the longest-* gauges take the largest.
fn merge_reactors(loops: &[LoopSources]) -> weft::reactor::ReactorStatistics {
    let mut t = weft::reactor::ReactorStatistics::default();
    for l in loops {
        let r = &l.reactor;
        t.calls_from_thread += r.calls_from_thread;
        t.calls_run += r.calls_run;
        t.wake_syscalls += r.wake_syscalls;
        t.turns += r.turns;
        t.timers_fired += r.timers_fired;
        t.tasks_polled += r.tasks_polled;
        t.panics += r.panics;
        t.timers_live += r.timers_live;
        t.timer_heap_entries += r.timer_heap_entries;
        t.tasks_alive += r.tasks_alive;
        t.inbox_depth += r.inbox_depth;
        t.inbox_oldest_age = t.inbox_oldest_age.max(r.inbox_oldest_age);
        t.slow_callbacks += r.slow_callbacks;
        t.longest_callback = t.longest_callback.max(r.longest_callback);
        t.longest_turn = t.longest_turn.max(r.longest_turn);
        t.stalls_detected += r.stalls_detected;
    }
    t
}

/// Renders `/metrics` for a server of several loops: every `weft_http_*`
/// and `weft_reactor_*` series is the sum over the loops (the longest-*
/// and lag-max gauges the largest, the histograms merged), so a dashboard
/// or scraper written for one loop reads the whole server; each loop also
/// gets its own `weft_kv_loop_*{loop="i"}` series (turns, lag, requests,
/// connections). The pools' figures come from `src`; its loop fields
/// (`reactor`, `accept`, `turn`, `inbox_oldest_age`) are not read.
///
/// # Examples
///
/// See [`LoopSources`].
pub fn render_loops(loops: &[LoopSources], src: &Sources) -> String {
    let mut m = Metrics::default().snapshot();
    for l in loops {
        m.absorb(&l.metrics);
    }
    let reactor = &merge_reactors(loops);
    let mut accept: Option<weft::net::AcceptStatistics> = None;
    for a in loops.iter().filter_map(|l| l.accept) {
        let t = accept.get_or_insert_with(Default::default);
        t.accepted += a.accepted;
        t.attempts += a.attempts;
        t.resource_errors += a.resource_errors;
        t.backoffs += a.backoffs;
    }
    let turns: Vec<&HistogramSnapshot> = loops.iter().filter_map(|l| l.turn.as_ref()).collect();
    let ages: Vec<Duration> = loops.iter().filter_map(|l| l.inbox_oldest_age).collect();
    let lags: Vec<&HistogramSnapshot> = loops.iter().map(|l| &l.metrics.loop_lag).collect();
    let mut s = String::with_capacity(8192);
    s.push_str("# HELP weft_http_requests_total HTTP requests answered, by route and status.\n# TYPE weft_http_requests_total counter\n");
    for ((route, status), n) in m.by_route.iter() {
        let _ = writeln!(
            s,
            "weft_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
    s.push_str("# HELP weft_http_request_duration_seconds Request latency (handler, including the database).\n# TYPE weft_http_request_duration_seconds histogram\n");
    let b = &m.buckets;
    for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
        let _ = writeln!(
            s,
            "weft_http_request_duration_seconds_bucket{{le=\"{le}\"}} {}",
            b[i]
        );
    }
    let count = m.latency_count;
    let _ = writeln!(
        s,
        "weft_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        s,
        "weft_http_request_duration_seconds_sum {}",
        m.latency_sum
    );
    let _ = writeln!(s, "weft_http_request_duration_seconds_count {count}");
    write_histograms(
        &mut s,
        "weft_reactor_lag_probe_seconds",
        "Lateness of each tick of a 10 ms timer on the loop (loop lag as a timer sees it).",
        &[("", HistView::merge(&lags))],
    );
    render_pools(&mut s, src);
    render_db(&mut s, src);
    render_loop_turns(
        &mut s,
        (!turns.is_empty()).then(|| HistView::merge(&turns)),
        ages.iter().copied().max(),
    );
    render_per_loop(&mut s, loops);
    let mut metric = |name: &str, kind: &str, help: &str, v: String| {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    };
    metric(
        "weft_http_connections_accepted_total",
        "counter",
        "Connections accepted.",
        m.connections_accepted.to_string(),
    );
    metric(
        "weft_http_requests_in_flight",
        "gauge",
        "Requests being handled (this scrape included).",
        m.requests_in_flight.to_string(),
    );
    metric(
        "weft_http_connections_open",
        "gauge",
        "Connections open.",
        m.connections_open.to_string(),
    );
    metric(
        "weft_http_write_timeouts_total",
        "counter",
        "Connections closed because the peer stopped reading.",
        m.write_timeouts.to_string(),
    );
    metric(
        "weft_http_body_timeouts_total",
        "counter",
        "Requests whose body did not arrive in time.",
        m.body_timeouts.to_string(),
    );
    metric(
        "weft_http_connection_errors_total",
        "counter",
        "Connections that ended with an error.",
        m.connection_errors.to_string(),
    );
    metric(
        "weft_db_operations_in_flight",
        "gauge",
        "Database operations submitted and not answered.",
        m.db_in_flight.to_string(),
    );
    metric(
        "weft_db_errors_total",
        "counter",
        "Database operations that failed.",
        m.db_errors.to_string(),
    );
    metric(
        "weft_reactor_loop_lag_max_seconds",
        "gauge",
        "Largest lateness of the 10 ms lag probe.",
        m.loop_lag_max.as_secs_f64().to_string(),
    );
    metric(
        "weft_reactor_loop_lag_seconds",
        "gauge",
        "Lateness of the last lag probe tick.",
        m.loop_lag_last.as_secs_f64().to_string(),
    );
    let uptime = m.uptime.as_secs_f64();
    metric(
        "weft_kv_uptime_seconds",
        "gauge",
        "Seconds since the server started (the dashboard's clock for rates).",
        uptime.to_string(),
    );
    let secs = |d: Duration| d.as_secs_f64().to_string();
    metric(
        "weft_reactor_inbox_depth",
        "gauge",
        "Calls queued from other threads, not yet taken by the loop.",
        reactor.inbox_depth.to_string(),
    );
    metric(
        "weft_reactor_calls_run_total",
        "counter",
        "Calls from other threads run on the loop.",
        reactor.calls_run.to_string(),
    );
    metric(
        "weft_reactor_slow_callbacks_total",
        "counter",
        "Callbacks that held the loop longer than the slow-callback threshold.",
        reactor.slow_callbacks.to_string(),
    );
    metric(
        "weft_reactor_longest_callback_seconds",
        "gauge",
        "Longest single callback so far (ReactorStatistics::longest_callback).",
        secs(reactor.longest_callback),
    );
    metric(
        "weft_reactor_longest_turn_seconds",
        "gauge",
        "Most time one turn's work held the loop so far (ReactorStatistics::longest_turn).",
        secs(reactor.longest_turn),
    );
    metric(
        "weft_reactor_stalls_detected_total",
        "counter",
        "Stalls the watchdog caught while they happened.",
        reactor.stalls_detected.to_string(),
    );
    metric(
        "weft_reactor_turns_total",
        "counter",
        "Loop turns.",
        reactor.turns.to_string(),
    );
    metric(
        "weft_reactor_tasks_polled_total",
        "counter",
        "Local task polls.",
        reactor.tasks_polled.to_string(),
    );
    metric(
        "weft_reactor_tasks_alive",
        "gauge",
        "Local tasks alive.",
        reactor.tasks_alive.to_string(),
    );
    metric(
        "weft_reactor_timers_live",
        "gauge",
        "Timed calls pending.",
        reactor.timers_live.to_string(),
    );
    metric(
        "weft_reactor_timers_fired_total",
        "counter",
        "Timed calls run.",
        reactor.timers_fired.to_string(),
    );
    metric(
        "weft_reactor_calls_from_thread_total",
        "counter",
        "Closures sent to the loop from other threads.",
        reactor.calls_from_thread.to_string(),
    );
    metric(
        "weft_reactor_wake_syscalls_total",
        "counter",
        "Writes to the loop's waker.",
        reactor.wake_syscalls.to_string(),
    );
    metric(
        "weft_reactor_panics_total",
        "counter",
        "Panics caught on the loop.",
        reactor.panics.to_string(),
    );
    if let Some(a) = &src.accept {
        metric(
            "weft_accept_accepted_total",
            "counter",
            "Connections accepted by the listener.",
            a.accepted.to_string(),
        );
        metric(
            "weft_accept_resource_errors_total",
            "counter",
            "EMFILE/ENFILE/ENOBUFS/ENOMEM on accept.",
            a.resource_errors.to_string(),
        );
        metric(
            "weft_accept_backoffs_total",
            "counter",
            "Accept back-offs.",
            a.backoffs.to_string(),
        );
    }
    s
}

/// A histogram ready to write: cumulative `(le, count)` buckets, one
/// snapshot's or several merged (weft's bucket bounds are the same powers
/// of two everywhere, so merging is a sum per bound).
struct HistView {
    cumulative: Vec<(Duration, u64)>,
    sum: Duration,
    count: u64,
}

impl HistView {
    fn of(h: &HistogramSnapshot) -> HistView {
        HistView::merge(&[h])
    }

    fn merge(hs: &[&HistogramSnapshot]) -> HistView {
        // A snapshot lists bounds only up to its highest non-empty bucket:
        // past that, all its records are below the bound.
        let mut bounds: Vec<Duration> = hs
            .iter()
            .flat_map(|h| h.cumulative().map(|b| b.0))
            .collect();
        bounds.sort_unstable();
        bounds.dedup();
        let cumulative = bounds
            .iter()
            .map(|&le| {
                let n = hs
                    .iter()
                    .map(|h| {
                        h.cumulative()
                            .find(|b| b.0 == le)
                            .map_or_else(|| if h.max() <= le { h.count() } else { 0 }, |b| b.1)
                    })
                    .sum();
                (le, n)
            })
            .collect();
        HistView {
            cumulative,
            sum: hs.iter().map(|h| h.sum()).sum(),
            count: hs.iter().map(|h| h.count()).sum(),
        }
    }
}

/// Writes one histogram family whose series differ by `labels` (each
/// `key="value"`, or empty for none).
fn write_histograms<L: AsRef<str>>(
    s: &mut String,
    name: &str,
    help: &str,
    series: &[(L, HistView)],
) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (labels, h) in series {
        let labels = labels.as_ref();
        let sep = if labels.is_empty() { "" } else { "," };
        for &(le, n) in &h.cumulative {
            let _ = writeln!(
                s,
                "{name}_bucket{{{labels}{sep}le=\"{}\"}} {n}",
                le.as_secs_f64()
            );
        }
        let count = h.count;
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        let _ = writeln!(s, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let _ = writeln!(s, "{name}_sum{} {}", braces(labels), h.sum.as_secs_f64());
        let _ = writeln!(s, "{name}_count{} {count}", braces(labels));
    }
}

fn group_label(g: weft_db::Group) -> &'static str {
    match g {
        weft_db::Group::Writer => "writer",
        weft_db::Group::Readers => "readers",
    }
}

/// Busy / idle / backlog of the database pool and the reactor pool, as
/// `weft_pool_*{pool="db"|"reactor"}`; the database pool's are the totals
/// of its exact statistics (both connection groups).
fn render_pools(s: &mut String, src: &Sources) {
    let t = src.db.total();
    let db = [t.idle, t.busy, t.backlog];
    let p = &src.reactor_pool;
    let reactor = [p.idle, p.busy, p.backlog];
    for (i, (name, help)) in [
        ("weft_pool_idle", "Pool threads waiting for work."),
        ("weft_pool_busy", "Pool threads running a job."),
        ("weft_pool_backlog", "Jobs queued and not started."),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = writeln!(
            s,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{pool=\"db\"}} {}\n{name}{{pool=\"reactor\"}} {}",
            db[i], reactor[i]
        );
    }
    let _ = writeln!(
        s,
        "# HELP weft_pool_threads_alive Pool threads alive.\n# TYPE weft_pool_threads_alive gauge\nweft_pool_threads_alive{{pool=\"db\"}} {}\nweft_pool_threads_alive{{pool=\"reactor\"}} {}",
        t.connections, p.threads_alive
    );
    let _ = writeln!(
        s,
        "# HELP weft_pool_completed_total Jobs finished.\n# TYPE weft_pool_completed_total counter\nweft_pool_completed_total{{pool=\"db\"}} {}\nweft_pool_completed_total{{pool=\"reactor\"}} {}",
        t.completed, p.completed
    );
}

/// The database pool per connection group (`weft_db_*{group="writer"|"readers"}`):
/// connections, busy/idle/backlog, jobs by outcome, and the queue-wait and
/// run-time histograms when the sources carry them.
fn render_db(s: &mut String, src: &Sources) {
    let groups = [("writer", &src.db.writer), ("readers", &src.db.readers)];
    /// (name, help, the figure)
    type Gauge = (
        &'static str,
        &'static str,
        fn(&weft_db::GroupStatistics) -> usize,
    );
    let gauges: [Gauge; 5] = [
        (
            "weft_db_connections",
            "Database connection threads alive.",
            |g| g.connections,
        ),
        (
            "weft_db_connections_open",
            "Database connections open.",
            |g| g.open,
        ),
        ("weft_db_busy", "Database connections running a job.", |g| {
            g.busy
        }),
        (
            "weft_db_idle",
            "Database connections alive and not running a job.",
            |g| g.idle,
        ),
        (
            "weft_db_backlog",
            "Database jobs queued and not started.",
            |g| g.backlog,
        ),
    ];
    for (name, help, get) in gauges {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (label, g) in groups {
            let _ = writeln!(s, "{name}{{group=\"{label}\"}} {}", get(g));
        }
    }
    let _ = writeln!(
        s,
        "# HELP weft_db_jobs_submitted_total Database jobs submitted.\n# TYPE weft_db_jobs_submitted_total counter"
    );
    for (label, g) in groups {
        let _ = writeln!(
            s,
            "weft_db_jobs_submitted_total{{group=\"{label}\"}} {}",
            g.submitted
        );
    }
    let _ = writeln!(
        s,
        "# HELP weft_db_jobs_total Database jobs ended, by outcome (ok, failed, panicked, interrupted: ran; cancelled, refused: never ran).\n# TYPE weft_db_jobs_total counter"
    );
    for (label, g) in groups {
        // Saturating: a snapshot taken while a job ends may see its
        // outcome before its completion.
        let ok = g
            .completed
            .saturating_sub(g.failed + g.panicked + g.interrupted);
        for (outcome, n) in [
            ("ok", ok),
            ("failed", g.failed),
            ("panicked", g.panicked),
            ("interrupted", g.interrupted),
            ("cancelled", g.cancelled),
            ("refused", g.refused),
        ] {
            let _ = writeln!(
                s,
                "weft_db_jobs_total{{group=\"{label}\",outcome=\"{outcome}\"}} {n}"
            );
        }
    }
    if src.db_histograms.is_empty() {
        return;
    }
    let labels: Vec<String> = src
        .db_histograms
        .iter()
        .map(|h| format!("group=\"{}\"", group_label(h.group)))
        .collect();
    let series = |pick: fn(&DbHistograms) -> &HistogramSnapshot| -> Vec<(&str, HistView)> {
        labels
            .iter()
            .zip(&src.db_histograms)
            .map(|(l, h)| (l.as_str(), HistView::of(pick(h))))
            .collect()
    };
    write_histograms(
        s,
        "weft_db_queue_wait_seconds",
        "Database jobs' wait from submission to start (ConnectionPool::queue_wait_histogram).",
        &series(|h| &h.queue_wait),
    );
    write_histograms(
        s,
        "weft_db_run_time_seconds",
        "Database jobs' run time, commit or rollback included (ConnectionPool::run_time_histogram).",
        &series(|h| &h.run_time),
    );
}

/// The loop-turn histogram (the loop lag: each turn's work time, idle
/// waits left out) and the inbox's oldest waiting call, when the sources
/// carry them. The dashboard and weft-load's loop report read these names.
fn render_loop_turns(s: &mut String, turn: Option<HistView>, inbox_oldest_age: Option<Duration>) {
    if let Some(turn) = turn {
        write_histograms(
            s,
            "weft_reactor_turn_seconds",
            "Work time of each loop turn, idle waits left out (the loop lag); all loops.",
            &[("", turn)],
        );
    }
    if let Some(age) = inbox_oldest_age {
        let _ = writeln!(
            s,
            "# HELP weft_reactor_inbox_oldest_age_seconds Age of the oldest call waiting in the inbox.\n# TYPE weft_reactor_inbox_oldest_age_seconds gauge\nweft_reactor_inbox_oldest_age_seconds {}",
            age.as_secs_f64()
        );
    }
}

/// Each loop's own series, `weft_kv_loop_*{loop="i"}` (names apart from the
/// totals, so a scraper summing a family by name never counts twice).
fn render_per_loop(s: &mut String, loops: &[LoopSources]) {
    let _ = writeln!(
        s,
        "# HELP weft_kv_loops Loops serving HTTP.\n# TYPE weft_kv_loops gauge\nweft_kv_loops {}",
        loops.len()
    );
    let label = |i: usize| format!("loop=\"{i}\"");
    type Figure = (
        &'static str,
        &'static str,
        &'static str,
        fn(&LoopSources) -> String,
    );
    let figures: [Figure; 5] = [
        (
            "weft_kv_loop_requests_total",
            "counter",
            "Requests answered by each loop.",
            |l| l.metrics.latency_count.to_string(),
        ),
        (
            "weft_kv_loop_connections_open",
            "gauge",
            "Connections open on each loop.",
            |l| l.metrics.connections_open.to_string(),
        ),
        (
            "weft_kv_loop_longest_turn_seconds",
            "gauge",
            "Longest turn of each loop since it started.",
            |l| l.reactor.longest_turn.as_secs_f64().to_string(),
        ),
        (
            "weft_kv_loop_lag_max_seconds",
            "gauge",
            "Largest lateness of each loop's 10 ms lag probe.",
            |l| l.metrics.loop_lag_max.as_secs_f64().to_string(),
        ),
        (
            "weft_kv_loop_wake_syscalls_total",
            "counter",
            "Writes to each loop's waker.",
            |l| l.reactor.wake_syscalls.to_string(),
        ),
    ];
    for (name, kind, help, get) in figures {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (i, l) in loops.iter().enumerate() {
            let _ = writeln!(s, "{name}{{{}}} {}", label(i), get(l));
        }
    }
    let lag: Vec<(String, HistView)> = loops
        .iter()
        .enumerate()
        .map(|(i, l)| (label(i), HistView::of(&l.metrics.loop_lag)))
        .collect();
    write_histograms(
        s,
        "weft_kv_loop_lag_probe_seconds",
        "Lateness of each loop's 10 ms lag probe ticks.",
        &lag,
    );
    let turns: Vec<(String, HistView)> = loops
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Some((label(i), HistView::of(l.turn.as_ref()?))))
        .collect();
    if !turns.is_empty() {
        write_histograms(
            s,
            "weft_kv_loop_turn_seconds",
            "Work time of each loop's turns (Handle::turn_histogram).",
            &turns,
        );
    }
}
