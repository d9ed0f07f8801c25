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
fn database_pool_figures_follow_the_operations_in_flight() {
    use weft_kv::metrics::{Metrics, Sources};
    let line = |text: &str, name: &str| -> u64 {
        let prefix = format!("{name}{{pool=\"db\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut src = Sources::default();
    src.db_connections = 3; // one writer, two readers
    let m = Metrics::default();
    // (writes, reads) in flight -> (busy, idle, backlog)
    for ((writes, reads), want) in [
        ((0, 0), (0, 3, 0)),
        ((1, 0), (1, 2, 0)),
        ((0, 2), (2, 1, 0)),
        ((3, 0), (1, 2, 2)),
        ((1, 4), (3, 0, 2)),
    ] {
        m.db_in_flight.set(writes + reads);
        m.db_reads_in_flight.set(reads);
        let text = m.render(&src);
        let got = (
            line(&text, "weft_pool_busy"),
            line(&text, "weft_pool_idle"),
            line(&text, "weft_pool_backlog"),
        );
        assert_eq!(got, want, "writes {writes}, reads {reads}");
    }
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
