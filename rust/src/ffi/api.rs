//! The bridge's top half: opaque handles and functions, laid out like the cxx demo. Types
//! cross, not text: the config is an opaque serde-derived Rust struct with getters, samples
//! are records, stats a struct, output dtypes and statuses shared enums. JSON appears only
//! where a caller wants JSON (the torch ops hand Python `to_json`/`stats_json`, which Rust
//! writes; nothing parses JSON in C++).

use crate::error::{Result, Status};
use crate::ffi::guard;
use crate::pipeline;
pub(crate) use crate::pipeline::{Batch, Config, Pipeline};

#[allow(missing_docs, unreachable_pub)] // documented on the bridge items and on `pipeline`
#[cxx::bridge(namespace = "damacy::ffi")]
pub mod bridge {
    unsafe extern "C++" {
        include!("damacy/src/ffi/records.rs.h");
        type OutDtype = crate::ffi::records::OutDtype;
        type Status = crate::ffi::records::Status;
        type GpuDecodeOp = crate::ffi::records::GpuDecodeOp;
        type GpuChecksumOp = crate::ffi::records::GpuChecksumOp;
        type GpuUnshuffleOp = crate::ffi::records::GpuUnshuffleOp;
        type GpuCopyOp = crate::ffi::records::GpuCopyOp;
        type SampleTransform = crate::ffi::records::SampleTransform;
        type Stats = crate::ffi::records::Stats;
    }

    /// One sample of a batch: its array and box (`starts[d]..stops[d]`).
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct SampleRecord {
        uri: String,
        starts: Vec<i64>,
        stops: Vec<i64>,
    }

    /// Facts about an array. `shard_shape` is empty for an unsharded array; `files` and
    /// `bytes_stored` are 0 unless asked for (they list the whole array).
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct ArrayInfo {
        uri: String,
        shape: Vec<u64>,
        data_type: String,
        chunk_shape: Vec<u64>,
        shard_shape: Vec<u64>,
        index_at_start: bool,
        codecs_json: String,
        dimension_names: Vec<String>,
        files: u64,
        bytes_stored: u64,
        bytes_decoded: u64,
    }

