//! The single-parser targets: `zarr_json`, `shard_index`, `blosc_frame`, `zstd_frame`.

use damacy::testing::decode::ChunkCodec;
use damacy::testing::zarr::blosc::{BloscFrame, HEAD_PROBE};
use damacy::testing::zarr::{zstd_frame, ArrayMeta, KeyEncoding, ShardIndex, MAX_CHUNKS_PER_SHARD, MAX_DECODED_CHUNK_BYTES, MAX_EXTENT, MAX_RANK};
use damacy::Status;
use serde_json::{json, Value};

/// A `zarr.json` equivalent to `m`, written from the parsed value only (the fill value as
/// its byte representation, so NaN payloads survive).
pub fn meta_to_json(m: &ArrayMeta) -> Value {
    let mut fill = [0u8; 8];
    fill[..m.fill.len()].copy_from_slice(&m.fill);
    let fill = format!("0x{:0width$x}", u64::from_le_bytes(fill), width = 2 * m.fill.len());
    let (name, sep) = match m.key_encoding {
        KeyEncoding::Default { separator } => ("default", separator),
        KeyEncoding::V2 { separator } => ("v2", separator),
    };
    let codecs = match &m.sharding {
        None => m.codecs.to_json(),
        Some(s) => {
            let mut index = vec![json!({"name": "bytes", "configuration": {"endian": "little"}})];
            if s.index_crc32c {
                index.push(json!({"name": "crc32c"}));
            }
            json!([{"name": "sharding_indexed", "configuration": {
                "chunk_shape": s.inner_shape, "codecs": m.codecs.to_json(), "index_codecs": index,
                "index_location": if s.index_at_start { "start" } else { "end" }}}])
        }
    };
    let mut v = json!({
        "zarr_format": 3, "node_type": "array", "shape": m.shape, "data_type": m.data_type,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": m.grid_shape}},
        "chunk_key_encoding": {"name": name, "configuration": {"separator": sep.to_string()}},
        "fill_value": fill, "codecs": codecs,
    });
    if let Some(d) = &m.dimension_names {
        v["dimension_names"] = json!(d);
    }
    v
}

/// `zarr_json`: [`ArrayMeta::parse`] on arbitrary bytes.
pub fn zarr_json(data: &[u8]) {
    let m = match ArrayMeta::parse(data) {
        Ok(m) => m,
        Err(e) => {
            assert!(matches!(e.status(), Status::InvalidArgument | Status::DtypeMismatch), "{e}");
            return;
        }
    };
    let rank = m.rank();
    assert!((1..=MAX_RANK).contains(&rank));
    assert!(m.shape.iter().all(|&x| x <= MAX_EXTENT));
    assert_eq!(m.grid_shape.len(), rank);
    assert!(m.grid_shape.iter().all(|&x| x > 0));
    assert_eq!(m.fill.len(), m.dtype.size());
    let chunk: u128 = m.chunk_shape().iter().map(|&x| u128::from(x)).product();
    assert_eq!(u128::from(m.decoded_chunk_bytes), chunk * m.dtype.size() as u128);
    assert!(m.decoded_chunk_bytes <= MAX_DECODED_CHUNK_BYTES);
    if let Some(s) = &m.sharding {
        assert_eq!(s.inner_shape.len(), rank);
        for i in 0..rank {
            assert_eq!(s.inner_shape[i] * s.chunks_per_shard[i], m.grid_shape[i]);
        }
        assert_eq!(s.n_chunks, s.chunks_per_shard.iter().product::<u64>());
        assert!(s.n_chunks <= MAX_CHUNKS_PER_SHARD);
    }
    // Round trip: what damacy understood, written back, parses to the same thing.
    let again = serde_json::to_vec(&meta_to_json(&m)).expect("serialise");
    let m2 = ArrayMeta::parse(&again).unwrap_or_else(|e| panic!("re-serialised metadata does not parse: {e}\n{}", String::from_utf8_lossy(&again)));
    assert_eq!((&m2.shape, &m2.data_type, m2.dtype, &m2.fill, &m2.grid_shape), (&m.shape, &m.data_type, m.dtype, &m.fill, &m.grid_shape));
    assert_eq!((&m2.key_encoding, &m2.sharding, &m2.codecs.specs, m2.decoded_chunk_bytes), (&m.key_encoding, &m.sharding, &m.codecs.specs, m.decoded_chunk_bytes));
    assert_eq!(m2.dimension_names, m.dimension_names);
}

