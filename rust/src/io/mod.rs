//! io: runs the plan's read ops through the arrays' stores, and owns the worker pool the
//! chunk jobs and the prefetcher's loads run on. The only caller of [`Store`] for chunk
//! bytes: a read op fills its staging range, or reports that its object changed or vanished
//! since the shard index it was planned from was read (the caller invalidates that index),
//! or fails with Storage naming the object and the range.
//!
//! Calls: `store`, `plan` (read op records). Called by `pipeline`.

mod pool;

pub use pool::WorkerPool;
pub(crate) use pool::{Grower, Spawner};

use crate::error::Result;
use crate::plan::staging::ReadOp;
use crate::store::{Generation, ObjectInfo, RangeRead, ReadOutcome, Store};

/// What a read op found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Read {
    /// The staging range holds the bytes.
    Done,
    /// The object is another generation than the one planned with: nothing usable was read.
    Changed {
        /// The generation found.
        found: Generation,
    },
    /// The object does not exist any more: nothing was read.
    Missing,
}

/// Reads `op` from `store` into `buf` (its staging range, `op.len` bytes).
///
/// # Errors
/// Storage when the object is short or the read fails (naming object and range).
pub(crate) fn read_op(store: &dyn Store, op: &ReadOp, buf: &mut [u8]) -> Result<Read> {
    let mut ranges = [RangeRead { offset: op.offset, buf }];
    Ok(match store.read_ranges(&op.key, op.generation.as_ref(), &mut ranges)? {
        ReadOutcome::Done(_) => Read::Done,
        ReadOutcome::Changed(info) => Read::Changed { found: info.generation },
        ReadOutcome::Missing => Read::Missing,
    })
}

/// Reads the whole object `key` (an unsharded chunk), at most `max_len` bytes; `None` when
/// it does not exist (the chunk is fill).
///
/// # Errors
/// Storage when it is larger than `max_len` (a corrupt chunk) or the read fails.
pub(crate) fn read_whole(store: &dyn Store, key: &str, max_len: u64) -> Result<Option<(Vec<u8>, ObjectInfo)>> {
    store.get(key, max_len)
}

/// The message of a read that found its shard rewritten.
pub(crate) fn changed_message(store: &dyn Store, key: &str, expected: Option<&Generation>, found: &Generation) -> String {
    format!(
        "{}: the shard changed while the pipeline was reading it (generation {found}, its index was read at {}); its index is read again for later batches",
        store.describe(key),
        expected.map_or_else(|| "?".to_string(), ToString::to_string)
    )
}

/// The message of a read that found its shard gone.
pub(crate) fn vanished_message(store: &dyn Store, key: &str) -> String {
    format!("{}: the shard vanished since its index was read; later batches read it as absent (fill)", store.describe(key))
}
