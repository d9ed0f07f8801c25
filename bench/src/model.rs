//! What is measured: the scenarios, their sizes, the jobs every subject sends,
//! and the loop-side helpers every subject shares (`model/cell.rs`: the
//! measured section's marks, pinning and thread counts; `model/sides.rs`:
//! the loop-side, producer and pool-side bookkeeping).
//!
//! # Methodology
//!
//! - Every scenario measures a *cost*: nanoseconds per operation, a number of
//!   threads, CPU time, or a number of syscalls. Lower is better everywhere,
//!   so a ratio `weft / peer` at or below 1 means weft wins that row.
//! - Latency scenarios record one sample per operation (reported as p50 / p99
//!   over all rounds). Throughput scenarios record one sample per round: the
//!   wall time of the whole burst divided by the operation count, from the
//!   moment the first producer starts to the moment the last job has run.
//! - Every job carries data the way a real call does: it captures an index and
//!   an `Arc` of a shared context ([`Ctx`]), the same for every subject, so a
//!   subject that boxes or reference-counts per call pays for it here.
//!   Loop-side bookkeeping lives in thread-locals of the loop thread;
//!   pool-side bookkeeping in one atomic.
//! - Each measurement marks the start and end of its measured section
//!   ([`mark_start`], [`mark_end`]); the cell runner reads the process CPU
//!   time at those marks, so the CPU column covers exactly the timed work, on
//!   every thread.
//! - Latency rows run pinned, alike for every subject: by default the loop
//!   thread and the other thread (producer, caller, pool worker) on one core
//!   ([`pin_loop`], [`pin_other`]); `--pin split` puts them on two cores,
//!   `--pin off` pins nothing ([`Pin`]).
//! - Every wait of the harness is bounded by [`DEADLINE`]; a scenario that
//!   overruns it fails loudly instead of hanging the run.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

mod cell;
mod sides;

pub(crate) use cell::{
    PIN_ENV, Pin, mark_end, mark_start, marks, pin_loop, pin_other, reset_marks, set_cell,
    thread_counts,
};
pub(crate) use sides::{
    Producers, arm_loop, capped_threads, channel_producers, channel_result, channel_shape, cores,
    loop_end, loop_tick, per_op, pool_burst, pool_job, record_latency, take_latencies, time_each,
    wake_job, wake_producer,
};

/// The longest any single wait of the harness may take.
pub(crate) const DEADLINE: Duration = Duration::from_secs(120);

/// One thing measured for every subject that supports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Scenario {
    /// `call_from_thread` burst from one producer, ns per call.
    CftBurst1,
    /// `call_from_thread` burst from two producers, ns per call.
    CftBurst2,
    /// `call_from_thread` into an idle loop: send → run latency, ns.
    CftWake,
    /// `defer_to_thread` round trip from the loop, one at a time, ns.
    DeferSeq,
    /// `defer_to_thread` with waves of 1000 in flight, ns per job (after one
    /// untimed wave, so every subject's pool threads are already started).
    DeferInFlight,
    /// `blocking_call_from_thread` round trip from a plain thread, ns.
    BlockingCall,
    /// Pool throughput: short jobs from one submitter, ns per job.
    PoolThroughput,
    /// A 100 µs timer on the loop: how late it runs, ns.
    Timer,
    /// Threads the subject added, right after a burst of short pool jobs.
    ThreadsAfterBurst,
    /// Threads after the burst and again once the keep-alive has passed
    /// (two samples; run once per run, not per round).
    ThreadsAfterKeepAlive,
    /// Process CPU time over an idle loop (pool warmed by one job), ns.
    Idle,
    /// TCP echo round trip, one connection, 64 B messages, ns.
    NetEchoRtt,
    /// TCP echo throughput: 64 connections, pipelined, ns per message.
    NetEchoThroughput,
    /// Connections accepted, served one 64 B echo and closed, ns per
    /// connection.
    NetAccept,
    /// Single-row insert transactions, 16 in flight, ns per transaction.
    DbInsert,
    /// Point reads by primary key, 16 in flight, ns per read.
    DbPointRead,
    /// 90 % point reads, 10 % insert transactions, 16 in flight, ns per op.
    DbMix,
    /// Floor: two threads spinning on one atomic, round trip ns.
    FloorSpin,
    /// Floor: `thread::park` / `unpark` (futex) ping-pong, round trip ns.
    FloorFutex,
    /// Floor: eventfd + epoll ping-pong, round trip ns (hot: no pause).
    FloorEpoll,
    /// Floor: one eventfd write into an epoll that idled for the wake gap,
    /// one way, ns (measured like the wake-latency row).
    FloorIdleWake,
    /// Floor: jobs from one producer through a mutex queue to a consumer
    /// spinning on another core, ns per job.
    FloorHandoff1,
    /// Floor: the same with two producers, ns per job.
    FloorHandoff2,
    /// Floor: one eventfd `write(2)` with nobody waiting, ns.
    FloorEventfdWrite,
}

