//! The per-connection driver: one local task per connection that owns the
//! socket and calls the protocol (design in the [module docs](super)).
//!
//! Invariants: the driver reads at most twice per poll (a second time only
//! after a short first read) and requeues itself whenever it stopped with
//! data possibly left, so no readiness is lost under edge triggering; it is
//! the only
//! caller of `Conn::finish` except its own `Drop` (loop shutdown), so
//! `connection_lost` runs exactly once.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::buffer::{Flushed, WriteBuffer, WriteLimits};
use super::transport::{Conn, DEFAULT_CLOSE_TIMEOUT, Phase, State};
use super::{Address, CloseReason, Protocol, Transport};
use crate::reactor::Handle;

/// Bytes read per turn per connection (Twisted's `bufferSize`).
const READ_SIZE: usize = 64 * 1024;

/// A byte stream the driver can run a protocol on (TCP, Unix, or a test
/// fake). Polled on the loop thread only.
pub(crate) trait Stream: 'static {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;
    /// Pushes out what the stream itself still holds (TLS records); plain
    /// sockets hold nothing. The driver counts the connection drained only
    /// once this is ready.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = cx;
        Poll::Ready(Ok(()))
    }
    /// One write attempt without a waker ("send at once" from
    /// `Transport::write`); streams without one say `WouldBlock` and the
    /// driver sends on its next poll.
    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let _ = bufs;
        Err(io::ErrorKind::WouldBlock.into())
    }
    /// Half-close: no more writes (`shutdown(SHUT_WR)`).
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// Half-close that may need to write first (TLS `close_notify`).
    fn poll_shutdown_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = cx;
        Poll::Ready(self.shutdown_write())
    }
    /// Prepares an abortive close (RST on TCP); the stream is dropped next.
    fn abort(&mut self) {}
    fn set_nodelay(&self, on: bool) -> io::Result<()> {
        let _ = on;
        Err(io::ErrorKind::Unsupported.into())
    }
    fn local_address(&self) -> io::Result<Address>;
    fn peer_address(&self) -> io::Result<Address>;
}

/// Starts the driver task for `stream` with `protocol`; returns its
/// transport. Must run on the loop thread of `handle`.
pub(crate) fn spawn_connection(
    handle: &Handle,
    stream: Box<dyn Stream>,
    protocol: Box<dyn Protocol>,
) -> Transport {
    let conn = Rc::new(Conn {
        state: RefCell::new(State {
            phase: Phase::Open,
            wbuf: WriteBuffer::new(WriteLimits::default()),
            read_paused: false,
            read_eof: false,
            eof_requested: false,
            eof_sent: false,
            abort: None,
            flows: VecDeque::new(),
            waker: None,
            idle: None,
            close_deadline: None,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            close_reason: None,
            local: stream.local_address().ok(),
            peer: stream.peer_address().ok(),
        }),
        stream: RefCell::new(Some(stream)),
        protocol: RefCell::new(Some(protocol)),
        handle: handle.clone(),
    });
    let driver = Driver {
        conn: conn.clone(),
        started: false,
    };
    handle.spawn_local(driver).detach();
    Transport(conn)
}

struct Driver {
    conn: Rc<Conn>,
    started: bool,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.started {
            // Never polled (the loop was already shutting down): the
            // protocol never saw connection_made, so it gets no
            // connection_lost either; it is dropped quietly.
            drop(self.conn.protocol.borrow_mut().take());
        }
        // The loop shut down under a live connection: connection_lost still
        // runs exactly once.
        self.conn.finish(CloseReason::Aborted);
    }
}

impl Driver {
    /// One poll's worth of work; `Ready` once the connection is finished.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let conn = self.conn.clone();
        if !self.started {
            self.started = true;
            let t = Transport(conn.clone());
            conn.call(move |p| p.connection_made(t));
        } else {
            // Flow events queued by writes from outside this connection's
            // callbacks (a timer, another connection).
            conn.call(|_| ());
        }

        let mut more = false;
        // A short read usually means the socket is drained: read once more
        // at once, so that the expected `WouldBlock` re-arms the readiness
        // wait in this poll instead of costing a whole turn. A full read
        // (or data on the second try) leaves the rest for the next turn.
        for attempt in 0..2 {
            let may_read = {
                let st = conn.state.borrow();
                st.phase == Phase::Open && !st.read_paused && !st.read_eof && st.abort.is_none()
            };
            if !may_read {
                break;
            }
            match with_read_buffer(|buf| read_once(&conn, cx, buf)) {
                None => return Poll::Ready(()),
                Some(Read::Data { full }) if full || attempt == 1 => {
                    more = true;
                    break;
                }
                Some(Read::Data { .. }) => {}
                Some(Read::Idle) => break,
            }
        }

        let abort = conn.state.borrow_mut().abort.take();
        if let Some(reason) = abort {
            conn.finish(reason);
            return Poll::Ready(());
        }

