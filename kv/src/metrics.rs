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
use std::time::Duration;

use weft::diagnostics::{Histogram, HistogramSnapshot};

mod render;
pub use render::render_loops;

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// What a request was, for the per-route counters (`route` label of
/// `weft_http_requests_total`).
///
/// # Examples
///
/// ```
/// use weft_kv::metrics::Route;
/// assert_eq!(Route::KvGet.label(), "kv_get");
/// assert_eq!(Route::from_label("kv_get"), Some(Route::KvGet));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Route {
    /// `GET /`.
    Dashboard,
    /// `/healthz`.
    Healthz,
    /// `/metrics`.
    Metrics,
    /// `/v1/kv` (list).
    KvList,
    /// `/v1/batch`.
    Batch,
    /// `/v1/kv/{key}` with a key that is not valid.
    KvBadKey,
    /// `GET /v1/kv/{key}`.
    KvGet,
    /// `PUT /v1/kv/{key}`.
    KvPut,
    /// `DELETE /v1/kv/{key}`.
    KvDelete,
    /// `/v1/kv/{key}` with another method.
    KvKey,
    /// Any other path.
    Unknown,
}

impl Route {
    /// Every route, in index order.
    pub const ALL: [Route; 11] = [
        Route::Dashboard,
        Route::Healthz,
        Route::Metrics,
        Route::KvList,
        Route::Batch,
        Route::KvBadKey,
        Route::KvGet,
        Route::KvPut,
        Route::KvDelete,
        Route::KvKey,
        Route::Unknown,
    ];

    /// Its `route` label.
    ///
    /// # Examples
    ///
    /// See [`Route`].
    pub fn label(self) -> &'static str {
        match self {
            Route::Dashboard => "dashboard",
            Route::Healthz => "healthz",
            Route::Metrics => "metrics",
            Route::KvList => "kv_list",
            Route::Batch => "batch",
            Route::KvBadKey => "kv_bad_key",
            Route::KvGet => "kv_get",
            Route::KvPut => "kv_put",
            Route::KvDelete => "kv_delete",
            Route::KvKey => "kv_key",
            Route::Unknown => "unknown",
        }
    }

    /// The route with this label.
    ///
    /// # Examples
    ///
    /// See [`Route`].
    pub fn from_label(label: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|r| r.label() == label)
    }
}

/// The statuses the handlers answer with, each with a counter slot per
/// route; any other status is counted in `Metrics::other_statuses`.
const STATUSES: [u16; 8] = [200, 400, 404, 405, 408, 413, 500, 503];