/// How a scenario's samples are summarised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Per-operation latency samples in ns: report p50 / p99.
    Latency,
    /// One ns-per-operation sample per round: report the median.
    Throughput,
    /// One count per round: report the median.
    Count,
}

impl Scenario {
    /// The scenarios measured in every round, in table order.
    pub(crate) const ROWS: [Scenario; 15] = [
        Scenario::CftBurst1,
        Scenario::CftBurst2,
        Scenario::CftWake,
        Scenario::DeferSeq,
        Scenario::DeferInFlight,
        Scenario::BlockingCall,
        Scenario::PoolThroughput,
        Scenario::Timer,
        Scenario::ThreadsAfterBurst,
        Scenario::NetEchoRtt,
        Scenario::NetEchoThroughput,
        Scenario::NetAccept,
        Scenario::DbInsert,
        Scenario::DbPointRead,
        Scenario::DbMix,
    ];

    /// The physical floors, measured in the same rounds.
    pub(crate) const FLOORS: [Scenario; 7] = [
        Scenario::FloorSpin,
        Scenario::FloorFutex,
        Scenario::FloorEpoll,
        Scenario::FloorIdleWake,
        Scenario::FloorHandoff1,
        Scenario::FloorHandoff2,
        Scenario::FloorEventfdWrite,
    ];

    /// Every scenario, for parsing.
    const ALL: [Scenario; 24] = [
        Scenario::CftBurst1,
        Scenario::CftBurst2,
        Scenario::CftWake,
        Scenario::DeferSeq,
        Scenario::DeferInFlight,
        Scenario::BlockingCall,
        Scenario::PoolThroughput,
        Scenario::Timer,
        Scenario::ThreadsAfterBurst,
        Scenario::ThreadsAfterKeepAlive,
        Scenario::Idle,
        Scenario::NetEchoRtt,
        Scenario::NetEchoThroughput,
        Scenario::NetAccept,
        Scenario::DbInsert,
        Scenario::DbPointRead,
        Scenario::DbMix,
        Scenario::FloorSpin,
        Scenario::FloorFutex,
        Scenario::FloorEpoll,
        Scenario::FloorIdleWake,
        Scenario::FloorHandoff1,
        Scenario::FloorHandoff2,
        Scenario::FloorEventfdWrite,
    ];

