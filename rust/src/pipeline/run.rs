//! Runs one planned batch on the worker pool, each job calling the stages in order:
//! `io` reads a coalesced range (or a whole chunk object), `decode` decodes it (CPU) or
//! checks it and emits device ops (GPU), `assemble` writes the copies. The budgets are
//! checked here, once per batch, before any buffer is taken: `staging_bytes` for the bytes
//! read, `decoded_bytes` for the chunks decoded, on both paths.
//!
//! A read that finds its shard rewritten or deleted since the index was read fails the batch
//! with Storage and invalidates that index (later batches read the new one, or find the
//! shard absent and read fill).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use super::batch::{spawn_job, DeviceWork, InFlight};
use super::Shared;
use crate::assemble::{self, OutBuffer};
use crate::cache::decoded::{ChunkKey, DecodedSpan};
use crate::cache::device::{StoreUse, Want, SLOT_ALIGN};
use crate::decode::device::{self as dev, BlockChoice, DeviceCodec};
use crate::decode::{max_encoded_len, ChunkCodec};
use crate::error::{err, Error, Result};
use crate::ffi::records::GpuDecodeOp;
use crate::io::{self, Read, Spawner};
use crate::plan::device::{copy_ops, Blocks};
use crate::plan::staging::{layout, layout_within, ReadOp, StagingLayout};
use crate::plan::{Array, BatchPlan, ChunkOp, ChunkSource};
use crate::prefetch::LayoutMap;
use crate::store::Generation;

/// Largest gap between two chunk ranges of one object that a read op reads through: the
/// store's ([`crate::store::Store::read_gap`]: 64 KiB locally, larger on object stores).
fn read_gap(plan: &BatchPlan) -> impl Fn(u32) -> u64 + '_ {
    |array| plan.arrays.get(array as usize).map_or(crate::store::LOCAL_READ_GAP, |a| a.store.read_gap())
}

/// "uri: chunk [coords]" of a chunk op.
fn chunk_name(batch: &InFlight, op: &ChunkOp) -> String {
    let uri = op.copies.first().map_or("?", |c| batch.uri(c.sample));
    format!("{uri}: chunk {:?}", op.coords)
}

fn chunk_context(e: Error, batch: &InFlight, op: &ChunkOp) -> Error {
    e.context(chunk_name(batch, op))
}

/// The decoded-cache key of a chunk stored in a range.
fn range_key(array: &Array, source: &ChunkSource) -> Option<ChunkKey> {
    match source {
        ChunkSource::Range { key, offset, generation: Some(g), .. } => Some(ChunkKey { store: Arc::clone(&array.id), key: Arc::clone(key), offset: *offset, generation: g.clone() }),
        _ => None,
    }
}

/// Reads `read` into `buf`; a changed or vanished shard invalidates its index and fails the
/// read.
fn read_into(shared: &Shared, array: &Array, read: &ReadOp, buf: &mut [u8]) -> Result<()> {
    match io::read_op(&*array.store, read, buf)? {
        Read::Done => Ok(()),
        Read::Changed { found } => Err(stale_shard(shared, array, &read.key, read.generation.as_ref(), Some(&found))),
        Read::Missing => Err(stale_shard(shared, array, &read.key, read.generation.as_ref(), None)),
    }
}

/// The shard `key` is not the generation its cached index was read from (`found`; `None`:
/// it is gone): forgets that index and the array's metadata (the array may have been
/// recreated), so later batches read the new ones (or find the shard absent: fill), and
/// returns the error that fails the batch.
fn stale_shard(shared: &Shared, array: &Array, key: &str, expected: Option<&Generation>, found: Option<&Generation>) -> Error {
    shared.prefetch.invalidate_shard(&array.id, key);
    shared.prefetch.invalidate_array(&array.uri);
    match found {
        Some(found) => err!(Storage, "{}", io::changed_message(&*array.store, key, expected, found)),
        None => err!(Storage, "{}", io::vanished_message(&*array.store, key)),
    }
}

/// Checks a batch's budgets.
fn check_budgets(shared: &Shared, batch: &InFlight, staged: u64, decoded: u64) -> Result<()> {
    let cfg = &shared.cfg;
    if staged > cfg.staging_bytes {
        return Err(err!(BudgetExceeded, "batch {} reads {staged} bytes, over staging_bytes = {}; raise `staging_bytes` or use fewer/smaller samples per batch", batch.seq, cfg.staging_bytes));
    }
    if decoded > cfg.decoded_bytes {
        return Err(err!(BudgetExceeded, "batch {} decodes {decoded} bytes, over decoded_bytes = {}; raise `decoded_bytes` or use fewer/smaller samples per batch", batch.seq, cfg.decoded_bytes));
    }
    Ok(())
}

