//! The device side of decoding, on the host: which codec chains the GPU decodes
//! ([`DeviceRoute`]), and the preparation of one staged chunk for it ([`prepare`]): the
//! trailing crc32c is verified and stripped, a zstd frame's structure is checked, a blosc
//! chunk is split into its streams, and the ops the extension runs are emitted (a zstd frame's
//! content checksum, which nvCOMP ignores, becomes a checksum op verified on the GPU after
//! decompression). nvCOMP treats
//! malformed input as undefined behaviour (a fault poisons the CUDA context), so nothing
//! reaches it unchecked.

use crate::error::{err, Result};
use crate::ffi::records::{DecodeCodec, GpuDecodeOp, GpuUnshuffleOp, ShuffleKind};
use crate::zarr::blosc::{BloscCodec, BloscFrame, Shuffle};
use crate::zarr::{zstd_frame, ArrayMeta, BloscCname, CodecSpec, Endian};

/// How the GPU decodes an array's inner chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceCodec {
    /// Stored raw (little-endian `bytes` only): copied.
    Raw,
    /// `bytes` + `zstd`: one nvCOMP zstd stream per chunk.
    Zstd,
    /// `bytes` + `blosc` with lz4/lz4hc/zstd streams: blocks decompressed by nvCOMP, then
    /// unshuffled on the device.
    Blosc,
    /// Anything else: decoded on the CPU, staged raw.
    Cpu,
}

/// The device codec of a chain, and whether a trailing crc32c is checked and stripped on
/// the host first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRoute {
    /// Codec.
    pub codec: DeviceCodec,
    /// A crc32c trails each stored chunk.
    pub crc: bool,
}

impl DeviceRoute {
    /// The route of `meta`'s inner chain (codecs marked skippable are ignored).
    pub fn of(meta: &ArrayMeta) -> Self {
        let specs: Vec<&CodecSpec> = meta.codecs.specs.iter().filter(|s| !matches!(s, CodecSpec::Skipped { .. })).collect();
        let (specs, crc) = match specs.split_last() {
            Some((CodecSpec::Crc32c, rest)) => (rest, true),
            _ => (&specs[..], false),
        };
        let little = match specs.first() {
            Some(CodecSpec::Bytes { endian }) => meta.dtype.size() == 1 || *endian == Some(Endian::Little),
            _ => false,
        };
        let codec = match specs.get(1..) {
            _ if !little => DeviceCodec::Cpu,
            Some([]) => DeviceCodec::Raw,
            Some([CodecSpec::Zstd]) => DeviceCodec::Zstd,
            Some([CodecSpec::Blosc { cname: BloscCname::Lz4 | BloscCname::Lz4Hc | BloscCname::Zstd }]) => DeviceCodec::Blosc,
            _ => DeviceCodec::Cpu,
        };
        Self { codec, crc: crc && codec != DeviceCodec::Cpu }
    }
}

/// The codes written into the op records (their `repr`s; `ffi::records`).
const COPY: u32 = DecodeCodec::Copy.repr;
const ZSTD: u32 = DecodeCodec::Zstd.repr;
const LZ4: u32 = DecodeCodec::Lz4.repr;
const BYTE_SHUFFLE: u32 = ShuffleKind::Byte.repr;
const BIT_SHUFFLE: u32 = ShuffleKind::Bit.repr;

/// One op for the device.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DeviceOp {
    /// Decompress (or copy) a staged range into the decoded arena.
    Decode(GpuDecodeOp),
    /// The zstd Content_Checksum (XXH64's lower 32 bits) of the decode op just before it.
    Checksum(u32),
    /// Unshuffle a decoded block in place.
    Unshuffle(GpuUnshuffleOp),
}

/// The blosc blocks of a chunk a batch decodes, when its framing came from the cache: the
/// framing, which blocks, and the chunk offset where the staged bytes start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockChoice<'a> {
    /// The chunk's framing.
    pub frame: &'a BloscFrame,
    /// Per block: decode it.
    pub needed: &'a [bool],
    /// Chunk offset of the first staged byte.
    pub span_lo: u32,
}