fn status_slot(status: u16) -> Option<usize> {
    match status {
        200 => Some(0),
        400 => Some(1),
        404 => Some(2),
        405 => Some(3),
        408 => Some(4),
        413 => Some(5),
        500 => Some(6),
        503 => Some(7),
        _ => None,
    }
}

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
    /// Requests by route and status: a fixed table, indexed by the route
    /// and the status's slot in `STATUSES` (no map lookup per request).
    by_route: [[Cell<u64>; STATUSES.len()]; Route::ALL.len()],
    /// Requests answered with a status outside `STATUSES`.
    other_statuses: RefCell<BTreeMap<(Route, u16), u64>>,
    buckets: RefCell<[u64; LATENCY_BUCKETS.len()]>,
    latency_count: Cell<u64>,
    latency_sum: Cell<f64>,
    /// Connections accepted.
    pub connections_accepted: Cell<u64>,
    /// Connections this loop accepted and handed over to a loop with fewer
    /// (see `Config::loops`).
    pub connections_handed_over: Cell<u64>,
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
    /// Probe ticks over 1 ms late while the loop thread was held off its
    /// core for at least half of that (the scheduler's stalls; from the
    /// thread's `/proc/thread-self/schedstat`).
    pub late_ticks_waiting: Cell<u64>,
    /// Probe ticks over 1 ms late otherwise (the loop's own long turns).
    pub late_ticks_working: Cell<u64>,
    /// Time the loop thread spent runnable but waiting for a core, as of
    /// the last probe tick.
    pub runqueue_wait: Cell<Duration>,
    /// The loop thread's nice value, read when it started serving
    /// (`None`: unreadable).
    pub nice: Cell<Option<i32>>,
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
    /// Counts one answered request by its route label. A `route` that is
    /// none of [`Route`]'s labels counts as [`Route::Unknown`].
    ///
    /// # Examples
    ///
    /// See [`Metrics`].
    pub fn record(&self, route: &'static str, status: u16, latency: Duration) {
        let route = Route::from_label(route).unwrap_or(Route::Unknown);
        self.record_route(route, status, latency);
    }

    /// Counts one answered request of `route`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft_kv::metrics::{Metrics, Route};
    /// let m = Metrics::default();
    /// m.record_route(Route::KvPut, 200, Duration::from_micros(80));
    /// m.record_route(Route::KvPut, 418, Duration::from_micros(80));
    /// assert_eq!(m.requests("kv_put", 200), 1);
    /// assert_eq!(m.requests("kv_put", 418), 1);
    /// ```
    pub fn record_route(&self, route: Route, status: u16, latency: Duration) {
        match status_slot(status) {
            Some(i) => {
                let c = &self.by_route[route as usize][i];
                c.set(c.get() + 1);
            }
            None => {
                *self
                    .other_statuses
                    .borrow_mut()
                    .entry((route, status))
                    .or_insert(0) += 1
            }
        }
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
        let Some(route) = Route::from_label(route) else {
            return 0;
        };
        match status_slot(status) {
            Some(i) => self.by_route[route as usize][i].get(),
            None => self
                .other_statuses
                .borrow()
                .get(&(route, status))
                .copied()
                .unwrap_or(0),
        }
    }

    /// The non-zero counters by (route label, status), in label order.
    fn by_route_map(&self) -> BTreeMap<(&'static str, u16), u64> {
        let mut map = BTreeMap::new();
        for route in Route::ALL {
            for (i, status) in STATUSES.iter().enumerate() {
                let n = self.by_route[route as usize][i].get();
                if n > 0 {
                    map.insert((route.label(), *status), n);
                }
            }
        }
        for ((route, status), n) in self.other_statuses.borrow().iter() {
            map.insert((route.label(), *status), *n);
        }
        map
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
            by_route: self.by_route_map(),
            buckets: *self.buckets.borrow(),
            latency_count: self.latency_count.get(),
            latency_sum: self.latency_sum.get(),
            connections_accepted: self.connections_accepted.get(),
            connections_handed_over: self.connections_handed_over.get(),
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
            late_ticks_waiting: self.late_ticks_waiting.get(),
            late_ticks_working: self.late_ticks_working.get(),
            runqueue_wait: self.runqueue_wait.get(),
            nice: self.nice.get(),
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
    /// Connections handed over to a loop with fewer.
    pub connections_handed_over: u64,
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
    /// Probe ticks over 1 ms late, the loop thread waiting for a core.
    pub late_ticks_waiting: u64,
    /// Probe ticks over 1 ms late, the loop working.
    pub late_ticks_working: u64,
    /// The loop thread's time runnable but waiting for a core.
    pub runqueue_wait: Duration,
    /// The loop thread's nice value (`None`: unreadable; merged loops:
    /// the highest, the least favoured).
    pub nice: Option<i32>,
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
        self.connections_handed_over += o.connections_handed_over;
        self.requests_in_flight += o.requests_in_flight;
        self.connections_open += o.connections_open;
        self.write_timeouts += o.write_timeouts;
        self.body_timeouts += o.body_timeouts;
        self.connection_errors += o.connection_errors;
        self.db_in_flight += o.db_in_flight;
        self.db_errors += o.db_errors;
        self.loop_lag_max = self.loop_lag_max.max(o.loop_lag_max);
        self.loop_lag_last = self.loop_lag_last.max(o.loop_lag_last);
        self.late_ticks_waiting += o.late_ticks_waiting;
        self.late_ticks_working += o.late_ticks_working;
        self.runqueue_wait += o.runqueue_wait;
        self.nice = self.nice.max(o.nice);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_label_is_distinct_and_maps_back_to_its_route() {
        for (i, r) in Route::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i, "ALL is in index order");
            assert_eq!(Route::from_label(r.label()), Some(r));
        }
        assert_eq!(Route::from_label("nope"), None);
    }

    #[test]
    fn counts_by_route_and_status_render_in_label_order_whatever_the_status() {
        let m = Metrics::default();
        m.record_route(Route::KvPut, 200, Duration::ZERO);
        m.record_route(Route::KvGet, 404, Duration::ZERO);
        m.record_route(Route::KvGet, 200, Duration::ZERO);
        m.record_route(Route::KvGet, 200, Duration::ZERO);
        m.record_route(Route::KvGet, 599, Duration::ZERO);
        m.record("not a route", 200, Duration::ZERO);
        let by: Vec<_> = m.snapshot().by_route.into_iter().collect();
        assert_eq!(
            by,
            [
                (("kv_get", 200), 2),
                (("kv_get", 404), 1),
                (("kv_get", 599), 1),
                (("kv_put", 200), 1),
                (("unknown", 200), 1),
            ]
        );
        assert_eq!(m.snapshot().requests_total(), 6);
    }

    #[test]
    fn skipped_polls_are_rendered_summed_over_the_loops() {
        let mut a = LoopSources::default();
        a.reactor.polls_skipped = 3;
        let mut b = LoopSources::default();
        b.reactor.polls_skipped = 4;
        let text = render_loops(&[a, b], &Sources::default());
        assert!(
            text.contains("\nweft_reactor_polls_skipped_total 7\n"),
            "{text}"
        );
    }
}
