//! Missing shard files are not errors: the prefetcher resolves them as absent ("NOTFOUND"),
//! the sample is ready, and its voxels become the fill value with neighbours intact.
//! Geometry: shape=[32,32,32] uint16, inner=[8,8,8], shard=[16,16,16]: 2×2×2 shards.

use damacy::testing::io::WorkerPool;
use damacy::{Config, Pipeline};
use damacy::testing::plan::ShardLookup;
use damacy::testing::prefetch::{Options, Phase, Prefetcher};
use std::time::Duration;

fn volume(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("damacy-missing-{tag}-{}", std::process::id()));
    damacy::write_example_volume(dir.to_str().unwrap(), &[32, 32, 32], &[8, 8, 8], &[16, 16, 16], "zstd", 5).unwrap();
    dir
}

fn batch(uri: &str, aabb: [(i64, i64); 3]) -> Vec<f32> {
    let shape: Vec<u64> = aabb.iter().map(|(a, b)| (b - a) as u64).collect();
    let cfg = Config::from_json(&format!(r#"{{"samples_per_batch": 1, "sample_shape": {shape:?}, "n_io_threads": 2}}"#)).unwrap();
    let p = Pipeline::new(cfg).unwrap();
    let (starts, stops): (Vec<i64>, Vec<i64>) = aabb.iter().copied().unzip();
    assert!(p.push(uri, &starts, &stops).unwrap());
    let mut b = p.pop(10.0).unwrap();
    b.bytes().chunks_exact(4).map(|c| f32::from_ne_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn test_missing_shard_reaches_ready() {
    let dir = volume("ready");
    std::fs::remove_file(dir.join("c/1/0/1")).unwrap();
    let pool = WorkerPool::new(2).unwrap();
    let prefetch = Prefetcher::new(Options::new(&[10, 18, 10]), pool.spawner());
    let uri = dir.to_str().unwrap().to_string();
    let id = prefetch.submit(&uri, &[(10, 20), (2, 20), (10, 20)]);
    assert!(prefetch.drain(Duration::from_secs(10)), "the prefetcher drains");
    assert_eq!(prefetch.phase(id), Some(Phase::Ready), "a missing shard is not an error: the sample is READY");
    assert_eq!(prefetch.stats().resolved_inline, 0);
    let mut resolved = prefetch.resolve_batch(&[id], &|| false).expect("ready");
    assert_eq!(prefetch.stats().ready_ahead, 1, "resolved by the background task, ahead of the batch");
    assert_eq!(resolved.shards.len(), 8, "the box touches every shard");
    assert!(matches!(resolved.shard(&resolved.arrays[0], &[1, 0, 1]), Some(None)), "the unlinked shard queries as NOTFOUND");
    assert!(matches!(resolved.shard(&resolved.arrays[0], &[0, 0, 0]), Some(Some(_))), "its neighbours are present");
    assert_eq!(prefetch.pinned(), (1, 8, 0), "the batch gate pins the meta and every shard entry");
    prefetch.release(&mut resolved);
    assert_eq!(prefetch.pinned(), (0, 0, 0), "released with the batch");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn test_missing_shard_becomes_fill() {
    let dir = volume("fill");
    let uri = dir.to_str().unwrap();
    let before = batch(uri, [(16, 32), (0, 16), (16, 32)]);
    assert!(before.iter().any(|&v| v != 0.0), "the shard holds data");
    std::fs::remove_file(dir.join("c/1/0/1")).unwrap();
    let after = batch(uri, [(16, 32), (0, 16), (16, 32)]);
    assert!(after.iter().all(|&v| v == 0.0), "fill_value of the example volume is 0");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn test_missing_shard_fills() {
    let dir = volume("neighbours");
    let uri = dir.to_str().unwrap();
    // A box straddling the missing shard (1,0,1) and its present neighbour (1,0,0).
    let aabb = [(20, 24), (4, 8), (12, 20)];
    let before = batch(uri, aabb);
    std::fs::remove_file(dir.join("c/1/0/1")).unwrap();
    let after = batch(uri, aabb);
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let x = 12 + (i % 8) as i64;
        if x >= 16 {
            assert_eq!(*a, 0.0, "voxel {i} lies in the missing shard");
        } else {
            assert_eq!(a.to_bits(), b.to_bits(), "voxel {i} of the present neighbour changed");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
