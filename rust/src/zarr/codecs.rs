//! The codec chain of one (inner) chunk, parsed once into typed specs.
//!
//! Zarr v3 orders a chain as: array→array codecs (`transpose`), exactly one array→bytes
//! codec (`bytes`), then bytes→bytes codecs (`zstd`, `gzip`, `blosc`, `crc32c`), in encode
//! order. Codecs damacy does not know are rejected when the array is opened, unless marked
//! `"must_understand": false` (then skipped, as the spec allows). Nothing here decodes:
//! `decode` pairs a chain with decoders; this is data.

use serde_json::Value;
use zarrs::metadata::v3::MetadataV3;

use crate::error::{err, Result};

/// Byte order of the `bytes` codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// Little endian.
    Little,
    /// Big endian.
    Big,
}

/// The compressor named by a blosc codec's `cname`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BloscCname {
    /// blosclz.
    BloscLz,
    /// lz4.
    Lz4,
    /// lz4hc (lz4 streams).
    Lz4Hc,
    /// zlib.
    Zlib,
    /// zstd.
    Zstd,
    /// snappy.
    Snappy,
}

/// One codec of a chunk's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecSpec {
    /// `transpose` (array→array): the axis permutation.
    Transpose {
        /// `order[i]`: the source axis of encoded axis `i`.
        order: Vec<usize>,
    },
    /// `bytes` (array→bytes); `None` endian only for one-byte types.
    Bytes {
        /// Byte order.
        endian: Option<Endian>,
    },
    /// `zstd` (bytes→bytes).
    Zstd,
    /// `gzip` (bytes→bytes).
    Gzip,
    /// `blosc` (bytes→bytes).
    Blosc {
        /// Compressor of the blocks' streams.
        cname: BloscCname,
    },
    /// `crc32c` (bytes→bytes): a 4-byte little-endian checksum after the data.
    Crc32c,
    /// An unknown codec marked `must_understand: false`: skipped.
    Skipped {
        /// Its name.
        name: String,
    },
}

impl CodecSpec {
    /// `true` for the bytes→bytes codecs (the ones after `bytes`).
    pub fn is_bytes_to_bytes(&self) -> bool {
        matches!(self, Self::Zstd | Self::Gzip | Self::Blosc { .. } | Self::Crc32c)
    }
}

/// A chunk's codec chain: typed specs and the metadata they came from, in encode order.
#[derive(Debug, Clone)]
pub struct CodecChain {
    /// Typed, one per codec.
    pub specs: Vec<CodecSpec>,
    /// As written in `zarr.json`, one per codec (for zarrs and for `info`).
    pub metadata: Vec<MetadataV3>,
}

fn config_str<'a>(m: &'a MetadataV3, key: &str) -> Option<&'a str> {
    m.configuration().and_then(|c| c.get(key)).and_then(Value::as_str)
}

impl CodecChain {
    /// Types and checks the `codecs` of a chunk of `rank` dimensions of `elem_size`-byte
    /// elements of `data_type`.
    ///
    /// # Errors
    /// InvalidArgument naming the codec: unknown (and to be understood), misconfigured,
    /// out of order, nested sharding, or no `bytes` codec.
    pub fn parse(metadata: &[MetadataV3], data_type: &str, elem_size: usize, rank: usize) -> Result<Self> {
        let mut specs = Vec::with_capacity(metadata.len());
        let mut seen_bytes = false;
        for m in metadata {
            let name = m.name();
            let spec = match name {
                "transpose" => {
                    let order: Option<Vec<usize>> = m
                        .configuration()
                        .and_then(|c| c.get("order"))
                        .and_then(Value::as_array)
                        .and_then(|a| a.iter().map(|x| x.as_u64().and_then(|v| usize::try_from(v).ok())).collect());
                    let order = order.ok_or_else(|| err!(InvalidArgument, "codec `transpose`: `order` must be a list of axis indices"))?;
                    let mut sorted = order.clone();
                    sorted.sort_unstable();
                    if sorted != (0..rank).collect::<Vec<_>>() {
                        return Err(err!(InvalidArgument, "codec `transpose`: order {order:?} is not a permutation of the {rank} axes"));
                    }
                    CodecSpec::Transpose { order }
                }
                "bytes" => {
                    let endian = match config_str(m, "endian") {
                        Some("little") => Some(Endian::Little),
                        Some("big") => Some(Endian::Big),
                        None if elem_size == 1 => None,
                        None => return Err(err!(InvalidArgument, "codec `bytes` needs `endian` for data type `{data_type}`")),
                        Some(other) => return Err(err!(InvalidArgument, "codec `bytes`: endian {other:?} (expected \"little\" or \"big\")")),
                    };
                    CodecSpec::Bytes { endian }
                }
                "zstd" => CodecSpec::Zstd,
                "gzip" => CodecSpec::Gzip,
                "crc32c" => CodecSpec::Crc32c,
                "blosc" => {
                    let cname = match config_str(m, "cname") {
                        Some("blosclz") => BloscCname::BloscLz,
                        Some("lz4") => BloscCname::Lz4,
                        Some("lz4hc") => BloscCname::Lz4Hc,
                        Some("zlib") => BloscCname::Zlib,
                        Some("zstd") => BloscCname::Zstd,
                        Some("snappy") => BloscCname::Snappy,
                        other => return Err(err!(InvalidArgument, "codec `blosc`: unsupported cname {}", other.map_or_else(|| "(missing)".to_string(), |s| format!("{s:?}")))),
                    };
                    CodecSpec::Blosc { cname }
                }
                "sharding_indexed" => return Err(err!(InvalidArgument, "unsupported codec chain: nested `sharding_indexed` (a shard inside a shard)")),
                other if !m.must_understand() => CodecSpec::Skipped { name: other.to_string() },
                other => return Err(err!(InvalidArgument, "unsupported codec `{other}`")),
            };
            // Order: array→array, then one `bytes`, then bytes→bytes.
            match &spec {
                CodecSpec::Transpose { .. } if seen_bytes => return Err(err!(InvalidArgument, "codec `transpose` after `bytes`: array→array codecs come first")),
                CodecSpec::Bytes { .. } if seen_bytes => return Err(err!(InvalidArgument, "two array→bytes codecs (`bytes`)")),
                CodecSpec::Bytes { .. } => seen_bytes = true,
                s if s.is_bytes_to_bytes() && !seen_bytes => return Err(err!(InvalidArgument, "codec `{name}` before `bytes`: bytes→bytes codecs come after it")),
                _ => {}
            }
            specs.push(spec);
        }
        if !seen_bytes {
            return Err(err!(InvalidArgument, "codec chain {:?} has no array→bytes codec (`bytes`)", metadata.iter().map(MetadataV3::name).collect::<Vec<_>>()));
        }
        Ok(Self { specs, metadata: metadata.to_vec() })
    }

