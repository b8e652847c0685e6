//! damacy's parsers against an independent writer, zarrs, on random layouts (small case
//! counts). Metadata: arrays described with zarrs' `ArrayBuilder` (rank 1-4, any chunk and
//! shard shape, index at either end with or without crc32c, a transpose, compressors, key
//! separators, data types), serialised as zarrs writes `zarr.json`, parse to the same
//! geometry. Shards: arrays written by zarrs' sharding codec (rank 1-3, inner chunks of 1-4,
//! 1-3 per shard, some inner chunks all fill so zarrs leaves them out) yield index entries
//! equal to zarrs' own reading of the index, and inner chunks that decode to the values
//! written.

use std::num::NonZeroU64;
use std::sync::Arc;

use damacy::testing::decode::ChunkCodec;
use damacy::testing::zarr::{ArrayMeta, CodecSpec, KeyEncoding, ShardIndex};
use proptest::prelude::*;
use zarrs::array::codec::{Crc32cCodec, GzipCodec, ShardingCodecBuilder, ShardingIndexLocation, TransposeCodec, TransposeOrder, ZstdCodec};
use zarrs::array::{data_type, ArrayBuilder, ArrayShardedReadableExt, ArrayShardedReadableExtCache, BytesToBytesCodecTraits, ChunkKeySeparator, FillValueMetadata};
use zarrs::storage::store::MemoryStore;
use zarrs::storage::{ReadableStorageTraits, StoreKey};

#[derive(Debug, Clone)]
struct Layout {
    shape: Vec<u64>,
    inner: Vec<u64>,
    /// Inner chunks per shard; `None`: unsharded (chunks of `inner`).
    per_shard: Option<Vec<u64>>,
    at_start: bool,
    crc: bool,
    /// 0 none, 1 zstd, 2 gzip, 3 zstd with checksum then crc32c.
    compressor: u8,
    dot: bool,
    /// A permutation of the axes (identity: no transpose codec).
    order: Vec<usize>,
}

impl Layout {
    fn grid(&self) -> Vec<u64> {
        self.per_shard.as_ref().map_or_else(|| self.inner.clone(), |p| self.inner.iter().zip(p).map(|(i, p)| i * p).collect())
    }

    fn transposed(&self) -> bool {
        self.order.iter().enumerate().any(|(i, &o)| i != o)
    }

    fn builder(&self, dt: &zarrs::array::DataType, fill: u64) -> ArrayBuilder {
        let mut b = ArrayBuilder::new(self.shape.clone(), self.grid(), dt.clone(), FillValueMetadata::from(fill));
        let compressors: Vec<Arc<dyn BytesToBytesCodecTraits>> = match self.compressor {
            0 => vec![],
            1 => vec![Arc::new(ZstdCodec::new(3, false))],
            2 => vec![Arc::new(GzipCodec::new(1).unwrap())],
            _ => vec![Arc::new(ZstdCodec::new(1, true)), Arc::new(Crc32cCodec::new())],
        };
        let transpose = || -> Vec<Arc<dyn zarrs::array::ArrayToArrayCodecTraits>> {
            if self.transposed() {
                vec![Arc::new(TransposeCodec::new(TransposeOrder::new(&self.order).unwrap()))]
            } else {
                vec![]
            }
        };
        if self.dot {
            b.chunk_key_encoding_default_separator(ChunkKeySeparator::Dot);
        }
        if self.per_shard.is_some() {
            let inner: Vec<NonZeroU64> = self.inner.iter().map(|&x| NonZeroU64::new(x).unwrap()).collect();
            let mut s = ShardingCodecBuilder::new(inner, dt);
            s.array_to_array_codecs(transpose()).bytes_to_bytes_codecs(compressors);
            s.index_location(if self.at_start { ShardingIndexLocation::Start } else { ShardingIndexLocation::End });
            if !self.crc {
                s.index_bytes_to_bytes_codecs(vec![]);
            }
            b.array_to_bytes_codec(Arc::new(s.build()));
        } else {
            b.array_to_array_codecs(transpose()).bytes_to_bytes_codecs(compressors);
        }
        b
    }
}

