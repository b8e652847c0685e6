//! decode: turns stored chunk bytes into decoded chunk bytes, or into the work the device
//! does to decode them. Owns, per array, an [`ArrayDecoder`]: the CPU chunk codec (`cpu`)
//! and the device route (`device`: which chains nvCOMP decodes, and the host-side
//! preparation of staged bytes: checksums, zstd frame checks, blosc stream splits, GPU op
//! records). No I/O: callers hand it bytes.
//!
//! Calls: `zarr` (typed codec chains, framing parsers). Called by `prefetch` (builds the
//! decoder when an array is opened) and `pipeline` (runs it in worker jobs).

pub(crate) mod cpu;
pub(crate) mod device;

pub use cpu::ChunkCodec;
pub(crate) use cpu::{max_encoded_len, strip_crc32c};
pub(crate) use device::{DeviceCodec, DeviceRoute};

use crate::error::Result;
use crate::zarr::ArrayMeta;

/// How one array's chunks decode, on either path.
#[derive(Debug)]
pub struct ArrayDecoder {
    /// CPU decoder (also the GPU path's fallback for chains the device cannot decode).
    pub cpu: ChunkCodec,
    /// The device route of the chain.
    pub route: DeviceRoute,
}

impl ArrayDecoder {
    /// The decoders of `meta`'s chunks.
    ///
    /// # Errors
    /// InvalidArgument / DtypeMismatch from building the CPU codec.
    pub fn new(meta: &ArrayMeta) -> Result<Self> {
        Ok(Self { cpu: ChunkCodec::new(meta)?, route: DeviceRoute::of(meta) })
    }
}
