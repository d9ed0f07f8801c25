//! The accept loop, the per-connection tasks and the shutdown sequence.
//!
//! Invariants:
//! - `Conns` is touched only on the loop thread: a slab of the wakers of
//!   live connection tasks, so draining can wake each one to call hyper's
//!   `graceful_shutdown` from inside its own task.
//! - A connection task removes its slot on every exit path (a guard's
//!   `Drop`), and the drain waiter is woken when the slab empties.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use std::sync::Arc;

use hyper::server::conn::http1;
use weft::net::{TcpListener, TcpStream};
use weft_db::{ConnectionPool, SqliteConnector};

use crate::loops::{self, Db, LoopEvent, LoopStart, Mailbox, Peers};
use crate::metrics::Metrics;
use crate::routes::{self, App};
use crate::rt::{HyperIo, WeftTimer};
use crate::{Config, Error, Ready, ShutdownTrigger, Summary};

#[derive(Default)]
struct Conns {
    wakers: RefCell<slab::Slab<Option<Waker>>>,
    draining: Cell<bool>,
    empty_waker: RefCell<Option<Waker>>,
}

struct ConnGuard {
    conns: Rc<Conns>,
    key: usize,
    metrics: Rc<Metrics>,
    /// Released from `peers.live[index]` at the end.
    app: Rc<App>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut w = self.conns.wakers.borrow_mut();
        w.remove(self.key);
        let empty = w.is_empty();
        drop(w);
        let m = &self.metrics;
        m.connections_open.set(m.connections_open.get() - 1);
        self.app.peers.release(self.app.index);
        if empty && let Some(w) = self.conns.empty_waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// SIGINT and SIGTERM on the loop (weft's `add_signal_handler`): the first
/// fires the graceful shutdown, a second one exits at once with status 1.
/// Returns the handler ids, to remove when the server is done (which gives
/// the signals back their default disposition).
fn install_signal_handlers(
    handle: &weft::reactor::Handle,
    trigger: &ShutdownTrigger,
) -> Result<Vec<weft::reactor::SignalHandlerId>, Error> {
    let seen = Rc::new(Cell::new(0u32));
    let mut ids = Vec::with_capacity(2);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let (seen, trigger) = (seen.clone(), trigger.clone());
        let id = handle.add_signal_handler(sig, move || {
            seen.set(seen.get() + 1);
            if seen.get() == 1 {
                eprintln!("weft-kv: signal {sig}: shutting down (again to exit now)");
                trigger.trigger();
            } else {
                eprintln!("weft-kv: second signal: exiting now");
                std::process::exit(1);
            }
        });
        match id {
            Ok(id) => ids.push(id),
            Err(e) => {
                for id in ids {
                    handle.remove_signal_handler(id);
                }
                return Err(Error::Io(e.into()));
            }
        }
    }
    Ok(ids)
}

/// Probes loop lag: a 10 ms timer that records how late it fires, and
/// for a tick over 1 ms late, whether the loop thread was held off its
/// core for most of it (the thread's own scheduler figures, read once per
/// tick; see `sched::cause_of`).
fn start_lag_probe(handle: &weft::reactor::Handle, metrics: Rc<Metrics>, stop: Rc<Cell<bool>>) {
    const TICK: Duration = Duration::from_millis(10);
    const LATE: Duration = Duration::from_millis(1);
    struct Probe {
        handle: weft::reactor::Handle,
        metrics: Rc<Metrics>,
        stop: Rc<Cell<bool>>,
        /// `None` without procfs schedstats: ticks are timed, not told apart
        /// (neither late-tick counter moves).
        sched: Option<crate::sched::ThreadSchedStat>,
    }
    fn arm(p: Rc<Probe>, expected: std::time::Instant) {
        let h = p.handle.clone();
        h.call_later(TICK, move || {
            if p.stop.get() {
                return;
            }
            let now = std::time::Instant::now();
            let lag = now.saturating_duration_since(expected);
            let m = &p.metrics;
            m.loop_lag.record(lag);
            m.loop_lag_last.set(lag);
            if lag > m.loop_lag_max.get() {
                m.loop_lag_max.set(lag);
            }
            if let Some((_, wait)) = p.sched.as_ref().and_then(|s| s.read().ok()) {
                let waited = wait.saturating_sub(m.runqueue_wait.replace(wait));
                if lag > LATE {
                    match crate::sched::cause_of(lag, waited) {
                        crate::sched::Cause::Waiting => m.bump(&m.late_ticks_waiting),
                        crate::sched::Cause::Working => m.bump(&m.late_ticks_working),
                    }
                }
            }
            arm(p, now + TICK);
        });
    }
    let sched = crate::sched::ThreadSchedStat::open().ok();
    if let Some((_, wait)) = sched.as_ref().and_then(|s| s.read().ok()) {
        metrics.runqueue_wait.set(wait);
    }
    let p = Rc::new(Probe {
        handle: handle.clone(),
        metrics,
        stop,
        sched,
    });
    arm(p, std::time::Instant::now() + TICK);
}

