//! A lock-free latency histogram with power-of-two buckets, cheap enough to
//! record into on every job.
//!
//! Bucket `i` (for `i >= 1`) counts durations of `[2^(i-1), 2^i)` ns; bucket
//! 0 counts zero. Recording is a `leading_zeros` and two relaxed
//! `fetch_add`s (plus a `fetch_max` only when a new largest value is seen),
//! so any thread may record while another reads. The largest value is kept
//! exactly beside the buckets, so a bound such as "no loop turn took over
//! 1 ms" can be checked without the buckets' factor-of-two resolution. A snapshot
//! is not atomic as a whole: under concurrent recording its count and sum
//! may disagree by the records in flight, never more. Quantiles are
//! reported as the upper bound of the bucket they fall in, so they err
//! high by less than 2×, never low.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Number of buckets: zero, then one per power of two up to 2^63 ns.
const BUCKETS: usize = 65;

/// A thread-safe histogram of durations, in power-of-two nanosecond buckets.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weft::diagnostics::Histogram;
///
/// let h = Histogram::new();
/// h.record(Duration::from_micros(3));
/// h.record(Duration::from_micros(5));
/// let snap = h.snapshot();
/// assert_eq!(snap.count(), 2);
/// assert_eq!(snap.sum(), Duration::from_micros(8));
/// // The median falls in the bucket [2048, 4096) ns.
/// assert_eq!(snap.quantile(0.5), Duration::from_nanos(4096));
/// ```
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
    largest_nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(weft::diagnostics::Histogram::new().snapshot().count(), 0);
    /// ```
    pub fn new() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
            largest_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one duration (saturating at about 584 years).
    ///
    /// # Examples
    ///
    /// ```
    /// let h = weft::diagnostics::Histogram::new();
    /// h.record(std::time::Duration::MAX);
    /// assert_eq!(h.snapshot().count(), 1);
    /// ```
    #[inline]
    pub fn record(&self, d: Duration) {
        self.record_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Counts one duration given in nanoseconds.
    ///
    /// # Examples
    ///
    /// ```
    /// let h = weft::diagnostics::Histogram::new();
    /// h.record_nanos(1_000);
    /// assert_eq!(h.snapshot().sum().as_nanos(), 1_000);
    /// ```
    #[inline]
    pub fn record_nanos(&self, nanos: u64) {
        self.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
        // Wraps only after ~584 years of summed time; the sum is advisory.
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        // A plain load first: a new record is rare, a read-modify-write on
        // every call would not be.
        if nanos > self.largest_nanos.load(Ordering::Relaxed) {
            self.largest_nanos.fetch_max(nanos, Ordering::Relaxed);
        }
    }

    /// [`record`](Self::record) for a histogram only one thread writes
    /// (the loop's turn histogram): plain loads and stores rather than
    /// locked read-modify-writes. Readers on other threads see the same as
    /// with `record`; two writers would lose counts.
    #[inline]
    pub(crate) fn record_single_writer(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let add = |a: &AtomicU64, n: u64| {
            a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        };
        add(&self.buckets[bucket_of(nanos)], 1);
        add(&self.sum_nanos, nanos);
        if nanos > self.largest_nanos.load(Ordering::Relaxed) {
            self.largest_nanos.store(nanos, Ordering::Relaxed);
        }
    }

    /// Copies the current counts.
    ///
    /// # Examples
    ///
    /// ```
    /// let h = weft::diagnostics::Histogram::new();
    /// h.record_nanos(10);
    /// let s = h.snapshot();
    /// h.record_nanos(10);
    /// assert_eq!(s.count(), 1);
    /// ```
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
            largest_nanos: self.largest_nanos.load(Ordering::Relaxed),
        }
    }
}

impl Histogram {
    /// The largest duration recorded, without copying the buckets.
    pub(crate) fn largest(&self) -> Duration {
        Duration::from_nanos(self.largest_nanos.load(Ordering::Relaxed))
    }
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// The bucket a duration of `nanos` falls in.
#[inline]
fn bucket_of(nanos: u64) -> usize {
    (u64::BITS - nanos.leading_zeros()) as usize
}

/// The exclusive upper bound of bucket `i`, in nanoseconds (saturating).
fn upper_bound_nanos(i: usize) -> u64 {
    match i {
        0 => 1,
        64.. => u64::MAX,
        _ => 1u64 << i,
    }
}

/// A copy of a [`Histogram`]'s counts at one moment.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let h = weft::diagnostics::Histogram::new();
/// for us in [1, 2, 3, 100] {
///     h.record(Duration::from_micros(us));
/// }
/// let s = h.snapshot();
/// assert_eq!(s.count(), 4);
/// assert!(s.quantile(0.99) >= Duration::from_micros(100));
/// assert!(s.max() >= Duration::from_micros(100));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    buckets: [u64; BUCKETS],
    sum_nanos: u64,
    largest_nanos: u64,
}

