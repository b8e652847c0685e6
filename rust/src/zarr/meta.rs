//! `zarr.json` (Zarr v3 array metadata) → [`ArrayMeta`].

use serde_json::Value;

use crate::decode::cpu::ChunkCodec;
use crate::error::{err, Result};

/// Element type of the stored array, as far as damacy can cast it to the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceDtype {
    /// `bool`, one byte 0/1.
    Bool,
    /// `uint8`.
    U8,
    /// `int8`.
    I8,
    /// `uint16`.
    U16,
    /// `int16`.
    I16,
    /// `uint32`.
    U32,
    /// `int32`.
    I32,
    /// `uint64`.
    U64,
    /// `int64`.
    I64,
    /// `float16`.
    F16,
    /// `bfloat16`.
    Bf16,
    /// `float32`.
    F32,
    /// `float64`.
    F64,
}

impl SourceDtype {
    /// From the Zarr v3 `data_type` name; `None` when damacy cannot cast it.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "bool" => Self::Bool,
            "uint8" => Self::U8,
            "int8" => Self::I8,
            "uint16" => Self::U16,
            "int16" => Self::I16,
            "uint32" => Self::U32,
            "int32" => Self::I32,
            "uint64" => Self::U64,
            "int64" => Self::I64,
            "float16" => Self::F16,
            "bfloat16" => Self::Bf16,
            "float32" => Self::F32,
            "float64" => Self::F64,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::Bool | Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Self::F16 | Self::Bf16 | Self::F32 | Self::F64)
    }

    /// The fill value as one native-endian element.
    fn fill_bytes(self, v: &Value) -> Option<Vec<u8>> {
        if let Some(s) = v.as_str() {
            if let Some(hex) = s.strip_prefix("0x") {
                let bits = u64::from_str_radix(hex, 16).ok()?;
                return Some(bits.to_ne_bytes()[..self.size()].to_vec()).filter(|_| cfg!(target_endian = "little"));
            }
            if !self.is_float() {
                return None;
            }
            let x = match s {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                _ => return None,
            };
            return Some(self.float_bytes(x));
        }
        Some(match self {
            Self::Bool => vec![u8::from(v.as_bool()?)],
            Self::U8 => u8::try_from(v.as_u64()?).ok()?.to_ne_bytes().to_vec(),
            Self::I8 => i8::try_from(v.as_i64()?).ok()?.to_ne_bytes().to_vec(),
            Self::U16 => u16::try_from(v.as_u64()?).ok()?.to_ne_bytes().to_vec(),
            Self::I16 => i16::try_from(v.as_i64()?).ok()?.to_ne_bytes().to_vec(),
            Self::U32 => u32::try_from(v.as_u64()?).ok()?.to_ne_bytes().to_vec(),
            Self::I32 => i32::try_from(v.as_i64()?).ok()?.to_ne_bytes().to_vec(),
            Self::U64 => v.as_u64()?.to_ne_bytes().to_vec(),
            Self::I64 => v.as_i64()?.to_ne_bytes().to_vec(),
            Self::F16 | Self::Bf16 | Self::F32 | Self::F64 => self.float_bytes(v.as_f64()?),
        })
    }

    fn float_bytes(self, x: f64) -> Vec<u8> {
        match self {
            Self::F16 => half::f16::from_f64(x).to_ne_bytes().to_vec(),
            Self::Bf16 => half::bf16::from_f64(x).to_ne_bytes().to_vec(),
            Self::F32 => (x as f32).to_ne_bytes().to_vec(),
            _ => x.to_ne_bytes().to_vec(),
        }
    }
}

/// How chunk coordinates become store keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyEncoding {
    /// `"default"`: `c/1/2/3` (or `c.1.2.3`).
    Default {
        /// The separator, `/` or `.`.
        separator: char,
    },
    /// `"v2"`: `1.2.3` (or `1/2/3`).
    V2 {
        /// The separator, `.` or `/`.
        separator: char,
    },
}