        // Flush.
        let (result, flow) = {
            let mut st = conn.state.borrow_mut();
            let mut stream = conn.stream.borrow_mut();
            match stream.as_mut() {
                Some(s) if !st.wbuf.is_empty() => {
                    st.wbuf.flush(|bufs| match s.poll_write_vectored(cx, bufs) {
                        Poll::Ready(r) => r,
                        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                    })
                }
                _ => (Ok(Flushed::Empty), None),
            }
        };
        if let Err(e) = result {
            conn.finish(CloseReason::from_io(e));
            return Poll::Ready(());
        }
        if flow.is_some() {
            conn.state.borrow_mut().flows.extend(flow);
            conn.call(|_| ());
        }
        let abort = conn.state.borrow_mut().abort.take();
        if let Some(reason) = abort {
            conn.finish(reason);
            return Poll::Ready(());
        }

        // What the stream itself buffers (TLS) must be out too.
        let mut flushed = true;
        if conn.state.borrow().wbuf.is_empty() {
            let r = match &mut *conn.stream.borrow_mut() {
                Some(s) => s.poll_flush(cx),
                None => Poll::Ready(Ok(())),
            };
            match r {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    conn.finish(CloseReason::from_io(e));
                    return Poll::Ready(());
                }
                Poll::Pending => flushed = false,
            }
        }

        // Half-close and graceful close once the buffer is empty.
        let (phase, drained, send_eof, read_eof) = {
            let st = conn.state.borrow();
            let drained = st.wbuf.is_empty() && flushed;
            let want_eof = st.eof_requested || st.phase == Phase::Closing;
            (
                st.phase,
                drained,
                drained && want_eof && !st.eof_sent,
                st.read_eof,
            )
        };
        if send_eof {
            let r = match &mut *conn.stream.borrow_mut() {
                Some(s) => s.poll_shutdown_write(cx),
                None => Poll::Ready(Ok(())),
            };
            let Poll::Ready(r) = r else {
                // Woken by the stream once it can write again.
                if more {
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            };
            conn.state.borrow_mut().eof_sent = true;
            // NotConnected: the peer is already gone; the close is still clean
            // from our side.
            if let Err(e) = r.or_else(|e| match e.kind() {
                io::ErrorKind::NotConnected => Ok(()),
                _ => Err(e),
            }) {
                conn.finish(CloseReason::from_io(e));
                return Poll::Ready(());
            }
        }
        let eof_sent = conn.state.borrow().eof_sent;
        if (phase == Phase::Closing && drained) || (eof_sent && read_eof) {
            let reason = conn.state.borrow_mut().close_reason.take();
            conn.finish(reason.unwrap_or(CloseReason::Done));
            return Poll::Ready(());
        }

        if more {
            // One read per turn (fairness); come back next turn for the rest
            // instead of waiting for an edge that may not come.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

thread_local! {
    /// One read buffer per loop thread, shared by all its connections: a
    /// read and the `data_received` that consumes it finish before any other
    /// driver runs, so 10,000 idle connections do not hold 640 MB.
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
}

fn with_read_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        // A nested loop turn inside a callback (never in normal use): fall
        // back to a buffer of its own.
        Err(_) => f(&mut vec![0; READ_SIZE]),
    })
}

enum Read {
    /// Bytes were delivered; `full` if they filled the buffer.
    Data { full: bool },
    /// Nothing to read now (or EOF handled): wait for readiness.
    Idle,
}

/// One read and its callback; `None` if the connection finished.
fn read_once(conn: &Rc<Conn>, cx: &mut Context<'_>, buf: &mut [u8]) -> Option<Read> {
    let r = match &mut *conn.stream.borrow_mut() {
        Some(s) => s.poll_read(cx, buf),
        None => Poll::Pending,
    };
    match r {
        Poll::Ready(Ok(0)) => {
            conn.state.borrow_mut().read_eof = true;
            let keep = conn.call(|p| p.eof_received()).unwrap_or(false);
            if !keep {
                Transport(conn.clone()).lose_connection();
            }
            Some(Read::Idle)
        }
        Poll::Ready(Ok(n)) => {
            Transport(conn.clone()).reset_timeout();
            let data = &buf[..n];
            conn.call(|p| p.data_received(data));
            Some(Read::Data {
                full: n == buf.len(),
            })
        }
        // Try again next turn rather than spin here.
        Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {
            Some(Read::Data { full: true })
        }
        Poll::Ready(Err(e)) => {
            conn.finish(CloseReason::from_io(e));
            None
        }
        Poll::Pending => Some(Read::Idle),
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        {
            let mut st = this.conn.state.borrow_mut();
            if st.phase == Phase::Closed {
                return Poll::Ready(());
            }
            match &st.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => st.waker = Some(cx.waker().clone()),
            }
        }
        this.step(cx)
    }
}
