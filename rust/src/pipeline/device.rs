//! The device path of a batch (`device="cuda:N"`, `decode` auto/gpu): instead of decoding,
//! workers stage compressed bytes into a host slab (coalesced reads) and emit the ops the
//! extension runs on the caller's stream: nvCOMP decompression per stream, unshuffle per
//! blosc block, and one assemble launch of copy/fill ops. Chunks whose codec the GPU cannot
//! decode are decoded here and staged raw.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::{spawn_job, InFlight, Shared, MAX_READ_GAP};
use crate::error::{err, Result};
use crate::ffi::{GpuCopyOp, GpuDecodeOp, GpuUnshuffleOp};
use crate::io::WorkerPool;
use crate::plan::device::{device_codec, layout, DeviceCodec, StagingLayout};
use crate::plan::{ravel, BatchPlan, ChunkSource};
use crate::store;
use crate::prefetch::LayoutMap;
use crate::zarr::blosc::{BloscCodec, BloscFrame, Shuffle};
use crate::zarr::{ArrayMeta, SourceDtype};

/// Device work of one batch, filled in by its jobs.
#[derive(Debug, Default)]
pub(super) struct DeviceWork {
    /// Decoded arena bytes.
    pub(super) decoded_bytes: u64,
    /// Decompression ops.
    pub(super) decode_ops: Vec<GpuDecodeOp>,
    /// Unshuffle ops.
    pub(super) unshuffle_ops: Vec<GpuUnshuffleOp>,
    /// Copy and fill ops.
    pub(super) copy_ops: Vec<GpuCopyOp>,
    /// Per decode op: the chunk op it belongs to (index into `chunk_names`).
    pub(super) decode_chunk: Vec<u32>,
    /// Per chunk op: "uri: chunk [coords]".
    pub(super) chunk_names: Vec<String>,
}

impl DeviceWork {
    /// "uri: chunk [..]" of decode op `i`.
    pub(super) fn context(&self, i: usize) -> String {
        self.decode_chunk.get(i).and_then(|&c| self.chunk_names.get(c as usize)).cloned().unwrap_or_else(|| format!("decode op {i}"))
    }
}

fn dtype_code(d: SourceDtype) -> u32 {
    match d {
        SourceDtype::Bool => 0,
        SourceDtype::U8 => 1,
        SourceDtype::I8 => 2,
        SourceDtype::U16 => 3,
        SourceDtype::I16 => 4,
        SourceDtype::U32 => 5,
        SourceDtype::I32 => 6,
        SourceDtype::U64 => 7,
        SourceDtype::I64 => 8,
        SourceDtype::F16 => 9,
        SourceDtype::Bf16 => 10,
        SourceDtype::F32 => 11,
        SourceDtype::F64 => 12,
    }
}

fn pad4(v: &[u64], pad: u32) -> Result<[u32; 4]> {
    if v.len() > 4 {
        return Err(err!(InvalidArgument, "the GPU path supports rank ≤ 4, found rank {} (use device=\"cpu\")", v.len()));
    }
    let mut out = [pad; 4];
    for (o, x) in out[4 - v.len()..].iter_mut().zip(v) {
        *o = u32::try_from(*x).map_err(|_| err!(InvalidArgument, "extent {x} too large for the GPU path"))?;
    }
    Ok(out)
}

fn fill_bits(meta: &ArrayMeta) -> u64 {
    let mut b = [0u8; 8];
    b[..meta.fill.len()].copy_from_slice(&meta.fill);
    u64::from_le_bytes(b)
}

