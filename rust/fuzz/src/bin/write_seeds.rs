//! Writes the seed corpora under `rust/fuzz/corpus/<target>/` from real fixtures: example
//! volumes written by damacy's example writer (through zarrs), their `zarr.json`, shard
//! indexes, inner chunks (zstd frames, blosc chunks) and whole-batch inputs over them, plus
//! `zarr.json` documents for a spread of [`Knobs`]. Deterministic; every batch seed is
//! checked to decode back to itself and to read a batch.
//!
//! From rust/: `cargo +nightly fuzz build write_seeds && fuzz/target/x86_64-unknown-linux-gnu/release/write_seeds
//! [OUT_DIR]` (an instrumented build shared with the targets), or
//! `cargo run --release --bin write_seeds` from rust/fuzz.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use damacy::testing::zarr::{ArrayMeta, ShardIndex};
use damacy_fuzz::batch::{self, BatchInput, Knobs, Record};
use damacy_fuzz::parsers;

/// One example volume: name, shape, chunk, shard (empty: unsharded), codec.
const FIXTURES: &[(&str, &[u64], &[u64], &[u64], &str)] = &[
    ("sharded-zstd", &[16, 16, 16], &[8, 8, 8], &[16, 16, 16], "zstd"),
    ("sharded-blosc", &[16, 16, 16], &[8, 8, 8], &[16, 16, 16], "blosc-zstd"),
    ("sharded-blosc256", &[16, 16, 16], &[8, 8, 8], &[16, 16, 16], "blosc-zstd:256"),
    // 16³ chunks in 1 KiB blocks (two z-slices each), boxes at 15..18: the CPU path decodes
    // the span of the blocks a box reads, here the last block of the first chunk.
    ("sharded-blosc1k", &[18, 18, 18], &[16, 16, 16], &[32, 32, 32], "blosc-zstd:1024"),
    ("chunked-zstd", &[12, 16, 16], &[8, 8, 8], &[], "zstd"),
    ("chunked-blosc", &[12, 16, 16], &[8, 8, 8], &[], "blosc-zstd"),
    ("rank2-sharded", &[20, 24], &[8, 8], &[16, 16], "zstd"),
    ("rank1-sharded", &[100], &[16], &[32], "blosc-zstd"),
];

struct Corpus {
    root: PathBuf,
    bytes: usize,
}

impl Corpus {
    fn write(&mut self, target: &str, name: &str, data: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
        self.bytes += data.len();
    }
}

