//! `defer_to_worker` on a `ThreadPool` allocates only the shared job record
//! (as `defer_to_thread_pool` does), not a boxed task around it; other
//! workers still get the box. Allocations are counted per thread by this
//! binary's global allocator, on pools that are never started, so only the
//! submitting thread allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use weft::threads::{Worker, memory_worker};
use weft::{Deferred, Reactor, ThreadPool};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised
// thread-local `Cell` with no destructor, so it never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: as the caller promised for `layout`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// The fewest allocations one `submit` made over a run of calls (a call
/// that grows a queue or a table allocates once more; the fewest does not).
fn fewest(mut submit: impl FnMut() -> Deferred<u32>) -> u64 {
    let mut kept = Vec::with_capacity(64);
    let mut fewest = u64::MAX;
    for _ in 0..64 {
        let before = allocations();
        let d = submit();
        fewest = fewest.min(allocations() - before);
        kept.push(d);
    }
    fewest
}

#[test]
fn defer_to_worker_on_a_pool_allocates_no_box_around_the_record() {
    let reactor = Reactor::new().unwrap();
    let pool = ThreadPool::new(0, 1).unwrap(); // never started: jobs wait
    let shared = Arc::new(ThreadPool::new(0, 1).unwrap());
    let (memory, _perform) = memory_worker();

    let record = fewest(|| reactor.defer_to_thread_pool(&pool, || 1));
    let on_pool = fewest(|| reactor.defer_to_worker(&pool, || 1));
    let on_arc = fewest(|| reactor.defer_to_worker(&shared, || 1));
    let as_dyn = fewest(|| reactor.defer_to_worker(&pool as &dyn Worker, || 1));
    let boxed_pool: Box<dyn Worker> = Box::new(ThreadPool::new(0, 1).unwrap());
    let in_box = fewest(|| reactor.defer_to_worker(&boxed_pool, || 1));
    let boxed = fewest(|| reactor.defer_to_worker(&memory, || 1));

    assert_eq!(record, 1, "the record is also the Deferred's state");
    assert_eq!(on_pool, record, "a pool queues the record itself");
    assert_eq!(on_arc, record, "an Arc<ThreadPool> forwards to the pool");
    assert_eq!(as_dyn, record, "so does a &dyn Worker");
    assert_eq!(in_box, record, "and a Box<dyn Worker>");
    // The memory worker's queue grows too, but the fewest also has the box.
    assert!(
        boxed > record,
        "other workers box the record ({boxed} vs {record})"
    );
    drop(reactor);
}