impl HistogramSnapshot {
    /// How many durations were recorded.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(weft::diagnostics::Histogram::new().snapshot().count(), 0);
    /// ```
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The sum of the recorded durations.
    ///
    /// # Examples
    ///
    /// ```
    /// let h = weft::diagnostics::Histogram::new();
    /// h.record_nanos(5);
    /// h.record_nanos(7);
    /// assert_eq!(h.snapshot().sum().as_nanos(), 12);
    /// ```
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_nanos)
    }

    /// The upper bound of the bucket holding quantile `q` (clamped to
    /// `0.0..=1.0`); zero when empty. Errs high by less than 2×.
    ///
    /// # Examples
    ///
    /// ```
    /// let h = weft::diagnostics::Histogram::new();
    /// h.record_nanos(1_000); // bucket [512, 1024)
    /// assert_eq!(h.snapshot().quantile(0.5).as_nanos(), 1024);
    /// ```
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        // The rank of the wanted record, 1-based; at least the first.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_nanos(upper_bound_nanos(i));
            }
        }
        Duration::from_nanos(u64::MAX)
    }

    /// The upper bound of the highest non-empty bucket (zero when empty).
    ///
    /// # Examples
    ///
    /// ```
    /// let h = weft::diagnostics::Histogram::new();
    /// h.record_nanos(3);
    /// assert_eq!(h.snapshot().max().as_nanos(), 4);
    /// ```
    pub fn max(&self) -> Duration {
        match self.buckets.iter().rposition(|&n| n > 0) {
            Some(i) => Duration::from_nanos(upper_bound_nanos(i)),
            None => Duration::ZERO,
        }
    }

    /// The largest duration recorded, exactly (zero when empty), where
    /// [`max`](Self::max) gives only its bucket's upper bound.
    ///
    /// For a difference made by [`since`](Self::since) it is exact when the
    /// interval recorded a new largest value; otherwise it is an upper
    /// bound: the smaller of the earlier largest value and the interval's
    /// [`max`](Self::max).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let h = weft::diagnostics::Histogram::new();
    /// h.record(Duration::from_micros(700));
    /// h.record(Duration::from_micros(900));
    /// let s = h.snapshot();
    /// assert_eq!(s.largest(), Duration::from_micros(900));
    /// // The bucket bound alone could not show "under 1 ms".
    /// assert!(s.max() > Duration::from_millis(1));
    /// ```
    pub fn largest(&self) -> Duration {
        Duration::from_nanos(self.largest_nanos)
    }

    /// Cumulative counts per bucket, as Prometheus `le` buckets want them:
    /// `(upper bound, records below it)`, one per bucket up to the highest
    /// non-empty one.
    ///
    /// # Examples
    ///
    /// ```
    /// let h = weft::diagnostics::Histogram::new();
    /// h.record_nanos(3);
    /// h.record_nanos(3);
    /// let last = h.snapshot().cumulative().last().unwrap();
    /// assert_eq!((last.0.as_nanos(), last.1), (4, 2));
    /// ```
    pub fn cumulative(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        let end = self
            .buckets
            .iter()
            .rposition(|&n| n > 0)
            .map_or(0, |i| i + 1);
        let mut running = 0;
        self.buckets[..end].iter().enumerate().map(move |(i, &n)| {
            running += n;
            (Duration::from_nanos(upper_bound_nanos(i)), running)
        })
    }

    /// The records made between `earlier` and `self` (two snapshots of the
    /// same histogram), for rates over an interval.
    ///
    /// # Examples
    ///
    /// ```
    /// let h = weft::diagnostics::Histogram::new();
    /// h.record_nanos(8);
    /// let a = h.snapshot();
    /// h.record_nanos(100);
    /// let d = h.snapshot().since(&a);
    /// assert_eq!(d.count(), 1);
    /// assert_eq!(d.sum().as_nanos(), 100);
    /// ```
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let mut diff = HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
            sum_nanos: self.sum_nanos.saturating_sub(earlier.sum_nanos),
            largest_nanos: 0,
        };
        diff.largest_nanos = if self.largest_nanos > earlier.largest_nanos {
            // Recorded after `earlier` was taken: exact.
            self.largest_nanos
        } else {
            let top = u64::try_from(diff.max().as_nanos()).unwrap_or(u64::MAX);
            earlier.largest_nanos.min(top)
        };
        diff
    }
}

