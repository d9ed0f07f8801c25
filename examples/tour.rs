//! A tour of weft's model in a few seconds: loop-owned state with no locks,
//! work sent to threads and results sent back, panics and cancellation,
//! blocking calls into the loop, a clean shutdown, and the reactor's counters.
//! Run: `cargo run --release --example tour`
//!
//! Everything printed is printed on the loop thread (or by `main` after the
//! loop), so the report has the same shape on every run; only the numbers
//! (timings, thread names, counters) vary.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use weft::reactor::{Handle, Phase, SystemEvent};
use weft::{CallError, Cancelled, Deferred, Reactor, Resolver, ThreadError, ThreadPool};

/// Marks the panic the tour causes on purpose, so the panic hook stays quiet.
const DELIBERATE: &str = "(deliberate)";

fn main() -> ExitCode {
    quiet_deliberate_panics();
    match tour() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("tour: some check above did not hold");
            ExitCode::FAILURE
        }
        Err(msg) => {
            eprintln!("tour: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the tour; `Ok(false)` if an expectation did not hold.
fn tour() -> Result<bool, String> {
    let started = Instant::now();
    let reactor = Reactor::new().map_err(|e| format!("cannot create the reactor: {e}"))?;
    reactor
        .insert_local(Shared::new())
        .map_err(|e| format!("cannot install the loop state: {e}"))?;
    println!("weft tour: one loop thread owns the state; blocking work runs on threads");

    let mut ok = reactor
        .run_until_complete(sections())
        .map_err(|e| format!("the loop failed: {e}"))?;
    ok &= shutdown(&reactor)?;
    ok &= statistics(&reactor);
    println!();
    println!(
        "tour finished in {:.2} s: {}",
        started.elapsed().as_secs_f64(),
        if ok {
            "all checks held"
        } else {
            "SOME CHECKS FAILED"
        }
    );
    Ok(ok)
}

/// Sections 1 to 8, run on the loop as one local task.
async fn sections() -> bool {
    let mut ok = true;
    ok &= loop_state().await;
    ok &= in_thread_and_back().await;
    ok &= defer_awaited().await;
    ok &= defer_with_callback().await;
    ok &= panic_comes_back().await;
    ok &= cancel_queued().await;
    ok &= blocking_call_from_worker().await;
    ok &= coroutine_from_thread().await;
    ok
}

fn section(n: u32, title: &str) {
    println!();
    println!("[{n}] {title}");
}

fn check(ok: bool) -> &'static str {
    if ok { "ok" } else { "UNEXPECTED" }
}

/// The reactor whose loop runs this code.
fn here() -> Handle {
    weft::reactor::current().expect("the tour runs on the loop")
}

/// A `Deferred` that fires after `delay` (Twisted's `deferLater`).
fn sleep(delay: Duration) -> Deferred<(), Cancelled> {
    let d = Deferred::new();
    let r = d.resolver();
    here().call_later(delay, move || {
        let _ = r.callback(());
    });
    d
}

fn thread_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_owned()
}

// ---------------------------------------------------------------------------

async fn loop_state() -> bool {
    section(1, "loop state needs no lock");
    // `Rc<RefCell<..>>` is !Send: the compiler keeps it on this thread, and
    // every callback below runs here, one at a time.
    let order = Rc::new(RefCell::new(Vec::new()));
    let reactor = here();
    let push = |what: &'static str| {
        let order = order.clone();
        move || order.borrow_mut().push(what)
    };
    reactor.call_later(Duration::from_millis(3), push("timer 3 ms"));
    reactor.call_later(Duration::from_millis(1), push("timer 1 ms"));
    reactor.call_soon(push("call_soon"));
    let task = push("local task");
    reactor
        .spawn_local(async move {
            task();
        })
        .detach();
    let _ = sleep(Duration::from_millis(5)).await;
    let order = order.borrow();
    let ok = *order == ["call_soon", "local task", "timer 1 ms", "timer 3 ms"];
    println!("    4 callbacks shared one Rc<RefCell<Vec>>; they ran in turn order:");
    println!("    {}  [{}]", order.join(" -> "), check(ok));
    ok
}

// ---------------------------------------------------------------------------

/// Loop-owned state reached by `call_from_thread` closures: they are `Send`,
/// so they cannot carry an `Rc`; they find the state when they run, on the
/// loop thread, with `Handle::with_local`.
struct Shared {
    count: Cell<u64>,
    threads: RefCell<BTreeSet<String>>,
    jobs_left: Cell<usize>,
    all_done: RefCell<Option<Resolver<(), Cancelled>>>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            count: Cell::new(0),
            threads: RefCell::new(BTreeSet::new()),
            jobs_left: Cell::new(0),
            all_done: RefCell::new(None),
        }
    }
}

