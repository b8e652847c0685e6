//! Stress: random cache and pool sizes, many samples, push from one thread while another
//! pops, and close while work is in flight. Values are checked against the example
//! volume's own CPU read of the same boxes in a single-threaded pipeline.
//! Geometry: shape=[24,40,40] uint16, inner=[4,8,8], shard=[8,16,16] (3×3×3 shards).

use std::sync::Arc;
use std::time::Duration;

use damacy::{Config, Pipeline};
use damacy::Status;

fn boxes(n: usize, seed: u64) -> Vec<[i64; 3]> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            let mut next = |m: i64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % m as u64) as i64
            };
            [next(24 - 5), next(40 - 9), next(40 - 7)]
        })
        .collect()
}

const SAMPLE: [i64; 3] = [5, 9, 7];

fn reference(uri: &str, b: &[i64; 3]) -> Vec<u32> {
    let cfg = Config::from_json(r#"{"samples_per_batch": 1, "sample_shape": [5, 9, 7], "n_io_threads": 1, "lookahead_samples": 1}"#).unwrap();
    let p = Pipeline::new(cfg).unwrap();
    let stops: Vec<i64> = b.iter().zip(SAMPLE).map(|(s, e)| s + e).collect();
    assert!(p.push(uri, b, &stops).unwrap());
    let mut batch = p.pop(10.0).unwrap();
    batch.bytes().chunks_exact(4).map(|c| u32::from_ne_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn concurrent_push_and_pop_with_small_caches() {
    let dir = std::env::temp_dir().join(format!("damacy-stress-{}", std::process::id()));
    damacy::write_example_volume(dir.to_str().unwrap(), &[24, 40, 40], &[4, 8, 8], &[8, 16, 16], "zstd", 11).unwrap();
    let uri: Arc<str> = dir.to_str().unwrap().into();
    let all = boxes(96, 5);
    let refs: Vec<Vec<u32>> = all.iter().map(|b| reference(&uri, b)).collect();
    // A sample of [5, 9, 7] touches up to 2×2×2 shards, so one batch may need 8 × spb
    // shard-index entries: caches of exactly that size make the lookahead defer and park
    // samples but every batch completes; smaller ones fail every batch with InvalidArgument
    // naming the knob and the minimum; none may hang.
    for (round, (spb, threads, meta, shards, buffers)) in
        [(1u32, 1u32, 1u32, 8u32, 1u32), (3, 2, 1, 24, 2), (4, 3, 2, 32, 3), (2, 4, 64, 1000, 4), (2, 2, 1, 4, 2), (3, 3, 1, 23, 2)].into_iter().enumerate()
    {
        let cfg = Config::from_json(&format!(
            r#"{{"samples_per_batch": {spb}, "sample_shape": [5, 9, 7], "n_io_threads": {threads}, "n_array_meta_cache": {meta}, "n_shard_index_cache": {shards}, "n_chunk_layout_cache": {shards}, "n_batch_buffers": {buffers}, "lookahead_samples": {}}}"#,
            spb * 3
        ))
        .unwrap();
        let p = Arc::new(Pipeline::new(cfg).unwrap());
        let pusher = {
            let (p, uri, all) = (Arc::clone(&p), Arc::clone(&uri), all.clone());
            std::thread::spawn(move || {
                for b in &all {
                    let stops: Vec<i64> = b.iter().zip(SAMPLE).map(|(s, e)| s + e).collect();
                    while !p.push(&uri, b, &stops).unwrap() {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        };
        let batches = all.len() / spb as usize;
        let mut ok = 0;
        for i in 0..batches {
            let result = loop {
                match p.pop(10.0) {
                    Err(e) if e.status() == Status::TryAgain => std::thread::sleep(Duration::from_micros(200)),
                    r => break r,
                }
            };
            match result {
                Ok(mut b) => {
                    let vals: Vec<u32> = b.bytes().chunks_exact(4).map(|c| u32::from_ne_bytes(c.try_into().unwrap())).collect();
                    let n = vals.len() / spb as usize;
                    for s in 0..spb as usize {
                        assert!(vals[s * n..(s + 1) * n] == refs[i * spb as usize + s][..], "round {round} batch {i} sample {s} differs");
                    }
                    ok += 1;
                }
                Err(e) => {
                    assert!(shards < 8 * spb, "round {round}: batch {i} failed: {e}");
                    assert_eq!(e.status(), Status::InvalidArgument, "round {round}: {e}");
                    assert!(e.message().contains(&format!("`n_shard_index_cache` to at least {}", 8 * spb)), "round {round}: {e}");
                }
            }
        }
        pusher.join().unwrap();
        if shards >= 8 * spb {
            assert_eq!(ok, batches, "round {round}: every batch fits");
        }
        let stats: serde_json::Value = serde_json::from_str(&p.stats_json()).unwrap();
        assert!(shards < 8 * spb || stats["shard_index"]["misses"].as_u64().unwrap() > 0);
        assert_eq!(stats["samples_pushed"].as_u64().unwrap(), all.len() as u64);
        p.close();
    }
    close_while_pushing_and_popping(&uri, &all);
    // Close with work in flight returns promptly.
    let cfg = Config::from_json(r#"{"samples_per_batch": 8, "sample_shape": [5, 9, 7], "n_io_threads": 2, "lookahead_samples": 64}"#).unwrap();
    let p = Pipeline::new(cfg).unwrap();
    for b in &all[..64] {
        let stops: Vec<i64> = b.iter().zip(SAMPLE).map(|(s, e)| s + e).collect();
        assert!(p.push(&uri, b, &stops).unwrap());
    }
    let t = std::time::Instant::now();
    p.close();
    assert!(t.elapsed() < Duration::from_secs(5), "close took {:?}", t.elapsed());
    assert_eq!(p.pop(1.0).unwrap_err().status(), Status::Shutdown);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Close from a third thread while one thread pushes and another pops: both stop with
/// Shutdown, nothing hangs.
fn close_while_pushing_and_popping(uri: &Arc<str>, all: &[[i64; 3]]) {
    for delay_ms in [0u64, 5, 30] {
        let cfg = Config::from_json(r#"{"samples_per_batch": 2, "sample_shape": [5, 9, 7], "n_io_threads": 2, "n_shard_index_cache": 16, "lookahead_samples": 6}"#).unwrap();
        let p = Arc::new(Pipeline::new(cfg).unwrap());
        let pusher = {
            let (p, uri, all) = (Arc::clone(&p), Arc::clone(uri), all.to_vec());
            std::thread::spawn(move || loop {
                for b in &all {
                    let stops: Vec<i64> = b.iter().zip(SAMPLE).map(|(s, e)| s + e).collect();
                    loop {
                        match p.push(&uri, b, &stops) {
                            Ok(true) => break,
                            Ok(false) => std::thread::sleep(Duration::from_micros(100)),
                            Err(e) => return e.status(),
                        }
                    }
                }
            })
        };
        let popper = {
            let p = Arc::clone(&p);
            std::thread::spawn(move || loop {
                match p.pop(10.0) {
                    Ok(_) => {}
                    Err(e) if e.status() == Status::TryAgain => {}
                    Err(e) => return e.status(),
                }
            })
        };
        std::thread::sleep(Duration::from_millis(delay_ms));
        let t = std::time::Instant::now();
        p.close();
        assert_eq!(pusher.join().unwrap(), Status::Shutdown);
        assert_eq!(popper.join().unwrap(), Status::Shutdown);
        assert!(t.elapsed() < Duration::from_secs(5), "close took {:?}", t.elapsed());
    }
}

#[test]
fn holding_every_batch_starves_the_pool_with_a_typed_error() {
    let dir = std::env::temp_dir().join(format!("damacy-starve-{}", std::process::id()));
    damacy::write_example_volume(dir.to_str().unwrap(), &[24, 40, 40], &[4, 8, 8], &[8, 16, 16], "zstd", 1).unwrap();
    let uri = dir.to_str().unwrap();
    let cfg = Config::from_json(r#"{"samples_per_batch": 1, "sample_shape": [5, 9, 7], "n_batch_buffers": 2, "lookahead_samples": 4}"#).unwrap();
    let p = Pipeline::new(cfg).unwrap();
    for _ in 0..4 {
        assert!(p.push(uri, &[0, 0, 0], &[5, 9, 7]).unwrap());
    }
    let a = p.pop(5.0).unwrap();
    let b = p.pop(5.0).unwrap();
    let e = p.pop(5.0).unwrap_err();
    assert_eq!(e.status(), Status::PoolStarved, "{e}");
    assert!(e.message().contains("n_batch_buffers"));
    drop((a, b));
    assert!(p.pop(5.0).is_ok(), "dropping batches frees the pool");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn decoded_cache_gives_the_same_values_and_hits_on_revisits() {
    let dir = std::env::temp_dir().join(format!("damacy-decoded-cache-{}", std::process::id()));
    damacy::write_example_volume(dir.to_str().unwrap(), &[24, 40, 40], &[4, 8, 8], &[8, 16, 16], "zstd", 2).unwrap();
    let uri = dir.to_str().unwrap();
    let all = boxes(48, 9);
    let read_all = |cache: u64| -> (Vec<Vec<u32>>, serde_json::Value) {
        let cfg = Config::from_json(&format!(r#"{{"samples_per_batch": 4, "sample_shape": [5, 9, 7], "n_io_threads": 2, "decoded_cache_bytes": {cache}, "lookahead_samples": 8}}"#)).unwrap();
        let p = Pipeline::new(cfg).unwrap();
        let mut out = Vec::new();
        // Two passes over the same boxes: the second revisits every chunk.
        for pass in 0..2 {
            for chunk in all.chunks(4) {
                for b in chunk {
                    let stops: Vec<i64> = b.iter().zip(SAMPLE).map(|(s, e)| s + e).collect();
                    assert!(p.push(uri, b, &stops).unwrap());
                }
                let mut batch = p.pop(10.0).unwrap();
                if pass == 1 {
                    out.push(batch.bytes().chunks_exact(4).map(|c| u32::from_ne_bytes(c.try_into().unwrap())).collect());
                }
            }
        }
        (out, serde_json::from_str(&p.stats_json()).unwrap())
    };
    let (plain, s0) = read_all(0);
    let (cached, s1) = read_all(1 << 30);
    let (tiny, s2) = read_all(8 * 8 * 4 * 2 * 3);
    assert!(plain == cached && plain == tiny, "the cache changes no voxel");
    assert_eq!(s0["decoded_cache"]["hits"], 0);
    assert!(s1["decoded_cache"]["hits"].as_u64().unwrap() > 0 && s1["chunks_from_cache"].as_u64().unwrap() > 0);
    assert!(s2["decoded_cache"]["evictions"].as_u64().unwrap() > 0, "a 3-chunk cache evicts");
    std::fs::remove_dir_all(&dir).unwrap();
}