/// A chunk staged at `at` in the staging slab (`staged` are its bytes there), decoding to
/// `decoded_len` bytes at `dst` of the decoded arena: checks it and appends its ops.
///
/// # Errors
/// Decode naming what is wrong (checksum, frame, header, block, stream); the caller adds the
/// uri and the chunk.
pub(crate) fn prepare(route: DeviceRoute, staged: &[u8], at: u64, decoded_len: u64, dst: u64, blocks: Option<BlockChoice<'_>>, out: &mut Vec<DeviceOp>) -> Result<()> {
    let bytes = if route.crc { super::strip_crc32c(staged)? } else { staged };
    let len = bytes.len() as u64;
    match route.codec {
        DeviceCodec::Raw => {
            if len != decoded_len {
                return Err(err!(Decode, "raw chunk has {len} bytes, expected {decoded_len}"));
            }
            out.push(DeviceOp::Decode(GpuDecodeOp { codec: COPY, src_offset: at, src_len: len, dst_offset: dst, dst_len: len }));
        }
        DeviceCodec::Zstd => {
            let sum = zstd_frame::check_frame(bytes, decoded_len)?;
            out.push(DeviceOp::Decode(GpuDecodeOp { codec: ZSTD, src_offset: at, src_len: len, dst_offset: dst, dst_len: decoded_len }));
            out.extend(sum.map(DeviceOp::Checksum));
        }
        DeviceCodec::Blosc => prepare_blosc(bytes, at, decoded_len, dst, blocks, out)?,
        DeviceCodec::Cpu => return Err(err!(Internal, "internal: a CPU-decoded chunk was staged for the device")),
    }
    Ok(())
}

fn prepare_blosc(bytes: &[u8], at: u64, decoded_len: u64, dst: u64, blocks: Option<BlockChoice<'_>>, out: &mut Vec<DeviceOp>) -> Result<()> {
    // The framing comes from the chunk_layout cache; without it it is parsed from the
    // staged chunk, and every block decoded.
    let parsed;
    let (frame, needed, span_lo) = match blocks {
        Some(b) => (b.frame, Some(b.needed), b.span_lo),
        None => {
            parsed = BloscFrame::parse(bytes, bytes.len() as u64)?;
            (&parsed, None, 0)
        }
    };
    if u64::from(frame.nbytes) != decoded_len {
        return Err(err!(Decode, "blosc header: {} decoded bytes, expected {decoded_len}", frame.nbytes));
    }
    if frame.memcpyed {
        let payload = bytes.get(16..16 + decoded_len as usize).ok_or_else(|| err!(Decode, "blosc: raw chunk shorter than its {decoded_len} bytes"))?;
        out.push(DeviceOp::Decode(GpuDecodeOp { codec: COPY, src_offset: at + 16, src_len: payload.len() as u64, dst_offset: dst, dst_len: decoded_len }));
        return Ok(());
    }
    let codec = match frame.codec {
        BloscCodec::Lz4 => LZ4,
        BloscCodec::Zstd => ZSTD,
        other => return Err(err!(Decode, "blosc compressor {other:?} not supported on the GPU")),
    };
    for (b, &(start, end)) in frame.blocks.iter().enumerate() {
        if needed.is_some_and(|n| !n.get(b).copied().unwrap_or(false)) {
            continue;
        }
        let from = start.checked_sub(span_lo).ok_or_else(|| err!(Decode, "blosc block {b}: bytes {start}..{end} not staged"))? as usize;
        let to = end.checked_sub(span_lo).ok_or_else(|| err!(Decode, "blosc block {b}: bytes {start}..{end} not staged"))? as usize;
        let block = bytes.get(from..to).ok_or_else(|| err!(Decode, "blosc block {b}: bytes {start}..{end} not staged"))?;
        let block_at = dst + b as u64 * u64::from(frame.blocksize);
        let mut s_at = block_at;
        for s in frame.streams(b, block)? {
            let c = if s.cbytes == s.nbytes { COPY } else { codec };
            let payload = &block[s.offset as usize..(s.offset + s.cbytes) as usize];
            let sum = if c == ZSTD {
                zstd_frame::check_frame(payload, u64::from(s.nbytes)).map_err(|e| e.context(format_args!("blosc block {b}")))?
            } else {
                None
            };
            let src_offset = at + from as u64 + u64::from(s.offset);
            out.push(DeviceOp::Decode(GpuDecodeOp { codec: c, src_offset, src_len: u64::from(s.cbytes), dst_offset: s_at, dst_len: u64::from(s.nbytes) }));
            out.extend(sum.map(DeviceOp::Checksum));
            s_at += u64::from(s.nbytes);
        }
        let bsize = s_at - block_at;
        let kind = match frame.shuffle {
            Shuffle::Byte if frame.typesize > 1 => BYTE_SHUFFLE,
            Shuffle::Bit if bsize >= u64::from(frame.typesize) => BIT_SHUFFLE,
            _ => 0,
        };
        if kind != 0 {
            out.push(DeviceOp::Unshuffle(GpuUnshuffleOp { offset: block_at, len: bsize, typesize: frame.typesize, kind }));
        }
    }
    Ok(())
}