/// Runs `f` on the loop-owned `Shared`: the reactor's loop-local value, so
/// no `thread_local` is needed.
fn with_loop<R>(f: impl FnOnce(&Shared) -> R) -> R {
    here()
        .with_local(|s: &mut Shared| f(s))
        .expect("the tour's state is installed before the loop runs")
}

async fn in_thread_and_back() -> bool {
    const JOBS: usize = 4;
    const INCREMENTS: u64 = 1000;
    section(
        2,
        "call_in_thread, and call_from_thread back from the workers",
    );
    let done = Deferred::new();
    with_loop(|s| {
        s.jobs_left.set(JOBS);
        *s.all_done.borrow_mut() = Some(done.resolver());
    });
    let reactor = here();
    for _ in 0..JOBS {
        let remote = reactor.remote();
        let job = move || {
            for _ in 0..INCREMENTS {
                // Not thread-safe on its own; safe because it runs on the loop.
                let _ = remote.call_from_thread(|| with_loop(|s| s.count.set(s.count.get() + 1)));
            }
            let name = thread_name();
            let _ = remote.call_from_thread(move || {
                with_loop(|s| {
                    s.threads.borrow_mut().insert(name);
                    s.jobs_left.set(s.jobs_left.get() - 1);
                    if s.jobs_left.get() == 0 {
                        if let Some(r) = s.all_done.borrow_mut().take() {
                            let _ = r.callback(());
                        }
                    }
                });
            });
        };
        if reactor.call_in_thread(job).is_err() {
            println!("    the pool refused a job  [UNEXPECTED]");
            return false;
        }
    }
    let _ = done.await;
    let (count, threads) = with_loop(|s| (s.count.get(), s.threads.borrow().clone()));
    let expected = JOBS as u64 * INCREMENTS;
    let ok = count == expected;
    println!(
        "    {JOBS} pool jobs x {INCREMENTS} increments sent with call_from_thread: \
         count = {count} (expected {expected}, no lock)  [{}]",
        check(ok)
    );
    println!(
        "    the jobs ran on {} pool thread(s): {}",
        threads.len(),
        threads.into_iter().collect::<Vec<_>>().join(", ")
    );
    ok
}

// ---------------------------------------------------------------------------

