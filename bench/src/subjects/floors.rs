//! The physical floors, measured in the same rounds as the subjects, pinned
//! like the rows they are compared with (the ping-pongs and the idle wake
//! like the latency rows; the spin ping-pong always on two cores, since two
//! spinners on one core only trade time slices).
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
//! - **idle wake**: one `write(2)` to the eventfd of a thread that has idled
//!   in `epoll_wait` for the wake-latency row's gap (250 µs), one way, stamped
//!   and paced exactly like that row. An idle wake costs about twice a hot one
//!   (half a hot round trip), so the wake row is compared with this.
//! - **handoff**: the same jobs as the bursts (boxed, an index and an `Arc`
//!   captured) pushed through a `Mutex<VecDeque>` by one or two producers to
//!   a consumer spinning on another core that swaps the queue out whole: the
//!   floor of a cross-core job handoff with no sleeping and no syscall.
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

use super::Subject;
use crate::model::{
    Ctx, DEADLINE, Job, Params, Producers, Scenario, arm_loop, loop_end, mark_end, mark_start,
    per_op, pin_other, tick_job,
};

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
            Scenario::FloorIdleWake => idle_wake(p),
            Scenario::FloorHandoff1 => vec![handoff(1, p.handoff_jobs)],
            Scenario::FloorHandoff2 => vec![handoff(2, p.handoff_jobs)],
            Scenario::FloorEventfdWrite => vec![eventfd_write(sc.ops(p))],
            _ => return Err("not a floor"),
        })
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
            pin_other();
            for i in 0..n as u64 {
                w.wait(&turn, 2 * i + 1);
                turn.store(2 * i + 2, Ordering::Release);
                w.signal(&me);
            }
        });
        let other = partner.thread().clone();
        let mut v = Vec::with_capacity(n);
        mark_start();
        for i in 0..n as u64 {
            let t = Instant::now();
            turn.store(2 * i + 1, Ordering::Release);
            w.signal(&other);
            w.wait(&turn, 2 * i + 2);
            v.push(t.elapsed().as_nanos() as f64);
        }
        mark_end();
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
        pin_other();
        for _ in 0..n {
            t2.sleep();
            m2.wake();
        }
    });
    let mut v = Vec::with_capacity(n);
    mark_start();
    for _ in 0..n {
        let t = Instant::now();
        theirs.wake();
        mine.sleep();
        v.push(t.elapsed().as_nanos() as f64);
    }
    mark_end();
    partner.join().expect("epoll partner panicked");
    v
}

/// One-way wakes of this thread, asleep in `epoll_wait`, by a producer that
/// pauses for the wake row's gap before each (as that row's producer does).
fn idle_wake(p: &Params) -> Vec<f64> {
    let me = Arc::new(Wakeable::new());
    let base = Instant::now();
    let stamp = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let (m2, s2, a2) = (me.clone(), stamp.clone(), acked.clone());
    let (n, gap) = (p.wake_samples, p.wake_gap);
    let producer = thread::spawn(move || {
        pin_other();
        for i in 0..n as u64 {
            // Pace like the wake row; never send before the last wake landed.
            thread::sleep(gap);
            while a2.load(Ordering::Acquire) < i {
                thread::sleep(gap / 4);
            }
            s2.store(base.elapsed().as_nanos() as u64, Ordering::Release);
            m2.wake();
        }
    });
    let mut v = Vec::with_capacity(n);
    mark_start();
    for i in 0..n as u64 {
        me.sleep();
        let now = base.elapsed().as_nanos() as u64;
        v.push(now.saturating_sub(stamp.load(Ordering::Acquire)) as f64);
        acked.store(i + 1, Ordering::Release);
    }
    mark_end();
    producer.join().expect("idle-wake producer panicked");
    v
}

/// The burst jobs, pushed by `producers` threads through a mutex queue to
/// this thread, which spins swapping the queue out whole; ns per job.
fn handoff(producers: usize, per: usize) -> f64 {
    // The count of pushed jobs lets the consumer wait without taking the
    // lock, so it never slows a producer down except to swap a non-empty
    // queue out.
    let q: Arc<(Mutex<VecDeque<Job>>, AtomicU64)> =
        Arc::new((Mutex::new(VecDeque::new()), AtomicU64::new(0)));
    let total = producers * per;
    arm_loop(total, || ());
    let ctx = Ctx::new();
    let q2 = q.clone();
    let prods = Producers::spawn(producers, move |_| {
        for i in 0..per {
            let job: Job = Box::new(tick_job(i, ctx.clone()));
            q2.0.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(job);
            q2.1.fetch_add(1, Ordering::Release);
        }
        Vec::new()
    });
    let deadline = Instant::now() + DEADLINE;
    let mut local = VecDeque::new();
    let mut done = 0u64;
    while done < total as u64 {
        if q.1.load(Ordering::Acquire) == done {
            // Back off before looking again: polling the producers' line
            // on every spin would slow every push down with a cache miss.
            for _ in 0..256 {
                std::hint::spin_loop();
            }
            assert!(Instant::now() < deadline, "handoff floor stalled");
            continue;
        }
        std::mem::swap(
            &mut *q.0.lock().unwrap_or_else(|e| e.into_inner()),
            &mut local,
        );
        for job in local.drain(..) {
            job();
            done += 1;
        }
    }
    let (start, _) = prods.join();
    per_op(start, loop_end(), total)
}

/// One eventfd write with nobody waiting, ns each.
fn eventfd_write(n: usize) -> f64 {
    let w = Wakeable::new();
    mark_start();
    let t = Instant::now();
    for _ in 0..n {
        w.wake();
    }
    let ns = per_op(t, Instant::now(), n);
    mark_end();
    ns
}
