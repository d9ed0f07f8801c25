//! WAL checkpoints off the request path: [`Checkpoints`], its statistics,
//! and the checkpointer thread behind [`Checkpoints::Background`].
//!
//! SQLite's automatic checkpoint runs inside the commit that leaves the WAL
//! at `wal_autocheckpoint` frames: that commit copies the WAL back into the
//! database file and, under `synchronous=NORMAL`, syncs both files before
//! its job ends, so it and every job queued behind it on the writer wait
//! (measured by `db/examples/queue_wait.rs`: checkpoints of ~1000 frames
//! took milliseconds against a median commit of a few µs).
//!
//! With `Background`, every connection gets a WAL hook instead (installing
//! one replaces SQLite's automatic checkpoint): a commit that leaves the
//! WAL at `pages` frames or more only raises a flag; a checkpointer thread
//! with its own connection runs the PASSIVE checkpoint. PASSIVE never waits
//! on a lock and never blocks the writer or the readers; the writer keeps
//! appending meanwhile. If the WAL still reaches `limit` frames (the
//! checkpointer cannot keep up), the committing connection checkpoints
//! itself, as SQLite would, which bounds the WAL.
//!
//! # Invariants
//!
//! - One checkpointer thread per connector while at least one of its
//!   connections is open: each connection's hook holds a [`Lease`]; the
//!   last lease dropped stops the thread and joins it, so its connection is
//!   closed before the pool's last connection closes (the last closer
//!   checkpoints and deletes the WAL).
//! - No lost wake-up: a hook sets `armed` and then takes the signal's lock
//!   to notify; the thread checks `armed` under that lock before it waits.
//!   The thread clears `armed` before each checkpoint, so a commit during a
//!   checkpoint arms the next one.

use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags};

use crate::lock;

/// When a file database's WAL is checkpointed (copied back into the
/// database file so the WAL can start over); see
/// [`SqliteConnector::checkpoints`](crate::SqliteConnector::checkpoints).
///
/// # Examples
///
/// ```
/// use weft_db::Checkpoints;
///
/// assert_eq!(Checkpoints::default(), Checkpoints::OnCommit { pages: 1000 });
/// assert_eq!(
///     Checkpoints::background(),
///     Checkpoints::Background { pages: 1000, limit: 10_000 }
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Checkpoints {
    /// SQLite's automatic checkpoint (`PRAGMA wal_autocheckpoint = pages`):
    /// the commit that leaves the WAL at `pages` frames or more runs a
    /// PASSIVE checkpoint itself, inside its job, so that job and the jobs
    /// queued behind it wait for the copy and (under
    /// [`Synchronous::Normal`](crate::Synchronous::Normal) or `Full`) two
    /// fsyncs. `pages: 0` turns checkpoints off: the WAL grows until the
    /// last connection closes. The default, with SQLite's 1000 pages.
    OnCommit {
        /// WAL frames (pages) that trigger a checkpoint.
        pages: u32,
    },
    /// Checkpoints off the request path: commits never checkpoint; each
    /// time commits add `pages` frames to the WAL, a checkpointer thread
    /// with its own connection runs a PASSIVE checkpoint, which waits on
    /// no lock and blocks neither the writer nor the readers. Costs one
    /// thread and one connection while the pool has a connection open.
    ///
    /// The WAL starts over only when a write begins with every frame
    /// checkpointed, so under writes without pauses (the writer commits
    /// while the checkpointer copies) it keeps growing; at `limit` frames
    /// the committing connection checkpoints the rest itself, as with
    /// `OnCommit`, and the WAL starts over: under such a load, one
    /// checkpoint on the request path per `limit` frames instead of one per
    /// `pages`, and a WAL of up to `limit` pages. `limit: 0` means never
    /// (the WAL then grows until a pause).
    Background {
        /// WAL frames (pages) that wake the checkpointer.
        pages: u32,
        /// WAL frames at which a commit checkpoints itself after all.
        limit: u32,
    },
}

impl Default for Checkpoints {
    fn default() -> Self {
        Checkpoints::OnCommit { pages: 1000 }
    }
}

impl Checkpoints {
    /// [`Background`](Checkpoints::Background) with SQLite's 1000-page
    /// trigger and a 10,000-page limit (about 40 MB of WAL at 4 KiB pages).
    ///
    /// # Examples
    ///
    /// ```
    /// let c = weft_db::SqliteConnector::new("app.db").checkpoints(weft_db::Checkpoints::background());
    /// # drop(c);
    /// ```
    pub const fn background() -> Checkpoints {
        Checkpoints::Background {
            pages: 1000,
            limit: 10_000,
        }
    }
}