impl KeyEncoding {
    /// The key of the chunk (or shard) at grid coordinates `coords`.
    pub fn key(&self, coords: &[u64]) -> String {
        use std::fmt::Write;
        let (mut key, sep) = match *self {
            KeyEncoding::Default { separator } => ("c".to_string(), separator),
            KeyEncoding::V2 { separator } => (String::new(), separator),
        };
        if coords.is_empty() {
            return if key.is_empty() { "0".into() } else { key };
        }
        for (i, c) in coords.iter().enumerate() {
            if i > 0 || !key.is_empty() {
                key.push(sep);
            }
            let _ = write!(key, "{c}");
        }
        key
    }
}

/// The `sharding_indexed` codec's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sharding {
    /// Inner chunk shape.
    pub inner_shape: Vec<u64>,
    /// `true`: the index sits at the start of the shard file.
    pub index_at_start: bool,
    /// `true`: the index is followed by a crc32c checksum (index codecs `bytes, crc32c`).
    pub index_crc32c: bool,
}

impl Sharding {
    /// Inner chunks per shard along each dimension.
    pub fn chunks_per_shard(&self, shard_shape: &[u64]) -> Vec<u64> {
        shard_shape.iter().zip(&self.inner_shape).map(|(s, i)| s / i).collect()
    }
}

/// Parsed array metadata: everything the planner needs about one array.
pub struct ArrayMeta {
    /// Array shape.
    pub shape: Vec<u64>,
    /// Zarr v3 `data_type` name.
    pub data_type: String,
    /// Element type.
    pub dtype: SourceDtype,
    /// One native-endian element holding the fill value.
    pub fill: Vec<u8>,
    /// Chunk grid shape: the shard shape when sharded, else the chunk shape.
    pub grid_shape: Vec<u64>,
    /// Store key encoding of grid cells.
    pub key_encoding: KeyEncoding,
    /// `Some` when the array is sharded.
    pub sharding: Option<Sharding>,
    /// The codecs of one (inner) chunk, as JSON (for `info`).
    pub chunk_codecs: Value,
    /// Decoder of one (inner) chunk.
    pub codec: ChunkCodec,
}

impl std::fmt::Debug for ArrayMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrayMeta")
            .field("shape", &self.shape)
            .field("data_type", &self.data_type)
            .field("grid_shape", &self.grid_shape)
            .field("sharding", &self.sharding)
            .finish_non_exhaustive()
    }
}

fn u64_list(v: &Value, what: &str) -> Result<Vec<u64>> {
    v.as_array()
        .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
        .ok_or_else(|| err!(InvalidArgument, "malformed zarr.json: `{what}` must be a list of non-negative integers, found {v}"))
}

fn positive_list(v: &Value, what: &str, rank: usize) -> Result<Vec<u64>> {
    let l = u64_list(v, what)?;
    if l.len() != rank || l.contains(&0) {
        return Err(err!(InvalidArgument, "malformed zarr.json: `{what}` must hold {rank} positive integers, found {v}"));
    }
    Ok(l)
}

fn codec_name(c: &Value) -> Option<&str> {
    c.as_str().or_else(|| c.get("name").and_then(Value::as_str))
}

impl ArrayMeta {
    /// Parses `zarr.json` bytes.
    ///
    /// # Errors
    /// InvalidArgument for malformed or unsupported metadata (naming the field or codec),
    /// DtypeMismatch for a data type damacy cannot cast.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| err!(InvalidArgument, "malformed zarr.json: {e}"))?;
        if v.get("zarr_format").and_then(Value::as_u64) != Some(3) {
            return Err(err!(InvalidArgument, "malformed zarr.json: expected \"zarr_format\": 3, found {}", v.get("zarr_format").unwrap_or(&Value::Null)));
        }
        if v.get("node_type").and_then(Value::as_str) != Some("array") {
            return Err(err!(InvalidArgument, "zarr.json describes a {}, not an array", v.get("node_type").unwrap_or(&Value::Null)));
        }
        let shape = u64_list(v.get("shape").unwrap_or(&Value::Null), "shape")?;
        let rank = shape.len();
        let data_type = v
            .get("data_type")
            .and_then(|d| d.as_str().or_else(|| d.get("name").and_then(Value::as_str)))
            .ok_or_else(|| err!(InvalidArgument, "malformed zarr.json: `data_type` missing or not a name"))?
            .to_string();
        let dtype = SourceDtype::from_name(&data_type).ok_or_else(|| {
            err!(DtypeMismatch, "data type `{data_type}` cannot be cast to f32/bf16 (supported: bool, (u)int8..64, float16, bfloat16, float32, float64)")
        })?;
        let fill_json = v.get("fill_value").cloned().unwrap_or(Value::Null);
        let fill = dtype
            .fill_bytes(&fill_json)
            .ok_or_else(|| err!(InvalidArgument, "malformed zarr.json: fill_value {fill_json} is not a valid {data_type}"))?;