    extern "Rust" {
        /// A validated pipeline configuration (immutable).
        type Config;
        /// A running pipeline (thread-safe: push, pop, stats and close may be called from
        /// any thread).
        type Pipeline;
        /// One finished batch: owns its output buffer until dropped.
        type Batch;

        /// The default configuration.
        fn config_default() -> Box<Config>;
        /// Parses a JSON object of config fields over the defaults; unknown or invalid
        /// fields fail with `[InvalidArgument]` naming the field.
        fn config_from_json(json: &str) -> Result<Box<Config>>;
        /// Every field as a JSON object (accepted by `config_from_json`).
        fn to_json(self: &Config) -> String;
        fn samples_per_batch(self: &Config) -> u32;
        fn sample_shape_vec(self: &Config) -> Vec<u64>;
        fn out_dtype(self: &Config) -> OutDtype;
        /// The output dtype's config name ("f32", "bf16", ...).
        fn dtype_name(self: &Config) -> String;
        fn device_name(self: &Config) -> String;
        fn decode_name(self: &Config) -> String;
        fn pop_timeout(self: &Config) -> f64;
        fn device_ahead(self: &Config) -> u32;
        /// Batches decode on the device (the one route decision).
        fn decodes_on_device(self: &Config) -> bool;
        /// The config once the device path's availability is known (`unavailable` empty:
        /// it can run; else why not): "auto" falls back to CPU decode, "gpu" fails `[Cuda]`.
        fn resolve(self: &Config, unavailable: &str) -> Result<Box<Config>>;
        fn boxed_clone(self: &Config) -> Box<Config>;

        /// Validates `cfg`, fixes every resource, starts the I/O threads.
        fn pipeline_new(cfg: &Config) -> Result<Box<Pipeline>>;
        /// Offers one sample; `false` when the lookahead window is full (pop first).
        fn push_sample(self: &Pipeline, uri: &str, starts: &[i64], stops: &[i64]) -> Result<bool>;
        /// `push_sample` with the sample's transform (`SampleTransform`), applied where its
        /// batch is made (CPU-made batches: by Rust; device batches: by the assemble kernel,
        /// `sample_transforms`); one this pipeline cannot apply fails its batch.
        fn push_sample_transformed(self: &Pipeline, uri: &str, starts: &[i64], stops: &[i64], transform: &SampleTransform) -> Result<bool>;
        /// The next batch in push order; waits at most `timeout_s` (negative: the
        /// config's `pop_timeout_s`).
        fn pop_batch(self: &Pipeline, timeout_s: f64) -> Result<Box<Batch>>;
        /// `n` batches popped earlier reached the caller (counts `stats().batches`, or
        /// `batches_failed` when `failed`: the device side raised their error).
        fn delivered(self: &Pipeline, n: u64, failed: bool);
        /// Samples pushed but not yet delivered as part of a batch.
        fn pending_samples(self: &Pipeline) -> u64;
        /// How many more samples `push_sample` takes before it returns `false`.
        fn window_room(self: &Pipeline) -> u64;
        /// Statistics.
        fn stats(self: &Pipeline) -> Stats;
        /// Statistics as a JSON object (for Python).
        fn stats_json(self: &Pipeline) -> String;
        /// Stops the workers; returns within about 5 s, also with work in flight. Idempotent.
        fn close(self: &Pipeline);

        /// The batch's output bytes, `[samples_per_batch, *sample_shape]` C order.
        fn bytes(self: &mut Batch) -> &mut [u8];
        /// `[samples_per_batch, *sample_shape]`.
        fn shape(self: &Batch) -> Vec<i64>;
        /// The output dtype.
        fn out_dtype(self: &Batch) -> OutDtype;
        /// GPU path: `true` when this batch carries staged bytes and ops for the device
        /// instead of finished output bytes.
        fn is_gpu(self: &Batch) -> bool;
        /// GPU path: the staged (compressed) bytes, in pinned-able host memory.
        fn staging(self: &mut Batch) -> &mut [u8];
        /// GPU path: bytes of the decoded arena the ops write.
        fn decoded_bytes(self: &Batch) -> u64;
        /// GPU path: decompression ops (one nvCOMP batch per codec).
        fn decode_ops(self: &Batch) -> &[GpuDecodeOp];
        /// GPU path: zstd content checksums to verify after decompression (frames with the
        /// checksum flag only), before unshuffling.
        fn checksum_ops(self: &Batch) -> &[GpuChecksumOp];
        /// GPU path: unshuffle ops, after decompression.
        fn unshuffle_ops(self: &Batch) -> &[GpuUnshuffleOp];
        /// GPU path: copy and fill ops into the output, after unshuffling.
        fn copy_ops(self: &Batch) -> &[GpuCopyOp];
        /// GPU path, device chunk store: `Copy` ops from the pool (source offsets) into the
        /// decoded arena, run after the batch's decoding and before assembling, once every
        /// earlier batch's store copies ran (the extension chains them by an event).
        fn store_fetch_ops(self: &Batch) -> &[GpuDecodeOp];
        /// GPU path, device chunk store: `Copy` ops from the decoded arena into the pool
        /// (destination offsets), run after `store_fetch_ops`.
        fn store_keep_ops(self: &Batch) -> &[GpuDecodeOp];
        /// GPU path: the device chunk store's pool size in bytes (0: no store).
        fn device_store_bytes(self: &Batch) -> u64;
        /// GPU path: the batches (`seq`) that keep the chunks this batch fetches: if one of
        /// them failed on the device, this batch fails too.
        fn store_producers(self: &Batch) -> &[u64];
        /// The batch's sequence number (push order, from 0).
        fn seq(self: &Batch) -> u64;
        /// GPU path: the uri and chunk that decode op `i` belongs to (for error messages).
        fn decode_op_context(self: &Batch, i: u32) -> String;
        /// The batch's samples, in batch order.
        fn sample_records(self: &Batch) -> Vec<SampleRecord>;
        /// The samples' transforms still to apply on the device, in batch order (identity where
        /// none was pushed): a device batch's (the assemble kernel applies them); empty for a
        /// CPU-made batch (Rust applied them) and when no sample of the batch has one.
        fn sample_transforms(self: &Batch) -> Vec<SampleTransform>;

        /// Facts about the array at `uri`; `usage`: also count its stored objects and bytes
        /// (lists the whole array).
        fn array_info(uri: &str, usage: bool) -> Result<ArrayInfo>;
        /// The same as a JSON object (for Python).
        fn array_info_json(uri: &str, usage: bool) -> Result<String>;
        /// The status tokens, in the shared order (C++ and Python check theirs against it).
        fn status_tokens() -> Vec<String>;
        /// Writes a synthetic microscopy-like uint16 Zarr v3 array (smooth blobs plus noise)
        /// at `path`: `codec` is "zstd" or "blosc-zstd"; `shard_shape` empty means unsharded.
        fn write_example_volume(path: &str, shape: &[u64], chunk_shape: &[u64], shard_shape: &[u64], codec: &str, seed: u64) -> Result<()>;
    }
}

