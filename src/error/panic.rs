//! [`Panic`]: a caught panic's message and original payload, and the
//! helpers that read payloads.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// A caught panic: its message, and the original payload for
/// [`std::panic::resume_unwind`] (as tokio's `JoinError::into_panic` gives).
///
/// It is what [`ThreadError::Panicked`](crate::ThreadError::Panicked)
/// carries in its `message` field, also inside
/// [`CallError::Failed`](crate::CallError::Failed) and
/// [`RunError::Failed`](crate::RunError::Failed). It reads as the panic message (`Deref<Target = str>`,
/// `Display`) and compares by message. Clones share the one payload: the
/// first [`into_payload`](Panic::into_payload)
/// takes it, later ones get the message as a `String`.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let d = reactor.defer_to_thread(|| -> u8 { std::panic::panic_any(7_u32) });
/// let err = reactor.run_until_complete(d).unwrap().unwrap_err();
/// let weft::ThreadError::Panicked { message } = err else { unreachable!() };
/// assert_eq!(message.message(), "<non-string panic payload>");
/// // The original payload, not a copy of its message:
/// assert_eq!(message.into_payload().downcast_ref::<u32>(), Some(&7));
/// ```
#[derive(Clone)]
pub struct Panic(Arc<Caught>);

/// One shared allocation, so a `Panic` is one pointer and a
/// `ThreadError` two words: a job's outcome (`Result<T, ThreadError>`),
/// which every job record holds, is 16 bytes for a word-sized `T` (it was
/// 32 with the message and payload as two `Arc`s).
struct Caught {
    message: Box<str>,
    /// A value holder, not a synchronisation point: a std mutex (never
    /// poisoned in practice; taken back if it is) keeps `Panic` `Sync` and
    /// needs no loom model.
    payload: std::sync::Mutex<Option<Box<dyn Any + Send>>>,
}

impl Panic {
    /// Wraps a payload caught by [`std::panic::catch_unwind`].
    ///
    /// # Examples
    ///
    /// ```
    /// let payload = std::panic::catch_unwind(|| panic!("boom")).unwrap_err();
    /// let panic = weft::Panic::new(payload);
    /// assert_eq!(panic.message(), "boom");
    /// assert_eq!(panic.into_payload().downcast_ref::<&str>(), Some(&"boom"));
    /// ```
    pub fn new(payload: Box<dyn Any + Send>) -> Panic {
        Panic(Arc::new(Caught {
            message: panic_message(&*payload).into_boxed_str(),
            payload: std::sync::Mutex::new(Some(payload)),
        }))
    }

    /// The panic message, or `<non-string panic payload>` when the payload
    /// was neither a `&str` nor a `String`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(weft::Panic::from("boom").message(), "boom");
    /// ```
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The payload, for [`std::panic::resume_unwind`]. If a clone took it
    /// already, the message as a `String`.
    ///
    /// # Examples
    ///
    /// ```
    /// let panic = weft::Panic::from("boom");
    /// let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
    ///     std::panic::resume_unwind(panic.into_payload())
    /// }))
    /// .unwrap_err();
    /// assert_eq!(caught.downcast_ref::<String>().map(String::as_str), Some("boom"));
    /// ```
    pub fn into_payload(self) -> Box<dyn Any + Send> {
        let taken = self
            .0
            .payload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        taken.unwrap_or_else(|| Box::new(self.0.message.to_string()))
    }
}

impl From<&str> for Panic {
    fn from(message: &str) -> Panic {
        Panic::from(message.to_owned())
    }
}

impl From<String> for Panic {
    fn from(message: String) -> Panic {
        Panic::new(Box::new(message))
    }
}

impl std::ops::Deref for Panic {
    type Target = str;

    fn deref(&self) -> &str {
        self.message()
    }
}

impl PartialEq for Panic {
    fn eq(&self, other: &Panic) -> bool {
        self.message() == other.message()
    }
}

impl Eq for Panic {}

impl PartialEq<str> for Panic {
    fn eq(&self, other: &str) -> bool {
        self.message() == other
    }
}

impl PartialEq<&str> for Panic {
    fn eq(&self, other: &&str) -> bool {
        self.message() == *other
    }
}

impl fmt::Debug for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.message(), f)
    }
}

impl fmt::Display for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A copy of a borrowed panic payload, of the same type when it is a
/// `&'static str` or a `String` (what `panic!` produces).
pub(crate) fn copy_payload(payload: &(dyn Any + Send)) -> Box<dyn Any + Send> {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        Box::new(*s)
    } else {
        Box::new(panic_message(payload))
    }
}

/// Extracts the message from a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}
