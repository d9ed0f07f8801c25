//! The error of `ThreadWorker::try_do_work_batch`: why a batch that must
//! not wait for a lock was not queued, with the batch handed back (std's
//! and tokio's `TrySendError`, for a worker).

use std::error::Error;
use std::fmt;

use crate::error::AlreadyQuit;

/// Why [`ThreadWorker::try_do_work_batch`](crate::threads::ThreadWorker::try_do_work_batch)
/// queued nothing; either way the work is handed back, in the order given.
///
/// `Busy` is passing (offer the work again later, ahead of anything
/// submitted after it, to keep the order); `Quit` is final, like
/// [`AlreadyQuit`].
///
/// # Examples
///
/// ```
/// use weft::threads::{Task, ThreadWorker, TryDoWorkError, Worker};
///
/// let worker = ThreadWorker::new().unwrap();
/// worker.quit().unwrap();
/// let tasks: Vec<Task> = vec![Box::new(|| ()), Box::new(|| ())];
/// match worker.try_do_work_batch(tasks) {
///     Ok(()) => unreachable!("the worker quit"),
///     Err(TryDoWorkError::Busy(_tasks)) => unreachable!("offer them again later"),
///     Err(TryDoWorkError::Quit(tasks)) => assert_eq!(tasks.len(), 2),
/// }
///
/// let busy: TryDoWorkError<Vec<Task>> = TryDoWorkError::Busy(Vec::new());
/// assert_eq!(busy.to_string(), "worker busy");
/// assert_eq!(format!("{busy:?}"), "Busy(..)"); // `Task` is not `Debug`
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TryDoWorkError<T> {
    /// Another thread holds a lock the worker needs (its quit gate or its
    /// queue's) right now: nothing was queued; offer it again later.
    Busy(T),
    /// The worker quit; it takes no more work.
    Quit(T),
}

impl<T> TryDoWorkError<T> {
    /// Returns the work that was not queued.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::TryDoWorkError;
    ///
    /// assert_eq!(TryDoWorkError::Busy(3).into_inner(), 3);
    /// assert_eq!(TryDoWorkError::Quit(4).into_inner(), 4);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            TryDoWorkError::Busy(work) | TryDoWorkError::Quit(work) => work,
        }
    }

    /// Whether the worker was only busy (the work may be offered again).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::TryDoWorkError;
    ///
    /// assert!(TryDoWorkError::Busy(()).is_busy());
    /// assert!(!TryDoWorkError::Quit(()).is_busy());
    /// ```
    pub fn is_busy(&self) -> bool {
        matches!(self, TryDoWorkError::Busy(_))
    }

    /// Whether the worker quit (the work will never be taken).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::threads::TryDoWorkError;
    ///
    /// assert!(TryDoWorkError::Quit(()).is_quit());
    /// assert!(!TryDoWorkError::Busy(()).is_quit());
    /// ```
    pub fn is_quit(&self) -> bool {
        matches!(self, TryDoWorkError::Quit(_))
    }
}

/// A refusal by a worker that quit is the `Quit` case.
///
/// # Examples
///
/// ```
/// use weft::AlreadyQuit;
/// use weft::threads::TryDoWorkError;
///
/// assert!(TryDoWorkError::from(AlreadyQuit(1)).is_quit());
/// ```
impl<T> From<AlreadyQuit<T>> for TryDoWorkError<T> {
    fn from(AlreadyQuit(work): AlreadyQuit<T>) -> Self {
        TryDoWorkError::Quit(work)
    }
}

impl<T> fmt::Debug for TryDoWorkError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryDoWorkError::Busy(_) => "Busy(..)",
            TryDoWorkError::Quit(_) => "Quit(..)",
        })
    }
}

impl<T> fmt::Display for TryDoWorkError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryDoWorkError::Busy(_) => "worker busy",
            TryDoWorkError::Quit(_) => "already quit",
        })
    }
}

impl<T> Error for TryDoWorkError<T> {}
