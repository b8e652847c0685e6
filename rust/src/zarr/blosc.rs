//! The blosc1 chunk framing (what numcodecs and zarrs' `blosc` codec write): a 16-byte
//! header, then, unless the chunk is stored raw, one i32 start offset per block, then the
//! blocks. Each block holds one stream, or `typesize` streams when the block is split;
//! every stream is an i32 compressed size followed by that many bytes (size equal to the
//! stream's decoded size: stored raw). Parsing tells the GPU path where every compressed
//! stream lies, so a crop can decompress only the blocks it needs.

use crate::error::{err, Result};

/// The compressor of a blosc chunk's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BloscCodec {
    /// blosclz.
    BloscLz,
    /// lz4 (also lz4hc, same stream format).
    Lz4,
    /// snappy.
    Snappy,
    /// zlib.
    Zlib,
    /// zstd.
    Zstd,
}

/// The shuffle applied before compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shuffle {
    /// None.
    None,
    /// Byte shuffle.
    Byte,
    /// Bit shuffle.
    Bit,
}

/// One compressed stream inside a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    /// Offset of the stream's payload (after its size prefix) from the start of its block.
    pub offset: u32,
    /// Payload length.
    pub cbytes: u32,
    /// Decoded length.
    pub nbytes: u32,
}

fn le_u32(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| err!(Decode, "blosc header: chunk truncated at byte {at} ({} bytes)", b.len()))
}

/// The head of a blosc1 chunk: its 16-byte header and block table, without the blocks.
/// This is what the `chunk_layout` cache holds: enough to tell which compressed bytes hold
/// which decoded block, so a crop can read and decompress only the blocks it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BloscFrame {
    /// Element size the shuffle used.
    pub typesize: u32,
    /// Decoded chunk size.
    pub nbytes: u32,
    /// Decoded block size (the last block may be shorter).
    pub blocksize: u32,
    /// Compressed chunk size (the whole frame).
    pub cbytes: u32,
    /// Shuffle as flagged.
    pub shuffle: Shuffle,
    /// Compressor.
    pub codec: BloscCodec,
    /// `true`: the whole chunk is stored raw after the header.
    pub memcpyed: bool,
    /// The header's "do not split" flag.
    pub dont_split: bool,
    /// Per block: compressed byte range `[start, end)` in the chunk (empty when `memcpyed`).
    pub blocks: Vec<(u32, u32)>,
}

/// Bytes from a chunk's start that always cover the header and a block table of up to
/// 1,020 blocks; longer tables need [`BloscFrame::head_len`] bytes.
pub const HEAD_PROBE: usize = 4096;

impl BloscFrame {
    /// Bytes at the chunk's start holding the header and block table, given at least the
    /// 16-byte header.
    ///
    /// # Errors
    /// Decode for a header shorter than 16 bytes or with a zero block size.
    pub fn head_len(head: &[u8]) -> Result<usize> {
        if head.len() < 16 {
            return Err(err!(Decode, "blosc header: chunk of {} bytes is shorter than the 16-byte header", head.len()));
        }
        if head[2] & 0x02 != 0 {
            return Ok(16);
        }
        let (nbytes, blocksize) = (le_u32(head, 4)?, le_u32(head, 8)?);
        if nbytes > 0 && blocksize == 0 {
            return Err(err!(Decode, "blosc header: blocksize 0 for {nbytes} bytes"));
        }
        let nblocks = if blocksize == 0 { 0 } else { nbytes.div_ceil(blocksize) };
        Ok(16 + 4 * nblocks as usize)
    }

