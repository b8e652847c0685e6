//! `zarr_json`: see `damacy_fuzz::parsers::zarr_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| damacy_fuzz::parsers::zarr_json(data));
