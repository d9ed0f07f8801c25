//! UDP in protocol style: [`DatagramProtocol`], [`DatagramTransport`],
//! [`listen_udp`] (Twisted's `listenUDP`).
//!
//! Design: one local task per socket receives up to [`RECV_BATCH`]
//! datagrams per poll (then requeues itself for the next turn, so a flood
//! cannot hold the loop) and flushes the send queue. `write_to` sends at
//! once when the queue is empty and the socket takes it, and queues
//! otherwise. The queue is bounded: UDP is allowed to lose datagrams, so a
//! full queue drops the new one and says so ([`WriteError::BufferOverflow`])
//! rather than closing the socket or growing without limit.
//!
//! Invariants: `start_protocol` runs first and `stop_protocol` exactly once
//! and last; a panic in a callback is caught, logged, and stops that socket
//! only.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::WriteError;
use crate::net::UdpSocket;
use crate::net::async_io::not_on_loop;
use crate::{Cancelled, Deferred, Resolver, reactor};

/// Datagrams received per socket per turn at most.
const RECV_BATCH: usize = 32;
/// Send-queue bound, in datagrams.
const QUEUE_DATAGRAMS: usize = 1024;
/// Send-queue bound, in bytes.
const QUEUE_BYTES: usize = 1024 * 1024;

/// The callbacks of a UDP socket (Twisted's `DatagramProtocol`). All run on
/// the loop thread.
///
/// # Examples
///
/// ```
/// use std::net::SocketAddr;
/// use weft::net::{DatagramProtocol, DatagramTransport};
///
/// /// Sends every datagram back to where it came from.
/// #[derive(Default)]
/// struct Echo(Option<DatagramTransport>);
///
/// impl DatagramProtocol for Echo {
///     fn start_protocol(&mut self, t: DatagramTransport) {
///         self.0 = Some(t);
///     }
///     fn datagram_received(&mut self, data: &[u8], from: SocketAddr) {
///         let _ = self.0.as_ref().unwrap().write_to(data, from);
///     }
/// }
/// # let _ = Echo::default();
/// ```
pub trait DatagramProtocol: 'static {
    /// The socket is ready; keep `transport` to send.
    fn start_protocol(&mut self, transport: DatagramTransport) {
        let _ = transport;
    }

    /// One datagram arrived from `from`.
    fn datagram_received(&mut self, data: &[u8], from: SocketAddr);

    /// A send or receive failed (for example `ConnectionRefused` reported by
    /// ICMP for an earlier send). The socket goes on.
    fn error_received(&mut self, error: io::Error) {
        let _ = error;
    }

    /// The socket is closed; called exactly once, last.
    fn stop_protocol(&mut self) {}
}

struct Udp {
    socket: RefCell<Option<UdpSocket>>,
    local: SocketAddr,
    queue: RefCell<VecDeque<(Vec<u8>, SocketAddr)>>,
    queued_bytes: std::cell::Cell<usize>,
    stopping: std::cell::Cell<bool>,
    closed: std::cell::Cell<bool>,
    waker: RefCell<Option<Waker>>,
    /// Errors of immediate sends in `write_to`, for `error_received`.
    errors: RefCell<Vec<io::Error>>,
    watchers: RefCell<Vec<Resolver<(), Cancelled>>>,
}

impl Udp {
    fn wake(&self) {
        if let Some(w) = &*self.waker.borrow() {
            w.wake_by_ref();
        }
    }
}

/// A UDP socket as its [`DatagramProtocol`] sees it. Cheap to clone;
/// `!Send`.
///
/// # Examples
///
/// ```
/// use std::net::SocketAddr;
/// use weft::net::{DatagramProtocol, listen_udp};
///
/// struct Sink;
/// impl DatagramProtocol for Sink {
///     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
/// }
///
/// let reactor = weft::Reactor::new().unwrap();
/// let t = listen_udp("127.0.0.1:0".parse().unwrap(), Sink).unwrap();
/// t.write_to(b"to myself", t.local_address()).unwrap();
/// reactor.run_until_complete(t.stop_listening()).unwrap().unwrap();
/// ```
#[derive(Clone)]
pub struct DatagramTransport(Rc<Udp>);

impl fmt::Debug for DatagramTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramTransport")
            .field("local", &self.0.local)
            .field("queued", &self.0.queue.borrow().len())
            .finish()
    }
}

impl DatagramTransport {
    /// Sends `data` to `to`: at once if possible, else queued.
    ///
    /// # Errors
    ///
    /// [`WriteError::Closed`] after `stop_listening`;
    /// [`WriteError::BufferOverflow`] if the send queue is full (the
    /// datagram is dropped; the socket goes on).
    ///
    /// # Examples
    ///
    /// See [`DatagramTransport`].
    pub fn write_to(&self, data: &[u8], to: SocketAddr) -> Result<(), WriteError> {
        let u = &self.0;
        if u.stopping.get() || u.closed.get() {
            return Err(WriteError::Closed);
        }
        if u.queue.borrow().is_empty() {
            if let Some(s) = &*u.socket.borrow() {
                match s.as_async().get_ref().send_to(data, to) {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // Reported through error_received by the task, like a
                    // failed queued send.
                    Err(e) => {
                        u.errors.borrow_mut().push(e);
                        u.wake();
                        return Ok(());
                    }
                }
            }
        }
        let mut q = u.queue.borrow_mut();
        if q.len() >= QUEUE_DATAGRAMS || u.queued_bytes.get() + data.len() > QUEUE_BYTES {
            return Err(WriteError::BufferOverflow);
        }
        q.push_back((data.to_vec(), to));
        u.queued_bytes.set(u.queued_bytes.get() + data.len());
        drop(q);
        u.wake();
        Ok(())
    }