impl fmt::Debug for HistogramSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistogramSnapshot")
            .field("count", &self.count())
            .field("sum", &self.sum())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max())
            .field("largest", &self.largest())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_single_writer_record_counts_as_record_does() {
        let (a, b) = (Histogram::new(), Histogram::new());
        for nanos in [0, 1, 700, 3_000_000, 5, u64::MAX / 2, 700] {
            a.record(Duration::from_nanos(nanos));
            b.record_single_writer(Duration::from_nanos(nanos));
        }
        assert_eq!(a.snapshot(), b.snapshot());
    }

    #[test]
    fn buckets_split_at_powers_of_two() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 1);
        assert_eq!(bucket_of(2), 2);
        assert_eq!(bucket_of(3), 2);
        assert_eq!(bucket_of(4), 3);
        assert_eq!(bucket_of(u64::MAX), 64);
        // Every value lies below its bucket's upper bound and at or above
        // the previous bucket's.
        for v in [0u64, 1, 2, 3, 4, 5, 1023, 1024, 1025, 1 << 40, u64::MAX - 1] {
            let b = bucket_of(v);
            assert!(v < upper_bound_nanos(b) || b == 64, "{v}");
            if b > 0 {
                assert!(v >= upper_bound_nanos(b - 1), "{v}");
            }
        }
    }

    #[test]
    fn quantiles_are_exact_at_bucket_resolution() {
        let h = Histogram::new();
        for _ in 0..90 {
            h.record_nanos(100); // [64, 128)
        }
        for _ in 0..10 {
            h.record_nanos(10_000); // [8192, 16384)
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        assert_eq!(s.sum().as_nanos(), 90 * 100 + 10 * 10_000);
        assert_eq!(s.quantile(0.0).as_nanos(), 128);
        assert_eq!(s.quantile(0.9).as_nanos(), 128);
        assert_eq!(s.quantile(0.91).as_nanos(), 16_384);
        assert_eq!(s.quantile(1.0).as_nanos(), 16_384);
        assert_eq!(s.quantile(f64::NAN).as_nanos(), 16_384);
        assert_eq!(s.max().as_nanos(), 16_384);
        let cum: Vec<_> = s.cumulative().collect();
        assert_eq!(cum.len(), 15);
        assert_eq!(cum[7], (Duration::from_nanos(128), 90));
        assert_eq!(cum[14], (Duration::from_nanos(16_384), 100));
    }

    #[test]
    fn the_largest_value_is_exact_and_bounded_in_a_difference() {
        let h = Histogram::new();
        h.record_nanos(1_000_000);
        h.record_nanos(600_000);
        let a = h.snapshot();
        assert_eq!(a.largest().as_nanos(), 1_000_000);
        assert_eq!(a.max().as_nanos(), 1 << 20);
        h.record_nanos(5);
        let quiet = h.snapshot().since(&a);
        // No new record: bounded by the interval's top bucket.
        assert_eq!(quiet.largest().as_nanos(), 8);
        h.record_nanos(3_000_000);
        let d = h.snapshot().since(&a);
        assert_eq!(d.largest().as_nanos(), 3_000_000);
        assert_eq!(
            Histogram::new().snapshot().since(&a).largest(),
            Duration::ZERO
        );
    }

    #[test]
    fn empty_histogram_reports_zero() {
        let s = Histogram::new().snapshot();
        assert_eq!(s.count(), 0);
        assert_eq!(s.quantile(0.5), Duration::ZERO);
        assert_eq!(s.max(), Duration::ZERO);
        assert_eq!(s.largest(), Duration::ZERO);
        assert_eq!(s.cumulative().count(), 0);
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let h = std::sync::Arc::new(Histogram::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.record_nanos(i * (t + 1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.snapshot().count(), 40_000);
    }
}