/// What each database connection thread does first: take its CPUs (the
/// configured ones, or the process's when it inherited a placed loop's),
/// the configured nice value, then policy and slice (checked here, set
/// there: Linux keeps them per thread).
fn db_thread_start(
    nice: Option<i32>,
    policy: crate::DbPolicy,
    slice: Option<Duration>,
    cpus: Option<crate::cpus::CpuList>,
) -> Result<impl Fn(weft_db::Group) + Send + Sync, Error> {
    if let Some(n) = nice
        && !(-20..=19).contains(&n)
    {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("database thread nice value {n} is outside -20..=19"),
        )));
    }
    if let Some(s) = slice
        && !(crate::sched::MIN_SLICE..=crate::sched::MAX_SLICE).contains(&s)
    {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("database thread slice {s:?} is outside 0.1..=100 ms"),
        )));
    }
    Ok(move |_group| {
        // Checked against the process's set when `run` started.
        if let Some(c) = &cpus
            && let Err(e) = c.apply_to_this_thread()
        {
            tracing::warn!(cpus = %c, error = %e, "cannot place a database thread");
        }
        if let Some(n) = nice
            && let Err(e) = rustix::process::setpriority_process(None, n)
        {
            tracing::warn!(nice = n, error = %e, "cannot set a database thread's nice value");
        }
        // After the nice value: the call keeps the thread's current one.
        if (policy != crate::DbPolicy::Normal || slice.is_some())
            && let Err(e) = crate::sched::set_thread_policy(policy, slice)
        {
            tracing::warn!(?policy, ?slice, error = %e, "cannot set a database thread's scheduling policy");
        }
    })
}

/// Loop 0: signals, the database pool and its table, every listener, the
/// other loops; then it serves like the others and, once all of them are
/// done, closes the pool.
pub(crate) async fn serve(
    config: Config,
    placement: crate::cpus::Placement,
    shutdown: ShutdownTrigger,
    on_ready: impl FnOnce(&Ready),
    threads: Rc<RefCell<Vec<std::thread::JoinHandle<()>>>>,
) -> Result<Summary, Error> {
    let handle = weft::reactor::current().expect("serve runs on the loop");
    // First, so a refusal (another server of the process holds the
    // signals) happens before the database and the port are touched. An
    // early return drops the handlers with the reactor.
    let signal_ids = if config.handle_signals {
        install_signal_handlers(&handle, &shutdown)?
    } else {
        Vec::new()
    };
    let pool = ConnectionPool::builder(
        SqliteConnector::new(&config.db_path).checkpoints(config.checkpoints),
    )
    .name("kv")
    .hand_over_per_turn(config.db_hand_over_per_turn)
    .on_thread_start(db_thread_start(
        config.db_nice,
        config.db_policy,
        config.db_slice,
        placement.db_thread(),
    )?)
    .max(config.readers.max(1) + 1)
    .min(config.readers.max(1) + 1)
    .build(&handle)
    .map_err(|e| Error::Db(e.to_string()))?;
    pool.run_interaction(|c| {
        c.execute_batch(routes::SCHEMA)?;
        Ok::<_, weft_db::DbError>(())
    })
    .await
    .map_err(|e| Error::Db(e.to_string()))?;

    let loops = config.loops.max(1);
    let mut listeners = loops::bind_listeners(config.listen, loops)?.into_iter();
    let listener = TcpListener::from_std(listeners.next().expect("one listener at least"))?;
    let addr = listener.local_addr()?;
    let peers = Arc::new(Peers::new(
        loops,
        config.balance_loops,
        handle.thread_pool(),
    ));
    let mailbox = Mailbox::default();
    let mut remotes = vec![Some(handle.remote())];
    remotes.resize(loops, None);
    let mut failure: Option<String> = None;
    let mut running = 0;
    for (i, l) in listeners.enumerate() {
        let start = LoopStart {
            index: i + 1,
            listener: l,
            config: config.clone(),
            placement: placement.clone(),
            shutdown: shutdown.clone(),
            db: Db(pool.shared()),
            peers: peers.clone(),
            mailbox: mailbox.clone(),
        };
        match loops::spawn_loop(start) {
            Ok(t) => {
                threads.borrow_mut().push(t);
                running += 1;
            }
            Err(e) => {
                failure = Some(format!("cannot start loop {}: {e}", i + 1));
                break;
            }
        }
    }
    // Every loop reports Started before anything else.
    let mut done = Vec::new();
    let mut started = 0;
    while started < running {
        match mailbox.recv().await {
            LoopEvent::Started(i, r) => {
                started += 1;
                match r {
                    Ok(r) => remotes[i] = Some(r),
                    Err(e) => {
                        failure.get_or_insert(format!("loop {i}: {e}"));
                    }
                }
            }
            LoopEvent::Done(i, r) => done.push((i, r)),
        }
    }
    if failure.is_none() {
        let _ = peers.remotes.set(remotes.into_iter().flatten().collect());
        let env = LoopEnv {
            index: 0,
            config: config.clone(),
            shutdown: shutdown.clone(),
            db: Db(pool.shared()),
            peers: peers.clone(),
        };
        on_ready(&Ready {
            addr,
            shutdown: shutdown.clone(),
        });
        serve_loop(env, listener).await
    } else {
        drop(listener);
        shutdown.trigger();
        Ok((0, 0))
    }
    .map(|(c, a)| done.push((0, Ok((c, a)))))
    .unwrap_or_else(|e| {
        failure.get_or_insert(e.to_string());
    });
    // Wait for every other loop to drain before the pool goes away.
    while done.iter().filter(|d| d.0 != 0).count() < running {
        if let LoopEvent::Done(i, r) = mailbox.recv().await {
            done.push((i, r));
        }
    }
    let _ = pool.close().await;
    for id in signal_ids {
        handle.remove_signal_handler(id);
    }
    let mut summary = Summary::default();
    for (i, r) in done {
        match r {
            Ok((c, a)) => {
                summary.connections += c;
                summary.abandoned += a;
            }
            Err(e) => {
                failure.get_or_insert(format!("loop {i}: {e}"));
            }
        }
    }
    match failure {
        None => Ok(summary),
        Some(e) => Err(Error::Io(std::io::Error::other(e))),
    }
}

