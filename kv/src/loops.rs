//! Serving HTTP on several loops (`Config::loops`).
//!
//! Each loop is its own weft `Reactor` on its own thread (loop 0 is the
//! thread that called [`run`](crate::run)) with its own listening socket on
//! the same address (`SO_REUSEPORT`: the kernel spreads new connections
//! over the sockets). A connection lives and dies on the loop that
//! accepted it; its state stays loop-local (`Rc`/`Cell`), as with one loop.
//!
//! **One database pool.** Loop 0 builds it (and closes it at the end);
//! every loop, loop 0 included, calls it through its `SharedPool`: the job
//! goes straight from the calling loop to the pool's connection threads
//! (with the other jobs of the same turn, as one hand-over at its end),
//! and its `Deferred` resolves on the calling loop. Loop 0 does no work for
//! the other loops' calls, and the pool's figures (atomics) are read from
//! any loop.
//!
//! **Balance.** The kernel's `SO_REUSEPORT` spread hashes each
//! connection's addresses, so one loop may get many more connections than
//! another (measured: +20% with wrk, +50% with weft-load, 64 connections);
//! the busier loop then makes the tail. So every loop counts its live
//! connections (`Peers::live`, atomics), and a loop that accepts a
//! connection while it holds more than the least-loaded loop hands the
//! socket over to that loop (`weft::net::TcpStream::into_std`, then the
//! target's `Remote`), which serves it from then on ([`pick_loop`] is the
//! rule). The count is reserved on the target when the decision is made, so
//! a burst of accepts (wrk opens all its connections at once) does not send
//! everything the same way before the target has adopted any of it.
//!
//! **Metrics** stay per loop (`Rc<Metrics>`, no atomics). A scrape on any
//! loop asks every other loop for a copy of its counters (a hop to each),
//! reads each reactor's statistics through its `Remote` (thread-safe), and
//! renders the sums plus per-loop series (`metrics::render_loops`).
//!
//! Invariants:
//! - `LOCAL` holds the current loop's `App` only while its server runs on
//!   this thread (set and cleared by [`LocalGuard`]).
//! - Loop 0 closes the pool only after every other loop reported `Done`,
//!   so a request finishing on another loop during the drain still reaches
//!   the database.
//! - `Peers::live[i]` counts loop `i`'s connections: reserved when a loop
//!   decides to serve a connection (its own or handed over), released when
//!   the connection ends (`ConnGuard`) or when a handed-over socket cannot
//!   be adopted (moved to the loop that serves it, or released when the
//!   socket is closed unserved).
//! - `ADOPT` holds the current loop's adopt hook only while its accept loop
//!   runs; a socket handed to a loop that stopped accepting is closed (as
//!   the kernel closes the backlog of a closed listener).
//! - A loop thread always reports `Done` (a guard sends it on unwind too),
//!   so loop 0 never waits forever on a loop that died.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Poll, Waker};

use socket2::{Domain, Socket, Type};
use weft::{Deferred, Remote};
use weft_db::{DbError, DbPoolStatistics, SharedPool};

use crate::metrics::{DbHistograms, LoopSources, MetricsSnapshot, Sources};
use crate::routes::App;
use crate::{Config, ShutdownTrigger};

/// Serves a socket handed over from another loop on this one: the socket
/// and the loop whose count was reserved for it.
pub(crate) type AdoptHook = Rc<dyn Fn(std::net::TcpStream, usize)>;

thread_local! {
    static LOCAL: RefCell<Option<Rc<App>>> = const { RefCell::new(None) };
    static ADOPT: RefCell<Option<AdoptHook>> = const { RefCell::new(None) };
}

/// The balancing rule: which loop serves a connection that loop `me`
/// accepted, given each loop's live connections (without the new one).
/// `me` while it holds no more than the least-loaded loop; otherwise the
/// least-loaded loop (the lowest index among equals). Loops then never
/// differ by more than one connection when connections arrive one by one.
/// The counts are read as they come, in one pass (an accept reads the live
/// atomics straight in, with no vector).
pub(crate) fn pick_loop(me: usize, live: impl IntoIterator<Item = usize>) -> usize {
    let mut min: Option<(usize, usize)> = None;
    let mut mine = None;
    for (i, n) in live.into_iter().enumerate() {
        if min.is_none_or(|(_, m)| n < m) {
            min = Some((i, n));
        }
        if i == me {
            mine = Some(n);
        }
    }
    match (min, mine) {
        (Some((min_i, min)), Some(mine)) if mine > min => min_i,
        _ => me,
    }
}

