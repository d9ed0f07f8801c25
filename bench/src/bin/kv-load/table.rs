//! The table: each cell's median run (and the range over the rounds), and
//! the Markdown rows with one ratio column per weft-kv row.

use crate::run::Row;

/// The row to show for one (server, mix, client): the first failure, or the
/// run with the median req/s; and the range of req/s over the runs.
pub(crate) fn median(runs: Vec<Row>) -> (Row, Option<(f64, f64)>) {
    let mut ok: Vec<Row> = Vec::new();
    for r in runs {
        if r.result.is_err() {
            return (r, None);
        }
        ok.push(r);
    }
    let rate = |r: &Row| r.result.as_ref().map_or(0.0, |(m, ..)| m.rate);
    ok.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let range = (rate(&ok[0]), rate(&ok[ok.len() - 1]));
    let mid = ok.swap_remove(ok.len() / 2);
    (mid, Some(range))
}

pub(crate) fn print_table(rows: &[(Row, Option<(f64, f64)>)], rounds: u32) {
    let (extra_head, extra_rule) = if rounds > 1 {
        (" req/s range |", "---|")
    } else {
        ("", "")
    };
    // One ratio column per weft-kv row in the run.
    let mut weft_rows: Vec<&str> = Vec::new();
    for (r, _) in rows {
        if r.server.starts_with("weft-kv") && !weft_rows.contains(&r.server.as_str()) {
            weft_rows.push(&r.server);
        }
    }
    let ratio_head: String = weft_rows.iter().map(|w| format!(" {w} ÷ this |")).collect();
    let ratio_rule = "---|".repeat(weft_rows.len());
    println!(
        "| server | mix (read/write) | client | placement | req/s | p50 | p99 | max | errors | server CPU ms / 1k req | longest turn per loop | turns > 1.05 ms in the run, per loop | late ticks waiting / working, per loop | loop threads: run-queue wait / preemptions / CPU |{ratio_head}{extra_head}"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|{ratio_rule}{extra_rule}");
    for (r, range) in rows {
        let range = match range {
            Some((lo, hi)) if rounds > 1 => format!(" {lo:.0}–{hi:.0} |"),
            _ if rounds > 1 => " |".into(),
            _ => String::new(),
        };
        let head = format!(
            "| {} | {}/{} | {} | {} |",
            r.server,
            r.mix,
            100 - r.mix,
            r.client,
            if r.placement.is_empty() {
                "—"
            } else {
                &r.placement
            }
        );
        match &r.result {
            Ok((m, cpu, loops)) => {
                let ratios: String = weft_rows
                    .iter()
                    .map(|name| {
                        let weft = rows.iter().find_map(|(w, _)| match &w.result {
                            Ok((wm, ..))
                                if w.server == *name && w.mix == r.mix && w.client == r.client =>
                            {
                                Some(wm.rate)
                            }
                            _ => None,
                        });
                        weft.map_or(" — |".into(), |w| {
                            format!(" {:.2}× |", w / m.rate.max(1e-9))
                        })
                    })
                    .collect();
                let stalls = loops.as_ref().map_or("—".into(), |l| {
                    l.stalls
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(" / ")
                });
                let late = loops.as_ref().map_or("—".into(), |l| {
                    l.late_ticks
                        .iter()
                        .map(|(w, k)| format!("{w}/{k}"))
                        .collect::<Vec<_>>()
                        .join(" · ")
                });
                let (turns, sched) = match loops {
                    Some(l) => (
                        l.longest_turn_ms
                            .iter()
                            .map(|t| format!("{t:.2}"))
                            .collect::<Vec<_>>()
                            .join(" / ")
                            + " ms",
                        format!(
                            "{:.0} ms / {} / {:.0} ms",
                            l.runq_wait_ms, l.preemptions, l.cpu_ms
                        ),
                    ),
                    None => ("—".into(), "—".into()),
                };
                println!(
                    "{head} {:.0} | {:.2} ms | {:.2} ms | {:.1} ms | {} | {:.1} | {turns} | {stalls} | {late} | {sched} |{ratios}{range}",
                    m.rate,
                    m.p50_ms,
                    m.p99_ms,
                    m.max_ms,
                    m.errors,
                    cpu * 1e3,
                );
            }
            Err(e) => println!(
                "{head} failed: {} |||||||||||{}{range}",
                e.replace(['\n', '|'], " "),
                "|".repeat(weft_rows.len())
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Measured;

    fn row(rate: f64) -> Row {
        Row {
            server: "weft-kv".to_owned(),
            mix: 90,
            client: "wrk".into(),
            placement: String::new(),
            result: Ok((
                Measured {
                    rate,
                    ..Measured::default()
                },
                0.0,
                None,
            )),
        }
    }

    #[test]
    fn median_run_and_range() {
        let (mid, range) = median(vec![row(30.0), row(10.0), row(20.0)]);
        assert_eq!(mid.result.unwrap().0.rate, 20.0);
        assert_eq!(range, Some((10.0, 30.0)));
        let mut failed = row(0.0);
        failed.result = Err("did not start".into());
        let (shown, range) = median(vec![row(10.0), failed]);
        assert!(shown.result.is_err());
        assert_eq!(range, None);
    }
}