/// What one loop serves with.
pub(crate) struct LoopEnv {
    pub(crate) index: usize,
    pub(crate) config: Config,
    pub(crate) shutdown: ShutdownTrigger,
    pub(crate) db: Db,
    pub(crate) peers: Arc<Peers>,
}

/// Serves one loop until the trigger fires and its connections drained:
/// (connections accepted, abandoned at the drain).
pub(crate) async fn serve_loop(env: LoopEnv, listener: TcpListener) -> Result<(u64, u64), Error> {
    let handle = weft::reactor::current().expect("serve runs on the loop");
    let LoopEnv {
        index,
        config,
        shutdown,
        db,
        peers,
    } = env;
    let metrics = Rc::new(Metrics::default());
    metrics.started.set(Some(std::time::Instant::now()));
    metrics
        .nice
        .set(rustix::process::getpriority_process(None).ok());
    let app = Rc::new(App {
        index,
        db,
        peers,
        metrics: metrics.clone(),
        handle: handle.clone(),
        max_value_bytes: config.max_value_bytes,
        body_read_timeout: config.body_read_timeout,
        accept_stats: Cell::new(None),
    });
    let _local = loops::LocalGuard::set(&app);
    let mut builder = http1::Builder::new();
    builder
        .timer(WeftTimer)
        .header_read_timeout(config.header_read_timeout)
        .max_header_size(config.max_header_bytes)
        .keep_alive(true)
        // A client may shut down its sending side once its request is out
        // and still read the answer (RFC 9112 §9.6). It also spares every
        // request hyper's end-of-stream probe while the answer is pending:
        // that read re-reserved the 8 KiB read buffer, still shared with
        // the request's head, so each request allocated and copied a new
        // one (about 1.7k of the loop's 14k instructions per request). A
        // client gone mid-request is then noticed when its answer is
        // written, not before; its database call runs either way once a
        // connection thread took it.
        .half_close(true)
        .pipeline_flush(config.pipeline_flush);
    let builder = Rc::new(builder);
    let conns = Rc::new(Conns::default());
    let lag_stop = Rc::new(Cell::new(false));
    start_lag_probe(&handle, metrics.clone(), lag_stop.clone());

    // Sockets other loops hand over are served here while this loop
    // accepts (see `loops`: the balance).
    let adopt_guard = {
        let (handle, app, builder, conns) =
            (handle.clone(), app.clone(), builder.clone(), conns.clone());
        let config = config.clone();
        loops::AdoptGuard::set(Rc::new(move |socket, reserved| {
            app.peers.move_reservation(reserved, app.index);
            match TcpStream::from_std(socket) {
                Ok(stream) => {
                    spawn_connection(&handle, &app, &builder, &conns, stream, &config);
                }
                Err(e) => {
                    app.peers.release(app.index);
                    tracing::warn!(error = %e, "cannot adopt a handed-over connection");
                }
            }
        }))
    };

    // Accept until the trigger fires.
    loop {
        let next = poll_fn(|cx| {
            if shutdown.poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            listener.poll_accept(cx).map(Some)
        })
        .await;
        match next {
            None => break,
            Some(Ok((stream, _peer))) => {
                app.accept_stats.set(Some(listener.accept_statistics()));
                let target = app.peers.place(index);
                if target == index {
                    spawn_connection(&handle, &app, &builder, &conns, stream, &config);
                } else {
                    metrics.bump(&metrics.connections_handed_over);
                    loops::hand_over(&app.peers, stream, target);
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "accept failed"),
        }
    }
    drop(listener);
    drop(adopt_guard);
    tracing::info!(loop = index, "weft-kv: stopped accepting; draining connections");

    // Drain: wake every connection so it calls graceful_shutdown.
    conns.draining.set(true);
    let wakers: Vec<Waker> = conns
        .wakers
        .borrow_mut()
        .iter_mut()
        .filter_map(|(_, w)| w.take())
        .collect();
    for w in wakers {
        w.wake();
    }
    let mut deadline = handle.sleep(config.drain_timeout);
    poll_fn(|cx| {
        if conns.wakers.borrow().is_empty() {
            return Poll::Ready(());
        }
        *conns.empty_waker.borrow_mut() = Some(cx.waker().clone());
        std::pin::Pin::new(&mut deadline).poll(cx).map(|_| ())
    })
    .await;
    deadline.cancel();
    let abandoned = conns.wakers.borrow().len() as u64;
    if abandoned > 0 {
        tracing::warn!(abandoned, "drain timeout: closing connections still open");
    }
    lag_stop.set(true);
    Ok((metrics.connections_accepted.get(), abandoned))
}

use std::future::Future as _;

fn spawn_connection(
    handle: &weft::reactor::Handle,
    app: &Rc<App>,
    builder: &Rc<http1::Builder>,
    conns: &Rc<Conns>,
    stream: TcpStream,
    config: &Config,
) {
    let _ = stream.set_nodelay(true);
    let m = app.metrics.clone();
    m.bump(&m.connections_accepted);
    m.connections_open.set(m.connections_open.get() + 1);
    let key = conns.wakers.borrow_mut().insert(None);
    let guard = ConnGuard {
        conns: conns.clone(),
        key,
        metrics: m.clone(),
        app: app.clone(),
    };
    let m2 = m.clone();
    let io = HyperIo::new(
        stream,
        config.write_stall_timeout,
        Some(Box::new(move || m2.bump(&m2.write_timeouts))),
    );
    let app2 = app.clone();
    let service = hyper::service::service_fn(move |req| {
        let app = app2.clone();
        async move {
            let start = routes::now();
            let m = &app.metrics;
            m.requests_in_flight.set(m.requests_in_flight.get() + 1);
            let (route, resp) = routes::handle(app.clone(), req).await;
            m.requests_in_flight.set(m.requests_in_flight.get() - 1);
            app.metrics
                .record_route(route, resp.status().as_u16(), start.elapsed());
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let conn = builder.serve_connection(io, service);
    let conns = conns.clone();
    let task = async move {
        let guard = guard;
        let mut conn = pin!(conn);
        let mut shut = false;
        let r = poll_fn(|cx| {
            if !shut {
                if conns.draining.get() {
                    conn.as_mut().graceful_shutdown();
                    shut = true;
                } else {
                    let mut w = conns.wakers.borrow_mut();
                    let slot = &mut w[guard.key];
                    match slot {
                        Some(old) if old.will_wake(cx.waker()) => {}
                        _ => *slot = Some(cx.waker().clone()),
                    }
                }
            }
            conn.as_mut().poll(cx)
        })
        .await;
        if let Err(e) = r {
            guard.metrics.bump(&guard.metrics.connection_errors);
            tracing::debug!(error = %e, "connection ended with an error");
        }
    };
    handle.spawn_local(task).detach();
}
