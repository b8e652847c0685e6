//! Zarr v2 arrays and OME-NGFF multiscale groups, written by hand here (`.zarray` JSON,
//! chunks encoded with the zstd, flate2 and c-blosc libraries), read through the pipeline
//! and compared voxel for voxel with the same data stored as Zarr v3 and with the data
//! itself. Geometry: shape=[20,30,40], chunks=[8,16,16] (3×2×3 chunks, partial at every
//! upper edge), unsharded; uint16 and float32.

use std::io::Write;
use std::path::{Path, PathBuf};

use damacy::{Config, Pipeline};
use damacy::testing::prefetch::{load_array, multiscale_levels};
use damacy::Status;

const SHAPE: [u64; 3] = [20, 30, 40];
const CHUNK: [u64; 3] = [8, 16, 16];

fn value(z: u64, y: u64, x: u64) -> u16 {
    ((z * 7919 + y * 104_729 + x * 1_299_709) % 65_521) as u16
}

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("damacy-v2ngff-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How a chunk's little-endian bytes are compressed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Codec {
    Raw,
    Zstd,
    Gzip,
    /// c-blosc 1, zstd streams, byte shuffle.
    BloscZstd,
}

fn compress(codec: Codec, raw: &[u8], typesize: usize) -> Vec<u8> {
    match codec {
        Codec::Raw => raw.to_vec(),
        Codec::Zstd => zstd::bulk::compress(raw, 3).unwrap(),
        Codec::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(5));
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        Codec::BloscZstd => {
            let mut out = vec![0u8; raw.len() + 16 + 64];
            let compressor = c"zstd";
            // SAFETY: `raw` and `out` are valid for their lengths; c-blosc writes at most
            // `out.len()` bytes and reads `raw.len()`.
            let n = unsafe {
                blosc_src::blosc_compress_ctx(5, 1, typesize, raw.len(), raw.as_ptr().cast(), out.as_mut_ptr().cast(), out.len(), compressor.as_ptr(), 0, 1)
            };
            assert!(n > 0, "blosc compression failed: {n}");
            out.truncate(n as usize);
            out
        }
    }
}