/// The `shard_index` input: `[flags:1][file_len:8 LE][n_chunks:2 LE][index bytes]`.
/// Flags: bit 0 the index has a crc32c; bit 1 write the correct crc32c over the entries
/// first (so mutations get past the checksum); bit 2 take `n_chunks` from the header
/// (else from the length: every whole 16-byte entry).
pub fn encode_shard_index(index: &[u8], n_chunks: u16, crc32c: bool, file_len: u64) -> Vec<u8> {
    let mut v = vec![u8::from(crc32c) | 0b100];
    v.extend(file_len.to_le_bytes());
    v.extend(n_chunks.to_le_bytes());
    v.extend(index);
    v
}

/// `shard_index`: [`ShardIndex::parse`] on an index read from a shard of `file_len` bytes.
pub fn shard_index(data: &[u8]) {
    if data.len() < 11 {
        return;
    }
    let flags = data[0];
    let file_len = u64::from_le_bytes(data[1..9].try_into().unwrap());
    let crc = flags & 1 != 0;
    let mut index = data[11..].to_vec();
    let n = if flags & 0b100 != 0 { usize::from(u16::from_le_bytes([data[9], data[10]])) } else { index.len().saturating_sub(if crc { 4 } else { 0 }) / 16 };
    if crc && flags & 0b10 != 0 && index.len() >= n * 16 + 4 {
        let c = crc32c::crc32c(&index[..n * 16]);
        index[n * 16..n * 16 + 4].copy_from_slice(&c.to_le_bytes());
    }
    let parsed = match ShardIndex::parse(&index, n, crc, file_len) {
        Ok(p) => p,
        Err(e) => {
            assert_eq!(e.status(), Status::Storage, "{e}");
            return;
        }
    };
    assert_eq!(index.len(), ShardIndex::encoded_len(n, crc));
    assert_eq!(parsed.len(), n);
    assert_eq!(parsed.is_empty(), n == 0);
    // Every entry lies inside the file; re-encoding the entries gives the input back.
    let mut again = Vec::with_capacity(index.len());
    for i in 0..n {
        let (o, l) = match parsed.get(i) {
            Some(r) => {
                assert!(r.offset.checked_add(r.nbytes).is_some_and(|e| e <= file_len), "entry {i} {r:?} outside {file_len}");
                (r.offset, r.nbytes)
            }
            None => (u64::MAX, u64::MAX),
        };
        again.extend(o.to_le_bytes());
        again.extend(l.to_le_bytes());
    }
    if crc {
        again.extend(crc32c::crc32c(&again).to_le_bytes());
    }
    assert_eq!(again, index, "round trip");
    assert_eq!(parsed.get(n), None);
}

/// `blosc_frame`: the chunk head read and parsed as `prefetch` does (the first
/// [`HEAD_PROBE`] bytes, more when the block table is longer), then the streams of every
/// block split as the device path does. The input is the whole chunk.
pub fn blosc_frame(chunk: &[u8]) {
    let len = chunk.len() as u64;
    let mut head = &chunk[..HEAD_PROBE.min(chunk.len())];
    let need = match BloscFrame::head_len(head) {
        Ok(n) => n,
        Err(e) => {
            assert_eq!(e.status(), Status::Decode, "{e}");
            return;
        }
    };
    if need > head.len() && need <= chunk.len() {
        head = &chunk[..need];
    }
    let frame = match BloscFrame::parse(head, len) {
        Ok(f) => f,
        Err(e) => {
            assert_eq!(e.status(), Status::Decode, "{e}");
            return;
        }
    };
    blosc_spans(chunk, frame.nbytes);
    assert_eq!(u64::from(frame.cbytes), len);
    assert!(frame.typesize > 0);
    if frame.memcpyed {
        assert!(frame.blocks.is_empty());
        assert_eq!(u64::from(frame.nbytes) + 16, len);
        return;
    }
    let nblocks = if frame.blocksize == 0 { 0 } else { frame.nbytes.div_ceil(frame.blocksize) as usize };
    assert_eq!(frame.blocks.len(), nblocks);
    let mut decoded = 0u64;
    for (b, &(start, end)) in frame.blocks.iter().enumerate() {
        assert!(need <= start as usize && start <= end && end <= frame.cbytes, "block {b}: {start}..{end}, head {need}, cbytes {}", frame.cbytes);
        let bn = frame.block_nbytes(b);
        assert!(bn > 0 && bn <= frame.blocksize);
        decoded += u64::from(bn);
        let block = &chunk[start as usize..end as usize];
        match frame.streams(b, block) {
            Ok(streams) => {
                for s in streams {
                    assert!(s.offset as usize + s.cbytes as usize <= block.len());
                    assert!(s.nbytes <= bn);
                }
            }
            Err(e) => assert_eq!(e.status(), Status::Decode, "{e}"),
        }
    }
    assert_eq!(decoded, u64::from(frame.nbytes));
}

