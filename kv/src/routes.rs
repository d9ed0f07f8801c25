//! Request routing and the handlers: parse on the loop, run SQL on the
//! pool's threads, answer on the loop.
//!
//! A handler never blocks the loop: every database call is a `Deferred`
//! awaited by the connection's task. A request's whole state (parsed key,
//! body, timing) lives in that task.
//!
//! Header maps go round instead of being allocated per request: a key
//! route answers in its own request's header map, cleared once the
//! handler no longer reads it (`response_in`), and hyper keeps a
//! response's map, emptied by its encoder, to parse the connection's next
//! request into. So in steady state a key request allocates and frees no
//! header map (it was one map built per response and one dropped per
//! request). The map is cleared before the response's one header goes in,
//! so no request header can reach a response.

use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use rusqlite::OptionalExtension;
use weft::Deferred;
use weft_db::{DbError, SharedPool, WithStatement};

use crate::metrics::{Metrics, Route};

/// SQL of the store (one table, `WITHOUT ROWID`: the key is the B-tree key).
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID";
/// Writes one key (insert or replace its value).
///
/// # Examples
///
/// ```
/// assert!(weft_kv::routes::UPSERT.starts_with("INSERT INTO kv"));
/// ```
pub const UPSERT: &str = "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value";
/// Reads one key's value.
///
/// # Examples
///
/// ```
/// assert!(weft_kv::routes::SELECT_ONE.contains("WHERE key = ?1"));
/// ```
pub const SELECT_ONE: &str = "SELECT value FROM kv WHERE key = ?1";
/// Deletes one key.
///
/// # Examples
///
/// ```
/// assert!(weft_kv::routes::DELETE_ONE.starts_with("DELETE"));
/// ```
pub const DELETE_ONE: &str = "DELETE FROM kv WHERE key = ?1";
/// Lists keys from `?1` up to `?2` (exclusive; `NULL`: no bound), at most
/// `?3` of them, in key order.
///
/// # Examples
///
/// ```
/// assert!(weft_kv::routes::RANGE.ends_with("LIMIT ?3"));
/// ```
pub const RANGE: &str =
    "SELECT key, value FROM kv WHERE key >= ?1 AND (?2 IS NULL OR key < ?2) ORDER BY key LIMIT ?3";

/// Default and largest `limit` of `GET /v1/kv`.
pub const LIST_LIMIT_DEFAULT: usize = 100;
/// Largest `limit` of `GET /v1/kv` accepted.
pub const LIST_LIMIT_MAX: usize = 10_000;

/// What every handler shares (loop-local).
pub(crate) struct App {
    /// Which loop this is (0: the one that owns the pool).
    pub(crate) index: usize,
    pub(crate) db: crate::loops::Db,
    pub(crate) peers: std::sync::Arc<crate::loops::Peers>,
    pub(crate) metrics: Rc<Metrics>,
    pub(crate) handle: weft::reactor::Handle,
    pub(crate) max_value_bytes: usize,
    pub(crate) body_read_timeout: Duration,
    pub(crate) accept_stats: std::cell::Cell<Option<weft::net::AcceptStatistics>>,
}

type Resp = Response<Full<Bytes>>;

/// `text/plain; charset=utf-8`, checked at compile time: `from_static`
/// called at run time checks every byte (about 250 instructions).
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
/// `application/octet-stream` (see [`TEXT_PLAIN`]).
const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

