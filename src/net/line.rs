//! The line splitter behind [`LineReceiver`](crate::net::LineReceiver): a
//! pure state machine, no I/O.
//!
//! Design: bytes are [`fed`](LineBuffer::feed) in, events are
//! [pulled](LineBuffer::next_event) out one at a time. Pulling (rather than
//! calling back) makes every mode switch exact: after an event the owner may
//! call [`set_raw_mode`](LineBuffer::set_raw_mode) or
//! [`set_line_mode`](LineBuffer::set_line_mode) and the very next event obeys
//! the new mode, so bytes that arrived in the same read as the line that
//! asked for the switch go where the protocol expects (Twisted's
//! `setRawMode` rule, spec/net.md §2.6). Nothing re-enters.
//!
//! Limits follow Twisted's observable rules: a complete line longer than
//! `max_length` (the delimiter not counted) is rejected; a partial line is
//! rejected once it reaches `max_length + delimiter.len()` bytes, the most
//! a line of exactly `max_length` bytes with a delimiter split across reads
//! could need. The rejection carries the offending bytes and everything after
//! them, and the buffer is poisoned: no later event except `TooLong` (the
//! connection is going away).
//!
//! Invariants:
//! - `scan_from <= buf.len()`, and no delimiter starts before `scan_from`:
//!   each byte is scanned a bounded number of times (linear in the input,
//!   unlike Twisted's rescans from the start).
//! - In raw mode `buf` is empty after each event: raw bytes are handed on as
//!   they come.

use std::fmt;

/// Twisted's `LineReceiver.MAX_LENGTH`: the longest line accepted, 16 KiB.
///
/// # Examples
///
/// ```
/// assert_eq!(weft::net::DEFAULT_MAX_LINE_LENGTH, 16 * 1024);
/// ```
pub const DEFAULT_MAX_LINE_LENGTH: usize = 16 * 1024;

/// One thing a [`LineBuffer`] produced.
///
/// # Examples
///
/// ```
/// use weft::net::{LineBuffer, LineEvent};
///
/// let mut lines = LineBuffer::new();
/// lines.feed(b"hi\r\n");
/// assert_eq!(lines.next_event(), Some(LineEvent::Line(b"hi".to_vec())));
/// assert_eq!(lines.next_event(), None);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// A complete line, without its delimiter.
    Line(Vec<u8>),
    /// Bytes received in raw mode (possibly containing delimiters).
    Raw(Vec<u8>),
    /// A line exceeded the maximum length. Carries the offending bytes and
    /// everything buffered after them; the buffer accepts nothing more.
    TooLong(Vec<u8>),
}

impl fmt::Debug for LineEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineEvent::Line(l) => write!(f, "Line({:?})", String::from_utf8_lossy(l)),
            LineEvent::Raw(r) => write!(f, "Raw({:?})", String::from_utf8_lossy(r)),
            LineEvent::TooLong(b) => write!(f, "TooLong({} bytes)", b.len()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Line,
    Raw,
    /// A too-long line was reported; everything after is discarded.
    Failed,
}

/// Splits a byte stream into lines, with a maximum line length and a raw
/// mode (Twisted's `LineReceiver` buffer, without the protocol).
///
/// # Examples
///
/// ```
/// use weft::net::{LineBuffer, LineEvent};
///
/// let mut lines = LineBuffer::with_delimiter(b"\n");
/// lines.feed(b"one\ntw");
/// lines.feed(b"o\nrest");
/// assert_eq!(lines.next_event(), Some(LineEvent::Line(b"one".to_vec())));
/// assert_eq!(lines.next_event(), Some(LineEvent::Line(b"two".to_vec())));
/// lines.set_raw_mode();
/// assert_eq!(lines.next_event(), Some(LineEvent::Raw(b"rest".to_vec())));
/// ```
#[derive(Clone, Debug)]
pub struct LineBuffer {
    delimiter: Vec<u8>,
    max_length: usize,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf` (consumed lines are removed
    /// lazily, in one `drain` per feed, not one per line).
    start: usize,
    scan_from: usize,
    mode: Mode,
}

impl Default for LineBuffer {
    fn default() -> Self {
        LineBuffer::new()
    }
}

impl LineBuffer {
    /// A splitter on `b"\r\n"` with a 16 KiB maximum line length.
    ///
    /// # Examples
    ///
    /// ```
    /// let lines = weft::net::LineBuffer::new();
    /// assert_eq!(lines.delimiter(), b"\r\n");
    /// ```
    pub fn new() -> Self {
        LineBuffer::with_delimiter(b"\r\n")
    }

