//! An echo server in protocol style (Twisted's `Echo`): one `Protocol` per connection, on 127.0.0.1; Ctrl-C stops it cleanly.
//! Run: `cargo run --release --example echo -- --port 7000`
//!
//! Try it with `nc 127.0.0.1 7000`. `--port 0` picks a free port (the
//! address printed is the real one).

use std::net::SocketAddr;
use std::process::ExitCode;

use weft::Reactor;
use weft::net::{CloseReason, ListeningPort, Protocol, Transport, listen_tcp};
use weft::reactor::{Phase, SystemEvent};

/// Writes back whatever arrives.
#[derive(Default)]
struct Echo {
    transport: Option<Transport>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        if let Some(peer) = transport.peer_address() {
            println!("echo: {peer} connected");
        }
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            // An error here means the connection is already going away.
            let _ = t.write(data);
        }
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        let peer = self.transport.take().and_then(|t| t.peer_address());
        if let Some(peer) = peer {
            println!("echo: {peer} gone ({reason})");
        }
    }
}

/// Starts the echo server on `addr` (the tests call this too, on port 0).
pub(crate) fn serve(addr: SocketAddr) -> std::io::Result<ListeningPort> {
    listen_tcp(addr, Echo::default)
}

fn port_from_args() -> Result<u16, String> {
    let mut args = std::env::args().skip(1);
    let mut port = 7000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let v = args.next().ok_or("--port needs a value")?;
                port = v.parse().map_err(|e| format!("bad --port {v:?}: {e}"))?;
            }
            other => return Err(format!("unknown argument {other:?} (usage: --port N)")),
        }
    }
    Ok(port)
}

fn main() -> ExitCode {
    let port = match port_from_args() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("echo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reactor = match Reactor::builder().handle_signals(true).build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("echo: cannot start the reactor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listening = match serve(([127, 0, 0, 1], port).into()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("echo: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("echo: listening on {}", listening.local_address());
    // On Ctrl-C the reactor shuts down; close the listening socket first.
    reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
        listening.stop_listening()
    });
    if let Err(e) = reactor.run() {
        eprintln!("echo: {e}");
        return ExitCode::FAILURE;
    }
    println!("echo: stopped");
    ExitCode::SUCCESS
}