/// The chunk at grid `c` as little-endian elements (v2 and v3 both store whole chunks at
/// the edges: the part outside the array holds the fill value, 0 here).
fn chunk_bytes(c: [u64; 3], float: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for z in 0..CHUNK[0] {
        for y in 0..CHUNK[1] {
            for x in 0..CHUNK[2] {
                let p = [c[0] * CHUNK[0] + z, c[1] * CHUNK[1] + y, c[2] * CHUNK[2] + x];
                let inside = p.iter().zip(SHAPE).all(|(a, n)| *a < n);
                let v = if inside { value(p[0], p[1], p[2]) } else { 0 };
                if float {
                    out.extend_from_slice(&(f32::from(v) * 0.5).to_le_bytes());
                } else {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    out
}

fn cells() -> impl Iterator<Item = [u64; 3]> {
    let g: [u64; 3] = std::array::from_fn(|i| SHAPE[i].div_ceil(CHUNK[i]));
    (0..g[0]).flat_map(move |z| (0..g[1]).flat_map(move |y| (0..g[2]).map(move |x| [z, y, x])))
}

/// Writes a Zarr v2 array: `sep` is its dimension separator, `compressor` the `.zarray`
/// compressor JSON matching `codec`.
fn write_v2(dir: &Path, codec: Codec, compressor: &str, sep: char, float: bool, fill: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let dtype = if float { "<f4" } else { "<u2" };
    let zarray = format!(
        r#"{{"zarr_format":2,"shape":{SHAPE:?},"chunks":{CHUNK:?},"dtype":"{dtype}","compressor":{compressor},"fill_value":{fill},"order":"C","filters":null,"dimension_separator":"{sep}"}}"#
    );
    std::fs::write(dir.join(".zarray"), zarray).unwrap();
    std::fs::write(dir.join(".zattrs"), r#"{"note":"ignored for arrays"}"#).unwrap();
    for c in cells() {
        let key = format!("{}{sep}{}{sep}{}", c[0], c[1], c[2]);
        let path = dir.join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, compress(codec, &chunk_bytes(c, float), if float { 4 } else { 2 })).unwrap();
    }
}

/// The same data as a Zarr v3 array (bytes + `codec`, default key encoding `c/…`).
fn write_v3(dir: &Path, codec: Codec, float: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let compressor = match codec {
        Codec::Raw => String::new(),
        Codec::Zstd => r#",{"name":"zstd","configuration":{"level":3,"checksum":false}}"#.into(),
        Codec::Gzip => r#",{"name":"gzip","configuration":{"level":5}}"#.into(),
        Codec::BloscZstd => format!(r#",{{"name":"blosc","configuration":{{"cname":"zstd","clevel":5,"shuffle":"shuffle","typesize":{},"blocksize":0}}}}"#, if float { 4 } else { 2 }),
    };
    let zarr_json = format!(
        r#"{{"zarr_format":3,"node_type":"array","shape":{SHAPE:?},"data_type":"{}","chunk_grid":{{"name":"regular","configuration":{{"chunk_shape":{CHUNK:?}}}}},"chunk_key_encoding":{{"name":"default","configuration":{{"separator":"/"}}}},"fill_value":0,"codecs":[{{"name":"bytes","configuration":{{"endian":"little"}}}}{compressor}]}}"#,
        if float { "float32" } else { "uint16" }
    );
    std::fs::write(dir.join("zarr.json"), zarr_json).unwrap();
    for c in cells() {
        let path = dir.join(format!("c/{}/{}/{}", c[0], c[1], c[2]));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, compress(codec, &chunk_bytes(c, float), if float { 4 } else { 2 })).unwrap();
    }
}

const SAMPLE: [u64; 3] = [9, 17, 21];

fn boxes() -> Vec<[i64; 3]> {
    (0..12).map(|i| [(i * 7) % 16 - 3, (i * 13) % 20 - 4, (i * 11) % 30 - 5]).collect()
}

/// The pipeline's f32 output for `boxes` of `uri` (out of bounds: fill), one Vec per box.
fn read(uri: &str, device: &str) -> Vec<Vec<f32>> {
    let cfg = Config::from_json(&format!(
        r#"{{"samples_per_batch": 4, "sample_shape": {SAMPLE:?}, "n_io_threads": 2, "out_of_bounds": "fill", "device": "{device}", "decode": "auto"}}"#
    ))
    .unwrap();
    let p = Pipeline::new(cfg).unwrap();
    let mut out = Vec::new();
    let voxels = SAMPLE.iter().product::<u64>() as usize;
    for group in boxes().chunks(4) {
        for b in group {
            let stops: Vec<i64> = b.iter().zip(SAMPLE).map(|(s, e)| s + e as i64).collect();
            assert!(p.push(uri, b, &stops).unwrap());
        }
        let mut batch = p.pop(10.0).unwrap_or_else(|e| panic!("{uri}: {e}"));
        if device != "cpu" {
            assert!(batch.is_gpu());
            let codecs: Vec<u32> = batch.decode_ops().iter().map(|op| op.codec).collect();
            assert!(!codecs.is_empty() && codecs.iter().all(|&c| c == 1), "{uri}: every chunk is one nvCOMP zstd op: {codecs:?}");
            continue;
        }
        let all: Vec<f32> = batch.bytes().chunks_exact(4).map(|c| f32::from_ne_bytes(c.try_into().unwrap())).collect();
        out.extend(all.chunks_exact(voxels).map(<[f32]>::to_vec));
    }
    out
}

/// The expected f32 output of each box: the data inside the array, `fill` outside.
fn expected(float: bool, fill: f32) -> Vec<Vec<f32>> {
    boxes()
        .iter()
        .map(|b| {
            let mut v = Vec::new();
            for z in b[0]..b[0] + SAMPLE[0] as i64 {
                for y in b[1]..b[1] + SAMPLE[1] as i64 {
                    for x in b[2]..b[2] + SAMPLE[2] as i64 {
                        let p = [z, y, x];
                        let inside = p.iter().zip(SHAPE).all(|(a, n)| *a >= 0 && (*a as u64) < n);
                        let d = if inside { f32::from(value(z as u64, y as u64, x as u64)) } else { fill };
                        v.push(if inside && float { d * 0.5 } else { d });
                    }
                }
            }
            v
        })
        .collect()
}

fn assert_same(what: &str, got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let bad = g.iter().zip(w).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(bad, 0, "{what}: box {i}: {bad} voxels differ");
    }
}

#[test]
fn v2_arrays_read_like_their_v3_equivalents() {
    let base = temp("same");
    let cases = [
        (Codec::Zstd, r#"{"id":"zstd","level":3,"checksum":false}"#, '.', false),
        (Codec::Zstd, r#"{"id":"zstd","level":3}"#, '/', true),
        (Codec::Gzip, r#"{"id":"gzip","level":5}"#, '.', false),
        (Codec::BloscZstd, r#"{"id":"blosc","cname":"zstd","clevel":5,"shuffle":1,"blocksize":0}"#, '/', false),
        (Codec::BloscZstd, r#"{"id":"blosc","cname":"zstd","clevel":5,"shuffle":1,"blocksize":0}"#, '.', true),
        (Codec::Raw, "null", '.', true),
    ];
    for (i, (codec, compressor, sep, float)) in cases.into_iter().enumerate() {
        let v2 = base.join(format!("{i}-v2.zarr"));
        let v3 = base.join(format!("{i}-v3.zarr"));
        write_v2(&v2, codec, compressor, sep, float, "0");
        write_v3(&v3, codec, float);
        let what = format!("{codec:?} sep {sep:?} float {float}");
        let a = load_array(v2.to_str().unwrap()).unwrap();
        assert_eq!((a.meta.format.number(), a.meta.shape.as_slice()), (2, &SHAPE[..]), "{what}");
        let from_v2 = read(v2.to_str().unwrap(), "cpu");
        let from_v3 = read(v3.to_str().unwrap(), "cpu");
        assert_same(&what, &from_v2, &from_v3);
        assert_same(&what, &from_v2, &expected(float, 0.0));
    }
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn v2_fill_values_and_missing_chunks() {
    let base = temp("fill");
    for (fill, want) in [("7", 7.0f32), ("null", 0.0), ("\"NaN\"", f32::NAN), ("\"Infinity\"", f32::INFINITY), ("-2.5", -2.5)] {
        let float = !matches!(fill, "7" | "null");
        let dir = base.join(format!("fill-{}", fill.replace('"', "")));
        write_v2(&dir, Codec::Zstd, r#"{"id":"zstd","level":1}"#, '.', float, fill);
        // A missing chunk file is fill, like outside the array.
        std::fs::remove_file(dir.join("1.0.1")).unwrap();
        let got = read(dir.to_str().unwrap(), "cpu");
        let mut want_all = expected(float, want);
        for (b, w) in boxes().iter().zip(&mut want_all) {
            let mut i = 0;
            for z in b[0]..b[0] + SAMPLE[0] as i64 {
                for y in b[1]..b[1] + SAMPLE[1] as i64 {
                    for x in b[2]..b[2] + SAMPLE[2] as i64 {
                        if (8..16).contains(&z) && (0..16).contains(&y) && (16..32).contains(&x) {
                            w[i] = want;
                        }
                        i += 1;
                    }
                }
            }
        }
        assert_same(fill, &got, &want_all);
    }
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn v2_zstd_takes_the_device_route_of_v3_zstd() {
    let base = temp("device");
    let v2 = base.join("v2.zarr");
    write_v2(&v2, Codec::Zstd, r#"{"id":"zstd","level":3}"#, '/', false, "0");
    read(v2.to_str().unwrap(), "cuda:0");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn v2_errors_name_the_feature_and_the_uri() {
    let base = temp("errors");
    for (tag, from, to, what) in [
        ("order", r#""order":"C""#, r#""order":"F""#, "order \"F\""),
        ("filters", r#""filters":null"#, r#""filters":[{"id":"delta","dtype":"<u2"}]"#, "filters"),
        ("object", r#""dtype":"<u2""#, r#""dtype":"|O""#, "object dtype"),
        ("lz4", r#""compressor":{"id":"zstd","level":1}"#, r#""compressor":{"id":"lz4","acceleration":1}"#, "compressor `lz4`"),
    ] {
        let dir = base.join(tag);
        write_v2(&dir, Codec::Zstd, r#"{"id":"zstd","level":1}"#, '.', false, "0");
        let text = std::fs::read_to_string(dir.join(".zarray")).unwrap();
        assert!(text.contains(from), "{tag}");
        std::fs::write(dir.join(".zarray"), text.replace(from, to)).unwrap();
        let e = load_array(dir.to_str().unwrap()).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument, "{tag}: {e}");
        assert!(e.message().contains(what) && e.message().contains(dir.to_str().unwrap()), "{tag}: {e}");
    }
    // The metadata cap of v3 (16 MiB) holds for .zarray.
    let big = base.join("big");
    write_v2(&big, Codec::Raw, "null", '.', false, "0");
    let text = std::fs::read_to_string(big.join(".zarray")).unwrap();
    std::fs::write(big.join(".zarray"), format!("{}{}", " ".repeat(17 << 20), text)).unwrap();
    let e = load_array(big.to_str().unwrap()).unwrap_err();
    assert_eq!(e.status(), Status::Storage, "{e}");
    assert!(e.message().contains(".zarray") && e.message().contains("more than"), "{e}");
    let e = load_array(base.join("nothing").to_str().unwrap()).unwrap_err();
    assert_eq!(e.status(), Status::NotFound);
    assert!(e.message().contains(".zarray"), "{e}");
    std::fs::remove_dir_all(&base).unwrap();
}

fn datasets_json() -> &'static str {
    r#"[{"path":"0","coordinateTransformations":[{"type":"scale","scale":[1.0,0.5,0.5]}]},
        {"path":"1","coordinateTransformations":[{"type":"scale","scale":[2.0,1.0,1.0]},{"type":"translation","translation":[0.5,0.25,0.25]}]}]"#
}

/// An OME-NGFF v0.4 group (`.zgroup`, `.zattrs`), levels stored as Zarr v2 (level 1 is a
/// second copy of the data with float32 elements, enough to tell the levels apart).
fn write_ngff_v04(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(".zgroup"), r#"{"zarr_format":2}"#).unwrap();
    let axes = r#"[{"name":"z","type":"space"},{"name":"y","type":"space"},{"name":"x","type":"space"}]"#;
    std::fs::write(dir.join(".zattrs"), format!(r#"{{"multiscales":[{{"version":"0.4","name":"img","axes":{axes},"datasets":{}}}]}}"#, datasets_json())).unwrap();
    write_v2(&dir.join("0"), Codec::Zstd, r#"{"id":"zstd","level":1}"#, '/', false, "0");
    write_v2(&dir.join("1"), Codec::Zstd, r#"{"id":"zstd","level":1}"#, '/', true, "0");
}

/// An OME-NGFF v0.5 group (`zarr.json` with `attributes.ome`), levels stored as Zarr v3.
fn write_ngff_v05(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let axes = r#"[{"name":"z","type":"space"},{"name":"y","type":"space"},{"name":"x","type":"space"}]"#;
    std::fs::write(
        dir.join("zarr.json"),
        format!(r#"{{"zarr_format":3,"node_type":"group","attributes":{{"ome":{{"version":"0.5","multiscales":[{{"name":"img","axes":{axes},"datasets":{}}}]}}}}}}"#, datasets_json()),
    )
    .unwrap();
    write_v3(&dir.join("0"), Codec::Zstd, false);
    write_v3(&dir.join("1"), Codec::Zstd, true);
}

#[test]
fn ngff_levels_select_arrays() {
    let base = temp("ngff");
    for (tag, write) in [("v04", write_ngff_v04 as fn(&Path)), ("v05", write_ngff_v05)] {
        let group = base.join(format!("{tag}.zarr"));
        write(&group);
        let g = group.to_str().unwrap();
        // A level by index, or by path.
        assert_same(tag, &read(&format!("{g}#level=0"), "cpu"), &expected(false, 0.0));
        assert_same(tag, &read(&format!("{g}#level=1"), "cpu"), &expected(true, 0.0));
        assert_same(tag, &read(&format!("{g}/1"), "cpu"), &expected(true, 0.0));
        // No level: an error listing them.
        let e = load_array(g).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument, "{e}");
        assert!(e.message().contains("#level=N") && e.message().contains(r#"1 = "1""#), "{e}");
        let e = load_array(&format!("{g}#level=2")).unwrap_err();
        assert!(e.status() == Status::InvalidArgument && e.message().contains("no level 2"), "{e}");
        let e = load_array(&format!("{g}#level=x")).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument, "{e}");
        let e = load_array(&format!("{g}/0#level=0")).unwrap_err();
        assert!(e.message().contains("is an array"), "{e}");
        // The listing: paths, shapes, scales.
        let m = multiscale_levels(g).unwrap();
        assert_eq!(m.multiscale.version.as_deref(), Some(if tag == "v04" { "0.4" } else { "0.5" }));
        assert_eq!(m.multiscale.axes, ["z", "y", "x"]);
        let paths: Vec<&str> = m.levels.iter().map(|l| l.level.path.as_str()).collect();
        assert_eq!(paths, ["0", "1"]);
        assert_eq!(m.levels[1].meta.shape, SHAPE);
        assert_eq!(m.levels[1].meta.data_type, "float32");
        assert_eq!(m.levels[0].level.scale, Some(vec![1.0, 0.5, 0.5]));
        assert_eq!(m.levels[1].level.translation, Some(vec![0.5, 0.25, 0.25]));
        assert_eq!(m.levels[0].meta.format.number(), if tag == "v04" { 2 } else { 3 });
    }
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_group_without_multiscales_lists_its_arrays() {
    let base = temp("plain");
    for v3 in [false, true] {
        let group = base.join(format!("g{}", u8::from(v3)));
        std::fs::create_dir_all(&group).unwrap();
        if v3 {
            std::fs::write(group.join("zarr.json"), r#"{"zarr_format":3,"node_type":"group","attributes":{}}"#).unwrap();
            write_v3(&group.join("raw"), Codec::Raw, false);
            write_v3(&group.join("labels"), Codec::Raw, false);
            std::fs::create_dir_all(group.join("sub")).unwrap();
            std::fs::write(group.join("sub/zarr.json"), r#"{"zarr_format":3,"node_type":"group"}"#).unwrap();
        } else {
            std::fs::write(group.join(".zgroup"), r#"{"zarr_format":2}"#).unwrap();
            write_v2(&group.join("raw"), Codec::Raw, "null", '.', false, "0");
            write_v2(&group.join("labels"), Codec::Raw, "null", '.', false, "0");
        }
        std::fs::create_dir_all(group.join("not-an-array")).unwrap();
        let g = group.to_str().unwrap();
        let e = load_array(g).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument, "{e}");
        assert!(e.message().contains("without OME-NGFF multiscales") && e.message().contains(r#"["labels", "raw"]"#), "{e}");
        let e = multiscale_levels(g).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument, "{e}");
        assert!(load_array(&format!("{g}/raw")).is_ok());
    }
    std::fs::remove_dir_all(&base).unwrap();
}
