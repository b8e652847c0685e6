//! `batch_read`: one whole batch through [`Pipeline`] (prefetch → plan → io → decode →
//! assemble, CPU or device path) over an in-memory store (`mem://`, damacy's `fuzzing`
//! feature), with small caps on every budget.
//!
//! Input, structure-aware: [`Knobs`] (one byte per knob, so a seed can be written by hand:
//! [`BatchInput::to_bytes`]) fix the metadata (rank, shape, chunk and shard shape, dtype,
//! codecs, index location and checksum, key encoding, fill value), the path and two boxes;
//! the rest of the input is a list of [`Record`]s: objects stored at chunk or shard keys,
//! inner chunks the harness packs into a shard with a correct index, or a raw `zarr.json`
//! replacing the one the knobs describe.
//!
//! Checked: the batch comes back as a typed error (never Internal: a caught panic; never
//! TryAgain: a hang) or as a batch of the configured size whose device ops stay inside
//! their buffers; no single iteration allocates more than [`MAX_LIVE_BYTES`] above what was
//! live before it (the target's counting allocator).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use arbitrary::Arbitrary;
use damacy::{Config, Pipeline};
use damacy::testing::store::mem;
use damacy::testing::zarr::{ArrayMeta, KeyEncoding};
use damacy::Status;
use serde_json::{json, Value};

/// Largest growth of live heap bytes during one iteration.
pub const MAX_LIVE_BYTES: usize = 96 << 20;

/// The metadata and boxes of one input, one byte each (read as documented per field).
#[derive(Debug, Clone, Default, Arbitrary, PartialEq, Eq)]
pub struct Knobs {
    /// Rank 1 + `rank % 3`.
    pub rank: u8,
    /// Array extents (0 allowed).
    pub shape: [u8; 3],
    /// From 250 up: extents and box starts shifted left by `(scale - 250) * 12` bits.
    pub scale: u8,
    /// `chunk_grid` chunk shape (the shard shape when sharded); 0 allowed (an error).
    pub grid: [u8; 3],
    /// Inner chunk shape when sharded.
    pub inner: [u8; 3],
    /// Bit 0 sharded, bit 1 index at the start, bit 2 index crc32c, bit 3 an unsupported
    /// index codec.
    pub sharding: u8,
    /// Index into [`DTYPES`] (modulo).
    pub dtype: u8,
    /// Bits 0-2 compressor (none, zstd, zstd+checksum, gzip, blosc, skipped unknown, required
    /// unknown), bit 3 crc32c last, bit 4 transpose first, bits 5-6 endian (little, big,
    /// absent).
    pub codecs: u8,
    /// Blosc: bits 0-2 cname (modulo 6), bits 3-4 shuffle (none, byte, bit).
    pub blosc: u8,
    /// Key encoding (default `/`, default `.`, v2 `.`, v2 `/`), modulo.
    pub key: u8,
    /// Fill value (modulo): 0, 1, "NaN", -1, a short hex string, true, 255.
    pub fill: u8,
    /// Bit 0 the device path (decode on the GPU; its ops are checked, not run), bit 1
    /// out-of-bounds fill, bit 2 the second sample shape set.
    pub flags: u8,
    /// Box starts: two samples × three i16 little-endian.
    pub starts: [[u8; 6]; 2],
}

/// Data types the knobs pick from (the last is one damacy refuses).
pub const DTYPES: [&str; 14] = ["uint16", "uint8", "int8", "bool", "int16", "uint32", "int32", "uint64", "int64", "float16", "bfloat16", "float32", "float64", "complex64"];

/// One input: knobs, then records.
#[derive(Debug, Clone)]
pub struct BatchInput {
    /// Metadata and boxes.
    pub knobs: Knobs,
    /// [`Record`]s, encoded (see [`Record::encode`]).
    pub rest: Vec<u8>,
}

// By hand: the records are the input's remaining bytes, verbatim (a derived `Vec<u8>` is
// not), so a seed is the knobs' bytes followed by encoded records.
impl<'a> Arbitrary<'a> for BatchInput {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let knobs = Knobs::arbitrary(u)?;
        Ok(Self { knobs, rest: u.bytes(u.len())?.to_vec() })
    }

    fn arbitrary_take_rest(mut u: arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let knobs = Knobs::arbitrary(&mut u)?;
        Ok(Self { knobs, rest: u.take_rest().to_vec() })
    }
}

