//! Networking (placeholder from the netproto branch until netcore's
//! `net/mod.rs` lands; only the protocol layer's lines are here).

mod line;

pub use line::{DEFAULT_MAX_LINE_LENGTH, LineBuffer, LineEvent};
