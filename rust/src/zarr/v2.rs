//! `.zarray` (Zarr v2 array metadata) → [`ArrayMeta`], through zarrs' v2 metadata type
//! (`ArrayMetadataV2`) and its v2 → v3 conversion (`array_metadata_v2_to_v3`), so a v2
//! array ends up as the same typed chain as the equivalent v3 array: C order,
//! `bytes` with the dtype's endianness, then the compressor (`blosc`, `zstd`, `gzip`, or
//! none), and the `v2` chunk key encoding with the array's `dimension_separator` (keys
//! `1.2.3` or `1/2/3`, no `c` prefix). The geometry checks and caps are the v3 ones.
//!
//! Rejected here, before zarrs is asked, with InvalidArgument naming the feature: `order`
//! `"F"`, `filters`, object, structured, string, bytes and void dtypes, and compressors
//! other than blosc, zstd and gzip (e.g. `lz4`, `zlib`, `bz2`: damacy has no decoder for
//! them). Numeric dtypes damacy cannot cast (complex, datetime) fail with DtypeMismatch, as
//! in v3. `.zattrs` is not read for arrays.

use serde_json::Value;
use zarrs::convert::array_metadata_v2_to_v3;
use zarrs::metadata::v2::ArrayMetadataV2;

use super::meta::{ArrayMeta, ZarrFormat};
use crate::error::{err, Result};

/// The Zarr v2 compressors damacy decodes (numcodecs ids).
pub(crate) const V2_COMPRESSORS: [&str; 3] = ["blosc", "zstd", "gzip"];

impl ArrayMeta {
    /// Parses `.zarray` bytes (Zarr v2).
    ///
    /// # Errors
    /// InvalidArgument for malformed metadata or an unsupported v2 feature (named: `order
    /// "F"`, `filters`, object/structured/string dtypes, compressors other than blosc, zstd,
    /// gzip), and for everything [`ArrayMeta::parse`] rejects; DtypeMismatch for a numeric
    /// data type damacy cannot cast.
    pub fn parse_v2(bytes: &[u8]) -> Result<Self> {
        let mut v: Value = serde_json::from_slice(bytes).map_err(|e| err!(InvalidArgument, "malformed .zarray: {e}"))?;
        if v.get("zarr_format").and_then(Value::as_u64) != Some(2) {
            return Err(err!(InvalidArgument, "malformed .zarray: expected \"zarr_format\": 2, found {}", v.get("zarr_format").unwrap_or(&Value::Null)));
        }
        check_features(&v)?;
        if let Some(obj) = v.as_object_mut() {
            // zarrs' type is tagged with the v3 `node_type`; `.zarray` has none.
            obj.insert("node_type".into(), "array".into());
            // Attributes live in `.zattrs`, which damacy does not read for arrays.
            obj.remove("attributes");
        }
        let v2: ArrayMetadataV2 = serde_json::from_value(v).map_err(|e| err!(InvalidArgument, "malformed .zarray: {e}"))?;
        let v3 = array_metadata_v2_to_v3(&v2).map_err(|e| err!(InvalidArgument, "unsupported .zarray: {e}"))?;
        Self::from_v3_doc(&v3, ZarrFormat::V2)
    }
}

