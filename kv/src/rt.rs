//! hyper's runtime traits on weft's loop: [`HyperIo`] (I/O) and [`WeftTimer`]
//! (timer). hyper's HTTP/1 connection futures need no executor: the server
//! spawns each one with `spawn_local` (spec net.md §4 item 8).
//!
//! Invariants:
//! - [`HyperIo`] is used only on the loop thread that accepted the stream
//!   (weft's `TcpStream` is `!Send`), so its stall timer is a plain local
//!   `DelayedCall`.
//! - hyper wants `Sleep: Send + Sync` (net.md §4 item 7). A `WeftSleep`
//!   polled on a loop holds only its deadline and a key into that loop
//!   thread's `Deadlines` (deadline, id → waker); ids come from one global
//!   counter, so a key names one sleep only, whichever thread looks it up.
//! - `Deadlines` has a weft call armed for a time no later than its
//!   earliest deadline (`armed`): when it fires it wakes every sleep due by
//!   then and re-arms for the next. A call superseded by an earlier one is
//!   left to fire (harmlessly); a call whose reactor went away clears
//!   `armed` as its closure drops, so the next reactor on the thread arms
//!   its own. hyper creates a header timeout
//!   per request, all with the same duration, so a new deadline is almost
//!   never the earliest: a request costs a registry insert and remove, not
//!   a timer arm and cancel (measured: those were about 2% of the loop's
//!   CPU under load). A dropped sleep leaves the armed call as it is; it
//!   fires once, finds nothing due and re-arms.
//! - The registry is a slab of live sleeps (deadline, id, waker) plus a
//!   queue of (deadline, slot, id) in deadline order. Same-duration sleeps
//!   arrive in deadline order, so an insert is a push at the back, after
//!   dropping stale entries there (an earlier deadline than a live one is
//!   placed by binary search); a dropped sleep only
//!   leaves its slot, and its queue entry, no longer matching a live slot
//!   and id, is skipped when reached and swept once the queue holds more
//!   than twice the live sleeps (plus a constant): every operation is O(1)
//!   amortised, where the `BTreeMap` it replaces cost about 500
//!   instructions per request.
//! - A `WeftSleep` registers lazily, on first poll: hyper creates a header
//!   timeout for every request but polls it only while a head is incomplete.
//!   On a loop, a sleep reads the clock only once it left the registry (the
//!   armed call fired for it): registering one already due arms a call due
//!   at once, and a registered sleep polled when no call is armed (the
//!   reactor that armed it went away) arms one.
//! - The handlers' body timeout uses the same sleeps (`sleep_until`),
//!   created only when a body has to be waited for: a PUT whose body came
//!   with its head costs no timer (it used to arm and cancel a weft timer,
//!   about 1,700 instructions per PUT with the rest of its future).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_io::{AsyncRead, AsyncWrite};
use weft::net::TcpStream;
use weft::reactor::Handle;

thread_local! {
    /// One read scratch buffer per loop thread: reads are synchronous, so all
    /// connections share it instead of holding 16 KiB each while idle.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
    /// The armed hyper sleeps of this loop thread.
    static DEADLINES: RefCell<Deadlines> = RefCell::new(Deadlines::default());
}

/// Ids of registered sleeps, unique across threads.
static NEXT_SLEEP: AtomicU64 = AtomicU64::new(1);

/// One loop thread's hyper sleeps; see the module notes.
#[derive(Default)]
struct Deadlines {
    /// The registered sleeps: deadline, id and waker.
    live: slab::Slab<(Instant, u64, Waker)>,
    /// (deadline, slot, id) in deadline order; entries whose slot no longer
    /// holds that id are stale (their sleep was dropped or fired).
    order: VecDeque<(Instant, usize, u64)>,
    /// The armed call: when it fires and its generation. The `DelayedCall`
    /// itself is not kept: holding it would keep its closure (and the
    /// `ArmGuard` in it) alive past its reactor.
    armed: Option<(Instant, u64)>,
    generation: u64,
}

/// Owned by the armed call's closure: if the closure is dropped unrun (its
/// reactor went away, or it was cancelled), the registry forgets the call,
/// so the next sleep arms one on whatever reactor then runs this thread.
struct ArmGuard(u64);

