//! A small `FnOnce() + Send` kept in the pool's queue slot: no allocation.
//!
//! `call_in_thread` boxed every closure: a `malloc` on the submitter's
//! thread and a `free` on a pool thread. With glibc that cross-thread pair
//! was about 230 of the ~485 instructions a burst job cost (callgrind, 100k
//! jobs capturing an index and an `Arc`), and the box is one more cache
//! line that moves from the submitter's core to the worker's. An
//! [`InlineTask`] keeps a closure of up to [`INLINE_WORDS`] words (pointer
//! aligned) in the slot itself, next to a pointer to two functions made
//! for its type. A closure that does not fit is handed back, and the pool
//! boxes it as before.
//!
//! (`reactor/inline_call.rs` is the same idea for the loop's inbox; the
//! pool may not import from the reactor layer, hence this leaf.)
//!
//! Invariants, relied on by every `// SAFETY:` comment below:
//! - `storage` holds a live value of the type `F` that `ops` was made for,
//!   from construction until `run` or `drop` consumes it, and `F` fits
//!   `storage` in size and alignment ([`fits`] is checked before writing).
//! - Exactly one of `run` (which moves the value out, then calls it) or
//!   `Drop` (which drops it in place) touches the value, exactly once: `run`
//!   wraps `self` in `ManuallyDrop` first, so a panic in the closure unwinds
//!   through the closure's own captures only.
//! - Only `F: FnOnce() + Send + 'static` is ever stored, so the value may
//!   move to a pool thread and outlive any borrow. `InlineTask` gives no
//!   access to the value through `&self`, so sharing a reference between
//!   threads is harmless even when `F` is not `Sync`.
//! - Moving an `InlineTask` moves `storage` bitwise, which is a valid move
//!   of the `F` inside it (nothing here pins).

#![allow(unsafe_code)]

use std::mem::{ManuallyDrop, MaybeUninit, align_of, size_of};

/// Closures up to this many words (and pointer alignment) are kept in place:
/// an index and an `Arc`, a channel sender and a value, ...
pub(crate) const INLINE_WORDS: usize = 3;

type Storage = MaybeUninit<[usize; INLINE_WORDS]>;

/// The two operations on an erased `F`, made for one `F`.
struct Ops {
    /// Moves the value out of the storage and calls it.
    run: unsafe fn(*mut Storage),
    /// Drops the value in place.
    drop: unsafe fn(*mut Storage),
}

struct OpsFor<F>(F);

impl<F: FnOnce()> OpsFor<F> {
    const OPS: &'static Ops = &Ops {
        run: run_erased::<F>,
        drop: drop_erased::<F>,
    };
}

/// Whether an `F` is kept in place.
pub(crate) const fn fits<F>() -> bool {
    size_of::<F>() <= size_of::<Storage>() && align_of::<F>() <= align_of::<Storage>()
}

/// A type-erased small `FnOnce() + Send + 'static`.
pub(super) struct InlineTask {
    storage: Storage,
    ops: &'static Ops,
}

impl InlineTask {
    /// Keeps `f` in place, or hands it back when it does not [`fits`].
    #[inline]
    pub(super) fn new<F: FnOnce() + Send + 'static>(f: F) -> Result<InlineTask, F> {
        if !fits::<F>() {
            return Err(f);
        }
        let mut storage = Storage::uninit();
        // SAFETY: the storage is ours, uninitialised, and large and aligned
        // enough for `F` (just checked); writing does not drop the old
        // (uninitialised) contents.
        unsafe { storage.as_mut_ptr().cast::<F>().write(f) };
        Ok(InlineTask {
            storage,
            ops: OpsFor::<F>::OPS,
        })
    }

    /// Calls the closure (consuming it).
    #[inline]
    pub(super) fn run(self) {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `storage` holds the live `F` that `ops` was made for
        // (module invariant); `ManuallyDrop` keeps `Drop` from touching it
        // after `run` has moved it out, even if the closure panics.
        unsafe { (this.ops.run)(&mut this.storage) }
    }
}

impl Drop for InlineTask {
    fn drop(&mut self) {
        // SAFETY: the value was never run (`run` forgets `self`), so
        // `storage` still holds the live `F` that `ops` was made for.
        unsafe { (self.ops.drop)(&mut self.storage) }
    }
}

/// # Safety
///
/// `p` must point to a live `F`, which is moved out (the caller must treat
/// the storage as uninitialised afterwards).
unsafe fn run_erased<F: FnOnce()>(p: *mut Storage) {
    // SAFETY: the caller's contract: a live, aligned `F` that is read once.
    let f = unsafe { p.cast::<F>().read() };
    f();
}

/// # Safety
///
/// `p` must point to a live `F`, which is dropped (the caller must treat the
/// storage as uninitialised afterwards).
unsafe fn drop_erased<F>(p: *mut Storage) {
    // SAFETY: the caller's contract: a live, aligned `F` dropped once.
    unsafe { p.cast::<F>().drop_in_place() }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts drops of its captures.
    struct Probe(Arc<AtomicUsize>);

    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn probe() -> (Probe, Arc<AtomicUsize>) {
        let drops = Arc::new(AtomicUsize::new(0));
        (Probe(drops.clone()), drops)
    }

    #[test]
    fn a_small_closure_runs_once_and_its_captures_drop_once() {
        let (p, drops) = probe();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let index = 7usize;
        let task = InlineTask::new(move || {
            let _p = &p;
            r.fetch_add(index, Ordering::SeqCst);
        })
        .unwrap_or_else(|_| panic!("an index, an Arc and a probe fit"));
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        task.run();
        assert_eq!(ran.load(Ordering::SeqCst), 7);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_task_dropped_unrun_drops_its_captures_once() {
        let (p, drops) = probe();
        let task = InlineTask::new(move || drop(p)).unwrap_or_else(|_| panic!("fits"));
        let moved = task; // a bitwise move keeps the value live
        drop(moved);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_panicking_task_drops_its_captures_once_and_unwinds_to_the_caller() {
        let (p, drops) = probe();
        let task = InlineTask::new(move || {
            let _p = p;
            panic!("boom");
        })
        .unwrap_or_else(|_| panic!("fits"));
        assert!(catch_unwind(AssertUnwindSafe(|| task.run())).is_err());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn closures_too_big_or_over_aligned_are_handed_back_unrun() {
        #[repr(align(32))]
        struct Aligned(u8);
        let (p, drops) = probe();
        let big = [0u64; INLINE_WORDS + 1];
        let back = InlineTask::new(move || {
            let _ = (&p, big);
        });
        let f = back.err().expect("four words do not fit in three");
        assert_eq!(drops.load(Ordering::SeqCst), 0, "handed back intact");
        f();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        // Takes the whole value (a closure naming only `a.0` would capture
        // just the byte).
        fn check(a: Aligned) {
            assert_eq!(a.0, 1);
        }
        let a = Aligned(1);
        assert!(InlineTask::new(move || check(a)).is_err());
        assert!(fits::<fn()>() && fits::<[usize; INLINE_WORDS]>());
    }

    #[test]
    fn a_closure_capturing_nothing_runs() {
        let task = InlineTask::new(|| ()).unwrap_or_else(|_| panic!("fits"));
        task.run();
    }
}
