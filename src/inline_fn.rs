//! A `FnOnce() + Send` stored in place: small closures need no allocation.
//!
//! Both cross-thread queues use it: the loop's inbox (`call_from_thread`)
//! and the pool's queue (`call_in_thread`). Each used to box every closure,
//! the box allocated on the sending thread and freed on the receiving one:
//! with glibc that cross-thread malloc/free pair was about two thirds of the
//! instructions per `call_from_thread` and about 230 of the ~485 per pool
//! job (callgrind, 100k calls capturing an index and an `Arc`). An
//! [`InlineFn`] keeps a closure of up to [`INLINE_BYTES`] bytes (an index
//! and an `Arc`, a `Sender`, a boxed value...) inside the queue slot, next
//! to a pointer to a static table of two functions monomorphised for its
//! type. [`InlineFn::new`] boxes a larger or over-aligned closure first and
//! stores the box (one pointer) in place; [`Erased::try_new`] hands it
//! back instead.
//!
//! This is the crate's only `unsafe` module. Invariants, relied on by every
//! `// SAFETY:` comment below:
//! - `storage` holds a live value of the type `G` that `vtable` was made
//!   for, from construction until `call` or `drop` consumes it, and `G` fits
//!   `storage` in size and alignment (checked by [`fits`] before writing).
//! - Exactly one of `call` (which moves the value out, then runs it) or
//!   `Drop` (which drops it in place) touches the value, exactly once:
//!   `call` wraps `self` in `ManuallyDrop` first, so a panic in the closure
//!   unwinds through the closure's own captures only.
//! - Only `G: FnOnce() + Send + 'static` is ever stored, so the erased value
//!   may move to another thread and outlive any borrow. `InlineFn` gives
//!   no access to the value through `&self`, so sharing a reference between
//!   threads is harmless even when `G` is not `Sync`.
//! - Moving an `InlineFn` moves `storage` bitwise, which is a valid move of
//!   the `G` inside it (Rust values are movable unless pinned, and nothing
//!   here pins).
//!
//! [`Erased`] is the same idea for values with more than one way out: the
//! pool's queue items, which run with the pool as context, or are
//! discarded, or dropped (withdrawn). Its value is any
//! `T: Erasable<C>` that fits the same storage, and the invariants above
//! hold for it with `T` for `G`, `ops` for `vtable`, and `run` or `discard`
//! for `call`. One such slot is four words, and `Option<Erased<C>>` too
//! (the `ops` reference's niche), where an enum of the item kinds took five.

#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit, align_of, size_of};

/// Closures up to this size (and pointer alignment) are stored in place.
pub(crate) const INLINE_BYTES: usize = 3 * size_of::<usize>();

type Storage = MaybeUninit<[usize; INLINE_BYTES / size_of::<usize>()]>;

/// The two operations on an erased `G`, made for one `G`.
struct VTable {
    /// Moves the value out of the storage and runs it.
    call: unsafe fn(*mut Storage),
    /// Drops the value in place.
    drop: unsafe fn(*mut Storage),
}

struct VTableFor<G>(G);

impl<G: FnOnce()> VTableFor<G> {
    const VTABLE: &'static VTable = &VTable {
        call: call_erased::<G>,
        drop: drop_erased::<G>,
    };
}

/// Whether a `G` is stored in place (else it is boxed first).
pub(crate) const fn fits<G>() -> bool {
    size_of::<G>() <= size_of::<Storage>() && align_of::<G>() <= align_of::<Storage>()
}

/// A type-erased `FnOnce() + Send + 'static`, in place when small.
pub(crate) struct InlineFn {
    storage: Storage,
    vtable: &'static VTable,
}

