//! The pipeline's configuration: defaults, JSON in and out, and the one validation pass.

use serde_json::{Map, Value};

use crate::error::{err, Result};
use crate::ffi::PipelineConfig;

/// Output element type of a batch. Casts from each source type: `assemble`'s module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutDtype {
    /// IEEE f32.
    F32,
    /// bfloat16, rounded to nearest even from the f32 value.
    Bf16,
    /// u8 (label arrays): the source value converted with Rust's `as`.
    U8,
    /// i32 (label arrays): the source value converted with Rust's `as`.
    I32,
    /// i64 (label arrays, e.g. class indices for a cross-entropy loss): Rust's `as`.
    I64,
}

impl OutDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            OutDtype::U8 => 1,
            OutDtype::Bf16 => 2,
            OutDtype::F32 | OutDtype::I32 => 4,
            OutDtype::I64 => 8,
        }
    }
    /// The config name ("f32", "bf16", "u8", "i32", "i64").
    pub fn name(self) -> &'static str {
        match self {
            OutDtype::F32 => "f32",
            OutDtype::Bf16 => "bf16",
            OutDtype::U8 => "u8",
            OutDtype::I32 => "i32",
            OutDtype::I64 => "i64",
        }
    }
    /// `true` for the floating-point outputs (the ones the GPU path assembles).
    pub fn is_float(self) -> bool {
        matches!(self, OutDtype::F32 | OutDtype::Bf16)
    }
}

/// Largest byte size of any one buffer a config may ask for (128 TiB).
pub(crate) const MAX_BUFFER_BYTES: u64 = 1 << 47;

/// Validated configuration. Field docs are the user-facing docs of `damacy.Config`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Samples per batch (the batch tensor's first dimension).
    pub samples_per_batch: u32,
    /// Shape of every sample; each sample's aabb must have exactly this extent.
    pub sample_shape: Vec<u64>,
    /// Output dtype.
    pub dtype: OutDtype,
    /// "cpu" or "cuda:N" (the device of the output tensors; handled by the extension).
    pub device: String,
    /// "auto", "gpu" or "cpu": where chunks are decoded.
    pub decode: String,
    /// How many pushed samples may wait ahead of the next pop (the prefetch window).
    pub lookahead_samples: u32,
    /// Worker threads for metadata, reads, decode and assembly.
    pub n_io_threads: u32,
    /// Capacity of the array metadata cache (entries).
    pub n_array_meta_cache: u32,
    /// Capacity of the shard index cache (entries).
    pub n_shard_index_cache: u32,
    /// Capacity of the blosc chunk layout cache (entries; GPU path). 0 turns layouts off:
    /// blosc chunks are then staged and decoded whole.
    pub n_chunk_layout_cache: u32,
    /// Output buffers (batches in flight plus batches held by the caller).
    pub n_batch_buffers: u32,
    /// Budget for compressed bytes read for one batch.
    pub staging_bytes: u64,
    /// Budget for decoded chunk bytes held for one batch.
    pub decoded_bytes: u64,
    /// Largest read op after coalescing adjacent byte ranges of one file.
    pub max_read_op_bytes: u64,
    /// Decoded chunks kept across batches on the CPU path, in bytes (0: off). Pays off when
    /// crops revisit chunks (data that fits in RAM, several epochs).
    pub decoded_cache_bytes: u64,
    /// Default `pop` timeout in seconds.
    pub pop_timeout_s: f64,
    /// `true`: a box reaching outside the array is padded with the fill value; `false`
    /// ("error"): it fails with InvalidArgument naming the array's shape.
    pub out_of_bounds_fill: bool,
    /// Arrays the pipeline will read (optional). Their metadata is loaded when the pipeline
    /// is made, and the cache capacities are checked against their geometry then
    /// (InvalidArgument naming the knob and the minimum; NotFound for a missing array)
    /// instead of at the first batch that reads each array.
    pub arrays: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(4, std::num::NonZero::get);
        Self {
            samples_per_batch: 8,
            sample_shape: vec![64, 64, 64],
            dtype: OutDtype::F32,
            device: "cpu".into(),
            decode: "auto".into(),
            lookahead_samples: 64,
            n_io_threads: threads.clamp(2, 32) as u32,
            n_array_meta_cache: 64,
            n_shard_index_cache: 4096,
            n_chunk_layout_cache: 16384,
            n_batch_buffers: 4,
            staging_bytes: 512 << 20,
            decoded_bytes: 4 << 30,
            max_read_op_bytes: 4 << 20,
            decoded_cache_bytes: 0,
            pop_timeout_s: 60.0,
            out_of_bounds_fill: false,
            arrays: Vec::new(),
        }
    }
}

