//! `weft-load`: an HTTP load generator for weft-kv, written on weft's client
//! side (weft's `TcpStream` + hyper's HTTP/1 client on one weft loop).
//!
//! ```text
//! cargo run --release -p weft-kv --bin weft-load -- [--url http://127.0.0.1:8080]
//!     [-c 64] [-d 10] [--reads 90] [--keys 10000] [--value 64] [--churn N]
//! ```

use std::process::ExitCode;
use std::time::Duration;

fn usage() -> ! {
    eprintln!(
        "usage: weft-load [--url http://HOST:PORT] [-c CONNS] [-d SECS] [--reads PCT] [--keys N] [--value BYTES] [--churn REQS_PER_CONN]"
    );
    std::process::exit(2);
}

fn main() -> ExitCode {
    let mut url = "http://127.0.0.1:8080".to_owned();
    let mut o = weft_kv::load::LoadOptions::new("127.0.0.1:8080".parse().unwrap());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--url" => url = val(),
            "-c" => o.connections = val().parse().unwrap_or_else(|_| usage()),
            "-d" => o.duration = Duration::from_secs_f64(val().parse().unwrap_or_else(|_| usage())),
            "--reads" => o.read_percent = val().parse().unwrap_or_else(|_| usage()),
            "--keys" => o.keys = val().parse().unwrap_or_else(|_| usage()),
            "--value" => o.value_size = val().parse().unwrap_or_else(|_| usage()),
            "--churn" => {
                o.requests_per_connection = Some(val().parse().unwrap_or_else(|_| usage()))
            }
            _ => usage(),
        }
    }
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    o.addr = match hostport.parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!("weft-load: --url needs a literal IP:PORT");
            return ExitCode::FAILURE;
        }
    };
    let (c, d, reads) = (o.connections, o.duration, o.read_percent);
    match weft_kv::load::run(o) {
        Ok(r) => {
            println!(
                "weft-load: {c} connections, {:.1} s, {reads}/{} read/write",
                d.as_secs_f64(),
                100 - reads
            );
            println!("| requests/s | p50 | p90 | p99 | max | requests | errors |");
            println!("|---|---|---|---|---|---|---|");
            let ms = |x: Duration| format!("{:.3} ms", x.as_secs_f64() * 1e3);
            println!(
                "| {:.0} | {} | {} | {} | {} | {} | {} |",
                r.rate(),
                ms(r.percentile(0.50)),
                ms(r.percentile(0.90)),
                ms(r.percentile(0.99)),
                ms(r.percentile(1.0)),
                r.requests,
                r.errors
            );
            match &r.server_loop {
                Some(l) => print_loop(l),
                None => println!("server loop: no weft statistics at /metrics"),
            }
            if r.errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("weft-load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What weft's own statistics saw of the server's loop during the run.
fn print_loop(l: &weft_kv::load::LoopReport) {
    let ms = |x: Duration| format!("{:.3} ms", x.as_secs_f64() * 1e3);
    println!(
        "server loop during the run (weft's statistics; quantiles are bucket upper bounds, high by < 2x):"
    );
    println!(
        "  timer lag (10 ms probe, {} ticks): p50 {} / p99 {} / max {}",
        l.lag_ticks,
        ms(l.lag_p50),
        ms(l.lag_p99),
        ms(l.lag_max)
    );
    println!(
        "  longest turn {} / longest callback {} (since the server started); slow callbacks +{}; stalls +{}",
        ms(l.longest_turn),
        ms(l.longest_callback),
        l.slow_callbacks,
        l.stalls
    );
    if let Some((p50, p99, max)) = l.turn {
        println!(
            "  loop turns: p50 {} / p99 {} / max {}",
            ms(p50),
            ms(p99),
            ms(max)
        );
    }
    for (i, p) in l.loops.iter().enumerate() {
        println!(
            "  loop {i}: {} requests, {} turns: turn p99 {} / max {}; lag probe p99 {} / max {}",
            p.requests,
            p.turns,
            ms(p.turn_p99),
            ms(p.turn_max),
            ms(p.lag_p99),
            ms(p.lag_max)
        );
    }
    if let Some(age) = l.inbox_oldest_age {
        println!("  inbox oldest age at the end: {}", ms(age));
    }
    // The turn histogram when the server has it, else the probe's lag.
    let worst = l.turn.map_or(l.lag_max, |t| t.2);
    // 2^20 ns: the histogram's bucket bound nearest 1 ms.
    let bound = Duration::from_nanos(1 << 20);
    if worst <= bound {
        println!("  loop stalled > 1 ms: no (worst below {})", ms(bound));
    } else {
        println!("  loop stalled > 1 ms: yes (worst below {})", ms(worst));
    }
}