/// Shard objects with decoded-cache hits in one batch: (array, key) → the generation the
/// hits were decoded from and a chunk op to name in errors.
type Checks = HashMap<(u32, Arc<str>), (Generation, usize), ahash::RandomState>;

/// The generation checks of the shards a CPU batch serves from the decoded cache.
fn spawn_generation_checks(shared: &Arc<Shared>, pool: &Spawner, batch: &Arc<InFlight>, plan: &Arc<BatchPlan>, checks: Checks) {
    // As `recheck_cached_data` says (every batch, never, or once its interval has passed
    // since the shard was last confirmed): a job each, failing the batch (and invalidating
    // the index) when the shard changed or vanished.
    for ((array_at, key), (generation, first)) in checks {
        let array = &plan.arrays[array_at as usize];
        if !shared.must_recheck(&array.id, &key, &generation, array.store.is_remote()) {
            continue;
        }
        let (plan, what_plan) = (Arc::clone(plan), Arc::clone(plan));
        spawn_job(shared, pool, batch, move |b| chunk_name(b, &what_plan.chunk_ops[first]), move |shared, batch| {
            let array = &plan.arrays[array_at as usize];
            let found = array.store.head(&key).map_err(|e| chunk_context(e, batch, &plan.chunk_ops[first]))?;
            match found {
                Some(info) if info.generation == generation => {
                    shared.validated_now(&array.id, &key, &generation, array.store.is_remote());
                    Ok(())
                }
                found => Err(chunk_context(stale_shard(shared, array, &key, Some(&generation), found.as_ref().map(|i| &i.generation)), batch, &plan.chunk_ops[first])),
            }
        });
    }
}

