//! # weft-kv: a key-value HTTP service on weft
//!
//! The flagship example of issue 12: an HTTP/1.1 key-value store whose
//! network side runs on weft loops (one per core the database threads
//! leave: one on 2 cores) and whose storage runs
//! on `weft-db`'s SQLite threads.
//!
//! ## Design
//!
//! - **A loop owns each connection.** The accept loop and each
//!   connection are local tasks (`Handle::spawn_local`); a connection's
//!   state (hyper's buffers, the request in progress, its stall timer) is
//!   owned by its task. Shared server state is `Rc` + `Cell`/`RefCell`:
//!   no lock anywhere on the request path.
//! - **One loop or several** ([`Config::loops`]): each loop is a weft
//!   reactor on its own thread with its own listener on the same address
//!   (`SO_REUSEPORT`; the kernel spreads connections, and a loop holding
//!   more connections than another hands a new one over to it:
//!   [`Config::balance_loops`]). Loop 0 builds and
//!   closes the database pool; every loop calls it through weft-db's
//!   `SharedPool`, which hands each job straight to the connection threads
//!   and delivers the result on the calling loop (no hop through loop 0).
//!   A loop hands its jobs over once per turn, together: the connection
//!   thread wakes once and finds the turn's jobs queued, instead of
//!   preempting the loop on its core for every job (one loop, 90/10 under
//!   wrk on 2 cores: 0.6–1.0 context switches per request became
//!   0.15–0.3).
//!   `/metrics` on any loop sums all loops and shows each
//!   (`weft_kv_loop_*{loop="i"}`).
//! - **HTTP is hyper 1.x**, driven through its `rt` traits
//!   ([`rt::HyperIo`] over `weft::net::TcpStream`, [`rt::WeftTimer`] for the
//!   header timeout). HTTP/1 server connections need no executor.
//!   Keep-alive and pipelining are hyper's (see [`Config::pipeline_flush`]
//!   for why batching pipelined flushes is off by default).
//! - **Storage is `weft-db`** over SQLite in WAL mode: one writer thread and
//!   `readers` reader threads. Handlers await the pool's `Deferred`s, so the
//!   loop never blocks on SQL. A `PUT` is answered 200 only after its
//!   transaction committed. The `PUT`s and `DELETE`s a loop turn receives
//!   share one transaction, each in its own savepoint (group commit,
//!   [`weft_db::SharedPool::write_in_group`]): one commit per turn instead
//!   of one per write, each answered after that commit.
//! - **Timeouts hyper lacks** (spec net.md §4): a header timeout needs a
//!   timer (given); the body read timeout wraps body collection; the write
//!   stall timeout lives in [`rt::HyperIo`] (a peer that never reads is
//!   closed).
//! - **A live dashboard** at `GET /` ([`dashboard`]): one self-contained
//!   page that polls `/metrics` and charts requests/s, loop lag, the inbox
//!   and both pools.
//! - **Graceful shutdown** ([`ShutdownTrigger`], `SIGINT`/`SIGTERM` in the
//!   binary, handled on loop 0 by weft's signal handlers): every loop stops
//!   accepting (its listener is dropped), asks each of its connections to
//!   finish its in-flight request and close (hyper's `graceful_shutdown`)
//!   and waits for them (bounded by [`Config::drain_timeout`]); once every
//!   loop is done, loop 0 closes the pool (its threads finish queued work
//!   and close their connections) and [`run`] returns.
//!
//! ## Loop stalls
//!
//! Turns over 1 ms under load (`weft_kv_loop_turn_seconds`) measured on a
//! shared 2-core VM came from the scheduler, not from work on the loop:
//! - `perf sched timehist` of loop 0 during a 64-connection wrk run (3 s):
//!   93,738 runs, 57,170 of them ended by preemption, 34 scheduling delays
//!   over 1 ms (the longest 38 ms); the turn histogram counted 45 turns
//!   over 1 ms in that run (6 s). `/proc/PID/task/TID/schedstat`: 2.2 s
//!   waiting runnable beside 3.5 s on CPU, 111,000 involuntary switches.
//! - The same load with the loop thread under `SCHED_FIFO` (`chrt -f`):
//!   358,041 turns, none over 0.52 ms; 1 involuntary switch. With nice -10
//!   ([`Config::loop_nice`]): 16 turns over 1 ms instead of 45 (one loop),
//!   2 instead of 141 (two loops).
//!
//! So the bound holds when the loop threads get their CPU; on an
//! overcommitted machine no setting inside the process guarantees it.
//! Two unprivileged settings were measured (session 9, a 2-core VM shared
//! with other builds, load average 5–13, so the figures only rank them):
//! - [`Config::db_nice`] 5 (the database threads below the loops): fewer
//!   long turns in all four cells, but 0.6–0.9× the requests/s: the database
//!   threads are the bottleneck of both mixes, and nice 5 hands their CPU
//!   to the client and the other processes too. Off by default.
//! - [`Config::loop_slice`] (the loops' EEVDF slice, settable without
//!   privilege): 100 µs helped one loop in a first A/B (requests/s and p99
//!   better in 6 of 6 pairs), but in the load-test tables long turns were
//!   as often more frequent as less, with one loop or two, at 100 µs or
//!   300 µs: a busy loop with a short slice is also preempted sooner once
//!   it ran its slice. Off by default; the session 9 report has the tables.
//!
//! - [`Config::try_loop_nice`] (a raise tried, refused without privilege
//!   and reported in `weft_kv_loop_nice`): nice -10 (as root, session 10,
//!   90/10 with wrk, 3 alternating runs on a busy machine) cut the turns
//!   over 1 ms from 23–278 to 11–31 per 5 s, but the loop, always first
//!   on a core, ran smaller turns: its CPU per request rose from 11–15 µs
//!   to about 22 µs (less batching per turn, 3× the context switches) and
//!   requests/s fell to 0.57–0.75×. Off by default.
//!
//! - [`Config::loop_fifo`] (`SCHED_FIFO` on the loop threads, privileged;
//!   session 16, loop placed on a core of its own): no turn over 1.05 ms
//!   where the loop kept idle time, but a loop saturated by wrk exceeds
//!   the 95% of its core Linux gives real-time threads per second and is
//!   then held off for the rest of that second (turns of 23–47 ms).
//!   Off by default; the field's docs have the table.
//!
//! - [`Config::db_policy`] (`SCHED_BATCH` or `SCHED_IDLE` on the database
//!   threads, unprivileged; session 12, load average 8–16, 2 rounds × 4
//!   cells): `batch` did not change the late ticks or the run-queue wait
//!   beyond the noise; `idle` starves the database threads (2.3–8.4k
//!   requests/s, p99 84–430 ms). Off by default; the twin could use either
//!   on its blocking threads just as well.
//!
//! - [`Config::loop_cpus`] / [`Config::db_cpus`] (`--loop-cpus`,
//!   `--db-cpus`: CPU placement with `sched_setaffinity`, which needs no
//!   privilege: a thread may narrow its own CPUs; session 13). On a
//!   2-core machine shared with its load client the loop's stalls are
//!   preemption: unplaced, 92–99% of the loop thread's run-queue wait
//!   (0.9–1.2 s of 3 s, 90/10 under wrk, perf samples) was behind the
//!   client and its own database threads. With the loop alone on CPU 0
//!   and the client (kv-load's `--client-cpus 1`) and the database threads
//!   on CPU 1, none of it was: when nothing else ran on CPU 0 (5 of 24
//!   kv-load rows) the loop waited 13–88 ms per 8 s row (unplaced:
//!   1.0–4.1 s), with 0–6 late ticks waiting, and served 42–68k
//!   requests/s. But whenever another session's build ran on CPU 0 the
//!   placed loop waited 3–5 s per 8 s row (all of it behind other
//!   processes, in 3 ms waits), with 264–492 late ticks and 15–32k
//!   requests/s, where the unplaced loop lost only 14–58 ms per 3 s to
//!   other processes. Likely cause (not proven): with autogroups a
//!   session's threads share each CPU with other sessions by the
//!   session's load on that CPU, and the loop alone on CPU 0 is a small
//!   part of its session's load (the client and the database threads on
//!   CPU 1 are most of it). The loop and the database threads both on
//!   CPU 0 (`--db-cpus 0`, the client alone on CPU 1), in the same runs,
//!   had 0–106 late ticks per row (24 of 32 rows under 10) against 1–308
//!   (10 of 32 under 10) for the unplaced loop. Even in the placed rows
//!   that waited under 1 s, 9–50 turns per row went over 1.05 ms and a
//!   few late ticks were the loop's own (`working`, 0–3 per row): with 64
//!   connections, a turn that serves many of them at once (about 15 µs
//!   each) is close to 1 ms of work by itself (placed, at equal waits:
//!   57–157 turns over 1.05 ms with 64 connections, 15–26 with 16), a
//!   bound placement cannot remove. Neither split is even: per request
//!   the loop takes 9–17 µs of CPU, the database threads 4–7 µs and wrk
//!   7–14 µs (loop on 0, database and client on 1: CPU 1 carries 16–21 µs
//!   against CPU 0's 15–17). All figures are from a VM loaded by other
//!   sessions (load average 1–10; advisory). On the quiet machine at the
//!   end of session 13 (2 rounds, client on CPU 1): the loop alone on
//!   CPU 0 with the database on CPU 1 waited 29–36 ms per 10 s row
//!   (unplaced 2.1–2.5 s), yet 11–22 turns per row still went over
//!   1.05 ms (longest 2.8–3.9 ms), with 1–5 late ticks, at 0.73–1.05× the
//!   unplaced default's requests/s: the 1 ms bound is not met this way.
//!   Since session 13 weft also bounds a turn's task pass
//!   ([`Config::task_pass_budget`], `--task-pass-us`, weft's 500 µs by
//!   default), so the remaining long turns are not one pass over every
//!   ready connection either. Session 14 split every turn over 1.05 ms
//!   of the placed loop into its parts (`kv/tools/long_turns.sh`: a
//!   build that lists the long turns, perf on CPU 0 on the same clock,
//!   the thread's CPU time; 171 long turns in four 3 s recordings, 90/10
//!   and 10/90 under wrk, load average 3–12 from other sessions): in
//!   none was the loop's own work (user code and syscalls) the largest
//!   part; it was 0.10–0.17 ms per long turn at the median and never
//!   over 0.38 ms. The largest part was: preempted by other processes
//!   on CPU 0 in 117, by a kernel thread there (ksoftirqd, rcu_preempt,
//!   a kworker, migration) in 31, blocked in 15 (14 of them in a futex
//!   wait: a lock held by a thread on CPU 1, preempted there), and steal
//!   (the vCPU not running, invisible to the guest's scheduler) in 8.
//!   The loop's futex waits over 0.5 ms (`kv/tools/loop_lock_waits.sh`,
//!   three 3 s recordings) were on the database hand-over's queue lock
//!   (`BlockingQueue::hand_over`: 6, up to 3.7 ms), the inbox's lane lock
//!   (2, up to 7.8 ms) and a database job's result lock (`poll_take`: 1,
//!   4.7 ms): short critical sections, long only when their holder is
//!   preempted while it holds one (seen: the database writer thread,
//!   preempted on CPU 1 with the queue lock held, back 3.8 ms later). No
//!   long turn had a page fault, and in none were the interrupts and
//!   softirqs taken on the loop's CPU the largest part.
//!   So on a quiet machine what remains is kernel threads on the loop's
//!   CPU, steal, and lock holders preempted on the other CPU. Since then
//!   the loop waits for none of those locks: an inbox lane a producer
//!   holds is left for the next turn; the database hand-over skips a
//!   connection thread's queue whose lock is held (its jobs stay on the
//!   loop, first in line, and the next turn offers them again); and a
//!   job's closure and outcome move through a state word, not a lock
//!   (session 15: `loop_lock_waits.sh`, ten 3 s recordings each, 90/10
//!   and 10/90, the loop's futex waits on these two locks went from 93,
//!   9 of them over 0.5 ms and up to 5.0 ms, to none). What remains is
//!   outside the process: other processes and kernel threads on the
//!   loop's CPU, and steal.
//!   Off by default; kv-load's `--client-cpus` and `--extra`/`--extra-twin`
//!   rows measure it beside the twins, which can be placed the same way
//!   (`kv-tokio --worker-cpus / --blocking-cpus`).
//!
//! Who holds the loop off its core (`kv/tools/loop_waits.sh`: perf's
//! scheduler events during a wrk run, each wait of the loop thread charged
//! to what ran on the CPU it then ran on; session 12, eight 3 s samples,
//! 90/10, the settings above, load average 9–12 from other sessions'
//! builds): the loop waited 17–63% of the time, in waits of 15–65 µs on
//! average, behind the load client and its own database threads; but of
//! the waits over 1 ms (2.6 s in all) 96% were behind other processes.
//! With autogroups (each session one scheduling group) the loop's share
//! against those is its session's, which no setting inside the process
//! changes; on a machine running only the server and its client the
//! remaining waits are the short ones.
//!
//! Each loop's lag probe tells its late ticks apart
//! (`weft_kv_loop_late_ticks_{waiting,working}_total`): a tick over 1 ms
//! late counts as waiting when the loop thread spent at least half of the
//! lateness runnable but off its core (its own
//! `/proc/thread-self/schedstat`, read once per tick). In session 10's wrk
//! runs (busy machine, 4 × 2 mixes) 354 late ticks were waiting and 1
//! working: the long turns are the scheduler's, not the loop's work.
//! Turns over 1 ms per loop during a run are in `bench/kv-load.sh`'s
//! table (weft's turn histogram, scraped before and after the client).
//! `bench/kv-load.sh` prints each weft-kv row's loop-thread run-queue
//! wait and preemptions beside its longest turns.
//!
//! What is left is the machine's (session 18). With a core kept for the
//! loop (`bench/host-tune.sh apply`: interrupts, unbound workqueues and
//! every other thread moved off it, the real-time throttle lifted) and
//! the loop placed there under [`Config::loop_fifo`], 40 s of wrk gave
//! 3–7 turns over 1.05 ms, while a thread doing nothing but read the
//! clock on that core (`bench`'s `cpu-gaps`, same load on the other CPU)
//! was stopped for over 1 ms 4–18 times per 40 s, with no guest event
//! inside the gap: the hypervisor had taken the vCPU. Split per turn
//! (`kv/tools/long_turns.sh`, which counts stretches with no event on the
//! CPU as the vCPU gone), all 21 long turns of 100 s were mostly such
//! stretches, and the loop's own work in them was at most 269 µs. On a
//! host of one's own the same core is kept with `isolcpus`/`nohz_full`
//! and no vCPU overcommit.
//!
//! ## Invariants
//! - Every `PUT`/`DELETE`/batch answered 2xx was committed before the answer
//!   was written.
//! - After [`ShutdownTrigger::trigger`], no new connection is accepted and
//!   [`run`] returns only once the pool is closed.
//!
//! # Examples
//!
//! ```
//! use weft_kv::{Config, run};
//!
//! let dir = std::env::temp_dir().join(format!("weft-kv-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let mut cfg = Config::default();
//! cfg.listen = "127.0.0.1:0".parse().unwrap();
//! cfg.db_path = dir.join("kv.sqlite3");
//! run(cfg, |ready| {
//!     // Serve nothing: stop at once.
//!     ready.shutdown.trigger();
//! })
//! .unwrap();
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

