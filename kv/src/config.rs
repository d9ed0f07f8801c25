//! The server's settings ([`Config`]) and their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cpus;

/// The server's settings.
///
/// # Examples
///
/// ```
/// let cfg = weft_kv::Config::default();
/// assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// SQLite file.
    pub db_path: PathBuf,
    /// Reader connections (each on its own thread); one writer besides.
    /// Default: [`default_readers`], the cores the loop leaves free.
    pub readers: usize,
    /// Largest value a `PUT` may carry (413 above it).
    pub max_value_bytes: usize,
    /// Largest request head (431 above it).
    pub max_header_bytes: usize,
    /// A request head must arrive within this (slowloris); also closes
    /// idle keep-alive connections.
    pub header_read_timeout: Duration,
    /// A request body must arrive within this (408).
    pub body_read_timeout: Duration,
    /// A connection whose writes make no progress for this long is closed.
    pub write_stall_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Handle SIGINT/SIGTERM on the loop (weft's signal handlers): the
    /// first starts the graceful shutdown, a second exits at once (status 1).
    pub handle_signals: bool,
    /// The loop's slow-callback threshold (weft's diagnostics; `None`: off).
    /// On, it also feeds the `weft_reactor_longest_*` and
    /// `weft_reactor_slow_callbacks_total` series.
    pub slow_callback_threshold: Option<Duration>,
    /// How long one turn's pass over the loop's ready tasks (connections)
    /// may run before the loop goes back to its timers and its poll
    /// ([`weft::reactor::Builder::task_pass_budget`]; `None`: no bound).
    /// Default: weft's, [`weft::reactor::DEFAULT_TASK_PASS_BUDGET`].
    pub task_pass_budget: Option<Duration>,
    /// Loops serving HTTP, each a weft reactor on its own thread with its
    /// own listener on the same address (`SO_REUSEPORT` when above 1); loop
    /// 0 owns the database pool, and every loop calls it directly (weft-db's
    /// `SharedPool`). Default: [`default_loops`].
    pub loops: usize,
    /// The nice value of every loop thread (`None`: leave it). Lower is
    /// more CPU: on a machine with more runnable threads than cores the
    /// scheduler preempts the loop mid-turn (the cause of turns over 1 ms
    /// measured so far: see "Loop stalls" in the crate docs), and a
    /// negative value makes that rarer.
    /// Negative values need `CAP_SYS_NICE` (or `RLIMIT_NICE`); [`run`](crate::run)
    /// fails if the value cannot be set or is outside `-20..=19`. Loop 0 is the thread that calls
    /// [`run`](crate::run): it keeps the value afterwards.
    pub loop_nice: Option<i32>,
    /// A nice value each loop thread tries to take (`None`: none tried).
    /// Unlike [`Config::loop_nice`] a refusal is not an error: without
    /// `CAP_SYS_NICE` (or a matching `RLIMIT_NICE`) a negative value is
    /// refused, logged once per loop, and the loop runs at the value it
    /// had. The value each loop runs at is in `/metrics`
    /// (`weft_kv_loop_nice`), so a deployment can see whether it took.
    /// Must be within `-20..=19` ([`run`](crate::run) fails otherwise). Applied after
    /// `loop_nice`.
    pub try_loop_nice: Option<i32>,
    /// Runs every loop thread under the real-time `SCHED_FIFO` policy at
    /// this priority (`None`, the default: the ordinary fair policy), via
    /// [`sched::set_this_thread_fifo`](crate::sched::set_this_thread_fifo):
    /// no ordinary thread or process then preempts a loop mid-turn, so a
    /// turn is held up only by its own work, by higher real-time threads
    /// and by the hypervisor. Threads a loop starts (the database's) stay
    /// in the fair class; loop 0 runs on the thread that calls
    /// [`run`](crate::run), which gets its own policy back when `run`
    /// returns. Needs `CAP_SYS_NICE` or an `RLIMIT_RTPRIO` of at
    /// least the priority; [`run`](crate::run) fails if it cannot be set
    /// or is outside `1..=99`.
    ///
    /// Off by default, because measured it does not keep the bound at
    /// full load (session 16, 2-core VM, Linux 6.18, loop on CPU 0 and the
    /// database and client on CPU 1, 10 s rows): where the loop kept some
    /// idle time it had no turn over 1.05 ms (10/90 under weft-load:
    /// 0 against 7 in the fair class, at 1.09× the requests/s), but a loop
    /// saturated by wrk uses more than the 95% of its core that Linux lets
    /// real-time threads have per second (`sched_rt_runtime_us`), and the
    /// kernel then holds it off for the rest of the second: turns of
    /// 23–47 ms, with the core idle meanwhile (`perf` on CPU 0: the loop
    /// runnable, `swapper` running). Unplaced it is worse: a real-time
    /// loop sharing a core with the threads that feed it preempts them at
    /// every wake (0.4× the requests/s, a starved writer's p99 of 58 ms);
    /// [`run`](crate::run) logs a warning when it is set without
    /// [`Config::loop_cpus`]. So it is for loops with cores of their own
    /// that stay below that share; the tokio twin's `--worker-fifo` gives
    /// its workers the same.
    pub loop_fifo: Option<u8>,
    /// hyper's `pipeline_flush`: batch the flushes of pipelined responses.
    /// Off by default: hyper 1.12 skips the flush while unparsed bytes remain
    /// in its read buffer, so with it on a malformed request is closed
    /// without its automatic 400/431 (the bad bytes stay in the buffer).
    /// Pipelining works either way.
    pub pipeline_flush: bool,
    /// How the SQLite file's WAL is checkpointed (weft-db's
    /// [`Checkpoints`](weft_db::Checkpoints)). Default: SQLite's own, in the
    /// commit that crosses 1000 WAL pages (`Checkpoints::default()`);
    /// [`Checkpoints::background`](weft_db::Checkpoints::background) moves
    /// it to a thread of its own (see the crate docs for the measurement
    /// behind the default).
    pub checkpoints: weft_db::Checkpoints,
    /// Whether each loop hands its database jobs over once per turn
    /// (weft-db's
    /// [`hand_over_per_turn`](weft_db::PoolBuilder::hand_over_per_turn);
    /// default on) or each job as it is submitted.
    pub db_hand_over_per_turn: bool,
    /// With several loops: whether a loop that accepts a connection while
    /// it holds more connections than another loop hands it over to the
    /// least-loaded one (default on), so the loops' connection counts never
    /// differ by more than one when connections arrive one at a time. Off,
    /// each connection stays where the kernel's `SO_REUSEPORT` hash put it
    /// (measured: one loop got 20–50% more requests than the other).
    pub balance_loops: bool,
    /// The nice value of the database connection threads (`None`: leave
    /// them as created, i.e. as the thread that started the pool). A
    /// positive value lowers their priority below the loops', which needs
    /// no privilege: a loop thread woken while a connection thread runs on
    /// its core then preempts it, instead of waiting for its slice to end
    /// (see "Loop stalls" in the crate docs). Must be within `-20..=19`
    /// ([`run`](crate::run) fails otherwise); a value the thread may not take (a
    /// negative one without `CAP_SYS_NICE`) is logged and left.
    pub db_nice: Option<i32>,
    /// The loop threads' scheduling slice under Linux's EEVDF scheduler
    /// (6.12 and later; `None`: the kernel's default, about 0.75 ms ×
    /// (1 + log2(cores))). A short slice lets a woken loop preempt the
    /// thread running on its core at once, instead of waiting up to that
    /// thread's slice; it needs no privilege and does not change the
    /// loop's share of the CPU (see "Loop stalls" in the crate docs).
    /// Must be within 0.1..=100 ms ([`run`](crate::run) fails otherwise); a kernel that
    /// refuses it is logged and the loop runs with its default slice.
    pub loop_slice: Option<Duration>,
    /// The database connection threads' scheduling policy (default
    /// [`DbPolicy::Normal`]). Linux only; none of the three needs
    /// privilege (see "Loop stalls" in the crate docs). A kernel that
    /// refuses it is logged and the thread keeps its policy.
    pub db_policy: DbPolicy,
    /// The database connection threads' EEVDF slice (as
    /// [`Config::loop_slice`], for them; `None`: the kernel's default).
    /// Must be within 0.1..=100 ms ([`run`](crate::run) fails otherwise).
    pub db_slice: Option<Duration>,
    /// The CPUs every loop thread may run on (`sched_setaffinity`, no
    /// privilege needed; `None`: leave them where they are). With several
    /// loops the list is shared, as `taskset -c` shares it between a
    /// process's threads: every loop may run on any CPU of it, and the
    /// kernel spreads them. Only the loop threads are placed: the threads
    /// weft-kv starts from a loop (the other loops, the database threads)
    /// are put back on the CPUs the process started with unless placed
    /// themselves, and each loop's watchdog thread keeps those (see
    /// "Loop stalls" in the crate docs). Every CPU must be one the thread
    /// calling [`run`](crate::run) may run on ([`run`](crate::run) fails otherwise); loop 0 (that
    /// thread) gets its own set back when [`run`](crate::run) returns.
    pub loop_cpus: Option<cpus::CpuList>,
    /// The CPUs every database connection thread may run on (as
    /// [`Config::loop_cpus`], for them; `None`: the CPUs the process
    /// started with). Set by the same start hook as [`Config::db_policy`];
    /// a thread a database thread starts (weft-db's background
    /// checkpointer) inherits it.
    pub db_cpus: Option<cpus::CpuList>,
}

