//! The device chunk store's bookkeeping (GPU path, `device_chunk_cache_bytes`): which decoded
//! chunks live in a fixed device memory pool, at which offsets, so a chunk that several
//! batches of the look-ahead window read is decoded on the GPU once. Pure and not
//! synchronised: the pipeline keeps it behind a mutex and calls [`DeviceStore::plan`] once
//! per batch, in batch order; the extension owns the memory and only follows the plan.
//!
//! Per chunk of a batch the plan says one of:
//! - `Resident`: an earlier batch (the `producer`) decoded it into `slot`; this batch
//!   copies it from there instead of reading and decoding it;
//! - `Keep`: decode it as usual, then copy it into `slot`, because a later batch of the
//!   window needs it (and it fits, possibly after evicting entries that are needed later
//!   than it, or never);
//! - `Scratch`: decode it into the batch's own decoded area only (as without the store).
//!
//! Keys are the CPU decoded cache's ([`ChunkKey`]: store, object key, offset, generation),
//! so a rewritten shard never hits an entry of its old bytes, and the hit rechecks of
//! `recheck_cached_data` apply unchanged (the pipeline runs them).
//!
//! Why a slot may be reused as soon as it is evicted (no reader counts): the extension runs
//! the store copies of batch `k` after those of every earlier batch (its streams are chained
//! by an event: batch `k` waits for batch `k - 1`'s store copies before its own), and in each
//! batch the copies out of the store (`Resident`) run before the copies into it (`Keep`).
//! Batches are planned and launched in the same order (batch order), so every read of a slot
//! planned before it was evicted runs before the write that reuses it; every read planned
//! after sees the new owner. A batch that fails before it is launched writes nothing: the
//! pipeline then calls [`DeviceStore::forget_producer`], and a later batch that was planned
//! to read what it would have kept is run again at its pop, before it is launched, with the
//! store off for it (every chunk `Scratch`, read and decoded by that batch; it is not planned
//! here again, so it reads and writes no slot, and what it was to keep is forgotten the same
//! way). A batch that fails on the device after it was launched is the extension's to
//! handle: it fails the launched batches that read what it kept, and the pipeline clears
//! the store ([`DeviceStore::clear`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::decoded::ChunkKey;
use super::CacheStats;

/// Slot offsets and sizes are multiples of this (the decode copy kernel's vector width and
/// the assemble kernel's widest element, with room).
pub(crate) const SLOT_ALIGN: u64 = 256;

/// A chunk's identity across batches before its shard index is read: the array's store id
/// and the chunk's grid coordinates (what a later batch's boxes say it will read).
pub(crate) type Ident = (Arc<str>, Vec<u64>);

/// What one chunk of a batch asks of the store.
#[derive(Debug, Clone)]
pub(crate) struct Want {
    /// Its key (`None`: not storable: absent, or its generation is unknown).
    pub key: Option<ChunkKey>,
    /// Its decoded bytes.
    pub bytes: u64,
    /// Its identity, to look up its next use in the window.
    pub ident: Ident,
}

/// The store's answer for one chunk of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreUse {
    /// Decode into the batch's decoded area only.
    Scratch,
    /// Decode, then copy the decoded chunk to `slot` of the pool.
    Keep {
        /// Byte offset in the pool.
        slot: u64,
    },
    /// Already decoded at `slot` by batch `producer`: copy it from there, read nothing.
    Resident {
        /// Byte offset in the pool.
        slot: u64,
        /// The batch that decodes it into the slot.
        producer: u64,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    slot: u64,
    len: u64,
    producer: u64,
    last_use: u64,
    next_use: Option<u64>,
    ident: Ident,
}

/// The pool's entries and free space. Capacity 0: everything is `Scratch`.
#[derive(Debug, Default)]
pub(crate) struct DeviceStore {
    capacity: u64,
    /// Free extents: offset → length (disjoint, coalesced).
    free: BTreeMap<u64, u64>,
    entries: HashMap<ChunkKey, Entry>,
    /// The key each chunk identity is held under: a chunk read at a new generation (or a
    /// new offset: its shard rewritten) drops the entry of its old bytes at once, instead of
    /// letting the window keep it as "needed soon" though it can never be hit again.
    idents: HashMap<Ident, ChunkKey>,
    stats: CacheStats,
}

impl DeviceStore {
    /// A store over a pool of `capacity` bytes (rounded down to [`SLOT_ALIGN`]).
    pub(crate) fn new(capacity: u64) -> Self {
        let capacity = capacity - capacity % SLOT_ALIGN;
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Self { capacity, free, ..Self::default() }
    }

