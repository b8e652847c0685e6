//! `zarr.json` (Zarr v3 array metadata) → [`ArrayMeta`], through zarrs' metadata types
//! (`ArrayMetadataV3`): serde reads the document, this module checks what damacy needs and
//! computes the geometry with checked arithmetic against the caps below, so no size derived
//! from a hostile file can overflow or allocate unboundedly later.

use serde_json::Value;
use zarrs::metadata::v3::{ArrayMetadataV3, MetadataV3};

use super::codecs::CodecChain;
use crate::error::{err, Result};

/// Most dimensions an array may have.
pub const MAX_RANK: usize = 32;
/// Most inner chunks one shard may hold (its index is 16 bytes per chunk: 256 MiB).
pub const MAX_CHUNKS_PER_SHARD: u64 = 1 << 24;
/// Largest decoded chunk (the memory budgets apply too; this bounds what any budget sees).
pub const MAX_DECODED_CHUNK_BYTES: u64 = 1 << 34;
/// Largest extent of an array dimension: boxes are signed 64-bit.
pub const MAX_EXTENT: u64 = i64::MAX as u64;

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
    pub(crate) fn fill_bytes(self, v: &Value) -> Option<Vec<u8>> {
        if let Some(s) = v.as_str() {
            if let Some(hex) = s.strip_prefix("0x") {
                // The byte representation: exactly two hex digits per byte of the type.
                if hex.len() != 2 * self.size() {
                    return None;
                }
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
    /// Inner chunks per shard along each dimension.
    pub chunks_per_shard: Vec<u64>,
    /// Inner chunks per shard (at most [`MAX_CHUNKS_PER_SHARD`]).
    pub n_chunks: u64,
    /// `true`: the index sits at the start of the shard file.
    pub index_at_start: bool,
    /// `true`: the index is followed by a crc32c checksum (index codecs `bytes, crc32c`).
    pub index_crc32c: bool,
}

impl Sharding {
    /// Bytes the index occupies in a shard.
    pub fn index_len(&self) -> u64 {
        self.n_chunks * 16 + if self.index_crc32c { 4 } else { 0 }
    }
}

/// Parsed array metadata: everything the planner and the decoders need about one array.
/// Pure data, checked: every product below fits its type and its cap.
#[derive(Debug, Clone)]
pub struct ArrayMeta {
    /// Array shape (each extent at most [`MAX_EXTENT`]).
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
    /// The codecs of one (inner) chunk.
    pub codecs: CodecChain,
    /// Bytes of one decoded (inner) chunk (at most [`MAX_DECODED_CHUNK_BYTES`]).
    pub decoded_chunk_bytes: u64,
    /// `dimension_names`, when given.
    pub dimension_names: Option<Vec<Option<String>>>,
    /// The Zarr format the metadata was read from.
    pub format: ZarrFormat,
}

/// The Zarr format of an array's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZarrFormat {
    /// Zarr v2: `.zarray`, converted to the v3 model by zarrs (`zarr::v2`).
    V2,
    /// Zarr v3: `zarr.json`.
    V3,
}

impl ZarrFormat {
    /// The metadata document's key.
    pub fn document(self) -> &'static str {
        match self {
            Self::V2 => ".zarray",
            Self::V3 => "zarr.json",
        }
    }

    /// `2` or `3`.
    pub fn number(self) -> u8 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }

    fn chunk_shape_field(self) -> &'static str {
        match self {
            Self::V2 => "chunks",
            Self::V3 => "chunk_grid.configuration.chunk_shape",
        }
    }
}

fn positive(v: &[u64], what: &str, rank: usize, doc: &str) -> Result<Vec<u64>> {
    if v.len() != rank || v.contains(&0) {
        return Err(err!(InvalidArgument, "malformed {doc}: `{what}` must hold {rank} positive integers, found {v:?}"));
    }
    if let Some(x) = v.iter().find(|&&x| x > MAX_EXTENT) {
        return Err(err!(InvalidArgument, "malformed {doc}: `{what}` extent {x} exceeds 2^63 - 1"));
    }
    Ok(v.to_vec())
}

