use super::*;
use proptest::prelude::*;

use crate::store::Generation;

/// An opened array of `zarr.json` text, in a store that is never read.
pub(crate) fn array(json: &str) -> Arc<Array> {
    let meta = ArrayMeta::parse(json.as_bytes()).unwrap();
    let store = crate::store::open("/nonexistent").unwrap();
    Arc::new(Array { uri: "u".into(), id: store.uri().into(), decoder: ArrayDecoder::new(&meta).unwrap(), store, meta, meta_source: None })
}

fn meta_json(shape: &[u64], grid: &[u64], inner: Option<&[u64]>) -> String {
    let bytes = r#"[{"name":"bytes","configuration":{"endian":"little"}}]"#;
    let codecs = match inner {
        None => bytes.to_string(),
        Some(inner) => format!(
            r#"[{{"name":"sharding_indexed","configuration":{{"chunk_shape":{inner:?},"codecs":{bytes},"index_codecs":{bytes},"index_location":"end"}}}}]"#
        ),
    };
    format!(
        r#"{{"zarr_format":3,"node_type":"array","shape":{shape:?},"data_type":"uint8","chunk_grid":{{"name":"regular","configuration":{{"chunk_shape":{grid:?}}}}},"fill_value":0,"codecs":{codecs}}}"#
    )
}

/// Every shard present; inner chunk `i` of a shard is present unless `i % 3 == 2`.
struct AllShards(Vec<Shard>);
impl ShardLookup for AllShards {
    fn shard(&self, _array: &Array, _coords: &[u64]) -> Option<Option<&Shard>> {
        Some(self.0.first())
    }
}

fn index_bytes(n: usize) -> Shard {
    let mut b = Vec::new();
    for i in 0..n {
        let (o, l) = if i % 3 == 2 { (u64::MAX, u64::MAX) } else { (i as u64 * 10, 10) };
        b.extend(o.to_le_bytes());
        b.extend(l.to_le_bytes());
    }
    Shard { index: ShardIndex::parse(&b, n, false, 1 << 40).unwrap(), generation: Generation::new("g") }
}

