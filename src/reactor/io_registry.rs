//! The I/O registry (contract C2): which mio sources the loop watches and
//! who hears about their readiness.
//!
//! # Design
//!
//! A [`Slab`] holds one slot per registered source: the source's handler
//! (an `Rc<dyn IoHandler>`) and the generation it was registered under. A
//! mio [`Token`] packs the slot index (offset past the reactor's reserved
//! tokens) in its low half and the generation in its high half, so an event
//! that was already fetched from epoll for a slot freed (and maybe reused)
//! by an earlier handler of the same batch is recognised as stale and
//! ignored.
//!
//! The loop collects the batch's events into `pending` first and dispatches
//! after the mio `Events` borrow has ended; each handler is cloned out of the
//! slab and called with no `RefCell` borrowed, so it may register,
//! reregister or deregister sources (itself included), schedule timers or
//! wake tasks.
//!
//! # Invariants
//!
//! - `Inner::io_sources` = the number of occupied slots (signal pipes are
//!   ordinary slots, see `signals.rs`). The loop skips `epoll_wait` for zero-timeout turns only
//!   when it is 0, so every registered source gets polled.
//! - A [`Registration`] owns its slot: dropping it frees the slot (events
//!   for it are ignored from then on); [`Registration::deregister`] also
//!   removes the source from epoll. Both work after the reactor is gone.
//! - Handlers run on the loop thread only (the registry is `!Send`).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::panic::Location;
use std::rc::{Rc, Weak};

use mio::event::Source;
use mio::{Interest, Token};
use slab::Slab;

use super::Handle;
use super::core::Inner;

/// Tokens below this belong to the reactor itself (the waker; token 1, the
/// old signal pipe's, stays unused).
const RESERVED: usize = 2;
/// Bits of a token that hold the slot index; the rest hold the generation.
const INDEX_BITS: u32 = usize::BITS / 2;
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;

/// Readiness reported for one source in one event, as mio reports it.
///
/// mio's "closed" and "error" hints are folded in: a read-closed or error
/// event counts as readable, a write-closed or error event as writable, so
/// that the next read or write runs and reports EOF or the error itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ready {
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    pub(crate) read_closed: bool,
    pub(crate) write_closed: bool,
    pub(crate) error: bool,
}

impl Ready {
    fn of(event: &mio::event::Event) -> Ready {
        let error = event.is_error();
        let read_closed = event.is_read_closed();
        let write_closed = event.is_write_closed();
        Ready {
            readable: event.is_readable() || read_closed || error,
            writable: event.is_writable() || write_closed || error,
            read_closed,
            write_closed,
            error,
        }
    }
}

/// Receives the readiness of one registered source, on the loop thread.
pub(crate) trait IoHandler {
    /// Called once per mio event for the source, never while the registry
    /// is borrowed.
    fn ready(&self, ready: Ready);
}

impl<F: Fn(Ready)> IoHandler for F {
    fn ready(&self, ready: Ready) {
        self(ready)
    }
}

struct Slot {
    generation: usize,
    handler: Rc<dyn IoHandler>,
    /// Where the source was registered, for panic reports.
    location: &'static Location<'static>,
}

/// The reactor's table of sources (a field of the reactor's `Inner`).
#[derive(Default)]
pub(crate) struct IoRegistry {
    slots: RefCell<Slab<Slot>>,
    next_generation: Cell<usize>,
    /// Events of the current batch, collected while mio's buffer is borrowed.
    pending: RefCell<Vec<(Token, Ready)>>,
}

impl IoRegistry {
    /// Records one mio event of this batch (called from the poll loop).
    pub(super) fn push_event(&self, event: &mio::event::Event) {
        self.pending
            .borrow_mut()
            .push((event.token(), Ready::of(event)));
    }

    /// Number of registered sources.
    #[allow(dead_code)] // crate API (C2), for the layers above
    pub(crate) fn len(&self) -> usize {
        self.slots.borrow().len()
    }
}

thread_local! {
    /// Counts I/O steps on this thread (one per turn while any source is
    /// registered, polled or skipped): the I/O budget resets when it
    /// changes.
    static EPOCH: Cell<u64> = const { Cell::new(0) };
}

/// The current I/O epoch of this thread (see `EPOCH`).
pub(crate) fn io_epoch() -> u64 {
    EPOCH.with(Cell::get)
}

/// Moves the I/O epoch on: once per I/O step of a turn, whether it polled
/// or skipped its poll (`io_pace.rs`).
pub(super) fn advance_io_epoch() {
    EPOCH.with(|e| e.set(e.get().wrapping_add(1)));
}

