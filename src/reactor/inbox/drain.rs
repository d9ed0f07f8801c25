//! The loop's drain of the lanes ([`Inbox::drain_into`]): one lane taken
//! whole in the common case, the lanes merged by number otherwise.

use std::collections::VecDeque;

use crate::loom::atomic::Ordering;

use super::{Inbox, Job, LANES, Merge, Wake, lanes_of};

/// What [`Inbox::take_lane`] found.
enum Take {
    /// The lane's jobs, up to this number.
    Taken(u64),
    /// No job there.
    Empty,
    /// Held by a producer, closed, or not every job: merge the lanes.
    Merge,
}

impl<W: Wake> Inbox<W> {
    /// Loop: moves the queued jobs into `into` (which must be empty), in
    /// the order of their pushes: every job pushed before the drain read
    /// the sequence counter, and maybe some pushed since that follow them
    /// without a gap.
    ///
    /// Why nothing before the read is missed: a push takes its number and
    /// queues its job under its lane's lock, and the loop reads the counter
    /// before it locks any lane. A push numbered below the count read
    /// either left its lane's lock before the loop took it (its job is
    /// there) or took it after, which would make the loop's read happen
    /// before that push's increment and yet see it (impossible). Later
    /// pushes may land in a lane the loop has already left; one after such
    /// a gap is held (in `merge`) until the next drain: a call made after
    /// another that happened before it always runs after it (the counter's
    /// increments are ordered as the pushes are), and the loop never waits
    /// for a push (a gap is for the next turn; its push wakes the loop if
    /// it sleeps by then).
    ///
    /// Nor does it wait for a lane's lock: a lane whose lock a producer
    /// holds (mid-push, or preempted there on another CPU, which can last
    /// milliseconds) is skipped this turn, as if its jobs had not arrived.
    /// Its jobs are then the gap the merge stops at, and `prepare_to_sleep`
    /// keeps the loop awake while any job numbered below the count is not
    /// taken, so the next turn's drain finds them. A drain that took
    /// nothing else yields the CPU first (the lock's holder may be waiting
    /// for this CPU).
    ///
    /// The common case, one lane holding every job from the next number on
    /// without a gap (one producer, or producers on one CPU; always a call
    /// into an idle loop), swaps that lane's buffer with `into` (emptied
    /// and reset): the loop touches one lane and the merge's first line,
    /// as the single queue's swap did. Otherwise each lane's buffer is
    /// swapped whole with the loop's (emptied and reset) one for that lane
    /// and the lanes are merged ([`merge_lanes`](Self::merge_lanes)).
    /// Either way both buffers keep their capacity and producers fill the
    /// handed-back buffer from its front.
    pub(crate) fn drain_into(&self, into: &mut VecDeque<Job>) {
        debug_assert!(into.is_empty());
        // Nothing pushed since the last drain: one load per idle turn.
        if self.claims.0.load(Ordering::Acquire) == self.taken.0.load(Ordering::Relaxed) {
            return;
        }
        let mut merge = self.merge.lock();
        let merge = &mut *merge;
        let taken = self.taken.0.load(Ordering::Relaxed);
        let claimed = self.claims.0.load(Ordering::Acquire);
        let next = match self.take_one_lane(merge, taken, claimed, into) {
            Some(next) => next,
            None => self.merge_lanes(merge, taken, claimed, into),
        };
        self.taken.0.store(next, Ordering::Release);
    }

    /// The common case of [`drain_into`](Self::drain_into): the loop holds
    /// no job, and the first lane with jobs (from `merge.start` on) holds
    /// every job from `taken` on, in one run, at least up to `claimed`. It
    /// is swapped with `into` whole; returns the number after its last job.
    /// `None` (nothing taken): the lanes must be merged. A lane a producer
    /// holds ends the search there (the merge skips it). The lane the last
    /// drain started at is tried here, the others out of line: the search
    /// unrolled spread the common case over a dozen cache lines.
    #[inline]
    fn take_one_lane(
        &self,
        merge: &mut Merge,
        taken: u64,
        claimed: u64,
        into: &mut VecDeque<Job>,
    ) -> Option<u64> {
        if merge.holding != 0 {
            return None;
        }
        match self.take_lane(merge.start, taken, claimed, into) {
            Take::Taken(next) => Some(next),
            Take::Empty => self.take_later_lane(merge, taken, claimed, into),
            Take::Merge => None,
        }
    }

