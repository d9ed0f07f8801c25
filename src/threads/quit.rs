//! The one-shot quit flag.
//!
//! Twisted's `Quit` relies on the GIL between `check` and `set`; here `set`
//! is a compare-and-swap, so exactly one caller wins.

use crate::error::AlreadyQuit;
use crate::loom::atomic::{AtomicBool, Ordering};

/// A flag that is set once; afterwards every check is [`AlreadyQuit`].
///
/// # Examples
///
/// ```
/// use weft::threads::Quit;
///
/// let quit = Quit::new();
/// assert!(!quit.is_set());
/// quit.check().unwrap();
/// quit.set().unwrap();
/// assert!(quit.is_set());
/// assert!(quit.check().is_err());
/// assert!(quit.set().is_err());
/// ```
#[derive(Debug)]
pub struct Quit {
    set: AtomicBool,
}

impl Default for Quit {
    fn default() -> Self {
        Quit::new()
    }
}

impl Quit {
    /// Returns an unset flag.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!weft::threads::Quit::new().is_set());
    /// ```
    pub fn new() -> Self {
        Quit {
            set: AtomicBool::new(false),
        }
    }

    /// Whether the flag has been set.
    ///
    /// # Examples
    ///
    /// ```
    /// let quit = weft::threads::Quit::new();
    /// quit.set().unwrap();
    /// assert!(quit.is_set());
    /// ```
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Succeeds while the flag is unset.
    ///
    /// # Errors
    ///
    /// [`AlreadyQuit`] once the flag is set.
    ///
    /// # Examples
    ///
    /// ```
    /// let quit = weft::threads::Quit::new();
    /// assert!(quit.check().is_ok());
    /// ```
    pub fn check(&self) -> Result<(), AlreadyQuit> {
        if self.is_set() {
            Err(AlreadyQuit(()))
        } else {
            Ok(())
        }
    }

    /// Sets the flag; exactly one caller succeeds.
    ///
    /// # Errors
    ///
    /// [`AlreadyQuit`] when the flag was already set.
    ///
    /// # Examples
    ///
    /// ```
    /// let quit = weft::threads::Quit::new();
    /// assert!(quit.set().is_ok());
    /// assert!(quit.set().is_err());
    /// ```
    pub fn set(&self) -> Result<(), AlreadyQuit> {
        self.set
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
            .map_err(|_| AlreadyQuit(()))
    }
}