    /// `true` when the store can hold anything.
    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Plans batch `seq` (batches are planned in increasing `seq`): one [`StoreUse`] per
    /// entry of `wants`. `next_use` gives the first batch after `seq` in the look-ahead
    /// window that reads a chunk (`None`: none does, as far as the window shows).
    pub(crate) fn plan(&mut self, seq: u64, wants: &[Want], next_use: &dyn Fn(&Ident) -> Option<u64>) -> Vec<StoreUse> {
        let mut out = vec![StoreUse::Scratch; wants.len()];
        if !self.enabled() {
            return out;
        }
        for e in self.entries.values_mut() {
            e.next_use = next_use(&e.ident).filter(|&n| n > seq);
        }
        // Entries this batch reads or writes: never evicted while planning it.
        let mut held: HashSet<ChunkKey> = HashSet::new();
        let mut candidates = Vec::new();
        for (i, w) in wants.iter().enumerate() {
            let Some(key) = &w.key else { continue };
            if held.contains(key) {
                continue; // the same chunk twice in one batch: the second decodes to scratch
            }
            if let Some(old) = self.idents.get(&w.ident).filter(|old| *old != key && !held.contains(*old)).cloned() {
                self.remove(&old);
            }
            match self.entries.get_mut(key) {
                Some(e) if e.len == w.bytes.next_multiple_of(SLOT_ALIGN) && e.producer < seq => {
                    e.last_use = seq;
                    out[i] = StoreUse::Resident { slot: e.slot, producer: e.producer };
                    self.stats.hits += 1;
                    held.insert(key.clone());
                    continue;
                }
                Some(_) => {
                    // A size that does not match (another geometry under the same key):
                    // drop it and decode afresh.
                    self.remove(key);
                }
                None => {}
            }
            self.stats.misses += 1;
            if let Some(n) = next_use(&w.ident).filter(|&n| n > seq) {
                if w.bytes > 0 && w.bytes <= self.capacity {
                    candidates.push((n, i));
                }
            }
        }
        if candidates.is_empty() {
            return out;
        }
        // The chunks needed soonest get room first; victims: entries no window batch needs
        // (least recently used first), then those needed latest.
        candidates.sort_unstable();
        let mut victims: Vec<(Option<u64>, u64, ChunkKey)> =
            self.entries.iter().filter(|(k, _)| !held.contains(*k)).map(|(k, e)| (e.next_use, e.last_use, k.clone())).collect();
        victims.sort_unstable_by(|a, b| match (a.0, b.0) {
            (None, None) => a.1.cmp(&b.1),
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => y.cmp(&x).then(a.1.cmp(&b.1)),
        });
        let mut victims = victims.into_iter().peekable();
        for (n, i) in candidates {
            let w = &wants[i];
            let len = w.bytes.next_multiple_of(SLOT_ALIGN);
            let slot = loop {
                if let Some(slot) = self.alloc(len) {
                    break Some(slot);
                }
                // Evict only what is needed later than this chunk (or never).
                match victims.peek() {
                    Some((next, ..)) if next.is_none_or(|v| v > n) => {
                        let (_, _, key) = victims.next().unwrap_or_else(|| unreachable!());
                        self.remove(&key);
                        self.stats.evictions += 1;
                    }
                    _ => break None,
                }
            };
            let Some(slot) = slot else { continue };
            let Some(key) = w.key.clone() else { continue };
            held.insert(key.clone());
            self.idents.insert(w.ident.clone(), key.clone());
            self.entries.insert(key, Entry { slot, len, producer: seq, last_use: seq, next_use: Some(n), ident: w.ident.clone() });
            out[i] = StoreUse::Keep { slot };
        }
        out
    }

    /// Batch `seq` failed before its device work ran: the chunks it was to keep were never
    /// written, so they are forgotten (their slots free).
    pub(crate) fn forget_producer(&mut self, seq: u64) {
        let gone: Vec<ChunkKey> = self.entries.iter().filter(|(_, e)| e.producer == seq).map(|(k, _)| k.clone()).collect();
        for k in gone {
            self.remove(&k);
        }
    }

    /// Forgets every entry (a batch failed on the device: what it kept cannot be trusted).
    pub(crate) fn clear(&mut self) {
        *self = Self { stats: self.stats, ..Self::new(self.capacity) };
    }

    /// Hits, misses, evictions.
    pub(crate) fn stats(&self) -> CacheStats {
        self.stats
    }

    fn remove(&mut self, key: &ChunkKey) {
        if let Some(e) = self.entries.remove(key) {
            if self.idents.get(&e.ident) == Some(key) {
                self.idents.remove(&e.ident);
            }
            self.release(e.slot, e.len);
        }
    }

