//! The decoded-chunk cache of the CPU path: decoded chunks, or decoded byte ranges of them
//! ([`DecodedSpan`]: a prefix, or the blosc blocks some crops read), kept across batches,
//! bounded by bytes (`decoded_cache_bytes`, 0 = off), least recently used evicted first. With a
//! window (`decoded_cache_bytes` unset: chunk sharing across the look-ahead window), an
//! entry that no batch of the last `window` batches used is dropped first, so the cache
//! holds about the window's working set, not the byte bound. Keyed by where
//! the chunk's bytes are stored and which generation of that object they came from, so a
//! rewritten shard or chunk never hits an entry of its old bytes. Values are shared (`Arc`),
//! so a batch that got a hit keeps its data even if the entry is evicted meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::CacheStats;
use crate::store::Generation;

/// Where a chunk's encoded bytes are: the store (its uri), the object key, the byte offset
/// in it, and the object's generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChunkKey {
    /// The store's uri.
    pub store: Arc<str>,
    /// Object key.
    pub key: Arc<str>,
    /// Byte offset of the chunk in the object.
    pub offset: u64,
    /// The object's generation.
    pub generation: Generation,
}

/// The decoded bytes `offset..offset + bytes.len()` of one chunk's decoded form (native
/// endian, C order): the whole chunk (offset 0, every byte), a prefix (offset 0), or the
/// blosc blocks some crops read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DecodedSpan {
    /// Where `bytes` start in the decoded chunk.
    pub offset: usize,
    /// The decoded bytes.
    pub bytes: Vec<u8>,
}

impl DecodedSpan {
    /// One past the last byte held.
    pub(crate) fn end(&self) -> usize {
        self.offset.saturating_add(self.bytes.len())
    }

    /// `true` when the bytes `lo..hi` of the chunk are held (always, for an empty range).
    pub(crate) fn covers(&self, lo: usize, hi: usize) -> bool {
        lo >= hi || (self.offset <= lo && hi <= self.end())
    }
}

/// A byte-bounded LRU map from chunk to decoded bytes. Not synchronised.
#[derive(Default)]
pub(crate) struct DecodedCache {
    capacity: u64,
    /// Batches an entry outlives its last use by (`None`: no such limit).
    window: Option<u64>,
    bytes: u64,
    clock: u64,
    /// Value, LRU tick, the latest batch that used it.
    entries: HashMap<ChunkKey, (Arc<DecodedSpan>, u64, u64)>,
    order: BTreeMap<u64, ChunkKey>,
    stats: CacheStats,
    /// Buffers of evicted entries no batch holds any more, for the next decodes
    /// ([`take_buffer`](Self::take_buffer)): their pages are already mapped, so a decode
    /// into one pays no page faults and no zero fill (on the 2-core dev VM, fresh buffers
    /// cost a quarter of the decode time: dev/perf.md). At most [`SPARE_MAX`] buffers and
    /// an eighth of the capacity, which the entries leave free for them (sized for a
    /// window's worth of chunks aging out at once).
    spare: Vec<Vec<u8>>,
    spare_bytes: u64,
}

/// Most evicted buffers kept for reuse.
const SPARE_MAX: usize = 1024;

impl DecodedCache {
    /// A cache of at most `capacity` decoded bytes (0: never stores anything); with
    /// `window`, entries no batch used in the last `window` batches are dropped.
    pub(crate) fn new(capacity: u64, window: Option<u64>) -> Self {
        Self { capacity, window, ..Self::default() }
    }

    /// `true` when the cache can hold anything.
    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The decoded bytes of `key`, marking it recently used by batch `seq`.
    #[cfg(test)]
    pub(crate) fn get(&mut self, key: &ChunkKey, seq: u64) -> Option<Arc<DecodedSpan>> {
        self.lookup(key, (0, 0), seq, true)
    }

    /// As [`get`](Self::get) for entries that may be parts of a chunk: a hit must hold the
    /// decoded bytes `need.0..need.1` (an entry that does not counts as a miss).
    pub(crate) fn get_covering(&mut self, key: &ChunkKey, need: (usize, usize), seq: u64) -> Option<Arc<DecodedSpan>> {
        self.lookup(key, need, seq, true)
    }

