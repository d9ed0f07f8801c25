//! The transport's write buffer and its flow control: asyncio's contract
//! (spec/net.md §3.3) plus a hard cap (§1 item 5).
//!
//! Design: a queue of owned chunks, flushed with vectored writes of up to
//! [`MAX_IOVECS`] chunks. Small writes are appended to the last chunk so a
//! chatty protocol does not make one iovec per byte. The buffer knows
//! nothing about sockets: [`WriteBuffer::flush`] takes the vectored-write
//! function, so tests drive it with a fake that accepts N bytes per call or
//! reports `WouldBlock`.
//!
//! Invariants:
//! - `len` is the sum of the chunk lengths minus `front_sent`, and never
//!   exceeds `limits.hard` (a write that would pass it is refused whole).
//! - `paused` flips to true only when `len > high` and back only when
//!   `len <= low`, so `Pause` and `Resume` alternate, starting with `Pause`:
//!   exactly one of each per crossing.
//! - No chunk in the queue is empty.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice};

/// At most this many chunks go to one vectored write (well under every
/// platform's `IOV_MAX`).
pub(crate) const MAX_IOVECS: usize = 64;

/// Writes shorter than this are merged into the previous chunk.
const COALESCE: usize = 4 * 1024;

/// The write buffer's water marks and hard limit.
///
/// `pause_writing` is delivered when the buffer grows strictly above `high`;
/// `resume_writing` when it drains to `low` or below. A write that would
/// take the buffer above `hard` is refused and the connection is closed with
/// [`CloseReason::WriteBufferOverflow`](crate::net::CloseReason::WriteBufferOverflow).
///
/// # Examples
///
/// ```
/// use weft::net::WriteLimits;
///
/// let limits = WriteLimits::default();
/// assert_eq!((limits.high(), limits.low()), (64 * 1024, 16 * 1024));
/// assert_eq!(limits.hard(), 1024 * 1024);
///
/// let small = WriteLimits::new(1000).unwrap();
/// assert_eq!((small.low(), small.hard()), (250, 1024 * 1024));
/// assert!(WriteLimits::new(1000).unwrap().with_low(2000).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteLimits {
    high: usize,
    low: usize,
    hard: usize,
}

/// Water marks that break `low <= high <= hard`.
///
/// # Examples
///
/// ```
/// let err = weft::net::WriteLimits::new(100).unwrap().with_hard(10).unwrap_err();
/// assert_eq!(err.to_string(), "write limits must satisfy low <= high <= hard");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidWriteLimits;

impl fmt::Display for InvalidWriteLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("write limits must satisfy low <= high <= hard")
    }
}

impl std::error::Error for InvalidWriteLimits {}

impl Default for WriteLimits {
    fn default() -> Self {
        WriteLimits::new(64 * 1024).expect("default limits are ordered")
    }
}

impl WriteLimits {
    /// `high` with asyncio's defaults for the rest: `low = high / 4`,
    /// `hard = max(16 × high, 1 MiB)`.
    ///
    /// # Errors
    ///
    /// [`InvalidWriteLimits`] if `16 × high` overflows.
    ///
    /// # Examples
    ///
    /// ```
    /// let l = weft::net::WriteLimits::new(128 * 1024).unwrap();
    /// assert_eq!(l.hard(), 2 * 1024 * 1024);
    /// ```
    pub fn new(high: usize) -> Result<Self, InvalidWriteLimits> {
        let hard = high
            .checked_mul(16)
            .ok_or(InvalidWriteLimits)?
            .max(1024 * 1024);
        Ok(WriteLimits {
            high,
            low: high / 4,
            hard,
        })
    }

    /// Replaces the low-water mark.
    ///
    /// # Errors
    ///
    /// [`InvalidWriteLimits`] if `low > high`.
    ///
    /// # Examples
    ///
    /// ```
    /// let l = weft::net::WriteLimits::new(100).unwrap().with_low(0).unwrap();
    /// assert_eq!(l.low(), 0);
    /// ```
    pub fn with_low(mut self, low: usize) -> Result<Self, InvalidWriteLimits> {
        self.low = low;
        self.check()
    }