impl Inner {
    /// Calls the handlers for the events recorded by `push_event`, after the
    /// events buffer has been released. A panicking handler is treated like
    /// a panicking callback (logged, or re-raised under
    /// `PanicPolicy::Propagate`); the other events are still dispatched.
    pub(super) fn dispatch_io(&self) {
        advance_io_epoch();
        let mut batch = std::mem::take(&mut *self.io.pending.borrow_mut());
        for (token, ready) in batch.drain(..) {
            let (handler, location) = {
                let slots = self.io.slots.borrow();
                match decode(token).and_then(|(index, generation)| {
                    slots.get(index).filter(|s| s.generation == generation)
                }) {
                    Some(slot) => (slot.handler.clone(), slot.location),
                    // Freed (or freed and reused) earlier in this batch.
                    None => continue,
                }
            };
            self.guard("I/O handler", location, || handler.ready(ready));
        }
        // Keep the allocation for the next batch.
        let mut pending = self.io.pending.borrow_mut();
        if pending.is_empty() {
            *pending = batch;
        }
    }
}

fn encode(index: usize, generation: usize) -> Token {
    Token(((generation & (usize::MAX >> INDEX_BITS)) << INDEX_BITS) | (index + RESERVED))
}

fn decode(token: Token) -> Option<(usize, usize)> {
    let index = (token.0 & INDEX_MASK).checked_sub(RESERVED)?;
    Some((index, token.0 >> INDEX_BITS))
}

/// One source's slot in a reactor's registry. Dropping it frees the slot.
pub(crate) struct Registration {
    inner: Weak<Inner>,
    token: Token,
    index: usize,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("token", &self.token)
            .finish()
    }
}

#[allow(dead_code)]
fn gone() -> io::Error {
    io::Error::other("the reactor was dropped")
}

impl Handle {
    /// Registers `source` with this reactor's poll for `interest`; its
    /// readiness goes to `handler`. mio registrations are edge-triggered.
    #[track_caller]
    pub(crate) fn register_io<S: Source + ?Sized>(
        &self,
        source: &mut S,
        interest: Interest,
        handler: Rc<dyn IoHandler>,
    ) -> io::Result<Registration> {
        let location = Location::caller();
        let inner = &self.inner;
        let generation = inner.io.next_generation.get();
        inner.io.next_generation.set(generation.wrapping_add(1));
        let generation = generation & (usize::MAX >> INDEX_BITS);
        let index = inner.io.slots.borrow_mut().insert(Slot {
            generation,
            handler,
            location,
        });
        if index > INDEX_MASK - RESERVED {
            inner.io.slots.borrow_mut().remove(index);
            return Err(io::Error::other("too many registered I/O sources"));
        }
        let token = encode(index, generation);
        let registered = inner
            .poll
            .borrow()
            .registry()
            .register(source, token, interest);
        if let Err(e) = registered {
            inner.io.slots.borrow_mut().remove(index);
            return Err(e);
        }
        inner.io_sources.set(inner.io_sources.get() + 1);
        Ok(Registration {
            inner: Rc::downgrade(inner),
            token,
            index,
        })
    }
}

impl Registration {
    /// Changes the interest of the registered `source` (same token).
    #[allow(dead_code)] // crate API (C2), for the layers above
    pub(crate) fn reregister<S: Source + ?Sized>(
        &self,
        source: &mut S,
        interest: Interest,
    ) -> io::Result<()> {
        let inner = self.inner.upgrade().ok_or_else(gone)?;
        inner
            .poll
            .borrow()
            .registry()
            .reregister(source, self.token, interest)
    }

    /// Removes `source` from the poll and frees the slot.
    pub(crate) fn deregister<S: Source + ?Sized>(self, source: &mut S) -> io::Result<()> {
        match self.inner.upgrade() {
            Some(inner) => inner.poll.borrow().registry().deregister(source),
            None => Ok(()),
        }
        // `self` drops here and frees the slot.
    }

    /// The reactor this registration belongs to, if it still exists.
    pub(crate) fn handle(&self) -> Option<Handle> {
        self.inner.upgrade().map(|inner| Handle { inner })
    }