/// What the checkpoints of one [`SqliteConnector`](crate::SqliteConnector)
/// did, since it was created (shared by its clones); see
/// [`SqliteConnector::checkpoint_statistics`](crate::SqliteConnector::checkpoint_statistics).
///
/// Counted only under [`Checkpoints::Background`]; SQLite's own automatic
/// checkpoints are not observable without replacing them.
///
/// # Examples
///
/// ```
/// let s = weft_db::CheckpointStatistics::default();
/// assert_eq!((s.background, s.inline), (0, 0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CheckpointStatistics {
    /// Checkpoints the checkpointer thread completed.
    pub background: u64,
    /// Of those, the ones that found another checkpoint running (SQLite
    /// answers `SQLITE_BUSY` and does nothing).
    pub busy: u64,
    /// Checkpoints the checkpointer thread could not run (an error other
    /// than busy, or its connection failed to open); each is logged.
    pub failed: u64,
    /// Commits that checkpointed themselves because the WAL reached the
    /// `limit`.
    pub inline: u64,
    /// Frames in the WAL at the last completed background checkpoint.
    pub wal_frames: u64,
    /// Of those, the frames checkpointed (all of them unless a reader
    /// still needed the rest).
    pub checkpointed_frames: u64,
}

#[derive(Default)]
struct Counters {
    background: AtomicU64,
    busy: AtomicU64,
    failed: AtomicU64,
    inline: AtomicU64,
    wal_frames: AtomicU64,
    checkpointed_frames: AtomicU64,
}

/// The wake-up between the hooks and the checkpointer thread.
#[derive(Default)]
struct Signal {
    /// The WAL frames the last background checkpoint saw (its `mxFrame`):
    /// the next wake-up waits for `pages` frames more, so a checkpoint runs
    /// once per `pages` new frames, not after every commit.
    base: AtomicU32,
    armed: AtomicBool,
    stop: Mutex<bool>,
    cv: Condvar,
}

