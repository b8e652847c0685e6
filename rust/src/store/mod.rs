//! store: where array bytes live. Local filesystem only: a uri is a plain path or a
//! `file://` URL naming the array's folder (the one holding `zarr.json`). Reads are
//! positioned (`pread`), so many threads share one file without seeking.
//!
//! Owns no state. Called by `prefetch` (metadata, shard indexes) and `io` (chunk bytes).

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{err, Result};

/// The folder of the array that `uri` names.
///
/// # Errors
/// InvalidArgument for an empty uri or a scheme other than `file://`.
pub fn array_root(uri: &str) -> Result<PathBuf> {
    let path = if let Some(rest) = uri.strip_prefix("file://") {
        rest
    } else if uri.contains("://") {
        return Err(err!(InvalidArgument, "{uri}: unsupported uri scheme (only local paths and file:// are supported)"));
    } else {
        uri
    };
    if path.is_empty() {
        return Err(err!(InvalidArgument, "empty uri"));
    }
    Ok(PathBuf::from(path))
}

/// Reads a whole file; `Ok(None)` when it does not exist.
///
/// # Errors
/// Storage for any other I/O failure.
pub fn read_file(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err!(Storage, "{}: read failed: {e}", path.display())),
    }
}

/// An open file for positioned reads.
#[derive(Debug)]
pub struct ReadFile {
    file: File,
    len: u64,
    path: PathBuf,
}

impl ReadFile {
    /// Opens `path`; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// Storage for any other I/O failure.
    pub fn open(path: &Path) -> Result<Option<Self>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err!(Storage, "{}: open failed: {e}", path.display())),
        };
        let len = file.metadata().map_err(|e| err!(Storage, "{}: stat failed: {e}", path.display()))?.len();
        Ok(Some(Self { file, len, path: path.to_path_buf() }))
    }

    /// File length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// `true` for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `buf` from `offset`.
    ///
    /// # Errors
    /// Storage when the file is shorter than `offset + buf.len()` or the read fails.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            err!(Storage, "{}: read of {} bytes at offset {offset} failed ({} bytes in file): {e}", self.path.display(), buf.len(), self.len)
        })
    }

    /// Reads `len` bytes at `offset` into a new buffer.
    ///
    /// # Errors
    /// As [`ReadFile::read_exact_at`].
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(array_root("file:///a/b").unwrap(), PathBuf::from("/a/b"));
        assert_eq!(array_root("/a/b").unwrap(), PathBuf::from("/a/b"));
        assert!(array_root("s3://x").is_err());
        assert!(array_root("").is_err());
    }

    #[test]
    fn missing_files_are_none_and_short_reads_fail() {
        let dir = std::env::temp_dir().join(format!("damacy-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(read_file(&dir.join("absent")).unwrap().is_none());
        assert!(ReadFile::open(&dir.join("absent")).unwrap().is_none());
        std::fs::write(dir.join("f"), b"hello").unwrap();
        let f = ReadFile::open(&dir.join("f")).unwrap().unwrap();
        assert_eq!(f.read_at(1, 3).unwrap(), b"ell");
        assert!(f.read_at(3, 3).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
