//! CPU decoding of one inner chunk through zarrs' codec chain.
//!
//! A [`ChunkCodec`] is built once per array from the array's `data_type`, `fill_value` and the
//! `codecs` of its inner chunk, validated then, and shared by every worker (it is `Send + Sync`
//! and decoding takes `&self`). Decoding writes the chunk's elements, native endian and C
//! order, into a caller-owned buffer of exactly [`ChunkCodec::decoded_len`] bytes.
//!
//! Supported: data types `bool`, `int8`..`int64`, `uint8`..`uint64`, `float16`, `bfloat16`,
//! `float32`, `float64`; codecs `transpose`, `bytes`, `zstd`, `blosc`, `gzip`, `crc32c` (and any
//! codec marked `"must_understand": false`, which zarrs skips).

use std::borrow::Cow;
use std::num::NonZeroU64;

use serde_json::Value;
use zarrs::array::codec::CodecChain;
use zarrs::array::data_type;
use zarrs::array::{ArrayToBytesCodecTraits, CodecOptions, DataType, FillValue, FillValueMetadata};
use zarrs::metadata::v3::MetadataV3;

use crate::error::{err, Result};

/// Codec names accepted in an inner chunk's `codecs`. Anything else (nested `sharding_indexed`,
/// `vlen-*`, `zfp`, ...) is rejected when the array is opened, not when a chunk is read.
const SUPPORTED_CODECS: [&str; 6] = ["transpose", "bytes", "zstd", "blosc", "gzip", "crc32c"];

/// Decodes the stored bytes of one inner chunk of one array; built once per array.
#[derive(Debug, Clone)]
pub struct ChunkCodec {
    chain: CodecChain,
    shape: Vec<NonZeroU64>,
    data_type: DataType,
    fill_value: FillValue,
    options: CodecOptions,
    is_bool: bool,
    /// The codec names, in metadata order, for error messages (`"bytes, zstd"`).
    codec_names: String,
    elem_size: usize,
    decoded_len: usize,
    /// A direct route for the most common chains, bypassing zarrs' intermediate buffers.
    fast: FastPath,
}

/// Chains decoded without zarrs: straight into the caller's buffer, with one reused zstd
/// context per thread (zarrs allocates a fresh context and output per chunk, then we copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FastPath {
    /// No fast path: zarrs' codec chain.
    None,
    /// `bytes` in native order, then `zstd`, optionally then `crc32c`.
    Zstd { crc32c: bool },
}

