//! The `sharding_indexed` shard index: `n` little-endian `(offset, nbytes)` u64 pairs in C
//! order over the inner chunk grid, optionally followed by a crc32c of those bytes.

use crate::error::{err, Result};

/// Where one inner chunk's encoded bytes sit in its shard file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    /// Byte offset in the shard file.
    pub offset: u64,
    /// Encoded length.
    pub nbytes: u64,
}

/// A parsed shard index: one entry per inner chunk, `None` where the chunk is absent
/// (both fields `u64::MAX` on disk: the chunk is all fill).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardIndex {
    entries: Vec<Option<ChunkRange>>,
}

impl ShardIndex {
    /// Bytes the index occupies in the file for `n_chunks` inner chunks.
    pub fn encoded_len(n_chunks: usize, crc32c: bool) -> usize {
        n_chunks * 16 + if crc32c { 4 } else { 0 }
    }

    /// Parses index bytes read from a shard file of `file_len` bytes.
    ///
    /// # Errors
    /// Storage when the length is wrong, the checksum does not match, or an entry points
    /// outside the file (a truncated shard).
    pub fn parse(bytes: &[u8], n_chunks: usize, crc32c: bool, file_len: u64) -> Result<Self> {
        let expected = Self::encoded_len(n_chunks, crc32c);
        if bytes.len() != expected {
            return Err(err!(Storage, "shard index: expected {expected} bytes, found {}", bytes.len()));
        }
        let body = &bytes[..n_chunks * 16];
        if crc32c {
            let stored = u32::from_le_bytes(bytes[n_chunks * 16..].try_into().map_err(|_| err!(Storage, "shard index: short checksum"))?);
            let computed = crc32c::crc32c(body);
            if stored != computed {
                return Err(err!(Storage, "shard index: crc32c mismatch (stored {stored:#010x}, computed {computed:#010x}); the shard is corrupt or truncated"));
            }
        }
        let mut entries = Vec::with_capacity(n_chunks);
        for (i, pair) in body.chunks_exact(16).enumerate() {
            let offset = u64::from_le_bytes(pair[..8].try_into().map_err(|_| err!(Storage, "shard index: short entry"))?);
            let nbytes = u64::from_le_bytes(pair[8..].try_into().map_err(|_| err!(Storage, "shard index: short entry"))?);
            if offset == u64::MAX && nbytes == u64::MAX {
                entries.push(None);
                continue;
            }
            if offset.checked_add(nbytes).is_none_or(|end| end > file_len) {
                return Err(err!(Storage, "shard index: inner chunk {i} at bytes {offset}..+{nbytes} lies outside the {file_len}-byte shard file (truncated shard?)"));
            }
            entries.push(Some(ChunkRange { offset, nbytes }));
        }
        Ok(Self { entries })
    }

    /// The range of inner chunk `i` (C order within the shard), `None` when absent.
    pub fn get(&self, i: usize) -> Option<ChunkRange> {
        self.entries.get(i).copied().flatten()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    fn encode(entries: &[(u64, u64)], crc: bool) -> Vec<u8> {
        let mut b: Vec<u8> = entries.iter().flat_map(|(o, n)| o.to_le_bytes().into_iter().chain(n.to_le_bytes())).collect();
        if crc {
            let c = crc32c::crc32c(&b);
            b.extend(c.to_le_bytes());
        }
        b
    }

    #[test]
    fn parses_present_and_absent_entries() {
        let b = encode(&[(0, 10), (u64::MAX, u64::MAX), (10, 5)], true);
        let idx = ShardIndex::parse(&b, 3, true, 100).unwrap();
        assert_eq!(idx.get(0), Some(ChunkRange { offset: 0, nbytes: 10 }));
        assert_eq!(idx.get(1), None);
        assert_eq!(idx.get(2), Some(ChunkRange { offset: 10, nbytes: 5 }));
    }

    #[test]
    fn rejects_bad_checksum_and_truncation() {
        let mut b = encode(&[(0, 10)], true);
        b[0] ^= 1;
        assert_eq!(ShardIndex::parse(&b, 1, true, 100).unwrap_err().status(), Status::Storage);
        let b = encode(&[(90, 20)], false);
        let e = ShardIndex::parse(&b, 1, false, 100).unwrap_err();
        assert!(e.message().contains("truncated"), "{e}");
        assert!(ShardIndex::parse(&b[..10], 1, false, 100).is_err());
    }
}
