//! Loop-local state: typed slots that callbacks reach through their
//! [`Handle`] instead of a `thread_local` (calloop hands `&mut Data` to every
//! callback; here each type gets its slot).
//!
//! Invariants: one slot per type; a slot is borrowed only for the duration
//! of one [`Handle::with_local`] call, and the table itself is borrowed only
//! to find or add a slot, never while user code runs, so a callback may
//! insert, use or remove *other* slots freely; re-entering the same slot is
//! the error [`LocalError::Borrowed`], never a panic. Slots are dropped with
//! the reactor (after its shutdown), in insertion order.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use super::handle::Handle;

type Slot = Rc<RefCell<Option<Box<dyn Any>>>>;

/// The table of slots, and the crate's own extensions (the bridge's state).
#[derive(Default)]
pub(super) struct Locals {
    slots: RefCell<Vec<(TypeId, Slot)>>,
    extensions: RefCell<Vec<(TypeId, Rc<dyn Any>)>>,
}

impl Locals {
    /// A table whose extensions start with the builder's seeds.
    pub(super) fn with_extensions(seeds: Vec<(TypeId, Box<dyn Any + Send>)>) -> Locals {
        let extensions = seeds
            .into_iter()
            .map(|(key, value)| (key, Rc::<dyn Any + Send>::from(value) as Rc<dyn Any>))
            .collect();
        Locals {
            slots: RefCell::default(),
            extensions: RefCell::new(extensions),
        }
    }

    fn slot(&self, key: TypeId) -> Option<Slot> {
        self.slots
            .borrow()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, s)| s.clone())
    }

    /// Drops every slot and extension, outside the table borrows.
    pub(super) fn clear(&self) {
        let slots = std::mem::take(&mut *self.slots.borrow_mut());
        drop(slots);
        let extensions = std::mem::take(&mut *self.extensions.borrow_mut());
        drop(extensions);
    }
}

/// Why [`Handle::with_local`] could not lend a loop-local value.
///
/// # Examples
///
/// ```
/// use weft::reactor::LocalError;
///
/// let reactor = weft::Reactor::new().unwrap();
/// assert_eq!(reactor.with_local(|n: &mut u32| *n), Err(LocalError::Absent));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalError {
    /// No value of this type was inserted (or it was removed).
    Absent,
    /// The value is already lent out: `with_local` re-entered for the same
    /// type from inside its own closure.
    Borrowed,
}

impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalError::Absent => f.write_str("no loop-local value of this type"),
            LocalError::Borrowed => f.write_str("loop-local value already borrowed"),
        }
    }
}

impl std::error::Error for LocalError {}

impl Handle {
    /// Stores `value` as this reactor's loop-local `T`, returning the one it
    /// replaces. Callbacks reach it with [`with_local`](Handle::with_local)
    /// through [`current`](super::current) or any `Handle`: loop state
    /// without a `thread_local` or an `Rc` captured in every closure.
    ///
    /// # Errors
    ///
    /// [`LocalError::Borrowed`] if the current `T` is lent out right now
    /// (inside `with_local::<T>`, which has `&mut T` to assign to); `value`
    /// is dropped and the lent value stays.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// assert_eq!(reactor.insert_local(1u32), Ok(None));
    /// assert_eq!(reactor.insert_local(2u32), Ok(Some(1)));
    /// ```
    pub fn insert_local<T: 'static>(&self, value: T) -> Result<Option<T>, LocalError> {
        let key = TypeId::of::<T>();
        let locals = &self.inner.locals;
        let slot = match locals.slot(key) {
            Some(slot) => slot,
            None => {
                let slot: Slot = Rc::new(RefCell::new(None));
                locals.slots.borrow_mut().push((key, slot.clone()));
                slot
            }
        };
        let old = slot
            .try_borrow_mut()
            .map_err(|_| LocalError::Borrowed)?
            .replace(Box::new(value));
        Ok(old.and_then(|b| b.downcast::<T>().ok()).map(|b| *b))
    }

    /// Lends this reactor's loop-local `T` to `f`.
    ///
    /// # Errors
    ///
    /// [`LocalError::Absent`] if there is no `T`, [`LocalError::Borrowed`]
    /// if `f` (or a caller up the stack) already holds it.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.insert_local(Vec::<&str>::new());
    /// reactor.call_soon(|| {
    ///     let h = weft::reactor::current().unwrap();
    ///     h.with_local(|log: &mut Vec<&str>| log.push("timer ran")).unwrap();
    ///     h.stop();
    /// });
    /// reactor.run().unwrap();
    /// assert_eq!(reactor.with_local(|log: &mut Vec<&str>| log.len()), Ok(1));
    /// ```
    pub fn with_local<T: 'static, R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, LocalError> {
        let slot = self
            .inner
            .locals
            .slot(TypeId::of::<T>())
            .ok_or(LocalError::Absent)?;
        let mut guard = slot.try_borrow_mut().map_err(|_| LocalError::Borrowed)?;
        let value = guard
            .as_mut()
            .and_then(|b| b.downcast_mut::<T>())
            .ok_or(LocalError::Absent)?;
        Ok(f(value))
    }

    /// Takes this reactor's loop-local `T` out, if there is one and it is
    /// not lent out.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// reactor.insert_local(String::from("state"));
    /// assert_eq!(reactor.remove_local::<String>().as_deref(), Some("state"));
    /// assert_eq!(reactor.remove_local::<String>(), None);
    /// ```
    pub fn remove_local<T: 'static>(&self) -> Option<T> {
        let slot = self.inner.locals.slot(TypeId::of::<T>())?;
        let taken = slot.try_borrow_mut().ok()?.take();
        taken.and_then(|b| b.downcast::<T>().ok()).map(|b| *b)
    }

    /// Loop-local state owned by a layer above the reactor (the bridge),
    /// created on first use unless the builder seeded it
    /// (`Builder::with_extension`). Dropped when the reactor is.
    pub(crate) fn extension<T: 'static>(&self, init: impl FnOnce() -> T) -> Rc<T> {
        let key = TypeId::of::<T>();
        let extensions = &self.inner.locals.extensions;
        let found = extensions
            .borrow()
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, ext)| ext.clone().downcast::<T>().ok());
        if let Some(ext) = found {
            return ext;
        }
        let ext = Rc::new(init());
        extensions
            .borrow_mut()
            .push((key, ext.clone() as Rc<dyn Any>));
        ext
    }
}
