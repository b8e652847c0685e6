//! prefetch: resolves what a batch needs before it can be planned: each sample's array
//! metadata (`array_meta` cache) and the index of every shard its box touches
//! (`shard_index` cache; an absent shard file resolves to "absent", which is not an error:
//! its chunks become fill). Misses are loaded on the worker pool in parallel. Every entry a
//! batch uses stays pinned (its [`Handle`] held) until the batch completes.
//!
//! Calls: `store` (reads), `zarr` (parsers), `cache`, `io` (pool). Called by `pipeline`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crossbeam::channel::unbounded;

use crate::cache::{Acquired, Cache, CacheStats, Handle};
use crate::error::{err, Error, Result};
use crate::io::WorkerPool;
use crate::plan::{shards_of, ShardLookup};
use crate::store::{self, ReadFile};
use crate::zarr::{ArrayMeta, ShardIndex};

/// Reads and parses `zarr.json` of the array at `uri`.
///
/// # Errors
/// NotFound when there is no `zarr.json`; InvalidArgument/DtypeMismatch from parsing;
/// every message names the uri.
pub fn load_array_meta(uri: &str) -> Result<ArrayMeta> {
    let root = store::array_root(uri)?;
    let path = root.join("zarr.json");
    let bytes = store::read_file(&path)?.ok_or_else(|| err!(NotFound, "array not found: {uri} (no zarr.json at {})", path.display()))?;
    ArrayMeta::parse(&bytes).map_err(|e| e.context(uri))
}

/// Reads the index of the shard file at `path`; `Ok(None)` when the file is absent.
///
/// # Errors
/// Storage for a short, corrupt or truncated shard (the message names the file).
pub fn load_shard_index(path: &Path, meta: &ArrayMeta) -> Result<Option<ShardIndex>> {
    let Some(sharding) = &meta.sharding else { return Ok(None) };
    let Some(file) = ReadFile::open(path)? else { return Ok(None) };
    let n: usize = sharding.chunks_per_shard(&meta.grid_shape).iter().product::<u64>() as usize;
    let len = ShardIndex::encoded_len(n, sharding.index_crc32c) as u64;
    if file.len() < len {
        return Err(err!(Storage, "{}: shard file of {} bytes is shorter than its {len}-byte index (truncated shard)", path.display(), file.len()));
    }
    let at = if sharding.index_at_start { 0 } else { file.len() - len };
    let bytes = file.read_at(at, len as usize)?;
    ShardIndex::parse(&bytes, n, sharding.index_crc32c, file.len())
        .map(Some)
        .map_err(|e| e.context(path.display()))
}

/// The pinned, resolved inputs of one batch.
pub struct Resolved {
    /// Per sample: its array's metadata and folder.
    pub arrays: Vec<(Arc<ArrayMeta>, PathBuf)>,
    /// Per touched shard (folder, shard coords): its index, `None` when absent.
    pub shards: HashMap<(PathBuf, Vec<u64>), Arc<Option<ShardIndex>>>,
    handles: Vec<(CacheKind, Handle)>,
}

impl ShardLookup for Resolved {
    fn shard(&self, root: &Path, coords: &[u64]) -> Option<Option<&ShardIndex>> {
        self.shards.get(&(root.to_path_buf(), coords.to_vec())).map(|s| s.as_ref().as_ref())
    }
}

#[derive(Debug, Clone, Copy)]
enum CacheKind {
    ArrayMeta,
    ShardIndex,
}

struct Caches {
    array_meta: Cache<String, ArrayMeta>,
    shard_index: Cache<(PathBuf, Vec<u64>), Option<ShardIndex>>,
}

/// Owns the metadata caches; resolves batches.
pub struct Prefetcher {
    caches: Mutex<Caches>,
    released: Condvar,
}

/// Cache statistics of a prefetcher.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrefetchStats {
    /// `array_meta` cache.
    pub array_meta: CacheStats,
    /// `shard_index` cache.
    pub shard_index: CacheStats,
}