/// A scheduling policy of Linux's fair class, for the database threads
/// ([`Config::db_policy`]).
///
/// # Examples
///
/// ```
/// assert_eq!("batch".parse(), Ok(weft_kv::DbPolicy::Batch));
/// assert!("fifo".parse::<weft_kv::DbPolicy>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DbPolicy {
    /// `SCHED_OTHER`, as created.
    #[default]
    Normal,
    /// `SCHED_BATCH`: same weight, but a woken thread never preempts the
    /// one running (a loop keeps its core until its slice ends or it
    /// sleeps).
    Batch,
    /// `SCHED_IDLE`: the least weight (3 against a nice-0 thread's
    /// 1024); any other thread that wakes on its core preempts it.
    Idle,
}

impl std::str::FromStr for DbPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "normal" => Ok(DbPolicy::Normal),
            "batch" => Ok(DbPolicy::Batch),
            "idle" => Ok(DbPolicy::Idle),
            _ => Err(format!(
                "unknown scheduling policy {s:?} (normal, batch, idle)"
            )),
        }
    }
}

/// The default number of reader connections: one per core the loop thread
/// leaves free, from 1 to 4. More reader threads than free cores only add
/// hand-offs: on a 2-core machine one reader serves a 90/10 mix about 20%
/// faster than four (measured with weft-load, 64 connections).
///
/// # Examples
///
/// ```
/// let n = weft_kv::default_readers();
/// assert!((1..=4).contains(&n));
/// assert_eq!(weft_kv::Config::default().readers, n);
/// ```
pub fn default_readers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_sub(1).clamp(1, 4)
}