pub(crate) use bridge::{ArrayInfo, SampleRecord};

/// The serde name of a unit enum value (the config's spelling).
fn serde_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn config_default() -> Box<Config> {
    Box::new(Config::default())
}

fn config_from_json(json: &str) -> Result<Box<Config>> {
    guard(|| Config::from_json(json).map(Box::new))
}

impl Config {
    fn sample_shape_vec(&self) -> Vec<u64> {
        self.sample_shape.clone()
    }
    fn out_dtype(&self) -> crate::ffi::records::OutDtype {
        self.dtype.into()
    }
    fn device_name(&self) -> String {
        self.device.clone()
    }
    fn decode_name(&self) -> String {
        serde_name(&self.decode)
    }
    fn dtype_name(&self) -> String {
        serde_name(&self.dtype)
    }
    fn pop_timeout(&self) -> f64 {
        self.pop_timeout_s
    }
    fn device_ahead(&self) -> u32 {
        self.device_ahead
    }
    fn resolve(&self, unavailable: &str) -> Result<Box<Config>> {
        guard(|| self.resolved(unavailable).map(Box::new))
    }
    fn boxed_clone(&self) -> Box<Config> {
        Box::new(self.clone())
    }
}

fn pipeline_new(cfg: &Config) -> Result<Box<Pipeline>> {
    guard(|| Pipeline::new(cfg.clone()).map(Box::new))
}

impl Pipeline {
    fn push_sample(&self, uri: &str, starts: &[i64], stops: &[i64]) -> Result<bool> {
        guard(|| self.push(uri, starts, stops))
    }
    fn push_sample_transformed(&self, uri: &str, starts: &[i64], stops: &[i64], transform: &crate::ffi::records::SampleTransform) -> Result<bool> {
        guard(|| self.push_with(uri, starts, stops, Some(*transform)))
    }
    fn pop_batch(&self, timeout_s: f64) -> Result<Box<Batch>> {
        guard(|| self.pop(timeout_s))
    }
}

impl Batch {
    fn out_dtype(&self) -> crate::ffi::records::OutDtype {
        self.dtype_of().into()
    }
    fn sample_records(&self) -> Vec<SampleRecord> {
        self.samples()
            .map(|(uri, aabb)| SampleRecord { uri: uri.to_string(), starts: aabb.iter().map(|b| b.0).collect(), stops: aabb.iter().map(|b| b.1).collect() })
            .collect()
    }
    fn sample_transforms(&self) -> Vec<crate::ffi::records::SampleTransform> {
        self.transforms()
    }
}

fn array_info(uri: &str, usage: bool) -> Result<ArrayInfo> {
    guard(|| {
        let (array, du) = pipeline::open_array(uri, usage)?;
        Ok(info_of(uri, &array, du))
    })
}

