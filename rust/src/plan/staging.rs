//! The staging layout of a batch, for both paths: coalesced read ops (ranges of one object
//! → staging offsets) and a decoded-arena slot per chunk. Pure functions of the plan; no
//! I/O. Sums cannot overflow: the planner caps a batch's chunk ops and every range's size.

use std::sync::Arc;

use super::{BatchPlan, ChunkSource};
use crate::store::Generation;

/// One positioned read into the staging buffer: a range of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadOp {
    /// The array whose store holds the object (index into the plan's arrays).
    pub array: u32,
    /// Object key.
    pub key: Arc<str>,
    /// The generation the object must still have (the shard index's).
    pub generation: Option<Generation>,
    /// Byte offset in the file.
    pub offset: u64,
    /// Bytes to read.
    pub len: u64,
    /// Where they land in the staging buffer.
    pub staging_offset: u64,
    /// Chunk ops served by this read (indices into the plan's chunk ops).
    pub chunks: Vec<usize>,
}

/// Where each chunk's bytes are staged and decoded.
#[derive(Debug, Clone, Default)]
pub(crate) struct StagingLayout {
    /// Coalesced reads of shard-file ranges.
    pub reads: Vec<ReadOp>,
    /// Per chunk op: `(staging offset, staged length)`; `None` for absent chunks and for
    /// whole-file chunks (staged by their own job).
    pub staged: Vec<Option<(u64, u64)>>,
    /// Per chunk op: offset of its decoded bytes in the decoded arena (`None`: absent).
    pub decoded: Vec<Option<u64>>,
    /// Staging bytes used by `reads`.
    pub staging_bytes: u64,
    /// Decoded arena bytes.
    pub decoded_bytes: u64,
}

const ALIGN: u64 = 256;

/// One chunk's range while laying out: (array, key, generation, offset, len, chunk op).
type Range<'a> = (u32, &'a Arc<str>, &'a Option<Generation>, u64, u64, usize);

/// Lays out a batch: ranges of one file that are adjacent or closer than `max_gap(array)`
/// bytes are read by one op, up to `max_read_op_bytes` per op (a single larger range is still read
/// whole). Whole-file chunks and CPU-decoded chunks get a decoded-size staging slot after
/// the reads (`cpu_slot` tells which chunk ops need one, and how large).
pub(crate) fn layout(plan: &BatchPlan, max_read_op_bytes: u64, max_gap: &dyn Fn(u32) -> u64, cpu_slot: &dyn Fn(usize) -> Option<u64>) -> StagingLayout {
    let n = plan.chunk_ops.len();
    let mut out = StagingLayout { staged: vec![None; n], decoded: vec![None; n], ..Default::default() };
    for (i, op) in plan.chunk_ops.iter().enumerate() {
        if op.source != ChunkSource::Absent {
            out.decoded[i] = Some(out.decoded_bytes);
            out.decoded_bytes += plan.arrays[op.array as usize].meta.decoded_chunk_bytes;
            out.decoded_bytes = out.decoded_bytes.next_multiple_of(ALIGN);
        }
    }
    let mut ranges: Vec<Range<'_>> = plan
        .chunk_ops
        .iter()
        .enumerate()
        .filter(|(i, _)| cpu_slot(*i).is_none())
        .filter_map(|(i, op)| match &op.source {
            ChunkSource::Range { key, offset, nbytes, generation } => Some((op.array, key, generation, *offset, *nbytes, i)),
            _ => None,
        })
        .collect();
    ranges.sort_by(|a, b| (a.0, &**a.1, a.3).cmp(&(b.0, &**b.1, b.3)));
    for (array, key, generation, offset, len, i) in ranges {
        let extend = out.reads.last().is_some_and(|r| {
            r.array == array && r.key == *key && r.generation == *generation && offset >= r.offset + r.len && offset - (r.offset + r.len) <= max_gap(array) && offset + len - r.offset <= max_read_op_bytes
        });
        if extend {
            let r = out.reads.last_mut().unwrap_or_else(|| unreachable!());
            let grow = offset + len - (r.offset + r.len);
            r.len += grow;
            out.staging_bytes += grow;
            out.staged[i] = Some((r.staging_offset + (offset - r.offset), len));
            r.chunks.push(i);
        } else {
            let staging_offset = out.staging_bytes.next_multiple_of(16);
            out.reads.push(ReadOp { array, key: Arc::clone(key), generation: generation.clone(), offset, len, staging_offset, chunks: vec![i] });
            out.staging_bytes = staging_offset + len;
            out.staged[i] = Some((staging_offset, len));
        }
    }
    for i in 0..n {
        if let Some(bytes) = cpu_slot(i) {
            let at = out.staging_bytes.next_multiple_of(ALIGN);
            out.staged[i] = Some((at, bytes));
            out.staging_bytes = at + bytes;
        }
    }
    out
}