    /// Replaces the hard limit.
    ///
    /// # Errors
    ///
    /// [`InvalidWriteLimits`] if `hard < high`.
    ///
    /// # Examples
    ///
    /// ```
    /// let l = weft::net::WriteLimits::new(100).unwrap().with_hard(400).unwrap();
    /// assert_eq!(l.hard(), 400);
    /// ```
    pub fn with_hard(mut self, hard: usize) -> Result<Self, InvalidWriteLimits> {
        self.hard = hard;
        self.check()
    }

    fn check(self) -> Result<Self, InvalidWriteLimits> {
        if self.low <= self.high && self.high <= self.hard {
            Ok(self)
        } else {
            Err(InvalidWriteLimits)
        }
    }

    /// The high-water mark.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(weft::net::WriteLimits::default().high(), 65536);
    /// ```
    pub fn high(&self) -> usize {
        self.high
    }

    /// The low-water mark.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(weft::net::WriteLimits::default().low(), 16384);
    /// ```
    pub fn low(&self) -> usize {
        self.low
    }

    /// The hard limit.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(weft::net::WriteLimits::default().hard(), 1 << 20);
    /// ```
    pub fn hard(&self) -> usize {
        self.hard
    }
}

/// A flow-control crossing the protocol must hear about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Pause,
    Resume,
}

/// The write would take the buffer above the hard limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Overflow;

/// How a flush ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Everything went out.
    Empty,
    /// The socket stopped accepting (WouldBlock or a zero-byte write);
    /// bytes remain.
    Blocked,
}

#[derive(Debug)]
pub(crate) struct WriteBuffer {
    chunks: VecDeque<Vec<u8>>,
    front_sent: usize,
    len: usize,
    limits: WriteLimits,
    paused: bool,
}

