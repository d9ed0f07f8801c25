//! weft-db: Twisted's `adbapi` for weft.
//!
//! TODO crate docs

#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod connector;
mod error;
mod pool;
mod worker;

pub use connector::{Connector, Interrupter, Role, SqliteConnector, Synchronous};
pub use error::{DbError, DriverError, ErrorKind, WithStatement};
pub use pool::{ConnectionPool, PoolBuilder};

/// Locks `m`, ignoring poisoning: a panic elsewhere never wedges the pool.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