/// [`layout`] with `max_gap`, or with `fallback_gap` for every array when the first does not
/// fit `budget` staging bytes (the gaps read through would overflow the slab; the budget check
/// then judges the batch as if only the fallback gap existed).
pub(crate) fn layout_within(plan: &BatchPlan, max_read_op_bytes: u64, max_gap: &dyn Fn(u32) -> u64, fallback_gap: u64, budget: u64, cpu_slot: &dyn Fn(usize) -> Option<u64>) -> StagingLayout {
    let staging = layout(plan, max_read_op_bytes, max_gap, cpu_slot);
    if staging.staging_bytes <= budget {
        return staging;
    }
    layout(plan, max_read_op_bytes, &|_| fallback_gap, cpu_slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ChunkOp, ChunkSource};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Every chunk byte range lies inside exactly one read op (the one that lists it), at
        /// the staging offset the layout gives it; read ops do not overlap in staging; an op
        /// exceeds max_read_op_bytes only when it is a single larger range.
        #[test]
        fn every_range_inside_exactly_one_read(
            ranges in proptest::collection::vec((0usize..3, 0u64..4000, 1u64..300), 1..40),
            max_op in 1u64..2000,
            gap in 0u64..200,
        ) {
            let m = meta();
            let keys: Vec<Arc<str>> = (0..3).map(|i| Arc::from(format!("s{i}"))).collect();
            // Distinct chunks of one file never overlap: lay them out without overlaps.
            let mut next = [0u64; 3];
            let chunk_ops: Vec<ChunkOp> = ranges.iter().map(|&(f, skip, len)| {
                let offset = next[f] + skip % 50;
                next[f] = offset + len;
                ChunkOp { array: 0, coords: vec![0], source: ChunkSource::Range { key: Arc::clone(&keys[f]), offset, nbytes: len, generation: None }, copies: vec![] }
            }).collect();
            let plan = BatchPlan { arrays: vec![m], chunk_ops, fill_ops: vec![], read_bytes: 0, decoded_bytes: 0 };
            let l = layout(&plan, max_op, &|_| gap, &|_| None);
            let mut spans: Vec<(u64, u64)> = l.reads.iter().map(|r| (r.staging_offset, r.staging_offset + r.len)).collect();
            spans.sort_unstable();
            for w in spans.windows(2) {
                prop_assert!(w[0].1 <= w[1].0, "read ops overlap in staging: {:?}", w);
            }
            for (i, op) in plan.chunk_ops.iter().enumerate() {
                let ChunkSource::Range { key, offset, nbytes, .. } = &op.source else { unreachable!() };
                let holders: Vec<&ReadOp> = l.reads.iter().filter(|r| r.key == *key && r.offset <= *offset && offset + nbytes <= r.offset + r.len).collect();
                prop_assert_eq!(holders.len(), 1, "chunk {} in {} read ops", i, holders.len());
                let r = holders[0];
                prop_assert!(r.chunks.contains(&i));
                prop_assert_eq!(l.staged[i], Some((r.staging_offset + (offset - r.offset), *nbytes)));
            }
            for r in &l.reads {
                prop_assert!(r.len <= max_op || r.chunks.len() == 1, "op of {} bytes over {}", r.len, max_op);
            }
            prop_assert!(l.staging_bytes >= l.reads.iter().map(|r| r.len).sum::<u64>());
        }
    }

    pub(crate) fn meta() -> Arc<crate::plan::Array> {
        let json = r#"{"zarr_format":3,"node_type":"array","shape":[64],"data_type":"uint8",
          "chunk_grid":{"name":"regular","configuration":{"chunk_shape":[64]}},"fill_value":0,
          "codecs":[{"name":"sharding_indexed","configuration":{"chunk_shape":[8],
            "codecs":[{"name":"bytes"},{"name":"zstd","configuration":{"level":1,"checksum":false}},{"name":"crc32c"}],
            "index_codecs":[{"name":"bytes","configuration":{"endian":"little"}}]}}]}"#;
        crate::plan::tests::array(json)
    }

    #[test]
    fn coalesces() {
        let m = meta();
        let path: Arc<str> = Arc::from("s");
        let other: Arc<str> = Arc::from("t");
        let op = |source| ChunkOp { array: 0, coords: vec![0], source, copies: vec![] };
        let plan = BatchPlan {
            arrays: vec![m],
            chunk_ops: vec![
                op(ChunkSource::Range { key: Arc::clone(&path), offset: 100, nbytes: 10, generation: None }),
                op(ChunkSource::Range { key: Arc::clone(&path), offset: 0, nbytes: 50, generation: None }),
                op(ChunkSource::Range { key: Arc::clone(&path), offset: 50, nbytes: 20, generation: None }),
                op(ChunkSource::Absent),
                op(ChunkSource::Range { key: other, offset: 0, nbytes: 5, generation: None }),
            ],
            fill_ops: vec![],
            read_bytes: 85,
            decoded_bytes: 0,
        };
        let l = layout(&plan, 1 << 20, &|_| 0, &|_| None);
        assert_eq!(l.reads.len(), 3, "0..70 coalesced; 100 is past a gap; /t separate");
        assert_eq!(l.reads[0].chunks, vec![1, 2]);
        assert_eq!(l.staged[2], Some((50, 20)));
        assert_eq!(l.staged[3], None);
        assert!(l.decoded[3].is_none() && l.decoded[4].is_some());
        let l = layout(&plan, 1 << 20, &|_| 64, &|_| None);
        assert_eq!(l.reads.len(), 2, "the 30-byte gap is read through");
        assert_eq!(l.staged[0], Some((100, 10)));
        let l = layout(&plan, 60, &|_| 64, &|_| None);
        assert_eq!(l.reads.len(), 3, "capped at 60 bytes per op");
        assert_eq!(l.reads[1].chunks, vec![2, 0]);
        // The gap is the array's (its store's read_gap): array 1, 64 bytes, reads through its
        // 30-byte gap; array 0, none, does not.
        let range = |array, offset, nbytes| ChunkOp { array, coords: vec![0], source: ChunkSource::Range { key: Arc::clone(&path), offset, nbytes, generation: None }, copies: vec![] };
        let two = BatchPlan { arrays: vec![meta(), meta()], chunk_ops: vec![range(0, 0, 70), range(0, 100, 10), range(1, 0, 70), range(1, 100, 10)], fill_ops: vec![], read_bytes: 160, decoded_bytes: 0 };
        let l = layout(&two, 1 << 20, &|a| if a == 1 { 64 } else { 0 }, &|_| None);
        assert_eq!(l.reads.len(), 3, "array 0: two reads; array 1: one");
        assert_eq!((l.reads[2].array, l.reads[2].chunks.clone()), (1, vec![2, 3]));
        // Gaps that would overflow the staging budget fall back to the smaller gap.
        let wide = layout_within(&two, 1 << 20, &|_| 64, 0, 1 << 20, &|_| None);
        assert_eq!((wide.reads.len(), wide.staging_bytes), (2, 112 + 110), "fits: both arrays read through (the second at a 16-byte boundary)");
        let narrow = layout_within(&two, 1 << 20, &|_| 64, 0, 200, &|_| None);
        assert_eq!(narrow.reads.len(), 4, "over budget: no gap read through");
        assert!(narrow.staging_bytes <= 200, "{}", narrow.staging_bytes);
    }
}
