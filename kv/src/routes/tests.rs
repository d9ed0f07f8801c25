//! The statements each key route runs on its connection: exactly the
//! twin's one statement per request (no `BEGIN`/`COMMIT` around a write
//! alone in its turn; the writes of one turn share one `BEGIN`/`COMMIT`,
//! each in its savepoint), and a write is committed when its call answers.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rusqlite::trace::{TraceEvent, TraceEventCodes};
use weft_db::{ConnectionPool, DbError, SqliteConnector};

use super::{DELETE_ONE, SCHEMA, SELECT_ONE, UPSERT, delete_call, get_call, put_call};

type Log = Arc<Mutex<Vec<String>>>;

/// Records the SQL text of every statement the connection starts.
fn trace_into(c: &mut rusqlite::Connection, log: &Log) -> Result<(), DbError> {
    let log = log.clone();
    c.trace_v2(
        TraceEventCodes::SQLITE_TRACE_STMT,
        Some(move |e: TraceEvent<'_>| {
            if let TraceEvent::Stmt(stmt, _) = e {
                log.lock().unwrap().push(stmt.sql().into_owned());
            }
        }),
    )?;
    Ok(())
}

fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[test]
fn each_key_route_runs_its_one_statement_and_a_put_is_committed_when_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let reactor = weft::Reactor::new().unwrap();
    // One writer and one reader: the trace below lands on each of them.
    let pool = ConnectionPool::builder(SqliteConnector::new(&path))
        .max(2)
        .min(2)
        .build(&reactor.handle())
        .unwrap();
    let shared = pool.shared();
    let (writes, reads): (Log, Log) = Default::default();
    let (w, r) = (writes.clone(), reads.clone());
    let out = reactor.run_until_complete(async move {
        shared
            .run_with_connection(move |c| {
                c.execute_batch(SCHEMA)?;
                trace_into(c, &w)
            })
            .await?;
        shared.run_read(move |c| trace_into(c, &r)).await?;
        let put = put_call("k".into(), Bytes::from_static(b"v1"))(&shared).await?;
        let put_sql = take(&writes);
        // Committed: another connection (not the pool's) sees it now.
        let seen: Vec<u8> =
            rusqlite::Connection::open(&path)?.query_row(SELECT_ONE, ["k"], |row| row.get(0))?;
        let got = get_call("k".into())(&shared).await?;
        let missing = get_call("nope".into())(&shared).await?;
        let get_sql = take(&reads);
        let deleted = delete_call("k".into())(&shared).await?;
        let deleted_again = delete_call("k".into())(&shared).await?;
        let delete_sql = take(&writes);
        pool.close().await.ok();
        Ok::<_, DbError>((
            put,
            put_sql,
            seen,
            got,
            missing,
            get_sql,
            deleted,
            deleted_again,
            delete_sql,
        ))
    });
    let (put, put_sql, seen, got, missing, get_sql, deleted, deleted_again, delete_sql) =
        out.unwrap().unwrap();
    assert_eq!(put, 1);
    assert_eq!(put_sql, [UPSERT]);
    assert_eq!(seen, b"v1");
    assert_eq!(got.as_deref(), Some(&b"v1"[..]));
    assert_eq!(missing, None);
    assert_eq!(get_sql, [SELECT_ONE, SELECT_ONE]);
    assert_eq!((deleted, deleted_again), (1, 0));
    assert_eq!(delete_sql, [DELETE_ONE, DELETE_ONE]);
}

