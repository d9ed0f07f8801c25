//! Which reactor is current on this thread.
//!
//! A thread may own several reactors (tests do); the innermost one being
//! run (or else the newest one built) is "current". The stack holds `Weak`s,
//! so it never keeps a dropped reactor alive, and [`Enter`] pops exactly what
//! it pushed, also when a callback unwinds.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::thread::ThreadId;

use super::core::Inner;
use super::handle::Handle;

thread_local! {
    /// Reactors of this thread, innermost (running, or newest) last.
    static CURRENT: RefCell<Vec<Weak<Inner>>> = const { RefCell::new(Vec::new()) };
    /// Set on first use. A `const` initializer keeps the read inline (a
    /// lazily initialized thread-local goes through an out-of-line
    /// initializer check on every access, one more cold code page for a
    /// task wake after a long sleep).
    static THREAD_ID: Cell<Option<ThreadId>> = const { Cell::new(None) };
}

/// This thread's id, without `thread::current()`'s reference count.
#[inline]
pub(crate) fn this_thread() -> ThreadId {
    THREAD_ID.with(|t| t.get()).unwrap_or_else(first_thread_id)
}

#[cold]
#[inline(never)]
fn first_thread_id() -> ThreadId {
    let id = std::thread::current().id();
    THREAD_ID.with(|t| t.set(Some(id)));
    id
}

/// The reactor whose loop this thread runs, for code running on the loop.
///
/// Returns `None` on threads that have no reactor (pool threads, for one).
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// reactor.call_soon(|| {
///     let here = weft::reactor::current().expect("on the loop");
///     here.stop();
/// });
/// reactor.run().unwrap();
/// assert!(std::thread::spawn(|| weft::reactor::current().is_none()).join().unwrap());
/// ```
pub fn current() -> Option<Handle> {
    CURRENT.with(|c| {
        c.borrow()
            .iter()
            .rev()
            .find_map(Weak::upgrade)
            .map(Handle::from_inner)
    })
}

/// Whether this thread is a reactor's loop thread.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// assert!(weft::reactor::is_in_io_thread());
/// assert!(!std::thread::spawn(weft::reactor::is_in_io_thread).join().unwrap());
/// # drop(reactor);
/// ```
pub fn is_in_io_thread() -> bool {
    CURRENT.with(|c| c.borrow().iter().any(|w| w.strong_count() > 0))
}

/// Records a newly built reactor as this thread's newest.
pub(super) fn register(inner: &Rc<Inner>) {
    CURRENT.with(|c| c.borrow_mut().push(Rc::downgrade(inner)));
}

/// Forgets a reactor that is going away (and any dead entries).
pub(super) fn unregister(inner: &Rc<Inner>) {
    let ptr = Rc::as_ptr(inner);
    // `try_with`: a reactor dropped during thread-local destruction must not panic.
    let _ = CURRENT.try_with(|c| {
        if let Ok(mut stack) = c.try_borrow_mut() {
            stack.retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), ptr));
        }
    });
}

/// Makes a reactor the current one for the duration of a run or turn.
/// Also marks the thread as a loop thread (contract C4), so that code below
/// the reactor (`ThreadPool::stop`) knows not to wait for threads that may be
/// waiting for this loop.
pub(super) struct Enter {
    _marker: crate::loop_marker::LoopGuard,
}

impl Enter {
    pub(super) fn new(inner: &Rc<Inner>) -> Enter {
        CURRENT.with(|c| c.borrow_mut().push(Rc::downgrade(inner)));
        Enter {
            _marker: crate::loop_marker::enter_loop(),
        }
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|c| {
            c.borrow_mut().pop();
        });
    }
}
