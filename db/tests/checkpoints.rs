//! WAL checkpoints off the request path (`Checkpoints::Background`): the
//! setting reaches every connection, commits no longer checkpoint, the
//! checkpointer thread does, the limit still bounds the WAL, and close
//! leaves no WAL behind. What the WAL holds is read with SQLite's NOOP
//! checkpoint, which reports the frames in the WAL and the frames
//! checkpointed without checkpointing anything.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;
use weft::Reactor;
use weft_db::{Checkpoints, ConnectionPool, Connector, DbError, Role, SqliteConnector};

const COMMITS: i64 = 20;

/// `(frames in the WAL, frames checkpointed)`, from a side connection.
fn wal_state(path: &Path) -> (i32, i32) {
    let conn = Connection::open(path).unwrap();
    // A read opens the WAL (NOOP on a connection that has not reports -1).
    conn.query_row("select count(*) from sqlite_schema", [], |_| Ok(()))
        .unwrap();
    conn.wal_checkpoint_v2(rusqlite::DEFAULT_NAME, CheckpointMode::NOOP)
        .unwrap()
}

fn autocheckpoint(conn: &Connection) -> i64 {
    conn.query_row("pragma wal_autocheckpoint", [], |r| r.get(0))
        .unwrap()
}

/// Creates a table, then commits `COMMITS` single-row transactions (about
/// 75 pages each, so SQLite's default 1000-page trigger fires) through
/// a pool over `connector`; returns the pool (still open) and the reactor.
fn write(connector: SqliteConnector) -> (Reactor, ConnectionPool) {
    let reactor = Reactor::new().unwrap();
    let pool = ConnectionPool::builder(connector)
        .max(3)
        .build(&reactor.handle())
        .unwrap();
    let p = pool.clone();
    reactor
        .run_until_complete(async move {
            p.run_operation("create table t (x blob)", []).await?;
            for i in 0..COMMITS {
                p.run_operation("insert into t values (zeroblob(300000 + ?1))", (i,))
                    .await?;
            }
            Ok::<_, DbError>(())
        })
        .unwrap()
        .unwrap();
    (reactor, pool)
}

fn close(reactor: &Reactor, pool: &ConnectionPool) {
    let p = pool.clone();
    reactor
        .run_until_complete(async move { p.close().await })
        .unwrap()
        .unwrap();
}

#[test]
fn background_checkpoints_replace_the_autocheckpoint_on_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let background =
        SqliteConnector::new(dir.path().join("bg.db")).checkpoints(Checkpoints::background());
    let default = SqliteConnector::new(dir.path().join("default.db"));
    for role in [Role::Writer, Role::Reader] {
        let c = background.open(role).unwrap();
        // The hook replaces SQLite's automatic checkpoint, which the pragma
        // then reports as off.
        assert_eq!(autocheckpoint(&c), 0, "{role:?}");
        background.close(c).unwrap();
        let c = default.open(role).unwrap();
        assert_eq!(autocheckpoint(&c), 1000, "{role:?}");
        default.close(c).unwrap();
    }
}

#[test]
fn a_commit_checkpoints_itself_by_default_and_not_under_background() {
    let dir = tempfile::tempdir().unwrap();
    // OnCommit with a one-page trigger: every commit checkpoints.
    let on_commit = dir.path().join("on_commit.db");
    let (reactor, pool) =
        write(SqliteConnector::new(&on_commit).checkpoints(Checkpoints::OnCommit { pages: 1 }));
    let (log, done) = wal_state(&on_commit);
    assert!(log > 0 && done == log, "({log}, {done})");
    close(&reactor, &pool);

    // Background whose checkpointer is never woken and with no limit: the
    // commits left every frame in the WAL (none checkpointed, so the WAL
    // never started over). Under the default, the 14th commit or so would
    // have checkpointed and the WAL would have started over.
    let background = dir.path().join("background.db");
    let connector = SqliteConnector::new(&background)
        .checkpoints(Checkpoints::Background { pages: 0, limit: 0 });
    let (reactor, pool) = write(connector);
    let (log, done) = wal_state(&background);
    assert!(log >= COMMITS as i32 * 70, "({log}, {done})");
    assert_eq!(done, 0, "a commit ran a checkpoint");
    let stats = pool.connector().checkpoint_statistics();
    assert_eq!((stats.background, stats.inline), (0, 0));
    close(&reactor, &pool);
}

#[test]
fn the_checkpointer_thread_checkpoints_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bg.db");
    let connector =
        SqliteConnector::new(&path).checkpoints(Checkpoints::Background { pages: 1, limit: 0 });
    let (reactor, pool) = write(connector);
    // Wait for the thread (it runs concurrently by design); the deadline
    // only turns a hang into a failure.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.connector().checkpoint_statistics().checkpointed_frames == 0 {
        assert!(Instant::now() < deadline, "no background checkpoint");
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = pool.connector().checkpoint_statistics();
    assert!(stats.background >= 1);
    assert_eq!((stats.inline, stats.failed), (0, 0));
    let (_log, done) = wal_state(&path);
    assert!(done > 0, "the WAL holds checkpointed frames");
    close(&reactor, &pool);
}

#[test]
fn at_the_limit_a_commit_checkpoints_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limit.db");
    let connector =
        SqliteConnector::new(&path).checkpoints(Checkpoints::Background { pages: 0, limit: 1 });
    let (reactor, pool) = write(connector);
    let stats = pool.connector().checkpoint_statistics();
    assert!(stats.inline > COMMITS as u64, "{stats:?}"); // the table too
    assert_eq!(stats.background, 0);
    let (log, done) = wal_state(&path);
    assert!(log > 0 && done == log, "({log}, {done})");
    close(&reactor, &pool);
}

#[test]
fn closing_the_pool_stops_the_checkpointer_and_removes_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("close.db");
    let connector =
        SqliteConnector::new(&path).checkpoints(Checkpoints::Background { pages: 1, limit: 0 });
    let (reactor, pool) = write(connector);
    close(&reactor, &pool);
    // The last connection to close removes the WAL: the checkpointer's
    // connection was closed before the pool's last one.
    assert!(!dir.path().join("close.db-wal").exists());
    let n: i64 = Connection::open(&path)
        .unwrap()
        .query_row("select count(*) from t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, COMMITS);
    // A new pool over the same connector starts a new checkpointer.
    let p = ConnectionPool::new(&reactor.handle(), pool.connector().clone()).unwrap();
    let q = p.clone();
    let n = reactor
        .run_until_complete(async move {
            q.run_operation("insert into t values (1)", []).await?;
            let n = q
                .run_query_map("select count(*) from t", [], |r| r.get::<_, i64>(0))
                .await?;
            q.close().await.ok();
            Ok::<_, DbError>(n[0])
        })
        .unwrap()
        .unwrap();
    assert_eq!(n, COMMITS + 1);
    assert!(!dir.path().join("close.db-wal").exists());
}

#[test]
fn a_connection_dropped_without_close_stops_the_checkpointer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drop.db");
    let connector =
        SqliteConnector::new(&path).checkpoints(Checkpoints::Background { pages: 1, limit: 0 });
    let w = connector.open(Role::Writer).unwrap();
    w.execute_batch("create table t (x); insert into t values (1)")
        .unwrap();
    // SQLite frees the hook (and its lease) when the connection closes:
    // the last lease joins the checkpointer from inside that close.
    drop(w);
    // Everything is closed: the last closer removed the WAL.
    assert!(!dir.path().join("drop.db-wal").exists());
    let again = connector.open(Role::Writer).unwrap();
    let n: i64 = again
        .query_row("select count(*) from t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    connector.close(again).unwrap();
}