thread_local! {
    static ZSTD: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

fn fast_path(metadatas: &[MetadataV3], elem_size: usize) -> FastPath {
    let native_bytes = |m: &MetadataV3| {
        m.name() == "bytes"
            && (elem_size == 1
                || m.configuration().and_then(|c| c.get("endian")).and_then(Value::as_str)
                    == Some(if cfg!(target_endian = "little") { "little" } else { "big" }))
    };
    match metadatas {
        [b, z] if native_bytes(b) && z.name() == "zstd" => FastPath::Zstd { crc32c: false },
        [b, z, c] if native_bytes(b) && z.name() == "zstd" && c.name() == "crc32c" => {
            FastPath::Zstd { crc32c: true }
        }
        _ => FastPath::None,
    }
}

impl ChunkCodec {
    /// A codec for chunks of `chunk_shape` elements of `data_type` (a Zarr v3 name), with
    /// `fill_value` as written in `zarr.json` and `codecs` the JSON array of the inner chunk's
    /// codec metadata (the array's `codecs` if unsharded, else `configuration.codecs` of its
    /// `sharding_indexed` codec).
    ///
    /// # Errors
    /// - [`Status::DtypeMismatch`](crate::Status::DtypeMismatch): `data_type` is not one of the
    ///   supported types.
    /// - [`Status::InvalidArgument`](crate::Status::InvalidArgument): the fill value does not
    ///   fit the data type, a codec is unsupported (the message names it) or misconfigured,
    ///   `bytes` lacks `endian` for a multi-byte type, or `chunk_shape` is empty, has a zero or
    ///   overflows `usize` bytes.
    pub fn new(
        data_type: &str,
        fill_value: &Value,
        codecs: &Value,
        chunk_shape: &[u64],
    ) -> Result<Self> {
        let (dtype, elem_size) = data_type_from_name(data_type)?;

        let fill_metadata: FillValueMetadata =
            serde_json::from_value(fill_value.clone()).map_err(|e| {
                err!(InvalidArgument, "fill value {fill_value} is not valid JSON metadata: {e}")
            })?;
        let fill = dtype.fill_value_v3(&fill_metadata).map_err(|_| {
            err!(InvalidArgument, "fill value {fill_value} is invalid for data type `{data_type}`")
        })?;

        if chunk_shape.is_empty() {
            return Err(err!(InvalidArgument, "chunk shape is empty"));
        }
        let shape = chunk_shape
            .iter()
            .map(|&n| NonZeroU64::new(n))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                err!(InvalidArgument, "chunk shape {chunk_shape:?} has a zero extent")
            })?;
        let decoded_len = chunk_shape
            .iter()
            .try_fold(elem_size, |acc, &n| usize::try_from(n).ok().and_then(|n| acc.checked_mul(n)))
            .ok_or_else(|| {
                err!(InvalidArgument, "chunk shape {chunk_shape:?} overflows the address space")
            })?;

        let metadatas = codec_metadatas(codecs, data_type, elem_size)?;
        let chain = CodecChain::from_metadata(&metadatas)
            .map_err(|e| err!(InvalidArgument, "invalid codec configuration: {e}"))?;
        // Checks what zarrs can check without data: transpose order vs rank, dtype support.
        chain.encoded_representation(&shape, &dtype, &fill).map_err(|e| {
            err!(
                InvalidArgument,
                "codecs do not fit a {data_type} chunk of shape {chunk_shape:?}: {e}"
            )
        })?;

        // Chunk-level parallelism belongs to the pipeline; a codec never spawns work of its own.
        let options = CodecOptions::default().with_concurrent_target(1);

        let fast = fast_path(&metadatas, elem_size);
        Ok(Self {
            fast,
            chain,
            shape,
            data_type: dtype,
            fill_value: fill,
            options,
            is_bool: data_type == "bool",
            codec_names: metadatas.iter().map(MetadataV3::name).collect::<Vec<_>>().join(", "),
            elem_size,
            decoded_len,
        })
    }

    /// Decodes `encoded` (the stored bytes of one chunk) into `out`, which must be exactly
    /// [`decoded_len`](Self::decoded_len) bytes; on success `out` holds the chunk's elements,
    /// native endian, C order (`bool` as one byte, 0 or 1).
    ///
    /// # Errors
    /// - [`Status::Decode`](crate::Status::Decode): a codec failed (corrupt or truncated data,
    ///   checksum mismatch, wrong decoded size); the message is the codec's. The caller adds
    ///   the uri and chunk.
    /// - [`Status::InvalidArgument`](crate::Status::InvalidArgument): `out` has the wrong length.
    pub fn decode_into(&self, encoded: &[u8], out: &mut [u8]) -> Result<()> {
        if out.len() != self.decoded_len {
            return Err(err!(
                InvalidArgument,
                "output buffer has {} bytes, a decoded chunk has {}",
                out.len(),
                self.decoded_len
            ));
        }
        if let FastPath::Zstd { crc32c } = self.fast {
            return self.decode_zstd(encoded, out, crc32c);
        }
        let decoded = self
            .chain
            .decode(
                Cow::Borrowed(encoded),
                &self.shape,
                &self.data_type,
                &self.fill_value,
                &self.options,
            )
            .map_err(|e| err!(Decode, "{e} (codecs: {})", self.codec_names))?;
        let bytes = decoded.into_fixed().map_err(|e| err!(Decode, "{e}"))?;
        if bytes.len() != out.len() {
            return Err(err!(
                Decode,
                "chunk decoded to {} bytes, expected {}",
                bytes.len(),
                out.len()
            ));
        }
        out.copy_from_slice(&bytes);
        if self.is_bool {
            // The bytes codec passes bool bytes through unchecked; torch needs exactly 0 or 1.
            for b in out.iter_mut() {
                *b = u8::from(*b != 0);
            }
        }
        Ok(())
    }

    fn decode_zstd(&self, encoded: &[u8], out: &mut [u8], crc32c: bool) -> Result<()> {
        let body = if crc32c {
            let (body, sum) = encoded
                .split_at_checked(encoded.len().wrapping_sub(4))
                .filter(|_| encoded.len() >= 4)
                .ok_or_else(|| err!(Decode, "crc32c: chunk of {} bytes has no checksum", encoded.len()))?;
            let stored = u32::from_le_bytes(sum.try_into().map_err(|_| err!(Decode, "crc32c"))?);
            let computed = crc32c::crc32c(body);
            if stored != computed {
                return Err(err!(Decode, "crc32c checksum mismatch: stored {stored:#010x}, computed {computed:#010x} (codecs: {})", self.codec_names));
            }
            body
        } else {
            encoded
        };
        let n = ZSTD.with_borrow_mut(|slot| {
            let dctx = match slot {
                Some(d) => d,
                None => slot.insert(zstd::bulk::Decompressor::new().map_err(|e| err!(OutOfMemory, "zstd context: {e}"))?),
            };
            dctx.decompress_to_buffer(body, out).map_err(|e| err!(Decode, "{e} (codecs: {})", self.codec_names))
        })?;
        if n != out.len() {
            return Err(err!(Decode, "chunk decoded to {n} bytes, expected {} (codecs: {})", out.len(), self.codec_names));
        }
        Ok(())
    }

    /// The size of one decoded chunk in bytes: elements × [`elem_size`](Self::elem_size).
    pub fn decoded_len(&self) -> usize {
        self.decoded_len
    }

    /// The size of one element in bytes.
    pub fn elem_size(&self) -> usize {
        self.elem_size
    }

    /// The fill value as one element, native endian (for chunks that are not stored).
    pub fn fill_value_bytes(&self) -> &[u8] {
        self.fill_value.as_ne_bytes()
    }
}