/// The CPU path: decode and assemble straight into the batch's output buffer. `later`: the
/// samples of the look-ahead window (the blosc blocks they read of this batch's chunks are
/// decoded with it when the decoded cache keeps chunks for them).
pub(super) fn run_cpu<'a>(shared: &Arc<Shared>, pool: &Spawner, batch: &Arc<InFlight>, mut plan: BatchPlan, later: impl Iterator<Item = (u64, &'a str, &'a [(i64, i64)])>) -> Result<()> {
    let cfg = &shared.cfg;
    check_budgets(shared, batch, plan.read_bytes, plan.decoded_bytes)?;
    let lease = shared.buffers.acquire(&shared.shutdown)?.ok_or_else(|| err!(Shutdown, "pipeline closed"))?;
    // SAFETY: the lease's buffer lives in `batch.lease` until `finish`, which runs after
    // every job below dropped its guard; jobs write disjoint voxels (planner invariant).
    let out = unsafe { OutBuffer::new(lease.ptr(), lease.len(), cfg.dtype, cfg.sample_voxels()) };
    batch.set_lease(lease);
    // The samples' transforms, once every job below has written its voxels.
    super::transform::apply_after_assemble(pool, batch, out);

    // Chunks found decoded in the cache are not read: their op's source becomes Absent and
    // `cached` holds the bytes the job assembles from. A read is where a rewritten shard is
    // noticed, so each shard object with hits gets one `head` per batch instead (`checks`:
    // object → its cached generation and a chunk to name).
    let mut cached: Vec<Option<Arc<DecodedSpan>>> = vec![None; plan.chunk_ops.len()];
    let mut checks = Checks::default();
    // Per chunk op: the bytes of its chunk that later batches of the window read, when its
    // chunk decodes in spans and is kept for them.
    let mut ahead: Vec<Option<(usize, usize)>> = vec![None; plan.chunk_ops.len()];
    let caching = shared.decoded.lock().unwrap_or_else(PoisonError::into_inner).enabled();
    if caching && plan.arrays.iter().any(|a| a.decoder.cpu.decodes_span()) {
        let spans = crate::plan::window_spans(&plan.arrays, later, |a| a.decoder.cpu.decodes_span());
        if !spans.is_empty() {
            for (op, a) in plan.chunk_ops.iter().zip(&mut ahead) {
                *a = spans.get(&(Arc::clone(&plan.arrays[op.array as usize].id), op.coords.clone())).copied();
            }
        }
    }
    {
        let mut cache = shared.decoded.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.enabled() {
            for (i, op) in plan.chunk_ops.iter_mut().enumerate() {
                let array = &plan.arrays[op.array as usize];
                if let Some(k) = range_key(array, &op.source) {
                    if let Some(v) = cache.probe(&k, chunk_need(array, op), batch.seq) {
                        cached[i] = Some(v);
                        op.source = ChunkSource::Absent;
                        checks.entry((op.array, k.key)).or_insert((k.generation, i));
                    }
                }
            }
        }
    }
    let staging = layout(&plan, cfg.max_read_op_bytes, &read_gap(&plan), &|_| None);
    shared.stats.coalesced(&staging);
    let plan = Arc::new(plan);
    if !plan.fill_ops.is_empty() {
        let plan = Arc::clone(&plan);
        spawn_job(shared, pool, batch, |_| "filling out-of-bounds regions".into(), move |shared, _| {
            for f in &plan.fill_ops {
                let meta = &plan.arrays[f.array as usize].meta;
                // SAFETY: see `out` above.
                unsafe { assemble::fill_region(&meta.fill, meta.dtype, f.sample, &f.region, &out, &shared.cfg.sample_shape) };
            }
            Ok(())
        });
    }
    spawn_generation_checks(shared, pool, batch, &plan, checks);
    let ahead = Arc::new(ahead);
    // Coalesced ranges: one read, then each chunk it holds is decoded and assembled.
    for read in staging.reads {
        let (plan, ahead) = (Arc::clone(&plan), Arc::clone(&ahead));
        let first = read.chunks.first().copied().unwrap_or(0);
        let what_plan = Arc::clone(&plan);
        spawn_job(shared, pool, batch, move |b| chunk_name(b, &what_plan.chunk_ops[first]), move |shared, batch| {
            let array = &plan.arrays[read.array as usize];
            let t0 = Instant::now();
            let mut bytes = Vec::new();
            bytes.try_reserve_exact(read.len as usize).map_err(|_| err!(OutOfMemory, "cannot allocate {} bytes for a read", read.len))?;
            bytes.resize(read.len as usize, 0);
            read_into(shared, array, &read, &mut bytes).map_err(|e| chunk_context(e, batch, &plan.chunk_ops[first]))?;
            shared.stats.read_op(read.len, t0.elapsed());
            for &i in &read.chunks {
                let op = &plan.chunk_ops[i];
                let ChunkSource::Range { offset, nbytes, .. } = op.source else { continue };
                let at = (offset - read.offset) as usize;
                let encoded = &bytes[at..at + nbytes as usize];
                decode_and_assemble(shared, batch.seq, op, array, Some(encoded), range_key(array, &op.source), ahead[i], &out).map_err(|e| chunk_context(e, batch, op))?;
            }
            Ok(())
        });
    }
    // Whole-object chunks, absent chunks, and chunks from the decoded cache: a job each.
    let cached = Arc::new(cached);
    for i in 0..plan.chunk_ops.len() {
        if matches!(plan.chunk_ops[i].source, ChunkSource::Range { .. }) {
            continue;
        }
        let (plan, cached, ahead) = (Arc::clone(&plan), Arc::clone(&cached), Arc::clone(&ahead));
        let what_plan = Arc::clone(&plan);
        spawn_job(shared, pool, batch, move |b| chunk_name(b, &what_plan.chunk_ops[i]), move |shared, batch| {
            let op = &plan.chunk_ops[i];
            let array = plan.array_of(op);
            let meta = &array.meta;
            if let Some(decoded) = &cached[i] {
                let t = Instant::now();
                copy_all(op, array, decoded, &out, &shared.cfg.sample_shape).map_err(|e| chunk_context(e, batch, op))?;
                shared.stats.chunk_cached(t.elapsed());
                return Ok(());
            }
            let ChunkSource::File(key) = &op.source else {
                return decode_and_assemble(shared, batch.seq, op, array, None, None, None, &out);
            };
            let t0 = Instant::now();
            let found = io::read_whole(&*array.store, key, max_encoded_len(meta.decoded_chunk_bytes)).map_err(|e| chunk_context(e, batch, op))?;
            shared.stats.read_op(found.as_ref().map_or(0, |(b, _)| b.len() as u64), t0.elapsed());
            let cache_key = found.as_ref().map(|(_, info)| ChunkKey { store: Arc::clone(&array.id), key: Arc::clone(key), offset: 0, generation: info.generation.clone() });
            decode_and_assemble(shared, batch.seq, op, array, found.as_ref().map(|(b, _)| b.as_slice()), cache_key, ahead[i], &out).map_err(|e| chunk_context(e, batch, op))
        });
    }
    Ok(())
}