fn u64_list(m: &MetadataV3, key: &str) -> Option<Vec<u64>> {
    m.configuration()?.get(key)?.as_array()?.iter().map(Value::as_u64).collect()
}

fn checked_product(v: &[u64]) -> Option<u64> {
    v.iter().try_fold(1u64, |a, &b| a.checked_mul(b))
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
        let mut v = v;
        if let Some(obj) = v.as_object_mut() {
            // Required by the spec, but older writers omit it: the spec's default then.
            obj.entry("chunk_key_encoding").or_insert_with(|| serde_json::json!({"name": "default", "configuration": {"separator": "/"}}));
        }
        let meta: ArrayMetadataV3 = serde_json::from_value(v).map_err(|e| err!(InvalidArgument, "malformed zarr.json: {e}"))?;
        Self::from_v3(&meta)
    }

    /// Checks zarrs' typed Zarr v3 metadata and derives the geometry.
    ///
    /// # Errors
    /// As [`Self::parse`].
    pub fn from_v3(meta: &ArrayMetadataV3) -> Result<Self> {
        Self::from_v3_doc(meta, ZarrFormat::V3)
    }

    /// [`Self::from_v3`] of metadata read from `format`'s document (named in messages).
    pub(crate) fn from_v3_doc(meta: &ArrayMetadataV3, format: ZarrFormat) -> Result<Self> {
        let doc = format.document();
        let rank = meta.shape.len();
        if rank == 0 || rank > MAX_RANK {
            return Err(err!(InvalidArgument, "unsupported array rank {rank} (supported: 1 to {MAX_RANK})"));
        }
        let shape = meta.shape.clone();
        if let Some(x) = shape.iter().find(|&&x| x > MAX_EXTENT) {
            return Err(err!(InvalidArgument, "malformed {doc}: shape extent {x} exceeds 2^63 - 1"));
        }
        if meta.storage_transformers.iter().any(MetadataV3::must_understand) {
            return Err(err!(InvalidArgument, "unsupported storage transformers {:?}", meta.storage_transformers.iter().map(MetadataV3::name).collect::<Vec<_>>()));
        }
        let data_type = meta.data_type.name().to_string();
        let dtype = SourceDtype::from_name(&data_type).ok_or_else(|| {
            err!(DtypeMismatch, "data type `{data_type}` cannot be cast to the outputs (supported: bool, (u)int8..64, float16, bfloat16, float32, float64)")
        })?;
        let fill_json = serde_json::to_value(&meta.fill_value).unwrap_or(Value::Null);
        let fill = dtype
            .fill_bytes(&fill_json)
            .ok_or_else(|| err!(InvalidArgument, "malformed {doc}: fill_value {fill_json} is not a valid {data_type}"))?;

        let grid = &meta.chunk_grid;
        if grid.name() != "regular" {
            return Err(err!(InvalidArgument, "unsupported chunk grid `{}`: only `regular` is supported", grid.name()));
        }
        let grid_shape = u64_list(grid, "chunk_shape").ok_or_else(|| err!(InvalidArgument, "malformed {doc}: `chunk_grid.configuration.chunk_shape` must be a list of non-negative integers"))?;
        let grid_shape = positive(&grid_shape, format.chunk_shape_field(), rank, doc)?;
        let key_encoding = parse_key_encoding(&meta.chunk_key_encoding)?;

        let (sharding, inner) = match meta.codecs.iter().position(|c| c.name() == "sharding_indexed") {
            None => (None, meta.codecs.clone()),
            Some(_) if meta.codecs.len() != 1 => {
                let names: Vec<_> = meta.codecs.iter().map(MetadataV3::name).collect();
                return Err(err!(InvalidArgument, "unsupported codec chain {names:?}: `sharding_indexed` must be the only array codec"));
            }
            Some(pos) => parse_sharding(&meta.codecs[pos], &grid_shape, rank)?,
        };
        let chunk_shape = sharding.as_ref().map_or(&grid_shape, |s| &s.inner_shape);
        let decoded_chunk_bytes = checked_product(chunk_shape)
            .and_then(|n| n.checked_mul(dtype.size() as u64))
            .filter(|&b| b <= MAX_DECODED_CHUNK_BYTES)
            .ok_or_else(|| err!(InvalidArgument, "chunk shape {chunk_shape:?} of {data_type} exceeds the {MAX_DECODED_CHUNK_BYTES}-byte chunk cap"))?;
        let codecs = CodecChain::parse(&inner, &data_type, dtype.size(), rank)?;
        Ok(Self {
            shape,
            data_type,
            dtype,
            fill,
            grid_shape,
            key_encoding,
            sharding,
            codecs,
            decoded_chunk_bytes,
            dimension_names: meta.dimension_names.clone(),
            format,
        })
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Shape of one decoded chunk (the inner chunk when sharded).
    pub fn chunk_shape(&self) -> &[u64] {
        self.sharding.as_ref().map_or(&self.grid_shape, |s| &s.inner_shape)
    }

    /// Bytes of one decoded chunk, as a `usize` (it fits: capped at parse).
    pub fn decoded_len(&self) -> usize {
        self.decoded_chunk_bytes as usize
    }

    /// Chunk grid cells along each dimension.
    pub fn grid_cells(&self) -> Vec<u64> {
        self.shape.iter().zip(&self.grid_shape).map(|(n, c)| n.div_ceil(*c)).collect()
    }

    /// Decoded bytes of the whole array (saturating).
    pub fn decoded_array_bytes(&self) -> u64 {
        self.shape.iter().fold(self.dtype.size() as u64, |a, &b| a.saturating_mul(b))
    }
}

