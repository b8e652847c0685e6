//! The pipeline's configuration: one serde-derived struct (the one field list: defaults,
//! JSON in and out, the bridge's opaque `Config`), and the one validation pass.

use serde::{Deserialize, Serialize};

use crate::error::{err, Result};
pub use crate::assemble::OutDtype;

/// Where chunks are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decode {
    /// On the GPU when the device is CUDA, nvCOMP is there and the output is a float;
    /// else on the CPU.
    Auto,
    /// On the GPU (an error when it cannot be).
    Gpu,
    /// On the CPU (then one copy to the device).
    Cpu,
}

/// What a box reaching outside its array does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutOfBounds {
    /// Fails with InvalidArgument naming the array's shape.
    Error,
    /// Padded with the array's fill value.
    Fill,
}

/// When a decoded-cache hit checks that its object (shard, or chunk object) is still the
/// generation the chunk was decoded from (`recheck_cached_data`, after tensorstore's option
/// of that name). Cached array metadata follows the same rule against its `zarr.json` (or
/// `.zarray`). The check is one `head` per object per batch: a `stat` locally, a HEAD
/// request (a round trip) on an object store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Recheck {
    /// `true`: every batch that hits checks (a rewrite is noticed at the next batch).
    Always,
    /// `false`, or `"open"` (what tensorstore calls data cached since the open: a
    /// pipeline's cache starts empty when it is made, so the two are the same here): never;
    /// a rewritten object may be served from the cache for as long as its chunks stay there.
    Never {
        /// Given as `"open"` (kept so the config reads back as written).
        open: bool,
    },
    /// A number of seconds: hits check once that long has passed since the object's
    /// generation was last confirmed (read, or checked); within it, hits are served
    /// unchecked, so a rewrite is noticed at most this late.
    After(f64),
}

impl Recheck {
    /// The interval after which a hit checks (`None`: never; zero: always).
    pub fn interval(self) -> Option<std::time::Duration> {
        match self {
            Recheck::Always => Some(std::time::Duration::ZERO),
            Recheck::Never { .. } => None,
            Recheck::After(s) => Some(std::time::Duration::from_secs_f64(s)),
        }
    }
}

impl Serialize for Recheck {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match *self {
            Recheck::Always => s.serialize_bool(true),
            Recheck::Never { open: false } => s.serialize_bool(false),
            Recheck::Never { open: true } => s.serialize_str("open"),
            Recheck::After(x) => s.serialize_f64(x),
        }
    }
}

impl<'de> Deserialize<'de> for Recheck {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Seconds(f64),
            Text(String),
        }
        let bad = || serde::de::Error::custom("expected true, false, \"open\" or a number of seconds (0 to 1e9)");
        match Raw::deserialize(d).map_err(|_| bad())? {
            Raw::Bool(true) => Ok(Recheck::Always),
            Raw::Bool(false) => Ok(Recheck::Never { open: false }),
            Raw::Text(t) if t == "open" => Ok(Recheck::Never { open: true }),
            Raw::Seconds(x) if x.is_finite() && (0.0..=1e9).contains(&x) => Ok(Recheck::After(x)),
            _ => Err(bad()),
        }
    }
}

/// Largest byte size of any one buffer a config may ask for (128 TiB).
pub(crate) const MAX_BUFFER_BYTES: u64 = 1 << 47;

/// Most entries any one metadata cache may be given (2^24): far beyond any batch's need
/// (a batch of 2^16 samples touching 256 shards each), and slots are made as they are first
/// used, so a large capacity costs nothing until it is filled.
pub(crate) const MAX_CACHE_ENTRIES: u32 = 1 << 24;

/// Bound of the decoded chunks shared across the look-ahead window when
/// `decoded_cache_bytes` is unset (1 GiB).
pub(crate) const WINDOW_CACHE_BYTES: u64 = 1 << 30;

