//! prefetch: resolves every sample before the planner needs it. Each pushed sample gets a
//! ticket that a per-sample state machine drives through
//! `meta → shard indexes → chunk layouts → READY` on the worker pool, at most
//! `max_inflight` samples at a time (bounded metadata concurrency), as far ahead of the
//! planner as the lookahead window lets samples be pushed. Each stage resolves one cache,
//! pinning what it finds by [`Handle`]:
//! - `array_meta`: uri → parsed metadata;
//! - `shard_index`: shard file → index, or NOTFOUND (`None`) for an absent shard file,
//!   which is not an error: its chunks become fill downstream;
//! - `chunk_layout`: stored chunk → blosc framing ([`BloscFrame`]). Resolved only when the
//!   pipeline decodes on the device and the array's codec is blosc; otherwise a sample has
//!   "no layout", which is a success.
//!
//! A load error fails its sample (the error surfaces, typed, at the `pop` of its batch).
//! Pins are held from the stage that took them until the batch that used them finishes
//! ([`Prefetcher::release`]): that is the batch gate.
//!
//! Room: a background task never waits for cache room; when a cache is full it leaves its
//! sample DEFERRED, keeping what it pinned, and the sample is resumed when a batch releases
//! entries, or by the scheduler when its batch is next. The scheduler resolving the next
//! batch does wait for room: while other batches are in flight it waits for them to finish;
//! when none is, it un-pins samples of later batches (they start over later); if the batch
//! alone cannot fit, it fails with BudgetExceeded naming the knob. When an array is first
//! seen, the capacity one batch may need in the worst case is checked, and a cache below it
//! fails the sample with InvalidArgument naming the knob and the minimum.
//!
//! Staleness: a shard index carries the generation of the shard file it was read from;
//! reads of that shard check it, and a batch that finds the shard rewritten fails with
//! Storage and calls [`Prefetcher::invalidate_shard`], so later batches read the new index.
//! The same batch also calls [`Prefetcher::invalidate_array`], so a recreated array's new
//! `zarr.json` is read too. Array metadata carries the generation of its `zarr.json` (or
//! `.zarray`): a sample that finds it in the cache checks it as `recheck_cached_data` says
//! (a `stat` when a local array is used, at most every 5 ms; a HEAD once the interval has passed on an object
//! store; never when rechecks are off), and a changed or vanished object is read again, so
//! an array recreated in place is read with its new metadata (or fails NotFound).
//!
//! Calls: `store`/`zarr`/`decode` (through `load`), `cache`, `io` (spawner), `plan`
//! (geometry, the opened-array record). Called by `pipeline`.

mod load;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

pub use load::{load_array, multiscale_levels};
pub(crate) use load::MultiscaleInfo;
pub(crate) use load::{load_array_with, load_chunk_frame, load_shard, open_node, Opened};

use crate::cache::{Acquired, Cache, CacheStats, Handle};
use crate::decode::DeviceCodec;
use crate::error::{err, Error, Result};
use crate::io::Spawner;
use crate::plan::{cells, chunk_source, clip, shards_of, Array, ChunkSource, Shard, ShardLookup};
use crate::zarr::blosc::BloscFrame;

/// A shard file: its array's store (uri) and its key.
pub(crate) type ShardKey = (Arc<str>, String);
/// A stored chunk: object, offset, generation.
pub(crate) type ChunkKey = crate::cache::decoded::ChunkKey;

/// Where a sample's ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a task.
    Queued,
    /// A task (or the scheduler) is resolving it.
    Running,
    /// Stopped for cache room; resumed later.
    Deferred,
    /// Every handle resolved.
    Ready,
    /// A load failed; the error waits for the batch.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Meta,
    Shards(usize),
    Layouts(usize),
    Done,
}

#[derive(Debug, Clone, Copy)]
enum CacheKind {
    ArrayMeta,
    ShardIndex,
    ChunkLayout,
}

struct Ticket {
    uri: String,
    aabb: Vec<(i64, i64)>,
    phase: Phase,
    stage: Stage,
    meta: Option<Arc<Array>>,
    shards: HashMap<Vec<u64>, Arc<Option<Shard>>>,
    /// Framing of `layout_keys[i]`, in order.
    layouts: Vec<Arc<BloscFrame>>,
    handles: Vec<(CacheKind, Handle)>,
    error: Option<Error>,
    /// The shards the box touches (computed once, when the stage starts).
    shard_keys: Option<Arc<Vec<Vec<u64>>>>,
    /// The chunks whose layouts the sample needs, with their stored length and whether a
    /// checksum trails them (computed once, off the lock).
    layout_keys: Option<Arc<Vec<LayoutKey>>>,
}

type LayoutKey = (ChunkKey, u64, bool, Vec<u64>);
/// One sample's layout keys and the framing of each.
type LayoutList = (Arc<Vec<LayoutKey>>, Vec<Arc<BloscFrame>>);

/// The sample's shard indexes, as the planner looks them up.
struct TicketShards<'a>(&'a HashMap<Vec<u64>, Arc<Option<Shard>>>);

impl ShardLookup for TicketShards<'_> {
    fn shard(&self, _array: &Array, coords: &[u64]) -> Option<Option<&Shard>> {
        self.0.get(coords).map(|s| s.as_ref().as_ref())
    }
}