impl Drop for ArmGuard {
    fn drop(&mut self) {
        let _ = DEADLINES.try_with(|d| {
            // Busy: the registry is in use further up this thread's stack
            // (it arms or fires); it sets `armed` itself.
            if let Ok(mut d) = d.try_borrow_mut()
                && d.armed.as_ref().is_some_and(|a| a.1 == self.0)
            {
                d.armed = None;
            }
        });
    }
}

/// Whether the queue entry (`slot`, `id`) names a live sleep (a stale one
/// names a slot that is empty or holds another sleep).
fn is_live(live: &slab::Slab<(Instant, u64, Waker)>, slot: usize, id: u64) -> bool {
    live.get(slot).is_some_and(|e| e.1 == id)
}

impl Deadlines {
    /// Registers a sleep; its key (slot, id).
    fn insert(&mut self, deadline: Instant, id: u64, waker: Waker) -> (usize, u64) {
        let slot = self.live.insert((deadline, id, waker));
        // A dropped sleep with a later deadline (a body timeout, longer
        // than the header timeout) must not push every later insert into
        // the middle: stale entries at the back go first.
        while let Some(&(_, s, i)) = self.order.back() {
            if is_live(&self.live, s, i) {
                break;
            }
            self.order.pop_back();
        }
        match self.order.back() {
            Some(&(last, _, _)) if last > deadline => {
                let at = self.order.partition_point(|e| e.0 <= deadline);
                self.order.insert(at, (deadline, slot, id));
            }
            _ => self.order.push_back((deadline, slot, id)),
        }
        (slot, id)
    }

    /// The live sleep at `key`, if it is still there.
    fn get_mut(&mut self, (slot, id): (usize, u64)) -> Option<&mut Waker> {
        match self.live.get_mut(slot) {
            Some((_, i, w)) if *i == id => Some(w),
            _ => None,
        }
    }

    /// Unregisters the sleep at `key` (nothing if it already left).
    fn remove(&mut self, key: (usize, u64)) {
        if self.get_mut(key).is_some() {
            self.live.remove(key.0);
            // Stale entries are swept in bulk, amortised O(1) per removal.
            if self.order.len() > 2 * self.live.len() + 64 {
                let live = &self.live;
                self.order.retain(|&(_, slot, id)| is_live(live, slot, id));
            }
        }
    }

    /// The earliest live deadline (dropping stale entries in front of it).
    fn first(&mut self) -> Option<Instant> {
        while let Some(&(at, slot, id)) = self.order.front() {
            if is_live(&self.live, slot, id) {
                return Some(at);
            }
            self.order.pop_front();
        }
        None
    }

    /// How many sleeps are registered.
    fn len(&self) -> usize {
        self.live.len()
    }

    /// Arms a call for the earliest deadline unless one fires by then.
    fn ensure_armed(&mut self, handle: &Handle) {
        let Some(first) = self.first() else {
            return;
        };
        if let Some((at, _)) = &self.armed
            && *at <= first
        {
            return;
        }
        // A later call already armed stays: it fires once, finds what is
        // due (if anything) and leaves the registry as it is.
        self.generation += 1;
        let guard = ArmGuard(self.generation);
        let delay = first.saturating_duration_since(Instant::now());
        drop(handle.call_later(delay, move || fire(guard)));
        self.armed = Some((first, self.generation));
    }

    /// Removes and returns the wakers of every sleep due at `now`.
    fn take_due(&mut self, now: Instant) -> Vec<Waker> {
        let mut due = Vec::new();
        while let Some(&(at, slot, id)) = self.order.front() {
            if at > now {
                break;
            }
            self.order.pop_front();
            if is_live(&self.live, slot, id) {
                due.push(self.live.remove(slot).2);
            }
        }
        due
    }
}

/// The armed call fired: wake what is due, re-arm for the rest.
fn fire(guard: ArmGuard) {
    let handle = weft::reactor::current();
    let due = DEADLINES.with(|d| {
        let mut d = d.borrow_mut();
        if d.armed.as_ref().is_some_and(|a| a.1 == guard.0) {
            d.armed = None;
        }
        let due = d.take_due(Instant::now());
        if let Some(h) = &handle {
            d.ensure_armed(h);
        }
        due
    });
    drop(guard);
    // Outside the borrow: a waker may run code that polls a sleep.
    for w in due {
        w.wake();
    }
}

