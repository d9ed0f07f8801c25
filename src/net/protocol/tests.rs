//! Driver tests on an in-memory stream and the manual clock: every step is
//! one reactor turn, so ordering is exact and nothing sleeps.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::driver::{Stream, spawn_connection};
use super::{Address, CloseReason, Protocol, Transport, WriteError, WriteLimits};
use crate::Reactor;
use crate::testing::ManualClock;

#[derive(Default)]
struct Pipe {
    incoming: VecDeque<u8>,
    eof: bool,
    read_error: Option<io::ErrorKind>,
    room: usize,
    written: Vec<u8>,
    shut_write: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    dropped: bool,
}

#[derive(Clone, Default)]
struct Fake(Rc<RefCell<Pipe>>);

impl Fake {
    fn with_room(room: usize) -> Self {
        let f = Fake::default();
        f.0.borrow_mut().room = room;
        f
    }
    fn send(&self, data: &[u8]) {
        let mut p = self.0.borrow_mut();
        p.incoming.extend(data);
        if let Some(w) = p.read_waker.take() {
            w.wake();
        }
    }
    fn send_eof(&self) {
        let mut p = self.0.borrow_mut();
        p.eof = true;
        if let Some(w) = p.read_waker.take() {
            w.wake();
        }
    }
    fn set_room(&self, room: usize) {
        let mut p = self.0.borrow_mut();
        p.room = room;
        if let Some(w) = p.write_waker.take() {
            w.wake();
        }
    }
    fn written(&self) -> Vec<u8> {
        self.0.borrow().written.clone()
    }
}

struct FakeStream(Fake);

impl Drop for FakeStream {
    fn drop(&mut self) {
        self.0.0.borrow_mut().dropped = true;
    }
}

impl Stream for FakeStream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut p = self.0.0.borrow_mut();
        if let Some(kind) = p.read_error.take() {
            return Poll::Ready(Err(kind.into()));
        }
        if p.incoming.is_empty() {
            if p.eof {
                return Poll::Ready(Ok(0));
            }
            p.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(p.incoming.len());
        for (i, b) in p.incoming.drain(..n).enumerate() {
            buf[i] = b;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut p = self.0.0.borrow_mut();
        assert!(!p.shut_write, "write after shutdown");
        if p.room == 0 {
            p.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(p.room - n);
            p.written.extend_from_slice(&b[..take]);
            n += take;
        }
        p.room -= n;
        Poll::Ready(Ok(n))
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.0.0.borrow_mut().shut_write = true;
        Ok(())
    }

    fn local_address(&self) -> io::Result<Address> {
        Ok(Address::Unix(None))
    }

    fn peer_address(&self) -> io::Result<Address> {
        Ok(Address::Unix(None))
    }
}

/// Records every callback; scripted behaviour through flags.
#[derive(Default)]
struct Log {
    events: Vec<String>,
    transport: Option<Transport>,
    echo: bool,
    keep_half_open: bool,
    panic_on_data: bool,
}

struct Recorder(Rc<RefCell<Log>>);

impl Protocol for Recorder {
    fn connection_made(&mut self, transport: Transport) {
        let mut log = self.0.borrow_mut();
        log.events.push("made".into());
        log.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        let mut log = self.0.borrow_mut();
        if log.panic_on_data {
            panic!("boom");
        }
        log.events
            .push(format!("data {}", String::from_utf8_lossy(data)));
        if log.echo {
            log.transport.as_ref().unwrap().write(data).unwrap();
        }
    }
    fn eof_received(&mut self) -> bool {
        let mut log = self.0.borrow_mut();
        log.events.push("eof".into());
        log.keep_half_open
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.0.borrow_mut().events.push(format!("lost {reason}"));
    }
    fn pause_writing(&mut self) {
        self.0.borrow_mut().events.push("pause".into());
    }
    fn resume_writing(&mut self) {
        self.0.borrow_mut().events.push("resume".into());
    }
}

struct Setup {
    reactor: Reactor,
    clock: ManualClock,
    fake: Fake,
    log: Rc<RefCell<Log>>,
    transport: Transport,
}

