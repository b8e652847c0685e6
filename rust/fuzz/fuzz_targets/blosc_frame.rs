//! `blosc_frame`: see `damacy_fuzz::parsers::blosc_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| damacy_fuzz::parsers::blosc_frame(data));
