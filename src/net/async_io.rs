//! [`Async<T>`]: an owned, registered, non-blocking file descriptor.
//!
//! # Design
//!
//! mio registers sources edge-triggered: an event is reported when
//! readiness appears, not while it lasts. So each direction (read, write)
//! keeps a cached *ready* bit that an event sets and only a failed attempt
//! clears: an operation that returns `WouldBlock` proves the descriptor is
//! drained. Until then every caller may try the operation again without
//! waiting for an edge that may never come.
//!
//! The classic race is clearing a bit that a newer event has set: the task
//! saw "ready" (event 1), tried, got `WouldBlock`, but event 2 arrived in
//! between. Each direction therefore counts events in a `tick`; an attempt
//! notes the tick before it runs and clears the bit only if the tick is
//! unchanged (async-io's and tokio's rule).
//!
//! # Invariants
//!
//! - A bit goes from set to clear only through `clear(tick)`, with `tick`
//!   read before the operation that proved the descriptor not ready: one
//!   that returned `WouldBlock`, or (byte streams only, tokio's short-read
//!   rule for epoll) a read or write that moved fewer bytes than asked.
//! - A direction whose event said "closed" (peer's FIN/HUP, or an error)
//!   stays ready for good: the EOF or error arrived with that edge and no
//!   later edge would announce it again (tokio keeps its closed bits for
//!   the same reason).
//! - Wakers are kept per direction; an event wakes every waker of its
//!   direction and forgets them (the woken tasks re-register if they still
//!   wait). A task is stored at most once per direction (`will_wake`).
//! - Both bits start set: the first attempt tells the truth at the cost of
//!   one syscall, so nothing depends on the initial edge from `EPOLL_CTL_ADD`.
//! - Every attempt spends one unit of the task's co-operative budget
//!   (`coop`): a task whose operations keep succeeding still yields.
//! - Loop-thread only: the type holds an `Rc` (so it is `!Send`), and it is
//!   created through the current reactor of the calling thread.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use mio::Interest;
use mio::unix::SourceFd;

use crate::reactor::{self, Handle, IoHandler, Ready, Registration};

/// Whether mio's backend here is epoll or kqueue, where a short transfer
/// on a stream proves it drained (not so for level-triggered `poll(2)`).
const SHORT_TRANSFER_DRAINS: bool = cfg!(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
));

#[derive(Default)]
pub(crate) struct Direction {
    ready: Cell<bool>,
    /// The peer closed this direction (or the socket has an error): final,
    /// the bit is never cleared again (EOF or the error is still to read,
    /// and no new edge would announce it).
    closed: Cell<bool>,
    tick: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Direction {
    fn new_ready() -> Direction {
        let d = Direction::default();
        d.ready.set(true);
        d
    }

    /// An event (or a retry timer) says the operation may succeed now.
    pub(crate) fn set_ready(&self) {
        self.tick.set(self.tick.get().wrapping_add(1));
        self.ready.set(true);
        // Taken out before waking, so a waker that registers again (or
        // wakes a task that does) never meets a held borrow; the emptied
        // list goes back afterwards so the next registration does not
        // allocate (kv15: ~190 loop instructions per HTTP request).
        let mut wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers.drain(..) {
            w.wake();
        }
        let mut slot = self.wakers.borrow_mut();
        if slot.capacity() == 0 {
            *slot = wakers;
        }
    }

    /// Marks the direction closed for good, then as ready.
    fn set_closed(&self) {
        self.closed.set(true);
        self.set_ready();
    }

    /// Clears the bit unless an event arrived since `tick` was read, or the
    /// direction is closed.
    pub(crate) fn clear(&self, tick: u64) {
        if self.tick.get() == tick && !self.closed.get() {
            self.ready.set(false);
        }
    }

    pub(crate) fn tick(&self) -> u64 {
        self.tick.get()
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.get()
    }

    pub(crate) fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }
}

/// The per-source state the registry's handler updates.
pub(crate) struct SourceState {
    pub(crate) read: Direction,
    pub(crate) write: Direction,
}

impl IoHandler for SourceState {
    fn ready(&self, ready: Ready) {
        if ready.read_closed || ready.error {
            self.read.set_closed();
        } else if ready.readable {
            self.read.set_ready();
        }
        if ready.write_closed || ready.error {
            self.write.set_closed();
        } else if ready.writable {
            self.write.set_ready();
        }
    }
}

