//! The device path's plan, executed by a CPU emulation of the extension (decompress each
//! op with the zstd crate, byte-unshuffle, assemble with the copy ops), must equal the CPU
//! path bit for bit. Geometry: shape=[40,50,60] uint16, inner=[8,16,16], shard=[16,32,32]
//! (3×2×2 shards of 2×2×2 chunks), zstd and blosc(zstd, shuffle) with one and with four
//! blocks per chunk; boxes partly outside.

use damacy::{Config, Pipeline};

fn emulate(b: &mut damacy::Batch, spb: usize, sample: &[u64]) -> Vec<f32> {
    emulate_with_pool(b, spb, sample, &mut Vec::new())
}

/// As the extension runs a batch: decode, unshuffle, then the device chunk store's copies
/// (pool → arena, then arena → pool; `pool` lives across batches), then assemble.
fn emulate_with_pool(b: &mut damacy::Batch, spb: usize, sample: &[u64], pool: &mut Vec<u8>) -> Vec<f32> {
    let staging = b.staging().to_vec();
    let mut arena = vec![0u8; b.decoded_bytes() as usize];
    for op in b.decode_ops() {
        let src = &staging[op.src_offset as usize..(op.src_offset + op.src_len) as usize];
        let dst = &mut arena[op.dst_offset as usize..(op.dst_offset + op.dst_len) as usize];
        match op.codec {
            0 => dst.copy_from_slice(src),
            1 => {
                let out = zstd::bulk::decompress(src, dst.len()).expect("zstd stream");
                assert_eq!(out.len(), dst.len());
                dst.copy_from_slice(&out);
            }
            c => panic!("codec {c} not emulated"),
        }
    }
    for u in b.unshuffle_ops() {
        assert_eq!(u.kind, 1, "only byte shuffle is emulated");
        let (at, len, ts) = (u.offset as usize, u.len as usize, u.typesize as usize);
        let src = arena[at..at + len].to_vec();
        let n = len / ts;
        for i in 0..n {
            for j in 0..ts {
                arena[at + i * ts + j] = src[j * n + i];
            }
        }
    }
    if b.device_store_bytes() > 0 {
        pool.resize(b.device_store_bytes() as usize, 0xAB);
    }
    for op in b.store_fetch_ops() {
        assert_eq!((op.codec, op.src_len), (0, op.dst_len));
        arena[op.dst_offset as usize..(op.dst_offset + op.dst_len) as usize].copy_from_slice(&pool[op.src_offset as usize..(op.src_offset + op.src_len) as usize]);
    }
    for op in b.store_keep_ops() {
        assert_eq!((op.codec, op.src_len), (0, op.dst_len));
        pool[op.dst_offset as usize..(op.dst_offset + op.dst_len) as usize].copy_from_slice(&arena[op.src_offset as usize..(op.src_offset + op.src_len) as usize]);
    }
    let voxels: usize = sample.iter().product::<u64>() as usize;
    let mut out = vec![f32::NAN; spb * voxels];
    let s4: Vec<usize> = std::iter::repeat_n(1, 4 - sample.len()).chain(sample.iter().map(|&x| x as usize)).collect();
    for op in b.copy_ops() {
        assert_eq!(op.src_dtype, 3, "uint16 source");
        let e = op.extent.map(|x| x as usize);
        let cs = op.chunk_shape.map(|x| x as usize);
        for i in 0..e[0] {
            for j in 0..e[1] {
                for k in 0..e[2] {
                    for l in 0..e[3] {
                        let v = if op.fill {
                            op.fill_bits as u16
                        } else {
                            let c = [i + op.chunk_start[0] as usize, j + op.chunk_start[1] as usize, k + op.chunk_start[2] as usize, l + op.chunk_start[3] as usize];
                            let idx = ((c[0] * cs[1] + c[1]) * cs[2] + c[2]) * cs[3] + c[3];
                            let at = op.chunk_offset as usize + 2 * idx;
                            u16::from_le_bytes([arena[at], arena[at + 1]])
                        };
                        let d = [i + op.sample_start[0] as usize, j + op.sample_start[1] as usize, k + op.sample_start[2] as usize, l + op.sample_start[3] as usize];
                        let idx = ((d[0] * s4[1] + d[1]) * s4[2] + d[2]) * s4[3] + d[3];
                        out[op.sample as usize * voxels + idx] = f32::from(v);
                    }
                }
            }
        }
    }
    out
}

