//! The twin answers like weft-kv, in every variant, with weft-db's settings.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;

use super::*;

fn temp_db(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("kv-tokio-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("kv.sqlite3");
    (dir, db)
}

/// One request on a fresh connection (`Connection: close`): status, body.
fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn connections_get_weft_db_writer_settings() {
    use weft_db::{Connector, Role, SqliteConnector};
    let (dir, db) = temp_db("pragmas");
    let ours = store::init(&db).unwrap();
    let second = store::open(&db).unwrap();
    let weft = SqliteConnector::new(&db).open(Role::Writer).unwrap();
    for pragma in [
        "journal_mode",
        "synchronous",
        "busy_timeout",
        "foreign_keys",
    ] {
        let q = format!("pragma {pragma}");
        let get = |c: &rusqlite::Connection| -> String {
            c.query_row(&q, [], |r| r.get::<_, rusqlite::types::Value>(0))
                .map(|v| format!("{v:?}"))
                .unwrap()
        };
        assert_eq!(get(&ours), get(&weft), "{pragma}");
        assert_eq!(get(&second), get(&weft), "{pragma}");
    }
    drop((ours, second, weft));
    let _ = std::fs::remove_dir_all(dir);
}

/// The store, runtime and listener `o` describes, and the listener's address.
fn bound(
    o: Options,
) -> (
    Store,
    tokio::runtime::Runtime,
    tokio::net::TcpListener,
    SocketAddr,
) {
    let store = make_store(&o, &o.db).unwrap();
    let rt = runtime(&o).unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(o.listen))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    (store, rt, listener, addr)
}

