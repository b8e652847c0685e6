//! plan: turns one batch of samples, whose metadata and shard indexes the prefetcher has
//! resolved, into the work that fills the batch's output buffer:
//! - chunk ops: one per distinct inner chunk the batch touches (a chunk shared by several
//!   samples is read and decoded once), each with its byte source and the copies from the
//!   decoded chunk into sample boxes;
//! - fill ops: the parts of sample boxes outside the array (out_of_bounds = "fill").
//!   Absent chunks and absent shard files are chunk ops whose source is `Absent`.
//!
//! Invariant (property-tested): every voxel of every sample is written by exactly one copy
//! or fill. The planner reads resolved values only: no I/O, no cache pins. Sizes are
//! checked before anything is enumerated or allocated: a sample touching more than
//! [`MAX_CHUNK_OPS`] chunks fails with BudgetExceeded, a shard index entry larger than any
//! encoding of its chunk fails with Storage, and the batch's decoded bytes are summed with
//! checked arithmetic for the pipeline's `decoded_bytes` budget.
//!
//! Also here: the staging layout both paths read through (`staging`: coalesced read ops),
//! and the device op records that need no bytes (`device`).
//!
//! Calls: `zarr` (geometry), `store` (keys, generations), `decode` (the per-array decoder it
//! carries). Called by `prefetch` (geometry) and `pipeline`.

use std::collections::HashMap;
use std::sync::Arc;

pub(crate) mod device;
pub(crate) mod staging;

use crate::decode::{max_encoded_len, ArrayDecoder};
use crate::error::{err, Result};
use crate::store::{Generation, Store};
use crate::zarr::{ArrayMeta, ShardIndex};

/// Most chunk ops one batch may plan (a sample of tiny chunks fails with BudgetExceeded
/// instead of enumerating millions of them).
pub(crate) const MAX_CHUNK_OPS: u64 = 1 << 20;

/// An opened array: where it is, what it is, how its chunks decode. Built once per array by
/// the prefetcher and shared by every batch reading it.
#[derive(Debug)]
pub struct Array {
    /// The uri as the caller wrote it (for messages).
    pub uri: String,
    /// Its identity in caches: the store's uri.
    pub id: Arc<str>,
    /// Its store, rooted at the array.
    pub store: Arc<dyn Store>,
    /// Its metadata.
    pub meta: ArrayMeta,
    /// Its chunk decoders (CPU, and the device route).
    pub decoder: ArrayDecoder,
    /// The metadata object it was parsed from, for staleness checks (`None`: not checked,
    /// e.g. an array built in a test).
    pub meta_source: Option<MetaSource>,
}

/// How long a local array's confirmed metadata generation is trusted before a cache hit
/// `stat`s its `zarr.json` again (unless rechecks are off or always).
pub(crate) const LOCAL_RECHECK: std::time::Duration = std::time::Duration::from_millis(5);

/// The object an array's metadata was read from, its generation then, and when that
/// generation was last confirmed (read, or checked).
#[derive(Debug)]
pub struct MetaSource {
    /// The key in the array's store (`zarr.json` or `.zarray`).
    pub key: &'static str,
    /// Its generation when read.
    pub generation: crate::store::Generation,
    /// When the generation was last confirmed.
    pub confirmed: std::sync::Mutex<std::time::Instant>,
}

impl MetaSource {
    /// A source just read at `generation`.
    pub fn new(key: &'static str, generation: crate::store::Generation) -> Self {
        Self { key, generation, confirmed: std::sync::Mutex::new(std::time::Instant::now()) }
    }

    /// `true` when a cache hit must check the object: never when `recheck` is `None`;
    /// always when it is zero; else once `recheck` has passed since the last confirmation
    /// on an object store (a HEAD request), and [`LOCAL_RECHECK`] on a local one (a `stat`:
    /// one per array per few milliseconds rather than one per sample).
    pub fn due(&self, recheck: Option<std::time::Duration>, remote: bool) -> bool {
        let Some(trusted) = crate::store::trusted_for(recheck, remote, LOCAL_RECHECK) else { return false };
        trusted.is_zero() || self.confirmed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).elapsed() >= trusted
    }

    /// The generation was just confirmed.
    pub fn confirm(&self) {
        *self.confirmed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = std::time::Instant::now();
    }
}

impl Array {
    /// The store key of the chunk or shard at grid coordinates `coords`.
    pub fn key(&self, coords: &[u64]) -> String {
        self.meta.key_encoding.key(coords)
    }
}