/// The v2 features damacy does not read, named before zarrs converts anything.
fn check_features(v: &Value) -> Result<()> {
    match v.get("dtype") {
        Some(Value::String(d)) => {
            let kind = d.trim_start_matches(['<', '>', '|', '=']).chars().next();
            let feature = match kind {
                Some('O') => Some("object dtype"),
                Some('U') => Some("unicode string dtype"),
                Some('S') => Some("byte string dtype"),
                Some('V') => Some("void (raw bytes) dtype"),
                _ => None,
            };
            if let Some(f) = feature {
                return Err(err!(InvalidArgument, "unsupported Zarr v2 feature: {f} {d:?} (numeric and bool dtypes are read)"));
            }
        }
        Some(Value::Array(_)) => return Err(err!(InvalidArgument, "unsupported Zarr v2 feature: structured dtype (numeric and bool dtypes are read)")),
        other => return Err(err!(InvalidArgument, "malformed .zarray: `dtype` must be a string, found {}", other.unwrap_or(&Value::Null))),
    }
    match v.get("order") {
        Some(Value::String(o)) if o == "C" => {}
        Some(Value::String(o)) if o == "F" => {
            return Err(err!(InvalidArgument, "unsupported Zarr v2 feature: order \"F\" (column-major chunks); only \"C\" is read"));
        }
        other => return Err(err!(InvalidArgument, "malformed .zarray: `order` must be \"C\" or \"F\", found {}", other.unwrap_or(&Value::Null))),
    }
    match v.get("filters") {
        None | Some(Value::Null) => {}
        Some(Value::Array(f)) if f.is_empty() => {}
        Some(Value::Array(f)) => {
            let ids: Vec<&str> = f.iter().map(|x| x.get("id").and_then(Value::as_str).unwrap_or("?")).collect();
            return Err(err!(InvalidArgument, "unsupported Zarr v2 feature: filters {ids:?} (only arrays without filters are read)"));
        }
        Some(other) => return Err(err!(InvalidArgument, "malformed .zarray: `filters` must be a list or null, found {other}")),
    }
    match v.get("compressor") {
        None | Some(Value::Null) => {}
        Some(c) => {
            let id = c.get("id").and_then(Value::as_str).ok_or_else(|| err!(InvalidArgument, "malformed .zarray: `compressor` has no `id`: {c}"))?;
            if !V2_COMPRESSORS.contains(&id) {
                return Err(err!(InvalidArgument, "unsupported Zarr v2 compressor `{id}` (supported: blosc, zstd, gzip, none)"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;
    use crate::zarr::{BloscCname, CodecSpec, Endian, KeyEncoding, SourceDtype};

    fn zarray(dtype: &str, compressor: &str, fill: &str, sep: &str) -> String {
        format!(
            r#"{{"zarr_format":2,"shape":[10,20],"chunks":[4,8],"dtype":"{dtype}","compressor":{compressor},"fill_value":{fill},"order":"C","filters":null,"dimension_separator":"{sep}"}}"#
        )
    }

    const ZSTD: &str = r#"{"id":"zstd","level":3,"checksum":false}"#;
    const BLOSC: &str = r#"{"id":"blosc","cname":"zstd","clevel":5,"shuffle":1,"blocksize":0}"#;

    #[test]
    fn maps_to_the_v3_chain() {
        let m = ArrayMeta::parse_v2(zarray("<u2", ZSTD, "7", ".").as_bytes()).unwrap();
        assert_eq!((m.shape.as_slice(), m.grid_shape.as_slice(), m.dtype, m.format), (&[10, 20][..], &[4, 8][..], SourceDtype::U16, ZarrFormat::V2));
        assert_eq!(m.fill, 7u16.to_ne_bytes());
        assert!(m.sharding.is_none());
        assert_eq!(m.codecs.specs, [CodecSpec::Bytes { endian: Some(Endian::Little) }, CodecSpec::Zstd]);
        assert_eq!(m.key_encoding, KeyEncoding::V2 { separator: '.' });
        assert_eq!(m.key_encoding.key(&[1, 2]), "1.2");

        let m = ArrayMeta::parse_v2(zarray("<f4", BLOSC, "\"NaN\"", "/").as_bytes()).unwrap();
        assert_eq!(m.codecs.specs[1], CodecSpec::Blosc { cname: BloscCname::Zstd });
        assert_eq!(m.key_encoding.key(&[1, 2]), "1/2");
        assert!(f32::from_ne_bytes(m.fill.clone().try_into().unwrap()).is_nan());

        let m = ArrayMeta::parse_v2(zarray(">i4", "null", "null", ".").as_bytes()).unwrap();
        assert_eq!(m.codecs.specs, [CodecSpec::Bytes { endian: Some(Endian::Big) }]);
        assert_eq!(m.fill, 0i32.to_ne_bytes(), "a null fill reads as 0, as zarr-python does");

        let m = ArrayMeta::parse_v2(zarray("|u1", r#"{"id":"gzip","level":1}"#, "0", ".").as_bytes()).unwrap();
        // zarrs writes the native endianness for one-byte types ("|u1"); either is the identity.
        assert_eq!(m.codecs.specs[1], CodecSpec::Gzip);
        let m = ArrayMeta::parse_v2(zarray("<f8", "null", "\"-Infinity\"", ".").as_bytes()).unwrap();
        assert_eq!(m.fill, f64::NEG_INFINITY.to_ne_bytes());
        let m = ArrayMeta::parse_v2(zarray("|b1", "null", "false", ".").as_bytes()).unwrap();
        assert_eq!((m.dtype, m.fill.as_slice()), (SourceDtype::Bool, &[0u8][..]));
        // No dimension_separator: ".".
        let m = ArrayMeta::parse_v2(zarray("<i8", "null", "0", ".").replace(r#","dimension_separator":".""#, "").as_bytes()).unwrap();
        assert_eq!(m.key_encoding, KeyEncoding::V2 { separator: '.' });
    }

    #[test]
    fn names_what_it_cannot_read() {
        let base = zarray("<u2", ZSTD, "0", ".");
        for (json, what, status) in [
            (base.replace(r#""order":"C""#, r#""order":"F""#), "order \"F\"", Status::InvalidArgument),
            (base.replace(r#""filters":null"#, r#""filters":[{"id":"delta","dtype":"<u2"}]"#), "filters [\"delta\"]", Status::InvalidArgument),
            (zarray("|O", "null", "0", "."), "object dtype", Status::InvalidArgument),
            (zarray("<U4", "null", "\"\"", "."), "string dtype", Status::InvalidArgument),
            (base.replace(r#""dtype":"<u2""#, r#""dtype":[["a","<u2"]]"#), "structured dtype", Status::InvalidArgument),
            (zarray("<u2", r#"{"id":"lz4","acceleration":1}"#, "0", "."), "compressor `lz4`", Status::InvalidArgument),
            (zarray("<u2", r#"{"id":"zlib","level":1}"#, "0", "."), "compressor `zlib`", Status::InvalidArgument),
            (zarray("<c8", "null", "0", "."), "complex64", Status::DtypeMismatch),
            (base.replace("\"zarr_format\":2", "\"zarr_format\":3"), "zarr_format", Status::InvalidArgument),
            (base.replace("[10,20]", "[9223372036854775808,20]"), "2^63", Status::InvalidArgument),
            (base.replace("[4,8]", "[4,0]"), ".zarray", Status::InvalidArgument),
            (base.replace("[4,8]", "[4]"), "`chunks`", Status::InvalidArgument),
            (base.replace("[10,20]", "[]").replace("[4,8]", "[]"), "rank 0", Status::InvalidArgument),
            (base.replace("[4,8]", "[8388608,8388608]"), "cap", Status::InvalidArgument),
            (base.replace(r#""fill_value":0"#, r#""fill_value":70000"#), "fill_value", Status::InvalidArgument),
            (base.replace(r#""dimension_separator":".""#, r#""dimension_separator":"-""#), ".zarray", Status::InvalidArgument),
        ] {
            let e = ArrayMeta::parse_v2(json.as_bytes()).unwrap_err();
            assert_eq!(e.status(), status, "{json}: {e}");
            assert!(e.message().contains(what), "{json}: {e}");
        }
    }
}
