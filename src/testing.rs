//! Test doubles: a manual clock and (from the `threads` module) memory workers.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use weft::{Clock, testing::ManualClock};
//!
//! let clock = ManualClock::new();
//! clock.advance(Duration::from_secs(1));
//! assert_eq!(clock.now(), Duration::from_secs(1));
//! ```

pub use crate::time::ManualClock;
