//! A counting global allocator for the allocation tests: allocations are
//! counted per thread, so a test sees only its own thread's. Include it
//! with `#[path = "support/counting_alloc.rs"] mod counting_alloc;` in a
//! test binary of its own (it installs the binary's global allocator).

#![allow(dead_code)] // each binary uses what it needs

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use weft::Deferred;

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

pub(crate) fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// The fewest allocations one `submit` made over a run of calls (a call
/// that grows a queue or a table allocates once more; the fewest does not).
pub(crate) fn fewest(mut submit: impl FnMut() -> Deferred<u32>) -> u64 {
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