impl InlineFn {
    /// Erases `g`: in place if it [`fits`], otherwise boxed (one allocation).
    #[inline]
    pub(crate) fn new<G: FnOnce() + Send + 'static>(g: G) -> InlineFn {
        if fits::<G>() {
            // SAFETY: `fits::<G>()` was just checked.
            unsafe { Self::new_in_place(g) }
        } else {
            // A `Box<G>` is one pointer: it always fits.
            // SAFETY: `Box<G>` (G: Sized) has the size and alignment of a
            // pointer, which `Storage` (three pointer-sized words) holds.
            unsafe { Self::new_in_place(Box::new(g)) }
        }
    }

    /// # Safety
    ///
    /// `fits::<G>()` must be true.
    unsafe fn new_in_place<G: FnOnce() + Send + 'static>(g: G) -> InlineFn {
        debug_assert!(fits::<G>());
        let mut storage = Storage::uninit();
        // SAFETY: the storage is ours, uninitialised, and large and aligned
        // enough for `G` (the caller's contract); writing does not drop the
        // old (uninitialised) contents.
        unsafe { storage.as_mut_ptr().cast::<G>().write(g) };
        InlineFn {
            storage,
            vtable: VTableFor::<G>::VTABLE,
        }
    }

    /// Runs the closure (consuming it).
    #[inline]
    pub(crate) fn call(self) {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `storage` holds the live `G` that `vtable` was made for
        // (module invariant); `ManuallyDrop` keeps `Drop` from touching it
        // after `call` has moved it out, even if the closure panics.
        unsafe { (this.vtable.call)(&mut this.storage) }
    }
}

impl Drop for InlineFn {
    fn drop(&mut self) {
        // SAFETY: the value was never called (`call` forgets `self`), so
        // `storage` still holds the live `G` that `vtable` was made for.
        unsafe { (self.vtable.drop)(&mut self.storage) }
    }
}

/// # Safety
///
/// `p` must point to a live `G`, which is moved out (the caller must treat
/// the storage as uninitialised afterwards).
unsafe fn call_erased<G: FnOnce()>(p: *mut Storage) {
    // SAFETY: the caller's contract: a live, aligned `G` that is read once.
    let g = unsafe { p.cast::<G>().read() };
    g();
}

/// A value with two ways to be consumed, for [`Erased`].
pub(crate) trait Erasable<C: ?Sized>: Send + 'static {
    /// Consumes the value with its context.
    fn run(self, cx: &C) -> bool;
    /// Consumes the value without running it.
    fn discard(self);
}

/// The operations on an erased `T`, made for one `T`.
struct Ops<C: ?Sized> {
    /// Moves the value out of the storage and runs it.
    run: unsafe fn(*mut Storage, &C) -> bool,
    /// Moves the value out of the storage and discards it.
    discard: unsafe fn(*mut Storage),
    /// Drops the value in place.
    drop: unsafe fn(*mut Storage),
}

struct OpsFor<T, C: ?Sized>(PhantomData<fn(T, &C)>);

impl<T: Erasable<C>, C: ?Sized + 'static> OpsFor<T, C> {
    const OPS: &'static Ops<C> = &Ops {
        run: run_erasable::<T, C>,
        discard: discard_erasable::<T, C>,
        drop: drop_erased::<T>,
    };
}

/// A type-erased [`Erasable`] value, always in place (module docs).
pub(crate) struct Erased<C: ?Sized + 'static> {
    storage: Storage,
    ops: &'static Ops<C>,
}