    /// The bound address.
    ///
    /// # Examples
    ///
    /// See [`DatagramTransport`].
    pub fn local_address(&self) -> SocketAddr {
        self.0.local
    }

    /// Closes the socket (queued datagrams are dropped); the `Deferred`
    /// resolves after `stop_protocol` has run. Idempotent.
    ///
    /// # Examples
    ///
    /// See [`DatagramTransport`].
    pub fn stop_listening(&self) -> Deferred<(), Cancelled> {
        let d = Deferred::new();
        if self.0.closed.get() {
            let _ = d.callback(());
        } else {
            self.0.watchers.borrow_mut().push(d.resolver());
            self.0.stopping.set(true);
            self.0.wake();
        }
        d
    }
}

/// Binds a UDP socket on `addr` and runs `protocol` on it (Twisted's
/// `listenUDP`).
///
/// # Errors
///
/// Binding errors, or `Other` off the loop thread.
///
/// # Examples
///
/// See [`DatagramTransport`].
pub fn listen_udp(
    addr: SocketAddr,
    protocol: impl DatagramProtocol,
) -> io::Result<DatagramTransport> {
    let handle = reactor::current().ok_or_else(not_on_loop)?;
    let socket = UdpSocket::bind(addr)?;
    let local = socket.local_addr()?;
    let udp = Rc::new(Udp {
        socket: RefCell::new(Some(socket)),
        local,
        queue: RefCell::default(),
        queued_bytes: Default::default(),
        stopping: Default::default(),
        closed: Default::default(),
        waker: RefCell::default(),
        errors: RefCell::default(),
        watchers: RefCell::default(),
    });
    let transport = DatagramTransport(udp.clone());
    let t = transport.clone();
    let mut task = UdpTask {
        udp,
        protocol: Box::new(protocol),
        started: false,
    };
    handle
        .spawn_local(async move {
            task.started = true;
            if guarded(|| task.protocol.start_protocol(t)) {
                run(&task.udp, &mut *task.protocol).await;
            }
            // `task` drops here: the socket closes and stop_protocol runs.
        })
        .detach();
    Ok(transport)
}

/// Owns the protocol for the socket's task. Its `Drop` closes the socket,
/// calls `stop_protocol` (if `start_protocol` ran) and resolves
/// `stop_listening`, whether the task ended or the loop shut down under it.
struct UdpTask {
    udp: Rc<Udp>,
    protocol: Box<dyn DatagramProtocol>,
    started: bool,
}

impl Drop for UdpTask {
    fn drop(&mut self) {
        let udp = &self.udp;
        udp.closed.set(true);
        udp.queue.borrow_mut().clear();
        drop(udp.socket.borrow_mut().take());
        if self.started {
            guarded(|| self.protocol.stop_protocol());
        }
        for w in udp.watchers.take() {
            let _ = w.callback(());
        }
    }
}

fn guarded(f: impl FnOnce()) -> bool {
    let r = catch_unwind(AssertUnwindSafe(f));
    if r.is_err() {
        tracing::error!("datagram protocol callback panicked; stopping its socket");
    }
    r.is_ok()
}

/// Receives and sends until stopped or a callback panics.
async fn run(udp: &Rc<Udp>, protocol: &mut dyn DatagramProtocol) {
    let mut buf = vec![0u8; 64 * 1024];
    poll_fn(|cx| {
        if udp.stopping.get() {
            return Poll::Ready(());
        }
        *udp.waker.borrow_mut() = Some(cx.waker().clone());
        let socket = udp.socket.borrow();
        let Some(s) = socket.as_ref() else {
            return Poll::Ready(());
        };
        let mut errors = udp.errors.take();
        let mut received = 0;
        let mut more = false;
        // Receive a batch.
        loop {
            match s.poll_recv_from(cx, &mut buf) {
                Poll::Ready(Ok((n, from))) => {
                    let data = &buf[..n];
                    if !guarded(|| protocol.datagram_received(data, from)) {
                        return Poll::Ready(());
                    }
                    received += 1;
                    if received == RECV_BATCH {
                        more = true;
                        break;
                    }
                }
                Poll::Ready(Err(e)) => {
                    errors.push(e);
                    if errors.len() >= RECV_BATCH {
                        more = true;
                        break;
                    }
                }
                Poll::Pending => break,
            }
            if udp.stopping.get() {
                return Poll::Ready(());
            }
        }
        // Flush the queue.
        loop {
            let front = udp.queue.borrow().front().map(|(d, a)| (d.len(), *a));
            let Some((len, to)) = front else { break };
            let r = s.as_async().poll_write_with(cx, |sock| {
                let q = udp.queue.borrow();
                sock.send_to(&q[0].0, to)
            });
            match r {
                Poll::Pending => break,
                Poll::Ready(r) => {
                    udp.queue.borrow_mut().pop_front();
                    udp.queued_bytes.set(udp.queued_bytes.get() - len);
                    if let Err(e) = r {
                        errors.push(e);
                    }
                }
            }
        }
        drop(socket);
        for e in errors {
            if !guarded(|| protocol.error_received(e)) {
                return Poll::Ready(());
            }
        }
        if more {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    })
    .await
}
