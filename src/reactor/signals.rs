//! Signal handlers on the loop (asyncio's `add_signal_handler`).
//!
//! # Design
//!
//! Each signal a reactor handles gets its own signal-hook self-pipe
//! (`signal_hook_mio::v1_0::Signals` for that one signal), registered with
//! the reactor's I/O registry like any socket. Its readiness drains the pipe
//! and runs the signal's action on the loop thread: the user's callback, or
//! "stop the reactor" for the builder's `handle_signals(true)` defaults
//! (SIGINT, SIGTERM), which use the same table.
//!
//! Process-wide bookkeeping (`PROCESS`, one entry per signal number):
//!
//! - `owner`: the reactor whose *user* handler holds the signal. A second
//!   reactor asking for it gets [`SignalError::Claimed`]. The builder's
//!   default stop handlers do not claim: every reactor built with
//!   `handle_signals(true)` stops on SIGINT/SIGTERM, as before.
//! - `entries`: how many reactors have any action (default or user) for it.
//! - `restore`: the flag of a `signal_hook::flag::register_conditional_default`
//!   action installed the first time weft touches the signal. It is true
//!   exactly while `entries == 0`, so once the last handler is removed the
//!   signal's default disposition comes back (signal-hook alone would leave
//!   it ignored), the way asyncio restores `SIG_DFL`.
//!
//! # Invariants
//!
//! - The table's `RefCell` is never borrowed while a callback runs: the
//!   action is cloned out first, so callbacks may add or remove handlers
//!   (their own included).
//! - A dropped entry (removal, replacement by nothing, reactor drop)
//!   unregisters its signal-hook action and releases its `PROCESS` share.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::rc::{Rc, Weak};
// std atomics and mutex on purpose: this process-wide table is not part of
// any loom model, and loom's types cannot live in a `static`.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use libc::c_int;
use signal_hook_mio::v1_0::Signals;

use super::Handle;
use super::core::Inner;
use super::io_registry::Registration;

/// Identifies one handler added with [`Handle::add_signal_handler`].
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let h = reactor.handle();
/// let id = h.add_signal_handler(signal_hook::consts::SIGUSR2, || ()).unwrap();
/// assert_eq!(id.signal(), signal_hook::consts::SIGUSR2);
/// assert!(h.remove_signal_handler(id));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignalHandlerId {
    signal: c_int,
    id: u64,
}

impl SignalHandlerId {
    /// The signal number this handler is for.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let id = reactor.handle().add_signal_handler(libc::SIGWINCH, || ()).unwrap();
    /// assert_eq!(id.signal(), libc::SIGWINCH);
    /// ```
    pub fn signal(&self) -> c_int {
        self.signal
    }
}

/// Why [`Handle::add_signal_handler`] refused a handler.
///
/// # Examples
///
/// ```
/// use weft::reactor::SignalError;
///
/// let reactor = weft::Reactor::new().unwrap();
/// let err = reactor.handle().add_signal_handler(libc::SIGKILL, || ()).unwrap_err();
/// assert!(matches!(err, SignalError::Forbidden(s) if s == libc::SIGKILL));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum SignalError {
    /// The signal cannot be handled (SIGKILL, SIGSTOP) or must not be
    /// (SIGSEGV, SIGILL, SIGFPE: handling them breaks the program).
    Forbidden(c_int),
    /// Another reactor of this process has a handler for the signal.
    Claimed(c_int),
    /// The OS refused (e.g. an invalid signal number).
    Io(io::Error),
}

impl fmt::Display for SignalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignalError::Forbidden(s) => write!(f, "signal {s} cannot be handled"),
            SignalError::Claimed(s) => {
                write!(f, "signal {s} is already handled by another reactor")
            }
            SignalError::Io(e) => write!(f, "cannot install the signal handler: {e}"),
        }
    }
}

impl std::error::Error for SignalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SignalError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<SignalError> for io::Error {
    fn from(e: SignalError) -> io::Error {
        match e {
            SignalError::Io(e) => e,
            other => io::Error::other(other),
        }
    }
}

/// Process-wide state of one signal number (see the module docs).
struct ProcessSignal {
    owner: Option<u64>,
    entries: usize,
    restore: Option<Arc<AtomicBool>>,
}

static PROCESS: Mutex<Option<HashMap<c_int, ProcessSignal>>> = Mutex::new(None);
static NEXT_TABLE: AtomicU64 = AtomicU64::new(1);