thread_local! {
    static DECODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes every copy of `op` from `decoded` (the whole chunk or a part of it).
fn copy_all(op: &ChunkOp, array: &Array, decoded: &DecodedSpan, out: &OutBuffer, sample_shape: &[u64]) -> Result<()> {
    copy_from(op, array, &decoded.bytes, decoded.offset, out, sample_shape)
}

/// Writes every copy of `op` from `bytes`, the decoded bytes of its chunk from `offset`.
fn copy_from(op: &ChunkOp, array: &Array, bytes: &[u8], offset: usize, out: &OutBuffer, sample_shape: &[u64]) -> Result<()> {
    let meta = &array.meta;
    for c in &op.copies {
        // SAFETY: exclusive voxels (planner invariant).
        unsafe { assemble::copy_region(bytes, offset, meta.dtype, meta.chunk_shape(), c, out, sample_shape) }?;
    }
    Ok(())
}

/// Decodes the bytes `lo..hi` of a chunk, or more, into `buf` and returns where `buf`
/// starts in the decoded chunk: a span of blosc blocks, a prefix (zstd, blosc), or the
/// whole chunk, as the codec can (`ChunkCodec::decodes_span`, `prefix_len`).
fn decode_part(shared: &Shared, codec: &ChunkCodec, encoded: &[u8], (lo, hi): (usize, usize), buf: &mut Vec<u8>) -> Result<usize> {
    let offset = if codec.decodes_span() {
        codec.decode_span_into(encoded, lo, hi, buf)?
    } else {
        let n = codec.prefix_len(hi);
        if n > buf.len() {
            buf.try_reserve_exact(n - buf.len()).map_err(|_| err!(OutOfMemory, "cannot allocate {n} bytes to decode a chunk"))?;
        }
        buf.resize(n, 0);
        codec.decode_prefix_into(encoded, buf)?;
        0
    };
    shared.stats.cpu_decoded(buf.len());
    Ok(offset)
}

/// Decodes one chunk's `encoded` bytes (None: absent, fill) and writes its copies; with a
/// `key` and the decoded cache on, first looks the chunk up (another batch of the window
/// may have decoded it since this batch was planned; for a whole-object chunk this is the
/// only look-up, its generation being known once read) and else keeps the decoded chunk,
/// or the part of it this batch and the window's later batches read (`ahead`), for later
/// batches (batch `seq`).
#[allow(clippy::too_many_arguments)]
fn decode_and_assemble(shared: &Shared, seq: u64, op: &ChunkOp, array: &Array, encoded: Option<&[u8]>, key: Option<ChunkKey>, ahead: Option<(usize, usize)>, out: &OutBuffer) -> Result<()> {
    let meta = &array.meta;
    let sample_shape = &shared.cfg.sample_shape;
    let t1 = Instant::now();
    let Some(encoded) = encoded else {
        for c in &op.copies {
            // SAFETY: exclusive voxels (planner invariant).
            unsafe { assemble::fill_copy(&meta.fill, meta.dtype, c, out, sample_shape) };
        }
        shared.stats.chunk_filled(t1.elapsed());
        return Ok(());
    };
    let assemble_from = |buf: &[u8], offset: usize| {
        let t2 = Instant::now();
        copy_from(op, array, buf, offset, out, sample_shape)?;
        shared.stats.chunk_decoded(0, Duration::ZERO, t2 - t1, t2.elapsed());
        Ok(())
    };
    let codec = &array.decoder.cpu;
    // Decode less: a C-order chunk whose copies end before its end needs only a prefix
    // (zstd stops there); of a blosc chunk only the blocks its copies (and the window's
    // later batches) read are decoded. Cached entries are such parts too: one serves this
    // chunk when it holds the bytes its copies read.
    let need = chunk_need(array, op);
    let hit = key.as_ref().and_then(|k| shared.decoded.lock().unwrap_or_else(PoisonError::into_inner).get_covering(k, need, seq));
    if let Some(decoded) = hit {
        let t = Instant::now();
        copy_all(op, array, &decoded, out, sample_shape)?;
        shared.stats.chunk_cached(t.elapsed());
        return Ok(());
    }
    let (caching, grow) = key.as_ref().map_or((false, false), |k| {
        let cache = shared.decoded.lock().unwrap_or_else(PoisonError::into_inner);
        (cache.enabled(), cache.holds(k))
    });
    if caching {
        // A chunk whose cached part did not hold what a batch reads is read a second time:
        // decode it whole, so a chunk costs at most two decodes however its crops move.
        let want = if grow { (0, codec.decoded_len()) } else { ahead.map_or(need, |a| (need.0.min(a.0), need.1.max(a.1))) };
        // An evicted entry's buffer when there is one (no page faults, no zero fill).
        let mut bytes = shared.decoded.lock().unwrap_or_else(PoisonError::into_inner).take_buffer(want.1 - want.0).unwrap_or_default();
        let offset = decode_part(shared, codec, encoded, want, &mut bytes)?;
        assemble_from(&bytes, offset)?;
        let span = DecodedSpan { offset, bytes };
        if let Some(key) = key {
            // Just read at this generation: hits need no check for the recheck interval.
            shared.validated_now(&key.store, &key.key, &key.generation, array.store.is_remote());
            shared.decoded.lock().unwrap_or_else(PoisonError::into_inner).insert(key, Arc::new(span), seq);
        }
        return Ok(());
    }
    DECODED.with_borrow_mut(|buf| {
        let offset = decode_part(shared, codec, encoded, need, buf)?;
        assemble_from(buf, offset)
    })
}

/// The decoded bytes `lo..hi` of its chunk that `op`'s copies read: from the first to the
/// last element any copy reads (C order) when the codec decodes spans, from the start when
/// it decodes prefixes, else the whole chunk.
fn chunk_need(array: &Array, op: &ChunkOp) -> (usize, usize) {
    let codec = &array.decoder.cpu;
    let (lo, hi) = copies_span(op, array.meta.chunk_shape(), array.meta.dtype.size());
    let hi = hi.min(codec.decoded_len());
    if codec.decodes_span() {
        (lo.min(hi), hi)
    } else if codec.decodes_prefix() {
        (0, hi)
    } else {
        (0, codec.decoded_len())
    }
}

/// Bytes of a decoded C-order chunk of `chunk_shape` (elements of `es` bytes) from the
/// first to one past the last element any of `op`'s copies reads.
fn copies_span(op: &ChunkOp, chunk_shape: &[u64], es: usize) -> (usize, usize) {
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for c in &op.copies {
        let (mut first, mut last) = (0u64, 0u64);
        for (d, &n) in chunk_shape.iter().enumerate() {
            let top = n.saturating_sub(1);
            first = first * n + c.chunk_start[d].min(top);
            last = last * n + (c.chunk_start[d] + c.extent[d]).saturating_sub(1).min(top);
        }
        lo = lo.min(first);
        hi = hi.max(last + 1);
    }
    let bytes = |e: u64| usize::try_from(e.saturating_mul(es as u64)).unwrap_or(usize::MAX);
    (bytes(lo.min(hi)), bytes(hi))
}

/// The staging slab of a batch, written by its jobs at disjoint ranges.
#[derive(Clone, Copy)]
struct SlabPtr(*mut u8, usize);
// SAFETY: the slab is owned by the batch's lease until the batch finishes, after every job;
// jobs write disjoint ranges (the layout assigns each read and slot its own range).
unsafe impl Send for SlabPtr {}
// SAFETY: as above.
unsafe impl Sync for SlabPtr {}

impl SlabPtr {
    /// # Safety
    /// No other job may access `at..at+len` concurrently.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, at: u64, len: u64) -> Result<&mut [u8]> {
        at.checked_add(len).filter(|&e| e <= self.1 as u64).ok_or_else(|| err!(BudgetExceeded, "staging range {at}..+{len} exceeds the {}-byte slab", self.1))?;
        // SAFETY: in bounds (checked); exclusive per the contract.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.0.add(at as usize), len as usize) })
    }
}

