//! The local filesystem store: one folder per array, positioned reads (`pread`), so many
//! threads share a file without seeking.
//!
//! Hostile files: every object is opened with `O_NONBLOCK` (a FIFO where a shard should be
//! cannot block the open) and checked to be a regular file before anything is read (a
//! FIFO, a device such as `/dev/zero`, or a directory is a Storage error naming it); whole
//! reads are bounded by the caller's `max_len`. The generation of a file is its inode, size,
//! mtime and ctime (nanoseconds), read from the open descriptor.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Generation, ObjectInfo, RangeRead, ReadOutcome, Store};
use crate::error::{err, Result};

/// A local array folder.
#[derive(Debug)]
pub(super) struct FsStore {
    root: PathBuf,
    uri: String,
}

impl FsStore {
    pub(super) fn new(root: PathBuf) -> Self {
        // The store's identity in every cache: lossless, so two folders whose names are not
        // UTF-8 never share one (`display()` would map both to U+FFFD). Such a root is
        // named by its percent-encoded file URL.
        let uri = match root.to_str() {
            Some(s) => s.to_string(),
            None => url::Url::from_file_path(&root).map_or_else(|()| root.display().to_string(), String::from),
        };
        Self { root, uri }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Opens `key` for reading; `None` when absent. The object must be a regular file.
    fn open(&self, key: &str) -> Result<Option<(File, ObjectInfo)>> {
        let path = self.path(key);
        let file = match OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err!(Storage, "{}: open failed: {e}", path.display())),
        };
        let meta = file.metadata().map_err(|e| err!(Storage, "{}: stat failed: {e}", path.display()))?;
        check_regular(&path, &meta)?;
        Ok(Some((file, info(&meta))))
    }
}

fn check_regular(path: &Path, meta: &Metadata) -> Result<()> {
    if meta.is_file() {
        return Ok(());
    }
    let what = if meta.is_dir() {
        "a directory"
    } else {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        }
    };
    Err(err!(Storage, "{}: is {what}, expected a regular file", path.display()))
}

fn info(meta: &Metadata) -> ObjectInfo {
    let generation = Generation::new(format!("{}:{}:{}.{}:{}.{}", meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ctime(), meta.ctime_nsec()));
    ObjectInfo { size: meta.len(), generation }
}

impl Store for FsStore {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let path = self.path(key);
        match std::fs::metadata(&path) {
            Ok(meta) => {
                check_regular(&path, &meta)?;
                Ok(Some(info(&meta)))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err!(Storage, "{}: stat failed: {e}", path.display())),
        }
    }

    fn get(&self, key: &str, max_len: u64) -> Result<Option<(Vec<u8>, ObjectInfo)>> {
        let Some((file, info)) = self.open(key)? else { return Ok(None) };
        let path = self.path(key);
        if info.size > max_len {
            return Err(err!(Storage, "{}: {} bytes, more than the {max_len} bytes such an object may have", path.display(), info.size));
        }
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(info.size as usize).map_err(|_| err!(OutOfMemory, "{}: cannot allocate {} bytes", path.display(), info.size))?;
        // Read at most one byte past the cap: a file that grows while being read is caught.
        let n = file.take(max_len + 1).read_to_end(&mut bytes).map_err(|e| err!(Storage, "{}: read failed: {e}", path.display()))?;
        if n as u64 > max_len {
            return Err(err!(Storage, "{}: grew past {max_len} bytes while being read", path.display()));
        }
        Ok(Some((bytes, info)))
    }

    fn read_ranges(&self, key: &str, expect: Option<&Generation>, ranges: &mut [RangeRead<'_>]) -> Result<ReadOutcome> {
        let Some((file, info)) = self.open(key)? else { return Ok(ReadOutcome::Missing) };
        if expect.is_some_and(|g| *g != info.generation) {
            return Ok(ReadOutcome::Changed(info));
        }
        for r in ranges.iter_mut() {
            let len = r.buf.len() as u64;
            let end = r.offset.checked_add(len).filter(|&e| e <= info.size);
            if end.is_none() {
                return Err(err!(Storage, "{}: read of {len} bytes at offset {} runs past the end of the {}-byte file", self.path(key).display(), r.offset, info.size));
            }
            file.read_exact_at(r.buf, r.offset).map_err(|e| {
                err!(Storage, "{}: read of {len} bytes at offset {} failed ({} bytes in file): {e}", self.path(key).display(), r.offset, info.size)
            })?;
        }
        Ok(ReadOutcome::Done(info))
    }

    fn du(&self) -> Result<(u64, u64)> {
        let (mut files, mut bytes) = (0u64, 0u64);
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                // symlink_metadata: a link loop or a link to `/` is not followed.
                match e.metadata() {
                    Ok(m) if m.is_dir() && !e.file_type().is_ok_and(|t| t.is_symlink()) => stack.push(e.path()),
                    Ok(m) if m.is_file() => {
                        files += 1;
                        bytes = bytes.saturating_add(m.len());
                    }
                    _ => {}
                }
            }
        }
        Ok((files, bytes))
    }
}

