// Private: host launchers of damacy's CUDA kernels (cpp/src/cuda/kernels.cu).
//
// Every launcher enqueues exactly one kernel on `stream` (the caller's current torch stream),
// never synchronises, allocates nothing and returns the launch status (cudaGetLastError).
// All pointers are device pointers; the op arrays are the bridge records copied to the device
// as they are (layout asserted against cpp/src/cuda/op_views.h). The ops are trusted: check
// them on the host first (damacy/detail/gpu_plan.h), since an out-of-range op is an illegal
// address on the device, which poisons the whole CUDA context.
//
// Order within one batch: decode (nvCOMP per codec + launch_decode_copy for codec 0) into the
// arena -> launch_checksum_check (zstd content checksums) -> copy the shuffled ranges to a scratch buffer -> launch_unshuffle (scratch -> arena)
// -> launch_assemble (arena -> output tensor).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace damacy::ffi {
struct GpuDecodeOp;
struct GpuChecksumOp;
struct GpuUnshuffleOp;
struct GpuCopyOp;
struct SampleTransform;
}  // namespace damacy::ffi

namespace damacy::gpu {

/// Output dtype codes of launch_assemble.
enum OutDtypeCode : int { kOutF32 = 0, kOutBf16 = 1 };

/// Copies (with cast) or fills every box of the batch into `d_out` in one launch.
///   d_ops[n_ops]: the batch's copy ops; `d_op_voxel_prefix[n_ops + 1]`: exclusive prefix sum
///   of each op's voxel count (product of its extent), from gpu::copy_op_voxel_prefix;
///   `total_voxels` = d_op_voxel_prefix[n_ops]. Op voxels are read from
///   d_decoded + chunk_offset (C order over chunk_shape, at chunk_start) and written to
///   d_out element sample * sample_voxels + C order over sample_shape at sample_start.
///   `out_dtype`: kOutF32 (float) or kOutBf16 (__nv_bfloat16). `sample_shape`: host array,
///   padded to rank 4 with leading 1s; sample_voxels = its product.
/// The ops must cover every output voxel exactly once (the planner's invariant); voxels no op
/// covers are left as they were. cudaErrorInvalidValue for a bad out_dtype or n_ops < 0.
/// `d_transforms` (device, one per sample of the batch, or null): each sample's voxels are
/// written through its transform's axis map (flips and turns: the sample as damacy::augment
/// would make it from the plain batch), and with `intensity` set, a transform with its
/// `intensity` flag also changes the values as that op does (the cast value rounded to the
/// output type, then * scale, + shift, + noise; dev/ops.md). Maps are trusted (Rust checks
/// them at push); a map that is not a permutation of equal extents is the identity.
cudaError_t launch_assemble(const ffi::GpuCopyOp* d_ops, int n_ops,
                            const uint64_t* d_op_voxel_prefix, uint64_t total_voxels,
                            const uint8_t* d_decoded, void* d_out, int out_dtype,
                            uint64_t sample_voxels, const uint32_t sample_shape[4],
                            cudaStream_t stream, const ffi::SampleTransform* d_transforms = nullptr,
                            bool intensity = false);

/// Undoes blosc1 byte shuffle for the ops of kind 1 (others untouched): each op's `len` bytes
/// at `offset` are read from d_src_arena (the scratch copy) and written to d_dst_arena at the
/// same offset. `max_op_bytes` (optional, the largest op's len) sizes the grid; 0 assumes
/// 256 KiB. c-blosc 1.x semantics: see cpp/src/cuda/kernels_impl.cuh.
cudaError_t launch_byte_unshuffle(const ffi::GpuUnshuffleOp* d_ops, int n,
                                  const uint8_t* d_src_arena, uint8_t* d_dst_arena,
                                  cudaStream_t stream, uint64_t max_op_bytes = 0);

/// Same for the ops of kind 2 (bit shuffle).
cudaError_t launch_bit_unshuffle(const ffi::GpuUnshuffleOp* d_ops, int n,
                                 const uint8_t* d_src_arena, uint8_t* d_dst_arena,
                                 cudaStream_t stream, uint64_t max_op_bytes = 0);

/// Both kinds in one launch (unknown kinds are copied as they are).
cudaError_t launch_unshuffle(const ffi::GpuUnshuffleOp* d_ops, int n,
                             const uint8_t* d_src_arena, uint8_t* d_dst_arena,
                             cudaStream_t stream, uint64_t max_op_bytes = 0);

/// Copies the decode ops of codec 0 (raw chunks) from staging to the arena in one launch;
/// ops of other codecs are skipped (nvCOMP's).
cudaError_t launch_decode_copy(const ffi::GpuDecodeOp* d_ops, int n, const uint8_t* d_staging,
                               uint8_t* d_arena, cudaStream_t stream,
                               uint64_t max_op_bytes = 0);

/// Counts the chunks of one nvCOMP call that failed (status != 0, or actual size != expected)
/// into d_result[0] and the smallest failed chunk index into d_result[1] (atomicMin). The
/// caller sets d_result to {0, UINT32_MAX} first (e.g. cudaMemcpyAsync of a constant) and reads
/// it back after the batch's event. One launch on `stream`; returns the launch status.
cudaError_t launch_decode_status_check(const int32_t* d_statuses, const size_t* d_actual,
                                       const size_t* d_expected, size_t n, uint32_t* d_result,
                                       cudaStream_t stream);

/// Verifies zstd content checksums after decompression: for each of the `n` checksum ops,
/// XXH64 (seed 0) of its decode op's dst_len bytes at d_arena + dst_offset must have the op's
/// `expected` as its lower 32 bits. Counts the mismatches into d_result[0] and the smallest
/// mismatching checksum-op index into d_result[1]; the caller sets d_result to {0,
/// UINT32_MAX} first, as for launch_decode_status_check. One warp hashes one op, staging
/// its bytes through shared memory (cost: dev/perf.md). d_decode_ops: the batch's decode ops as checked on the host.
cudaError_t launch_checksum_check(const ffi::GpuChecksumOp* d_ops, size_t n,
                                  const ffi::GpuDecodeOp* d_decode_ops, const uint8_t* d_arena,
                                  uint32_t* d_result, cudaStream_t stream);

}  // namespace damacy::gpu
