//! Rendering `/metrics` in the Prometheus text format: the sums over the
//! loops, each loop's own series, and the pools' figures.
//!
//! Invariants:
//! - Every series the dashboard reads (`crate::dashboard`) is written here;
//!   a test checks the names.
//! - Rendering only reads its inputs (snapshots and statistics copied off
//!   their threads): it never touches a loop's live `Metrics`.

use std::fmt::Write as _;
use std::time::Duration;

use weft::diagnostics::HistogramSnapshot;

use super::{DbHistograms, LATENCY_BUCKETS, LoopSources, Metrics, Sources};

/// Sums the loops' reactor counters; the longest-* gauges take the largest.
fn merge_reactors(loops: &[LoopSources]) -> weft::reactor::ReactorStatistics {
    let mut t = weft::reactor::ReactorStatistics::default();
    for l in loops {
        let r = &l.reactor;
        t.calls_from_thread += r.calls_from_thread;
        t.calls_run += r.calls_run;
        t.wake_syscalls += r.wake_syscalls;
        t.turns += r.turns;
        t.polls_skipped += r.polls_skipped;
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
        "weft_reactor_polls_skipped_total",
        "counter",
        "Busy turns that skipped their I/O poll after one that reported no I/O (ReactorStatistics::polls_skipped).",
        reactor.polls_skipped.to_string(),
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
    let figures: [Figure; 10] = [
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
            "weft_kv_loop_connections_handed_over_total",
            "counter",
            "Connections each loop accepted and handed over to a loop with fewer.",
            |l| l.metrics.connections_handed_over.to_string(),
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
            "weft_kv_loop_late_ticks_waiting_total",
            "counter",
            "Lag probe ticks over 1 ms late while the loop thread waited for a core at least half of that.",
            |l| l.metrics.late_ticks_waiting.to_string(),
        ),
        (
            "weft_kv_loop_late_ticks_working_total",
            "counter",
            "Lag probe ticks over 1 ms late while the loop thread mostly ran (its own turns).",
            |l| l.metrics.late_ticks_working.to_string(),
        ),
        (
            "weft_kv_loop_runqueue_wait_seconds_total",
            "counter",
            "Time each loop thread was runnable but waiting for a core (as of its last probe tick).",
            |l| l.metrics.runqueue_wait.as_secs_f64().to_string(),
        ),
        (
            "weft_kv_loop_nice",
            "gauge",
            "Nice value each loop thread runs at (NaN: unreadable).",
            |l| l.metrics.nice.map_or("NaN".to_owned(), |n| n.to_string()),
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
