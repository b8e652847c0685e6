//! The loads behind the prefetcher's cache misses: an array (its `zarr.json` or Zarr v2
//! `.zarray`, parsed, with its decoders; an OME-NGFF multiscale group's level resolved to
//! its array), shard indexes and blosc chunk heads. Each reads the least it can (one
//! bounded `zarr.json`, one index, the first bytes of a chunk) through the array's store and
//! parses with the pure parsers of `zarr`.

use std::sync::Arc;

use crate::decode::ArrayDecoder;
use crate::error::{err, Result};
use crate::plan::{Array, MetaSource, Shard};
use serde_json::Value;

use crate::store::{self, Generation, RangeRead, ReadOutcome, Store, MAX_METADATA_BYTES};
use crate::zarr::blosc::{BloscFrame, HEAD_PROBE};
use crate::zarr::ngff::{self, Multiscale};
use crate::zarr::{ArrayMeta, ShardIndex};

/// Opens the array at `uri`: reads and parses its metadata (at most [`MAX_METADATA_BYTES`]:
/// Zarr v3 `zarr.json`, else Zarr v2 `.zarray`) and builds its decoders. `uri` may name a
/// level of an OME-NGFF multiscale group: `GROUP#level=N` (the N-th dataset of the group's
/// first multiscale, 0 = highest resolution) or `GROUP/PATH` (the level's own folder).
///
/// # Errors
/// InvalidArgument for a bad uri or metadata, for a multiscale group without a level (the
/// message lists the levels), for a group without multiscales (it lists the arrays it
/// holds); NotFound when there is no `zarr.json` nor `.zarray`; Storage when it cannot be
/// read (or is a FIFO, a device, too large); DtypeMismatch; every message names the uri.
pub fn load_array(uri: &str) -> Result<Array> {
    load_array_with(uri, &store::StorageOptions::new())
}

/// [`load_array`] with `storage` options for an object store (also used for the levels of
/// a multiscale group).
///
/// # Errors
/// As [`load_array`].
pub(crate) fn load_array_with(uri: &str, storage: &store::StorageOptions) -> Result<Array> {
    match resolve(uri, storage)? {
        Resolved::Array(a) => Ok(*a),
        Resolved::Multiscale { multiscale, .. } => Err(err!(
            InvalidArgument,
            "{uri} is an OME-NGFF multiscale group, not an array: select a level with `{uri}#level=N` or `{uri}/PATH` (levels: {})",
            multiscale.describe_levels()
        )),
    }
}

/// What a uri names once resolved.
enum Resolved {
    /// An array (possibly a multiscale level).
    Array(Box<Array>),
    /// A multiscale group, no level selected.
    Multiscale { store: Arc<dyn Store>, multiscale: Multiscale },
}

/// A metadata document read through a store.
enum Node {
    /// An array: its metadata and the object it was read from.
    Array(Box<ArrayMeta>, MetaSource),
    /// A group: its attributes, and its `zarr.json` (v3) for consolidated metadata.
    Group { attrs: Value, zarr_json: Option<Vec<u8>> },
}

/// The store location and the multiscale level a uri selects: a trailing `#level=N`
/// (decimal) is damacy's selector, not part of the location; any other `#` is left to the
/// store.
fn split_level(uri: &str) -> Result<(&str, Option<usize>)> {
    let Some(at) = uri.rfind("#level=") else { return Ok((uri, None)) };
    let text = &uri[at + "#level=".len()..];
    let level = text
        .parse::<usize>()
        .ok()
        .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| err!(InvalidArgument, "{uri}: `#level=` takes a level index (0, 1, ...), found {text:?}"))?;
    Ok((&uri[..at], Some(level)))
}

