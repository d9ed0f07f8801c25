//! The three outputs: a markdown table, a JSON file of raw samples, and an SVG
//! chart of the latency distributions.
//!
//! - Latency rows show p50 / p99 over every sample of every round; throughput
//!   and count rows show the median of the per-round figures.
//! - Each peer cell carries the ratio `weft / peer` (on p50 for latency rows)
//!   when the weft rows are compiled in. Every row is a cost, so a ratio at or
//!   below 1 means weft is ahead.
//! - Under every latency and throughput row, a `↳ CPU` row gives the process
//!   CPU time (all threads, user + system) per operation over the measured
//!   section, so a subject that spins or burns a second core shows it.
//! - The floor column is the matching physical floor from the same run; the
//!   last column is `weft / floor` (the goal is ≤ 2).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;
use serde_json::{Value, json};

use crate::model::{Kind, Params, Pin, Scenario, capped_threads, cores};
use crate::subjects::{FLOORS, WEFT};
use crate::syscalls::{Counter, Traced};

/// Samples of one scenario, one subject, one round.
pub(crate) struct Record {
    pub(crate) scenario: Scenario,
    pub(crate) subject: &'static str,
    pub(crate) round: usize,
    pub(crate) samples: Vec<f64>,
    /// Process CPU time per operation over the measured section, ns.
    pub(crate) cpu_per_op: Option<f64>,
}

/// One subject's wake syscalls per 100k calls, or why there is none.
pub(crate) struct WakeRow {
    pub(crate) subject: &'static str,
    pub(crate) value: Result<Traced, String>,
}

/// Everything one run produced.
pub(crate) struct Run {
    pub(crate) quick: bool,
    pub(crate) pin: Pin,
    pub(crate) params: Params,
    pub(crate) subjects: Vec<&'static str>,
    pub(crate) records: Vec<Record>,
    pub(crate) not_applicable: BTreeMap<(&'static str, &'static str), String>,
    pub(crate) failures: BTreeMap<(&'static str, &'static str), String>,
    pub(crate) wakes: Vec<WakeRow>,
    pub(crate) counter: Option<Counter>,
    pub(crate) elapsed: Duration,
}

/// One chart panel: its title and the (scenario, floor label) series in it.
type Panel = (&'static str, Vec<(Scenario, Option<&'static str>)>);

/// The summary figure(s) of one cell.
#[derive(Clone, Copy)]
struct Cell {
    /// p50 for latency rows, median otherwise.
    main: f64,
    /// p99 for latency rows.
    p99: Option<f64>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

impl Run {
    fn samples(&self, sc: Scenario, subject: &str) -> Vec<f64> {
        self.records
            .iter()
            .filter(|r| r.scenario == sc && r.subject == subject)
            .flat_map(|r| r.samples.iter().copied())
            .collect()
    }

    fn cell(&self, sc: Scenario, subject: &str) -> Option<Cell> {
        if sc == Scenario::ThreadsAfterKeepAlive {
            // Samples: [right after the burst, after the keep-alive].
            let v = self.samples(sc, subject);
            return Some(Cell {
                main: *v.get(1)?,
                p99: None,
            });
        }
        let s = sorted(self.samples(sc, subject));
        if s.is_empty() {
            return None;
        }
        Some(match sc.kind() {
            Kind::Latency => Cell {
                main: percentile(&s, 0.5),
                p99: Some(percentile(&s, 0.99)),
            },
            Kind::Throughput | Kind::Count => Cell {
                main: percentile(&s, 0.5),
                p99: None,
            },
        })
    }

    /// Median over rounds of the CPU time per operation.
    fn cpu(&self, sc: Scenario, subject: &str) -> Option<f64> {
        let v = sorted(
            self.records
                .iter()
                .filter(|r| r.scenario == sc && r.subject == subject)
                .filter_map(|r| r.cpu_per_op)
                .collect(),
        );
        (!v.is_empty()).then(|| percentile(&v, 0.5))
    }

    fn floor_main(&self, sc: Scenario) -> Option<f64> {
        self.cell(sc, FLOORS).map(|c| c.main)
    }

