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
//! - A loop thread always reports `Done` (a guard sends it on unwind too),
//!   so loop 0 never waits forever on a loop that died.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Poll, Waker};

use socket2::{Domain, Socket, Type};
use weft::{Deferred, Remote};
use weft_db::{DbError, DbPoolStatistics, SharedPool};

use crate::metrics::{DbHistograms, LoopSources, MetricsSnapshot, Sources};
use crate::routes::App;
use crate::{Config, ShutdownTrigger};

thread_local! {
    static LOCAL: RefCell<Option<Rc<App>>> = const { RefCell::new(None) };
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
            let reactor = match crate::build_reactor(&s.config) {
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
