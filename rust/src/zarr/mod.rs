//! zarr: parsers for Zarr v3 metadata, shard indexes and blosc headers (bytes in, values
//! out; no I/O), plus the example-volume writer used by the demo.

pub mod example;
