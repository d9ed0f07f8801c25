//! The key routes answer in their request's own header map (cleared): no
//! request header ever reaches a response, and each answer carries its
//! own content type, however many headers the requests sent.

mod common;
use common::*;

#[test]
fn key_route_answers_carry_their_own_headers_and_none_of_the_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path()));
    let agent = agent();
    assert_eq!(put(&agent, &server.url("/v1/kv/h"), b"there").0, 200);
    // Many request headers, so each request's map has grown past what one
    // response needs; one keep-alive connection, the requests pipelined.
    let extra: String = (0..40).map(|i| format!("X-Secret-{i}: s{i}\r\n")).collect();
    let mut reqs = String::new();
    for (method, path, body) in [
        ("GET", "/v1/kv/h", ""),
        ("GET", "/v1/kv/missing", ""),
        ("PUT", "/v1/kv/h2", "v2"),
        ("DELETE", "/v1/kv/h2", ""),
        ("DELETE", "/v1/kv/h2", ""),
        ("GET", "/v1/kv/h", ""),
    ] {
        reqs.push_str(&format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    reqs.push_str("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let out = raw(server.addr, reqs.as_bytes());
    let lower = out.to_ascii_lowercase();
    assert!(!lower.contains("x-secret"), "{out}");
    assert!(!lower.contains("host:"), "{out}");
    let heads: Vec<&str> = out.split("HTTP/1.1 ").skip(1).collect();
    let want = [
        ("200", "application/octet-stream", "there"),
        ("404", "text/plain; charset=utf-8", "no such key\n"),
        ("200", "text/plain; charset=utf-8", "ok\n"),
        ("200", "text/plain; charset=utf-8", "deleted\n"),
        ("404", "text/plain; charset=utf-8", "no such key\n"),
        ("200", "application/octet-stream", "there"),
        ("200", "text/plain; charset=utf-8", "ok\n"),
    ];
    assert_eq!(heads.len(), want.len(), "{out}");
    for (got, (status, ctype, body)) in heads.iter().zip(want) {
        assert!(got.starts_with(status), "{got:?}");
        let (head, rest) = got.split_once("\r\n\r\n").unwrap();
        let types: Vec<&str> = head
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v)
            .collect();
        assert_eq!(types, [ctype], "{got:?}");
        assert_eq!(rest, body, "{got:?}");
    }
    server.stop();
}