impl Setup {
    fn new(room: usize, configure: impl FnOnce(&mut Log)) -> Self {
        let clock = ManualClock::new();
        let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
        let fake = Fake::with_room(room);
        let log = Rc::new(RefCell::new(Log::default()));
        configure(&mut log.borrow_mut());
        let transport = spawn_connection(
            &reactor.handle(),
            Box::new(FakeStream(fake.clone())),
            Box::new(Recorder(log.clone())),
        );
        let s = Setup {
            reactor,
            clock,
            fake,
            log,
            transport,
        };
        s.turn();
        s
    }
    fn turn(&self) {
        for _ in 0..3 {
            self.reactor.iterate(Some(Duration::ZERO));
        }
    }
    fn events(&self) -> Vec<String> {
        std::mem::take(&mut self.log.borrow_mut().events)
    }
}

#[test]
fn echo_delivers_data_after_connection_made() {
    let s = Setup::new(usize::MAX, |l| l.echo = true);
    assert_eq!(s.events(), ["made"]);
    s.fake.send(b"hello");
    s.turn();
    assert_eq!(s.events(), ["data hello"]);
    assert_eq!(s.fake.written(), b"hello");
}

#[test]
fn peer_eof_closes_cleanly_by_default() {
    let s = Setup::new(usize::MAX, |_| {});
    s.fake.send_eof();
    s.turn();
    assert_eq!(
        s.events(),
        ["made", "eof", "lost connection closed cleanly"]
    );
    assert!(s.fake.0.borrow().dropped);
    assert!(s.fake.0.borrow().shut_write);
}

#[test]
fn half_close_keeps_writing_possible() {
    let s = Setup::new(usize::MAX, |l| l.keep_half_open = true);
    s.fake.send_eof();
    s.turn();
    assert_eq!(s.events(), ["made", "eof"]);
    s.transport.write(b"late reply").unwrap();
    s.turn();
    assert_eq!(s.fake.written(), b"late reply");
    assert!(!s.fake.0.borrow().dropped);
    s.transport.lose_connection();
    s.turn();
    assert_eq!(s.events(), ["lost connection closed cleanly"]);
}

#[test]
fn write_eof_then_peer_eof_is_a_clean_close() {
    let s = Setup::new(usize::MAX, |l| l.keep_half_open = true);
    s.transport.write(b"req").unwrap();
    s.transport.write_eof().unwrap();
    assert_eq!(s.transport.write(b"more"), Err(WriteError::Closed));
    s.turn();
    assert!(s.fake.0.borrow().shut_write);
    s.fake.send(b"resp");
    s.fake.send_eof();
    s.turn();
    assert_eq!(
        s.events(),
        ["made", "data resp", "eof", "lost connection closed cleanly"]
    );
}

#[test]
fn write_after_close_is_an_error_value() {
    let s = Setup::new(usize::MAX, |_| {});
    s.transport.lose_connection();
    assert_eq!(s.transport.write(b"x"), Err(WriteError::Closed));
    s.turn();
    assert_eq!(s.transport.write(b"x"), Err(WriteError::Closed));
    assert!(s.transport.is_closing());
    assert_eq!(s.events(), ["made", "lost connection closed cleanly"]);
}

#[test]
fn abort_reports_aborted_on_a_later_turn_and_drops_the_buffer() {
    let s = Setup::new(0, |_| {});
    s.transport.write(b"never sent").unwrap();
    s.transport.abort();
    assert_eq!(s.events(), ["made"], "connection_lost is not re-entrant");
    s.turn();
    assert_eq!(s.events(), ["lost connection aborted"]);
    assert!(s.fake.written().is_empty());
}

