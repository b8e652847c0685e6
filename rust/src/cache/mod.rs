//! cache: fixed-capacity maps from a key to a shared value, addressed by [`Handle`]s.
//!
//! Three instances live in a pipeline: `array_meta` (uri → parsed metadata), `shard_index`
//! (shard file → index, or absent), `chunk_layout` (inner chunk → blosc framing, or none).
//! A slot is reused only after its generation is bumped, so a stale handle never resolves
//! to another key's value. Entries are pinned while a batch that needs them is in flight
//! (the batch gate) and evicted least-recently-used once unpinned. Capacity is fixed at
//! construction, slots are made as they are first needed (memory follows the entries held,
//! not the capacity); `acquire` answers `Full` when every slot is pinned, and the prefetcher
//! decides what that means (defer, wait, or fail naming the knob).
//!
//! Owns its slots; calls nothing. Not synchronised: the pipeline keeps each cache behind a
//! mutex.

pub(crate) mod decoded;
pub(crate) mod device;

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;

/// Addresses one cache entry: the slot and the generation the slot had when handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Handle {
    slot: u32,
    generation: u32,
}

struct Slot<K, V> {
    key: Option<K>,
    value: Option<Arc<V>>,
    generation: u32,
    pins: u32,
    last_used: u64,
    /// Invalidated while pinned: no longer in the index; freed at its last release.
    orphan: bool,
}

/// Hit and miss counts of one cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found a filled entry.
    pub hits: u64,
    /// Lookups that reserved a slot to be filled.
    pub misses: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
}

/// The outcome of [`Cache::acquire`]; either way the entry is pinned once for the caller.
#[derive(Debug)]
pub(crate) enum Acquired<V> {
    /// The value is present.
    Hit(Handle, Arc<V>),
    /// A slot was reserved for the key: load the value, then [`Cache::fill`] it, or
    /// [`Cache::release`] the handle if loading failed.
    Miss(Handle),
    /// Every slot is pinned.
    Full,
}

/// A fixed-capacity, generation-checked, pin-aware LRU cache.
pub(crate) struct Cache<K, V> {
    /// Made on demand, never more than `capacity`.
    slots: Vec<Slot<K, V>>,
    capacity: usize,
    index: HashMap<K, u32, ahash::RandomState>,
    /// Unpinned slots holding a value, by last use: the eviction order (O(log n)).
    lru: BTreeMap<u64, u32>,
    /// Slots made and holding no key.
    free: Vec<u32>,
    clock: u64,
    stats: CacheStats,
}

