//! Typed errors: [`DbError`] for everything the pool reports, and
//! [`DriverError`], the classification a driver's own error type provides.
//!
//! Invariant: the error a caller sees is the *original* one (Twisted's
//! rule); a failed rollback after it is logged, never substituted.

use std::fmt;

/// What kind of failure a driver error is, as far as the pool cares.
///
/// # Examples
///
/// ```
/// use weft_db::{DriverError, ErrorKind};
///
/// let e = rusqlite::Error::SqliteFailure(
///     rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE),
///     None,
/// );
/// assert_eq!(e.kind(), ErrorKind::Constraint);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A constraint (UNIQUE, PRIMARY KEY, FOREIGN KEY, CHECK, NOT NULL) failed.
    Constraint,
    /// The database was busy or locked by another connection.
    Busy,
    /// The statement was interrupted (a cancelled job).
    Interrupted,
    /// A write was attempted on a read-only connection.
    ReadOnly,
    /// The connection is unusable (I/O error, corrupt or moved file, ...):
    /// the pool drops it and opens a fresh one for the next job when
    /// reconnect is on.
    ConnectionLost,
    /// Anything else (syntax errors, missing tables, type mismatches, ...).
    Other,
}

/// A driver's error type, classified for the pool.
///
/// # Examples
///
/// ```
/// use weft_db::{DriverError, ErrorKind};
///
/// #[derive(Debug)]
/// struct Gone;
/// impl std::fmt::Display for Gone {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("connection gone")
///     }
/// }
/// impl std::error::Error for Gone {}
/// impl DriverError for Gone {
///     fn kind(&self) -> ErrorKind { ErrorKind::ConnectionLost }
/// }
/// assert_eq!(Gone.kind(), ErrorKind::ConnectionLost);
/// ```
pub trait DriverError: std::error::Error + Send + Sync + 'static {
    /// The kind of this error.
    fn kind(&self) -> ErrorKind;
}

impl DriverError for rusqlite::Error {
    fn kind(&self) -> ErrorKind {
        use rusqlite::ErrorCode as C;
        let Some(code) = self.sqlite_error_code() else {
            return ErrorKind::Other;
        };
        if let rusqlite::Error::SqliteFailure(e, _) = self
            && e.extended_code == rusqlite::ffi::SQLITE_READONLY_DBMOVED
        {
            return ErrorKind::ConnectionLost;
        }
        match code {
            C::ConstraintViolation => ErrorKind::Constraint,
            C::DatabaseBusy | C::DatabaseLocked => ErrorKind::Busy,
            C::OperationInterrupted => ErrorKind::Interrupted,
            C::ReadOnly => ErrorKind::ReadOnly,
            C::SystemIoFailure
            | C::DatabaseCorrupt
            | C::NotADatabase
            | C::CannotOpen
            | C::OutOfMemory
            | C::DiskFull => ErrorKind::ConnectionLost,
            _ => ErrorKind::Other,
        }
    }
}

/// Everything a pool operation can fail with.
///
/// `E` is the driver's error type ([`rusqlite::Error`] for SQLite).
///
/// # Examples
///
/// ```
/// use weft_db::DbError;
///
/// let e: DbError = DbError::Cancelled;
/// assert!(e.is_cancelled());
/// assert_eq!(e.to_string(), "database job cancelled");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum DbError<E = rusqlite::Error> {
    /// The driver failed; `statement` is the SQL text when the pool knows it
    /// (always for `run_query` and `run_operation`, and when an interaction
    /// used [`WithStatement`]).
    Sql {
        /// The statement that failed, if known.
        statement: Option<String>,
        /// The driver's error.
        source: E,
    },
    /// A connection could not be opened; the next job tries again.
    Open {
        /// The driver's error.
        source: E,
    },
    /// The job was cancelled: it never ran, or it was interrupted and rolled
    /// back.
    Cancelled,
    /// The job panicked; its transaction was rolled back and the pool goes on.
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The pool is closed (or its reactor has shut down).
    Stopped,
    /// A [`SharedPool`](crate::SharedPool) was called on a thread that runs
    /// no reactor: there is no loop to deliver the result on. The job was
    /// not submitted.
    NotOnLoop,
}

