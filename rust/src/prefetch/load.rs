//! The loads behind the prefetcher's cache misses: an array (its `zarr.json`, parsed, with
//! its decoders), shard indexes and blosc chunk heads. Each reads the least it can (one
//! bounded `zarr.json`, one index, the first bytes of a chunk) through the array's store and
//! parses with the pure parsers of `zarr`.

use std::sync::Arc;

use crate::decode::ArrayDecoder;
use crate::error::{err, Result};
use crate::plan::{Array, Shard};
use crate::store::{self, Generation, RangeRead, ReadOutcome, MAX_METADATA_BYTES};
use crate::zarr::blosc::{BloscFrame, HEAD_PROBE};
use crate::zarr::{ArrayMeta, ShardIndex};

/// Opens the array at `uri`: reads and parses its `zarr.json` (at most
/// [`MAX_METADATA_BYTES`]) and builds its decoders.
///
/// # Errors
/// InvalidArgument for a bad uri or metadata; NotFound when there is no `zarr.json`;
/// Storage when it cannot be read (or is a FIFO, a device, too large); DtypeMismatch; every
/// message names the uri.
pub fn load_array(uri: &str) -> Result<Array> {
    load_array_with(uri, &store::StorageOptions::new())
}

/// [`load_array`] with `storage` options for an object store.
///
/// # Errors
/// As [`load_array`].
pub fn load_array_with(uri: &str, storage: &store::StorageOptions) -> Result<Array> {
    let store = store::open_with(uri, storage)?;
    let (bytes, _) = store
        .get("zarr.json", MAX_METADATA_BYTES)
        .map_err(|e| e.context(uri))?
        .ok_or_else(|| err!(NotFound, "array not found: {uri} (no zarr.json at {})", store.describe("zarr.json")))?;
    let meta = ArrayMeta::parse(&bytes).map_err(|e| e.context(uri))?;
    let decoder = ArrayDecoder::new(&meta).map_err(|e| e.context(uri))?;
    let id: Arc<str> = store.uri().into();
    Ok(Array { uri: uri.to_string(), id, store, meta, decoder })
}

/// Reads the index of the shard at `coords`; `Ok(None)` when the shard file is absent.
///
/// # Errors
/// Storage for a short, corrupt, truncated or changing shard (the message names it).
pub fn load_shard(array: &Array, coords: &[u64]) -> Result<Option<Shard>> {
    let Some(sharding) = &array.meta.sharding else { return Ok(None) };
    let key = array.key(coords);
    let name = || array.store.describe(&key);
    let Some(info) = array.store.head(&key)? else { return Ok(None) };
    let len = sharding.index_len();
    if info.size < len {
        return Err(err!(Storage, "{}: shard file of {} bytes is shorter than its {len}-byte index (truncated shard)", name(), info.size));
    }
    let at = if sharding.index_at_start { 0 } else { info.size - len };
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len as usize).map_err(|_| err!(OutOfMemory, "{}: cannot allocate its {len}-byte index", name()))?;
    bytes.resize(len as usize, 0);
    match array.store.read_ranges(&key, Some(&info.generation), &mut [RangeRead { offset: at, buf: &mut bytes }])? {
        ReadOutcome::Done(_) => {}
        ReadOutcome::Changed(_) => return Err(err!(Storage, "{}: changed while its index was being read", name())),
        ReadOutcome::Missing => return Err(err!(Storage, "{}: vanished while its index was being read", name())),
    }
    let index = ShardIndex::parse(&bytes, sharding.n_chunks as usize, sharding.index_crc32c, info.size).map_err(|e| e.context(name()))?;
    Ok(Some(Shard { index, generation: info.generation }))
}

/// Reads the header and block table of the blosc chunk stored at `offset..offset+nbytes` of
/// object `key` (`crc`: a 4-byte crc32c trails the chunk), which must still be `generation`.
///
/// # Errors
/// Storage when the object is gone, short or changed; Decode for a malformed header
/// (messages name the object and offset).
pub fn load_chunk_frame(array: &Array, key: &str, offset: u64, nbytes: u64, crc: bool, generation: &Generation) -> Result<BloscFrame> {
    let ctx = || format!("{} at byte {offset}", array.store.describe(key));
    let len = nbytes.checked_sub(if crc { 4 } else { 0 }).ok_or_else(|| err!(Decode, "{}: chunk of {nbytes} bytes has no room for its checksum", ctx()))?;
    let read = |n: usize| -> Result<Vec<u8>> {
        let mut head = vec![0u8; n];
        match array.store.read_ranges(key, Some(generation), &mut [RangeRead { offset, buf: &mut head }])? {
            ReadOutcome::Done(_) => Ok(head),
            ReadOutcome::Changed(_) => Err(err!(Storage, "{}: the shard changed since its index was read", ctx())),
            ReadOutcome::Missing => Err(err!(Storage, "{}: vanished", ctx())),
        }
    };
    let mut head = read(HEAD_PROBE.min(len as usize))?;
    let need = BloscFrame::head_len(&head).map_err(|e| e.context(ctx()))?;
    if need > head.len() && (need as u64) <= len {
        head = read(need)?;
    }
    BloscFrame::parse(&head, len).map_err(|e| e.context(ctx()))
}
