//! CPU decoding of one inner chunk, bounded by the size the metadata fixes.
//!
//! A [`ChunkCodec`] is built once per array from its typed codec chain and shared by every
//! worker (`Send + Sync`, decoding takes `&self`). Decoding writes the chunk's elements,
//! native endian and C order, into a caller-owned buffer of exactly
//! [`ChunkCodec::decoded_len`] bytes.
//!
//! Bounded by construction: the bytes→bytes codecs (`zstd`, `gzip`, `blosc`, `crc32c`) are
//! decoded here with the libraries zarrs links (libzstd, flate2, c-blosc), each into a
//! buffer whose size is known from the metadata (exactly the decoded chunk, or the chunk
//! plus its trailing checksums) or, between two compressors, capped by
//! [`max_encoded_len`]. A stream that claims or produces more or fewer bytes fails the chunk
//! with Decode, before anything larger is allocated. zarrs' own bytes→bytes decoders
//! allocate what a stream declares (zstd: the frame's content size; gzip: read to end), so a
//! 32 KiB zstd chunk can ask for 1 GiB (dev/decisions.md). The array→bytes part (`bytes`
//! endianness, `transpose`) runs through zarrs' codec chain on the exact-size buffer, unless
//! it is the identity (native endian, no transpose), in which case the last decoder writes
//! straight into the output.

use std::borrow::Cow;
use std::io::Read;
use std::num::NonZeroU64;

use zarrs::array::codec::CodecChain as ZarrsChain;
use zarrs::array::data_type;
use zarrs::array::{ArrayToBytesCodecTraits, CodecOptions, DataType, FillValue};
use zarrs::metadata::v3::MetadataV3;

use crate::error::{err, Result};
use crate::zarr::blosc::BloscFrame;
use crate::zarr::{ArrayMeta, CodecSpec, Endian};

/// Largest stored size of a chunk that decodes to `decoded` bytes: what any chain of
/// compressors can expand incompressible data to, with room to spare. A shard index entry or
/// chunk file larger than this is malformed (and never read).
pub(crate) fn max_encoded_len(decoded: u64) -> u64 {
    decoded.saturating_add(decoded / 2).saturating_add(64 << 10)
}

/// One bytes→bytes decode step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Zstd,
    Gzip,
    Blosc,
    Crc32c,
}

/// The array→bytes part when it is not the identity: zarrs' chain over the exact buffer.
#[derive(Debug, Clone)]
struct ArrayPart {
    chain: ZarrsChain,
    shape: Vec<NonZeroU64>,
    data_type: DataType,
    fill_value: FillValue,
    options: CodecOptions,
}

/// Decodes the stored bytes of one inner chunk of one array; built once per array.
#[derive(Debug, Clone)]
pub struct ChunkCodec {
    /// bytes→bytes steps in decode order (the reverse of the metadata's).
    steps: Vec<Step>,
    /// Per step: the exact size of its output when the metadata fixes it.
    exact: Vec<Option<usize>>,
    /// `None`: the array→bytes part is the identity.
    array: Option<ArrayPart>,
    is_bool: bool,
    /// Codec names for messages (`"bytes, zstd"`).
    names: String,
    decoded_len: usize,
}

thread_local! {
    static ZSTD: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
    static ZSTD_STREAM: std::cell::RefCell<Option<zstd::stream::raw::Decoder<'static>>> = const { std::cell::RefCell::new(None) };
}

/// The zarrs data type of a Zarr v3 data type name damacy reads.
fn zarrs_data_type(name: &str) -> Result<DataType> {
    Ok(match name {
        "bool" => data_type::bool(),
        "int8" => data_type::int8(),
        "uint8" => data_type::uint8(),
        "int16" => data_type::int16(),
        "uint16" => data_type::uint16(),
        "float16" => data_type::float16(),
        "bfloat16" => data_type::bfloat16(),
        "int32" => data_type::int32(),
        "uint32" => data_type::uint32(),
        "float32" => data_type::float32(),
        "int64" => data_type::int64(),
        "uint64" => data_type::uint64(),
        "float64" => data_type::float64(),
        _ => return Err(err!(DtypeMismatch, "unsupported data type `{name}`")),
    })
}

/// The data without its trailing crc32c, which must match.
///
/// # Errors
/// Decode when the data is shorter than the checksum or the checksum does not match.
pub(crate) fn strip_crc32c(data: &[u8]) -> Result<&[u8]> {
    let split = data.len().checked_sub(4).ok_or_else(|| err!(Decode, "crc32c: chunk of {} bytes has no checksum", data.len()))?;
    let (body, sum) = data.split_at(split);
    let stored = u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(err!(Decode, "crc32c checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"));
    }
    Ok(body)
}

impl ChunkCodec {
    /// The decoder of `meta`'s inner chunks.
    ///
    /// # Errors
    /// InvalidArgument when zarrs rejects the array→bytes part for this chunk shape and data
    /// type; DtypeMismatch for a data type zarrs does not know.
    pub fn new(meta: &ArrayMeta) -> Result<Self> {
        let decoded_len = meta.decoded_len();
        let native = if cfg!(target_endian = "little") { Endian::Little } else { Endian::Big };
        let mut steps = Vec::new();
        let mut identity = true;
        let mut array_metadata: Vec<MetadataV3> = Vec::new();
        for (spec, m) in meta.codecs.specs.iter().zip(&meta.codecs.metadata) {
            match spec {
                CodecSpec::Transpose { .. } => {
                    identity = false;
                    array_metadata.push(m.clone());
                }
                CodecSpec::Bytes { endian } => {
                    if meta.dtype.size() > 1 && endian.is_some_and(|e| e != native) {
                        identity = false;
                    }
                    array_metadata.push(m.clone());
                }
                CodecSpec::Zstd => steps.push(Step::Zstd),
                CodecSpec::Gzip => steps.push(Step::Gzip),
                CodecSpec::Blosc { .. } => steps.push(Step::Blosc),
                CodecSpec::Crc32c => steps.push(Step::Crc32c),
                CodecSpec::Skipped { .. } => {}
            }
        }
        steps.reverse();
        // A step's output size is fixed when only checksums follow it (in decode order).
        let mut exact = vec![None; steps.len()];
        let mut size = Some(decoded_len);
        for i in (0..steps.len()).rev() {
            exact[i] = size;
            size = match steps[i] {
                Step::Crc32c => size.map(|s| s + 4),
                _ => None,
            };
        }
        let array = if identity {
            None
        } else {
            let data_type = zarrs_data_type(&meta.data_type)?;
            let fill_value = FillValue::new(meta.fill.clone());
            let shape: Vec<NonZeroU64> = meta.chunk_shape().iter().filter_map(|&n| NonZeroU64::new(n)).collect();
            let chain = ZarrsChain::from_metadata(&array_metadata).map_err(|e| err!(InvalidArgument, "invalid codec configuration: {e}"))?;
            chain
                .encoded_representation(&shape, &data_type, &fill_value)
                .map_err(|e| err!(InvalidArgument, "codecs do not fit a {} chunk of shape {:?}: {e}", meta.data_type, meta.chunk_shape()))?;
            Some(ArrayPart { chain, shape, data_type, fill_value, options: CodecOptions::default().with_concurrent_target(1) })
        };
        Ok(Self { steps, exact, array, is_bool: meta.dtype == crate::zarr::SourceDtype::Bool, names: meta.codecs.names(), decoded_len })
    }

    /// Decodes `encoded` (the stored bytes of one chunk) into `out`, which must be exactly
    /// [`decoded_len`](Self::decoded_len) bytes; on success `out` holds the chunk's elements,
    /// native endian, C order (`bool` as one byte, 0 or 1). Allocates at most
    /// [`max_encoded_len`] of the chunk per intermediate step (none for the common chains).
    ///
    /// # Errors
    /// - Decode: a codec failed (corrupt or truncated data, checksum mismatch), or a stream
    ///   claims or produces a size other than the metadata's; the caller adds uri and chunk.
    /// - InvalidArgument: `out` has the wrong length.
    pub fn decode_into(&self, encoded: &[u8], out: &mut [u8]) -> Result<()> {
        if out.len() != self.decoded_len {
            return Err(err!(InvalidArgument, "output buffer has {} bytes, a decoded chunk has {}", out.len(), self.decoded_len));
        }
        let cap = max_encoded_len(self.decoded_len as u64);
        if encoded.len() as u64 > cap {
            return Err(err!(Decode, "stored chunk of {} bytes exceeds the {cap} bytes any encoding of a {}-byte chunk takes (codecs: {})", encoded.len(), self.decoded_len, self.names));
        }
        self.decode_steps(encoded, out).map_err(|e| crate::error::Error::new(e.status(), format!("{} (codecs: {})", e.message(), self.names)))?;
        if self.is_bool {
            // The bytes codec passes bool bytes through unchecked; torch needs exactly 0 or 1.
            for b in out.iter_mut() {
                *b = u8::from(*b != 0);
            }
        }
        Ok(())
    }

