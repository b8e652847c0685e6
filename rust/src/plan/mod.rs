//! plan: turns one batch of samples, whose metadata and shard indexes the prefetcher has
//! resolved, into the work that fills the batch's output buffer:
//! - chunk ops: one per distinct inner chunk the batch touches (a chunk shared by several
//!   samples is read and decoded once), each with its byte source and the copies from the
//!   decoded chunk into sample boxes;
//! - fill ops: the parts of sample boxes outside the array (out_of_bounds = "fill").
//!   Absent chunks and absent shard files are chunk ops whose source is `Absent`.
//!
//! Invariant (property-tested): every voxel of every sample is written by exactly one copy
//! or fill. The planner reads resolved values only: no I/O, no cache pins.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod device;

use crate::error::{err, Result};
use crate::zarr::{ArrayMeta, ShardIndex};

/// A box in some coordinate frame: `start` and `extent` per dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// First voxel.
    pub start: Vec<u64>,
    /// Size per dimension (all positive).
    pub extent: Vec<u64>,
}

impl Region {
    /// Voxels in the region.
    pub fn voxels(&self) -> u64 {
        self.extent.iter().product()
    }
}

/// One copy from a decoded chunk into a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Sample index within the batch.
    pub sample: u32,
    /// Start inside the decoded chunk.
    pub chunk_start: Vec<u64>,
    /// Start inside the sample.
    pub sample_start: Vec<u64>,
    /// Extent.
    pub extent: Vec<u64>,
}

/// Where a chunk's encoded bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkSource {
    /// `nbytes` at `offset` of a shard file.
    Range {
        /// Shard file.
        path: Arc<PathBuf>,
        /// Byte offset.
        offset: u64,
        /// Length.
        nbytes: u64,
    },
    /// A whole chunk file; absent file = fill.
    File(PathBuf),
    /// Absent (inner chunk missing from its shard, or the shard file is absent): fill.
    Absent,
}

/// Read, decode and scatter one chunk.
#[derive(Debug, Clone)]
pub struct ChunkOp {
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
pub struct FillOp {
    /// Index into [`BatchPlan::arrays`].
    pub array: u32,
    /// Sample index.
    pub sample: u32,
    /// Region inside the sample.
    pub region: Region,
}

/// The resolved inputs of one sample.
pub struct ResolvedSample<'a> {
    /// Array metadata.
    pub meta: &'a Arc<ArrayMeta>,
    /// The array's folder.
    pub root: &'a Path,
    /// The uri (for messages).
    pub uri: &'a str,
    /// `(start, stop)` per dimension.
    pub aabb: &'a [(i64, i64)],
}

/// Looks up a resolved shard index: `Some(None)` when the shard file is absent, `None` when
/// the prefetcher did not resolve it (a bug).
pub trait ShardLookup {
    /// The index of the shard at `shard_coords` of array `root`.
    fn shard(&self, root: &Path, shard_coords: &[u64]) -> Option<Option<&ShardIndex>>;
}

/// The plan of one batch.
#[derive(Debug, Default)]
pub struct BatchPlan {
    /// Distinct arrays of the batch (chunk and fill ops index into this).
    pub arrays: Vec<Arc<ArrayMeta>>,
    /// Chunk ops.
    pub chunk_ops: Vec<ChunkOp>,
    /// Fill ops.
    pub fill_ops: Vec<FillOp>,
    /// Encoded bytes the chunk ops read (known ranges only; whole-file chunks count 0).
    pub read_bytes: u64,
}

/// Checks a sample's box against its array: rank, and bounds unless `out_of_bounds_fill`.
///
/// # Errors
/// RankMismatch, InvalidArgument (naming the array's shape).
pub fn check_sample(uri: &str, meta: &ArrayMeta, aabb: &[(i64, i64)], out_of_bounds_fill: bool) -> Result<()> {
    if aabb.len() != meta.rank() {
        return Err(err!(RankMismatch, "{uri}: box has rank {} but the array has rank {} (shape {:?})", aabb.len(), meta.rank(), meta.shape));
    }
    if !out_of_bounds_fill {
        let outside = aabb.iter().zip(&meta.shape).any(|(&(a, b), &n)| a < 0 || b > n as i64);
        if outside {
            return Err(err!(InvalidArgument, "{uri}: box {aabb:?} reaches outside the array of shape {:?} (set out_of_bounds=\"fill\" to pad)", meta.shape));
        }
    }
    Ok(())
}

