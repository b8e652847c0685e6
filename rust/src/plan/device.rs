//! The device half of planning, everything that needs no chunk bytes: the copy and fill ops
//! of the assemble kernel (shapes padded to rank 4, source dtype codes, fill bits), and
//! which blosc blocks of a chunk a batch's copies read. Pure functions of the plan.

use std::sync::Arc;

use super::staging::StagingLayout;
use super::{ravel, BatchPlan, ChunkOp};
use crate::error::{err, Result};
use crate::ffi::records::{GpuCopyOp, SrcDtype};
use crate::zarr::blosc::BloscFrame;
use crate::zarr::{ArrayMeta, SourceDtype};

/// The assemble kernel's code of a source dtype (`GpuCopyOp::src_dtype`).
pub(crate) fn dtype_code(d: SourceDtype) -> u32 {
    let code = match d {
        SourceDtype::Bool => SrcDtype::Bool,
        SourceDtype::U8 => SrcDtype::U8,
        SourceDtype::I8 => SrcDtype::I8,
        SourceDtype::U16 => SrcDtype::U16,
        SourceDtype::I16 => SrcDtype::I16,
        SourceDtype::U32 => SrcDtype::U32,
        SourceDtype::I32 => SrcDtype::I32,
        SourceDtype::U64 => SrcDtype::U64,
        SourceDtype::I64 => SrcDtype::I64,
        SourceDtype::F16 => SrcDtype::F16,
        SourceDtype::Bf16 => SrcDtype::Bf16,
        SourceDtype::F32 => SrcDtype::F32,
        SourceDtype::F64 => SrcDtype::F64,
    };
    code.repr
}

fn pad4(v: &[u64], pad: u32) -> Result<[u32; 4]> {
    if v.len() > 4 {
        return Err(err!(InvalidArgument, "the GPU path supports rank ≤ 4, found rank {} (use device=\"cpu\")", v.len()));
    }
    let mut out = [pad; 4];
    for (o, x) in out[4 - v.len()..].iter_mut().zip(v) {
        *o = u32::try_from(*x).map_err(|_| err!(InvalidArgument, "extent {x} too large for the GPU path (at most 2^32 - 1)"))?;
    }
    Ok(out)
}

fn fill_bits(meta: &ArrayMeta) -> u64 {
    let mut b = [0u8; 8];
    b[..meta.fill.len()].copy_from_slice(&meta.fill);
    u64::from_le_bytes(b)
}

/// The assemble kernel's ops of a batch: one per copy (from the chunk's decoded-arena
/// slot, or filled when the chunk is absent) and one per fill op.
///
/// # Errors
/// InvalidArgument for a rank above 4 or an extent above 2^32 - 1.
pub(crate) fn copy_ops(plan: &BatchPlan, staging: &StagingLayout) -> Result<Vec<GpuCopyOp>> {
    let mut ops = Vec::new();
    for (i, op) in plan.chunk_ops.iter().enumerate() {
        let meta = &plan.array_of(op).meta;
        for c in &op.copies {
            ops.push(GpuCopyOp {
                chunk_offset: staging.decoded[i].unwrap_or(0),
                src_dtype: dtype_code(meta.dtype),
                sample: c.sample,
                fill: staging.decoded[i].is_none(),
                fill_bits: fill_bits(meta),
                chunk_shape: pad4(meta.chunk_shape(), 1)?,
                chunk_start: pad4(&c.chunk_start, 0)?,
                sample_start: pad4(&c.sample_start, 0)?,
                extent: pad4(&c.extent, 1)?,
            });
        }
    }
    for f in &plan.fill_ops {
        let meta = &plan.arrays[f.array as usize].meta;
        ops.push(GpuCopyOp {
            chunk_offset: 0,
            src_dtype: dtype_code(meta.dtype),
            sample: f.sample,
            fill: true,
            fill_bits: fill_bits(meta),
            chunk_shape: pad4(&f.region.extent, 1)?,
            chunk_start: [0; 4],
            sample_start: pad4(&f.region.start, 0)?,
            extent: pad4(&f.region.extent, 1)?,
        });
    }
    Ok(ops)
}

/// The blocks of one blosc chunk that a batch decodes, from its cached framing.
#[derive(Debug)]
pub(crate) struct Blocks {
    /// The chunk's framing.
    pub frame: Arc<BloscFrame>,
    /// Per block: decode it.
    pub needed: Vec<bool>,
    /// Blocks decoded.
    pub decoded: usize,
    /// Bytes of the chunk that are staged: `[span.0, span.1)` (the whole chunk when a
    /// checksum must be verified or the chunk is stored raw).
    pub span: (u32, u32),
}

impl Blocks {
    /// The blocks holding the elements `op`'s copies read: per copy, every block between
    /// its first and last element in C order.
    pub(crate) fn needed(frame: Arc<BloscFrame>, op: &ChunkOp, meta: &ArrayMeta, crc: bool) -> Self {
        let n = frame.blocks.len();
        let mut needed = vec![false; n];
        let shape = meta.chunk_shape();
        let item = meta.dtype.size() as u64;
        let bs = u64::from(frame.blocksize.max(1));
        for c in &op.copies {
            let end: Vec<u64> = c.chunk_start.iter().zip(&c.extent).map(|(s, e)| s + e - 1).collect();
            let first = ravel(&c.chunk_start, shape) as u64 * item;
            let last = ravel(&end, shape) as u64 * item + item - 1;
            let hi = ((last / bs) as usize).min(n.saturating_sub(1));
            for flag in needed.iter_mut().take(hi + 1).skip((first / bs) as usize) {
                *flag = true;
            }
        }
        let decoded = needed.iter().filter(|&&x| x).count();
        let whole = (0, frame.cbytes.saturating_add(if crc { 4 } else { 0 }));
        let span = if crc || frame.memcpyed || decoded == 0 {
            whole
        } else {
            let picked = frame.blocks.iter().zip(&needed).filter(|(_, &x)| x).map(|(&b, _)| b);
            picked.fold((u32::MAX, 0), |(lo, hi), (s, e)| (lo.min(s), hi.max(e)))
        };
        Self { frame, needed, decoded, span }
    }
}
