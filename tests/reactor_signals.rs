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

// Each test below uses its own signal: tests of one binary run in parallel
// threads of one process, and signal handlers are process-wide.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use weft::reactor::SignalError;

#[test]
fn a_user_handler_runs_on_the_loop_thread_and_can_remove_itself() {
    let reactor = Reactor::new().unwrap();
    let h = reactor.handle();
    let loop_thread = std::thread::current().id();
    let calls = Rc::new(Cell::new(0));
    let on_loop = Rc::new(Cell::new(false));
    let id = Rc::new(Cell::new(None));
    let (c, o, i, h2) = (calls.clone(), on_loop.clone(), id.clone(), h.clone());
    let got = h
        .add_signal_handler(libc::SIGUSR1, move || {
            c.set(c.get() + 1);
            o.set(std::thread::current().id() == loop_thread && weft::reactor::is_in_io_thread());
            assert!(h2.remove_signal_handler(i.get().unwrap()));
            h2.stop();
        })
        .unwrap();
    id.set(Some(got));
    reactor.call_when_running(|| {
        // Raised from another thread: the handler still runs on the loop.
        std::thread::spawn(|| signal_hook::low_level::raise(libc::SIGUSR1).unwrap())
            .join()
            .unwrap();
    });
    let hung = common::watchdog(&reactor);
    reactor.run().unwrap();
    assert!(!hung.get());
    assert_eq!(calls.get(), 1);
    assert!(on_loop.get());
    assert!(!h.remove_signal_handler(got), "already removed by itself");
}

#[test]
fn a_sigint_handler_replaces_the_default_stop_until_removed() {
    let reactor = Reactor::builder().handle_signals(true).build().unwrap();
    let h = reactor.handle();
    let calls = Rc::new(Cell::new(0));
    let (c, h2) = (calls.clone(), h.clone());
    let id = h
        .add_signal_handler(libc::SIGINT, move || {
            c.set(c.get() + 1);
            if c.get() < 3 {
                // Had the default stop run too, the loop would end here.
                signal_hook::low_level::raise(libc::SIGINT).unwrap();
            } else {
                assert!(h2.is_running());
                // Removal brings the stop back: the next SIGINT stops.
                let id = h2.add_signal_handler(libc::SIGINT, || ()).unwrap();
                assert!(h2.remove_signal_handler(id));
                signal_hook::low_level::raise(libc::SIGINT).unwrap();
            }
        })
        .unwrap();
    reactor.call_when_running(|| signal_hook::low_level::raise(libc::SIGINT).unwrap());
    let hung = common::watchdog(&reactor);
    reactor.run().unwrap();
    assert!(!hung.get(), "the restored stop ended the loop");
    assert_eq!(calls.get(), 3);
    // `id` was replaced by the handler added inside the callback.
    assert!(!h.remove_signal_handler(id));
}

#[test]
fn a_second_reactor_cannot_take_a_claimed_signal() {
    let reactor = Reactor::new().unwrap();
    let h = reactor.handle();
    let id = h.add_signal_handler(libc::SIGHUP, || ()).unwrap();
    // Replacing on the same reactor is fine.
    let id2 = h.add_signal_handler(libc::SIGHUP, || ()).unwrap();
    assert!(!h.remove_signal_handler(id));
    let other = || {
        std::thread::spawn(|| {
            let r = Reactor::new().unwrap();
            r.handle()
                .add_signal_handler(libc::SIGHUP, || ())
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .join()
        .unwrap()
    };
    let err = other().unwrap_err();
    assert!(err.contains("another reactor"), "{err}");
    assert!(h.remove_signal_handler(id2));
    assert_eq!(other(), Ok(()));
}

#[test]
fn forbidden_and_invalid_signals_are_errors() {
    let reactor = Reactor::new().unwrap();
    let h = reactor.handle();
    for s in [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV] {
        assert!(matches!(h.add_signal_handler(s, || ()), Err(SignalError::Forbidden(x)) if x == s));
    }
    assert!(matches!(
        h.add_signal_handler(1000, || ()),
        Err(SignalError::Io(_))
    ));
}

const CHILD: &str = "WEFT_SIGNAL_CHILD";

/// In a child process (the default action of SIGUSR2 ends the process):
/// after the last handler is removed, the default disposition is back.
#[test]
fn removing_the_last_handler_restores_the_default_action() {
    if std::env::var_os(CHILD).is_some() {
        let reactor = Reactor::new().unwrap();
        let h = reactor.handle();
        let id = h.add_signal_handler(libc::SIGUSR2, || ()).unwrap();
        assert!(h.remove_signal_handler(id));
        signal_hook::low_level::raise(libc::SIGUSR2).unwrap();
        // Not reached when the default action ran.
        std::process::exit(0);
    }
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "removing_the_last_handler_restores_the_default_action",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGUSR2), "{status:?}");
}
