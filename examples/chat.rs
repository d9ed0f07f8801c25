//! A line-protocol chat server: every line goes to everyone else, each message is appended to a log file on the thread pool, and a line over 16 KiB closes only its sender's connection.
//! Run: `cargo run --release --example chat -- --port 7001` (`--log PATH`, default `chat.log`)
//!
//! Try it with two `nc 127.0.0.1 7001` sessions. Lines end with `\n` (a
//! `\r` before it is dropped). The room's state lives on the loop thread
//! with no lock; only the file appends leave it. Each message is one
//! `defer_to_thread` job, submitted at once, so the reactor's shutdown waits
//! for every one of them. Pool threads may run the jobs in any order, so
//! each carries a sequence number and the file side writes them strictly in
//! that order.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use weft::net::{
    CloseReason, DEFAULT_MAX_LINE_LENGTH, LineMode, LineProtocol, LineReceiver, ListeningPort,
    Transport, listen_tcp,
};
use weft::reactor::{Phase, SystemEvent};
use weft::{Reactor, ThreadError};

/// The log file as the pool threads share it: lines that arrived out of
/// order wait in `early` until their turn.
struct LogFile {
    path: PathBuf,
    file: Option<File>,
    next: u64,
    early: BTreeMap<u64, String>,
}

impl LogFile {
    /// Files line number `seq` and writes every line now in order.
    fn append(&mut self, seq: u64, line: String) -> std::io::Result<()> {
        self.early.insert(seq, line);
        if self.file.is_none() {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.file = Some(f);
        }
        let f = self.file.as_mut().expect("opened above");
        while let Some(line) = self.early.remove(&self.next) {
            writeln!(f, "{line}")?;
            self.next += 1;
        }
        f.flush()
    }
}

/// Everyone in the room plus the log's sequence; loop-thread state only.
struct Room {
    members: BTreeMap<u64, (String, Transport)>,
    next_id: u64,
    next_seq: u64,
    log: Arc<Mutex<LogFile>>,
}

impl Room {
    fn broadcast(&self, from: u64, text: &str) {
        for (id, (_, t)) in &self.members {
            if *id != from {
                // A member that stopped reading hits its own hard limit and
                // is closed; the others are not held up.
                let _ = t.write_sequence(&[text.as_bytes(), b"\r\n"]);
            }
        }
    }

    /// Appends `line` to the log on a pool thread.
    fn log(&mut self, line: String) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let log = self.log.clone();
        // None only while the reactor itself is being torn down.
        let Some(handle) = weft::reactor::current() else {
            return;
        };
        handle
            .defer_to_thread(move || {
                let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                log.append(seq, line)
            })
            .add_both(|result| match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("chat: cannot append to the log: {e}"),
                // Lines said while the server shuts down are not logged.
                Err(ThreadError::Stopped) => {}
                Err(e) => eprintln!("chat: log append did not run: {e}"),
            });
    }
}

/// One connection in the room.
struct Member {
    room: Rc<RefCell<Room>>,
    id: u64,
    name: String,
    transport: Option<Transport>,
}

impl Member {
    fn new(room: &Rc<RefCell<Room>>) -> Self {
        let id = {
            let mut r = room.borrow_mut();
            r.next_id += 1;
            r.next_id
        };
        Member {
            room: room.clone(),
            id,
            name: format!("user{id}"),
            transport: None,
        }
    }

    fn say(&self, text: String) {
        let mut room = self.room.borrow_mut();
        room.broadcast(self.id, &text);
        room.log(text);
    }
}

impl LineReceiver for Member {
    fn connection_made(&mut self, transport: Transport) {
        if let Some(peer) = transport.peer_address() {
            self.name = format!("{}@{peer}", self.name);
        }
        let _ = transport.write(format!("welcome, {}\r\n", self.name).as_bytes());
        self.room
            .borrow_mut()
            .members
            .insert(self.id, (self.name.clone(), transport.clone()));
        self.transport = Some(transport);
        self.say(format!("* {} joined", self.name));
    }

    fn line_received(&mut self, line: &[u8], _: &mut LineMode<'_>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        self.say(format!("{}: {text}", self.name));
    }

    fn line_length_exceeded(&mut self, _data: &[u8], transport: &Transport) {
        let _ = transport.write(
            format!("error: line longer than {DEFAULT_MAX_LINE_LENGTH} bytes; closing\r\n")
                .as_bytes(),
        );
        transport.lose_connection_with(CloseReason::LineTooLong);
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        self.room.borrow_mut().members.remove(&self.id);
        self.transport = None;
        self.say(format!("* {} left ({reason})", self.name));
    }
}

/// Starts the chat server on `addr`, logging to `log` (the tests call this
/// too, on port 0).
pub(crate) fn serve(addr: SocketAddr, log: PathBuf) -> std::io::Result<ListeningPort> {
    let room = Rc::new(RefCell::new(Room {
        members: BTreeMap::new(),
        next_id: 0,
        next_seq: 0,
        log: Arc::new(Mutex::new(LogFile {
            path: log,
            file: None,
            next: 0,
            early: BTreeMap::new(),
        })),
    }));
    listen_tcp(addr, move || {
        LineProtocol::new(Member::new(&room)).with_delimiter(b"\n")
    })
}

struct Args {
    port: u16,
    log: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut out = Args {
        port: 7001,
        log: PathBuf::from("chat.log"),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let v = args.next().ok_or("--port needs a value")?;
                out.port = v.parse().map_err(|e| format!("bad --port {v:?}: {e}"))?;
            }
            "--log" => out.log = args.next().ok_or("--log needs a path")?.into(),
            other => {
                return Err(format!(
                    "unknown argument {other:?} (usage: --port N --log PATH)"
                ));
            }
        }
    }
    Ok(out)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chat: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reactor = match Reactor::builder().handle_signals(true).build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chat: cannot start the reactor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listening = match serve(([127, 0, 0, 1], args.port).into(), args.log.clone()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chat: cannot listen on 127.0.0.1:{}: {e}", args.port);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "chat: listening on {} (log: {})",
        listening.local_address(),
        args.log.display()
    );
    reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
        listening.stop_listening()
    });
    if let Err(e) = reactor.run() {
        eprintln!("chat: {e}");
        return ExitCode::FAILURE;
    }
    println!("chat: stopped");
    ExitCode::SUCCESS
}
