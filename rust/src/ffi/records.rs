//! The ground-layer vocabulary shared with C++ through cxx: the status set, the output
//! dtypes, the codes inside the GPU op records, and the op records themselves. Defined once
//! here; cxx emits each enum as an `enum class` in `damacy/src/ffi/records.rs.h`, so the C++
//! side uses these definitions instead of its own copies. This module imports nothing of
//! damacy's: every stage may use it (`plan` and `decode` build the op records).
//!
//! The op records keep `u32` code fields (the CUDA kernels read them through plain mirrors,
//! `cpp/src/cuda/op_views.h`, which are checked field by field against these); the values
//! written into them are the `repr` of the enums below, never bare numbers.

#[allow(missing_docs, unreachable_pub)] // documented here, on the bridge items
#[cxx::bridge(namespace = "damacy::ffi")]
pub mod bridge {
    /// Why an operation failed: one set across Rust, C++ (`damacy::Status`) and Python
    /// (`damacy.errors`), in this order. The wire token is the variant's name.
    #[derive(Debug, Hash)]
    #[repr(u8)]
    enum Status {
        /// Nothing is ready yet (a pop timed out, or nothing was pushed); calling again may succeed.
        TryAgain,
        /// A config value, sample or box is invalid.
        InvalidArgument,
        /// An array (its `zarr.json`) does not exist.
        NotFound,
        /// The source data type cannot be cast to the requested output.
        DtypeMismatch,
        /// A box's rank differs from the array's rank.
        RankMismatch,
        /// Reading from storage failed, or stored bytes are malformed (truncated shard, bad index).
        Storage,
        /// A compressed chunk could not be decoded.
        Decode,
        /// A CUDA call failed.
        Cuda,
        /// An allocation failed.
        OutOfMemory,
        /// A sample cannot fit the configured byte budgets.
        BudgetExceeded,
        /// The pipeline is closed.
        Shutdown,
        /// Every output buffer is held by live batches.
        PoolStarved,
        /// A bug in damacy (a panic or a broken internal invariant); please report it.
        Internal,
    }

    /// Element type of a batch.
    #[derive(Debug, Hash)]
    #[repr(u8)]
    enum OutDtype {
        F32,
        Bf16,
        U8,
        I32,
        I64,
    }

    /// `GpuDecodeOp::codec`: how a staged range becomes decoded bytes.
    #[derive(Debug)]
    #[repr(u32)]
    enum DecodeCodec {
        /// Copied (already decoded on the CPU, or stored raw).
        Copy = 0,
        /// One nvCOMP zstd stream.
        Zstd = 1,
        /// One nvCOMP lz4 stream.
        Lz4 = 2,
    }

    /// `GpuUnshuffleOp::kind`: blosc's shuffle, undone over one decoded block.
    #[derive(Debug)]
    #[repr(u32)]
    enum ShuffleKind {
        /// Byte shuffle.
        Byte = 1,
        /// Bit shuffle.
        Bit = 2,
    }

    /// `GpuCopyOp::src_dtype`: the stored element type the assemble kernel casts from.
    #[derive(Debug)]
    #[repr(u32)]
    enum SrcDtype {
        Bool = 0,
        U8 = 1,
        I8 = 2,
        U16 = 3,
        I16 = 4,
        U32 = 5,
        I32 = 6,
        U64 = 7,
        I64 = 8,
        F16 = 9,
        Bf16 = 10,
        F32 = 11,
        F64 = 12,
    }

    /// GPU path: decompress `src_len` staged bytes at `src_offset` into `dst_len` bytes at
    /// `dst_offset` of the batch's decoded arena. `codec`: a `DecodeCodec`.
    #[derive(Debug, Clone, Copy)]
    struct GpuDecodeOp {
        codec: u32,
        src_offset: u64,
        src_len: u64,
        dst_offset: u64,
        dst_len: u64,
    }

