//! zarr: parsers for Zarr v3 metadata (`zarr.json`), shard indexes and blosc headers, and
//! the chunk geometry they imply. Bytes in, values out: no I/O, no CUDA, so every parser can
//! be fuzzed. Also the example-volume writer used by the demo and benchmarks.
//!
//! Calls: `decode::cpu` (to build an array's chunk codec) only.

pub mod blosc;
pub mod example;
mod meta;
mod shard_index;
pub mod zstd_frame;

pub use meta::{ArrayMeta, KeyEncoding, Sharding, SourceDtype};
pub use shard_index::{ChunkRange, ShardIndex};