fn with_process<R>(f: impl FnOnce(&mut HashMap<c_int, ProcessSignal>) -> R) -> R {
    let mut guard = PROCESS.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(HashMap::new))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn max_signal() -> c_int {
    libc::SIGRTMAX()
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn max_signal() -> c_int {
    31
}

/// Takes `signal`'s claim for `table`, unless another reactor holds it.
fn claim(signal: c_int, table: u64) -> Result<(), SignalError> {
    with_process(|p| {
        let state = p.get_mut(&signal).ok_or(SignalError::Claimed(signal))?;
        match state.owner {
            Some(o) if o != table => Err(SignalError::Claimed(signal)),
            _ => {
                state.owner = Some(table);
                Ok(())
            }
        }
    })
}

/// What a delivered signal does.
#[derive(Clone)]
enum Action {
    Stop,
    Call {
        id: u64,
        callback: Rc<RefCell<dyn FnMut()>>,
    },
}

struct Entry {
    signals: Signals,
    /// Kept for its Drop (frees the registry slot).
    _registration: Registration,
    action: Action,
    /// The builder's stop handler, to come back when a user handler goes.
    default_stop: bool,
    /// This entry holds the signal's `owner` claim.
    claimed: bool,
    signal: c_int,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let table = self.claimed;
        let signal = self.signal;
        with_process(|p| {
            if let Some(state) = p.get_mut(&signal) {
                if table {
                    state.owner = None;
                }
                state.entries = state.entries.saturating_sub(1);
                if state.entries == 0 {
                    if let Some(flag) = &state.restore {
                        flag.store(true, Ordering::SeqCst);
                    }
                }
            }
        });
    }
}

/// The reactor's signal handlers (a field of `Inner`).
pub(crate) struct SignalTable {
    /// This reactor's identity in `PROCESS`.
    table: u64,
    next_id: Cell<u64>,
    entries: RefCell<HashMap<c_int, Entry>>,
}

impl Default for SignalTable {
    fn default() -> Self {
        SignalTable {
            table: NEXT_TABLE.fetch_add(1, Ordering::Relaxed),
            next_id: Cell::new(1),
            entries: RefCell::new(HashMap::new()),
        }
    }
}

impl SignalTable {
    /// Drops every entry (at reactor teardown), outside the borrow.
    fn take_all(&self) -> HashMap<c_int, Entry> {
        std::mem::take(&mut *self.entries.borrow_mut())
    }
}

impl Drop for SignalTable {
    fn drop(&mut self) {
        drop(self.take_all());
    }
}

impl Inner {
    /// Drains `signal`'s pipe and runs its action (from the I/O dispatch).
    fn on_signal(&self, signal: c_int) {
        let action = {
            let mut entries = self.signals.entries.borrow_mut();
            let Some(entry) = entries.get_mut(&signal) else {
                return;
            };
            if entry.signals.pending().next().is_none() {
                return;
            }
            entry.action.clone()
        };
        match action {
            Action::Stop => {
                tracing::info!(signal, "weft: signal received; stopping the reactor");
                self.shared.request_stop();
            }
            Action::Call { callback, .. } => (callback.borrow_mut())(),
        }
    }
}

impl Handle {
    /// Installs a new entry for `signal` (the pipe, its registration and
    /// the process-wide share), not yet in the table.
    fn new_signal_entry(
        &self,
        signal: c_int,
        action: Action,
        default_stop: bool,
        claimed: bool,
    ) -> Result<Entry, SignalError> {
        let mut signals = Signals::new([signal]).map_err(SignalError::Io)?;
        let weak: Weak<Inner> = Rc::downgrade(&self.inner);
        let handler = Rc::new(move |_ready| {
            if let Some(inner) = weak.upgrade() {
                inner.on_signal(signal);
            }
        });
        let registration = self
            .register_io(&mut signals, mio::Interest::READABLE, handler)
            .map_err(SignalError::Io)?;
        // Share taken only once nothing else can fail: `Entry::drop` gives
        // it back. Checking and claiming under one lock settles races
        // between reactors on different threads.
        let me = self.inner.signals.table;
        with_process(|p| {
            let state = p.entry(signal).or_insert_with(|| ProcessSignal {
                owner: None,
                entries: 0,
                restore: None,
            });
            if claimed {
                if state.owner.is_some_and(|o| o != me) {
                    return Err(SignalError::Claimed(signal));
                }
                state.owner = Some(me);
            }
            state.entries += 1;
            match &state.restore {
                Some(flag) => flag.store(false, Ordering::SeqCst),
                None => {
                    let flag = Arc::new(AtomicBool::new(false));
                    // Unknown to signal-hook's table of defaults (e.g.
                    // real-time signals): nothing to restore then.
                    if signal_hook::flag::register_conditional_default(signal, flag.clone()).is_ok()
                    {
                        state.restore = Some(flag);
                    }
                }
            }
            Ok(())
        })?;
        Ok(Entry {
            signals,
            _registration: registration,
            action,
            default_stop,
            claimed,
            signal,
        })
    }

