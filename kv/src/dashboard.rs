//! The live dashboard served at `GET /`: one self-contained HTML page
//! (inline CSS and JavaScript, no build step, no CDN, no web fonts) that
//! polls `/metrics` every second, parses the Prometheus text itself and
//! draws the last two minutes as canvas time charts: requests/s, loop lag,
//! the inbox, busy/idle/backlog of the database pool and the reactor
//! pool, and the database jobs' queue-wait and run-time p99 per connection
//! group.
//!
//! Invariants:
//! - Every `weft_*` name the page reads is rendered by
//!   [`Metrics::render`](crate::metrics::Metrics::render), except the ones
//!   in [`PENDING_SERIES`]; `tests/dashboard.rs` checks both directions.
//! - Rates are computed on the server's clock (`weft_kv_uptime_seconds`),
//!   so a late poll does not show as a dip.

/// The page (`dashboard.html`, compiled in).
///
/// # Examples
///
/// ```
/// assert!(weft_kv::dashboard::PAGE.contains("/metrics"));
/// ```
pub const PAGE: &str = include_str!("dashboard.html");

/// Series the page reads that `/metrics` does not export (none today: the
/// page skips a series while it is absent, so a name may be listed here
/// while its source is being built). A test fails if a name is both
/// listed here and exported, or neither.
///
/// # Examples
///
/// ```
/// for name in weft_kv::dashboard::PENDING_SERIES {
///     assert!(weft_kv::dashboard::PAGE.contains(name));
/// }
/// ```
pub const PENDING_SERIES: &[&str] = &[];

/// The distinct `weft_*` names the page mentions, in order of first use.
///
/// # Examples
///
/// ```
/// let names = weft_kv::dashboard::page_series();
/// assert!(names.contains(&"weft_http_requests_total"));
/// ```
pub fn page_series() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    let bytes = PAGE.as_bytes();
    let mut i = 0;
    while let Some(off) = PAGE[i..].find("weft_") {
        let start = i + off;
        let preceded = start > 0 && is_name_byte(bytes[start - 1]);
        let mut end = start;
        while end < bytes.len() && is_name_byte(bytes[end]) {
            end += 1;
        }
        let name = &PAGE[start..end];
        if !preceded && !out.contains(&name) {
            out.push(name);
        }
        i = end;
    }
    out
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
