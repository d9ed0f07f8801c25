//! Producer threads feed the loop through a bounded hand-off with backpressure;
//! the counter the loop updates stays exact with no lock, shown beside a
//! `Mutex<u64>` counter on plain threads and a racy unlocked one.
//! Run: `cargo run --release --example producer_consumer` (options:
//! `-- --producers 4 --items 100000 --in-flight 64`)
//!
//! Each item travels as one `call_from_thread`. Before sending, a producer
//! takes a credit from a small Condvar-based counter that starts at K and
//! blocks while none is left; the loop hands the credit back once it has
//! consumed the item (once per loop turn, for the whole batch the turn
//! consumed). So at most K items are ever in flight, however fast the
//! producers are, and the loop's inbox cannot grow without bound.
//!
//! The loop-side counter is plain loop-owned state, the reactor's loop-local
//! `Tally` (`call_from_thread` closures are `Send`, so they cannot capture
//! it; they reach it with `Handle::with_local` when they run, on the loop
//! thread). It is exact because only the loop touches it, not because of a
//! lock.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use weft::{Reactor, Remote};

const USAGE: &str = "usage: producer_consumer [--producers N] [--items M] [--in-flight K]";

struct Config {
    producers: usize,
    items: u64,
    in_flight: usize,
}

fn main() -> ExitCode {
    let config = match parse_args() {
        Ok(Some(c)) => c,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("producer_consumer: {msg}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let expected = config.producers as u64 * config.items;
    println!(
        "producer_consumer: {} producers x {} items, at most {} in flight to the loop",
        config.producers, config.items, config.in_flight
    );

    let on_loop = match loop_counter(&config) {
        Ok(r) => r,
        Err(msg) => {
            eprintln!("producer_consumer: {msg}");
            return ExitCode::FAILURE;
        }
    };
    let locked = locked_counter(&config);
    let racy = racy_counter(&config);

    println!();
    println!(
        "  {:<32} {:>8}   {:>8}   {:<5} {:>8}",
        "counter", "total", "expected", "exact", "time"
    );
    for (name, (total, elapsed)) in [
        ("on the loop (no lock)", (on_loop.total, on_loop.elapsed)),
        ("Mutex<u64> on plain threads", locked),
        ("racy load+store on plain threads", racy),
    ] {
        let exact = if total == expected { "yes" } else { "no" };
        println!(
            "  {name:<32} {total:>8}   {expected:>8}   {exact:<5} {:>5} ms",
            elapsed.as_millis()
        );
    }
    if racy.0 != expected {
        println!(
            "  (the racy counter lost {} updates: c = c + 1 from several threads)",
            expected.saturating_sub(racy.0)
        );
    }
    println!();
    println!(
        "backpressure: at most {} items were in flight (limit {}); producers waited for a \
         credit {} times",
        on_loop.max_in_flight, config.in_flight, on_loop.credit_waits
    );
    println!(
        "order: {}",
        if on_loop.in_order {
            "every producer's items reached the loop in the order they were sent"
        } else {
            "OUT OF ORDER (a bug)"
        }
    );
    println!(
        "reactor: {} calls from threads, {} wake syscalls, {} loop turns",
        on_loop.calls_from_thread, on_loop.wake_syscalls, on_loop.turns
    );
    println!();
    println!(
        "The loop counter pays for moving every item to another thread; the Mutex counter\n\
         only increments. What the loop buys is that its state needs no lock at all, and\n\
         can be anything (Rc, RefCell, a socket) since only the loop thread touches it."
    );

    let ok = on_loop.total == expected
        && locked.0 == expected
        && on_loop.in_order
        && on_loop.max_in_flight <= config.in_flight;
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_args() -> Result<Option<Config>, String> {
    let mut config = Config {
        producers: 4,
        items: 100_000,
        in_flight: 64,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&n| n > 0)
                .ok_or(format!("{name} needs a whole number above 0"))
        };
        match arg.as_str() {
            "--producers" => {
                config.producers = usize::try_from(number("--producers")?)
                    .map_err(|_| "--producers is too large".to_string())?;
            }
            "--items" => config.items = number("--items")?,
            "--in-flight" => {
                config.in_flight = usize::try_from(number("--in-flight")?)
                    .map_err(|_| "--in-flight is too large".to_string())?;
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(config))
}

/// A counting semaphore: producers take credits, the loop gives them back.
struct Credits {
    available: Mutex<usize>,
    returned: Condvar,
    waits: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Credits {
    fn new(n: usize) -> Credits {
        Credits {
            available: Mutex::new(n),
            returned: Condvar::new(),
            waits: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    /// Blocks until a credit is free, then takes it.
    fn acquire(&self) {
        // The guarded value is a plain count: a panic elsewhere cannot leave
        // it inconsistent, so a poisoned lock is still usable.
        let mut available = self
            .available
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *available == 0 {
            self.waits.fetch_add(1, Ordering::Relaxed);
            while *available == 0 {
                available = self
                    .returned
                    .wait(available)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        *available -= 1;
        drop(available);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
    }

    /// Gives `n` credits back (called on the loop once items are consumed).
    fn release(&self, n: usize) {
        self.in_flight.fetch_sub(n, Ordering::Relaxed);
        *self
            .available
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += n;
        if n == 1 {
            self.returned.notify_one();
        } else {
            self.returned.notify_all();
        }
    }
}

/// The loop's own state: touched only on the loop thread, so no lock.
#[derive(Default)]
struct Tally {
    total: u64,
    /// The next sequence number expected from each producer.
    next_seq: Vec<u64>,
    in_order: bool,
    expected: u64,
    /// Credits for items consumed this turn, not yet given back.
    owed: usize,
}

/// On the loop: consume one item.
fn consume(producer: usize, seq: u64, credits: Arc<Credits>) {
    let reactor = weft::reactor::current().expect("items are consumed on the loop");
    let (first_owed, all_done) = reactor
        .with_local(|t: &mut Tally| {
            t.total += 1;
            if t.next_seq[producer] != seq {
                t.in_order = false;
            }
            t.next_seq[producer] = seq + 1;
            t.owed += 1;
            (t.owed == 1, t.total == t.expected)
        })
        .expect("the tally is inserted before the loop runs");
    // Give the credits back once per loop turn, after the turn's batch of
    // items, rather than waking a producer for every item.
    if first_owed {
        let h = reactor.clone();
        reactor.call_soon(move || {
            let owed = h
                .with_local(|t: &mut Tally| std::mem::take(&mut t.owed))
                .unwrap_or(0);
            credits.release(owed);
        });
    }
    if all_done {
        reactor.stop();
    }
}

fn produce(producer: usize, items: u64, remote: &Remote, credits: &Arc<Credits>) {
    for seq in 0..items {
        credits.acquire();
        let credits = credits.clone();
        if remote
            .call_from_thread(move || consume(producer, seq, credits))
            .is_err()
        {
            eprintln!("producer_consumer: producer {producer}: the loop stopped early");
            return;
        }
    }
}

struct LoopRun {
    total: u64,
    elapsed: Duration,
    max_in_flight: usize,
    credit_waits: u64,
    in_order: bool,
    calls_from_thread: u64,
    wake_syscalls: u64,
    turns: u64,
}

fn loop_counter(config: &Config) -> Result<LoopRun, String> {
    let reactor = Reactor::new().map_err(|e| format!("cannot create the reactor: {e}"))?;
    reactor
        .insert_local(Tally {
            in_order: true,
            expected: config.producers as u64 * config.items,
            next_seq: vec![0; config.producers],
            ..Tally::default()
        })
        .map_err(|e| format!("cannot store the tally: {e}"))?;
    let credits = Arc::new(Credits::new(config.in_flight));

    let started = Instant::now();
    let mut producers = Vec::new();
    for p in 0..config.producers {
        let remote = reactor.remote();
        let credits = credits.clone();
        let items = config.items;
        let handle = thread::Builder::new()
            .name(format!("producer-{p}"))
            .spawn(move || produce(p, items, &remote, &credits))
            .map_err(|e| format!("cannot start a producer thread: {e}"))?;
        producers.push(handle);
    }
    reactor.run().map_err(|e| format!("the loop failed: {e}"))?;
    let elapsed = started.elapsed();
    for handle in producers {
        handle
            .join()
            .map_err(|_| "a producer thread panicked".to_string())?;
    }
    let stats = reactor.statistics();
    let (total, in_order) = reactor
        .with_local(|t: &mut Tally| (t.total, t.in_order))
        .map_err(|e| format!("the tally is gone: {e}"))?;
    Ok(LoopRun {
        total,
        elapsed,
        max_in_flight: credits.max_in_flight.load(Ordering::Relaxed),
        credit_waits: credits.waits.load(Ordering::Relaxed),
        in_order,
        calls_from_thread: stats.calls_from_thread,
        wake_syscalls: stats.wake_syscalls,
        turns: stats.turns,
    })
}

/// The classic fix: every thread increments under a lock.
fn locked_counter(config: &Config) -> (u64, Duration) {
    let counter = Mutex::new(0u64);
    let start_line = Barrier::new(config.producers);
    let started = Instant::now();
    thread::scope(|s| {
        for _ in 0..config.producers {
            s.spawn(|| {
                start_line.wait();
                for _ in 0..config.items {
                    *counter.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                }
            });
        }
    });
    let total = counter.into_inner().unwrap_or_else(PoisonError::into_inner);
    (total, started.elapsed())
}

/// The seed's `c = c + x` on several threads: a read, then a write, with no
/// lock between them (safe Rust, but updates get lost).
fn racy_counter(config: &Config) -> (u64, Duration) {
    let counter = AtomicU64::new(0);
    // Start together, or short runs finish before the next thread starts.
    let start_line = Barrier::new(config.producers);
    let started = Instant::now();
    thread::scope(|s| {
        for _ in 0..config.producers {
            s.spawn(|| {
                start_line.wait();
                for _ in 0..config.items {
                    let c = counter.load(Ordering::Relaxed);
                    counter.store(c + 1, Ordering::Relaxed);
                }
            });
        }
    });
    (counter.into_inner(), started.elapsed())
}