    /// First fit of `len` (a multiple of [`SLOT_ALIGN`]) bytes.
    fn alloc(&mut self, len: u64) -> Option<u64> {
        let (&at, &n) = self.free.iter().find(|(_, &n)| n >= len)?;
        self.free.remove(&at);
        if n > len {
            self.free.insert(at + len, n - len);
        }
        Some(at)
    }

    /// Returns `[at, at + len)` to the free extents, merged with its neighbours.
    fn release(&mut self, mut at: u64, mut len: u64) {
        if let Some((&prev, &plen)) = self.free.range(..at).next_back() {
            if prev + plen == at {
                self.free.remove(&prev);
                at = prev;
                len += plen;
            }
        }
        if let Some(&nlen) = self.free.get(&(at + len)) {
            self.free.remove(&(at + len));
            len += nlen;
        }
        self.free.insert(at, len);
    }

    /// Bytes held by entries.
    #[cfg(test)]
    fn held_bytes(&self) -> u64 {
        self.entries.values().map(|e| e.len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Generation;
    use proptest::prelude::*;

    fn key(i: u64, generation: &str) -> ChunkKey {
        ChunkKey { store: "/s".into(), key: "shard".into(), offset: i * 1000, generation: Generation::new(generation) }
    }

    fn ident(i: u64) -> Ident {
        ("/s".into(), vec![i])
    }

    fn want(i: u64, bytes: u64) -> Want {
        Want { key: Some(key(i, "g")), bytes, ident: ident(i) }
    }

    /// `schedule[s]`: the chunks batch `s` reads; next use from the schedule itself, limited
    /// to `window` batches ahead.
    fn next_in(schedule: &[Vec<u64>], seq: usize, window: usize) -> impl Fn(&Ident) -> Option<u64> + '_ {
        move |id: &Ident| (seq + 1..schedule.len().min(seq + 1 + window)).find(|&s| schedule[s].contains(&id.1[0])).map(|s| s as u64)
    }

    #[test]
    fn keeps_what_a_later_batch_reads_and_serves_it() {
        let mut st = DeviceStore::new(4 * SLOT_ALIGN);
        let schedule = vec![vec![0, 1], vec![1, 2], vec![2, 3], vec![0]];
        let p0 = st.plan(0, &[want(0, 100), want(1, 100)], &next_in(&schedule, 0, 8));
        assert_eq!(p0[1], StoreUse::Keep { slot: 0 }, "chunk 1 is read by batch 1 too");
        assert!(matches!(p0[0], StoreUse::Keep { .. }), "chunk 0 by batch 3");
        let p1 = st.plan(1, &[want(1, 100), want(2, 100)], &next_in(&schedule, 1, 8));
        assert_eq!(p1[0], StoreUse::Resident { slot: 0, producer: 0 });
        assert!(matches!(p1[1], StoreUse::Keep { .. }));
        let p2 = st.plan(2, &[want(2, 100), want(3, 100)], &next_in(&schedule, 2, 8));
        assert!(matches!(p2[0], StoreUse::Resident { producer: 1, .. }));
        assert_eq!(p2[1], StoreUse::Scratch, "no later batch reads chunk 3");
        let rewritten = Want { key: Some(key(0, "g2")), ..want(0, 100) };
        let held = st.held_bytes();
        assert_eq!(st.plan(3, &[rewritten], &|_| None)[0], StoreUse::Scratch, "a new generation never hits");
        assert_eq!(st.held_bytes(), held - SLOT_ALIGN, "and the old generation's entry is dropped");
        assert_eq!(st.stats().hits, 2);
        let mut off = DeviceStore::new(0);
        assert_eq!(off.plan(0, &[want(0, 1)], &|_| Some(5)), vec![StoreUse::Scratch]);
        assert_eq!(off.stats(), CacheStats::default());
    }

    #[test]
    fn evicts_only_what_is_needed_later_and_forgets_failed_producers() {
        let mut st = DeviceStore::new(2 * SLOT_ALIGN);
        // Batch 0 keeps chunks 0 (needed by batch 5) and 1 (needed by batch 2).
        let uses: HashMap<u64, u64> = [(0, 5), (1, 2), (2, 1)].into_iter().collect();
        let next = |id: &Ident| uses.get(&id.1[0]).copied();
        let p = st.plan(0, &[want(0, 10), want(1, 10)], &next);
        assert!(p.iter().all(|u| matches!(u, StoreUse::Keep { .. })));
        // Batch 1 wants to keep chunk 2 (needed by... nobody later than 1): scratch.
        let later: HashMap<u64, u64> = [(0, 5), (1, 2), (2, 3)].into_iter().collect();
        let next = |id: &Ident| later.get(&id.1[0]).copied();
        let p = st.plan(1, &[want(2, 10)], &next);
        let StoreUse::Keep { slot } = p[0] else { panic!("chunk 2 needed by batch 3 evicts chunk 0 (needed by 5): {p:?}") };
        assert_eq!(st.stats().evictions, 1);
        let p = st.plan(2, &[want(1, 10), want(0, 10)], &|_| None);
        assert!(matches!(p[0], StoreUse::Resident { .. }), "chunk 1 (needed by 2, sooner than 3) was kept");
        assert_eq!(p[1], StoreUse::Scratch, "chunk 0 was evicted");
        st.forget_producer(1);
        assert_eq!(st.plan(3, &[want(2, 10)], &|_| None)[0], StoreUse::Scratch, "batch 1 failed: its slot {slot} was never written");
        st.clear();
        assert_eq!(st.plan(4, &[want(1, 10)], &|_| None)[0], StoreUse::Scratch);
        assert_eq!(st.free.len(), 1, "everything free again, coalesced");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Simulates the pool as the extension runs it (batches in order; per batch the
        /// `Resident` copies out, then the `Keep` copies in) over random schedules, sizes and
        /// failures, and checks: every `Resident` reads exactly the bytes of its chunk, as a
        /// successful earlier batch kept them and nothing overwrote since; the entries never
        /// overlap or leave the pool; a chunk is kept only when a later batch of the window
        /// reads it; a failed producer's chunks are never served.
        #[test]
        fn every_hit_reads_what_its_producer_wrote(
            schedule in proptest::collection::vec(proptest::collection::btree_set(0u64..24, 1..6), 1..40),
            sizes in proptest::collection::vec(1u64..700, 24),
            slots in 0u64..12,
            window in 1usize..6,
            failing in proptest::collection::btree_set(0usize..40, 0..4),
            generations in proptest::collection::vec(0u8..2, 40),
        ) {
            let capacity = slots * SLOT_ALIGN;
            let mut st = DeviceStore::new(capacity);
            let schedule: Vec<Vec<u64>> = schedule.into_iter().map(|s| s.into_iter().collect()).collect();
            // The pool: which (chunk, generation) each byte holds (`None`: never written).
            let mut pool: Vec<Option<(u64, u8)>> = vec![None; capacity as usize];
            // A shard rewritten from batch `s` on: its chunks have a new generation.
            let generation_at = |s: usize| generations[..=s].iter().map(|&g| u64::from(g)).sum::<u64>() % 2;
            for (s, chunks) in schedule.iter().enumerate() {
                let g = generation_at(s) as u8;
                let wants: Vec<Want> = chunks.iter().map(|&c| Want { key: Some(key(c, &g.to_string())), bytes: sizes[c as usize], ident: ident(c) }).collect();
                let next = next_in(&schedule, s, window);
                let plan = st.plan(s as u64, &wants, &next);
                prop_assert_eq!(plan.len(), wants.len());
                let failed = failing.contains(&s);
                if failed {
                    st.forget_producer(s as u64);
                    continue;
                }
                for (u, &c) in plan.iter().zip(chunks) {
                    if let StoreUse::Resident { slot, producer } = *u {
                        prop_assert!(producer < s as u64 && !failing.contains(&(producer as usize)));
                        let range = slot as usize..(slot + sizes[c as usize]) as usize;
                        prop_assert!(pool[range].iter().all(|b| *b == Some((c, g))), "batch {} chunk {} at {} reads other bytes", s, c, slot);
                    }
                }
                for (u, &c) in plan.iter().zip(chunks) {
                    if let StoreUse::Keep { slot } = *u {
                        prop_assert!(next(&ident(c)).is_some(), "chunk {} kept though no later batch of the window reads it", c);
                        let end = slot + sizes[c as usize].next_multiple_of(SLOT_ALIGN);
                        prop_assert!(end <= capacity);
                        for b in &mut pool[slot as usize..end as usize] {
                            *b = Some((c, g));
                        }
                    }
                }
                let mut spans: Vec<(u64, u64)> = st.entries.values().map(|e| (e.slot, e.slot + e.len)).collect();
                spans.sort_unstable();
                for w in spans.windows(2) {
                    prop_assert!(w[0].1 <= w[1].0, "entries overlap: {:?}", w);
                }
                prop_assert!(st.held_bytes() <= capacity);
                let free: u64 = st.free.values().sum();
                prop_assert_eq!(free + st.held_bytes(), capacity, "free space and entries account for the pool");
                prop_assert!(st.entries.iter().all(|(k, e)| st.idents.get(&e.ident) == Some(k)), "one entry per chunk, indexed");
                prop_assert_eq!(st.idents.len(), st.entries.len());
            }
        }
    }
}