    fn decode_steps(&self, encoded: &[u8], out: &mut [u8]) -> Result<()> {
        let mut cur: Cow<'_, [u8]> = Cow::Borrowed(encoded);
        let mut in_out = false; // the data is already in `out`
        let cap = max_encoded_len(self.decoded_len as u64) as usize;
        for (i, &step) in self.steps.iter().enumerate() {
            if step == Step::Crc32c {
                let n = strip_crc32c(&cur)?.len();
                match &mut cur {
                    Cow::Borrowed(b) => *b = &b[..n],
                    Cow::Owned(v) => v.truncate(n),
                }
                continue;
            }
            let exact = self.exact[i];
            // The last step of an identity chain writes straight into the output.
            if exact == Some(self.decoded_len) && self.array.is_none() && i + 1 == self.steps.len() {
                let n = decompress(step, &cur, out)?;
                if n != out.len() {
                    return Err(err!(Decode, "chunk decoded to {n} bytes, expected {}", out.len()));
                }
                in_out = true;
                continue;
            }
            let size = exact.unwrap_or(cap);
            let mut buf = Vec::new();
            buf.try_reserve_exact(size).map_err(|_| err!(OutOfMemory, "cannot allocate {size} bytes to decode a chunk"))?;
            buf.resize(size, 0);
            let n = decompress(step, &cur, &mut buf)?;
            if exact.is_some_and(|e| e != n) {
                return Err(err!(Decode, "codec step decoded to {n} bytes, expected {size}"));
            }
            buf.truncate(n);
            cur = Cow::Owned(buf);
        }
        if in_out {
            return Ok(());
        }
        if cur.len() != self.decoded_len {
            return Err(err!(Decode, "chunk holds {} bytes, expected {}", cur.len(), self.decoded_len));
        }
        match &self.array {
            None => out.copy_from_slice(&cur),
            Some(a) => {
                let decoded = a.chain.decode(Cow::Borrowed(&cur[..]), &a.shape, &a.data_type, &a.fill_value, &a.options).map_err(|e| err!(Decode, "{e}"))?;
                let bytes = decoded.into_fixed().map_err(|e| err!(Decode, "{e}"))?;
                if bytes.len() != out.len() {
                    return Err(err!(Decode, "chunk decoded to {} bytes, expected {}", bytes.len(), out.len()));
                }
                out.copy_from_slice(&bytes);
            }
        }
        Ok(())
    }

    /// The size of one decoded chunk in bytes.
    pub fn decoded_len(&self) -> usize {
        self.decoded_len
    }

    /// The one compressor of a chain that is the identity array→bytes part (C order, native
    /// endian), then that compressor, then optionally a crc32c over the compressed bytes
    /// (decode order: `[crc32c,] compressor`): its first `n` decoded bytes are the first `n`
    /// bytes of the chunk's elements. `None` for any other chain (a checksum inside the
    /// compressor, two compressors, a transpose, a byte swap).
    fn sole_compressor(&self) -> Option<Step> {
        if self.array.is_some() {
            return None;
        }
        match self.steps[..] {
            [s] | [Step::Crc32c, s] if s != Step::Crc32c => Some(s),
            _ => None,
        }
    }

    /// `true` when [`decode_prefix_into`](Self::decode_prefix_into) can stop early: the
    /// chain is one compressor (zstd, or blosc), after an optional crc32c, and the
    /// array→bytes part is the identity (C order, native endian), so the first `n` decoded
    /// bytes are the first `n` bytes of the chunk's elements.
    pub fn decodes_prefix(&self) -> bool {
        matches!(self.sole_compressor(), Some(Step::Zstd | Step::Blosc))
    }

    /// `true` when [`decode_span_into`](Self::decode_span_into) decodes only the blosc
    /// blocks of a byte range: the chain is bytes (native endian, no transpose) → blosc,
    /// after an optional crc32c.
    pub fn decodes_span(&self) -> bool {
        self.sole_compressor() == Some(Step::Blosc)
    }

    /// How many decoded bytes to produce for a crop that reads the first `need` bytes: a
    /// blosc prefix always pays (only its blocks are decompressed); libzstd's streaming
    /// decoder, which a stopped stream needs, costs about what the bulk decoder does per byte
    /// plus up to one 128 KiB block (measured: `prefix_timing`, dev/perf.md), so a zstd
    /// prefix is decoded up to 7/8 of the chunk and the whole chunk (bulk) beyond.
    pub fn prefix_len(&self, need: usize) -> usize {
        if !self.decodes_prefix() || need >= self.decoded_len {
            return self.decoded_len;
        }
        let zstd = self.steps.contains(&Step::Zstd);
        if zstd && need > self.decoded_len / 8 * 7 {
            self.decoded_len
        } else {
            need
        }
    }

    /// Decodes the first `out.len()` bytes of the chunk (C order), stopping the zstd stream
    /// once they are produced, or decoding only the blosc blocks that hold them. Bytes
    /// after the prefix are not decoded, so damage there goes unnoticed (it never reaches
    /// an output); the prefix itself is checked as [`decode_into`](Self::decode_into)
    /// checks a whole chunk (the stream must produce it; framing and sizes are checked).
    /// Without [`decodes_prefix`](Self::decodes_prefix), or for the whole chunk, it is
    /// [`decode_into`](Self::decode_into).
    ///
    /// # Errors
    /// As [`decode_into`](Self::decode_into); InvalidArgument when `out` is longer than a
    /// chunk.
    pub fn decode_prefix_into(&self, encoded: &[u8], out: &mut [u8]) -> Result<()> {
        if out.len() == self.decoded_len || !self.decodes_prefix() {
            return self.decode_into(encoded, out);
        }
        if out.len() > self.decoded_len {
            return Err(err!(InvalidArgument, "output buffer has {} bytes, a decoded chunk has {}", out.len(), self.decoded_len));
        }
        let cap = max_encoded_len(self.decoded_len as u64);
        if encoded.len() as u64 > cap {
            return Err(err!(Decode, "stored chunk of {} bytes exceeds the {cap} bytes any encoding of a {}-byte chunk takes (codecs: {})", encoded.len(), self.decoded_len, self.names));
        }
        let with_names = |e: crate::error::Error| crate::error::Error::new(e.status(), format!("{} (codecs: {})", e.message(), self.names));
        let mut src = encoded;
        if self.steps.first() == Some(&Step::Crc32c) {
            src = strip_crc32c(src).map_err(with_names)?;
        }
        match self.sole_compressor() {
            Some(Step::Zstd) => zstd_prefix(src, out, self.decoded_len),
            _ => blosc_prefix(src, out, self.decoded_len),
        }
        .map_err(with_names)?;
        if self.is_bool {
            for b in out.iter_mut() {
                *b = u8::from(*b != 0);
            }
        }
        Ok(())
    }

    /// Decodes the blosc blocks that hold bytes `lo..hi` of the decoded chunk (C order) into
    /// `out` (resized to what was decoded) and returns the offset of `out[0]` in the
    /// decoded chunk: `out` holds bytes `offset..offset + out.len()`, which cover `lo..hi`
    /// and end on block boundaries (or at the chunk's end), so a later range inside those
    /// blocks is served too. Only those blocks are decompressed (`blosc_getitem`); damage
    /// in other blocks goes unnoticed (it never reaches an output). The framing is checked
    /// as for a whole chunk (header, sizes against the metadata, the block table and the
    /// streams of every block decoded), and so is a trailing crc32c (over the whole chunk).
    /// Without [`decodes_span`](Self::decodes_span), when the blocks are more than 7/8 of
    /// the chunk (a span then costs about what the whole chunk does), or when their bytes
    /// are not whole blosc items (a typesize not dividing the block size), the whole chunk
    /// is decoded (offset 0).
    ///
    /// # Errors
    /// As [`decode_into`](Self::decode_into) (Decode for corrupt or truncated data, sizes
    /// other than the metadata's; OutOfMemory when `out` cannot grow); InvalidArgument
    /// when `lo..hi` is empty or reaches past the chunk.
    pub fn decode_span_into(&self, encoded: &[u8], lo: usize, hi: usize, out: &mut Vec<u8>) -> Result<usize> {
        if lo >= hi || hi > self.decoded_len {
            return Err(err!(InvalidArgument, "span {lo}..{hi} is not a non-empty range of a {}-byte chunk", self.decoded_len));
        }
        let whole = |out: &mut Vec<u8>| {
            resize_exact(out, self.decoded_len)?;
            self.decode_into(encoded, out).map(|()| 0)
        };
        if !self.decodes_span() {
            return whole(out);
        }
        let cap = max_encoded_len(self.decoded_len as u64);
        if encoded.len() as u64 > cap {
            return Err(err!(Decode, "stored chunk of {} bytes exceeds the {cap} bytes any encoding of a {}-byte chunk takes (codecs: {})", encoded.len(), self.decoded_len, self.names));
        }
        let with_names = |e: crate::error::Error| crate::error::Error::new(e.status(), format!("{} (codecs: {})", e.message(), self.names));
        let src = if self.steps.first() == Some(&Step::Crc32c) { strip_crc32c(encoded).map_err(with_names)? } else { encoded };
        let frame = BloscFrame::parse(src, src.len() as u64).map_err(with_names)?;
        let Some((s_lo, s_hi)) = block_span(&frame, lo, hi, self.decoded_len).map_err(with_names)? else {
            return whole(out);
        };
        resize_exact(out, s_hi - s_lo)?;
        blosc_items(src, &frame, s_lo, out).map_err(with_names)?;
        if self.is_bool {
            for b in out.iter_mut() {
                *b = u8::from(*b != 0);
            }
        }
        Ok(s_lo)
    }
}