/// Sizes and switches of a prefetcher.
#[derive(Debug, Clone)]
pub struct Options {
    /// Samples per batch (for the capacity check).
    pub samples_per_batch: u32,
    /// Extent of every sample (for the capacity check).
    pub sample_shape: Vec<u64>,
    /// `array_meta` capacity.
    pub n_array_meta: usize,
    /// `shard_index` capacity.
    pub n_shard_index: usize,
    /// `chunk_layout` capacity.
    pub n_chunk_layout: usize,
    /// Samples resolved concurrently by background tasks.
    pub max_inflight: usize,
    /// Resolve blosc chunk layouts (the device path uses them).
    pub layouts: bool,
    /// Options for the object stores arrays are opened with.
    pub storage: Arc<crate::store::StorageOptions>,
    /// When a cached array's metadata is checked against its object
    /// ([`crate::plan::MetaSource::due`]): `None` never, zero at every use, else once this
    /// long has passed on an object store (a local one: every few milliseconds).
    pub recheck_metadata: Option<Duration>,
}

impl Options {
    /// Defaults for tests: one sample per batch, generous caches.
    pub fn new(sample_shape: &[u64]) -> Self {
        Self { samples_per_batch: 1, sample_shape: sample_shape.to_vec(), n_array_meta: 16, n_shard_index: 1024, n_chunk_layout: 4096, max_inflight: 4, layouts: false, storage: Arc::default(), recheck_metadata: Some(Duration::from_secs(1)) }
    }
}

#[derive(Default)]
struct Counters {
    ready_ahead: u64,
    resolved_inline: u64,
    deferrals: u64,
    parked: u64,
}

struct State {
    array_meta: Cache<String, Array>,
    shard_index: Cache<ShardKey, Option<Shard>>,
    chunk_layout: Cache<ChunkKey, BloscFrame>,
    tickets: HashMap<u64, Ticket>,
    queue: VecDeque<u64>,
    /// Background tasks spawned and not finished.
    running: usize,
    /// Of those, tasks still waiting in the pool's queue.
    starting: usize,
    /// Schedulers waiting for cache room: no task starts and nothing is resumed meanwhile.
    hold: usize,
    closed: bool,
    next_id: u64,
    counters: Counters,
}

impl State {
    fn release_handles(&mut self, handles: &mut Vec<(CacheKind, Handle)>) {
        for (kind, h) in handles.drain(..) {
            match kind {
                CacheKind::ArrayMeta => self.array_meta.release(h),
                CacheKind::ShardIndex => self.shard_index.release(h),
                CacheKind::ChunkLayout => self.chunk_layout.release(h),
            }
        }
    }

    fn fail(&mut self, id: u64, e: Error) {
        if let Some(mut t) = self.tickets.remove(&id) {
            self.release_handles(&mut t.handles);
            t.phase = Phase::Failed;
            t.stage = Stage::Done;
            t.error = Some(e);
            self.tickets.insert(id, t);
        }
    }
}

struct Inner {
    /// Background tasks at most (`opts.max_inflight`, raised by [`Prefetcher::raise_max_inflight`]).
    max_inflight: std::sync::atomic::AtomicUsize,
    state: Mutex<State>,
    changed: Condvar,
    opts: Options,
    spawner: Spawner,
}

/// Owns the three caches and the tickets of the samples in the lookahead window.
pub struct Prefetcher(Arc<Inner>);

/// Cache statistics and lookahead counters of a prefetcher.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrefetchStats {
    /// `array_meta` cache.
    pub array_meta: CacheStats,
    /// `shard_index` cache.
    pub shard_index: CacheStats,
    /// `chunk_layout` cache.
    pub chunk_layout: CacheStats,
    /// Samples already READY (or failed) when the scheduler reached their batch.
    pub ready_ahead: u64,
    /// Samples the scheduler had to resolve itself.
    pub resolved_inline: u64,
    /// Times a background task stopped for cache room.
    pub deferrals: u64,
    /// Samples un-pinned to make room for an earlier batch.
    pub parked: u64,
}

/// A shard of a batch: its array's identity and its grid coordinates.
pub(crate) type BatchShardKey = (Arc<str>, Vec<u64>);

/// The pinned, resolved inputs of one batch.
pub struct Resolved {
    /// Per sample: its array.
    pub arrays: Vec<Arc<Array>>,
    /// Per touched shard (array identity, shard coordinates): its index, `None` when the
    /// shard file is absent (NOTFOUND).
    pub shards: HashMap<BatchShardKey, Arc<Option<Shard>>>,
    /// Per sample with layouts (device path, blosc): its chunks and their framing.
    layout_lists: Vec<LayoutList>,
    handles: Vec<(CacheKind, Handle)>,
    /// Where the handles go back when the batch is dropped without [`Prefetcher::release`]
    /// (an error or a panic between resolving and finishing).
    owner: Weak<Inner>,
}

impl Drop for Resolved {
    fn drop(&mut self) {
        if self.handles.is_empty() {
            return;
        }
        if let Some(inner) = self.owner.upgrade() {
            let mut st = inner.lock();
            st.release_handles(&mut self.handles);
            resume_deferred(&inner, &mut st);
            drop(st);
            inner.changed.notify_all();
        }
    }
}

/// Blosc framing by stored chunk, borrowed from a [`Resolved`].
pub(crate) type LayoutMap<'a> = HashMap<&'a ChunkKey, &'a Arc<BloscFrame>, ahash::RandomState>;