    /// A splitter on `delimiter` with a 16 KiB maximum line length.
    ///
    /// # Panics
    ///
    /// If `delimiter` is empty (a programming error: no line could end).
    ///
    /// # Examples
    ///
    /// ```
    /// let lines = weft::net::LineBuffer::with_delimiter(b"\n");
    /// assert_eq!(lines.delimiter(), b"\n");
    /// ```
    pub fn with_delimiter(delimiter: &[u8]) -> Self {
        assert!(!delimiter.is_empty(), "a line delimiter must not be empty");
        LineBuffer {
            delimiter: delimiter.to_vec(),
            max_length: DEFAULT_MAX_LINE_LENGTH,
            buf: Vec::new(),
            start: 0,
            scan_from: 0,
            mode: Mode::Line,
        }
    }

    /// Sets the maximum line length (delimiter not counted).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::net::{LineBuffer, LineEvent};
    ///
    /// let mut lines = LineBuffer::new().max_length(3);
    /// lines.feed(b"abc\r\nabcd\r\n");
    /// assert_eq!(lines.next_event(), Some(LineEvent::Line(b"abc".to_vec())));
    /// assert_eq!(lines.next_event(), Some(LineEvent::TooLong(b"abcd\r\n".to_vec())));
    /// ```
    pub fn max_length(mut self, max_length: usize) -> Self {
        self.max_length = max_length;
        self
    }

    /// The delimiter.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(weft::net::LineBuffer::new().delimiter(), b"\r\n");
    /// ```
    pub fn delimiter(&self) -> &[u8] {
        &self.delimiter
    }

    /// The maximum line length.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(weft::net::LineBuffer::new().max_line_length(), 16 * 1024);
    /// ```
    pub fn max_line_length(&self) -> usize {
        self.max_length
    }