/// Resizes `buf` to exactly `n` bytes, failing with OutOfMemory rather than aborting.
fn resize_exact(buf: &mut Vec<u8>, n: usize) -> Result<()> {
    if n > buf.len() {
        buf.try_reserve_exact(n - buf.len()).map_err(|_| err!(OutOfMemory, "cannot allocate {n} bytes to decode a chunk"))?;
    }
    buf.resize(n, 0);
    Ok(())
}

/// The decoded bytes `[s_lo, s_hi)` of the whole blosc blocks of `frame` that hold bytes
/// `lo..hi` of a chunk of `full` bytes; `None` when they are more than 7/8 of the chunk or
/// are not whole items of the frame's typesize (then the chunk is decoded whole). All arithmetic is
/// on the header's values (hostile), checked.
///
/// # Errors
/// Decode when the header's decoded size is not the metadata's.
fn block_span(frame: &BloscFrame, lo: usize, hi: usize, full: usize) -> Result<Option<(usize, usize)>> {
    let nbytes = frame.nbytes as usize;
    if nbytes != full {
        return Err(err!(Decode, "blosc header: {nbytes} decoded bytes, expected {full}"));
    }
    if frame.memcpyed {
        // Stored raw: the span is a plain copy, exactly the bytes asked for.
        return Ok(Some((lo, hi)).filter(|&s| s != (0, full)));
    }
    // parse: blocksize > 0 whenever nbytes > 0 (and full >= hi > lo >= 0 here).
    let bs = (frame.blocksize as usize).max(1);
    let s_lo = lo / bs * bs;
    let s_hi = hi.div_ceil(bs).checked_mul(bs).map_or(full, |e| e.min(full));
    let ts = frame.typesize as usize;
    // blosc_getitem decompresses each block into scratch and copies it out, so a span of
    // most of the chunk costs what the whole chunk does (`span_timing`, dev/perf.md: a
    // span's bytes cost 0.9-1.1x the whole decode's): beyond 7/8 of it, decode it whole.
    if s_hi - s_lo > full - full / 8 || !s_lo.is_multiple_of(ts) || !s_hi.is_multiple_of(ts) {
        return Ok(None);
    }
    Ok(Some((s_lo, s_hi)))
}

/// The first `out.len()` bytes of a zstd stream that decodes to `full` bytes: the stream is
/// run until they are produced, then dropped (libzstd decodes at most one 128 KiB block past
/// them). The window is capped at the chunk's size, so a frame asking for a larger window
/// (memory it would allocate) fails.
fn zstd_prefix(src: &[u8], out: &mut [u8], full: usize) -> Result<()> {
    use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
    ZSTD_STREAM.with_borrow_mut(|slot| {
        let dec = match slot {
            Some(d) => d,
            None => slot.insert(zstd::stream::raw::Decoder::new().map_err(|e| err!(OutOfMemory, "zstd context: {e}"))?),
        };
        dec.reinit().map_err(|e| err!(Decode, "zstd: {e}"))?;
        // The window a frame of `full` bytes can need: its content size, rounded up to 2^10..2^31.
        let log = (usize::BITS - full.max(1 << 10).next_power_of_two().leading_zeros() - 1).clamp(10, 31);
        dec.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(log)).map_err(|e| err!(Decode, "zstd: {e}"))?;
        let want = out.len();
        let mut input = InBuffer::around(src);
        let mut output = OutBuffer::around(out);
        loop {
            let before = (input.pos(), output.pos());
            let hint = dec.run(&mut input, &mut output).map_err(|e| err!(Decode, "zstd: {e} (at most {full} bytes expected)"))?;
            if output.pos() == want {
                return Ok(());
            }
            if hint == 0 || (input.pos(), output.pos()) == before {
                return Err(err!(Decode, "zstd: stream ends after {} bytes, expected {full}", output.pos()));
            }
        }
    })
}

/// The first `out.len()` bytes of a blosc chunk that decodes to `full` bytes: only the
/// blocks that hold them are decompressed, after the same framing checks as a whole chunk.
fn blosc_prefix(src: &[u8], out: &mut [u8], full: usize) -> Result<()> {
    let frame = BloscFrame::parse(src, src.len() as u64)?;
    let nbytes = frame.nbytes as usize;
    if nbytes != full {
        return Err(err!(Decode, "blosc header: {nbytes} decoded bytes, expected {full}"));
    }
    if !out.len().is_multiple_of(frame.typesize.max(1) as usize) {
        // The prefix is not a whole number of blosc items: decode the whole chunk.
        let mut whole = Vec::new();
        resize_exact(&mut whole, nbytes)?;
        blosc_decompress(src, &mut whole)?;
        out.copy_from_slice(&whole[..out.len()]);
        return Ok(());
    }
    blosc_items(src, &frame, 0, out)
}

/// Decodes bytes `at..at + out.len()` of the blosc chunk `src` (parsed as `frame`, its
/// decoded size checked against the metadata by the caller) into `out`: only the blocks
/// that hold them are decompressed (`blosc_getitem`, which keeps its state on its own
/// stack: safe on many threads; a raw chunk is copied). Unless the chunk is raw, `at` and
/// `out.len()` must be whole items of the frame's typesize. First checks what a whole
/// decode checks of these blocks: c-blosc's own validation, the header's flags, and the
/// stream sizes of every block decompressed.
///
/// # Errors
/// Decode for a range outside the chunk or not of whole items, framing c-blosc rejects, a
/// stream running past its block, or a failed decompression.
fn blosc_items(src: &[u8], frame: &BloscFrame, at: usize, out: &mut [u8]) -> Result<()> {
    let nbytes = frame.nbytes as usize;
    let end = at.checked_add(out.len()).filter(|&e| e <= nbytes).ok_or_else(|| err!(Decode, "blosc: bytes {at}..+{} outside the {nbytes}-byte chunk", out.len()))?;
    if out.is_empty() {
        return Ok(());
    }
    let mut declared = 0usize;
    // SAFETY: `src` is a valid slice of `src.len()` bytes; `declared` is a valid out-pointer.
    let valid = unsafe { blosc_src::blosc_cbuffer_validate(src.as_ptr().cast(), src.len(), &raw mut declared) };
    // Flag 0x08 ("compressor flags from the future") fails a whole decode in c-blosc but is
    // not checked by blosc_getitem: refuse it here too, so both paths agree.
    if valid != 0 || declared != nbytes || src.get(2).is_none_or(|f| f & 0x08 != 0) {
        return Err(err!(Decode, "blosc: the chunk's framing is inconsistent (c-blosc rejects it)"));
    }
    if frame.memcpyed {
        // parse: cbytes == 16 + nbytes == src.len(), so the raw bytes are in range.
        out.copy_from_slice(&src[16 + at..16 + end]);
        return Ok(());
    }
    let typesize = frame.typesize.max(1) as usize;
    if !at.is_multiple_of(typesize) || !end.is_multiple_of(typesize) {
        return Err(err!(Decode, "blosc: bytes {at}..{end} are not whole items of {typesize} bytes"));
    }
    let blocksize = frame.blocksize.max(1) as usize;
    for b in at / blocksize..end.div_ceil(blocksize).min(frame.blocks.len()) {
        let (start, stop) = frame.blocks[b];
        frame.streams(b, &src[start as usize..stop as usize])?;
    }
    let (Ok(start), Ok(n_items), Ok(_)) = (i32::try_from(at / typesize), i32::try_from(out.len() / typesize), i32::try_from(nbytes)) else {
        return Err(err!(Decode, "blosc: {nbytes} bytes exceed c-blosc's 2^31"));
    };
    // SAFETY: `src` passed c-blosc's own validation and our parser (cbytes == src.len(),
    // every block inside the chunk after its head); `out` has room for `n_items × typesize`
    // bytes (its length, checked whole items above), which is what blosc_getitem writes
    // for items start..start + n_items, all inside the chunk (checked above).
    let n = unsafe { blosc_src::blosc_getitem(src.as_ptr().cast(), start, n_items, out.as_mut_ptr().cast()) };
    if n < 0 || n as usize != out.len() {
        return Err(err!(Decode, "blosc: decompression failed (code {n})"));
    }
    Ok(())
}

/// Decompresses `src` into `dst`, never writing past it; returns the bytes produced. A
/// stream that would produce more than `dst` holds fails.
fn decompress(step: Step, src: &[u8], dst: &mut [u8]) -> Result<usize> {
    match step {
        Step::Zstd => ZSTD.with_borrow_mut(|slot| {
            let dctx = match slot {
                Some(d) => d,
                None => slot.insert(zstd::bulk::Decompressor::new().map_err(|e| err!(OutOfMemory, "zstd context: {e}"))?),
            };
            dctx.decompress_to_buffer(src, dst).map_err(|e| err!(Decode, "zstd: {e} (at most {} bytes expected)", dst.len()))
        }),
        Step::Gzip => gunzip(src, dst),
        Step::Blosc => blosc_decompress(src, dst),
        Step::Crc32c => Err(err!(Decode, "internal: crc32c is not a decompression")),
    }
}