/// The CPU path's span decode of `chunk` as the chunk of a `uint8` array of `nbytes`
/// elements (the header's decoded size, up to 1 MiB): spans at the start, the middle, the
/// end and across blocks are typed errors (Decode) or bytes that cover the range asked for;
/// when the whole chunk decodes, every span decodes too and equals its bytes of it.
fn blosc_spans(chunk: &[u8], nbytes: u32) {
    let n = nbytes as usize;
    if n == 0 || n > 1 << 20 {
        return;
    }
    let json = json!({"zarr_format": 3, "node_type": "array", "shape": [n], "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [n]}}, "fill_value": 0,
        "codecs": [{"name": "bytes"}, {"name": "blosc", "configuration": {"cname": "lz4", "clevel": 5, "shuffle": "noshuffle", "typesize": 1, "blocksize": 0}}]});
    let meta = ArrayMeta::parse(json.to_string().as_bytes()).expect("a uint8 blosc array");
    let codec = ChunkCodec::new(&meta).expect("its codec");
    assert!(codec.decodes_span());
    let mut whole = vec![0u8; n];
    let whole = codec.decode_into(chunk, &mut whole).map(|()| whole);
    let mut out = Vec::new();
    for (lo, hi) in [(0, 1), (n / 3, n / 2 + 1), (n - 1, n), (n / 4, n - n / 4), (0, n)] {
        let hi = hi.max(lo + 1).min(n);
        match codec.decode_span_into(chunk, lo, hi, &mut out) {
            Ok(offset) => {
                assert!(offset <= lo && offset + out.len() >= hi && offset + out.len() <= n, "span {lo}..{hi}: got {offset}..+{}", out.len());
                if let Ok(w) = &whole {
                    assert!(out[..] == w[offset..offset + out.len()], "span {lo}..{hi} differs from the whole chunk");
                }
            }
            Err(e) => {
                assert_eq!(e.status(), Status::Decode, "{e}");
                assert!(whole.is_err(), "span {lo}..{hi} fails ({e}) where the whole chunk decodes");
            }
        }
    }
}

/// The `zstd_frame` input: `[decoded_len:4 LE][frame]`.
pub fn encode_zstd(frame: &[u8], decoded_len: u32) -> Vec<u8> {
    let mut v = decoded_len.to_le_bytes().to_vec();
    v.extend(frame);
    v
}

/// `zstd_frame`: [`zstd_frame::check_frame`]; a frame it accepts is, for libzstd too,
/// exactly one frame spanning the buffer, and decompresses to at most `decoded_len` bytes
/// or fails as a decode error (never more bytes than the header promised).
pub fn zstd_frame(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let decoded_len = u32::from_le_bytes(data[..4].try_into().unwrap());
    let frame = &data[4..];
    match zstd_frame::check_frame(frame, u64::from(decoded_len)) {
        Ok(sum) => {
            let size = zstd::zstd_safe::find_frame_compressed_size(frame);
            assert_eq!(size, Ok(frame.len()), "libzstd disagrees on the frame's extent");
            // The checksum returned is the flagged frame's last 4 bytes.
            let flagged = frame[4] & 0x04 != 0;
            assert_eq!(sum, flagged.then(|| u32::from_le_bytes(frame[frame.len() - 4..].try_into().unwrap())));
            if decoded_len <= 1 << 20 {
                if let Ok(out) = zstd::bulk::decompress(frame, decoded_len as usize) {
                    assert!(out.len() <= decoded_len as usize);
                }
            }
        }
        Err(e) => assert_eq!(e.status(), Status::Decode, "{e}"),
    }
}