    /// Appends received bytes. Call [`next_event`](Self::next_event) until it
    /// returns `None` afterwards. Bytes fed after a `TooLong` are discarded.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut lines = weft::net::LineBuffer::new();
    /// lines.feed(b"partial");
    /// assert_eq!(lines.next_event(), None);
    /// assert_eq!(lines.buffered(), b"partial");
    /// ```
    pub fn feed(&mut self, data: &[u8]) {
        if self.mode == Mode::Failed {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scan_from -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next line, raw chunk or overflow, if the buffered bytes make one.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::net::{LineBuffer, LineEvent};
    ///
    /// let mut lines = LineBuffer::new();
    /// lines.feed(b"a\r\nb\r\n");
    /// assert_eq!(lines.next_event(), Some(LineEvent::Line(b"a".to_vec())));
    /// assert_eq!(lines.next_event(), Some(LineEvent::Line(b"b".to_vec())));
    /// assert_eq!(lines.next_event(), None);
    /// ```
    pub fn next_event(&mut self) -> Option<LineEvent> {
        match self.mode {
            Mode::Failed => None,
            Mode::Raw => {
                if self.start == self.buf.len() {
                    return None;
                }
                Some(LineEvent::Raw(self.take_rest()))
            }
            Mode::Line => self.next_line(),
        }
    }

    fn next_line(&mut self) -> Option<LineEvent> {
        let d = self.delimiter.len();
        let from = self.scan_from.max(self.start);
        let found = find(&self.buf[from..], &self.delimiter).map(|i| from + i);
        match found {
            Some(end) => {
                if end - self.start > self.max_length {
                    return Some(self.fail());
                }
                let line = self.buf[self.start..end].to_vec();
                self.start = end + d;
                self.scan_from = self.start;
                Some(LineEvent::Line(line))
            }
            None => {
                let pending = self.buf.len() - self.start;
                if pending >= self.max_length + d {
                    return Some(self.fail());
                }
                // A delimiter may straddle the next feed: rescan its
                // possible start only.
                self.scan_from = self.buf.len().saturating_sub(d - 1).max(self.start);
                None
            }
        }
    }

    fn fail(&mut self) -> LineEvent {
        self.mode = Mode::Failed;
        LineEvent::TooLong(self.take_rest())
    }

    fn take_rest(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        self.scan_from = 0;
        rest
    }

    /// Switches to raw mode: everything still buffered, and everything fed
    /// later, comes out as [`LineEvent::Raw`] (Twisted's `setRawMode`).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::net::{LineBuffer, LineEvent};
    ///
    /// let mut lines = LineBuffer::new();
    /// lines.feed(b"a\r\nraw\r\nrest");
    /// assert_eq!(lines.next_event(), Some(LineEvent::Line(b"a".to_vec())));
    /// lines.set_raw_mode();
    /// assert_eq!(lines.next_event(), Some(LineEvent::Raw(b"raw\r\nrest".to_vec())));
    /// ```
    pub fn set_raw_mode(&mut self) {
        if self.mode == Mode::Line {
            self.mode = Mode::Raw;
        }
    }

    /// Switches back to line mode; later bytes are split into lines again
    /// (Twisted's `setLineMode`). Feed any bytes the raw consumer did not
    /// want back with [`feed`](Self::feed).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::net::{LineBuffer, LineEvent};
    ///
    /// let mut lines = LineBuffer::new();
    /// lines.set_raw_mode();
    /// lines.feed(b"xx");
    /// assert_eq!(lines.next_event(), Some(LineEvent::Raw(b"xx".to_vec())));
    /// lines.set_line_mode();
    /// lines.feed(b"line\r\n");
    /// assert_eq!(lines.next_event(), Some(LineEvent::Line(b"line".to_vec())));
    /// ```
    pub fn set_line_mode(&mut self) {
        if self.mode == Mode::Raw {
            self.mode = Mode::Line;
            self.scan_from = self.start;
        }
    }

    /// Whether the buffer is in raw mode.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut lines = weft::net::LineBuffer::new();
    /// lines.set_raw_mode();
    /// assert!(lines.is_raw_mode());
    /// ```
    pub fn is_raw_mode(&self) -> bool {
        self.mode == Mode::Raw
    }

    /// The bytes received but not yet handed out.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut lines = weft::net::LineBuffer::new();
    /// lines.feed(b"x\r\ny");
    /// lines.next_event();
    /// assert_eq!(lines.buffered(), b"y");
    /// ```
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Empties the buffer and returns what it held (Twisted's
    /// `clearLineBuffer`).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut lines = weft::net::LineBuffer::new();
    /// lines.feed(b"half");
    /// assert_eq!(lines.clear(), b"half");
    /// assert!(lines.buffered().is_empty());
    /// ```
    pub fn clear(&mut self) -> Vec<u8> {
        self.take_rest()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() == 1 {
        return haystack.iter().position(|&b| b == needle[0]);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(lines: &mut LineBuffer) -> Vec<LineEvent> {
        std::iter::from_fn(|| lines.next_event()).collect()
    }

    fn line(s: &[u8]) -> LineEvent {
        LineEvent::Line(s.to_vec())
    }

    #[test]
    fn complete_line_of_exactly_max_is_accepted_and_one_more_is_rejected() {
        let max = DEFAULT_MAX_LINE_LENGTH;
        let mut ok = LineBuffer::new();
        ok.feed(&vec![b'a'; max]);
        ok.feed(b"\r\n");
        assert_eq!(drain(&mut ok), vec![line(&vec![b'a'; max])]);

        let mut bad = LineBuffer::new();
        let mut input = vec![b'a'; max + 1];
        input.extend_from_slice(b"\r\n");
        bad.feed(&input);
        assert_eq!(drain(&mut bad), vec![LineEvent::TooLong(input)]);
    }

    #[test]
    fn partial_line_limit_allows_a_split_delimiter() {
        let max = DEFAULT_MAX_LINE_LENGTH;
        // max + 1 bytes without a delimiter: could be max bytes plus "\r".
        let mut lines = LineBuffer::new();
        lines.feed(&vec![b'a'; max + 1]);
        assert_eq!(drain(&mut lines), vec![]);
        // One more byte can no longer be a legal line.
        lines.feed(b"a");
        assert_eq!(
            drain(&mut lines),
            vec![LineEvent::TooLong(vec![b'a'; max + 2])]
        );
    }

    #[test]
    fn too_long_carries_the_rest_and_stops_everything() {
        let mut lines = LineBuffer::new().max_length(4);
        lines.feed(b"ok\r\n123456\r\nnext\r\n");
        assert_eq!(
            drain(&mut lines),
            vec![
                line(b"ok"),
                LineEvent::TooLong(b"123456\r\nnext\r\n".to_vec())
            ]
        );
        lines.feed(b"more\r\n");
        assert_eq!(drain(&mut lines), vec![]);
    }

    #[test]
    fn raw_mode_gets_the_buffer_including_delimiters_and_back() {
        let mut lines = LineBuffer::new();
        lines.feed(b"a\r\nraw\r\nrest\r\nmore");
        assert_eq!(lines.next_event(), Some(line(b"a")));
        assert_eq!(lines.next_event(), Some(line(b"raw")));
        lines.set_raw_mode();
        assert_eq!(
            lines.next_event(),
            Some(LineEvent::Raw(b"rest\r\nmore".to_vec()))
        );
        lines.feed(b"x\r\n");
        assert_eq!(lines.next_event(), Some(LineEvent::Raw(b"x\r\n".to_vec())));
        lines.set_line_mode();
        lines.feed(b"y\r\nz");
        assert_eq!(drain(&mut lines), vec![line(b"y")]);
        assert_eq!(lines.buffered(), b"z");
    }

    #[test]
    fn delimiter_split_across_reads() {
        let mut lines = LineBuffer::new();
        lines.feed(b"abc\r");
        assert_eq!(drain(&mut lines), vec![]);
        lines.feed(b"\ndef");
        assert_eq!(drain(&mut lines), vec![line(b"abc")]);
    }

    #[test]
    fn empty_lines_and_newline_delimiter() {
        let mut lines = LineBuffer::with_delimiter(b"\n");
        lines.feed(b"\n\na\n");
        assert_eq!(drain(&mut lines), vec![line(b""), line(b""), line(b"a")]);
    }

    /// Reference result: split the whole input at once.
    fn whole(input: &[u8], delim: &[u8], max: usize) -> Vec<LineEvent> {
        let mut lines = LineBuffer::with_delimiter(delim).max_length(max);
        lines.feed(input);
        drain(&mut lines)
    }

    proptest! {
        #[test]
        fn any_split_of_reads_yields_the_same_lines(
            input in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), any::<u8>()], 0..400),
            cuts in proptest::collection::vec(0usize..400, 0..20),
            crlf in any::<bool>(),
        ) {
            let delim: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let expected = whole(&input, delim, 1 << 20);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            let mut lines = LineBuffer::with_delimiter(delim).max_length(1 << 20);
            let mut got = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain(std::iter::once(input.len())) {
                lines.feed(&input[at..c]);
                at = c;
                got.extend(drain(&mut lines));
            }
            prop_assert_eq!(got, expected);
            // What is left is exactly the tail after the last delimiter.
            let tail_start = input.windows(delim.len()).rposition(|w| w == delim).map_or(0, |i| i + delim.len());
            prop_assert_eq!(lines.buffered(), &input[tail_start..]);
        }

        #[test]
        fn any_input_yields_lines_or_closes_with_a_reason(
            input in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..10),
            max in 0usize..40,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            let mut lines = LineBuffer::new().max_length(max);
            let mut events = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain(std::iter::once(input.len())) {
                lines.feed(&input[at..c]);
                at = c;
                events.extend(drain(&mut lines));
            }
            let mut seen_too_long = false;
            for e in &events {
                match e {
                    LineEvent::Line(l) => {
                        prop_assert!(!seen_too_long, "a line after the overflow");
                        prop_assert!(l.len() <= max);
                    }
                    LineEvent::TooLong(_) => {
                        prop_assert!(!seen_too_long, "two overflows");
                        seen_too_long = true;
                    }
                    LineEvent::Raw(_) => prop_assert!(false, "raw event in line mode"),
                }
            }
            // Lines plus delimiters plus overflow bytes plus the buffer
            // account for every input byte.
            let accounted: usize = events.iter().map(|e| match e {
                LineEvent::Line(l) => l.len() + 2,
                LineEvent::TooLong(b) | LineEvent::Raw(b) => b.len(),
            }).sum::<usize>() + lines.buffered().len();
            if !seen_too_long {
                prop_assert_eq!(accounted, input.len());
                prop_assert!(lines.buffered().len() < max + 2);
            }
        }
    }
}