    /// The scenario with this [`id`](Scenario::id).
    pub(crate) fn from_id(id: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.id() == id)
    }

    /// A stable identifier used in the JSON file and on the child command line.
    pub(crate) fn id(self) -> &'static str {
        match self {
            Scenario::CftBurst1 => "cft_burst_1p",
            Scenario::CftBurst2 => "cft_burst_2p",
            Scenario::CftWake => "cft_wake_latency",
            Scenario::DeferSeq => "defer_rtt_seq",
            Scenario::DeferInFlight => "defer_1000_in_flight",
            Scenario::BlockingCall => "blocking_call_rtt",
            Scenario::PoolThroughput => "pool_throughput",
            Scenario::Timer => "timer_100us_lateness",
            Scenario::ThreadsAfterBurst => "threads_after_burst",
            Scenario::ThreadsAfterKeepAlive => "threads_after_keep_alive",
            Scenario::Idle => "idle_cpu",
            Scenario::NetEchoRtt => "net_echo_rtt",
            Scenario::NetEchoThroughput => "net_echo_64_conns",
            Scenario::NetAccept => "net_accept",
            Scenario::DbInsert => "db_insert_tx",
            Scenario::DbPointRead => "db_point_read",
            Scenario::DbMix => "db_mix_90_10",
            Scenario::FloorSpin => "floor_spin_rtt",
            Scenario::FloorFutex => "floor_futex_rtt",
            Scenario::FloorEpoll => "floor_eventfd_epoll_rtt",
            Scenario::FloorIdleWake => "floor_idle_epoll_wake",
            Scenario::FloorHandoff1 => "floor_handoff_1p",
            Scenario::FloorHandoff2 => "floor_handoff_2p",
            Scenario::FloorEventfdWrite => "floor_eventfd_write",
        }
    }

    /// The row label in the markdown table.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Scenario::CftBurst1 => "call_from_thread burst, 1 producer (ns/call)",
            Scenario::CftBurst2 => "call_from_thread burst, 2 producers (ns/call)",
            Scenario::CftWake => "call_from_thread wake latency, idle loop (p50 / p99)",
            Scenario::DeferSeq => "defer_to_thread round trip, sequential (p50 / p99)",
            Scenario::DeferInFlight => "defer_to_thread, 1000 in flight (ns/job)",
            Scenario::BlockingCall => "blocking_call_from_thread round trip (p50 / p99)",
            Scenario::PoolThroughput => "pool throughput, one submitter (ns/job)",
            Scenario::Timer => "100 µs timer, lateness (p50 / p99)",
            Scenario::ThreadsAfterBurst => "threads added, right after 100k short pool jobs",
            Scenario::ThreadsAfterKeepAlive => {
                "threads added, 11 s after the burst (keep-alive passed)"
            }
            Scenario::Idle => "idle loop + warmed pool: process CPU over 2 s",
            Scenario::NetEchoRtt => "TCP echo round trip, 1 connection, 64 B (p50 / p99)",
            Scenario::NetEchoThroughput => "TCP echo, 64 connections pipelined (ns/msg)",
            Scenario::NetAccept => "TCP connect + one echo + close, 16 at once (ns/conn)",
            Scenario::DbInsert => "SQLite single-row insert transactions, 16 in flight (ns/tx)",
            Scenario::DbPointRead => "SQLite point reads, 16 in flight (ns/read)",
            Scenario::DbMix => "SQLite 90/10 read/write mix, 16 in flight (ns/op)",
            Scenario::FloorSpin => "atomic spin ping-pong RTT (pinned)",
            Scenario::FloorFutex => "futex park/unpark ping-pong RTT (pinned)",
            Scenario::FloorEpoll => "eventfd + epoll ping-pong RTT, hot (pinned)",
            Scenario::FloorIdleWake => "eventfd wake of an epoll idle 250 µs, one way (pinned)",
            Scenario::FloorHandoff1 => "mutex-queue handoff to a spinning core, 1 producer",
            Scenario::FloorHandoff2 => "mutex-queue handoff to a spinning core, 2 producers",
            Scenario::FloorEventfdWrite => "eventfd write, nobody waiting",
        }
    }

    /// How the samples are summarised.
    pub(crate) fn kind(self) -> Kind {
        match self {
            Scenario::CftBurst1
            | Scenario::CftBurst2
            | Scenario::DeferInFlight
            | Scenario::PoolThroughput
            | Scenario::FloorHandoff1
            | Scenario::FloorHandoff2
            | Scenario::FloorEventfdWrite
            | Scenario::NetEchoThroughput
            | Scenario::NetAccept
            | Scenario::DbInsert
            | Scenario::DbPointRead
            | Scenario::DbMix => Kind::Throughput,
            Scenario::ThreadsAfterBurst | Scenario::ThreadsAfterKeepAlive | Scenario::Idle => {
                Kind::Count
            }
            _ => Kind::Latency,
        }
    }

    /// Whether the scenario's threads are pinned (see [`Pin`]).
    pub(crate) fn pinned(self) -> bool {
        self.kind() == Kind::Latency
    }

    /// Operations in one throughput measurement (for the CPU column).
    pub(crate) fn ops(self, p: &Params) -> usize {
        match self {
            Scenario::CftBurst1 => p.burst_calls,
            Scenario::CftBurst2 => 2 * p.burst_calls,
            Scenario::DeferInFlight => p.inflight_waves * 1000,
            Scenario::PoolThroughput => p.pool_jobs,
            Scenario::FloorHandoff1 => p.handoff_jobs,
            Scenario::FloorHandoff2 => 2 * p.handoff_jobs,
            Scenario::FloorEventfdWrite => p.floor_rtts * 4,
            Scenario::NetEchoThroughput => NET_CONNS * p.net_msgs_per_conn,
            Scenario::NetAccept => p.net_accepts,
            Scenario::DbInsert => p.db_inserts,
            Scenario::DbPointRead => p.db_reads,
            Scenario::DbMix => p.db_mix_ops,
            _ => 1,
        }
    }
}