/// One stored object the input asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// An object at the key of grid cell `coords` (a chunk, or a whole shard file).
    Object { coords: Vec<u8>, bytes: Vec<u8> },
    /// The `zarr.json`, verbatim (replaces the one the knobs describe).
    Meta(Vec<u8>),
    /// Inner chunk `index` of the shard at `coords`: the harness writes the shard with a
    /// correct index (and checksum) around every such chunk.
    Inner { coords: Vec<u8>, index: u16, bytes: Vec<u8> },
}

impl Record {
    /// `[tag:1][coords: rank bytes][index: 2 LE, Inner only][len: 2 LE][bytes]`; tags 0
    /// Object, 1 Meta, 2 Inner (others: skipped, like a truncated record).
    pub fn encode(&self, rank: usize, out: &mut Vec<u8>) {
        let body = |out: &mut Vec<u8>, bytes: &[u8]| {
            let n = u16::try_from(bytes.len()).expect("records hold at most 64 KiB");
            out.extend(n.to_le_bytes());
            out.extend(bytes);
        };
        match self {
            Self::Object { coords, bytes } => {
                out.push(0);
                out.extend(&coords[..rank]);
                body(out, bytes);
            }
            Self::Meta(bytes) => {
                out.push(1);
                out.extend(std::iter::repeat_n(0, rank));
                body(out, bytes);
            }
            Self::Inner { coords, index, bytes } => {
                out.push(2);
                out.extend(&coords[..rank]);
                out.extend(index.to_le_bytes());
                body(out, bytes);
            }
        }
    }

    /// Every record in `rest` (a truncated last record is kept with the bytes there are).
    pub fn decode_all(mut rest: &[u8], rank: usize) -> Vec<Self> {
        let mut v = Vec::new();
        while let Some((&tag, tail)) = rest.split_first() {
            let take = |r: &mut &[u8], n: usize| -> Vec<u8> {
                let (a, b) = r.split_at(n.min(r.len()));
                *r = b;
                a.to_vec()
            };
            rest = tail;
            let coords = take(&mut rest, rank);
            let index = if tag % 4 == 2 { take(&mut rest, 2) } else { Vec::new() };
            let n = take(&mut rest, 2);
            let n = usize::from(u16::from_le_bytes([n.first().copied().unwrap_or(0), n.get(1).copied().unwrap_or(0)]));
            let bytes = take(&mut rest, n);
            let mut coords = coords;
            coords.resize(rank, 0);
            match tag % 4 {
                0 => v.push(Self::Object { coords, bytes }),
                1 => v.push(Self::Meta(bytes)),
                2 => v.push(Self::Inner { coords, index: u16::from_le_bytes([index.first().copied().unwrap_or(0), index.get(1).copied().unwrap_or(0)]), bytes }),
                _ => {}
            }
        }
        v
    }
}