/// How many sleeps wait on this thread (tests).
#[doc(hidden)]
pub fn waiting_sleeps() -> usize {
    DEADLINES.with(|d| d.borrow().len())
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

/// A sleep until `deadline` on this loop thread's shared deadlines (the
/// module notes): hyper's header timeout's machinery, for the handlers' own
/// timeouts. It registers on its first pending poll, and dropping it
/// unregisters it: a map insert and remove, no weft timer armed and
/// cancelled per sleep.
pub(crate) fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Unpin {
    WeftSleep::until(deadline)
}

/// The state of a sleep polled off any loop thread (not how weft-kv uses
/// it): a plain thread fires it.
struct OffLoop {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// hyper's `Sleep`: see the module notes.
struct WeftSleep {
    deadline: Instant,
    /// Its key (slot, id) in this loop thread's `Deadlines`, once
    /// registered.
    key: Option<(usize, u64)>,
    off_loop: Option<Arc<OffLoop>>,
}

impl WeftSleep {
    fn until(deadline: Instant) -> WeftSleep {
        WeftSleep {
            deadline,
            key: None,
            off_loop: None,
        }
    }

    fn poll_off_loop(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let state = self.off_loop.get_or_insert_with(|| {
            let state = Arc::new(OffLoop {
                fired: AtomicBool::new(false),
                waker: Mutex::new(None),
            });
            let (s, delay) = (
                state.clone(),
                self.deadline.saturating_duration_since(Instant::now()),
            );
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                s.fired.store(true, Ordering::Release);
                let w = match s.waker.lock() {
                    Ok(mut g) => g.take(),
                    Err(p) => p.into_inner().take(),
                };
                if let Some(w) = w {
                    w.wake();
                }
            });
            state
        });
        match state.waker.lock() {
            Ok(mut g) => *g = Some(cx.waker().clone()),
            Err(p) => *p.into_inner() = Some(cx.waker().clone()),
        }
        // Fired between the check and the store: do not miss it.
        if state.fired.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Future for WeftSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // No clock read while the sleep is (or is about to be) in this
        // thread's registry: the armed call wakes it once its deadline
        // passed, and a deadline already past when it registers arms a
        // call due at once. The clock is read only when the registry does
        // not hold it (it fired, or it was registered on another thread)
        // and off a loop. hyper polls its header timeout once per
        // keep-alive request, so this is one clock read less per request.
        if let Some(key) = this.key
            && this.off_loop.is_none()
        {
            // Registered on this thread: refresh the waker if it changed,
            // and arm a call if none is (the reactor that armed the last
            // one went away).
            let found = DEADLINES.with(|d| {
                let mut d = d.borrow_mut();
                match d.get_mut(key) {
                    Some(w) => {
                        if !w.will_wake(cx.waker()) {
                            *w = cx.waker().clone();
                        }
                        if d.armed.is_none()
                            && let Some(handle) = weft::reactor::current()
                        {
                            d.ensure_armed(&handle);
                        }
                        true
                    }
                    None => false,
                }
            });
            if found {
                return Poll::Pending;
            }
        }
        // Registers on this thread's loop only if never registered and not
        // already waiting off a loop. Otherwise it fired here (then its
        // deadline passed), was registered on another thread, or there is
        // no loop: the off-loop path rather than never waking.
        let never_placed = this.key.is_none() && this.off_loop.is_none();
        let Some(handle) = never_placed.then(weft::reactor::current).flatten() else {
            if Instant::now() >= this.deadline {
                return Poll::Ready(());
            }
            return this.poll_off_loop(cx);
        };
        let id = NEXT_SLEEP.fetch_add(1, Ordering::Relaxed);
        let key = DEADLINES.with(|d| {
            let mut d = d.borrow_mut();
            let key = d.insert(this.deadline, id, cx.waker().clone());
            d.ensure_armed(&handle);
            key
        });
        this.key = Some(key);
        Poll::Pending
    }
}

impl hyper::rt::Sleep for WeftSleep {}

impl Drop for WeftSleep {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            // On another thread this finds nothing (ids are global); the
            // entry then leaves its registry when its deadline fires.
            let _ = DEADLINES.try_with(|d| d.borrow_mut().remove(key));
        }
    }
}

#[cfg(test)]
mod tests;
