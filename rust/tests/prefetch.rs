//! The prefetcher's state machine: samples resolve in the background ahead of their batch,
//! a batch that needs room un-pins later samples (they start over), a cache below one
//! batch's worst case is refused with the knob and the minimum, and layouts are resolved
//! for blosc arrays on the device path only.
//! Geometry: shape=[64,32,32] uint16, inner=[8,8,8], shard=[16,16,16]: 4×2×2 shards.

use std::time::Duration;

use damacy::testing::io::WorkerPool;
use damacy::testing::prefetch::{Options, Phase, Prefetcher};
use damacy::Status;

fn volume(tag: &str, codec: &str) -> String {
    let dir = std::env::temp_dir().join(format!("damacy-prefetch-{tag}-{}", std::process::id()));
    damacy::write_example_volume(dir.to_str().unwrap(), &[64, 32, 32], &[8, 8, 8], &[16, 16, 16], codec, 3).unwrap();
    dir.to_str().unwrap().to_string()
}

/// A box of one z-slab of shards: 4 shards.
fn slab(z: i64) -> Vec<(i64, i64)> {
    vec![(16 * z, 16 * z + 16), (0, 32), (0, 32)]
}

#[test]
fn a_batch_short_of_room_parks_later_samples() {
    let uri = volume("park", "zstd");
    let pool = WorkerPool::new(2).unwrap();
    // One sample of [16, 32, 32] touches up to 2×2×2 = 8 shards: 8 entries is the minimum.
    let opts = Options { n_shard_index: 8, ..Options::new(&[16, 32, 32]) };
    let p = Prefetcher::new(opts, pool.spawner());
    // Two later samples resolve first and pin all 8 entries.
    let later = [p.submit(&uri, &slab(1)), p.submit(&uri, &slab(2))];
    assert!(p.drain(Duration::from_secs(10)));
    assert!(later.iter().all(|&id| p.phase(id) == Some(Phase::Ready)));
    assert_eq!(p.pinned().1, 8);
    // The next batch needs 4 other entries and no batch is in flight: it un-pins the
    // later samples instead of waiting forever.
    let head = p.submit(&uri, &slab(0));
    let mut r = p.resolve_batch(&[head], &|| false).expect("the head batch gets room");
    assert_eq!(r.shards.len(), 4);
    assert!(p.stats().parked >= 1, "{:?}", p.stats());
    p.release(&mut r);
    // The parked samples start over and resolve.
    for id in later {
        let mut r = p.resolve_batch(&[id], &|| false).expect("parked samples resolve later");
        assert_eq!(r.shards.len(), 4);
        p.release(&mut r);
    }
    assert_eq!(p.pinned(), (0, 0, 0));
    std::fs::remove_dir_all(&uri).unwrap();
}

#[test]
fn a_cache_below_one_batch_is_refused_with_the_minimum() {
    let uri = volume("small", "zstd");
    let pool = WorkerPool::new(2).unwrap();
    let opts = Options { samples_per_batch: 4, n_shard_index: 15, ..Options::new(&[16, 32, 32]) };
    let p = Prefetcher::new(opts, pool.spawner());
    let id = p.submit(&uri, &slab(0));
    let e = p.resolve_batch(&[id], &|| false).err().expect("4 samples × 8 shards, at most the 16 the array has");
    assert_eq!(e.status(), Status::InvalidArgument, "{e}");
    assert!(e.message().contains("`n_shard_index_cache` to at least 16"), "{e}");
    assert_eq!(p.pinned(), (0, 0, 0), "a failed sample holds nothing");
    std::fs::remove_dir_all(&uri).unwrap();
}

