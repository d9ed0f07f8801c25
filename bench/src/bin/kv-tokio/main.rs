//! `kv-tokio`: weft-kv's tokio twin, a benchmark peer written the way tokio
//! users write it: axum (`axum::serve`) on tokio's multi-thread runtime,
//! rusqlite reached through `spawn_blocking` in one of three ways
//! (`--variant`, see `store.rs`). Same routes, statuses, SQL, schema and
//! SQLite settings as weft-kv; `/metrics` is a stub (the twin is measured
//! from outside).
//!
//! ```text
//! cargo run --release -p weft-bench --bin kv-tokio -- [--listen ADDR] [--db PATH]
//!     [--variant thread-local|mutex|deadpool] [--blocking N] [--pool N] [--workers N]
//!     [--half-close on|off] [--worker-cpus LIST] [--blocking-cpus LIST] [--worker-fifo PRIO]
//! ```
//!
//! - `--blocking N` caps tokio's blocking pool (`max_blocking_threads`;
//!   default: tokio's 512).
//! - `--pool N` sizes the deadpool (default: deadpool's, 2 × CPUs).
//! - `--workers N` sets tokio's worker threads (default: one per CPU).
//! - `--worker-cpus LIST` / `--blocking-cpus LIST` (as `taskset -c`: `0`,
//!   `0-1`, `0,2`): the CPUs tokio's worker threads (and the main thread,
//!   which runs `block_on`'s accept loop) / its blocking threads (where
//!   SQLite runs) may run on, as weft-kv's `--loop-cpus` / `--db-cpus` place
//!   its loop and database threads (same lists and calls:
//!   `weft_kv::cpus`); default: unplaced. tokio starts both kinds through
//!   one pool and one `on_thread_start` hook, so with a placement the twin
//!   names them apart: a thread started while the runtime is being built
//!   (by the thread building it) is a worker (`kv-tokio-worker`), any
//!   other a blocking thread (`kv-tokio-block`), and the hook places
//!   each by its name. A list naming a CPU the process may not use is
//!   refused at start (exit 2).
//! - `--worker-fifo PRIO` runs tokio's workers and the main thread under
//!   `SCHED_FIFO` at PRIO (1-99), as weft-kv's `--loop-fifo` runs its
//!   loops (same call: `weft_kv::sched::set_this_thread_fifo`), the
//!   blocking threads staying in the fair class; refused at start without
//!   `CAP_SYS_NICE` (exit 2). Meant with `--worker-cpus`.
//!
//! Shared with weft-kv rather than copied: the schema and every statement
//! (`weft_kv::routes::{SCHEMA, UPSERT, SELECT_ONE, DELETE_ONE, RANGE}`), the
//! prefix bound, the largest value
//! (`weft_kv::Config::default().max_value_bytes`) and the list limits.

mod store;

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::serve::ListenerExt;
use rusqlite::OptionalExtension;
use serde::Deserialize;
use store::{Store, Variant};
use weft_kv::cpus::CpuList;
use weft_kv::routes::{
    DELETE_ONE, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, RANGE, SELECT_ONE, UPSERT, prefix_upper_bound,
};

fn max_value() -> usize {
    weft_kv::Config::default().max_value_bytes
}

/// The app: every route of weft-kv over `store`.
fn app(store: Store) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(|| async { "# kv-tokio: no metrics\n" }))
        .route("/v1/kv", get(list))
        .route(
            "/v1/batch",
            // A batch may carry 16 values at full size, as in weft-kv.
            post(batch).layer(DefaultBodyLimit::max(max_value().saturating_mul(16))),
        )
        .route(
            "/v1/kv/",
            any(|| async { (StatusCode::BAD_REQUEST, "empty key\n") }),
        )
        .route(
            "/v1/kv/{*key}",
            get(get_key)
                .put(put_key)
                .delete(delete_key)
                .layer(DefaultBodyLimit::max(max_value())),
        )
        .with_state(store)
}

