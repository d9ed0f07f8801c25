//! Opt-in signal handling: SIGTERM stops the reactor cleanly (its own test
//! binary, since signal handlers are process-wide).

mod common;

use std::cell::Cell;
use std::rc::Rc;

use weft::Reactor;
use weft::reactor::{Phase, SystemEvent};

#[test]
fn sigterm_stops_a_reactor_that_handles_signals_and_shutdown_runs() {
    let reactor = Reactor::builder().handle_signals(true).build().unwrap();
    let shut = Rc::new(Cell::new(false));
    let s = shut.clone();
    reactor.add_system_event_trigger(Phase::During, SystemEvent::Shutdown, move || s.set(true));
    reactor.call_when_running(|| {
        signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
    });
    let hung = common::watchdog(&reactor);
    reactor.run().unwrap();
    assert!(!hung.get());
    assert!(shut.get());
}