#[test]
fn layouts_resolve_for_blosc_on_the_device_path_only() {
    for (codec, layouts, expect) in [("blosc-zstd", true, true), ("blosc-zstd", false, false), ("zstd", true, false)] {
        let uri = volume(&format!("layout-{codec}-{layouts}"), codec);
        let pool = WorkerPool::new(2).unwrap();
        let opts = Options { layouts, ..Options::new(&[16, 32, 32]) };
        let p = Prefetcher::new(opts, pool.spawner());
        let id = p.submit(&uri, &[(4, 20), (0, 32), (0, 32)]);
        let mut r = p.resolve_batch(&[id], &|| false).unwrap();
        let chunks = 3 * 4 * 4;
        if expect {
            assert_eq!(r.layouts().len(), chunks, "{codec}: one layout per stored chunk");
            assert!(r.layouts().values().all(|f| f.nbytes == 8 * 8 * 8 * 2 && !f.blocks.is_empty() || f.memcpyed));
            assert_eq!(p.stats().chunk_layout.misses, chunks as u64);
        } else {
            assert!(r.layouts().is_empty(), "{codec} layouts={layouts}: no layout is a success");
            assert_eq!(p.stats().chunk_layout.misses, 0);
        }
        p.release(&mut r);
        // A second sample over the same chunks hits.
        let id = p.submit(&uri, &[(4, 20), (0, 32), (0, 32)]);
        let mut r = p.resolve_batch(&[id], &|| false).unwrap();
        if expect {
            assert_eq!(p.stats().chunk_layout.hits, chunks as u64);
        }
        p.release(&mut r);
        std::fs::remove_dir_all(&uri).unwrap();
    }
}

#[test]
fn layouts_are_skipped_when_crops_cannot_skip_blocks() {
    // A 40-deep crop over 8-deep chunks needs about 40/48 of every chunk it touches: the
    // lookups would cost more than the skipped blocks save.
    let uri = volume("deep", "blosc-zstd");
    let pool = WorkerPool::new(2).unwrap();
    let p = Prefetcher::new(Options { layouts: true, ..Options::new(&[40, 8, 8]) }, pool.spawner());
    let id = p.submit(&uri, &[(3, 43), (0, 8), (0, 8)]);
    let mut r = p.resolve_batch(&[id], &|| false).unwrap();
    assert!(r.layouts().is_empty());
    assert_eq!(p.stats().chunk_layout.misses, 0);
    p.release(&mut r);
    std::fs::remove_dir_all(&uri).unwrap();
}

#[test]
fn load_errors_fail_the_sample_typed() {
    let pool = WorkerPool::new(2).unwrap();
    let p = Prefetcher::new(Options::new(&[16, 32, 32]), pool.spawner());
    let id = p.submit("/nonexistent/damacy/array.zarr", &slab(0));
    assert!(p.drain(Duration::from_secs(10)));
    assert_eq!(p.phase(id), Some(Phase::Failed));
    let e = p.resolve_batch(&[id], &|| false).err().unwrap();
    assert_eq!(e.status(), Status::NotFound, "{e}");
    assert_eq!(p.pinned(), (0, 0, 0));
}

