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
    /// Offset of the stream's payload (after its size prefix) in the chunk.
    pub offset: u32,
    /// Payload length.
    pub cbytes: u32,
    /// Decoded length.
    pub nbytes: u32,
}

/// The parsed framing of one blosc1 chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BloscLayout {
    /// Element size the shuffle used.
    pub typesize: u32,
    /// Decoded chunk size.
    pub nbytes: u32,
    /// Decoded block size (the last block may be shorter).
    pub blocksize: u32,
    /// Shuffle as flagged (c-blosc skips byte shuffle for typesize 1 and bit shuffle for
    /// blocks shorter than typesize).
    pub shuffle: Shuffle,
    /// Compressor.
    pub codec: BloscCodec,
    /// `true`: the whole chunk is stored raw after the header.
    pub memcpyed: bool,
    /// Streams of each block, in block order (empty when `memcpyed`).
    pub blocks: Vec<Vec<Stream>>,
}

fn le_u32(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| err!(Decode, "blosc header: chunk truncated at byte {at} ({} bytes)", b.len()))
}

impl BloscLayout {
    /// Parses a blosc1 chunk's framing.
    ///
    /// # Errors
    /// Decode when the header or the block table is malformed or points outside the chunk.
    pub fn parse(chunk: &[u8]) -> Result<Self> {
        if chunk.len() < 16 {
            return Err(err!(Decode, "blosc header: chunk of {} bytes is shorter than the 16-byte header", chunk.len()));
        }
        let (version, flags, typesize) = (chunk[0], chunk[2], u32::from(chunk[3]));
        if version == 0 || version > 4 {
            return Err(err!(Decode, "blosc header: unsupported format version {version}"));
        }
        let nbytes = le_u32(chunk, 4)?;
        let blocksize = le_u32(chunk, 8)?;
        let cbytes = le_u32(chunk, 12)?;
        if cbytes as usize != chunk.len() {
            return Err(err!(Decode, "blosc header: header says {cbytes} compressed bytes, chunk has {}", chunk.len()));
        }
        if typesize == 0 || (nbytes > 0 && blocksize == 0) {
            return Err(err!(Decode, "blosc header: typesize {typesize}, blocksize {blocksize}"));
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
        let mut layout = Self { typesize, nbytes, blocksize, shuffle, codec, memcpyed, blocks: Vec::new() };
        if memcpyed {
            if chunk.len() != 16 + nbytes as usize {
                return Err(err!(Decode, "blosc header: raw chunk of {nbytes} bytes has {} payload bytes", chunk.len() - 16));
            }
            return Ok(layout);
        }
        let nblocks = nbytes.div_ceil(blocksize);
        // As c-blosc's `blosc_d`: a block is split into `typesize` streams unless the
        // header says not to (flag 0x10), the typesize exceeds 16, the streams would be
        // shorter than 128 bytes, or it is the short last block ("leftover").
        let dont_split = flags & 0x10 != 0;
        let leftover = nbytes % blocksize != 0;
        for b in 0..nblocks {
            let start = le_u32(chunk, 16 + 4 * b as usize)? as usize;
            let is_leftover = leftover && b + 1 == nblocks;
            let bsize = if is_leftover { nbytes - b * blocksize } else { blocksize };
            let split = !dont_split && typesize <= 16 && bsize / typesize >= 128 && !is_leftover;
            let nstreams = if split { typesize } else { 1 };
            let snbytes = bsize / nstreams;
            let mut at = start;
            let mut streams = Vec::with_capacity(nstreams as usize);
            for _ in 0..nstreams {
                let cb = le_u32(chunk, at)?;
                let payload = at + 4;
                if payload + cb as usize > chunk.len() {
                    return Err(err!(Decode, "blosc block {b}: stream of {cb} bytes at {payload} runs past the {}-byte chunk", chunk.len()));
                }
                streams.push(Stream { offset: payload as u32, cbytes: cb, nbytes: snbytes });
                at = payload + cb as usize;
            }
            layout.blocks.push(streams);
        }
        Ok(layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_short_and_inconsistent_headers() {
        assert!(BloscLayout::parse(&[2, 1, 0, 2]).is_err());
        let mut h = vec![2u8, 1, 0x02, 2];
        h.extend(8u32.to_le_bytes());
        h.extend(8u32.to_le_bytes());
        h.extend(24u32.to_le_bytes());
        h.extend([0u8; 8]);
        let l = BloscLayout::parse(&h).unwrap();
        assert!(l.memcpyed);
        assert_eq!(l.nbytes, 8);
        h.truncate(20);
        assert!(BloscLayout::parse(&h).is_err());
    }
}
