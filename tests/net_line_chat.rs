//! The `chat` example's server, in-process on port 0, with blocking client
//! threads over real loopback sockets. Every step waits for a message the
//! previous step causes, so the order is fixed without sleeps.

#[allow(dead_code)]
#[path = "../examples/chat.rs"]
mod chat;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use weft::Reactor;

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let writer = s.try_clone().unwrap();
        let mut c = Client {
            reader: BufReader::new(s),
            writer,
        };
        assert!(c.line().starts_with("welcome, "));
        c
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).unwrap();
        l.trim_end().to_owned()
    }
    fn send(&mut self, data: &[u8]) {
        self.writer.write_all(data).unwrap();
    }
}

#[test]
fn chat_relays_lines_and_closes_only_the_sender_of_a_too_long_line() {
    let dir = std::env::temp_dir().join(format!("weft-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("chat.log");
    let _ = std::fs::remove_file(&log);

    let reactor = Reactor::new().unwrap();
    let port = chat::serve("127.0.0.1:0".parse().unwrap(), log.clone()).unwrap();
    let addr = port.local_address().inet().unwrap();
    let remote = reactor.remote();
    let clients = std::thread::spawn(move || {
        let result = std::panic::catch_unwind(move || {
            let mut a = Client::connect(addr);
            let mut b = Client::connect(addr);
            assert!(a.line().ends_with("joined"));
            let mut c = Client::connect(addr);
            assert!(a.line().ends_with("joined"));
            assert!(b.line().ends_with("joined"));

            // c sends a line over 16 KiB: c is told and closed...
            let mut long = vec![b'x'; 20_000];
            long.push(b'\n');
            c.send(&long);
            let mut rest = String::new();
            c.reader.read_to_string(&mut rest).unwrap();
            assert!(
                rest.contains("error: line longer than 16384 bytes"),
                "{rest}"
            );
            // ...and the others hear it left, and go on.
            assert!(a.line().ends_with("left (line too long)"));
            assert!(b.line().ends_with("left (line too long)"));
            a.send(b"hello\r\n");
            let got = b.line();
            assert!(got.ends_with(": hello"), "{got}");
            b.send(b"hi a\n");
            assert!(a.line().ends_with(": hi a"));
        });
        remote.stop();
        result
    });
    reactor.run().unwrap();
    clients.join().unwrap().unwrap();
    // The reactor's shutdown waited for the pool's appends in flight.
    drop(reactor);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let pos = |suffix: &str| lines.iter().position(|l| l.ends_with(suffix)).unwrap();
    assert!(pos("left (line too long)") < pos(": hello"), "{text}");
    assert!(pos(": hello") < pos(": hi a"), "{text}");
    assert_eq!(lines.iter().filter(|l| l.ends_with("joined")).count(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}