#[test]
fn the_writes_of_one_turn_share_one_commit_each_in_its_savepoint_and_all_are_committed_when_any_answers()
 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let reactor = weft::Reactor::new().unwrap();
    let pool = ConnectionPool::builder(SqliteConnector::new(&path))
        .max(2)
        .build(&reactor.handle())
        .unwrap();
    let shared = pool.shared();
    let writes: Log = Default::default();
    let w = writes.clone();
    let out = reactor.run_until_complete(async move {
        shared
            .run_with_connection(move |c| {
                c.execute_batch(SCHEMA)?;
                c.execute_batch("insert into kv values ('old', x'00')")?;
                trace_into(c, &w)
            })
            .await?;
        // One turn: two PUTs and a DELETE.
        let a = put_call("a".into(), Bytes::from_static(b"1"))(&shared);
        let gone = delete_call("old".into())(&shared);
        let b = put_call("b".into(), Bytes::from_static(b"2"))(&shared);
        let a = a.await?;
        // All three are committed once the first is answered.
        let seen: i64 = rusqlite::Connection::open(&path)?.query_row(
            "select count(*) from kv where key in ('a', 'b')",
            [],
            |row| row.get(0),
        )?;
        let old: i64 = rusqlite::Connection::open(&path)?.query_row(
            "select count(*) from kv where key = 'old'",
            [],
            |row| row.get(0),
        )?;
        let (gone, b) = (gone.await?, b.await?);
        pool.close().await.ok();
        Ok::<_, DbError>((a, gone, b, seen, old, take(&writes)))
    });
    let (a, gone, b, seen, old, sql) = out.unwrap().unwrap();
    assert_eq!((a, gone, b), (1, 1, 1));
    assert_eq!((seen, old), (2, 0));
    let (sp, rel) = ("SAVEPOINT weft_db_group", "RELEASE weft_db_group");
    assert_eq!(
        sql,
        [
            "BEGIN IMMEDIATE",
            sp,
            UPSERT,
            rel,
            sp,
            DELETE_ONE,
            rel,
            sp,
            UPSERT,
            rel,
            "COMMIT"
        ]
    );
}

#[test]
fn a_failed_write_names_its_statement_and_leaves_no_transaction_open() {
    let reactor = weft::Reactor::new().unwrap();
    // No table: the UPSERT fails to prepare.
    let pool = ConnectionPool::new(&reactor.handle(), SqliteConnector::new(":memory:")).unwrap();
    let shared = pool.shared();
    let out = reactor.run_until_complete(async move {
        let e = put_call("k".into(), Bytes::from_static(b"v"))(&shared)
            .await
            .unwrap_err();
        let open = shared
            .run_with_connection(|c| Ok::<_, DbError>(!c.is_autocommit()))
            .await;
        pool.close().await.ok();
        (e, open)
    });
    let (e, open) = out.unwrap();
    assert_eq!(e.statement(), Some(UPSERT));
    assert!(!open.unwrap());
}

#[test]
fn keys_decode_inline_when_short_and_plain_and_on_the_heap_otherwise() {
    use super::Key;
    let k = Key::decode("load-123").unwrap();
    assert!(matches!(k, Key::Inline { .. }));
    assert_eq!(k.as_str(), "load-123");
    let full = "x".repeat(Key::INLINE);
    assert!(matches!(Key::decode(&full).unwrap(), Key::Inline { .. }));
    assert_eq!(Key::decode(&full).unwrap().as_str(), full);
    let long = "y".repeat(Key::INLINE + 1);
    assert!(matches!(Key::decode(&long).unwrap(), Key::Heap(_)));
    assert_eq!(Key::decode(&long).unwrap().as_str(), long);
    assert_eq!(Key::decode("a%2Fb").unwrap().as_str(), "a/b");
    assert_eq!(Key::decode("é").unwrap().as_str(), "é");
    assert!(Key::decode("%FF").is_none());
    assert!(Key::decode("").unwrap().is_empty());
}

#[test]
fn a_key_route_answers_in_its_requests_header_map_cleared_with_its_room() {
    use hyper::StatusCode;
    use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

    let mut request = HeaderMap::with_capacity(64);
    request.insert("x-secret", HeaderValue::from_static("1"));
    request.insert("host", HeaderValue::from_static("example"));
    let room = request.capacity();
    let r = super::response_in(
        request,
        StatusCode::OK,
        Bytes::from_static(b"v"),
        super::OCTET_STREAM,
    );
    // The request's map: its room, none of its entries.
    assert!(
        r.headers().capacity() >= room,
        "{} < {room}",
        r.headers().capacity()
    );
    assert_eq!(r.headers().len(), 1);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/octet-stream");
    assert_eq!(r.status(), StatusCode::OK);
}