impl Knobs {
    /// The knobs as input bytes (what `Arbitrary` reads back: one byte per `u8`, in order).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![self.rank];
        v.extend(self.shape);
        v.push(self.scale);
        v.extend(self.grid);
        v.extend(self.inner);
        v.extend([self.sharding, self.dtype, self.codecs, self.blosc, self.key, self.fill, self.flags]);
        v.extend(self.starts.iter().flatten());
        v
    }

    /// Rank of the array and the boxes.
    pub fn rank(&self) -> usize {
        1 + usize::from(self.rank % 3)
    }

    fn shift(&self) -> u32 {
        if self.scale >= 250 {
            u32::from(self.scale - 250) * 12
        } else {
            0
        }
    }

    /// The data type the knobs name.
    pub fn data_type(&self) -> &'static str {
        DTYPES[usize::from(self.dtype) % DTYPES.len()]
    }

    /// The `zarr.json` the knobs describe.
    pub fn zarr_json(&self) -> Value {
        let r = self.rank();
        let shape: Vec<u64> = self.shape[..r].iter().map(|&x| u64::from(x) << self.shift()).collect();
        let endian = match (self.codecs >> 5) & 3 {
            0 | 3 => json!({"name": "bytes", "configuration": {"endian": "little"}}),
            1 => json!({"name": "bytes", "configuration": {"endian": "big"}}),
            _ => json!({"name": "bytes"}),
        };
        let mut chain = Vec::new();
        if self.codecs & 0x10 != 0 {
            let order: Vec<usize> = (0..r).rev().collect();
            chain.push(json!({"name": "transpose", "configuration": {"order": order}}));
        }
        chain.push(endian);
        let typesize = damacy::testing::zarr::SourceDtype::from_name(self.data_type()).map_or(1, damacy::testing::zarr::SourceDtype::size);
        match self.codecs & 7 {
            1 => chain.push(json!({"name": "zstd", "configuration": {"level": 1, "checksum": false}})),
            2 => chain.push(json!({"name": "zstd", "configuration": {"level": 1, "checksum": true}})),
            3 => chain.push(json!({"name": "gzip", "configuration": {"level": 1}})),
            4 => {
                let cname = ["blosclz", "lz4", "lz4hc", "zlib", "zstd", "snappy"][usize::from(self.blosc & 7) % 6];
                let shuffle = ["noshuffle", "shuffle", "bitshuffle", "shuffle"][usize::from((self.blosc >> 3) & 3)];
                chain.push(json!({"name": "blosc", "configuration": {"cname": cname, "clevel": 1, "shuffle": shuffle, "typesize": typesize, "blocksize": 0}}));
            }
            5 => chain.push(json!({"name": "fuzz.skipped", "must_understand": false})),
            6 => chain.push(json!({"name": "fuzz.required"})),
            _ => {}
        }
        if self.codecs & 8 != 0 {
            chain.push(json!({"name": "crc32c"}));
        }
        let (codecs, grid) = if self.sharding & 1 != 0 {
            let mut index = vec![json!({"name": "bytes", "configuration": {"endian": "little"}})];
            if self.sharding & 4 != 0 {
                index.push(json!({"name": "crc32c"}));
            }
            if self.sharding & 8 != 0 {
                index.push(json!({"name": "gzip", "configuration": {"level": 1}}));
            }
            let sharding = json!({"name": "sharding_indexed", "configuration": {
                "chunk_shape": &self.inner[..r], "codecs": chain, "index_codecs": index,
                "index_location": if self.sharding & 2 != 0 { "start" } else { "end" }}});
            (json!([sharding]), &self.grid[..r])
        } else {
            (json!(chain), &self.grid[..r])
        };
        let (name, sep) = [("default", "/"), ("default", "."), ("v2", "."), ("v2", "/")][usize::from(self.key % 4)];
        let fill = [json!(0), json!(1), json!("NaN"), json!(-1), json!("0x0"), json!(true), json!(255)][usize::from(self.fill) % 7].clone();
        json!({
            "zarr_format": 3, "node_type": "array", "shape": shape, "data_type": self.data_type(),
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid}},
            "chunk_key_encoding": {"name": name, "configuration": {"separator": sep}},
            "fill_value": fill, "codecs": codecs,
        })
    }

    /// Sample shape of the pipeline this input runs on.
    pub fn sample_shape(&self) -> Vec<u64> {
        let set: [u64; 3] = if self.flags & 4 != 0 { [5, 2, 7] } else { [3, 3, 3] };
        set[..self.rank()].to_vec()
    }

    /// Box starts of sample `s`.
    pub fn box_start(&self, s: usize) -> Vec<i64> {
        (0..self.rank()).map(|d| i64::from(i16::from_le_bytes([self.starts[s][2 * d], self.starts[s][2 * d + 1]])) << self.shift()).collect()
    }
}

