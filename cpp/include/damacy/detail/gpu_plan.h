// Private: host-side preparation of a GPU batch (cpp/src/cuda/gpu_plan.cpp): the checks that
// make the ops safe to hand to the kernels, the voxel prefix launch_assemble needs, and the
// packed argument arrays of one nvCOMP batched call.
//
// The checks run once per batch over the op records (not per voxel). They exist because an
// out-of-range op on the device is an illegal address that poisons the whole CUDA context;
// a failed check instead fails the batch with a message ("[Decode] ..." is the caller's
// business) and leaves the process healthy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

namespace damacy::ffi {
struct GpuDecodeOp;
struct GpuChecksumOp;
struct GpuUnshuffleOp;
struct GpuCopyOp;
}  // namespace damacy::ffi

namespace damacy::gpu {

/// Element size in bytes of a GpuCopyOp::src_dtype code; 0 for an unknown code.
uint32_t src_dtype_size(uint32_t code);

/// Pads a sample shape of rank 1..4 to rank 4 with leading 1s. False when the rank is 0 or
/// above 4, or a dimension is negative or above UINT32_MAX.
bool pad_shape4(const int64_t* shape, size_t rank, uint32_t out[4]);

/// prefix[0..n]: exclusive prefix sums of each op's voxel count (product of its extent);
/// returns prefix[n], the batch's total voxel count (launch_assemble's `total_voxels`).
uint64_t copy_op_voxel_prefix(const ffi::GpuCopyOp* ops, size_t n, uint64_t* prefix);

/// "" when every copy op is safe: known dtype, sample < samples_per_batch, box inside the
/// sample, and (unless fill) box inside chunk_shape and the whole decoded chunk inside the
/// arena's `decoded_bytes`. Else a message naming the first bad op, expected versus found.
std::string check_copy_ops(const ffi::GpuCopyOp* ops, size_t n, uint64_t decoded_bytes,
                           uint32_t samples_per_batch, const uint32_t sample_shape[4]);

/// "" when every unshuffle op is a known kind with typesize >= 1 inside the arena.
std::string check_unshuffle_ops(const ffi::GpuUnshuffleOp* ops, size_t n,
                                uint64_t decoded_bytes);

/// "" when every decode op has a known codec, its source inside the staging bytes and its
/// destination inside the arena (codec 0: src_len == dst_len).
std::string check_decode_ops(const ffi::GpuDecodeOp* ops, size_t n, uint64_t staging_bytes,
                             uint64_t decoded_bytes);

/// "" when every checksum op names a zstd decode op (index < n_decode).
std::string check_checksum_ops(const ffi::GpuChecksumOp* ops, size_t n,
                               const ffi::GpuDecodeOp* decode, size_t n_decode);

/// Number of decode ops with this codec.
size_t count_decode_ops(const ffi::GpuDecodeOp* ops, size_t n, uint32_t codec);

/// Bytes of the packed argument buffer for `count` chunks of one nvCOMP call (multiple of 8).
/// Layout: [src_ptrs | dst_ptrs | src_bytes | dst_bytes | actual (out) | statuses (out, int32)]
size_t decompress_args_bytes(size_t count);

/// One nvCOMP batched call's arguments, pointing into the packed device buffer.
struct DecompressArgs {
  size_t n = 0;                 // chunks in this call (ops of the codec)
  size_t max_dst_bytes = 0;     // for nvcomp::decompress_temp_bytes
  size_t total_dst_bytes = 0;   // for nvcomp::decompress_temp_bytes
  std::vector<uint32_t> op_index;  // decode-op index of each chunk (error messages)
  const void* const* d_src_ptrs = nullptr;
  void* const* d_dst_ptrs = nullptr;
  const size_t* d_src_bytes = nullptr;
  const size_t* d_dst_bytes = nullptr;  // capacities = expected sizes
  size_t* d_actual = nullptr;           // nvCOMP writes the decompressed sizes
  int32_t* d_statuses = nullptr;        // nvCOMP writes nvcompStatus_t (4 bytes)
};

/// Fills `host_buf` (decompress_args_bytes(count_decode_ops(..., codec)) bytes; pinned when
/// copied asynchronously) with the arrays of the decode ops of `codec`, as device pointers
/// into d_staging / d_arena, and returns them as pointers into `device_buf` (same size),
/// which the caller fills with one H2D copy of `host_buf`.
DecompressArgs pack_decompress_args(const ffi::GpuDecodeOp* ops, size_t n_ops, uint32_t codec,
                                    const uint8_t* d_staging, uint8_t* d_arena, void* host_buf,
                                    void* device_buf);

}  // namespace damacy::gpu