    /// The chain as JSON (for `info`), which parses back to the same chain.
    pub fn to_json(&self) -> Value {
        // zarrs writes a codec without configuration as its bare name, dropping
        // `"must_understand": false`: read back, a skipped codec would then be refused.
        let codec = |m: &MetadataV3| {
            let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
            if !m.must_understand() {
                if !v.is_object() {
                    v = serde_json::json!({"name": m.name()});
                }
                v["must_understand"] = Value::Bool(false);
            }
            v
        };
        Value::Array(self.metadata.iter().map(codec).collect())
    }

    /// Codec names, comma separated (for messages).
    pub fn names(&self) -> String {
        self.metadata.iter().map(MetadataV3::name).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    fn chain(json: &str, size: usize) -> Result<CodecChain> {
        let m: Vec<MetadataV3> = serde_json::from_str(json).unwrap();
        CodecChain::parse(&m, "uint16", size, 2)
    }

    #[test]
    fn types_checks_and_orders() {
        let c = chain(r#"[{"name":"transpose","configuration":{"order":[1,0]}},{"name":"bytes","configuration":{"endian":"big"}},{"name":"blosc","configuration":{"cname":"lz4","clevel":5,"shuffle":"shuffle","typesize":2,"blocksize":0}},{"name":"crc32c"}]"#, 2).unwrap();
        assert_eq!(c.specs, [CodecSpec::Transpose { order: vec![1, 0] }, CodecSpec::Bytes { endian: Some(Endian::Big) }, CodecSpec::Blosc { cname: BloscCname::Lz4 }, CodecSpec::Crc32c]);
        assert_eq!(c.names(), "transpose, bytes, blosc, crc32c");
        let skipped = chain(r#"[{"name":"bytes","configuration":{"endian":"little"}},{"name":"x.y","must_understand":false}]"#, 2).unwrap();
        assert_eq!(skipped.specs[1], CodecSpec::Skipped { name: "x.y".into() });
        // Written back (`info`), the chain reads back the same, skipped codec included.
        let again = chain(&skipped.to_json().to_string(), 2).unwrap();
        assert_eq!(again.specs, skipped.specs);
        for (bad, what) in [
            ("[]", "no array→bytes"),
            (r#"[{"name":"zstd"}]"#, "before `bytes`"),
            (r#"[{"name":"zstd"},{"name":"bytes","configuration":{"endian":"little"}}]"#, "before `bytes`"),
            (r#"[{"name":"bytes"}]"#, "endian"),
            (r#"[{"name":"bytes","configuration":{"endian":"little"}},{"name":"numcodecs.bz2"}]"#, "numcodecs.bz2"),
            (r#"[{"name":"transpose","configuration":{"order":[0,0]}},{"name":"bytes","configuration":{"endian":"little"}}]"#, "permutation"),
            (r#"[{"name":"sharding_indexed","configuration":{}}]"#, "nested"),
            (r#"[{"name":"bytes","configuration":{"endian":"little"}},{"name":"blosc","configuration":{"cname":"nope"}}]"#, "cname"),
        ] {
            let e = chain(bad, 2).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument);
            assert!(e.message().contains(what), "{bad}: {e}");
        }
    }
}