        let grid = v.get("chunk_grid").ok_or_else(|| err!(InvalidArgument, "malformed zarr.json: `chunk_grid` missing"))?;
        if codec_name(grid) != Some("regular") {
            return Err(err!(InvalidArgument, "unsupported chunk grid {}: only `regular` is supported", grid.get("name").unwrap_or(&Value::Null)));
        }
        let grid_shape = positive_list(&grid["configuration"]["chunk_shape"], "chunk_grid.configuration.chunk_shape", rank)?;

        let key_encoding = Self::parse_key_encoding(v.get("chunk_key_encoding"))?;

        let codecs = v.get("codecs").and_then(Value::as_array).ok_or_else(|| err!(InvalidArgument, "malformed zarr.json: `codecs` must be a list"))?;
        let sharding_pos = codecs.iter().position(|c| codec_name(c) == Some("sharding_indexed"));
        let (sharding, chunk_codecs, chunk_shape) = match sharding_pos {
            None => (None, Value::Array(codecs.clone()), grid_shape.clone()),
            Some(pos) => {
                if codecs.len() != 1 {
                    let names: Vec<_> = codecs.iter().filter_map(codec_name).collect();
                    return Err(err!(InvalidArgument, "unsupported codec chain {names:?}: `sharding_indexed` must be the only array codec (pos {pos})"));
                }
                let cfg = &codecs[pos]["configuration"];
                let inner_shape = positive_list(&cfg["chunk_shape"], "sharding_indexed.chunk_shape", rank)?;
                if grid_shape.iter().zip(&inner_shape).any(|(s, i)| s % i != 0) {
                    return Err(err!(InvalidArgument, "malformed zarr.json: shard shape {grid_shape:?} is not a multiple of the inner chunk shape {inner_shape:?}"));
                }
                let index_at_start = match cfg.get("index_location").and_then(Value::as_str).unwrap_or("end") {
                    "start" => true,
                    "end" => false,
                    other => return Err(err!(InvalidArgument, "malformed zarr.json: index_location {other:?}")),
                };
                let index_codecs: Vec<&str> = cfg["index_codecs"].as_array().map(|a| a.iter().filter_map(codec_name).collect()).unwrap_or_default();
                let index_crc32c = match index_codecs.as_slice() {
                    ["bytes"] => false,
                    ["bytes", "crc32c"] => true,
                    other => return Err(err!(InvalidArgument, "unsupported shard index codecs {other:?} (supported: [bytes], [bytes, crc32c])")),
                };
                if let Some(e) = cfg["index_codecs"][0].get("configuration").and_then(|c| c.get("endian")).and_then(Value::as_str) {
                    if e != "little" {
                        return Err(err!(InvalidArgument, "unsupported shard index endianness {e:?}"));
                    }
                }
                let inner_codecs = cfg.get("codecs").cloned().unwrap_or(Value::Null);
                (Some(Sharding { inner_shape: inner_shape.clone(), index_at_start, index_crc32c }), inner_codecs, inner_shape)
            }
        };
        let codec = ChunkCodec::new(&data_type, &fill_json, &chunk_codecs, &chunk_shape)?;
        Ok(Self { shape, data_type, dtype, fill, grid_shape, key_encoding, sharding, chunk_codecs, codec })
    }

    fn parse_key_encoding(v: Option<&Value>) -> Result<KeyEncoding> {
        let Some(v) = v else { return Ok(KeyEncoding::Default { separator: '/' }) };
        let sep = |default: char| -> Result<char> {
            match v.get("configuration").and_then(|c| c.get("separator")).and_then(Value::as_str) {
                None => Ok(default),
                Some("/") => Ok('/'),
                Some(".") => Ok('.'),
                Some(s) => Err(err!(InvalidArgument, "malformed zarr.json: chunk key separator {s:?}")),
            }
        };
        match codec_name(v) {
            Some("default") => Ok(KeyEncoding::Default { separator: sep('/')? }),
            Some("v2") => Ok(KeyEncoding::V2 { separator: sep('.')? }),
            other => Err(err!(InvalidArgument, "unsupported chunk_key_encoding {other:?}")),
        }
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Shape of one decoded chunk (the inner chunk when sharded).
    pub fn chunk_shape(&self) -> &[u64] {
        self.sharding.as_ref().map_or(&self.grid_shape, |s| &s.inner_shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    const SHARDED: &str = r#"{"zarr_format":3,"node_type":"array","shape":[10,20],"data_type":"uint16",
      "chunk_grid":{"name":"regular","configuration":{"chunk_shape":[8,8]}},
      "chunk_key_encoding":{"name":"default","configuration":{"separator":"/"}},
      "fill_value":7,
      "codecs":[{"name":"sharding_indexed","configuration":{"chunk_shape":[4,4],
        "codecs":[{"name":"bytes","configuration":{"endian":"little"}},{"name":"zstd","configuration":{"level":3,"checksum":false}}],
        "index_codecs":[{"name":"bytes","configuration":{"endian":"little"}},{"name":"crc32c"}],"index_location":"end"}}]}"#;

    #[test]
    fn parses_a_sharded_array() {
        let m = ArrayMeta::parse(SHARDED.as_bytes()).unwrap();
        assert_eq!(m.shape, [10, 20]);
        assert_eq!(m.grid_shape, [8, 8]);
        assert_eq!(m.chunk_shape(), [4, 4]);
        assert_eq!(m.dtype, SourceDtype::U16);
        assert_eq!(m.fill, 7u16.to_ne_bytes());
        let s = m.sharding.as_ref().unwrap();
        assert!(s.index_crc32c && !s.index_at_start);
        assert_eq!(s.chunks_per_shard(&m.grid_shape), [2, 2]);
    }

    #[test]
    fn key_encodings() {
        assert_eq!(KeyEncoding::Default { separator: '/' }.key(&[1, 2, 3]), "c/1/2/3");
        assert_eq!(KeyEncoding::Default { separator: '.' }.key(&[1, 2]), "c.1.2");
        assert_eq!(KeyEncoding::V2 { separator: '.' }.key(&[1, 2]), "1.2");
        assert_eq!(KeyEncoding::V2 { separator: '.' }.key(&[]), "0");
        assert_eq!(KeyEncoding::Default { separator: '/' }.key(&[]), "c");
    }

    #[test]
    fn fill_values() {
        assert!(f32::from_ne_bytes(SourceDtype::F32.fill_bytes(&"NaN".into()).unwrap().try_into().unwrap()).is_nan());
        assert_eq!(SourceDtype::F64.fill_bytes(&"-Infinity".into()).unwrap(), f64::NEG_INFINITY.to_ne_bytes());
        assert_eq!(SourceDtype::F32.fill_bytes(&"0x7fc00000".into()).unwrap(), 0x7fc0_0000u32.to_ne_bytes());
        assert_eq!(SourceDtype::I8.fill_bytes(&(-3).into()).unwrap(), [(-3i8) as u8]);
        assert_eq!(SourceDtype::Bool.fill_bytes(&true.into()).unwrap(), [1]);
        assert!(SourceDtype::U8.fill_bytes(&300.into()).is_none());
        assert!(SourceDtype::U8.fill_bytes(&"NaN".into()).is_none());
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        let e = ArrayMeta::parse(b"{not json").unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
        let e = ArrayMeta::parse(SHARDED.replace("uint16", "complex64").as_bytes()).unwrap_err();
        assert_eq!(e.status(), Status::DtypeMismatch);
        assert!(e.message().contains("complex64"));
        let e = ArrayMeta::parse(SHARDED.replace("\"crc32c\"", "\"adler32\"").as_bytes()).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
        let e = ArrayMeta::parse(SHARDED.replace("[4,4]", "[3,4]").as_bytes()).unwrap_err();
        assert!(e.message().contains("multiple"), "{e}");
    }
}