mod config;
pub mod cpus;
pub mod dashboard;
pub mod load;
mod loops;
pub mod metrics;
pub mod routes;
pub mod rt;
pub mod sched;
mod server;

pub use config::{Config, DbPolicy, default_loops, default_readers};

/// Starts a graceful shutdown from any thread (`Clone + Send + Sync`).
///
/// # Examples
///
/// ```
/// let t = weft_kv::ShutdownTrigger::new();
/// assert!(!t.is_triggered());
/// t.trigger();
/// assert!(t.is_triggered());
/// ```
#[derive(Clone, Debug, Default)]
pub struct ShutdownTrigger {
    inner: Arc<TriggerInner>,
}

#[derive(Debug, Default)]
struct TriggerInner {
    fired: AtomicBool,
    /// One waker per waiting task (one accept loop per server loop).
    wakers: Mutex<Vec<Waker>>,
}

impl ShutdownTrigger {
    /// A trigger not yet fired.
    ///
    /// # Examples
    ///
    /// See [`ShutdownTrigger`].
    pub fn new() -> ShutdownTrigger {
        ShutdownTrigger::default()
    }

    /// Starts the shutdown (idempotent).
    ///
    /// # Examples
    ///
    /// See [`ShutdownTrigger`].
    pub fn trigger(&self) {
        self.inner.fired.store(true, Ordering::Release);
        let wakers = match self.inner.wakers.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Whether [`trigger`](Self::trigger) was called.
    ///
    /// # Examples
    ///
    /// See [`ShutdownTrigger`].
    pub fn is_triggered(&self) -> bool {
        self.inner.fired.load(Ordering::Acquire)
    }

    pub(crate) fn poll(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.is_triggered() {
            return Poll::Ready(());
        }
        let mut g = match self.inner.wakers.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !g.iter().any(|w| w.will_wake(cx.waker())) {
            g.push(cx.waker().clone());
        }
        drop(g);
        if self.is_triggered() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// What [`run`] hands its `on_ready` callback once it serves.
#[derive(Debug)]
#[non_exhaustive]
pub struct Ready {
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    /// Fires the graceful shutdown.
    pub shutdown: ShutdownTrigger,
}

/// Why [`run`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Binding, the reactor or the signal handlers failed.
    Io(std::io::Error),
    /// The database could not be set up.
    Db(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Db(e) => write!(f, "database error: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

/// What a finished [`run`] reports.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Summary {
    /// Connections accepted over the run.
    pub connections: u64,
    /// Connections still open when the drain timeout ended the wait.
    pub abandoned: u64,
}

/// Runs the server on a new reactor on this thread until its shutdown
/// trigger fires (or a signal, with [`Config::handle_signals`]); see the
/// crate docs for the sequence. `on_ready` runs on the loop once the
/// listener is bound and the table exists.
///
/// # Errors
///
/// [`Error::Io`] if the reactor or the listener cannot be set up, or (with
/// [`Config::handle_signals`]) the signal handlers cannot be installed, e.g.
/// because another reactor of the process handles SIGINT or SIGTERM;
/// [`Error::Db`] if the database cannot be opened.
///
/// # Examples
///
/// See the crate docs.
pub fn run(config: Config, on_ready: impl FnOnce(&Ready) + 'static) -> Result<Summary, Error> {
    // Before anything changes this thread: the set every list is checked
    // against and every other thread goes back to.
    let placement = cpus::Placement::new(&config)?;
    // Loop 0 is the caller's thread: whatever `run` returns, early or
    // not, it gets its own policy back.
    let _policy = config
        .loop_fifo
        .map(|_| sched::SavedPolicy::of_this_thread());
    if config.loop_fifo.is_some() && config.loop_cpus.is_none() {
        tracing::warn!(
            "real-time loops without --loop-cpus share their cores with the threads that feed them \
             and serve fewer requests (see Config::loop_fifo)"
        );
    }
    let reactor = build_reactor(&config)?;
    // After the build: the loop's watchdog thread keeps the original set.
    if let Err(e) = placement.place_loop() {
        let _ = placement.unplace();
        return Err(e.into());
    }
    let shutdown = ShutdownTrigger::new();
    let threads = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let r = reactor
        .run_until_complete(server::serve(
            config,
            placement.clone(),
            shutdown,
            on_ready,
            threads.clone(),
        ))
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())));
    // The other loops reported Done (or never started): they only tear
    // down their reactors now.
    for t in threads.take() {
        let _ = t.join();
    }
    drop(reactor);
    let _ = placement.unplace();
    r?
}

/// One loop's reactor, as the config asks, with this thread's nice value
/// set when the config has one.
pub(crate) fn build_reactor(config: &Config) -> std::io::Result<weft::Reactor> {
    if let Some(slice) = config.loop_slice {
        if !(sched::MIN_SLICE..=sched::MAX_SLICE).contains(&slice) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("loop slice {slice:?} is outside 0.1..=100 ms"),
            ));
        }
        // A hint: a kernel without custom slices keeps its default.
        if let Err(e) = sched::set_thread_slice(slice) {
            tracing::warn!(?slice, error = %e, "cannot set the loop thread's scheduling slice");
        }
    }
    if let Some(n) = config.loop_nice {
        // The kernel would clamp silently: refuse instead.
        if !(-20..=19).contains(&n) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("loop nice value {n} is outside -20..=19"),
            ));
        }
        // `None`: the calling thread (Linux keeps nice values per thread).
        rustix::process::setpriority_process(None, n).map_err(|e| {
            std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!("cannot set the loop thread's nice value to {n}: {e}"),
            )
        })?;
    }
    if let Some(n) = config.try_loop_nice {
        if !(-20..=19).contains(&n) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("loop nice value {n} is outside -20..=19"),
            ));
        }
        if let Err(e) = rustix::process::setpriority_process(None, n) {
            let now = rustix::process::getpriority_process(None).ok();
            tracing::warn!(
                wanted = n,
                runs_at = ?now,
                error = %e,
                "the loop thread may not take this nice value; it runs at its own"
            );
        }
    }
    if let Some(priority) = config.loop_fifo {
        sched::set_this_thread_fifo(priority).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot run the loop thread under SCHED_FIFO: {e}"),
            )
        })?;
    }
    weft::Reactor::builder()
        .slow_callback_threshold(config.slow_callback_threshold)
        .task_pass_budget(config.task_pass_budget)
        .build()
}