fn layout(ranks: std::ops::RangeInclusive<usize>, max_extent: u64, max_inner: u64, sharded: bool) -> impl Strategy<Value = Layout> {
    ranks.prop_flat_map(move |r| {
        let per_shard = if sharded { proptest::collection::vec(1u64..=3, r).prop_map(Some).boxed() } else { proptest::option::of(proptest::collection::vec(1u64..=3, r)).boxed() };
        (
            proptest::collection::vec(1u64..=max_extent, r),
            proptest::collection::vec(1u64..=max_inner, r),
            per_shard,
            any::<bool>(),
            any::<bool>(),
            0u8..4,
            any::<bool>(),
            Just((0..r).collect::<Vec<usize>>()).prop_shuffle(),
        )
            .prop_map(|(shape, inner, per_shard, at_start, crc, compressor, dot, order)| Layout { shape, inner, per_shard, at_start, crc, compressor, dot, order })
    })
}

/// (zarrs data type, Zarr name, element size).
fn dtypes() -> Vec<(zarrs::array::DataType, &'static str, usize)> {
    vec![
        (data_type::uint8(), "uint8", 1),
        (data_type::int16(), "int16", 2),
        (data_type::uint16(), "uint16", 2),
        (data_type::uint32(), "uint32", 4),
        (data_type::int64(), "int64", 8),
        (data_type::float32(), "float32", 4),
        (data_type::float64(), "float64", 8),
    ]
}

