//! A client that shuts down its sending side after its request (a TCP
//! half-close) still gets the answer (hyper's `half_close`).

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

#[test]
fn a_client_that_half_closes_after_its_request_still_reads_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path()));
    let agent = agent();
    assert_eq!(put(&agent, &server.url("/v1/kv/half"), b"open").0, 200);
    // A database read (its answer comes back after the request was read,
    // so the server is waiting on it when the client's FIN arrives), a
    // write, and a database-free route.
    for (req, want) in [
        (&b"GET /v1/kv/half HTTP/1.1\r\nHost: x\r\n\r\n"[..], "open"),
        (
            &b"PUT /v1/kv/half2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nnew"[..],
            "",
        ),
        (&b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..], ""),
    ] {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(req).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert_eq!(status_of(&text), 200, "{text:?}");
        assert!(text.ends_with(want), "{text:?}");
    }
    // The write answered 200 was committed.
    assert_eq!(
        get(&agent, &server.url("/v1/kv/half2")),
        (200, "new".into())
    );
    server.stop();
}