/// The device chunk store's pool when `device_chunk_cache_bytes` is unset (1 GiB, the CPU
/// window cache's bound): allocated only once a batch keeps a chunk for a later one.
pub(crate) const DEVICE_STORE_DEFAULT_BYTES: u64 = 1 << 30;

/// What the decoded-chunk cache of the CPU path keeps ([`Config::decoded_cache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecodedCachePolicy {
    /// Bytes at most (0: off).
    pub bytes: u64,
    /// `Some(w)`: an entry no batch used in the last `w` batches is dropped (sharing across
    /// the look-ahead window); `None`: kept until evicted by the byte bound (LRU).
    pub window_batches: Option<u64>,
}

/// Most worker threads a pipeline may start (1024): beyond any machine's cores many times
/// over; each thread reserves its stack, and the OS refuses threads long before 2^32.
pub(crate) const MAX_IO_THREADS: u32 = 1024;

/// Validated configuration. Field docs are the user-facing docs of `damacy.Config`; every
/// field has a default, unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Samples per batch (the batch tensor's first dimension).
    pub samples_per_batch: u32,
    /// Shape of every sample; each sample's aabb must have exactly this extent.
    pub sample_shape: Vec<u64>,
    /// Output dtype: "f32", "bf16", or for labels "u8", "i32", "i64".
    pub dtype: OutDtype,
    /// "cpu" or "cuda:N" (the device of the output tensors; handled by the extension).
    pub device: String,
    /// "auto", "gpu" or "cpu": where chunks are decoded.
    pub decode: Decode,
    /// How many pushed samples may wait ahead of the next pop (the prefetch window; at least
    /// `samples_per_batch`). Unset (null): derived from `samples_per_batch`, 8 batches,
    /// at least 64 samples and at most 1024 (or one batch, if larger):
    /// [`Config::lookahead`].
    pub lookahead_samples: Option<u32>,
    /// Worker threads for metadata, reads, decode and assembly (1 to 1024).
    pub n_io_threads: u32,
    /// Worker threads added (once, at the first object store sample: `s3://`, `gs://`,
    /// `az://`, `http(s)://`) to the `n_io_threads`: a remote read holds its thread for a
    /// network round trip, so threads bound the requests in flight (0 to 1024; 0: none).
    pub n_remote_io_threads: u32,
    /// Capacity of the array metadata cache (entries, 1 to 2^24).
    pub n_array_meta_cache: u32,
    /// Capacity of the shard index cache (entries, 1 to 2^24).
    pub n_shard_index_cache: u32,
    /// Capacity of the blosc chunk layout cache (entries, at most 2^24; GPU path). 0 turns
    /// layouts off: blosc chunks are then staged and decoded whole.
    pub n_chunk_layout_cache: u32,
    /// Output buffers (batches in flight plus batches held by the caller).
    pub n_batch_buffers: u32,
    /// Budget for compressed bytes read for one batch.
    pub staging_bytes: u64,
    /// Budget for decoded chunk bytes held for one batch (both paths).
    pub decoded_bytes: u64,
    /// Largest read op after coalescing adjacent byte ranges of one object.
    pub max_read_op_bytes: u64,
    /// Decoded chunks kept across batches on the CPU path, in bytes. Unset (null, the
    /// default): chunks shared by the batches of the look-ahead window, at most
    /// [`WINDOW_CACHE_BYTES`], each dropped once no batch of the window used it
    /// ([`Config::decoded_cache`]). 0: off. N: an LRU cache of N bytes kept across the
    /// window too (pays off when crops revisit chunks: data that fits in RAM, several
    /// epochs).
    pub decoded_cache_bytes: Option<u64>,
    /// Decoded chunks kept in device memory across the batches of the look-ahead window on
    /// the GPU path, in bytes (one pool, allocated at the first batch that keeps a chunk):
    /// a chunk that a later batch of the window reads is decoded once and copied from the
    /// pool by the batches after ([`Config::device_store_bytes`]). Unset (null):
    /// [`DEVICE_STORE_DEFAULT_BYTES`]. 0: off. Counted in the GPU memory the pipeline uses.
    pub device_chunk_cache_bytes: Option<u64>,
    /// When a decoded-cache hit checks that its shard (or chunk object) was not rewritten:
    /// `true` (every batch: one `head` per object per batch, a round trip on object
    /// stores), `false` or `"open"` (never: served from the cache until evicted), or a
    /// number of seconds (default 1.0: on object stores, once that long has passed since the
    /// object's generation was last confirmed, so a rewrite is noticed at most that late;
    /// local files are checked every batch, a `stat` being cheap). A check that
    /// finds the object changed fails that batch (Storage); later batches read the new data.
    pub recheck_cached_data: Recheck,
    /// Default `pop` timeout in seconds.
    pub pop_timeout_s: f64,
    /// "error" or "fill": what a box reaching outside the array does.
    pub out_of_bounds: OutOfBounds,
    /// Arrays the pipeline will read (optional). Their metadata is loaded when the pipeline
    /// is made, and the cache capacities are checked against their geometry then
    /// (InvalidArgument naming the knob and the minimum; NotFound for a missing array)
    /// instead of at the first batch that reads each array.
    pub arrays: Vec<String>,
    /// Device path: batches kept launched on the GPU ahead of the one returned (1 to 8).
    /// More overlap of decode with the caller's step costs one batch of device memory each.
    pub device_ahead: u32,
    /// Options for object stores (`s3://`, `gs://`, `az://`, `http(s)://` arrays), over
    /// what the environment says (`AWS_*`, `GOOGLE_*`, `AZURE_*`): object_store's keys such
    /// as `endpoint`, `region`, `skip_signature`, `timeout`, `connect_timeout`, plus
    /// `max_requests_in_flight`, `max_retries`, `retry_timeout`, `coalesce_gap_bytes`. Ignored for
    /// local arrays.
    pub storage_options: std::collections::BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(4, std::num::NonZero::get);
        Self {
            samples_per_batch: 8,
            sample_shape: vec![64, 64, 64],
            dtype: OutDtype::F32,
            device: "cpu".into(),
            decode: Decode::Auto,
            lookahead_samples: None,
            n_io_threads: threads.clamp(2, 32) as u32,
            n_remote_io_threads: 32,
            n_array_meta_cache: 64,
            n_shard_index_cache: 4096,
            n_chunk_layout_cache: 16384,
            n_batch_buffers: 4,
            staging_bytes: 512 << 20,
            decoded_bytes: 4 << 30,
            max_read_op_bytes: 4 << 20,
            decoded_cache_bytes: None,
            device_chunk_cache_bytes: None,
            recheck_cached_data: Recheck::After(1.0),
            pop_timeout_s: 60.0,
            out_of_bounds: OutOfBounds::Error,
            arrays: Vec::new(),
            device_ahead: 2,
            storage_options: std::collections::BTreeMap::new(),
        }
    }
}

