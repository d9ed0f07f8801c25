//! `defer_to_worker` on a `ThreadPool` allocates only the shared job record
//! (as `defer_to_thread_pool` does), not a boxed task around it; other
//! workers still get the box. Allocations are counted per thread by this
//! binary's global allocator, on pools that are never started, so only the
//! submitting thread allocates.

use std::sync::Arc;

use weft::threads::{Worker, memory_worker};
use weft::{Reactor, ThreadPool};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::fewest;

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