    /// As [`get_covering`](Self::get_covering), but a miss is not counted (a look-up made
    /// ahead of the one that decides, so each chunk counts one miss at most).
    pub(crate) fn probe(&mut self, key: &ChunkKey, need: (usize, usize), seq: u64) -> Option<Arc<DecodedSpan>> {
        self.lookup(key, need, seq, false)
    }

    fn lookup(&mut self, key: &ChunkKey, (lo, hi): (usize, usize), seq: u64, count_miss: bool) -> Option<Arc<DecodedSpan>> {
        if !self.enabled() {
            return None;
        }
        if self.entries.get(key).is_some_and(|e| !e.0.covers(lo, hi)) {
            self.stats.misses += u64::from(count_miss);
            return None;
        }
        self.clock += 1;
        let clock = self.clock;
        match self.entries.get_mut(key) {
            Some((v, tick, used)) => {
                self.order.remove(tick);
                *tick = clock;
                *used = (*used).max(seq);
                self.order.insert(clock, key.clone());
                self.stats.hits += 1;
                Some(Arc::clone(v))
            }
            None => {
                self.stats.misses += u64::from(count_miss);
                None
            }
        }
    }

    /// Stores `value` for `key`, decoded by batch `seq`: first drops the entries the window
    /// left behind (oldest first, while their last use is more than `window` batches before
    /// `seq`), then evicts least recently used entries to stay within the capacity (values
    /// counted by their allocations' capacities, an eighth left to spare buffers); a value
    /// larger than that, or one whose bytes an entry of `key` already holds, is not stored.
    /// One entry per chunk: any other entry of `key` is replaced.
    pub(crate) fn insert(&mut self, key: ChunkKey, value: Arc<DecodedSpan>, seq: u64) {
        let size = value.bytes.capacity() as u64;
        if size > self.entry_capacity() || self.entries.get(&key).is_some_and(|e| e.0.covers(value.offset, value.end())) {
            return;
        }
        if let Some((old, tick, _)) = self.entries.remove(&key) {
            self.order.remove(&tick);
            self.bytes -= old.bytes.capacity() as u64;
            self.recycle(old);
        }
        if let Some(window) = self.window {
            while let Some((_, old)) = self.order.first_key_value() {
                let stale = self.entries.get(old).is_none_or(|e| e.2.saturating_add(window) < seq);
                if !stale {
                    break;
                }
                self.evict_oldest();
            }
        }
        while self.bytes + size > self.entry_capacity() {
            if !self.evict_oldest() {
                break;
            }
        }
        self.clock += 1;
        self.order.insert(self.clock, key.clone());
        self.entries.insert(key, (value, self.clock, seq));
        self.bytes += size;
    }

    /// Drops the least recently used entry; `false` when there is none.
    fn evict_oldest(&mut self) -> bool {
        let Some((_, old)) = self.order.pop_first() else { return false };
        if let Some((v, ..)) = self.entries.remove(&old) {
            self.bytes -= v.bytes.capacity() as u64;
            self.stats.evictions += 1;
            self.recycle(v);
        }
        true
    }

    /// Bytes the spare buffers may take.
    fn spare_capacity(&self) -> u64 {
        self.capacity / 8
    }

    /// Bytes the entries may take: the capacity less what the spares may.
    fn entry_capacity(&self) -> u64 {
        self.capacity - self.spare_capacity()
    }

    /// Keeps an evicted value's buffer for [`take_buffer`](Self::take_buffer) when no batch
    /// holds it and the spares have room; drops it otherwise.
    fn recycle(&mut self, v: Arc<DecodedSpan>) {
        let Ok(DecodedSpan { bytes: buf, .. }) = Arc::try_unwrap(v) else { return };
        let size = buf.capacity() as u64;
        if self.spare.len() < SPARE_MAX && self.spare_bytes + size <= self.spare_capacity() {
            self.spare_bytes += size;
            self.spare.push(buf);
        }
    }