/// A loaded shard index and the generation of the shard file it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The index.
    pub index: ShardIndex,
    /// The shard file's generation when the index was read.
    pub generation: Generation,
}

/// A box in some coordinate frame: `start` and `extent` per dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Region {
    /// First voxel.
    pub start: Vec<u64>,
    /// Size per dimension (all positive).
    pub extent: Vec<u64>,
}


/// One copy from a decoded chunk into a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Copy {
    /// Sample index within the batch.
    pub sample: u32,
    /// Start inside the decoded chunk.
    pub chunk_start: Vec<u64>,
    /// Start inside the sample.
    pub sample_start: Vec<u64>,
    /// Extent.
    pub extent: Vec<u64>,
}

/// Where a chunk's encoded bytes are (keys are relative to the op's array's store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChunkSource {
    /// `nbytes` at `offset` of a shard file of generation `generation`.
    Range {
        /// Shard key.
        key: Arc<str>,
        /// Byte offset.
        offset: u64,
        /// Length.
        nbytes: u64,
        /// The shard's generation when its index was read (`None`: unknown).
        generation: Option<Generation>,
    },
    /// A whole chunk object; absent = fill.
    File(Arc<str>),
    /// Absent (inner chunk missing from its shard, or the shard file is absent): fill.
    Absent,
}

/// Read, decode and scatter one chunk.
#[derive(Debug, Clone)]
pub(crate) struct ChunkOp {
    /// Index into [`BatchPlan::arrays`].
    pub array: u32,
    /// Inner chunk coordinates in the array's chunk grid (for messages).
    pub coords: Vec<u64>,
    /// Encoded bytes.
    pub source: ChunkSource,
    /// Copies into samples.
    pub copies: Vec<Copy>,
}

/// Fill part of a sample with its array's fill value.
#[derive(Debug, Clone)]
pub(crate) struct FillOp {
    /// Index into [`BatchPlan::arrays`].
    pub array: u32,
    /// Sample index.
    pub sample: u32,
    /// Region inside the sample.
    pub region: Region,
}

/// The resolved inputs of one sample.
pub(crate) struct ResolvedSample<'a> {
    /// The array.
    pub array: &'a Arc<Array>,
    /// `(start, stop)` per dimension.
    pub aabb: &'a [(i64, i64)],
}

/// Looks up a resolved shard index: `Some(None)` when the shard file is absent, `None` when
/// the prefetcher did not resolve it (a bug).
pub trait ShardLookup {
    /// The index of the shard at `shard_coords` of `array`.
    fn shard(&self, array: &Array, shard_coords: &[u64]) -> Option<Option<&Shard>>;
}

/// The plan of one batch.
#[derive(Debug, Default)]
pub(crate) struct BatchPlan {
    /// Distinct arrays of the batch (chunk and fill ops index into this).
    pub arrays: Vec<Arc<Array>>,
    /// Chunk ops.
    pub chunk_ops: Vec<ChunkOp>,
    /// Fill ops.
    pub fill_ops: Vec<FillOp>,
    /// Encoded bytes the chunk ops read (known ranges only; whole-file chunks count 0).
    pub read_bytes: u64,
    /// Decoded bytes of the chunks the batch reads (absent chunks count 0).
    pub decoded_bytes: u64,
}

impl BatchPlan {
    /// The array of chunk op `op`.
    pub(crate) fn array_of(&self, op: &ChunkOp) -> &Array {
        &self.arrays[op.array as usize]
    }
}

/// Checks a sample's box against its array: rank, and bounds unless `out_of_bounds_fill`.
///
/// # Errors
/// RankMismatch, InvalidArgument (naming the array's shape).
pub(crate) fn check_sample(uri: &str, meta: &ArrayMeta, aabb: &[(i64, i64)], out_of_bounds_fill: bool) -> Result<()> {
    if aabb.len() != meta.rank() {
        return Err(err!(RankMismatch, "{uri}: box has rank {} but the array has rank {} (shape {:?})", aabb.len(), meta.rank(), meta.shape));
    }
    if !out_of_bounds_fill {
        // Shapes are at most 2^63 - 1 (zarr parser), so `n as i64` is exact.
        let outside = aabb.iter().zip(&meta.shape).any(|(&(a, b), &n)| a < 0 || b > n as i64);
        if outside {
            return Err(err!(InvalidArgument, "{uri}: box {aabb:?} reaches outside the array of shape {:?} (set out_of_bounds=\"fill\" to pad)", meta.shape));
        }
    }
    Ok(())
}