/// Binds `n` listening sockets on `addr` (port 0: the first picks the
/// port, the others join it). With `n > 1` each has `SO_REUSEPORT`; note
/// that any other socket of the same user with `SO_REUSEPORT` could then
/// join the port too (the kernel checks the user id).
pub(crate) fn bind_listeners(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let bind_one = |addr: SocketAddr| -> io::Result<std::net::TcpListener> {
        let s = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            None,
        )?;
        s.set_reuse_address(true)?;
        if n > 1 {
            s.set_reuse_port(true)?;
        }
        s.bind(&addr.into())?;
        s.listen(1024)?;
        Ok(s.into())
    };
    let first = bind_one(addr)?;
    let actual = first.local_addr()?;
    let mut all = Vec::with_capacity(n);
    all.push(first);
    for _ in 1..n {
        all.push(bind_one(actual)?);
    }
    Ok(all)
}

/// What every loop shares (thread-safe): the loops' remotes, in loop
/// order, once all started; and loop 0's reactor pool (for `/metrics`).
pub(crate) struct Peers {
    pub(crate) remotes: OnceLock<Vec<Remote>>,
    pub(crate) reactor_pool: Arc<weft::ThreadPool>,
    /// Each loop's live connections (see the module notes).
    pub(crate) live: Box<[AtomicUsize]>,
    /// `Config::balance_loops`.
    balance: bool,
}

impl Peers {
    pub(crate) fn new(loops: usize, balance: bool, reactor_pool: Arc<weft::ThreadPool>) -> Peers {
        Peers {
            remotes: OnceLock::new(),
            reactor_pool,
            live: (0..loops.max(1)).map(|_| AtomicUsize::new(0)).collect(),
            balance,
        }
    }

    /// Decides which loop serves a connection loop `me` just accepted and
    /// reserves it there. Before every loop has started (no remotes yet),
    /// or with balancing off, the accepting loop keeps it.
    pub(crate) fn place(&self, me: usize) -> usize {
        let target = if self.balance && self.remotes.get().is_some() {
            pick_loop(me, self.live.iter().map(|n| n.load(Ordering::Relaxed)))
        } else {
            me
        };
        self.live[target].fetch_add(1, Ordering::Relaxed);
        target
    }

    /// Gives back a reservation on loop `i`.
    pub(crate) fn release(&self, i: usize) {
        self.live[i].fetch_sub(1, Ordering::Relaxed);
    }

    /// Gives a reservation on loop `from` to loop `to` (a handed-over
    /// socket adopted elsewhere than planned).
    pub(crate) fn move_reservation(&self, from: usize, to: usize) {
        if from != to {
            self.live[to].fetch_add(1, Ordering::Relaxed);
            self.release(from);
        }
    }
}

/// Hands `stream`, reserved on loop `target`, over to that loop. If that
/// loop has stopped, this loop adopts it (its own hook runs here).
pub(crate) fn hand_over(peers: &Arc<Peers>, stream: weft::net::TcpStream, target: usize) {
    let socket = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            // Closed: nothing to serve.
            peers.release(target);
            tracing::warn!(error = %e, "cannot hand a connection over");
            return;
        }
    };
    let p = peers.clone();
    let adopt = move || adopt(socket, target, &p);
    match peers.remotes.get().and_then(|r| r.get(target)) {
        Some(r) => {
            if let Err(back) = r.call_from_thread(adopt) {
                (back.into_inner())()
            }
        }
        None => adopt(),
    }
}

/// Runs on the loop that is to serve `socket` (reserved on loop
/// `reserved`): its adopt hook serves it, or, if that loop no longer
/// accepts, the socket is closed and the reservation given back.
fn adopt(socket: std::net::TcpStream, reserved: usize, peers: &Peers) {
    let hook = ADOPT.with(|a| a.borrow().clone());
    match hook {
        Some(h) => h(socket, reserved),
        None => {
            drop(socket);
            peers.release(reserved);
        }
    }
}

/// Registers this loop's adopt hook while its accept loop runs.
pub(crate) struct AdoptGuard;

impl AdoptGuard {
    pub(crate) fn set(hook: AdoptHook) -> AdoptGuard {
        ADOPT.with(|a| *a.borrow_mut() = Some(hook));
        AdoptGuard
    }
}

impl Drop for AdoptGuard {
    fn drop(&mut self) {
        let _ = ADOPT.try_with(|a| a.borrow_mut().take());
    }
}

/// How a loop reaches the database pool: its `SharedPool`, called from
/// this loop (no hop through loop 0).
#[derive(Clone)]
pub(crate) struct Db(pub(crate) SharedPool);

impl Db {
    /// Runs `f` against the pool from this loop and awaits its result here.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&SharedPool) -> Deferred<T, DbError>,
    {
        f(&self.0).await
    }
}