    /// A buffer of exactly `need` bytes for a decode whose result may be inserted: an evicted
    /// entry's buffer of capacity `need..=2 × need` when there is one (its old bytes left in
    /// place: the decode overwrites all of them), else `None` (the caller allocates).
    pub(crate) fn take_buffer(&mut self, need: usize) -> Option<Vec<u8>> {
        let at = self.spare.iter().position(|b| b.capacity() >= need && b.capacity() / 2 <= need)?;
        let mut buf = self.spare.swap_remove(at);
        self.spare_bytes -= buf.capacity() as u64;
        if buf.len() >= need {
            buf.truncate(need);
        } else {
            buf.resize(need, 0); // within its capacity: no allocation
        }
        Some(buf)
    }

    /// `true` when some part of `key` is held (a look-up that needed other bytes missed).
    pub(crate) fn holds(&self, key: &ChunkKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Hits, misses, evictions.
    pub(crate) fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Decoded bytes held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(fill: u8, n: usize) -> Arc<DecodedSpan> {
        Arc::new(DecodedSpan { offset: 0, bytes: vec![fill; n] })
    }

    fn k(i: u64) -> ChunkKey {
        ChunkKey { store: "/s".into(), key: "f".into(), offset: i, generation: Generation::new("g") }
    }

    #[test]
    fn a_window_drops_what_the_window_left_behind() {
        let mut c = DecodedCache::new(1 << 20, Some(2));
        c.insert(k(0), whole(0, 4), 0);
        c.insert(k(1), whole(1, 4), 1);
        assert!(c.get(&k(0), 2).is_some(), "used by batch 2: kept while the window may need it");
        c.insert(k(2), whole(2, 4), 4);
        assert!(c.get(&k(1), 4).is_none(), "last used by batch 1, more than 2 batches before 4: dropped");
        assert!(c.get(&k(0), 4).is_some(), "last used by batch 2: kept");
        c.insert(k(3), whole(3, 4), 9);
        assert!(c.get(&k(0), 9).is_none() && c.get(&k(2), 9).is_none());
        assert_eq!(c.bytes(), 4, "only the live entry is held");
        let other_generation = ChunkKey { generation: Generation::new("g2"), ..k(3) };
        assert!(c.get(&other_generation, 9).is_none(), "a rewritten object never hits its old bytes");
        // Prefixes: a short entry serves short needs only; a longer one replaces it.
        let mut p = DecodedCache::new(100, Some(2));
        p.insert(k(7), whole(7, 4), 0);
        assert!(p.get_covering(&k(7), (0, 4), 0).is_some());
        assert!(p.get_covering(&k(7), (0, 5), 0).is_none(), "a 4-byte prefix cannot serve 5 bytes");
        assert!(p.probe(&k(7), (0, 5), 0).is_none());
        p.insert(k(7), whole(7, 8), 0);
        assert_eq!(p.get_covering(&k(7), (0, 8), 0).unwrap().bytes.len(), 8);
        assert_eq!(p.bytes(), 8, "the shorter entry was replaced, not added");
        p.insert(k(7), whole(7, 2), 0);
        assert_eq!(p.get_covering(&k(7), (0, 8), 0).unwrap().bytes.len(), 8, "a shorter one does not replace a longer one");
        // The byte bound holds with a window too.
        let mut small = DecodedCache::new(8, Some(100));
        for i in 0..5 {
            small.insert(k(i), whole(0, 4), i);
            assert!(small.bytes() <= 8);
        }
    }

    #[test]
    fn a_span_serves_only_the_ranges_it_holds() {
        let span = |offset: usize, n: usize| Arc::new(DecodedSpan { offset, bytes: (0..n).map(|i| (offset + i) as u8).collect() });
        let mut c = DecodedCache::new(100, Some(4));
        c.insert(k(1), span(16, 32), 0); // bytes 16..48
        let hit = c.get_covering(&k(1), (20, 40), 1).unwrap();
        assert_eq!((hit.offset, hit.bytes[20 - hit.offset]), (16, 20), "byte i of the chunk is at i - offset");
        for outside in [(0, 20), (8, 16), (40, 49), (47, 64), (0, 64)] {
            assert!(c.get_covering(&k(1), outside, 1).is_none(), "{outside:?} is not all inside 16..48");
        }
        assert_eq!(c.stats().misses, 5);
        assert!(c.holds(&k(1)), "a part is held: the caller decodes the chunk again, whole");
        // A span inside the held one is not stored; one it does not hold replaces it; the
        // whole chunk replaces any span.
        c.insert(k(1), span(24, 8), 1);
        assert_eq!(c.get_covering(&k(1), (16, 48), 1).unwrap().offset, 16);
        c.insert(k(1), span(32, 32), 1); // 32..64
        assert!(c.get_covering(&k(1), (16, 20), 1).is_none());
        assert_eq!(c.get_covering(&k(1), (40, 64), 1).unwrap().offset, 32);
        assert_eq!(c.bytes(), 32);
        c.insert(k(1), span(0, 64), 2);
        assert!(c.get_covering(&k(1), (0, 64), 2).is_some() && c.get_covering(&k(1), (16, 20), 2).is_some());
        assert_eq!(c.bytes(), 64, "one entry per chunk");
    }

    #[test]
    fn bounded_by_bytes_lru() {
        let mut c = DecodedCache::new(10, None);
        c.insert(k(0), whole(0, 4), 0);
        c.insert(k(1), whole(1, 4), 0);
        assert!(c.get(&k(0), 0).is_some(), "touch 0: 1 is now the oldest");
        c.insert(k(2), whole(2, 4), 0);
        assert!(c.get(&k(1), 0).is_none(), "1 evicted");
        assert_eq!(c.get(&k(0), 0).unwrap().bytes[0], 0);
        assert_eq!(c.get(&k(2), 0).unwrap().bytes[0], 2);
        assert!(c.bytes() <= 10);
        c.insert(k(3), whole(3, 11), 0);
        assert!(c.get(&k(3), 0).is_none(), "larger than the capacity: not stored");
        c.insert(k(4), whole(4, 1), 1000);
        assert!(c.get(&k(0), 1000).is_some(), "no window: age in batches does not matter");
        let mut off = DecodedCache::new(0, None);
        off.insert(k(0), whole(0, 1), 0);
        assert!(off.get(&k(0), 0).is_none());
        assert_eq!(off.stats().misses, 0, "a disabled cache counts nothing");
    }

    #[test]
    fn evicted_buffers_are_reused_when_no_batch_holds_them_within_the_bound() {
        // Entries: 256 - 256 / 8 = 224 bytes (28 of 8 bytes); spares: 32 bytes (four buffers).
        let mut c = DecodedCache::new(256, None);
        c.insert(k(0), whole(7, 8), 0);
        let held = c.get(&k(0), 0).unwrap(); // a batch still reads entry 0
        for i in 1..29 {
            c.insert(k(i), whole(8, 8), 0); // the 29th evicts 0: held, so dropped
        }
        assert!(c.get(&k(0), 0).is_none(), "0 evicted");
        assert!(c.take_buffer(4).is_none(), "entry 0's buffer was held when evicted");
        c.insert(k(29), whole(9, 8), 0); // evicts 1: kept
        assert_eq!(held.bytes[0], 7, "a held value stays intact after its eviction");
        assert!(c.take_buffer(17).is_none(), "no spare of capacity 17..=34");
        assert!(c.take_buffer(3).is_none(), "no spare of capacity 3..=6");
        let b = c.take_buffer(5).expect("entry 1's buffer (8 in 5..=10)");
        assert_eq!((b.len(), b.capacity()), (5, 8));
        assert!(c.take_buffer(5).is_none(), "taken");
        // Values plus spares stay within the capacity.
        for i in 30..80 {
            c.insert(k(i), whole(0, 8), 0);
            assert!(c.bytes() + c.spare_bytes <= 256, "{} + {}", c.bytes(), c.spare_bytes);
            assert!(c.spare_bytes <= 32);
        }
        assert_eq!(c.spare.len(), 4, "the spares filled up to their bound");
        // A longer prefix replacing an entry frees the shorter one's buffer.
        let mut e = DecodedCache::new(256, None);
        e.insert(k(0), whole(0, 8), 0);
        e.insert(k(0), whole(0, 12), 0);
        assert_eq!(e.take_buffer(8).map(|b| b.len()), Some(8), "the replaced buffer");
    }
}