fn routes_answer_like_weft_kv(variant: Variant, name: &str) {
    let (dir, db) = temp_db(name);
    let (store, rt, listener, addr) = bound(Options {
        variant,
        blocking: Some(2),
        pool: Some(2),
        ..one_worker(db)
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        rt.block_on(serve(listener, store, async {
            let _ = stop_rx.await;
        }))
    });

    assert_eq!(request(addr, "GET", "/healthz", b""), (200, "ok\n".into()));
    assert_eq!(
        request(addr, "PUT", "/v1/kv/a%2Fb", b"one"),
        (200, "ok\n".into())
    );
    assert_eq!(
        request(addr, "GET", "/v1/kv/a%2Fb", b""),
        (200, "one".into())
    );
    assert_eq!(request(addr, "GET", "/v1/kv/nope", b"").0, 404);
    assert_eq!(
        request(addr, "POST", "/v1/batch", br#"{"p1":"x","p2":"y","q":"z"}"#),
        (200, r#"{"written":3}"#.into())
    );
    assert_eq!(
        request(addr, "GET", "/v1/kv?prefix=p&limit=10", b""),
        (
            200,
            r#"[{"key":"p1","value":"x"},{"key":"p2","value":"y"}]"#.into()
        )
    );
    assert_eq!(request(addr, "GET", "/v1/kv?limit=10001", b"").0, 400);
    assert_eq!(request(addr, "POST", "/v1/batch", b"[1]").0, 400);
    assert_eq!(request(addr, "POST", "/v1/batch", br#"{"k":1}"#).0, 400);
    assert_eq!(
        request(addr, "DELETE", "/v1/kv/q", b""),
        (200, "deleted\n".into())
    );
    assert_eq!(request(addr, "DELETE", "/v1/kv/q", b"").0, 404);
    assert_eq!(request(addr, "POST", "/v1/kv/q", b"").0, 405);
    assert_eq!(request(addr, "GET", "/v1/kv/", b"").0, 400);
    assert_eq!(request(addr, "GET", "/v1/kv/%FF", b"").0, 400);
    assert_eq!(request(addr, "GET", "/nowhere", b"").0, 404);
    let big = vec![b'v'; max_value() + 1];
    assert_eq!(request(addr, "PUT", "/v1/kv/big", &big).0, 413);

    stop_tx.send(()).unwrap();
    server.join().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn thread_local_variant_serves_every_route() {
    routes_answer_like_weft_kv(Variant::ThreadLocal, "tls");
}

#[test]
fn mutex_variant_serves_every_route() {
    routes_answer_like_weft_kv(Variant::Mutex, "mutex");
}

#[test]
fn deadpool_variant_serves_every_route() {
    routes_answer_like_weft_kv(Variant::Deadpool, "deadpool");
}

#[test]
fn with_half_close_a_client_that_shuts_down_its_sending_side_gets_its_answer() {
    let (dir, db) = temp_db("half-close");
    let (store, rt, listener, addr) = bound(Options {
        half_close: true,
        ..one_worker(db)
    });
    // The half-close server has no stop signal: the thread ends with the
    // test process.
    std::thread::spawn(move || rt.block_on(serve_half_close(listener, store)));

    assert_eq!(
        request(addr, "PUT", "/v1/kv/h", b"half"),
        (200, "ok\n".into())
    );
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /v1/kv/h HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("half"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

/// (thread name, CPUs) of the thread running it.
fn whoami() -> (String, CpuList) {
    (
        std::thread::current().name().unwrap_or("").to_owned(),
        CpuList::of_this_thread().unwrap(),
    )
}

#[test]
fn placed_workers_and_blocking_threads_run_where_asked() {
    let all = CpuList::of_this_thread().unwrap();
    let first: CpuList = all.cpus()[0].to_string().parse().unwrap();
    let last: CpuList = all.cpus()[all.cpus().len() - 1]
        .to_string()
        .parse()
        .unwrap();
    let (dir, db) = temp_db("placed");
    let o = |worker_cpus, blocking_cpus| Options {
        workers: Some(2),
        worker_cpus,
        blocking_cpus,
        ..one_worker(db.clone())
    };
    // On a thread of its own: the builder's thread takes the workers' CPUs.
    let run = |o: Options| {
        std::thread::spawn(move || {
            let rt = runtime(&o).unwrap();
            let main = whoami();
            let (worker, blocking) = on_worker_and_blocking(&rt, whoami);
            (main.1, worker, blocking)
        })
        .join()
        .unwrap()
    };
    let (main, worker, blocking) = run(o(Some(first.clone()), Some(last.clone())));
    assert_eq!(main, first);
    assert_eq!(worker, (WORKER.to_owned(), first.clone()));
    assert_eq!(blocking, (BLOCKING.to_owned(), last.clone()));
    // Workers placed only: a blocking thread (started from a worker) is put
    // back on the process's CPUs.
    let (_, worker, blocking) = run(o(Some(last.clone()), None));
    assert_eq!(worker, (WORKER.to_owned(), last.clone()));
    assert_eq!(blocking, (BLOCKING.to_owned(), all.clone()));
    // No placement: tokio's own names, nothing placed.
    let (main, worker, blocking) = run(o(None, None));
    assert_eq!(main, all);
    assert!(worker.0.starts_with("tokio-"), "{worker:?}");
    assert_eq!(worker, (worker.0.clone(), all.clone()));
    assert_eq!(blocking, (worker.0.clone(), all));
    let _ = std::fs::remove_dir_all(dir);
}

/// The calling thread's policy: `SCHED_FIFO` or not.
fn runs_fifo() -> bool {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    // Field 41 (policy); field 3 is the first after the name.
    rest.split_whitespace().nth(41 - 3).unwrap() == "1"
}

#[test]
fn fifo_workers_run_fifo_and_blocking_threads_do_not_or_the_runtime_is_refused() {
    let (dir, db) = temp_db("fifo");
    let o = Options {
        worker_fifo: Some(1),
        ..one_worker(db)
    };
    let allowed = std::thread::spawn(|| weft_kv::sched::set_this_thread_fifo(1).is_ok())
        .join()
        .unwrap();
    let got = std::thread::spawn(move || {
        let rt = match runtime(&o) {
            Ok(rt) => rt,
            Err(e) => return Err(e.kind()),
        };
        let main = runs_fifo();
        let (worker, blocking) = on_worker_and_blocking(&rt, runs_fifo);
        Ok((main, worker, blocking))
    })
    .join()
    .unwrap();
    if allowed {
        assert_eq!(got, Ok((true, true, false)));
    } else {
        assert_eq!(got, Err(std::io::ErrorKind::PermissionDenied));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `f` run on one of `rt`'s workers and on one of its blocking threads
/// (started from a worker, as the handlers start them).
fn on_worker_and_blocking<T: Send + 'static>(rt: &tokio::runtime::Runtime, f: fn() -> T) -> (T, T) {
    rt.block_on(async move {
        let worker = tokio::spawn(async move { f() }).await.unwrap();
        let blocking = tokio::spawn(async move { tokio::task::spawn_blocking(f).await.unwrap() })
            .await
            .unwrap();
        (worker, blocking)
    })
}

/// The twin on a kernel-chosen port over `db`: the `mutex` variant, one
/// worker, one blocking thread, no placement, no real-time policy; each
/// test changes what it is about.
fn one_worker(db: PathBuf) -> Options {
    Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        db,
        variant: Variant::Mutex,
        blocking: Some(1),
        pool: None,
        workers: Some(1),
        half_close: false,
        worker_cpus: None,
        blocking_cpus: None,
        worker_fifo: None,
    }
}