/// An I/O object registered with the current reactor, for async code.
///
/// `T` is any non-blocking file descriptor owner: mio's sockets and pipes,
/// or std types switched to non-blocking mode. The wrapper keeps the cached
/// readiness (see the module notes) and offers
/// [`read_with`](Async::read_with)/[`write_with`](Async::write_with), which
/// try an operation and wait only after it returned `WouldBlock`.
///
/// The object is deregistered when the `Async` is dropped (or
/// [`into_inner`](Async::into_inner) is called).
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use weft::net::Async;
///
/// let reactor = weft::Reactor::new().unwrap();
/// let (mut tx, rx) = mio::unix::pipe::new().unwrap();
/// let rx = Async::new(rx).unwrap();
/// tx.write_all(b"hi").unwrap();
/// let got = reactor.run_until_complete(async move {
///     let mut buf = [0u8; 8];
///     let n = rx.read_with(|mut r| r.read(&mut buf)).await.unwrap();
///     buf[..n].to_vec()
/// });
/// assert_eq!(got.unwrap(), b"hi");
/// ```
///
/// It cannot leave the loop thread:
///
/// ```compile_fail
/// let reactor = weft::Reactor::new().unwrap();
/// let (_tx, rx) = mio::unix::pipe::new().unwrap();
/// let rx = weft::net::Async::new(rx).unwrap();
/// std::thread::spawn(move || drop(rx)); // error: `Rc` cannot be sent
/// ```
pub struct Async<T: AsFd> {
    io: Option<T>,
    state: Rc<SourceState>,
    registration: Option<Registration>,
}

impl<T: AsFd + fmt::Debug> fmt::Debug for Async<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Async").field("io", &self.io).finish()
    }
}

pub(crate) fn not_on_loop() -> io::Error {
    io::Error::other("weft::net: not on a reactor's loop thread")
}

fn reactor_gone() -> io::Error {
    io::Error::other("weft::net: the reactor was dropped")
}

impl<T: AsFd> Async<T> {
    /// Registers `io` with the reactor running on this thread.
    ///
    /// `io` must already be in non-blocking mode (mio's types always are).
    ///
    /// # Errors
    ///
    /// Fails when called off a loop thread, or when registration fails.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (_tx, rx) = mio::unix::pipe::new().unwrap();
    /// assert!(weft::net::Async::new(rx).is_ok());
    /// assert!(std::thread::spawn(|| {
    ///     let (_tx, rx) = mio::unix::pipe::new().unwrap();
    ///     weft::net::Async::new(rx).is_err()
    /// }).join().unwrap());
    /// ```
    pub fn new(io: T) -> io::Result<Async<T>> {
        let handle = reactor::current().ok_or_else(not_on_loop)?;
        Async::with_handle(&handle, io)
    }

    pub(crate) fn with_handle(handle: &Handle, io: T) -> io::Result<Async<T>> {
        let state = Rc::new(SourceState {
            read: Direction::new_ready(),
            write: Direction::new_ready(),
        });
        let fd = io.as_fd().as_raw_fd();
        let registration = handle.register_io(
            &mut SourceFd(&fd),
            Interest::READABLE | Interest::WRITABLE,
            state.clone(),
        )?;
        Ok(Async {
            io: Some(io),
            state,
            registration: Some(registration),
        })
    }

    /// The wrapped object.
    ///
    /// Doing I/O on it directly bypasses the readiness cache; prefer
    /// [`read_with`](Async::read_with)/[`write_with`](Async::write_with).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (_tx, rx) = mio::unix::pipe::new().unwrap();
    /// let rx = weft::net::Async::new(rx).unwrap();
    /// let _inner: &mio::unix::pipe::Receiver = rx.get_ref();
    /// ```
    pub fn get_ref(&self) -> &T {
        self.io.as_ref().expect("present until dropped")
    }

    /// Deregisters and returns the wrapped object.
    ///
    /// # Errors
    ///
    /// Fails if the deregistration fails.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (_tx, rx) = mio::unix::pipe::new().unwrap();
    /// let rx = weft::net::Async::new(rx).unwrap();
    /// let _rx: mio::unix::pipe::Receiver = rx.into_inner().unwrap();
    /// ```
    pub fn into_inner(mut self) -> io::Result<T> {
        let io = self.io.take().expect("present until dropped");
        if let Some(reg) = self.registration.take() {
            reg.deregister(&mut SourceFd(&io.as_fd().as_raw_fd()))?;
        }
        Ok(io)
    }

