//! The loads behind the prefetcher's cache misses: array metadata, shard indexes and blosc
//! chunk heads. Each reads the least it can (one `zarr.json`, one index, the first bytes of
//! a chunk) and parses with the pure parsers of `zarr`.

use std::path::Path;

use crate::error::{err, Result};
use crate::store::{self, ReadFile};
use crate::zarr::blosc::{BloscFrame, HEAD_PROBE};
use crate::zarr::{ArrayMeta, ShardIndex};

/// Reads and parses `zarr.json` of the array at `uri`.
///
/// # Errors
/// NotFound when there is no `zarr.json`; InvalidArgument/DtypeMismatch from parsing;
/// every message names the uri.
pub fn load_array_meta(uri: &str) -> Result<ArrayMeta> {
    let root = store::array_root(uri)?;
    let path = root.join("zarr.json");
    let bytes = store::read_file(&path)?.ok_or_else(|| err!(NotFound, "array not found: {uri} (no zarr.json at {})", path.display()))?;
    ArrayMeta::parse(&bytes).map_err(|e| e.context(uri))
}

/// Reads the index of the shard file at `path`; `Ok(None)` when the file is absent.
///
/// # Errors
/// Storage for a short, corrupt or truncated shard (the message names the file).
pub fn load_shard_index(path: &Path, meta: &ArrayMeta) -> Result<Option<ShardIndex>> {
    let Some(sharding) = &meta.sharding else { return Ok(None) };
    let Some(file) = ReadFile::open(path)? else { return Ok(None) };
    let n: usize = sharding.chunks_per_shard(&meta.grid_shape).iter().product::<u64>() as usize;
    let len = ShardIndex::encoded_len(n, sharding.index_crc32c) as u64;
    if file.len() < len {
        return Err(err!(Storage, "{}: shard file of {} bytes is shorter than its {len}-byte index (truncated shard)", path.display(), file.len()));
    }
    let at = if sharding.index_at_start { 0 } else { file.len() - len };
    let bytes = file.read_at(at, len as usize)?;
    ShardIndex::parse(&bytes, n, sharding.index_crc32c, file.len())
        .map(Some)
        .map_err(|e| e.context(path.display()))
}

/// Reads the header and block table of the blosc chunk stored at `offset..offset+nbytes` of
/// `path` (`crc`: a 4-byte crc32c trails the chunk).
///
/// # Errors
/// Storage when the file is gone or short; Decode for a malformed header (messages name the
/// file and offset).
pub fn load_chunk_frame(path: &Path, offset: u64, nbytes: u64, crc: bool) -> Result<BloscFrame> {
    let ctx = || format!("{} at byte {offset}", path.display());
    let file = ReadFile::open(path)?.ok_or_else(|| err!(Storage, "{}: file vanished", ctx()))?;
    let len = nbytes.checked_sub(if crc { 4 } else { 0 }).ok_or_else(|| err!(Decode, "{}: chunk of {nbytes} bytes has no room for its checksum", ctx()))?;
    let mut head = file.read_at(offset, HEAD_PROBE.min(len as usize))?;
    let need = BloscFrame::head_len(&head).map_err(|e| e.context(ctx()))?;
    if need > head.len() && (need as u64) <= len {
        head = file.read_at(offset, need)?;
    }
    BloscFrame::parse(&head, len).map_err(|e| e.context(ctx()))
}