fn read_node(store: &dyn Store, uri: &str) -> Result<Option<Node>> {
    let ctx = |e: crate::error::Error| e.context(uri);
    if let Some((bytes, info)) = store.get("zarr.json", MAX_METADATA_BYTES).map_err(ctx)? {
        if let Some(attrs) = ngff::group_attributes_v3(&bytes).map_err(ctx)? {
            return Ok(Some(Node::Group { attrs, zarr_json: Some(bytes) }));
        }
        return Ok(Some(Node::Array(Box::new(ArrayMeta::parse(&bytes).map_err(ctx)?), MetaSource::new("zarr.json", info.generation))));
    }
    if let Some((bytes, info)) = store.get(".zarray", MAX_METADATA_BYTES).map_err(ctx)? {
        return Ok(Some(Node::Array(Box::new(ArrayMeta::parse_v2(&bytes).map_err(ctx)?), MetaSource::new(".zarray", info.generation))));
    }
    if store.head(".zgroup").map_err(ctx)?.is_some() {
        let attrs = match store.get(".zattrs", MAX_METADATA_BYTES).map_err(ctx)? {
            Some((bytes, _)) => ngff::group_attributes_v2(&bytes).map_err(ctx)?,
            None => Value::Object(serde_json::Map::new()),
        };
        return Ok(Some(Node::Group { attrs, zarr_json: None }));
    }
    Ok(None)
}

fn array_of(uri: &str, store: Arc<dyn Store>, meta: ArrayMeta, source: MetaSource) -> Result<Array> {
    let decoder = ArrayDecoder::new(&meta).map_err(|e| e.context(uri))?;
    let id: Arc<str> = store.uri().into();
    Ok(Array { uri: uri.to_string(), id, store, meta, decoder, meta_source: Some(source) })
}

fn not_found(uri: &str, store: &dyn Store) -> crate::error::Error {
    err!(NotFound, "array not found: {uri} (no zarr.json at {}, nor a Zarr v2 .zarray)", store.describe("zarr.json"))
}

/// The store of `path` below the group `group` (reopened through [`store::open`], the one
/// place uris are parsed; `path` was checked to be relative and free of `..`).
fn child_store(group: &dyn Store, path: &str, storage: &store::StorageOptions) -> Result<Arc<dyn Store>> {
    store::open_with(&format!("{}/{path}", group.uri().trim_end_matches('/')), storage)
}

fn resolve(uri: &str, storage: &store::StorageOptions) -> Result<Resolved> {
    let (location, level) = split_level(uri)?;
    let store = store::open_with(location, storage)?;
    match (read_node(&*store, uri)?, level) {
        (None, _) => Err(not_found(uri, &*store)),
        (Some(Node::Array(meta, source)), None) => Ok(Resolved::Array(Box::new(array_of(uri, store, *meta, source)?))),
        (Some(Node::Array(..)), Some(_)) => Err(err!(InvalidArgument, "{uri}: `#level=` selects a level of an OME-NGFF multiscale group, but {location} is an array")),
        (Some(Node::Group { attrs, zarr_json }), level) => {
            let multiscale = ngff::multiscale(&attrs).map_err(|e| e.context(uri))?.ok_or_else(|| {
                let arrays = match zarr_json.as_deref().and_then(ngff::consolidated_arrays).or_else(|| local_child_arrays(&*store)) {
                    Some(a) if a.is_empty() => "it holds no arrays".to_string(),
                    Some(a) => format!("it holds the arrays {a:?}; open one as {location}/NAME"),
                    None => "this store cannot list the arrays it holds".to_string(),
                };
                err!(InvalidArgument, "{uri} is a Zarr group without OME-NGFF multiscales, not an array: {arrays}")
            })?;
            let Some(level) = level else { return Ok(Resolved::Multiscale { store, multiscale }) };
            let path = &multiscale
                .levels
                .get(level)
                .ok_or_else(|| err!(InvalidArgument, "{uri}: no level {level} (levels: {})", multiscale.describe_levels()))?
                .path;
            let (meta, source, level_store) = open_level(&*store, path, uri, storage)?;
            Ok(Resolved::Array(Box::new(array_of(uri, level_store, meta, source)?)))
        }
    }
}

fn open_level(group: &dyn Store, path: &str, uri: &str, storage: &store::StorageOptions) -> Result<(ArrayMeta, MetaSource, Arc<dyn Store>)> {
    let level_store = child_store(group, path, storage)?;
    match read_node(&*level_store, uri)? {
        Some(Node::Array(meta, source)) => Ok((*meta, source, level_store)),
        Some(Node::Group { .. }) => Err(err!(InvalidArgument, "{uri}: multiscale level {path:?} is a group, not an array")),
        None => Err(err!(NotFound, "{uri}: multiscale level {path:?} not found (no zarr.json nor .zarray at {})", level_store.describe(""))),
    }
}