/// Registers the running server's `App` on this loop thread.
pub(crate) struct LocalGuard;

impl LocalGuard {
    pub(crate) fn set(app: &Rc<App>) -> LocalGuard {
        LOCAL.with(|l| *l.borrow_mut() = Some(app.clone()));
        LocalGuard
    }
}

impl Drop for LocalGuard {
    fn drop(&mut self) {
        let _ = LOCAL.try_with(|l| l.borrow_mut().take());
    }
}

fn local_parts(app: &App) -> (MetricsSnapshot, Option<weft::net::AcceptStatistics>) {
    (app.metrics.snapshot(), app.accept_stats.get())
}

fn db_figures(pool: &SharedPool) -> (DbPoolStatistics, Vec<DbHistograms>) {
    let hist = [weft_db::Group::Writer, weft_db::Group::Readers]
        .map(|group| DbHistograms {
            group,
            queue_wait: pool.queue_wait_histogram(group),
            run_time: pool.run_time_histogram(group),
        })
        .to_vec();
    (pool.statistics(), hist)
}

/// `/metrics` as seen from this loop: every loop's figures, summed and
/// per loop.
pub(crate) async fn scrape(app: &App) -> String {
    let local = || {
        let reactor = app.handle.statistics();
        let (metrics, accept) = local_parts(app);
        LoopSources {
            metrics,
            reactor,
            accept,
            turn: Some(app.handle.turn_histogram()),
            inbox_oldest_age: Some(reactor.inbox_oldest_age),
        }
    };
    let mut loops = Vec::new();
    match app.peers.remotes.get() {
        None => loops.push(local()),
        Some(remotes) => {
            for (i, r) in remotes.iter().enumerate() {
                if i == app.index {
                    loops.push(local());
                    continue;
                }
                let parts = r
                    .run_coroutine_threadsafe(|| {
                        let p = LOCAL.with(|l| l.borrow().as_deref().map(local_parts));
                        async move { p }
                    })
                    .await;
                // A loop already gone contributes its reactor figures only.
                let (metrics, accept) = parts.ok().flatten().unwrap_or_default();
                let reactor = r.statistics();
                loops.push(LoopSources {
                    metrics,
                    reactor,
                    accept,
                    turn: Some(r.turn_histogram()),
                    inbox_oldest_age: Some(reactor.inbox_oldest_age),
                });
            }
        }
    }
    let (db, db_histograms) = db_figures(&app.db.0);
    let src = Sources {
        db,
        db_histograms,
        reactor_pool: app.peers.reactor_pool.statistics(),
        ..Sources::default()
    };
    crate::metrics::render_loops(&loops, &src)
}

/// A loop's life as loop 0 sees it.
pub(crate) enum LoopEvent {
    /// The loop's reactor exists (its remote) or could not be built.
    Started(usize, Result<Remote, String>),
    /// The loop finished serving: connections accepted and abandoned.
    Done(usize, Result<(u64, u64), String>),
}

/// A multi-producer queue whose consumer awaits on a weft loop (the
/// producers are plain threads).
pub(crate) struct Mailbox<T> {
    inner: Arc<Mutex<(VecDeque<T>, Option<Waker>)>>,
}

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Mailbox {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Mailbox {
            inner: Arc::new(Mutex::new((VecDeque::new(), None))),
        }
    }
}