#[test]
fn arrays_named_in_the_config_are_checked_when_the_pipeline_is_made() {
    use damacy::{Config, Pipeline};
    let uri = volume("construct", "zstd");
    let cfg = |extra: &str| Config::from_json(&format!(r#"{{"samples_per_batch": 4, "sample_shape": [16, 32, 32], "arrays": ["{uri}"]{extra}}}"#)).unwrap();
    // 4 samples × up to 8 shards, capped by the array's 16.
    let e = Pipeline::new(cfg(r#", "n_shard_index_cache": 15"#)).err().expect("too small a shard cache fails at construction");
    assert_eq!(e.status(), Status::InvalidArgument, "{e}");
    assert!(e.message().contains("`n_shard_index_cache` to at least 16"), "{e}");
    let p = Pipeline::new(cfg(r#", "n_shard_index_cache": 16"#)).expect("the minimum is enough");
    assert!(p.push(&uri, &[0, 0, 0], &[16, 32, 32]).unwrap());
    let stats: serde_json::Value = serde_json::from_str(&p.stats_json()).unwrap();
    assert_eq!(stats["array_meta"]["misses"], 1, "loaded at construction");
    drop(p);
    let missing = format!(r#"{{"samples_per_batch": 1, "sample_shape": [16, 32, 32], "arrays": ["{uri}", "{uri}-missing"]}}"#);
    assert_eq!(Pipeline::new(Config::from_json(&missing).unwrap()).err().unwrap().status(), Status::NotFound);
    let rank = format!(r#"{{"samples_per_batch": 1, "sample_shape": [16, 32], "arrays": ["{uri}"]}}"#);
    assert_eq!(Pipeline::new(Config::from_json(&rank).unwrap()).err().unwrap().status(), Status::RankMismatch);
    let metas = format!(r#"{{"samples_per_batch": 2, "sample_shape": [16, 32, 32], "n_array_meta_cache": 1, "arrays": ["{uri}", "/elsewhere.zarr"]}}"#);
    let e = Pipeline::new(Config::from_json(&metas).unwrap()).err().unwrap();
    assert!(e.message().contains("`n_array_meta_cache` to at least 2"), "{e}");
    assert!(Config::from_json(r#"{"arrays": [""]}"#).is_err() && Config::from_json(r#"{"arrays": "a"}"#).is_err());
    std::fs::remove_dir_all(&uri).unwrap();
}

// Regressions found in review: a resumed sample still holding pins must be parkable; a
// sample submitted while the scheduler waits for room must start afterwards; a sample whose
// task waits in the pool's queue must not hold up the scheduler.

#[test]
fn a_resumed_sample_holding_pins_is_parked_for_the_next_batch() {
    let (a1, a2) = (volume("resumed-a", "zstd"), volume("resumed-b", "zstd"));
    let pool = WorkerPool::new(1).unwrap();
    let opts = Options { n_shard_index: 8, n_array_meta: 1, max_inflight: 1, ..Options::new(&[16, 32, 32]) };
    let p = Prefetcher::new(opts, pool.spawner());
    let first = p.submit(&a1, &slab(0));
    let mut r_e = p.resolve_batch(&[first], &|| false).unwrap();
    let _k = p.submit(&a2, &slab(0)); // the one meta entry is pinned: deferred, no pins
    assert!(p.drain(Duration::from_secs(5)));
    let held = p.submit(&a1, &[(24, 40), (0, 32), (0, 32)]); // pins z1 (4 shards), defers for z2
    assert!(p.drain(Duration::from_secs(5)));
    assert_eq!(p.phase(held), Some(Phase::Deferred));
    pool.spawn(|| std::thread::sleep(Duration::from_millis(300))); // keep the pool busy
    p.release(&mut r_e); // resumes h (queued, still pinned) and k
    let head = p.submit(&a1, &[(40, 56), (0, 32), (0, 32)]); // needs z2 and z3: 8 shards
    let mut r = p.resolve_batch(&[head], &|| false).expect("room by parking the resumed sample");
    p.release(&mut r);
    std::fs::remove_dir_all(&a1).unwrap();
    std::fs::remove_dir_all(&a2).unwrap();
}

#[test]
fn samples_submitted_during_a_wait_for_room_start_afterwards() {
    let uri = volume("hold", "zstd");
    let pool = WorkerPool::new(2).unwrap();
    let p = std::sync::Arc::new(Prefetcher::new(Options { n_shard_index: 8, ..Options::new(&[16, 32, 32]) }, pool.spawner()));
    let ready = p.submit(&uri, &[(8, 24), (0, 32), (0, 32)]);
    assert!(p.drain(Duration::from_secs(5)));
    assert_eq!(p.phase(ready), Some(Phase::Ready));
    let head = p.submit(&uri, &slab(3));
    let (p2, u2) = (std::sync::Arc::clone(&p), uri.clone());
    let later = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        p2.submit(&u2, &slab(2))
    });
    let t0 = std::time::Instant::now();
    // "Another batch is in flight" for 300 ms: the scheduler waits, then parks `ready`.
    let mut r = p.resolve_batch(&[head], &|| t0.elapsed() < Duration::from_millis(300)).unwrap();
    let submitted = later.join().unwrap();
    assert!(p.drain(Duration::from_secs(5)), "the later sample is {:?}", p.phase(submitted));
    p.release(&mut r);
    std::fs::remove_dir_all(&uri).unwrap();
}

#[test]
fn the_scheduler_resolves_a_sample_whose_task_has_not_started() {
    let uri = volume("busy", "zstd");
    let pool = WorkerPool::new(1).unwrap();
    let p = Prefetcher::new(Options::new(&[16, 32, 32]), pool.spawner());
    pool.spawn(|| std::thread::sleep(Duration::from_millis(1500))); // the only thread is busy
    let x = p.submit(&uri, &slab(0));
    let t0 = std::time::Instant::now();
    let mut r = p.resolve_batch(&[x], &|| false).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1), "waited {:?} behind the pool", t0.elapsed());
    assert_eq!(p.stats().resolved_inline, 1);
    p.release(&mut r);
    std::fs::remove_dir_all(&uri).unwrap();
}
