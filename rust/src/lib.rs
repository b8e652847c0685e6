//! damacy: random crops of chunked, sharded, compressed Zarr v3 arrays, planned, read and
//! decoded for PyTorch.
//!
//! Stages, in data-flow order (each folder opens with its contract):
//! `zarr` (parsers) → `store` (where bytes live) → `cache` → `prefetch` → `plan` → `io` →
//! `decode` → `assemble` → `pipeline` (the public object) → `ffi` (the cxx bridge).
//! `example` writes synthetic volumes for the demo, tests and benchmarks.

// Every module is crate-private (so `unreachable_pub` flags a `pub` nothing outside can
// reach); the crate's own surface is the re-exports below, what the integration tests, the
// fuzz targets and the benches use is `testing` (dev/decisions.md, "Visibility").
pub(crate) mod error;
pub(crate) mod zarr;
pub(crate) mod store;
pub(crate) mod cache;
pub(crate) mod prefetch;
pub(crate) mod plan;
pub(crate) mod io;
pub(crate) mod decode;
pub(crate) mod assemble;
pub(crate) mod pipeline;
pub(crate) mod ffi;
#[cfg(feature = "example")]
pub(crate) mod example;

pub use error::{Error, Result, Status};
pub use ffi::records::{GpuChecksumOp, GpuCopyOp, GpuDecodeOp, GpuUnshuffleOp, Stats};
pub use pipeline::{Batch, Config, Decode, OutDtype, OutOfBounds, Pipeline, Recheck};
#[cfg(feature = "example")]
pub use example::write_example_volume;

/// Internals that the integration tests (`rust/tests`), the fuzz targets (`rust/fuzz`) and
/// the benches reach into: stage types by their stage's name, each item listed. Not API.
#[doc(hidden)]
pub mod testing {
    /// `zarr`: the parsers.
    pub mod zarr {
        pub use crate::zarr::{ArrayMeta, CodecSpec, KeyEncoding, ShardIndex, SourceDtype, MAX_CHUNKS_PER_SHARD, MAX_DECODED_CHUNK_BYTES, MAX_EXTENT, MAX_RANK};
        /// The blosc frame parser.
        pub mod blosc {
            pub use crate::zarr::blosc::{BloscFrame, HEAD_PROBE};
        }
        /// The zstd frame check.
        pub mod zstd_frame {
            pub use crate::zarr::zstd_frame::check_frame;
        }
    }
    /// `store`: the Store trait and its implementations.
    pub mod store {
        pub use crate::store::{open, open_with, RangeRead, ReadOutcome, StorageOptions, Store};
        /// The in-memory store (`mem://NAME`) the fuzz targets read from.
        #[cfg(feature = "fuzzing")]
        pub mod mem {
            pub use crate::store::mem::{insert, remove};
        }
    }
    /// `decode`: the CPU chunk decoder.
    pub mod decode {
        pub use crate::decode::ChunkCodec;
    }
    /// `plan`: what the prefetcher hands the planner.
    pub mod plan {
        pub use crate::plan::ShardLookup;
    }
    /// `io`: the worker pool.
    pub mod io {
        pub use crate::io::WorkerPool;
    }
    /// `ffi`: the shared vocabulary of the device op records.
    pub mod ffi {
        pub use crate::ffi::records::bridge::DecodeCodec;
    }
    /// `prefetch`: the per-sample state machine and the array loaders.
    pub mod prefetch {
        pub use crate::prefetch::{load_array, multiscale_levels, Options, Phase, Prefetcher};
    }
}