#[test]
fn flow_control_pauses_once_resumes_once_and_the_hard_limit_closes() {
    let s = Setup::new(0, |_| {});
    s.transport
        .set_write_limits(WriteLimits::new(100).unwrap().with_hard(1000).unwrap());
    for _ in 0..5 {
        s.transport.write(&[1; 30]).unwrap();
    }
    s.turn();
    assert_eq!(s.events(), ["made", "pause"]);
    // Drain to 25 (= low): one resume.
    s.fake.set_room(125);
    s.turn();
    assert_eq!(s.events(), ["resume"]);
    assert_eq!(s.transport.write_buffer_size(), 25);
    // Ignore the pause and keep writing: the hard limit closes it.
    s.transport.write(&[2; 200]).unwrap();
    let mut result = Ok(());
    for _ in 0..10 {
        result = s.transport.write(&[3; 100]);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(WriteError::BufferOverflow));
    s.turn();
    // The pause queued by the 200-byte write is not delivered: once the
    // connection is failing, the protocol hears only connection_lost.
    assert_eq!(s.events(), ["lost write buffer overflow"]);
}

#[test]
fn panic_in_a_callback_closes_that_connection_only() {
    let s = Setup::new(usize::MAX, |l| l.panic_on_data = true);
    let other = Setup::new(usize::MAX, |l| l.echo = true);
    s.fake.send(b"x");
    s.turn();
    assert_eq!(s.events(), ["made", "lost protocol callback panicked"]);
    other.fake.send(b"still here");
    other.turn();
    assert_eq!(other.events(), ["made", "data still here"]);
}

#[test]
fn pause_reading_holds_data_until_resume() {
    let s = Setup::new(usize::MAX, |_| {});
    s.transport.pause_reading();
    s.fake.send(b"queued");
    s.turn();
    assert_eq!(s.events(), ["made"]);
    s.transport.resume_reading();
    s.turn();
    assert_eq!(s.events(), ["data queued"]);
}

#[test]
fn a_large_backlog_is_read_over_several_turns_without_new_data() {
    let s = Setup::new(usize::MAX, |_| {});
    s.events();
    s.fake.send(&vec![b'a'; 200 * 1024]);
    s.turn();
    s.turn();
    let total: usize = s
        .events()
        .iter()
        .map(|e| e.strip_prefix("data ").unwrap().len())
        .sum();
    assert_eq!(total, 200 * 1024);
}

#[test]
fn reset_by_peer_is_reported_as_reset() {
    let s = Setup::new(usize::MAX, |_| {});
    s.fake.0.borrow_mut().read_error = Some(io::ErrorKind::ConnectionReset);
    s.fake.send(b"");
    s.turn();
    assert_eq!(s.events(), ["made", "lost connection reset by peer"]);
}

#[test]
fn idle_timeout_aborts_with_timed_out_and_traffic_resets_it() {
    let s = Setup::new(usize::MAX, |_| {});
    assert_eq!(s.transport.set_timeout(Some(Duration::from_secs(10))), None);
    s.clock.advance(Duration::from_secs(8));
    s.turn();
    s.fake.send(b"ping");
    s.turn();
    s.clock.advance(Duration::from_secs(8));
    s.turn();
    assert_eq!(
        s.events(),
        ["made", "data ping"],
        "traffic reset the countdown"
    );
    s.clock.advance(Duration::from_secs(2));
    s.turn();
    assert_eq!(s.events(), ["lost connection timed out"]);
}

#[test]
fn set_timeout_none_cancels_and_returns_the_previous_period() {
    let s = Setup::new(usize::MAX, |_| {});
    s.transport.set_timeout(Some(Duration::from_secs(1)));
    assert_eq!(s.transport.set_timeout(None), Some(Duration::from_secs(1)));
    s.clock.advance(Duration::from_secs(5));
    s.turn();
    assert_eq!(s.events(), ["made"]);
}

#[test]
fn graceful_close_against_a_non_reading_peer_aborts_at_the_deadline() {
    let s = Setup::new(0, |_| {});
    s.transport.write(b"stuck").unwrap();
    s.transport.set_close_timeout(Duration::from_secs(5));
    s.transport.lose_connection();
    s.turn();
    s.clock.advance(Duration::from_secs(4));
    s.turn();
    assert_eq!(s.events(), ["made"]);
    s.clock.advance(Duration::from_secs(1));
    s.turn();
    assert_eq!(s.events(), ["lost connection timed out"]);
}

