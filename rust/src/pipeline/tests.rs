//! Fault injection (a store that panics, fails or stalls on chunk reads; a shard rewritten
//! in place) against the whole pipeline.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Config, Pipeline};
use crate::error::Status;

fn volume(name: &str, shard: &[u64], seed: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("damacy-pipe-{name}-{}", std::process::id()));
    crate::example::write_example_volume(dir.to_str().unwrap(), &[16, 16, 16], &[8, 8, 8], shard, "zstd", seed).unwrap();
    dir
}

fn config() -> Config {
    Config { samples_per_batch: 2, sample_shape: vec![8, 8, 8], n_io_threads: 2, lookahead_samples: Some(4), pop_timeout_s: 20.0, ..Config::default() }
}

fn pipeline() -> Pipeline {
    Pipeline::new(config()).unwrap()
}

/// Pushes two copies of the box at `z` of `uri` and pops their batch as f32 values.
fn batch(p: &Pipeline, uri: &str, z: i64) -> crate::Result<Vec<f32>> {
    for _ in 0..2 {
        assert!(p.push(uri, &[z, 4, 4], &[z + 8, 12, 12]).unwrap());
    }
    let mut b = p.pop(-1.0)?;
    Ok(b.bytes().chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn uri(scheme: &str, dir: &Path) -> String {
    format!("{scheme}://{}", dir.display())
}

#[test]
fn a_panicking_read_fails_its_batch_typed_and_the_next_batch_works() {
    let dir = volume("panic", &[], 1);
    let p = pipeline();
    let e = batch(&p, &uri("fault-panic", &dir), 0).unwrap_err();
    assert_eq!(e.status(), Status::Internal, "{e}");
    assert!(e.message().contains("panicked") && e.message().contains("chunk"), "names the chunk: {e}");
    let e = batch(&p, &uri("fault-error", &dir), 0).unwrap_err();
    assert_eq!(e.status(), Status::Storage, "{e}");
    assert!(e.message().contains("injected") && e.message().contains("chunk ["), "{e}");
    let good = batch(&p, dir.to_str().unwrap(), 0).unwrap();
    assert!(good.iter().any(|&v| v != 0.0));
    assert_eq!(good, batch(&p, dir.to_str().unwrap(), 0).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn close_returns_in_bounded_time_while_reads_are_stuck() {
    let dir = volume("stall", &[], 2);
    let p = pipeline();
    for _ in 0..2 {
        assert!(p.push(&uri("fault-stall", &dir), &[0, 0, 0], &[8, 8, 8]).unwrap());
    }
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    p.close();
    let took = t0.elapsed();
    assert!(took < super::CLOSE_TIMEOUT + Duration::from_secs(1), "close took {took:?}");
    assert_eq!(p.pop(0.0).unwrap_err().status(), Status::Shutdown);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_shard_rewritten_in_place_is_noticed_and_reread() {
    let a = volume("stale-a", &[16, 16, 16], 3);
    let b = volume("stale-b", &[16, 16, 16], 4);
    let p = pipeline();
    let (ua, ub) = (a.to_str().unwrap(), b.to_str().unwrap());
    let before = batch(&p, ua, 0).unwrap();
    // Same inode, new bytes: the cached index of shard c/0/0/0 is stale now.
    let new = std::fs::read(b.join("c/0/0/0")).unwrap();
    std::fs::write(a.join("c/0/0/0"), &new).unwrap();
    let e = batch(&p, ua, 0).unwrap_err();
    assert_eq!(e.status(), Status::Storage, "{e}");
    assert!(e.message().contains("changed"), "{e}");
    let after = batch(&p, ua, 0).unwrap();
    let reference = batch(&pipeline(), ub, 0).unwrap();
    assert_ne!(before, reference, "the two volumes differ");
    assert_eq!(after, reference, "the new index was read");
    for d in [a, b] {
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn a_shard_rewritten_in_place_is_noticed_with_the_decoded_cache_on() {
    let a = volume("stale-cache-a", &[16, 16, 16], 6);
    let b = volume("stale-cache-b", &[16, 16, 16], 7);
    let p = Pipeline::new(Config { decoded_cache_bytes: Some(1 << 20), recheck_cached_data: super::Recheck::Always, ..config() }).unwrap();
    let (ua, ub) = (a.to_str().unwrap(), b.to_str().unwrap());
    let before = batch(&p, ua, 0).unwrap();
    assert_eq!(batch(&p, ua, 0).unwrap(), before, "served from the decoded cache");
    std::fs::write(a.join("c/0/0/0"), std::fs::read(b.join("c/0/0/0")).unwrap()).unwrap();
    let e = batch(&p, ua, 0).unwrap_err();
    assert_eq!(e.status(), Status::Storage, "{e}");
    assert!(e.message().contains("c/0/0/0") && e.message().contains("changed"), "{e}");
    let after = batch(&p, ua, 0).unwrap();
    assert_ne!(before, after, "the two volumes differ");
    assert_eq!(after, batch(&pipeline(), ub, 0).unwrap(), "the new shard was read");
    // Deleted while cached: one error, then fill.
    std::fs::remove_file(a.join("c/0/0/0")).unwrap();
    let e = batch(&p, ua, 0).unwrap_err();
    assert!(e.message().contains("c/0/0/0") && e.message().contains("vanished"), "{e}");
    assert!(batch(&p, ua, 0).unwrap().iter().all(|&v| v == 0.0));
    for d in [a, b] {
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn a_deleted_shard_fails_one_batch_then_reads_as_fill() {
    let dir = volume("deleted", &[16, 16, 16], 5);
    let p = pipeline();
    let u = dir.to_str().unwrap();
    assert!(batch(&p, u, 0).unwrap().iter().any(|&v| v != 0.0), "the shard holds data");
    std::fs::remove_file(dir.join("c/0/0/0")).unwrap();
    let e = batch(&p, u, 0).unwrap_err();
    assert_eq!(e.status(), Status::Storage, "{e}");
    assert!(e.message().contains("c/0/0/0") && e.message().contains("vanished"), "{e}");
    let after = batch(&p, u, 0).expect("the index was dropped: the shard is absent now");
    assert!(after.iter().all(|&v| v == 0.0), "an absent shard is fill (0)");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sharded_array_recreated_with_another_codec_is_read_with_its_new_metadata() {
    let a = volume("recreated-a", &[16, 16, 16], 8);
    let b = std::env::temp_dir().join(format!("damacy-pipe-recreated-b-{}", std::process::id()));
    crate::example::write_example_volume(b.to_str().unwrap(), &[16, 16, 16], &[8, 8, 8], &[16, 16, 16], "blosc-zstd", 9).unwrap();
    let p = pipeline();
    let (ua, ub) = (a.to_str().unwrap(), b.to_str().unwrap());
    let before = batch(&p, ua, 0).unwrap();
    for f in ["zarr.json", "c/0/0/0"] {
        std::fs::write(a.join(f), std::fs::read(b.join(f)).unwrap()).unwrap();
    }
    let e = batch(&p, ua, 0).unwrap_err();
    assert!(e.status() == Status::Storage && e.message().contains("changed"), "{e}");
    let after = batch(&p, ua, 0).expect("blosc chunks read with the new (blosc) metadata, not the cached zstd one");
    assert_ne!(before, after);
    assert_eq!(after, batch(&pipeline(), ub, 0).unwrap());
    for d in [a, b] {
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// Copies every file of the volume `from` over the volume `to` (same chunk grid).
fn overwrite_volume(from: &Path, to: &Path) {
    for e in walk(from) {
        let rel = e.strip_prefix(from).unwrap();
        std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
        std::fs::write(to.join(rel), std::fs::read(&e).unwrap()).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).unwrap().flat_map(|e| {
        let p = e.unwrap().path();
        if p.is_dir() { walk(&p) } else { vec![p] }
    }).collect()
}

#[test]
fn an_unsharded_array_recreated_in_place_is_read_with_its_new_metadata_unless_rechecks_are_off() {
    for (recheck, name) in [(super::Recheck::After(1.0), "default"), (super::Recheck::Never { open: false }, "never")] {
        let a = volume(&format!("recreated-unsharded-{name}-a"), &[], 10);
        let b = std::env::temp_dir().join(format!("damacy-pipe-recreated-unsharded-{name}-b-{}", std::process::id()));
        crate::example::write_example_volume(b.to_str().unwrap(), &[16, 16, 16], &[8, 8, 8], &[], "blosc-zstd", 11).unwrap();
        let p = Pipeline::new(Config { recheck_cached_data: recheck, ..config() }).unwrap();
        let (ua, ub) = (a.to_str().unwrap(), b.to_str().unwrap());
        let before = batch(&p, ua, 0).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        overwrite_volume(&b, &a);
        let want = batch(&pipeline(), ub, 0).unwrap();
        assert_ne!(before, want);
        match recheck {
            super::Recheck::Never { .. } => {
                // The cached zstd metadata is used on blosc chunks: the decode fails (typed).
                let e = batch(&p, ua, 0).unwrap_err();
                assert_eq!(e.status(), Status::Decode, "{e}");
            }
            _ => assert_eq!(batch(&p, ua, 0).expect("blosc chunks read with the new metadata"), want),
        }
        for d in [a, b] {
            std::fs::remove_dir_all(&d).unwrap();
        }
    }
}

#[test]
fn configs_whose_sizes_overflow_are_refused() {
    for shape in [vec![(1u64 << 62) + 16], vec![1 << 40, 1 << 40], vec![u64::MAX]] {
        let cfg = Config { samples_per_batch: 1, sample_shape: shape.clone(), out_of_bounds: super::config::OutOfBounds::Fill, ..Config::default() };
        let e = Pipeline::new(cfg).err().unwrap();
        assert_eq!(e.status(), Status::InvalidArgument, "{shape:?}: {e}");
    }
}

#[test]
fn the_pool_grows_once_for_object_store_samples() {
    let threads = |p: &Pipeline| p.pool.lock().unwrap().as_ref().unwrap().threads();
    let dir = volume("grow", &[], 1);
    let p = Pipeline::new(Config { n_remote_io_threads: 5, ..config() }).unwrap();
    assert_eq!(threads(&p), 2);
    batch(&p, &uri("file", &dir), 0).unwrap();
    assert_eq!(threads(&p), 2, "local samples do not grow the pool");
    // Nothing listens there: the batch fails, but the pool has grown at the push.
    assert!(p.push("http://127.0.0.1:9/absent.zarr", &[0, 0, 0], &[8, 8, 8]).unwrap());
    assert_eq!(threads(&p), 7);
    assert!(p.push("s3://b/absent.zarr", &[0, 0, 0], &[8, 8, 8]).unwrap());
    assert_eq!(threads(&p), 7, "once");
    let off = Pipeline::new(Config { n_remote_io_threads: 0, ..config() }).unwrap();
    assert!(off.push("http://127.0.0.1:9/absent.zarr", &[0, 0, 0], &[8, 8, 8]).unwrap());
    assert_eq!(threads(&off), 2, "0: no growth");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn recheck_cached_data_off_serves_cached_chunks_and_an_interval_still_checks_local_files() {
    for (recheck, name) in [(super::Recheck::Never { open: false }, "never"), (super::Recheck::After(0.5), "after")] {
        let a = volume(&format!("recheck-{name}-a"), &[16, 16, 16], 6);
        let b = volume(&format!("recheck-{name}-b"), &[16, 16, 16], 7);
        let p = Pipeline::new(Config { decoded_cache_bytes: Some(1 << 20), recheck_cached_data: recheck, ..config() }).unwrap();
        let ua = a.to_str().unwrap();
        let before = batch(&p, ua, 0).unwrap();
        std::fs::write(a.join("c/0/0/0"), std::fs::read(b.join("c/0/0/0")).unwrap()).unwrap();
        match recheck {
            // Local files: the interval is for object stores (a HEAD per shard per batch);
            // a local hit is checked every batch, so the rewrite fails the next batch.
            super::Recheck::After(_) => {
                let e = batch(&p, ua, 0).unwrap_err();
                assert!(e.message().contains("c/0/0/0") && e.message().contains("changed"), "{e}");
                assert_eq!(batch(&p, ua, 0).unwrap(), batch(&pipeline(), b.to_str().unwrap(), 0).unwrap(), "the new shard was read");
            }
            _ => {
                assert_eq!(batch(&p, ua, 0).unwrap(), before, "{name}: the cached chunks are served unchecked");
                std::thread::sleep(Duration::from_millis(600));
                assert_eq!(batch(&p, ua, 0).unwrap(), before, "never rechecked");
            }
        }
        for d in [a, b] {
            std::fs::remove_dir_all(&d).unwrap();
        }
    }
}

/// Pops one batch of `boxes` (z ranges over a 16³ volume, crops 8×8×8 at y, x = 4) as f32.
fn batch_of(p: &Pipeline, uri: &str, zs: &[i64]) -> Vec<f32> {
    for &z in zs {
        assert!(p.push(uri, &[z, 4, 4], &[z + 8, 12, 12]).unwrap());
    }
    let mut b = p.pop(-1.0).unwrap();
    b.bytes().chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[test]
fn chunks_are_shared_across_batches_by_default_and_prefixes_grow() {
    // Chunks 8³ of a 16³ volume, sharded and not; crops 8×8×8 at y, x = 4 and varying z, so
    // consecutive batches meet in the same chunks at other depths: a crop from z = 6 needs
    // rows 6..8 of the first chunk layer (its whole prefix) and rows 0..6 of the second (a
    // prefix), a later crop from z = 8 all of the second layer (a cached prefix too short).
    for shard in [&[16u64, 16, 16][..], &[][..]] {
        let dir = volume(&format!("share-{}", shard.len()), shard, 11);
        let u = dir.to_str().unwrap();
        let shared = pipeline();
        let off = Pipeline::new(Config { decoded_cache_bytes: Some(0), ..config() }).unwrap();
        let plan: [&[i64]; 5] = [&[4, 2], &[6, 1], &[8, 4], &[3, 7], &[4, 2]];
        for zs in plan {
            assert_eq!(batch_of(&shared, u, zs), batch_of(&off, u, zs), "shard {shard:?}, z {zs:?}: values equal the uncached read");
        }
        let s = shared.stats();
        assert!(s.decoded_cache.hits > 0, "shard {shard:?}: later batches hit chunks decoded by earlier ones: {:?}", s.decoded_cache);
        assert_eq!(off.stats().decoded_cache.hits, 0);
        assert!(s.chunks_decoded < off.stats().chunks_decoded, "fewer decodes with sharing: {} vs {}", s.chunks_decoded, off.stats().chunks_decoded);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn an_unsharded_chunk_rewritten_in_place_is_read_anew_with_the_window_cache() {
    let a = volume("unsharded-a", &[], 12);
    let b = volume("unsharded-b", &[], 13);
    let p = pipeline();
    let (ua, ub) = (a.to_str().unwrap(), b.to_str().unwrap());
    let before = batch(&p, ua, 0).unwrap();
    assert_eq!(batch(&p, ua, 0).unwrap(), before);
    for f in ["c/0/0/0", "c/0/0/1", "c/0/1/0", "c/0/1/1", "c/1/0/0", "c/1/0/1", "c/1/1/0", "c/1/1/1"] {
        std::fs::write(a.join(f), std::fs::read(b.join(f)).unwrap()).unwrap();
    }
    let after = batch(&p, ua, 0).unwrap();
    assert_ne!(before, after, "a cached chunk of the old file never serves the new one");
    assert_eq!(after, batch(&pipeline(), ub, 0).unwrap());
    for d in [a, b] {
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn window_room_counts_the_places_push_fills_and_pop_frees() {
    let dir = volume("room", &[16, 16, 16], 11);
    let uri = dir.to_str().unwrap();
    let p = pipeline(); // samples_per_batch 2, lookahead 4
    assert_eq!(p.window_room(), 4);
    for left in (0..4).rev() {
        assert!(p.push(uri, &[0, 4, 4], &[8, 12, 12]).unwrap());
        assert_eq!(p.window_room(), left);
    }
    assert!(!p.push(uri, &[0, 4, 4], &[8, 12, 12]).unwrap(), "a full window refuses");
    assert_eq!(p.window_room(), 0);
    drop(p.pop(-1.0).unwrap());
    assert_eq!(p.window_room(), 2, "a pop frees samples_per_batch places");
    // A sample that fails its batch takes its place too, and the failed pop frees it.
    drop(p.pop(-1.0).unwrap());
    assert!(p.push(uri, &[0, 4, 4], &[9, 12, 12]).unwrap()); // wrong extent: fails at pop
    assert!(p.push(uri, &[0, 4, 4], &[8, 12, 12]).unwrap());
    assert_eq!(p.window_room(), 2);
    assert!(p.pop(-1.0).is_err());
    assert_eq!(p.window_room(), 4);
    std::fs::remove_dir_all(dir).ok();
}

/// Pops the next batch of `p` and drops it (its buffer goes back to the pool).
fn pop_and_drop(p: &Pipeline) {
    drop(p.pop(-1.0).unwrap());
}

#[test]
fn a_batch_whose_device_store_producer_failed_on_the_host_runs_again_without_the_store() {
    // Device path (its Rust side runs without a GPU), device store on (the default), one
    // output buffer. Unsharded 8³ chunks of a 16³ volume: chunk c/0/0/0 good, c/1/1/1
    // corrupt (not a zstd frame: found when batch 0 stages it, on the host).
    let dir = volume("store-replan", &[], 21);
    let good = std::fs::read(dir.join("c/0/0/0")).unwrap();
    std::fs::write(dir.join("c/1/1/1"), vec![0x5a; 200]).unwrap();
    let u = dir.to_str().unwrap();
    let cfg = |store: Option<u64>| Config { device: "cuda:0".into(), n_batch_buffers: 1, lookahead_samples: Some(8), device_chunk_cache_bytes: store, ..config() };
    let p = Pipeline::new(cfg(None)).unwrap();
    assert!(p.shared.gpu_mode && p.shared.device_store.lock().unwrap().enabled());
    let (chunk_a, chunk_b, other) = ([0i64, 0, 0], [8i64, 8, 8], [0i64, 8, 0]);
    let push = |at: [i64; 3]| assert!(p.push(u, &at, &[at[0] + 8, at[1] + 8, at[2] + 8]).unwrap());
    // Two warm-up batches (chunk c/0/1/0): the second waits for the only buffer until the
    // first is popped, so batches 2 and 3 are both queued when the scheduler plans batch 2
    // and the store sees batch 3 reading chunk A again: batch 2 keeps it, batch 3 fetches it.
    for _ in 0..4 {
        push(other);
    }
    push(chunk_a);
    push(chunk_b);
    push(chunk_a);
    push(chunk_a);
    pop_and_drop(&p);
    pop_and_drop(&p);
    let e = p.pop(-1.0).unwrap_err();
    assert_eq!(e.status(), Status::Decode, "{e}");
    assert!(e.message().contains("chunk [1, 1, 1]"), "names the corrupt chunk: {e}");
    let b = p.pop(-1.0).expect("batch 3's own samples are good: it runs again, reading chunk A itself");
    assert_eq!(b.seq(), 3);
    assert!(b.store_producers().is_empty() && b.store_fetch_ops().is_empty() && b.store_keep_ops().is_empty(), "no store copies: {:?}", b.store_producers());
    assert_eq!(b.device_store_bytes(), 0);
    // Chunk A (read once for both samples) is decoded by this batch, from its own bytes.
    let mut b = b;
    let ops = b.decode_ops().to_vec();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert!(b.decode_op_context(0).contains("chunk [0, 0, 0]"), "{}", b.decode_op_context(0));
    let staged = b.staging()[ops[0].src_offset as usize..(ops[0].src_offset + ops[0].src_len) as usize].to_vec();
    assert_eq!(staged, good, "the staged bytes are chunk c/0/0/0's file");
    // As a pipeline without the store runs the same batch.
    let off = Pipeline::new(cfg(Some(0))).unwrap();
    assert!(off.push(u, &chunk_a, &[8, 8, 8]).unwrap() && off.push(u, &chunk_a, &[8, 8, 8]).unwrap());
    let want = off.pop(-1.0).unwrap();
    assert_eq!(format!("{:?}", b.copy_ops()), format!("{:?}", want.copy_ops()));
    assert_eq!((b.decoded_bytes(), format!("{:?}", b.decode_ops())), (want.decoded_bytes(), format!("{:?}", want.decode_ops())));
    assert_eq!(p.stats().device_store_replans, 1);
    drop(b);
    // The pipeline goes on: the next batch reads chunk A as planned (no producer failed).
    push(chunk_a);
    push(chunk_a);
    let next = p.pop(-1.0).unwrap();
    assert_eq!(next.seq(), 4);
    assert_eq!(p.stats().device_store_replans, 1);
    drop(next);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cpu_batches_are_transformed_by_the_workers_and_hand_over_no_transforms() {
    // A CPU pipeline (and a CUDA one decoding on the CPU: u8 labels), samples 8×8×8 at
    // z = 0, 4: sample 0 flipped along x and turned in (y, x) (map 0x1102 | flip), sample 1
    // plain; f32 with scale/shift; the reference is the plain batch moved by hand.
    use crate::ffi::records::SampleTransform;
    let dir = volume("transforms", &[], 31);
    let vol = dir.to_str().unwrap();
    let at = |z: i64| ([z, 4, 4], [z + 8, 12, 12]);
    // out[z, y, x] = src[z, x, 7 - y] (k = 1 turn: axis -2 reads -1 backwards, -1 reads -2)
    let turn = SampleTransform { map: 0x1102, scale: 1.0, ..SampleTransform::default() };
    let bright = SampleTransform { intensity: true, scale: 2.0, shift: -3.0, ..turn };
    for (device, dtype, t) in [("cpu", crate::pipeline::OutDtype::F32, bright), ("cpu", crate::pipeline::OutDtype::U8, turn), ("cuda:0", crate::pipeline::OutDtype::U8, turn)] {
        let cfg = Config { device: device.into(), dtype, ..config() };
        let p = Pipeline::new(cfg).unwrap();
        assert!(!p.shared.gpu_mode);
        let es = dtype.size();
        let pop = |with: Option<SampleTransform>| {
            let (s0, e0) = at(0);
            let (s1, e1) = at(4);
            assert!(p.push_with(vol, &s0, &e0, with).unwrap() && p.push(vol, &s1, &e1).unwrap());
            let mut b = p.pop(-1.0).unwrap();
            assert!(b.transforms().is_empty(), "{device}: applied, none left for the extension");
            b.bytes().to_vec()
        };
        let plain = pop(None);
        let got = pop(Some(t));
        let one = 512 * es;
        assert_eq!(got[one..], plain[one..], "{device} {dtype:?}: sample 1 has no transform");
        for z in 0..8 {
            for y in 0..8 {
                for x in 0..8 {
                    let (dst, src) = ((z * 64 + y * 8 + x) * es, (z * 64 + x * 8 + (7 - y)) * es);
                    if dtype == crate::pipeline::OutDtype::F32 {
                        let v = f32::from_ne_bytes(plain[src..src + 4].try_into().unwrap());
                        assert_eq!(f32::from_ne_bytes(got[dst..dst + 4].try_into().unwrap()), v * 2.0 - 3.0, "{z} {y} {x}");
                    } else {
                        assert_eq!(got[dst], plain[src], "{device} {z} {y} {x}");
                    }
                }
            }
        }
        assert_ne!(got[..one], plain[..one]);
    }
    // A batch that fails runs no transform job and fails as before; the next one is fine.
    let p = pipeline();
    let (s0, e0) = at(0);
    assert!(p.push_with(&uri("fault-error", &dir), &s0, &e0, Some(turn)).unwrap() && p.push(vol, &s0, &e0).unwrap());
    assert_eq!(p.pop(-1.0).unwrap_err().status(), Status::Storage);
    assert!(p.push_with(vol, &s0, &e0, Some(turn)).unwrap() && p.push(vol, &s0, &e0).unwrap());
    drop(p.pop(-1.0).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A batch of one crop of 4×8×8 voxels at (z, 4, 4), held (not dropped) by the caller.
fn crop_at(p: &Pipeline, uri: &str, z: i64) -> Box<super::Batch> {
    assert!(p.push(uri, &[z, 4, 4], &[z + 4, 12, 12]).unwrap());
    p.pop(-1.0).unwrap()
}

fn as_f32(b: &mut super::Batch) -> Vec<f32> {
    b.bytes().chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[test]
fn blosc_spans_serve_what_they_hold_and_a_chunk_they_do_not_is_decoded_again() {
    // 48×16×16 u16, unsharded, chunks 16³ (8 KiB) in blosc blocks of 1 KiB: a block is two
    // z-slices of a chunk. Values are checked against the chunk files decoded whole.
    let dir = std::env::temp_dir().join(format!("damacy-pipe-spans-{}", std::process::id()));
    crate::example::write_example_volume(dir.to_str().unwrap(), &[48, 16, 16], &[16, 16, 16], &[], "blosc-zstd:1024", 21).unwrap();
    let meta = crate::zarr::ArrayMeta::parse(&std::fs::read(dir.join("zarr.json")).unwrap()).unwrap();
    let codec = crate::decode::ChunkCodec::new(&meta).unwrap();
    assert!(codec.decodes_span());
    let chunks: Vec<Vec<u16>> = (0..3)
        .map(|z| {
            let mut out = vec![0u8; codec.decoded_len()];
            codec.decode_into(&std::fs::read(dir.join(format!("c/{z}/0/0"))).unwrap(), &mut out).unwrap();
            out.chunks_exact(2).map(|b| u16::from_ne_bytes([b[0], b[1]])).collect()
        })
        .collect();
    let want = |z: i64| -> Vec<f32> {
        let mut v = Vec::new();
        for zz in z..z + 4 {
            let (c, lz) = ((zz / 16) as usize, (zz % 16) as usize);
            for y in 4..12 {
                for x in 4..12 {
                    v.push(f32::from(chunks[c][lz * 256 + y * 16 + x]));
                }
            }
        }
        v
    };
    let cfg = Config { samples_per_batch: 1, sample_shape: vec![4, 8, 8], n_io_threads: 2, n_batch_buffers: 1, lookahead_samples: Some(8), pop_timeout_s: 20.0, ..Config::default() };
    let p = Pipeline::new(cfg).unwrap();
    let u = dir.to_str().unwrap();
    let decoded = |p: &Pipeline| p.stats().cpu_bytes_decoded;
    let step = |z: i64| {
        let before = decoded(&p);
        let got = as_f32(&mut crop_at(&p, u, z));
        assert_eq!(got, want(z), "crop at z = {z}");
        decoded(&p) - before
    };
    // z 2..6 reads bytes 1024..3072 of chunk 0 (its blocks 1 and 2); z 3..7 bytes 1536..3584
    // (block 3 too): not held, so the chunk is decoded again, whole; z 0..4 is then a hit.
    assert_eq!(step(2), 2048, "only blocks 1 and 2");
    assert_eq!(step(3), 8192, "the span does not hold block 3: decoded again, whole");
    assert_eq!(step(0), 0, "the whole chunk serves any crop");
    assert_eq!(step(19), 3072, "chunk 1, bytes 1536..3584: blocks 1 to 3");
    assert_eq!(step(20), 0, "bytes 2048..4096 of chunk 1: inside the span, a hit");
    assert!(p.stats().decoded_cache.hits >= 2);
    // The window: with one output buffer, a batch waits for it inside its dispatch, so the
    // batches pushed meanwhile are in the window of the next one. b2 (chunk 2, z 2..6 of
    // it) sees b3 (z 8..12): it decodes blocks 1 to 5 once, and b3 hits them.
    let b0 = crop_at(&p, u, 0);
    let before = decoded(&p);
    for z in [1, 34, 40] {
        assert!(p.push(u, &[z, 4, 4], &[z + 4, 12, 12]).unwrap());
    }
    drop(b0);
    for z in [1, 34, 40] {
        assert_eq!(as_f32(&mut p.pop(-1.0).unwrap()), want(z), "crop at z = {z}");
    }
    assert_eq!(decoded(&p) - before, 5120, "chunk 2 bytes 1024..6144, decoded once for both crops");
    drop(p);
    // Without the cache the same crops decode only their own blocks, every time.
    let off = Pipeline::new(Config { decoded_cache_bytes: Some(0), samples_per_batch: 1, sample_shape: vec![4, 8, 8], n_io_threads: 2, pop_timeout_s: 20.0, ..Config::default() }).unwrap();
    for z in [2, 3, 0, 34, 40] {
        let before = decoded(&off);
        assert_eq!(as_f32(&mut crop_at(&off, u, z)), want(z));
        let lz = (z % 16) as u64;
        assert_eq!(decoded(&off) - before, ((lz + 4).div_ceil(2) - lz / 2) * 1024, "z = {z}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