/// The default number of HTTP loops: one per core the database threads
/// leave (one core is left to them), from 1 to 8; so one loop on a 2-core
/// machine. Measured there against the tokio twin (`tokio-mutex-cap1`,
/// 64 connections, 90/10 and 10/90 mixes, weft-load and wrk; a loop
/// "wins" a cell with more requests/s at a p99 no higher):
/// - session 8, quiet machine, 3-round medians: one loop won 3 of the 4
///   cells and lost the fourth (10/90, wrk) by 3% at a p99 0.08 ms
///   higher; two loops won 1 (their busier loop, with up to 50% more
///   requests than the other, made the tail);
/// - session 9, with the connections balanced over two loops
///   ([`Config::balance_loops`]), four 3-round runs: one loop won 13 of
///   16 cells, two balanced loops 8 of 16; in the quietest run (load
///   average 3–4.5) one loop won all four (1.02–1.09× the requests/s at
///   p99 1.97–2.28 ms against 2.42–2.81 ms), two loops one.
///
/// With one core left free, a connection thread woken by the loop runs
/// there instead of preempting the loop on its own (see
/// [`Config::db_hand_over_per_turn`]). Two loops stay one flag away
/// (`--loops 2`). The quiet 3-round run at the end of session 9 split the
/// cells: one loop won both under weft-load (1.08× and 1.05×, p99 1.60
/// and 2.12 ms against 2.24 and 2.53) and had the lower p99 at fewer
/// requests under wrk (0.99× and 0.95×); two balanced loops won both
/// under wrk (1.05× and 1.06×) and lost under weft-load. Which is better
/// depends on how much of the two cores the client takes.
///
/// # Examples
///
/// ```
/// let n = weft_kv::default_loops();
/// assert!((1..=8).contains(&n));
/// assert_eq!(weft_kv::Config::default().loops, n);
/// ```
pub fn default_loops() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_sub(1).clamp(1, 8)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            db_path: PathBuf::from("weft-kv.sqlite3"),
            readers: default_readers(),
            max_value_bytes: 1 << 20,
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            write_stall_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            handle_signals: false,
            slow_callback_threshold: Some(weft::diagnostics::DEFAULT_SLOW_CALLBACK_THRESHOLD),
            task_pass_budget: Some(weft::reactor::DEFAULT_TASK_PASS_BUDGET),
            pipeline_flush: false,
            loops: default_loops(),
            loop_nice: None,
            try_loop_nice: None,
            loop_fifo: None,
            checkpoints: weft_db::Checkpoints::default(),
            db_hand_over_per_turn: true,
            balance_loops: true,
            db_nice: None,
            loop_slice: None,
            db_policy: DbPolicy::Normal,
            db_slice: None,
            loop_cpus: None,
            db_cpus: None,
        }
    }
}