impl<C: ?Sized + 'static> Erased<C> {
    /// Erases `t` in place; a `T` that does not [`fit`](fits) is a
    /// compile-time error.
    #[inline]
    pub(crate) fn new<T: Erasable<C>>(t: T) -> Erased<C> {
        const { assert!(fits::<T>(), "the value does not fit in place") };
        let mut storage = Storage::uninit();
        // SAFETY: the storage is ours, uninitialised, and large and aligned
        // enough for `T` (asserted above); writing drops nothing.
        unsafe { storage.as_mut_ptr().cast::<T>().write(t) };
        Erased {
            storage,
            ops: OpsFor::<T, C>::OPS,
        }
    }

    /// Erases `t` in place if it [`fits`]; otherwise hands it back.
    #[inline]
    pub(crate) fn try_new<T: Erasable<C>>(t: T) -> Result<Erased<C>, T> {
        if fits::<T>() {
            let mut storage = Storage::uninit();
            // SAFETY: as in `new`, `fits::<T>()` having been checked.
            unsafe { storage.as_mut_ptr().cast::<T>().write(t) };
            Ok(Erased {
                storage,
                ops: OpsFor::<T, C>::OPS,
            })
        } else {
            Err(t)
        }
    }

    /// Runs the value with `cx` (consuming it).
    #[inline]
    pub(crate) fn run(self, cx: &C) -> bool {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `storage` holds the live `T` that `ops` was made for; the
        // `ManuallyDrop` keeps `Drop` from touching it once `run` moved it
        // out, even if it panics.
        unsafe { (this.ops.run)(&mut this.storage, cx) }
    }

    /// Discards the value (consuming it).
    pub(crate) fn discard(self) {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: as in `run`.
        unsafe { (this.ops.discard)(&mut this.storage) }
    }
}

impl<C: ?Sized + 'static> Drop for Erased<C> {
    fn drop(&mut self) {
        // SAFETY: neither `run` nor `discard` consumed the value (both
        // forget `self`), so `storage` holds the live `T` of `ops`.
        unsafe { (self.ops.drop)(&mut self.storage) }
    }
}

/// # Safety
///
/// `p` must point to a live `T`, which is moved out.
unsafe fn run_erasable<T: Erasable<C>, C: ?Sized>(p: *mut Storage, cx: &C) -> bool {
    // SAFETY: the caller's contract: a live, aligned `T` that is read once.
    let t = unsafe { p.cast::<T>().read() };
    t.run(cx)
}

/// # Safety
///
/// As [`run_erasable`].
unsafe fn discard_erasable<T: Erasable<C>, C: ?Sized>(p: *mut Storage) {
    // SAFETY: the caller's contract: a live, aligned `T` that is read once.
    let t = unsafe { p.cast::<T>().read() };
    t.discard();
}

