//! zarr: parsers for Zarr v3 metadata (`zarr.json`) and Zarr v2 metadata (`.zarray`, mapped
//! to the v3 model), both through zarrs' metadata types, OME-NGFF multiscales, the array's
//! codec chain, shard indexes, blosc framing and zstd frame structure, and the chunk
//! geometry they imply. Bytes in, values out: no I/O, no CUDA, no decoding, so every parser
//! can be fuzzed (`rust/fuzz`).
//!
//! Calls nothing of damacy's but `error`.

pub(crate) mod blosc;
mod codecs;
mod meta;
pub(crate) mod ngff;
mod shard_index;
mod v2;
pub(crate) mod zstd_frame;

pub use codecs::CodecSpec;
pub(crate) use codecs::{BloscCname, Endian};
pub use meta::{ArrayMeta, KeyEncoding, SourceDtype, MAX_CHUNKS_PER_SHARD, MAX_DECODED_CHUNK_BYTES, MAX_EXTENT, MAX_RANK};
pub use shard_index::ShardIndex;