/// A response with `status`, `body` and one `content-type`, in `headers`
/// (a request's map: cleared here, its room reused).
pub(crate) fn response_in(
    mut headers: HeaderMap,
    status: StatusCode,
    body: Bytes,
    content_type: HeaderValue,
) -> Resp {
    headers.clear();
    headers.insert(CONTENT_TYPE, content_type);
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// A plain-text answer in `headers` (see [`response_in`]).
fn text_in(headers: HeaderMap, status: StatusCode, body: &'static str) -> Resp {
    response_in(
        headers,
        status,
        Bytes::from_static(body.as_bytes()),
        TEXT_PLAIN,
    )
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    response_in(HeaderMap::new(), status, body.into(), TEXT_PLAIN)
}

fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

fn db_failure(app: &App, e: &DbError) -> Resp {
    app.metrics.bump(&app.metrics.db_errors);
    match e {
        DbError::Stopped | DbError::Cancelled => {
            text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
        }
        _ => {
            tracing::warn!(error = %e, "database error");
            text(StatusCode::INTERNAL_SERVER_ERROR, "database error\n")
        }
    }
}

/// Percent-decodes a path or query component; `None` on a bad escape or
/// invalid UTF-8. `plus_space` turns `+` into a space (query strings).
///
/// # Examples
///
/// ```
/// assert_eq!(weft_kv::routes::percent_decode("a%2Fb", false).as_deref(), Some("a/b"));
/// assert_eq!(weft_kv::routes::percent_decode("%FF", false), None);
/// ```
pub fn percent_decode(s: &str, plus_space: bool) -> Option<String> {
    let b = s.as_bytes();
    // Nothing to decode (the usual key): `s` is UTF-8 already.
    if !b.iter().any(|&c| c == b'%' || (plus_space && c == b'+')) {
        return Some(s.to_owned());
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                let hi = hex(*b.get(i + 1)?)?;
                let lo = hex(*b.get(i + 2)?)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' if plus_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Awaits `fut` for at most `limit`; `None` on timeout. The deadline is
/// set, and the sleep registered, only when `fut` first has to wait: a
/// body that is already here (the usual small PUT) costs no timer at all.
async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut sleep = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if sleep.is_none() {
            // A limit past the end of time never fires.
            let Some(deadline) = Instant::now().checked_add(limit) else {
                return Poll::Pending;
            };
            sleep = Some(crate::rt::sleep_until(deadline));
        }
        let Some(sleep) = sleep.as_mut() else {
            return Poll::Pending;
        };
        match std::pin::Pin::new(sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Reads the request body, at most `max` bytes, within the body timeout;
/// with it, the request's header map (to answer in: see [`response_in`]).
async fn read_body(
    app: &App,
    req: Request<Incoming>,
    max: usize,
) -> Result<(Bytes, HeaderMap), Resp> {
    if let Some(len) = req.headers().get(CONTENT_LENGTH) {
        let len: Option<u64> = len.to_str().ok().and_then(|s| s.parse().ok());
        match len {
            Some(n) if n > max as u64 => {
                return Err(text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"));
            }
            None => return Err(text(StatusCode::BAD_REQUEST, "bad content-length\n")),
            _ => {}
        }
    }
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, max);
    match within(app.body_read_timeout, body.collect()).await {
        None => {
            app.metrics.bump(&app.metrics.body_timeouts);
            Err(text(StatusCode::REQUEST_TIMEOUT, "body timeout\n"))
        }
        Some(Ok(c)) => Ok((c.to_bytes(), parts.headers)),
        Some(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"))
        }
        Some(Err(_)) => Err(text(StatusCode::BAD_REQUEST, "body read failed\n")),
    }
}

/// Runs one database call (`f` gets the pool's `SharedPool`: the job goes
/// straight to the connection threads and its result comes back to this
/// loop; see `crate::loops`), counting it in flight (submitted and not yet
/// answered on this loop; the pool's own figures come from
/// `SharedPool::statistics`).
async fn db<T, F>(app: &App, f: F) -> Result<T, DbError>
where
    T: Send + 'static,
    F: FnOnce(&SharedPool) -> weft::Deferred<T, DbError>,
{
    let m = &app.metrics;
    m.db_in_flight.set(m.db_in_flight.get() + 1);
    let r = app.db.call(f).await;
    m.db_in_flight.set(m.db_in_flight.get() - 1);
    r
}

/// The smallest string greater than every string starting with `p`, if any
/// (the exclusive upper bound of a prefix scan).
///
/// # Examples
///
/// ```
/// use weft_kv::routes::prefix_upper_bound;
/// assert_eq!(prefix_upper_bound("ab").as_deref(), Some("ac"));
/// assert_eq!(prefix_upper_bound(""), None);
/// ```
pub fn prefix_upper_bound(p: &str) -> Option<String> {
    let mut chars: Vec<char> = p.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A decoded key, as the database calls take it: a short key (the usual
/// one) is kept inline, so a request allocates nothing for its key on the
/// loop and frees nothing on the connection thread.
#[derive(Clone)]
pub(crate) enum Key {
    /// Up to [`Key::INLINE`] bytes of UTF-8.
    Inline { len: u8, bytes: [u8; Key::INLINE] },
    /// A longer or percent-encoded key.
    Heap(String),
}

impl Key {
    /// The longest key kept inline (32 bytes in all, as small as the
    /// `String` case allows).
    pub(crate) const INLINE: usize = 22;

    /// Percent-decodes a path component (as [`percent_decode`]); `None` on
    /// a bad escape or invalid UTF-8.
    pub(crate) fn decode(s: &str) -> Option<Key> {
        if s.as_bytes().contains(&b'%') {
            return percent_decode(s, false).map(Key::Heap);
        }
        Some(Key::from(s))
    }

    /// Its UTF-8 bytes (what the database binds, as TEXT).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(s) => s.as_bytes(),
        }
    }

    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("keys are UTF-8")
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }
}

/// Bound as TEXT from its bytes: the key was UTF-8 when it was decoded, so
/// it is not validated again per request (as a `&str` would be).
impl rusqlite::ToSql for Key {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(
            rusqlite::types::ValueRef::Text(self.as_bytes()),
        ))
    }
}

/// The key `s` as it is (no decoding): inline if it is short enough.
impl From<&str> for Key {
    fn from(s: &str) -> Key {
        if s.len() > Key::INLINE {
            return Key::Heap(s.to_owned());
        }
        let mut bytes = [0; Key::INLINE];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Key::Inline {
            len: s.len() as u8,
            bytes,
        }
    }
}

/// Where a request goes, decided from its borrowed path (no copy of the
/// path per request; only a key is decoded into a `String`).
enum Target {
    Dashboard,
    Healthz,
    Metrics,
    List,
    Batch,
    /// `/v1/kv/{key}`: the decoded key, or the answer to a bad one.
    Key(Result<Key, &'static str>),
    Unknown,
}

fn target(path: &str) -> Target {
    match path {
        "/" => Target::Dashboard,
        "/healthz" => Target::Healthz,
        "/metrics" => Target::Metrics,
        "/v1/kv" => Target::List,
        "/v1/batch" => Target::Batch,
        p if p.starts_with("/v1/kv/") => Target::Key(match Key::decode(&p["/v1/kv/".len()..]) {
            None => Err("key is not valid UTF-8\n"),
            Some(k) if k.is_empty() => Err("empty key\n"),
            Some(k) => Ok(k),
        }),
        _ => Target::Unknown,
    }
}

/// Answers one request; returns its route for metrics.
pub(crate) async fn handle(app: Rc<App>, req: Request<Incoming>) -> (Route, Resp) {
    let m = req.method().clone();
    match target(req.uri().path()) {
        Target::Dashboard => (
            Route::Dashboard,
            match m {
                Method::GET => {
                    let mut r = text(StatusCode::OK, crate::dashboard::PAGE);
                    r.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    );
                    r
                }
                _ => method_not_allowed("GET"),
            },
        ),
        Target::Healthz => (
            Route::Healthz,
            match m {
                Method::GET => text(StatusCode::OK, "ok\n"),
                _ => method_not_allowed("GET"),
            },
        ),
        Target::Metrics => (
            Route::Metrics,
            match m {
                Method::GET => {
                    let mut r = text(StatusCode::OK, crate::loops::scrape(&app).await);
                    r.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    r
                }
                _ => method_not_allowed("GET"),
            },
        ),
        Target::List => (
            Route::KvList,
            match m {
                Method::GET => list(&app, req.uri().query().unwrap_or("")).await,
                _ => method_not_allowed("GET"),
            },
        ),
        Target::Batch => (
            Route::Batch,
            match m {
                Method::POST => batch(&app, req).await,
                _ => method_not_allowed("POST"),
            },
        ),
        Target::Key(Err(why)) => (Route::KvBadKey, text(StatusCode::BAD_REQUEST, why)),
        Target::Key(Ok(key)) => match m {
            // Nothing below reads the request's headers: its map answers.
            Method::GET => (
                Route::KvGet,
                get(&app, key, req.into_parts().0.headers).await,
            ),
            Method::PUT => (Route::KvPut, put(&app, key, req).await),
            Method::DELETE => (
                Route::KvDelete,
                delete(&app, key, req.into_parts().0.headers).await,
            ),
            _ => (Route::KvKey, method_not_allowed("GET, PUT, DELETE")),
        },
        Target::Unknown => (Route::Unknown, text(StatusCode::NOT_FOUND, "not found\n")),
    }
}

/// `GET /v1/kv/{key}`'s database call: the one `SELECT` on a reader, in
/// autocommit, prepared from the connection's statement cache; the value
/// if the key exists. The twin's statement, and nothing more (no row vector,
/// no copy of the SQL text per request).
pub(crate) fn get_call(key: Key) -> impl FnOnce(&SharedPool) -> Deferred<Option<Vec<u8>>, DbError> {
    move |p| {
        p.run_read(move |c| {
            c.prepare_cached(SELECT_ONE)
                .and_then(|mut s| s.query_row([&key], |r| r.get::<_, Vec<u8>>(0)).optional())
                .with_statement(SELECT_ONE)
        })
    }
}

/// `PUT /v1/kv/{key}`'s database call: the one `UPSERT` (the twin's exact
/// SQL) on the writer, group-committed
/// ([`SharedPool::write_in_group`]): the PUTs and DELETEs a loop turn
/// submits share one transaction, each in its own savepoint, and each is
/// answered only after that transaction's COMMIT (the durability of an
/// autocommit write: the same `synchronous` setting; a PUT alone in its
/// turn runs in autocommit). The body is bound from the request's buffer,
/// not copied.
pub(crate) fn put_call(
    key: Key,
    body: Bytes,
) -> impl FnOnce(&SharedPool) -> Deferred<usize, DbError> {
    move |p| {
        p.write_in_group(move |c| {
            c.prepare_cached(UPSERT)
                .and_then(|mut s| s.execute((&key, &body[..])))
                .with_statement(UPSERT)
        })
    }
}

/// `DELETE /v1/kv/{key}`'s database call: the one `DELETE` on the writer,
/// group-committed as [`put_call`]; the rows deleted.
pub(crate) fn delete_call(key: Key) -> impl FnOnce(&SharedPool) -> Deferred<usize, DbError> {
    move |p| {
        p.write_in_group(move |c| {
            c.prepare_cached(DELETE_ONE)
                .and_then(|mut s| s.execute([&key]))
                .with_statement(DELETE_ONE)
        })
    }
}

async fn get(app: &App, key: Key, headers: HeaderMap) -> Resp {
    match db(app, get_call(key)).await {
        Ok(Some(v)) => response_in(headers, StatusCode::OK, Bytes::from(v), OCTET_STREAM),
        Ok(None) => text_in(headers, StatusCode::NOT_FOUND, "no such key\n"),
        Err(e) => db_failure(app, &e),
    }
}

async fn put(app: &App, key: Key, req: Request<Incoming>) -> Resp {
    let (body, headers) = match read_body(app, req, app.max_value_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match db(app, put_call(key, body)).await {
        Ok(_) => text_in(headers, StatusCode::OK, "ok\n"),
        Err(e) => db_failure(app, &e),
    }
}

async fn delete(app: &App, key: Key, headers: HeaderMap) -> Resp {
    match db(app, delete_call(key)).await {
        Ok(0) => text_in(headers, StatusCode::NOT_FOUND, "no such key\n"),
        Ok(_) => text_in(headers, StatusCode::OK, "deleted\n"),
        Err(e) => db_failure(app, &e),
    }
}

async fn list(app: &App, query: &str) -> Resp {
    let mut prefix = String::new();
    let mut limit = LIST_LIMIT_DEFAULT;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(v) = percent_decode(v, true) else {
            return text(StatusCode::BAD_REQUEST, "query is not valid UTF-8\n");
        };
        match k {
            "prefix" => prefix = v,
            "limit" => match v.parse::<usize>() {
                Ok(n) if n <= LIST_LIMIT_MAX => limit = n,
                _ => return text(StatusCode::BAD_REQUEST, "bad limit\n"),
            },
            _ => {}
        }
    }
    let upper = prefix_upper_bound(&prefix);
    let d = move |p: &SharedPool| {
        p.run_query_map(RANGE, (prefix, upper, limit as i64), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
    };
    match db(app, d).await {
        Ok(rows) => {
            let items: Vec<serde_json::Value> = rows
                .into_iter()
                .map(|(k, v)| serde_json::json!({"key": k, "value": String::from_utf8_lossy(&v)}))
                .collect();
            json(StatusCode::OK, &serde_json::Value::Array(items))
        }
        Err(e) => db_failure(app, &e),
    }
}

async fn batch(app: &App, req: Request<Incoming>) -> Resp {
    // A batch may carry many values: allow 16 of them at full size.
    let body = match read_body(app, req, app.max_value_bytes.saturating_mul(16)).await {
        Ok((b, _)) => b,
        Err(r) => return r,
    };
    let map: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(_) => return text(StatusCode::BAD_REQUEST, "body must be a JSON object\n"),
    };
    let mut pairs = Vec::with_capacity(map.len());
    for (k, v) in map {
        match v {
            serde_json::Value::String(s) if !k.is_empty() => pairs.push((k, s)),
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "every value must be a string and every key non-empty\n",
                );
            }
        }
    }
    let n = pairs.len();
    let d = move |p: &SharedPool| {
        p.run_interaction(move |conn| {
            let mut stmt = conn.prepare_cached(UPSERT)?;
            for (k, v) in &pairs {
                stmt.execute((k, v.as_bytes()))?;
            }
            Ok::<_, DbError>(())
        })
    };
    match db(app, d).await {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({"written": n})),
        Err(e) => db_failure(app, &e),
    }
}

/// Wall-clock start of a request, for the latency histogram.
pub(crate) fn now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests;