    /// The matching floor of a row and how it is derived.
    fn floor(&self, sc: Scenario) -> Option<(f64, &'static str)> {
        let h1 = self.floor_main(Scenario::FloorHandoff1);
        let h2 = self.floor_main(Scenario::FloorHandoff2);
        let idle_wake = self.floor_main(Scenario::FloorIdleWake);
        let epoll = self.floor_main(Scenario::FloorEpoll);
        let futex = self.floor_main(Scenario::FloorFutex);
        match sc {
            Scenario::CftBurst1 | Scenario::PoolThroughput => h1.map(|v| (v, "cross-core handoff")),
            Scenario::CftBurst2 => h2.map(|v| (v, "cross-core handoff, 2 producers")),
            Scenario::DeferInFlight => h1.map(|v| (2.0 * v, "2 × cross-core handoff")),
            Scenario::CftWake => idle_wake.map(|v| (v, "idle epoll wake")),
            Scenario::Idle => Some((0.0, "nothing to do")),
            Scenario::DeferSeq | Scenario::BlockingCall => {
                Some(((futex? + epoll?) / 2.0, "½ futex + ½ epoll RTT"))
            }
            Scenario::ThreadsAfterBurst => Some((cores() as f64, "cores")),
            Scenario::ThreadsAfterKeepAlive => Some((0.0, "none needed")),
            _ => None,
        }
    }

    fn peers(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.subjects
            .iter()
            .copied()
            .filter(|s| *s != FLOORS && *s != WEFT)
    }