fn copy_ops(plan: &BatchPlan, staging: &StagingLayout) -> Result<Vec<GpuCopyOp>> {
    let mut ops = Vec::new();
    for (i, op) in plan.chunk_ops.iter().enumerate() {
        let meta = &plan.arrays[op.array as usize];
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
        let meta = &plan.arrays[f.array as usize];
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

/// Plans the device work of a batch and queues its staging jobs.
pub(super) fn dispatch(shared: &Arc<Shared>, pool: &WorkerPool, batch: &Arc<InFlight>, mut plan: BatchPlan, layouts: &LayoutMap<'_>) -> Result<()> {
    let cfg = &shared.cfg;
    // Whole-file chunks (unsharded arrays): stat them now so they stage like ranges.
    for op in &mut plan.chunk_ops {
        if let ChunkSource::File(path) = &op.source {
            op.source = match std::fs::metadata(path) {
                Ok(m) => ChunkSource::Range { path: Arc::new(path.clone()), offset: 0, nbytes: m.len() },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => ChunkSource::Absent,
                Err(e) => return Err(err!(Storage, "{}: stat failed: {e}", path.display())),
            };
        }
    }
    let codecs: Vec<(DeviceCodec, bool)> = plan.arrays.iter().map(|m| device_codec(m)).collect();
    // Blosc chunks with a layout from the chunk_layout cache: read and decode only the
    // blocks their copies touch.
    let mut frames: Vec<Option<Blocks>> = Vec::with_capacity(plan.chunk_ops.len());
    for op in &mut plan.chunk_ops {
        let (codec, crc) = codecs[op.array as usize];
        let frame = match &op.source {
            ChunkSource::Range { path, offset, .. } if codec == DeviceCodec::Blosc => layouts.get(&(path.as_path(), *offset)).copied(),
            _ => None,
        };
        let Some(frame) = frame else {
            frames.push(None);
            continue;
        };
        let meta = &plan.arrays[op.array as usize];
        let blocks = Blocks::needed(Arc::clone(frame), op, meta, crc);
        shared.stats.blocks(blocks.decoded as u64, (frame.blocks.len() - blocks.decoded) as u64);
        if let ChunkSource::Range { offset, nbytes, .. } = &mut op.source {
            *offset += u64::from(blocks.span.0);
            *nbytes = u64::from(blocks.span.1 - blocks.span.0);
        }
        frames.push(Some(blocks));
    }
    let cpu_slot = |i: usize| {
        let op = &plan.chunk_ops[i];
        (codecs[op.array as usize].0 == DeviceCodec::Cpu && op.source != ChunkSource::Absent)
            .then(|| plan.arrays[op.array as usize].codec.decoded_len() as u64)
    };
    let staging = layout(&plan, cfg.max_read_op_bytes, MAX_READ_GAP, &cpu_slot);
    if staging.staging_bytes > cfg.staging_bytes {
        return Err(err!(BudgetExceeded, "batch {} stages {} bytes, over staging_bytes = {}; raise `staging_bytes` or use fewer/smaller samples per batch", batch.seq, staging.staging_bytes, cfg.staging_bytes));
    }
    if staging.decoded_bytes > cfg.decoded_bytes {
        return Err(err!(BudgetExceeded, "batch {} decodes {} bytes, over decoded_bytes = {}; raise `decoded_bytes` or use fewer/smaller samples per batch", batch.seq, staging.decoded_bytes, cfg.decoded_bytes));
    }
    let copies = copy_ops(&plan, &staging)?;
    let lease = shared.buffers.acquire(&shared.shutdown).ok_or_else(|| err!(Shutdown, "pipeline closed"))?;
    let slab = SlabPtr(lease.ptr(), lease.len());
    *batch.lease.lock().unwrap_or_else(PoisonError::into_inner) = Some(lease);
    let chunk_names = plan
        .chunk_ops
        .iter()
        .map(|op| {
            let uri = op.copies.first().map_or("?", |c| batch.samples[c.sample as usize].uri.as_str());
            format!("{uri}: chunk {:?}", op.coords)
        })
        .collect();
    *batch.device.lock().unwrap_or_else(PoisonError::into_inner) =
        Some(DeviceWork { decoded_bytes: staging.decoded_bytes, copy_ops: copies, chunk_names, ..DeviceWork::default() });
    shared.stats.staged(&staging);

    let cpu_chunks: Vec<usize> = (0..plan.chunk_ops.len()).filter(|&i| cpu_slot(i).is_some()).collect();
    let plan = Arc::new(plan);
    let staging = Arc::new(staging);
    let codecs = Arc::new(codecs);
    let frames = Arc::new(frames);
    for r in 0..staging.reads.len() {
        let job = StageJob { plan: Arc::clone(&plan), staging: Arc::clone(&staging), codecs: Arc::clone(&codecs), frames: Arc::clone(&frames), slab };
        spawn_job(shared, pool, batch, move |shared, batch| job.read(r, shared, batch));
    }
    for i in cpu_chunks {
        let job = StageJob { plan: Arc::clone(&plan), staging: Arc::clone(&staging), codecs: Arc::clone(&codecs), frames: Arc::clone(&frames), slab };
        spawn_job(shared, pool, batch, move |shared, batch| job.cpu_decode(i, shared, batch));
    }
    Ok(())
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

struct StageJob {
    plan: Arc<BatchPlan>,
    staging: Arc<StagingLayout>,
    codecs: Arc<Vec<(DeviceCodec, bool)>>,
    /// Per chunk op: the blosc blocks to decode, when its layout is known.
    frames: Arc<Vec<Option<Blocks>>>,
    slab: SlabPtr,
}

/// The blocks of one blosc chunk that a batch decodes, from its cached framing.
struct Blocks {
    frame: Arc<BloscFrame>,
    /// Per block: decode it.
    needed: Vec<bool>,
    /// Blocks decoded.
    decoded: usize,
    /// Bytes of the chunk that are staged: `[span.0, span.1)` (the whole chunk when a
    /// checksum must be verified or the chunk is stored raw).
    span: (u32, u32),
}

impl Blocks {
    /// The blocks holding the elements `op`'s copies read: per copy, every block between
    /// its first and last element in C order.
    fn needed(frame: Arc<BloscFrame>, op: &crate::plan::ChunkOp, meta: &ArrayMeta, crc: bool) -> Self {
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
        let whole = (0, frame.cbytes + if crc { 4 } else { 0 });
        let span = if crc || frame.memcpyed || decoded == 0 {
            whole
        } else {
            let picked = frame.blocks.iter().zip(&needed).filter(|(_, &x)| x).map(|(&b, _)| b);
            picked.fold((u32::MAX, 0), |(lo, hi), (s, e)| (lo.min(s), hi.max(e)))
        };
        Self { frame, needed, decoded, span }
    }
}

impl StageJob {
    fn context(&self, i: usize, batch: &InFlight) -> String {
        let op = &self.plan.chunk_ops[i];
        let uri = op.copies.first().map_or("?", |c| batch.samples[c.sample as usize].uri.as_str());
        format!("{uri}: chunk {:?}", op.coords)
    }

    /// Reads one coalesced range into the slab, then emits the decode ops of its chunks.
    fn read(&self, r: usize, shared: &Shared, batch: &InFlight) -> Result<()> {
        let read = &self.staging.reads[r];
        let t0 = Instant::now();
        // SAFETY: each read op owns its staging range.
        let buf = unsafe { self.slab.range(read.staging_offset, read.len)? };
        let file = store::ReadFile::open(&read.path)?.ok_or_else(|| err!(Storage, "{}: shard file vanished", read.path.display()))?;
        file.read_exact_at(buf, read.offset)?;
        shared.stats.read_op(read.len, t0.elapsed());
        let mut work = Vec::new();
        for &i in &read.chunks {
            let mut ops = Vec::new();
            self.chunk_ops(i, &mut ops).map_err(|e| e.context(self.context(i, batch)))?;
            shared.stats.device_chunk();
            work.extend(ops.into_iter().map(|o| (o, i)));
        }
        let mut dev = batch.device.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = dev.as_mut() {
            for w in work {
                match w {
                    (Op::Decode(o), i) => {
                        d.decode_ops.push(o);
                        d.decode_chunk.push(i as u32);
                    }
                    (Op::Unshuffle(o), _) => d.unshuffle_ops.push(o),
                }
            }
        }
        Ok(())
    }

    /// Decodes a chunk the GPU cannot on this thread and stages it raw.
    fn cpu_decode(&self, i: usize, shared: &Shared, batch: &InFlight) -> Result<()> {
        let op = &self.plan.chunk_ops[i];
        let meta = &self.plan.arrays[op.array as usize];
        let t0 = Instant::now();
        let encoded = match &op.source {
            ChunkSource::Range { path, offset, nbytes } => {
                let f = store::ReadFile::open(path)?.ok_or_else(|| err!(Storage, "{}: file vanished", path.display()))?;
                f.read_at(*offset, *nbytes as usize)?
            }
            _ => return Ok(()),
        };
        let t1 = Instant::now();
        let (at, len) = self.staging.staged[i].ok_or_else(|| err!(InvalidArgument, "internal: chunk {i} has no staging slot"))?;
        // SAFETY: each CPU slot is owned by its chunk.
        let out = unsafe { self.slab.range(at, len)? };
        meta.codec.decode_into(&encoded, out).map_err(|e| e.context(self.context(i, batch)))?;
        shared.stats.read_op(encoded.len() as u64, t1 - t0);
        shared.stats.chunk_decoded(0, std::time::Duration::ZERO, t1.elapsed(), std::time::Duration::ZERO);
        let dst = self.staging.decoded[i].unwrap_or(0);
        let mut dev = batch.device.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = dev.as_mut() {
            d.decode_ops.push(GpuDecodeOp { codec: 0, src_offset: at, src_len: len, dst_offset: dst, dst_len: len });
            d.decode_chunk.push(i as u32);
        }
        Ok(())
    }

    fn chunk_ops(&self, i: usize, out: &mut Vec<Op>) -> Result<()> {
        let op = &self.plan.chunk_ops[i];
        let meta = &self.plan.arrays[op.array as usize];
        let (codec, crc) = self.codecs[op.array as usize];
        let (at, mut len) = self.staging.staged[i].ok_or_else(|| err!(InvalidArgument, "internal: chunk {i} not staged"))?;
        let decoded_len = meta.codec.decoded_len() as u64;
        let dst = self.staging.decoded[i].unwrap_or(0);
        // SAFETY: read-only view of this read op's own range, written above by this job.
        let bytes = unsafe { self.slab.range(at, len)? };
        if crc {
            if len < 4 {
                return Err(err!(Decode, "crc32c: chunk of {len} bytes has no checksum"));
            }
            let body = &bytes[..len as usize - 4];
            let stored = u32::from_le_bytes(bytes[len as usize - 4..].try_into().map_err(|_| err!(Decode, "crc32c"))?);
            if crc32c::crc32c(body) != stored {
                return Err(err!(Decode, "crc32c checksum mismatch"));
            }
            len -= 4;
        }
        let bytes = &bytes[..len as usize];
        match codec {
            DeviceCodec::Raw => {
                if len != decoded_len {
                    return Err(err!(Decode, "raw chunk has {len} bytes, expected {decoded_len}"));
                }
                out.push(Op::Decode(GpuDecodeOp { codec: 0, src_offset: at, src_len: len, dst_offset: dst, dst_len: len }));
            }
            DeviceCodec::Zstd => {
                crate::zarr::zstd_frame::check_frame(bytes, decoded_len)?;
                out.push(Op::Decode(GpuDecodeOp { codec: 1, src_offset: at, src_len: len, dst_offset: dst, dst_len: decoded_len }));
            }
            DeviceCodec::Blosc => {
                // The framing comes from the chunk_layout cache; without it (no layout was
                // resolved) it is parsed from the staged chunk, and every block decoded.
                let parsed;
                let (frame, needed, span_lo) = match &self.frames[i] {
                    Some(b) => (&*b.frame, Some(&b.needed), b.span.0),
                    None => {
                        parsed = BloscFrame::parse(bytes, len)?;
                        (&parsed, None, 0)
                    }
                };
                if u64::from(frame.nbytes) != decoded_len {
                    return Err(err!(Decode, "blosc header: {} decoded bytes, expected {decoded_len}", frame.nbytes));
                }
                if frame.memcpyed {
                    out.push(Op::Decode(GpuDecodeOp { codec: 0, src_offset: at + 16, src_len: decoded_len, dst_offset: dst, dst_len: decoded_len }));
                    return Ok(());
                }
                let codec = match frame.codec {
                    BloscCodec::Lz4 => 2,
                    BloscCodec::Zstd => 1,
                    other => return Err(err!(Decode, "blosc compressor {other:?} not supported on the GPU")),
                };
                for (b, &(start, end)) in frame.blocks.iter().enumerate() {
                    if needed.is_some_and(|n| !n[b]) {
                        continue;
                    }
                    let from = (start - span_lo) as usize;
                    let block = bytes.get(from..(end - span_lo) as usize).ok_or_else(|| err!(Decode, "blosc block {b}: bytes {start}..{end} not staged"))?;
                    let block_at = dst + b as u64 * u64::from(frame.blocksize);
                    let mut s_at = block_at;
                    for s in frame.streams(b, block)? {
                        let c = if s.cbytes == s.nbytes { 0 } else { codec };
                        let payload = &block[s.offset as usize..(s.offset + s.cbytes) as usize];
                        if c == 1 {
                            crate::zarr::zstd_frame::check_frame(payload, u64::from(s.nbytes)).map_err(|e| e.context(format_args!("blosc block {b}")))?;
                        }
                        let src_offset = at + from as u64 + u64::from(s.offset);
                        out.push(Op::Decode(GpuDecodeOp { codec: c, src_offset, src_len: u64::from(s.cbytes), dst_offset: s_at, dst_len: u64::from(s.nbytes) }));
                        s_at += u64::from(s.nbytes);
                    }
                    let bsize = s_at - block_at;
                    let kind = match frame.shuffle {
                        Shuffle::Byte if frame.typesize > 1 => 1,
                        Shuffle::Bit if bsize >= u64::from(frame.typesize) => 2,
                        _ => 0,
                    };
                    if kind != 0 {
                        out.push(Op::Unshuffle(GpuUnshuffleOp { offset: block_at, len: bsize, typesize: frame.typesize, kind }));
                    }
                }
            }
            DeviceCodec::Cpu => return Err(err!(InvalidArgument, "internal: CPU chunk in a read op")),
        }
        Ok(())
    }
}

enum Op {
    Decode(GpuDecodeOp),
    Unshuffle(GpuUnshuffleOp),
}

/// Lets the batch carry its device work out to the extension.
pub(super) fn take(batch: &InFlight) -> Option<DeviceWork> {
    batch.device.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// Where a batch keeps its device work while jobs fill it in.
pub(super) type DeviceSlot = Mutex<Option<DeviceWork>>;