    /// [`take_one_lane`](Self::take_one_lane) past an empty first lane.
    #[inline(never)]
    fn take_later_lane(
        &self,
        merge: &mut Merge,
        taken: u64,
        claimed: u64,
        into: &mut VecDeque<Job>,
    ) -> Option<u64> {
        for k in 1..LANES {
            let i = (merge.start + k) % LANES;
            match self.take_lane(i, taken, claimed, into) {
                Take::Taken(next) => {
                    merge.start = i;
                    return Some(next);
                }
                Take::Empty => {}
                Take::Merge => return None,
            }
        }
        None
    }

    /// Lane `i`'s part of [`take_one_lane`](Self::take_one_lane).
    #[inline(always)]
    fn take_lane(&self, i: usize, taken: u64, claimed: u64, into: &mut VecDeque<Job>) -> Take {
        let Some(mut queue) = self.lanes[i].queue.try_lock() else {
            return Take::Merge;
        };
        let Some(jobs) = queue.jobs.as_mut() else {
            return Take::Merge;
        };
        let (Some(first), Some(last)) = (jobs.front(), jobs.back()) else {
            return Take::Empty;
        };
        let (first, last, len) = (first.seq, last.seq, jobs.len() as u64);
        // Numbers in a lane only grow: first to last without a gap.
        if first != taken || last + 1 - first != len || taken + len < claimed {
            return Take::Merge;
        }
        // On an empty deque `clear` only resets the start.
        into.clear();
        std::mem::swap(jobs, into);
        Take::Taken(taken + len)
    }

    /// The general case of [`drain_into`](Self::drain_into): takes every
    /// lane with jobs (but one a producer holds) into the loop's buffers,
    /// then moves the jobs into `into` by number, up to the first gap.
    /// Returns the number after the last job moved.
    #[inline(never)]
    fn merge_lanes(
        &self,
        merge: &mut Merge,
        taken: u64,
        claimed: u64,
        into: &mut VecDeque<Job>,
    ) -> u64 {
        // Every job held was pushed before this read: all below `claimed`.
        let mut below = merge.held() as u64;
        let want = claimed - taken;
        let mut first_lane = None;
        let mut skipped = false;
        // The lanes the loop holds jobs of (taken now or after an earlier
        // gap).
        let mut active = merge.holding;
        for k in 0..LANES {
            if below == want {
                break;
            }
            let i = (merge.start + k) % LANES;
            let held = &mut merge.held[i];
            let Some(mut queue) = self.lanes[i].queue.try_lock() else {
                // Held by a producer: for the next turn (see above).
                skipped = true;
                continue;
            };
            let Some(jobs) = queue.jobs.as_mut().filter(|q| !q.is_empty()) else {
                continue;
            };
            below += jobs.partition_point(|e| e.seq < claimed) as u64;
            if held.is_empty() {
                // Handed back from its front: a burst fills it from there,
                // in one piece (no wrap, no copy of a wrapped part when it
                // grows). On an empty deque `clear` only resets the start.
                held.clear();
                std::mem::swap(jobs, held);
            } else {
                held.extend(jobs.drain(..));
            }
            drop(queue);
            active |= 1 << i;
            first_lane.get_or_insert(i);
        }
        debug_assert!(
            below == want || (skipped && below < want),
            "a job numbered below the count is missing"
        );
        if let Some(i) = first_lane {
            merge.start = i;
        }
        // Merge by sequence number, up to the first gap.
        let mut next = taken;
        if active.count_ones() == 1 {
            // One lane (one producer, or producers on one CPU): it is in
            // order; hand over its run without a gap.
            let held = &mut merge.held[active.trailing_zeros() as usize];
            let run = held
                .iter()
                .zip(taken..)
                .take_while(|(e, seq)| e.seq == *seq)
                .count();
            into.extend(held.drain(..run));
            next += run as u64;
        } else {
            into.reserve(want as usize);
            loop {
                let before = next;
                for i in lanes_of(active) {
                    let held = &mut merge.held[i];
                    while let Some(e) = held.pop_front() {
                        if e.seq != next {
                            held.push_front(e);
                            break;
                        }
                        into.push_back(e);
                        next += 1;
                    }
                }
                if next == before {
                    break;
                }
            }
        }
        debug_assert!(next >= claimed || skipped);
        if skipped && into.is_empty() {
            // Nothing taken but a producer's lane: the loop will turn again
            // for it at once. Give the CPU up first, so a producer that
            // was preempted on this CPU with the lock held can finish its
            // push rather than wait out the loop's time slice.
            crate::loom::thread::yield_now();
        }
        merge.holding = lanes_of(active)
            .filter(|&i| !merge.held[i].is_empty())
            .fold(0, |bits, i| bits | 1 << i);
        merge.held_since = match &self.clock {
            Some(clock) if merge.holding != 0 => Some(clock.now()),
            _ => None,
        };
        next
    }
}