/// The device path: stage compressed bytes in the slab and emit the ops the extension runs.
pub(super) fn run_device<'a>(
    shared: &Arc<Shared>,
    pool: &Spawner,
    batch: &Arc<InFlight>,
    mut plan: BatchPlan,
    layouts: &LayoutMap<'_>,
    later: impl Iterator<Item = (u64, &'a str, &'a [(i64, i64)])>,
) -> Result<()> {
    let cfg = &shared.cfg;
    // Whole-object chunks (unsharded arrays): stat them now so they stage like ranges.
    for i in 0..plan.chunk_ops.len() {
        let ChunkSource::File(key) = &plan.chunk_ops[i].source else { continue };
        let array = &plan.arrays[plan.chunk_ops[i].array as usize];
        let source = match array.store.head(key).map_err(|e| chunk_context(e, batch, &plan.chunk_ops[i]))? {
            Some(info) if info.size > max_encoded_len(array.meta.decoded_chunk_bytes) => {
                return Err(chunk_context(err!(Storage, "{}: {} bytes, more than any encoding of the chunk takes", array.store.describe(key), info.size), batch, &plan.chunk_ops[i]));
            }
            Some(info) => ChunkSource::Range { key: Arc::clone(key), offset: 0, nbytes: info.size, generation: Some(info.generation) },
            None => ChunkSource::Absent,
        };
        if source == ChunkSource::Absent {
            plan.decoded_bytes = plan.decoded_bytes.saturating_sub(array.meta.decoded_chunk_bytes);
        }
        plan.chunk_ops[i].source = source;
    }
    // The device chunk store: chunks an earlier batch kept are copied from the pool (not
    // read: their source becomes Absent here, their arena slot is added after the layout;
    // their shards get the generation checks of `recheck_cached_data`), chunks a later
    // batch needs are decoded whole and kept.
    let (uses, checks) = plan_store(shared, batch, &mut plan, later);
    // Blosc chunks with a layout from the chunk_layout cache: read and decode only the
    // blocks their copies touch (all blocks of a chunk to keep).
    let mut frames: Vec<Option<Blocks>> = Vec::with_capacity(plan.chunk_ops.len());
    for (i, op) in plan.chunk_ops.iter_mut().enumerate() {
        let array = &plan.arrays[op.array as usize];
        let route = array.decoder.route;
        let frame = match range_key(array, &op.source) {
            Some(k) if route.codec == DeviceCodec::Blosc && uses[i] == StoreUse::Scratch => layouts.get(&k).copied(),
            _ => None,
        };
        let Some(frame) = frame else {
            frames.push(None);
            continue;
        };
        let blocks = Blocks::needed(Arc::clone(frame), op, &array.meta, route.crc);
        shared.stats.blocks(blocks.decoded as u64, (frame.blocks.len() - blocks.decoded) as u64);
        if let ChunkSource::Range { offset, nbytes, .. } = &mut op.source {
            *offset += u64::from(blocks.span.0);
            *nbytes = u64::from(blocks.span.1 - blocks.span.0);
        }
        frames.push(Some(blocks));
    }
    let cpu_slot = |i: usize| {
        let op = &plan.chunk_ops[i];
        let array = &plan.arrays[op.array as usize];
        (array.decoder.route.codec == DeviceCodec::Cpu && op.source != ChunkSource::Absent).then_some(array.meta.decoded_chunk_bytes)
    };
    // Gaps read through that do not fit the slab: the local gap, as before object stores had
    // their own (the budget check below then judges the batch as it always did).
    let mut staging = layout_within(&plan, cfg.max_read_op_bytes, &read_gap(&plan), crate::store::LOCAL_READ_GAP, cfg.staging_bytes, &cpu_slot);
    let (store_fetch, store_keep, producers) = store_ops(&plan, &mut staging, &uses);
    check_budgets(shared, batch, staging.staging_bytes, staging.decoded_bytes)?;
    let copies = copy_ops(&plan, &staging)?;
    // A re-run batch stages into the slab of its first run (not handed to the caller).
    let mut held = batch.lease.lock().unwrap_or_else(PoisonError::into_inner);
    if held.is_none() {
        *held = Some(shared.buffers.acquire(&shared.shutdown)?.ok_or_else(|| err!(Shutdown, "pipeline closed"))?);
    }
    let slab = held.as_ref().map(|l| SlabPtr(l.ptr(), l.len())).ok_or_else(|| err!(Internal, "internal: batch {} has no staging slab", batch.seq))?;
    drop(held);
    let chunk_names = plan.chunk_ops.iter().map(|op| chunk_name(batch, op)).collect();
    let store_bytes = if store_fetch.is_empty() && store_keep.is_empty() { 0 } else { cfg.device_store_bytes() };
    *batch.device.lock().unwrap_or_else(PoisonError::into_inner) =
        Some(DeviceWork { decoded_bytes: staging.decoded_bytes, copy_ops: copies, chunk_names, store_fetch, store_keep, store_bytes, producers, ..DeviceWork::default() });
    shared.stats.staged(&staging);
    let cpu_chunks: Vec<usize> = (0..plan.chunk_ops.len()).filter(|&i| cpu_slot(i).is_some()).collect();
    let plan = Arc::new(plan);
    spawn_generation_checks(shared, pool, batch, &plan, checks);

    let job = Arc::new(StageJob { plan, staging, frames, slab });
    for r in 0..job.staging.reads.len() {
        let (job, what) = (Arc::clone(&job), Arc::clone(&job));
        spawn_job(shared, pool, batch, move |b| what.name(b, what.staging.reads[r].chunks.first().copied()), move |shared, batch| job.read(r, shared, batch));
    }
    for i in cpu_chunks {
        let (job, what) = (Arc::clone(&job), Arc::clone(&job));
        spawn_job(shared, pool, batch, move |b| what.name(b, Some(i)), move |shared, batch| job.cpu_decode(i, shared, batch));
    }
    Ok(())
}