fn geometry() -> impl Strategy<Value = (Vec<u64>, Vec<u64>, Option<Vec<u64>>)> {
    (1usize..4).prop_flat_map(|rank| {
        (
            proptest::collection::vec(1u64..20, rank),
            proptest::collection::vec(1u64..5, rank),
            proptest::collection::vec(1u64..3, rank),
            any::<bool>(),
        )
            .prop_map(|(shape, inner, per, sharded)| {
                if sharded {
                    let grid: Vec<u64> = inner.iter().zip(&per).map(|(i, p)| i * p).collect();
                    (shape, grid, Some(inner))
                } else {
                    (shape, inner, None)
                }
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    /// Every voxel of every crop is written by exactly one copy or fill, copies stay inside
    /// their chunk, and a chunk shared by samples is planned once.
    #[test]
    fn every_voxel_covered_exactly_once(
        (shape, grid, inner) in geometry(),
        boxes in proptest::collection::vec(proptest::collection::vec((-6i64..24, 1i64..9), 3), 1..5),
    ) {
        let arr = array(&meta_json(&shape, &grid, inner.as_deref()));
        let meta = &arr.meta;
        let rank = shape.len();
        let aabbs: Vec<Vec<(i64, i64)>> = boxes.iter().map(|b| b[..rank].iter().map(|&(s, e)| (s, s + e)).collect()).collect();
        let per_shard: u64 = meta.sharding.as_ref().map_or(1, |s| s.n_chunks);
        let shards = AllShards(vec![index_bytes(per_shard as usize)]);
        let samples: Vec<ResolvedSample<'_>> = aabbs.iter().map(|a| ResolvedSample { array: &arr, aabb: a }).collect();
        let plan = plan_batch(&samples, &shards, true).unwrap();
        let mut seen = std::collections::HashSet::new();
        for op in &plan.chunk_ops {
            prop_assert!(seen.insert(op.coords.clone()), "chunk {:?} planned twice", op.coords);
        }
        for (si, a) in aabbs.iter().enumerate() {
            let ext: Vec<u64> = a.iter().map(|(s, e)| (e - s) as u64).collect();
            let n: u64 = ext.iter().product();
            let mut count = vec![0u8; n as usize];
            let mut mark = |start: &[u64], extent: &[u64]| {
                for cell in cells(&start.iter().zip(extent).map(|(s, e)| (*s, s + e)).collect::<Vec<_>>(), &vec![1; rank]) {
                    count[ravel(&cell, &ext)] += 1;
                }
            };
            for op in &plan.chunk_ops {
                for c in op.copies.iter().filter(|c| c.sample as usize == si) {
                    for d in 0..rank {
                        prop_assert!(c.chunk_start[d] + c.extent[d] <= meta.chunk_shape()[d]);
                    }
                    mark(&c.sample_start, &c.extent);
                }
            }
            for f in plan.fill_ops.iter().filter(|f| f.sample as usize == si) {
                mark(&f.region.start, &f.region.extent);
            }
            prop_assert!(count.iter().all(|&c| c == 1), "sample {si} {a:?}: coverage {count:?}");
        }
    }
}

#[test]
fn shared_chunk_is_decoded_once_and_absent_chunks_fill() {
    let arr = array(&meta_json(&[8, 8], &[4, 4], Some(&[2, 2])));
    let shards = AllShards(vec![index_bytes(4)]);
    let a = [(0, 2), (0, 2)];
    let b = [(1, 3), (1, 3)];
    let samples = [ResolvedSample { array: &arr, aabb: &a }, ResolvedSample { array: &arr, aabb: &b }];
    let plan = plan_batch(&samples, &shards, false).unwrap();
    assert_eq!(plan.chunk_ops.len(), 4);
    assert_eq!(plan.chunk_ops[0].copies.len(), 2, "chunk (0,0) serves both samples");
    let absent = plan.chunk_ops.iter().filter(|o| o.source == ChunkSource::Absent).count();
    assert_eq!(absent, 1, "inner chunk 2 of each shard is absent");
    assert!(matches!(&plan.chunk_ops[0].source, ChunkSource::Range { offset: 0, nbytes: 10, key, generation: Some(_) } if &**key == "c/0/0"));
    assert_eq!(plan.decoded_bytes, 3 * 4, "three present chunks of 2x2 uint8");
}

#[test]
fn out_of_bounds_is_an_error_unless_filling() {
    let arr = array(&meta_json(&[8, 8], &[4, 4], None));
    let a = [(-1, 3), (0, 4)];
    let samples = [ResolvedSample { array: &arr, aabb: &a }];
    let e = plan_batch(&samples, &AllShards(vec![]), false).unwrap_err();
    assert!(e.message().contains("[8, 8]"), "{e}");
    let plan = plan_batch(&samples, &AllShards(vec![]), true).unwrap();
    assert_eq!(plan.fill_ops.len(), 1);
    assert!(matches!(&plan.chunk_ops[0].source, ChunkSource::File(k) if &**k == "c/0/0"));
    let r = [(0, 4)];
    let e = plan_batch(&[ResolvedSample { array: &arr, aabb: &r }], &AllShards(vec![]), false).unwrap_err();
    assert_eq!(e.status(), crate::error::Status::RankMismatch);
}

#[test]
fn an_unresolved_shard_is_an_error_not_a_panic() {
    struct NoShards;
    impl ShardLookup for NoShards {
        fn shard(&self, _: &Array, _: &[u64]) -> Option<Option<&Shard>> {
            None
        }
    }
    let arr = array(&meta_json(&[8], &[4], Some(&[2])));
    let a = [(0, 2)];
    assert!(plan_batch(&[ResolvedSample { array: &arr, aabb: &a }], &NoShards, false).is_err());
}

#[test]
fn hostile_sizes_fail_the_plan_typed() {
    // A shard index entry claiming far more bytes than any encoding of a 2x2 uint8 chunk.
    let arr = array(&meta_json(&[8, 8], &[4, 4], Some(&[2, 2])));
    let mut b = Vec::new();
    for i in 0..4u64 {
        b.extend((i * 10).to_le_bytes());
        b.extend(if i == 0 { 1u64 << 42 } else { 10 }.to_le_bytes());
    }
    let shard = Shard { index: ShardIndex::parse(&b, 4, false, u64::MAX).unwrap(), generation: Generation::new("g") };
    let a = [(0, 2), (0, 2)];
    let e = plan_batch(&[ResolvedSample { array: &arr, aabb: &a }], &AllShards(vec![shard]), false).unwrap_err();
    assert_eq!(e.status(), crate::error::Status::Storage, "{e}");
    assert!(e.message().contains("c/0/0") && e.message().contains("[0, 0]"), "names the shard and chunk: {e}");
    // A sample touching more than MAX_CHUNK_OPS chunks of 1 voxel.
    let arr = array(&meta_json(&[4096, 4096], &[1, 1], None));
    let a = [(0, 2048), (0, 1024)];
    let e = plan_batch(&[ResolvedSample { array: &arr, aabb: &a }], &AllShards(vec![]), false).unwrap_err();
    assert_eq!(e.status(), crate::error::Status::BudgetExceeded, "{e}");
    // Boxes near 2^63 over an array of extent 2^63 - 1 are in bounds and plan without overflow.
    let big = i64::MAX as u64;
    let arr = array(&meta_json(&[big], &[1 << 20], None));
    let a = [(i64::MAX - 8, i64::MAX)];
    let plan = plan_batch(&[ResolvedSample { array: &arr, aabb: &a }], &AllShards(vec![]), false).unwrap();
    assert!(plan.fill_ops.is_empty() && plan.chunk_ops.len() == 1);
    assert_eq!(plan.chunk_ops[0].copies[0].extent, [8]);
}

/// One sample of a later batch: its batch, uri and box.
type Later = (u64, String, Vec<(i64, i64)>);

/// A generated later sample: its box as (start, extent) per dimension, its batch, and
/// whether it names another uri.
type LaterBox = (Vec<(i64, i64)>, u64, bool);

/// The later samples of `boxes`, cut to the array's rank, in increasing batch.
fn later_boxes(a: &Array, boxes: &[LaterBox]) -> Vec<Later> {
    let rank = a.meta.rank();
    let mut later: Vec<Later> = boxes
        .iter()
        .map(|(b, seq, other)| (*seq, if *other { "other".to_string() } else { a.uri.clone() }, b[..rank].iter().map(|&(s, e)| (s, s + e)).collect()))
        .collect();
    later.sort_by_key(|l| l.0);
    later
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// `next_uses` (the device chunk store's look-ahead): for every chunk, the first later
    /// batch with a sample of the array whose box overlaps the chunk (brute force over the
    /// chunk grid), and nothing for chunks no later box touches or for other uris' boxes.
    #[test]
    fn next_uses_is_the_first_later_batch_touching_each_chunk(
        (shape, grid, inner) in geometry(),
        boxes in proptest::collection::vec((proptest::collection::vec((-3i64..22, 1i64..8), 3), 0u64..4, any::<bool>()), 0..12),
    ) {
        let a = array(&meta_json(&shape, &grid, inner.as_deref()));
        let rank = shape.len();
        let chunk = a.meta.chunk_shape().to_vec();
        let sorted = later_boxes(&a, &boxes);
        let got = next_uses(std::slice::from_ref(&a), sorted.iter().map(|(s, u, b)| (*s, u.as_str(), b.as_slice())));
        let n_chunks: Vec<u64> = shape.iter().zip(&chunk).map(|(s, c)| s.div_ceil(*c)).collect();
        for coords in cells(&n_chunks.iter().map(|&n| (0, n)).collect::<Vec<_>>(), &vec![1; rank]) {
            let want = sorted.iter().filter(|(_, u, _)| *u == a.uri).find(|(_, _, b)| {
                b.iter().zip(&coords).zip(&chunk).zip(&shape).all(|(((&(lo, hi), &c), &cs), &n)| {
                    let (c0, c1) = ((c * cs) as i64, ((c + 1) * cs).min(n) as i64);
                    lo.max(0) < c1 && hi.min(n as i64) > c0 && lo < hi
                })
            }).map(|l| l.0);
            prop_assert_eq!(got.get(&(Arc::clone(&a.id), coords.clone())).copied(), want, "chunk {:?}", coords);
        }
        prop_assert!(got.keys().all(|(id, c)| *id == a.id && c.iter().zip(&n_chunks).all(|(x, n)| x < n)));
    }

    /// `window_spans` (the CPU path's look-ahead for blosc spans): per chunk, the smallest
    /// C-order byte range holding every voxel of the chunk that a later box of the array
    /// covers (brute force over the chunk's voxels), nothing for chunks no later box reads.
    #[test]
    fn window_spans_hold_every_voxel_later_boxes_read(
        (shape, grid, inner) in geometry(),
        boxes in proptest::collection::vec((proptest::collection::vec((-3i64..22, 1i64..8), 3), 0u64..4, any::<bool>()), 0..8),
    ) {
        let a = array(&meta_json(&shape, &grid, inner.as_deref()));
        let rank = shape.len();
        let chunk = a.meta.chunk_shape().to_vec();
        let later = later_boxes(&a, &boxes);
        let got = window_spans(std::slice::from_ref(&a), later.iter().map(|(s, u, b)| (*s, u.as_str(), b.as_slice())), |_| true);
        let n_chunks: Vec<u64> = shape.iter().zip(&chunk).map(|(s, c)| s.div_ceil(*c)).collect();
        let voxels = cells(&chunk.iter().map(|&n| (0, n)).collect::<Vec<_>>(), &vec![1; rank]);
        for coords in cells(&n_chunks.iter().map(|&n| (0, n)).collect::<Vec<_>>(), &vec![1; rank]) {
            let mut want: Option<(usize, usize)> = None;
            for local in &voxels {
                let global: Vec<i64> = local.iter().zip(&coords).zip(&chunk).map(|((l, c), n)| (c * n + l) as i64).collect();
                let read = later.iter().any(|(_, u, b)| *u == a.uri && b.iter().zip(&global).zip(&shape).all(|((&(lo, hi), &g), &n)| lo <= g && g < hi && g < n as i64));
                if read {
                    let i = ravel(local, &chunk);
                    want = Some(want.map_or((i, i + 1), |(lo, hi)| (lo.min(i), hi.max(i + 1))));
                }
            }
            prop_assert_eq!(got.get(&(Arc::clone(&a.id), coords.clone())).copied(), want, "chunk {:?}", coords);
        }
        prop_assert!(window_spans(std::slice::from_ref(&a), later.iter().map(|(s, u, b)| (*s, u.as_str(), b.as_slice())), |_| false).is_empty());
    }
}