impl<E: DriverError> DbError<E> {
    /// The driver error's kind, if this is a driver error.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(weft_db::DbError::<rusqlite::Error>::Stopped.kind(), None);
    /// ```
    pub fn kind(&self) -> Option<ErrorKind> {
        self.driver_error().map(DriverError::kind)
    }

    /// Whether this is a constraint violation (UNIQUE, PRIMARY KEY, ...).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft_db::{DbError, WithStatement};
    ///
    /// let conn = rusqlite::Connection::open_in_memory().unwrap();
    /// conn.execute_batch("create table t (x integer primary key)").unwrap();
    /// conn.execute("insert into t values (1)", []).unwrap();
    /// let sql = "insert into t values (1)";
    /// let e: DbError = conn.execute(sql, []).with_statement(sql).unwrap_err();
    /// assert!(e.is_constraint());
    /// assert_eq!(e.statement(), Some(sql));
    /// ```
    pub fn is_constraint(&self) -> bool {
        self.kind() == Some(ErrorKind::Constraint)
    }

    /// Whether the database was busy or locked.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!weft_db::DbError::<rusqlite::Error>::Cancelled.is_busy());
    /// ```
    pub fn is_busy(&self) -> bool {
        self.kind() == Some(ErrorKind::Busy)
    }
}

impl<E> DbError<E> {
    /// Whether the job was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(weft_db::DbError::<rusqlite::Error>::Cancelled.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self, DbError::Cancelled)
    }

    /// Whether the job panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = weft_db::DbError::<rusqlite::Error>::Panicked { message: "boom".into() };
    /// assert!(e.is_panic());
    /// ```
    pub fn is_panic(&self) -> bool {
        matches!(self, DbError::Panicked { .. })
    }

    /// The SQL text of the failed statement, when known.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(weft_db::DbError::<rusqlite::Error>::Stopped.statement(), None);
    /// ```
    pub fn statement(&self) -> Option<&str> {
        match self {
            DbError::Sql { statement, .. } => statement.as_deref(),
            _ => None,
        }
    }

    /// The driver's error, for [`Sql`](DbError::Sql) and
    /// [`Open`](DbError::Open).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(weft_db::DbError::<rusqlite::Error>::Stopped.driver_error().is_none());
    /// ```
    pub fn driver_error(&self) -> Option<&E> {
        match self {
            DbError::Sql { source, .. } | DbError::Open { source } => Some(source),
            _ => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for DbError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Sql {
                statement: Some(sql),
                source,
            } => write!(f, "{source} (in `{sql}`)"),
            DbError::Sql {
                statement: None,
                source,
            } => write!(f, "{source}"),
            DbError::Open { source } => write!(f, "could not open a connection: {source}"),
            DbError::Cancelled => f.write_str("database job cancelled"),
            DbError::Panicked { message } => write!(f, "database job panicked: {message}"),
            DbError::Stopped => f.write_str("connection pool closed"),
            DbError::NotOnLoop => f.write_str("not called on a reactor's loop thread"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for DbError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DbError::Sql { source, .. } | DbError::Open { source } => Some(source),
            _ => None,
        }
    }
}

impl<E> From<weft::Cancelled> for DbError<E> {
    fn from(_: weft::Cancelled) -> Self {
        DbError::Cancelled
    }
}

impl<E: DriverError> From<E> for DbError<E> {
    fn from(source: E) -> Self {
        DbError::Sql {
            statement: None,
            source,
        }
    }
}

/// Attaches the statement text to a driver result, so the error says which
/// SQL failed.
///
/// # Examples
///
/// ```
/// use weft_db::{DbError, WithStatement};
///
/// let conn = rusqlite::Connection::open_in_memory().unwrap();
/// let sql = "select * from missing";
/// let e: DbError = conn.execute(sql, []).with_statement(sql).unwrap_err();
/// assert_eq!(e.statement(), Some(sql));
/// ```
pub trait WithStatement<T, E> {
    /// Maps an error into [`DbError::Sql`] carrying `sql`.
    ///
    /// # Errors
    ///
    /// The driver's error, with the statement.
    fn with_statement(self, sql: &str) -> Result<T, DbError<E>>;
}

impl<T, E> WithStatement<T, E> for Result<T, E> {
    fn with_statement(self, sql: &str) -> Result<T, DbError<E>> {
        self.map_err(|source| DbError::Sql {
            statement: Some(sql.to_owned()),
            source,
        })
    }
}
