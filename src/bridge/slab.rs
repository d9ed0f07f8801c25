//! The loop's job table: a slab of erased resolvers indexed by key, so a
//! completion finds its `Resolver` by indexing, not hashing. Each entry also
//! keeps the job's key in the reactor pool's backlog, if it has one, so a
//! cancel can withdraw it.
//!
//! A key is `generation << 32 | index`. A slot's generation changes each
//! time it is vacated, so a stale key (a job cancelled, its slot reused)
//! finds nothing. Keys are handed out by [`JobSlab::next_key`] and used by
//! the one [`JobSlab::insert`] that follows it on the loop thread, with no
//! other use of the slab in between.

use crate::deferred::AnyResolver;
use crate::threads::TaskKey;

/// One job in flight: its erased resolver, and where it waits in the
/// reactor pool's backlog (`None` on other pools and workers).
pub(super) struct Entry {
    pub(super) resolver: AnyResolver,
    pub(super) task: Option<TaskKey>,
}

enum Slot {
    Vacant { generation: u32 },
    Occupied { generation: u32, entry: Entry },
}

#[derive(Default)]
pub(super) struct JobSlab {
    slots: Vec<Slot>,
    /// Indices of vacant slots, reused last-in first-out (warm in cache).
    free: Vec<u32>,
    len: usize,
}

fn split(key: u64) -> (usize, u32) {
    ((key & 0xFFFF_FFFF) as usize, (key >> 32) as u32)
}

impl JobSlab {
    /// The key the next [`insert`](JobSlab::insert) will use.
    pub(super) fn next_key(&self) -> u64 {
        let (index, generation) = match self.free.last() {
            Some(&i) => match self.slots[i as usize] {
                Slot::Vacant { generation } => (i, generation),
                Slot::Occupied { .. } => unreachable!("free list holds vacant slots"),
            },
            None => (
                u32::try_from(self.slots.len()).expect("fewer than 2^32 jobs in flight"),
                0,
            ),
        };
        u64::from(generation) << 32 | u64::from(index)
    }

    /// Stores `resolver` under `key`, which must come from the
    /// [`next_key`](JobSlab::next_key) just before.
    pub(super) fn insert(&mut self, key: u64, entry: Entry) {
        let (index, generation) = split(key);
        if index == self.slots.len() {
            self.slots.push(Slot::Occupied { generation, entry });
        } else {
            let popped = self.free.pop();
            debug_assert_eq!(popped, Some(index as u32));
            self.slots[index] = Slot::Occupied { generation, entry };
        }
        self.len += 1;
    }

    /// Takes the entry under `key`, if it is still there.
    pub(super) fn remove(&mut self, key: u64) -> Option<Entry> {
        let (index, generation) = split(key);
        let slot = self.slots.get_mut(index)?;
        if !matches!(slot, Slot::Occupied { generation: g, .. } if *g == generation) {
            return None;
        }
        let vacant = Slot::Vacant {
            generation: generation.wrapping_add(1),
        };
        let Slot::Occupied { entry, .. } = std::mem::replace(slot, vacant) else {
            unreachable!("checked above")
        };
        self.free.push(index as u32);
        self.len -= 1;
        Some(entry)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes every resolver out.
    pub(super) fn drain(&mut self) -> Vec<AnyResolver> {
        let mut out = Vec::with_capacity(self.len);
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if let Slot::Occupied { generation, .. } = slot {
                let vacant = Slot::Vacant {
                    generation: generation.wrapping_add(1),
                };
                if let Slot::Occupied { entry, .. } = std::mem::replace(slot, vacant) {
                    out.push(entry.resolver);
                    self.free.push(index as u32);
                }
            }
        }
        self.len = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deferred::Deferred;
    use crate::error::ThreadError;

    fn resolver() -> (Deferred<u8>, Entry) {
        let d = Deferred::new();
        let resolver = d.resolver().erase();
        (
            d,
            Entry {
                resolver,
                task: None,
            },
        )
    }

    #[test]
    fn a_stale_key_finds_nothing_after_its_slot_is_reused() {
        let mut slab = JobSlab::default();
        let (_d1, r1) = resolver();
        let k1 = slab.next_key();
        slab.insert(k1, r1);
        assert!(slab.remove(k1).is_some());
        let (_d2, r2) = resolver();
        let k2 = slab.next_key();
        slab.insert(k2, r2);
        assert_ne!(k1, k2, "a reused slot has a new generation");
        assert!(slab.remove(k1).is_none());
        assert!(slab.remove(k2).is_some());
        assert!(slab.is_empty());
    }

    #[test]
    fn drain_takes_every_entry_and_keys_stay_unique() {
        let mut slab = JobSlab::default();
        let mut keep = Vec::new();
        let mut keys = Vec::new();
        for _ in 0..3 {
            let (d, r) = resolver();
            let k = slab.next_key();
            slab.insert(k, r);
            keep.push(d);
            keys.push(k);
        }
        assert!(slab.remove(keys[1]).is_some());
        let left = slab.drain();
        assert_eq!(left.len(), 2);
        for r in left {
            r.fail(ThreadError::Cancelled);
        }
        assert!(slab.is_empty());
        for k in keys {
            assert!(slab.remove(k).is_none());
        }
    }
}