fn run(uri: &str, device: &str, boxes: &[[i64; 3]], sample: &[u64], spb: usize, layouts: u32) -> (Vec<Vec<f32>>, serde_json::Value) {
    let cfg = Config::from_json(&format!(
        r#"{{"samples_per_batch": {spb}, "sample_shape": {sample:?}, "n_io_threads": 2, "out_of_bounds": "fill", "device": "{device}", "decode": "auto", "lookahead_samples": {}, "n_chunk_layout_cache": {layouts}}}"#,
        spb * 2
    ))
    .unwrap();
    let p = Pipeline::new(cfg).unwrap();
    let mut out = Vec::new();
    for chunk in boxes.chunks(spb) {
        for b in chunk {
            let stops: Vec<i64> = b.iter().zip(sample).map(|(s, e)| s + *e as i64).collect();
            assert!(p.push(uri, b, &stops).unwrap());
        }
        let mut batch = p.pop(10.0).unwrap();
        if device == "cpu" {
            assert!(!batch.is_gpu());
            out.push(batch.bytes().chunks_exact(4).map(|c| f32::from_ne_bytes(c.try_into().unwrap())).collect());
        } else {
            assert!(batch.is_gpu());
            out.push(emulate(&mut batch, spb, sample));
        }
    }
    (out, serde_json::from_str(&p.stats_json()).unwrap())
}

#[test]
fn device_plan_equals_cpu_path() {
    let base = std::env::temp_dir().join(format!("damacy-devemu-{}", std::process::id()));
    let sample = [9u64, 20, 17];
    let boxes: Vec<[i64; 3]> = (0..12).map(|i| [(i * 7) % 40 - 4, (i * 13) % 50 - 6, (i * 11) % 60 - 5]).collect();
    // blosc-zstd:1024: four blocks of two z-planes per 8×16×16 chunk, so crops skip blocks.
    for codec in ["zstd", "blosc-zstd", "blosc-zstd:1024"] {
        let path = base.join(codec);
        damacy::write_example_volume(path.to_str().unwrap(), &[40, 50, 60], &[8, 16, 16], &[16, 32, 32], codec, 3).unwrap();
        let uri = path.to_str().unwrap();
        let (cpu, _) = run(uri, "cpu", &boxes, &sample, 4, 4096);
        let (gpu, stats) = run(uri, "cuda:0", &boxes, &sample, 4, 4096);
        let (layout, skipped) = (&stats["chunk_layout"], stats["blosc_blocks_skipped"].as_u64().unwrap());
        if codec.starts_with("blosc") {
            assert!(layout["misses"].as_u64().unwrap() > 0 && layout["hits"].as_u64().unwrap() > 0, "{codec}: layouts come from the chunk_layout cache: {layout}");
        } else {
            assert_eq!(layout["misses"], 0, "{codec}: no blosc framing, no layouts");
        }
        assert_eq!(skipped > 0, codec == "blosc-zstd:1024", "{codec}: blocks skipped {skipped}");
        // n_chunk_layout_cache = 0: no layouts, blosc chunks staged and decoded whole.
        let (whole, off) = run(uri, "cuda:0", &boxes, &sample, 4, 0);
        assert_eq!((off["chunk_layout"]["misses"].as_u64(), off["blosc_blocks_skipped"].as_u64()), (Some(0), Some(0)), "{codec}");
        for (b, ((c, g), w)) in cpu.iter().zip(&gpu).zip(&whole).enumerate() {
            let bad = c.iter().zip(g).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
            assert_eq!(bad, 0, "{codec}: batch {b}: {bad} voxels differ");
            assert!(c.iter().zip(w).all(|(x, y)| x.to_bits() == y.to_bits()), "{codec}: batch {b} differs without layouts");
        }
    }
    std::fs::remove_dir_all(&base).unwrap();
}

/// Every batch pushed before the first pop (the look-ahead window holds them all), so the
/// scheduler sees later batches; `store`: device_chunk_cache_bytes.
fn run_ahead(uri: &str, device: &str, boxes: &[[i64; 3]], sample: &[u64], spb: usize, store: u64) -> (Vec<Vec<f32>>, serde_json::Value, usize) {
    let cfg = Config::from_json(&format!(
        r#"{{"samples_per_batch": {spb}, "sample_shape": {sample:?}, "n_io_threads": 2, "out_of_bounds": "fill", "device": "{device}", "decode": "auto", "lookahead_samples": {}, "n_batch_buffers": 2, "device_chunk_cache_bytes": {store}}}"#,
        boxes.len()
    ))
    .unwrap();
    let p = Pipeline::new(cfg).unwrap();
    for b in boxes {
        let stops: Vec<i64> = b.iter().zip(sample).map(|(s, e)| s + *e as i64).collect();
        assert!(p.push(uri, b, &stops).unwrap());
    }
    let (mut out, mut pool, mut fetched) = (Vec::new(), Vec::new(), 0);
    for _ in 0..boxes.len() / spb {
        let mut batch = p.pop(10.0).unwrap();
        if device == "cpu" {
            out.push(batch.bytes().chunks_exact(4).map(|c| f32::from_ne_bytes(c.try_into().unwrap())).collect());
        } else {
            fetched += batch.store_fetch_ops().len();
            assert!(batch.store_producers().iter().all(|&s| s < batch.seq()), "producers are earlier batches");
            out.push(emulate_with_pool(&mut batch, spb, sample, &mut pool));
        }
    }
    (out, serde_json::from_str(&p.stats_json()).unwrap(), fetched)
}