/// # Safety
///
/// `p` must point to a live `G`, which is dropped (the caller must treat the
/// storage as uninitialised afterwards).
unsafe fn drop_erased<G>(p: *mut Storage) {
    // SAFETY: the caller's contract: a live, aligned `G` dropped once.
    unsafe { p.cast::<G>().drop_in_place() }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts drops of its captures.
    struct Probe(Arc<AtomicUsize>);

    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn small_closures_are_in_place_and_large_ones_boxed() {
        assert!(fits::<()>());
        assert!(fits::<(u64, Arc<u8>)>());
        assert!(fits::<[u8; INLINE_BYTES]>());
        assert!(!fits::<[u8; INLINE_BYTES + 1]>());
        #[repr(align(16))]
        struct Wide(#[allow(dead_code)] u8);
        assert!(!fits::<Wide>());
        assert!(fits::<Box<[u8; 4096]>>());
    }

    fn check_call_runs_and_drops_once<const N: usize>() {
        let drops = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(AtomicUsize::new(0));
        let probe = Probe(drops.clone());
        let pad = [7u8; N];
        let r = ran.clone();
        let call = InlineFn::new(move || {
            let _p = &probe;
            assert_eq!(pad, [7u8; N]);
            r.fetch_add(1, Ordering::SeqCst);
        });
        // Moving the erased call moves the closure.
        let moved = vec![call];
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        for c in moved {
            c.call();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn calls_run_once_and_drop_captures_once() {
        check_call_runs_and_drops_once::<0>(); // in place
        check_call_runs_and_drops_once::<8>(); // in place with the Arcs
        check_call_runs_and_drops_once::<64>(); // boxed
    }

    /// A call dropped uncalled, or one that panics, drops its captures once.
    fn check_captures_drop_once(panics: bool) {
        for big in [false, true] {
            let drops = Arc::new(AtomicUsize::new(0));
            let probe = Probe(drops.clone());
            let pad = [0u8; 64];
            let call = if big {
                InlineFn::new(move || {
                    let _keep = (&probe, pad);
                    assert!(!panics, "boom");
                })
            } else {
                InlineFn::new(move || {
                    let _keep = &probe;
                    assert!(!panics, "boom");
                })
            };
            if panics {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call.call()));
                assert!(result.is_err());
            } else {
                drop(call);
            }
            assert_eq!(drops.load(Ordering::SeqCst), 1, "big: {big}");
        }
    }

    #[test]
    fn uncalled_calls_drop_captures_once() {
        check_captures_drop_once(false);
    }

    #[test]
    fn a_panicking_call_drops_captures_once() {
        check_captures_drop_once(true);
    }

    #[test]
    fn returns_value_through_captured_state() {
        let out = Arc::new(std::sync::Mutex::new(String::new()));
        let o = out.clone();
        let s = String::from("hello");
        InlineFn::new(move || o.lock().unwrap().push_str(&s)).call();
        assert_eq!(*out.lock().unwrap(), "hello");
    }

    /// A test value: runs `f` with the context, counts discards.
    struct Job<F>(F, Arc<AtomicUsize>);

    impl<F: FnOnce(&u32) + Send + 'static> Erasable<u32> for Job<F> {
        fn run(self, cx: &u32) -> bool {
            (self.0)(cx);
            true
        }
        fn discard(self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn erased_values_leave_once_by_run_discard_or_drop() {
        assert_eq!(size_of::<Option<Erased<u32>>>(), 4 * size_of::<usize>());
        for way in 0..4 {
            let drops = Arc::new(AtomicUsize::new(0));
            let discards = Arc::new(AtomicUsize::new(0));
            let ran = Arc::new(AtomicUsize::new(0));
            let probe = Probe(drops.clone());
            let r = ran.clone();
            let job = Erased::new(Job(
                move |cx: &u32| {
                    let _p = &probe;
                    assert_ne!(*cx, 13, "boom");
                    r.fetch_add(1, Ordering::SeqCst);
                },
                discards.clone(),
            ));
            let moved = vec![job];
            match way {
                0 => assert!(moved.into_iter().next().unwrap().run(&7)),
                1 => moved.into_iter().next().unwrap().discard(),
                2 => drop(moved),
                _ => {
                    let job = moved.into_iter().next().unwrap();
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&13)));
                    assert!(result.is_err());
                }
            }
            let expected = [(1, 0), (0, 1), (0, 0), (0, 0)][way];
            assert_eq!(
                (ran.load(Ordering::SeqCst), discards.load(Ordering::SeqCst)),
                expected,
                "way {way}"
            );
            assert_eq!(
                drops.load(Ordering::SeqCst),
                1,
                "captures dropped once (way {way})"
            );
        }
    }

    #[test]
    fn try_new_hands_back_values_too_big_or_over_aligned_unrun() {
        #[repr(align(32))]
        struct Aligned(u8);
        let drops = Arc::new(AtomicUsize::new(0));
        let discards = Arc::new(AtomicUsize::new(0));
        let probe = Probe(drops.clone());
        let big = [0u8; INLINE_BYTES + 1];
        let back = Erased::try_new(Job(
            move |_: &u32| {
                let _ = (&probe, big);
            },
            discards.clone(),
        ));
        let job = back.err().expect("too big to keep in place");
        assert_eq!(drops.load(Ordering::SeqCst), 0, "handed back intact");
        assert!(job.run(&0));
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        // Takes the whole value (a closure naming only `a.0` would capture
        // just the byte).
        fn check(a: Aligned) {
            assert_eq!(a.0, 1);
        }
        let a = Aligned(1);
        assert!(Erased::try_new(Job(move |_: &u32| check(a), discards.clone())).is_err());
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let small = Erased::try_new(Job(
            move |_: &u32| {
                r.fetch_add(1, Ordering::SeqCst);
            },
            discards.clone(),
        ));
        assert!(small.unwrap_or_else(|_| panic!("an Arc fits")).run(&0));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert_eq!(discards.load(Ordering::SeqCst), 0);
    }
}
