//! hyper's runtime traits on weft's loop: [`HyperIo`] (I/O) and [`WeftTimer`]
//! (timer). hyper's HTTP/1 connection futures need no executor: the server
//! spawns each one with `spawn_local` (spec net.md §4 item 8).
//!
//! Invariants:
//! - [`HyperIo`] is used only on the loop thread that accepted the stream
//!   (weft's `TcpStream` is `!Send`), so its stall timer is a plain local
//!   `DelayedCall`.
//! - hyper wants `Sleep: Send + Sync` (net.md §4 item 7). `WeftSleep` keeps
//!   only an `Arc` of atomics and a waker slot; the `DelayedCall` that fires it
//!   lives in a loop-thread-local slab, keyed by (slot, generation), so a drop
//!   on the loop thread cancels it and a stale key never cancels someone else's.
//! - A `WeftSleep` arms its timer lazily, on first poll: hyper creates a header
//!   timeout for every request but polls it only while a head is incomplete,
//!   so requests that arrive whole never touch the timer heap.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use futures_io::{AsyncRead, AsyncWrite};
use weft::DelayedCall;
use weft::net::TcpStream;
use weft::reactor::Handle;

thread_local! {
    /// One read scratch buffer per loop thread: reads are synchronous, so all
    /// connections share it instead of holding 16 KiB each while idle.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
    /// Armed hyper sleeps of this thread: slot -> (generation, call).
    static SLEEPS: RefCell<slab_lite::Slab> = RefCell::new(slab_lite::Slab::default());
}

/// A tiny generation-checked slab (the `slab` crate has no generations).
mod slab_lite {
    use weft::DelayedCall;

    #[derive(Default)]
    pub(super) struct Slab {
        entries: Vec<(u64, Option<DelayedCall>)>,
        free: Vec<usize>,
        next_gen: u64,
    }

    impl Slab {
        /// Reserves a slot; returns (slot, generation).
        pub(super) fn reserve(&mut self) -> (usize, u64) {
            self.next_gen += 1;
            let generation = self.next_gen;
            match self.free.pop() {
                Some(i) => {
                    self.entries[i] = (generation, None);
                    (i, generation)
                }
                None => {
                    self.entries.push((generation, None));
                    (self.entries.len() - 1, generation)
                }
            }
        }

        pub(super) fn fill(&mut self, slot: usize, generation: u64, call: DelayedCall) {
            if let Some(e) = self.entries.get_mut(slot)
                && e.0 == generation
            {
                e.1 = Some(call);
            }
        }

        /// Frees the slot if it still belongs to `generation`.
        pub(super) fn take(&mut self, slot: usize, generation: u64) -> Option<DelayedCall> {
            let e = self.entries.get_mut(slot)?;
            if e.0 != generation {
                return None;
            }
            e.0 = 0;
            self.free.push(slot);
            e.1.take()
        }
    }
}

/// A weft [`TcpStream`] as hyper I/O, with a write-stall deadline.
///
/// hyper has no write timeout of its own (net.md §4): a peer that never reads
/// its responses would pin the connection forever. When a write stays
/// `Pending` for `write_stall_timeout` without any progress, the next poll
/// fails with `TimedOut` and hyper closes the connection.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weft::net::{TcpListener, TcpStream};
/// use weft_kv::rt::HyperIo;
///
/// let reactor = weft::Reactor::new().unwrap();
/// reactor
///     .run_until_complete(async {
///         let l = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
///         let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
///         let io = HyperIo::new(s, Duration::from_secs(30), None);
///         assert_eq!(io.stall_timeouts(), 0);
///     })
///     .unwrap();
/// ```
pub struct HyperIo {
    stream: TcpStream,
    write_stall_timeout: Duration,
    stall: Option<weft::Deferred<(), weft::Cancelled>>,
    timeouts: u64,
    on_timeout: Option<Box<dyn Fn()>>,
}

impl HyperIo {
    /// Wraps `stream`; `on_timeout` runs once per write-stall timeout (for
    /// metrics).
    ///
    /// # Examples
    ///
    /// See [`HyperIo`].
    pub fn new(
        stream: TcpStream,
        write_stall_timeout: Duration,
        on_timeout: Option<Box<dyn Fn()>>,
    ) -> HyperIo {
        HyperIo {
            stream,
            write_stall_timeout,
            stall: None,
            timeouts: 0,
            on_timeout,
        }
    }

    /// How many write-stall timeouts this connection hit (0 or 1 in practice:
    /// hyper closes the connection on the first).
    ///
    /// # Examples
    ///
    /// See [`HyperIo`].
    pub fn stall_timeouts(&self) -> u64 {
        self.timeouts
    }

