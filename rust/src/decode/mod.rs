//! Decode: turns the stored bytes of one inner chunk into its elements (native endian, C
//! order). CPU codecs through zarrs' codec chain (blosc via c-blosc, zstd, gzip, crc32c,
//! bytes, transpose). Owns no I/O; called by the pipeline's workers.

pub mod cpu;
