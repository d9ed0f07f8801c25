//! Twisted's `LineReceiver` as a [`Protocol`] adapter: [`LineProtocol`]
//! splits the byte stream with a [`LineBuffer`] and calls a
//! [`LineReceiver`] once per line.
//!
//! Design: the adapter owns the buffer and pulls events from it one at a
//! time, handing the receiver a [`LineMode`] so that it can switch between
//! line and raw mode from inside a callback; the next event already obeys
//! the switch (Twisted's `setRawMode` semantics without its re-entrancy
//! guard). Lines left in a chunk after the transport starts closing are
//! dropped, as in Twisted (a "quit" line ends processing).
//!
//! Invariant: the receiver never sees a line longer than the maximum; an
//! overflow is reported once through
//! [`line_length_exceeded`](LineReceiver::line_length_exceeded) and nothing
//! is delivered after it.

use super::line::{LineBuffer, LineEvent};
use super::protocol::{CloseReason, Protocol, Transport};

/// The callbacks of a line-oriented protocol (Twisted's `LineReceiver`).
/// Wrap it in a [`LineProtocol`] to run it on a connection.
///
/// # Examples
///
/// ```
/// use weft::net::{LineMode, LineProtocol, LineReceiver, Transport};
///
/// /// Answers each line with its length.
/// #[derive(Default)]
/// struct Measure(Option<Transport>);
///
/// impl LineReceiver for Measure {
///     fn connection_made(&mut self, t: Transport) {
///         self.0 = Some(t);
///     }
///     fn line_received(&mut self, line: &[u8], _: &mut LineMode<'_>) {
///         let reply = format!("{}\r\n", line.len());
///         let _ = self.0.as_ref().unwrap().write(reply.as_bytes());
///     }
/// }
///
/// let factory = || LineProtocol::new(Measure::default());
/// # let _ = factory;
/// ```
pub trait LineReceiver: 'static {
    /// The connection is up (see [`Protocol::connection_made`]).
    fn connection_made(&mut self, transport: Transport) {
        let _ = transport;
    }

    /// One complete line, without its delimiter.
    fn line_received(&mut self, line: &[u8], mode: &mut LineMode<'_>);

    /// Bytes received in raw mode. The default discards them.
    fn raw_data_received(&mut self, data: &[u8], mode: &mut LineMode<'_>) {
        let _ = (data, mode);
    }

    /// A line passed the maximum length; `data` is the offending bytes and
    /// everything received after them. The default closes the connection
    /// gracefully with [`CloseReason::LineTooLong`]; nothing more is read.
    fn line_length_exceeded(&mut self, data: &[u8], transport: &Transport) {
        let _ = data;
        transport.lose_connection_with(CloseReason::LineTooLong);
    }

    /// See [`Protocol::eof_received`].
    fn eof_received(&mut self) -> bool {
        false
    }

    /// See [`Protocol::connection_lost`].
    fn connection_lost(&mut self, reason: CloseReason) {
        let _ = reason;
    }

    /// See [`Protocol::pause_writing`].
    fn pause_writing(&mut self) {}

    /// See [`Protocol::resume_writing`].
    fn resume_writing(&mut self) {}

    /// See [`Protocol::timeout_connection`].
    fn timeout_connection(&mut self, transport: &Transport) {
        transport.abort_with(CloseReason::TimedOut);
    }
}

/// The mode switch handed to [`LineReceiver`] callbacks.
///
/// # Examples
///
/// ```
/// use weft::net::{LineMode, LineReceiver};
///
/// /// A header line "RAW", then raw bytes until EOF.
/// struct Upload(Vec<u8>);
///
/// impl LineReceiver for Upload {
///     fn line_received(&mut self, line: &[u8], mode: &mut LineMode<'_>) {
///         if line == b"RAW" {
///             mode.set_raw_mode();
///         }
///     }
///     fn raw_data_received(&mut self, data: &[u8], _: &mut LineMode<'_>) {
///         self.0.extend_from_slice(data);
///     }
/// }
/// # let _ = Upload(Vec::new());
/// ```
#[derive(Debug)]
pub struct LineMode<'a>(&'a mut LineBuffer);