/// Asks the device chunk store about every chunk of a device batch (sources already
/// resolved to ranges): one [`StoreUse`] per chunk op. Resident chunks' sources become
/// `Absent` (nothing to read; [`store_ops`] gives them an arena slot); the shards they come
/// from are returned for the generation checks.
fn plan_store<'a>(shared: &Shared, batch: &InFlight, plan: &mut BatchPlan, later: impl Iterator<Item = (u64, &'a str, &'a [(i64, i64)])>) -> (Vec<StoreUse>, Checks) {
    let n = plan.chunk_ops.len();
    let mut checks = Checks::default();
    let mut store = shared.device_store.lock().unwrap_or_else(PoisonError::into_inner);
    if !store.enabled() || batch.rerun {
        return (vec![StoreUse::Scratch; n], checks);
    }
    let next = crate::plan::next_uses(&plan.arrays, later);
    let wants: Vec<Want> = plan
        .chunk_ops
        .iter()
        .map(|op| {
            let array = &plan.arrays[op.array as usize];
            Want { key: range_key(array, &op.source), bytes: array.meta.decoded_chunk_bytes, ident: (Arc::clone(&array.id), op.coords.clone()) }
        })
        .collect();
    let uses = store.plan(batch.seq, &wants, &|id| next.get(id).copied());
    drop(store);
    if uses.iter().any(|u| matches!(u, StoreUse::Keep { .. })) {
        batch.keeps.store(true, std::sync::atomic::Ordering::Release);
    }
    for ((op, u), w) in plan.chunk_ops.iter_mut().zip(&uses).zip(wants) {
        if let (StoreUse::Resident { .. }, Some(k)) = (u, w.key) {
            op.source = ChunkSource::Absent;
            checks.entry((op.array, k.key)).or_insert((k.generation, 0));
            shared.stats.chunk_cached(Duration::ZERO);
        }
    }
    // Name a chunk of each checked shard in its errors: the first resident one of it.
    for (key, (_, first)) in &mut checks {
        *first = plan.chunk_ops.iter().zip(&uses).position(|(op, u)| op.array == key.0 && matches!(u, StoreUse::Resident { .. }) && op.source == ChunkSource::Absent).unwrap_or(0);
    }
    (uses, checks)
}