/// Sizes of every scenario for one run.
#[derive(Clone, Debug)]
pub(crate) struct Params {
    /// Round-robin rounds.
    pub(crate) rounds: usize,
    /// Calls per producer in a `call_from_thread` burst.
    pub(crate) burst_calls: usize,
    /// Samples of the wake-latency scenario per round.
    pub(crate) wake_samples: usize,
    /// Pause between wake-latency sends, long enough for the loop to go idle.
    pub(crate) wake_gap: Duration,
    /// Sequential round trips per round (defer and blocking call).
    pub(crate) rtt_samples: usize,
    /// Waves of 1000 in-flight defers per round.
    pub(crate) inflight_waves: usize,
    /// Jobs in the pool-throughput scenario.
    pub(crate) pool_jobs: usize,
    /// Jobs in the thread-growth burst.
    pub(crate) growth_jobs: usize,
    /// Timer samples per round.
    pub(crate) timer_samples: usize,
    /// The timer's delay.
    pub(crate) timer_delay: Duration,
    /// How long the idle row idles.
    pub(crate) idle: Duration,
    /// How long the keep-alive row waits after its burst (longest keep-alive
    /// of the subjects, tokio's and weft's 10 s, plus a margin).
    pub(crate) keep_alive_wait: Duration,
    /// Round trips of each ping-pong floor per round.
    pub(crate) floor_rtts: usize,
    /// Jobs per producer of the handoff floors.
    pub(crate) handoff_jobs: usize,
    /// Cross-thread calls counted for the wake-syscall row.
    pub(crate) syscall_calls: usize,
    /// The small run subtracted from it (setup and teardown syscalls).
    pub(crate) syscall_calls_small: usize,
    /// Round trips of the TCP echo latency row per round.
    pub(crate) net_rtts: usize,
    /// Messages each of the [`NET_CONNS`] connections of the echo
    /// throughput row sends.
    pub(crate) net_msgs_per_conn: usize,
    /// Connections of the accept row per round.
    pub(crate) net_accepts: usize,
    /// Insert transactions of the database insert row.
    pub(crate) db_inserts: usize,
    /// Reads of the point-read row.
    pub(crate) db_reads: usize,
    /// Operations of the read/write mix row.
    pub(crate) db_mix_ops: usize,
    /// Rows in the table the read and mix rows read from.
    pub(crate) db_rows: usize,
}

/// Connections of the echo throughput row.
pub(crate) const NET_CONNS: usize = 64;

