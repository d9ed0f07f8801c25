//! `kv-tokio`: weft-kv's tokio twin, written the way tokio users write it:
//! hyper on tokio's multi-thread runtime, rusqlite behind
//! `Arc<Mutex<Connection>>` through `spawn_blocking`, same routes and SQLite
//! settings (WAL, `synchronous=NORMAL`, 5 s busy timeout). A peer for
//! benchmarks only (the lead moves it to `bench/`).
//!
//! ```text
//! cargo run --release -p weft-kv --bin kv-tokio -- [--listen ADDR] [--db PATH] [--blocking N]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rusqlite::Connection;

const UPSERT: &str = "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value";
const MAX_VALUE: usize = 1 << 20;

type Db = Arc<Mutex<Connection>>;
type Resp = Response<Full<Bytes>>;

fn resp(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

async fn with_db<T: Send + 'static>(
    db: &Db,
    f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, Resp> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || {
        let mut c = db.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c)
    })
    .await
    {
        Ok(Ok(v)) => Ok(v),
        _ => Err(resp(StatusCode::INTERNAL_SERVER_ERROR, "database error\n")),
    }
}

async fn body(req: Request<Incoming>, max: usize) -> Result<Bytes, Resp> {
    match Limited::new(req.into_body(), max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(resp(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n")),
    }
}

async fn handle(db: Db, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_owned();
    let m = req.method().clone();
    let r = match (m, path.as_str()) {
        (Method::GET, "/healthz") => resp(StatusCode::OK, "ok\n"),
        (Method::GET, "/metrics") => resp(StatusCode::OK, "# kv-tokio\n"),
        (Method::GET, "/v1/kv") => {
            let mut prefix = String::new();
            let mut limit = 100i64;
            for pair in req.uri().query().unwrap_or("").split('&') {
                match pair.split_once('=') {
                    Some(("prefix", v)) => {
                        prefix = weft_kv::routes::percent_decode(v, true).unwrap_or_default()
                    }
                    Some(("limit", v)) => limit = v.parse().unwrap_or(100),
                    _ => {}
                }
            }
            let pat = format!("{prefix}%");
            match with_db(&db, move |c| {
                let mut s = c.prepare_cached(
                    "SELECT key, value FROM kv WHERE key >= ?1 AND key LIKE ?2 ORDER BY key LIMIT ?3",
                )?;
                let rows = s.query_map((prefix, pat, limit), |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            {
                Ok(rows) => {
                    let v: Vec<_> = rows
                        .into_iter()
                        .map(|(k, v)| serde_json::json!({"key": k, "value": String::from_utf8_lossy(&v)}))
                        .collect();
                    resp(StatusCode::OK, serde_json::Value::Array(v).to_string())
                }
                Err(r) => r,
            }
        }
        (Method::POST, "/v1/batch") => match body(req, MAX_VALUE * 16).await {
            Err(r) => r,
            Ok(b) => match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&b)
            {
                Err(_) => resp(StatusCode::BAD_REQUEST, "bad json\n"),
                Ok(map) => {
                    let pairs: Option<Vec<(String, String)>> = map
                        .into_iter()
                        .map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
                        .collect();
                    match pairs {
                        None => resp(StatusCode::BAD_REQUEST, "values must be strings\n"),
                        Some(pairs) => {
                            let n = pairs.len();
                            match with_db(&db, move |c| {
                                let tx = c.transaction()?;
                                {
                                    let mut s = tx.prepare_cached(UPSERT)?;
                                    for (k, v) in &pairs {
                                        s.execute((k, v.as_bytes()))?;
                                    }
                                }
                                tx.commit()
                            })
                            .await
                            {
                                Ok(()) => resp(StatusCode::OK, format!("{{\"written\":{n}}}")),
                                Err(r) => r,
                            }
                        }
                    }
                }
            },
        },
        (m, p) if p.starts_with("/v1/kv/") => {
            let Some(key) = weft_kv::routes::percent_decode(&p[7..], false) else {
                return Ok(resp(StatusCode::BAD_REQUEST, "bad key\n"));
            };
            match m {
                Method::GET => match with_db(&db, move |c| {
                    let mut s = c.prepare_cached("SELECT value FROM kv WHERE key = ?1")?;
                    let mut rows = s.query_map([key], |r| r.get::<_, Vec<u8>>(0))?;
                    rows.next().transpose()
                })
                .await
                {
                    Ok(Some(v)) => resp(StatusCode::OK, v),
                    Ok(None) => resp(StatusCode::NOT_FOUND, "no such key\n"),
                    Err(r) => r,
                },
                Method::PUT => match body(req, MAX_VALUE).await {
                    Err(r) => r,
                    Ok(b) => match with_db(&db, move |c| {
                        c.prepare_cached(UPSERT)?.execute((key, b.to_vec()))
                    })
                    .await
                    {
                        Ok(_) => resp(StatusCode::OK, "ok\n"),
                        Err(r) => r,
                    },
                },
                Method::DELETE => match with_db(&db, move |c| {
                    c.prepare_cached("DELETE FROM kv WHERE key = ?1")?
                        .execute([key])
                })
                .await
                {
                    Ok(0) => resp(StatusCode::NOT_FOUND, "no such key\n"),
                    Ok(_) => resp(StatusCode::OK, "deleted\n"),
                    Err(r) => r,
                },
                _ => resp(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
            }
        }
        _ => resp(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(r)
}

fn main() {
    let mut listen: SocketAddr = "127.0.0.1:8081".parse().unwrap();
    let mut db_path = "kv-tokio.sqlite3".to_owned();
    let mut blocking: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().expect("flag value");
        match a.as_str() {
            "--listen" => listen = v.parse().expect("ADDR"),
            "--db" => db_path = v,
            "--blocking" => blocking = Some(v.parse().expect("N")),
            _ => panic!("unknown flag {a}"),
        }
    }
    let conn = Connection::open(&db_path).expect("open db");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;
         CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID;",
    )
    .expect("schema");
    conn.set_prepared_statement_cache_capacity(64);
    let db: Db = Arc::new(Mutex::new(conn));
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = blocking {
        rt.max_blocking_threads(n);
    }
    let rt = rt.build().expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        println!(
            "kv-tokio listening on http://{}/",
            listener.local_addr().unwrap()
        );
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                r = listener.accept() => {
                    let Ok((s, _)) = r else { continue };
                    let _ = s.set_nodelay(true);
                    let db = db.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| handle(db.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(s), svc)
                            .await;
                    });
                }
            }
        }
    });
}
