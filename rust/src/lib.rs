//! damacy: random crops of chunked, sharded, compressed Zarr v3 arrays, planned, read and
//! decoded for PyTorch.
//!
//! Stages, in data-flow order (each folder opens with its contract):
//! `zarr` (parsers) → `store` (where bytes live) → `cache` → `prefetch` → `plan` → `io` →
//! `decode` → `assemble` → `pipeline` (the public object) → `ffi` (the cxx bridge).
//! `example` writes synthetic volumes for the demo, tests and benchmarks.

pub mod error;
pub mod zarr;
pub mod store;
pub mod cache;
pub mod prefetch;
pub mod plan;
pub mod io;
pub mod decode;
pub mod assemble;
pub mod pipeline;
pub mod ffi;
#[cfg(feature = "example")]
pub mod example;

pub use error::{Error, Result, Status};