/// The part of `aabb` inside an array of `shape`, or `None` when they do not overlap.
pub(crate) fn clip(aabb: &[(i64, i64)], shape: &[u64]) -> Option<Vec<(u64, u64)>> {
    aabb.iter()
        .zip(shape)
        .map(|(&(a, b), &n)| {
            let lo = a.max(0) as u64;
            let hi = b.min(n as i64);
            (hi > lo as i64).then_some((lo, hi as u64))
        })
        .collect()
}

/// Grid cells (of `cell` shape) overlapped by `bounds`, in C order.
pub(crate) fn cells(bounds: &[(u64, u64)], cell: &[u64]) -> Vec<Vec<u64>> {
    let lo: Vec<u64> = bounds.iter().zip(cell).map(|(b, c)| b.0 / c).collect();
    let hi: Vec<u64> = bounds.iter().zip(cell).map(|(b, c)| (b.1 - 1) / c).collect();
    let mut out = Vec::new();
    let mut cur = lo.clone();
    loop {
        out.push(cur.clone());
        let mut d = cur.len();
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            if cur[d] < hi[d] {
                cur[d] += 1;
                cur[(d + 1)..].copy_from_slice(&lo[(d + 1)..]);
                break;
            }
        }
    }
}

/// The parts of `aabb` outside `inside` (sample-relative regions), as disjoint boxes:
/// slab by slab, one below and one above per dimension.
pub(crate) fn outside_regions(aabb: &[(i64, i64)], inside: Option<&[(u64, u64)]>) -> Vec<Region> {
    let extent: Vec<u64> = aabb.iter().map(|&(a, b)| (b - a) as u64).collect();
    let Some(inside) = inside else {
        return vec![Region { start: vec![0; aabb.len()], extent }];
    };
    let mut out = Vec::new();
    // Dimensions before `d` are restricted to the inside range; `d` takes the slab below
    // and above; later dimensions span the full sample.
    for d in 0..aabb.len() {
        let (a, _) = aabb[d];
        let lo_in = (inside[d].0 as i64 - a) as u64;
        let hi_in = (inside[d].1 as i64 - a) as u64;
        let mut base_start = vec![0u64; aabb.len()];
        let mut base_extent = extent.clone();
        for e in 0..d {
            base_start[e] = (inside[e].0 as i64 - aabb[e].0) as u64;
            base_extent[e] = inside[e].1 - inside[e].0;
        }
        if lo_in > 0 {
            let mut r = Region { start: base_start.clone(), extent: base_extent.clone() };
            r.start[d] = 0;
            r.extent[d] = lo_in;
            out.push(r);
        }
        if hi_in < extent[d] {
            let mut r = Region { start: base_start, extent: base_extent };
            r.start[d] = hi_in;
            r.extent[d] = extent[d] - hi_in;
            out.push(r);
        }
    }
    out
}

/// Shard grid coordinates touched by the in-bounds part of `aabb` (empty when sharding is
/// off or the box lies outside).
pub(crate) fn shards_of(meta: &ArrayMeta, aabb: &[(i64, i64)]) -> Vec<Vec<u64>> {
    match (&meta.sharding, clip(aabb, &meta.shape)) {
        (Some(_), Some(inside)) => cells(&inside, &meta.grid_shape),
        _ => Vec::new(),
    }
}

/// The C-order index of `coords` in a grid of `shape` (callers pass coordinates inside a
/// grid whose cell count fits: a shard's chunk grid, capped by the zarr parser).
pub(crate) fn ravel(coords: &[u64], shape: &[u64]) -> usize {
    coords.iter().zip(shape).fold(0u64, |acc, (c, n)| acc * n + c) as usize
}

/// Cells of `cell` shape overlapped by `bounds`, counted without enumerating them
/// (saturating).
pub(crate) fn count_cells(bounds: &[(u64, u64)], cell: &[u64]) -> u64 {
    bounds.iter().zip(cell).map(|(b, c)| (b.1 - 1) / c - b.0 / c + 1).fold(1u64, u64::saturating_mul)
}

