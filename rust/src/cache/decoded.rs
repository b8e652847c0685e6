//! The decoded-chunk cache of the CPU path: decoded chunks kept across batches, bounded by
//! bytes (`decoded_cache_bytes`, 0 = off), least recently used evicted first. Keyed by where
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

/// A byte-bounded LRU map from chunk to decoded bytes. Not synchronised.
#[derive(Default)]
pub(crate) struct DecodedCache {
    capacity: u64,
    bytes: u64,
    clock: u64,
    entries: HashMap<ChunkKey, (Arc<Vec<u8>>, u64)>,
    order: BTreeMap<u64, ChunkKey>,
    stats: CacheStats,
}

impl DecodedCache {
    /// A cache of at most `capacity` decoded bytes (0: never stores anything).
    pub(crate) fn new(capacity: u64) -> Self {
        Self { capacity, ..Self::default() }
    }

    /// `true` when the cache can hold anything.
    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The decoded bytes of `key`, marking it recently used.
    pub(crate) fn get(&mut self, key: &ChunkKey) -> Option<Arc<Vec<u8>>> {
        if !self.enabled() {
            return None;
        }
        self.clock += 1;
        let clock = self.clock;
        match self.entries.get_mut(key) {
            Some((v, tick)) => {
                self.order.remove(tick);
                *tick = clock;
                self.order.insert(clock, key.clone());
                self.stats.hits += 1;
                Some(Arc::clone(v))
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Stores `value` for `key`, evicting least recently used entries to stay within the
    /// capacity; a value larger than the capacity is not stored.
    pub(crate) fn insert(&mut self, key: ChunkKey, value: Arc<Vec<u8>>) {
        let size = value.len() as u64;
        if size > self.capacity || self.entries.contains_key(&key) {
            return;
        }
        while self.bytes + size > self.capacity {
            let Some((_, old)) = self.order.pop_first() else { break };
            if let Some((v, _)) = self.entries.remove(&old) {
                self.bytes -= v.len() as u64;
                self.stats.evictions += 1;
            }
        }
        self.clock += 1;
        self.order.insert(self.clock, key.clone());
        self.entries.insert(key, (value, self.clock));
        self.bytes += size;
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

    #[test]
    fn bounded_by_bytes_lru() {
        let mut c = DecodedCache::new(10);
        let k = |i: u64| ChunkKey { store: "/s".into(), key: "f".into(), offset: i, generation: Generation::new("g") };
        c.insert(k(0), Arc::new(vec![0; 4]));
        c.insert(k(1), Arc::new(vec![1; 4]));
        assert!(c.get(&k(0)).is_some(), "touch 0: 1 is now the oldest");
        c.insert(k(2), Arc::new(vec![2; 4]));
        assert!(c.get(&k(1)).is_none(), "1 evicted");
        assert_eq!(c.get(&k(0)).unwrap()[0], 0);
        assert_eq!(c.get(&k(2)).unwrap()[0], 2);
        assert!(c.bytes() <= 10);
        c.insert(k(3), Arc::new(vec![3; 11]));
        assert!(c.get(&k(3)).is_none(), "larger than the capacity: not stored");
        let mut off = DecodedCache::new(0);
        off.insert(k(0), Arc::new(vec![0; 1]));
        assert!(off.get(&k(0)).is_none());
        assert_eq!(off.stats().misses, 0, "a disabled cache counts nothing");
    }
}