/// The device store's copies of a batch: resident chunks get an arena slot after the
/// layout's and a copy from the pool into it; chunks to keep a copy from their arena slot
/// into the pool. Returns (fetches, keeps, producer batches).
fn store_ops(plan: &BatchPlan, staging: &mut StagingLayout, uses: &[StoreUse]) -> (Vec<GpuDecodeOp>, Vec<GpuDecodeOp>, Vec<u64>) {
    let (mut fetch, mut keep, mut producers) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (op, u)) in plan.chunk_ops.iter().zip(uses).enumerate() {
        let bytes = plan.arrays[op.array as usize].meta.decoded_chunk_bytes;
        match *u {
            StoreUse::Scratch => {}
            StoreUse::Resident { slot, producer } => {
                let at = staging.decoded_bytes.next_multiple_of(SLOT_ALIGN);
                staging.decoded[i] = Some(at);
                staging.decoded_bytes = (at + bytes).next_multiple_of(SLOT_ALIGN);
                fetch.push(dev::copy_op(slot, bytes, at));
                if !producers.contains(&producer) {
                    producers.push(producer);
                }
            }
            StoreUse::Keep { slot } => {
                if let Some(at) = staging.decoded[i] {
                    keep.push(dev::copy_op(at, bytes, slot));
                }
            }
        }
    }
    (fetch, keep, producers)
}