impl LineMode<'_> {
    /// From the next byte on, deliver raw data (including bytes already
    /// received after the current line).
    ///
    /// # Examples
    ///
    /// See [`LineMode`].
    pub fn set_raw_mode(&mut self) {
        self.0.set_raw_mode();
    }

    /// Back to lines from the next byte on.
    ///
    /// # Examples
    ///
    /// ```
    /// fn done(mode: &mut weft::net::LineMode<'_>) {
    ///     mode.set_line_mode();
    /// }
    /// ```
    pub fn set_line_mode(&mut self) {
        self.0.set_line_mode();
    }

    /// Whether raw mode is on.
    ///
    /// # Examples
    ///
    /// ```
    /// fn raw(mode: &weft::net::LineMode<'_>) -> bool {
    ///     mode.is_raw_mode()
    /// }
    /// ```
    pub fn is_raw_mode(&self) -> bool {
        self.0.is_raw_mode()
    }

    /// Empties the receive buffer and returns what it held (Twisted's
    /// `clearLineBuffer`).
    ///
    /// # Examples
    ///
    /// ```
    /// fn discard(mode: &mut weft::net::LineMode<'_>) -> usize {
    ///     mode.clear_line_buffer().len()
    /// }
    /// ```
    pub fn clear_line_buffer(&mut self) -> Vec<u8> {
        self.0.clear()
    }
}

/// Runs a [`LineReceiver`] as a [`Protocol`].
///
/// Unlike Twisted's `LineReceiver`, [`Transport::pause_reading`] stops
/// further reads only: lines already received in the current chunk are
/// still delivered.
///
/// # Examples
///
/// ```
/// use weft::net::{LineMode, LineProtocol, LineReceiver};
///
/// struct Print;
/// impl LineReceiver for Print {
///     fn line_received(&mut self, line: &[u8], _: &mut LineMode<'_>) {
///         println!("{}", String::from_utf8_lossy(line));
///     }
/// }
///
/// let p = LineProtocol::new(Print).with_delimiter(b"\n").max_length(1024);
/// let _: &Print = p.receiver();
/// ```
#[derive(Debug)]
pub struct LineProtocol<R> {
    receiver: R,
    lines: LineBuffer,
    transport: Option<Transport>,
}

impl<R: LineReceiver> LineProtocol<R> {
    /// `receiver` on `\r\n`-delimited lines of at most 16 KiB.
    ///
    /// # Examples
    ///
    /// See [`LineProtocol`].
    pub fn new(receiver: R) -> Self {
        LineProtocol {
            receiver,
            lines: LineBuffer::new(),
            transport: None,
        }
    }

    /// Uses another delimiter (e.g. `b"\n"`).
    ///
    /// # Panics
    ///
    /// If `delimiter` is empty.
    ///
    /// # Examples
    ///
    /// See [`LineProtocol`].
    pub fn with_delimiter(mut self, delimiter: &[u8]) -> Self {
        let max = self.lines.max_line_length();
        self.lines = LineBuffer::with_delimiter(delimiter).max_length(max);
        self
    }

    /// Sets the maximum line length (delimiter not counted).
    ///
    /// # Examples
    ///
    /// See [`LineProtocol`].
    pub fn max_length(mut self, max: usize) -> Self {
        self.lines = self.lines.max_length(max);
        self
    }

    /// The wrapped receiver.
    ///
    /// # Examples
    ///
    /// See [`LineProtocol`].
    pub fn receiver(&self) -> &R {
        &self.receiver
    }

    fn pump(&mut self) {
        while let Some(event) = self.lines.next_event() {
            match event {
                LineEvent::Line(line) => {
                    self.receiver
                        .line_received(&line, &mut LineMode(&mut self.lines));
                }
                LineEvent::Raw(data) => {
                    self.receiver
                        .raw_data_received(&data, &mut LineMode(&mut self.lines));
                }
                LineEvent::TooLong(data) => {
                    if let Some(t) = &self.transport {
                        tracing::debug!(
                            bytes = data.len(),
                            peer = ?t.peer_address(),
                            "line too long; closing the connection"
                        );
                        t.pause_reading();
                        self.receiver.line_length_exceeded(&data, t);
                    }
                }
            }
            if self.transport.as_ref().is_some_and(Transport::is_closing) {
                break;
            }
        }
    }
}

impl<R: LineReceiver> Protocol for LineProtocol<R> {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport.clone());
        self.receiver.connection_made(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.lines.feed(data);
        self.pump();
    }

    fn eof_received(&mut self) -> bool {
        self.receiver.eof_received()
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        self.transport = None;
        self.receiver.connection_lost(reason);
    }

    fn pause_writing(&mut self) {
        self.receiver.pause_writing();
    }

    fn resume_writing(&mut self) {
        self.receiver.resume_writing();
    }

    fn timeout_connection(&mut self, transport: &Transport) {
        self.receiver.timeout_connection(transport);
    }
}
