//! An in-memory store for tests and fuzzing (`mem://NAME`): objects are registered under a
//! name with [`insert`] and read through the [`Store`] trait like any backend. Compiled for
//! unit tests and behind the `fuzzing` cargo feature only (the fuzz targets in `rust/fuzz`
//! read whole batches through it); not a production backend.
//!
//! Each [`insert`] is a new generation of every object under the name, so a name reused for
//! different bytes is noticed like a rewritten file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::{Generation, ObjectInfo, RangeRead, ReadOutcome, Store};
use crate::error::{err, Result};

/// The objects registered under one name, with their generation.
#[derive(Debug)]
struct Objects {
    generation: Generation,
    objects: HashMap<String, Vec<u8>>,
}

fn registry() -> &'static Mutex<HashMap<String, Arc<Objects>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<Objects>>>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

/// Registers `objects` (key → bytes) under `name`, replacing what was there; the array is
/// then readable at `mem://NAME`.
pub fn insert(name: &str, objects: impl IntoIterator<Item = (String, Vec<u8>)>) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let generation = Generation::new(format!("mem-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    registry().lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_string(), Arc::new(Objects { generation, objects: objects.into_iter().collect() }));
}

/// Forgets the objects under `name` (stores opened earlier keep reading them).
pub fn remove(name: &str) {
    registry().lock().unwrap_or_else(PoisonError::into_inner).remove(name);
}

/// The store of `mem://NAME`: a snapshot of what is registered under the name when opened
/// (nothing: every object absent).
#[derive(Debug)]
pub(super) struct MemStore {
    uri: String,
    objects: Option<Arc<Objects>>,
}

impl MemStore {
    pub(super) fn open(uri: &str) -> Self {
        let name = uri.split_once("://").map_or("", |(_, n)| n);
        let objects = registry().lock().unwrap_or_else(PoisonError::into_inner).get(name).cloned();
        Self { uri: uri.to_string(), objects }
    }

    fn object(&self, key: &str) -> Option<(&[u8], ObjectInfo)> {
        let o = self.objects.as_ref()?;
        let bytes = o.objects.get(key)?;
        Some((bytes, ObjectInfo { size: bytes.len() as u64, generation: o.generation.clone() }))
    }
}

impl Store for MemStore {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        Ok(self.object(key).map(|(_, info)| info))
    }

    fn get(&self, key: &str, max_len: u64) -> Result<Option<(Vec<u8>, ObjectInfo)>> {
        let Some((bytes, info)) = self.object(key) else { return Ok(None) };
        if info.size > max_len {
            return Err(err!(Storage, "{}: {} bytes, more than the {max_len} bytes such an object may have", self.describe(key), info.size));
        }
        Ok(Some((bytes.to_vec(), info)))
    }

    fn read_ranges(&self, key: &str, expect: Option<&Generation>, ranges: &mut [RangeRead<'_>]) -> Result<ReadOutcome> {
        let Some((bytes, info)) = self.object(key) else { return Ok(ReadOutcome::Missing) };
        if expect.is_some_and(|g| *g != info.generation) {
            return Ok(ReadOutcome::Changed(info));
        }
        for r in ranges.iter_mut() {
            let len = r.buf.len();
            let src = usize::try_from(r.offset).ok().and_then(|at| bytes.get(at..at.checked_add(len)?));
            let src = src.ok_or_else(|| err!(Storage, "{}: read of {len} bytes at offset {} runs past the end of the {}-byte object", self.describe(key), r.offset, info.size))?;
            r.buf.copy_from_slice(src);
        }
        Ok(ReadOutcome::Done(info))
    }

    fn du(&self) -> Result<(u64, u64)> {
        let Some(o) = &self.objects else { return Ok((0, 0)) };
        Ok((o.objects.len() as u64, o.objects.values().map(|b| b.len() as u64).sum()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    #[test]
    fn reads_what_was_inserted_and_notices_a_new_generation() {
        insert("mem-test", HashMap::from([("zarr.json".to_string(), b"{}".to_vec()), ("c/0".to_string(), (0u8..10).collect())]));
        let s = super::super::open("mem://mem-test").unwrap();
        assert_eq!(s.get("zarr.json", 16).unwrap().unwrap().0, b"{}");
        assert_eq!(s.get("c/0", 4).unwrap_err().status(), Status::Storage);
        let info = s.head("c/0").unwrap().unwrap();
        assert_eq!(info.size, 10);
        let mut buf = [0u8; 3];
        assert_eq!(s.read_ranges("c/0", Some(&info.generation), &mut [RangeRead { offset: 7, buf: &mut buf }]).unwrap(), ReadOutcome::Done(info.clone()));
        assert_eq!(buf, [7, 8, 9]);
        assert_eq!(s.read_ranges("c/0", None, &mut [RangeRead { offset: 8, buf: &mut buf }]).unwrap_err().status(), Status::Storage);
        assert_eq!(s.read_ranges("c/0", None, &mut [RangeRead { offset: u64::MAX, buf: &mut buf }]).unwrap_err().status(), Status::Storage);
        assert_eq!(s.read_ranges("c/1", None, &mut []).unwrap(), ReadOutcome::Missing);
        assert_eq!(s.du().unwrap(), (2, 12));
        insert("mem-test", []);
        let again = super::super::open("mem://mem-test").unwrap();
        assert!(again.head("c/0").unwrap().is_none());
        assert!(matches!(s.read_ranges("c/0", Some(&Generation::new("other")), &mut []).unwrap(), ReadOutcome::Changed(_)));
        remove("mem-test");
        assert!(super::super::open("mem://mem-test").unwrap().get("zarr.json", 16).unwrap().is_none());
    }
}