/// The zarrs data type and element size for a Zarr v3 data type name.
fn data_type_from_name(name: &str) -> Result<(DataType, usize)> {
    Ok(match name {
        "bool" => (data_type::bool(), 1),
        "int8" => (data_type::int8(), 1),
        "uint8" => (data_type::uint8(), 1),
        "int16" => (data_type::int16(), 2),
        "uint16" => (data_type::uint16(), 2),
        "float16" => (data_type::float16(), 2),
        "bfloat16" => (data_type::bfloat16(), 2),
        "int32" => (data_type::int32(), 4),
        "uint32" => (data_type::uint32(), 4),
        "float32" => (data_type::float32(), 4),
        "int64" => (data_type::int64(), 8),
        "uint64" => (data_type::uint64(), 8),
        "float64" => (data_type::float64(), 8),
        _ => return Err(err!(DtypeMismatch, "unsupported data type `{name}`")),
    })
}

/// Parses and screens the codec list: each codec is supported (or may be skipped), and `bytes`
/// names its endianness where the element has more than one byte (zarrs would only notice on
/// the first decode).
fn codec_metadatas(codecs: &Value, data_type: &str, elem_size: usize) -> Result<Vec<MetadataV3>> {
    let metadatas: Vec<MetadataV3> = serde_json::from_value(codecs.clone()).map_err(|e| {
        err!(InvalidArgument, "codecs {codecs} are not a list of codec metadata: {e}")
    })?;
    for metadata in &metadatas {
        let name = metadata.name();
        if !SUPPORTED_CODECS.contains(&name) {
            if metadata.must_understand() {
                return Err(err!(InvalidArgument, "unsupported codec `{name}`"));
            }
            continue;
        }
        if name == "bytes" && elem_size > 1 {
            let endian = metadata.configuration().and_then(|c| c.get("endian"));
            if endian.is_none() {
                return Err(err!(
                    InvalidArgument,
                    "codec `bytes` needs `endian` for data type `{data_type}`"
                ));
            }
        }
    }
    Ok(metadatas)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use zarrs::array::ArrayBytes;

    use super::*;
    use crate::Status;

    /// Deterministic bytes (xorshift64*).
    fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    /// Elements of `dtype` for a chunk of `shape` (bool: 0 or 1; floats: any bit pattern).
    fn random_chunk(dtype: &str, shape: &[u64], seed: u64) -> Vec<u8> {
        let (_, size) = data_type_from_name(dtype).unwrap();
        let n = shape.iter().product::<u64>() as usize * size;
        let mut bytes = random_bytes(n, seed);
        if dtype == "bool" {
            for b in &mut bytes {
                *b &= 1;
            }
        }
        bytes
    }

    /// Encodes `decoded` with zarrs' own codec chain built from the same metadata.
    fn zarrs_encode(
        dtype: &str,
        fill: &Value,
        codecs: &Value,
        shape: &[u64],
        decoded: &[u8],
    ) -> Vec<u8> {
        let (data_type, _) = data_type_from_name(dtype).unwrap();
        let fill_value =
            data_type.fill_value_v3(&serde_json::from_value(fill.clone()).unwrap()).unwrap();
        let metadatas: Vec<MetadataV3> = serde_json::from_value(codecs.clone()).unwrap();
        let chain = CodecChain::from_metadata(&metadatas).unwrap();
        let shape: Vec<NonZeroU64> = shape.iter().map(|&n| NonZeroU64::new(n).unwrap()).collect();
        chain
            .encode(
                ArrayBytes::new_flen(decoded.to_vec()),
                &shape,
                &data_type,
                &fill_value,
                &CodecOptions::default(),
            )
            .unwrap()
            .into_owned()
    }

    fn roundtrip(dtype: &str, codecs: &Value, shape: &[u64], seed: u64) {
        let fill = if dtype == "bool" { json!(false) } else { json!(0) };
        let decoded = random_chunk(dtype, shape, seed);
        let encoded = zarrs_encode(dtype, &fill, codecs, shape, &decoded);
        let codec = ChunkCodec::new(dtype, &fill, codecs, shape).unwrap();
        assert_eq!(codec.decoded_len(), decoded.len());
        let mut out = vec![0xAAu8; codec.decoded_len()];
        codec.decode_into(&encoded, &mut out).unwrap();
        assert!(out == decoded, "{dtype} {codecs}: decoded bytes differ");
    }

    fn bytes(endian: &str) -> Value {
        json!({"name": "bytes", "configuration": {"endian": endian}})
    }

    fn blosc(cname: &str, shuffle: &str, typesize: usize) -> Value {
        json!({"name": "blosc", "configuration":
            {"cname": cname, "clevel": 5, "shuffle": shuffle, "typesize": typesize, "blocksize": 0}})
    }

    fn zstd() -> Value {
        json!({"name": "zstd", "configuration": {"level": 3, "checksum": false}})
    }

    fn gzip() -> Value {
        json!({"name": "gzip", "configuration": {"level": 5}})
    }

    fn crc32c() -> Value {
        json!({"name": "crc32c"})
    }

    fn transpose(order: &[usize]) -> Value {
        json!({"name": "transpose", "configuration": {"order": order}})
    }

    #[test]
    fn chunk_codec_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ChunkCodec>();
    }

    #[test]
    fn roundtrip_plain_bytes_every_dtype() {
        let all = [
            "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
            "float16", "bfloat16", "float32", "float64",
        ];
        for (i, dtype) in all.into_iter().enumerate() {
            roundtrip(dtype, &json!([bytes("little")]), &[3, 5, 7], i as u64 + 1);
            roundtrip(dtype, &json!([bytes("big")]), &[3, 5, 7], i as u64 + 100);
        }
    }

    #[test]
    fn roundtrip_single_byte_types_without_endian() {
        roundtrip("uint8", &json!([{"name": "bytes"}, zstd()]), &[16, 16], 7);
        roundtrip("bool", &json!(["bytes"]), &[9], 8);
    }

    #[test]
    fn roundtrip_zstd_gzip_crc32c() {
        roundtrip("uint16", &json!([bytes("little"), zstd()]), &[8, 16, 16], 11);
        roundtrip("int32", &json!([bytes("big"), gzip()]), &[4, 6, 10], 12);
        roundtrip("int8", &json!([bytes("little"), gzip(), crc32c()]), &[33], 13);
        roundtrip("float64", &json!([bytes("little"), zstd(), crc32c()]), &[5, 7], 14);
        roundtrip("bool", &json!([bytes("little"), crc32c()]), &[2, 3, 4], 15);
    }

    #[test]
    fn roundtrip_blosc_compressors_and_shuffles() {
        let cases = [
            ("uint16", "zstd", "shuffle"),
            ("uint16", "lz4", "bitshuffle"),
            ("float32", "zstd", "bitshuffle"),
            ("float32", "lz4", "shuffle"),
            ("int64", "lz4hc", "noshuffle"),
            ("uint32", "blosclz", "shuffle"),
            ("bfloat16", "zlib", "bitshuffle"),
            ("uint8", "zstd", "shuffle"),
        ];
        for (i, (dtype, cname, shuffle)) in cases.into_iter().enumerate() {
            let (_, size) = data_type_from_name(dtype).unwrap();
            let codecs = json!([bytes("little"), blosc(cname, shuffle, size)]);
            roundtrip(dtype, &codecs, &[8, 16, 16], 20 + i as u64);
        }
    }

    #[test]
    fn roundtrip_transpose_with_compression() {
        roundtrip(
            "float32",
            &json!([transpose(&[2, 0, 1]), bytes("little"), blosc("zstd", "shuffle", 4)]),
            &[4, 5, 6],
            31,
        );
        roundtrip(
            "uint16",
            &json!([transpose(&[1, 0]), bytes("big"), zstd(), crc32c()]),
            &[7, 9],
            32,
        );
        roundtrip(
            "int16",
            &json!([transpose(&[0, 1, 2]), bytes("little"), gzip()]),
            &[2, 3, 4],
            33,
        );
    }

    #[test]
    fn big_endian_bytes_decode_to_native_values() {
        // Encoded by hand, independent of zarrs: 6 uint16 values stored big endian.
        let values: [u16; 6] = [0, 1, 258, 0x1234, 0xfffe, 40000];
        let encoded: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
        let codec = ChunkCodec::new("uint16", &json!(0), &json!([bytes("big")]), &[2, 3]).unwrap();
        let mut out = vec![0u8; codec.decoded_len()];
        codec.decode_into(&encoded, &mut out).unwrap();
        let got: Vec<u16> = out.chunks_exact(2).map(|b| u16::from_ne_bytes([b[0], b[1]])).collect();
        assert_eq!(got, values);
    }

    #[test]
    fn transpose_decodes_to_c_order() {
        // Chunk [2,3], transpose order [1,0]: stored as the [3,2] transposed array.
        let logical: [u8; 6] = [1, 2, 3, 4, 5, 6]; // [[1,2,3],[4,5,6]]
        let stored: [u8; 6] = [1, 4, 2, 5, 3, 6]; // [[1,4],[2,5],[3,6]]
        let codec =
            ChunkCodec::new("uint8", &json!(0), &json!([transpose(&[1, 0]), "bytes"]), &[2, 3])
                .unwrap();
        let mut out = [0u8; 6];
        codec.decode_into(&stored, &mut out).unwrap();
        assert_eq!(out, logical);
    }

    #[test]
    fn bool_bytes_are_normalised_to_zero_or_one() {
        let codec = ChunkCodec::new("bool", &json!(false), &json!(["bytes"]), &[4]).unwrap();
        let mut out = [9u8; 4];
        codec.decode_into(&[0, 1, 2, 255], &mut out).unwrap();
        assert_eq!(out, [0, 1, 1, 1]);
    }

    #[test]
    fn corrupted_zstd_and_blosc_give_decode_errors() {
        let shape = [8, 16, 16];
        let decoded = random_chunk("uint16", &shape, 41);
        for codecs in [
            json!([bytes("little"), zstd()]),
            json!([bytes("little"), blosc("lz4", "shuffle", 2)]),
            json!([bytes("little"), blosc("zstd", "bitshuffle", 2)]),
            json!([bytes("little"), gzip()]),
        ] {
            let encoded = zarrs_encode("uint16", &json!(0), &codecs, &shape, &decoded);
            let codec = ChunkCodec::new("uint16", &json!(0), &codecs, &shape).unwrap();
            let mut out = vec![0u8; codec.decoded_len()];
            // Truncated.
            let e = codec.decode_into(&encoded[..encoded.len() / 2], &mut out).unwrap_err();
            assert_eq!(e.status(), Status::Decode, "{codecs}: {e}");
            // Garbage of the right length.
            let garbage = random_bytes(encoded.len(), 42);
            let e = codec.decode_into(&garbage, &mut out).unwrap_err();
            assert_eq!(e.status(), Status::Decode, "{codecs}: {e}");
            // Empty.
            let e = codec.decode_into(&[], &mut out).unwrap_err();
            assert_eq!(e.status(), Status::Decode, "{codecs}: {e}");
        }
    }

    #[test]
    fn wrong_size_uncompressed_chunk_is_a_decode_error() {
        let codec =
            ChunkCodec::new("uint16", &json!(0), &json!([bytes("little")]), &[4, 4]).unwrap();
        let mut out = vec![0u8; codec.decoded_len()];
        let e = codec.decode_into(&[0u8; 31], &mut out).unwrap_err();
        assert_eq!(e.status(), Status::Decode, "{e}");
    }

    #[test]
    fn crc32c_mismatch_is_a_decode_error() {
        let shape = [4, 8];
        let codecs = json!([bytes("little"), crc32c()]);
        let decoded = random_chunk("float32", &shape, 51);
        let mut encoded = zarrs_encode("float32", &json!(0), &codecs, &shape, &decoded);
        encoded[5] ^= 0x10;
        let codec = ChunkCodec::new("float32", &json!(0), &codecs, &shape).unwrap();
        let mut out = vec![0u8; codec.decoded_len()];
        let e = codec.decode_into(&encoded, &mut out).unwrap_err();
        assert_eq!(e.status(), Status::Decode);
        assert!(e.message().contains("checksum") || e.message().contains("crc"), "{e}");
    }

    #[test]
    fn wrong_output_length_is_invalid_argument() {
        let codec = ChunkCodec::new("uint16", &json!(0), &json!([bytes("little")]), &[4]).unwrap();
        let mut out = [0u8; 7];
        let e = codec.decode_into(&[0u8; 8], &mut out).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
    }

    #[test]
    fn fill_values_parse_like_zarr_json() {
        let fill = |dtype: &str, v: Value| {
            ChunkCodec::new(dtype, &v, &json!([bytes("little")]), &[1])
                .map(|c| c.fill_value_bytes().to_vec())
        };
        assert_eq!(fill("uint16", json!(7)).unwrap(), 7u16.to_ne_bytes());
        assert_eq!(fill("int64", json!(-3)).unwrap(), (-3i64).to_ne_bytes());
        assert_eq!(fill("uint64", json!(u64::MAX)).unwrap(), u64::MAX.to_ne_bytes());
        assert_eq!(fill("bool", json!(true)).unwrap(), [1]);
        assert_eq!(fill("float32", json!(1.5)).unwrap(), 1.5f32.to_ne_bytes());
        assert_eq!(fill("float64", json!("Infinity")).unwrap(), f64::INFINITY.to_ne_bytes());
        assert_eq!(fill("float32", json!("-Infinity")).unwrap(), f32::NEG_INFINITY.to_ne_bytes());
        let nan = f32::from_ne_bytes(fill("float32", json!("NaN")).unwrap().try_into().unwrap());
        assert!(nan.is_nan());
        assert_eq!(fill("float32", json!("0x7fc00001")).unwrap(), 0x7fc0_0001u32.to_ne_bytes());
        assert_eq!(fill("float16", json!("0x3c00")).unwrap(), half::f16::ONE.to_ne_bytes());
        assert_eq!(fill("bfloat16", json!(2.0)).unwrap(), half::bf16::from_f32(2.0).to_ne_bytes());
        for (dtype, bad) in [
            ("uint8", json!(256)),
            ("uint16", json!(-1)),
            ("int32", json!("NaN")),
            ("int32", json!(1.5)),
            ("bool", json!(0)),
            ("float32", json!("nope")),
            ("float32", json!("0x3c00")),
            ("uint16", json!(null)),
        ] {
            let e = fill(dtype, bad.clone()).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument, "{dtype} {bad}: {e}");
        }
    }

    #[test]
    fn unsupported_data_type_is_dtype_mismatch() {
        for name in ["complex64", "string", "int4", "float8_e4m3", "r16"] {
            let e = ChunkCodec::new(name, &json!(0), &json!(["bytes"]), &[4]).unwrap_err();
            assert_eq!(e.status(), Status::DtypeMismatch);
            assert!(e.message().contains(&format!("`{name}`")), "{e}");
        }
    }

    #[test]
    fn unsupported_codec_is_invalid_argument_naming_it() {
        for codecs in [
            json!([bytes("little"), {"name": "foo"}]),
            json!([{"name": "sharding_indexed", "configuration": {}}]),
            json!([{"name": "vlen-utf8"}]),
        ] {
            let e = ChunkCodec::new("uint16", &json!(0), &codecs, &[4]).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument);
            assert!(e.message().starts_with("unsupported codec `"), "{e}");
        }
        let e =
            ChunkCodec::new("uint16", &json!(0), &json!([bytes("little"), {"name": "foo"}]), &[4])
                .unwrap_err();
        assert_eq!(e.message(), "unsupported codec `foo`");
        // A codec that need not be understood is skipped, as zarrs does.
        let codecs = json!([bytes("little"), {"name": "foo", "must_understand": false}]);
        assert!(ChunkCodec::new("uint16", &json!(0), &codecs, &[4]).is_ok());
    }

    #[test]
    fn misconfigured_codecs_and_shapes_are_invalid_argument() {
        let cases = [
            ("uint16", json!(["bytes"]), vec![4]), // no endian
            ("uint16", json!([zstd()]), vec![4]),  // no array-to-bytes codec
            ("uint16", json!([bytes("little"), bytes("big")]), vec![4]), // two of them
            ("uint16", json!([transpose(&[1, 0]), bytes("little")]), vec![4]), // order vs rank
            ("uint16", json!([bytes("sideways")]), vec![4]),
            ("uint16", json!({"name": "bytes"}), vec![4]), // not a list
            ("uint16", json!([bytes("little")]), vec![]),
            ("uint16", json!([bytes("little")]), vec![4, 0]),
            ("uint16", json!([bytes("little")]), vec![u64::MAX, 4]),
        ];
        for (dtype, codecs, shape) in cases {
            let e = ChunkCodec::new(dtype, &json!(0), &codecs, &shape).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument, "{codecs} {shape:?}: {e}");
        }
    }

    #[test]
    fn one_codec_decodes_from_many_threads() {
        let shape = [8, 8, 8];
        let codecs = json!([bytes("little"), blosc("lz4", "shuffle", 4)]);
        let codec = ChunkCodec::new("float32", &json!(0), &codecs, &shape).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let codec = &codec;
                let codecs = &codecs;
                s.spawn(move || {
                    let decoded = random_chunk("float32", &shape, 60 + t);
                    let encoded = zarrs_encode("float32", &json!(0), codecs, &shape, &decoded);
                    let mut out = vec![0u8; codec.decoded_len()];
                    codec.decode_into(&encoded, &mut out).unwrap();
                    assert!(out == decoded);
                });
            }
        });
    }
}