impl Resolved {
    /// The framing of every blosc chunk of the batch (device path; empty otherwise).
    pub fn layouts(&self) -> LayoutMap<'_> {
        let mut map = LayoutMap::default();
        for (keys, frames) in &self.layout_lists {
            for ((key, ..), frame) in keys.iter().zip(frames) {
                map.insert(key, frame);
            }
        }
        map
    }
}

impl ShardLookup for Resolved {
    fn shard(&self, array: &Array, coords: &[u64]) -> Option<Option<&Shard>> {
        self.shards.get(&(Arc::clone(&array.id), coords.to_vec())).map(|s| s.as_ref().as_ref())
    }
}

/// How the scheduler waits for room while resolving the next batch inline.
struct Blocking<'a> {
    batch: &'a HashSet<u64>,
    others_in_flight: &'a dyn Fn() -> bool,
}

/// Most grid cells of `cell` shape that a box of `sample` extent can touch in an array of
/// `shape`.
fn worst_cells(shape: &[u64], cell: &[u64], sample: &[u64]) -> u64 {
    shape.iter().zip(cell).zip(sample).map(|((&n, &c), &s)| if s == 0 { 0 } else { n.div_ceil(c).min((s - 1).div_ceil(c) + 1) }).fold(1, u64::saturating_mul)
}

impl Prefetcher {
    /// A prefetcher whose tasks run on `spawner`'s pool.
    pub fn new(opts: Options, spawner: Spawner) -> Self {
        let state = State {
            array_meta: Cache::new(opts.n_array_meta),
            shard_index: Cache::new(opts.n_shard_index),
            chunk_layout: Cache::new(opts.n_chunk_layout),
            tickets: HashMap::new(),
            queue: VecDeque::new(),
            running: 0,
            starting: 0,
            hold: 0,
            closed: false,
            next_id: 0,
            counters: Counters::default(),
        };
        Self(Arc::new(Inner { max_inflight: std::sync::atomic::AtomicUsize::new(opts.max_inflight), state: Mutex::new(state), changed: Condvar::new(), opts, spawner }))
    }

    /// Lets up to `n` background tasks run (never lowers the limit).
    pub fn raise_max_inflight(&self, n: usize) {
        self.0.max_inflight.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
        let mut st = self.0.lock();
        pump(&self.0, &mut st);
    }

    /// Starts resolving one sample; returns its ticket id.
    pub fn submit(&self, uri: &str, aabb: &[(i64, i64)]) -> u64 {
        let mut st = self.0.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.tickets.insert(
            id,
            Ticket {
                uri: uri.to_string(),
                aabb: aabb.to_vec(),
                phase: Phase::Queued,
                stage: Stage::Meta,
                meta: None,
                shards: HashMap::new(),
                layouts: Vec::new(),
                handles: Vec::new(),
                error: None,
                shard_keys: None,
                layout_keys: None,
            },
        );
        st.queue.push_back(id);
        pump(&self.0, &mut st);
        id
    }

    /// Loads the metadata of `uris` (warming the `array_meta` cache) and checks every cache
    /// capacity against their geometry, so a pipeline told its arrays fails when it is made,
    /// not at the first batch of each array.
    ///
    /// # Errors
    /// InvalidArgument naming the knob and the minimum; RankMismatch when an array's rank
    /// differs from the samples'; NotFound and the other metadata errors of
    /// [`load_array_meta`].
    pub fn check_arrays(&self, uris: &[String]) -> Result<()> {
        let opts = &self.0.opts;
        let mut distinct: Vec<&str> = uris.iter().map(String::as_str).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let need = distinct.len().min(opts.samples_per_batch as usize);
        if opts.n_array_meta < need {
            return Err(err!(
                InvalidArgument,
                "`n_array_meta_cache` = {} cannot hold one batch: {} samples may come from {need} of the {} listed arrays; raise `n_array_meta_cache` to at least {need}",
                opts.n_array_meta,
                opts.samples_per_batch,
                distinct.len()
            ));
        }
        for uri in distinct {
            let array = Arc::new(load_array_with(uri, &opts.storage)?);
            let meta = &array.meta;
            if meta.rank() != opts.sample_shape.len() {
                return Err(err!(RankMismatch, "{uri}: the array has rank {} (shape {:?}) but sample_shape {:?} has rank {}", meta.rank(), meta.shape, opts.sample_shape, opts.sample_shape.len()));
            }
            check_capacity(opts, &array, uri)?;
            let mut st = self.0.lock();
            match st.array_meta.acquire(&uri.to_string()) {
                Acquired::Miss(h) => {
                    st.array_meta.fill(h, array);
                    st.array_meta.release(h);
                }
                Acquired::Hit(h, _) => st.array_meta.release(h),
                Acquired::Full => {}
            }
        }
        Ok(())
    }

    /// The phase of ticket `id` (`None`: unknown or already taken by its batch).
    pub fn phase(&self, id: u64) -> Option<Phase> {
        self.0.lock().tickets.get(&id).map(|t| t.phase)
    }

