//! Networking (placeholder from the netproto branch until netcore's
//! `net/mod.rs` lands; only the protocol layer's lines are here).

mod line;
mod line_receiver;
mod protocol;

pub use line::{DEFAULT_MAX_LINE_LENGTH, LineBuffer, LineEvent};
pub use line_receiver::{LineMode, LineProtocol, LineReceiver};
pub use protocol::{
    Address, CloseReason, DEFAULT_CLOSE_TIMEOUT, Factory, InvalidWriteLimits, Protocol, Transport,
    WriteError, WriteLimits,
};