impl<K: Clone + Eq + Hash, V> Cache<K, V> {
    /// A cache of `capacity` entries (1 to 2^32 - 1; clamped). Allocates nothing up front.
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        Self { slots: Vec::new(), capacity, index: HashMap::default(), lru: BTreeMap::new(), free: Vec::new(), clock: 0, stats: CacheStats::default() }
    }

    /// Capacity in entries.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Hit, miss and eviction counts so far.
    pub(crate) fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Finds `key` (pinning it) or reserves a slot for it, evicting the least recently used
    /// unpinned entry.
    pub(crate) fn acquire(&mut self, key: &K) -> Acquired<V> {
        self.clock += 1;
        if let Some(&i) = self.index.get(key) {
            let slot = &mut self.slots[i as usize];
            if slot.pins == 0 {
                self.lru.remove(&slot.last_used);
            }
            slot.pins += 1;
            slot.last_used = self.clock;
            let handle = Handle { slot: i, generation: slot.generation };
            return match &slot.value {
                Some(v) => {
                    self.stats.hits += 1;
                    Acquired::Hit(handle, Arc::clone(v))
                }
                // Reserved by another caller and not filled yet: treat as a miss for this
                // caller too (it loads and fills; the value is the same).
                None => {
                    self.stats.misses += 1;
                    Acquired::Miss(handle)
                }
            };
        }
        let victim = match self.free.pop() {
            Some(i) => i as usize,
            None if self.slots.len() < self.capacity => {
                self.slots.push(Slot { key: None, value: None, generation: 0, pins: 0, last_used: 0, orphan: false });
                self.slots.len() - 1
            }
            None => match self.lru.pop_first() {
                Some((_, i)) => i as usize,
                None => return Acquired::Full,
            },
        };
        let slot = &mut self.slots[victim];
        if let Some(old) = slot.key.take() {
            self.index.remove(&old);
            self.stats.evictions += 1;
        }
        slot.generation = slot.generation.wrapping_add(1);
        slot.key = Some(key.clone());
        slot.value = None;
        slot.pins = 1;
        slot.orphan = false;
        slot.last_used = self.clock;
        self.index.insert(key.clone(), victim as u32);
        self.stats.misses += 1;
        Acquired::Miss(Handle { slot: victim as u32, generation: slot.generation })
    }

    fn slot(&self, h: Handle) -> Option<&Slot<K, V>> {
        self.slots.get(h.slot as usize).filter(|s| s.generation == h.generation && s.key.is_some())
    }

    /// Stores the loaded value of a reserved entry; ignored for a stale handle.
    pub(crate) fn fill(&mut self, h: Handle, value: Arc<V>) {
        if self.slot(h).is_some() {
            self.slots[h.slot as usize].value = Some(value);
        }
    }

    /// The value behind `h`; `None` when the handle is stale or the entry is not filled.
    #[cfg(test)]
    pub(crate) fn get(&self, h: Handle) -> Option<&Arc<V>> {
        self.slot(h).and_then(|s| s.value.as_ref())
    }

    /// Unpins once. An entry left unfilled and unpinned is dropped, so a failed load is
    /// retried by the next lookup.
    pub(crate) fn release(&mut self, h: Handle) {
        if self.slot(h).is_none() {
            return;
        }
        let slot = &mut self.slots[h.slot as usize];
        if slot.pins == 0 {
            return;
        }
        slot.pins -= 1;
        if slot.pins > 0 {
            return;
        }
        if slot.orphan {
            slot.orphan = false;
            slot.key = None;
            slot.value = None;
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(h.slot);
        } else if slot.value.is_none() {
            if let Some(k) = slot.key.take() {
                self.index.remove(&k);
            }
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(h.slot);
        } else {
            self.lru.insert(slot.last_used, h.slot);
        }
    }

    /// Forgets `key`: later lookups miss (and load it again). Holders of pins keep the old
    /// value until they release it; its slot is then freed.
    pub(crate) fn invalidate(&mut self, key: &K) {
        let Some(i) = self.index.remove(key) else { return };
        let slot = &mut self.slots[i as usize];
        if slot.pins == 0 {
            if slot.value.is_some() {
                self.lru.remove(&slot.last_used);
            }
            slot.key = None;
            slot.value = None;
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(i);
        } else {
            slot.orphan = true;
        }
    }

    /// Number of pinned entries.
    pub(crate) fn pinned(&self) -> usize {
        self.slots.iter().filter(|s| s.pins > 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hit_after_fill_and_lru_eviction_of_unpinned() {
        let mut c: Cache<u32, String> = Cache::new(2);
        let Acquired::Miss(a) = c.acquire(&1) else { panic!() };
        c.fill(a, Arc::new("one".into()));
        let Acquired::Hit(a2, v) = c.acquire(&1) else { panic!() };
        assert_eq!((a, v.as_str()), (a2, "one"));
        let Acquired::Miss(b) = c.acquire(&2) else { panic!() };
        c.fill(b, Arc::new("two".into()));
        assert!(matches!(c.acquire(&3), Acquired::Full), "both pinned");
        c.release(a);
        c.release(a);
        let Acquired::Miss(h3) = c.acquire(&3) else { panic!() };
        assert!(c.get(a).is_none(), "evicted: stale handle resolves to nothing");
        c.fill(h3, Arc::new("three".into()));
        assert_eq!(c.get(h3).unwrap().as_str(), "three");
        assert_eq!(c.stats().evictions, 1);
    }

    #[test]
    fn slots_are_made_on_demand() {
        let mut c: Cache<u32, u32> = Cache::new(u32::MAX as usize);
        assert_eq!(c.capacity(), u32::MAX as usize);
        assert_eq!(c.slots.capacity(), 0, "nothing allocated up front");
        for k in 0..3 {
            let Acquired::Miss(h) = c.acquire(&k) else { panic!() };
            c.fill(h, Arc::new(k));
            c.release(h);
        }
        assert_eq!(c.slots.len(), 3, "one slot per entry held");
        c.invalidate(&1);
        let Acquired::Miss(_) = c.acquire(&9) else { panic!() };
        assert_eq!(c.slots.len(), 3, "a freed slot is reused before a new one is made");
        assert_eq!(Cache::<u32, u32>::new(0).capacity(), 1);
    }

    #[test]
    fn failed_load_is_retried() {
        let mut c: Cache<u32, u32> = Cache::new(1);
        let Acquired::Miss(h) = c.acquire(&7) else { panic!() };
        c.release(h);
        assert!(matches!(c.acquire(&7), Acquired::Miss(_)));
    }

    #[test]
    fn invalidated_entries_reload_and_pinned_holders_keep_theirs() {
        let mut c: Cache<u32, u32> = Cache::new(2);
        let Acquired::Miss(h) = c.acquire(&1) else { panic!() };
        c.fill(h, Arc::new(10));
        c.invalidate(&1);
        assert_eq!(c.get(h).map(|v| **v), Some(10), "the pin holder still sees its value");
        let Acquired::Miss(h2) = c.acquire(&1) else { panic!("an invalidated key misses") };
        c.fill(h2, Arc::new(11));
        c.release(h);
        assert!(c.get(h).is_none(), "freed at its last release");
        assert_eq!(c.pinned(), 1);
        c.release(h2);
        c.invalidate(&1);
        assert!(matches!(c.acquire(&1), Acquired::Miss(_)));
        assert!(matches!(c.acquire(&2), Acquired::Miss(_)), "both slots usable again");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Under any sequence of acquires, fills and releases, a handle resolves only to the
        /// value filled for its own key.
        #[test]
        fn stale_handles_never_return_data(ops in proptest::collection::vec((0u32..6, 0u8..3), 1..200), cap in 1usize..4) {
            let mut c: Cache<u32, u32> = Cache::new(cap);
            let mut live: Vec<(u32, Handle)> = Vec::new();
            for (key, op) in ops {
                match op {
                    0 => match c.acquire(&key) {
                        Acquired::Hit(h, v) => { prop_assert_eq!(*v, key * 10); live.push((key, h)); }
                        Acquired::Miss(h) => { c.fill(h, Arc::new(key * 10)); live.push((key, h)); }
                        Acquired::Full => prop_assert_eq!(c.pinned(), cap),
                    },
                    1 => if let Some((_, h)) = live.pop() { c.release(h); },
                    _ => {}
                }
                for (k, h) in &live {
                    if let Some(v) = c.get(*h) { prop_assert_eq!(**v, k * 10); }
                }
            }
        }
    }
}
