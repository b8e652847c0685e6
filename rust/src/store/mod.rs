//! store: where array bytes live, behind one trait. [`open`] is the only place a uri is
//! parsed: it yields the [`Store`] rooted at the array (the folder or prefix holding its
//! `zarr.json`). Below this stage data is named by keys relative to that root
//! (`"zarr.json"`, `"c/0/1/2"`), never by paths.
//!
//! A store answers three questions: how large is an object and which generation is it
//! ([`Store::head`]), give me a whole small object, bounded ([`Store::get`]), and read these
//! ranges of one object, provided it is still the generation I planned with
//! ([`Store::read_ranges`]). The generation (a local file's inode, size, mtime and ctime; an
//! object's ETag) is what caches use to notice a changed object: data read under one
//! generation is never mixed with another's.
//!
//! Backends: `fs` (local files, positioned reads); `object` (S3, GCS, Azure, HTTP(S)
//! through the `object_store` crate, on one shared runtime this module owns); `mem`
//! (objects in memory, `mem://NAME`: unit tests and the `fuzzing` feature only). Owns no
//! other state beyond each backend's root and client. Called by `prefetch` (metadata, shard
//! indexes, blosc heads), `io` (chunk bytes) and `pipeline` (array info).

mod fs;
#[cfg(any(test, feature = "fuzzing"))]
// `insert`/`remove` are the fuzz targets' (`testing::store::mem`); in unit tests only crate-used.
#[cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))]
pub(crate) mod mem;
mod object;

pub use object::StorageOptions;
pub(crate) use object::{MAX_IN_FLIGHT, MAX_RETRIES, RETRY_TIMEOUT};
pub(crate) use object::known_option;

use std::fmt;
use std::sync::Arc;

use crate::error::{err, Result};

/// Largest `zarr.json` read (a larger one is an error, not an endless read).
pub(crate) const MAX_METADATA_BYTES: u64 = 16 << 20;

/// The version of a stored object; equal generations mean equal bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Generation(Arc<str>);

impl Generation {
    /// A generation from its backend-specific text.
    pub fn new(text: impl Into<Arc<str>>) -> Self {
        Self(text.into())
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long a cache entry's confirmed object generation is trusted before a hit must check
/// the object again, for the recheck `interval` (`None`: never checked, so `None`; zero:
/// always, so zero). The interval applies to object stores (`remote`: a check is a HEAD
/// request); a local check is a `stat`, so local entries are trusted for `local` at most.
pub(crate) fn trusted_for(interval: Option<std::time::Duration>, remote: bool, local: std::time::Duration) -> Option<std::time::Duration> {
    interval.map(|d| if remote { d } else { d.min(local) })
}

/// Size and generation of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Bytes.
    pub size: u64,
    /// Version.
    pub generation: Generation,
}

/// One range of an object to read into `buf` (its length is the range's length).
#[derive(Debug)]
pub struct RangeRead<'a> {
    /// Byte offset in the object.
    pub offset: u64,
    /// Destination; filled completely or the read fails.
    pub buf: &'a mut [u8],
}

/// The outcome of [`Store::read_ranges`] other than an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Every range was read, from this object.
    Done(ObjectInfo),
    /// The object is not the expected generation any more; nothing useful was read.
    Changed(ObjectInfo),
    /// The object does not exist (any more).
    Missing,
}

/// [`Store::read_gap`] of local files: a read costs a system call, so a gap is read through
/// only when it is small.
pub(crate) const LOCAL_READ_GAP: u64 = 64 << 10;

/// A place holding one array's objects. Keys are relative to the array's root.
pub trait Store: Send + Sync + fmt::Debug {
    /// The root's uri (for messages, and as the array's identity in caches).
    fn uri(&self) -> &str;

    /// Size and generation of `key`; `None` when it does not exist.
    ///
    /// # Errors
    /// Storage naming the object (e.g. it is a directory or a device, or the read failed).
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>>;

    /// The whole object `key`, at most `max_len` bytes; `None` when it does not exist.
    ///
    /// # Errors
    /// Storage naming the object when it is larger than `max_len`, not a regular object, or
    /// the read fails.
    fn get(&self, key: &str, max_len: u64) -> Result<Option<(Vec<u8>, ObjectInfo)>>;