async fn get_key(State(s): State<Store>, UrlPath(key): UrlPath<String>) -> Response {
    let r = s
        .run(move |c| {
            c.prepare_cached(SELECT_ONE)?
                .query_row([key], |r| r.get::<_, Vec<u8>>(0))
                .optional()
        })
        .await;
    match r {
        Ok(Some(v)) => ([(CONTENT_TYPE, "application/octet-stream")], v).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such key\n").into_response(),
        Err(e) => e.into_response(),
    }
}

async fn put_key(State(s): State<Store>, UrlPath(key): UrlPath<String>, body: Bytes) -> Response {
    match s
        .run(move |c| c.prepare_cached(UPSERT)?.execute((key, body.to_vec())))
        .await
    {
        Ok(_) => "ok\n".into_response(),
        Err(e) => e.into_response(),
    }
}

async fn delete_key(State(s): State<Store>, UrlPath(key): UrlPath<String>) -> Response {
    match s
        .run(move |c| c.prepare_cached(DELETE_ONE)?.execute([key]))
        .await
    {
        Ok(0) => (StatusCode::NOT_FOUND, "no such key\n").into_response(),
        Ok(_) => "deleted\n".into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
}

async fn list(State(s): State<Store>, Query(q): Query<ListQuery>) -> Response {
    let limit = q.limit.unwrap_or(LIST_LIMIT_DEFAULT);
    if limit > LIST_LIMIT_MAX {
        return (StatusCode::BAD_REQUEST, "bad limit\n").into_response();
    }
    let upper = prefix_upper_bound(&q.prefix);
    let r = s
        .run(move |c| {
            let mut stmt = c.prepare_cached(RANGE)?;
            let rows = stmt.query_map((q.prefix, upper, limit as i64), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await;
    match r {
        Ok(rows) => {
            let items: Vec<serde_json::Value> = rows
                .into_iter()
                .map(|(k, v)| serde_json::json!({"key": k, "value": String::from_utf8_lossy(&v)}))
                .collect();
            axum::Json(serde_json::Value::Array(items)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/batch`: the body is parsed by hand, not with axum's `Json`,
/// because weft-kv (and weft-load) do not require a JSON content type.
async fn batch(State(s): State<Store>, body: Bytes) -> Response {
    let Ok(map) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
    else {
        return (StatusCode::BAD_REQUEST, "body must be a JSON object\n").into_response();
    };
    let mut pairs = Vec::with_capacity(map.len());
    for (k, v) in map {
        match v {
            serde_json::Value::String(v) if !k.is_empty() => pairs.push((k, v)),
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    "every value must be a string and every key non-empty\n",
                )
                    .into_response();
            }
        }
    }
    let n = pairs.len();
    let r = s
        .run(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(UPSERT)?;
                for (k, v) in &pairs {
                    stmt.execute((k, v.as_bytes()))?;
                }
            }
            tx.commit()
        })
        .await;
    match r {
        Ok(()) => axum::Json(serde_json::json!({ "written": n })).into_response(),
        Err(e) => e.into_response(),
    }
}

/// What to run.
struct Options {
    listen: SocketAddr,
    db: PathBuf,
    variant: Variant,
    blocking: Option<usize>,
    pool: Option<usize>,
    workers: Option<usize>,
    /// hyper's `half_close(true)`, as weft-kv sets it (`--half-close on`).
    half_close: bool,
    /// `--worker-cpus`: where tokio's workers (and the main thread) run.
    worker_cpus: Option<CpuList>,
    /// `--blocking-cpus`: where tokio's blocking threads run.
    blocking_cpus: Option<CpuList>,
    /// `--worker-fifo`: the workers' (and the main thread's) `SCHED_FIFO`
    /// priority.
    worker_fifo: Option<u8>,
}

fn usage() -> ! {
    eprintln!(
        "usage: kv-tokio [--listen ADDR] [--db PATH] [--variant thread-local|mutex|deadpool] [--blocking N] [--pool N] [--workers N] [--half-close on|off] [--worker-cpus LIST] [--blocking-cpus LIST] [--worker-fifo PRIO]"
    );
    std::process::exit(2);
}

fn parse_args() -> Options {
    let mut o = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
        db: PathBuf::from("kv-tokio.sqlite3"),
        variant: Variant::Mutex,
        blocking: None,
        pool: None,
        workers: None,
        half_close: false,
        worker_cpus: None,
        blocking_cpus: None,
        worker_fifo: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        let n = || v.parse::<usize>().ok().filter(|&n| n > 0);
        match a.as_str() {
            "--listen" => o.listen = v.parse().unwrap_or_else(|_| usage()),
            "--db" => o.db = PathBuf::from(&v),
            "--variant" => o.variant = Variant::parse(&v).unwrap_or_else(|| usage()),
            "--blocking" => o.blocking = Some(n().unwrap_or_else(|| usage())),
            "--pool" => o.pool = Some(n().unwrap_or_else(|| usage())),
            "--workers" => o.workers = Some(n().unwrap_or_else(|| usage())),
            "--worker-cpus" => o.worker_cpus = Some(cpu_list("--worker-cpus", &v)),
            "--blocking-cpus" => o.blocking_cpus = Some(cpu_list("--blocking-cpus", &v)),
            "--worker-fifo" => o.worker_fifo = Some(v.parse().unwrap_or_else(|_| usage())),
            "--half-close" => {
                o.half_close = match v.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => usage(),
                }
            }
            _ => usage(),
        }
    }
    o
}

/// A CPU list flag's value, checked against the CPUs this process may use;
/// or exit 2 with the reason.
fn cpu_list(flag: &str, v: &str) -> CpuList {
    let l: CpuList = v.parse().unwrap_or_else(|e| {
        eprintln!("kv-tokio: {flag}: {e}");
        std::process::exit(2);
    });
    let checked = CpuList::of_this_thread().and_then(|all| l.check_within(&all));
    if let Err(e) = checked {
        eprintln!("kv-tokio: {flag} {l}: {e}");
        std::process::exit(2);
    }
    l
}

const WORKER: &str = "kv-tokio-worker";
const BLOCKING: &str = "kv-tokio-block";

/// Builds the runtime as configured (and, with a placement, puts the
/// calling thread on the workers' CPUs: it runs `block_on`).
fn runtime(o: &Options) -> std::io::Result<tokio::runtime::Runtime> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = o.blocking {
        rt.max_blocking_threads(n);
    }
    if let Some(n) = o.workers {
        rt.worker_threads(n);
    }
    if let Some(priority) = o.worker_fifo {
        // The main thread first: a refusal stops here, before any worker.
        weft_kv::sched::set_this_thread_fifo(priority)?;
    }
    if o.worker_cpus.is_none() && o.blocking_cpus.is_none() && o.worker_fifo.is_none() {
        return rt.build();
    }
    // tokio runs its workers on blocking-pool threads: the build queues
    // one "run a worker" job per worker on the pool's shared queue and
    // starts a thread for each, from the building thread. Blocking
    // threads are started later by whoever calls `spawn_blocking` (the
    // handlers, on the workers). A thread is named, and so placed, by the
    // thread that starts it; which job it then takes is settled only when
    // it pops the queue. Until every worker job is taken, a job that
    // `spawn_blocking` queues could be taken by a thread named as a
    // worker (and a worker job by a blocking thread): `runtime` waits
    // until every worker has parked once (only a worker calls the park
    // hook), which it does as soon as it runs, and only then hands the
    // runtime out.
    let original = CpuList::of_this_thread()?;
    let building = Arc::new(AtomicBool::new(true));
    let builder = std::thread::current().id();
    let b = building.clone();
    rt.thread_name_fn(move || {
        let worker = b.load(Ordering::Acquire) && std::thread::current().id() == builder;
        if worker { WORKER } else { BLOCKING }.to_owned()
    });
    // A thread inherits its creator's CPUs: each takes its own (or the
    // process's) explicitly.
    let workers = o.worker_cpus.clone().unwrap_or_else(|| original.clone());
    let blocking = o.blocking_cpus.clone().unwrap_or(original);
    let main = workers.clone();
    let fifo = o.worker_fifo;
    rt.on_thread_start(move || {
        let worker = std::thread::current().name() == Some(WORKER);
        let cpus = if worker { &workers } else { &blocking };
        // Checked at start against the process's CPUs.
        if let Err(e) = cpus.apply_to_this_thread() {
            eprintln!("kv-tokio: cannot place a runtime thread: {e}");
        }
        // Allowed: the main thread took it above. Blocking threads start
        // in the fair class (`SCHED_RESET_ON_FORK`).
        if let (true, Some(priority)) = (worker, fifo)
            && let Err(e) = weft_kv::sched::set_this_thread_fifo(priority)
        {
            eprintln!("kv-tokio: cannot run a worker under SCHED_FIFO: {e}");
        }
    });
    let parked = Arc::new((Mutex::new(0usize), Condvar::new()));
    let p = parked.clone();
    rt.on_thread_park(move || {
        thread_local!(static PARKED_ONCE: Cell<bool> = const { Cell::new(false) });
        if !PARKED_ONCE.replace(true) {
            let (count, changed) = &*p;
            *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            changed.notify_all();
        }
    });
    let built = rt.build();
    building.store(false, Ordering::Release);
    let built = built?;
    let (count, changed) = &*parked;
    let workers = built.metrics().num_workers();
    let guard = count.lock().unwrap_or_else(|e| e.into_inner());
    let (_guard, waited) = changed
        .wait_timeout_while(guard, WORKERS_START_WITHIN, |n| *n < workers)
        .unwrap_or_else(|e| e.into_inner());
    if waited.timed_out() {
        return Err(std::io::Error::other(format!(
            "the runtime's {workers} workers did not all start within {WORKERS_START_WITHIN:?}"
        )));
    }
    main.apply_to_this_thread()?;
    Ok(built)
}

/// How long [`runtime`] waits, with a placement, for every worker to run.
const WORKERS_START_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves `listener` until `stop` resolves.
async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        // As weft-kv does for every accepted connection.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app(store))
        .with_graceful_shutdown(stop)
        .await
}

/// Serves `listener` for good with hyper's `half_close(true)`: the same
/// router and connection settings as [`serve`], through hyper-util's
/// connection builder because `axum::serve` does not expose hyper's
/// settings. weft-kv sets `half_close(true)` (a client that shuts down its
/// sending side still gets its answer, and hyper does not probe the socket
/// for end-of-stream while an answer is pending); this row lets the twin
/// do the same work per request.
async fn serve_half_close(listener: tokio::net::TcpListener, store: Store) -> std::io::Result<()> {
    let app = app(store);
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http1().half_close(true);
    let builder = std::sync::Arc::new(builder);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(conn) => conn,
            // As axum::serve: a failed accept (e.g. EMFILE) is retried.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn make_store(o: &Options, path: &Path) -> Result<Store, String> {
    let first = store::init(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    Store::new(o.variant, path, first, o.pool)
}

fn main() -> ExitCode {
    let o = parse_args();
    let store = match make_store(&o, &o.db) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kv-tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match runtime(&o) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kv-tokio: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(o.listen).await?;
        println!(
            "kv-tokio listening on http://{}/ (variant {:?}, blocking cap {}, data in {})",
            listener.local_addr()?,
            o.variant,
            o.blocking.map_or("default".to_owned(), |n| n.to_string()),
            o.db.display()
        );
        if o.half_close {
            serve_half_close(listener, store).await
        } else {
            serve(listener, store, std::future::pending()).await
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv-tokio: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
