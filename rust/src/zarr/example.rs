//! Writes synthetic example volumes (demo and benchmarks).
use crate::error::Result;

/// See the bridge's `write_example_volume`.
pub fn write_example_volume(_path: &str, _shape: &[u64], _chunk_shape: &[u64], _shard_shape: &[u64], _codec: &str, _seed: u64) -> Result<()> {
    Err(crate::error::err!(InvalidArgument, "not implemented yet"))
}