/// Plans one batch.
///
/// # Errors
/// InvalidArgument/RankMismatch from [`check_sample`]; InvalidArgument when a needed shard
/// index was not resolved (an internal error).
pub(crate) fn plan_batch(samples: &[ResolvedSample<'_>], shards: &dyn ShardLookup, out_of_bounds_fill: bool) -> Result<BatchPlan> {
    let mut plan = BatchPlan::default();
    let mut array_ids: HashMap<*const Array, u32> = HashMap::new();
    let mut chunk_ids: HashMap<(u32, Vec<u64>), usize> = HashMap::new();
    for (si, s) in samples.iter().enumerate() {
        let si = si as u32;
        let meta = &s.array.meta;
        check_sample(&s.array.uri, meta, s.aabb, out_of_bounds_fill)?;
        let array = *array_ids.entry(Arc::as_ptr(s.array)).or_insert_with(|| {
            plan.arrays.push(Arc::clone(s.array));
            (plan.arrays.len() - 1) as u32
        });
        let inside = clip(s.aabb, &meta.shape);
        for region in outside_regions(s.aabb, inside.as_deref()) {
            plan.fill_ops.push(FillOp { array, sample: si, region });
        }
        let Some(inside) = inside else { continue };
        let chunk_shape = meta.chunk_shape();
        let touched = count_cells(&inside, chunk_shape);
        if touched.saturating_add(plan.chunk_ops.len() as u64) > MAX_CHUNK_OPS {
            return Err(err!(
                BudgetExceeded,
                "{}: the batch touches more than {MAX_CHUNK_OPS} chunks (this sample alone {touched} chunks of {chunk_shape:?}); use fewer or smaller samples per batch, or an array with larger chunks",
                s.array.uri
            ));
        }
        for coords in cells(&inside, chunk_shape) {
            let op = match chunk_ids.get(&(array, coords.clone())) {
                Some(&i) => i,
                None => {
                    let source = chunk_source(s.array, &coords, shards)?;
                    if let ChunkSource::Range { nbytes, .. } = source {
                        plan.read_bytes = plan.read_bytes.saturating_add(nbytes);
                    }
                    if source != ChunkSource::Absent {
                        plan.decoded_bytes = plan.decoded_bytes.saturating_add(meta.decoded_chunk_bytes);
                    }
                    plan.chunk_ops.push(ChunkOp { array, coords: coords.clone(), source, copies: Vec::new() });
                    chunk_ids.insert((array, coords.clone()), plan.chunk_ops.len() - 1);
                    plan.chunk_ops.len() - 1
                }
            };
            let mut copy = Copy { sample: si, chunk_start: Vec::new(), sample_start: Vec::new(), extent: Vec::new() };
            for d in 0..coords.len() {
                let c0 = coords[d] * chunk_shape[d];
                let lo = inside[d].0.max(c0);
                let hi = inside[d].1.min(c0 + chunk_shape[d]);
                copy.chunk_start.push(lo - c0);
                copy.sample_start.push((lo as i64 - s.aabb[d].0) as u64);
                copy.extent.push(hi - lo);
            }
            plan.chunk_ops[op].copies.push(copy);
        }
    }
    Ok(plan)
}

/// Samples of a later batch that touch more chunks than this are left out of
/// [`next_uses`] (the look-ahead only steers the device chunk store; it need not be exact).
pub(crate) const MAX_LOOKAHEAD_CELLS: u64 = 4096;

/// Calls `f(array, seq, coords, part)` for every chunk that a `(seq, uri, aabb)` of the
/// look-ahead window (in increasing `seq`) touches, in arrays of `arrays`: `coords` in the
/// chunk grid, `part` the `(first, last)` voxel (inclusive, per dimension) of the sample's
/// in-bounds part inside that chunk, in chunk coordinates. Samples of arrays the batch does
/// not read, and samples of more than [`MAX_LOOKAHEAD_CELLS`] chunks, are skipped.
fn window_cells<'a>(arrays: &[Arc<Array>], later: impl Iterator<Item = (u64, &'a str, &'a [(i64, i64)])>, mut f: impl FnMut(&Arc<Array>, u64, Vec<u64>, &[(u64, u64)])) {
    let mut part = Vec::new();
    for (seq, uri, aabb) in later {
        let Some(array) = arrays.iter().find(|a| a.uri == uri) else { continue };
        let meta = &array.meta;
        if aabb.len() != meta.rank() {
            continue;
        }
        let Some(inside) = clip(aabb, &meta.shape) else { continue };
        let chunk = meta.chunk_shape();
        if count_cells(&inside, chunk) > MAX_LOOKAHEAD_CELLS {
            continue;
        }
        for coords in cells(&inside, chunk) {
            part.clear();
            part.extend(coords.iter().zip(chunk).zip(&inside).map(|((&c, &n), &(lo, hi))| {
                let origin = c * n;
                (lo.max(origin) - origin, hi.min(origin + n) - 1 - origin)
            }));
            f(array, seq, coords, &part);
        }
    }
}

