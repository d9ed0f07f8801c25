//! Loop-local request metrics and their Prometheus text rendering.
//!
//! Everything here lives on the loop thread (`Rc<Metrics>` with `Cell` /
//! `RefCell`): no lock, no atomics. Scraping reads the reactor's and the
//! listener's statistics at render time.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

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
    /// Database operations submitted and not yet answered.
    pub db_in_flight: Cell<u64>,
    /// Database operations answered with an error.
    pub db_errors: Cell<u64>,
    /// Largest loop lag seen by the lag probe.
    pub loop_lag_max: Cell<Duration>,
    /// Lag of the last probe tick.
    pub loop_lag_last: Cell<Duration>,
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

    /// Renders the Prometheus text format, with the reactor's statistics,
    /// the listener's accept statistics and the pool size appended.
    ///
    /// # Examples
    ///
    /// ```
    /// let m = weft_kv::metrics::Metrics::default();
    /// let text = m.render(&Default::default(), None, 3);
    /// assert!(text.contains("weft_http_request_duration_seconds_count 0"));
    /// ```
    pub fn render(
        &self,
        reactor: &weft::reactor::ReactorStatistics,
        accept: Option<&weft::net::AcceptStatistics>,
        db_connections: usize,
    ) -> String {
        let mut s = String::with_capacity(4096);
        s.push_str("# HELP weft_http_requests_total HTTP requests answered, by route and status.\n# TYPE weft_http_requests_total counter\n");
        for ((route, status), n) in self.by_route.borrow().iter() {
            let _ = writeln!(
                s,
                "weft_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        s.push_str("# HELP weft_http_request_duration_seconds Request latency (handler, including the database).\n# TYPE weft_http_request_duration_seconds histogram\n");
        let b = self.buckets.borrow();
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "weft_http_request_duration_seconds_bucket{{le=\"{le}\"}} {}",
                b[i]
            );
        }
        let count = self.latency_count.get();
        let _ = writeln!(
            s,
            "weft_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            s,
            "weft_http_request_duration_seconds_sum {}",
            self.latency_sum.get()
        );
        let _ = writeln!(s, "weft_http_request_duration_seconds_count {count}");
        let mut metric = |name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        let c = |x: &Cell<u64>| x.get().to_string();
        metric(
            "weft_http_connections_accepted_total",
            "counter",
            "Connections accepted.",
            c(&self.connections_accepted),
        );
        metric(
            "weft_http_requests_in_flight",
            "gauge",
            "Requests being handled (this scrape included).",
            c(&self.requests_in_flight),
        );
        metric(
            "weft_http_connections_open",
            "gauge",
            "Connections open.",
            c(&self.connections_open),
        );
        metric(
            "weft_http_write_timeouts_total",
            "counter",
            "Connections closed because the peer stopped reading.",
            c(&self.write_timeouts),
        );
        metric(
            "weft_http_body_timeouts_total",
            "counter",
            "Requests whose body did not arrive in time.",
            c(&self.body_timeouts),
        );
        metric(
            "weft_http_connection_errors_total",
            "counter",
            "Connections that ended with an error.",
            c(&self.connection_errors),
        );
        metric(
            "weft_db_operations_in_flight",
            "gauge",
            "Database operations submitted and not answered.",
            c(&self.db_in_flight),
        );
        metric(
            "weft_db_errors_total",
            "counter",
            "Database operations that failed.",
            c(&self.db_errors),
        );
        metric(
            "weft_db_connections",
            "gauge",
            "Database connections (writer + readers).",
            db_connections.to_string(),
        );
        metric(
            "weft_reactor_loop_lag_max_seconds",
            "gauge",
            "Largest lateness of the 10 ms lag probe.",
            self.loop_lag_max.get().as_secs_f64().to_string(),
        );
        metric(
            "weft_reactor_loop_lag_seconds",
            "gauge",
            "Lateness of the last lag probe tick.",
            self.loop_lag_last.get().as_secs_f64().to_string(),
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
        if let Some(a) = accept {
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
}
