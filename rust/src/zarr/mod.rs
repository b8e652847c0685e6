//! zarr: parsers for Zarr v3 metadata (`zarr.json`, through zarrs' metadata types), its
//! codec chain, shard indexes, blosc framing and zstd frame structure, and the chunk
//! geometry they imply. Bytes in, values out: no I/O, no CUDA, no decoding, so every parser
//! can be fuzzed (`rust/fuzz`).
//!
//! Calls nothing of damacy's but `error`.

pub mod blosc;
mod codecs;
mod meta;
mod shard_index;
pub mod zstd_frame;

pub use codecs::{BloscCname, CodecChain, CodecSpec, Endian};
pub use meta::{ArrayMeta, KeyEncoding, Sharding, SourceDtype, MAX_CHUNKS_PER_SHARD, MAX_DECODED_CHUNK_BYTES, MAX_EXTENT, MAX_RANK};
pub use shard_index::{ChunkRange, ShardIndex};