/// Gzip decompression of every member of `src` into `dst` (RFC 1952: a gzip stream is one
/// or more members, each checked by its CRC-32 and length trailer). Like Python's `gzip`
/// (what zarr-python reads with), NUL padding after a member is skipped; any other bytes
/// after a member must be another valid member, so trailing garbage fails.
fn gunzip(src: &[u8], dst: &mut [u8]) -> Result<usize> {
    let gz = |e: std::io::Error| err!(Decode, "gzip: {e}");
    let mut rest = src;
    let mut n = 0;
    loop {
        let mut member = flate2::bufread::GzDecoder::new(rest);
        loop {
            if n == dst.len() {
                let mut extra = [0u8; 1];
                if member.read(&mut extra).map_err(gz)? > 0 {
                    return Err(err!(Decode, "gzip: stream decodes to more than the {} bytes expected", dst.len()));
                }
                break;
            }
            match member.read(&mut dst[n..]).map_err(gz)? {
                0 => break,
                k => n += k,
            }
        }
        // A member ends after its trailer is checked; its reader is then past the trailer.
        rest = member.into_inner();
        rest = &rest[rest.iter().take_while(|&&b| b == 0).count()..];
        if rest.is_empty() {
            return Ok(n);
        }
    }
}

/// c-blosc 1 decompression of one chunk, after checking its framing (header, block table,
/// every stream's size prefix) with the same parser the GPU path uses.
fn blosc_decompress(src: &[u8], dst: &mut [u8]) -> Result<usize> {
    let frame = BloscFrame::parse(src, src.len() as u64)?;
    let nbytes = frame.nbytes as usize;
    if nbytes > dst.len() {
        return Err(err!(Decode, "blosc header: {nbytes} decoded bytes, more than the {} expected", dst.len()));
    }
    for (b, &(start, end)) in frame.blocks.iter().enumerate() {
        frame.streams(b, &src[start as usize..end as usize])?;
    }
    if nbytes == 0 {
        return Ok(0);
    }
    let mut declared = 0usize;
    // SAFETY: `src` is a valid slice of `src.len()` bytes; `declared` is a valid out-pointer.
    let valid = unsafe { blosc_src::blosc_cbuffer_validate(src.as_ptr().cast(), src.len(), &raw mut declared) };
    if valid != 0 || declared != nbytes {
        return Err(err!(Decode, "blosc: the chunk's framing is inconsistent (c-blosc rejects it)"));
    }
    // SAFETY: `dst` has room for `nbytes` bytes (checked above), `src` holds a chunk whose
    // header says `cbytes == src.len()` (checked by the parser and by c-blosc's validation).
    let n = unsafe { blosc_src::blosc_decompress_ctx(src.as_ptr().cast(), dst.as_mut_ptr().cast(), nbytes, 1) };
    if n < 0 || n as usize != nbytes {
        return Err(err!(Decode, "blosc: decompression failed (code {n})"));
    }
    Ok(nbytes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use zarrs::array::ArrayBytes;

    use super::*;
    use crate::Status;
    use serde_json::Value;
    use zarrs::array::codec::CodecChain;

    /// (zarrs data type, element size) for a Zarr v3 name.
    fn data_type_from_name(name: &str) -> Result<(DataType, usize)> {
        let dt = zarrs_data_type(name)?;
        let size = crate::zarr::SourceDtype::from_name(name).map_or(0, crate::zarr::SourceDtype::size);
        Ok((dt, size))
    }

    /// The chunk codec of an unsharded array of one chunk of `shape` (built like the
    /// pipeline builds it: zarr.json → ArrayMeta → ChunkCodec).
    fn codec_for(dtype: &str, fill: &Value, codecs: &Value, shape: &[u64]) -> Result<ChunkCodec> {
        let json = json!({"zarr_format": 3, "node_type": "array", "shape": shape, "data_type": dtype,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": shape}},
            "chunk_key_encoding": {"name": "default"}, "fill_value": fill, "codecs": codecs});
        ChunkCodec::new(&ArrayMeta::parse(json.to_string().as_bytes())?)
    }

    /// Deterministic bytes (xorshift64*).
    fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    /// Elements of `dtype` for a chunk of `shape` (bool: 0 or 1; floats: any bit pattern).
    fn random_chunk(dtype: &str, shape: &[u64], seed: u64) -> Vec<u8> {
        let (_, size) = data_type_from_name(dtype).unwrap();
        let n = shape.iter().product::<u64>() as usize * size;
        let mut bytes = random_bytes(n, seed);
        if dtype == "bool" {
            for b in &mut bytes {
                *b &= 1;
            }
        }
        bytes
    }

    /// Encodes `decoded` with zarrs' own codec chain built from the same metadata.
    fn zarrs_encode(
        dtype: &str,
        fill: &Value,
        codecs: &Value,
        shape: &[u64],
        decoded: &[u8],
    ) -> Vec<u8> {
        let (data_type, _) = data_type_from_name(dtype).unwrap();
        let fill_value =
            data_type.fill_value_v3(&serde_json::from_value(fill.clone()).unwrap()).unwrap();
        let metadatas: Vec<MetadataV3> = serde_json::from_value(codecs.clone()).unwrap();
        let chain = CodecChain::from_metadata(&metadatas).unwrap();
        let shape: Vec<NonZeroU64> = shape.iter().map(|&n| NonZeroU64::new(n).unwrap()).collect();
        chain
            .encode(
                ArrayBytes::new_flen(decoded.to_vec()),
                &shape,
                &data_type,
                &fill_value,
                &CodecOptions::default(),
            )
            .unwrap()
            .into_owned()
    }

    fn roundtrip(dtype: &str, codecs: &Value, shape: &[u64], seed: u64) {
        let fill = if dtype == "bool" { json!(false) } else { json!(0) };
        let decoded = random_chunk(dtype, shape, seed);
        let encoded = zarrs_encode(dtype, &fill, codecs, shape, &decoded);
        let codec = codec_for(dtype, &fill, codecs, shape).unwrap();
        assert_eq!(codec.decoded_len(), decoded.len());
        let mut out = vec![0xAAu8; codec.decoded_len()];
        codec.decode_into(&encoded, &mut out).unwrap();
        assert!(out == decoded, "{dtype} {codecs}: decoded bytes differ");
    }

    fn bytes(endian: &str) -> Value {
        json!({"name": "bytes", "configuration": {"endian": endian}})
    }

    fn blosc(cname: &str, shuffle: &str, typesize: usize) -> Value {
        json!({"name": "blosc", "configuration":
            {"cname": cname, "clevel": 5, "shuffle": shuffle, "typesize": typesize, "blocksize": 0}})
    }

    fn zstd() -> Value {
        json!({"name": "zstd", "configuration": {"level": 3, "checksum": false}})
    }

    fn gzip() -> Value {
        json!({"name": "gzip", "configuration": {"level": 5}})
    }

    fn crc32c() -> Value {
        json!({"name": "crc32c"})
    }

    fn transpose(order: &[usize]) -> Value {
        json!({"name": "transpose", "configuration": {"order": order}})
    }

    /// Compressible content: smooth ramps plus a little noise, so zstd makes many blocks of
    /// real sequences (random bytes would be stored raw).
    fn smooth_chunk(n: usize, seed: u64) -> Vec<u8> {
        let noise = random_bytes(n, seed);
        (0..n).map(|i| ((i / 97) as u8).wrapping_add(noise[i] & 3)).collect()
    }

    #[test]
    fn a_prefix_equals_the_whole_chunks_start() {
        let shape = [64u64, 64, 32]; // u16: 256 KiB, two zstd blocks and more
        let blosc_small = json!({"name": "blosc", "configuration": {"cname": "zstd", "clevel": 3, "shuffle": "shuffle", "typesize": 2, "blocksize": 8192}});
        let blosc_lz4_bit = json!({"name": "blosc", "configuration": {"cname": "lz4", "clevel": 5, "shuffle": "bitshuffle", "typesize": 2, "blocksize": 4096}});
        let chains = [
            json!([bytes("little"), zstd()]),
            json!([bytes("little"), json!({"name": "zstd", "configuration": {"level": 3, "checksum": true}})]),
            json!([bytes("little"), zstd(), crc32c()]),
            json!([bytes("little"), blosc_small]),
            json!([bytes("little"), blosc_lz4_bit]),
            json!([bytes("little"), blosc("zstd", "noshuffle", 2)]),
        ];
        for (ci, codecs) in chains.iter().enumerate() {
            let decoded = smooth_chunk(shape.iter().product::<u64>() as usize * 2, ci as u64 + 1);
            let encoded = zarrs_encode("uint16", &json!(0), codecs, &shape, &decoded);
            let codec = codec_for("uint16", &json!(0), codecs, &shape).unwrap();
            assert!(codec.decodes_prefix(), "{codecs}");
            let mut lens: Vec<usize> = vec![2, 128 << 10, (128 << 10) + 2, decoded.len() - 2, decoded.len()];
            lens.extend(random_bytes(8, ci as u64).iter().map(|&r| (usize::from(r) * decoded.len() / 256) & !1));
            for n in lens.into_iter().filter(|&n| n > 0) {
                let mut out = vec![0xAAu8; n];
                codec.decode_prefix_into(&encoded, &mut out).unwrap();
                assert!(out[..] == decoded[..n], "{codecs}: prefix of {n} bytes differs");
            }
        }
        // How much is decoded: zstd prefixes up to 7/8 of the chunk (bulk beyond: the
        // streaming decoder's last block would cost about what the rest does), blosc
        // prefixes of any length.
        let z = codec_for("uint16", &json!(0), &chains[0], &shape).unwrap();
        let b = codec_for("uint16", &json!(0), &chains[3], &shape).unwrap();
        let full = z.decoded_len();
        assert_eq!((z.prefix_len(100), z.prefix_len(full / 8 * 7), z.prefix_len(full / 8 * 7 + 2)), (100, full / 8 * 7, full));
        assert_eq!((b.prefix_len(100), b.prefix_len(full - 2), b.prefix_len(full + 5)), (100, full - 2, full));
        // Not a prefix codec: transposed, or two compressors. decode_prefix_into then needs the whole chunk.
        let t = json!([transpose(&[2, 1, 0]), bytes("little"), zstd()]);
        assert!(!codec_for("uint16", &json!(0), &t, &shape).unwrap().decodes_prefix());
        let big = json!([bytes("big"), zstd()]);
        assert!(!codec_for("uint16", &json!(0), &big, &shape).unwrap().decodes_prefix());
    }

    /// Timing of whole-chunk vs prefix decodes (dev/perf.md, issue 18):
    /// `cargo test --release --lib prefix_timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn prefix_timing() {
        let shape = [32u64, 128, 128]; // u16, 1 MiB: the thin class's chunks
        let n = shape.iter().product::<u64>() as usize * 2;
        let decoded = smooth_chunk(n, 5);
        for codecs in [json!([bytes("little"), zstd()]), json!([bytes("little"), blosc("zstd", "shuffle", 2)])] {
            let encoded = zarrs_encode("uint16", &json!(0), &codecs, &shape, &decoded);
            let codec = codec_for("uint16", &json!(0), &codecs, &shape).unwrap();
            let mut out = vec![0u8; n];
            let reps = 40;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                codec.decode_into(&encoded, &mut out).unwrap();
            }
            let whole = t.elapsed().as_secs_f64() / f64::from(reps);
            for frac in [1u32, 4, 8, 12, 16, 20, 24, 28, 31] {
                let len = n * frac as usize / 32;
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    codec.decode_prefix_into(&encoded, &mut out[..len]).unwrap();
                }
                let part = t.elapsed().as_secs_f64() / f64::from(reps);
                println!("{codecs}: whole {:.0} us, prefix {frac}/32: {:.0} us ({:.2} of whole)", whole * 1e6, part * 1e6, part / whole);
            }
        }
    }

    /// Timing of whole-chunk vs span decodes of the bench classes' blosc chunks (dev/perf.md,
    /// issue 18): `cargo test --release --lib span_timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn span_timing() {
        let cases = [
            ("uint16", vec![64u64, 64, 64], json!([bytes("little"), blosc_blocks("zstd", "shuffle", 2, 3, 0)])), // blosc64
            ("float32", vec![32, 96, 96], json!([bytes("little"), blosc_blocks("lz4", "bitshuffle", 4, 5, 0)])), // paired
        ];
        for (dtype, shape, codecs) in cases {
            let es = data_type_from_name(dtype).unwrap().1;
            let n = shape.iter().product::<u64>() as usize * es;
            let decoded = smooth_chunk(n, 5);
            let encoded = zarrs_encode(dtype, &json!(0), &codecs, &shape, &decoded);
            let codec = codec_for(dtype, &json!(0), &codecs, &shape).unwrap();
            let frame = BloscFrame::parse(&encoded, encoded.len() as u64).unwrap();
            let (bs, nb) = (frame.blocksize as usize, frame.blocks.len());
            let reps = 40;
            let (mut out, mut buf) = (vec![0u8; n], Vec::new());
            // Best of 5 rounds, whole and spans alternated (a shared machine).
            let mut best = vec![f64::MAX; nb];
            for _ in 0..5 {
                for (k, b) in best.iter_mut().enumerate() {
                    let t = std::time::Instant::now();
                    for _ in 0..reps {
                        if k == 0 {
                            codec.decode_into(&encoded, &mut out).unwrap();
                        } else {
                            codec.decode_span_into(&encoded, 0, k * bs, &mut buf).unwrap();
                        }
                    }
                    *b = b.min(t.elapsed().as_secs_f64() / f64::from(reps));
                }
            }
            let whole = best[0];
            println!("{dtype} {shape:?} {codecs}: {nb} blocks of {bs} bytes, whole {:.0} us", whole * 1e6);
            for (k, part) in best.iter().enumerate().skip(1) {
                let share = (k * bs) as f64 / n as f64;
                println!("  span of {k}/{nb} blocks ({:.0}% of the bytes): {:.0} us ({:.2} of whole, {:.2}x whole's cost per byte)", share * 100.0, part * 1e6, part / whole, part / whole / share);
            }
        }
    }

    #[test]
    fn a_damaged_or_short_stream_fails_its_prefix() {
        let shape = [64u64, 64, 32];
        let decoded = smooth_chunk(shape.iter().product::<u64>() as usize * 2, 9);
        let codecs = json!([bytes("little"), zstd()]);
        let codec = codec_for("uint16", &json!(0), &codecs, &shape).unwrap();
        let encoded = zarrs_encode("uint16", &json!(0), &codecs, &shape, &decoded);
        // A stream of half the chunk: a prefix beyond what it holds is a Decode error.
        let half = zarrs_encode("uint16", &json!(0), &codecs, &[32, 64, 32], &decoded[..decoded.len() / 2]);
        let mut out = vec![0u8; decoded.len() / 2 + 2];
        assert_eq!(codec.decode_prefix_into(&half, &mut out).unwrap_err().status(), Status::Decode);
        let mut ok = vec![0u8; 1000];
        codec.decode_prefix_into(&half, &mut ok).unwrap();
        assert!(ok[..] == decoded[..1000]);
        // Garbage and truncation fail, never panic.
        for cut in [0, 4, 12, encoded.len() / 3] {
            let mut out = vec![0u8; decoded.len() - 2];
            assert!(codec.decode_prefix_into(&encoded[..cut], &mut out).is_err(), "cut at {cut}");
        }
        let mut bad = encoded.clone();
        for b in &mut bad[..8] {
            *b ^= 0x5a;
        }
        assert_eq!(codec.decode_prefix_into(&bad, &mut vec![0u8; 4096]).unwrap_err().status(), Status::Decode);
        assert_eq!(codec.decode_prefix_into(&encoded, &mut vec![0u8; decoded.len() + 2]).unwrap_err().status(), Status::InvalidArgument);
        let blosc = json!([bytes("little"), blosc("zstd", "shuffle", 2)]);
        let bcodec = codec_for("uint16", &json!(0), &blosc, &shape).unwrap();
        let bencoded = zarrs_encode("uint16", &json!(0), &blosc, &shape, &decoded);
        for cut in [0, 8, 16, bencoded.len() / 2] {
            assert!(bcodec.decode_prefix_into(&bencoded[..cut], &mut vec![0u8; 4096]).is_err(), "blosc cut at {cut}");
        }
    }

    fn blosc_blocks(cname: &str, shuffle: &str, typesize: usize, clevel: u32, blocksize: usize) -> Value {
        json!({"name": "blosc", "configuration":
            {"cname": cname, "clevel": clevel, "shuffle": shuffle, "typesize": typesize, "blocksize": blocksize}})
    }

    /// Random element-aligned ranges `lo..hi` of a chunk of `n` bytes, plus the edges.
    fn ranges(n: usize, es: usize, seed: u64) -> Vec<(usize, usize)> {
        let r = random_bytes(64, seed);
        let at = |b: u8| usize::from(b) * (n / es) / 256 * es;
        let mut out = vec![(0, es), (n - es, n), (0, n), (es, n - es), (n / 2, n / 2 + es)];
        for p in r.chunks_exact(2) {
            let (a, b) = (at(p[0]).min(at(p[1])), at(p[0]).max(at(p[1])) + es);
            out.push((a, b.min(n)));
        }
        out
    }

    #[test]
    fn a_span_equals_the_same_bytes_of_the_whole_chunk() {
        // (dtype, chunk shape, blosc codec): compressors, shuffles, typesizes equal to,
        // smaller and larger than the element, a short last block, a raw chunk (clevel 0),
        // blocks stored raw (incompressible), a crc32c after blosc, a bool chunk. c-blosc
        // makes blocks of at least 64 KiB for the codecs that split blocks into streams
        // (all but zstd, typesize <= 16), so those chunks are larger.
        let cases = [
            ("uint16", vec![16u64, 32, 32], json!([bytes("little"), blosc_blocks("zstd", "shuffle", 2, 3, 4096)])),
            ("uint16", vec![15, 64, 128], json!([bytes("little"), blosc_blocks("lz4", "bitshuffle", 2, 5, 4096)])),
            ("float32", vec![16, 64, 64], json!([bytes("little"), blosc_blocks("lz4", "bitshuffle", 4, 5, 8192)])),
            ("float32", vec![16, 48, 80], json!([bytes("little"), blosc_blocks("blosclz", "shuffle", 4, 5, 2000)])),
            ("int64", vec![16, 32, 64], json!([bytes("little"), blosc_blocks("zlib", "noshuffle", 8, 5, 4096)])),
            ("uint8", vec![32, 64], json!([bytes("little"), blosc_blocks("zstd", "shuffle", 1, 3, 256)])),
            ("uint16", vec![16, 32, 32], json!([bytes("little"), blosc_blocks("zstd", "shuffle", 4, 3, 4096)])),
            ("uint16", vec![3, 5, 7], json!([bytes("little"), blosc_blocks("lz4", "shuffle", 4, 5, 128)])),
            ("uint32", vec![16, 64, 64], json!([bytes("little"), blosc_blocks("lz4", "shuffle", 1, 5, 4096)])),
            ("uint16", vec![16, 32, 32], json!([bytes("little"), blosc_blocks("lz4", "noshuffle", 2, 0, 4096)])),
            ("uint16", vec![16, 32, 32], json!([bytes("little"), blosc_blocks("zstd", "shuffle", 2, 3, 4096), crc32c()])),
            ("bool", vec![256, 1024], json!([bytes("little"), blosc_blocks("lz4", "noshuffle", 1, 5, 512)])),
            ("uint16", vec![16, 32, 32], json!([bytes("little"), blosc_blocks("zstd", "noshuffle", 2, 3, 4096)])),
        ];
        for (ci, (dtype, shape, codecs)) in cases.iter().enumerate() {
            let fill = if *dtype == "bool" { json!(false) } else { json!(0) };
            let es = data_type_from_name(dtype).unwrap().1;
            let n = shape.iter().product::<u64>() as usize * es;
            let mut decoded = if *dtype == "bool" { random_chunk(dtype, shape, ci as u64) } else { smooth_chunk(n, ci as u64 + 3) };
            if ci == 12 {
                decoded[n / 2..].copy_from_slice(&random_bytes(n - n / 2, 5));
            }
            let encoded = zarrs_encode(dtype, &fill, codecs, shape, &decoded);
            let codec = codec_for(dtype, &fill, codecs, shape).unwrap();
            assert!(codec.decodes_span() && codec.decodes_prefix(), "{codecs}");
            let mut fewer = 0;
            for (lo, hi) in ranges(n, es, ci as u64 + 100) {
                let mut out = vec![0xAA; 3];
                let offset = codec.decode_span_into(&encoded, lo, hi, &mut out).unwrap();
                assert!(offset <= lo && offset + out.len() >= hi, "{codecs}: {lo}..{hi} not inside {offset}..+{}", out.len());
                assert!(out[..] == decoded[offset..offset + out.len()], "{codecs}: span {lo}..{hi} (decoded {offset}..+{}) differs", out.len());
                fewer += usize::from(out.len() < n);
            }
            // Fewer bytes than the chunk for some range, except where blosc items do not
            // line up with the chunk's end (typesize 4 over 210 bytes: decoded whole).
            assert!(fewer > 0 || ci == 7, "{codecs}: every span decoded the whole chunk");
        }
        // Not a span codec: the whole chunk, offset 0.
        let shape = [16u64, 32, 32];
        let decoded = smooth_chunk(16 * 32 * 32 * 2, 77);
        for codecs in [json!([bytes("little"), zstd()]), json!([bytes("big"), blosc("lz4", "shuffle", 2)]), json!([bytes("little"), crc32c(), blosc("lz4", "shuffle", 2)])] {
            let encoded = zarrs_encode("uint16", &json!(0), &codecs, &shape, &decoded);
            let codec = codec_for("uint16", &json!(0), &codecs, &shape).unwrap();
            assert!(!codec.decodes_span(), "{codecs}");
            let mut out = Vec::new();
            assert_eq!(codec.decode_span_into(&encoded, 100, 200, &mut out).unwrap(), 0);
            let mut whole = vec![0u8; decoded.len()];
            codec.decode_into(&encoded, &mut whole).unwrap();
            assert!(out == whole, "{codecs}");
        }
        // A checksum inside the compressor is neither a span nor a prefix chain (its
        // decoded stream is 4 bytes longer than the chunk): decoded whole, and right.
        let inner_crc = json!([bytes("little"), crc32c(), blosc_blocks("lz4", "shuffle", 2, 5, 1024)]);
        let codec = codec_for("uint16", &json!(0), &inner_crc, &shape).unwrap();
        assert!(!codec.decodes_prefix());
        let encoded = zarrs_encode("uint16", &json!(0), &inner_crc, &shape, &decoded);
        let mut prefix = vec![0u8; 1000];
        codec.decode_prefix_into(&encoded, &mut prefix).unwrap_err(); // not a prefix codec: needs the whole buffer
        let mut whole = vec![0u8; decoded.len()];
        codec.decode_into(&encoded, &mut whole).unwrap();
        assert!(whole == decoded);
    }

    #[test]
    fn a_damaged_blosc_span_is_a_decode_error() {
        let shape = [16u64, 32, 32];
        let n = 16 * 32 * 32 * 2;
        let decoded = smooth_chunk(n, 21);
        let codecs = json!([bytes("little"), blosc_blocks("zstd", "shuffle", 2, 3, 4096)]);
        let encoded = zarrs_encode("uint16", &json!(0), &codecs, &shape, &decoded);
        let codec = codec_for("uint16", &json!(0), &codecs, &shape).unwrap();
        let frame = BloscFrame::parse(&encoded, encoded.len() as u64).unwrap();
        assert_eq!(frame.blocks.len(), 8);
        let mut out = Vec::new();
        let span = |enc: &[u8], lo: usize, hi: usize| codec.decode_span_into(enc, lo, hi, &mut Vec::new());
        // Truncated, empty, garbage, each at several ranges: Decode, never a panic.
        for (lo, hi) in [(0, 2), (5000, 9000), (n - 2, n)] {
            for bad in [&encoded[..encoded.len() / 2], &encoded[..12], &[][..], &random_bytes(encoded.len(), 3)[..]] {
                assert_eq!(span(bad, lo, hi).unwrap_err().status(), Status::Decode, "{lo}..{hi}, {} bytes", bad.len());
            }
        }
        // A lying header: more or fewer decoded bytes than the metadata, a block size
        // that makes the table run past the chunk.
        for (at, v) in [(4usize, n as u32 * 2), (4, n as u32 - 2), (8, 16)] {
            let mut bad = encoded.clone();
            bad[at..at + 4].copy_from_slice(&v.to_le_bytes());
            assert_eq!(span(&bad, 5000, 9000).unwrap_err().status(), Status::Decode, "header field {at} = {v}");
        }
        // Block 2's start pointing outside the chunk, or into the block table.
        for start in [u32::MAX, encoded.len() as u32 + 1, 8] {
            let mut bad = encoded.clone();
            bad[16 + 8..16 + 12].copy_from_slice(&start.to_le_bytes());
            assert_eq!(span(&bad, 8192, 9000).unwrap_err().status(), Status::Decode, "block start {start}");
        }
        // A stream size running past its block; a corrupt stream inside the span.
        let (s2, e2) = frame.blocks[2];
        let mut bad = encoded.clone();
        bad[s2 as usize..s2 as usize + 4].copy_from_slice(&(e2 - s2).to_le_bytes());
        assert_eq!(span(&bad, 8192, 9000).unwrap_err().status(), Status::Decode);
        let mut bad = encoded.clone();
        for b in &mut bad[s2 as usize + 8..e2 as usize] {
            *b ^= 0x5a;
        }
        assert_eq!(span(&bad, 8192, 9000).unwrap_err().status(), Status::Decode);
        // ... which a span of other blocks does not read (documented: damage elsewhere goes
        // unnoticed, it never reaches an output).
        let offset = codec.decode_span_into(&bad, 0, 4096, &mut out).unwrap();
        assert!(offset == 0 && out[..] == decoded[..4096]);
        // A crc32c chain checks the whole chunk, inside the span or not.
        let crc = json!([bytes("little"), blosc_blocks("zstd", "shuffle", 2, 3, 4096), crc32c()]);
        let ccodec = codec_for("uint16", &json!(0), &crc, &shape).unwrap();
        let mut cenc = zarrs_encode("uint16", &json!(0), &crc, &shape, &decoded);
        let last = cenc.len() - 10;
        cenc[last] ^= 1;
        assert_eq!(ccodec.decode_span_into(&cenc, 0, 2, &mut out).unwrap_err().status(), Status::Decode);
        // Ranges that are no span of the chunk.
        for (lo, hi) in [(10, 10), (20, 10), (0, n + 2), (usize::MAX - 1, usize::MAX)] {
            assert_eq!(codec.decode_span_into(&encoded, lo, hi, &mut out).unwrap_err().status(), Status::InvalidArgument, "{lo}..{hi}");
        }
    }

    #[test]
    fn chunk_codec_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ChunkCodec>();
    }

    #[test]
    fn roundtrip_plain_bytes_every_dtype() {
        let all = [
            "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
            "float16", "bfloat16", "float32", "float64",
        ];
        for (i, dtype) in all.into_iter().enumerate() {
            roundtrip(dtype, &json!([bytes("little")]), &[3, 5, 7], i as u64 + 1);
            roundtrip(dtype, &json!([bytes("big")]), &[3, 5, 7], i as u64 + 100);
        }
    }

    #[test]
    fn roundtrip_single_byte_types_without_endian() {
        roundtrip("uint8", &json!([{"name": "bytes"}, zstd()]), &[16, 16], 7);
        roundtrip("bool", &json!(["bytes"]), &[9], 8);
    }

    #[test]
    fn roundtrip_zstd_gzip_crc32c() {
        roundtrip("uint16", &json!([bytes("little"), zstd()]), &[8, 16, 16], 11);
        roundtrip("int32", &json!([bytes("big"), gzip()]), &[4, 6, 10], 12);
        roundtrip("int8", &json!([bytes("little"), gzip(), crc32c()]), &[33], 13);
        roundtrip("float64", &json!([bytes("little"), zstd(), crc32c()]), &[5, 7], 14);
        roundtrip("bool", &json!([bytes("little"), crc32c()]), &[2, 3, 4], 15);
    }

    #[test]
    fn roundtrip_blosc_compressors_and_shuffles() {
        let cases = [
            ("uint16", "zstd", "shuffle"),
            ("uint16", "lz4", "bitshuffle"),
            ("float32", "zstd", "bitshuffle"),
            ("float32", "lz4", "shuffle"),
            ("int64", "lz4hc", "noshuffle"),
            ("uint32", "blosclz", "shuffle"),
            ("bfloat16", "zlib", "bitshuffle"),
            ("uint8", "zstd", "shuffle"),
        ];
        for (i, (dtype, cname, shuffle)) in cases.into_iter().enumerate() {
            let (_, size) = data_type_from_name(dtype).unwrap();
            let codecs = json!([bytes("little"), blosc(cname, shuffle, size)]);
            roundtrip(dtype, &codecs, &[8, 16, 16], 20 + i as u64);
        }
    }

    #[test]
    fn roundtrip_transpose_with_compression() {
        roundtrip(
            "float32",
            &json!([transpose(&[2, 0, 1]), bytes("little"), blosc("zstd", "shuffle", 4)]),
            &[4, 5, 6],
            31,
        );
        roundtrip(
            "uint16",
            &json!([transpose(&[1, 0]), bytes("big"), zstd(), crc32c()]),
            &[7, 9],
            32,
        );
        roundtrip(
            "int16",
            &json!([transpose(&[0, 1, 2]), bytes("little"), gzip()]),
            &[2, 3, 4],
            33,
        );
    }

    #[test]
    fn big_endian_bytes_decode_to_native_values() {
        // Encoded by hand, independent of zarrs: 6 uint16 values stored big endian.
        let values: [u16; 6] = [0, 1, 258, 0x1234, 0xfffe, 40000];
        let encoded: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
        let codec = codec_for("uint16", &json!(0), &json!([bytes("big")]), &[2, 3]).unwrap();
        let mut out = vec![0u8; codec.decoded_len()];
        codec.decode_into(&encoded, &mut out).unwrap();
        let got: Vec<u16> = out.chunks_exact(2).map(|b| u16::from_ne_bytes([b[0], b[1]])).collect();
        assert_eq!(got, values);
    }

    #[test]
    fn transpose_decodes_to_c_order() {
        // Chunk [2,3], transpose order [1,0]: stored as the [3,2] transposed array.
        let logical: [u8; 6] = [1, 2, 3, 4, 5, 6]; // [[1,2,3],[4,5,6]]
        let stored: [u8; 6] = [1, 4, 2, 5, 3, 6]; // [[1,4],[2,5],[3,6]]
        let codec =
            codec_for("uint8", &json!(0), &json!([transpose(&[1, 0]), "bytes"]), &[2, 3])
                .unwrap();
        let mut out = [0u8; 6];
        codec.decode_into(&stored, &mut out).unwrap();
        assert_eq!(out, logical);
    }

    #[test]
    fn bool_bytes_are_normalised_to_zero_or_one() {
        let codec = codec_for("bool", &json!(false), &json!(["bytes"]), &[4]).unwrap();
        let mut out = [9u8; 4];
        codec.decode_into(&[0, 1, 2, 255], &mut out).unwrap();
        assert_eq!(out, [0, 1, 1, 1]);
    }

    #[test]
    fn corrupted_zstd_and_blosc_give_decode_errors() {
        let shape = [8, 16, 16];
        let decoded = random_chunk("uint16", &shape, 41);
        for codecs in [
            json!([bytes("little"), zstd()]),
            json!([bytes("little"), blosc("lz4", "shuffle", 2)]),
            json!([bytes("little"), blosc("zstd", "bitshuffle", 2)]),
            json!([bytes("little"), gzip()]),
        ] {
            let encoded = zarrs_encode("uint16", &json!(0), &codecs, &shape, &decoded);
            let codec = codec_for("uint16", &json!(0), &codecs, &shape).unwrap();
            let mut out = vec![0u8; codec.decoded_len()];
            // Truncated.
            let e = codec.decode_into(&encoded[..encoded.len() / 2], &mut out).unwrap_err();
            assert_eq!(e.status(), Status::Decode, "{codecs}: {e}");
            // Garbage of the right length.
            let garbage = random_bytes(encoded.len(), 42);
            let e = codec.decode_into(&garbage, &mut out).unwrap_err();
            assert_eq!(e.status(), Status::Decode, "{codecs}: {e}");
            // Empty.
            let e = codec.decode_into(&[], &mut out).unwrap_err();
            assert_eq!(e.status(), Status::Decode, "{codecs}: {e}");
        }
    }

    #[test]
    fn wrong_size_uncompressed_chunk_is_a_decode_error() {
        let codec =
            codec_for("uint16", &json!(0), &json!([bytes("little")]), &[4, 4]).unwrap();
        let mut out = vec![0u8; codec.decoded_len()];
        let e = codec.decode_into(&[0u8; 31], &mut out).unwrap_err();
        assert_eq!(e.status(), Status::Decode, "{e}");
    }

    #[test]
    fn crc32c_mismatch_is_a_decode_error() {
        let shape = [4, 8];
        let codecs = json!([bytes("little"), crc32c()]);
        let decoded = random_chunk("float32", &shape, 51);
        let mut encoded = zarrs_encode("float32", &json!(0), &codecs, &shape, &decoded);
        encoded[5] ^= 0x10;
        let codec = codec_for("float32", &json!(0), &codecs, &shape).unwrap();
        let mut out = vec![0u8; codec.decoded_len()];
        let e = codec.decode_into(&encoded, &mut out).unwrap_err();
        assert_eq!(e.status(), Status::Decode);
        assert!(e.message().contains("checksum") || e.message().contains("crc"), "{e}");
    }

    #[test]
    fn wrong_output_length_is_invalid_argument() {
        let codec = codec_for("uint16", &json!(0), &json!([bytes("little")]), &[4]).unwrap();
        let mut out = [0u8; 7];
        let e = codec.decode_into(&[0u8; 8], &mut out).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
    }

    #[test]
    fn fill_values_parse_like_zarr_json() {
        let fill = |dtype: &str, v: Value| {
            let json = json!({"zarr_format": 3, "node_type": "array", "shape": [1], "data_type": dtype,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1]}}, "fill_value": v, "codecs": [bytes("little")]});
            ArrayMeta::parse(json.to_string().as_bytes()).map(|m| m.fill)
        };
        assert_eq!(fill("uint16", json!(7)).unwrap(), 7u16.to_ne_bytes());
        assert_eq!(fill("int64", json!(-3)).unwrap(), (-3i64).to_ne_bytes());
        assert_eq!(fill("uint64", json!(u64::MAX)).unwrap(), u64::MAX.to_ne_bytes());
        assert_eq!(fill("bool", json!(true)).unwrap(), [1]);
        assert_eq!(fill("float32", json!(1.5)).unwrap(), 1.5f32.to_ne_bytes());
        assert_eq!(fill("float64", json!("Infinity")).unwrap(), f64::INFINITY.to_ne_bytes());
        assert_eq!(fill("float32", json!("-Infinity")).unwrap(), f32::NEG_INFINITY.to_ne_bytes());
        let nan = f32::from_ne_bytes(fill("float32", json!("NaN")).unwrap().try_into().unwrap());
        assert!(nan.is_nan());
        assert_eq!(fill("float32", json!("0x7fc00001")).unwrap(), 0x7fc0_0001u32.to_ne_bytes());
        assert_eq!(fill("float16", json!("0x3c00")).unwrap(), half::f16::ONE.to_ne_bytes());
        assert_eq!(fill("bfloat16", json!(2.0)).unwrap(), half::bf16::from_f32(2.0).to_ne_bytes());
        for (dtype, bad) in [
            ("uint8", json!(256)),
            ("uint16", json!(-1)),
            ("int32", json!("NaN")),
            ("int32", json!(1.5)),
            ("bool", json!(0)),
            ("float32", json!("nope")),
            ("float32", json!("0x3c00")),
            ("uint16", json!(null)),
        ] {
            let e = fill(dtype, bad.clone()).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument, "{dtype} {bad}: {e}");
        }
    }

    #[test]
    fn unsupported_data_type_is_dtype_mismatch() {
        for name in ["complex64", "string", "int4", "float8_e4m3", "r16"] {
            let e = codec_for(name, &json!(0), &json!(["bytes"]), &[4]).unwrap_err();
            assert_eq!(e.status(), Status::DtypeMismatch);
            assert!(e.message().contains(&format!("`{name}`")), "{e}");
        }
    }

    #[test]
    fn unsupported_codec_is_invalid_argument_naming_it() {
        for codecs in [
            json!([bytes("little"), {"name": "foo"}]),
            json!([{"name": "vlen-utf8"}]),
        ] {
            let e = codec_for("uint16", &json!(0), &codecs, &[4]).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument);
            assert!(e.message().starts_with("unsupported codec `"), "{e}");
        }
        let e = codec_for("uint16", &json!(0), &json!([bytes("little"), {"name": "foo"}]), &[4]).unwrap_err();
        assert_eq!(e.message(), "unsupported codec `foo`");
        // A codec that need not be understood is skipped, as zarrs does.
        let codecs = json!([bytes("little"), {"name": "foo", "must_understand": false}]);
        assert!(codec_for("uint16", &json!(0), &codecs, &[4]).is_ok());
    }

    #[test]
    fn misconfigured_codecs_and_shapes_are_invalid_argument() {
        let cases = [
            ("uint16", json!(["bytes"]), vec![4]), // no endian
            ("uint16", json!([zstd()]), vec![4]),  // no array-to-bytes codec
            ("uint16", json!([bytes("little"), bytes("big")]), vec![4]), // two of them
            ("uint16", json!([transpose(&[1, 0]), bytes("little")]), vec![4]), // order vs rank
            ("uint16", json!([bytes("sideways")]), vec![4]),
            ("uint16", json!({"name": "bytes"}), vec![4]), // not a list
            ("uint16", json!([bytes("little")]), vec![]),
            ("uint16", json!([bytes("little")]), vec![4, 0]),
            ("uint16", json!([bytes("little")]), vec![u64::MAX, 4]),
        ];
        for (dtype, codecs, shape) in cases {
            let e = codec_for(dtype, &json!(0), &codecs, &shape).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument, "{codecs} {shape:?}: {e}");
        }
    }

    #[test]
    fn one_codec_decodes_from_many_threads() {
        let shape = [8, 8, 8];
        let codecs = json!([bytes("little"), blosc("lz4", "shuffle", 4)]);
        let codec = codec_for("float32", &json!(0), &codecs, &shape).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let codec = &codec;
                let codecs = &codecs;
                s.spawn(move || {
                    let decoded = random_chunk("float32", &shape, 60 + t);
                    let encoded = zarrs_encode("float32", &json!(0), codecs, &shape, &decoded);
                    let mut out = vec![0u8; codec.decoded_len()];
                    codec.decode_into(&encoded, &mut out).unwrap();
                    assert!(out == decoded);
                });
            }
        });
    }

    /// A zstd frame of one raw block of `content` zero bytes whose header declares
    /// `declared` bytes of content (RFC 8878 §3.1.1, written by hand).
    fn zstd_lying(content: usize, declared: u64) -> Vec<u8> {
        let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
        f.push(0xE0); // 8-byte content size, single segment, no checksum, no dictionary
        f.extend(declared.to_le_bytes());
        let header = 1u32 | ((content as u32) << 3); // last block, raw
        f.extend(&header.to_le_bytes()[..3]);
        f.extend(vec![0u8; content]);
        f
    }

    #[test]
    fn bombs_and_lies_fail_the_chunk_without_allocating_what_they_claim() {
        let shape = [16, 16];
        let len = 16 * 16 * 2;
        // zstd frames declaring 2^63 and 1 TiB, through the identity chain and through the
        // big-endian one (zarrs' decoder allocated the declared size there).
        for codecs in [json!([bytes("little"), zstd()]), json!([bytes("big"), zstd()]), json!([bytes("big"), zstd(), crc32c()])] {
            let codec = codec_for("uint16", &json!(0), &codecs, &shape).unwrap();
            for declared in [1u64 << 63, 1 << 40] {
                let mut enc = zstd_lying(len, declared);
                if codecs.as_array().unwrap().len() == 3 {
                    let c = crc32c::crc32c(&enc);
                    enc.extend(c.to_le_bytes());
                }
                let mut out = vec![0u8; len];
                let e = codec.decode_into(&enc, &mut out).unwrap_err();
                assert_eq!(e.status(), Status::Decode, "{codecs} {declared}: {e}");
            }
        }
        // An RLE bomb: 32 KiB of zstd for 1 GiB of zeros, into a 512-byte chunk.
        let bomb = {
            let mut e = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..1024 {
                std::io::Write::write_all(&mut e, &zeros).unwrap();
            }
            e.finish().unwrap()
        };
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let codec = codec_for("uint16", &json!(0), &json!([bytes("big"), zstd()]), &shape).unwrap();
        let mut out = vec![0u8; len];
        assert_eq!(codec.decode_into(&bomb, &mut out).unwrap_err().status(), Status::Decode);
        // A gzip bomb: 32 KiB of gzip for 32 MiB of zeros (under the stored-size cap, so the
        // streaming bound is what stops it).
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..32 {
                std::io::Write::write_all(&mut e, &zeros).unwrap();
            }
            e.finish().unwrap()
        };
        assert!((gz.len() as u64) < max_encoded_len(len as u64), "{}", gz.len());
        let codec = codec_for("uint16", &json!(0), &json!([bytes("little"), gzip()]), &shape).unwrap();
        let e = codec.decode_into(&gz, &mut out).unwrap_err();
        assert_eq!(e.status(), Status::Decode);
        assert!(e.message().contains("more than"), "{e}");
        // Two compressors: the intermediate step is capped, not sized by the stream.
        let codec = codec_for("uint16", &json!(0), &json!([bytes("little"), zstd(), gzip()]), &shape).unwrap();
        assert_eq!(codec.decode_into(&gz, &mut out).unwrap_err().status(), Status::Decode);
        // A stored chunk larger than any encoding of it.
        let codec = codec_for("uint16", &json!(0), &json!([bytes("little")]), &shape).unwrap();
        let huge = vec![0u8; max_encoded_len(len as u64) as usize + 1];
        assert!(codec.decode_into(&huge, &mut out).unwrap_err().message().contains("exceeds"));
    }

    #[test]
    fn gzip_reads_every_member_and_refuses_trailing_garbage() {
        let shape = [4, 4, 4];
        let decoded = random_chunk("uint16", &shape, 71);
        let gz = |bytes: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, bytes).unwrap();
            e.finish().unwrap()
        };
        let codec = codec_for("uint16", &json!(0), &json!([bytes("little"), gzip()]), &shape).unwrap();
        let mut out = vec![0u8; codec.decoded_len()];
        // Two members (and three, one empty), then NUL padding (Python's gzip skips it).
        let two = [gz(&decoded[..64]), gz(&decoded[64..])].concat();
        let three = [gz(&decoded[..10]), gz(&[]), gz(&decoded[10..])].concat();
        for ok in [two.clone(), three, [two.clone(), vec![0; 7]].concat()] {
            out.fill(0);
            codec.decode_into(&ok, &mut out).unwrap();
            assert!(out == decoded);
        }
        // Garbage after a member; a second member that is corrupt; one too many bytes.
        let mut corrupt_second = two.clone();
        let at = corrupt_second.len() - 6;
        corrupt_second[at] ^= 1;
        let longer = [gz(&decoded), gz(&[1])].concat();
        for bad in [[gz(&decoded), vec![0x5a; 100]].concat(), [gz(&decoded), vec![0, 0, 7]].concat(), corrupt_second, longer] {
            let e = codec.decode_into(&bad, &mut out).unwrap_err();
            assert_eq!(e.status(), Status::Decode, "{e}");
            assert!(e.message().contains("gzip"), "{e}");
        }
    }

    #[test]
    fn blosc_headers_that_lie_about_sizes_are_decode_errors() {
        let shape = [8, 16, 16];
        let decoded = random_chunk("uint16", &shape, 70);
        let codecs = json!([bytes("little"), blosc("lz4", "shuffle", 2)]);
        let encoded = zarrs_encode("uint16", &json!(0), &codecs, &shape, &decoded);
        let codec = codec_for("uint16", &json!(0), &codecs, &shape).unwrap();
        let mut out = vec![0u8; codec.decoded_len()];
        codec.decode_into(&encoded, &mut out).unwrap();
        assert!(out == decoded);
        // nbytes claims 1 GiB; then claims one byte fewer than the chunk.
        for nbytes in [1u32 << 30, decoded.len() as u32 - 1] {
            let mut bad = encoded.clone();
            bad[4..8].copy_from_slice(&nbytes.to_le_bytes());
            let e = codec.decode_into(&bad, &mut out).unwrap_err();
            assert_eq!(e.status(), Status::Decode, "{nbytes}: {e}");
        }
    }
}
