//! A loop keeps ticking every millisecond while a 2-second blocking call runs
//! on the thread pool; with `--on-loop` the same call runs on the loop and the
//! ticks stop. Run: `cargo run --release --example counter` (or
//! `cargo run --release --example counter -- --on-loop`)
//!
//! This is the seed program "a synchronous call blocks the event loop" (asyncio's
//! `requests.get` inside a coroutine versus `run_in_executor`), in weft terms:
//! a blocking call made on the loop freezes every timer, callback and task;
//! the same call handed to [`defer_to_thread`](weft::reactor::Handle::defer_to_thread)
//! leaves the loop free, and its result comes back to the loop as a `Deferred`.
//!
//! Expect a little under 1000 ticks/s even when the loop is free: the loop
//! sleeps in `epoll_wait`, whose timeout has millisecond resolution, so a
//! 1 ms timer sometimes fires late enough to miss a grid point.

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use weft::{Cancelled, Deferred, Reactor};

/// How long the blocking call takes (it stands for blocking I/O).
const BLOCKING: Duration = Duration::from_secs(2);
/// The tick period.
const TICK: Duration = Duration::from_millis(1);
/// How long to tick before and after the blocking call, for a baseline.
const QUIET: Duration = Duration::from_millis(250);

fn main() -> ExitCode {
    let on_loop = match parse_args() {
        Ok(on_loop) => on_loop,
        Err(msg) => {
            eprintln!("counter: {msg}");
            eprintln!("usage: counter [--on-loop]");
            return ExitCode::from(2);
        }
    };
    let reactor = match Reactor::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("counter: cannot create the reactor: {e}");
            return ExitCode::FAILURE;
        }
    };

    // Loop-owned state: an `Rc<Cell>` is enough, only the loop touches it.
    let ticks = Rc::new(Cell::new(0u64));
    tick(ticks.clone(), reactor.seconds());

    let place = if on_loop {
        "on the loop thread"
    } else {
        "on the thread pool"
    };
    println!("counter: ticking every {TICK:?}; a {BLOCKING:?} blocking call runs {place}");
    let outcome = reactor.run_until_complete(measure(ticks, on_loop));
    match outcome {
        Ok(Ok(m)) => {
            m.report(on_loop);
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("counter: the blocking call failed: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("counter: the loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<bool, String> {
    let mut on_loop = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--on-loop" => on_loop = true,
            "-h" | "--help" => {
                println!("usage: counter [--on-loop]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(on_loop)
}

/// Counts one tick and re-arms itself on a fixed grid, skipping the grid
/// points it missed (as Twisted's `LoopingCall` does), so lateness neither
/// accumulates nor comes back as a burst of catch-up ticks.
fn tick(ticks: Rc<Cell<u64>>, due: Duration) {
    ticks.set(ticks.get() + 1);
    let reactor = weft::reactor::current().expect("ticks run on the loop");
    let now = reactor.seconds();
    let mut next = due + TICK;
    if next <= now {
        let missed = (now - next).as_nanos() / TICK.as_nanos() + 1;
        next += TICK * u32::try_from(missed).unwrap_or(u32::MAX);
    }
    reactor.call_later(next - now, move || tick(ticks, next));
}

/// A `Deferred` that fires after `delay` (Twisted's `deferLater`).
fn sleep(delay: Duration) -> Deferred<(), Cancelled> {
    let d = Deferred::new();
    let r = d.resolver();
    weft::reactor::current()
        .expect("sleep is called on the loop")
        .call_later(delay, move || {
            let _ = r.callback(());
        });
    d
}

/// Stands for a blocking read, a DNS lookup, a `requests.get`.
fn blocking_call() -> &'static str {
    std::thread::sleep(BLOCKING);
    "2 seconds have passed"
}

struct Measurement {
    before: (u64, Duration),
    during: (u64, Duration),
    after: (u64, Duration),
    result: &'static str,
}

async fn measure(ticks: Rc<Cell<u64>>, on_loop: bool) -> Result<Measurement, weft::ThreadError> {
    let span = |from: u64, started: Instant| (ticks.get() - from, started.elapsed());

    let (t, n) = (Instant::now(), ticks.get());
    let _ = sleep(QUIET).await;
    let before = span(n, t);

    let (t, n) = (Instant::now(), ticks.get());
    let result = if on_loop {
        // The mistake: a blocking call made on the loop thread.
        blocking_call()
    } else {
        let reactor = weft::reactor::current().expect("measure runs on the loop");
        reactor.defer_to_thread(blocking_call).await?
    };
    let during = span(n, t);

    let (t, n) = (Instant::now(), ticks.get());
    let _ = sleep(QUIET).await;
    let after = span(n, t);

    Ok(Measurement {
        before,
        during,
        after,
        result,
    })
}

impl Measurement {
    fn report(&self, on_loop: bool) {
        println!("blocking call returned: {:?}", self.result);
        println!();
        println!("  phase                    ticks   elapsed   ticks/s");
        for (name, (n, d)) in [
            ("before the call", self.before),
            ("during the call", self.during),
            ("after the call", self.after),
        ] {
            let rate = n as f64 / d.as_secs_f64();
            println!(
                "  {name:<22} {n:>7}   {:>5.0} ms   {rate:>7.0}",
                d.as_secs_f64() * 1e3
            );
        }
        println!();
        let (during, elapsed) = self.during;
        let (base_n, base_d) = self.before;
        let expected = (base_n as f64 / base_d.as_secs_f64() * elapsed.as_secs_f64()).round();
        if on_loop {
            println!(
                "on the loop: {during} ticks during the call (about {expected} expected at the \
                 baseline rate); the loop was frozen for {:.1} s",
                elapsed.as_secs_f64()
            );
            println!("run without --on-loop to see the ticks go on");
        } else {
            println!(
                "on the pool: {during} ticks during the call (about {expected} expected at the \
                 baseline rate); the loop never stopped"
            );
            println!("run with --on-loop to see what a blocking call on the loop does");
        }
    }
}