/// The first later batch that reads each chunk: for every sample of the look-ahead window
/// ([`window_cells`]), the chunks its in-bounds part touches, keyed by (the array's store
/// id, chunk coordinates).
pub(crate) fn next_uses<'a>(arrays: &[Arc<Array>], later: impl Iterator<Item = (u64, &'a str, &'a [(i64, i64)])>) -> HashMap<(Arc<str>, Vec<u64>), u64> {
    let mut out: HashMap<(Arc<str>, Vec<u64>), u64> = HashMap::new();
    window_cells(arrays, later, |array, seq, coords, _| {
        out.entry((Arc::clone(&array.id), coords)).or_insert(seq);
    });
    out
}

/// The decoded bytes of each chunk that the look-ahead window reads: for the chunks of the
/// arrays `wanted` accepts that samples of the window touch ([`window_cells`]), keyed as in
/// [`next_uses`], the smallest byte range `lo..hi` of the chunk's decoded form (C order)
/// holding every element those samples read from it.
pub(crate) fn window_spans<'a>(arrays: &[Arc<Array>], later: impl Iterator<Item = (u64, &'a str, &'a [(i64, i64)])>, wanted: impl Fn(&Array) -> bool) -> HashMap<(Arc<str>, Vec<u64>), (usize, usize)> {
    let mut out: HashMap<(Arc<str>, Vec<u64>), (usize, usize)> = HashMap::new();
    let mut last = Vec::new();
    window_cells(arrays, later, |array, _, coords, part| {
        if !wanted(array) {
            return;
        }
        let (shape, es) = (array.meta.chunk_shape(), array.meta.dtype.size());
        last.clear();
        last.extend(part.iter().map(|p| p.1));
        let first: Vec<u64> = part.iter().map(|p| p.0).collect();
        let (lo, hi) = (ravel(&first, shape) * es, (ravel(&last, shape) + 1) * es);
        let span = out.entry((Arc::clone(&array.id), coords)).or_insert((lo, hi));
        *span = (span.0.min(lo), span.1.max(hi));
    });
    out
}

/// Where the chunk at `coords` is stored, by its shard index when sharded.
///
/// # Errors
/// Storage when the shard index gives the chunk more bytes than any encoding of it takes
/// (naming the shard and the chunk); InvalidArgument when the shard index was not resolved
/// (an internal error).
pub(crate) fn chunk_source(array: &Array, coords: &[u64], shards: &dyn ShardLookup) -> Result<ChunkSource> {
    let meta = &array.meta;
    let Some(sharding) = &meta.sharding else {
        return Ok(ChunkSource::File(array.key(coords).into()));
    };
    let per_shard = &sharding.chunks_per_shard;
    let shard: Vec<u64> = coords.iter().zip(per_shard).map(|(c, p)| c / p).collect();
    let local: Vec<u64> = coords.iter().zip(per_shard).map(|(c, p)| c % p).collect();
    let resolved = shards
        .shard(array, &shard)
        .ok_or_else(|| err!(Internal, "internal: shard {shard:?} of {} was not prefetched", array.uri))?;
    let Some(s) = resolved else { return Ok(ChunkSource::Absent) };
    let Some(r) = s.index.get(ravel(&local, per_shard)) else { return Ok(ChunkSource::Absent) };
    let key = array.key(&shard);
    let cap = max_encoded_len(meta.decoded_chunk_bytes);
    if r.nbytes > cap {
        return Err(err!(
            Storage,
            "{}: shard index gives chunk {coords:?} {} bytes, more than the {cap} bytes any encoding of its {} decoded bytes takes (corrupt shard index)",
            array.store.describe(&key),
            r.nbytes,
            meta.decoded_chunk_bytes
        ));
    }
    Ok(ChunkSource::Range { key: key.into(), offset: r.offset, nbytes: r.nbytes, generation: Some(s.generation.clone()) })
}

#[cfg(test)]
mod tests;
