//! The physical floors, measured in the same rounds as the subjects.
//!
//! - **Atomic spin ping-pong**: two threads bounce a counter through one cache
//!   line; a round trip is two cache-line transfers. Nothing can hand work to
//!   another thread faster, but it burns both cores, so no loop may do it.
//! - **futex ping-pong**: `thread::park` / `unpark` (a futex on Linux); a round
//!   trip is two kernel wake-ups of a sleeping thread. The floor for waking a
//!   pool worker or a thread blocked on a condvar.
//! - **eventfd + epoll ping-pong**: each side sleeps in `epoll_wait` on its own
//!   edge-triggered eventfd and is woken by a `write` to it (mio's `Waker`
//!   scheme). The floor for waking a sleeping reactor.
//! - **mutex queue**: `Mutex<VecDeque<Box<dyn FnOnce>>>` push + pop + call on
//!   one thread: the bookkeeping floor of one queued job, with no handoff.
//! - **eventfd write**: one `write(2)` nobody is waiting for: what an
//!   uncoalesced wake costs the producer.
//!
//! This is the only module with `unsafe` (the raw `libc` calls); each block
//! says why it is sound.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::{Subject, WakeCount};
use crate::model::{DEADLINE, Job, Params, Scenario, per_op};

/// The floors' column name.
pub(super) const NAME: &str = "floor";

/// The physical floors.
pub(super) struct Floors;

impl Subject for Floors {
    fn name(&self) -> &'static str {
        NAME
    }

    fn measure(&self, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
        let n = p.floor_rtts;
        Ok(match sc {
            Scenario::FloorSpin => ping_pong(n, &Spin),
            Scenario::FloorFutex => ping_pong(n, &Futex),
            Scenario::FloorEpoll => epoll_ping_pong(n),
            Scenario::FloorMutexQueue => vec![mutex_queue(n * 40)],
            Scenario::FloorEventfdWrite => vec![eventfd_write(n * 4)],
            _ => return Err("not a floor"),
        })
    }

    fn wake_syscalls(&self, _calls: usize) -> WakeCount {
        WakeCount::NotApplicable("floor")
    }
}

/// How one side of an atomic ping-pong waits for the counter to reach a value.
trait Wait: Sync {
    fn wait(&self, turn: &AtomicU64, want: u64);
    fn signal(&self, other: &thread::Thread);
}

struct Spin;

impl Wait for Spin {
    fn wait(&self, turn: &AtomicU64, want: u64) {
        let deadline = Instant::now() + DEADLINE;
        let mut spins = 0u32;
        while turn.load(Ordering::Acquire) != want {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins == 0 {
                assert!(Instant::now() < deadline, "spin ping-pong stalled");
            }
        }
    }

    fn signal(&self, _: &thread::Thread) {}
}

struct Futex;

impl Wait for Futex {
    fn wait(&self, turn: &AtomicU64, want: u64) {
        let deadline = Instant::now() + DEADLINE;
        while turn.load(Ordering::Acquire) != want {
            thread::park_timeout(Duration::from_millis(100));
            assert!(Instant::now() < deadline, "futex ping-pong stalled");
        }
    }

    fn signal(&self, other: &thread::Thread) {
        other.unpark();
    }
}

/// Round trips of a counter between this thread and a partner, in ns each.
fn ping_pong<W: Wait>(n: usize, w: &W) -> Vec<f64> {
    let turn = AtomicU64::new(0);
    let me = thread::current();
    thread::scope(|s| {
        let partner = s.spawn(|| {
            for i in 0..n as u64 {
                w.wait(&turn, 2 * i + 1);
                turn.store(2 * i + 2, Ordering::Release);
                w.signal(&me);
            }
        });
        let other = partner.thread().clone();
        let mut v = Vec::with_capacity(n);
        for i in 0..n as u64 {
            let t = Instant::now();
            turn.store(2 * i + 1, Ordering::Release);
            w.signal(&other);
            w.wait(&turn, 2 * i + 2);
            v.push(t.elapsed().as_nanos() as f64);
        }
        v
    })
}

/// An edge-triggered eventfd registered in its own epoll instance.
struct Wakeable {
    epfd: i32,
    evfd: i32,
}

impl Wakeable {
    fn new() -> Self {
        // SAFETY: plain syscalls with constant flags; results are checked.
        let (evfd, epfd) = unsafe {
            (
                libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK),
                libc::epoll_create1(libc::EPOLL_CLOEXEC),
            )
        };
        assert!(evfd >= 0 && epfd >= 0, "eventfd/epoll_create1 failed");
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 0,
        };
        // SAFETY: both fds are open and owned by us; `ev` is a valid
        // epoll_event that the kernel only reads during the call.
        let rc = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, evfd, &mut ev) };
        assert_eq!(rc, 0, "epoll_ctl failed");
        Wakeable { epfd, evfd }
    }

    /// Wakes whoever sleeps in [`Wakeable::sleep`] (one `write(2)`).
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: `evfd` is an open eventfd owned by self; the buffer is 8
        // valid bytes, as eventfd requires.
        let rc = unsafe { libc::write(self.evfd, (&one as *const u64).cast(), 8) };
        debug_assert_eq!(rc, 8);
    }

    /// Sleeps in `epoll_wait` until woken (the counter is never read: each
    /// write is a new edge, as in mio).
    fn sleep(&self) {
        let deadline = Instant::now() + DEADLINE;
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        loop {
            // SAFETY: `epfd` is open and owned by self; `ev` has room for the
            // one event we ask for.
            let n = unsafe { libc::epoll_wait(self.epfd, &mut ev, 1, 100) };
            if n > 0 {
                return;
            }
            assert!(Instant::now() < deadline, "epoll ping-pong stalled");
        }
    }
}

impl Drop for Wakeable {
    fn drop(&mut self) {
        // SAFETY: we own both fds and close each exactly once.
        unsafe {
            libc::close(self.evfd);
            libc::close(self.epfd);
        }
    }
}

/// Round trips through two eventfd + epoll pairs, in ns each.
fn epoll_ping_pong(n: usize) -> Vec<f64> {
    let mine = Arc::new(Wakeable::new());
    let theirs = Arc::new(Wakeable::new());
    let (m2, t2) = (mine.clone(), theirs.clone());
    let partner = thread::spawn(move || {
        for _ in 0..n {
            t2.sleep();
            m2.wake();
        }
    });
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        theirs.wake();
        mine.sleep();
        v.push(t.elapsed().as_nanos() as f64);
    }
    partner.join().expect("epoll partner panicked");
    v
}

fn noop() {}

/// Uncontended push + pop + call through a mutex-protected queue, ns per job.
fn mutex_queue(n: usize) -> f64 {
    let q: Mutex<VecDeque<Job>> = Mutex::new(VecDeque::with_capacity(64));
    let t = Instant::now();
    for _ in 0..n {
        q.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Box::new(noop));
        let job = q.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        if let Some(job) = job {
            job();
        }
    }
    per_op(t, Instant::now(), n)
}

/// One eventfd write with nobody waiting, ns each.
fn eventfd_write(n: usize) -> f64 {
    let w = Wakeable::new();
    let t = Instant::now();
    for _ in 0..n {
        w.wake();
    }
    per_op(t, Instant::now(), n)
}