impl WriteBuffer {
    pub(crate) fn new(limits: WriteLimits) -> Self {
        WriteBuffer {
            chunks: VecDeque::new(),
            front_sent: 0,
            len: 0,
            limits,
            paused: false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn limits(&self) -> WriteLimits {
        self.limits
    }

    /// Queues all of `parts` or none of them.
    pub(crate) fn push(&mut self, parts: &[&[u8]]) -> Result<Option<Flow>, Overflow> {
        let total = parts.iter().map(|p| p.len()).sum::<usize>();
        if self.len.saturating_add(total) > self.limits.hard {
            return Err(Overflow);
        }
        for part in parts.iter().filter(|p| !p.is_empty()) {
            match self.chunks.back_mut() {
                Some(last) if part.len() < COALESCE && last.len() < COALESCE => {
                    last.extend_from_slice(part)
                }
                _ => self.chunks.push_back(part.to_vec()),
            }
        }
        self.len += total;
        Ok(self.check_flow())
    }

    /// Replaces the limits; may cross a mark at once (asyncio re-checks too).
    pub(crate) fn set_limits(&mut self, limits: WriteLimits) -> Option<Flow> {
        self.limits = limits;
        self.check_flow()
    }

    fn check_flow(&mut self) -> Option<Flow> {
        if !self.paused && self.len > self.limits.high {
            self.paused = true;
            Some(Flow::Pause)
        } else if self.paused && self.len <= self.limits.low {
            self.paused = false;
            Some(Flow::Resume)
        } else {
            None
        }
    }

    /// Writes until empty or blocked. `write` is a vectored write; it
    /// returns `WouldBlock` (or `Ok(0)`) when the socket is full. Returns
    /// the outcome and the flow crossing, if any; an error other than
    /// `WouldBlock`/`Interrupted` is returned as is.
    pub(crate) fn flush(
        &mut self,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> (io::Result<Flushed>, Option<Flow>) {
        let mut result = Ok(Flushed::Empty);
        while !self.is_empty() {
            // On the stack: no allocation per flush.
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut n = 0;
            for (slot, chunk) in slices.iter_mut().zip(&self.chunks) {
                *slot = IoSlice::new(if n == 0 {
                    &chunk[self.front_sent..]
                } else {
                    chunk
                });
                n += 1;
            }
            match write(&slices[..n]) {
                Ok(0) => {
                    result = Ok(Flushed::Blocked);
                    break;
                }
                Ok(n) => self.consume(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    result = Ok(Flushed::Blocked);
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let flow = self.check_flow();
        (result, flow)
    }

    fn consume(&mut self, mut n: usize) {
        debug_assert!(n <= self.len, "the socket wrote more than it was given");
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let front_left = self.chunks[0].len() - self.front_sent;
            if n >= front_left {
                n -= front_left;
                self.chunks.pop_front();
                self.front_sent = 0;
            } else {
                self.front_sent += n;
                n = 0;
            }
        }
    }

    /// Drops everything (abort). Leaves `paused` as is: a closed transport
    /// delivers no more flow callbacks.
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.front_sent = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that accepts up to `per_call` bytes per call while it has
    /// `room`, then reports WouldBlock.
    struct FakeSocket {
        per_call: usize,
        room: usize,
        got: Vec<u8>,
        calls: usize,
        max_slices: usize,
    }

    impl FakeSocket {
        fn new(per_call: usize, room: usize) -> Self {
            FakeSocket {
                per_call,
                room,
                got: Vec::new(),
                calls: 0,
                max_slices: 0,
            }
        }

        fn write(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            self.max_slices = self.max_slices.max(bufs.len());
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut budget = self.per_call.min(self.room);
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(budget);
                self.got.extend_from_slice(&b[..take]);
                budget -= take;
                n += take;
                if budget == 0 {
                    break;
                }
            }
            self.room -= n;
            Ok(n)
        }
    }

    fn limits(high: usize, low: usize, hard: usize) -> WriteLimits {
        WriteLimits::new(high)
            .unwrap()
            .with_low(low)
            .unwrap()
            .with_hard(hard)
            .unwrap()
    }

    #[test]
    fn bytes_arrive_in_order_through_partial_writes() {
        let mut buf = WriteBuffer::new(WriteLimits::default());
        let data: Vec<u8> = (0..50_000u32).map(|i| i as u8).collect();
        for piece in data.chunks(777) {
            buf.push(&[piece]).unwrap();
        }
        let mut sock = FakeSocket::new(1000, usize::MAX);
        let (r, _) = buf.flush(|b| sock.write(b));
        assert_eq!(r.unwrap(), Flushed::Empty);
        assert_eq!(sock.got, data);
        assert!(buf.is_empty());
    }

    #[test]
    fn would_block_keeps_the_rest_for_later() {
        let mut buf = WriteBuffer::new(WriteLimits::default());
        buf.push(&[b"hello ", b"world"]).unwrap();
        let mut sock = FakeSocket::new(3, 4);
        let (r, _) = buf.flush(|b| sock.write(b));
        assert_eq!(r.unwrap(), Flushed::Blocked);
        assert_eq!(sock.got, b"hell");
        assert_eq!(buf.len(), 7);
        sock.room = usize::MAX;
        let (r, _) = buf.flush(|b| sock.write(b));
        assert_eq!(r.unwrap(), Flushed::Empty);
        assert_eq!(sock.got, b"hello world");
    }

    #[test]
    fn pause_and_resume_exactly_once_per_crossing() {
        let mut buf = WriteBuffer::new(limits(100, 25, 1000));
        let mut events = Vec::new();
        // Exactly at high: no pause (strictly above is the rule).
        events.extend(buf.push(&[&[0; 100]]).unwrap());
        assert_eq!(events, vec![]);
        for _ in 0..5 {
            events.extend(buf.push(&[&[0; 10]]).unwrap());
        }
        assert_eq!(events, vec![Flow::Pause]);
        // Drain to 26: still paused.
        let mut sock = FakeSocket::new(usize::MAX, 150 - 26);
        let (_, flow) = buf.flush(|b| sock.write(b));
        assert_eq!((flow, buf.len()), (None, 26));
        // To 25 (= low): resume, once.
        sock.room = 1;
        let (_, flow) = buf.flush(|b| sock.write(b));
        assert_eq!(flow, Some(Flow::Resume));
        sock.room = usize::MAX;
        let (_, flow) = buf.flush(|b| sock.write(b));
        assert_eq!(flow, None);
        // A second crossing pauses again.
        assert_eq!(buf.push(&[&[0; 101]]).unwrap(), Some(Flow::Pause));
    }

    #[test]
    fn vectored_push_also_pauses() {
        // gh-127655: asyncio's writelines skipped the check.
        let mut buf = WriteBuffer::new(limits(10, 2, 100));
        assert_eq!(
            buf.push(&[b"123456", b"789012"]).unwrap(),
            Some(Flow::Pause)
        );
    }

    #[test]
    fn hard_limit_refuses_the_whole_write() {
        let mut buf = WriteBuffer::new(limits(10, 2, 20));
        buf.push(&[&[1; 15]]).unwrap();
        assert_eq!(buf.push(&[&[2; 3], &[3; 3]]), Err(Overflow));
        assert_eq!(buf.len(), 15);
        buf.push(&[&[4; 5]]).unwrap();
        assert_eq!(buf.len(), 20);
    }

    #[test]
    fn flush_sends_several_chunks_per_call_and_caps_the_iovecs() {
        let mut buf = WriteBuffer::new(WriteLimits::default());
        for _ in 0..200 {
            buf.push(&[&[7; COALESCE]]).unwrap();
        }
        let mut sock = FakeSocket::new(usize::MAX, usize::MAX);
        let (r, _) = buf.flush(|b| sock.write(b));
        assert_eq!(r.unwrap(), Flushed::Empty);
        assert_eq!(sock.max_slices, MAX_IOVECS);
        assert_eq!(sock.calls, 200usize.div_ceil(MAX_IOVECS));
        assert_eq!(sock.got.len(), 200 * COALESCE);
    }

    #[test]
    fn small_writes_are_coalesced() {
        let mut buf = WriteBuffer::new(WriteLimits::default());
        for _ in 0..100 {
            buf.push(&[b"x"]).unwrap();
        }
        assert_eq!(buf.chunks.len(), 1);
    }

    #[test]
    fn errors_other_than_would_block_are_returned() {
        let mut buf = WriteBuffer::new(WriteLimits::default());
        buf.push(&[b"x"]).unwrap();
        let (r, _) = buf.flush(|_| Err(io::ErrorKind::BrokenPipe.into()));
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(buf.len(), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(Vec<usize>),
        Flush { per_call: usize, room: usize },
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            proptest::collection::vec(0usize..300, 1..4).prop_map(Op::Push),
            (1usize..200, 0usize..600).prop_map(|(per_call, room)| Op::Flush { per_call, room }),
        ]
    }

    proptest::proptest! {
        /// Any interleaving of writes and partial flushes: bytes arrive in
        /// order, the size never passes the hard limit, and the flow events
        /// alternate Pause, Resume, ... each at its mark.
        #[test]
        fn writes_and_flushes_keep_order_and_pair_flow_events(
            ops in proptest::collection::vec(op(), 1..60)
        ) {
            let mut buf = WriteBuffer::new(limits(500, 120, 1500));
            let mut sent = Vec::new();
            let mut expected = Vec::new();
            let mut next = 0u8;
            let mut paused = false;
            for op in ops {
                let flow = match op {
                    Op::Push(sizes) => {
                        let parts: Vec<Vec<u8>> = sizes
                            .iter()
                            .map(|&n| (0..n).map(|_| { next = next.wrapping_add(1); next }).collect())
                            .collect();
                        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                        match buf.push(&refs) {
                            Ok(flow) => {
                                parts.iter().for_each(|p| expected.extend_from_slice(p));
                                flow
                            }
                            Err(Overflow) => None,
                        }
                    }
                    Op::Flush { per_call, room } => {
                        let mut sock = FakeSocket::new(per_call, room);
                        let (r, flow) = buf.flush(|b| sock.write(b));
                        r.unwrap();
                        sent.extend_from_slice(&sock.got);
                        flow
                    }
                };
                proptest::prop_assert!(buf.len() <= 1500);
                match flow {
                    Some(Flow::Pause) => {
                        proptest::prop_assert!(!paused && buf.len() > 500);
                        paused = true;
                    }
                    Some(Flow::Resume) => {
                        proptest::prop_assert!(paused && buf.len() <= 120);
                        paused = false;
                    }
                    None => {
                        proptest::prop_assert!(paused || buf.len() <= 500);
                        proptest::prop_assert!(!paused || buf.len() > 120);
                    }
                }
            }
            proptest::prop_assert_eq!(sent.len() + buf.len(), expected.len());
            proptest::prop_assert_eq!(&sent[..], &expected[..sent.len()]);
        }
    }

    #[test]
    fn lowering_the_limits_pauses_at_once() {
        let mut buf = WriteBuffer::new(WriteLimits::default());
        buf.push(&[&[0; 50]]).unwrap();
        assert_eq!(buf.set_limits(limits(10, 0, 1000)), Some(Flow::Pause));
    }
}
