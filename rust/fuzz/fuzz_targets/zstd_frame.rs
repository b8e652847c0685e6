//! `zstd_frame`: see `damacy_fuzz::parsers::zstd_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| damacy_fuzz::parsers::zstd_frame(data));