const FIELDS: &[&str] = &[
    "samples_per_batch",
    "sample_shape",
    "dtype",
    "device",
    "decode",
    "lookahead_samples",
    "n_io_threads",
    "n_array_meta_cache",
    "n_shard_index_cache",
    "n_chunk_layout_cache",
    "n_batch_buffers",
    "staging_bytes",
    "decoded_bytes",
    "max_read_op_bytes",
    "decoded_cache_bytes",
    "pop_timeout_s",
    "out_of_bounds",
    "arrays",
];

fn uint(v: &Value, field: &str, min: u64) -> Result<u64> {
    let n = v
        .as_u64()
        .ok_or_else(|| err!(InvalidArgument, "config field `{field}`: expected a non-negative integer, found {v}"))?;
    if n < min {
        return Err(err!(InvalidArgument, "config field `{field}`: expected at least {min}, found {n}"));
    }
    Ok(n)
}

fn small_uint(v: &Value, field: &str, min: u64) -> Result<u32> {
    let n = uint(v, field, min)?;
    u32::try_from(n).map_err(|_| err!(InvalidArgument, "config field `{field}`: {n} is too large"))
}

fn string<'a>(v: &'a Value, field: &str, allowed: &[&str]) -> Result<&'a str> {
    let s = v
        .as_str()
        .ok_or_else(|| err!(InvalidArgument, "config field `{field}`: expected a string, found {v}"))?;
    if !allowed.is_empty() && !allowed.contains(&s) {
        return Err(err!(InvalidArgument, "config field `{field}`: expected one of {allowed:?}, found {s:?}"));
    }
    Ok(s)
}