    /// Parses the header and block table from `head` (the chunk's first bytes, at least
    /// [`Self::head_len`] of them) of a chunk of `chunk_len` bytes.
    ///
    /// # Errors
    /// Decode when the header or the block table is malformed or points outside the chunk.
    pub fn parse(head: &[u8], chunk_len: u64) -> Result<Self> {
        let need = Self::head_len(head)?;
        let (version, flags, typesize) = (head[0], head[2], u32::from(head[3]));
        if version == 0 || version > 4 {
            return Err(err!(Decode, "blosc header: unsupported format version {version}"));
        }
        let nbytes = le_u32(head, 4)?;
        let blocksize = le_u32(head, 8)?;
        let cbytes = le_u32(head, 12)?;
        if u64::from(cbytes) != chunk_len {
            return Err(err!(Decode, "blosc header: header says {cbytes} compressed bytes, chunk has {chunk_len}"));
        }
        if typesize == 0 {
            return Err(err!(Decode, "blosc header: typesize 0"));
        }
        let memcpyed = flags & 0x02 != 0;
        let shuffle = match (flags & 0x01 != 0, flags & 0x04 != 0) {
            (_, true) => Shuffle::Bit,
            (true, false) => Shuffle::Byte,
            (false, false) => Shuffle::None,
        };
        let codec = match flags >> 5 {
            0 => BloscCodec::BloscLz,
            1 => BloscCodec::Lz4,
            2 => BloscCodec::Snappy,
            3 => BloscCodec::Zlib,
            4 => BloscCodec::Zstd,
            other => return Err(err!(Decode, "blosc header: unknown compressor code {other}")),
        };
        let mut frame = Self { typesize, nbytes, blocksize, cbytes, shuffle, codec, memcpyed, dont_split: flags & 0x10 != 0, blocks: Vec::new() };
        if memcpyed {
            if u64::from(cbytes) != 16 + u64::from(nbytes) {
                return Err(err!(Decode, "blosc header: raw chunk of {nbytes} bytes has {} payload bytes", i64::from(cbytes) - 16));
            }
            return Ok(frame);
        }
        if head.len() < need || (need as u64) > chunk_len {
            return Err(err!(Decode, "blosc header: block table of {need} bytes runs past the {}-byte chunk", head.len().min(chunk_len as usize)));
        }
        let starts: Vec<u32> = (16..need).step_by(4).map(|at| le_u32(head, at)).collect::<Result<_>>()?;
        // Blocks compressed by several threads may be stored out of order: each ends where
        // the next stored block begins (the last at cbytes).
        let mut sorted = starts.clone();
        sorted.sort_unstable();
        for (b, &start) in starts.iter().enumerate() {
            let end = sorted.get(sorted.partition_point(|&s| s <= start)).copied().unwrap_or(cbytes);
            // A start past cbytes has no later start: its "end" (cbytes) lies before it.
            if (start as usize) < need || start > end || end > cbytes {
                return Err(err!(Decode, "blosc block {b}: bytes {start}..{end} outside the {cbytes}-byte chunk after its {need}-byte head"));
            }
            frame.blocks.push((start, end));
        }
        Ok(frame)
    }

    /// Decoded size of block `b`.
    pub fn block_nbytes(&self, b: usize) -> u32 {
        let start = b as u32 * self.blocksize;
        self.blocksize.min(self.nbytes - start)
    }

    /// The streams of block `b`, given its compressed bytes; stream offsets are relative to
    /// the block's start.
    ///
    /// # Errors
    /// Decode when a stream runs past the block.
    pub fn streams(&self, b: usize, block: &[u8]) -> Result<Vec<Stream>> {
        // As c-blosc's `blosc_d`: a block is split into `typesize` streams unless the
        // header says not to, the typesize exceeds 16, the streams would be shorter than
        // 128 bytes, or it is the short last block ("leftover").
        let bsize = self.block_nbytes(b);
        let leftover = bsize < self.blocksize;
        let split = !self.dont_split && self.typesize <= 16 && bsize / self.typesize >= 128 && !leftover;
        let nstreams = if split { self.typesize } else { 1 };
        let snbytes = bsize / nstreams;
        let mut at = 0usize;
        let mut streams = Vec::with_capacity(nstreams as usize);
        for _ in 0..nstreams {
            let cb = le_u32(block, at)?;
            let payload = at + 4;
            if payload + cb as usize > block.len() {
                return Err(err!(Decode, "blosc block {b}: stream of {cb} bytes at {payload} runs past the {}-byte block", block.len()));
            }
            streams.push(Stream { offset: payload as u32, cbytes: cb, nbytes: snbytes });
            at = payload + cb as usize;
        }
        Ok(streams)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_short_and_inconsistent_headers() {
        let parse = |h: &[u8]| BloscFrame::parse(h, h.len() as u64);
        assert!(parse(&[2, 1, 0, 2]).is_err());
        let mut h = vec![2u8, 1, 0x02, 2];
        h.extend(8u32.to_le_bytes());
        h.extend(8u32.to_le_bytes());
        h.extend(24u32.to_le_bytes());
        h.extend([0u8; 8]);
        let l = parse(&h).unwrap();
        assert!(l.memcpyed);
        assert_eq!(l.nbytes, 8);
        h.truncate(20);
        assert!(parse(&h).is_err());
    }

    /// Found by the `batch_read` fuzz target: a block starting past the chunk's end was
    /// accepted as the range `start..cbytes` with `start > cbytes`, and the device path
    /// then computed a negative span (overflow panic in `run_device`).
    #[test]
    fn rejects_a_block_starting_past_the_end() {
        let mut h = vec![2u8, 1, 0x01, 2];
        h.extend(64u32.to_le_bytes()); // nbytes
        h.extend(64u32.to_le_bytes()); // blocksize: one block
        h.extend(40u32.to_le_bytes()); // cbytes
        h.extend(1000u32.to_le_bytes()); // block 0 starts past the end
        h.resize(40, 0);
        let e = BloscFrame::parse(&h, 40).unwrap_err();
        assert!(e.message().contains("outside"), "{e}");
        // In range, the same header parses.
        h[16..20].copy_from_slice(&20u32.to_le_bytes());
        assert_eq!(BloscFrame::parse(&h, 40).unwrap().blocks, [(20, 40)]);
    }
}
