//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use weft::Reactor;

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

/// Routes `tracing` output to the test's captured output.
pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("weft=debug")
        .try_init();
}