fn count_primes(below: u64) -> u64 {
    (2..below)
        .filter(|&n| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

async fn defer_awaited() -> bool {
    section(3, "defer_to_thread, awaited: the loop stays free meanwhile");
    // A 1 ms ticker stands for the rest of the program.
    let ticks = Rc::new(Cell::new(0u64));
    let running = Rc::new(Cell::new(true));
    fn tick(ticks: Rc<Cell<u64>>, running: Rc<Cell<bool>>) {
        if running.get() {
            ticks.set(ticks.get() + 1);
            here().call_later(Duration::from_millis(1), move || tick(ticks, running));
        }
    }
    tick(ticks.clone(), running.clone());

    let t = Instant::now();
    let result = here()
        .defer_to_thread(|| (count_primes(300_000), thread_name()))
        .await;
    let elapsed = t.elapsed();
    running.set(false);
    match result {
        Ok((primes, name)) => {
            let ok = primes == 25_997;
            println!(
                "    primes below 300000: {primes}, computed on {name} in {} ms  [{}]",
                elapsed.as_millis(),
                check(ok)
            );
            println!(
                "    meanwhile the loop ran its 1 ms timer {} times",
                ticks.get()
            );
            ok
        }
        Err(e) => {
            println!("    the job failed: {e}  [UNEXPECTED]");
            false
        }
    }
}

// ---------------------------------------------------------------------------

async fn defer_with_callback() -> bool {
    section(4, "defer_to_thread with a callback (Twisted's addBoth)");
    let seen: Deferred<bool, Cancelled> = Deferred::new();
    let r = seen.resolver();
    here()
        .defer_to_thread(|| {
            std::thread::sleep(Duration::from_millis(20));
            format!("hello from {}", thread_name())
        })
        .add_both(move |result| {
            let on_loop = weft::reactor::is_in_io_thread();
            println!("    callback got {result:?}");
            println!("    and ran on the loop thread: {on_loop}");
            let _ = r.callback(result.is_ok() && on_loop);
        });
    let ok = seen.await == Ok(true);
    println!("    [{}]", check(ok));
    ok
}

// ---------------------------------------------------------------------------

async fn panic_comes_back() -> bool {
    section(
        5,
        "a panic in pool work comes back as ThreadError::Panicked",
    );
    let result: Result<u32, ThreadError> = here()
        .defer_to_thread(|| panic!("disk on fire {DELIBERATE}"))
        .await;
    let panicked = matches!(&result, Err(ThreadError::Panicked { message }) if message.contains("disk on fire"));
    println!("    awaiting it gave {result:?}  [{}]", check(panicked));
    let after = here().defer_to_thread(|| 6 * 7).await;
    let healthy = after == Ok(42);
    println!(
        "    the pool goes on: the next job gave {after:?}  [{}]",
        check(healthy)
    );
    panicked && healthy
}

// ---------------------------------------------------------------------------

async fn cancel_queued() -> bool {
    section(6, "cancelling a queued job: it never runs");
    let pool = match ThreadPool::new(1, 1) {
        Ok(pool) => Arc::new(pool),
        Err(e) => {
            println!("    cannot build a pool: {e}  [UNEXPECTED]");
            return false;
        }
    };
    pool.start();
    let reactor = here();
    let blocker = reactor.defer_to_thread_pool(&pool, || {
        std::thread::sleep(Duration::from_millis(50));
        "blocker finished"
    });
    let ran = Arc::new(AtomicBool::new(false));
    let victim = {
        let ran = ran.clone();
        reactor.defer_to_thread_pool(&pool, move || {
            ran.store(true, Ordering::SeqCst);
            "victim ran"
        })
    };
    println!(
        "    a 1-thread pool: one job running, one queued (backlog = {})",
        pool.statistics().backlog
    );
    victim.cancel();
    let victim = victim.await;
    let blocker = blocker.await;
    // Let the pool reach the cancelled job and skip it.
    for _ in 0..200 {
        let s = pool.statistics();
        if s.backlog == 0 && s.busy == 0 {
            break;
        }
        let _ = sleep(Duration::from_millis(1)).await;
    }
    let never_ran = !ran.load(Ordering::SeqCst);
    let ok = victim == Err(ThreadError::Cancelled) && blocker.is_ok() && never_ran;
    println!("    cancelled job: {victim:?}; running job: {blocker:?}");
    println!(
        "    the cancelled closure ran: {}  [{}]",
        !never_ran,
        check(ok)
    );
    pool.stop();
    ok
}

// ---------------------------------------------------------------------------

async fn blocking_call_from_worker() -> bool {
    section(
        7,
        "blocking_call_from_thread: a worker asks the loop and waits",
    );
    let remote = here().remote();
    let answer = here()
        .defer_to_thread(move || {
            // Read, then change, loop-owned state from a worker thread.
            let read = weft::blocking_call_from_thread(&remote, || with_loop(|s| s.count.get()));
            let doubled = weft::blocking_call_from_thread(&remote, || {
                with_loop(|s| {
                    s.count.set(s.count.get() * 2);
                    s.count.get()
                })
            });
            (read, doubled)
        })
        .await;
    let ok = match &answer {
        Ok((Ok(read), Ok(doubled))) => {
            println!("    the worker read the loop's count: {read}");
            println!("    then had the loop double it: {doubled}");
            *doubled == read * 2
        }
        other => {
            println!("    {other:?}");
            false
        }
    };
    // On the loop thread the same call would wait for itself: refused at once.
    let refused = weft::blocking_call_from_thread(&here().remote(), || ());
    let refused_ok = refused == Err(CallError::OnLoopThread);
    println!(
        "    called on the loop thread instead, it refuses at once: {refused:?}  [{}]",
        check(ok && refused_ok)
    );
    ok && refused_ok
}

// ---------------------------------------------------------------------------

async fn coroutine_from_thread() -> bool {
    section(
        8,
        "run_coroutine_threadsafe: another thread runs a future on the loop",
    );
    let remote = here().remote();
    let outcome = here()
        .defer_to_thread(move || {
            // Built on the loop, so the future may hold !Send state.
            let fut = remote.run_coroutine_threadsafe(|| {
                let local = Rc::new(Cell::new(20));
                async move {
                    let _ = sleep(Duration::from_millis(10)).await;
                    local.set(local.get() + 1);
                    local.get() * 2
                }
            });
            let value = fut.wait();
            // One that never finishes: time out waiting, then cancel it.
            let stuck = remote.run_coroutine_threadsafe(std::future::pending::<()>);
            let timed_out = stuck.wait_timeout(Duration::from_millis(20));
            let cancelled = stuck.cancel();
            let after_cancel = stuck.wait();
            (value, timed_out, cancelled, after_cancel)
        })
        .await;
    match outcome {
        Ok((value, timed_out, cancelled, after_cancel)) => {
            println!("    a future holding an Rc, awaited by a pool thread: {value:?}");
            println!(
                "    a future that never ends: wait_timeout gave {timed_out:?}, \
                 cancel() = {cancelled}, then wait() gave {after_cancel:?}"
            );
            let ok = value == Ok(42)
                && timed_out == Err(CallError::TimedOut)
                && cancelled
                && after_cancel == Err(CallError::Failed(ThreadError::Cancelled));
            println!("    [{}]", check(ok));
            ok
        }
        Err(e) => {
            println!("    the job failed: {e}  [UNEXPECTED]");
            false
        }
    }
}

// ---------------------------------------------------------------------------

fn shutdown(reactor: &Reactor) -> Result<bool, String> {
    const JOBS: u64 = 4;
    section(9, "a clean shutdown: results in flight are delivered");
    /// (job, result) in the order the results reached the loop.
    type Delivered = Rc<RefCell<Vec<(u64, Result<u64, ThreadError>)>>>;
    let delivered: Delivered = Rc::default();
    for i in 0..JOBS {
        let delivered = delivered.clone();
        reactor
            .defer_to_thread(move || {
                std::thread::sleep(Duration::from_millis(100 + 50 * i));
                i * i
            })
            .add_both(move |r| delivered.borrow_mut().push((i, r)));
    }
    let pool = reactor.thread_pool();
    let stopped_at = Rc::new(Cell::new(None));
    {
        let stopped_at = stopped_at.clone();
        reactor.call_later(Duration::from_millis(20), move || {
            stopped_at.set(Some(Instant::now()));
            println!("    stop() called with {JOBS} jobs running on the pool");
            here().stop();
        });
    }
    {
        let delivered = delivered.clone();
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
            println!(
                "    shutdown began: {} job(s) busy, {} result(s) delivered so far",
                pool.statistics().busy,
                delivered.borrow().len()
            );
        });
    }
    reactor.run().map_err(|e| format!("the loop failed: {e}"))?;
    let waited = stopped_at.get().map(|t| t.elapsed()).unwrap_or_default();
    let delivered = delivered.borrow();
    let values: Vec<String> = delivered
        .iter()
        .map(|(i, r)| match r {
            Ok(v) => format!("{i}->{v}"),
            Err(e) => format!("{i}->{e}"),
        })
        .collect();
    let ok = delivered.len() as u64 == JOBS && delivered.iter().all(|(i, r)| *r == Ok(i * i));
    println!(
        "    run() returned {} ms after stop(); {}/{JOBS} results delivered: {}  [{}]",
        waited.as_millis(),
        delivered.len(),
        values.join(", "),
        check(ok)
    );
    let late = reactor.remote().call_from_thread(|| ());
    let refused = late.is_err();
    println!(
        "    afterwards call_from_thread hands the closure back: {}  [{}]",
        match late {
            Ok(()) => "accepted".to_string(),
            Err(e) => e.to_string(),
        },
        check(refused)
    );
    Ok(ok && refused)
}

// ---------------------------------------------------------------------------

fn statistics(reactor: &Reactor) -> bool {
    section(10, "reactor statistics");
    let s = reactor.statistics();
    let p = reactor.thread_pool().statistics();
    println!(
        "    calls from threads: {:>6}   run on the loop: {:>6}",
        s.calls_from_thread, s.calls_run
    );
    println!(
        "    wake syscalls:      {:>6}   ({:.0} calls per wake: wakes are coalesced)",
        s.wake_syscalls,
        s.calls_from_thread as f64 / s.wake_syscalls.max(1) as f64
    );
    println!(
        "    loop turns:         {:>6}   timers fired: {:>6}   task polls: {:>6}",
        s.turns, s.timers_fired, s.tasks_polled
    );
    println!(
        "    pool jobs done:     {:>6}   pool threads left after shutdown: {}",
        p.completed, p.threads_alive
    );
    let ok = s.calls_run == s.calls_from_thread && s.wake_syscalls <= s.calls_from_thread;
    println!("    [{}]", check(ok));
    ok
}

/// Keeps the default panic message for real panics only.
fn quiet_deliberate_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("");
        if !message.contains(DELIBERATE) {
            default(info);
        }
    }));
}
