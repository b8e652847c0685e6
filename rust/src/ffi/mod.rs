//! The cxx bridge: the only door between the Rust staticlib and the C++ extension.
//!
//! Owns: the shared POD records (config) and the opaque handles (`Pipeline`, `Batch`).
//! Calls: `pipeline` only. Contract: nothing here panics (cxx aborts the process on a
//! panic); every fallible function returns `Result`, whose message starts with the stable
//! status token `"[Status] "` that C++ and Python turn back into a typed error.

use crate::error::Result;
use crate::pipeline;

#[allow(missing_docs)] // fields are documented on `crate::pipeline::Config`
#[cxx::bridge(namespace = "damacy::ffi")]
mod bridge {
    /// Pipeline configuration; validated once by `pipeline_new` / `config_from_json`.
    /// Field meanings are documented on `crate::pipeline::Config` (same names).
    #[derive(Debug, Clone)]
    struct PipelineConfig {
        samples_per_batch: u32,
        sample_shape: Vec<u64>,
        dtype: String,
        device: String,
        decode: String,
        lookahead_samples: u32,
        n_io_threads: u32,
        n_array_meta_cache: u32,
        n_shard_index_cache: u32,
        n_chunk_layout_cache: u32,
        n_batch_buffers: u32,
        staging_bytes: u64,
        decoded_bytes: u64,
        max_read_op_bytes: u64,
        decoded_cache_bytes: u64,
        pop_timeout_s: f64,
        out_of_bounds: String,
        arrays: Vec<String>,
    }

    /// GPU path: decompress `src_len` staged bytes at `src_offset` into `dst_len` bytes at
    /// `dst_offset` of the batch's decoded arena. `codec`: 0 copy (already decoded on the
    /// CPU, or stored raw), 1 zstd, 2 lz4.
    #[derive(Debug, Clone, Copy)]
    struct GpuDecodeOp {
        codec: u32,
        src_offset: u64,
        src_len: u64,
        dst_offset: u64,
        dst_len: u64,
    }

    /// GPU path: undo blosc's shuffle over one decoded block in place: `len` bytes at
    /// `offset` of the decoded arena (via a scratch copy). `kind`: 1 byte, 2 bit shuffle.
    #[derive(Debug, Clone, Copy)]
    struct GpuUnshuffleOp {
        offset: u64,
        len: u64,
        typesize: u32,
        kind: u32,
    }

    /// GPU path: one box copied (and cast) from a decoded chunk into a sample, or filled.
    /// Shapes are padded to rank 4 with leading 1s / 0s. `src_dtype` codes: 0 bool, 1 u8,
    /// 2 i8, 3 u16, 4 i16, 5 u32, 6 i32, 7 u64, 8 i64, 9 f16, 10 bf16, 11 f32, 12 f64.
    /// `fill` set: write `fill_bits` (one source element, little endian) instead.
    #[derive(Debug, Clone, Copy)]
    struct GpuCopyOp {
        chunk_offset: u64,
        src_dtype: u32,
        sample: u32,
        fill: bool,
        fill_bits: u64,
        chunk_shape: [u32; 4],
        chunk_start: [u32; 4],
        sample_start: [u32; 4],
        extent: [u32; 4],
    }