#[test]
fn graceful_close_flushes_first() {
    let s = Setup::new(3, |_| {});
    s.transport.write(b"abcdef").unwrap();
    s.transport.lose_connection();
    s.turn();
    assert_eq!(s.events(), ["made"]);
    s.fake.set_room(10);
    s.turn();
    assert_eq!(s.fake.written(), b"abcdef");
    assert_eq!(s.events(), ["lost connection closed cleanly"]);
}

#[test]
fn loop_shutdown_under_a_live_connection_reports_aborted_once() {
    let s = Setup::new(usize::MAX, |_| {});
    let Setup {
        reactor, log, fake, ..
    } = s;
    drop(reactor);
    assert_eq!(log.borrow().events, ["made", "lost connection aborted"]);
    assert!(fake.0.borrow().dropped);
}

#[test]
fn a_connection_never_started_gets_no_callbacks() {
    let reactor = Reactor::new().unwrap();
    let fake = Fake::with_room(usize::MAX);
    let log = Rc::new(RefCell::new(Log::default()));
    spawn_connection(
        &reactor.handle(),
        Box::new(FakeStream(fake.clone())),
        Box::new(Recorder(log.clone())),
    );
    drop(reactor);
    assert!(log.borrow().events.is_empty());
    assert!(fake.0.borrow().dropped);
}

mod lines {
    use super::*;
    use crate::net::{LineMode, LineProtocol, LineReceiver};

    struct Lines(Rc<RefCell<Vec<String>>>, Option<Transport>);

    impl LineReceiver for Lines {
        fn connection_made(&mut self, t: Transport) {
            self.1 = Some(t);
        }
        fn line_received(&mut self, line: &[u8], mode: &mut LineMode<'_>) {
            let line = String::from_utf8_lossy(line).into_owned();
            match line.as_str() {
                "raw" => mode.set_raw_mode(),
                "quit" => self.1.as_ref().unwrap().lose_connection(),
                _ => {}
            }
            self.0.borrow_mut().push(format!("line {line}"));
        }
        fn raw_data_received(&mut self, data: &[u8], mode: &mut LineMode<'_>) {
            self.0
                .borrow_mut()
                .push(format!("raw {}", String::from_utf8_lossy(data)));
            mode.set_line_mode();
        }
        fn connection_lost(&mut self, reason: CloseReason) {
            self.0.borrow_mut().push(format!("lost {reason}"));
        }
    }

    fn start(max: usize) -> (Reactor, Fake, Rc<RefCell<Vec<String>>>) {
        let reactor = Reactor::new().unwrap();
        let fake = Fake::with_room(usize::MAX);
        let log = Rc::new(RefCell::new(Vec::new()));
        spawn_connection(
            &reactor.handle(),
            Box::new(FakeStream(fake.clone())),
            Box::new(LineProtocol::new(Lines(log.clone(), None)).max_length(max)),
        );
        (reactor, fake, log)
    }

    fn turns(r: &Reactor) {
        for _ in 0..3 {
            r.iterate(Some(Duration::ZERO));
        }
    }

    #[test]
    fn too_long_line_closes_with_line_too_long_after_earlier_lines() {
        let (r, fake, log) = start(8);
        fake.send(b"short\r\n0123456789\r\nnever\r\n");
        turns(&r);
        assert_eq!(*log.borrow(), ["line short", "lost line too long"]);
    }

    #[test]
    fn lines_after_quit_in_the_same_chunk_are_ignored() {
        let (r, fake, log) = start(100);
        fake.send(b"a\r\nquit\r\nb\r\n");
        turns(&r);
        assert_eq!(
            *log.borrow(),
            ["line a", "line quit", "lost connection closed cleanly"]
        );
    }

    #[test]
    fn raw_mode_switch_mid_chunk() {
        let (r, fake, log) = start(100);
        fake.send(b"raw\r\nxy\r\nz\r\n");
        turns(&r);
        // The raw chunk is everything after the switch; the receiver
        // switched back, and nothing is left to split.
        assert_eq!(*log.borrow(), ["line raw", "raw xy\r\nz\r\n"]);
        fake.send(b"back\r\n");
        turns(&r);
        assert_eq!(log.borrow().last().unwrap(), "line back");
    }
}