/// Most entries of a local group folder looked at when listing its arrays for a message.
const MAX_LISTED_CHILDREN: usize = 256;
/// Largest child `zarr.json` read to tell an array from a group when listing (an error
/// message must not read gigabytes: a larger one is left out of the list).
const MAX_LISTED_METADATA_BYTES: u64 = 1 << 20;

/// The arrays directly inside a group on the local filesystem, for messages. `Store` has
/// no listing (other backends answer `None`): this reads the folder behind a local store's
/// uri, and asks the store which entries hold array metadata.
fn local_child_arrays(group: &dyn Store) -> Option<Vec<String>> {
    let root = std::path::Path::new(group.uri());
    if !root.is_absolute() {
        return None;
    }
    let mut names: Vec<String> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .take(MAX_LISTED_CHILDREN)
        .filter(|n| {
            match group.get(&format!("{n}/zarr.json"), MAX_LISTED_METADATA_BYTES) {
                Ok(Some((bytes, _))) => matches!(ngff::group_attributes_v3(&bytes), Ok(None)),
                Ok(None) => group.head(&format!("{n}/.zarray")).ok().flatten().is_some(),
                Err(_) => false,
            }
        })
        .collect();
    names.sort();
    Some(names)
}

/// One level of a multiscale group, with its array's metadata.
#[derive(Debug, Clone)]
pub struct LevelInfo {
    /// Index (`#level=N`).
    pub index: usize,
    /// Path, scale and translation, from the group's attributes.
    pub level: ngff::Level,
    /// The level array's metadata.
    pub meta: ArrayMeta,
}

/// A multiscale group's levels.
#[derive(Debug, Clone)]
pub struct MultiscaleInfo {
    /// Its first multiscale, as the group's attributes state it.
    pub multiscale: Multiscale,
    /// Every level, opened.
    pub levels: Vec<LevelInfo>,
}

/// What `uri` names: an array (with its metadata), or a multiscale group (with its levels).
pub(crate) enum Opened {
    /// An array.
    Array(Box<Array>),
    /// An OME-NGFF multiscale group, no level selected.
    Multiscale(MultiscaleInfo),
}

/// Opens what `uri` names, like [`load_array`], but a multiscale group without a level is
/// not an error: its levels are listed (each level's metadata is read).
///
/// # Errors
/// As [`load_array`], and those of opening any level.
pub(crate) fn open_node(uri: &str) -> Result<Opened> {
    match resolve(uri, &store::StorageOptions::new())? {
        Resolved::Array(a) => Ok(Opened::Array(a)),
        Resolved::Multiscale { store, multiscale } => {
            let levels = multiscale
                .levels
                .iter()
                .enumerate()
                .map(|(index, level)| Ok(LevelInfo { index, level: level.clone(), meta: open_level(&*store, &level.path, uri, &store::StorageOptions::new())?.0 }))
                .collect::<Result<Vec<_>>>()?;
            Ok(Opened::Multiscale(MultiscaleInfo { multiscale, levels }))
        }
    }
}

/// The levels of the OME-NGFF multiscale group at `uri` (paths, shapes, scales).
///
/// # Errors
/// InvalidArgument when `uri` names an array or a group without multiscales; those of
/// [`open_node`].
pub fn multiscale_levels(uri: &str) -> Result<MultiscaleInfo> {
    match open_node(uri)? {
        Opened::Multiscale(m) => Ok(m),
        Opened::Array(_) => Err(err!(InvalidArgument, "{uri} is an array, not an OME-NGFF multiscale group")),
    }
}

/// Reads the index of the shard at `coords`; `Ok(None)` when the shard file is absent.
///
/// # Errors
/// Storage for a short, corrupt, truncated or changing shard (the message names it).
pub(crate) fn load_shard(array: &Array, coords: &[u64]) -> Result<Option<Shard>> {
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
pub(crate) fn load_chunk_frame(array: &Array, key: &str, offset: u64, nbytes: u64, crc: bool, generation: &Generation) -> Result<BloscFrame> {
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
