//! The fuzz targets' shared code: how each target reads its input, the invariants it
//! checks, and the inverse encoders the seed writer (`src/bin/write_seeds.rs`) uses to turn
//! real fixtures into corpus files. Each `fuzz_targets/<name>.rs` is one call into here.
//!
//! Every target runs the parser exactly as damacy calls it, then checks: errors are typed
//! (never Internal, never a panic: libFuzzer's panic hook aborts on any panic, also one a
//! pipeline thread would catch); successes satisfy the parser's contract (entries inside
//! the object, geometry consistent, a re-serialised value parses back to itself).

pub mod batch;
pub mod parsers;