fn fill_bytes(name: &str, v: u64) -> Vec<u8> {
    match name {
        "uint8" => vec![v as u8],
        "int16" => (v as i16).to_ne_bytes().to_vec(),
        "uint16" => (v as u16).to_ne_bytes().to_vec(),
        "uint32" => (v as u32).to_ne_bytes().to_vec(),
        "int64" => (v as i64).to_ne_bytes().to_vec(),
        "float32" => (v as f32).to_ne_bytes().to_vec(),
        _ => (v as f64).to_ne_bytes().to_vec(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn zarrs_metadata_parses_to_the_same_geometry(l in layout(1..=4, 1 << 20, 64, false), dt in 0usize..7, fill in 0u64..100) {
        let (dt, name, size) = dtypes().swap_remove(dt);
        let metadata = l.builder(&dt, fill).build_metadata().unwrap();
        let json = serde_json::to_vec(&metadata).unwrap();
        let m = ArrayMeta::parse(&json).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&json)));
        prop_assert_eq!(&m.shape, &l.shape);
        prop_assert_eq!(&m.grid_shape, &l.grid());
        prop_assert_eq!(m.chunk_shape(), &l.inner[..]);
        prop_assert_eq!(m.data_type.as_str(), name);
        prop_assert_eq!(m.dtype.size(), size);
        prop_assert_eq!(&m.fill, &fill_bytes(name, fill));
        prop_assert_eq!(m.decoded_chunk_bytes, l.inner.iter().product::<u64>() * size as u64);
        prop_assert_eq!(&m.key_encoding, &KeyEncoding::Default { separator: if l.dot { '.' } else { '/' } });
        match (&m.sharding, &l.per_shard) {
            (None, None) => {}
            (Some(s), Some(p)) => {
                prop_assert_eq!(&s.chunks_per_shard, p);
                prop_assert_eq!(s.n_chunks, p.iter().product::<u64>());
                prop_assert_eq!((s.index_at_start, s.index_crc32c), (l.at_start, l.crc));
                prop_assert_eq!(s.index_len(), s.n_chunks * 16 + if l.crc { 4 } else { 0 });
            }
            (s, p) => return Err(TestCaseError::fail(format!("sharding {s:?} for {p:?}"))),
        }
        let mut specs = m.codecs.specs.iter();
        if l.transposed() {
            prop_assert_eq!(specs.next(), Some(&CodecSpec::Transpose { order: l.order.clone() }));
        }
        let bytes = matches!(specs.next(), Some(CodecSpec::Bytes { .. }));
        prop_assert!(bytes, "`bytes` follows the array-to-array codecs");
        let rest: Vec<&CodecSpec> = specs.collect();
        let want: Vec<CodecSpec> = match l.compressor {
            0 => vec![],
            1 => vec![CodecSpec::Zstd],
            2 => vec![CodecSpec::Gzip],
            _ => vec![CodecSpec::Zstd, CodecSpec::Crc32c],
        };
        prop_assert_eq!(rest, want.iter().collect::<Vec<_>>());
    }

    #[test]
    fn zarrs_shards_parse_to_their_chunks(
        l in layout(1..=3, 1, 4, true),
        shards in proptest::collection::vec(1u64..=2, 3),
        tail in proptest::collection::vec(0.0f64..1.0, 3),
        empty in proptest::collection::vec(any::<bool>(), 64),
        seed in any::<u16>(),
    ) {
        // Shape: whole shards, the last one partial (a fraction of it along each axis).
        let grid = l.grid();
        let r = l.inner.len();
        let shape: Vec<u64> = (0..r).map(|d| grid[d] * (shards[d] - 1) + 1 + ((grid[d] - 1) as f64 * tail[d]) as u64).collect();
        let l = Layout { shape: shape.clone(), ..l };
        let store = Arc::new(MemoryStore::new());
        let array = l.builder(&data_type::uint16(), 0).build(store.clone(), "/").unwrap();
        array.store_metadata().unwrap();
        // Values: 0 (the fill) in the inner chunks `empty` marks, else nonzero from the coordinates.
        let cells: Vec<u64> = shape.iter().zip(&l.inner).map(|(s, i)| s.div_ceil(*i)).collect();
        let inner_of = |c: &[u64]| -> usize { c.iter().zip(&l.inner).zip(&cells).fold(0u64, |a, ((x, i), n)| a * n + x / i) as usize };
        let value = |c: &[u64]| -> u16 {
            if empty[inner_of(c) % empty.len()] { 0 } else { (c.iter().fold(u64::from(seed), |a, &x| a.wrapping_mul(31).wrapping_add(x)) % 65_535 + 1) as u16 }
        };
        let n: u64 = shape.iter().product();
        let coords_of = |mut i: u64, dims: &[u64]| -> Vec<u64> {
            let mut c: Vec<u64> = dims.iter().rev().map(|&n| { let x = i % n; i /= n; x }).collect();
            c.reverse();
            c
        };
        let data: Vec<u16> = (0..n).map(|i| value(&coords_of(i, &shape))).collect();
        array.store_array_subset(&array.subset_all(), &data).unwrap();

        let zarr = store.get(&StoreKey::new("zarr.json").unwrap()).unwrap().unwrap();
        let meta = ArrayMeta::parse(&zarr).unwrap();
        let s = meta.sharding.clone().unwrap();
        let codec = ChunkCodec::new(&meta).unwrap();
        let cache = ArrayShardedReadableExtCache::new(&array);
        let n_shards: Vec<u64> = shape.iter().zip(&grid).map(|(s, g)| s.div_ceil(*g)).collect();
        for si in 0..n_shards.iter().product::<u64>() {
            let shard = coords_of(si, &n_shards);
            let key = meta.key_encoding.key(&shard);
            let Some(bytes) = store.get(&StoreKey::new(key.clone()).unwrap()).unwrap() else { continue };
            let len = bytes.len() as u64;
            let at = if s.index_at_start { 0 } else { len - s.index_len() };
            let index = ShardIndex::parse(&bytes[at as usize..(at + s.index_len()) as usize], s.n_chunks as usize, s.index_crc32c, len).unwrap();
            prop_assert_eq!(index.len() as u64, s.n_chunks);
            for ci in 0..s.n_chunks {
                let local = coords_of(ci, &s.chunks_per_shard);
                let global: Vec<u64> = shard.iter().zip(&local).zip(&s.chunks_per_shard).map(|((sh, lo), p)| sh * p + lo).collect();
                let ours = index.get(ci as usize).map(|r| r.offset..r.offset + r.nbytes);
                // zarrs returns an absent chunk's (u64::MAX, u64::MAX) entry as a range.
                let theirs = array.subchunk_byte_range(&cache, &global).unwrap().filter(|b| b.start(len) != u64::MAX).map(|b| b.to_range(len));
                prop_assert_eq!(&ours, &theirs, "shard {} inner chunk {:?}", key, local);
                // Values: decoded by damacy's CPU codec, against what was written.
                let voxels: u64 = l.inner.iter().product();
                let want: Vec<u16> = (0..voxels)
                    .map(|v| {
                        let c: Vec<u64> = coords_of(v, &l.inner).iter().zip(&global).zip(&l.inner).map(|((x, g), i)| g * i + x).collect();
                        if c.iter().zip(&shape).all(|(x, s)| x < s) { value(&c) } else { 0 }
                    })
                    .collect();
                let got: Vec<u16> = match ours {
                    None => vec![0; voxels as usize],
                    Some(range) => {
                        prop_assert!(range.end <= at || range.start >= at + s.index_len(), "chunk {:?} overlaps the index", range);
                        let mut out = vec![0u8; codec.decoded_len()];
                        codec.decode_into(&bytes[range.start as usize..range.end as usize], &mut out).unwrap();
                        out.chunks_exact(2).map(|b| u16::from_ne_bytes([b[0], b[1]])).collect()
                    }
                };
                prop_assert_eq!(got, want, "values of shard {} inner chunk {:?}", key, local);
            }
        }
    }
}
