//! A thread's free list of spent job records, so a steady stream of thread
//! jobs reuses its records instead of asking the allocator for each one.
//!
//! Why: on the loop thread, `malloc` and `free` of the record were about a
//! third of a job's instructions when 1000 jobs are in flight (a record is
//! too large for glibc's fast bins, and a wave's `Vec` of `Deferred`s makes
//! glibc consolidate its bins every wave). A reused record also keeps its
//! `Remote` and in-flight count when its next job is for the same reactor,
//! which saves four reference-count updates per job.
//!
//! Invariants:
//! - a record enters the list only when its holder owned it alone
//!   (`Arc::get_mut` succeeded: no strong or weak reference elsewhere, so no
//!   worker, queue, inbox or chain can reach it; `JobRef::poll_take` keeps
//!   the record it took the outcome from in that same check, with no way
//!   for a reference to appear in between), and after everything the
//!   user gave it (closure, outcome, waker, span) was dropped, outside any
//!   borrow of the list (those drops may run user code that recycles too);
//! - records are typed (`Job<T, E, F, C>`): the list is kept per type as
//!   a `Vec` of that very type (found by downcasting), so a record comes
//!   back out only as its own type;
//! - the list holds at most [`MAX_BYTES`] of records per thread; beyond
//!   that a spent record is freed as before. A record whose last reference
//!   goes on a worker thread is freed there, as before.
//! - Every access goes through `try_with`: during thread exit the list may
//!   be gone, and the record is then simply freed.
//! - A kept record holds its last reactor's shared state (its `Remote`),
//!   so the list never outlives that reactor: it is emptied when a
//!   reactor's bridge state is dropped on this thread ([`clear`]), and a
//!   record whose reactor has ended is not kept (`Job::recycle`).

use std::any::Any;
use std::cell::RefCell;
use std::sync::Arc;

/// How much a thread keeps in its free list, in record bytes (about 1500
/// records of a small job).
const MAX_BYTES: usize = 256 * 1024;

/// The spent records of one type `R`: `records` is a `Vec<Arc<R>>`, so a
/// record goes in and out as itself (one downcast of the list per call,
/// none per record, and no `Arc<dyn Any>` to convert).
struct Kind {
    records: Box<dyn Any>,
}

struct Free {
    bytes: usize,
    kinds: Vec<Kind>,
}

thread_local! {
    static FREE: RefCell<Free> = const {
        RefCell::new(Free {
            bytes: 0,
            kinds: Vec::new(),
        })
    };
}

impl Free {
    /// The list of records of type `R`, if this thread has one.
    fn list<R: Any + Send + Sync>(&mut self) -> Option<&mut Vec<Arc<R>>> {
        // The downcast is the type check (one per kind looked at; a loop
        // thread has few kinds, and the first is usually the one).
        self.kinds.iter_mut().find_map(|k| k.records.downcast_mut())
    }
}

/// A spent record of type `R` to reuse, if this thread kept one. The caller
/// owns it alone (it was unique when it entered the list).
#[inline]
pub(super) fn take<R: Any + Send + Sync>() -> Option<Arc<R>> {
    FREE.try_with(|free| {
        let mut free = free.try_borrow_mut().ok()?;
        let record = free.list::<R>()?.pop()?;
        free.bytes -= std::mem::size_of::<R>();
        Some(record)
    })
    .ok()
    .flatten()
}

/// Keeps a spent record of type `R` for reuse, or drops it if the list is
/// full. The caller has emptied it and owns it alone. (Not inlined:
/// measured worse, also into the take, `Job::poll_owned`.)
pub(super) fn give<R: Any + Send + Sync>(record: Arc<R>) {
    let size = std::mem::size_of::<R>();
    let kept = FREE.try_with(|free| {
        let Ok(mut free) = free.try_borrow_mut() else {
            return Some(record);
        };
        if free.bytes + size > MAX_BYTES {
            return Some(record);
        }
        free.bytes += size;
        // The usual case, kept short: the first kind is `R`'s and its list
        // has room (no growth path in the hot code).
        if let Some(list) = free
            .kinds
            .first_mut()
            .and_then(|k| k.records.downcast_mut::<Vec<Arc<R>>>())
        {
            if list.len() < list.capacity() {
                list.push(record);
                return None;
            }
        }
        free.keep_slow(record);
        None
    });
    // Full, borrowed or gone: the record is freed here, outside the borrow.
    drop(kept);
}