/// The op that copies a chunk decoded on the CPU (staged raw at `at`) into the arena.
pub(crate) fn staged_raw(at: u64, len: u64, dst: u64) -> DeviceOp {
    DeviceOp::Decode(copy_op(at, len, dst))
}

/// A raw copy of `len` bytes from `src` to `dst` (offsets in whatever buffers the extension
/// runs the op between: staging → arena, or the device chunk store's pool ↔ arena).
pub(crate) fn copy_op(src: u64, len: u64, dst: u64) -> GpuDecodeOp {
    GpuDecodeOp { codec: COPY, src_offset: src, src_len: len, dst_offset: dst, dst_len: len }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(codecs: &str) -> DeviceRoute {
        let json = format!(
            r#"{{"zarr_format":3,"node_type":"array","shape":[64],"data_type":"uint16","chunk_grid":{{"name":"regular","configuration":{{"chunk_shape":[8]}}}},"fill_value":0,"codecs":{codecs}}}"#
        );
        DeviceRoute::of(&ArrayMeta::parse(json.as_bytes()).unwrap())
    }

    /// A v2 array routes like the v3 array of the same chain: the route reads the typed
    /// chain only, never the format.
    #[test]
    fn v2_chains_route_like_their_v3_equivalents() {
        let v2 = |dtype: &str, compressor: &str| {
            let json = format!(r#"{{"zarr_format":2,"shape":[64],"chunks":[8],"dtype":"{dtype}","compressor":{compressor},"fill_value":0,"order":"C","filters":null}}"#);
            DeviceRoute::of(&ArrayMeta::parse_v2(json.as_bytes()).unwrap())
        };
        let b = r#"{"name":"bytes","configuration":{"endian":"little"}}"#;
        assert_eq!(v2("<u2", r#"{"id":"zstd","level":1}"#), route(&format!(r#"[{b},{{"name":"zstd","configuration":{{"level":1}}}}]"#)));
        assert_eq!(v2("<u2", r#"{"id":"zstd","level":1}"#).codec, DeviceCodec::Zstd);
        assert_eq!(v2("<u2", r#"{"id":"blosc","cname":"lz4","clevel":5,"shuffle":1}"#).codec, DeviceCodec::Blosc);
        assert_eq!(v2("<u2", r#"{"id":"blosc","cname":"zstd","clevel":5,"shuffle":2}"#).codec, DeviceCodec::Blosc);
        assert_eq!(v2("<u2", r#"{"id":"blosc","cname":"zlib","clevel":5,"shuffle":1}"#).codec, DeviceCodec::Cpu);
        assert_eq!(v2("<u2", r#"{"id":"gzip","level":1}"#).codec, DeviceCodec::Cpu);
        assert_eq!(v2("<u2", "null"), route(&format!("[{b}]")));
        assert_eq!(v2(">u2", r#"{"id":"zstd","level":1}"#).codec, DeviceCodec::Cpu);
        assert_eq!(v2("|u1", r#"{"id":"zstd","level":1}"#).codec, DeviceCodec::Zstd);
    }

    #[test]
    fn classifies_typed_chains() {
        let b = r#"{"name":"bytes","configuration":{"endian":"little"}}"#;
        assert_eq!(route(&format!("[{b}]")), DeviceRoute { codec: DeviceCodec::Raw, crc: false });
        assert_eq!(route(&format!(r#"[{b},{{"name":"zstd","configuration":{{"level":1}}}},{{"name":"crc32c"}}]"#)), DeviceRoute { codec: DeviceCodec::Zstd, crc: true });
        assert_eq!(route(&format!(r#"[{b},{{"name":"blosc","configuration":{{"cname":"lz4hc"}}}}]"#)).codec, DeviceCodec::Blosc);
        assert_eq!(route(&format!(r#"[{b},{{"name":"blosc","configuration":{{"cname":"zlib"}}}}]"#)).codec, DeviceCodec::Cpu);
        assert_eq!(route(&format!(r#"[{b},{{"name":"gzip","configuration":{{"level":1}}}},{{"name":"crc32c"}}]"#)), DeviceRoute { codec: DeviceCodec::Cpu, crc: false });
        assert_eq!(route(r#"[{"name":"bytes","configuration":{"endian":"big"}},{"name":"zstd"}]"#).codec, DeviceCodec::Cpu);
        assert_eq!(route(&format!(r#"[{{"name":"transpose","configuration":{{"order":[0]}}}},{b}]"#)).codec, DeviceCodec::Cpu);
    }

    #[test]
    fn staged_bytes_are_checked_before_any_op() {
        let r = DeviceRoute { codec: DeviceCodec::Zstd, crc: true };
        let frame = zstd::bulk::compress(&[7u8; 100], 1).unwrap();
        let mut staged = frame.clone();
        staged.extend(crc32c::crc32c(&frame).to_le_bytes());
        let mut ops = Vec::new();
        prepare(r, &staged, 64, 100, 0, None, &mut ops).unwrap();
        assert!(matches!(ops[..], [DeviceOp::Decode(GpuDecodeOp { codec: ZSTD, src_offset: 64, dst_len: 100, .. })]));
        staged[3] ^= 1;
        assert!(prepare(r, &staged, 64, 100, 0, None, &mut ops).unwrap_err().message().contains("crc32c"));
        let mut staged = frame.clone();
        staged.extend(crc32c::crc32c(&frame).to_le_bytes());
        assert!(prepare(r, &staged, 64, 99, 0, None, &mut ops).unwrap_err().message().contains("content size"));
    }

    /// A frame with the checksum flag gets a checksum op (its last 4 bytes) right after its
    /// decode op; one without gets none.
    #[test]
    fn flagged_zstd_frames_carry_their_checksum() {
        let r = DeviceRoute { codec: DeviceCodec::Zstd, crc: false };
        let mut c = zstd::bulk::Compressor::new(1).unwrap();
        c.include_checksum(true).unwrap();
        let frame = c.compress(b"abc").unwrap();
        let mut ops = Vec::new();
        prepare(r, &frame, 0, 3, 0, None, &mut ops).unwrap();
        // XXH64("abc", 0) = 0x44bc2cf5ad770999 (xxHash's reference value).
        assert!(matches!(ops[..], [DeviceOp::Decode(GpuDecodeOp { codec: ZSTD, .. }), DeviceOp::Checksum(0xad77_0999)]), "{ops:?}");
        c.include_checksum(false).unwrap();
        let mut ops = Vec::new();
        prepare(r, &c.compress(b"abc").unwrap(), 0, 3, 0, None, &mut ops).unwrap();
        assert!(matches!(ops[..], [DeviceOp::Decode(_)]), "{ops:?}");
    }
}