fn at_least(field: &str, v: u64, min: u64) -> Result<()> {
    if v < min {
        return Err(err!(InvalidArgument, "config field `{field}`: expected at least {min}, found {v}"));
    }
    Ok(())
}

impl Config {
    /// Parses a JSON object of config fields over the defaults and validates the result.
    ///
    /// # Errors
    /// InvalidArgument naming the field for unknown fields, wrong types or invalid values.
    pub fn from_json(json: &str) -> Result<Self> {
        // serde would also accept a sequence for a struct ("[1]"); a config is an object.
        if !json.trim_start().starts_with('{') {
            return Err(err!(InvalidArgument, "config: expected a JSON object"));
        }
        let mut de = serde_json::Deserializer::from_str(json);
        let c: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                err!(InvalidArgument, "config: invalid JSON: {inner}")
            } else if path.is_empty() || path == "." {
                err!(InvalidArgument, "config: {inner}")
            } else {
                err!(InvalidArgument, "config field `{path}`: {inner}")
            }
        })?;
        de.end().map_err(|e| err!(InvalidArgument, "config: invalid JSON: {e}"))?;
        c.validate()?;
        Ok(c)
    }

    /// The configuration as a JSON object with every field.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Samples per batch.
    pub fn samples_per_batch(&self) -> u32 {
        self.samples_per_batch
    }

    /// The look-ahead window in samples: `lookahead_samples`, or when unset 8 batches,
    /// clamped to 64..=1024 samples and never below one batch (a long window keeps the
    /// readers and decoders busy across batch boundaries; the issue-18 H200 profile:
    /// 2 batches of 32 in the window gave 3,900 crops/s, 8 batches 4,600).
    pub fn lookahead(&self) -> u32 {
        self.lookahead_samples.unwrap_or_else(|| self.samples_per_batch.saturating_mul(8).clamp(64, 1024).max(self.samples_per_batch))
    }

    /// The device chunk store's pool in bytes (GPU path; 0: off): `device_chunk_cache_bytes`,
    /// or [`DEVICE_STORE_DEFAULT_BYTES`] when unset.
    pub(crate) fn device_store_bytes(&self) -> u64 {
        self.device_chunk_cache_bytes.unwrap_or(DEVICE_STORE_DEFAULT_BYTES)
    }

    /// What the CPU path's decoded-chunk cache keeps: with `decoded_cache_bytes` unset, the
    /// chunks of the look-ahead window's batches (plus the batches in flight and held,
    /// `n_batch_buffers`), at most [`WINDOW_CACHE_BYTES`]; else an LRU of that many bytes.
    pub(crate) fn decoded_cache(&self) -> DecodedCachePolicy {
        match self.decoded_cache_bytes {
            Some(bytes) => DecodedCachePolicy { bytes, window_batches: None },
            None => {
                let window = u64::from(self.lookahead().div_ceil(self.samples_per_batch.max(1))) + u64::from(self.n_batch_buffers);
                DecodedCachePolicy { bytes: WINDOW_CACHE_BYTES, window_batches: Some(window) }
            }
        }
    }

    /// `true`: out-of-bounds parts of boxes are filled.
    pub fn out_of_bounds_fill(&self) -> bool {
        self.out_of_bounds == OutOfBounds::Fill
    }

    /// Checks every field and the relations between fields.
    ///
    /// # Errors
    /// InvalidArgument naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.sample_shape.is_empty() || self.sample_shape.contains(&0) {
            return Err(err!(InvalidArgument, "config field `sample_shape`: expected a non-empty list of positive integers, found {:?}", self.sample_shape));
        }
        for (field, v, min) in [
            ("samples_per_batch", self.samples_per_batch, 1),
            ("lookahead_samples", self.lookahead_samples.unwrap_or(1), 1),
            ("n_io_threads", self.n_io_threads, 1),
            ("n_array_meta_cache", self.n_array_meta_cache, 1),
            ("n_shard_index_cache", self.n_shard_index_cache, 1),
            ("n_batch_buffers", self.n_batch_buffers, 1),
            ("device_ahead", self.device_ahead, 1),
        ] {
            at_least(field, u64::from(v), min)?;
        }
        for (field, v) in [("staging_bytes", self.staging_bytes), ("decoded_bytes", self.decoded_bytes), ("max_read_op_bytes", self.max_read_op_bytes)] {
            at_least(field, v, 1)?;
        }
        for (field, v, max) in [
            ("n_io_threads", self.n_io_threads, MAX_IO_THREADS),
            ("n_remote_io_threads", self.n_remote_io_threads, MAX_IO_THREADS),
            ("n_array_meta_cache", self.n_array_meta_cache, MAX_CACHE_ENTRIES),
            ("n_shard_index_cache", self.n_shard_index_cache, MAX_CACHE_ENTRIES),
            ("n_chunk_layout_cache", self.n_chunk_layout_cache, MAX_CACHE_ENTRIES),
        ] {
            if v > max {
                return Err(err!(InvalidArgument, "config field `{field}`: expected at most {max}, found {v}"));
            }
        }
        if self.device_ahead > 8 {
            return Err(err!(InvalidArgument, "config field `device_ahead`: expected 1 to 8, found {}", self.device_ahead));
        }
        if !(self.pop_timeout_s > 0.0 && self.pop_timeout_s.is_finite()) {
            return Err(err!(InvalidArgument, "config field `pop_timeout_s`: expected a positive number of seconds, found {}", self.pop_timeout_s));
        }
        let device_ok = self.device == "cpu" || self.device == "cuda" || self.device.strip_prefix("cuda:").is_some_and(|n| n.parse::<u32>().is_ok());
        if !device_ok {
            return Err(err!(InvalidArgument, "config field `device`: expected \"cpu\" or \"cuda:N\", found {:?}", self.device));
        }
        if self.lookahead_samples.is_some_and(|l| l < self.samples_per_batch) {
            return Err(err!(
                InvalidArgument,
                "config field `lookahead_samples`: must be at least samples_per_batch ({}), found {}",
                self.samples_per_batch,
                self.lookahead()
            ));
        }
        // The GPU path assembles f32/bf16 only: "auto" decodes integer outputs on the CPU
        // (then one copy to the device); "gpu" with an integer output is a mistake.
        if !self.dtype.is_float() && self.device.starts_with("cuda") && self.decode == Decode::Gpu {
            return Err(err!(
                InvalidArgument,
                "config field `dtype`: {:?} is not supported by the GPU decode path (decode \"gpu\"); set decode=\"auto\" or \"cpu\" (CPU decode, then one copy to the device) or use \"f32\"/\"bf16\"",
                self.dtype.name()
            ));
        }
        if self.sample_shape.len() > crate::zarr::MAX_RANK {
            return Err(err!(InvalidArgument, "config field `sample_shape`: rank {} exceeds {}", self.sample_shape.len(), crate::zarr::MAX_RANK));
        }
        if let Some(x) = self.sample_shape.iter().find(|&&x| x > crate::zarr::MAX_EXTENT) {
            return Err(err!(InvalidArgument, "config field `sample_shape`: extent {x} exceeds 2^63 - 1"));
        }
        self.batch_bytes()?;
        for (knob, v) in [("staging_bytes", self.staging_bytes), ("decoded_bytes", self.decoded_bytes), ("max_read_op_bytes", self.max_read_op_bytes), ("decoded_cache_bytes", self.decoded_cache_bytes.unwrap_or(0)), ("device_chunk_cache_bytes", self.device_store_bytes())] {
            if v > MAX_BUFFER_BYTES {
                return Err(err!(InvalidArgument, "config field `{knob}`: {v} exceeds {MAX_BUFFER_BYTES} (2^47) bytes"));
            }
        }
        if let Some(k) = self.storage_options.keys().find(|k| !crate::store::known_option(k)) {
            return Err(err!(
                InvalidArgument,
                "config field `storage_options`: unknown key `{k}` (object_store's S3, GCS, Azure and HTTP client keys, or {}, {}, {})",
                crate::store::MAX_IN_FLIGHT,
                crate::store::MAX_RETRIES,
                crate::store::RETRY_TIMEOUT
            ));
        }
        if self.arrays.iter().any(String::is_empty) {
            return Err(err!(InvalidArgument, "config field `arrays`: expected a list of non-empty strings"));
        }
        Ok(())
    }

    /// `true` when batches decode on the device: a CUDA device, and `decode` "gpu", or
    /// "auto" with a float output. The one place this is decided (C++ asks, through the
    /// bridge, after feeding in whether nvCOMP is usable: [`Config::resolved`]).
    pub fn decodes_on_device(&self) -> bool {
        self.device.starts_with("cuda")
            && match self.decode {
                Decode::Gpu => true,
                Decode::Auto => self.dtype.is_float(),
                Decode::Cpu => false,
            }
    }

    /// This config once the device path's availability is known: `unavailable` is empty
    /// when it can run, else why not. "auto" then falls back to CPU decode; "gpu" fails.
    ///
    /// # Errors
    /// Cuda (naming why) for decode "gpu" when the device path cannot run.
    pub fn resolved(&self, unavailable: &str) -> Result<Self> {
        if !self.decodes_on_device() || unavailable.is_empty() {
            return Ok(self.clone());
        }
        if self.decode == Decode::Gpu {
            return Err(err!(Cuda, "decode=\"gpu\": {unavailable}"));
        }
        Ok(Self { decode: Decode::Cpu, ..self.clone() })
    }

    /// Bytes of one output batch, checked: `samples_per_batch × voxels × dtype size` must fit
    /// in 2^47 bytes (no machine holds more; a larger request is a mistake, not an
    /// allocation to attempt).
    ///
    /// # Errors
    /// InvalidArgument naming `sample_shape` and `samples_per_batch`.
    pub fn batch_bytes(&self) -> Result<u64> {
        self.sample_shape
            .iter()
            .try_fold(1u64, |a, &b| a.checked_mul(b))
            .and_then(|v| v.checked_mul(u64::from(self.samples_per_batch)))
            .and_then(|v| v.checked_mul(self.dtype.size() as u64))
            .filter(|&b| b <= MAX_BUFFER_BYTES)
            .ok_or_else(|| {
                err!(
                    InvalidArgument,
                    "config fields `sample_shape` {:?} × `samples_per_batch` {} of {}: one batch would exceed {MAX_BUFFER_BYTES} (2^47) bytes",
                    self.sample_shape,
                    self.samples_per_batch,
                    self.dtype.name()
                )
            })
    }

    /// Voxels of one sample (fits: checked by `validate`).
    pub fn sample_voxels(&self) -> usize {
        self.sample_shape.iter().product::<u64>() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    #[test]
    fn storage_options_are_optional_and_round_trip() {
        assert!(Config::default().storage_options.is_empty());
        let c = Config::from_json(r#"{"storage_options": {"endpoint": "http://127.0.0.1:9000", "skip_signature": "true", "max_retries": "1"}}"#).unwrap();
        assert_eq!(c.storage_options["endpoint"], "http://127.0.0.1:9000");
        assert_eq!(Config::from_json(&c.to_json()).unwrap(), c);
    }

    #[test]
    fn recheck_cached_data_takes_tensorstore_values() {
        assert_eq!(Config::default().recheck_cached_data, Recheck::After(1.0));
        for (json, want) in [("true", Recheck::Always), ("false", Recheck::Never { open: false }), ("\"open\"", Recheck::Never { open: true }), ("2.5", Recheck::After(2.5)), ("0", Recheck::After(0.0))] {
            let c = Config::from_json(&format!(r#"{{"recheck_cached_data": {json}}}"#)).unwrap();
            assert_eq!(c.recheck_cached_data, want, "{json}");
            assert_eq!(Config::from_json(&c.to_json()).unwrap(), c, "{json} round trips");
        }
        assert_eq!(Recheck::Always.interval(), Some(std::time::Duration::ZERO));
        assert_eq!(Recheck::Never { open: true }.interval(), None);
        for bad in ["-1", "\"always\"", "[1]", "1e10", "null"] {
            let e = Config::from_json(&format!(r#"{{"recheck_cached_data": {bad}}}"#)).unwrap_err();
            assert!(e.message().contains("recheck_cached_data") && e.message().contains("open"), "{bad}: {e}");
        }
    }

    #[test]
    fn json_round_trip_keeps_every_field() {
        let c = Config::from_json(r#"{"samples_per_batch": 3, "sample_shape": [4, 5], "dtype": "bf16", "out_of_bounds": "fill"}"#).unwrap();
        assert_eq!(c.samples_per_batch, 3);
        assert_eq!(c.dtype, OutDtype::Bf16);
        assert!(c.out_of_bounds_fill());
        assert_eq!(Config::from_json(&c.to_json()).unwrap(), c);
        let json: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(json["out_of_bounds"], "fill");
        assert_eq!(json["dtype"], "bf16");
        assert_eq!(json.as_object().unwrap().len(), 23, "every field");
    }

    #[test]
    fn device_store_knob_defaults_and_is_capped() {
        assert_eq!(Config::default().device_store_bytes(), DEVICE_STORE_DEFAULT_BYTES);
        assert_eq!(Config::from_json(r#"{"device_chunk_cache_bytes": 4096}"#).unwrap().device_store_bytes(), 4096);
        assert_eq!(Config::from_json(r#"{"device_chunk_cache_bytes": 0}"#).unwrap().device_store_bytes(), 0);
        let e = Config::from_json(&format!(r#"{{"device_chunk_cache_bytes": {}}}"#, MAX_BUFFER_BYTES + 1)).unwrap_err();
        assert!(e.message().contains("device_chunk_cache_bytes"), "{e}");
    }

    #[test]
    fn unknown_and_invalid_fields_name_the_field() {
        let e = Config::from_json(r#"{"sampels_per_batch": 3}"#).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
        assert!(e.message().contains("sampels_per_batch"), "{e}");
        let e = Config::from_json(r#"{"dtype": "f64"}"#).unwrap_err();
        assert!(e.message().contains("`dtype`"), "{e}");
        let e = Config::from_json(r#"{"sample_shape": [4, 0]}"#).unwrap_err();
        assert!(e.message().contains("sample_shape"), "{e}");
        let e = Config::from_json(r#"{"samples_per_batch": 100, "lookahead_samples": 10}"#).unwrap_err();
        assert!(e.message().contains("lookahead_samples"), "{e}");
        let e = Config::from_json(r#"{"lookahead_samples": 0}"#).unwrap_err();
        assert!(e.message().contains("lookahead_samples"), "{e}");
    }

    #[test]
    fn unset_lookahead_and_cache_are_derived() {
        // Issue 18: `samples_per_batch = 128` alone failed on the look-ahead the user never set.
        for (spb, want) in [(1u32, 64u32), (8, 64), (32, 256), (128, 1024), (4096, 4096)] {
            let c = Config::from_json(&format!(r#"{{"samples_per_batch": {spb}, "sample_shape": [1, 2]}}"#)).unwrap();
            assert_eq!(c.lookahead_samples, None);
            assert_eq!(c.lookahead(), want, "spb {spb}");
            assert_eq!(Config::from_json(&c.to_json()).unwrap(), c, "null round-trips as unset");
        }
        let c = Config::from_json(r#"{"samples_per_batch": 8, "lookahead_samples": 8}"#).unwrap();
        assert_eq!(c.lookahead(), 8, "set: as given");
        let p = Config::default().decoded_cache();
        assert_eq!(p, DecodedCachePolicy { bytes: WINDOW_CACHE_BYTES, window_batches: Some(8 + 4) });
        let off = Config::from_json(r#"{"decoded_cache_bytes": 0}"#).unwrap().decoded_cache();
        assert_eq!(off, DecodedCachePolicy { bytes: 0, window_batches: None });
        let lru = Config::from_json(r#"{"decoded_cache_bytes": 1000}"#).unwrap().decoded_cache();
        assert_eq!(lru, DecodedCachePolicy { bytes: 1000, window_batches: None });
    }

    #[test]
    fn the_route_is_decided_here() {
        let gpu = Config::from_json(r#"{"device": "cuda:0"}"#).unwrap();
        assert!(gpu.decodes_on_device());
        assert!(!Config::default().decodes_on_device());
        let fallback = gpu.resolved("no nvCOMP").unwrap();
        assert!(!fallback.decodes_on_device() && fallback.decode == Decode::Cpu);
        assert!(gpu.resolved("").unwrap().decodes_on_device());
        let strict = Config::from_json(r#"{"device": "cuda:0", "decode": "gpu"}"#).unwrap();
        assert_eq!(strict.resolved("no nvCOMP").unwrap_err().status(), Status::Cuda);
    }

    #[test]
    fn every_field_error_names_the_field() {
        for (json, field) in [
            (r#"{"samples_per_batch": -1}"#, "samples_per_batch"),
            (r#"{"samples_per_batch": 0}"#, "samples_per_batch"),
            (r#"{"sample_shape": [1, -2]}"#, "sample_shape"),
            (r#"{"out_of_bounds": "wrap"}"#, "out_of_bounds"),
            (r#"{"pop_timeout_s": -1}"#, "pop_timeout_s"),
            (r#"{"device": "tpu"}"#, "device"),
            (r#"{"device_ahead": 9}"#, "device_ahead"),
            (r#"{"staging_bytes": 18446744073709551615}"#, "staging_bytes"),
            (r#"{"arrays": [""]}"#, "arrays"),
            (r#"{"n_io_threads": "2"}"#, "n_io_threads"),
            (r#"{"storage_options": {"endpont": "http://x"}}"#, "storage_options"),
            (r#"{"storage_options": {"region": 3}}"#, "storage_options"),
        ] {
            let e = Config::from_json(json).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument, "{json}");
            assert!(e.message().contains(field), "{json}: {e}");
        }
        assert!(Config::from_json("[1]").is_err());
        for bad in [r#"{"samples_per_batch": 1} x"#, "{not json", "{"] {
            let e = Config::from_json(bad).unwrap_err();
            assert!(e.message().contains("invalid JSON"), "{bad}: {e}");
        }
    }

    #[test]
    fn counts_that_size_resources_are_capped() {
        for (field, max) in [("n_io_threads", MAX_IO_THREADS), ("n_remote_io_threads", MAX_IO_THREADS), ("n_array_meta_cache", MAX_CACHE_ENTRIES), ("n_shard_index_cache", MAX_CACHE_ENTRIES), ("n_chunk_layout_cache", MAX_CACHE_ENTRIES)] {
            Config::from_json(&format!(r#"{{"{field}": {max}}}"#)).unwrap();
            for bad in [u64::from(max) + 1, u64::from(u32::MAX)] {
                let e = Config::from_json(&format!(r#"{{"{field}": {bad}}}"#)).unwrap_err();
                assert_eq!(e.status(), Status::InvalidArgument, "{field} = {bad}");
                assert!(e.message().contains(&format!("`{field}`")) && e.message().contains(&format!("at most {max}")), "{e}");
            }
        }
    }

    #[test]
    fn integer_dtypes_parse_and_stay_off_the_gpu_path() {
        for (name, want, size) in [("u8", OutDtype::U8, 1), ("int32", OutDtype::I32, 4), ("i64", OutDtype::I64, 8)] {
            let c = Config::from_json(&format!(r#"{{"dtype": "{name}", "sample_shape": [2, 3], "samples_per_batch": 2}}"#)).unwrap();
            assert_eq!(c.dtype, want);
            assert_eq!(c.batch_bytes().unwrap(), 12 * size as u64);
            assert_eq!(Config::from_json(&c.to_json()).unwrap(), c);
            assert!(!c.dtype.is_float());
        }
        let e = Config::from_json(r#"{"dtype": "u8", "device": "cuda:0", "decode": "gpu"}"#).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
        assert!(e.message().contains("`dtype`") && e.message().contains("decode"), "{e}");
        let c = Config::from_json(r#"{"dtype": "i64", "device": "cuda:0", "decode": "cpu"}"#).unwrap();
        assert_eq!(c.dtype, OutDtype::I64);
        let auto = Config::from_json(r#"{"dtype": "u8", "device": "cuda:0"}"#).unwrap();
        assert!(!auto.decodes_on_device(), "auto decodes integer outputs on the CPU");
    }
}
