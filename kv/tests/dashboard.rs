//! The dashboard at `GET /` and the series it reads from `/metrics`.

mod common;
use common::*;

/// The metric family names a scrape declares (`# TYPE name kind`).
fn families(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn root_serves_the_self_contained_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(config(dir.path()));
    let mut r = agent().get(&srv.url("/")).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ctype = r.headers().get("content-type").unwrap().to_str().unwrap();
    assert!(ctype.starts_with("text/html"), "{ctype}");
    let body = r.body_mut().read_to_string().unwrap();
    assert_eq!(body, weft_kv::dashboard::PAGE);
    // The chart script is inline and polls /metrics.
    assert!(body.contains("<script>") && body.contains("fetch(\"/metrics\""));
    assert!(body.contains("<canvas>") || body.contains("<canvas"));
    // Offline: nothing is loaded from elsewhere.
    for outside in [
        "http://",
        "https://",
        "<script src",
        "<link",
        "@import",
        "url(",
    ] {
        assert!(!body.contains(outside), "the page refers to {outside}");
    }
    assert_eq!(
        agent()
            .post(&srv.url("/"))
            .send(&[][..])
            .unwrap()
            .status()
            .as_u16(),
        405
    );
    srv.stop();
}

#[test]
fn metrics_export_every_series_the_dashboard_reads() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(config(dir.path()));
    // Traffic, so the labelled series have samples.
    let a = agent();
    assert_eq!(put(&a, &srv.url("/v1/kv/k"), b"v").0, 200);
    assert_eq!(get(&a, &srv.url("/v1/kv/k")).0, 200);
    let text = get(&a, &srv.url("/metrics")).1;
    let exported = families(&text);
    let read = weft_kv::dashboard::page_series();
    assert!(read.len() >= 10, "{read:?}");
    for name in &read {
        if weft_kv::dashboard::PENDING_SERIES.contains(name) {
            assert!(
                !exported.iter().any(|e| e == name),
                "{name} is exported now: remove it from dashboard::PENDING_SERIES"
            );
        } else {
            assert!(exported.iter().any(|e| e == name), "/metrics lacks {name}");
        }
    }
    // Both pools' gauges carry the label the page selects on.
    for pool in ["db", "reactor"] {
        for g in ["weft_pool_busy", "weft_pool_idle", "weft_pool_backlog"] {
            assert!(
                text.contains(&format!("{g}{{pool=\"{pool}\"}} ")),
                "{g} {pool}"
            );
        }
    }
    // Idle now: every database connection idle, nothing queued.
    assert!(text.contains("weft_pool_idle{pool=\"db\"} 3\n"), "{text}");
    assert!(text.contains("weft_pool_backlog{pool=\"db\"} 0\n"));
    // The lag probe's histogram is complete (the page takes quantiles of it).
    assert!(text.contains("weft_reactor_lag_probe_seconds_bucket{le=\"+Inf\"} "));
    assert!(text.contains("weft_reactor_lag_probe_seconds_count "));
    srv.stop();
}

#[test]
fn page_series_lists_each_name_once() {
    let names = weft_kv::dashboard::page_series();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len());
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("weft_") && !n.ends_with('_'))
    );
    for p in weft_kv::dashboard::PENDING_SERIES {
        assert!(
            names.contains(p),
            "{p} is pending but the page does not read it"
        );
    }
}

#[test]
fn database_pool_figures_are_the_pools_own_statistics() {
    use weft_kv::metrics::{Metrics, Sources};
    let line = |text: &str, series: &str| -> u64 {
        let prefix = format!("{series} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{series} in {text}"))
            .parse()
            .unwrap()
    };
    let mut src = Sources::default();
    let (w, r) = (&mut src.db.writer, &mut src.db.readers);
    (w.connections, w.busy, w.idle, w.backlog) = (1, 1, 0, 4);
    (r.connections, r.busy, r.idle, r.backlog) = (2, 1, 1, 0);
    (
        w.submitted,
        w.completed,
        w.failed,
        w.panicked,
        w.interrupted,
    ) = (20, 15, 2, 1, 1);
    (w.cancelled, w.refused) = (1, 0);
    let text = Metrics::default().render(&src);
    // The page's pool chart: the totals of both groups.
    assert_eq!(line(&text, "weft_pool_busy{pool=\"db\"}"), 2);
    assert_eq!(line(&text, "weft_pool_idle{pool=\"db\"}"), 1);
    assert_eq!(line(&text, "weft_pool_backlog{pool=\"db\"}"), 4);
    assert_eq!(line(&text, "weft_pool_threads_alive{pool=\"db\"}"), 3);
    // Per group, and the jobs by outcome (ok = completed less the rest).
    assert_eq!(line(&text, "weft_db_backlog{group=\"writer\"}"), 4);
    assert_eq!(line(&text, "weft_db_idle{group=\"readers\"}"), 1);
    for (outcome, n) in [
        ("ok", 11),
        ("failed", 2),
        ("panicked", 1),
        ("interrupted", 1),
        ("cancelled", 1),
        ("refused", 0),
    ] {
        let series = format!("weft_db_jobs_total{{group=\"writer\",outcome=\"{outcome}\"}}");
        assert_eq!(line(&text, &series), n, "{outcome}");
    }
    // No histograms given: none rendered.
    assert!(!text.contains("weft_db_queue_wait_seconds"));
    let h = weft::diagnostics::Histogram::new();
    h.record_nanos(3_000);
    src.db_histograms.push(weft_kv::metrics::DbHistograms {
        group: weft_db::Group::Readers,
        queue_wait: h.snapshot(),
        run_time: h.snapshot(),
    });
    let text = Metrics::default().render(&src);
    assert!(
        text.contains(
            "weft_db_queue_wait_seconds_bucket{group=\"readers\",le=\"0.000004096\"} 1\n"
        ),
        "{text}"
    );
    assert!(text.contains("weft_db_queue_wait_seconds_bucket{group=\"readers\",le=\"+Inf\"} 1\n"));
    assert!(text.contains("weft_db_run_time_seconds_count{group=\"readers\"} 1\n"));
}

/// The loop-turn series are rendered exactly when their sources are given
/// (and any name still listed as pending is not).
#[test]
fn loop_turn_series_are_rendered_once_their_sources_are_given() {
    use std::time::Duration;
    use weft_kv::metrics::{Metrics, Sources};
    let h = weft::diagnostics::Histogram::new();
    h.record(Duration::from_micros(300));
    let mut src = Sources::default();
    assert!(
        families(&Metrics::default().render(&src))
            .iter()
            .all(|f| { !weft_kv::dashboard::PENDING_SERIES.contains(&f.as_str()) })
    );
    src.turn = Some(h.snapshot());
    src.inbox_oldest_age = Some(Duration::from_millis(2));
    let text = Metrics::default().render(&src);
    let exported = families(&text);
    for name in weft_kv::dashboard::PENDING_SERIES {
        assert!(exported.iter().any(|e| e == name), "{name}");
    }
    assert!(
        text.contains("weft_reactor_turn_seconds_count 1\n"),
        "{text}"
    );
    assert!(text.contains("weft_reactor_inbox_oldest_age_seconds 0.002\n"));
}