/// What the staging jobs of one device batch share.
struct StageJob {
    plan: Arc<BatchPlan>,
    staging: StagingLayout,
    /// Per chunk op: the blosc blocks to decode, when its layout is known.
    frames: Vec<Option<Blocks>>,
    slab: SlabPtr,
}

impl StageJob {
    fn name(&self, batch: &InFlight, chunk: Option<usize>) -> String {
        chunk.and_then(|i| self.plan.chunk_ops.get(i)).map_or_else(|| "staging a read".into(), |op| chunk_name(batch, op))
    }

    /// Reads one coalesced range into the slab, then checks its chunks and emits their ops.
    fn read(&self, r: usize, shared: &Shared, batch: &InFlight) -> Result<()> {
        let read = &self.staging.reads[r];
        let array = &self.plan.arrays[read.array as usize];
        let t0 = Instant::now();
        // SAFETY: each read op owns its staging range.
        let buf = unsafe { self.slab.range(read.staging_offset, read.len)? };
        read_into(shared, array, read, buf).map_err(|e| e.context(self.name(batch, read.chunks.first().copied())))?;
        shared.stats.read_op(read.len, t0.elapsed());
        let mut work = Vec::with_capacity(read.chunks.len());
        for &i in &read.chunks {
            let mut ops = Vec::new();
            self.chunk_ops(i, &mut ops).map_err(|e| e.context(self.name(batch, Some(i))))?;
            shared.stats.device_chunk();
            work.push((i, ops));
        }
        batch.with_device(|d| {
            for (i, ops) in work {
                d.push(i, ops);
            }
        });
        Ok(())
    }

    /// Decodes a chunk the GPU cannot on this thread and stages it raw.
    fn cpu_decode(&self, i: usize, shared: &Shared, batch: &InFlight) -> Result<()> {
        let op = &self.plan.chunk_ops[i];
        let array = self.plan.array_of(op);
        let ChunkSource::Range { key, offset, nbytes, generation } = &op.source else { return Ok(()) };
        let t0 = Instant::now();
        let mut encoded = vec![0u8; *nbytes as usize];
        let read = ReadOp { array: op.array, key: Arc::clone(key), generation: generation.clone(), offset: *offset, len: *nbytes, staging_offset: 0, chunks: vec![i] };
        read_into(shared, array, &read, &mut encoded).map_err(|e| chunk_context(e, batch, op))?;
        let t1 = Instant::now();
        let (at, len) = self.staging.staged[i].ok_or_else(|| err!(Internal, "internal: chunk {i} has no staging slot"))?;
        // SAFETY: each CPU slot is owned by its chunk.
        let out = unsafe { self.slab.range(at, len)? };
        array.decoder.cpu.decode_into(&encoded, out).map_err(|e| chunk_context(e, batch, op))?;
        shared.stats.cpu_decoded(out.len());
        shared.stats.read_op(encoded.len() as u64, t1 - t0);
        shared.stats.chunk_decoded(0, Duration::ZERO, t1.elapsed(), Duration::ZERO);
        let dst = self.staging.decoded[i].unwrap_or(0);
        batch.with_device(|d| d.push(i, vec![dev::staged_raw(at, len, dst)]));
        Ok(())
    }

    fn chunk_ops(&self, i: usize, out: &mut Vec<dev::DeviceOp>) -> Result<()> {
        let op = &self.plan.chunk_ops[i];
        let array = self.plan.array_of(op);
        let (at, len) = self.staging.staged[i].ok_or_else(|| err!(Internal, "internal: chunk {i} not staged"))?;
        let dst = self.staging.decoded[i].unwrap_or(0);
        // SAFETY: read-only view of this read op's own range, written above by this job.
        let bytes = unsafe { self.slab.range(at, len)? };
        let blocks = self.frames[i].as_ref().map(|b| BlockChoice { frame: &b.frame, needed: &b.needed, span_lo: b.span.0 });
        dev::prepare(array.decoder.route, bytes, at, array.meta.decoded_chunk_bytes, dst, blocks, out)
    }
}
