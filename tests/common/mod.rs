//! Helpers shared by the integration tests: bounded condition waits and a
//! global capture of `tracing` output.

#![allow(dead_code)]

use std::cell::Cell;
use std::io::{self, Write};
use std::rc::Rc;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use weft::Reactor;

/// Runs `fut` to completion on `reactor`; a 60 s watchdog (on the loop's
/// own timer) turns a hang into a failure instead of a stuck test.
pub(crate) fn block_on<F: std::future::Future + 'static>(reactor: &Reactor, fut: F) -> F::Output {
    let guard = reactor.call_later(Duration::from_secs(60), || {
        weft::reactor::current().unwrap().stop();
    });
    let out = reactor
        .run_until_complete(fut)
        .expect("the test hung (watchdog)");
    let _ = guard.cancel();
    out
}

/// 127.0.0.1 on a port the kernel picks.
pub(crate) fn loopback() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A generous bound for conditions that hold within milliseconds normally.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// Waits until `cond` holds, checking every millisecond, for at most
/// [`PATIENCE`]. Returns whether it held. Used only where no event exists to
/// wait on (a worker going idle after its task returned).
pub(crate) fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INIT: Once = Once::new();

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Installs the global capturing subscriber (once per test binary).
pub(crate) fn capture_logs() {
    INIT.call_once(|| {
        tracing_subscriber::fmt()
            .with_writer(|| Capture)
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .init();
    });
}

/// Captured log lines containing every one of `needles`.
pub(crate) fn log_lines(needles: &[&str]) -> Vec<String> {
    let logs = LOGS.lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .map(str::to_owned)
        .collect()
}

/// Installs a watchdog that stops the reactor if a test would otherwise hang;
/// returns a flag that is true if it fired. It bounds a failure, it does not
/// decide a pass: a correct run never reaches it.
pub(crate) fn watchdog(reactor: &Reactor) -> Rc<Cell<bool>> {
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    let call = reactor.call_later(Duration::from_secs(60), move || {
        f.set(true);
        weft::reactor::current().unwrap().stop();
    });
    // Cancel it at shutdown so it never keeps anything alive.
    reactor.add_system_event_trigger(
        weft::reactor::Phase::Before,
        weft::reactor::SystemEvent::Shutdown,
        move || {
            let _ = call.cancel();
        },
    );
    fired
}

/// Routes `tracing` output to the global capture (see [`log_lines`]).
pub(crate) fn init_tracing() {
    capture_logs();
}