fn parse_key_encoding(m: &MetadataV3) -> Result<KeyEncoding> {
    let sep = |default: char| -> Result<char> {
        match m.configuration().and_then(|c| c.get("separator")) {
            None => Ok(default),
            Some(Value::String(s)) if s == "/" => Ok('/'),
            Some(Value::String(s)) if s == "." => Ok('.'),
            Some(s) => Err(err!(InvalidArgument, "malformed zarr.json: chunk key separator {s}")),
        }
    };
    match m.name() {
        "default" => Ok(KeyEncoding::Default { separator: sep('/')? }),
        "v2" => Ok(KeyEncoding::V2 { separator: sep('.')? }),
        other => Err(err!(InvalidArgument, "unsupported chunk_key_encoding `{other}`")),
    }
}

fn parse_sharding(codec: &MetadataV3, grid_shape: &[u64], rank: usize) -> Result<(Option<Sharding>, Vec<MetadataV3>)> {
    let cfg = codec.configuration().ok_or_else(|| err!(InvalidArgument, "malformed zarr.json: `sharding_indexed` has no configuration"))?;
    let inner_shape = u64_list(codec, "chunk_shape").ok_or_else(|| err!(InvalidArgument, "malformed zarr.json: `sharding_indexed.chunk_shape` must be a list of non-negative integers"))?;
    let inner_shape = positive(&inner_shape, "sharding_indexed.chunk_shape", rank, "zarr.json")?;
    if grid_shape.iter().zip(&inner_shape).any(|(s, i)| s % i != 0) {
        return Err(err!(InvalidArgument, "malformed zarr.json: shard shape {grid_shape:?} is not a multiple of the inner chunk shape {inner_shape:?}"));
    }
    let chunks_per_shard: Vec<u64> = grid_shape.iter().zip(&inner_shape).map(|(s, i)| s / i).collect();
    let n_chunks = checked_product(&chunks_per_shard)
        .filter(|&n| n <= MAX_CHUNKS_PER_SHARD)
        .ok_or_else(|| err!(InvalidArgument, "shard of {chunks_per_shard:?} inner chunks exceeds the {MAX_CHUNKS_PER_SHARD}-chunk cap"))?;
    let index_at_start = match cfg.get("index_location").map_or(Some("end"), Value::as_str) {
        Some("start") => true,
        Some("end") => false,
        _ => return Err(err!(InvalidArgument, "malformed zarr.json: index_location {} (expected \"start\" or \"end\")", cfg.get("index_location").unwrap_or(&Value::Null))),
    };
    let index_codecs: Vec<MetadataV3> = cfg
        .get("index_codecs")
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| err!(InvalidArgument, "malformed zarr.json: `index_codecs`: {e}"))?
        .unwrap_or_default();
    let names: Vec<&str> = index_codecs.iter().map(MetadataV3::name).collect();
    let index_crc32c = match names.as_slice() {
        ["bytes"] => false,
        ["bytes", "crc32c"] => true,
        other => return Err(err!(InvalidArgument, "unsupported shard index codecs {other:?} (supported: [bytes], [bytes, crc32c])")),
    };
    if let Some(e) = index_codecs[0].configuration().and_then(|c| c.get("endian")).and_then(Value::as_str) {
        if e != "little" {
            return Err(err!(InvalidArgument, "unsupported shard index endianness {e:?}"));
        }
    }
    let inner: Vec<MetadataV3> = cfg
        .get("codecs")
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| err!(InvalidArgument, "malformed zarr.json: `sharding_indexed.codecs`: {e}"))?
        .ok_or_else(|| err!(InvalidArgument, "malformed zarr.json: `sharding_indexed` has no `codecs`"))?;
    Ok((Some(Sharding { inner_shape, chunks_per_shard, n_chunks, index_at_start, index_crc32c }), inner))
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
        assert_eq!((s.chunks_per_shard.as_slice(), s.n_chunks, s.index_len()), (&[2, 2][..], 4, 68));
        assert_eq!(m.decoded_chunk_bytes, 32);
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

    #[test]
    fn hostile_geometry_is_refused_before_anything_is_sized() {
        for (from, to, what) in [
            ("[10,20]", "[9223372036854775808,20]", "2^63"),
            ("\"chunk_shape\":[8,8]", "\"chunk_shape\":[9223372036854775807,8]", "multiple"),
            ("\"chunk_shape\":[8,8]", "\"chunk_shape\":[8388608,8388608]", "cap"),
            ("\"chunk_shape\":[4,4]", "\"chunk_shape\":[4294967296,4294967296]", "multiple"),
            ("[10,20]", "[]", "rank 0"),
            ("\"chunk_key_encoding\":{\"name\":\"default\"", "\"chunk_key_encoding\":{\"name\":\"weird\"", "`weird`"),
        ] {
            let json = SHARDED.replacen(from, to, 1);
            assert_ne!(json, SHARDED, "{from}");
            let e = ArrayMeta::parse(json.as_bytes()).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument, "{to}: {e}");
            assert!(e.message().contains(what), "{to}: {e}");
            assert!(!e.message().contains("Some("), "{e}");
        }
        // 2^12 x 2^12 inner chunks per shard: over the 2^24 cap? exactly at it is allowed.
        let ok = SHARDED.replace("\"chunk_shape\":[8,8]", "\"chunk_shape\":[16384,16384]").replace("[10,20]", "[16384,16384]");
        assert!(ArrayMeta::parse(ok.as_bytes()).is_ok());
        let over = SHARDED.replace("\"chunk_shape\":[8,8]", "\"chunk_shape\":[16384,16388]").replace("[10,20]", "[16384,16388]");
        assert!(ArrayMeta::parse(over.as_bytes()).unwrap_err().message().contains("cap"));
    }
}