    /// Stops the reactor on `signal` (the builder's `handle_signals(true)`).
    pub(super) fn add_default_stop(&self, signal: c_int) -> io::Result<()> {
        let entry = self.new_signal_entry(signal, Action::Stop, true, false)?;
        self.inner
            .signals
            .entries
            .borrow_mut()
            .insert(signal, entry);
        Ok(())
    }

    /// Runs `callback` on the loop thread each time `signal` arrives
    /// (asyncio's `add_signal_handler`), until
    /// [`remove_signal_handler`](Handle::remove_signal_handler).
    ///
    /// Signals that arrive close together may be coalesced into one call.
    /// A handler this reactor already has for `signal` is replaced (its id
    /// becomes stale); for SIGINT or SIGTERM on a reactor built with
    /// [`handle_signals(true)`](super::Builder::handle_signals) the callback
    /// replaces the default "stop", which comes back on removal. Removing
    /// the last handler of a signal restores its default disposition.
    ///
    /// # Errors
    ///
    /// [`SignalError::Claimed`] if another reactor of the process has a
    /// handler for `signal`; [`SignalError::Forbidden`] for SIGKILL,
    /// SIGSTOP, SIGSEGV, SIGILL and SIGFPE; [`SignalError::Io`] for a number
    /// that is no signal, or if the OS refuses.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let h = reactor.handle();
    /// let got = Rc::new(Cell::new(0));
    /// let g = got.clone();
    /// let h2 = h.clone();
    /// let id = h
    ///     .add_signal_handler(libc::SIGUSR1, move || {
    ///         g.set(g.get() + 1);
    ///         h2.stop();
    ///     })
    ///     .unwrap();
    /// reactor.call_soon(|| {
    ///     signal_hook::low_level::raise(libc::SIGUSR1).unwrap();
    /// });
    /// reactor.run().unwrap();
    /// assert_eq!(got.get(), 1);
    /// assert!(h.remove_signal_handler(id));
    /// ```
    pub fn add_signal_handler(
        &self,
        signal: c_int,
        callback: impl FnMut() + 'static,
    ) -> Result<SignalHandlerId, SignalError> {
        if signal_hook::consts::FORBIDDEN.contains(&signal) {
            return Err(SignalError::Forbidden(signal));
        }
        // signal-hook panics on numbers the OS does not know.
        if !(1..=max_signal()).contains(&signal) {
            return Err(SignalError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{signal} is not a signal number"),
            )));
        }
        let table = &self.inner.signals;
        let id = table.next_id.get();
        table.next_id.set(id + 1);
        let action = Action::Call {
            id,
            callback: Rc::new(RefCell::new(callback)),
        };
        let replaced = {
            let mut entries = table.entries.borrow_mut();
            match entries.get_mut(&signal) {
                Some(entry) => {
                    if !entry.claimed {
                        claim(signal, table.table)?;
                        entry.claimed = true;
                    }
                    Some(std::mem::replace(&mut entry.action, action.clone()))
                }
                None => None,
            }
        };
        if replaced.is_none() {
            let entry = self.new_signal_entry(signal, action, false, true)?;
            table.entries.borrow_mut().insert(signal, entry);
        }
        // A replaced callback is dropped here, outside the borrow.
        drop(replaced);
        Ok(SignalHandlerId { signal, id })
    }

    /// Removes a handler added by
    /// [`add_signal_handler`](Handle::add_signal_handler). Returns whether
    /// it was still installed (false for a replaced or removed one).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let h = reactor.handle();
    /// let id = h.add_signal_handler(libc::SIGUSR2, || ()).unwrap();
    /// assert!(h.remove_signal_handler(id));
    /// assert!(!h.remove_signal_handler(id));
    /// ```
    pub fn remove_signal_handler(&self, id: SignalHandlerId) -> bool {
        let table = &self.inner.signals;
        let removed = {
            let mut entries = table.entries.borrow_mut();
            let Some(entry) = entries.get_mut(&id.signal) else {
                return false;
            };
            match &entry.action {
                Action::Call { id: current, .. } if *current == id.id => {}
                _ => return false,
            }
            if entry.default_stop {
                // Back to the builder's stop; the claim is given up.
                entry.claimed = false;
                with_process(|p| {
                    if let Some(s) = p.get_mut(&id.signal) {
                        s.owner = None;
                    }
                });
                Some(Removed::Action(std::mem::replace(
                    &mut entry.action,
                    Action::Stop,
                )))
            } else {
                entries.remove(&id.signal).map(Removed::Entry)
            }
        };
        // Dropped outside the borrow: the callback's captures may touch the
        // reactor.
        removed.is_some()
    }
}

/// What `remove_signal_handler` took out, dropped after the borrow ends.
#[allow(dead_code)] // held only for its Drop
enum Removed {
    Action(Action),
    Entry(Entry),
}