    fn clear_stall(&mut self) {
        if let Some(d) = self.stall.take() {
            d.cancel();
        }
    }

    /// Called when a write returned `Pending`: arms the stall deadline (once
    /// per stall) and reports whether it has passed.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.stall.is_none() {
            let Some(handle) = weft::reactor::current() else {
                return Poll::Pending;
            };
            self.stall = Some(handle.sleep(self.write_stall_timeout));
        }
        let d = self.stall.as_mut().expect("armed above");
        match Pin::new(d).poll(cx) {
            Poll::Ready(_) => {
                self.stall = None;
                self.timeouts += 1;
                if let Some(f) = &self.on_timeout {
                    f();
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer stopped reading (write stall timeout)",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for HyperIo {
    fn drop(&mut self) {
        self.clear_stall();
    }
}

impl hyper::rt::Read for HyperIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let want = buf.remaining();
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let n = want.min(s.len());
            match Pin::new(&mut this.stream).poll_read(cx, &mut s[..n]) {
                Poll::Ready(Ok(got)) => {
                    buf.put_slice(&s[..got]);
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    }
}

impl hyper::rt::Write for HyperIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.clear_stall();
                Poll::Ready(r)
            }
            Poll::Pending => this.stalled(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.clear_stall();
                Poll::Ready(r)
            }
            Poll::Pending => this.stalled(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}

/// hyper's [`Timer`](hyper::rt::Timer) on weft's clock: `Send + Sync`, as
/// hyper requires, while the timed calls themselves stay on the loop.
///
/// With it, hyper's `header_read_timeout` works (without any timer hyper
/// silently has none: net.md §4 item 7).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hyper::rt::Timer;
///
/// let reactor = weft::Reactor::new().unwrap();
/// let t = weft_kv::rt::WeftTimer;
/// reactor
///     .run_until_complete(async move { t.sleep(Duration::from_millis(1)).await })
///     .unwrap();
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct WeftTimer;

impl hyper::rt::Timer for WeftTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(WeftSleep::until(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(WeftSleep::until(deadline))
    }
}

struct Shared {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// hyper's `Sleep`: see the module notes.
struct WeftSleep {
    deadline: Instant,
    shared: Arc<Shared>,
    /// (loop thread, slot, generation) once armed.
    armed: Option<(ThreadId, usize, u64)>,
}

impl WeftSleep {
    fn until(deadline: Instant) -> WeftSleep {
        WeftSleep {
            deadline,
            shared: Arc::new(Shared {
                fired: AtomicBool::new(false),
                waker: Mutex::new(None),
            }),
            armed: None,
        }
    }

    fn arm(&mut self) {
        let delay = self.deadline.saturating_duration_since(Instant::now());
        let shared = self.shared.clone();
        let fire = move || {
            shared.fired.store(true, Ordering::Release);
            let w = match shared.waker.lock() {
                Ok(mut g) => g.take(),
                Err(p) => p.into_inner().take(),
            };
            if let Some(w) = w {
                w.wake();
            }
        };
        match weft::reactor::current() {
            Some(handle) => {
                let (slot, generation) = SLEEPS.with(|s| s.borrow_mut().reserve());
                let call = handle_call_later(&handle, delay, move || {
                    SLEEPS.with(|s| drop(s.borrow_mut().take(slot, generation)));
                    fire();
                });
                SLEEPS.with(|s| s.borrow_mut().fill(slot, generation, call));
                self.armed = Some((std::thread::current().id(), slot, generation));
            }
            None => {
                // Polled off a loop thread (not how weft-kv uses it): a thread
                // keeps the contract rather than never firing.
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    fire();
                });
                self.armed = Some((std::thread::current().id(), usize::MAX, 0));
            }
        }
    }
}

fn handle_call_later(handle: &Handle, delay: Duration, f: impl FnOnce() + 'static) -> DelayedCall {
    handle.call_later(delay, f)
}

impl Future for WeftSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.shared.fired.load(Ordering::Acquire) || Instant::now() >= this.deadline {
            return Poll::Ready(());
        }
        match this.shared.waker.lock() {
            Ok(mut g) => *g = Some(cx.waker().clone()),
            Err(p) => *p.into_inner() = Some(cx.waker().clone()),
        }
        if this.armed.is_none() {
            this.arm();
        }
        // Fired between the check and the store: do not miss it.
        if this.shared.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for WeftSleep {}

impl Drop for WeftSleep {
    fn drop(&mut self) {
        if let Some((thread, slot, generation)) = self.armed
            && thread == std::thread::current().id()
            && slot != usize::MAX
        {
            let call = SLEEPS.try_with(|s| s.borrow_mut().take(slot, generation));
            if let Ok(Some(call)) = call {
                let _ = call.cancel();
            }
        }
    }
}