    /// The markdown report.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let p = &self.params;
        let _ = writeln!(
            out,
            "## weft-bench{} — {} rounds, {} cores, latency rows pinned: {}, {:.0} s\n",
            if self.quick { " --quick" } else { "" },
            p.rounds,
            cores(),
            self.pin.name(),
            self.elapsed.as_secs_f64()
        );
        let peers: Vec<_> = self.peers().collect();
        let _ = write!(out, "| scenario | floor | weft |");
        for s in &peers {
            let _ = write!(out, " {s} |");
        }
        let _ = writeln!(out, " weft / floor |");
        let _ = write!(out, "|---|---|---|");
        for _ in &peers {
            let _ = write!(out, "---|");
        }
        let _ = writeln!(out, "---|");
        let mut notes: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        let rows = Scenario::ROWS
            .into_iter()
            .chain([Scenario::ThreadsAfterKeepAlive, Scenario::Idle]);
        for sc in rows {
            let weft = self.cell(sc, WEFT);
            let floor = self.floor(sc);
            let _ = write!(out, "| {} | ", sc.label());
            let _ = match floor {
                Some((v, how)) => write!(out, "{} ({how})", fmt(sc, v)),
                None => write!(out, "—"),
            };
            let _ = write!(
                out,
                " | {} |",
                self.fmt_cell(sc, WEFT, weft, None, &mut notes)
            );
            for s in &peers {
                let c = self.cell(sc, s);
                let _ = write!(out, " {} |", self.fmt_cell(sc, s, c, weft, &mut notes));
            }
            let _ = match (weft, floor) {
                (Some(w), Some((f, _))) if f > 0.0 => writeln!(out, " ×{:.2} |", w.main / f),
                _ => writeln!(out, " — |"),
            };
            if sc.kind() != Kind::Count {
                self.cpu_row(&mut out, sc, &peers);
            }
        }
        self.wake_row(&mut out, &peers);
        let _ = writeln!(
            out,
            "\nCells: p50 / p99 for latency rows, median of rounds otherwise; \
             `(×r)` is weft / peer, and r ≤ 1 means weft is ahead (every row is a cost). \
             `↳ CPU`: process CPU time (every thread, user + system) per operation over \
             the measured section, median of rounds."
        );
        let _ = writeln!(
            out,
            "`tokio-capped` / `smol-capped`: `max_blocking_threads` / `BLOCKING_MAX_THREADS` = {} \
             (the threads weft's pool runs with: one per core plus its spare).",
            capped_threads()
        );
        if !notes.is_empty() {
            let _ = writeln!(out, "\nn/a:");
            for (reason, who) in notes {
                let _ = writeln!(out, "- {}: {reason}", who.join(", "));
            }
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "\nFailed cells (see stderr):");
            for ((sc, s), why) in &self.failures {
                let _ = writeln!(out, "- {s} / {sc}: {why}");
            }
        }
        let _ = writeln!(out, "\n### Physical floors (same run)\n");
        let _ = writeln!(out, "| floor | p50 | p99 | CPU per op |");
        let _ = writeln!(out, "|---|---|---|---|");
        for sc in Scenario::FLOORS {
            if let Some(c) = self.cell(sc, FLOORS) {
                let p99 = c.p99.map_or("—".to_owned(), fmt_ns);
                let cpu = self.cpu(sc, FLOORS).map_or("—".to_owned(), fmt_ns);
                let _ = writeln!(
                    out,
                    "| {} | {} | {p99} | {cpu} |",
                    sc.label(),
                    fmt_ns(c.main)
                );
            }
        }
        out
    }

    fn cpu_row(&self, out: &mut String, sc: Scenario, peers: &[&'static str]) {
        let weft = self.cpu(sc, WEFT);
        let cell = |v: Option<f64>| v.map_or("n/a".to_owned(), fmt_ns);
        let _ = write!(out, "| ↳ CPU per op | — | {} |", cell(weft));
        for s in peers {
            let c = self.cpu(sc, s);
            let txt = match (c, weft) {
                (Some(c), Some(w)) if c > 0.0 => format!("{} (×{:.2})", fmt_ns(c), w / c),
                _ => cell(c),
            };
            let _ = write!(out, " {txt} |");
        }
        let _ = writeln!(out, " — |");
    }

    fn fmt_cell(
        &self,
        sc: Scenario,
        subject: &'static str,
        c: Option<Cell>,
        weft: Option<Cell>,
        notes: &mut BTreeMap<String, Vec<&'static str>>,
    ) -> String {
        let Some(c) = c else {
            if let Some(reason) = self.not_applicable.get(&(sc.id(), subject)) {
                let list = notes.entry(reason.clone()).or_default();
                if !list.contains(&subject) {
                    list.push(subject);
                }
            }
            return "n/a".to_owned();
        };
        let mut s = match c.p99 {
            Some(p99) => format!("{} / {}", fmt_ns(c.main), fmt_ns(p99)),
            None => fmt(sc, c.main),
        };
        if let Some(w) = weft {
            if c.main > 0.0 {
                let _ = write!(s, " (×{:.2})", w.main / c.main);
            }
        }
        s
    }

    fn wake_figure(&self, subject: &str) -> Option<(f64, String)> {
        let row = self.wakes.iter().find(|w| w.subject == subject)?;
        Some(match &row.value {
            Ok(t) => (
                t.writes + t.futex_wakes,
                format!("{:.0} write + {:.0} futex", t.writes, t.futex_wakes),
            ),
            Err(why) => (f64::NAN, format!("n/a ({why})")),
        })
    }

    fn wake_row(&self, out: &mut String, peers: &[&'static str]) {
        let how = self.counter.map_or("not counted", Counter::name);
        let _ = write!(
            out,
            "| wake syscalls per 100k call_from_thread, 1 producer ({how}) | 1 per burst (coalesced) | "
        );
        let weft = self.wake_figure(WEFT);
        let _ = write!(out, "{} |", weft.as_ref().map_or("n/a", |w| w.1.as_str()));
        for s in peers {
            let cell = match (self.wake_figure(s), &weft) {
                (Some((v, txt)), Some((w, _))) if v.is_finite() && v > 0.0 => {
                    format!("{txt} (×{:.2})", w / v)
                }
                (Some((_, txt)), _) => txt,
                (None, _) => "n/a".to_owned(),
            };
            let _ = write!(out, " {cell} |");
        }
        let _ = writeln!(out, " — |");
    }

    /// The raw samples and the run's parameters as JSON.
    pub(crate) fn json(&self) -> Value {
        let p = &self.params;
        json!({
            "quick": self.quick,
            "pin": self.pin.name(),
            "cores": cores(),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "params": {
                "rounds": p.rounds,
                "burst_calls_per_producer": p.burst_calls,
                "wake_samples": p.wake_samples,
                "wake_gap_us": p.wake_gap.as_micros() as u64,
                "rtt_samples": p.rtt_samples,
                "inflight_waves_of_1000": p.inflight_waves,
                "pool_jobs": p.pool_jobs,
                "growth_jobs": p.growth_jobs,
                "timer_samples": p.timer_samples,
                "timer_delay_us": p.timer_delay.as_micros() as u64,
                "idle_s": p.idle.as_secs_f64(),
                "keep_alive_wait_s": p.keep_alive_wait.as_secs_f64(),
                "floor_rtts": p.floor_rtts,
                "handoff_jobs_per_producer": p.handoff_jobs,
                "syscall_calls": p.syscall_calls,
                "syscall_calls_small": p.syscall_calls_small,
            },
            "subjects": self.subjects,
            "records": self.records.iter().map(|r| json!({
                "scenario": r.scenario.id(),
                "kind": format!("{:?}", r.scenario.kind()).to_lowercase(),
                "unit": match r.scenario {
                    Scenario::ThreadsAfterBurst | Scenario::ThreadsAfterKeepAlive => "threads",
                    Scenario::Idle => "cpu ns",
                    _ => "ns",
                },
                "subject": r.subject,
                "round": r.round,
                "samples": r.samples,
                "cpu_ns_per_op": r.cpu_per_op,
            })).collect::<Vec<_>>(),
            "failures": self.failures.iter().map(|((sc, s), why)| json!({
                "scenario": sc, "subject": s, "error": why,
            })).collect::<Vec<_>>(),
            "not_applicable": self.not_applicable.iter().map(|((sc, s), why)| json!({
                "scenario": sc, "subject": s, "reason": why,
            })).collect::<Vec<_>>(),
            "wake_syscalls_method": self.counter.map(Counter::name),
            "wake_syscalls_per_100k": self.wakes.iter().map(|w| match &w.value {
                Ok(t) => json!({
                    "subject": w.subject, "writes": t.writes, "futex_wakes": t.futex_wakes,
                }),
                Err(why) => json!({ "subject": w.subject, "note": why }),
            }).collect::<Vec<_>>(),
        })
    }

    /// Latency CDFs (log-scale µs), one panel per latency scenario plus the
    /// ping-pong floors.
    pub(crate) fn svg(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let panels: [Panel; 6] = [
            (
                "call_from_thread wake latency, idle loop",
                vec![(Scenario::CftWake, None)],
            ),
            (
                "defer_to_thread round trip",
                vec![(Scenario::DeferSeq, None)],
            ),
            (
                "blocking_call_from_thread round trip",
                vec![(Scenario::BlockingCall, None)],
            ),
            ("100 µs timer lateness", vec![(Scenario::Timer, None)]),
            (
                "idle wake floor (one way)",
                vec![(Scenario::FloorIdleWake, Some("eventfd wake of idle epoll"))],
            ),
            (
                "physical floors (round trips)",
                vec![
                    (Scenario::FloorSpin, Some("atomic spin")),
                    (Scenario::FloorFutex, Some("futex park/unpark")),
                    (Scenario::FloorEpoll, Some("eventfd + epoll")),
                ],
            ),
        ];
        let root = SVGBackend::new(path, (1400, 1500)).into_drawing_area();
        root.fill(&WHITE)?;
        let areas = root.split_evenly((3, 2));
        for (area, (title, what)) in areas.iter().zip(panels) {
            let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
            for (sc, label) in what {
                let names: Vec<&'static str> = match label {
                    Some(_) => vec![FLOORS],
                    None => self.subjects.clone(),
                };
                for subject in names {
                    let s = sorted(self.samples(sc, subject));
                    if s.is_empty() {
                        continue;
                    }
                    let step = (s.len() / 400).max(1);
                    let n = s.len() as f64;
                    let pts = s
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| i % step == 0 || *i == s.len() - 1)
                        .map(|(i, v)| ((v / 1000.0).max(0.01), (i + 1) as f64 / n))
                        .collect();
                    series.push((label.unwrap_or(subject).to_owned(), pts));
                }
            }
            let (lo, hi) = series
                .iter()
                .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
                .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
            if series.is_empty() {
                continue;
            }
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), 0f64..1f64)?;
            chart
                .configure_mesh()
                .x_desc("µs (log)")
                .y_desc("fraction ≤ x")
                .draw()?;
            for (i, (name, pts)) in series.into_iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                    .label(name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    }
}

/// Formats a figure of row `sc`.
fn fmt(sc: Scenario, v: f64) -> String {
    match sc.kind() {
        Kind::Count if sc != Scenario::Idle => format!("{v:.0}"),
        _ => fmt_ns(v),
    }
}

/// Formats nanoseconds with a readable unit.
fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "—".to_owned()
    } else if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}
