//! `ConnectionPool::statistics` and the job histograms, exact under known
//! workloads. Jobs are held queued or running by blocking a connection
//! thread on a channel (no sleeps, no timing thresholds).

use std::sync::mpsc;

use weft::Reactor;
use weft::reactor::QueuedWork;
use weft_db::{ConnectionPool, DbError, Group, GroupStatistics, SqliteConnector};

/// A job that reports its start, then waits for its release.
struct Gate {
    started: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

impl Gate {
    /// Blocks the loop until the job runs on its thread (the job does not
    /// need the loop to start).
    fn wait_started(&self) {
        self.started.recv().unwrap();
    }

    fn open(&self) {
        self.release.send(()).unwrap();
    }
}

type Job = Box<dyn FnOnce(&mut rusqlite::Connection) -> Result<(), DbError> + Send>;

fn blocker() -> (Gate, Job) {
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let job: Job = Box::new(move |_conn| {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        Ok(())
    });
    (Gate { started, release }, job)
}

fn pool(reactor: &Reactor, dir: &tempfile::TempDir, max: usize) -> ConnectionPool {
    ConnectionPool::builder(SqliteConnector::new(dir.path().join("s.db")))
        .max(max)
        .min(0)
        .build(&reactor.handle())
        .unwrap()
}

/// The accounting identity every quiet snapshot satisfies.
fn balanced(g: &GroupStatistics) {
    assert_eq!(
        g.submitted,
        g.backlog as u64 + g.busy as u64 + g.completed + g.cancelled + g.refused,
        "{g:?}"
    );
    assert_eq!(g.connections, g.busy + g.idle, "{g:?}");
}

/// (connections, open, busy, idle, backlog)
fn gauges(g: &GroupStatistics) -> (usize, usize, usize, usize, usize) {
    (g.connections, g.open, g.busy, g.idle, g.backlog)
}

/// (submitted, completed, failed, panicked, interrupted, cancelled, refused)
fn counts(g: &GroupStatistics) -> (u64, u64, u64, u64, u64, u64, u64) {
    (
        g.submitted,
        g.completed,
        g.failed,
        g.panicked,
        g.interrupted,
        g.cancelled,
        g.refused,
    )
}

#[test]
fn jobs_count_as_backlog_until_they_start_and_busy_while_they_run() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = pool(&reactor, &dir, 3); // one writer, two readers
    // Before the reactor runs: queued on the loop, routed by configuration.
    let w0 = p.run_operation("create table t (x)", []);
    let r0 = p.run_query("select 1", []);
    let s = p.statistics();
    assert_eq!(gauges(&s.writer), (0, 0, 0, 0, 1));
    assert_eq!(gauges(&s.readers), (0, 0, 0, 0, 1));
    assert_eq!((s.writer.submitted, s.readers.submitted), (1, 1));
    let pool = p.clone();
    reactor
        .run_until_complete(async move {
            w0.await.unwrap();
            r0.await.unwrap();
            let s = p.statistics();
            // Connections open on first use: the writer and one reader.
            assert_eq!(gauges(&s.writer), (1, 1, 0, 1, 0));
            assert_eq!(gauges(&s.readers), (2, 1, 0, 2, 0));
            assert_eq!(counts(&s.writer), (1, 1, 0, 0, 0, 0, 0));
            assert_eq!(counts(&s.readers), (1, 1, 0, 0, 0, 0, 0));

            // The writer held by A; B and C queue behind it.
            let (gate_a, job) = blocker();
            let a = p.run_with_connection(job);
            gate_a.wait_started();
            let b = p.run_operation("insert into t values (1)", []);
            let c = p.run_operation("insert into t values (2)", []);
            let s = p.statistics();
            assert_eq!(gauges(&s.writer), (1, 1, 1, 0, 2));
            assert_eq!(s.writer.submitted, 4);
            // Withdrawn at once: out of the backlog, never run.
            c.cancel();
            let s = p.statistics();
            assert_eq!(gauges(&s.writer), (1, 1, 1, 0, 1));
            assert_eq!(s.writer.cancelled, 1);

            // Both readers held; R3 queues.
            let (gate_r1, job) = blocker();
            let r1 = p.run_read(job);
            gate_r1.wait_started();
            let (gate_r2, job) = blocker();
            let r2 = p.run_read(job);
            gate_r2.wait_started();
            let r3 = p.run_query("select count(*) from t", []);
            let s = p.statistics();
            assert_eq!(gauges(&s.readers), (2, 2, 2, 0, 1));
            assert_eq!(s.readers.submitted, 4);
            assert_eq!(gauges(&s.total()), (3, 3, 3, 0, 2));
            balanced(&s.writer);
            balanced(&s.readers);
            balanced(&s.total());

            gate_a.open();
            gate_r1.open();
            gate_r2.open();
            a.await.unwrap();
            b.await.unwrap();
            assert!(c.await.unwrap_err().is_cancelled());
            r1.await.unwrap();
            r2.await.unwrap();
            r3.await.unwrap();
            p.close().await.unwrap();
        })
        .unwrap();
    let s = pool.statistics();
    // Every thread exited and closed its connection.
    assert_eq!(gauges(&s.writer), (0, 0, 0, 0, 0));
    assert_eq!(gauges(&s.readers), (0, 0, 0, 0, 0));
    assert_eq!(counts(&s.writer), (4, 3, 0, 0, 0, 1, 0));
    assert_eq!(counts(&s.readers), (4, 4, 0, 0, 0, 0, 0));
    balanced(&s.writer);
    balanced(&s.readers);
    // One queue wait per job started, one run time per job completed.
    assert_eq!(pool.queue_wait_histogram(Group::Writer).count(), 3);
    assert_eq!(pool.run_time_histogram(Group::Writer).count(), 3);
    assert_eq!(pool.queue_wait_histogram(Group::Readers).count(), 4);
    assert_eq!(pool.run_time_histogram(Group::Readers).count(), 4);
}