    /// Waits until the descriptor may be readable.
    ///
    /// Resolves at once while the cached bit is set; it is cleared only when
    /// an operation run through [`read_with`](Async::read_with) (or the
    /// stream traits) returns `WouldBlock`. A loop of `readable().await`
    /// plus direct I/O on [`get_ref`](Async::get_ref) therefore spins: use
    /// `read_with`.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future loses nothing (at most one spurious
    /// wake of the task later).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (_tx, rx) = mio::unix::pipe::new().unwrap();
    /// let rx = weft::net::Async::new(rx).unwrap();
    /// reactor.run_until_complete(async move { rx.readable().await.unwrap() }).unwrap();
    /// ```
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_readable(cx)).await
    }

    /// Waits until the descriptor may be writable. See
    /// [`readable`](Async::readable).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (tx, _rx) = mio::unix::pipe::new().unwrap();
    /// let tx = weft::net::Async::new(tx).unwrap();
    /// reactor.run_until_complete(async move { tx.writable().await.unwrap() }).unwrap();
    /// ```
    pub async fn writable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_writable(cx)).await
    }

    /// Polls for read readiness; registers `cx`'s waker when not ready.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::task::{Context, Poll, Waker};
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (_tx, rx) = mio::unix::pipe::new().unwrap();
    /// let rx = weft::net::Async::new(rx).unwrap();
    /// let mut cx = Context::from_waker(Waker::noop());
    /// assert!(matches!(rx.poll_readable(&mut cx), Poll::Ready(Ok(()))));
    /// ```
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_ready(&self.state.read, cx)
    }

    /// Polls for write readiness; registers `cx`'s waker when not ready.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::task::{Context, Poll, Waker};
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (tx, _rx) = mio::unix::pipe::new().unwrap();
    /// let tx = weft::net::Async::new(tx).unwrap();
    /// let mut cx = Context::from_waker(Waker::noop());
    /// assert!(matches!(tx.poll_writable(&mut cx), Poll::Ready(Ok(()))));
    /// ```
    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_ready(&self.state.write, cx)
    }

    fn poll_ready(&self, dir: &Direction, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if dir.is_ready() {
            return Poll::Ready(Ok(()));
        }
        if self
            .registration
            .as_ref()
            .and_then(|r| r.handle())
            .is_none()
        {
            // Nobody would ever wake us.
            return Poll::Ready(Err(reactor_gone()));
        }
        dir.register(cx.waker());
        Poll::Pending
    }

    /// Runs `op` until it returns something other than `WouldBlock`,
    /// waiting for readiness in `dir` in between.
    pub(crate) fn poll_io<R>(
        &self,
        dir: &Direction,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            if let Err(e) = std::task::ready!(self.poll_ready(dir, cx)) {
                return Poll::Ready(Err(e));
            }
            if !super::coop::spend(cx) {
                return Poll::Pending;
            }
            let tick = dir.tick();
            match op(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dir.clear(tick),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return Poll::Ready(r),
            }
        }
    }

    /// Like `poll_io` for byte streams on epoll (edge-triggered): a transfer
    /// shorter than `len` proves the socket was drained (or its buffer
    /// filled) at that moment, so readiness is cleared without spending a
    /// syscall on the `WouldBlock` that would follow. Any later data makes
    /// a new edge, which moves the tick, so the clear cannot lose it. Not
    /// for datagrams: a short datagram says nothing about the queue.
    pub(crate) fn poll_stream_io(
        &self,
        dir: &Direction,
        cx: &mut Context<'_>,
        len: usize,
        mut op: impl FnMut(&T) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let mut tick = 0;
        let r = self.poll_io(dir, cx, |io| {
            tick = dir.tick();
            op(io)
        });
        if let Poll::Ready(Ok(n)) = r {
            if SHORT_TRANSFER_DRAINS && n > 0 && n < len {
                dir.clear(tick);
            }
        }
        r
    }

    /// One attempt of a stream write-side (or read-side) operation with no
    /// task and no waker: `WouldBlock` at once if the direction is not known
    /// ready, else `op`'s result. Readiness is cleared by the same rules as
    /// `poll_stream_io` (tick read first), so a later poll waits for the
    /// next edge exactly as if that poll had made the attempt.
    pub(crate) fn try_stream_io(
        &self,
        dir: &Direction,
        len: usize,
        mut op: impl FnMut(&T) -> io::Result<usize>,
    ) -> io::Result<usize> {
        loop {
            if !dir.is_ready() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let tick = dir.tick();
            match op(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    dir.clear(tick);
                    return Err(e);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(n) => {
                    if SHORT_TRANSFER_DRAINS && n > 0 && n < len {
                        dir.clear(tick);
                    }
                    return Ok(n);
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn read_direction(&self) -> &Direction {
        &self.state.read
    }

    pub(crate) fn write_direction(&self) -> &Direction {
        &self.state.write
    }

    /// Polls a read-side operation: see [`read_with`](Async::read_with).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Read;
    /// use std::task::{Context, Poll, Waker};
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (_tx, rx) = mio::unix::pipe::new().unwrap();
    /// let rx = weft::net::Async::new(rx).unwrap();
    /// let mut cx = Context::from_waker(Waker::noop());
    /// let mut buf = [0u8; 4];
    /// assert!(rx.poll_read_with(&mut cx, |mut r| r.read(&mut buf)).is_pending());
    /// ```
    pub fn poll_read_with<R>(
        &self,
        cx: &mut Context<'_>,
        op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        self.poll_io(&self.state.read, cx, op)
    }

    /// Polls a write-side operation: see [`write_with`](Async::write_with).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use std::task::{Context, Poll, Waker};
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (tx, _rx) = mio::unix::pipe::new().unwrap();
    /// let tx = weft::net::Async::new(tx).unwrap();
    /// let mut cx = Context::from_waker(Waker::noop());
    /// assert!(matches!(tx.poll_write_with(&mut cx, |mut w| w.write(b"x")), Poll::Ready(Ok(1))));
    /// ```
    pub fn poll_write_with<R>(
        &self,
        cx: &mut Context<'_>,
        op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        self.poll_io(&self.state.write, cx, op)
    }

    /// Runs the read-side operation `op` until it does not return
    /// `WouldBlock`, waiting for read readiness after each `WouldBlock`.
    ///
    /// `op` must return `WouldBlock` only from a real I/O attempt: that is
    /// what clears the cached readiness.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe if `op` is: the future only ever runs `op` inside a poll
    /// and keeps nothing between polls.
    ///
    /// # Examples
    ///
    /// See [`Async`].
    ///
    /// ```
    /// use std::io::Read;
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (tx, rx) = mio::unix::pipe::new().unwrap();
    /// let rx = weft::net::Async::new(rx).unwrap();
    /// drop(tx);
    /// let n = reactor.run_until_complete(async move {
    ///     rx.read_with(|mut r| r.read(&mut [0u8; 4])).await.unwrap()
    /// });
    /// assert_eq!(n.unwrap(), 0); // EOF
    /// ```
    pub async fn read_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        poll_fn(|cx| self.poll_read_with(cx, &mut op)).await
    }

    /// Runs the write-side operation `op` until it does not return
    /// `WouldBlock`, waiting for write readiness after each `WouldBlock`.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe if `op` is.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// let reactor = weft::Reactor::new().unwrap();
    /// let (tx, _rx) = mio::unix::pipe::new().unwrap();
    /// let tx = weft::net::Async::new(tx).unwrap();
    /// let n = reactor.run_until_complete(async move {
    ///     tx.write_with(|mut w| w.write(b"hello")).await.unwrap()
    /// });
    /// assert_eq!(n.unwrap(), 5);
    /// ```
    pub async fn write_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        poll_fn(|cx| self.poll_write_with(cx, &mut op)).await
    }

    /// The shared readiness state (for retry timers that must re-arm it).
    pub(crate) fn state(&self) -> &Rc<SourceState> {
        &self.state
    }

    pub(crate) fn handle(&self) -> Option<Handle> {
        self.registration.as_ref().and_then(|r| r.handle())
    }
}

impl<T: AsFd> Drop for Async<T> {
    fn drop(&mut self) {
        if let (Some(reg), Some(io)) = (self.registration.take(), self.io.as_ref()) {
            // A failure leaves the fd in epoll until it is closed just
            // below, which removes it; the slot is freed either way.
            let _ = reg.deregister(&mut SourceFd(&io.as_fd().as_raw_fd()));
        }
    }
}