fn info_of(uri: &str, array: &pipeline::Array, (files, bytes_stored): (u64, u64)) -> ArrayInfo {
    let meta = &array.meta;
    let sharding = meta.sharding.as_ref();
    ArrayInfo {
        uri: uri.to_string(),
        shape: meta.shape.clone(),
        data_type: meta.data_type.clone(),
        chunk_shape: meta.chunk_shape().to_vec(),
        shard_shape: sharding.map(|_| meta.grid_shape.clone()).unwrap_or_default(),
        index_at_start: sharding.is_some_and(|s| s.index_at_start),
        codecs_json: meta.codecs.to_json().to_string(),
        dimension_names: meta.dimension_names.iter().flatten().map(|n| n.clone().unwrap_or_default()).collect(),
        files,
        bytes_stored,
        bytes_decoded: meta.decoded_array_bytes(),
    }
}

/// `array_info` as JSON; a multiscale group (no level selected) gives its levels instead:
/// `{"uri", "node_type": "multiscale", "ngff_version", "name", "axes", "levels": [{"level",
/// "path", "uri", "shape", "data_type", "chunk_shape", "zarr_format", "scale",
/// "translation"}]}`.
fn array_info_json(uri: &str, usage: bool) -> Result<String> {
    guard(|| {
        let (array, du) = match pipeline::open_node(uri, usage)? {
            pipeline::Node::Array(array, du) => (array, du),
            pipeline::Node::Multiscale(m) => return Ok(multiscale_json(uri, &m)),
        };
        let a = info_of(uri, &array, du);
        let codecs: serde_json::Value = serde_json::from_str(&a.codecs_json).unwrap_or(serde_json::Value::Null);
        Ok(serde_json::json!({
            "uri": a.uri,
            "node_type": "array",
            "zarr_format": array.meta.format.number(),
            "shape": a.shape,
            "data_type": a.data_type,
            "chunk_shape": a.chunk_shape,
            "shard_shape": (!a.shard_shape.is_empty()).then_some(&a.shard_shape),
            "index_location": (!a.shard_shape.is_empty()).then_some(if a.index_at_start { "start" } else { "end" }),
            "codecs": codecs,
            "dimension_names": a.dimension_names,
            "files": a.files,
            "bytes_on_disk": a.bytes_stored,
            "bytes_decoded": a.bytes_decoded,
        })
        .to_string())
    })
}

fn multiscale_json(uri: &str, m: &pipeline::MultiscaleInfo) -> String {
    let base = uri.trim_end_matches('/');
    let levels: Vec<serde_json::Value> = m
        .levels
        .iter()
        .map(|l| {
            serde_json::json!({
                "level": l.index,
                "path": l.level.path,
                "uri": format!("{base}#level={}", l.index),
                "shape": l.meta.shape,
                "data_type": l.meta.data_type,
                "chunk_shape": l.meta.chunk_shape(),
                "zarr_format": l.meta.format.number(),
                "scale": l.level.scale,
                "translation": l.level.translation,
            })
        })
        .collect();
    serde_json::json!({
        "uri": uri,
        "node_type": "multiscale",
        "ngff_version": m.multiscale.version,
        "name": m.multiscale.name,
        "axes": m.multiscale.axes,
        "levels": levels,
    })
    .to_string()
}

fn status_tokens() -> Vec<String> {
    Status::ALL.iter().map(|(_, t)| (*t).to_string()).collect()
}

fn write_example_volume(path: &str, shape: &[u64], chunk_shape: &[u64], shard_shape: &[u64], codec: &str, seed: u64) -> Result<()> {
    #[cfg(feature = "example")]
    return guard(|| crate::example::write_example_volume(path, shape, chunk_shape, shard_shape, codec, seed));
    #[cfg(not(feature = "example"))]
    {
        let _ = (path, shape, chunk_shape, shard_shape, codec, seed);
        Err(crate::error::Error::new(Status::InvalidArgument, "this build has no example-volume writer (cargo feature `example`)"))
    }
}