    /// The token events for this source carry.
    #[cfg(test)]
    pub(crate) fn token(&self) -> Token {
        self.token
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        // Take the handler out before dropping it: its drop may deregister
        // other sources (it owns what it wants).
        let removed = {
            let mut slots = inner.io.slots.borrow_mut();
            match slots.get(self.index) {
                Some(slot) if encode(self.index, slot.generation) == self.token => {
                    Some(slots.remove(self.index))
                }
                _ => None,
            }
        };
        if removed.is_some() {
            inner.io_sources.set(inner.io_sources.get() - 1);
        }
        drop(removed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reactor;
    use std::io::Write;
    use std::time::Duration;

    #[test]
    fn tokens_round_trip_and_skip_the_reserved_ones() {
        for (i, g) in [(0, 0), (5, 7), (INDEX_MASK - RESERVED, 1)] {
            let t = encode(i, g);
            assert!(t.0 >= RESERVED || g > 0);
            assert_eq!(decode(t), Some((i, g)));
        }
        assert_eq!(decode(Token(0)), None);
        assert_eq!(decode(Token(1)), None);
    }

    fn pipe() -> (mio::unix::pipe::Sender, mio::unix::pipe::Receiver) {
        mio::unix::pipe::new().unwrap()
    }

    #[test]
    fn a_stale_event_for_a_reused_slot_is_ignored() {
        let reactor = Reactor::new().unwrap();
        let h = reactor.handle();
        let base = h.inner.io_sources.get();
        let (_tx, mut rx) = pipe();
        let hits = Rc::new(Cell::new(0));
        let hits2 = hits.clone();
        let reg = h
            .register_io(
                &mut rx,
                Interest::READABLE,
                Rc::new(move |_r: Ready| hits2.set(hits2.get() + 1)),
            )
            .unwrap();
        assert_eq!(h.inner.io_sources.get(), base + 1);
        let old = reg.token();
        drop(reg);
        assert_eq!(h.inner.io_sources.get(), base);
        // Reuse the slot with a new generation, then feed the old token.
        let (_tx2, mut rx2) = pipe();
        let reg2 = h
            .register_io(&mut rx2, Interest::READABLE, Rc::new(|_r: Ready| {}))
            .unwrap();
        assert_eq!(decode(reg2.token()).unwrap().0, decode(old).unwrap().0);
        assert_ne!(reg2.token(), old);
        h.inner
            .io
            .pending
            .borrow_mut()
            .push((old, Ready::default()));
        h.inner.dispatch_io();
        assert_eq!(hits.get(), 0);
        // A live registration is dispatched. (`rx` itself is still in epoll:
        // dropping a registration frees only the slot.)
        let (mut tx, mut rx) = pipe();
        let hits3 = hits.clone();
        let reg3 = h
            .register_io(
                &mut rx,
                Interest::READABLE,
                Rc::new(move |r: Ready| {
                    assert!(r.readable);
                    hits3.set(hits3.get() + 1)
                }),
            )
            .unwrap();
        tx.write_all(b"x").unwrap();
        reactor.iterate(Some(Duration::from_secs(5)));
        assert_eq!(hits.get(), 1);
        reg3.deregister(&mut rx).unwrap();
        drop(reg2);
        assert_eq!(h.inner.io_sources.get(), base);
    }

    #[test]
    fn a_panicking_handler_is_caught_and_the_next_event_still_dispatched() {
        let reactor = Reactor::new().unwrap();
        let h = reactor.handle();
        let (mut tx1, mut rx1) = pipe();
        let (mut tx2, mut rx2) = pipe();
        let hits = Rc::new(Cell::new(0));
        let _r1 = h
            .register_io(
                &mut rx1,
                Interest::READABLE,
                Rc::new(|_r: Ready| panic!("handler bug")),
            )
            .unwrap();
        let hits2 = hits.clone();
        let _r2 = h
            .register_io(
                &mut rx2,
                Interest::READABLE,
                Rc::new(move |_r: Ready| hits2.set(hits2.get() + 1)),
            )
            .unwrap();
        tx1.write_all(b"x").unwrap();
        tx2.write_all(b"x").unwrap();
        let panics = reactor.statistics().panics;
        for _ in 0..10 {
            if hits.get() > 0 {
                break;
            }
            reactor.iterate(Some(Duration::from_millis(100)));
        }
        assert_eq!(hits.get(), 1);
        assert_eq!(reactor.statistics().panics, panics + 1);
    }

    #[test]
    fn reregister_changes_the_interest_under_the_same_token() {
        let reactor = Reactor::new().unwrap();
        let h = reactor.handle();
        let (mut tx, _rx) = pipe();
        let seen = Rc::new(Cell::new(Ready::default()));
        let s = seen.clone();
        let reg = h
            .register_io(
                &mut tx,
                Interest::READABLE,
                Rc::new(move |r: Ready| s.set(r)),
            )
            .unwrap();
        reactor.iterate(Some(Duration::from_millis(10)));
        assert!(!seen.get().writable, "not asked for yet");
        reg.reregister(&mut tx, Interest::WRITABLE).unwrap();
        for _ in 0..10 {
            if seen.get().writable {
                break;
            }
            reactor.iterate(Some(Duration::from_millis(100)));
        }
        assert!(seen.get().writable);
        reg.deregister(&mut tx).unwrap();
    }

    #[test]
    fn a_handler_may_deregister_itself_and_others() {
        let reactor = Reactor::new().unwrap();
        let h = reactor.handle();
        let base = h.inner.io_sources.get();
        let (mut tx, rx) = pipe();
        let rx = Rc::new(RefCell::new(rx));
        let slot: Rc<RefCell<Option<Registration>>> = Rc::default();
        let (s, r) = (slot.clone(), rx.clone());
        let reg = h
            .register_io(
                &mut *rx.borrow_mut(),
                Interest::READABLE,
                Rc::new(move |_r: Ready| {
                    if let Some(reg) = s.borrow_mut().take() {
                        reg.deregister(&mut *r.borrow_mut()).unwrap();
                    }
                }),
            )
            .unwrap();
        *slot.borrow_mut() = Some(reg);
        tx.write_all(b"x").unwrap();
        reactor.iterate(Some(Duration::from_secs(5)));
        assert!(slot.borrow().is_none());
        assert_eq!(h.inner.io_sources.get(), base);
    }
}