impl BatchInput {
    /// The input as fuzzer bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = self.knobs.to_bytes();
        v.extend(&self.rest);
        v
    }

    /// An input of `knobs` and `records`.
    pub fn new(knobs: Knobs, records: &[Record]) -> Self {
        let mut rest = Vec::new();
        for r in records {
            r.encode(knobs.rank(), &mut rest);
        }
        Self { knobs, rest }
    }

    /// The objects this input stores: `zarr.json` and every record, shards packed.
    pub fn objects(&self) -> (HashMap<String, Vec<u8>>, Option<ArrayMeta>) {
        let rank = self.knobs.rank();
        let records = Record::decode_all(&self.rest, rank);
        let zarr = records.iter().find_map(|r| if let Record::Meta(b) = r { Some(b.clone()) } else { None });
        let zarr = zarr.unwrap_or_else(|| serde_json::to_vec(&self.knobs.zarr_json()).unwrap_or_default());
        let meta = ArrayMeta::parse(&zarr).ok();
        let keys = meta.as_ref().map_or(KeyEncoding::Default { separator: '/' }, |m| m.key_encoding.clone());
        let key = |coords: &[u8]| keys.key(&coords.iter().map(|&c| u64::from(c)).collect::<Vec<_>>());
        let mut objects = HashMap::from([("zarr.json".to_string(), zarr)]);
        let mut shards: HashMap<String, Vec<(u16, Vec<u8>)>> = HashMap::new();
        for r in records {
            match r {
                Record::Object { coords, bytes } => {
                    objects.insert(key(&coords), bytes);
                }
                Record::Inner { coords, index, bytes } => shards.entry(key(&coords)).or_default().push((index, bytes)),
                Record::Meta(_) => {}
            }
        }
        if let Some(s) = meta.as_ref().and_then(|m| m.sharding.as_ref()).filter(|s| s.n_chunks <= 4096) {
            for (k, chunks) in shards {
                objects.insert(k, pack_shard(s.n_chunks as usize, s.index_at_start, s.index_crc32c, &chunks));
            }
        }
        (objects, meta)
    }
}

/// A shard file holding `chunks` (inner index, encoded bytes) of `n` with a correct index.
pub fn pack_shard(n: usize, at_start: bool, crc: bool, chunks: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let index_len = n * 16 + if crc { 4 } else { 0 };
    let base = if at_start { index_len } else { 0 };
    let mut entries = vec![(u64::MAX, u64::MAX); n];
    let mut data = Vec::new();
    for (i, bytes) in chunks {
        if let Some(e) = entries.get_mut(usize::from(*i)) {
            *e = ((base + data.len()) as u64, bytes.len() as u64);
            data.extend(bytes);
        }
    }
    let mut index: Vec<u8> = entries.iter().flat_map(|(o, l)| o.to_le_bytes().into_iter().chain(l.to_le_bytes())).collect();
    if crc {
        let c = crc32c::crc32c(&index);
        index.extend(c.to_le_bytes());
    }
    if at_start {
        index.extend(data);
        index
    } else {
        data.extend(index);
        data
    }
}

/// Live heap bytes and the peak since the last [`reset_peak`], kept by the target's
/// counting allocator.
pub static LIVE: AtomicUsize = AtomicUsize::new(0);
/// See [`LIVE`].
pub static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Starts a new peak measurement at the current live bytes.
pub fn reset_peak() -> usize {
    let now = LIVE.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// A global allocator counting live bytes (install with `#[global_allocator]`).
pub struct Counting;

// SAFETY: forwards to the system allocator unchanged; the counters are only statistics.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

const SAMPLES_PER_BATCH: u32 = 2;

/// The pipeline config of one (sample shape, path): every budget and cache small.
pub fn config(sample_shape: &[u64], device: bool) -> Config {
    Config {
        samples_per_batch: SAMPLES_PER_BATCH,
        sample_shape: sample_shape.to_vec(),
        device: if device { "cuda:0".into() } else { "cpu".into() },
        decode: if device { damacy::Decode::Gpu } else { damacy::Decode::Cpu },
        lookahead_samples: Some(SAMPLES_PER_BATCH),
        n_io_threads: 1,
        n_array_meta_cache: 4,
        n_shard_index_cache: 2048,
        n_chunk_layout_cache: 2048,
        n_batch_buffers: 2,
        staging_bytes: 4 << 20,
        decoded_bytes: 8 << 20,
        max_read_op_bytes: 1 << 20,
        decoded_cache_bytes: Some(1 << 20),
        pop_timeout_s: 30.0,
        ..Config::default()
    }
}

type Pipelines = Mutex<HashMap<(Vec<u64>, bool, bool), Pipeline>>;

fn pipelines() -> &'static Pipelines {
    static P: OnceLock<Pipelines> = OnceLock::new();
    P.get_or_init(Pipelines::default)
}