    extern "Rust" {
        /// A running pipeline (thread-safe: push, pop, stats and close may be called from
        /// any thread).
        type Pipeline;
        /// One finished batch: owns its output buffer until dropped.
        type Batch;

        /// The default configuration.
        fn default_config() -> PipelineConfig;
        /// Parses a JSON object of config fields over the defaults; unknown or invalid
        /// fields fail with `[InvalidArgument]` naming the field.
        fn config_from_json(json: &str) -> Result<PipelineConfig>;
        /// The configuration as a JSON object (every field).
        fn config_to_json(cfg: &PipelineConfig) -> String;
        /// Validates `cfg`, fixes every resource, starts the I/O threads.
        fn pipeline_new(cfg: &PipelineConfig) -> Result<Box<Pipeline>>;
        /// Offers one sample; `false` when the lookahead window is full (pop first).
        fn push(self: &Pipeline, uri: &str, starts: &[i64], stops: &[i64]) -> Result<bool>;
        /// The next batch in push order; waits at most `timeout_s` (negative: the
        /// config's `pop_timeout_s`).
        fn pop(self: &Pipeline, timeout_s: f64) -> Result<Box<Batch>>;
        /// Number of samples pushed but not yet popped as part of a batch.
        fn pending_samples(self: &Pipeline) -> u64;
        /// Statistics as a JSON object.
        fn stats_json(self: &Pipeline) -> String;
        /// Stops the workers; always returns, also with work in flight. Idempotent.
        fn close(self: &Pipeline);

        /// The batch's output bytes, `[samples_per_batch, *sample_shape]` C order.
        fn bytes(self: &mut Batch) -> &mut [u8];
        /// `[samples_per_batch, *sample_shape]`.
        fn shape(self: &Batch) -> Vec<i64>;
        /// The output dtype name ("f32", "bf16", "u8", "i32" or "i64").
        fn dtype(self: &Batch) -> String;
        /// GPU path: `true` when this batch carries staged bytes and ops for the device
        /// instead of finished output bytes.
        fn is_gpu(self: &Batch) -> bool;
        /// GPU path: the staged (compressed) bytes, in pinned-able host memory.
        fn staging(self: &mut Batch) -> &mut [u8];
        /// GPU path: bytes of the decoded arena the ops write.
        fn decoded_bytes(self: &Batch) -> u64;
        /// GPU path: decompression ops (one nvCOMP batch per codec).
        fn decode_ops(self: &Batch) -> &[GpuDecodeOp];
        /// GPU path: unshuffle ops, after decompression.
        fn unshuffle_ops(self: &Batch) -> &[GpuUnshuffleOp];
        /// GPU path: copy and fill ops into the output, after unshuffling.
        fn copy_ops(self: &Batch) -> &[GpuCopyOp];
        /// GPU path: the uri and chunk that decode op `i` belongs to (for error messages).
        fn decode_op_context(self: &Batch, i: u32) -> String;
        /// The batch's samples as JSON: `[{"uri": .., "aabb": [[start, stop], ..]}, ..]`.
        fn samples_json(self: &Batch) -> String;

        /// Array facts (shape, dtype, chunk and shard shape, codecs, bytes on disk) as JSON.
        fn array_info_json(uri: &str) -> Result<String>;
        /// Writes a synthetic microscopy-like uint16 Zarr v3 array (smooth blobs plus noise)
        /// at `path`: `codec` is "zstd" or "blosc-zstd"; `shard_shape` empty means unsharded.
        fn write_example_volume(
            path: &str,
            shape: &[u64],
            chunk_shape: &[u64],
            shard_shape: &[u64],
            codec: &str,
            seed: u64,
        ) -> Result<()>;
    }
}

pub use bridge::{GpuCopyOp, GpuDecodeOp, GpuUnshuffleOp, PipelineConfig};
pub use pipeline::{Batch, Pipeline};

fn default_config() -> PipelineConfig {
    pipeline::Config::default().into()
}

fn config_from_json(json: &str) -> Result<PipelineConfig> {
    pipeline::Config::from_json(json).map(Into::into)
}

fn config_to_json(cfg: &PipelineConfig) -> String {
    pipeline::Config::try_from(cfg).map_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()), |c| c.to_json())
}

fn pipeline_new(cfg: &PipelineConfig) -> Result<Box<Pipeline>> {
    guard(|| Pipeline::new(pipeline::Config::try_from(cfg)?).map(Box::new))
}

fn array_info_json(uri: &str) -> Result<String> {
    guard(|| pipeline::array_info_json(uri))
}

fn write_example_volume(
    path: &str,
    shape: &[u64],
    chunk_shape: &[u64],
    shard_shape: &[u64],
    codec: &str,
    seed: u64,
) -> Result<()> {
    #[cfg(feature = "example")]
    return guard(|| crate::example::write_example_volume(path, shape, chunk_shape, shard_shape, codec, seed));
    #[cfg(not(feature = "example"))]
    {
        let _ = (path, shape, chunk_shape, shard_shape, codec, seed);
        Err(crate::error::Error::new(crate::error::Status::InvalidArgument, "this build has no example-volume writer (cargo feature `example`)"))
    }
}

/// Runs `f`, turning a panic into an error so that no panic unwinds into C++ (a panic is a
/// bug; the message says so).
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(crate::error::Error::new(
                crate::error::Status::InvalidArgument,
                format!("internal error (please report): {what}"),
            ))
        }
    }
}