impl Free {
    /// `give` of a record whose list must grow, is not the first, or does
    /// not exist yet.
    #[cold]
    #[inline(never)]
    fn keep_slow<R: Any + Send + Sync>(&mut self, record: Arc<R>) {
        match self.list::<R>() {
            Some(list) => list.push(record),
            None => self.kinds.push(Kind {
                records: Box::new(vec![record]),
            }),
        }
    }
}

/// Drops every record this thread keeps (a reactor of this thread is going
/// away, and kept records hold their last reactor's shared state).
pub(super) fn clear() {
    let kinds = FREE
        .try_with(|free| {
            let mut free = free.try_borrow_mut().ok()?;
            free.bytes = 0;
            Some(std::mem::take(&mut free.kinds))
        })
        .ok()
        .flatten();
    // Freed here, outside the borrow.
    drop(kinds);
}

/// Bytes of records this thread keeps (tests).
#[cfg(all(test, not(loom)))]
fn kept_bytes() -> usize {
    FREE.with(|free| free.borrow().bytes)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use crate::{Reactor, ThreadPool};

    /// The poll that takes the outcome from a record it owns alone gives
    /// the record back right there (one uniqueness check for both), not
    /// when the spent `Deferred` is dropped later.
    #[test]
    fn a_record_is_kept_when_its_outcome_is_taken_not_when_its_deferred_drops() {
        std::thread::spawn(|| {
            let reactor = Reactor::new().unwrap();
            let h = reactor.handle();
            let pool = std::sync::Arc::new(ThreadPool::new(1, 1).unwrap());
            pool.start();
            let p = pool.clone();
            reactor
                .run_until_complete(async move {
                    let p = &*p;
                    let mut d = h.defer_to_thread_pool(p, || 7u32);
                    // Delivered after `d` by the same worker, which has let go
                    // of `d`'s record by then: `d` owns it alone.
                    assert_eq!(h.defer_to_thread_pool(p, || 0u8).await, Ok(0));
                    let before = super::kept_bytes();
                    let mut cx = Context::from_waker(Waker::noop());
                    assert_eq!(Pin::new(&mut d).poll(&mut cx), Poll::Ready(Ok(7)));
                    assert!(
                        super::kept_bytes() > before,
                        "the record was not kept at the take"
                    );
                    drop(d);
                })
                .unwrap();
            pool.stop();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn kept_records_never_keep_a_dropped_reactor_alive() {
        std::thread::spawn(|| {
            let reactor = Reactor::new().unwrap();
            let h = reactor.handle();
            let weak = h.remote().downgrade();
            // A pool of the test's own, stopped (threads joined) before the
            // check, so no worker still holds a record.
            let pool = ThreadPool::new(1, 1).unwrap();
            pool.start();
            let ran: Vec<_> = (0..8u32)
                .map(|i| h.defer_to_thread_pool(&pool, move || i))
                .collect();
            // A `Deferred` that outlives its reactor, spent afterwards.
            let late = h.defer_to_thread_pool(&pool, || 0u32);
            let sum = reactor
                .run_until_complete(async move {
                    let mut sum = 0;
                    for d in ran {
                        sum += d.await.unwrap();
                    }
                    sum
                })
                .unwrap();
            assert_eq!(sum, 28);
            drop(h);
            drop(reactor);
            pool.stop();
            drop(late);
            assert!(
                weak.upgrade().is_none(),
                "a kept record holds the dropped reactor"
            );
        })
        .join()
        .unwrap();
    }
}
