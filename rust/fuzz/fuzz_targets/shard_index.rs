//! `shard_index`: see `damacy_fuzz::parsers::shard_index`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| damacy_fuzz::parsers::shard_index(data));
