//! A `defer_to_thread` job costs one allocation: its shared record, which
//! is also the pool's queue item, the completion message and the
//! `Deferred`'s state (issue 8: "one allocation per job plus the user's
//! closure"). Allocations are counted per thread by this binary's global
//! allocator, so only the loop thread's are seen.

use weft::{Reactor, ThreadPool};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{allocations, fewest};

#[test]
fn submitting_a_thread_job_allocates_only_its_record() {
    let reactor = Reactor::new().unwrap(); // never run: the jobs wait
    let pool = ThreadPool::new(0, 1).unwrap(); // never started
    let captured = [7u32; 4]; // a capture lives in the record, not a box
    assert_eq!(fewest(|| reactor.defer_to_thread(move || captured[0])), 1);
    assert_eq!(fewest(|| reactor.defer_to_thread_pool(&pool, || 1)), 1);
    assert_eq!(fewest(|| reactor.defer_to_worker(&pool, || 1)), 1);
    drop(reactor);
}

#[test]
fn a_thousand_awaited_jobs_allocate_about_one_each_on_the_loop() {
    const JOBS: u64 = 1000;
    let reactor = Reactor::new().unwrap();
    let h = reactor.handle();
    // Warm up: the pool's threads, queues and the inbox reach their size.
    let total = reactor
        .run_until_complete(async move {
            let mut total = 0;
            for round in 0..3 {
                let before = allocations();
                let wave: Vec<_> = (0..JOBS as u32)
                    .map(|i| h.defer_to_thread(move || i))
                    .collect();
                for (i, d) in wave.into_iter().enumerate() {
                    assert_eq!(d.await, Ok(i as u32));
                }
                if round == 2 {
                    total = allocations() - before;
                }
            }
            total
        })
        .unwrap();
    // One record per job, plus the wave's `Vec` and whatever queue grew.
    assert!(
        total <= JOBS + JOBS / 10,
        "{total} allocations on the loop for {JOBS} jobs"
    );
}