impl Prefetcher {
    /// Caches of the given capacities.
    pub fn new(n_array_meta: usize, n_shard_index: usize) -> Self {
        Self {
            caches: Mutex::new(Caches { array_meta: Cache::new(n_array_meta), shard_index: Cache::new(n_shard_index) }),
            released: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Caches> {
        self.caches.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Cache statistics.
    pub fn stats(&self) -> PrefetchStats {
        let c = self.lock();
        PrefetchStats { array_meta: c.array_meta.stats(), shard_index: c.shard_index.stats() }
    }

    /// Unpins a batch's entries.
    pub fn release(&self, resolved: &mut Resolved) {
        let mut c = self.lock();
        for (kind, h) in resolved.handles.drain(..) {
            match kind {
                CacheKind::ArrayMeta => c.array_meta.release(h),
                CacheKind::ShardIndex => c.shard_index.release(h),
            }
        }
        drop(c);
        self.released.notify_all();
    }

    /// Acquires `key` in the cache chosen by `pick`, waiting for other batches to release
    /// entries while the cache is full. `others_in_flight` says whether waiting can help.
    fn acquire<K: Clone + Eq + std::hash::Hash, V>(
        &self,
        pick: impl Fn(&mut Caches) -> &mut Cache<K, V>,
        key: &K,
        knob: &str,
        others_in_flight: &dyn Fn() -> bool,
    ) -> Result<Acquired<V>> {
        let mut c = self.lock();
        loop {
            match pick(&mut c).acquire(key) {
                Acquired::Full => {
                    if !others_in_flight() {
                        let cap = pick(&mut c).capacity();
                        return Err(err!(BudgetExceeded, "one batch needs more than {knob}={cap} cache entries; raise `{knob}`"));
                    }
                    c = self.released.wait_timeout(c, Duration::from_millis(50)).unwrap_or_else(std::sync::PoisonError::into_inner).0;
                }
                other => return Ok(other),
            }
        }
    }

    /// Resolves the metadata and shard indexes of `samples` (uri, aabb), loading misses on
    /// `pool`. On error, everything acquired so far is released.
    ///
    /// # Errors
    /// The first sample's load error (NotFound, InvalidArgument, DtypeMismatch, Storage),
    /// or BudgetExceeded when a cache cannot hold one batch.
    pub fn resolve(&self, samples: &[(String, Vec<(i64, i64)>)], pool: &WorkerPool, others_in_flight: &dyn Fn() -> bool) -> Result<Resolved> {
        let mut r = Resolved { arrays: Vec::with_capacity(samples.len()), shards: HashMap::new(), handles: Vec::new() };
        match self.resolve_into(&mut r, samples, pool, others_in_flight) {
            Ok(()) => Ok(r),
            Err(e) => {
                self.release(&mut r);
                Err(e)
            }
        }
    }

    fn resolve_into(&self, r: &mut Resolved, samples: &[(String, Vec<(i64, i64)>)], pool: &WorkerPool, others_in_flight: &dyn Fn() -> bool) -> Result<()> {
        // Array metadata: few distinct arrays per batch, loaded inline.
        let mut metas: HashMap<&str, Arc<ArrayMeta>> = HashMap::new();
        for (uri, _) in samples {
            if let Some(m) = metas.get(uri.as_str()) {
                r.arrays.push((Arc::clone(m), store::array_root(uri)?));
                continue;
            }
            let meta = match self.acquire(|c| &mut c.array_meta, uri, "n_array_meta_cache", others_in_flight)? {
                Acquired::Hit(h, m) => {
                    r.handles.push((CacheKind::ArrayMeta, h));
                    m
                }
                Acquired::Miss(h) => {
                    r.handles.push((CacheKind::ArrayMeta, h));
                    let m = Arc::new(load_array_meta(uri)?);
                    self.lock().array_meta.fill(h, Arc::clone(&m));
                    m
                }
                Acquired::Full => unreachable!("acquire waits or fails when full"),
            };
            metas.insert(uri, Arc::clone(&meta));
            r.arrays.push((meta, store::array_root(uri)?));
        }
        // Shard indexes: every shard touched by any sample, misses loaded in parallel.
        let mut misses = Vec::new();
        for ((meta, root), (uri, aabb)) in r.arrays.iter().zip(samples) {
            if aabb.len() != meta.rank() {
                continue; // the planner reports the rank mismatch
            }
            for coords in shards_of(meta, aabb) {
                let key = (root.clone(), coords);
                if r.shards.contains_key(&key) {
                    continue;
                }
                match self.acquire(|c| &mut c.shard_index, &key, "n_shard_index_cache", others_in_flight)? {
                    Acquired::Hit(h, idx) => {
                        r.handles.push((CacheKind::ShardIndex, h));
                        r.shards.insert(key, idx);
                    }
                    Acquired::Miss(h) => {
                        r.handles.push((CacheKind::ShardIndex, h));
                        r.shards.insert(key.clone(), Arc::new(None));
                        misses.push((key, h, Arc::clone(meta), uri.clone()));
                    }
                    Acquired::Full => unreachable!("acquire waits or fails when full"),
                }
            }
        }
        if misses.is_empty() {
            return Ok(());
        }
        let (tx, rx) = unbounded::<(usize, Result<Option<ShardIndex>>)>();
        for (i, (key, _, meta, _)) in misses.iter().enumerate() {
            let tx = tx.clone();
            let path = key.0.join(meta.key_encoding.key(&key.1));
            let meta = Arc::clone(meta);
            pool.spawn(move || {
                let _ = tx.send((i, load_shard_index(&path, &meta)));
            });
        }
        drop(tx);
        let mut first_err: Option<Error> = None;
        let mut got = 0;
        for (i, res) in rx.iter() {
            got += 1;
            let (key, h, _, uri) = &misses[i];
            match res {
                Ok(idx) => {
                    let idx = Arc::new(idx);
                    self.lock().shard_index.fill(*h, Arc::clone(&idx));
                    r.shards.insert(key.clone(), idx);
                }
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e.context(uri));
                    }
                }
            }
        }
        if got < misses.len() && first_err.is_none() {
            first_err = Some(err!(Shutdown, "pipeline closed while loading shard indexes"));
        }
        first_err.map_or(Ok(()), Err)
    }
}