#[test]
fn failures_panics_and_interrupts_are_counted_by_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = pool(&reactor, &dir, 2);
    let pool = p.clone();
    reactor
        .run_until_complete(async move {
            p.run_operation("create table t (x)", []).await.unwrap();
            let e = p.run_operation("insert into nowhere values (1)", []);
            assert!(e.await.is_err());
            let e = p.run_query("select * from nowhere", []);
            assert!(e.await.is_err());
            let panics = p.run_interaction(|_c| -> Result<(), DbError> { panic!("boom") });
            assert!(panics.await.unwrap_err().is_panic());
            // Cancelled while running: interrupted (and rolled back).
            let (gate, job) = blocker();
            let a = p.run_interaction(job);
            gate.wait_started();
            assert_eq!(p.statistics().writer.busy, 1);
            a.cancel();
            assert_eq!(p.statistics().writer.busy, 1); // still running
            gate.open();
            assert!(a.await.unwrap_err().is_cancelled());
            // The writer is serial: once this is back, A has ended.
            p.run_operation("insert into t values (1)", [])
                .await
                .unwrap();
        })
        .unwrap();
    let s = pool.statistics();
    // submitted, completed, failed, panicked, interrupted, cancelled, refused
    assert_eq!(counts(&s.writer), (5, 5, 1, 1, 1, 0, 0));
    assert_eq!(counts(&s.readers), (1, 1, 1, 0, 0, 0, 0));
    assert_eq!((s.writer.busy, s.writer.backlog), (0, 0));
    balanced(&s.writer);
    balanced(&s.readers);
    assert_eq!(pool.run_time_histogram(Group::Writer).count(), 5);
}

#[test]
fn close_under_cancel_counts_the_queued_jobs_cancelled_and_later_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = ConnectionPool::builder(SqliteConnector::new(dir.path().join("c.db")))
        .max(1)
        .queued_work_at_close(QueuedWork::Cancel)
        .build(&reactor.handle())
        .unwrap();
    let pool = p.clone();
    reactor
        .run_until_complete(async move {
            let (gate, job) = blocker();
            let a = p.run_with_connection(job);
            gate.wait_started();
            let queued: Vec<_> = (0..3).map(|_| p.run_query("select 1", [])).collect();
            let s = p.statistics();
            // max 1: the writer serves reads too.
            assert_eq!(gauges(&s.writer), (1, 1, 1, 0, 3));
            assert_eq!(s.readers, GroupStatistics::default());
            let closed = p.close();
            // Refused at once, never queued.
            let late = p.run_query("select 1", []);
            assert!(matches!(late.await, Err(DbError::Stopped)));
            gate.open();
            a.await.unwrap();
            for q in queued {
                assert!(q.await.unwrap_err().is_cancelled());
            }
            closed.await.unwrap();
        })
        .unwrap();
    let s = pool.statistics();
    assert_eq!(gauges(&s.writer), (0, 0, 0, 0, 0));
    assert_eq!(counts(&s.writer), (5, 1, 0, 0, 0, 3, 1));
    balanced(&s.writer);
    // The cancelled jobs never started: no queue wait recorded for them.
    assert_eq!(pool.queue_wait_histogram(Group::Writer).count(), 1);
}

#[test]
fn closing_a_pool_that_never_started_refuses_its_waiting_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = pool(&reactor, &dir, 3);
    let w = [
        p.run_operation("create table t (x)", []),
        p.run_operation("create table u (x)", []),
    ];
    let r = p.run_query("select 1", []);
    let cancelled = p.run_query("select 2", []);
    cancelled.cancel();
    let s = p.statistics();
    assert_eq!((s.writer.backlog, s.readers.backlog), (2, 1));
    assert_eq!(s.readers.cancelled, 1);
    assert!(p.close().is_resolved());
    assert!(w.iter().all(|d| d.is_resolved()) && r.is_resolved());
    let s = p.statistics();
    assert_eq!(counts(&s.writer), (2, 0, 0, 0, 0, 0, 2));
    assert_eq!(counts(&s.readers), (2, 0, 0, 0, 0, 1, 1));
    assert_eq!(s.total().backlog, 0);
    balanced(&s.writer);
    balanced(&s.readers);
    drop(reactor);
}

#[test]
fn histograms_can_be_turned_off_and_the_counts_stay() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let p = ConnectionPool::builder(SqliteConnector::new(dir.path().join("h.db")))
        .histograms(false)
        .build(&reactor.handle())
        .unwrap();
    let pool = p.clone();
    reactor
        .run_until_complete(async move {
            p.run_operation("create table t (x)", []).await.unwrap();
            p.run_query("select * from t", []).await.unwrap();
        })
        .unwrap();
    let s = pool.statistics();
    assert_eq!((s.writer.completed, s.readers.completed), (1, 1));
    for g in [Group::Writer, Group::Readers] {
        assert_eq!(pool.queue_wait_histogram(g).count(), 0);
        assert_eq!(pool.run_time_histogram(g).count(), 0);
    }
}