/// Runs one input: stores its objects under a fresh `mem://` name, reads one batch of two
/// boxes, checks the outcome; returns the batch's error status (`None`: a batch).
pub fn run(input: &BatchInput) -> Option<Status> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let k = &input.knobs;
    let (objects, meta) = input.objects();
    let name = format!("fuzz-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    mem::insert(&name, objects);
    let uri = format!("mem://{name}");
    let sample = k.sample_shape();
    let device = k.flags & 1 != 0;
    let fill = k.flags & 2 != 0;
    let before = reset_peak();
    let mut ps = pipelines().lock().unwrap_or_else(PoisonError::into_inner);
    let p = ps.entry((sample.clone(), device, fill)).or_insert_with(|| {
        let cfg = Config { out_of_bounds: if fill { damacy::OutOfBounds::Fill } else { damacy::OutOfBounds::Error }, ..config(&sample, device) };
        Pipeline::new(cfg).expect("pipeline")
    });
    for s in 0..SAMPLES_PER_BATCH as usize {
        let starts = k.box_start(s);
        let stops: Vec<i64> = starts.iter().zip(&sample).map(|(a, &n)| a + n as i64).collect();
        assert!(p.push(&uri, &starts, &stops).expect("push"), "window full");
    }
    let outcome = match p.pop(-1.0) {
        Ok(mut b) => {
            let voxels: u64 = sample.iter().product();
            assert_eq!(b.shape(), std::iter::once(i64::from(SAMPLES_PER_BATCH)).chain(sample.iter().map(|&x| x as i64)).collect::<Vec<_>>());
            if b.is_gpu() {
                check_device_ops(&mut b, meta.as_ref(), &sample);
            } else {
                assert_eq!(b.bytes().len() as u64, u64::from(SAMPLES_PER_BATCH) * voxels * b.dtype_of().size() as u64);
            }
            drop(b);
            p.delivered(1, false);
            None
        }
        Err(e) => {
            assert!(!matches!(e.status(), Status::Internal | Status::TryAgain | Status::PoolStarved | Status::Shutdown), "{e}");
            Some(e.status())
        }
    };
    drop(ps);
    mem::remove(&name);
    let grew = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    assert!(grew <= MAX_LIVE_BYTES, "one batch took {grew} bytes of heap (cap {MAX_LIVE_BYTES})");
    outcome
}

/// The device ops stay inside the buffers the extension gives them.
fn check_device_ops(b: &mut damacy::Batch, meta: Option<&ArrayMeta>, sample: &[u64]) {
    let staging = b.staging().len() as u64;
    let arena = b.decoded_bytes();
    for op in b.decode_ops() {
        assert!(op.src_offset.checked_add(op.src_len).is_some_and(|e| e <= staging), "{op:?} outside the {staging}-byte staging slab");
        assert!(op.dst_offset.checked_add(op.dst_len).is_some_and(|e| e <= arena), "{op:?} outside the {arena}-byte arena");
    }
    let decode = b.decode_ops();
    for op in b.checksum_ops() {
        let d = decode.get(op.decode_op as usize);
        assert!(d.is_some_and(|d| d.codec == damacy::testing::ffi::DecodeCodec::Zstd.repr), "{op:?} names no zstd decode op");
    }
    for op in b.unshuffle_ops() {
        assert!(op.offset.checked_add(op.len).is_some_and(|e| e <= arena), "{op:?} outside the {arena}-byte arena");
        assert!(op.typesize > 0);
    }
    let s4: Vec<u64> = std::iter::repeat_n(1, 4 - sample.len()).chain(sample.iter().copied()).collect();
    let elem = meta.map_or(1, |m| m.dtype.size() as u64);
    for op in b.copy_ops() {
        assert!(op.sample < SAMPLES_PER_BATCH);
        for d in 0..4 {
            assert!(u64::from(op.sample_start[d]) + u64::from(op.extent[d]) <= s4[d], "{op:?} outside the sample");
            if !op.fill {
                assert!(u64::from(op.chunk_start[d]) + u64::from(op.extent[d]) <= u64::from(op.chunk_shape[d]), "{op:?} outside its chunk");
            }
        }
        if !op.fill {
            let chunk: u64 = op.chunk_shape.iter().map(|&x| u64::from(x)).product();
            assert!(op.chunk_offset + chunk * elem <= arena, "{op:?}: chunk outside the {arena}-byte arena");
        }
    }
}