/// The part of `aabb` inside an array of `shape`, or `None` when they do not overlap.
pub fn clip(aabb: &[(i64, i64)], shape: &[u64]) -> Option<Vec<(u64, u64)>> {
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
pub fn cells(bounds: &[(u64, u64)], cell: &[u64]) -> Vec<Vec<u64>> {
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
pub fn outside_regions(aabb: &[(i64, i64)], inside: Option<&[(u64, u64)]>) -> Vec<Region> {
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
pub fn shards_of(meta: &ArrayMeta, aabb: &[(i64, i64)]) -> Vec<Vec<u64>> {
    match (&meta.sharding, clip(aabb, &meta.shape)) {
        (Some(_), Some(inside)) => cells(&inside, &meta.grid_shape),
        _ => Vec::new(),
    }
}

/// The C-order index of `coords` in a grid of `shape`.
pub(crate) fn ravel(coords: &[u64], shape: &[u64]) -> usize {
    coords.iter().zip(shape).fold(0u64, |acc, (c, n)| acc * n + c) as usize
}

/// Plans one batch.
///
/// # Errors
/// InvalidArgument/RankMismatch from [`check_sample`]; InvalidArgument when a needed shard
/// index was not resolved (an internal error).
pub fn plan_batch(samples: &[ResolvedSample<'_>], shards: &dyn ShardLookup, out_of_bounds_fill: bool) -> Result<BatchPlan> {
    let mut plan = BatchPlan::default();
    let mut array_ids: HashMap<*const ArrayMeta, u32> = HashMap::new();
    let mut chunk_ids: HashMap<(u32, Vec<u64>), usize> = HashMap::new();
    for (si, s) in samples.iter().enumerate() {
        let si = si as u32;
        check_sample(s.uri, s.meta, s.aabb, out_of_bounds_fill)?;
        let array = *array_ids.entry(Arc::as_ptr(s.meta)).or_insert_with(|| {
            plan.arrays.push(Arc::clone(s.meta));
            (plan.arrays.len() - 1) as u32
        });
        let meta = s.meta;
        let inside = clip(s.aabb, &meta.shape);
        for region in outside_regions(s.aabb, inside.as_deref()) {
            plan.fill_ops.push(FillOp { array, sample: si, region });
        }
        let Some(inside) = inside else { continue };
        let chunk_shape = meta.chunk_shape();
        for coords in cells(&inside, chunk_shape) {
            let op = match chunk_ids.get(&(array, coords.clone())) {
                Some(&i) => i,
                None => {
                    let source = chunk_source(meta, s.root, &coords, shards)?;
                    if let ChunkSource::Range { nbytes, .. } = source {
                        plan.read_bytes += nbytes;
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

/// Where the chunk at `coords` is stored, by its shard index when sharded.
///
/// # Errors
/// InvalidArgument when the shard index was not resolved (an internal error).
pub fn chunk_source(meta: &ArrayMeta, root: &Path, coords: &[u64], shards: &dyn ShardLookup) -> Result<ChunkSource> {
    let Some(sharding) = &meta.sharding else {
        return Ok(ChunkSource::File(root.join(meta.key_encoding.key(coords))));
    };
    let per_shard = sharding.chunks_per_shard(&meta.grid_shape);
    let shard: Vec<u64> = coords.iter().zip(&per_shard).map(|(c, p)| c / p).collect();
    let local: Vec<u64> = coords.iter().zip(&per_shard).map(|(c, p)| c % p).collect();
    let index = shards
        .shard(root, &shard)
        .ok_or_else(|| err!(InvalidArgument, "internal: shard {shard:?} of {} was not prefetched", root.display()))?;
    Ok(match index.and_then(|idx| idx.get(ravel(&local, &per_shard))) {
        Some(r) => ChunkSource::Range { path: Arc::new(root.join(meta.key_encoding.key(&shard))), offset: r.offset, nbytes: r.nbytes },
        None => ChunkSource::Absent,
    })
}

#[cfg(test)]
mod tests;