    /// GPU path: after decompression, XXH64 (seed 0) of decode op `decode_op`'s `dst_len`
    /// decoded bytes must have `expected` as its lower 32 bits: the zstd frame's
    /// Content_Checksum, which nvCOMP does not verify. Only frames with the checksum flag
    /// have one.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct GpuChecksumOp {
        decode_op: u32,
        expected: u32,
    }

    /// GPU path: undo blosc's shuffle over one decoded block in place: `len` bytes at
    /// `offset` of the decoded arena (via a scratch copy). `kind`: a `ShuffleKind`.
    #[derive(Debug, Clone, Copy)]
    struct GpuUnshuffleOp {
        offset: u64,
        len: u64,
        typesize: u32,
        kind: u32,
    }

    /// GPU path: one box copied (and cast) from a decoded chunk into a sample, or filled.
    /// Shapes are padded to rank 4 with leading 1s / 0s. `src_dtype`: a `SrcDtype`.
    /// `fill` set: write `fill_bits` (one source element, little endian) instead.
    #[derive(Debug, Clone, Copy)]
    struct GpuCopyOp {
        chunk_offset: u64,
        src_dtype: u32,
        sample: u32,
        fill: bool,
        fill_bits: u64,
        chunk_shape: [u32; 4],
        chunk_start: [u32; 4],
        sample_start: [u32; 4],
        extent: [u32; 4],
    }

    /// A sample's transform, pushed with it and applied where its batch is made (Augment
    /// fused into assemble; dev/ops.md, `push_sample_transformed`): `map`,
    /// damacy::augment's axis-map word (flips and 90-degree turns; 0: identity); with
    /// `intensity`, `y = float(x) * scale + shift` plus noise (`noise_factor` =
    /// float(-2 * noise_std**2), 0: none) from the counter (`noise_g`, `noise_b`).
    #[derive(Debug, Clone, Copy, Default, PartialEq)]
    struct SampleTransform {
        map: u64,
        scale: f32,
        shift: f32,
        noise_g: u32,
        noise_b: u32,
        noise_factor: f32,
        intensity: bool,
    }

    /// Hits, misses and evictions of one cache.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
    struct CacheCounts {
        hits: u64,
        misses: u64,
        evictions: u64,
    }

    /// How far ahead the prefetcher ran.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
    struct PrefetchCounts {
        /// Samples already resolved when the scheduler reached their batch.
        samples_ready_ahead: u64,
        /// Samples the scheduler had to resolve itself.
        samples_resolved_inline: u64,
        /// Times a background task stopped for cache room.
        deferrals: u64,
        /// Samples un-pinned to make room for an earlier batch.
        samples_parked: u64,
    }

    /// A pipeline's statistics (docs/tuning.md documents each field). `batches` counts
    /// batches delivered to the caller (the extension reports them).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
    struct Stats {
        samples_pushed: u64,
        batches: u64,
        batches_completed: u64,
        batches_failed: u64,
        chunks_decoded: u64,
        chunks_filled: u64,
        chunk_reuse: f64,
        read_ops: u64,
        bytes_read: u64,
        coalesced_read_ops: u64,
        staged_bytes: u64,
        blosc_blocks_decoded: u64,
        blosc_blocks_skipped: u64,
        /// Decoded bytes produced by CPU decoding (the CPU path, and chunks the GPU path
        /// decodes on the host): whole chunks, prefixes, spans of blosc blocks.
        cpu_bytes_decoded: u64,
        /// GPU path: batches run again without the device chunk store because a batch
        /// that was to keep chunks for them failed before its device work ran.
        device_store_replans: u64,
        array_meta: CacheCounts,
        shard_index: CacheCounts,
        chunk_layout: CacheCounts,
        prefetch: PrefetchCounts,
        decoded_cache: CacheCounts,
        chunks_from_cache: u64,
        time_plan_s: f64,
        time_io_s: f64,
        time_decode_s: f64,
        time_assemble_s: f64,
        batch_latency_p50_ms: f64,
        batch_latency_p99_ms: f64,
        buffers_allocated: u64,
        buffers_held_by_caller: u64,
    }

    // A batch's transforms cross as a Vec (api.rs `sample_transforms`).
    impl Vec<SampleTransform> {}
}


pub use bridge::{GpuChecksumOp, GpuCopyOp, GpuDecodeOp, GpuUnshuffleOp, Stats, Status};
pub(crate) use bridge::{CacheCounts, DecodeCodec, OutDtype, PrefetchCounts, SampleTransform, ShuffleKind, SrcDtype};