impl Config {
    /// Parses a JSON object of config fields over the defaults and validates the result.
    ///
    /// # Errors
    /// InvalidArgument naming the field for unknown fields, wrong types or invalid values.
    pub fn from_json(json: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| err!(InvalidArgument, "config is not valid JSON: {e}"))?;
        let Value::Object(map) = value else {
            return Err(err!(InvalidArgument, "config must be a JSON object, found {value}"));
        };
        Self::from_map(&map)
    }

    fn from_map(map: &Map<String, Value>) -> Result<Self> {
        let mut c = Self::default();
        for (key, v) in map {
            match key.as_str() {
                "samples_per_batch" => c.samples_per_batch = small_uint(v, key, 1)?,
                "sample_shape" => {
                    let items = v.as_array().ok_or_else(|| {
                        err!(InvalidArgument, "config field `sample_shape`: expected a list of positive integers, found {v}")
                    })?;
                    c.sample_shape = items.iter().map(|x| uint(x, key, 1)).collect::<Result<_>>()?;
                }
                "dtype" => {
                    let names = ["f32", "bf16", "u8", "i32", "i64", "float32", "bfloat16", "uint8", "int32", "int64"];
                    c.dtype = match string(v, key, &names)? {
                        "f32" | "float32" => OutDtype::F32,
                        "bf16" | "bfloat16" => OutDtype::Bf16,
                        "u8" | "uint8" => OutDtype::U8,
                        "i32" | "int32" => OutDtype::I32,
                        _ => OutDtype::I64,
                    }
                }
                "device" => {
                    let s = string(v, key, &[])?;
                    let ok = s == "cpu"
                        || s == "cuda"
                        || s.strip_prefix("cuda:").is_some_and(|n| n.parse::<u32>().is_ok());
                    if !ok {
                        return Err(err!(InvalidArgument, "config field `device`: expected \"cpu\" or \"cuda:N\", found {s:?}"));
                    }
                    c.device = s.to_string();
                }
                "decode" => c.decode = string(v, key, &["auto", "gpu", "cpu"])?.to_string(),
                "lookahead_samples" => c.lookahead_samples = small_uint(v, key, 1)?,
                "n_io_threads" => c.n_io_threads = small_uint(v, key, 1)?,
                "n_array_meta_cache" => c.n_array_meta_cache = small_uint(v, key, 1)?,
                "n_shard_index_cache" => c.n_shard_index_cache = small_uint(v, key, 1)?,
                "n_chunk_layout_cache" => c.n_chunk_layout_cache = small_uint(v, key, 0)?,
                "n_batch_buffers" => c.n_batch_buffers = small_uint(v, key, 1)?,
                "staging_bytes" => c.staging_bytes = uint(v, key, 1)?,
                "decoded_bytes" => c.decoded_bytes = uint(v, key, 1)?,
                "max_read_op_bytes" => c.max_read_op_bytes = uint(v, key, 1)?,
                "decoded_cache_bytes" => c.decoded_cache_bytes = uint(v, key, 0)?,
                "pop_timeout_s" => {
                    let t = v.as_f64().filter(|t| *t > 0.0 && t.is_finite()).ok_or_else(|| {
                        err!(InvalidArgument, "config field `pop_timeout_s`: expected a positive number of seconds, found {v}")
                    })?;
                    c.pop_timeout_s = t;
                }
                "out_of_bounds" => c.out_of_bounds_fill = string(v, key, &["error", "fill"])? == "fill",
                "arrays" => {
                    let items = v.as_array().ok_or_else(|| err!(InvalidArgument, "config field `arrays`: expected a list of array uris, found {v}"))?;
                    c.arrays = items
                        .iter()
                        .map(|x| x.as_str().filter(|s| !s.is_empty()).map(str::to_string))
                        .collect::<Option<_>>()
                        .ok_or_else(|| err!(InvalidArgument, "config field `arrays`: expected a list of non-empty strings, found {v}"))?;
                }
                other => {
                    return Err(err!(InvalidArgument, "unknown config field `{other}`; known fields: {}", FIELDS.join(", ")));
                }
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks the relations between fields.
    ///
    /// # Errors
    /// InvalidArgument naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.sample_shape.is_empty() || self.sample_shape.contains(&0) {
            return Err(err!(InvalidArgument, "config field `sample_shape`: expected a non-empty list of positive integers, found {:?}", self.sample_shape));
        }
        if self.samples_per_batch == 0 {
            return Err(err!(InvalidArgument, "config field `samples_per_batch`: expected at least 1"));
        }
        if self.lookahead_samples < self.samples_per_batch {
            return Err(err!(
                InvalidArgument,
                "config field `lookahead_samples`: must be at least samples_per_batch ({}), found {}",
                self.samples_per_batch,
                self.lookahead_samples
            ));
        }
        if self.n_batch_buffers < 1 {
            return Err(err!(InvalidArgument, "config field `n_batch_buffers`: expected at least 1"));
        }
        // The GPU path (device "cuda*" with decode other than "cpu", as Pipeline::new decides)
        // assembles f32/bf16 only; integer outputs take the CPU path and one copy.
        if !self.dtype.is_float() && self.device_decode() {
            return Err(err!(
                InvalidArgument,
                "config field `dtype`: {:?} is not supported by the GPU path (device {:?}, decode {:?}); set decode=\"cpu\" (CPU decode, then one copy to the device) or use \"f32\"/\"bf16\"",
                self.dtype.name(),
                self.device,
                self.decode
            ));
        }
        if self.sample_shape.len() > crate::zarr::MAX_RANK {
            return Err(err!(InvalidArgument, "config field `sample_shape`: rank {} exceeds {}", self.sample_shape.len(), crate::zarr::MAX_RANK));
        }
        if let Some(x) = self.sample_shape.iter().find(|&&x| x > crate::zarr::MAX_EXTENT) {
            return Err(err!(InvalidArgument, "config field `sample_shape`: extent {x} exceeds 2^63 - 1"));
        }
        self.batch_bytes()?;
        for (knob, v) in [("staging_bytes", self.staging_bytes), ("decoded_bytes", self.decoded_bytes), ("max_read_op_bytes", self.max_read_op_bytes), ("decoded_cache_bytes", self.decoded_cache_bytes)] {
            if v > MAX_BUFFER_BYTES {
                return Err(err!(InvalidArgument, "config field `{knob}`: {v} exceeds {MAX_BUFFER_BYTES} (2^47) bytes"));
            }
        }
        if self.arrays.iter().any(String::is_empty) {
            return Err(err!(InvalidArgument, "config field `arrays`: expected a list of non-empty strings"));
        }
        Ok(())
    }

    /// `true` when batches decode on the device: a CUDA device and `decode` other than
    /// "cpu". The one place this is decided.
    pub fn device_decode(&self) -> bool {
        self.device.starts_with("cuda") && self.decode != "cpu"
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

    /// The configuration as a JSON object with every field.
    pub fn to_json(&self) -> String {
        Value::Object(fields(&self.clone().into())).to_string()
    }
}

impl From<Config> for PipelineConfig {
    fn from(c: Config) -> Self {
        PipelineConfig {
            samples_per_batch: c.samples_per_batch,
            sample_shape: c.sample_shape,
            dtype: c.dtype.name().into(),
            device: c.device,
            decode: c.decode,
            lookahead_samples: c.lookahead_samples,
            n_io_threads: c.n_io_threads,
            n_array_meta_cache: c.n_array_meta_cache,
            n_shard_index_cache: c.n_shard_index_cache,
            n_chunk_layout_cache: c.n_chunk_layout_cache,
            n_batch_buffers: c.n_batch_buffers,
            staging_bytes: c.staging_bytes,
            decoded_bytes: c.decoded_bytes,
            max_read_op_bytes: c.max_read_op_bytes,
            decoded_cache_bytes: c.decoded_cache_bytes,
            pop_timeout_s: c.pop_timeout_s,
            out_of_bounds: if c.out_of_bounds_fill { "fill".into() } else { "error".into() },
            arrays: c.arrays,
        }
    }
}

impl TryFrom<&PipelineConfig> for Config {
    type Error = crate::error::Error;
    fn try_from(p: &PipelineConfig) -> Result<Self> {
        Self::from_map(&fields(p))
    }
}

/// Every field of `p` as a JSON object (keys = config field names): the one list shared by
/// `Config::to_json` and the conversion back from the bridge record.
fn fields(p: &PipelineConfig) -> Map<String, Value> {
    let json = serde_json::json!({
        "samples_per_batch": p.samples_per_batch,
        "sample_shape": p.sample_shape,
        "dtype": p.dtype,
        "device": p.device,
        "decode": p.decode,
        "lookahead_samples": p.lookahead_samples,
        "n_io_threads": p.n_io_threads,
        "n_array_meta_cache": p.n_array_meta_cache,
        "n_shard_index_cache": p.n_shard_index_cache,
        "n_chunk_layout_cache": p.n_chunk_layout_cache,
        "n_batch_buffers": p.n_batch_buffers,
        "staging_bytes": p.staging_bytes,
        "decoded_bytes": p.decoded_bytes,
        "max_read_op_bytes": p.max_read_op_bytes,
        "decoded_cache_bytes": p.decoded_cache_bytes,
        "pop_timeout_s": p.pop_timeout_s,
        "out_of_bounds": p.out_of_bounds,
        "arrays": p.arrays,
    });
    match json {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    #[test]
    fn json_round_trip_keeps_every_field() {
        let c = Config::from_json(r#"{"samples_per_batch": 3, "sample_shape": [4, 5], "dtype": "bf16", "out_of_bounds": "fill"}"#).unwrap();
        assert_eq!(c.samples_per_batch, 3);
        assert_eq!(c.dtype, OutDtype::Bf16);
        assert!(c.out_of_bounds_fill);
        assert_eq!(Config::from_json(&c.to_json()).unwrap(), c);
        let p: PipelineConfig = c.clone().into();
        assert_eq!(Config::try_from(&p).unwrap(), c);
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
        let e = Config::from_json(r#"{"dtype": "u8", "device": "cuda:0"}"#).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
        assert!(e.message().contains("`dtype`") && e.message().contains("decode"), "{e}");
        let c = Config::from_json(r#"{"dtype": "i64", "device": "cuda:0", "decode": "cpu"}"#).unwrap();
        assert_eq!(c.dtype, OutDtype::I64);
    }
}