/// A plain local path: absolute, or relative to the current directory. Not percent-decoded.
pub(super) fn local_path(uri: &str) -> Result<PathBuf> {
    let path = PathBuf::from(uri);
    if path.is_absolute() {
        return Ok(path);
    }
    let cwd = std::env::current_dir().map_err(|e| err!(InvalidArgument, "{uri}: relative path, and the current directory is unknown: {e}"))?;
    Ok(cwd.join(path))
}

/// The local path of a `file:` URL (RFC 8089): no host or `localhost`, percent-decoded.
pub(super) fn file_url_path(uri: &str) -> Result<PathBuf> {
    let url = url::Url::parse(uri).map_err(|e| err!(InvalidArgument, "{uri}: not a valid file URL: {e}"))?;
    match url.host_str() {
        None | Some("" | "localhost") => {}
        Some(host) => {
            return Err(err!(InvalidArgument, "{uri}: file URL names host `{host}`; only local files (no host, or `localhost`) can be read"));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err!(InvalidArgument, "{uri}: a file URL may not carry a query or fragment"));
    }
    let path = url.to_file_path().map_err(|()| err!(InvalidArgument, "{uri}: not a local file path"))?;
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(err!(InvalidArgument, "{uri}: the decoded path contains a NUL byte"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("damacy-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_are_bounded_checked_and_generation_aware() {
        let root = dir("reads");
        let store = FsStore::new(root.clone());
        assert!(store.get("absent", 10).unwrap().is_none());
        assert_eq!(store.read_ranges("absent", None, &mut []).unwrap(), ReadOutcome::Missing);
        std::fs::write(root.join("f"), b"hello").unwrap();
        let (bytes, info) = store.get("f", 5).unwrap().unwrap();
        assert_eq!((bytes.as_slice(), info.size), (&b"hello"[..], 5));
        assert_eq!(store.get("f", 4).unwrap_err().status(), Status::Storage, "over the cap");
        let mut three = [0u8; 3];
        let mut one = [0u8; 1];
        let out = store.read_ranges("f", Some(&info.generation), &mut [RangeRead { offset: 1, buf: &mut three }, RangeRead { offset: 0, buf: &mut one }]).unwrap();
        assert_eq!(out, ReadOutcome::Done(info.clone()));
        assert_eq!((&three, &one), (b"ell", b"h"));
        let e = store.read_ranges("f", None, &mut [RangeRead { offset: 3, buf: &mut three }]).unwrap_err();
        assert!(e.message().contains("past the end"), "{e}");
        // Rewritten (same size): another generation.
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(root.join("f"), b"HELLO").unwrap();
        assert!(matches!(store.read_ranges("f", Some(&info.generation), &mut []).unwrap(), ReadOutcome::Changed(_)));
        std::fs::create_dir(root.join("sub")).unwrap();
        let e = store.get("sub", 10).unwrap_err();
        assert!(e.message().contains("directory"), "{e}");
        assert!(store.head("sub").unwrap_err().message().contains("directory"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let d = dir("fifo");
        let fifo = d.join("zarr.json");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let s = FsStore::new(d.clone());
        let e = s.get("zarr.json", 1 << 20).unwrap_err();
        assert!(e.message().contains("FIFO"), "{e}");
        std::os::unix::fs::symlink("/dev/zero", d.join("z")).unwrap();
        assert!(s.get("z", 1 << 20).unwrap_err().message().contains("device"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