/// Every object of the array folder `dir`, keyed by its path relative to it.
fn objects(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let key = p.strip_prefix(dir).unwrap().to_str().unwrap().to_string();
                out.insert(key, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn coords(key: &str) -> Vec<u8> {
    key.split('/').skip(1).map(|c| c.parse::<u8>().unwrap()).collect()
}

/// Knobs describing the example writer's metadata for `codec` (blosc: zstd, byte shuffle).
fn example_knobs(shape: &[u64], chunk: &[u64], shard: &[u64], codec: &str) -> Knobs {
    let r = shape.len();
    let pad = |v: &[u64]| -> [u8; 3] {
        let mut a = [1u8; 3];
        for (i, &x) in v.iter().enumerate() {
            a[i] = u8::try_from(x).unwrap();
        }
        a
    };
    let sharded = !shard.is_empty();
    Knobs {
        rank: (r - 1) as u8,
        shape: pad(shape),
        grid: pad(if sharded { shard } else { chunk }),
        inner: pad(chunk),
        sharding: if sharded { 0b101 } else { 0 },
        codecs: if codec == "zstd" { 1 } else { 4 },
        blosc: 4 | (1 << 3),
        ..Knobs::default()
    }
}

fn boxes(knobs: &mut Knobs, starts: [[i16; 3]; 2]) {
    for (s, st) in starts.iter().enumerate() {
        for d in 0..3 {
            knobs.starts[s][2 * d..2 * d + 2].copy_from_slice(&st[d].to_le_bytes());
        }
    }
}

fn check_batch_seed(input: &BatchInput, want_ok: bool, what: &str) -> Vec<u8> {
    let bytes = input.to_bytes();
    let back = BatchInput::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap();
    assert_eq!(back.knobs, input.knobs, "{what}: knobs round trip");
    assert!(back.rest == input.rest, "{what}: records round trip");
    let outcome = batch::run(&back);
    if want_ok {
        assert_eq!(outcome, None, "{what}: the seed reads a batch");
    }
    bytes
}

fn main() {
    let root = std::env::args().nth(1).map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"), PathBuf::from);
    let mut corpus = Corpus { root, bytes: 0 };
    let scratch = std::env::temp_dir().join(format!("damacy-seeds-{}", std::process::id()));
    for &(name, shape, chunk, shard, codec) in FIXTURES {
        let dir = scratch.join(name);
        damacy::write_example_volume(dir.to_str().unwrap(), shape, chunk, shard, codec, 7).unwrap();
        let objs = objects(&dir);
        let zarr = &objs["zarr.json"];
        corpus.write("zarr_json", name, zarr);
        parsers::zarr_json(zarr);
        let meta = ArrayMeta::parse(zarr).unwrap();
        let decoded = meta.decoded_chunk_bytes as u32;
        // Inner chunks (or chunk files) and, for shards, their index.
        let mut chunks: Vec<(String, u16, Vec<u8>)> = Vec::new();
        for (key, bytes) in objs.iter().filter(|(k, _)| k.as_str() != "zarr.json") {
            match &meta.sharding {
                None => chunks.push((key.clone(), 0, bytes.clone())),
                Some(s) => {
                    let n = s.n_chunks as usize;
                    let len = s.index_len() as usize;
                    let index = &bytes[bytes.len() - len..];
                    let seed = parsers::encode_shard_index(index, n as u16, s.index_crc32c, bytes.len() as u64);
                    parsers::shard_index(&seed);
                    corpus.write("shard_index", &format!("{name}-{}", key.replace('/', "_")), &seed);
                    let parsed = ShardIndex::parse(index, n, s.index_crc32c, bytes.len() as u64).unwrap();
                    for i in 0..n {
                        if let Some(r) = parsed.get(i) {
                            chunks.push((key.clone(), i as u16, bytes[r.offset as usize..(r.offset + r.nbytes) as usize].to_vec()));
                        }
                    }
                }
            }
        }
        for (i, (key, inner, bytes)) in chunks.iter().enumerate().take(3) {
            let seed_name = format!("{name}-{}-{inner}", key.replace('/', "_"));
            if codec == "zstd" {
                let seed = parsers::encode_zstd(bytes, decoded);
                parsers::zstd_frame(&seed);
                assert!(damacy::testing::zarr::zstd_frame::check_frame(bytes, u64::from(decoded)).is_ok(), "{seed_name}");
                corpus.write("zstd_frame", &seed_name, &seed);
            } else if i < 2 {
                parsers::blosc_frame(bytes);
                corpus.write("blosc_frame", &seed_name, bytes);
            }
        }
        // Whole batches: raw metadata and objects; the same as knobs; shards packed by the
        // harness from inner chunks; each on both paths.
        let r = shape.len();
        let mut knobs = example_knobs(shape, chunk, shard, codec);
        let mid: Vec<i16> = chunk.iter().map(|&c| c as i16 - 1).collect();
        let mut far = [0i16; 3];
        for d in 0..r {
            far[d] = (shape[d] as i16 - 3).max(0);
        }
        boxes(&mut knobs, [[mid[0], *mid.get(1).unwrap_or(&0), *mid.get(2).unwrap_or(&0)], far]);
        let files: Vec<Record> = objs.iter().filter(|(k, _)| k.as_str() != "zarr.json").map(|(k, b)| Record::Object { coords: coords(k), bytes: b.clone() }).collect();
        let mut raw = vec![Record::Meta(zarr.clone())];
        raw.extend(files.iter().cloned());
        assert_eq!(knobs.zarr_json()["codecs"].as_array().map(Vec::len), serde_json::from_slice::<serde_json::Value>(zarr).unwrap()["codecs"].as_array().map(Vec::len));
        for device in [false, true] {
            let mut k = knobs.clone();
            k.flags = u8::from(device);
            let path = if device { "gpu" } else { "cpu" };
            let seed = check_batch_seed(&BatchInput::new(k.clone(), &raw), true, name);
            corpus.write("batch_read", &format!("{name}-raw-{path}"), &seed);
            let seed = check_batch_seed(&BatchInput::new(k.clone(), &files), true, name);
            corpus.write("batch_read", &format!("{name}-knobs-{path}"), &seed);
            if meta.sharding.is_some() && !device {
                let inner: Vec<Record> = chunks.iter().map(|(key, i, b)| Record::Inner { coords: coords(key), index: *i, bytes: b.clone() }).collect();
                let seed = check_batch_seed(&BatchInput::new(k.clone(), &inner), true, name);
                corpus.write("batch_read", &format!("{name}-packed-{path}"), &seed);
            }
        }
    }
    // Metadata of other knob settings: codecs, index at the start, key encodings, dtypes.
    for (i, (codecs, sharding, key, dtype, fill)) in
        [(3u8, 0b011u8, 1u8, 5u8, 2u8), (0x14, 1, 2, 11, 3), (0x2c, 0b111, 3, 12, 2), (5, 0, 0, 1, 6), (0x44, 1, 0, 9, 4), (6, 1, 0, 13, 0)].into_iter().enumerate()
    {
        let k = Knobs { rank: 2, shape: [10, 12, 9], grid: [4, 6, 9], inner: [2, 3, 3], sharding, codecs, blosc: 0x10 | 1, key, dtype, fill, ..Knobs::default() };
        let json = serde_json::to_vec(&k.zarr_json()).unwrap();
        parsers::zarr_json(&json);
        corpus.write("zarr_json", &format!("knobs-{i}"), &json);
        let seed = check_batch_seed(&BatchInput::new(k, &[]), false, "knobs");
        corpus.write("batch_read", &format!("knobs-{i}"), &seed);
    }
    std::fs::remove_dir_all(&scratch).unwrap();
    println!("wrote {} bytes of seeds under {}", corpus.bytes, corpus.root.display());
}