impl Signal {
    fn arm(&self) {
        if !self.armed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let _guard = lock(&self.stop);
            self.cv.notify_one();
        }
    }

    /// Waits until armed (true) or stopped (false).
    fn wait(&self) -> bool {
        let mut stop = lock(&self.stop);
        loop {
            if *stop {
                return false;
            }
            if self.armed.swap(false, std::sync::atomic::Ordering::AcqRel) {
                return true;
            }
            stop = self
                .cv
                .wait(stop)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn stop(&self) {
        *lock(&self.stop) = true;
        self.cv.notify_one();
    }
}

struct Running {
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct HubState {
    leases: usize,
    running: Option<Running>,
}

/// One connector's checkpointer: its thread (while leased) and counters.
#[derive(Default)]
pub(crate) struct Hub {
    state: Mutex<HubState>,
    counters: Arc<Counters>,
}

/// Held by each connection's WAL hook; the last one dropped stops the
/// checkpointer thread and joins it.
pub(crate) struct Lease {
    hub: Arc<Hub>,
    signal: Arc<Signal>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let running = {
            let mut st = lock(&self.hub.state);
            st.leases -= 1;
            if st.leases == 0 {
                st.running.take()
            } else {
                None
            }
        };
        if let Some(mut r) = running {
            r.signal.stop();
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// What the WAL hook does after a commit that left `frames` in the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Nothing,
    Wake,
    Inline,
}

/// The decision for a commit that left `frames` in the WAL, when the last
/// background checkpoint saw `base` frames (a WAL that has restarted since
/// holds fewer).
pub(crate) fn action(frames: c_int, base: u32, pages: u32, limit: u32) -> Action {
    let frames = u32::try_from(frames).unwrap_or(0);
    let base = if frames < base { 0 } else { base };
    if limit > 0 && frames >= limit {
        Action::Inline
    } else if pages > 0 && frames - base >= pages {
        Action::Wake
    } else {
        Action::Nothing
    }
}

impl Hub {
    pub(crate) fn statistics(&self) -> CheckpointStatistics {
        let c = &self.counters;
        CheckpointStatistics {
            background: c.background.load(Relaxed),
            busy: c.busy.load(Relaxed),
            failed: c.failed.load(Relaxed),
            inline: c.inline.load(Relaxed),
            wal_frames: c.wal_frames.load(Relaxed),
            checkpointed_frames: c.checkpointed_frames.load(Relaxed),
        }
    }

    /// Installs the background hook on `conn` (replacing SQLite's automatic
    /// checkpoint), starting the checkpointer for `path` if none runs.
    pub(crate) fn install(
        self: &Arc<Self>,
        conn: &mut Connection,
        path: &str,
        synchronous: &'static str,
        pages: u32,
        limit: u32,
    ) -> rusqlite::Result<()> {
        let lease = self.lease(path, synchronous);
        let counters = self.counters.clone();
        conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, frames| {
            let base = lease.signal.base.load(Relaxed);
            match action(frames, base, pages, limit) {
                Action::Nothing => {}
                Action::Wake => lease.signal.arm(),
                Action::Inline => {
                    counters.inline.fetch_add(1, Relaxed);
                    // What SQLite's own hook does; its outcome is the next
                    // commit's concern, as there.
                    let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
                }
            }
            Ok(())
        }))
    }

    fn lease(self: &Arc<Self>, path: &str, synchronous: &'static str) -> Lease {
        let mut st = lock(&self.state);
        st.leases += 1;
        let signal = match &st.running {
            Some(r) => r.signal.clone(),
            None => {
                let signal = Arc::new(Signal::default());
                let (s, c, p) = (signal.clone(), self.counters.clone(), path.to_owned());
                let thread = std::thread::Builder::new()
                    .name("weft-db-checkpoint".into())
                    .spawn(move || checkpointer(&p, synchronous, &s, &c))
                    .map_err(|e| {
                        self.counters.failed.fetch_add(1, Relaxed);
                        tracing::error!(error = %e, "weft-db: no checkpointer thread; commits checkpoint at the limit only");
                    })
                    .ok();
                st.running = Some(Running {
                    signal: signal.clone(),
                    thread,
                });
                signal
            }
        };
        Lease {
            hub: self.clone(),
            signal,
        }
    }
}

/// The checkpointer thread: a PASSIVE checkpoint each time it is woken.
fn checkpointer(path: &str, synchronous: &str, signal: &Signal, counters: &Counters) {
    let open = || -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        // It never writes; a checkpoint is allowed under query_only. Its
        // checkpoints sync as the writer's would.
        conn.pragma_update(None, "query_only", true)?;
        conn.pragma_update(None, "synchronous", synchronous)?;
        Ok(conn)
    };
    let conn = match open() {
        Ok(c) => c,
        Err(e) => {
            counters.failed.fetch_add(1, Relaxed);
            tracing::error!(path, error = %e, "weft-db: the checkpointer could not open the database; commits checkpoint at the limit only");
            return;
        }
    };
    while signal.wait() {
        match conn.wal_checkpoint_v2(rusqlite::DEFAULT_NAME, CheckpointMode::PASSIVE) {
            Ok((log, done)) => {
                signal.base.store(u32::try_from(log).unwrap_or(0), Relaxed);
                counters.background.fetch_add(1, Relaxed);
                counters
                    .wal_frames
                    .store(u64::try_from(log).unwrap_or(0), Relaxed);
                counters
                    .checkpointed_frames
                    .store(u64::try_from(done).unwrap_or(0), Relaxed);
            }
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                counters.background.fetch_add(1, Relaxed);
                counters.busy.fetch_add(1, Relaxed);
            }
            Err(e) => {
                counters.failed.fetch_add(1, Relaxed);
                tracing::warn!(path, error = %e, "weft-db: background checkpoint failed");
            }
        }
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(path, error = %e, "weft-db: checkpointer close failed");
    }
}

#[cfg(test)]
mod tests {
    use super::{Action, action};

    #[test]
    fn the_hook_wakes_at_pages_and_checkpoints_inline_at_the_limit() {
        assert_eq!(action(0, 0, 1000, 10_000), Action::Nothing);
        assert_eq!(action(999, 0, 1000, 10_000), Action::Nothing);
        assert_eq!(action(1000, 0, 1000, 10_000), Action::Wake);
        assert_eq!(action(9_999, 0, 1000, 10_000), Action::Wake);
        assert_eq!(action(10_000, 0, 1000, 10_000), Action::Inline);
        // limit 0: never inline; pages 0: never woken.
        assert_eq!(action(1 << 30, 0, 1000, 0), Action::Wake);
        assert_eq!(action(5, 0, 0, 0), Action::Nothing);
        assert_eq!(action(-1, 0, 1, 1), Action::Nothing);
    }

    #[test]
    fn the_hook_wakes_once_per_pages_new_frames() {
        // The last checkpoint saw 1500 frames: wait for 1000 more.
        assert_eq!(action(1501, 1500, 1000, 0), Action::Nothing);
        assert_eq!(action(2499, 1500, 1000, 0), Action::Nothing);
        assert_eq!(action(2500, 1500, 1000, 0), Action::Wake);
        // The WAL restarted since (fewer frames than then): count from 0.
        assert_eq!(action(2, 1500, 1000, 0), Action::Nothing);
        assert_eq!(action(1000, 1500, 1000, 0), Action::Wake);
        // The limit counts every frame in the WAL.
        assert_eq!(action(10_000, 9_500, 1000, 10_000), Action::Inline);
    }
}