    /// Fills every range of `key`, provided the object is still generation `expect` (any
    /// generation when `None`).
    ///
    /// # Errors
    /// Storage naming the object and the range for a short object or a failed read.
    fn read_ranges(&self, key: &str, expect: Option<&Generation>, ranges: &mut [RangeRead<'_>]) -> Result<ReadOutcome>;

    /// Objects and bytes stored under the root (for `info`; may be slow).
    ///
    /// # Errors
    /// Storage when listing fails.
    fn du(&self) -> Result<(u64, u64)>;

    /// `true` for object stores, where a metadata check (HEAD) costs a network round trip:
    /// `recheck_cached_data`'s interval applies only there (a local `stat` costs microseconds,
    /// so local cache hits are checked every batch unless rechecks are off).
    fn is_remote(&self) -> bool {
        false
    }

    /// Largest gap between two chunk ranges of one object that one read reads through
    /// instead of making two reads ([`LOCAL_READ_GAP`] unless the store says otherwise).
    fn read_gap(&self) -> u64 {
        LOCAL_READ_GAP
    }

    /// `uri/key`, for messages.
    fn describe(&self, key: &str) -> String {
        format!("{}/{key}", self.uri().trim_end_matches('/'))
    }
}

/// The store rooted at the array `uri` names, configured from the environment alone:
/// [`open_with`] without storage options.
///
/// # Errors
/// As [`open_with`].
pub fn open(uri: &str) -> Result<Arc<dyn Store>> {
    open_with(uri, &StorageOptions::new())
}

/// The store rooted at the array `uri` names: a local path (absolute or relative to the
/// current directory), a `file:` URL (RFC 8089: `file:///abs/path`, `file://localhost/abs`,
/// percent-encoded bytes decoded), or an object store prefix: `s3://bucket/prefix`,
/// `gs://bucket/prefix`, `az://container/prefix`, `abfs[s]://container@account.../prefix`,
/// `http[s]://host/path`. Object stores take their credentials and endpoints from the
/// environment, then from `options` (ignored for local files; `object`'s module doc lists
/// the keys).
///
/// # Errors
/// InvalidArgument for an empty uri, a NUL byte, a `file:` URL naming another host, an
/// unknown storage option, or a scheme damacy cannot read (the message lists those it can).
pub fn open_with(uri: &str, options: &StorageOptions) -> Result<Arc<dyn Store>> {
    if uri.is_empty() {
        return Err(err!(InvalidArgument, "empty uri"));
    }
    if let Some(at) = uri.find('\0') {
        return Err(err!(InvalidArgument, "uri {:?} contains a NUL byte at position {at}", uri));
    }
    match scheme(uri).as_deref() {
        None => Ok(Arc::new(fs::FsStore::new(fs::local_path(uri)?))),
        Some("file") => Ok(Arc::new(fs::FsStore::new(fs::file_url_path(uri)?))),
        #[cfg(any(test, feature = "fuzzing"))]
        Some("mem") => Ok(Arc::new(mem::MemStore::open(uri))),
        #[cfg(test)]
        Some(mode) if mode.starts_with("fault-") => Ok(Arc::new(fault::FaultStore::new(mode, uri)?)),
        Some(s) if object::SCHEMES.contains(&s) => {
            let url = url::Url::parse(uri).map_err(|e| err!(InvalidArgument, "{uri}: not a valid URL: {e}"))?;
            Ok(Arc::new(object::ObjectStoreBackend::open(uri, &url, options)?))
        }
        Some(other) => Err(err!(
            InvalidArgument,
            "{uri}: unsupported uri scheme `{other}` (supported: local paths, file://, s3://, gs://, az://, abfs[s]://, http[s]://)"
        )),
    }
}

/// `true` when `uri` names an object store array (`s3://`, `gs://`, `az://`, `abfs[s]://`,
/// `http[s]://`): reads there cost a network round trip each.
pub(crate) fn is_remote_uri(uri: &str) -> bool {
    scheme(uri).is_some_and(|s| object::SCHEMES.contains(&s.as_str()))
}

/// The scheme of `uri` when it has one (`scheme:` with at least two letters, so a path is
/// never mistaken for one), lower-cased.
fn scheme(uri: &str) -> Option<String> {
    let (head, _) = uri.split_once(':')?;
    let ok = head.len() >= 2 && head.starts_with(|c: char| c.is_ascii_alphabetic()) && head.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    ok.then(|| head.to_ascii_lowercase()) // RFC 3986: schemes are case-insensitive
}

/// A test-only store over local files that misbehaves on chunk reads (whole-object gets of
/// anything but `zarr.json`): `fault-panic://PATH` panics, `fault-error://PATH` fails with
/// Storage, `fault-stall://PATH` blocks for a minute (a hung network mount).
#[cfg(test)]
pub(crate) mod fault {
    use super::{fs, Generation, ObjectInfo, RangeRead, ReadOutcome, Store};
    use crate::error::{err, Result};

    #[derive(Debug)]
    pub(crate) struct FaultStore {
        inner: fs::FsStore,
        mode: String,
    }

    impl FaultStore {
        pub(crate) fn new(mode: &str, uri: &str) -> Result<Self> {
            let path = uri.split_once("://").map_or("", |(_, p)| p);
            Ok(Self { inner: fs::FsStore::new(fs::local_path(path)?), mode: mode.to_string() })
        }
    }

    impl Store for FaultStore {
        fn uri(&self) -> &str {
            self.inner.uri()
        }
        fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
            self.inner.head(key)
        }
        fn get(&self, key: &str, max_len: u64) -> Result<Option<(Vec<u8>, ObjectInfo)>> {
            if key != "zarr.json" {
                match self.mode.as_str() {
                    "fault-panic" => panic!("injected panic reading {key}"),
                    "fault-error" => return Err(err!(Storage, "injected error reading {key}")),
                    "fault-stall" => std::thread::sleep(std::time::Duration::from_mins(1)),
                    _ => {}
                }
            }
            self.inner.get(key, max_len)
        }
        fn read_ranges(&self, key: &str, expect: Option<&Generation>, ranges: &mut [RangeRead<'_>]) -> Result<ReadOutcome> {
            self.inner.read_ranges(key, expect, ranges)
        }
        fn du(&self) -> Result<(u64, u64)> {
            self.inner.du()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    #[test]
    fn schemes_are_case_insensitive_and_local_identities_lossless() {
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(scheme("FILE:///a/b").as_deref(), Some("file"));
        assert_eq!(open("FILE:///a/b").unwrap().uri(), "/a/b");
        let root = |b: &[u8]| fs::FsStore::new(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b)));
        let (a, b) = (root(b"/t/\xff.zarr"), root(b"/t/\xfe.zarr"));
        assert_ne!(a.uri(), b.uri(), "two non-UTF-8 folders keep two identities");
        assert_eq!(a.uri(), "file:///t/%FF.zarr");
    }

    #[test]
    fn uris_parse_in_one_place() {
        assert_eq!(open("file:///a/b").unwrap().uri(), "/a/b");
        assert_eq!(open("file://localhost/a/b").unwrap().uri(), "/a/b");
        assert_eq!(open("file:///a%20b/c").unwrap().uri(), "/a b/c");
        assert_eq!(open("/a/b").unwrap().uri(), "/a/b");
        assert_eq!(open("/a%20b").unwrap().uri(), "/a%20b", "plain paths are not percent-decoded");
        let rel = open("rel/arr").unwrap();
        assert!(rel.uri().starts_with('/') && rel.uri().ends_with("/rel/arr"), "{}", rel.uri());
        assert_eq!(open("s3://bucket/x/").unwrap().uri(), "s3://bucket/x");
        assert_eq!(open("HTTP://h:8/x").unwrap().uri(), "HTTP://h:8/x");
        for bad in ["", "ftp://h/x", "file://otherhost/x", "a\0b", "s3:///x", "http://h/x?q=1"] {
            let e = open(bad).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument, "{bad:?}: {e}");
        }
        assert!(open("file://otherhost/x").unwrap_err().message().contains("otherhost"));
        assert!(open("a\0b").unwrap_err().message().contains("NUL"));
    }
}
