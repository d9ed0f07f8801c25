//! A line-protocol chat server: every line goes to everyone else, each message is appended to a log file on the thread pool, and a line over 16 KiB closes only its sender's connection.
//! Run: `cargo run --release --example chat -- --port 7001` (`--log PATH`, default `chat.log`)
//!
//! Try it with two `nc 127.0.0.1 7001` sessions. Lines end with `\n` (a
//! `\r` before it is dropped). The room's state lives on the loop thread
//! with no lock; only the file appends leave it. Appends keep their order:
//! one batch is in flight at a time, and lines arriving meanwhile wait on
//! the loop and go out as the next batch.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;

use weft::Reactor;
use weft::net::{
    CloseReason, DEFAULT_MAX_LINE_LENGTH, LineMode, LineProtocol, LineReceiver, ListeningPort,
    Transport, listen_tcp,
};
use weft::reactor::{Phase, SystemEvent};

/// Everyone in the room plus the log writer; loop-thread state only.
struct Room {
    members: BTreeMap<u64, (String, Transport)>,
    next_id: u64,
    log_path: PathBuf,
    /// Lines waiting for the next append.
    pending: Vec<String>,
    /// Whether an append is running on the pool.
    writing: bool,
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
}

/// Appends the pending lines on a pool thread, one batch at a time.
fn flush_log(room: &Rc<RefCell<Room>>) {
    let (batch, path) = {
        let mut r = room.borrow_mut();
        if r.writing || r.pending.is_empty() {
            return;
        }
        r.writing = true;
        (std::mem::take(&mut r.pending), r.log_path.clone())
    };
    let handle = weft::reactor::current().expect("on the loop thread");
    let room = room.clone();
    handle
        .defer_to_thread(move || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            for line in &batch {
                writeln!(f, "{line}")?;
            }
            f.flush()
        })
        .add_both(move |result| {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("chat: cannot append to the log: {e}"),
                Err(e) => eprintln!("chat: log append did not run: {e}"),
            }
            room.borrow_mut().writing = false;
            flush_log(&room);
        });
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
        self.room.borrow().broadcast(self.id, &text);
        self.room.borrow_mut().pending.push(text);
        flush_log(&self.room);
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
        log_path: log,
        pending: Vec::new(),
        writing: false,
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