    /// Waits until no ticket is queued or being resolved (or `timeout` passes); `true` when
    /// drained.
    pub fn drain(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.0.lock();
        loop {
            let busy = st.running > 0 || st.tickets.values().any(|t| matches!(t.phase, Phase::Queued | Phase::Running));
            if !busy {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self.0.changed.wait_timeout(st, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Cache statistics and lookahead counters.
    pub fn stats(&self) -> PrefetchStats {
        let st = self.0.lock();
        PrefetchStats {
            array_meta: st.array_meta.stats(),
            shard_index: st.shard_index.stats(),
            chunk_layout: st.chunk_layout.stats(),
            ready_ahead: st.counters.ready_ahead,
            resolved_inline: st.counters.resolved_inline,
            deferrals: st.counters.deferrals,
            parked: st.counters.parked,
        }
    }

    /// Pinned entries per cache (array_meta, shard_index, chunk_layout).
    pub fn pinned(&self) -> (usize, usize, usize) {
        let st = self.0.lock();
        (st.array_meta.pinned(), st.shard_index.pinned(), st.chunk_layout.pinned())
    }

    /// Waits until every ticket in `ids` is READY or failed, resolving on this thread the
    /// ones no task is working on (waiting for cache room as the module doc says), then
    /// takes them out of the window. The handles move into the [`Resolved`], pinned until
    /// [`Self::release`].
    ///
    /// # Errors
    /// The first failed sample's error (its batch fails; every handle of the batch is
    /// released); Shutdown after `close`.
    pub fn resolve_batch(&self, ids: &[u64], others_in_flight: &dyn Fn() -> bool) -> Result<Resolved> {
        let batch: HashSet<u64> = ids.iter().copied().collect();
        let block = Blocking { batch: &batch, others_in_flight };
        for &id in ids {
            let mut first_look = true;
            loop {
                let mut st = self.0.lock();
                if st.closed {
                    return Err(err!(Shutdown, "pipeline closed"));
                }
                let Some(t) = st.tickets.get_mut(&id) else {
                    discard(&self.0, &mut st, ids);
                    return Err(err!(Internal, "internal: sample ticket {id} is unknown"));
                };
                match t.phase {
                    Phase::Ready | Phase::Failed => {
                        if first_look {
                            st.counters.ready_ahead += 1;
                        }
                        break;
                    }
                    Phase::Running => {
                        first_look = false;
                        drop(self.0.changed.wait_timeout(st, Duration::from_millis(50)).unwrap_or_else(PoisonError::into_inner));
                    }
                    Phase::Queued | Phase::Deferred => {
                        t.phase = Phase::Running;
                        st.counters.resolved_inline += 1;
                        drop(st);
                        advance_guarded(&self.0, id, Some(&block));
                        first_look = false;
                    }
                }
            }
        }
        let mut st = self.0.lock();
        if st.closed {
            return Err(err!(Shutdown, "pipeline closed"));
        }
        let mut r = Resolved { arrays: Vec::with_capacity(ids.len()), shards: HashMap::new(), layout_lists: Vec::new(), handles: Vec::new(), owner: Arc::downgrade(&self.0) };
        let mut first_err = None;
        for &id in ids {
            let Some(mut t) = st.tickets.remove(&id) else { continue };
            r.handles.append(&mut t.handles);
            if let Some(e) = t.error.take() {
                first_err.get_or_insert(e);
                continue;
            }
            let Some(array) = t.meta else { continue };
            for (coords, idx) in t.shards {
                r.shards.insert((Arc::clone(&array.id), coords), idx);
            }
            if let Some(keys) = t.layout_keys.filter(|_| !t.layouts.is_empty()) {
                r.layout_lists.push((keys, t.layouts));
            }
            r.arrays.push(array);
        }
        if let Some(e) = first_err {
            st.release_handles(&mut r.handles);
            resume_deferred(&self.0, &mut st);
            drop(st);
            self.0.changed.notify_all();
            return Err(e);
        }
        Ok(r)
    }

    /// Unpins a batch's entries (its batch finished) and resumes deferred samples.
    pub fn release(&self, resolved: &mut Resolved) {
        let mut st = self.0.lock();
        st.release_handles(&mut resolved.handles);
        resume_deferred(&self.0, &mut st);
        drop(st);
        self.0.changed.notify_all();
    }

    /// Forgets the cached index of shard `key` of the array `id` (its file changed): later
    /// samples read it again. Batches holding the old index keep it until they finish.
    pub fn invalidate_shard(&self, id: &Arc<str>, key: &str) {
        self.0.lock().shard_index.invalidate(&(Arc::clone(id), key.to_string()));
    }

    /// Forgets the cached metadata of the array opened as `uri` (one of its shards changed or
    /// vanished: the array may have been recreated): later samples read its `zarr.json`
    /// again. Batches holding the old metadata keep it until they finish.
    pub fn invalidate_array(&self, uri: &str) {
        self.0.lock().array_meta.invalidate(&uri.to_string());
    }

    /// Drops every ticket and stops starting tasks; waiters return Shutdown.
    pub fn close(&self) {
        let mut st = self.0.lock();
        st.closed = true;
        st.queue.clear();
        let ids: Vec<u64> = st.tickets.keys().copied().collect();
        for id in ids {
            if let Some(mut t) = st.tickets.remove(&id) {
                st.release_handles(&mut t.handles);
            }
        }
        drop(st);
        self.0.changed.notify_all();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts background tasks while queued samples outnumber the tasks about to start and
/// fewer than `max_inflight` tasks exist. A task claims queued samples one after another
/// (QUEUED → RUNNING when it actually starts on one, so the scheduler can still take a
/// sample itself while the task waits in the pool's queue) until none is left: going back
/// to the end of the pool's queue per sample would put every sample behind the chunk jobs
/// of the batches in flight.
fn pump(inner: &Arc<Inner>, st: &mut State) {
    while st.running < inner.max_inflight.load(std::sync::atomic::Ordering::Relaxed).max(1) && st.starting < st.queue.len() && st.hold == 0 && !st.closed {
        st.running += 1;
        st.starting += 1;
        let task_inner = Arc::clone(inner);
        let spawned = inner.spawner.spawn(move || {
            let inner = task_inner;
            let mut st = inner.lock();
            st.starting -= 1;
            loop {
                let Some(id) = next_queued(&mut st) else {
                    st.running -= 1;
                    pump(&inner, &mut st);
                    drop(st);
                    inner.changed.notify_all();
                    return;
                };
                drop(st);
                advance_guarded(&inner, id, None);
                inner.changed.notify_all();
                st = inner.lock();
            }
        });
        if !spawned {
            // The pool is gone (closing): the scheduler resolves what is left inline.
            st.running -= 1;
            st.starting -= 1;
            return;
        }
    }
}

/// Takes the next queued sample for a running task (marked Running), unless the pipeline
/// closed or a scheduler waits for room.
fn next_queued(st: &mut State) -> Option<u64> {
    while st.hold == 0 && !st.closed {
        let id = st.queue.pop_front()?;
        if let Some(t) = st.tickets.get_mut(&id) {
            if t.phase == Phase::Queued {
                t.phase = Phase::Running;
                return Some(id);
            }
        }
    }
    None
}

/// Removes the tickets `ids` and releases their pins (their batch failed).
fn discard(inner: &Arc<Inner>, st: &mut State, ids: &[u64]) {
    for id in ids {
        if let Some(mut t) = st.tickets.remove(id) {
            st.release_handles(&mut t.handles);
        }
    }
    resume_deferred(inner, st);
}

/// Re-queues deferred samples (in push order) unless a scheduler is waiting for room.
fn resume_deferred(inner: &Arc<Inner>, st: &mut State) {
    if st.hold > 0 || st.closed {
        return;
    }
    let mut ids: Vec<u64> = st.tickets.iter().filter(|(_, t)| t.phase == Phase::Deferred).map(|(&id, _)| id).collect();
    ids.sort_unstable();
    for id in ids {
        if let Some(t) = st.tickets.get_mut(&id) {
            t.phase = Phase::Queued;
            st.queue.push_back(id);
        }
    }
    pump(inner, st);
}

/// Un-pins samples outside `batch` that no one is resolving (READY, DEFERRED, or QUEUED
/// with pins from before a deferral); they start over later.
fn park_others(st: &mut State, batch: &HashSet<u64>) -> usize {
    let ids: Vec<u64> = st
        .tickets
        .iter()
        .filter(|(id, t)| !batch.contains(id) && matches!(t.phase, Phase::Ready | Phase::Deferred | Phase::Queued) && !t.handles.is_empty())
        .map(|(&id, _)| id)
        .collect();
    for &id in &ids {
        let Some(mut t) = st.tickets.remove(&id) else { continue };
        st.release_handles(&mut t.handles);
        // A queued sample stays queued (it is in the queue); the others wait to be resumed.
        if t.phase != Phase::Queued {
            t.phase = Phase::Deferred;
        }
        t.stage = Stage::Meta;
        t.meta = None;
        t.shards.clear();
        t.layouts.clear();
        t.shard_keys = None;
        t.layout_keys = None;
        st.tickets.insert(id, t);
        st.counters.parked += 1;
    }
    ids.len()
}

/// Whether resolving blosc layouts pays for an array: blosc blocks are slabs of the chunk
/// in C order, so a crop can skip blocks along the first axis only. A crop of extent `s`
/// there touches about `s + c` of chunk depth `c`, so it can skip about `c / (s + c)` of the
/// blocks; below 30% the lookups cost more than the skipped blocks save (measured on H100:
/// 128-deep crops of 32-deep chunks, skip ≈ 20%: 5–11% slower with layouts; 32-deep crops of
/// 64-deep chunks, skip ≈ 60%: 1.4–1.6× faster; dev/perf.md).
fn layouts_pay(opts: &Options, array: &Array) -> bool {
    let meta = &array.meta;
    if !opts.layouts || array.decoder.route.codec != DeviceCodec::Blosc {
        return false;
    }
    match (meta.chunk_shape().first(), opts.sample_shape.first()) {
        (Some(&c), Some(&s)) => 10 * c >= 3 * (s + c),
        _ => false,
    }
}

/// The capacity one batch of samples of this array may need, checked once per array.
fn check_capacity(opts: &Options, array: &Array, uri: &str) -> Result<()> {
    let meta = &array.meta;
    if meta.rank() != opts.sample_shape.len() {
        return Ok(()); // the planner reports the rank mismatch
    }
    let spb = u64::from(opts.samples_per_batch);
    let mut needs = Vec::new();
    // Per sample the worst case; per batch at most every cell of the array.
    let batch_need = |cell: &[u64]| spb.saturating_mul(worst_cells(&meta.shape, cell, &opts.sample_shape)).min(meta.shape.iter().zip(cell).map(|(n, c)| n.div_ceil(*c)).fold(1, u64::saturating_mul));
    if meta.sharding.is_some() {
        needs.push(("n_shard_index_cache", opts.n_shard_index, "shards", batch_need(&meta.grid_shape)));
    }
    if layouts_pay(opts, array) {
        needs.push(("n_chunk_layout_cache", opts.n_chunk_layout, "chunks", batch_need(meta.chunk_shape())));
    }
    for (knob, cap, what, need) in needs {
        if (cap as u64) < need {
            return Err(err!(
                InvalidArgument,
                "{uri}: `{knob}` = {cap} cannot hold one batch: {spb} samples of {:?} touch up to {need} {what}; raise `{knob}` to at least {need}",
                opts.sample_shape
            ));
        }
    }
    Ok(())
}

/// What the next step of a ticket needs: one entry of one of the three caches.
enum Want {
    /// `array_meta[uri]`.
    Meta,
    /// `shard_index[(array, shard key)]`: the shard at these grid coordinates.
    Shard(Arc<Array>, Vec<u64>),
    /// `chunk_layout[keys[i].0]`: the framing of a stored chunk.
    Layout(Arc<Array>, Arc<Vec<LayoutKey>>, usize),
}

/// An entry of one of the three caches.
enum Entry {
    Meta(Arc<Array>),
    Shard(Arc<Option<Shard>>),
    Layout(Arc<BloscFrame>),
}

/// The outcome of acquiring one key.
enum Got<V> {
    Have(V),
    Load(Handle),
    Full(CacheKind),
}

impl<V> Got<V> {
    fn map<W>(self, f: impl FnOnce(V) -> W) -> Got<W> {
        match self {
            Got::Have(v) => Got::Have(f(v)),
            Got::Load(h) => Got::Load(h),
            Got::Full(k) => Got::Full(k),
        }
    }
}

impl CacheKind {
    /// The config knob that sizes this cache.
    fn knob(self) -> &'static str {
        match self {
            CacheKind::ArrayMeta => "n_array_meta_cache",
            CacheKind::ShardIndex => "n_shard_index_cache",
            CacheKind::ChunkLayout => "n_chunk_layout_cache",
        }
    }
}

fn acquire<K: Clone + Eq + std::hash::Hash, V>(cache: &mut Cache<K, V>, key: &K, kind: CacheKind, handles: &mut Vec<(CacheKind, Handle)>) -> Got<Arc<V>> {
    match cache.acquire(key) {
        Acquired::Hit(h, v) => {
            handles.push((kind, h));
            Got::Have(v)
        }
        Acquired::Miss(h) => {
            handles.push((kind, h));
            Got::Load(h)
        }
        Acquired::Full => Got::Full(kind),
    }
}

/// The chunk keys (with stored length) whose layouts a sample needs. Heads whole-file
/// chunks: called without the lock.
fn layout_keys(opts: &Options, array: &Array, aabb: &[(i64, i64)], shards: &HashMap<Vec<u64>, Arc<Option<Shard>>>) -> Vec<LayoutKey> {
    let meta = &array.meta;
    let crc = array.decoder.route.crc;
    if !layouts_pay(opts, array) || aabb.len() != meta.rank() {
        return Vec::new();
    }
    let Some(inside) = clip(aabb, &meta.shape) else { return Vec::new() };
    let lookup = TicketShards(shards);
    let key = |key: Arc<str>, offset, generation| ChunkKey { store: Arc::clone(&array.id), key, offset, generation };
    cells(&inside, meta.chunk_shape())
        .into_iter()
        .filter_map(|coords| match chunk_source(array, &coords, &lookup) {
            Ok(ChunkSource::Range { key: k, offset, nbytes, generation: Some(g) }) => Some((key(k, offset, g), nbytes, crc, coords)),
            Ok(ChunkSource::File(k)) => array.store.head(&k).ok().flatten().map(|info| (key(k, 0, info.generation), info.size, crc, coords)),
            _ => None,
        })
        .collect()
}

/// [`advance`], turning a panic (a bug) into a failed sample instead of a ticket left
/// RUNNING, which would stall its batch until the pop timeout.
fn advance_guarded(inner: &Arc<Inner>, id: u64, blocking: Option<&Blocking<'_>>) {
    let run = std::panic::AssertUnwindSafe(|| advance(inner, id, blocking));
    if std::panic::catch_unwind(run).is_err() {
        let mut st = inner.lock();
        if blocking.is_some() {
            st.hold = st.hold.saturating_sub(1); // a panic inside a wait for room
        }
        st.fail(id, err!(Internal, "internal: resolving this sample panicked (a bug; please report it)"));
        drop(st);
        inner.changed.notify_all();
    }
}

/// Drives ticket `id` as far as it goes: to READY, FAILED, or (background tasks only)
/// DEFERRED when a cache is full. `blocking` is the scheduler resolving its next batch.
///
/// Each step is the same over the three caches: the ticket's stage names the entry it
/// wants ([`next_step`]); [`acquire_entry`] pins it; a hit is accepted into the ticket at
/// once, a miss is loaded without the lock ([`load_entry`]) and then filled and accepted
/// ([`finish_load`]); a full cache defers the sample or waits for room ([`on_full`]).
fn advance(inner: &Arc<Inner>, id: u64, blocking: Option<&Blocking<'_>>) {
    let opts = &inner.opts;
    let mut holding = false;
    let mut st = inner.lock();
    while !st.closed {
        let want = match next_step(&mut st, id) {
            Next::Want(want) => want,
            Next::LayoutKeys(array, aabb, shards) => {
                drop(st);
                let keys = Arc::new(layout_keys(opts, &array, &aabb, &shards));
                st = inner.lock();
                if let Some(t) = st.tickets.get_mut(&id) {
                    t.layout_keys.get_or_insert(keys);
                }
                continue;
            }
            Next::Again => continue,
            Next::Stop => break,
        };
        match acquire_entry(&mut st, id, &want) {
            Some(Got::Have(Entry::Meta(array))) if array.meta_source.as_ref().is_some_and(|m| m.due(opts.recheck_metadata, array.store.is_remote())) => {
                drop(st);
                let fresh = meta_unchanged(&array);
                st = inner.lock();
                match fresh {
                    Ok(true) => accept(&mut st, opts, id, &want, Entry::Meta(array)),
                    Ok(false) => forget_meta(&mut st, id),
                    Err(e) => st.fail(id, e),
                }
            }
            Some(Got::Have(entry)) => accept(&mut st, opts, id, &want, entry),
            Some(Got::Load(h)) => {
                let uri = st.tickets.get(&id).map(|t| t.uri.clone()).unwrap_or_default();
                drop(st);
                let loaded = load_entry(opts, &uri, &want);
                st = inner.lock();
                finish_load(&mut st, opts, id, h, &want, loaded);
            }
            Some(Got::Full(kind)) => {
                let retry;
                (st, retry) = on_full(inner, st, id, kind, blocking, &mut holding);
                if !retry {
                    break;
                }
            }
            None => break,
        }
    }
    if holding {
        st.hold -= 1;
        // Whatever was queued, submitted or parked during the wait starts now.
        resume_deferred(inner, &mut st);
    }
    if st.closed {
        if let Some(mut t) = st.tickets.remove(&id) {
            st.release_handles(&mut t.handles);
        }
    }
    drop(st);
    inner.changed.notify_all();
}

/// What [`advance`] does next with a ticket, decided under the lock.
enum Next {
    /// Acquire (and on a miss load) one cache entry.
    Want(Want),
    /// Compute the chunks whose layouts the sample needs, off the lock (it heads
    /// whole-file chunks): the array, the box and the sample's shard indexes.
    LayoutKeys(Arc<Array>, Vec<(i64, i64)>, HashMap<Vec<u64>, Arc<Option<Shard>>>),
    /// The stage moved on without a lookup: look again.
    Again,
    /// Ready, failed or gone.
    Stop,
}

/// The ticket's stage → the cache entry it needs next (or the stage's end).
fn next_step(st: &mut State, id: u64) -> Next {
    let Some(t) = st.tickets.get_mut(&id) else { return Next::Stop };
    if t.phase == Phase::Failed {
        return Next::Stop;
    }
    match t.stage {
        Stage::Meta => Next::Want(Want::Meta),
        Stage::Shards(i) => {
            let Some(array) = t.meta.clone() else {
                st.fail(id, err!(Internal, "internal: shards resolved before the array"));
                return Next::Stop;
            };
            let keys = t.shard_keys.get_or_insert_with(|| Arc::new(if t.aabb.len() == array.meta.rank() { shards_of(&array.meta, &t.aabb) } else { Vec::new() }));
            let Some(coords) = keys.get(i) else {
                t.stage = Stage::Layouts(0);
                return Next::Again;
            };
            if t.shards.contains_key(coords) {
                t.stage = Stage::Shards(i + 1);
                return Next::Again;
            }
            Next::Want(Want::Shard(array, coords.clone()))
        }
        Stage::Layouts(i) => {
            let Some(array) = t.meta.clone() else {
                st.fail(id, err!(Internal, "internal: layouts resolved before the array"));
                return Next::Stop;
            };
            let Some(keys) = t.layout_keys.clone() else { return Next::LayoutKeys(array, t.aabb.clone(), t.shards.clone()) };
            if i >= keys.len() {
                t.stage = Stage::Done;
                t.phase = Phase::Ready;
                return Next::Stop;
            }
            Next::Want(Want::Layout(array, keys, i))
        }
        Stage::Done => {
            t.phase = Phase::Ready;
            Next::Stop
        }
    }
}

/// Pins `want`'s entry for ticket `id` in its cache (`None`: the ticket is gone).
fn acquire_entry(st: &mut State, id: u64, want: &Want) -> Option<Got<Entry>> {
    let State { array_meta, shard_index, chunk_layout, tickets, .. } = st;
    let t = tickets.get_mut(&id)?;
    Some(match want {
        Want::Meta => acquire(array_meta, &t.uri, CacheKind::ArrayMeta, &mut t.handles).map(Entry::Meta),
        Want::Shard(array, coords) => acquire(shard_index, &(Arc::clone(&array.id), array.key(coords)), CacheKind::ShardIndex, &mut t.handles).map(Entry::Shard),
        Want::Layout(_, keys, i) => acquire(chunk_layout, &keys[*i].0, CacheKind::ChunkLayout, &mut t.handles).map(Entry::Layout),
    })
}

/// Whether the metadata object `array` was read from is still at its generation (called
/// without the lock: a `stat`, or a HEAD request); confirms it when it is.
///
/// # Errors
/// Storage when the check fails (the message names the array).
fn meta_unchanged(array: &Array) -> Result<bool> {
    let Some(source) = &array.meta_source else { return Ok(true) };
    let info = array.store.head(source.key).map_err(|e| e.context(&array.uri))?;
    let same = info.is_some_and(|i| i.generation == source.generation);
    if same {
        source.confirm();
    }
    Ok(same)
}

/// The array metadata ticket `id` just hit in the cache is stale: un-pins it and forgets
/// it, so the ticket's next step reads the metadata again (batches holding the old entry
/// keep it until they finish).
fn forget_meta(st: &mut State, id: u64) {
    let Some(t) = st.tickets.get_mut(&id) else { return };
    if let Some((CacheKind::ArrayMeta, h)) = t.handles.last().copied() {
        t.handles.pop();
        st.array_meta.release(h);
    }
    let uri = t.uri.clone();
    st.array_meta.invalidate(&uri);
}

/// Loads `want`'s entry from its store (called without the lock); errors name `uri`.
fn load_entry(opts: &Options, uri: &str, want: &Want) -> Result<Entry> {
    match want {
        Want::Meta => load_array_with(uri, &opts.storage).map(|a| Entry::Meta(Arc::new(a))),
        Want::Shard(array, coords) => load_shard(array, coords).map(|s| Entry::Shard(Arc::new(s))).map_err(|e| e.context(uri)),
        Want::Layout(array, keys, i) => {
            let (key, nbytes, crc, coords) = &keys[*i];
            load_chunk_frame(array, &key.key, key.offset, *nbytes, *crc, &key.generation)
                .map(|f| Entry::Layout(Arc::new(f)))
                .map_err(|e| e.context(format_args!("chunk {coords:?}")).context(uri))
        }
    }
}

/// Stores a finished load in its cache entry `h` and accepts it into its ticket, or fails
/// the ticket. A ticket that vanished meanwhile (pipeline closed) leaves the entry
/// unfilled and released.
fn finish_load(st: &mut State, opts: &Options, id: u64, h: Handle, want: &Want, loaded: Result<Entry>) {
    if !st.tickets.contains_key(&id) {
        // Only `close` removes a ticket being resolved, and it released the ticket's
        // handles, this load's included.
        return;
    }
    match loaded {
        Ok(entry) => {
            match &entry {
                Entry::Meta(m) => st.array_meta.fill(h, Arc::clone(m)),
                Entry::Shard(idx) => st.shard_index.fill(h, Arc::clone(idx)),
                Entry::Layout(frame) => st.chunk_layout.fill(h, Arc::clone(frame)),
            }
            accept(st, opts, id, want, entry);
        }
        Err(e) => st.fail(id, e),
    }
}

/// Records the entry ticket `id`'s stage asked for and moves the stage on (an array
/// first passes the capacity check, or the ticket fails).
fn accept(st: &mut State, opts: &Options, id: u64, want: &Want, entry: Entry) {
    let Some(t) = st.tickets.get_mut(&id) else { return };
    let checked = match (want, entry, t.stage) {
        (Want::Meta, Entry::Meta(m), Stage::Meta) => check_capacity(opts, &m, &t.uri).map(|()| {
            t.meta = Some(m);
            t.stage = Stage::Shards(0);
        }),
        (Want::Shard(_, coords), Entry::Shard(idx), Stage::Shards(i)) => {
            t.shards.insert(coords.clone(), idx);
            t.stage = Stage::Shards(i + 1);
            Ok(())
        }
        (Want::Layout(..), Entry::Layout(frame), Stage::Layouts(i)) => {
            t.layouts.push(frame);
            t.stage = Stage::Layouts(i + 1);
            Ok(())
        }
        _ => Err(err!(Internal, "internal: a load finished as another kind")),
    };
    if let Err(e) = checked {
        st.fail(id, e);
    }
}

/// A cache is full. A background task defers its sample (it keeps its pins and is resumed
/// later). The scheduler resolving its batch waits while others can free room (batches in
/// flight, or samples being resolved: they finish or defer, and a deferred sample can be
/// parked), else un-pins later samples, else fails the sample: the batch alone does not
/// fit. Returns the guard and whether to try again.
fn on_full<'a>(inner: &'a Inner, mut st: MutexGuard<'a, State>, id: u64, kind: CacheKind, blocking: Option<&Blocking<'_>>, holding: &mut bool) -> (MutexGuard<'a, State>, bool) {
    let Some(block) = blocking else {
        if let Some(t) = st.tickets.get_mut(&id) {
            t.phase = Phase::Deferred;
        }
        st.counters.deferrals += 1;
        return (st, false);
    };
    if !*holding {
        *holding = true;
        st.hold += 1;
    }
    let resolving = st.tickets.iter().any(|(tid, t)| t.phase == Phase::Running && !block.batch.contains(tid));
    if (block.others_in_flight)() || resolving {
        st = inner.changed.wait_timeout(st, Duration::from_millis(20)).unwrap_or_else(PoisonError::into_inner).0;
        return (st, true);
    }
    if park_others(&mut st, block.batch) > 0 {
        return (st, true);
    }
    let knob = kind.knob();
    let cap = match kind {
        CacheKind::ArrayMeta => st.array_meta.capacity(),
        CacheKind::ShardIndex => st.shard_index.capacity(),
        CacheKind::ChunkLayout => st.chunk_layout.capacity(),
    };
    st.fail(id, err!(BudgetExceeded, "one batch needs more than {knob} = {cap} cache entries; raise `{knob}`"));
    (st, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_case_cells_per_dimension() {
        // A 10-long box over cells of 8 touches at most 3 cells; never more than exist.
        assert_eq!(worst_cells(&[100], &[8], &[10]), 3);
        assert_eq!(worst_cells(&[16], &[8], &[10]), 2);
        assert_eq!(worst_cells(&[100, 100], &[8, 50], &[8, 1]), 2);
    }
}
