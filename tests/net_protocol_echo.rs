//! The `echo` example's server, started in-process on port 0 and driven by a
//! blocking client thread over real loopback sockets.

#[allow(dead_code)]
#[path = "../examples/echo.rs"]
mod echo;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use weft::Reactor;

#[test]
fn the_echo_example_echoes_over_loopback() {
    let reactor = Reactor::new().unwrap();
    let port = echo::serve("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = port.local_address().inet().unwrap();
    let remote = reactor.remote();
    let client = std::thread::spawn(move || {
        let result = std::panic::catch_unwind(|| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            // Small pieces and one large one.
            for piece in payload[..100].chunks(1) {
                s.write_all(piece).unwrap();
            }
            s.write_all(&payload[100..]).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).unwrap();
            assert_eq!(back.len(), payload.len());
            assert!(back == payload, "echo mangled the bytes");
        });
        remote.stop();
        result
    });
    reactor.run().unwrap();
    client.join().unwrap().unwrap();
}