impl Params {
    /// Sizes for `--quick` (under a minute on 2 cores).
    pub(crate) fn quick() -> Self {
        Params {
            rounds: 2,
            burst_calls: 50_000,
            wake_samples: 150,
            wake_gap: Duration::from_micros(250),
            rtt_samples: 1_000,
            inflight_waves: 3,
            pool_jobs: 100_000,
            growth_jobs: 100_000,
            timer_samples: 200,
            timer_delay: Duration::from_micros(100),
            idle: Duration::from_secs(2),
            keep_alive_wait: Duration::from_secs(11),
            floor_rtts: 3_000,
            handoff_jobs: 100_000,
            syscall_calls: 100_000,
            syscall_calls_small: 1_000,
            net_rtts: 2_000,
            net_msgs_per_conn: 300,
            net_accepts: 1_000,
            db_inserts: 5_000,
            db_reads: 20_000,
            db_mix_ops: 10_000,
            db_rows: 10_000,
        }
    }

    /// Sizes for the full run (about eight minutes on 2 cores).
    pub(crate) fn full() -> Self {
        Params {
            rounds: 5,
            burst_calls: 200_000,
            wake_samples: 600,
            wake_gap: Duration::from_micros(250),
            rtt_samples: 4_000,
            inflight_waves: 15,
            pool_jobs: 500_000,
            growth_jobs: 100_000,
            timer_samples: 1_000,
            timer_delay: Duration::from_micros(100),
            idle: Duration::from_secs(2),
            keep_alive_wait: Duration::from_secs(11),
            floor_rtts: 10_000,
            handoff_jobs: 200_000,
            syscall_calls: 100_000,
            syscall_calls_small: 1_000,
            net_rtts: 10_000,
            net_msgs_per_conn: 1_000,
            net_accepts: 3_000,
            db_inserts: 100_000,
            db_reads: 100_000,
            db_mix_ops: 50_000,
            db_rows: 10_000,
        }
    }
}

// ---------------------------------------------------------------------------
// The data every job carries.

/// The shared context every job captures an `Arc` of, with its index: the
/// shape of a real call (an argument and a handle on shared state).
#[derive(Debug)]
pub(crate) struct Ctx {
    base: u64,
}

impl Ctx {
    /// A fresh context for one measurement.
    pub(crate) fn new() -> Arc<Ctx> {
        Arc::new(Ctx { base: black_box(7) })
    }

    /// What the work of job `i` computes.
    pub(crate) fn value(&self, i: usize) -> u64 {
        i as u64 + self.base
    }
}

/// A boxed cross-thread job, for peers whose queues need one type.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// The job every `call_from_thread` burst sends: uses its data, then ticks on
/// the loop.
pub(crate) fn tick_job(i: usize, ctx: Arc<Ctx>) -> impl FnOnce() + Send + 'static {
    move || {
        black_box(ctx.value(i));
        loop_tick();
    }
}

/// The work of a `defer_to_thread` or blocking call: returns its value.
pub(crate) fn work(i: usize, ctx: Arc<Ctx>) -> impl FnOnce() -> u64 + Send + 'static {
    move || ctx.value(i)
}

/// The job of the pool rows: uses its data, then counts.
pub(crate) fn pool_task(i: usize, ctx: Arc<Ctx>) -> impl FnOnce() + Send + 'static {
    move || {
        black_box(ctx.value(i));
        pool_job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_id_parses_back() {
        for sc in Scenario::ALL {
            assert_eq!(Scenario::from_id(sc.id()), Some(sc));
        }
        assert_eq!(Scenario::from_id("nope"), None);
    }

    #[test]
    fn latency_rows_are_pinned_and_counts_are_not() {
        assert!(Scenario::CftWake.pinned() && Scenario::Timer.pinned());
        assert!(!Scenario::CftBurst1.pinned() && !Scenario::ThreadsAfterBurst.pinned());
    }
}
