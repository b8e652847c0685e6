//! End to end through the Rust pipeline on a hand-written, uncompressed, sharded array
//! (independent of zarrs' writer): shape=[10,12], shard=[4,8], inner=[2,4]: 3×2 shards of
//! 2×2 inner chunks; shard (2,1) is absent (fill), inner chunk 1 of shard (0,0) is absent.

use damacy::{Config, Pipeline};
use damacy::Status;

const SHAPE: [u64; 2] = [10, 12];
const FILL: u16 = 7;

fn value(y: u64, x: u64) -> u16 {
    (y * 100 + x) as u16
}

fn write_array(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("c")).unwrap();
    let meta = format!(
        r#"{{"zarr_format":3,"node_type":"array","shape":[10,12],"data_type":"uint16",
        "chunk_grid":{{"name":"regular","configuration":{{"chunk_shape":[4,8]}}}},
        "chunk_key_encoding":{{"name":"default","configuration":{{"separator":"/"}}}},
        "fill_value":{FILL},
        "codecs":[{{"name":"sharding_indexed","configuration":{{"chunk_shape":[2,4],
          "codecs":[{{"name":"bytes","configuration":{{"endian":"little"}}}}],
          "index_codecs":[{{"name":"bytes","configuration":{{"endian":"little"}}}},{{"name":"crc32c"}}],
          "index_location":"end"}}}}]}}"#
    );
    std::fs::write(dir.join("zarr.json"), meta).unwrap();
    for sy in 0..3u64 {
        for sx in 0..2u64 {
            if (sy, sx) == (2, 1) {
                continue;
            }
            let mut data = Vec::new();
            let mut index = Vec::new();
            for cy in 0..2u64 {
                for cx in 0..2u64 {
                    if (sy, sx, cy, cx) == (0, 0, 0, 1) {
                        index.extend(u64::MAX.to_le_bytes());
                        index.extend(u64::MAX.to_le_bytes());
                        continue;
                    }
                    let off = data.len() as u64;
                    for y in 0..2 {
                        for x in 0..4 {
                            let (gy, gx) = (sy * 4 + cy * 2 + y, sx * 8 + cx * 4 + x);
                            let v = if gy < SHAPE[0] && gx < SHAPE[1] { value(gy, gx) } else { 0 };
                            data.extend(v.to_le_bytes());
                        }
                    }
                    index.extend(off.to_le_bytes());
                    index.extend(16u64.to_le_bytes());
                }
            }
            let crc = crc32c::crc32c(&index);
            data.extend(&index);
            data.extend(crc.to_le_bytes());
            std::fs::create_dir_all(dir.join(format!("c/{sy}"))).unwrap();
            std::fs::write(dir.join(format!("c/{sy}/{sx}")), data).unwrap();
        }
    }
}

fn expected(y: i64, x: i64) -> f32 {
    let absent_shard = y >= 8 && x >= 8;
    let absent_chunk = (0..2).contains(&y) && (4..8).contains(&x);
    if y < 0 || x < 0 || y >= 10 || x >= 12 || absent_shard || absent_chunk {
        f32::from(FILL)
    } else {
        f32::from(value(y as u64, x as u64))
    }
}

#[test]
fn batches_match_the_array_in_push_order() {
    let dir = std::env::temp_dir().join(format!("damacy-e2e-{}", std::process::id()));
    write_array(&dir);
    let uri = dir.to_str().unwrap();
    let cfg = Config::from_json(r#"{"samples_per_batch": 3, "sample_shape": [3, 5], "n_io_threads": 2, "out_of_bounds": "fill", "lookahead_samples": 9}"#).unwrap();
    let p = Pipeline::new(cfg).unwrap();
    let starts: Vec<(i64, i64)> = (0..12).map(|i| ((i * 7) % 11 - 2, (i * 5) % 13 - 2)).collect();
    let mut pushed = 0;
    let mut popped = 0;
    while popped < starts.len() / 3 {
        while pushed < starts.len() {
            let (y, x) = starts[pushed];
            if !p.push(uri, &[y, x], &[y + 3, x + 5]).unwrap() {
                break;
            }
            pushed += 1;
        }
        let mut b = p.pop(5.0).unwrap();
        let vals: Vec<f32> = b.bytes().chunks_exact(4).map(|c| f32::from_ne_bytes(c.try_into().unwrap())).collect();
        for s in 0..3 {
            let (y0, x0) = starts[popped * 3 + s];
            for y in 0..3 {
                for x in 0..5 {
                    assert_eq!(vals[s * 15 + y * 5 + x], expected(y0 + y as i64, x0 + x as i64), "batch {popped} sample {s} at ({y},{x})");
                }
            }
        }
        popped += 1;
    }
    assert_eq!(p.pop(0.1).unwrap_err().status(), Status::TryAgain);
    let stats: serde_json::Value = serde_json::from_str(&p.stats_json()).unwrap();
    assert!(stats["chunks_filled"].as_u64().unwrap() > 0);
    assert!(stats["shard_index"]["hits"].as_u64().unwrap() > 0);
    p.close();
    assert_eq!(p.pop(0.1).unwrap_err().status(), Status::Shutdown);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_batch_reports_and_the_next_batch_works() {
    let dir = std::env::temp_dir().join(format!("damacy-e2e-fail-{}", std::process::id()));
    write_array(&dir);
    let uri = dir.to_str().unwrap();
    let cfg = Config::from_json(r#"{"samples_per_batch": 1, "sample_shape": [2, 2], "n_io_threads": 2}"#).unwrap();
    let p = Pipeline::new(cfg).unwrap();
    assert!(p.push("/nonexistent/array", &[0, 0], &[2, 2]).unwrap());
    assert!(p.push(uri, &[9, 11], &[11, 13]).unwrap());
    assert!(p.push(uri, &[0, 0], &[2, 2]).unwrap());
    let e = p.pop(5.0).unwrap_err();
    assert_eq!(e.status(), Status::NotFound, "{e}");
    let e = p.pop(5.0).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument, "{e}");
    assert!(e.message().contains("[10, 12]"), "{e}");
    let mut b = p.pop(5.0).unwrap();
    assert_eq!(f32::from_ne_bytes(b.bytes()[..4].try_into().unwrap()), f32::from(value(0, 0)));
    assert!(p.push(uri, &[0, 0], &[3, 3]).unwrap(), "a wrong extent fails its batch, not push");
    let e = p.pop(5.0).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    assert!(e.message().contains("sample_shape"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
