//! `batch_read`: see `damacy_fuzz::batch`.
#![no_main]

#[global_allocator]
static ALLOC: damacy_fuzz::batch::Counting = damacy_fuzz::batch::Counting;

libfuzzer_sys::fuzz_target!(|input: damacy_fuzz::batch::BatchInput| {
    damacy_fuzz::batch::run(&input);
});