/// The device chunk store (issue 18): thin slices in depth order, so consecutive batches
/// read the same chunks; with a pool of 64 MiB and one of three chunks (8·16·16·2 = 4 KiB
/// each, evicting all the time) every batch equals the CPU path's, and later batches fetch
/// chunks earlier ones kept instead of decoding them.
#[test]
fn device_chunk_store_equals_cpu_path() {
    let base = std::env::temp_dir().join(format!("damacy-devstore-{}", std::process::id()));
    let sample = [1u64, 20, 24];
    let boxes: Vec<[i64; 3]> = (0..48).map(|i| [(i * 40) / 48, (i * 13) % 30, (i * 11) % 36]).collect();
    for codec in ["zstd", "blosc-zstd:1024"] {
        let path = base.join(codec);
        damacy::write_example_volume(path.to_str().unwrap(), &[40, 50, 60], &[8, 16, 16], &[16, 32, 32], codec, 3).unwrap();
        let uri = path.to_str().unwrap();
        let (cpu, ..) = run_ahead(uri, "cpu", &boxes, &sample, 4, 0);
        for store in [0u64, 3 * 4096 + 100, 64 << 20] {
            let (gpu, stats, fetched) = run_ahead(uri, "cuda:0", &boxes, &sample, 4, store);
            let hits = stats["decoded_cache"]["hits"].as_u64().unwrap();
            assert_eq!(hits > 0, store > 0, "{codec}, store {store}: {hits} hits");
            assert_eq!(fetched > 0, store > 0, "{codec}, store {store}: {fetched} fetches");
            for (b, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
                let bad = c.iter().zip(g).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
                assert_eq!(bad, 0, "{codec}, store {store}: batch {b}: {bad} voxels differ");
            }
        }
    }
    std::fs::remove_dir_all(&base).unwrap();
}

/// A batch that was to keep chunks in the device store fails before its device work runs
/// (a corrupt chunk beside them, caught on the host): a later batch planned to fetch them
/// fails too, naming both batches, or (planned after the failure) decodes them afresh; no
/// batch ever reads the never-written slots. Geometry: unsharded [40, 50, 60] uint16,
/// chunks [8, 16, 16] zstd; chunk [0, 0, 0] overwritten with garbage; batch 0 reads it and
/// chunk [0, 1, 1], which every later batch reads too, as they read [0, 1, 2].
#[test]
fn a_failed_keeper_fails_its_consumers_never_serves_unwritten_slots() {
    let base = std::env::temp_dir().join(format!("damacy-devstore-fail-{}", std::process::id()));
    let path = base.join("zstd");
    damacy::write_example_volume(path.to_str().unwrap(), &[40, 50, 60], &[8, 16, 16], &[], "zstd", 3).unwrap();
    let uri = path.to_str().unwrap();
    let sample = [1u64, 8, 8];
    // Even samples read chunk [0, 1, 1], odd ones [0, 1, 2]: batch 1 fetches the first from
    // batch 0 and keeps the second for batch 2 (so its failure must fail batch 2 too).
    let good = |i: i64| [i % 8, 18 + i % 5, if i % 2 == 0 { 17 + i % 7 } else { 33 + i % 7 }];
    let mut boxes = vec![[0i64, 0, 0], good(0)];
    boxes.extend((1..8).map(good));
    let goods: Vec<[i64; 3]> = (0..9).map(good).collect();
    let (cpu, ..) = run_ahead(uri, "cpu", &goods, &sample, 1, 0);
    let chunk = path.join("c").join("0").join("0").join("0");
    assert!(chunk.exists(), "{}", chunk.display());
    std::fs::write(&chunk, b"not a zstd frame at all, and long enough to look like one").unwrap();
    let cfg = Config::from_json(&format!(
        r#"{{"samples_per_batch": 2, "sample_shape": {sample:?}, "n_io_threads": 2, "device": "cuda:0", "decode": "gpu", "lookahead_samples": 64, "n_batch_buffers": 2, "device_chunk_cache_bytes": 1048576}}"#
    ))
    .unwrap();
    let p = Pipeline::new(cfg).unwrap();
    // Batch 0: the corrupt chunk and a good one; batches 1..4: the good chunk, two per batch.
    let mut all = boxes.clone();
    all.push(good(8));
    for b in &all {
        let stops: Vec<i64> = b.iter().zip(&sample).map(|(s, e)| s + *e as i64).collect();
        assert!(p.push(uri, b, &stops).unwrap());
    }
    let e = p.pop(10.0).unwrap_err();
    assert_eq!(e.status(), damacy::Status::Decode, "{e}");
    let mut pool = Vec::new();
    for i in 1..5 {
        match p.pop(10.0) {
            Ok(mut batch) => {
                let got = emulate_with_pool(&mut batch, 2, &sample, &mut pool);
                let want: Vec<f32> = cpu[(2 * i - 1)..=(2 * i)].concat();
                assert!(got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()), "batch {i} has other values");
            }
            Err(e) => assert!(e.message().contains("batch 0 was to decode and keep"), "batch {i}: {e}"),
        }
    }
    std::fs::remove_dir_all(&base).unwrap();
}