impl<T> Mailbox<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<T>, Option<Waker>)> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub(crate) fn send(&self, t: T) {
        let w = {
            let mut g = self.lock();
            g.0.push_back(t);
            g.1.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    pub(crate) async fn recv(&self) -> T {
        poll_fn(|cx| {
            let mut g = self.lock();
            match g.0.pop_front() {
                Some(t) => Poll::Ready(t),
                None => {
                    g.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// Sends `Done` with an error if the loop thread unwinds before it could.
struct DoneGuard {
    mailbox: Mailbox<LoopEvent>,
    index: usize,
    armed: bool,
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        if self.armed {
            self.mailbox.send(LoopEvent::Done(
                self.index,
                Err("loop thread panicked".into()),
            ));
        }
    }
}

/// What a loop other than 0 needs.
pub(crate) struct LoopStart {
    pub(crate) index: usize,
    pub(crate) listener: std::net::TcpListener,
    pub(crate) config: Config,
    /// Where this loop runs (`Config::loop_cpus`).
    pub(crate) placement: crate::cpus::Placement,
    pub(crate) shutdown: ShutdownTrigger,
    pub(crate) db: Db,
    pub(crate) peers: Arc<Peers>,
    pub(crate) mailbox: Mailbox<LoopEvent>,
}

/// Starts loop `s.index` on a new thread (`weft-kv-loop-N`). It reports
/// `Started`, serves until the shutdown trigger fires and its connections
/// drained, then reports `Done`.
pub(crate) fn spawn_loop(s: LoopStart) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("weft-kv-loop-{}", s.index))
        .spawn(move || {
            let mut guard = DoneGuard {
                mailbox: s.mailbox.clone(),
                index: s.index,
                armed: true,
            };
            // Started by loop 0: back to the process's CPUs before the
            // build (this loop's watchdog keeps them), then its own.
            let built = s
                .placement
                .unplace()
                .and_then(|()| crate::build_reactor(&s.config))
                .and_then(|r| s.placement.place_loop().map(|()| r));
            let reactor = match built {
                Ok(r) => r,
                Err(e) => {
                    s.mailbox
                        .send(LoopEvent::Started(s.index, Err(e.to_string())));
                    guard.armed = false;
                    s.mailbox.send(LoopEvent::Done(s.index, Ok((0, 0))));
                    return;
                }
            };
            s.mailbox
                .send(LoopEvent::Started(s.index, Ok(reactor.remote())));
            let env = crate::server::LoopEnv {
                index: s.index,
                config: s.config,
                shutdown: s.shutdown,
                db: s.db,
                peers: s.peers,
            };
            let listener = s.listener;
            let r = reactor.run_until_complete(async move {
                let listener = weft::net::TcpListener::from_std(listener)?;
                crate::server::serve_loop(env, listener).await
            });
            let done = match r {
                Ok(Ok(summary)) => Ok(summary),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            guard.armed = false;
            s.mailbox.send(LoopEvent::Done(s.index, done));
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_keeps_a_connection_unless_it_holds_more_than_the_least_loaded() {
        // Ties and fewer: keep.
        assert_eq!(pick_loop(0, [0, 0]), 0);
        assert_eq!(pick_loop(1, [3, 3]), 1);
        assert_eq!(pick_loop(0, [2, 5]), 0);
        // More than another: to the least-loaded, the lowest index first.
        assert_eq!(pick_loop(0, [1, 0]), 1);
        assert_eq!(pick_loop(1, [4, 9]), 0);
        assert_eq!(pick_loop(2, [3, 2, 4, 2]), 1);
        // One loop, or an index out of range (never happens): keep.
        assert_eq!(pick_loop(0, [7]), 0);
        assert_eq!(pick_loop(5, [1, 0]), 5);
        assert_eq!(pick_loop(0, [0usize; 0]), 0);
    }

    #[test]
    fn connections_arriving_one_by_one_end_up_balanced_whichever_loop_accepts_them() {
        // Any accepting order (here: every pattern of 12 accepts over 2 and
        // over 3 loops, all on loop 0 included) leaves the counts within one.
        for loops in [2usize, 3] {
            for pattern in 0..loops.pow(6) {
                let mut live = vec![0usize; loops];
                let mut p = pattern;
                for _ in 0..12 {
                    let me = p % loops;
                    p /= loops;
                    let to = pick_loop(me, live.iter().copied());
                    live[to] += 1;
                }
                let (lo, hi) = (live.iter().min().unwrap(), live.iter().max().unwrap());
                assert!(hi - lo <= 1, "{loops} loops, pattern {pattern}: {live:?}");
            }
        }
    }

    #[test]
    fn peers_reserve_on_the_chosen_loop_and_keep_everything_before_all_loops_started() {
        let pool = Arc::new(weft::ThreadPool::new(1, 1).unwrap());
        let peers = Peers::new(2, true, pool.clone());
        // No remotes yet: kept.
        assert_eq!(peers.place(0), 0);
        assert_eq!(peers.place(0), 0);
        let reactor = weft::Reactor::new().unwrap();
        let _ = peers.remotes.set(vec![reactor.remote(), reactor.remote()]);
        // Loop 0 holds 2, loop 1 none: the next two go to loop 1.
        assert_eq!(peers.place(0), 1);
        assert_eq!(peers.place(0), 1);
        assert_eq!(peers.place(0), 0);
        peers.move_reservation(1, 0);
        let live = |p: &Peers| {
            p.live
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        };
        assert_eq!(live(&peers), [4, 1]);
        peers.release(0);
        assert_eq!(live(&peers), [3, 1]);
        // Balancing off: always kept.
        let off = Peers::new(2, false, pool);
        let _ = off.remotes.set(vec![reactor.remote(), reactor.remote()]);
        for _ in 0..3 {
            assert_eq!(off.place(0), 0);
        }
    }
}
